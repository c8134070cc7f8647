/**
 * Flow control (SPEC 8): the one place that decides whether an input is read. Pure: it is told
 * what happened (outdev congested or drained, bytes held per side, an input's peer came or
 * went) and announces each pause and its end, with the reason, after its state changed.
 *
 * - Back-pressure is symmetric: while outdev is congested both inputs pause together, so two
 *   identical streams never drift apart in the queues.
 * - An input whose side holds more than the high mark pauses until comparison or a checkpoint
 *   brings it below the low mark, whether or not the other side is connected.
 * - An input that runs ahead of the other (its side holds more than the lead mark, or a queue
 *   three quarters as long as max-queue-size: frames the other side has not sent yet) pauses
 *   while the other side, connected, catches up. Without this, identical streams read at uneven
 *   speeds drift apart until a queue overflows, and from then on they can never match again. Never
 *   both at once for this reason: when each side holds what the other has not sent yet, the one
 *   whose lead the other surely catches up with pauses (a long queue on a connection where
 *   frames matched before, over long queues where nothing matched), else the one that became
 *   ahead last, and the other, even if it paused first, reads on. (Kept paused
 *   for a queue the other never sends while the other read on into a long queue of its own, a
 *   side never caught up, and the other's queue overflowed with identical frames: a stress
 *   probe.) And only while the other side reads: a connected peer that sends nothing for
 *   {@linkcode LEAD_PAUSE_MS} (a diverged or idle secondary) must not stall the other side (the
 *   comparator tells {@linkcode FlowControl.leadTimeout}); once
 *   waived, a side is not paused for its lead again until it has (nearly) caught up. While a
 *   checkpoint is on its way both may pause for their lead, and the comparator waits for it
 *   longer (see {@linkcode FlowControl.checkpointPending}); once the VMs have stopped for it,
 *   neither does (see {@linkcode FlowControl.vmsStopped}).
 *
 * @module
 */

import type { Side } from "../compare/packet.ts";

/**
 * Whether a side has a queue too long to take another read, and whether the other side
 * catches up with it: "matched" when one such queue is on a connection where frames matched
 * before (the other side sends there), "unmatched" when all are on connections where nothing
 * matched yet (perhaps frames the other side never sends, waiting for their timeout).
 */
export type LongQueue = "none" | "unmatched" | "matched";

/** Why an input is paused; the first that applies is reported. */
export type PauseReason = "outdev-congested" | "held-bytes" | "ahead";

/**
 * Held bytes per side: pause above `high`, resume below `low`; while the other side is
 * connected, pause above `leadHigh` and resume below `leadLow`.
 */
export interface HeldMarks {
  high: number;
  low: number;
  leadHigh: number;
  leadLow: number;
}

/** Told of every change of an input's pause state, and of a new reason while paused. */
export type PauseListener = (side: Side, paused: boolean, reason: PauseReason) => void;

/** Held-byte marks for a `--max-held-bytes` budget shared by both sides. */
export function heldMarks(maxHeldBytes: number): HeldMarks {
  const high = Math.floor(maxHeldBytes / 4);
  const low = Math.floor(maxHeldBytes / 8);
  // A read of a plain input (1 MiB; a TLS one reads 128 KiB) of lead: about max-queue-size 1 KB
  // frames on one connection, whose queue is "long" at three quarters of that anyway.
  return { high, low, leadHigh: Math.min(LEAD_HIGH, low), leadLow: Math.min(LEAD_LOW, low / 2) };
}

/** A pause for running ahead lasts at most this long (ms); then the lead is waived. */
export const LEAD_PAUSE_MS = 100;

/** Lead marks: one side may run this far ahead of the other (bytes it holds). */
const LEAD_HIGH = 1024 * 1024;
const LEAD_LOW = 512 * 1024;

interface SideState {
  present: boolean;
  heldHigh: boolean;
  ahead: boolean;
  /** The last pause for being ahead timed out: not again until below the lead low mark. */
  leadWaived: boolean;
  /** When it last became ahead (a count): of two sides ahead, the later pauses... */
  aheadSince: number;
  /** ...unless only this one is ahead with long queues where nothing matched (see `#yields`). */
  unmatched: boolean;
  paused: boolean;
  reason: PauseReason;
}

/** Decides pausing for both inputs. */
export class FlowControl {
  readonly #marks: HeldMarks;
  readonly #listener: PauseListener;
  #outdevCongested = false;
  #checkpointPending = false;
  #vmsStopped = false;
  /** How many times a side became ahead. */
  #aheads = 0;
  readonly #sides: Record<Side, SideState> = {
    primary: this.#initial(),
    secondary: this.#initial(),
  };

  #initial(): SideState {
    return {
      present: false,
      heldHigh: false,
      ahead: false,
      leadWaived: false,
      aheadSince: 0,
      unmatched: false,
      paused: false,
      reason: "held-bytes",
    };
  }

  constructor(marks: HeldMarks, listener: PauseListener) {
    this.#marks = marks;
    this.#listener = listener;
  }

  /** True while `side`'s input must not be read. */
  paused(side: Side): boolean {
    return this.#sides[side].paused;
  }

  /** Why `side` is paused (meaningful while {@linkcode FlowControl.paused}). */
  reason(side: Side): PauseReason {
    return this.#sides[side].reason;
  }

  /** outdev became congested, or drained below its low mark. */
  outdev(congested: boolean): void {
    if (this.#outdevCongested === congested) return;
    this.#outdevCongested = congested;
    this.#decide("primary");
    this.#decide("secondary");
  }

  /**
   * A checkpoint was asked of a connected controller and is not done yet (true), or it is
   * done (false). Meanwhile both sides may pause for being ahead at once: the flush settles
   * what each is ahead with, and reading on would only fill the queues. The comparator waives
   * such pauses if the checkpoint takes longer than compare-timeout.
   */
  checkpointPending(pending: boolean): void {
    if (this.#checkpointPending === pending) return;
    this.#checkpointPending = pending;
    this.#decide("primary");
    this.#decide("secondary");
  }

  /**
   * The primary VM stopped (a checkpoint begins: QMP `STOP`), or runs again. While it is
   * stopped no side pauses for being ahead: what the sockets still hold was sent before the
   * stop, and must be read before the checkpoint's flush, which ends its epoch (SPEC 7b); read
   * after it, it would be taken for the next epoch's, and a primary frame of it would wait for
   * a copy the secondary, restored from the primary's state, never sends. How much that can be
   * is bounded by what was on its way when the VMs stopped; the held-bytes marks still apply.
   */
  vmsStopped(stopped: boolean): void {
    if (this.#vmsStopped === stopped) return;
    this.#vmsStopped = stopped;
    this.#decide("primary");
    this.#decide("secondary");
  }

  /**
   * The bytes each side holds now (after a chunk of input, a checkpoint, a scan), and whether
   * a side has a queue too long to take another read (it is ahead whatever its bytes; see
   * {@linkcode LongQueue}). `cost`:
   * what they count against `--max-held-bytes` (bytes and each frame's bookkeeping), for the
   * held-bytes marks; the bytes themselves by default.
   */
  held(
    primaryBytes: number,
    secondaryBytes: number,
    primaryLong: LongQueue = "none",
    secondaryLong: LongQueue = "none",
    primaryCost = primaryBytes,
    secondaryCost = secondaryBytes,
  ): void {
    const primary = this.#mark("primary", primaryBytes, primaryLong, primaryCost);
    const secondary = this.#mark("secondary", secondaryBytes, secondaryLong, secondaryCost);
    // Either side's lead decides whether the other may pause for its own (never both).
    if (primary || secondary) {
      this.#decide("primary");
      this.#decide("secondary");
    }
  }

  /**
   * `side` has been paused for being ahead for {@linkcode LEAD_PAUSE_MS}: the other side is
   * not catching up, so `side` reads on.
   */
  leadTimeout(side: Side): void {
    const s = this.#sides[side];
    if (!s.paused || s.reason !== "ahead") return;
    s.leadWaived = true;
    this.#decide(side);
  }

  /**
   * A queue of `side` grew long: a lead of its own, which an earlier lead's waiver does not
   * cover. Waived for good while another connection's frames, which the other side never sends,
   * kept the side ahead (until their timeout), the side overflowed a queue the other was about
   * to catch up with (a stress probe: a secondary quiet for 150 ms, then identical frames
   * dropped on the primary's one connection).
   */
  newLead(side: Side): void {
    const s = this.#sides[side];
    if (!s.leadWaived) return;
    s.leadWaived = false;
    this.#decide(side);
  }

  /**
   * `side`'s input got a peer, or lost it. An input without a peer is never paused, and the
   * other side is never paused for being ahead of it.
   */
  peer(side: Side, present: boolean): void {
    if (this.#sides[side].present === present) return;
    this.#sides[side].present = present;
    this.#decide(side);
    this.#decide(side === "primary" ? "secondary" : "primary");
  }

  /** Updates the high/low and lead states of one side; true when either changed. */
  #mark(side: Side, bytes: number, long: LongQueue, cost: number): boolean {
    const s = this.#sides[side];
    const m = this.#marks;
    // The budget's marks count what the frames cost (their bookkeeping too); the lead, bytes.
    const high = s.heldHigh ? cost >= m.low : cost > m.high;
    const ahead = long !== "none" || (s.ahead ? bytes >= m.leadLow : bytes > m.leadHigh);
    const unmatched = long === "unmatched";
    if (!ahead) s.leadWaived = false;
    else if (!s.ahead) s.aheadSince = ++this.#aheads;
    if (high === s.heldHigh && ahead === s.ahead && unmatched === s.unmatched) return false;
    s.heldHigh = high;
    s.ahead = ahead;
    s.unmatched = unmatched;
    return true;
  }

  /**
   * Of two sides ahead, `s` reads on and `other` pauses: the side whose lead the other catches
   * up with pauses. A side ahead only with long queues where nothing matched may wait for
   * frames the other side never sends; paused for them, it stops the other from catching up
   * with a long queue of its own, which overflows with identical frames (a stress probe: the
   * secondary long on the one connection, then the primary long with 54 frames of its own).
   * So the other pauses for that lead, if it is one where frames matched; otherwise the side
   * that became ahead last pauses.
   */
  #yields(s: SideState, other: SideState): boolean {
    if (!other.ahead || other.leadWaived) return false;
    if (s.unmatched !== other.unmatched) return s.unmatched;
    return other.aheadSince > s.aheadSince;
  }

  #decide(side: Side): void {
    const s = this.#sides[side];
    const other = this.#sides[side === "primary" ? "secondary" : "primary"];
    const reason: PauseReason | null = !s.present
      ? null
      : this.#outdevCongested
      ? "outdev-congested"
      : s.heldHigh
      ? "held-bytes"
      : s.ahead && !s.leadWaived && other.present && !this.#vmsStopped &&
          (this.#checkpointPending ||
            ((!other.paused || other.reason === "ahead") && !this.#yields(s, other)))
      ? "ahead"
      : null;
    const paused = reason !== null;
    if (paused === s.paused && (reason === null || reason === s.reason)) return;
    s.paused = paused;
    if (reason !== null) s.reason = reason;
    this.#listener(side, paused, s.reason);
    // Whether the other side may pause for being ahead depends on this one: never both.
    if (s.reason === "ahead" || other.ahead) {
      this.#decide(side === "primary" ? "secondary" : "primary");
    }
  }
}
