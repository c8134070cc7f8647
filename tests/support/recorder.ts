/**
 * An {@linkcode EngineSink} that records every decision, for engine tests.
 *
 * @module
 */

import type { Connection } from "../../src/compare/connection.ts";
import type {
  CheckpointReason,
  DiscardReason,
  EngineSink,
  ReleaseReason,
} from "../../src/compare/events.ts";
import type { Side } from "../../src/compare/packet.ts";

/** One recorded decision. */
export type Decision =
  | { kind: "release"; frame: Uint8Array; vnetLen: number; reason: ReleaseReason }
  | { kind: "discard"; side: Side; reason: DiscardReason; frame: Uint8Array; conn: string | null }
  | { kind: "checkpoint"; reason: CheckpointReason; conn: string | null; now: number };

/** Records decisions; frames are copied (the engine passes them where they lie). */
export class Recorder implements EngineSink {
  readonly log: Decision[] = [];

  release(
    bytes: Uint8Array,
    at: number,
    size: number,
    vnetLen: number,
    reason: ReleaseReason,
  ): void {
    this.log.push({ kind: "release", frame: bytes.slice(at, at + size), vnetLen, reason });
  }

  discard(
    side: Side,
    reason: DiscardReason,
    bytes: Uint8Array,
    at: number,
    size: number,
    conn: Connection | null,
  ): void {
    this.log.push({
      kind: "discard",
      side,
      reason,
      frame: bytes.slice(at, at + size),
      conn: conn?.name ?? null,
    });
  }

  checkpoint(reason: CheckpointReason, conn: Connection | null, now: number): void {
    this.log.push({ kind: "checkpoint", reason, conn: conn?.name ?? null, now });
  }

  /** Frames released so far. */
  get released(): Uint8Array[] {
    return this.log.flatMap((d) => d.kind === "release" ? [d.frame] : []);
  }

  /** Reasons of releases so far. */
  get releaseReasons(): ReleaseReason[] {
    return this.log.flatMap((d) => d.kind === "release" ? [d.reason] : []);
  }

  /** Checkpoint reasons so far. */
  get checkpoints(): CheckpointReason[] {
    return this.log.flatMap((d) => d.kind === "checkpoint" ? [d.reason] : []);
  }

  /** Discards so far as `side:reason`. */
  get discards(): string[] {
    return this.log.flatMap((d) => d.kind === "discard" ? [`${d.side}:${d.reason}`] : []);
  }

  /** Forgets everything recorded. */
  clear(): void {
    this.log.length = 0;
  }
}
