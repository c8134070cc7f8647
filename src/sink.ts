/**
 * The engine's decisions, counted and passed on: releases go to the outdev writer, checkpoint
 * needs to whoever applies the epoch rule, and every lost or uncompared frame is counted and
 * logged once per class, then summarised (SPEC 8: never a line per frame).
 *
 * @module
 */

import type { Connection } from "./compare/connection.ts";
import type {
  CheckpointReason,
  DiscardReason,
  EngineSink,
  ReleaseReason,
} from "./compare/events.ts";
import type { Packet, Side } from "./compare/packet.ts";
import type { ClassLog } from "./log.ts";
import type { FrameWriter } from "./output/writer.ts";
import type { UnsupportedReason } from "./packet/parse.ts";
import type { Stats } from "./stats.ts";

/** Called for every checkpoint need; the epoch rule is applied there. */
export type CheckpointNeed = (
  reason: CheckpointReason,
  conn: Connection | null,
  now: number,
) => void;

/** The {@linkcode EngineSink} of a running comparator. */
export class ComparatorSink implements EngineSink {
  readonly #stats: Stats;
  readonly #out: FrameWriter;
  readonly #classes: ClassLog;
  readonly #need: CheckpointNeed;
  /**
   * Seeing inside (SPEC 12), set before the engine is built and only when asked for: the
   * capture's divergence hook, the hold time of each released held frame, lost frames.
   */
  divergence?: EngineSink["divergence"];
  onHeldRelease?: (arrivedAt: number) => void;
  onLost?: (side: Side | "outdev", reason: string, frames: number) => void;

  constructor(stats: Stats, out: FrameWriter, classes: ClassLog, need: CheckpointNeed) {
    this.#stats = stats;
    this.#out = out;
    this.#classes = classes;
    this.#need = need;
  }

  release(
    bytes: Uint8Array,
    at: number,
    size: number,
    vnetLen: number,
    reason: ReleaseReason,
    unsupported?: UnsupportedReason,
    arrivedAt?: number,
  ): void {
    const stats = this.#stats;
    if (arrivedAt !== undefined) this.onHeldRelease?.(arrivedAt);
    if (reason === "compared") stats.releasedCompared++;
    else if (reason === "checkpoint") stats.releasedByCheckpoint++;
    else {
      stats.passedThrough++;
      if (unsupported !== undefined) this.#passedThrough(unsupported);
    }
    this.#out.writeAt(bytes, at, size, vnetLen);
  }

  settle(): void {
    this.#out.copyPending();
  }

  releaseHeld(p: Packet, done: (p: Packet) => void): void {
    this.onHeldRelease?.(p.createdAt);
    this.#stats.releasedByCheckpoint++;
    this.#out.writeHeld(p, done);
  }

  /** SPEC 4: an uncomparable primary frame passes through, counted; insane ones logged. */
  #passedThrough(why: UnsupportedReason): void {
    const by = this.#stats.passedThroughBy;
    by.set(why, (by.get(why) ?? 0) + 1);
    // ARP, LLDP and friends are normal traffic; anything else is a damaged IP frame.
    if (why !== "not-ip") {
      this.#classes.note("warn", "frames-passed-through", { side: "primary", reason: why }, {
        why: "not comparable; sent to outdev uncompared",
      });
    }
  }

  discard(
    side: Side,
    reason: DiscardReason,
    _bytes: Uint8Array,
    _at: number,
    _size: number,
    conn: Connection | null,
  ): void {
    if (reason === "compared") {
      this.#stats.secondaryCompared++;
      return;
    }
    if (reason === "checkpoint") {
      this.#stats.secondaryFlushed++;
      return;
    }
    this.#stats.drop(side, reason);
    this.onLost?.(side, reason, 1);
    this.#classes.note("warn", "frames-dropped", { side, reason }, { conn: conn?.name });
  }

  checkpoint(reason: CheckpointReason, conn: Connection | null, now: number): void {
    this.#stats.need(reason);
    this.#need(reason, conn, now);
  }

  /** Released frames outdev lost: no peer and a full buffer, or too old when a peer came. */
  outdevLost(reason: "disconnected-overflow" | "too-old", frames: number): void {
    if (reason === "too-old") this.#stats.outdevExpired += frames;
    else this.#stats.outdevOverflow += frames;
    this.onLost?.("outdev", reason, frames);
    this.#classes.note("warn", "frames-dropped", { side: "outdev", reason }, {}, frames);
  }

  /** An exception from the engine: a bug, logged with its stack, counted, never a disconnect. */
  internalError(where: string, error: unknown): void {
    this.#stats.internalErrors++;
    const message = error instanceof Error ? error.message : String(error);
    this.#classes.note("error", "internal-error", { where, error: message }, {
      stack: error instanceof Error ? error.stack : undefined,
    });
  }
}
