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

  /** Bytes that more frames may take: behind the pending ones, or all when none is pending. */
  room(): number {
    return this.head === this.count ? DEFER_BYTES : DEFER_BYTES - this.end;
  }

  /**
   * Starts over with frames from `side` (none may be pending), each after `header` bytes of
   * framing words; allocates on first use. More frames of the same side go behind the pending
   * ones while there is room (`room`); the pending frames never move: once they are all
   * decided, the next read starts over at the front. The caller must have had the bytes copied
   * out that the output writer still reads here (it copies released frames lazily).
   */
  start(side: Side, header: number): void {
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
    this.head = this.count = this.end = 0;
    this.side = side;
    this.header = header;
  }
}
