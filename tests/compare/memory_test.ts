/**
 * Issue 11: an idle connection costs at most 200 bytes, as in QEMU (~150-211 B by RSS), and
 * V8 heap objects cost about twice their bytes in RSS: so an idle connection's state lives in
 * a record off the heap (`src/compare/records.ts`, 64 bytes, 88 for an IPv6 key), and its heap
 * cost is close to nothing. Measured by `bench/conn_heap.ts` in a process of its own (it needs
 * `gc()`), over a table of 100,000 idle TCP connections built through the engine's entry
 * points: V8 heap and ArrayBuffer bytes after a forced GC.
 */

import assert from "node:assert/strict";
import { runJsonChild } from "../support/child.ts";
import type { ConnHeapResult } from "../../bench/conn_heap.ts";

const SCRIPT = new URL("../../bench/conn_heap.ts", import.meta.url).pathname;

function measure(connections: number, v6 = false): Promise<ConnHeapResult> {
  return runJsonChild([
    "run",
    "--v8-flags=--expose-gc",
    SCRIPT,
    String(connections),
    v6 ? "v6" : "v4",
  ]);
}

/**
 * Records (64 B, or 88 with an IPv6 key's spilled bytes), hash buckets (up to 8 B), the last
 * chunk's unused records and the heap's share.
 */
const MAX_BYTES = { IPv4: 96, IPv6: 120 };
/** What stays on the V8 heap: only the handles of recently idle connections, a constant. */
const MAX_HEAP_BYTES = 16;

for (const v6 of [false, true]) {
  const family = v6 ? "IPv6" : "IPv4";
  const maxBytes = MAX_BYTES[family];
  Deno.test(`connection table: an idle ${family} TCP connection costs at most ${maxBytes} bytes, ${MAX_HEAP_BYTES} of them on the V8 heap`, async () => {
    const r = await measure(100_000, v6);
    assert.equal(r.ipv6, v6);
    assert.equal(r.released, 100_000, "every primary segment was compared and released");
    assert.equal(r.held, 0, "every connection is idle");
    const where =
      `heap ${r.heapBefore} -> ${r.heapAfter}, external ${r.externalBefore} -> ${r.externalAfter}`;
    assert.ok(
      r.bytesPerConnection <= maxBytes,
      `${r.bytesPerConnection.toFixed(1)} B per idle connection (${where})`,
    );
    assert.ok(
      r.heapBytesPerConnection <= MAX_HEAP_BYTES,
      `${r.heapBytesPerConnection.toFixed(1)} B of V8 heap per idle connection (${where})`,
    );
  });
}
