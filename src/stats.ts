/**
 * Counters of everything the comparator did, for the exit summary (and later, metrics).
 *
 * @module
 */

import type { CheckpointReason, DiscardReason } from "./compare/events.ts";
import type { Side } from "./compare/packet.ts";
import type { Fields } from "./log.ts";

/** The comparator's counters. */
export class Stats {
  /** Frames read per input (zero-length ones included). */
  primaryIn = 0;
  secondaryIn = 0;
  /** Primary frames sent to outdev: after a successful comparison, uncompared, by a flush. */
  releasedCompared = 0;
  passedThrough = 0;
  releasedByCheckpoint = 0;
  /** Secondary frames consumed by comparison and dropped by flushes. */
  secondaryCompared = 0;
  secondaryFlushed = 0;
  /** Secondary frames a flush kept: they came after the secondary's RESUME (`--qmp-secondary`). */
  secondaryKeptAtFlush = 0;
  /** Frames lost, by side and reason (`primary:queue-full`, `secondary:not-ip`, ...). */
  readonly dropped = new Map<string, number>();
  /** Divergences and timeouts seen, by reason. */
  readonly checkpointNeeds = new Map<CheckpointReason, number>();
  /** Checkpoint requests issued (one per epoch), and those folded into an outstanding one. */
  checkpointsRequested = 0;
  checkpointsCoalesced = 0;
  /** Requests that could not be delivered because notify-dev had no peer. */
  checkpointsUndelivered = 0;
  /** `COLO_CHECKPOINT` messages received. */
  checkpointsReceived = 0;
  /** Released frames dropped because outdev was disconnected and its buffer full. */
  outdevOverflow = 0;
  /** Released frames dropped because they waited too long for outdev's next peer. */
  outdevExpired = 0;
  /** Primary frames passed through uncompared, by why they could not be compared. */
  readonly passedThroughBy = new Map<string, number>();
  /** Exceptions caught from the engine (internal errors, not peer problems). */
  internalErrors = 0;
  /** Pauses of each input, and the time spent paused (ms), by reason. */
  readonly pauses = new Map<string, number>();
  readonly pausedMs = new Map<string, number>();
  /** Control peers disconnected for not reading (their output reached its bound). */
  controlPeersDropped = 0;
  /** The most bytes held on both sides together, sampled after every read (SPEC 8). */
  heldBytesPeak = 0;
  /** Streams reset because of an oversize `len`. */
  oversizeResets = 0;

  /** Counts a lost frame. */
  drop(side: Side, reason: DiscardReason): number {
    const k = `${side}:${reason}`;
    const n = (this.dropped.get(k) ?? 0) + 1;
    this.dropped.set(k, n);
    return n;
  }

  /** Counts one pause of `side` for `reason` that lasted `ms`. */
  paused(side: Side, reason: string, ms: number): void {
    const k = pauseKey(side, reason);
    this.pauses.set(k, (this.pauses.get(k) ?? 0) + 1);
    this.pausedMs.set(k, (this.pausedMs.get(k) ?? 0) + ms);
  }

  /** Pauses of `side` for `reason` that have ended. */
  pausesOf(side: Side, reason: string): number {
    return this.pauses.get(pauseKey(side, reason)) ?? 0;
  }

  /** Counts a divergence or timeout. */
  need(reason: CheckpointReason): void {
    this.checkpointNeeds.set(reason, (this.checkpointNeeds.get(reason) ?? 0) + 1);
  }

  /** Total frames lost on one side. */
  droppedOn(side: Side): number {
    let n = 0;
    for (const [k, v] of this.dropped) if (k.startsWith(side)) n += v;
    return n;
  }

  /** The counters as log fields, for the one-line summary at exit. */
  summary(): Fields {
    const f: Fields = {
      primary_in: this.primaryIn,
      secondary_in: this.secondaryIn,
      released: this.releasedCompared,
      passed_through: this.passedThrough,
      released_by_checkpoint: this.releasedByCheckpoint,
      secondary_compared: this.secondaryCompared,
      secondary_flushed: this.secondaryFlushed,
    };
    if (this.secondaryKeptAtFlush) f.secondary_kept_at_flush = this.secondaryKeptAtFlush;
    for (const [k, v] of [...this.dropped].sort()) f[`dropped_${k.replace(":", "_")}`] = v;
    for (const [k, v] of [...this.passedThroughBy].sort()) f[`passed_through_${k}`] = v;
    if (this.outdevOverflow) f.dropped_outdev_overflow = this.outdevOverflow;
    if (this.outdevExpired) f.dropped_outdev_too_old = this.outdevExpired;
    if (this.internalErrors) f.internal_errors = this.internalErrors;
    if (this.controlPeersDropped) f.control_peers_dropped = this.controlPeersDropped;
    f.held_bytes_peak = this.heldBytesPeak;
    for (const [k, v] of [...this.pauses].sort()) {
      f[`pauses_${k.replace(":", "_")}`] = v;
      f[`paused_ms_${k.replace(":", "_")}`] = Math.round(this.pausedMs.get(k) ?? 0);
    }
    if (this.oversizeResets) f.oversize_resets = this.oversizeResets;
    for (const [k, v] of [...this.checkpointNeeds].sort()) f[`mismatch_${k}`] = v;
    f.checkpoints_requested = this.checkpointsRequested;
    f.checkpoints_coalesced = this.checkpointsCoalesced;
    if (this.checkpointsUndelivered) f.checkpoints_undelivered = this.checkpointsUndelivered;
    f.checkpoints_received = this.checkpointsReceived;
    return f;
  }
}

/** The key of `pauses` and `pausedMs`. */
function pauseKey(side: Side, reason: string): string {
  return `${side}:${reason}`;
}
