import assert from "node:assert/strict";
import { Packet, type Side } from "../../src/compare/packet.ts";
import { FrameStore, SLAB_SIZE } from "../../src/compare/store.ts";
import { BlockPool } from "../../src/pool.ts";
import { pseudoRandomBytes } from "../support/packets.ts";

function kept(store: FrameStore, frame: Uint8Array, side: Side = "primary"): Packet {
  const p = new Packet();
  p.side = side;
  p.bytes = frame;
  p.size = frame.length;
  store.keep(p);
  return p;
}

Deno.test("store: copies share slabs, and a slab is reused once all its frames are gone", () => {
  const pool = new BlockPool();
  const store = new FrameStore(pool);
  const frames = Array.from({ length: 600 }, (_, i) => pseudoRandomBytes(1000, i + 1));
  const held = frames.map((f) => kept(store, f));
  held.forEach((p, i) => assert.deepEqual(p.frame(), frames[i]));
  const slabs = Math.ceil((600 * 1000) / SLAB_SIZE);
  assert.ok(slabs > 2);
  assert.equal(store.slabs, slabs);
  for (const p of held) store.release(p);
  assert.equal(store.slabs, 1, "the slab being filled stays; the others went back to the pool");
  assert.equal(pool.free, slabs - 1);
  const again = Array.from({ length: 600 }, (_, i) => kept(store, frames[i]));
  assert.equal(store.slabs, slabs);
  assert.equal(pool.blocks, slabs, "no new blocks: the empty slabs were reused");
  again.forEach((p, i) => assert.deepEqual(p.frame(), frames[i]));
});

Deno.test("store: each side fills its own slabs, so dropping one side frees whole slabs", () => {
  const pool = new BlockPool();
  const store = new FrameStore(pool);
  const primary: Packet[] = [];
  const secondary: Packet[] = [];
  // Interleaved as two inputs read them.
  for (let i = 0; i < 1000; i++) {
    primary.push(kept(store, pseudoRandomBytes(1000, i), "primary"));
    secondary.push(kept(store, pseudoRandomBytes(1000, 5000 + i), "secondary"));
  }
  const perSide = Math.ceil((1000 * 1000) / SLAB_SIZE);
  assert.equal(pool.blocks, 2 * perSide);
  for (const s of secondary) store.release(s);
  assert.equal(pool.free, perSide - 1, "every secondary slab but the one being filled is free");
  primary.forEach((p, i) => assert.deepEqual(p.frame(), pseudoRandomBytes(1000, i)));
});

Deno.test("store: a copy does not change when the source or other slab frames change", () => {
  const store = new FrameStore();
  const src = pseudoRandomBytes(500, 9);
  const a = kept(store, src);
  const original = src.slice();
  src.fill(0);
  const b = kept(store, pseudoRandomBytes(500, 10));
  assert.deepEqual(a.frame(), original);
  assert.notEqual(a.frame().byteOffset, b.frame().byteOffset);
});

Deno.test("store: large frames get their own buffer; evacuated frames leave their slab", () => {
  const store = new FrameStore();
  const big = kept(store, pseudoRandomBytes(60_000, 3));
  assert.equal(big.slab, null);
  assert.equal(store.slabs, 0);
  const old = kept(store, pseudoRandomBytes(100, 4));
  const bytes = old.frame().slice();
  store.evacuate(old);
  assert.equal(old.slab, null);
  assert.deepEqual(old.frame(), bytes);
  assert.equal(old.frame().buffer.byteLength, 100, "its own buffer now");
});

Deno.test("store: frames of a slab that is still mostly held are not evacuated", () => {
  const store = new FrameStore();
  // Three quarters of a slab.
  const count = Math.floor((SLAB_SIZE * 3) / 4 / 1000);
  const held = Array.from({ length: count }, (_, i) => kept(store, pseudoRandomBytes(1000, i)));
  assert.equal(store.slabs, 1);
  store.evacuate(held[0]);
  assert.equal(held[0].slab !== null, true, "most of its slab is held: it stays");
  // Once most of the slab is gone, a long-held frame leaves it.
  for (const p of held.slice(1, count - 10)) store.release(p);
  store.evacuate(held[0]);
  assert.equal(held[0].slab, null);
  assert.equal(held[0].frame().buffer.byteLength, 1000);
});

Deno.test("store: the compared bytes move with the frame into its slab and out again", () => {
  const store = new FrameStore();
  kept(store, pseudoRandomBytes(300, 1)); // the next frame lands at an offset
  const frame = pseudoRandomBytes(500, 2);
  const p = new Packet();
  p.bytes = frame;
  p.size = frame.length;
  p.start = 54;
  store.keep(p);
  assert.ok(p.at > 0);
  assert.equal(p.bytes[p.start], frame[54]);
  assert.deepEqual(p.frame(), frame);
  store.evacuate(p);
  assert.equal(p.slab, null);
  assert.equal(p.at, 0);
  assert.equal(p.start, 54);
  assert.deepEqual(p.frame(), frame);
});

/** Packets for `sizes` frames laid out in one read buffer, `gap` bytes of framing apart. */
function inRead(sizes: number[], gap: number, side: Side = "primary") {
  const read = new Uint8Array(sizes.reduce((n, s) => n + s + gap, 0)).fill(0xee);
  let at = 0;
  const packets = sizes.map((size, i) => {
    at += gap;
    const p = new Packet();
    p.side = side;
    p.bytes = read;
    p.at = at;
    p.size = size;
    p.start = at + 2; // the compared bytes, inside the frame
    p.queued = true;
    read.set(pseudoRandomBytes(size, 100 + i), at);
    at += size;
    return p;
  });
  return { read, packets };
}

Deno.test("store: keepAll copies adjacent held frames of a read buffer together and skips what left", () => {
  const store = new FrameStore();
  const { read, packets } = inRead([60, 1000, 70, 80, 90], 4);
  const gone = packets[2];
  gone.queued = false; // released before the read was done with
  store.keepAll(read, packets, packets.length);
  read.fill(0); // the next read
  const held = packets.filter((p) => p !== gone);
  for (const p of held) {
    assert.notEqual(p.bytes, read);
    assert.equal(p.bytes, held[0].bytes, "one slab");
    assert.equal(p.start, p.at + 2, "the compared bytes moved with the frame");
    assert.deepEqual(p.frame(), pseudoRandomBytes(p.size, 100 + packets.indexOf(p)));
  }
  // One copy: the frames keep their distances (the framing words and the gone frame copied
  // along), and the slab holds four frames.
  assert.equal(held[3].at - held[0].at, 4 * 4 + 60 + 1000 + 70 + 80);
  assert.equal(gone.bytes, read, "a frame no longer held is not copied");
  assert.equal(store.slabs, 1);
  for (const p of held) store.release(p);
  assert.equal(store.slabs, 1, "emptied, the slab is filled again");
});

Deno.test("store: keepAll copies frames far apart, or of the other side, separately", () => {
  const store = new FrameStore();
  const far = inRead([100, 100], 1000);
  store.keepAll(far.read, far.packets, 2);
  const [a, b] = far.packets;
  assert.ok(b.at - a.at < 1000 + 100, "the bytes between them were not copied");
  assert.deepEqual(b.frame(), pseudoRandomBytes(100, 101));
  const sides = inRead([100, 100], 4);
  sides.packets[1].side = "secondary";
  store.keepAll(sides.read, sides.packets, 2);
  assert.notEqual(sides.packets[0].bytes, sides.packets[1].bytes, "each side its own slab");
  assert.deepEqual(sides.packets[1].frame(), pseudoRandomBytes(100, 101));
});

Deno.test("store: keepAll starts a new slab rather than split a run across two", () => {
  const store = new FrameStore();
  const sizes = Array.from({ length: 600 }, () => 1000);
  const { read, packets } = inRead(sizes, 8);
  store.keepAll(read, packets, packets.length);
  read.fill(0);
  // Runs of whole frames: a slab takes as many as fit, with their framing between them.
  const perSlab = Math.floor((SLAB_SIZE + 8) / 1008);
  assert.equal(store.slabs, Math.ceil(600 / perSlab));
  packets.forEach((p, i) => {
    assert.ok(p.at + p.size <= SLAB_SIZE);
    assert.deepEqual(p.frame(), pseudoRandomBytes(1000, 100 + i));
  });
});

Deno.test("store: keepAll keeps a packet listed twice (released, then reused in the same read) where it lies now", () => {
  const store = new FrameStore();
  const { read, packets } = inRead([100, 100, 100], 4);
  const [a, b, c] = packets;
  // `c` was released after being listed first, then reused for the last frame of the read.
  store.keepAll(read, [c, a, b, c], 4);
  read.fill(0);
  packets.forEach((p, i) => assert.deepEqual(p.frame(), pseudoRandomBytes(100, 100 + i)));
  assert.equal(store.slabs, 1);
});
