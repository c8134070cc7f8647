/**
 * Ordered, batched output to one stream (SPEC 8). Frames are framed into a buffer as they are
 * released; one writer task per stream sends the buffer with as few writes as possible, so
 * comparison never waits for the socket. While connected and slow, callers see
 * {@linkcode FrameWriter.congested} and pause reading (back-pressure); while disconnected,
 * frames wait in a bounded buffer for the next peer and what overflows it is dropped.
 *
 * @module
 */

import { headerSize, writeHeader } from "../wire/codec.ts";

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
  /** Called with the number of frames dropped because the buffer is full while disconnected. */
  onOverflow?: (frames: number) => void;
  /** Called when the buffer drains below `lowWater` after being congested. */
  onDrained?: () => void;
  /** Called when a write fails (the peer is then treated as gone). */
  onWriteError?: (error: unknown) => void;
}

const INITIAL_SIZE = 64 * 1024;
/** Buffers grown beyond this are dropped once they are empty again. */
const SHRINK_ABOVE = 4 * 1024 * 1024;

/** Finds the offset of the frame that contains byte `at` of a framed buffer. */
function frameStartAt(buf: Uint8Array, at: number, head: number): number {
  let o = 0;
  while (o < buf.length) {
    const len = ((buf[o] << 24) | (buf[o + 1] << 16) | (buf[o + 2] << 8) | buf[o + 3]) >>> 0;
    const end = o + head + len;
    if (at < end) return o;
    o = end;
  }
  return buf.length;
}

/** Counts the frames in a framed buffer. */
function countFrames(buf: Uint8Array, head: number): number {
  let n = 0;
  for (let o = 0; o < buf.length; n++) {
    o += head + (((buf[o] << 24) | (buf[o + 1] << 16) | (buf[o + 2] << 8) | buf[o + 3]) >>> 0);
  }
  return n;
}

/** One writer per output stream. */
export class FrameWriter {
  readonly #o: WriterOptions;
  readonly #head: number;
  #conn: Deno.Conn | null = null;
  /** Framed bytes not yet handed to the socket. */
  #buf = new Uint8Array(INITIAL_SIZE);
  #len = 0;
  /** The batch being written, and how much of it the socket took. */
  #spare = new Uint8Array(INITIAL_SIZE);
  #inflight: Uint8Array | null = null;
  #writing = false;
  #scheduled = false;
  #congested = false;
  #idleWaiters: (() => void)[] = [];

  constructor(options: WriterOptions) {
    this.#o = options;
    this.#head = headerSize(options.vnet);
  }

  /** A peer is attached. */
  get connected(): boolean {
    return this.#conn !== null;
  }

  /** Bytes waiting to be written (framing included). */
  get pendingBytes(): number {
    return this.#len + (this.#inflight?.length ?? 0);
  }

  /** True while connected and more than `highWater` bytes wait: readers should pause. */
  get congested(): boolean {
    return this.#congested;
  }

  /** Uses `conn` for writing from now on and sends what waited for it. */
  attach(conn: Deno.Conn): void {
    this.#conn = conn;
    this.#schedule();
  }

  /** Forgets `conn` (if it is the current peer); buffered frames wait for the next one. */
  detach(conn: Deno.Conn): void {
    if (this.#conn !== conn) return;
    this.#conn = null;
    this.#setCongested(false);
  }

  /**
   * Appends one frame. Returns false if it was dropped because the stream is disconnected
   * and its buffer is full.
   */
  write(frame: Uint8Array, vnetLen: number): boolean {
    const need = this.#head + frame.length;
    if (this.#conn === null && this.pendingBytes + need > this.#o.maxBufferedDisconnected) {
      this.#o.onOverflow?.(1);
      return false;
    }
    if (this.#len + need > this.#buf.length) this.#grow(this.#len + need);
    const at = writeHeader(this.#buf, this.#len, frame.length, this.#o.vnet, vnetLen);
    this.#buf.set(frame, at);
    this.#len = at + frame.length;
    if (!this.#congested && this.#conn !== null && this.pendingBytes > this.#o.highWater) {
      this.#setCongested(true);
    }
    this.#schedule();
    return true;
  }

  /** Resolves once everything buffered is written, or the peer is gone. */
  idle(): Promise<void> {
    if ((this.#len === 0 && !this.#writing) || this.#conn === null) return Promise.resolve();
    return new Promise((r) => this.#idleWaiters.push(r));
  }

  #grow(min: number): void {
    let size = this.#buf.length * 2;
    while (size < min) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#buf.subarray(0, this.#len));
    this.#buf = next;
  }

  /** Starts writing what is buffered now, without waiting for the end of the task. */
  flush(): void {
    if (this.#writing || this.#conn === null || this.#len === 0) return;
    this.#pump();
  }

  #schedule(): void {
    if (this.#scheduled || this.#writing || this.#conn === null || this.#len === 0) return;
    this.#scheduled = true;
    // Start after the current batch of input has been processed: one write per batch.
    queueMicrotask(() => {
      this.#scheduled = false;
      this.#pump();
    });
  }

  async #pump(): Promise<void> {
    if (this.#writing) return;
    this.#writing = true;
    try {
      while (this.#len > 0) {
        const conn = this.#conn;
        if (conn === null) break;
        // Swap buffers: new frames go to the other one while this batch is written.
        const batch = this.#buf.subarray(0, this.#len);
        const spare = this.#spare;
        this.#spare = this.#buf;
        this.#buf = spare.length >= this.#buf.length ? spare : new Uint8Array(this.#buf.length);
        this.#len = 0;
        this.#inflight = batch;
        let sent = 0;
        try {
          while (sent < batch.length) sent += await conn.write(batch.subarray(sent));
        } catch (error) {
          this.#requeue(batch, sent);
          this.#inflight = null;
          this.#o.onWriteError?.(error);
          this.detach(conn);
          break;
        }
        this.#inflight = null;
        if (this.#congested && this.pendingBytes < this.#o.lowWater) this.#setCongested(false);
      }
    } finally {
      this.#writing = false;
    }
    if (this.#len === 0 && this.#buf.length > SHRINK_ABOVE) {
      // A burst (a checkpoint flush) grew the buffers: give the memory back.
      this.#buf = new Uint8Array(INITIAL_SIZE);
      this.#spare = new Uint8Array(INITIAL_SIZE);
    }
    if (this.#len === 0 || this.#conn === null) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const w of waiters) w();
    } else {
      this.#schedule();
    }
  }

  /** Puts the unsent part of `batch` (from its first incomplete frame) before newer frames. */
  #requeue(batch: Uint8Array, sent: number): void {
    const from = frameStartAt(batch, sent, this.#head);
    const rest = batch.subarray(from);
    const keep = Math.min(rest.length, this.#o.maxBufferedDisconnected);
    const kept = keep === rest.length
      ? rest
      : rest.subarray(0, frameStartAt(rest, keep, this.#head));
    if (kept.length < rest.length) {
      this.#o.onOverflow?.(countFrames(rest.subarray(kept.length), this.#head));
    }
    const merged = new Uint8Array(Math.max(this.#buf.length, kept.length + this.#len));
    merged.set(kept);
    merged.set(this.#buf.subarray(0, this.#len), kept.length);
    this.#buf = merged;
    this.#len = kept.length + this.#len;
  }

  #setCongested(on: boolean): void {
    if (this.#congested === on) return;
    this.#congested = on;
    if (!on) this.#o.onDrained?.();
  }
}
