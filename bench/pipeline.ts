/**
 * The CPU cost of the hot path per compared pair, in one process and without sockets: reads
 * (the checkout's read block, 1 MiB, unless `--read` says) of framed tcp-64, tcp-1000,
 * tcp-1000x100 or udp-512 frames go through the frame decoder, the compare engine, the
 * comparator's sink and the outdev writer (onto a stream that takes every write at once), a
 * primary chunk then the same secondary chunk, as the input pumps feed them. TCP
 * sequence numbers go on from round to round and start near the 32-bit wrap, as the load
 * generator's do after a while. What the machine's other jobs do not disturb as much as the
 * socket bench: issue 11's changes were weighed with it and with `deno task bench`. Prints the
 * median wall time per pair and the median CPU time per pair (the process's, all threads: on
 * a busy machine the wall time also counts the moments the process waited for a core).
 *
 *   deno run -A bench/pipeline.ts [--workload tcp-64|tcp-1000|tcp-1000x100|udp-512] [--rounds N]
 *     [--root DIR]   # the src/ of another checkout, for before/after runs
 *     [--read BYTES] # bytes per read instead of the checkout's read block (a pump's 1 MiB under load)
 *     [--per-read N] # N frames per read instead of a whole buffer (1: the latency workload's reads)
 *     [--allocated]  # instead: the bytes the measured rounds allocate per pair, as one JSON line
 *                    # ({"workload", "pairs", "bytesPerPair"}), from V8's sampling heap profiler
 *
 * @module
 */

import { Session } from "node:inspector";
import { cpuUsage } from "node:process";
import { parseArgs } from "node:util";
import type { CompareEngine } from "../src/compare/engine.ts";
import type { FrameDecoder } from "../src/wire/codec.ts";
import { encodeFrame } from "../src/wire/codec.ts";
import { frame, pseudoRandomBytes } from "../tests/support/packets.ts";

const { values } = parseArgs({
  options: {
    workload: { type: "string", default: "tcp-64" },
    rounds: { type: "string", default: "7" },
    root: { type: "string" },
    read: { type: "string" },
    "per-read": { type: "string" },
    allocated: { type: "boolean" },
  },
});
const workload = values.workload!;
if (!["tcp-64", "tcp-1000", "tcp-1000x100", "udp-512"].includes(workload)) {
  console.error(`--workload: tcp-64, tcp-1000, tcp-1000x100 or udp-512, not "${workload}"`);
  Deno.exit(2);
}
const ROUNDS = Number(values.rounds);
const root = values.root
  ? new URL(`file://${Deno.realPathSync(values.root)}/`)
  : new URL("../", import.meta.url);
const src = (path: string) => import(new URL(`src/${path}`, root).href);

const { CompareEngine: Engine } = await src("compare/engine.ts");
const { ClassLog, Logger } = await src("log.ts");
const { FrameWriter } = await src("output/writer.ts");
const { ComparatorSink } = await src("sink.ts");
const { Stats } = await src("stats.ts");
const { FrameDecoder: Decoder } = await src("wire/codec.ts");

const udp = workload === "udp-512";
const size = workload === "tcp-64" ? 64 : udp ? 512 : 1000;
/** Connections, round-robin frame by frame. */
const CONNECTIONS = workload === "tcp-1000x100" ? 100 : 1;
/** Frames per pattern, and the pattern (framed) with the offset of each frame's TCP seq. */
const FRAMES = workload === "tcp-64" ? 4096 : CONNECTIONS > 1 ? 1000 : 1024;
const payload = pseudoRandomBytes(size, 7);
const framed = Array.from({ length: FRAMES }, (_, i) => {
  const sport = 40000 + (i % CONNECTIONS);
  return encodeFrame(udp ? frame({ udp: { payload } }) : frame({ tcp: { sport, payload } }));
});
const STEP = framed[0].length;
const pattern = new Uint8Array(STEP * FRAMES);
framed.forEach((f, i) => pattern.set(f, i * STEP));
/** Length word, Ethernet, IPv4 header, ports: where the sequence number sits. */
const SEQ_AT = 4 + 14 + 20 + 4;
const SEQ_START = 0xf0000000;
const patternView = new DataView(pattern.buffer);
let round = 0;

/** The next round's sequence numbers, written in place. */
function nextRound(): void {
  if (udp) return;
  const perConnection = FRAMES / CONNECTIONS;
  for (let i = 0; i < FRAMES; i++) {
    const n = round * perConnection + Math.floor(i / CONNECTIONS);
    patternView.setUint32(i * STEP + SEQ_AT, (SEQ_START + n * size) >>> 0);
  }
  round++;
}

const stats = new Stats();
const out = new FrameWriter({
  vnet: false,
  highWater: 2 ** 30,
  lowWater: 2 ** 29,
  maxBufferedDisconnected: 0,
});
out.attach({
  read: () => Promise.resolve(null),
  write: (p: Uint8Array) => Promise.resolve(p.length),
  close() {},
  peer: "null",
});
const sink = new ComparatorSink(
  stats,
  out,
  new ClassLog(new Logger("error", () => {}), 10_000),
  () => {},
);
const engine: CompareEngine = new Engine({ compareTimeout: 3000, maxQueueSize: 100_000 }, sink);
let now = 0;
/** Checkouts whose engine takes runs of frames (`takeRun`) get them as the pumps hand them. */
const takesRuns = "takeRun" in engine;
const primaryIn: FrameDecoder = new Decoder({
  onFrame(bytes: Uint8Array, at: number, size: number, vnetLen: number) {
    stats.primaryIn++;
    engine.primaryAt(bytes, at, size, vnetLen, now);
  },
  run: takesRuns
    ? (bytes: Uint8Array, at: number, end: number) => {
      const to = engine.takeRun("primary", bytes, at, end, false, now);
      stats.primaryIn += engine.runFrames;
      return to;
    }
    : undefined,
}, false);
const secondaryIn: FrameDecoder = new Decoder({
  onFrame(bytes: Uint8Array, at: number, size: number, vnetLen: number) {
    stats.secondaryIn++;
    engine.secondaryAt(bytes, at, size, vnetLen, now);
  },
  run: takesRuns
    ? (bytes: Uint8Array, at: number, end: number) => {
      const to = engine.takeRun("secondary", bytes, at, end, false, now);
      stats.secondaryIn += engine.runFrames;
      return to;
    }
    : undefined,
}, false);
/** As the pumps do before reading into their buffer again (checkouts that have it). */
const keepHeld = "keepHeld" in engine;
/** Read buffers from the engine's pool, kept by it when full of held frames (same). */
const inPlace = "keepHeldInPlace" in engine;
/**
 * The checkout's read block size (`READ_BLOCK_SIZE` since the inputs read 1 MiB, `BLOCK_SIZE`
 * before, 256 KiB before it was a constant of `pool.ts`). Until this read the first name, the
 * reads here were of 256 KiB.
 */
const pool = await src("pool.ts").catch(() => ({}));
const READ: number = pool.READ_BLOCK_SIZE ?? pool.BLOCK_SIZE ?? 256 * 1024;
/** Bytes per read: a whole buffer, `--read` bytes, or `--per-read` frames. */
const CHUNK = values["per-read"]
  ? Number(values["per-read"]) * STEP
  : Math.min(READ, Number(values.read ?? READ));
const readBuffer = () => inPlace ? engine.readBuffer() : new Uint8Array(READ);
let primaryBuf = readBuffer();
let secondaryBuf = readBuffer();
/** After a read: held frames copied out of `buf` (returned for the next read) or kept in it. */
function endRead(buf: Uint8Array): Uint8Array {
  if (inPlace) {
    if (engine.keepHeldInPlace()) buf = engine.readBuffer();
  } else if (keepHeld) (engine as { keepHeld(): void }).keepHeld();
  out.flush();
  return buf;
}

/** CPU nanoseconds per pair of the last {@linkcode measure} (the process's, all threads). */
let cpuPerPair = 0;

/** Nanoseconds per pair over `patterns` rounds (the sequence rewriting not counted). */
async function measure(patterns: number): Promise<number> {
  let excluded = 0;
  const cpuStart = cpuUsage();
  const start = performance.now();
  for (let n = 0; n < patterns; n++) {
    const t = performance.now();
    nextRound();
    excluded += performance.now() - t;
    for (let o = 0; o < pattern.length; o += CHUNK) {
      const chunk = pattern.subarray(o, Math.min(o + CHUNK, pattern.length));
      // The kernel's copy into each read buffer, as the pumps see it.
      primaryBuf.set(chunk);
      secondaryBuf.set(chunk);
      now = performance.now();
      primaryIn.push(primaryBuf, chunk.length);
      primaryBuf = endRead(primaryBuf);
      now = performance.now();
      secondaryIn.push(secondaryBuf, chunk.length);
      secondaryBuf = endRead(secondaryBuf);
      await out.idle();
    }
  }
  const cpu = cpuUsage(cpuStart);
  // µs of CPU; the sequence rewriting (CPU only) is taken off as its wall time.
  cpuPerPair = ((cpu.user + cpu.system) * 1e3 - excluded * 1e6) / (patterns * FRAMES);
  return ((performance.now() - start - excluded) * 1e6) / (patterns * FRAMES);
}

/** Patterns per round: about 80,000 pairs. */
const PATTERNS = Math.round(81_920 / FRAMES);
await measure(PATTERNS); // warm-up
const runs: number[] = [];
const cpuRuns: number[] = [];
const profiler = values.allocated ? await startAllocationSampling() : null;
for (let r = 0; r < ROUNDS; r++) {
  runs.push(await measure(PATTERNS));
  cpuRuns.push(cpuPerPair);
}
const allocated = await profiler?.stop();
runs.sort((a, b) => a - b);
cpuRuns.sort((a, b) => a - b);
if (stats.releasedCompared !== (ROUNDS + 1) * PATTERNS * FRAMES || engine.heldPrimary !== 0) {
  throw new Error(`released ${stats.releasedCompared}, ${engine.heldPrimary} still held`);
}
if (allocated !== undefined) {
  const pairs = ROUNDS * PATTERNS * FRAMES;
  console.log(JSON.stringify({ workload, pairs, bytesPerPair: allocated / pairs }));
} else {
  console.log(
    `${workload}: ${runs[Math.floor(ROUNDS / 2)].toFixed(0)} ns per pair (median of ${ROUNDS} ` +
      `rounds of ${PATTERNS * FRAMES} pairs; fastest ${runs[0].toFixed(0)}, slowest ` +
      `${runs[ROUNDS - 1].toFixed(0)}); CPU ${
        cpuRuns[Math.floor(ROUNDS / 2)].toFixed(0)
      } ns per pair${deferredShare()}`,
  );
}

/** "; N% deferred": the share of the frames the engine deferred (checkouts that defer). */
function deferredShare(): string {
  const deferred = (engine as { framesDeferred?: number }).framesDeferred;
  if (deferred === undefined) return "";
  return `; ${((100 * deferred) / ((ROUNDS + 1) * PATTERNS * FRAMES)).toFixed(0)}% deferred`;
}

/** A node of V8's sampling heap profile: bytes allocated at one stack, and its callees'. */
interface SampledNode {
  selfSize: number;
  children: SampledNode[];
}

/**
 * Starts V8's sampling heap profiler, counting what scavenges collect too (the hot path's
 * garbage is short-lived); `stop` returns the bytes allocated since, as sampled.
 */
async function startAllocationSampling(): Promise<{ stop(): Promise<number> }> {
  const session = new Session();
  session.connect();
  // deno-lint-ignore no-explicit-any
  const post = (method: string, params: object = {}): Promise<any> =>
    new Promise((resolve, reject) =>
      session.post(method, params, (e, r) => e ? reject(e) : resolve(r))
    );
  await post("HeapProfiler.enable");
  await post("HeapProfiler.startSampling", {
    samplingInterval: 64,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  const total = (n: SampledNode): number => n.children.reduce((s, c) => s + total(c), n.selfSize);
  return {
    async stop() {
      const { profile } = await post("HeapProfiler.stopSampling");
      session.disconnect();
      return total(profile.head);
    },
  };
}
