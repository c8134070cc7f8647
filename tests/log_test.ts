/**
 * The throttled warning that refused connections use (SPEC 8: a peer cannot make a log line
 * each): the first at once, then at most one per interval, counting what was not logged.
 */

import assert from "node:assert/strict";
import { ClassLog, formatLine, Logger, MAX_LOG_CLASSES, ThrottledWarning } from "../src/log.ts";

Deno.test("log: a throttled warning logs the first at once, then one per interval with how many were not logged", () => {
  const lines: string[] = [];
  let now = 0;
  const w = new ThrottledWarning(
    new Logger("info", (l) => lines.push(l)),
    "x-refused",
    1000,
    () => now,
  );
  w.note({ peer: "a" });
  assert.equal(lines.length, 1);
  assert.match(lines[0], /level=warn event=x-refused peer=a$/);
  for (let i = 0; i < 5; i++) {
    now += 100;
    w.note({ peer: "b" });
  }
  assert.equal(lines.length, 1, "none within the interval");
  now = 1000;
  w.note({ peer: "c" });
  assert.equal(lines.length, 2);
  assert.match(lines[1], /event=x-refused peer=c suppressed=5$/);
  now = 2500;
  w.note({ peer: "d" });
  assert.match(lines[2], /event=x-refused peer=d$/, "no count when none was held back");
});

Deno.test("log: a throttled line with a burst logs that many per interval, and flush summarises the rest", () => {
  const lines: string[] = [];
  let now = 0;
  const w = new ThrottledWarning(
    new Logger("info", (l) => lines.push(l)),
    "x-set",
    1000,
    () => now,
    {
      level: "info",
      burst: 3,
      key: { class: "k" },
    },
  );
  const logged = [];
  for (let i = 0; i < 10; i++) logged.push(w.note({ value: i }));
  assert.deepEqual(logged, [true, true, true, false, false, false, false, false, false, false]);
  assert.equal(lines.length, 3);
  assert.match(lines[2], /level=info event=x-set class=k value=2$/);
  assert.equal(w.suppressed, 7);
  now = 400;
  assert.equal(w.summaryDueInMs, 600);
  w.flush();
  assert.equal(lines.length, 3, "not before the interval is over");
  now = 1000;
  w.flush();
  assert.equal(lines.length, 4);
  assert.match(lines[3], /level=info event=x-set class=k suppressed=7 /);
  assert.equal(w.suppressed, 0);
  w.flush();
  assert.equal(lines.length, 4, "nothing more to summarise");
  now = 1100;
  assert.equal(w.note({ value: 10 }), false, "the summary was this interval's line");
  w.flush(true);
  assert.match(lines[4], /suppressed=1 /, "final flush does not wait");
});

Deno.test("log: lines past a throttled line's burst go out at its overflow level where enabled, counted all the same", () => {
  for (const level of ["info", "debug"] as const) {
    const lines: string[] = [];
    const w = new ThrottledWarning(
      new Logger(level, (l) => lines.push(l)),
      "x-peer",
      1000,
      () => 0,
      {
        level: "info",
        burst: 2,
        overflow: "debug",
      },
    );
    for (let i = 0; i < 5; i++) w.note({ peer: i });
    assert.equal(w.suppressed, 3);
    w.flush(true);
    const debug = lines.filter((l) => l.includes("level=debug event=x-peer peer="));
    assert.equal(debug.length, level === "debug" ? 3 : 0, level);
    assert.match(lines.at(-1)!, /level=info event=x-peer suppressed=3 /);
  }
});

Deno.test("log: classes past MAX_LOG_CLASSES are counted together, a line for the first of them", () => {
  const lines: string[] = [];
  const classes = new ClassLog(new Logger("info", (l) => lines.push(l)), 1000, () => 0);
  for (let i = 0; i < 10_000; i++) classes.note("error", "internal-error", { error: `at ${i}` });
  assert.equal(lines.length, MAX_LOG_CLASSES + 1);
  assert.match(lines.at(-1)!, /event=internal-error class=other count=1 /);
  classes.flush(true);
  assert.match(lines.at(-1)!, /event=internal-error class=other count=9743 total=9744$/);
});

Deno.test("log: control characters in a value are escaped, never written raw", () => {
  const line = formatLine(
    "warn",
    "qmp-garbage",
    { line: "a\x1b[2Jb\x07c\x00d\x7fe\x9bf" },
    new Date(0),
  );
  assert.equal(
    line,
    'ts=1970-01-01T00:00:00.000Z level=warn event=qmp-garbage line="a\\u001b[2Jb\\u0007c\\u0000d\\u007fe\\u009bf"',
  );
  assert.ok([...line].every((c) => c >= " " && (c < "\x7f" || c > "\x9f")), "no control character");
  assert.match(formatLine("info", "x", { plain: "abc" }, new Date(0)), / plain=abc$/);
});
