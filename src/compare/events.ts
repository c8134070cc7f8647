/**
 * What the compare engine tells the world. The engine is synchronous and does no I/O; it
 * reports every decision, with its reason, to an {@linkcode EngineSink}.
 *
 * @module
 */

import type { UnsupportedReason } from "../packet/parse.ts";
import type { Connection } from "./connection.ts";
import type { Packet, Side } from "./packet.ts";

/** Why a primary frame goes to outdev. */
export type ReleaseReason =
  /** The secondary produced the same output. */
  | "compared"
  /** Not comparable (SPEC 4), or COLO not active (SPEC 7b): passed through at once. */
  | "passthrough"
  /** Held until a checkpoint flushed it (SPEC 7). */
  | "checkpoint";

/** Why a frame was discarded (for the secondary, "compared" is the normal fate). */
export type DiscardReason =
  | UnsupportedReason
  /** Secondary frame consumed by a successful comparison. */
  | "compared"
  /** Secondary frame dropped by a checkpoint flush. */
  | "checkpoint"
  /** `len` = 0 (SPEC 3). */
  | "empty"
  /** The side's queue already held `max-queue-size` + 1 frames (SPEC 5). */
  | "queue-full"
  /** The connection table was full of connections that hold frames. */
  | "table-full"
  /** Holding the frame would exceed the comparator's memory budget. */
  | "memory-limit"
  /** COLO is not active (SPEC 7b, after `COLO_EXIT`): nothing to compare with. */
  | "colo-inactive";

/** Why the engine needs a checkpoint. */
export type CheckpointReason =
  /** TCP payload bytes differ. */
  | "tcp-payload"
  /** TCP payload equal, but the primary acknowledges data the secondary has not (SPEC 6). */
  | "tcp-ack"
  /**
   * The secondary sent bytes where the primary's were dropped at a full queue, and the
   * primary went on past them: those bytes cannot be compared (SPEC 6).
   */
  | "tcp-gap"
  /** No secondary datagram matches the oldest primary one. */
  | "datagram"
  /** A held frame is older than `compare-timeout`. */
  | "timeout"
  /** Held frames reached a limit; a checkpoint frees them. */
  | "resources";

/**
 * Receives the engine's decisions. A frame is passed as `bytes[at, at + size)`, where it lies
 * (a read buffer, or the slab of a held frame: no view per frame, issue 11). A sink may keep
 * it there and copy it later, until `settle` is called or the input that brought the frame
 * reuses its read buffer (the comparator's pump tells the outdev writer first).
 */
export interface EngineSink {
  /**
   * A primary frame goes to outdev, now, in this order. A frame passed through because it
   * cannot be compared (SPEC 4) comes with the reason; a frame that was held, with the time
   * it arrived (the engine's clock), for the hold-time metric.
   */
  release(
    bytes: Uint8Array,
    at: number,
    size: number,
    vnetLen: number,
    reason: ReleaseReason,
    unsupported?: UnsupportedReason,
    arrivedAt?: number,
  ): void;
  /**
   * Optional: a held primary frame a checkpoint flush releases, handed over instead of passed
   * as bytes, so that thousands of them need not be copied at once (issue 11). As
   * {@linkcode EngineSink.release} with reason "checkpoint" and the frame's arrival time; the
   * sink reads the frame when it writes it and then gives `p` back through `done`.
   */
  releaseHeld?(p: Packet, done: (p: Packet) => void): void;
  /**
   * Optional: the engine is about to copy held frames into slabs, where released frames may
   * have lain: frames `release` was handed and that the sink has not copied yet must be
   * copied now.
   */
  settle?(): void;
  /** A frame, `bytes[at, at + size)`, is discarded. */
  discard(
    side: Side,
    reason: DiscardReason,
    bytes: Uint8Array,
    at: number,
    size: number,
    conn: Connection | null,
  ): void;
  /** The replicas diverged (or a frame timed out): a checkpoint is needed. */
  checkpoint(reason: CheckpointReason, conn: Connection | null, now: number): void;
  /**
   * Optional, for `--capture` (SPEC 12): the frames a divergence is about, called just before
   * {@linkcode EngineSink.checkpoint}. `primary` is the primary frame compared (null when a
   * secondary frame timed out); `secondaries` the secondary frames it was compared with (for
   * a timeout: the aged frame, if secondary). The packets are the engine's own: read them
   * now, keep nothing.
   */
  divergence?(
    reason: CheckpointReason,
    conn: Connection,
    primary: Packet | null,
    secondaries: readonly Packet[],
    now: number,
  ): void;
}

/**
 * Receives QEMU-named trace events (`colo_compare_main`, `colo_compare_tcp_info`, ...). The
 * engine only calls it when tracing is on.
 */
export interface Tracer {
  trace(name: string, fields: Record<string, string | number>): void;
}
