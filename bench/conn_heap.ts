/**
 * Memory per idle connection (issue 11): a table of N idle TCP connections built through the
 * engine's real entry points, one matching segment pair each (64-byte payload, as the bench's
 * scale run opens them), `heapUsed` (V8 heap) and `external` (ArrayBuffers: the connection
 * records, off the heap) after a forced full GC before and after. Prints one JSON line. Needs
 * `gc()`:
 *
 *   deno run --v8-flags=--expose-gc bench/conn_heap.ts [connections, default 100000] [v6]
 *
 * The frames are built before the first measurement and kept until after the second, so only
 * what the engine keeps is counted.
 *
 * @module
 */

import { CompareEngine } from "../src/compare/engine.ts";
import type { EngineSink } from "../src/compare/events.ts";
import { frame, TCP } from "../src/packet/build.ts";

/** Memory per idle connection of a table of `count`, and what the engine reported. */
export interface ConnHeapResult {
  connections: number;
  ipv6: boolean;
  /** `heapUsed` after a forced GC, before the first frame and after the last. */
  heapBefore: number;
  heapAfter: number;
  /** `external` (ArrayBuffer bytes) after a forced GC, before and after. */
  externalBefore: number;
  externalAfter: number;
  /** V8 heap per connection. */
  heapBytesPerConnection: number;
  /** ArrayBuffer bytes per connection (records and hash buckets). */
  offHeapBytesPerConnection: number;
  /** Both together. */
  bytesPerConnection: number;
  /** Frames the engine released to outdev (one per connection when all compared equal). */
  released: number;
  /** Connections that still hold frames (0: all are idle). */
  held: number;
}

/** Forces a full GC and returns the memory in use. */
export function settledMemory(): Deno.MemoryUsage {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error("run with --v8-flags=--expose-gc");
  // Twice: the first may leave weak and finalizable objects for the second.
  gc();
  gc();
  return Deno.memoryUsage();
}

/** A TCP segment with a 64-byte payload on connection number `n` (distinct for n < 2^24). */
export function segmentOn(n: number, v6: boolean): Uint8Array {
  const a = (n >> 16) & 0xff, b = (n >> 8) & 0xff, c = n & 0xff;
  return frame({
    ip: v6
      ? { v: 6, src: "fd00::1", dst: `fd00::${a}:${b}:${c}` }
      : { src: "10.0.0.1", dst: `10.${a}.${b}.${c}` },
    tcp: {
      sport: 80,
      dport: 40000 + (n % 20000),
      // Sequence and ACK numbers beyond 2^30 (V8's small-integer range) on purpose.
      seq: 0xc000_0000 + n,
      ack: 0x8000_0000 + n,
      flags: TCP.ACK | TCP.PSH,
      payload: "x".repeat(64),
    },
  });
}

/** An engine sink that counts the frames released and ignores the rest. */
export function countingSink(): EngineSink & { released: number } {
  return {
    released: 0,
    release() {
      this.released++;
    },
    discard() {},
    checkpoint() {},
  };
}

/** Builds the table and measures it. */
export function measureConnHeap(count: number, v6 = false): ConnHeapResult {
  const sink = countingSink();
  const frames = Array.from({ length: count }, (_, n) => segmentOn(n, v6));
  const engine = new CompareEngine(
    { compareTimeout: 3000, maxQueueSize: 1024, maxConnections: count },
    sink,
  );
  const before = settledMemory();
  for (let n = 0; n < count; n++) {
    engine.primary(frames[n], 0, n + 0.5);
    engine.secondary(frames[n], 0, n + 0.5);
  }
  const after = settledMemory();
  // Keeps the frames (and the engine) alive across the second measurement.
  if (frames.length !== count || engine.connections !== count) {
    throw new Error(`expected ${count} connections, have ${engine.connections}`);
  }
  return {
    connections: count,
    ipv6: v6,
    heapBefore: before.heapUsed,
    heapAfter: after.heapUsed,
    externalBefore: before.external,
    externalAfter: after.external,
    heapBytesPerConnection: (after.heapUsed - before.heapUsed) / count,
    offHeapBytesPerConnection: (after.external - before.external) / count,
    bytesPerConnection: (after.heapUsed - before.heapUsed + after.external - before.external) /
      count,
    released: sink.released,
    held: engine.heldConnections,
  };
}

if (import.meta.main) {
  const count = Number(Deno.args[0] ?? 100_000);
  console.log(JSON.stringify(measureConnHeap(count, Deno.args[1] === "v6")));
}
