import assert from "node:assert/strict";
import { ClassLog, Logger } from "../src/log.ts";
import { FrameWriter } from "../src/output/writer.ts";
import { ComparatorSink } from "../src/sink.ts";
import { Stats } from "../src/stats.ts";

function rig() {
  const lines: string[] = [];
  let clock = 0;
  const log = new Logger("info", (l) => lines.push(l));
  const classes = new ClassLog(log, 10_000, () => clock);
  const stats = new Stats();
  const out = new FrameWriter({
    vnet: false,
    highWater: 1 << 20,
    lowWater: 1 << 19,
    maxBufferedDisconnected: 1 << 20,
  });
  const sink = new ComparatorSink(stats, out, classes, () => {});
  return { lines, stats, classes, sink, advance: (ms: number) => clock += ms };
}

Deno.test("sink: an engine exception is logged at error with its stack and counted", () => {
  const { lines, stats, sink } = rig();
  sink.internalError("primary-in", new TypeError("x is undefined"));
  sink.internalError("primary-in", new TypeError("x is undefined"));
  assert.equal(stats.internalErrors, 2);
  assert.equal(lines.length, 1);
  assert.match(
    lines[0],
    /level=error event=internal-error where=primary-in error="x is undefined"/,
  );
  assert.match(lines[0], /stack="TypeError: x is undefined\\n {4}at /);
  assert.doesNotMatch(lines[0], /disconnect/);
  assert.equal(stats.summary().internal_errors, 2);
});

Deno.test("sink: dropped frames are logged once per class, then summarised per interval", () => {
  const { lines, stats, classes, sink, advance } = rig();
  const f = new Uint8Array(1);
  for (let i = 0; i < 1000; i++) sink.discard("secondary", "queue-full", f, 0, 1, null);
  sink.discard("primary", "queue-full", f, 0, 1, null);
  assert.equal(lines.length, 2);
  classes.flush();
  assert.equal(lines.length, 2, "summarised before the interval passed");
  advance(10_000);
  classes.flush();
  assert.equal(lines.length, 3);
  assert.match(
    lines[2],
    /event=frames-dropped side=secondary reason=queue-full count=999 total=1000/,
  );
  assert.equal(stats.dropped.get("secondary:queue-full"), 1000);
});
