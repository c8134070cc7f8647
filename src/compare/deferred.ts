/**
 * Arrivals the engine has not queued yet (issue 11): TCP segments that one side's read brings
 * while nothing at all is held, each checked to be one the engine would only hold (a segment
 * with payload on a known open connection, in sequence, within every bound), and copied here
 * with their framing words, back to back as they arrived. When the other side's read brings
 * the same bytes, each pair is decided as queueing the first and pairing the second would
 * decide it, without a `Packet`, a queue or a slab for the first: in the steady state of a
 * stream one comparison covers a whole read of twins. Anything else the engine is asked first
 * queues them as they would have been queued (`CompareEngine`'s `#settleDeferred`), so
 * nothing else ever sees them. Frames and bytes here are bounded: a read that brings more goes
 * the queued way.
 *
 * @module
 */

import type { Connection } from "./connection.ts";
import type { Side } from "./packet.ts";
import { objectArray } from "../pool.ts";

/** Bytes of frames (with their framing words) deferred at most. */
export const DEFER_BYTES = 256 * 1024;
/** Frames deferred at most. */
export const DEFER_FRAMES = 4096;

const EMPTY = new Uint8Array(0);
const NO_INTS = new Int32Array(0);
const NO_DOUBLES = new Float64Array(0);

/** The frames of one side deferred, oldest first: frame `j` for `head <= j < count`. */
export class DeferredFrames {
  /** The side they came from. */
  side: Side = "primary";
  /** Their copies, each after its framing words, back to back from the head's on. */
  bytes: Uint8Array = EMPTY;
  /** Bytes of framing words before each frame: 4, or 8 with a `vnet_len` word. */
  header = 4;
  /** Where the copied bytes end. */
  end = 0;
  /** The oldest frame not decided yet. */
  head = 0;
  /** Frames copied (decided ones before `head` included). */
  count = 0;
  // Each frame's fields, as a `Packet` holds them (sequence numbers stored as int32, read as
  // uint32): allocated with the first deferred frame.
  at: Int32Array = NO_INTS;
  size: Int32Array = NO_INTS;
  vnetLen: Int32Array = NO_INTS;
  /** The payload's offset in the frame. */
  payload: Int32Array = NO_INTS;
  len: Int32Array = NO_INTS;
  flags: Int32Array = NO_INTS;
  seq: Int32Array = NO_INTS;
  seqEnd: Int32Array = NO_INTS;
  ack: Int32Array = NO_INTS;
  createdAt: Float64Array = NO_DOUBLES;
  /**
   * Each frame's connection (`Connection.deferred` counts them); null once decided. Of its
   * full length from the first deferred frame on: an array grown frame by frame and emptied
   * again was most of the garbage of a pair.
   */
  conn: (Connection | null)[] = objectArray();

  /** Frames not decided yet. */
  get pending(): number {
    return this.count - this.head;
  }

  /** Bytes that more frames of the pending ones' side may take (after `prepare`). */
  room(): number {
    if (this.head === this.count) return DEFER_BYTES;
    return DEFER_BYTES - this.end + this.at[this.head] - this.header;
  }

  /**
   * Makes room for frames from `side` behind those pending (of the same side): allocates on
   * first use, starts over when none is pending, and moves the pending ones to the front
   * when they do not start there. `header`: bytes of framing words before each frame. The
   * caller must have had the bytes before the pending ones copied out (the output writer
   * copies released frames lazily).
   */
  prepare(side: Side, header: number): void {
    if (this.bytes.length === 0) {
      this.bytes = new Uint8Array(DEFER_BYTES);
      this.at = new Int32Array(DEFER_FRAMES);
      this.size = new Int32Array(DEFER_FRAMES);
      this.vnetLen = new Int32Array(DEFER_FRAMES);
      this.payload = new Int32Array(DEFER_FRAMES);
      this.len = new Int32Array(DEFER_FRAMES);
      this.flags = new Int32Array(DEFER_FRAMES);
      this.seq = new Int32Array(DEFER_FRAMES);
      this.seqEnd = new Int32Array(DEFER_FRAMES);
      this.ack = new Int32Array(DEFER_FRAMES);
      this.createdAt = new Float64Array(DEFER_FRAMES);
      this.conn = new Array<Connection | null>(DEFER_FRAMES).fill(null);
    }
    if (this.head === this.count) {
      this.head = this.count = this.end = 0;
      this.side = side;
      this.header = header;
      return;
    }
    const head = this.head;
    if (head === 0) return;
    const from = this.at[head] - header;
    this.bytes.copyWithin(0, from, this.end);
    this.end -= from;
    const n = this.count - head;
    for (const a of [this.size, this.vnetLen, this.payload, this.len, this.flags, this.seq]) {
      a.copyWithin(0, head, this.count);
    }
    this.seqEnd.copyWithin(0, head, this.count);
    this.ack.copyWithin(0, head, this.count);
    this.createdAt.copyWithin(0, head, this.count);
    const at = this.at;
    for (let j = 0; j < n; j++) at[j] = at[head + j] - from;
    const conn = this.conn;
    for (let j = 0; j < n; j++) conn[j] = conn[head + j];
    conn.fill(null, n, this.count);
    this.head = 0;
    this.count = n;
  }
}
