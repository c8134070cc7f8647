/**
 * What the seeing-inside modules (SPEC 12: metrics, monitor) need from a running comparator,
 * as three small interfaces: a snapshot of its state, its settings, and a stream of events.
 * The comparator's composition root implements them in a few lines; nothing here reaches
 * into the engine or the sockets.
 *
 * @module
 */

import type { CheckpointReason } from "../compare/events.ts";
import type { Side } from "../compare/packet.ts";
import type { Stats } from "../stats.ts";

/** Per side. */
export interface BySide<T> {
  primary: T;
  secondary: T;
}

/** The comparator's state at one moment. */
export interface Snapshot {
  /** The counters (live object: read, do not keep). */
  stats: Stats;
  heldFrames: BySide<number>;
  heldBytes: BySide<number>;
  connections: number;
  /** Inputs whose reading is paused (back-pressure, SPEC 8). */
  paused: BySide<boolean>;
  /** Endpoint name → a peer is attached. */
  peers: Record<string, boolean>;
  /** Checkpoints completed since start: the current epoch. */
  epoch: number;
  /** A checkpoint request is waiting for its checkpoint. */
  checkpointOutstanding: boolean;
}

/** The engine settings that can change at runtime (QEMU's property names in comments). */
export interface Settings {
  /** `compare_timeout`, ms. */
  compareTimeout: number;
  /** `expired_scan_cycle`, ms. */
  expiredScanCycle: number;
  /** `max_queue_size`, frames. */
  maxQueueSize: number;
  /** Read-only ones: `vnet_hdr_support` and the endpoint addresses. */
  readonly vnetHdrSupport: boolean;
  readonly endpoints: Readonly<Record<string, string>>;
}

/** Something an operator may want to hear of as it happens. */
export type InsideEvent =
  | { kind: "checkpoint-request"; reason: CheckpointReason; connection: string | null }
  | { kind: "checkpoint-done"; epoch: number }
  | { kind: "peer"; endpoint: string; connected: boolean }
  | { kind: "drop"; side: Side | "outdev"; reason: string; count: number };

/** The running comparator, as the seeing-inside modules see it. */
export interface ComparatorView {
  snapshot(): Snapshot;
  readonly settings: Settings;
  /** A controller of any kind reports a completed checkpoint: flush as on COLO_CHECKPOINT. */
  checkpointDone(): void;
  /** Calls `listener` for every event until the returned function is called. */
  subscribe(listener: (event: InsideEvent) => void): () => void;
}

/** A list of event listeners; emitting with no listener costs a length check. */
export class EventHub {
  #listeners: ((event: InsideEvent) => void)[] = [];

  get active(): boolean {
    return this.#listeners.length > 0;
  }

  subscribe(listener: (event: InsideEvent) => void): () => void {
    this.#listeners = [...this.#listeners, listener];
    return () => {
      this.#listeners = this.#listeners.filter((l) => l !== listener);
    };
  }

  emit(event: InsideEvent): void {
    for (const l of this.#listeners) l(event);
  }
}
