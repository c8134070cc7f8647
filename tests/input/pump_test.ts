import assert from "node:assert/strict";
import {
  InputPump,
  PARK,
  type ParkDecision,
  type PumpHooks,
  READ_SIZE,
  TO_OP,
} from "../../src/input/pump.ts";
import { Logger } from "../../src/log.ts";
import { type Conn, writeAll } from "../../src/wire/transport.ts";
import { plainPair } from "../support/net.ts";
import { concat, framed } from "../support/packets.ts";

/** A connection that hands out prepared chunks, one per read, then end of stream. */
class ScriptedConn implements Conn {
  readonly peer = "scripted";
  readonly #chunks: Uint8Array[];
  reads = 0;
  constructor(chunks: Uint8Array[]) {
    this.#chunks = chunks;
  }
  read(p: Uint8Array): Promise<number | null> {
    this.reads++;
    const c = this.#chunks.shift();
    if (c === undefined) return Promise.resolve(null);
    p.set(c);
    return Promise.resolve(c.length);
  }
  write(p: Uint8Array): Promise<number> {
    return Promise.resolve(p.length);
  }
  close(): void {}
}

const log = new Logger("error", () => {});

Deno.test("pump: an exception from the engine is reported as internal; the next frames go on", async () => {
  const seen: number[] = [];
  const errors: unknown[] = [];
  const pump = new InputPump("primary", false, {
    now: () => 0,
    frame(bytes, at) {
      if (bytes[at] === 2) throw new Error("engine bug");
      seen.push(bytes[at]);
    },
    chunk() {},
    internalError: (e) => errors.push(e),
    oversize: () => assert.fail("not oversize"),
  }, log);
  const data = concat(
    framed(new Uint8Array([1])),
    framed(new Uint8Array([2])),
    framed(new Uint8Array([3])),
  );
  await pump.run(new ScriptedConn([data]));
  assert.deepEqual(seen, [1, 3]);
  assert.equal(errors.length, 1);
  assert.equal((errors[0] as Error).message, "engine bug");
});

Deno.test("pump: a chunk read while paused is not decoded until resumed", async () => {
  const seen: number[] = [];
  let chunks = 0;
  const pump = new InputPump("secondary", false, {
    now: () => 0,
    frame: (bytes, at) => {
      seen.push(bytes[at]);
    },
    chunk() {
      chunks++;
      pump.pause(); // as flow control does when this chunk congests outdev
    },
    internalError: (e) => assert.fail(String(e)),
    oversize: () => assert.fail("not oversize"),
  }, log);
  const conn = new ScriptedConn([framed(new Uint8Array([1])), framed(new Uint8Array([2]))]);
  const running = pump.run(conn);
  while (conn.reads < 2) await new Promise((r) => setTimeout(r, 0));
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(seen, [1], "the second chunk was decoded while paused");
  assert.equal(chunks, 1);
  pump.resume();
  await running;
  assert.deepEqual(seen, [1, 2]);
});

Deno.test("pump: a frame that asks for a decision stops its read there; the rest waits, copied, while paused", async () => {
  const seen: number[] = [];
  const first = new Uint8Array(READ_SIZE);
  let buffers = 0;
  const pump = new InputPump("primary", false, {
    now: () => 0,
    frame: (bytes, at) => {
      seen.push(bytes[at]);
      return bytes[at] === 2; // a queue grew long with this frame
    },
    decide: () => pump.pause(), // flow control pauses this side
    chunk: () => seen.length === 2, // held frames keep the read buffer
    buffer: () => buffers++ === 0 ? first : new Uint8Array(READ_SIZE),
    internalError: (e) => assert.fail(String(e)),
    oversize: () => assert.fail("not oversize"),
  }, log);
  const data = concat(...[1, 2, 3, 4].map((b) => framed(new Uint8Array([b]))));
  const conn = new ScriptedConn([data]);
  const running = pump.run(conn);
  while (seen.length < 2) await new Promise((r) => setTimeout(r, 0));
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(seen, [1, 2], "decoded on after the stop while paused");
  assert.equal(conn.reads, 1, "read again with the rest undecoded");
  first.fill(9); // the kept buffer goes back to the pool and is reused meanwhile
  pump.resume();
  await running;
  assert.deepEqual(seen, [1, 2, 3, 4]);
});

Deno.test("pump: a stop that flow control answers without a pause goes on in the same read, one chunk call", async () => {
  const seen: number[] = [];
  const calls: string[] = [];
  let pauseAt = 0;
  const pump = new InputPump("primary", false, {
    now: () => 0,
    frame: (bytes, at) => {
      seen.push(bytes[at]);
      return bytes[at] % 2 === 0; // frames 2 and 4 make a queue long
    },
    decide() {
      calls.push(`decide@${seen.length}`);
      if (seen.length === pauseAt) pump.pause();
    },
    chunk() {
      calls.push(`chunk@${seen.length}`);
    },
    internalError: (e) => assert.fail(String(e)),
    oversize: () => assert.fail("not oversize"),
  }, log);
  const data = concat(...[1, 2, 3, 4, 5].map((b) => framed(new Uint8Array([b]))));
  await pump.run(new ScriptedConn([data]));
  assert.deepEqual(seen, [1, 2, 3, 4, 5]);
  assert.deepEqual(calls, ["decide@2", "decide@4", "chunk@5"]);
  // Paused at the second stop: the frames so far are handed over, the rest waits.
  seen.length = calls.length = 0;
  pauseAt = 4;
  const running = pump.run(new ScriptedConn([data]));
  while (seen.length < 4) await new Promise((r) => setTimeout(r, 0));
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(calls, ["decide@2", "decide@4", "chunk@4"]);
  pump.resume();
  await running;
  assert.deepEqual(calls, ["decide@2", "decide@4", "chunk@4", "chunk@5"]);
});

/** A peer that keeps the socket full: every read completes at once with `size` bytes. */
class FloodConn implements Conn {
  readonly peer = "flood";
  reads = 0;
  constructor(readonly limit: number, readonly size: number) {}
  read(p: Uint8Array): Promise<number | null> {
    if (this.reads++ >= this.limit) return Promise.resolve(null);
    const n = Math.min(this.size, p.length);
    // Frames of 1,024 bytes (4 of length, 1,020 of data), a whole number per read.
    for (let o = 0; o < n; o += 1024) p.set([0, 0, 3, 252], o);
    return Promise.resolve(n);
  }
  write(p: Uint8Array): Promise<number> {
    return Promise.resolve(p.length);
  }
  close(): void {}
}

/**
 * A pump that only counts the frames it is handed (`bytesPerTurn`: the pump's, if given;
 * `more`: hooks besides).
 */
function countingPump(
  bytesPerTurn?: number,
  more: Partial<PumpHooks> = {},
): { pump: InputPump; frames: () => number } {
  let frames = 0;
  const pump = new InputPump(
    "primary",
    false,
    {
      now: () => 0,
      frame: () => {
        frames++;
      },
      chunk() {},
      internalError: (e) => assert.fail(String(e)),
      oversize: () => assert.fail("not oversize"),
      ...more,
    },
    log,
    bytesPerTurn,
  );
  return { pump, frames: () => frames };
}

/** Runs `pump` over `conn` with a timer set at the start: the reads made when it ran. */
async function readsBeforeTimer(pump: InputPump, conn: FloodConn): Promise<number> {
  let readsWhenTimerRan = -1;
  const timer = new Promise<void>((resolve) =>
    setTimeout(() => {
      readsWhenTimerRan = conn.reads;
      resolve();
    }, 0)
  );
  await pump.run(conn);
  await timer;
  return readsWhenTimerRan;
}

for (const [what, size] of [["whole buffers", READ_SIZE], ["TLS records", 16 * 1024]] as const) {
  Deno.test(`pump: a peer that keeps its socket full (${what}) does not keep timers and other sockets waiting (SPEC 8)`, async () => {
    const { pump, frames } = countingPump();
    const conn = new FloodConn(1024 * 1024 * 1024 / size, size); // 1 GiB in all
    const readsWhenTimerRan = await readsBeforeTimer(pump, conn);
    assert.equal(frames(), 1024 * 1024);
    assert.ok(
      readsWhenTimerRan < conn.limit / 2,
      `the timer ran only after ${readsWhenTimerRan} of ${conn.limit} reads`,
    );
    assert.ok(pump.forcedTurns >= 1000, `${pump.forcedTurns} turns forced in 1 GiB`);
  });
}

/** A peer whose every read waits for the event loop's next turn, as a socket read that waits. */
class TrickleConn extends FloodConn {
  readonly settlesOnTurn = true;
  override read(p: Uint8Array): Promise<number | null> {
    return new Promise((resolve) => setTimeout(() => resolve(super.read(p)), 0));
  }
}

/**
 * A flood whose reads settle a few microtasks late, within the same turn (a TLS layer fed by
 * its own reads): not settled at once, yet no turn came.
 */
class LateFloodConn extends FloodConn {
  override async read(p: Uint8Array): Promise<number | null> {
    await null;
    await null;
    return super.read(p);
  }
}

Deno.test("pump: a flood whose reads settle late within a turn still gets its turns (SPEC 8)", async () => {
  const { pump } = countingPump();
  const conn = new LateFloodConn(64 * 1024 * 1024 / (16 * 1024), 16 * 1024); // 64 MiB
  const readsWhenTimerRan = await readsBeforeTimer(pump, conn);
  assert.ok(pump.forcedTurns >= 60, `${pump.forcedTurns} turns forced in 64 MiB`);
  assert.ok(readsWhenTimerRan < conn.limit / 2, `the timer ran after ${readsWhenTimerRan} reads`);
});

Deno.test("pump: a peer whose reads wait for data costs no turn of the loop's own", async () => {
  const { pump, frames } = countingPump();
  // 8 MiB in reads of 64 KiB: eight times past BYTES_PER_TURN.
  await pump.run(new TrickleConn(128, 64 * 1024));
  assert.equal(frames(), 8 * 1024);
  assert.equal(pump.forcedTurns, 0);
});

Deno.test("pump: a pump given a smaller turn mark (the warm-up's) takes its turns that often", async () => {
  // 1 MiB in reads of 16 KiB, a turn every 64 KiB: the default mark would force at most one.
  const { pump, frames } = countingPump(64 * 1024);
  await readsBeforeTimer(pump, new FloodConn(64, 16 * 1024));
  assert.equal(frames(), 1024);
  assert.ok(pump.forcedTurns >= 15, `${pump.forcedTurns} turns forced in 1 MiB`);
});

Deno.test("pump: reads into the hooks' buffers, and into a fresh one after a chunk kept its buffer", async () => {
  const given: Uint8Array[] = [];
  const readInto: Uint8Array[] = [];
  let chunks = 0;
  const pump = new InputPump("primary", false, {
    now: () => 0,
    frame: (bytes) => {
      readInto.push(bytes);
    },
    // The second chunk's buffer is kept (its frames held in place).
    chunk: () => ++chunks === 2,
    buffer: () => (given.push(new Uint8Array(1024)), given[given.length - 1]),
    internalError: (e) => assert.fail(String(e)),
    oversize: () => assert.fail("not oversize"),
  }, log);
  const chunk = framed(new Uint8Array([7]));
  await pump.run(new ScriptedConn([chunk, chunk, chunk, chunk]));
  assert.equal(given.length, 2, "one buffer at the start, one after the kept one");
  assert.deepEqual(readInto, [given[0], given[0], given[1], given[1]]);
});

Deno.test("pump: over a socket, it tells when its read waits for the peer, and is idle until the bytes come", async () => {
  const { ours, peer, close } = await plainPair();
  const idleWhenWaiting: boolean[] = [];
  let waited: () => void = () => {};
  const { pump, frames } = countingPump(undefined, {
    waiting: () => {
      idleWhenWaiting.push(pump.idle);
      waited();
    },
  });
  const nextWait = () => new Promise<void>((resolve) => waited = resolve);
  try {
    assert.equal(pump.idle, true, "no connection served: idle");
    let wait = nextWait();
    const running = pump.run(ours);
    await wait;
    assert.equal(pump.idle, true, "its read waits for the socket");
    wait = nextWait();
    await writeAll(peer, framed(new Uint8Array(60)));
    await wait;
    assert.equal(frames(), 1);
    assert.deepEqual(idleWhenWaiting, [true, true]);
    peer.close();
    await running;
    assert.equal(pump.idle, true, "the connection ended: idle");
  } finally {
    close();
  }
});

Deno.test("pump: over a socket, an input whose socket is empty after a small read parks without an op; unparked, it reads at once what came", async () => {
  const { ours, peer, close } = await plainPair();
  const decisions: ParkDecision[] = [PARK, PARK, TO_OP];
  let parkedAt: () => void = () => {};
  let frameAt: () => void = () => {};
  let reading = 0;
  let turned = 0;
  const { pump, frames } = countingPump(undefined, {
    frame: () => {
      count++;
      frameAt();
    },
    park: () => {
      const then = decisions.shift() ?? TO_OP;
      if (then === PARK) parkedAt();
      return then;
    },
    recvNow: () => true,
    reading: () => {
      reading++;
      readingAt();
    },
    turned: () => turned++,
  });
  let readingAt: () => void = () => {};
  let count = 0;
  const parked = () => new Promise<void>((resolve) => parkedAt = resolve);
  const frame = () => new Promise<void>((resolve) => frameAt = resolve);
  try {
    let park = parked();
    let got = frame();
    const running = pump.run(ours);
    // The first read is the op's: nothing was read before it.
    await writeAll(peer, framed(new Uint8Array(60)));
    await got;
    assert.equal(turned, 1, "the first read waited in its op");
    await park;
    assert.equal(pump.parked, true);
    assert.equal(pump.idle, true, "parked: nothing of it queued to run");
    await writeAll(peer, framed(new Uint8Array(61)));
    // Parked, it does not read what came (a quiet moment of the event loop shows it).
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(count, 1);
    got = frame();
    park = parked();
    pump.unpark();
    await got;
    assert.equal(pump.readsAtOnce, 1, "read at once, without an op");
    assert.equal(turned, 1);
    // Parked again (nothing more came), then unparked: the op asks, and tells the other first.
    await park;
    const readingBefore = reading;
    got = frame();
    const asked = new Promise<void>((resolve) => readingAt = resolve);
    pump.unpark();
    await asked;
    await writeAll(peer, framed(new Uint8Array(62)));
    await got;
    assert.ok(reading > readingBefore, "the other was told before the op");
    assert.equal(turned, 2, "this one waited in its op");
    assert.equal(frames(), 0, "frames counted by the test's own hook");
    assert.equal(count, 3);
    peer.close();
    await running;
    assert.equal(pump.parked, false);
  } finally {
    close();
  }
});

Deno.test("pump: a parked pump that is stopped ends its loop", async () => {
  const { ours, peer, close } = await plainPair();
  let parkedAt: () => void = () => {};
  const { pump } = countingPump(undefined, {
    park: () => {
      parkedAt();
      return PARK;
    },
    recvNow: () => true,
    reading: () => {},
  });
  try {
    const park = new Promise<void>((resolve) => parkedAt = resolve);
    const running = pump.run(ours);
    await writeAll(peer, framed(new Uint8Array(60)));
    await park;
    pump.stop();
    await running;
    assert.equal(pump.parked, false);
    assert.equal(pump.idle, true);
  } finally {
    close();
  }
});

/** A connection over one byte stream: each read takes as much as the reader's array holds. */
class StreamConn implements Conn {
  readonly peer = "stream";
  readonly #bytes: Uint8Array;
  #at = 0;
  readonly reads: number[] = [];
  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
  }
  read(p: Uint8Array): Promise<number | null> {
    const n = Math.min(p.length, this.#bytes.length - this.#at);
    if (n === 0) return Promise.resolve(null);
    p.set(this.#bytes.subarray(this.#at, this.#at + n));
    this.#at += n;
    this.reads.push(n);
    return Promise.resolve(n);
  }
  write(p: Uint8Array): Promise<number> {
    return Promise.resolve(p.length);
  }
  close(): void {}
}

Deno.test("pump: a mark cuts the read there and is reached once the frames before it were handed over; a mark not reached is when the connection ends", async () => {
  const seen: (number | string)[] = [];
  const pump = new InputPump("secondary", false, {
    now: () => 0,
    frame: (bytes, at) => void seen.push(bytes[at]),
    chunk() {},
    internalError: (e) => assert.fail(String(e)),
    oversize: () => assert.fail("not oversize"),
  }, log);
  // Ten frames of one byte, five bytes each framed: the mark at 12 bytes falls in the third.
  const data = concat(...Array.from({ length: 10 }, (_, i) => framed(new Uint8Array([i + 1]))));
  pump.mark(12, () => seen.push("mark"));
  const conn = new StreamConn(data);
  await pump.run(conn);
  assert.equal(conn.reads[0], 12, "the first read ends at the mark");
  assert.deepEqual(seen, [1, 2, "mark", 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.equal(pump.bytesRead, data.length);
  // Beyond what the connection brings: reached when it ends.
  const more = new StreamConn(data.subarray(0, 10));
  pump.mark(1000, () => seen.push("ended"));
  await pump.run(more);
  assert.deepEqual(seen.slice(-3), [1, 2, "ended"]);
});

/** `conn` with `seen` told of each read it is asked for, once the read has been asked. */
function onRead(conn: Conn, seen: (read: Promise<number | null>) => void): Conn {
  return {
    peer: conn.peer,
    settlesOnTurn: conn.settlesOnTurn,
    read(p) {
      const read = conn.read(p);
      seen(read);
      return read;
    },
    write: (p) => conn.write(p),
    close: () => conn.close(),
  };
}

Deno.test("pump: over a socket, a mark set once a read has settled and before its bytes were counted is counted from that read's end", async () => {
  const { ours, peer, close } = await plainPair();
  const seen: (number | string)[] = [];
  let setMark: (() => void) | null = null;
  let decoded = () => {};
  const pump = new InputPump("primary", false, {
    now: () => 0,
    frame: (bytes, at) => void seen.push(bytes[at]),
    chunk: () => decoded(),
    internalError: (e) => assert.fail(String(e)),
    oversize: () => assert.fail("not oversize"),
  }, log);
  // The mark is set by a reaction to the read op's promise registered before the pump's own
  // await: it runs once the op has settled, before the pump's code after the await (a
  // checkpoint read by another socket in the same turn of the event loop).
  const conn = onRead(ours, (read) => {
    const mark = setMark;
    setMark = null;
    if (mark !== null) void read.then(mark);
  });
  setMark = () => pump.mark(5, () => seen.push("mark"));
  try {
    const running = pump.run(conn);
    // Two frames in the read that settles as the mark is set; the mark's 5 bytes are the third.
    const first = new Promise<void>((r) => decoded = r);
    await writeAll(peer, concat(framed(new Uint8Array([1])), framed(new Uint8Array([2]))));
    await first;
    await writeAll(peer, concat(framed(new Uint8Array([3])), framed(new Uint8Array([4]))));
    peer.close();
    await running;
    assert.deepEqual(seen, [1, 2, 3, "mark", 4]);
  } finally {
    close();
  }
});

/**
 * A pump over a socket whose first read waits for the peer: once it does, `mark(bytes)` is set
 * (a checkpoint while the read waits), then the peer sends `frames` (one byte each) in one
 * write and closes. Returns what the pump handed over, with "mark" where the mark was reached.
 */
async function markWhileWaiting(bytes: number, frames: number[]): Promise<(number | string)[]> {
  const { ours, peer, close } = await plainPair();
  const seen: (number | string)[] = [];
  let waiting: () => void = () => {};
  const pump = new InputPump("secondary", false, {
    now: () => 0,
    frame: (bytes, at) => void seen.push(bytes[at]),
    chunk() {},
    internalError: (e) => assert.fail(String(e)),
    oversize: () => assert.fail("not oversize"),
  }, log);
  const conn = onRead(ours, () => waiting());
  try {
    const reading = new Promise<void>((r) => waiting = r);
    const running = pump.run(conn);
    await reading;
    assert.equal(pump.idle, true, "the read waits for the socket");
    pump.mark(bytes, () => seen.push("mark"));
    await writeAll(peer, concat(...frames.map((i) => framed(new Uint8Array([i])))));
    peer.close();
    await running;
    return seen;
  } finally {
    close();
  }
}

Deno.test("pump: over a socket, a mark set while a read waits is reached once the bytes before it are handed over, even when that read brings more", async () => {
  // The socket holds the two frames sent before the checkpoint (10 bytes, as SIOCINQ would
  // tell) by the time the mark is set; three more follow at once, and the waiting read takes
  // all five.
  assert.deepEqual(await markWhileWaiting(10, [1, 2, 3, 4, 5]), [1, 2, "mark", 3, 4, 5]);
});

Deno.test("pump: a mark of no bytes set while a read waits is reached before that read's frames", async () => {
  assert.deepEqual(await markWhileWaiting(0, [1, 2]), ["mark", 1, 2]);
});
