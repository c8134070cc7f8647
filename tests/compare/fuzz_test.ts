/**
 * Seeded random campaigns against the engine: well-formed conversations with random
 * segmentation, mutations, garbage and checkpoints. The engine must never throw, never lose
 * or duplicate a primary frame, and keep its limits.
 */

import assert from "node:assert/strict";
import { CompareEngine } from "../../src/compare/engine.ts";
import { Rng } from "../../src/demo/traffic.ts";
import { BlockPool } from "../../src/pool.ts";
import { FrameDecoder } from "../../src/wire/codec.ts";
import { concat, frame, framed, pseudoRandomBytes, TCP } from "../support/packets.ts";
import { outdev } from "../support/outdev.ts";
import { Recorder } from "../support/recorder.ts";

function randomFrame(rng: Rng, stream: Uint8Array): Uint8Array {
  const r = rng.next();
  const port = rng.int(1, 4);
  if (r < 0.6) {
    const from = rng.int(0, stream.length - 1);
    const to = Math.min(stream.length, from + rng.int(0, 1500));
    const base = [0, 0xfffff000, 0x7ffffff0][port % 3];
    return frame({
      vlans: port === 4 ? [{ vid: 5 }] : undefined,
      ip: port === 3 ? { v: 6 } : {},
      tcp: {
        sport: port,
        seq: (base + from) >>> 0,
        ack: rng.int(0, 3) === 0 ? rng.int(0, 0xffffffff) : 1000 + rng.int(0, 50),
        flags: [TCP.ACK, TCP.ACK | TCP.PSH, TCP.SYN, TCP.FIN | TCP.ACK, 0][rng.int(0, 4)],
        payload: stream.subarray(from, to),
      },
      padTo: rng.int(0, 1) ? 60 : undefined,
    });
  }
  if (r < 0.85) {
    return frame({ udp: { sport: port, payload: pseudoRandomBytes(rng.int(0, 64), port) } });
  }
  // Garbage: random bytes, or a valid frame with a few bytes flipped or cut short.
  const g = r < 0.92 ? rng.bytes(rng.int(0, 120)) : frame({ tcp: { payload: "abc" } });
  for (let i = rng.int(0, 3); i > 0 && g.length > 0; i--) {
    g[rng.int(0, g.length - 1)] = rng.int(0, 255);
  }
  return g.subarray(0, rng.int(0, g.length));
}

Deno.test("fuzz: random traffic never throws, loses or duplicates a primary frame", () => {
  for (let seed = 1; seed <= 60; seed++) {
    const rng = new Rng(seed);
    const stream = pseudoRandomBytes(20_000, seed);
    const rec = new Recorder();
    const maxQueueSize = rng.int(1, 40);
    const engine = new CompareEngine(
      { compareTimeout: 50, maxQueueSize, maxConnections: 8, idleTimeout: rng.int(1, 200) },
      rec,
    );
    const primaries: Uint8Array[] = [];
    let now = 0;
    for (let step = 0; step < 600; step++) {
      now += rng.int(0, 5);
      const r = rng.next();
      if (r < 0.45) {
        const f = randomFrame(rng, stream);
        primaries.push(f);
        engine.primary(f, 0, now);
      } else if (r < 0.9) {
        // The secondary mostly mirrors recent primary frames, sometimes sends its own.
        const f = rng.next() < 0.7 && primaries.length
          ? primaries[primaries.length - 1 - rng.int(0, Math.min(5, primaries.length - 1))]
          : randomFrame(rng, stream);
        engine.secondary(f, 0, now);
      } else if (r < 0.97) {
        engine.tick(now);
      } else {
        // Half the flushes keep the secondary's newest frames (`--qmp-secondary`).
        engine.checkpoint(now, rng.int(0, 1) ? null : now - rng.int(0, 20));
      }
      let held = 0;
      let queued = 0;
      for (const c of engine.connectionList()) {
        assert.ok(c.primary.length <= maxQueueSize + 1 && c.secondary.length <= maxQueueSize + 1);
        // Every connection is on exactly one of the idle list and the held list (SPEC 8).
        if (c.empty) assert.ok(c.idle && !c.held, `seed ${seed}: empty ${c.name} not idle`);
        else assert.ok(!c.idle && c.held, `seed ${seed}: ${c.name} holds, not listed`);
        if (!c.empty) held++;
        queued += c.primary.length + c.secondary.length;
      }
      assert.equal(engine.heldConnections, held);
      assert.equal(engine.heldPrimary + engine.heldSecondary, queued, `seed ${seed}: counts`);
      assert.ok(engine.connections <= 8);
    }
    engine.checkpoint();
    assert.equal(engine.heldPrimary + engine.heldSecondary, 0, `seed ${seed}`);
    const lost = rec.discards.filter((d) => d.startsWith("primary:")).length;
    assert.equal(rec.released.length + lost, primaries.length, `seed ${seed}: conservation`);
    // Every release is one of the primary frames, each at most as often as it was sent.
    const sent = new Map<string, number>();
    for (const f of primaries) sent.set(f.join(), (sent.get(f.join()) ?? 0) + 1);
    for (const f of rec.released) {
      const n = sent.get(f.join()) ?? 0;
      assert.ok(n > 0, `seed ${seed}: released a frame the primary never sent`);
      sent.set(f.join(), n - 1);
    }
  }
});

Deno.test("fuzz: random bytes on a stream never break the decoder or the engine", () => {
  for (let seed = 1; seed <= 30; seed++) {
    const rng = new Rng(seed * 31);
    const engine = new CompareEngine({ compareTimeout: 100, maxQueueSize: 16 }, new Recorder());
    const vnet = seed % 2 === 0;
    const decoder = new FrameDecoder({
      onFrame: (bytes, at, size, v) => engine.primaryAt(bytes, at, size, v, 0),
    }, vnet);
    const parts: Uint8Array[] = [];
    for (let i = 0; i < 40; i++) {
      // Mostly plausible framing with small lengths, sometimes pure noise.
      parts.push(
        rng.next() < 0.7
          ? framed(rng.bytes(rng.int(0, 200)), vnet ? rng.int(0, 30) : undefined)
          : rng.bytes(rng.int(1, 16)),
      );
    }
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) all.set(p, o), o += p.length;
    for (let at = 0; at < all.length;) {
      const n = rng.int(1, 300);
      if (decoder.push(all.subarray(at, at + n)) !== null) decoder.reset();
      at += n;
    }
  }
});

Deno.test("fuzz: deciding a matching pair at once gives the same decisions as queueing it", () => {
  // With a tracer the engine queues every frame and runs the comparison rules; without one it
  // decides a frame that matches the other side's oldest held frame at once (issue 11). Both
  // must decide the same, in the same order, holding the same frames after every step.
  for (let seed = 1; seed <= 60; seed++) {
    const rng = new Rng(seed);
    const stream = pseudoRandomBytes(20_000, seed);
    const options = {
      compareTimeout: 50,
      maxQueueSize: rng.int(1, 40),
      maxConnections: 8,
      idleTimeout: rng.int(1, 200),
    };
    const queued = new Recorder();
    const atOnce = new Recorder();
    const general = new CompareEngine(options, queued, { trace() {} });
    const fast = new CompareEngine(options, atOnce);
    // Frames sent on one side that the other side will mostly send too, in order.
    const pending: { side: "primary" | "secondary"; frame: Uint8Array }[] = [];
    let now = 0;
    for (let step = 0; step < 800; step++) {
      now += rng.int(0, 5);
      const r = rng.next();
      if (r < 0.85) {
        let side: "primary" | "secondary";
        let f: Uint8Array;
        if (pending.length > 0 && rng.next() < 0.6) {
          const i = rng.next() < 0.8 ? 0 : rng.int(0, pending.length - 1);
          const twin = pending.splice(i, 1)[0];
          side = twin.side === "primary" ? "secondary" : "primary";
          f = twin.frame;
        } else {
          side = rng.int(0, 1) ? "primary" : "secondary";
          f = randomFrame(rng, stream);
          if (rng.next() < 0.9) pending.push({ side, frame: f });
        }
        general[side](f, 0, now);
        fast[side](f, 0, now);
      } else if (r < 0.95) {
        general.tick(now);
        fast.tick(now);
      } else {
        general.checkpoint(now);
        fast.checkpoint(now);
      }
      assert.equal(fast.heldPrimary, general.heldPrimary, `seed ${seed} step ${step}`);
      assert.equal(fast.heldSecondary, general.heldSecondary, `seed ${seed} step ${step}`);
    }
    assert.deepEqual(atOnce.log, queued.log, `seed ${seed}`);
    assert.ok(queued.released.length > 50, `seed ${seed}: enough pairs matched`);
  }
});

Deno.test("fuzz: frames handed over in reused read buffers, kept once per read, decide as whole frames", async () => {
  // The input hands the engine frames where they lie in its read buffer, and the engine copies
  // the held ones out of it only at the end of the read, adjacent ones together; the outdev
  // writer copies released frames lying back to back together, later (issue 11). Released
  // or dropped meanwhile, reused for a later frame of the same read, far apart, in slabs
  // emptied and refilled: the decisions, and every byte outdev gets, must be those of frames
  // handed over whole.
  let keptTotal = 0;
  for (let seed = 1; seed <= 60; seed++) {
    const rng = new Rng(seed * 13);
    const stream = pseudoRandomBytes(20_000, seed);
    const options = { compareTimeout: 50, maxQueueSize: rng.int(1, 40), maxConnections: 8 };
    const wholeRec = new Recorder();
    const readRec = new Recorder();
    const whole = new CompareEngine(options, wholeRec);
    const reads = new CompareEngine(options, readRec);
    // A third engine whose releases go to a real writer, sharing its blocks as the comparator's.
    const pool = new BlockPool();
    const { out, sink, written } = outdev(pool);
    const toOutdev = new CompareEngine({ ...options, pool }, sink);
    // Two more that read into blocks of their pools and keep the blocks whose held frames fill
    // `keepInPlaceFrom` bytes as their slabs (the comparator's pumps): to a recorder (the
    // frames' bytes when decided) and to a real writer (the bytes outdev gets, copied later).
    const keepInPlaceFrom = rng.int(1, 4000);
    const placeRec = new Recorder();
    const inPlace = new CompareEngine({ ...options, keepInPlaceFrom }, placeRec);
    const placePool = new BlockPool();
    const placeOut = outdev(placePool);
    const inPlaceOut = new CompareEngine(
      { ...options, pool: placePool, keepInPlaceFrom },
      placeOut.sink,
    );
    const blocks = [inPlace.readBuffer(), inPlaceOut.readBuffer()];
    let kept = 0;
    const read = new Uint8Array(64 * 1024);
    let batch: { frame: Uint8Array; now: number }[] = [];
    let batchSide: "primary" | "secondary" = "primary";
    /** One read: the batch's frames back to back with framing words (or more) between them. */
    const endRead = () => {
      let at = 0;
      for (const { frame: f, now } of batch) {
        at += rng.next() < 0.9 ? 4 : rng.int(0, 400);
        read.set(f, at);
        for (const b of blocks) b.set(f, at);
        for (
          const [e, bytes] of [[reads, read], [toOutdev, read], [inPlace, blocks[0]], [
            inPlaceOut,
            blocks[1],
          ]] as const
        ) {
          if (batchSide === "primary") e.primaryAt(bytes, at, f.length, 0, now);
          else e.secondaryAt(bytes, at, f.length, 0, now);
        }
        at += f.length;
      }
      reads.keepHeld();
      // What the comparator's pump does at the end of a read.
      toOutdev.keepHeld();
      out.flush();
      const fill = rng.int(0, 255);
      read.fill(fill); // the next read
      for (const [i, e] of [inPlace, inPlaceOut].entries()) {
        const keeps = e.keepHeldInPlace();
        if (e === inPlaceOut) placeOut.out.flush();
        // A block kept holds frames: the next read goes into another one.
        if (keeps) kept++, blocks[i] = e.readBuffer();
        else blocks[i].fill(fill);
      }
      batch = [];
    };
    const sent: Uint8Array[] = [];
    let now = 0;
    for (let step = 0; step < 800; step++) {
      now += rng.int(0, 5);
      const r = rng.next();
      if (r < 0.9) {
        const side: "primary" | "secondary" = rng.int(0, 3) === 0
          ? batchSide
          : rng.int(0, 1)
          ? "primary"
          : "secondary";
        const f = side === "secondary" && sent.length > 0 && rng.next() < 0.7
          ? sent[sent.length - 1 - rng.int(0, Math.min(6, sent.length - 1))]
          : randomFrame(rng, stream);
        if (side === "primary") sent.push(f);
        if (side !== batchSide || batch.length >= rng.int(1, 12)) endRead();
        batchSide = side;
        batch.push({ frame: f, now });
        whole[side](f, 0, now);
        continue;
      }
      endRead();
      if (r < 0.93) await out.idle(); // writes complete: chunks go back to the pool
      if (r < 0.97) {
        for (const e of [whole, reads, toOutdev, inPlace, inPlaceOut]) e.tick(now);
      } else {
        for (const e of [whole, reads, toOutdev, inPlace, inPlaceOut]) e.checkpoint(now);
      }
      if (r < 0.93) await placeOut.out.idle();
      for (const e of [reads, inPlace, inPlaceOut]) {
        assert.deepEqual(
          [e.heldPrimary, e.heldSecondary, e.heldPrimaryBytes],
          [whole.heldPrimary, whole.heldSecondary, whole.heldPrimaryBytes],
          `seed ${seed} step ${step}`,
        );
      }
    }
    endRead();
    for (const e of [whole, reads, toOutdev, inPlace, inPlaceOut]) e.checkpoint(now);
    out.flush();
    await out.idle();
    placeOut.out.flush();
    await placeOut.out.idle();
    assert.deepEqual(readRec.log, wholeRec.log, `seed ${seed}`);
    assert.deepEqual(placeRec.log, wholeRec.log, `seed ${seed}: blocks kept in place`);
    assert.deepEqual(
      concat(...placeOut.written),
      concat(...wholeRec.released.map((f) => framed(f))),
      `seed ${seed}: outdev got every released frame from blocks kept in place`,
    );
    keptTotal += kept;
    // Besides the block read into, the store keeps a slab per side to fill, even empty.
    assert.ok(
      placePool.free >= placePool.blocks - 3,
      `seed ${seed}: ${placePool.blocks - placePool.free} of ${placePool.blocks} blocks not back`,
    );
    assert.deepEqual(
      concat(...written),
      concat(...wholeRec.released.map((f) => framed(f))),
      `seed ${seed}: outdev got every released frame, framed, byte for byte`,
    );
    assert.ok(wholeRec.released.length > 50, `seed ${seed}: enough frames released`);
  }
  assert.ok(keptTotal > 1000, `${keptTotal} blocks kept in place`);
});

Deno.test("fuzz: hibernating every idle connection but one changes no decision", () => {
  // Idle connections past the most recent ones hand their handle back and keep their state in
  // their record (issue 11). An engine that does so after every frame must decide exactly as
  // one whose few connections never hibernate.
  for (let seed = 1; seed <= 60; seed++) {
    const rng = new Rng(seed * 7);
    const stream = pseudoRandomBytes(20_000, seed);
    const options = {
      compareTimeout: 50,
      maxQueueSize: rng.int(1, 40),
      maxConnections: rng.int(3, 8),
      idleTimeout: rng.int(1, 300),
    };
    const awake = new Recorder();
    const hibernating = new Recorder();
    const a = new CompareEngine(options, awake);
    const h = new CompareEngine({ ...options, awakeIdleConnections: 1 }, hibernating);
    const sent: Uint8Array[] = [];
    let now = 0;
    for (let step = 0; step < 800; step++) {
      now += rng.int(0, 5);
      const r = rng.next();
      if (r < 0.88) {
        const side = rng.int(0, 1) ? "primary" : "secondary";
        const f = side === "secondary" && sent.length > 0 && rng.next() < 0.7
          ? sent[sent.length - 1 - rng.int(0, Math.min(6, sent.length - 1))]
          : randomFrame(rng, stream);
        if (side === "primary") sent.push(f);
        a[side](f, 0, now);
        h[side](f, 0, now);
      } else if (r < 0.97) {
        a.tick(now);
        h.tick(now);
      } else {
        a.checkpoint(now);
        h.checkpoint(now);
      }
      assert.deepEqual(
        [h.connections, h.heldConnections, h.heldPrimary, h.heldSecondary],
        [a.connections, a.heldConnections, a.heldPrimary, a.heldSecondary],
        `seed ${seed} step ${step}`,
      );
    }
    assert.deepEqual(hibernating.log, awake.log, `seed ${seed}`);
    const state = (e: CompareEngine) =>
      [...e.connectionList()].map((c) => [
        c.id,
        c.name,
        c.compareSeq,
        c.primaryAck,
        e.primaryDroppedUntil(c),
        c.idle,
      ]);
    assert.deepEqual(state(h), state(a), `seed ${seed}`);
  }
});

Deno.test("fuzz: a primary datagram compared once with each secondary decides as comparing it with the whole queue on every arrival", () => {
  // Without a tracer, the oldest primary datagram is compared only with the secondary ones it
  // has not met yet; with one, with the whole secondary queue on every arrival, as QEMU does.
  // Few distinct payloads on few connections, so that queues grow long before a match, matches
  // are found deep in the queue, and checkpoints (some keeping the secondary's newer frames, as
  // `--qmp-secondary` does) cut in between.
  for (let seed = 1; seed <= 60; seed++) {
    const rng = new Rng(seed * 13);
    const options = { compareTimeout: 40, maxQueueSize: rng.int(2, 60) };
    const rescanning = new Recorder();
    const once = new Recorder();
    const full = new CompareEngine(options, rescanning, { trace() {} });
    const fast = new CompareEngine(options, once);
    const kinds = rng.int(2, 6);
    let now = 0;
    for (let step = 0; step < 1500; step++) {
      now += rng.int(0, 3);
      const r = rng.next();
      if (r < 0.94) {
        const side = rng.next() < 0.5 ? "primary" : "secondary";
        const f = frame({
          udp: { sport: rng.int(1, 2), payload: `datagram ${rng.int(1, kinds)}` },
          ip: { id: rng.int(0, 65535) },
        });
        full[side](f, 0, now);
        fast[side](f, 0, now);
      } else if (r < 0.98) {
        full.tick(now);
        fast.tick(now);
      } else {
        const cutoff = rng.next() < 0.5 ? now - rng.int(0, 20) : null;
        assert.equal(fast.checkpoint(now, cutoff), full.checkpoint(now, cutoff));
      }
      assert.equal(fast.heldPrimary, full.heldPrimary, `seed ${seed} step ${step}`);
      assert.equal(fast.heldSecondary, full.heldSecondary, `seed ${seed} step ${step}`);
    }
    assert.deepEqual(once.log, rescanning.log, `seed ${seed}`);
    assert.ok(rescanning.released.length > 100, `seed ${seed}: enough datagrams matched`);
  }
});
