/** The byte backlog a TLS connection keeps what it decrypted while no read waited in. */

import assert from "node:assert/strict";
import { ByteBacklog } from "../../src/wire/byte_backlog.ts";

/** `n` bytes counting on from `start`, modulo 251 (no power of two: shifts show). */
function counting(start: number, n: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (start + i) % 251);
}

Deno.test("byte backlog: bytes come out in order across growth, compaction and reads of any size", () => {
  const backlog = new ByteBacklog();
  let pushed = 0;
  let taken = 0;
  const out = new Uint8Array(100_000);
  // Pushes and takes of sizes that do not divide the buffer, so that the head moves, the
  // tail meets the end with room at the front (compaction) and without (growth).
  for (let round = 0; round < 400; round++) {
    const n = (round * 7919) % 40_000;
    // The pushed range starts 10 bytes into its array, after bytes that must not be taken.
    const src = new Uint8Array(n + 10).fill(255);
    src.set(counting(pushed, n), 10);
    backlog.push(src, 10, n + 10);
    pushed += n;
    const want = (round * 104_729) % 60_000;
    const got = backlog.take(out.subarray(0, want));
    assert.equal(got, Math.min(want, pushed - taken));
    assert.deepEqual(out.subarray(0, got), counting(taken, got));
    taken += got;
    assert.equal(backlog.length, pushed - taken);
  }
  while (backlog.length > 0) {
    const got = backlog.take(out);
    assert.deepEqual(out.subarray(0, got), counting(taken, got));
    taken += got;
  }
  assert.equal(taken, pushed);
});

Deno.test("byte backlog: an emptied large buffer is let go, a small one kept; empty reads take nothing", () => {
  const backlog = new ByteBacklog();
  assert.equal(backlog.take(new Uint8Array(10)), 0);
  backlog.push(counting(0, 1000), 0, 1000);
  assert.equal(backlog.take(new Uint8Array(0)), 0);
  assert.equal(backlog.take(new Uint8Array(1000)), 1000);
  assert.ok(backlog.capacity > 0 && backlog.capacity <= 256 * 1024, "a small buffer is kept");
  backlog.push(counting(0, 1 << 20), 0, 1 << 20);
  assert.ok(backlog.capacity >= 1 << 20);
  assert.equal(backlog.take(new Uint8Array(1 << 20)), 1 << 20);
  assert.equal(backlog.capacity, 0, "a 1 MiB buffer is let go once empty");
});
