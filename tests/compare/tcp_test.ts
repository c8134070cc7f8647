import assert from "node:assert/strict";
import { CompareEngine } from "../../src/compare/engine.ts";
import { concat, frame, framed, pseudoRandomBytes, TCP } from "../support/packets.ts";
import { Rng } from "../../src/demo/traffic.ts";
import { Recorder } from "../support/recorder.ts";

const STREAM = pseudoRandomBytes(4000, 42);

interface SegOptions {
  ack?: number;
  flags?: number;
  window?: number;
  options?: Uint8Array;
  padTo?: number;
  /** Replace the payload (for divergence). */
  payload?: Uint8Array;
}

/** A segment carrying STREAM[from, to) at sequence number base + from. */
function seg(base: number, from: number, to: number, o: SegOptions = {}): Uint8Array {
  return frame({
    tcp: {
      seq: (base + from) >>> 0,
      ack: o.ack ?? 1,
      flags: o.flags,
      window: o.window,
      options: o.options,
      payload: o.payload ?? STREAM.subarray(from, to),
    },
    padTo: o.padTo,
  });
}

function setup(maxQueueSize = 1024) {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize }, rec);
  return {
    rec,
    engine,
    p: (f: Uint8Array) => engine.primary(f, 0, 0),
    s: (f: Uint8Array) => engine.secondary(f, 0, 0),
  };
}

Deno.test("tcp: identical segments are released once each and the secondary copies dropped", () => {
  const { rec, p, s, engine } = setup();
  const frames = [seg(1000, 0, 100), seg(1000, 100, 250), seg(1000, 250, 251)];
  for (const f of frames) {
    p(f);
    s(f);
  }
  assert.deepEqual(rec.released, frames);
  assert.deepEqual(rec.checkpoints, []);
  assert.equal(engine.heldPrimary + engine.heldSecondary, 0);
});

Deno.test("tcp: secondary split into two segments releases the primary once", () => {
  const { rec, p, s, engine } = setup();
  const whole = seg(1000, 0, 200);
  p(whole);
  s(seg(1000, 0, 100));
  assert.deepEqual(rec.released, [], "half the bytes are not enough");
  s(seg(1000, 100, 200));
  assert.deepEqual(rec.released, [whole]);
  assert.deepEqual(rec.checkpoints, []);
  assert.equal(engine.heldSecondary, 0, "the fully matched secondary segment is dropped at once");
});

Deno.test("tcp: primary split into two segments releases both against one secondary segment", () => {
  const { rec, p, s, engine } = setup();
  const a = seg(1000, 0, 100);
  const b = seg(1000, 100, 200);
  p(a);
  p(b);
  s(seg(1000, 0, 200));
  assert.deepEqual(rec.released, [a, b]);
  assert.equal(engine.heldSecondary, 0);
});

Deno.test("tcp: both sides split differently release every primary segment in order", () => {
  const { rec, p, s, engine } = setup();
  const prim = [seg(7, 0, 150), seg(7, 150, 300), seg(7, 300, 310), seg(7, 310, 1000)];
  const sec = [seg(7, 0, 100), seg(7, 100, 305), seg(7, 305, 700), seg(7, 700, 1000)];
  // Interleave arrivals the way two guests would.
  p(prim[0]);
  s(sec[0]);
  s(sec[1]);
  p(prim[1]);
  p(prim[2]);
  s(sec[2]);
  p(prim[3]);
  s(sec[3]);
  assert.deepEqual(rec.released, prim);
  assert.deepEqual(rec.checkpoints, []);
  assert.equal(engine.heldPrimary + engine.heldSecondary, 0);
});

Deno.test("tcp: a payload difference requests a checkpoint and holds both sides", () => {
  const { rec, p, s, engine } = setup();
  const bad = STREAM.slice(0, 100);
  bad[50] ^= 1;
  p(seg(1, 0, 100));
  s(seg(1, 0, 100, { payload: bad }));
  assert.deepEqual(rec.released, []);
  assert.deepEqual(rec.checkpoints, ["tcp-payload"]);
  assert.equal(engine.heldPrimary, 1);
  assert.equal(engine.heldSecondary, 1);
  engine.checkpoint();
  assert.deepEqual(rec.releaseReasons, ["checkpoint"]);
  assert.equal(engine.heldPrimary + engine.heldSecondary, 0);
});

Deno.test("tcp: the primary is held while its ACK is ahead of the secondary's (ACK gating)", () => {
  const { rec, p, s } = setup();
  const prim = seg(1, 0, 100, { ack: 50 });
  p(prim);
  s(seg(1, 0, 200, { ack: 40 }));
  assert.deepEqual(rec.released, [], "equal bytes, but the secondary acknowledged less");
  assert.deepEqual(rec.checkpoints, ["tcp-ack"]);
  // The secondary acknowledges the same data: a pure ACK raises its highest ACK.
  s(frame({ tcp: { seq: 201, ack: 50, flags: TCP.ACK } }));
  assert.deepEqual(rec.released, [prim]);
});

Deno.test("tcp: a secondary segment byte for byte the held primary (not parsed again) still raises the secondary's ACK and notes its FIN", () => {
  const { rec, p, s, engine } = setup();
  const fin = seg(7, 0, 10, { ack: 50, flags: TCP.ACK | TCP.FIN });
  p(fin);
  s(fin); // the twin of the held primary: decided without a parse of its own
  assert.equal(engine.connections, 0, "both sides closed it: forgotten");
  const first = seg(1, 0, 100, { ack: 50, flags: TCP.ACK });
  p(first);
  s(first);
  assert.deepEqual(rec.released, [fin, first]);
  // The next primary acknowledges 50 too; the secondary's copy comes split with ACK 40,
  // so the rules compare it: the secondary has acknowledged 50 already, so it goes out.
  const second = seg(1, 100, 200, { ack: 50, flags: TCP.ACK });
  p(second);
  s(seg(1, 100, 150, { ack: 40, flags: TCP.ACK }));
  s(seg(1, 150, 200, { ack: 40, flags: TCP.ACK }));
  assert.deepEqual(rec.released, [fin, first, second]);
  assert.deepEqual(rec.checkpoints, []);
});

/**
 * Frames of one size laid back to back in one read, framed, as an input reads them, and handed
 * to `engine` as primary frames where they lie; the read is then done. Returns the read's
 * bytes (a copy) and where frame `i` lies in it.
 */
function primaryRead(engine: CompareEngine, frames: Uint8Array[]) {
  const size = frames[0].length;
  const at = (i: number) => i * (4 + size) + 4;
  const read = concat(...frames.map((f) => framed(f)));
  frames.forEach((_, i) => engine.primaryAt(read, at(i), size, 0, 0));
  engine.keepHeld();
  return { stream: read.slice(), size, at };
}

Deno.test("tcp: bytes a read held equal to the held frames are not trusted once its buffer is reused", () => {
  // The engine compares twins many at a time: how far a read's bytes equal the held frames'
  // copies (issue 11). A later read into the same buffer must compare afresh.
  const { rec, engine } = setup();
  const frames = Array.from({ length: 10 }, (_, i) => seg(1, i * 64, (i + 1) * 64));
  const { stream, size, at } = primaryRead(engine, frames);
  // The secondary's read brings the first three frames; the rest of its buffer happens to hold
  // the same bytes as the held frames (left over from an earlier read).
  const secondaryRead = stream.slice();
  for (let i = 0; i < 3; i++) engine.secondaryAt(secondaryRead, at(i), size, 0, 0);
  engine.keepHeld(); // the read is done: its buffer is reused
  assert.deepEqual(rec.released, frames.slice(0, 3));
  // The next read: frame 3's segment with other bytes (same size, same last byte), lying
  // where frame 3 lay before.
  const other = STREAM.slice(192, 256);
  other[0] ^= 0xff;
  secondaryRead.fill(0).set(seg(1, 192, 256, { payload: other }), at(3));
  engine.secondaryAt(secondaryRead, at(3), size, 0, 0);
  assert.deepEqual(rec.released, frames.slice(0, 3), "not the twin of frame 3");
  assert.deepEqual(rec.checkpoints, ["tcp-payload"]);
});

Deno.test("tcp: a frame reaching past the bytes compared many at a time is compared itself", () => {
  const { rec, engine } = setup();
  const frames = Array.from({ length: 6 }, (_, i) => seg(1, i * 64, (i + 1) * 64));
  const { size, at } = primaryRead(engine, frames);
  // The secondary's copy of frame 4 differs near its end only: in payload byte 60 of 64.
  const other = frames[4].slice();
  other[size - 4] ^= 0xff;
  const copies = [...frames.slice(0, 4), other];
  const secondaryRead = concat(...copies.map((f) => framed(f)));
  copies.forEach((_, i) => engine.secondaryAt(secondaryRead, at(i), size, 0, 0));
  assert.deepEqual(rec.released, frames.slice(0, 4));
  assert.deepEqual(rec.checkpoints, ["tcp-payload"]);
});

Deno.test("tcp: bytes compared many at a time count only against the held frame that lay there", () => {
  const { rec, engine } = setup();
  // Segments of one size ending in the same byte: only the whole comparison tells them apart.
  const frames = Array.from({ length: 6 }, (_, i) => {
    const payload = STREAM.slice(i * 64, (i + 1) * 64);
    payload[63] = 0x55;
    return seg(1, i * 64, (i + 1) * 64, { payload });
  });
  const { stream, size, at } = primaryRead(engine, frames);
  // The secondary's read holds the same stream, but frame 2 is not handed over: frame 3 comes
  // while frame 2 is the oldest held primary. Frame 3 is no twin of frame 2.
  const secondaryRead = stream.slice();
  for (const i of [0, 1, 3]) engine.secondaryAt(secondaryRead, at(i), size, 0, 0);
  assert.deepEqual(rec.released, frames.slice(0, 2));
  assert.equal(engine.heldSecondary, 1, "frame 3 waits for frame 2");
});

Deno.test("tcp: ACK gating is wrap-safe across 2^32", () => {
  const { rec, p, s } = setup();
  const prim = seg(1, 0, 100, { ack: 0x10 });
  p(prim);
  s(seg(1, 0, 200, { ack: 0xfffffff0 }));
  assert.deepEqual(rec.checkpoints, ["tcp-ack"], "0x10 is after 0xfffffff0");
  s(frame({ tcp: { seq: 201, ack: 0x20, flags: TCP.ACK } }));
  assert.deepEqual(rec.released, [prim], "0x20 is after 0x10 even though 0xfffffff0 is larger");
});

Deno.test("tcp: a stream across the 2^32 sequence wrap compares as one stream", () => {
  const { rec, p, s, engine } = setup();
  const base = 0xffffff00;
  const prim = [seg(base, 0, 200), seg(base, 200, 300), seg(base, 300, 600)];
  p(prim[0]);
  p(prim[1]);
  p(prim[2]);
  s(seg(base, 0, 256)); // ends exactly at 2^32
  s(seg(base, 256, 600));
  assert.deepEqual(rec.released, prim);
  assert.deepEqual(rec.checkpoints, []);
  assert.equal(engine.heldSecondary, 0);
});

Deno.test("tcp: out-of-order arrival is compared in sequence order", () => {
  const { rec, p, s } = setup();
  const a = seg(1, 0, 100);
  const b = seg(1, 100, 200);
  p(b);
  p(a);
  s(seg(1, 0, 200));
  assert.deepEqual(rec.released, [a, b]);
});

Deno.test("tcp: pure ACKs, SYN and FIN need no comparison but wait for a secondary packet", () => {
  const { rec, p, s, engine } = setup();
  const syn = frame({ tcp: { seq: 99, ack: 0, flags: TCP.SYN } });
  const ack = frame({ tcp: { seq: 100, ack: 5, flags: TCP.ACK }, padTo: 60 });
  p(syn);
  p(ack);
  assert.deepEqual(rec.released, [], "nothing from the secondary yet");
  s(frame({ tcp: { seq: 99, ack: 0, flags: TCP.SYN, window: 1000 } }));
  assert.deepEqual(rec.released, [syn], "each secondary packet lets the primary move on once");
  assert.equal(engine.heldSecondary, 0, "the secondary's SYN is dropped uncompared");
  s(frame({ tcp: { seq: 100, ack: 5, flags: TCP.ACK } }));
  assert.deepEqual(rec.released, [syn, ack]);
  const fin = frame({ tcp: { seq: 100, ack: 5, flags: TCP.FIN | TCP.ACK } });
  p(fin);
  s(fin);
  assert.deepEqual(rec.released, [syn, ack, fin]);
});

Deno.test("tcp: Ethernet padding after a short payload is not compared", () => {
  const { rec, p, s } = setup();
  const padded = seg(1, 0, 6, { padTo: 60 });
  p(padded);
  s(seg(1, 0, 6));
  assert.deepEqual(rec.released, [padded]);
  assert.deepEqual(rec.checkpoints, []);
});

Deno.test("tcp: options, window and flags that differ are never compared", () => {
  const { rec, p, s } = setup();
  const prim = seg(1, 0, 300, {
    options: new Uint8Array([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]),
    window: 100,
  });
  p(prim);
  s(seg(1, 0, 300, { window: 5000, flags: TCP.ACK }));
  assert.deepEqual(rec.released, [prim]);
  assert.deepEqual(rec.checkpoints, []);
});

Deno.test("tcp: retransmission of compared data is released without comparison", () => {
  const { rec, p, s, engine } = setup();
  const a = seg(1, 0, 100);
  p(a);
  s(a);
  const again = seg(1, 0, 100, { window: 7 });
  p(again);
  assert.equal(engine.heldPrimary, 1, "waits for any secondary packet, as QEMU does");
  s(seg(1, 0, 100));
  assert.deepEqual(rec.released, [a, again]);
  assert.equal(engine.heldSecondary, 0, "the secondary retransmission is dropped");
  assert.deepEqual(rec.checkpoints, []);
});

Deno.test("tcp: retransmitted copies with the same sequence number keep arrival order", () => {
  const { rec, p, s } = setup();
  const first = seg(1, 0, 100, { window: 1 });
  const second = seg(1, 0, 100, { window: 2 });
  p(first);
  p(second);
  s(seg(1, 0, 100));
  assert.deepEqual(rec.released[0], first, "the older copy is compared first");
});

Deno.test("tcp: a secondary overlapping compared bytes is compared only beyond compare_seq", () => {
  const { rec, p, s, engine } = setup();
  const a = seg(1, 0, 100);
  const b = seg(1, 100, 200);
  p(a);
  p(b);
  s(seg(1, 0, 150));
  assert.deepEqual(rec.released, [a]);
  // Bytes 120..150 were compared already: only 150..200 are compared now.
  s(seg(1, 120, 200));
  assert.deepEqual(rec.released, [a, b]);
  assert.deepEqual(rec.checkpoints, []);
  assert.equal(engine.heldPrimary + engine.heldSecondary, 0);
});

Deno.test("tcp: a held frame keeps its bytes after the read buffer is reused", () => {
  const { rec, engine } = setup();
  const buf = seg(1, 0, 100);
  const original = buf.slice();
  engine.primary(buf, 0, 0);
  buf.fill(0xaa); // the socket layer reuses its read buffer
  engine.secondary(seg(1, 0, 100), 0, 0);
  assert.deepEqual(rec.released, [original]);
});

Deno.test("tcp: frames handed over where they lie in a reused read buffer are compared and released as whole frames", () => {
  const { rec, engine } = setup();
  const a = seg(1, 0, 100);
  const b = seg(1, 100, 300);
  // One read: a and b back to back after a few bytes of framing.
  const read = new Uint8Array(7 + a.length + b.length + 9).fill(0xee);
  read.set(a, 7);
  read.set(b, 7 + a.length);
  engine.primaryAt(read, 7, a.length, 0, 0);
  engine.primaryAt(read, 7 + a.length, b.length, 0, 0);
  engine.keepHeld(); // as the input does before reading into its buffer again
  read.fill(0xaa); // reused for the secondary's read
  read.set(b, 3);
  read.set(a, 3 + b.length);
  // b first: it waits for a (held, from the read buffer), then a releases both.
  engine.secondaryAt(read, 3, b.length, 0, 0);
  engine.secondaryAt(read, 3 + b.length, a.length, 0, 0);
  assert.deepEqual(rec.released, [a, b]);
  assert.deepEqual(rec.discards, ["secondary:compared", "secondary:compared"]);
  assert.deepEqual(rec.checkpoints, []);
  assert.equal(engine.heldPrimary + engine.heldSecondary, 0);
});

Deno.test("tcp: a FIN queued behind data goes out with the data, as in QEMU", () => {
  const { rec, p, s, engine } = setup();
  const data = seg(1, 0, 100);
  const fin = frame({ tcp: { seq: 101, ack: 1, flags: TCP.FIN | TCP.ACK } });
  p(data);
  p(fin);
  s(seg(1, 0, 50));
  s(seg(1, 50, 100));
  assert.deepEqual(rec.released, [data, fin], "the fully matched secondary lets the FIN through");
  assert.equal(engine.heldSecondary, 0);
  assert.deepEqual(rec.checkpoints, []);
});

// SPEC 6, last paragraph: primary byte N is compared with secondary byte N.

Deno.test("tcp: equal bytes at another sequence position do not match: the secondary's gap is waited for", () => {
  const { rec, p, s, engine } = setup();
  const same = new Uint8Array(100).fill(0x61);
  p(seg(1000, 0, 100));
  s(seg(1000, 0, 100));
  const prim = seg(1000, 100, 200, { payload: same });
  p(prim);
  s(seg(1000, 200, 300, { payload: same })); // [1200,1300): [1100,1200) is still missing
  assert.deepEqual(rec.released.length, 1, "QEMU releases [1100,1200) against [1200,1300)");
  assert.deepEqual(rec.checkpoints, [], "a gap is no divergence");
  s(seg(1000, 100, 200, { payload: same }));
  assert.deepEqual(rec.released.at(-1), prim, "released once byte 1100 onwards arrived");
  assert.deepEqual(rec.checkpoints, []);
  assert.equal(engine.heldPrimary, 0);
});

Deno.test("tcp: a gap in the secondary that never fills times out into a checkpoint", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 100, maxQueueSize: 1024 }, rec);
  engine.primary(seg(1, 0, 100), 0, 0);
  engine.secondary(seg(1, 50, 150), 0, 0);
  assert.deepEqual(rec.checkpoints, []);
  assert.equal(engine.tick(101), true);
  assert.deepEqual(rec.checkpoints, ["timeout"]);
});

Deno.test("tcp: a gap in the primary is waited for, then both are compared in order", () => {
  const { rec, p, s } = setup();
  s(seg(1, 0, 100));
  s(seg(1, 100, 200));
  const b = seg(1, 100, 200);
  p(b); // overtook [0,100)
  assert.deepEqual(rec.released, []);
  assert.deepEqual(rec.checkpoints, []);
  const a = seg(1, 0, 100);
  p(a);
  assert.deepEqual(rec.released, [a, b]);
  assert.deepEqual(rec.checkpoints, []);
});

Deno.test("tcp: a retransmitted secondary overlapping matched bytes causes no checkpoint", () => {
  const { rec, p, s, engine } = setup();
  p(seg(1000, 0, 100));
  s(seg(1000, 0, 100));
  const b = seg(1000, 100, 200);
  p(b);
  s(seg(1000, 50, 150)); // [1050,1150): 1050..1100 were compared already
  assert.deepEqual(rec.checkpoints, [], "QEMU compares it from its first byte: a checkpoint");
  assert.equal(engine.heldSecondary, 0, "its new bytes matched");
  s(seg(1000, 150, 200));
  assert.deepEqual(rec.released.at(-1), b);
  assert.deepEqual(rec.checkpoints, []);
});

Deno.test("tcp: bytes compared already are not compared again when the primary sends them again", () => {
  const { rec, p, s } = setup();
  p(seg(1, 0, 100));
  s(seg(1, 0, 100));
  // A re-segmented primary retransmission whose old part differs: those bytes went out
  // already and are not compared again; its new part is.
  const old = STREAM.slice(50, 150);
  old[10] ^= 0xff; // position 60, compared before
  const re = seg(1, 50, 150, { payload: old });
  p(re);
  s(seg(1, 100, 150));
  assert.deepEqual(rec.released.at(-1), re);
  assert.deepEqual(rec.checkpoints, []);
});

Deno.test("tcp: a divergence at position N across different segmentation requests a checkpoint", () => {
  const { rec, p, s, engine } = setup();
  p(seg(1, 0, 300));
  s(seg(1, 0, 100));
  const bad = STREAM.slice(100, 200);
  bad[50] ^= 1; // position 150
  s(seg(1, 100, 200, { payload: bad }));
  assert.deepEqual(rec.released, []);
  assert.deepEqual(rec.checkpoints, ["tcp-payload"]);
  assert.equal(engine.heldPrimary, 1);
});

Deno.test("tcp: sequence positions are compared across the 2^32 wrap", () => {
  const { rec, p, s } = setup();
  const base = 0xffffff80;
  p(seg(base, 0, 100));
  s(seg(base, 0, 100));
  const b = seg(base, 100, 300); // crosses 2^32 at stream offset 128
  p(b);
  s(seg(base, 60, 200)); // overlaps compared bytes, crosses the wrap
  assert.deepEqual(rec.checkpoints, []);
  s(seg(base, 250, 300)); // a gap at [200,250)
  assert.deepEqual(rec.released.length, 1);
  s(seg(base, 200, 250));
  assert.deepEqual(rec.released.at(-1), b);
  assert.deepEqual(rec.checkpoints, []);
});

Deno.test("tcp: the ACK rule still holds when the primary ends inside a secondary that started earlier", () => {
  const { rec, p, s } = setup();
  p(seg(1, 0, 100, { ack: 9 }));
  s(seg(1, 0, 100, { ack: 9 }));
  p(seg(1, 100, 150, { ack: 20 }));
  s(seg(1, 80, 200, { ack: 10 }));
  assert.deepEqual(rec.checkpoints, ["tcp-ack"]);
  assert.equal(rec.released.length, 1);
});

Deno.test("tcp: bytes a checkpoint flushed count as compared: a late secondary segment is dropped", () => {
  const { rec, p, s, engine } = setup();
  p(seg(1, 0, 100));
  s(seg(1, 0, 100));
  const p2 = seg(1, 100, 200);
  p(p2);
  engine.checkpoint();
  assert.deepEqual(rec.released.at(-1), p2);
  s(seg(1, 100, 200)); // sent before the checkpoint, read after it
  const p3 = seg(1, 200, 300);
  p(p3);
  assert.equal(engine.heldSecondary, 0, "the late segment is settled, not a gap to wait at");
  s(seg(1, 200, 300));
  assert.deepEqual(rec.released.at(-1), p3);
  assert.deepEqual(rec.checkpoints, []);
});

/** Cuts [0, len) into segments of 1..max bytes. */
function cuts(rng: Rng, len: number, max: number): [number, number][] {
  const out: [number, number][] = [];
  for (let at = 0; at < len;) {
    const to = Math.min(len, at + rng.int(1, max));
    out.push([at, to]);
    at = to;
  }
  return out;
}

/** Swaps neighbours now and then: segments delivered out of order. */
function jumble<T>(rng: Rng, list: T[]): T[] {
  const out = [...list];
  for (let i = 1; i < out.length; i++) {
    if (rng.next() < 0.2) [out[i - 1], out[i]] = [out[i], out[i - 1]];
  }
  return out;
}

Deno.test("tcp: any segmentation, order and overlapping retransmission of equal streams releases everything, no checkpoint", () => {
  for (let seed = 1; seed <= 150; seed++) {
    const rng = new Rng(seed);
    const base = [1000, 0xffffffff - rng.int(0, 3000), rng.int(0, 0xffffffff)][seed % 3] >>> 0;
    const len = rng.int(100, 3000);
    const { rec, p, s, engine } = setup();
    const prim = cuts(rng, len, 600).map(([f, t]) => seg(base, f, t));
    const secRanges = cuts(rng, len, 900);
    // Retransmissions that overlap what came before, cut differently.
    for (let i = rng.int(0, 6); i > 0; i--) {
      const f = rng.int(0, len - 1);
      secRanges.push([f, Math.min(len, f + rng.int(1, 700))]);
    }
    const sec = secRanges.map(([f, t]) => seg(base, f, t));
    const pq = jumble(rng, prim);
    const sq = jumble(rng, sec);
    while (pq.length || sq.length) {
      if (sq.length === 0 || (pq.length > 0 && rng.next() < 0.5)) p(pq.shift()!);
      else s(sq.shift()!);
    }
    // A secondary pure ACK lets a primary that waits for "any secondary packet" go.
    s(frame({ tcp: { seq: (base + len) >>> 0, ack: 1, flags: TCP.ACK } }));
    assert.deepEqual(rec.checkpoints, [], `seed ${seed}`);
    assert.deepEqual(rec.released, prim, `seed ${seed}: every primary once, in order`);
    assert.equal(engine.heldPrimary, 0, `seed ${seed}`);
  }
});

Deno.test("tcp: a byte that differs at position N is caught however both sides are cut", () => {
  for (let seed = 1; seed <= 150; seed++) {
    const rng = new Rng(seed * 7);
    const base = [1000, 0xffffffff - rng.int(0, 3000)][seed % 2] >>> 0;
    const len = rng.int(100, 3000);
    const n = rng.int(0, len - 1);
    const { rec, p, s } = setup();
    const prim = cuts(rng, len, 600);
    for (const [f, t] of jumble(rng, prim)) p(seg(base, f, t));
    for (const [f, t] of jumble(rng, cuts(rng, len, 900))) {
      const payload = STREAM.slice(f, t);
      if (n >= f && n < t) payload[n - f] ^= 0x20;
      s(seg(base, f, t, { payload }));
    }
    assert.deepEqual(rec.checkpoints.slice(0, 1), ["tcp-payload"], `seed ${seed}`);
    // Exactly the primary segments before the one holding byte N went out.
    const before = prim.filter(([, t]) => t <= n).length;
    assert.equal(rec.released.length, before, `seed ${seed}`);
  }
});

Deno.test("tcp: secondary bytes where a primary segment was dropped at a full queue request a checkpoint once the primary went on past them", () => {
  const { rec, p, s, engine } = setup(1);
  const [a, b, c, d] = [seg(1, 0, 100), seg(1, 100, 200), seg(1, 200, 300), seg(1, 300, 400)];
  p(a);
  p(b);
  p(c); // dropped: the queue holds max-queue-size + 1 = 2
  s(a);
  s(b);
  assert.deepEqual(rec.released, [a, b]);
  s(c);
  assert.deepEqual(rec.checkpoints, [], "nothing of the primary's beyond the gap yet (as QEMU)");
  p(d);
  assert.deepEqual(rec.checkpoints, ["tcp-gap"]);
  assert.deepEqual(rec.released, [a, b]);
  engine.checkpoint();
  assert.deepEqual(rec.released, [a, b, d]);
  assert.equal(engine.heldPrimary + engine.heldSecondary, 0);
});

Deno.test("tcp: a primary gap this comparator did not make is waited for, also after a drop elsewhere in the stream", () => {
  const { rec, p, s, engine } = setup(1);
  const seg1 = (from: number) => seg(1, from, from + 100);
  // Never dropped: the primary's segment is late, not lost.
  p(seg1(0));
  s(seg1(0));
  p(seg1(200));
  s(seg1(100));
  assert.deepEqual(rec.checkpoints, []);
  p(seg1(100));
  assert.deepEqual(rec.released, [seg1(0), seg1(100)]);
  s(seg1(200));
  assert.deepEqual(rec.released, [seg1(0), seg1(100), seg1(200)]);
  // [500, 600) dropped, then a checkpoint flushes [300, 500).
  p(seg1(300));
  p(seg1(400));
  p(seg1(500)); // dropped
  engine.checkpoint();
  p(seg1(700));
  s(seg1(600)); // [600, 700): the primary has not sent it yet, nothing was dropped there
  assert.deepEqual(rec.checkpoints, []);
  assert.equal(engine.heldPrimary + engine.heldSecondary, 2);
  s(seg1(500)); // the dropped bytes: the checkpoint did not bring them back
  assert.deepEqual(rec.checkpoints, ["tcp-gap"]);
});

Deno.test("tcp: a gap in the secondary's stream left by a secondary dropped at a full queue is waited for (SPEC 6)", () => {
  const { rec, p, s } = setup(1);
  const seg1 = (from: number) => seg(1, from, from + 100);
  s(seg1(0));
  s(seg1(100));
  s(seg1(200)); // dropped
  p(seg1(0));
  p(seg1(100));
  s(seg1(300));
  p(seg1(200));
  assert.deepEqual(rec.released, [seg1(0), seg1(100)]);
  assert.deepEqual(rec.checkpoints, []);
});

Deno.test("tcp: a SYN on a closed connection kept for a due pass opens a new one, compared afresh", () => {
  const { rec, p, s, engine } = setup();
  const A = TCP.ACK;
  const FA = TCP.FIN | TCP.ACK;
  // The close cut differently: the secondary's one segment is matched in full by the
  // primary's two, and dropped; its pass is due, so the closed connection is kept.
  s(seg(1000, 0, 20, { flags: FA }));
  p(seg(1000, 0, 10, { flags: A }));
  p(seg(1000, 10, 20, { flags: FA }));
  assert.equal(rec.released.length, 2);
  assert.equal(engine.connections, 1, "kept for the pass");
  // The 4-tuple reused: a SYN carrying data (TCP Fast Open), its ISN behind the old position.
  const syn = frame({ tcp: { seq: 500, ack: 0, flags: TCP.SYN, payload: "new connection" } });
  p(syn);
  assert.equal(rec.released.length, 2, "held until the secondary's copy");
  s(syn);
  assert.deepEqual(rec.released.slice(2), [syn]);
  assert.deepEqual(rec.checkpoints, []);
});
