import assert from "node:assert/strict";
import { seqAdd, seqAfter, seqDiff, seqMax, seqMin } from "../../src/packet/seq.ts";

Deno.test("seq: after() orders numbers within half the space, across the 2^32 wrap", () => {
  assert.equal(seqAfter(2, 1), true);
  assert.equal(seqAfter(1, 2), false);
  assert.equal(seqAfter(5, 5), false);
  assert.equal(seqAfter(0x10, 0xfffffff0), true);
  assert.equal(seqAfter(0xfffffff0, 0x10), false);
  assert.equal(seqAfter(0x7fffffff, 0), true);
  assert.equal(seqAfter(0x80000001, 0), false, "more than half the space ahead is behind");
});

Deno.test("seq: add, diff, max and min wrap at 2^32", () => {
  assert.equal(seqAdd(0xffffffff, 1), 0);
  assert.equal(seqAdd(0xffffff00, 0x200), 0x100);
  assert.equal(seqDiff(0x100, 0xffffff00), 0x200);
  assert.equal(seqDiff(0xffffff00, 0x100), -0x200);
  assert.equal(seqMax(0xfffffff0, 0x10), 0x10);
  assert.equal(seqMin(0xfffffff0, 0x10), 0xfffffff0);
  assert.equal(seqMax(3, 3), 3);
});
