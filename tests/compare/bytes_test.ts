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

Deno.test("bytes: long ranges of views compare the views' bytes, not their buffers'", () => {
  const base = pseudoRandomBytes(600, 2);
  // Two views of one buffer at different offsets; the native path (>= 48 bytes) must add
  // each view's own offset.
  const a = base.subarray(100, 400);
  const b = new Uint8Array(700);
  b.set(base.subarray(100, 400), 250);
  const bv = b.subarray(200);
  for (const len of [48, 64, 200, 300]) {
    assert.equal(bytesEqual(a, 0, bv, 50, len), true, `len ${len}`);
    assert.equal(bytesEqual(a, 1, bv, 50, len - 1), false, `shifted, len ${len}`);
  }
  const c = bv.slice();
  c[50 + 299] ^= 1;
  assert.equal(bytesEqual(a, 0, c, 50, 300), false, "a difference in the last byte");
  assert.equal(bytesEqual(a, -1, bv, 49, 64), false, "a negative offset is never equal");
});

Deno.test("bytes: long ranges at offsets beyond the other array's length", () => {
  const a = pseudoRandomBytes(200, 3);
  const big = new Uint8Array(1000);
  big.set(a.subarray(50, 150), 900);
  // 900 + 100 runs past a's length and 50 + 100 fits in big: each order of the arrays.
  assert.equal(bytesEqual(a, 50, big, 900, 100), true);
  assert.equal(bytesEqual(big, 900, a, 50, 100), true);
  const small = a.subarray(50, 150);
  const far = new Uint8Array(2000);
  far.set(small, 1500);
  const other = new Uint8Array(1200);
  other.set(small, 1100);
  // Neither offset fits inside the other array.
  assert.equal(bytesEqual(far, 1500, other, 1100, 100), true);
  other[1150] ^= 4;
  assert.equal(bytesEqual(far, 1500, other, 1100, 100), false);
});
