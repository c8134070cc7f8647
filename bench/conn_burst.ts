/**
 * What opening connections in bursts leaves on the V8 heap (issue 11): N connections, each
 * opened by one matching 64-byte segment pair, fed to the engine B at a time as the bench's
 * scale run does (B primaries, then their B secondaries: every connection of a burst holds its
 * primary until its secondary comes). Prints one JSON line: how much the heap grew before any
 * forced GC (garbage included), what stays after one, and the ArrayBuffer bytes. Run it with
 * the program's V8 flags, and `--trace-gc-nvp` to see the bytes promoted by each scavenge:
 *
 *   deno run --v8-flags=--expose-gc,--max-semi-space-size=2,--min-semi-space-size=2 \
 *     bench/conn_burst.ts [connections, default 10000] [burst, default 2000]
 *
 * @module
 */

import { CompareEngine } from "../src/compare/engine.ts";
import { countingSink, segmentOn, settledMemory } from "./conn_heap.ts";

const count = Number(Deno.args[0] ?? 10_000);
const burst = Number(Deno.args[1] ?? 2000);

// All frames in one buffer, made before the first measurement: the engine is given views.
const size = segmentOn(0, false).length;
const all = new Uint8Array(size * count);
for (let n = 0; n < count; n++) all.set(segmentOn(n, false), n * size);
const frameOf = (n: number) => all.subarray(n * size, (n + 1) * size);

const sink = countingSink();
const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, sink);
const before = settledMemory();
for (let first = 0; first < count; first += burst) {
  const end = Math.min(count, first + burst);
  for (let n = first; n < end; n++) engine.primary(frameOf(n), 0, performance.now());
  for (let n = first; n < end; n++) engine.secondary(frameOf(n), 0, performance.now());
}
const grown = Deno.memoryUsage();
const after = settledMemory();
console.log(JSON.stringify({
  connections: engine.connections,
  burst,
  released: sink.released,
  heapTotalGrowth: grown.heapTotal - before.heapTotal,
  heapUsedGrowth: grown.heapUsed - before.heapUsed,
  liveHeap: after.heapUsed - before.heapUsed,
  external: after.external - before.external,
}));
