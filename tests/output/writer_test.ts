import assert from "node:assert/strict";
import { FrameWriter, type WriterOptions } from "../../src/output/writer.ts";
import { BlockPool } from "../../src/pool.ts";
import type { Conn } from "../../src/wire/transport.ts";
import { concat, framed } from "../support/packets.ts";

/** A stand-in for a socket whose writes the test controls. */
class FakeConn {
  writes: Uint8Array[] = [];
  /** Bytes each write takes (undefined: all); a negative number makes that write fail. */
  plan: number[] = [];
  #waiting: (() => void)[] = [];

  write(buf: Uint8Array): Promise<number> {
    const n = this.plan.shift();
    if (n !== undefined && n < 0) return Promise.reject(new Error("broken pipe"));
    const take = n === undefined ? buf.length : Math.min(n, buf.length);
    this.writes.push(buf.slice(0, take));
    const w = this.#waiting;
    this.#waiting = [];
    for (const f of w) f();
    return Promise.resolve(take);
  }

  get bytes(): Uint8Array {
    return concat(...this.writes);
  }

  readonly peer = "fake";

  read(): Promise<number | null> {
    return new Promise(() => {});
  }

  close(): void {}

  asConn(): Conn {
    return this;
  }
}

function writer(o: Partial<WriterOptions> = {}): FrameWriter {
  return new FrameWriter({
    vnet: false,
    highWater: 1 << 20,
    lowWater: 1 << 19,
    maxBufferedDisconnected: 1 << 20,
    ...o,
  });
}

const f = (n: number, fill: number) => new Uint8Array(n).fill(fill);

/** After one failed write: the error was reported, the peer let go, the next peer gets `expected`. */
async function resentToNextPeer(w: FrameWriter, errors: unknown[], expected: Uint8Array) {
  await w.idle();
  assert.equal(errors.length, 1);
  assert.equal(w.connected, false);
  const next = new FakeConn();
  w.attach(next.asConn());
  await w.idle();
  assert.deepEqual(next.bytes, expected);
}

Deno.test("writer: frames released together go out framed, in order, in one write", async () => {
  const conn = new FakeConn();
  const w = writer({ vnet: true });
  w.attach(conn.asConn());
  w.write(f(3, 1), 0);
  w.write(f(2, 2), 12);
  w.write(f(1, 3), 0);
  await w.idle();
  assert.equal(conn.writes.length, 1);
  assert.deepEqual(conn.bytes, concat(framed(f(3, 1), 0), framed(f(2, 2), 12), framed(f(1, 3), 0)));
});

Deno.test("writer: a failed write keeps unsent frames from the start of the broken one", async () => {
  const conn = new FakeConn();
  conn.plan = [6, -1]; // the first write takes 6 bytes (frame 1 and part of frame 2), then fails
  const errors: unknown[] = [];
  const w = writer({ onWriteError: (e) => errors.push(e) });
  w.attach(conn.asConn());
  w.write(f(1, 1), 0);
  w.write(f(4, 2), 0);
  w.write(f(2, 3), 0);
  await resentToNextPeer(w, errors, concat(framed(f(4, 2)), framed(f(2, 3))));
});

Deno.test("writer: while disconnected frames wait in a bounded buffer; overflow is counted", async () => {
  let dropped = 0;
  const w = writer({ maxBufferedDisconnected: 30, onOverflow: (n) => dropped += n });
  assert.equal(w.write(f(10, 1), 0), true); // 14 bytes
  assert.equal(w.write(f(10, 2), 0), true); // 28 bytes
  assert.equal(w.write(f(10, 3), 0), false);
  assert.equal(dropped, 1);
  const conn = new FakeConn();
  w.attach(conn.asConn());
  await w.idle();
  assert.deepEqual(conn.bytes, concat(framed(f(10, 1)), framed(f(10, 2))));
});

Deno.test("writer: congested above the high mark while connected, drained below the low mark", async () => {
  const changes: boolean[] = [];
  const conn = new FakeConn();
  const w = writer({ highWater: 100, lowWater: 50, onCongestion: (on) => changes.push(on) });
  w.attach(conn.asConn());
  w.write(f(60, 1), 0);
  assert.equal(w.congested, false);
  w.write(f(60, 2), 0);
  assert.equal(w.congested, true, "readers should pause now");
  await w.idle();
  assert.equal(w.congested, false);
  assert.deepEqual(changes, [true, false]);
  w.detach(conn.asConn());
  w.write(f(200, 3), 0);
  assert.equal(
    w.congested,
    false,
    "no back-pressure without a peer: the buffer is bounded instead",
  );
});

Deno.test("writer: a burst larger than a buffer chunk goes out whole and in order", async () => {
  const conn = new FakeConn();
  const w = writer({ highWater: 64 << 20, lowWater: 1 << 20 });
  w.attach(conn.asConn());
  const frames = Array.from({ length: 3000 }, (_, i) => f(1000, i & 0xff));
  for (const x of frames) w.write(x, 0);
  assert.equal(w.pendingBytes, 3000 * 1004);
  await w.idle();
  assert.deepEqual(conn.bytes, concat(...frames.map((x) => framed(x))));
  assert.equal(w.pendingBytes, 0);
});

Deno.test("writer: when the peer goes, at most the disconnected bound is kept (oldest first)", async () => {
  let dropped = 0;
  const conn = new FakeConn();
  // Connected, frames pile up far past the disconnected bound (the peer is slow).
  const w = writer({ maxBufferedDisconnected: 100, onOverflow: (n) => dropped += n });
  w.attach(conn.asConn());
  for (let i = 0; i < 50; i++) w.write(f(16, i), 0); // 20 bytes each, 1000 bytes
  w.detach(conn.asConn());
  assert.equal(w.pendingBytes, 100);
  assert.equal(dropped, 45);
  const next = new FakeConn();
  w.attach(next.asConn());
  await w.idle();
  assert.deepEqual(next.bytes, concat(...[0, 1, 2, 3, 4].map((i) => framed(f(16, i)))));
  assert.equal(conn.writes.length, 0);
});

Deno.test("writer: a write that fails after the peer left keeps no more than the bound", async () => {
  let dropped = 0;
  const conn = new FakeConn();
  conn.plan = [-1];
  const w = writer({ maxBufferedDisconnected: 40, onOverflow: (n) => dropped += n });
  w.attach(conn.asConn());
  for (let i = 0; i < 10; i++) w.write(f(16, i), 0);
  w.flush(); // the write is under way...
  w.detach(conn.asConn()); // ...when the peer goes; then it fails
  await w.idle();
  assert.equal(w.pendingBytes, 40);
  assert.equal(dropped, 8);
});

Deno.test("writer: frames older than the age bound are dropped when a peer returns", async () => {
  let clock = 0;
  let expired = 0;
  const w = writer({
    maxAgeDisconnected: 10_000,
    onExpired: (n) => expired += n,
    now: () => clock,
  });
  w.write(f(8, 1), 0);
  w.write(f(8, 2), 0);
  clock = 5_000;
  w.write(f(8, 3), 0);
  clock = 14_000; // frames 1 and 2 are 14 s old, frame 3 is 9 s old
  const conn = new FakeConn();
  w.attach(conn.asConn());
  await w.idle();
  assert.equal(expired, 2);
  assert.deepEqual(conn.bytes, framed(f(8, 3)));
});

Deno.test("writer: a chunk the socket takes in parts goes out whole; frames written meanwhile follow", async () => {
  const conn = new FakeConn();
  conn.plan = [3, 5, 1];
  const w = writer();
  w.attach(conn.asConn());
  w.write(f(10, 1), 0);
  w.flush(); // under way: 3 bytes, then 5, then 1, then the rest
  w.write(f(4, 2), 0);
  await w.idle();
  assert.deepEqual(conn.writes.map((b) => b.length), [3, 5, 1, 5, 8]);
  assert.deepEqual(conn.bytes, concat(framed(f(10, 1)), framed(f(4, 2))));
  assert.equal(w.pendingBytes, 0);
});

Deno.test("writer: a write that throws at once counts as failed; the frames wait for the next peer", async () => {
  const errors: unknown[] = [];
  const w = writer({ onWriteError: (e) => errors.push(e) });
  const broken = new FakeConn();
  broken.write = () => {
    throw new Error("bad resource");
  };
  w.attach(broken.asConn());
  w.write(f(6, 1), 0);
  w.flush();
  await resentToNextPeer(w, errors, framed(f(6, 1)));
});

/** A held frame handed over to the writer: `n` bytes of `fill` at offset 8 of a larger buffer. */
function held(n: number, fill: number, vnetLen = 0) {
  const bytes = new Uint8Array(n + 16);
  bytes.fill(fill, 8, 8 + n);
  return { bytes, at: 8, size: n, vnetLen };
}

Deno.test("writer: frames handed over go out in order with the copied ones, each given back once", async () => {
  const conn = new FakeConn();
  const w = writer({ vnet: true });
  w.attach(conn.asConn());
  const given: number[] = [];
  const done = (h: { bytes: Uint8Array; at: number }) => given.push(h.bytes[h.at]);
  w.write(f(3, 1), 0);
  w.writeHeld(held(5, 2, 12), done);
  w.writeHeld(held(4, 3), done);
  w.write(f(2, 4), 0);
  w.writeHeld(held(1, 5), done);
  assert.equal(w.pendingBytes, 5 * 8 + 3 + 5 + 4 + 2 + 1, "counted while waiting");
  assert.deepEqual(given, [], "read when written, not before");
  await w.idle();
  assert.deepEqual(
    conn.bytes,
    concat(
      framed(f(3, 1), 0),
      framed(f(5, 2), 12),
      framed(f(4, 3), 0),
      framed(f(2, 4), 0),
      framed(f(1, 5), 0),
    ),
  );
  assert.deepEqual(given, [2, 3, 5]);
});

Deno.test("writer: a flush handed over takes a block at a time, not a copy of the whole flush", async () => {
  const pool = new BlockPool();
  const conn = new FakeConn();
  const w = writer({ pool, highWater: 64 << 20, lowWater: 32 << 20 });
  w.attach(conn.asConn());
  const flush = Array.from({ length: 400 }, (_, i) => held(16_000, i & 0xff));
  let given = 0;
  for (const h of flush) w.writeHeld(h, () => given++);
  assert.equal(pool.blocks, 0, "nothing copied yet");
  await w.idle();
  assert.equal(given, 400);
  assert.equal(conn.bytes.length, 400 * (4 + 16_000));
  assert.ok(pool.blocks <= 2, `${pool.blocks} blocks for a 6.1 MiB flush`);
});

Deno.test("writer: frames handed over are copied when the peer goes, and wait for the next one in order", async () => {
  const conn = new FakeConn();
  conn.plan = [-1];
  const w = writer({ onWriteError: () => {} });
  w.attach(conn.asConn());
  let given = 0;
  w.write(f(2, 1), 0);
  w.writeHeld(held(3, 2), () => given++);
  w.writeHeld(held(4, 3), () => given++);
  await w.idle();
  assert.equal(w.connected, false);
  assert.equal(given, 2, "copied and given back when the peer left");
  w.writeHeld(held(1, 4), () => given++);
  assert.equal(given, 3, "copied at once while disconnected");
  const next = new FakeConn();
  w.attach(next.asConn());
  await w.idle();
  assert.deepEqual(
    next.bytes,
    concat(framed(f(2, 1)), framed(f(3, 2)), framed(f(4, 3)), framed(f(1, 4))),
  );
});

Deno.test("writer: writeAt() frames exactly bytes[at, at + size) of a larger buffer", async () => {
  const conn = new FakeConn();
  const w = writer({ vnet: true });
  w.attach(conn.asConn());
  const buf = concat(f(5, 9), f(3, 1), f(2, 2), f(4, 9));
  w.writeAt(buf, 5, 3, 0);
  w.writeAt(buf, 8, 2, 12);
  w.writeAt(buf, 0, buf.length, 0);
  await w.idle();
  assert.deepEqual(conn.bytes, concat(framed(f(3, 1), 0), framed(f(2, 2), 12), framed(buf, 0)));
});

Deno.test("writer: frames handed over back to back with their framing go out exactly, copied once copyPending() is called", async () => {
  const conn = new FakeConn();
  const w = writer({ vnet: true });
  w.attach(conn.asConn());
  // A read buffer: three framed frames back to back, the third with another vnet_len than
  // the writer is told (its framing words cannot be copied along).
  const read = concat(framed(f(3, 1), 12), framed(f(2, 2), 0), framed(f(4, 3), 20), f(8, 7));
  w.writeAt(read, 8, 3, 12);
  w.writeAt(read, 8 + 3 + 8, 2, 0);
  w.writeAt(read, 8 + 3 + 8 + 2 + 8, 4, 0);
  w.writeAt(read, 0, 8, 0); // not behind the others: on its own
  assert.equal(w.pendingBytes, 4 * 8 + 3 + 2 + 4 + 8);
  w.copyPending();
  const expected = concat(
    framed(f(3, 1), 12),
    framed(f(2, 2), 0),
    framed(f(4, 3), 0),
    framed(read.slice(0, 8), 0),
  );
  read.fill(0); // the next read: what was handed over is copied already
  await w.idle();
  assert.deepEqual(conn.bytes, expected);
});

Deno.test("writer: write() copies the whole frame at once; writeAt() bytes are copied by flush()", async () => {
  const conn = new FakeConn();
  const w = writer();
  w.attach(conn.asConn());
  const a = f(5, 1);
  w.write(a, 0);
  a.fill(9);
  const read = concat(framed(f(6, 2)), framed(f(7, 3)));
  w.writeAt(read, 4, 6, 0);
  w.writeAt(read, 4 + 6 + 4, 7, 0);
  w.flush();
  read.fill(0);
  await w.idle();
  assert.deepEqual(conn.bytes, concat(framed(f(5, 1)), framed(f(6, 2)), framed(f(7, 3))));
});

/** A socket that also writes at once, past the op (`Conn.trySend`), as much as `sendPlan` says. */
class SendingConn extends FakeConn {
  /** Per `trySend`: the bytes it takes (undefined: all), -1: would block. */
  sendPlan: number[] = [];
  /** What `trySend` took, and from which array. */
  sent: { from: Uint8Array; bytes: Uint8Array }[] = [];

  trySend(p: Uint8Array, len: number): number {
    const n = this.sendPlan.shift();
    if (n !== undefined && n < 0) return -1;
    const take = n === undefined ? len : Math.min(n, len);
    this.sent.push({ from: p, bytes: p.slice(0, take) });
    return take;
  }

  /** Everything the peer got: at once, then through the op. */
  get all(): Uint8Array {
    return concat(...this.sent.map((s) => s.bytes), ...this.writes);
  }
}

Deno.test("writer: a small chunk goes out at once where the socket takes it; the rest through the op, in order", async () => {
  for (const [plan, ops] of [[[], 0], [[5], 1], [[-1], 1]] as const) {
    const conn = new SendingConn();
    conn.sendPlan = [...plan];
    const w = writer();
    w.attach(conn.asConn());
    w.write(f(10, 1), 0);
    w.write(f(3, 2), 0);
    assert.equal(w.flush(), plan.length === 0, `written at once with plan ${plan}`);
    await w.idle();
    assert.deepEqual(conn.all, concat(framed(f(10, 1)), framed(f(3, 2))), `plan ${plan}`);
    assert.equal(conn.writes.length, ops, `op writes with plan ${plan}`);
    assert.equal(w.pendingBytes, 0);
  }
});

Deno.test("writer: a frame lying framed at the start of its buffer goes out from there, uncopied", () => {
  const conn = new SendingConn();
  const w = writer();
  w.attach(conn.asConn());
  const read = concat(framed(f(6, 2)), f(5, 9));
  w.writeAt(read, 4, 6, 0);
  assert.equal(w.flush(), true);
  assert.equal(conn.sent.length, 1);
  assert.equal(conn.sent[0].from, read, "sent from the read buffer itself");
  assert.deepEqual(conn.all, framed(f(6, 2)));
  assert.equal(w.pendingBytes, 0);
  // Not at the start, or with other framing words before it: copied first, as before.
  const other = concat(f(3, 7), framed(f(4, 3)));
  w.writeAt(other, 7, 4, 0);
  const unframed = concat(f(4, 0), f(2, 5));
  w.writeAt(unframed, 4, 2, 0);
  w.flush();
  assert.notEqual(conn.sent[1].from, other);
  assert.deepEqual(conn.all, concat(framed(f(6, 2)), framed(f(4, 3)), framed(f(2, 5))));
});

Deno.test("writer: a frame sent in part from where it lies goes on from a copy of it", async () => {
  const conn = new SendingConn();
  conn.sendPlan = [3];
  const w = writer();
  w.attach(conn.asConn());
  const read = framed(f(9, 4));
  w.writeAt(read, 4, 9, 0);
  assert.equal(w.flush(), false);
  read.fill(0); // the next read: the rest was copied already
  await w.idle();
  assert.deepEqual(conn.all, framed(f(9, 4)));
  assert.equal(conn.sent[0].from, read);
  assert.equal(conn.writes.length, 1);
});

Deno.test("writer: frames written while an input is decoded wait for its flush, not for a task", async () => {
  const conn = new SendingConn();
  let settles = 0;
  const w = writer({ idle: { settle: () => settles++ } });
  w.attach(conn.asConn());
  w.defer();
  w.write(f(4, 1), 0);
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(conn.sent.length + conn.writes.length, 0, "nothing written before the flush");
  assert.equal(w.flush(), true);
  assert.deepEqual(conn.all, framed(f(4, 1)));
  // Without a deferral a task writes it, and starts the input polling after writing at once.
  w.write(f(2, 2), 0);
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(conn.all, concat(framed(f(4, 1)), framed(f(2, 2))));
  assert.equal(settles, 1);
});
