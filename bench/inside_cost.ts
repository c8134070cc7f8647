/**
 * The cost of seeing inside (SPEC 12) per compared frame, in one process: the compare engine
 * with the comparator's sink (counting, outdev writer) as the program runs it, with the
 * seeing-inside hooks off, and on (the hold-time histogram fed on every release, the capture's
 * divergence hook present). Identical tcp-64 streams, so no divergence: what an operator pays
 * while nothing goes wrong. Rounds alternate off and on to share the machine's noise.
 *
 *   deno run -A bench/inside_cost.ts [--frames N] [--rounds N]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { CompareEngine } from "../src/compare/engine.ts";
import { ClassLog, Logger } from "../src/log.ts";
import { Histogram } from "../src/metrics/histogram.ts";
import { FrameWriter } from "../src/output/writer.ts";
import { ComparatorSink } from "../src/sink.ts";
import { Stats } from "../src/stats.ts";
import { frame, pseudoRandomBytes } from "../tests/support/packets.ts";

const { values } = parseArgs({
  options: { frames: { type: "string" }, rounds: { type: "string" } },
});
const FRAMES = Number(values.frames ?? 2_000_000);
const ROUNDS = Number(values.rounds ?? 7);

const payload = pseudoRandomBytes(64, 7);
const PATTERN = 1024;
const frames = Array.from(
  { length: PATTERN },
  (_, i) => frame({ tcp: { seq: 1 + i * 64, payload } }),
);

/** Nanoseconds per primary/secondary pair through engine and sink. */
function run(on: boolean): number {
  const stats = new Stats();
  const log = new Logger("error", () => {});
  const out = new FrameWriter({
    vnet: false,
    highWater: 1 << 30,
    lowWater: 1 << 29,
    maxBufferedDisconnected: 0,
  });
  const sink = new ComparatorSink(stats, out, new ClassLog(log, 10_000), () => {});
  const hold = new Histogram();
  let now = 0;
  if (on) {
    sink.divergence = () => {};
    sink.onHeldRelease = (arrivedAt) => hold.observe((now - arrivedAt) / 1000);
  }
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, sink);
  // Sequence numbers move on by the pattern's length each round, as the load generator does.
  const view = frames.map((f) => new DataView(f.buffer, f.byteOffset));
  const start = performance.now();
  for (let n = 0, round = 0; n < FRAMES; round++) {
    for (let i = 0; i < PATTERN && n < FRAMES; i++, n++) {
      view[i].setUint32(38, (1 + (round * PATTERN + i) * 64) >>> 0);
      if ((i & 63) === 0) now = performance.now(); // the pump reads the clock per chunk
      engine.primary(frames[i], 0, now);
      engine.secondary(frames[i], 0, now);
    }
  }
  const ns = ((performance.now() - start) * 1e6) / FRAMES;
  if (stats.releasedCompared !== FRAMES) throw new Error(`released ${stats.releasedCompared}`);
  if (on && hold.count !== FRAMES) throw new Error("hold time not observed");
  return ns;
}

run(false); // warm-up
run(true);
const off: number[] = [];
const on: number[] = [];
for (let r = 0; r < ROUNDS; r++) {
  off.push(run(false));
  on.push(run(true));
}
const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const mOff = median(off);
const mOn = median(on);
console.log(
  `tcp-64 pairs through engine and sink, median of ${ROUNDS} rounds of ${FRAMES}: ` +
    `off ${mOff.toFixed(1)} ns/pair, on ${mOn.toFixed(1)} ns/pair ` +
    `(${(((mOn - mOff) / mOff) * 100).toFixed(1)}%)`,
);
