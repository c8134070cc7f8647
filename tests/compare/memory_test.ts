/**
 * Issue 11: an idle connection costs at most 200 bytes of V8 heap, as in QEMU (~150-211 B).
 * Measured by `bench/conn_heap.ts` in a process of its own (it needs `gc()`), over a table of
 * 100,000 idle TCP connections built through the engine's entry points.
 */

import assert from "node:assert/strict";
import type { ConnHeapResult } from "../../bench/conn_heap.ts";

const SCRIPT = new URL("../../bench/conn_heap.ts", import.meta.url).pathname;

async function measure(connections: number, v6 = false): Promise<ConnHeapResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--v8-flags=--expose-gc", SCRIPT, String(connections), v6 ? "v6" : "v4"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

for (const v6 of [false, true]) {
  const family = v6 ? "IPv6" : "IPv4";
  Deno.test(`connection table: an idle ${family} TCP connection costs at most 200 bytes of heap`, async () => {
    const r = await measure(100_000, v6);
    assert.equal(r.ipv6, v6);
    assert.equal(r.released, 100_000, "every primary segment was compared and released");
    assert.equal(r.held, 0, "every connection is idle");
    assert.ok(
      r.bytesPerConnection <= 200,
      `${
        r.bytesPerConnection.toFixed(1)
      } B per idle connection (heap ${r.heapBefore} -> ${r.heapAfter})`,
    );
  });
}
