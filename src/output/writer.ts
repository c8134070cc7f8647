/**
 * Ordered, batched output to one stream (SPEC 8). Frames are framed into a buffer as they are
 * released; one writer task per stream sends the buffer with as few writes as possible, so
 * comparison never waits for the socket. While connected and slow, callers see
 * {@linkcode FrameWriter.congested} and pause reading (back-pressure); while disconnected,
 * frames wait in a bounded buffer for the next peer and what overflows it is dropped.
 *
 * @module
 */

import { BlockPool, objectArray } from "../pool.ts";
import { headerSize, wordAt, writeHeader } from "../wire/codec.ts";
import type { Conn } from "../wire/transport.ts";

/** Settings of a {@linkcode FrameWriter}. */
export interface WriterOptions {
  /** The stream carries a vnet word after each length (outdev with `--vnet-hdr-support`). */
  vnet: boolean;
  /** Congested above this many buffered bytes while connected... */
  highWater: number;
  /** ...until the buffer is back below this. */
  lowWater: number;
  /** Bytes kept for the next peer while disconnected (0: drop at once). */
  maxBufferedDisconnected: number;
  /** Frames kept while disconnected older than this (ms) are dropped (default: kept). */
  maxAgeDisconnected?: number;
  /**
   * Called with the number of frames dropped because the buffer is full while disconnected
   * (or was over `maxBufferedDisconnected` when the peer went).
   */
  onOverflow?: (frames: number) => void;
  /** Called with the number of frames dropped for being older than `maxAgeDisconnected`. */
  onExpired?: (frames: number) => void;
  /** Called when congestion starts (true) and when the buffer drains below `lowWater`. */
  onCongestion?: (congested: boolean) => void;
  /** The clock for frame ages (ms); `performance.now` by default. */
  now?: () => number;
  /** Called when a write fails (the peer is then treated as gone). */
  onWriteError?: (error: unknown) => void;
  /** Called when a write has completed and nothing is left to write. */
  idle?: { settle(): void } | null;
  /** Blocks for the buffer's chunks, shared with the held frames (default: a pool of its own). */
  pool?: BlockPool;
}

/**
 * While disconnected, a chunk takes frames for at most this long (ms) and then a new one
 * starts, so frames can be aged out a chunk at a time with this precision.
 */
const AGE_GRAIN_MS = 250;

/**
 * A frame handed over instead of copied ({@linkcode FrameWriter.writeHeld}): the writer
 * reads `bytes[at, at + size)` when its turn to be written comes, then gives it back.
 */
export interface HeldFrame {
  readonly bytes: Uint8Array;
  readonly at: number;
  readonly size: number;
  readonly vnetLen: number;
}

/**
 * Part of the output buffer: framed frames, in order, filled up to `len`; or, while
 * connected, frames handed over and not yet copied (`held`, from `next` on; `len` counts
 * them framed), each given back to `done` once copied.
 */
interface Chunk {
  buf: Uint8Array;
  len: number;
  /** When its first frame was written while disconnected (or the peer left); ages it. */
  since: number;
  held: HeldFrame[] | null;
  next: number;
  done: ((f: HeldFrame) => void) | null;
}

/** Finds the offset of the frame that contains byte `at` of a framed buffer. */
function frameStartAt(buf: Uint8Array, at: number, head: number): number {
  let o = 0;
  while (o < buf.length) {
    const end = o + head + wordAt(buf, o);
    if (at < end) return o;
    o = end;
  }
  return buf.length;
}

/** Counts the frames in a framed buffer. */
function countFrames(buf: Uint8Array, head: number): number {
  let n = 0;
  for (let o = 0; o < buf.length; n++) {
    o += head + wordAt(buf, o);
  }
  return n;
}

/** One writer per output stream. */
export class FrameWriter {
  readonly #o: WriterOptions;
  readonly #head: number;
  readonly #now: () => number;
  #conn: Conn | null = null;
  /**
   * Framed bytes not yet handed to the socket, as a list of chunks: a burst (a checkpoint
   * flush) takes more chunks instead of reallocating and copying one ever larger buffer.
   */
  #queue: Chunk[] = objectArray();
  /** Chunks are blocks of this pool, given back once written. */
  readonly #pool: BlockPool;
  #queued = 0;
  /** The chunk being written, its framed bytes, the bytes the peer took and that peer. */
  #inflightChunk: Chunk | null = null;
  #inflight: Uint8Array | null = null;
  #sent = 0;
  #writingTo: Conn | null = null;
  #writing = false;
  #scheduled = false;
  #congested = false;
  #idleWaiters: (() => void)[] = [];
  /** Chunk records for reuse (their blocks go back to the pool). */
  readonly #spare: Chunk[] = objectArray();
  /**
   * The continuations of a write and the microtask, made once: a write costs the socket's
   * promise and nothing else (issue 11: garbage per released frame is collector pauses in
   * the latency tail).
   */
  readonly #written = (n: number): void => this.#onWritten(n);
  readonly #failed = (error: unknown): void => this.#onFailed(error);
  /**
   * Frame bytes handed to {@linkcode FrameWriter.writeAt} and not copied yet:
   * `#runBytes[#runFrom, #runTo)` goes to `#runChunk` at `#runAt`. Frames handed over one
   * after another that lie back to back with their framing words in the same array (held
   * frames a read brought, kept together) are copied together, with one copy instead of a
   * view and a copy each (issue 11).
   */
  #runBytes: Uint8Array = EMPTY;
  #runFrom = 0;
  #runTo = 0;
  #runChunk: Chunk | null = null;
  #runAt = 0;
  /** A flush follows (the input in hand is being decoded): writes need no task of their own. */
  #deferred = false;
  readonly #task = (): void => {
    this.#scheduled = false;
    // Written past the op: no write settles at a later turn to start the input polling; the
    // task does, after the work queued before it.
    if (this.#pump() && !this.#writing && this.#queued === 0) this.#o.idle?.settle();
  };

  constructor(options: WriterOptions) {
    this.#o = options;
    this.#head = headerSize(options.vnet);
    this.#now = options.now ?? (() => performance.now());
    this.#pool = options.pool ?? new BlockPool();
  }

  /** A peer is attached. */
  get connected(): boolean {
    return this.#conn !== null;
  }

  /** Bytes waiting to be written (framing included). */
  get pendingBytes(): number {
    return this.#queued + (this.#inflight?.length ?? 0);
  }

  /**
   * Bytes the socket has not taken yet (framing included): unlike {@linkcode pendingBytes} it
   * shrinks with every write, a part of a chunk's too, so a slow peer is seen to make progress.
   */
  get unsentBytes(): number {
    return this.#queued + (this.#inflight === null ? 0 : this.#inflight.length - this.#sent);
  }

  /**
   * Bytes the peer has not taken: {@linkcode unsentBytes} and, where the socket tells, those
   * its kernel still holds for the peer. Shrinks as the peer reads, however little, where
   * `unsentBytes` waits for the kernel's buffers to have room.
   */
  get untakenBytes(): number {
    const kernel = this.#conn?.kernelQueued?.() ?? -1;
    return this.unsentBytes + (kernel > 0 ? kernel : 0);
  }

  /** True while connected and more than `highWater` bytes wait: readers should pause. */
  get congested(): boolean {
    return this.#congested;
  }

  /** Uses `conn` for writing from now on and sends what waited for it. */
  attach(conn: Conn): void {
    this.#deferred = false;
    this.#expire();
    this.#conn = conn;
    this.#schedule();
  }

  /**
   * Forgets `conn` (if it is the current peer); buffered frames wait for the next one, up to
   * `maxBufferedDisconnected` bytes (the oldest are kept, the rest counted as overflow).
   */
  detach(conn: Conn): void {
    if (this.#conn !== conn) return;
    this.copyPending();
    this.#conn = null;
    this.#copyHeld();
    const now = this.#now();
    for (const c of this.#queue) c.since = now;
    this.#trim();
    this.#setCongested(false);
  }

  /** Keeps at most `maxBufferedDisconnected` bytes of whole frames, oldest first (SPEC 8). */
  #trim(): void {
    let budget = this.#o.maxBufferedDisconnected - (this.#inflight?.length ?? 0);
    let dropped = 0;
    const kept: Chunk[] = [];
    for (const c of this.#queue) {
      if (budget >= c.len) {
        budget -= c.len;
        kept.push(c);
        continue;
      }
      const cut = budget > 0 ? frameStartAt(c.buf.subarray(0, c.len), budget, this.#head) : 0;
      dropped += countFrames(c.buf.subarray(cut, c.len), this.#head);
      this.#queued -= c.len - cut;
      budget = 0;
      c.len = cut;
      if (cut > 0) kept.push(c);
      else this.#recycle(c);
    }
    this.#queue = kept;
    if (dropped > 0) this.#o.onOverflow?.(dropped);
  }

  /** Drops chunks whose frames all waited longer than `maxAgeDisconnected` (SPEC 8). */
  #expire(): void {
    const maxAge = this.#o.maxAgeDisconnected;
    if (maxAge === undefined || this.#queue.length === 0) return;
    const now = this.#now();
    let dropped = 0;
    while (this.#queue.length > 0) {
      const c = this.#queue[0];
      if (now - (c.since + AGE_GRAIN_MS) <= maxAge) break;
      this.#queue.shift();
      dropped += countFrames(c.buf.subarray(0, c.len), this.#head);
      this.#queued -= c.len;
      this.#recycle(c);
    }
    if (dropped > 0) this.#o.onExpired?.(dropped);
  }

  /**
   * Appends one frame, the whole of `frame`, copied at once: the caller may change `frame`
   * when this returns.
   */
  write(frame: Uint8Array, vnetLen: number): boolean {
    const kept = this.writeAt(frame, 0, frame.length, vnetLen);
    this.copyPending();
    return kept;
  }

  /**
   * Appends the frame `bytes[at, at + size)` (the engine hands frames over where they lie).
   * While connected, its bytes may be copied later: `bytes[at, at + size)` must not change
   * until {@linkcode FrameWriter.copyPending} or {@linkcode FrameWriter.flush} is called.
   */
  writeAt(bytes: Uint8Array, at: number, size: number, vnetLen: number): boolean {
    const head = this.#head;
    const need = head + size;
    let c = this.#queue.length > 0 ? this.#queue[this.#queue.length - 1] : undefined;
    if (this.#conn === null) {
      this.#expire();
      if (this.pendingBytes + need > this.#o.maxBufferedDisconnected) {
        this.#o.onOverflow?.(1);
        return false;
      }
      const now = this.#now();
      if (c !== undefined && now - c.since > AGE_GRAIN_MS) c = undefined;
      if (c === undefined || c.len + need > c.buf.length) {
        c = this.#chunk(need);
        c.since = now;
        this.#queue.push(c);
      }
      const to = writeHeader(c.buf, c.len, size, this.#o.vnet, vnetLen);
      c.buf.set(at === 0 && size === bytes.length ? bytes : bytes.subarray(at, at + size), to);
      c.len = to + size;
    } else {
      if (c === undefined || c.len + need > c.buf.length) {
        c = this.#chunk(need);
        this.#queue.push(c);
      }
      if (
        c === this.#runChunk && bytes === this.#runBytes && at - head === this.#runTo &&
        this.#framedIn(bytes, at, size, vnetLen)
      ) {
        // Right behind the frames waiting to be copied, its framing words in between.
        this.#runTo = at + size;
      } else {
        this.copyPending();
        const to = writeHeader(c.buf, c.len, size, this.#o.vnet, vnetLen);
        this.#runBytes = bytes;
        this.#runFrom = at;
        this.#runTo = at + size;
        this.#runChunk = c;
        this.#runAt = to;
      }
      c.len += need;
    }
    this.#queued += need;
    if (!this.#congested && this.#conn !== null && this.pendingBytes > this.#o.highWater) {
      this.#setCongested(true);
    }
    this.#schedule();
    return true;
  }

  /** True when the bytes before `bytes[at]` are the framing words this stream puts there. */
  #framedIn(bytes: Uint8Array, at: number, size: number, vnetLen: number): boolean {
    const o = at - this.#head;
    if (o < 0) return false;
    if (this.#o.vnet) {
      if (wordAt(bytes, o + 4) !== vnetLen) return false;
    }
    return wordAt(bytes, o) === size;
  }

  /**
   * Copies the frames handed to {@linkcode FrameWriter.writeAt} that wait to be copied: after
   * this their bytes may change.
   */
  copyPending(): void {
    const c = this.#runChunk;
    if (c === null) return;
    c.buf.set(this.#runBytes.subarray(this.#runFrom, this.#runTo), this.#runAt);
    this.#runChunk = null;
    this.#runBytes = EMPTY;
  }

  /**
   * Appends one frame without copying it now (a checkpoint flush: thousands of held frames at
   * once). The writer copies it when its turn to be written comes and then calls `done`, so
   * the memory of the frames already written is free for the next ones instead of the whole
   * flush being held twice, once in its slabs and once here. While disconnected it is copied
   * at once (and `done` called), exactly as {@linkcode FrameWriter.write} would.
   */
  writeHeld<F extends HeldFrame>(f: F, done: (f: F) => void): boolean {
    this.copyPending();
    const giveBack = done as (f: HeldFrame) => void;
    if (this.#conn === null) {
      const kept = this.writeAt(f.bytes, f.at, f.size, f.vnetLen);
      giveBack(f);
      return kept;
    }
    const need = this.#head + f.size;
    let c = this.#queue.length > 0 ? this.#queue[this.#queue.length - 1] : undefined;
    if (c === undefined || c.held === null || c.done !== giveBack) {
      c = { buf: EMPTY, len: 0, since: 0, held: [], next: 0, done: giveBack };
      this.#queue.push(c);
    }
    c.held!.push(f);
    c.len += need;
    this.#queued += need;
    if (!this.#congested && this.pendingBytes > this.#o.highWater) this.#setCongested(true);
    this.#schedule();
    return true;
  }

  /**
   * The next chunk to write, taken off the queue: a handed-over chunk gives a block of its
   * frames, copied now and given back (it leaves the queue once all are copied).
   */
  #nextChunk(): Chunk {
    const queue = this.#queue;
    const first = queue[0];
    // The last chunk is popped: `shift` trims the array's store from the front, and the next
    // `push` then allocates a new one (once per released frame at low load).
    if (first.held === null) return (queue.length === 1 ? queue.pop() : queue.shift())!;
    const held = first.held;
    const done = first.done!;
    const head = this.#head;
    let i = first.next;
    const c = this.#chunk(head + held[i].size);
    while (i < held.length) {
      const f = held[i];
      if (c.len + head + f.size > c.buf.length) break;
      const at = writeHeader(c.buf, c.len, f.size, this.#o.vnet, f.vnetLen);
      c.buf.set(f.bytes.subarray(f.at, f.at + f.size), at);
      c.len = at + f.size;
      held[i++] = undefined as unknown as HeldFrame;
      done(f);
    }
    first.next = i;
    first.len -= c.len;
    if (i === held.length) this.#queue.shift();
    return c;
  }

  /** Copies every handed-over frame into ordinary chunks, in place (the peer left). */
  #copyHeld(): void {
    if (!this.#queue.some((c) => c.held !== null)) return;
    const copied: Chunk[] = [];
    while (this.#queue.length > 0) copied.push(this.#nextChunk());
    this.#queue = copied;
  }

  /** Resolves once everything buffered is written, or the peer is gone. */
  idle(): Promise<void> {
    if ((this.#queued === 0 && !this.#writing) || this.#conn === null) return Promise.resolve();
    return new Promise((r) => this.#idleWaiters.push(r));
  }

  #chunk(need: number): Chunk {
    // The block taken may be one whose frames wait to be copied (a slab given back).
    this.copyPending();
    const pool = this.#pool;
    const buf = need <= pool.size ? pool.take() : new Uint8Array(need);
    const c = this.#spare.pop();
    if (c === undefined) return { buf, len: 0, since: 0, held: null, next: 0, done: null };
    c.buf = buf;
    c.since = 0;
    return c;
  }

  /** `c` is written or dropped: its block goes back to the pool, the record is kept. */
  #recycle(c: Chunk): void {
    c.len = 0;
    if (c.buf.length === this.#pool.size) this.#pool.give(c.buf);
    c.buf = EMPTY;
    c.held = null;
    c.next = 0;
    c.done = null;
    if (this.#spare.length < SPARE_CHUNKS) this.#spare.push(c);
  }

  /**
   * Starts writing what is buffered now, without waiting for the end of the task. True when
   * something was written at once (past the runtime's op).
   */
  flush(): boolean {
    this.#deferred = false;
    return this.#pump();
  }

  /**
   * Frames written from now until the next {@linkcode FrameWriter.flush} need no task of their
   * own: the caller flushes before it lets anything else run (issue 11: a task is a microtask,
   * some 130 bytes of garbage per released frame at low load).
   */
  defer(): void {
    this.#deferred = true;
  }

  /** True while a write is under way or bytes wait. */
  get busy(): boolean {
    return this.#writing || this.#queued > 0;
  }

  #schedule(): void {
    if (
      this.#scheduled || this.#deferred || this.#writing || this.#conn === null ||
      this.#queued === 0
    ) return;
    this.#scheduled = true;
    // Start after the current batch of input has been processed: one write per batch.
    queueMicrotask(this.#task);
  }

  /**
   * Writes the oldest chunk to the peer, unless a write is under way; each completed write
   * starts the next, until nothing is left or the peer is gone. True when something was
   * written at once.
   */
  #pump(): boolean {
    let atOnce = false;
    for (;;) {
      // The chunk's frames may still lie framed where they were handed over: sent from there.
      let sent = this.#writing ? -1 : this.#sendInPlace();
      if (sent === IN_PLACE) {
        atOnce = true;
        continue;
      }
      this.copyPending();
      if (this.#writing) return atOnce;
      const conn = this.#conn;
      if (conn === null || this.#queue.length === 0) {
        this.#settle();
        return atOnce;
      }
      // New frames go to a new chunk while this one is written.
      const c = this.#nextChunk();
      this.#queued -= c.len;
      // A small chunk (an answer, not a stream's batch) goes out at once where the socket takes
      // it: no op, no promise, no view (issue 11).
      if (sent < 0) sent = conn.trySend?.(c.buf, c.len) ?? -1;
      if (sent === c.len) {
        this.#sentWhole(c);
        atOnce = true;
        continue;
      }
      this.#writing = true;
      this.#inflightChunk = c;
      this.#inflight = c.buf.subarray(0, c.len);
      this.#sent = sent > 0 ? sent : 0;
      this.#writingTo = conn;
      this.#send();
      return atOnce;
    }
  }

  /**
   * Writes the only chunk at once from where its frames were handed over, when they lie there
   * with the same framing words before each (the common case at low load: one frame, at the
   * start of the read buffer that was kept for it) and the chunk holds nothing else: no copy
   * and no view (issue 11). {@linkcode IN_PLACE} when it went whole; else the bytes the socket
   * took, 0 or more (the chunk, copied as usual, goes on from there through the op), or -1: not
   * tried, or not taken at all.
   */
  #sendInPlace(): number {
    const c = this.#runChunk;
    const conn = this.#conn;
    if (c === null || conn === null || conn.trySend === undefined) return -1;
    const head = this.#head;
    const bytes = this.#runBytes;
    if (
      this.#queue.length !== 1 || this.#queue[0] !== c || this.#runFrom !== head ||
      this.#runAt !== head || this.#runTo !== c.len
    ) return -1;
    for (let i = 0; i < head; i++) if (bytes[i] !== c.buf[i]) return -1;
    const sent = conn.trySend(bytes, c.len);
    // Part of it, or -1 (too long to try at once, would block, failed): the copy goes on
    // through `#pump`, which tries it once more after a -1. Returned as it is: an operation on
    // it here, run only when a chunk of frames in place does not go whole (seldom in the
    // warm-up, and more often once whole reads of twins are released in place, `deferred.ts`),
    // made V8 throw this function away at the first such chunk under traffic.
    if (sent !== c.len) return sent;
    this.#runChunk = null;
    this.#runBytes = EMPTY;
    this.#queue.pop();
    this.#queued -= c.len;
    this.#sentWhole(c);
    return IN_PLACE;
  }

  /** Chunk `c` is all written: its block goes back, and congestion may end. */
  #sentWhole(c: Chunk): void {
    this.#recycle(c);
    if (this.#congested && this.pendingBytes < this.#o.lowWater) this.#setCongested(false);
  }

  /** Hands the unsent rest of the chunk in flight to its peer. */
  #send(): void {
    const batch = this.#inflight!;
    let written: Promise<number>;
    try {
      written = this.#writingTo!.write(this.#sent === 0 ? batch : batch.subarray(this.#sent));
    } catch (error) {
      this.#onFailed(error);
      return;
    }
    written.then(this.#written, this.#failed);
  }

  #onWritten(n: number): void {
    this.#sent += n;
    if (this.#sent < this.#inflight!.length) {
      this.#send();
      return;
    }
    const c = this.#inflightChunk!;
    this.#inflight = null;
    this.#sentWhole(c);
    this.#endWrite();
    this.#pump();
    if (!this.#writing) this.#o.idle?.settle();
  }

  #onFailed(error: unknown): void {
    const c = this.#inflightChunk!;
    const conn = this.#writingTo!;
    this.#inflight = null;
    this.#requeue(c, this.#sent);
    this.#o.onWriteError?.(error);
    if (this.#conn === conn) this.detach(conn);
    else if (this.#conn === null) {
      // Detached while this write was under way: the bound applies to it too.
      c.since = this.#now();
      this.#trim();
    }
    this.#endWrite();
    this.#settle();
  }

  #endWrite(): void {
    this.#writing = false;
    this.#inflightChunk = null;
    this.#writingTo = null;
  }

  /** Nothing is being written: `idle()` resolves if all is out (or the peer is gone). */
  #settle(): void {
    if (this.#queued === 0 || this.#conn === null) {
      if (this.#idleWaiters.length === 0) return;
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const w of waiters) w();
    } else {
      this.#schedule();
    }
  }

  /** Puts the unsent part of chunk `c` (from its first incomplete frame) before newer frames. */
  #requeue(c: Chunk, sent: number): void {
    const from = frameStartAt(c.buf.subarray(0, c.len), sent, this.#head);
    c.buf.copyWithin(0, from, c.len);
    c.len -= from;
    if (c.len === 0) {
      this.#recycle(c);
      return;
    }
    this.#queue.unshift(c);
    this.#queued += c.len;
  }

  #setCongested(on: boolean): void {
    if (this.#congested === on) return;
    this.#congested = on;
    this.#o.onCongestion?.(on);
  }
}

const EMPTY = new Uint8Array(0);
/** `#sendInPlace`: the chunk went whole. */
const IN_PLACE = -2;

/** Chunk records kept for reuse. */
const SPARE_CHUNKS = 8;
