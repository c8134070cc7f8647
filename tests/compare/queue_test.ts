/**
 * A connection's packet queue: a deque that keeps its array when it empties (issue 11), so
 * every operation must see only what is queued now, never what an earlier fill left behind.
 */

import assert from "node:assert/strict";
import { Packet, PacketQueue, queueSpares } from "../../src/compare/packet.ts";

function packet(seq: number): Packet {
  const p = new Packet();
  p.seq = seq;
  return p;
}

const seqs = (q: PacketQueue) => Array.from({ length: q.length }, (_, i) => q.at(i).seq);

Deno.test("packet queue: emptied and filled again, it holds only the new packets", () => {
  const q = new PacketQueue();
  const old = [1, 2, 3, 4].map(packet);
  for (const p of old) q.push(p);
  while (q.length > 0) q.shift();
  assert.equal(q.peek(), undefined);
  assert.equal(q.shift(), undefined);
  assert.equal(q.remove(old[3]), false, "a packet shifted out is not found again");
  q.push(packet(10));
  q.insertBySeq(packet(5));
  assert.deepEqual(seqs(q), [5, 10]);
  assert.equal(q.remove(old[2]), false);
});

Deno.test("packet queue: sorted insertion, removal anywhere and both drains keep order", () => {
  const q = new PacketQueue();
  for (const s of [10, 30, 20, 20, 40, 5]) q.insertBySeq(packet(s));
  assert.deepEqual(seqs(q), [5, 10, 20, 20, 30, 40]);
  const second20 = q.at(3);
  assert.equal(q.removeAt(2).seq, 20);
  assert.equal(q.at(2), second20);
  assert.ok(q.remove(q.at(3)));
  assert.deepEqual(seqs(q), [5, 10, 20, 40]);
  const dropped: number[] = [];
  q.drainUnless((p) => p.seq % 20 === 0, (p) => dropped.push(p.seq));
  assert.deepEqual([seqs(q), dropped], [[20, 40], [5, 10]]);
  const drained: number[] = [];
  q.drain((p) => {
    assert.equal(q.length, 0, "emptied before the first call");
    drained.push(p.seq);
  });
  assert.deepEqual(drained, [20, 40]);
  q.push(packet(1));
  assert.deepEqual(seqs(q), [1]);
});

Deno.test("packet queue: a long queue emptied from the head keeps the rest in order", () => {
  const q = new PacketQueue();
  for (let i = 0; i < 300; i++) q.push(packet(i));
  for (let i = 0; i < 200; i++) assert.equal(q.shift()!.seq, i);
  assert.equal(q.length, 100);
  q.insertBySeq(packet(250));
  assert.deepEqual(seqs(q), [
    ...Array.from({ length: 51 }, (_, i) => 200 + i),
    250,
    ...Array.from({ length: 49 }, (_, i) => 251 + i),
  ]);
  for (let i = 0; i < 101; i++) q.shift();
  assert.equal(q.length, 0);
  assert.equal(q.peek(), undefined);
});

Deno.test("packet queue: new queues start empty and independent of each other", () => {
  const a = new PacketQueue();
  const b = new PacketQueue();
  a.insertBySeq(packet(7));
  a.push(packet(8));
  a.push(packet(9));
  assert.deepEqual([seqs(a), seqs(b)], [[7, 8, 9], []]);
  b.push(packet(1));
  assert.deepEqual([seqs(a), seqs(b), seqs(new PacketQueue())], [[7, 8, 9], [1], []]);
  b.drainUnless(() => false, () => {});
  new PacketQueue().drain(() => assert.fail("an empty queue has nothing to drain"));
  assert.equal(new PacketQueue().peek(), undefined);
});

Deno.test("packet queue: a long array another queue emptied is reused in order, and holds nothing old", () => {
  // Queues that fill and empty leave their long arrays as spares for any queue of the process.
  const fillers = Array.from({ length: 10 }, () => new PacketQueue());
  const old = Array.from({ length: 500 }, (_, i) => packet(100_000 + i));
  for (const f of fillers) {
    for (const p of old) f.push(p);
    f.drain(() => {});
  }
  const q = new PacketQueue();
  let next = 0;
  let expected = 0;
  // Grown past the short array while packets were shifted from its head.
  for (let round = 0; round < 40; round++) {
    for (let i = 0; i < 7; i++) q.push(packet(next++));
    assert.equal(q.shift()!.seq, expected++);
  }
  assert.deepEqual(seqs(q), Array.from({ length: next - expected }, (_, i) => expected + i));
  assert.equal(q.remove(old[499]), false, "another queue's packet is not in this one");
  q.insertBySeq(packet(expected - 1));
  assert.equal(q.peek()!.seq, expected - 1);
  q.drain(() => {});
  assert.equal(q.length, 0);
  assert.equal(q.peek(), undefined);
});

Deno.test("packet queue: the arrays of many queues that fill a little and empty together are kept for the next ones, within 64 Ki slots", () => {
  // As 64 UDP flows whose replicas differ do between checkpoints: both sides' queues fill with
  // some 60 frames, and a flush empties them all at once.
  const queues = Array.from({ length: 128 }, () => new PacketQueue());
  const frames = Array.from({ length: 60 }, (_, i) => packet(i));
  const fill = () => {
    for (const q of queues) for (const p of frames) q.push(p);
  };
  fill();
  const filled = queueSpares();
  for (const q of queues) q.drain(() => {});
  const emptied = queueSpares();
  assert.equal(emptied.arrays - filled.arrays, 128, "every queue's array is kept");
  fill();
  assert.equal(queueSpares().arrays, emptied.arrays - 128, "and taken again by the next fill");
  for (const q of queues) assert.deepEqual(seqs(q), frames.map((p) => p.seq));
  for (const q of queues) q.drain(() => {});
  // Many more: the spares stop at 64 Ki slots.
  const many = Array.from({ length: 3000 }, () => new PacketQueue());
  for (const q of many) for (const p of frames) q.push(p);
  for (const q of many) q.drain(() => {});
  assert.ok(queueSpares().slots <= 65536, `${queueSpares().slots} slots`);
  assert.ok(queueSpares().slots > 65536 - 200, "filled up to the limit");
});
