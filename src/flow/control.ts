/**
 * Flow control (SPEC 8): the one place that decides whether an input is read. Pure: it is told
 * what happened (outdev congested or drained, bytes held per side, an input's peer came or
 * went) and announces each pause and its end, with the reason, after its state changed.
 *
 * - Back-pressure is symmetric: while outdev is congested both inputs pause together, so two
 *   identical streams never drift apart in the queues.
 * - An input whose side holds more than the high mark pauses until comparison or a checkpoint
 *   brings it below the low mark, whether or not the other side is connected.
 *
 * @module
 */

import type { Side } from "../compare/packet.ts";

/** Why an input is paused; the first that applies is reported. */
export type PauseReason = "outdev-congested" | "held-bytes";

/** Held bytes per side: pause above `high`, resume below `low`. */
export interface HeldMarks {
  high: number;
  low: number;
}

/** Told of every change of an input's pause state. */
export type PauseListener = (side: Side, paused: boolean, reason: PauseReason) => void;

/** Held-byte marks for a `--max-held-bytes` budget shared by both sides. */
export function heldMarks(maxHeldBytes: number): HeldMarks {
  return { high: Math.floor(maxHeldBytes / 4), low: Math.floor(maxHeldBytes / 8) };
}

interface SideState {
  present: boolean;
  heldHigh: boolean;
  paused: boolean;
  reason: PauseReason;
}

/** Decides pausing for both inputs. */
export class FlowControl {
  readonly #marks: HeldMarks;
  readonly #listener: PauseListener;
  #outdevCongested = false;
  readonly #sides: Record<Side, SideState> = {
    primary: { present: false, heldHigh: false, paused: false, reason: "held-bytes" },
    secondary: { present: false, heldHigh: false, paused: false, reason: "held-bytes" },
  };

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

  /** The bytes each side holds now (after a chunk of input, a checkpoint, a scan). */
  held(primaryBytes: number, secondaryBytes: number): void {
    if (this.#mark("primary", primaryBytes)) this.#decide("primary");
    if (this.#mark("secondary", secondaryBytes)) this.#decide("secondary");
  }

  /** `side`'s input got a peer, or lost it (an input without a peer is never paused). */
  peer(side: Side, present: boolean): void {
    if (this.#sides[side].present === present) return;
    this.#sides[side].present = present;
    this.#decide(side);
  }

  /** Updates the high/low state of one side; true when it changed. */
  #mark(side: Side, bytes: number): boolean {
    const s = this.#sides[side];
    const next = s.heldHigh ? bytes >= this.#marks.low : bytes > this.#marks.high;
    if (next === s.heldHigh) return false;
    s.heldHigh = next;
    return true;
  }

  #decide(side: Side): void {
    const s = this.#sides[side];
    const reason: PauseReason | null = !s.present
      ? null
      : this.#outdevCongested
      ? "outdev-congested"
      : s.heldHigh
      ? "held-bytes"
      : null;
    const paused = reason !== null;
    if (paused === s.paused && (reason === null || reason === s.reason)) return;
    const was = s.paused;
    s.paused = paused;
    if (reason !== null) s.reason = reason;
    if (paused !== was) this.#listener(side, paused, s.reason);
  }
}
