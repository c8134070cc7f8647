/**
 * `CompareEngine.takeRun` (issue 11): the frames of a read taken at once, twins of the other
 * side's held frames paired and the first replica's frames held, must be decided exactly as
 * the decoder's frame-by-frame handing over decides them.
 */

import assert from "node:assert/strict";
import { CompareEngine, type EngineOptions, HELD_FRAME_COST } from "../../src/compare/engine.ts";
import type { ReleaseReason } from "../../src/compare/events.ts";
import type { UnsupportedReason } from "../../src/packet/parse.ts";
import { Rng } from "../../src/demo/traffic.ts";
import {
  FrameDecoder,
  NET_BUFSIZE,
  type OversizeError,
  writeHeader,
} from "../../src/wire/codec.ts";
import { frame, pseudoRandomBytes, TCP } from "../support/packets.ts";
import { Recorder } from "../support/recorder.ts";

type Side = "primary" | "secondary";

/** A recorder that also notes the arrival time a released frame is handed with. */
class TimedRecorder extends Recorder {
  override release(
    bytes: Uint8Array,
    at: number,
    size: number,
    vnetLen: number,
    reason: ReleaseReason,
    _unsupported?: UnsupportedReason,
    arrivedAt?: number,
  ): void {
    super.release(bytes, at, size, vnetLen, reason);
    (this.log[this.log.length - 1] as { arrivedAt?: number }).arrivedAt = arrivedAt;
  }
}

/** A TCP segment of one of three connections, most of them in stream order, or another frame. */
function nextFrame(rng: Rng, stream: Uint8Array, next: number[], orderly: boolean): Uint8Array {
  const r = orderly ? rng.next() * 0.85 : rng.next();
  const port = rng.int(0, 2);
  if (r < 0.8) {
    const len = rng.next() < 0.1 ? 0 : rng.int(1, 200);
    // Mostly the next bytes of the stream; sometimes a retransmission or a jump.
    const from = orderly || rng.next() < 0.9 ? next[port] : rng.int(0, stream.length - 200);
    next[port] = (from + len) % (stream.length - 200);
    return frame({
      tcp: {
        sport: 40000 + port,
        seq: (0xffffff00 + from) >>> 0,
        ack: 1000 + rng.int(0, 3),
        flags: rng.next() < 0.03 ? TCP.FIN | TCP.ACK : rng.next() < 0.1 ? 0 : TCP.ACK,
        payload: stream.subarray(from, from + len),
      },
    });
  }
  if (r < 0.92) {
    return frame({ udp: { sport: port, payload: pseudoRandomBytes(rng.int(0, 80), port) } });
  }
  if (r < 0.96) return frame({ tcp: { sport: 50000 + rng.int(0, 1000), payload: "new" } });
  return rng.bytes(rng.int(1, 40)); // not comparable
}

/** One engine fed through a decoder per side, with or without runs. */
function feeder(options: EngineOptions, runs: boolean, vnet: boolean) {
  const rec = new TimedRecorder();
  const engine = new CompareEngine(options, rec);
  let now = 0;
  let taken = 0;
  const decoders = {} as Record<Side, FrameDecoder>;
  for (const side of ["primary", "secondary"] as const) {
    decoders[side] = new FrameDecoder({
      onFrame(bytes, at, size, vnetLen) {
        if (side === "primary") engine.primaryAt(bytes, at, size, vnetLen, now);
        else engine.secondaryAt(bytes, at, size, vnetLen, now);
        engine.queueGrewLong = false;
      },
      run: runs
        ? (bytes, at, end) => {
          const to = engine.takeRun(side, bytes, at, end, vnet, now);
          taken += engine.runFrames;
          return to;
        }
        : undefined,
    }, vnet);
  }
  return {
    rec,
    engine,
    get taken() {
      return taken;
    },
    read(side: Side, buf: Uint8Array, end: number, at: number) {
      now = at;
      decoders[side].push(buf, end);
      engine.keepHeld();
    },
    push(side: Side, buf: Uint8Array): OversizeError | null {
      return decoders[side].push(buf);
    },
  };
}

Deno.test("takeRun: frames taken in runs are decided as frames handed over one by one", () => {
  let takenTotal = 0;
  let deferredTotal = 0;
  for (let seed = 1; seed <= 40; seed++) {
    const rng = new Rng(seed * 7919 + 13);
    const vnet = seed % 4 === 0;
    // Odd seeds: the replicas' reads bring the same frames in the same order (the steady
    // state, long runs); even ones: reads of either side, frames in any order.
    const orderly = seed % 2 === 1;
    const stream = pseudoRandomBytes(30_000, seed);
    const options: EngineOptions = {
      compareTimeout: 50,
      maxQueueSize: rng.next() < 0.3 ? rng.int(1, 40) : rng.int(64, 300),
      maxConnections: rng.int(2, 8),
      // Budgets of a few frames: their bytes and each one's bookkeeping (HELD_FRAME_COST).
      maxHeldBytes: rng.next() < 0.2 ? 8 * HELD_FRAME_COST + rng.int(500, 5000) : undefined,
    };
    const one = feeder(options, false, vnet);
    const run = feeder(options, true, vnet);
    const next = [0, 0, 0];
    // Frames one side sent that the other will mostly send too, in order.
    const pending: { side: Side; frame: Uint8Array }[] = [];
    const buf = new Uint8Array(64 * 1024);
    let now = 0;
    for (let step = 0; step < 300; step++) {
      now += rng.int(0, 8);
      const r = rng.next();
      if (r < 0.9) {
        const side: Side = pending.length > 0 && (orderly || rng.next() < 0.6)
          ? (pending[0].side === "primary" ? "secondary" : "primary")
          : rng.int(0, 1)
          ? "primary"
          : "secondary";
        let end = 0;
        for (let n = rng.int(1, 30); n > 0; n--) {
          let f: Uint8Array;
          if (pending.length > 0 && pending[0].side !== side && (orderly || rng.next() < 0.9)) {
            f = pending.shift()!.frame;
            // Sometimes the other replica's copy differs.
            if (rng.next() < (orderly ? 0.001 : 0.01) && f.length > 0) {
              f = f.slice();
              f[rng.int(0, f.length - 1)] ^= 1;
            }
          } else {
            f = nextFrame(rng, stream, next, orderly);
            if (orderly || rng.next() < 0.95) pending.push({ side, frame: f });
          }
          end = writeHeader(buf, end, f.length, vnet, rng.next() < 0.9 ? 0 : 10);
          buf.set(f, end);
          end += f.length;
        }
        // A read may end inside a frame: the decoder assembles it across reads.
        const cut = rng.next() < 0.2 ? rng.int(0, end) : end;
        const copy = buf.slice(cut, end);
        one.read(side, buf, cut, now);
        run.read(side, buf, cut, now);
        buf.fill(rng.int(0, 255)); // the next read
        if (cut < end) {
          buf.set(copy);
          one.read(side, buf, copy.length, now);
          run.read(side, buf, copy.length, now);
          buf.fill(rng.int(0, 255));
        }
      } else if (r < 0.95) {
        one.engine.tick(now);
        run.engine.tick(now);
      } else {
        one.engine.checkpoint(now);
        run.engine.checkpoint(now);
        pending.length = 0;
      }
      const state = (e: CompareEngine) => [e.heldPrimary, e.heldSecondary, e.heldPrimaryBytes];
      assert.deepEqual(state(run.engine), state(one.engine), `seed ${seed} step ${step}`);
    }
    one.engine.checkpoint(now);
    run.engine.checkpoint(now);
    assert.deepEqual(run.rec.log, one.rec.log, `seed ${seed}`);
    assert.ok(one.rec.released.length > 100, `seed ${seed}: enough frames released`);
    takenTotal += run.taken;
    deferredTotal += run.engine.framesDeferred;
  }
  // The runs must have taken most frames, or this compared the frame-by-frame path with itself.
  assert.ok(takenTotal > 40_000, `${takenTotal} frames taken in runs`);
  // And deferred many of them (`deferred.ts`), or this never compared that path either.
  assert.ok(deferredTotal > 1_000, `${deferredTotal} frames deferred`);
});

Deno.test("takeRun: the steady state takes whole reads at once, and stops at a difference", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, rec);
  let now = 0;
  const counts = { one: 0, run: 0 };
  const decoders = {} as Record<Side, FrameDecoder>;
  for (const side of ["primary", "secondary"] as const) {
    decoders[side] = new FrameDecoder({
      onFrame(bytes, at, size, vnetLen) {
        counts.one++;
        if (side === "primary") engine.primaryAt(bytes, at, size, vnetLen, now);
        else engine.secondaryAt(bytes, at, size, vnetLen, now);
      },
      run(bytes, at, end) {
        const to = engine.takeRun(side, bytes, at, end, false, now);
        counts.run += engine.runFrames;
        return to;
      },
    }, false);
  }
  const read = (side: Side, buf: Uint8Array) => {
    counts.one = counts.run = 0;
    now++;
    decoders[side].push(buf);
    engine.keepHeld();
    return { ...counts };
  };
  const stream = pseudoRandomBytes(64 * 300, 3);
  const reads = [0, 1, 2].map((r) => {
    const buf = new Uint8Array(100 * (4 + 118));
    let end = 0;
    for (let i = 100 * r; i < 100 * (r + 1); i++) {
      const payload = stream.subarray(64 * i, 64 * i + 64);
      const f = frame({ tcp: { seq: 1000 + 64 * i, payload } });
      end = writeHeader(buf, end, f.length, false, 0);
      buf.set(f, end);
      end += f.length;
    }
    return buf.subarray(0, end);
  });
  // The first replica's read: the new connection's first frame one by one, the rest held at once.
  assert.deepEqual(read("primary", reads[0]), { one: 1, run: 99 });
  assert.equal(engine.heldPrimary, 100);
  assert.equal(rec.log.length, 0);
  // The other's: every frame a twin, paired at once and in order.
  assert.deepEqual(read("secondary", reads[0].slice()), { one: 0, run: 100 });
  assert.equal(engine.heldPrimary + engine.heldSecondary, 0);
  assert.deepEqual(rec.releaseReasons, Array(100).fill("compared"));
  assert.deepEqual(rec.discards, Array(100).fill("secondary:compared"));
  // The secondary first this time; the primary's 51st frame differs: the run stops there, the
  // frame-by-frame path finds the mismatch, and the frames after it are queued behind it.
  assert.deepEqual(read("secondary", reads[1]), { one: 0, run: 100 });
  const other = reads[1].slice();
  other[50 * 122 + 100] ^= 0xff;
  rec.clear();
  assert.deepEqual(read("primary", other), { one: 50, run: 50 });
  assert.deepEqual(rec.releaseReasons, Array(50).fill("compared"));
  assert.ok(rec.checkpoints.length > 0);
  assert.ok(rec.checkpoints.every((reason) => reason === "tcp-payload"), `${rec.checkpoints}`);
});

Deno.test("takeRun: a len beyond the framing's bound breaks the stream as frame by frame", () => {
  // A read (128 KiB) can hold a whole frame longer than NET_BUFSIZE: the decoder must still
  // refuse it (SPEC 3), not the run take it.
  for (const runs of [false, true]) {
    const f = feeder({ compareTimeout: 3000, maxQueueSize: 1024 }, runs, false);
    const big = frame({ tcp: { payload: new Uint8Array(NET_BUFSIZE) } });
    const small = frame({ tcp: { seq: 5, payload: "abc" } });
    const buf = new Uint8Array(4 + small.length + 4 + big.length);
    let end = writeHeader(buf, 0, small.length, false, 0);
    buf.set(small, end);
    end = writeHeader(buf, end + small.length, big.length, false, 0);
    buf.set(big, end);
    assert.deepEqual(f.push("primary", buf), { len: big.length }, `runs: ${runs}`);
    assert.equal(f.engine.heldPrimary, 1, `runs: ${runs}: only the small frame held`);
  }
});

Deno.test("takeRun: a frame the engine throws on ends the run past it, counted frames kept", () => {
  class Throwing extends Recorder {
    calls = 0;
    override discard(...args: Parameters<Recorder["discard"]>): void {
      if (++this.calls === 3) throw new Error("sink failed");
      super.discard(...args);
    }
  }
  const rec = new Throwing();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, rec);
  const frames = [0, 1, 2, 3, 4].map((i) =>
    frame({ tcp: { seq: 100 * i, payload: "x".repeat(100) } })
  );
  for (const f of frames) engine.primary(f, 0, 1);
  const buf = new Uint8Array(frames.reduce((n, f) => n + 4 + f.length, 0));
  let end = 0;
  const ends: number[] = [];
  for (const f of frames) {
    end = writeHeader(buf, end, f.length, false, 0);
    buf.set(f, end);
    ends.push(end += f.length);
  }
  assert.throws(() => engine.takeRun("secondary", buf, 0, end, false, 2), /sink failed/);
  assert.equal(engine.runFrames, 2);
  assert.equal(engine.runEnd, ends[2], "past the frame it failed on");
});

Deno.test("takeRun: frames deferred while nothing is held are decided as held ones, whoever asks", () => {
  const stream = pseudoRandomBytes(64 * 16, 5);
  const frames = Array.from({ length: 16 }, (_, i) =>
    frame({
      tcp: {
        seq: (0xffffff00 + 64 * i) >>> 0,
        ack: 7,
        payload: stream.subarray(64 * i, 64 * i + 64),
      },
    }));
  const framedRead = (from: number, to: number) => {
    const buf = new Uint8Array(frames.slice(from, to).reduce((n, f) => n + 4 + f.length, 0));
    let end = 0;
    for (const f of frames.slice(from, to)) {
      end = writeHeader(buf, end, f.length, false, 0);
      buf.set(f, end);
      end += f.length;
    }
    return buf;
  };
  const script = (deferArrivals: boolean) => {
    const f = feeder({ compareTimeout: 100, maxQueueSize: 1024, deferArrivals }, true, false);
    const read = (side: Side, from: number, to: number, now: number) => {
      const buf = framedRead(from, to);
      f.read(side, buf, buf.length, now);
    };
    read("primary", 0, 1, 1); // a new connection: held the usual way
    read("secondary", 0, 1, 2);
    read("primary", 1, 4, 3); // deferred
    const held = [f.engine.heldPrimary, f.engine.heldPrimaryBytes];
    read("secondary", 1, 2, 4); // pairs the oldest
    read("primary", 4, 6, 5); // behind the two left
    read("secondary", 2, 6, 6);
    read("secondary", 6, 9, 7); // the secondary first this time
    read("primary", 6, 7, 8);
    f.engine.tick(50); // nothing old yet
    f.engine.tick(120); // the secondary's two left are: a checkpoint
    f.engine.checkpoint(121);
    read("primary", 9, 12, 130);
    f.engine.maxQueueSize = 2; // asked while frames are deferred
    read("secondary", 9, 12, 131);
    return { f, held };
  };
  const on = script(true);
  const off = script(false);
  assert.ok(on.f.engine.framesDeferred >= 10, `${on.f.engine.framesDeferred} deferred`);
  assert.equal(off.f.engine.framesDeferred, 0);
  assert.deepEqual(on.held, [3, 3 * frames[1].length], "deferred frames count as held");
  assert.deepEqual(on.f.rec.log, off.f.rec.log);
  assert.deepEqual(on.f.rec.checkpoints, ["timeout"]);
  assert.equal(on.f.rec.released.length, 10, "all but the secondary-only two");
  assert.equal(on.f.engine.heldPrimary + on.f.engine.heldSecondary, 0);
});
