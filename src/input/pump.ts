/**
 * One input's read loop (SPEC 3, 8): reads many frames at a time into one reused buffer (a
 * fresh one when the engine kept the last one for the frames it holds), decodes them with a
 * fresh decoder per peer and hands each frame to the engine, stamped with the chunk's arrival
 * time. While paused, a chunk already read waits undecoded, so a paused
 * input feeds the engine nothing at all (both inputs stop at the same point). A frame whose
 * queue grew long stops the chunk's decoding there until flow control has decided (SPEC 8):
 * a read of small frames holds more than max-queue-size of them.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import type { Side } from "../compare/packet.ts";
import { type Logger, ThrottledWarning } from "../log.ts";
import { FrameDecoder, NET_BUFSIZE } from "../wire/codec.ts";
import type { Conn } from "../wire/transport.ts";
import { READ_BLOCK_SIZE } from "../pool.ts";
import { opWaiting, waitingOpId } from "../wire/read_op.ts";

/** Bytes asked of the socket per read: many frames per read, one decode pass each. */
export const READ_SIZE = READ_BLOCK_SIZE;

/**
 * Bytes read after which the loop makes sure the event loop turns (SPEC 8). A read that finds
 * data waiting completes without a turn, so a peer that keeps its socket full (a flood) would
 * otherwise keep notify-dev, the monitor, outdev's completions and every timer waiting for as
 * long as it sends: a checkpoint reply was read up to a second late. About a millisecond of
 * work. At any lower rate the reads wait for data and the loop turns anyway: where a read that
 * waits settles only at a later turn (`Conn.settlesOnTurn`: Deno's read op), the next read
 * shows it ({@linkcode settledAtOnce}) and the loop goes on without a turn of its own, which
 * cost a request-and-answer stream one slow pair per MiB (bench/README.md, "The generator
 * warmed before the cold row").
 */
export const BYTES_PER_TURN = 1024 * 1024;

/** Resolves after the event loop has polled for I/O and run due timers. */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Whether `read` had settled when it was made: the bytes were there, and no turn of the event
 * loop came with them. A read that waits settles only at a later turn.
 */
export async function settledAtOnce(read: Promise<unknown>): Promise<boolean> {
  let settled = false;
  const mark = () => {
    settled = true;
  };
  // Queued at once if `read` has settled: before this function's own continuation.
  read.then(mark, mark);
  await null;
  return settled;
}

/** What an {@linkcode InputPump} feeds and tells. */
export interface PumpHooks {
  /** The compare clock (ms), read once per chunk. */
  now(): number;
  /**
   * One frame, `bytes[at, at + size)` of a buffer reused after the call; `now` is the
   * arrival time of its chunk. True: decide now whether to pause (a queue grew long), before
   * the rest of the chunk is decoded.
   */
  frame(bytes: Uint8Array, at: number, size: number, vnetLen: number, now: number): boolean | void;
  /**
   * Optional: `bytes[at, end)` of the read starts with a `len` word; the whole frames that
   * follow may be taken at once, as `frame` would take them (never asking for a decision).
   * Returns where it stopped (`at` when it took none); `frame` gets the rest one by one.
   */
  run?(bytes: Uint8Array, at: number, end: number, now: number): number;
  /**
   * A chunk was decoded (outgoing frames can be sent, held bytes rechecked, held frames
   * copied out of the read buffer: it is reused after this returns). True: the read buffer
   * was kept instead (its held frames stay in it), and the next read goes into a fresh one
   * from `buffer`.
   */
  chunk(): boolean | void;
  /**
   * A read's decoding stopped because `frame` asked for a decision: flow control decides now
   * whether this input pauses. When it does not, the read goes on without `chunk` (its held
   * frames stay where they lie); when it does, `chunk` follows. Without it, the read goes on.
   */
  decide?(): void;
  /**
   * A buffer to read into (the comparator's: a block of {@linkcode READ_SIZE}, or of its
   * pool for a TLS input): the first one, and one after each buffer `chunk` kept. Without it
   * the pump reads into one array of its own, always.
   */
  buffer?(): Uint8Array;
  /**
   * `frame` threw: a bug inside the engine, not a problem of the peer. The read buffer may be
   * reused after this returns.
   */
  internalError(error: unknown): void;
  /** The stream broke with an oversize `len` (SPEC 3): the connection is reset. */
  oversize(len: number): void;
  /**
   * Optional: the pump has asked for its next read and it waits for the socket (Deno's op
   * did not settle at once). Nothing of this input is queued to run now.
   */
  waiting?(): void;
  /**
   * Optional, for an input read by Deno's op (`Conn.settlesOnTurn`) whose socket had nothing
   * after a small read: what it does instead of asking for its next read by op at once
   * ({@linkcode ParkDecision}).
   */
  park?(side: Side): ParkDecision;
  /** With `park`: the input asks for a read by op (the other, if parked, must not wait on it). */
  reading?(side: Side): void;
  /** With `park`: whether the input may read without an op now (the event loop turned lately). */
  recvNow?(): boolean;
  /** Optional: a read that waited for its socket has settled (the event loop turned). */
  turned?(): void;
}

/**
 * After a read of at most this many bytes (an answer, not a stream) the next is tried without
 * an op, and the input may park.
 */
export const PARK_AFTER_READ_MAX = 16 * 1024;

/**
 * What an input whose socket is empty does ({@linkcode PumpHooks.park}): asks for its read by
 * op ({@linkcode TO_OP}), parks without one until unparked ({@linkcode PARK}), or reads at
 * once, its socket found readable ({@linkcode READ_NOW}).
 */
export type ParkDecision = 0 | 1 | 2;
export const TO_OP = 0;
export const PARK = 1;
export const READ_NOW = 2;

/** The read loop of primary-in or secondary-in. */
export class InputPump {
  readonly side: Side;
  readonly #name: string;
  readonly #vnet: boolean;
  readonly #hooks: PumpHooks;
  /**
   * A peer's broken streams: its fault, not the program's (warn), and at most a line per
   * interval however often it reconnects to break one again (SPEC 8).
   */
  readonly #oversize: ThrottledWarning;
  readonly #partialLost: ThrottledWarning;
  /** The read buffer (the hooks' `buffer`, or one of its own): made at the first read. */
  #buf: Uint8Array | null = null;
  /** Where the rest of a read whose decoding stopped for flow control waits: made at need. */
  #spare: Uint8Array | null = null;
  #paused = false;
  #stopped = false;
  #resume: (() => void) | null = null;
  /** Bytes read after which the loop makes sure the event loop turns ({@linkcode BYTES_PER_TURN}). */
  readonly #bytesPerTurn: number;
  /** Turns of the event loop the loop waited for because none came of itself (a flood). */
  forcedTurns = 0;
  /** Reads made at once, without Deno's op (`Conn.tryRecv`). */
  readsAtOnce = 0;
  /**
   * Bytes read from this input's peers, all of them (decoded or waiting to be). `-0`: a double
   * from the start; a small integer would change its representation past 2^31, under traffic
   * (src/comparator.ts, `#trimCheckedAt`).
   */
  bytesRead = -0;
  /** Where {@linkcode InputPump.mark}'s mark lies in {@linkcode bytesRead}; Infinity: none. */
  #markAt = Infinity;
  #onMark: (() => void) | null = null;
  /** A mark's bytes counted from the end of a read that settled before it was set; -1: none. */
  #markAfterRead = -1;
  /** A read (Deno's op: `Conn.settlesOnTurn`) was asked for and its bytes are not counted yet. */
  #opReadOut = false;
  /** The arrival time of the chunk being decoded (the hooks' `now`), -0: a double from the start. */
  #arrival = -0;
  /** The id of the read op this pump waits for (src/wire/read_op.ts), or -1. */
  #waitingOn = -1;
  /** Waiting for a read that is not Deno's op (a TLS layer's): its settling is not seen. */
  #awaitingOther = false;
  /** A connection is being served. */
  #running = false;
  /** Parked before a read (no op asked for): ends with `unpark`. */
  #parked = false;
  #unpark: (() => void) | null = null;

  /**
   * `bytesPerTurn`: {@linkcode BYTES_PER_TURN} but in the warm-up's comparators, whose few MiB
   * of traffic must take the loop's turn check early and often (src/warmup.ts).
   */
  constructor(
    side: Side,
    vnet: boolean,
    hooks: PumpHooks,
    log: Logger,
    bytesPerTurn: number = BYTES_PER_TURN,
  ) {
    this.side = side;
    this.#bytesPerTurn = bytesPerTurn;
    this.#name = side === "primary" ? "primary-in" : "secondary-in";
    this.#vnet = vnet;
    this.#hooks = hooks;
    this.#oversize = new ThrottledWarning(log, "oversize-frame");
    this.#partialLost = new ThrottledWarning(log, "partial-frame-lost");
  }

  /**
   * True when nothing of this input is queued to run: no connection is served, or its read
   * op waits for the socket and has not been settled (for a read that is not an op: it is
   * awaited, settled or not).
   */
  get idle(): boolean {
    return !this.#running || this.#parked || this.#awaitingOther || opWaiting(this.#waitingOn);
  }

  /** Paused by flow control: it reads again only when resumed. */
  get paused(): boolean {
    return this.#paused;
  }

  /** Parked before a read, no op asked for. */
  get parked(): boolean {
    return this.#parked;
  }

  /** A parked pump reads now. */
  unpark(): void {
    if (!this.#parked) return;
    this.#parked = false;
    const u = this.#unpark;
    this.#unpark = null;
    u!();
  }

  /**
   * Calls `reached` once the frames of this input's next `bytes` bytes, and of what it read
   * and has not decoded yet, have been handed over (its reads are cut to end there; a read
   * that was waiting already is decoded up to the mark first), or its connection ends first.
   * Replaces a mark not reached yet.
   */
  mark(bytes: number, reached: () => void): void {
    this.#onMark = reached;
    // A read op that settled (in this turn, or at once before a turn the loop waits for), its
    // bytes not counted yet, took them from the socket before `bytes` was counted there: the
    // mark is counted from its end. One that still waits takes them from among `bytes`.
    const settled = this.#opReadOut && !opWaiting(this.#waitingOn);
    this.#markAfterRead = settled ? bytes : -1;
    this.#markAt = settled ? Infinity : this.bytesRead + bytes;
  }

  #reachMark(): void {
    const reached = this.#onMark;
    this.#markAt = Infinity;
    this.#markAfterRead = -1;
    this.#onMark = null;
    reached?.();
  }

  /** Reading pauses after the chunk in hand (it waits undecoded) until resumed. */
  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    this.#paused = false;
    this.#wake();
  }

  /** Ends the loop: no chunk is decoded after this. */
  stop(): void {
    this.#stopped = true;
    this.#wake();
    this.unpark();
  }

  #wake(): void {
    const r = this.#resume;
    this.#resume = null;
    r?.();
  }

  /** Serves one peer's connection until it ends (an endpoint session). */
  async run(conn: Conn): Promise<void> {
    const hooks = this.#hooks;
    const decoder = new FrameDecoder({
      onFrame: (bytes, at, size, vnetLen) => {
        try {
          return hooks.frame(bytes, at, size, vnetLen, this.#arrival);
        } catch (error) {
          hooks.internalError(error);
        }
      },
      run: hooks.run === undefined
        ? undefined
        : (bytes, at, end) => hooks.run!(bytes, at, end, this.#arrival),
    }, this.#vnet);
    // The read loop is a function of its own: this one ends at most once per connection, and
    // V8 threw away the loop's compiled code when its end first ran under traffic (at the end
    // of the warm-up's last connection, so the real comparator started with it uncompiled).
    this.#running = true;
    try {
      await this.#loop(conn, decoder);
    } finally {
      this.#running = false;
      this.#parked = false;
      this.#unpark = null;
      this.#waitingOn = -1;
      this.#awaitingOther = false;
      this.#opReadOut = false;
      if (this.#onMark !== null) this.#reachMark();
      if (decoder.midFrame && !this.#stopped) {
        this.#partialLost.note({ endpoint: this.#name });
      }
    }
  }

  /** Reads, decodes and hands over `conn`'s frames until it ends or the pump stops. */
  async #loop(conn: Conn, decoder: FrameDecoder): Promise<void> {
    const hooks = this.#hooks;
    let buf = this.#buf ??= hooks.buffer?.() ?? new Uint8Array(READ_SIZE);
    const bytesPerTurn = this.#bytesPerTurn;
    let sinceTurn = 0;
    const parks = conn.settlesOnTurn === true && conn.tryRecv !== undefined &&
      hooks.park !== undefined && hooks.recvNow !== undefined && hooks.reading !== undefined;
    let lastRead = READ_SIZE;
    while (!this.#stopped) {
      // The chunk before was decoded whole: a mark there is reached, one ahead cuts the read.
      const toMark = this.#markAt - this.bytesRead;
      if (toMark <= 0) this.#reachMark();
      const into = toMark < buf.length && toMark > 0 ? buf.subarray(0, toMark) : buf;
      let n: number | null = -1;
      if (
        parks && lastRead <= PARK_AFTER_READ_MAX && sinceTurn < bytesPerTurn && hooks.recvNow!()
      ) {
        // No op asks for this socket: what is there already is read at once (0, the end, and
        // errors are left to the op to tell).
        n = conn.tryRecv!(into);
        if (n < 0) {
          const then = hooks.park!(this.side);
          if (then === PARK) {
            this.#parked = true;
            await new Promise<void>((r) => this.#unpark = r);
          }
          // Unparked, or found readable: read at the top (or the op asks).
          if (then !== TO_OP) continue;
        }
        // Counted whatever it read: the warm-up's reads find nothing here, and a store first
        // made under traffic would be compiled anew there (bench/README.md, "Cold start").
        this.readsAtOnce += n > 0 ? 1 : 0;
      }
      if (n <= 0) {
        // The other input may be parked: it reads (or parks again) now.
        if (parks) hooks.reading!(this.side);
        const read = conn.read(into);
        this.#opReadOut = conn.settlesOnTurn === true;
        const waitingOn = this.#waitingOn = waitingOpId(read);
        if (sinceTurn >= bytesPerTurn) {
          sinceTurn = 0;
          if (!conn.settlesOnTurn || await settledAtOnce(read)) {
            this.forcedTurns++;
            await nextTurn();
            if (this.#stopped) break;
          }
        } else if (waitingOn >= 0) hooks.waiting?.();
        this.#awaitingOther = waitingOn < 0 && !conn.settlesOnTurn;
        n = await read;
        this.#waitingOn = -1;
        this.#awaitingOther = false;
        if (waitingOn >= 0) hooks.turned?.();
      }
      if (!n) break;
      lastRead = n;
      sinceTurn += n;
      this.bytesRead += n;
      this.#opReadOut = false;
      if (this.#markAfterRead >= 0) {
        this.#markAt = this.bytesRead + this.#markAfterRead;
        this.#markAfterRead = -1;
      }
      while (this.#paused && !this.#stopped) {
        if (parks) hooks.reading!(this.side);
        await new Promise<void>((r) => this.#resume = r);
      }
      if (this.#stopped) break;
      let chunk = buf;
      let start = 0;
      let end = n;
      // A mark set while this read waited (`mark`) may fall inside what it brought: the bytes
      // before it are decoded first, then it is reached, then the rest (read after it came).
      let rest = 0;
      const markAt = this.#markAt;
      const markIn = markAt - (this.bytesRead - n);
      if (markIn <= 0) this.#reachMark();
      else if (markIn < n) [end, rest] = [markIn, n - markIn];
      this.#arrival = hooks.now();
      for (;;) {
        let broken;
        try {
          broken = decoder.push(chunk, end, start);
          start = decoder.stoppedAt;
          if (start >= 0) {
            // Not paused: the read goes on where it stopped, its held frames where they lie.
            hooks.decide?.();
            if (!this.#paused) continue;
          }
          if (hooks.chunk() === true) {
            buf = this.#buf = hooks.buffer!();
            // Stopped for a pause decision (or at a mark) in a buffer its held frames kept:
            // the rest waits in an array of the pump's own (the buffer goes back to the pool
            // once they are gone, perhaps while this side waits). After `chunk` nothing refers
            // to what was decoded of it. A buffer not kept is the pump's until the next read.
            if (start >= 0 || rest > 0) {
              const from = start >= 0 ? start : end;
              const spare = this.#spare ??= new Uint8Array(chunk.length);
              spare.set(chunk.subarray(from, end + rest));
              [chunk, start, end] = [spare, start >= 0 ? 0 : -1, end - from];
            }
          }
        } catch (error) {
          // Not the peer's fault: a bug. Logged as such; the stream starts afresh.
          hooks.internalError(error);
          return;
        }
        if (broken) {
          this.#oversize.note({
            endpoint: this.#name,
            len: broken.len,
            max: NET_BUFSIZE,
            action: "connection reset; other streams go on",
          });
          hooks.oversize(broken.len);
          return;
        }
        if (start < 0) {
          if (rest === 0) break;
          // Decoded up to the mark: reached (unless a later one replaced it), then the rest.
          if (this.#markAt === markAt) this.#reachMark();
          [start, end, rest] = [end, end + rest, 0];
          continue;
        }
        while (this.#paused && !this.#stopped) {
          if (parks) hooks.reading!(this.side);
          await new Promise<void>((r) => this.#resume = r);
        }
        if (this.#stopped) return;
        this.#arrival = hooks.now();
      }
    }
  }
}
