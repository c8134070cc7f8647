/**
 * What the comparison rules need from the engine that runs them.
 *
 * @module
 */

import type { Connection } from "./connection.ts";
import type { CheckpointReason, Tracer } from "./events.ts";
import type { Packet } from "./packet.ts";
import type { Seq32 } from "../packet/seq.ts";

/** The engine as seen by the TCP and datagram rules. */
export interface CompareContext {
  /** Trace sink, or null when tracing is off. */
  readonly tracer: Tracer | null;
  /** Sends a primary packet (already taken off its queue) to outdev. */
  sendPrimary(p: Packet): void;
  /** Discards a secondary packet (already taken off its queue) that has been compared. */
  dropSecondary(s: Packet): void;
  /**
   * Where the last primary TCP segment this engine dropped on `conn` at a full queue ended
   * (SPEC 5), while the bytes before it may still be waited for; undefined if none.
   */
  primaryDroppedUntil(conn: Connection): Seq32 | undefined;
  /** Reports a divergence on `conn`. */
  mismatch(reason: CheckpointReason, conn: Connection, now: number): void;
  /** Checkpoint flushes so far: the epoch frames held now belong to. */
  readonly epoch: number;
}
