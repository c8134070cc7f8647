import assert from "node:assert/strict";
import { bytesEqual } from "../../src/compare/bytes.ts";
import { pseudoRandomBytes } from "../support/packets.ts";

Deno.test("bytes: equality at every length and offset, and a difference at every position", () => {
  const a = pseudoRandomBytes(300, 1);
  const big = new Uint8Array(400);
  big.set(a, 37); // the same bytes at another, unaligned offset
  for (let len = 0; len <= 70; len++) {
    for (const off of [0, 1, 3, 5, 8]) {
      assert.equal(bytesEqual(a, off, big, 37 + off, len), true, `len ${len} off ${off}`);
    }
  }
  for (let pos = 0; pos < 100; pos++) {
    const b = big.slice();
    b[37 + pos] ^= 0x80;
    assert.equal(bytesEqual(a, 0, b, 37, 100), false, `difference at ${pos}`);
  }
});

Deno.test("bytes: ranges past either end are never equal", () => {
  const a = new Uint8Array(20);
  assert.equal(bytesEqual(a, 10, a, 0, 11), false);
  assert.equal(bytesEqual(a, 0, a, 15, 6), false);
  assert.equal(bytesEqual(a.subarray(5), 0, a, 0, 15), true);
  assert.equal(bytesEqual(a.subarray(5), 0, a, 0, 16), false, "a view's end, not its buffer's");
});
