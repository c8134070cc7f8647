/**
 * One interface for every way of asking a COLO controller for a checkpoint and learning that
 * one happened (SPEC 7): notify-dev for Xen (7a), the primary QEMU's QMP monitor for KVM (7b).
 * The rule of one request per epoch ({@linkcode CheckpointRequests}) stays with the caller, so
 * both channels obey it the same way.
 *
 * @module
 */

/** Which controller protocol a channel speaks. */
export type ChannelKind = "notify-dev" | "qmp";

/** What a channel tells the comparator, after its own state has changed. */
export interface ChannelEvents {
  /**
   * A checkpoint completed (notify-dev: `COLO_CHECKPOINT`; QMP: `RESUME` after a `STOP` in run
   * state `colo`): flush, a new epoch starts. `stopped`: the VMs have not run again since they
   * stopped for it (notify-dev: libxl sends `COLO_CHECKPOINT` before it resumes the PVM), so
   * what the input sockets still hold was sent before, and is the epoch's that the flush ends.
   * QMP's `RESUME` says the VM runs; {@linkcode ChannelEvents.vmStopped} told of the stop.
   */
  checkpointDone(stopped: boolean): void;
  /**
   * COLO ended (QMP `COLO_EXIT`: failover, or the secondary lost): release everything held and
   * pass the primary through, uncompared, until {@linkcode ChannelEvents.coloActive}.
   */
  coloExit(reason: string): void;
  /** COLO is active (again): compare as usual. */
  coloActive(): void;
  /**
   * The primary VM stopped (QMP `STOP`: a checkpoint begins, or a user's stop), or runs again
   * (`RESUME`, or the monitor went away). While it is stopped nothing new comes: what is still
   * unread in the input sockets was sent before the stop and belongs to the epoch that the
   * checkpoint's flush ends (SPEC 7b), so the inputs must be read, not kept paused for their
   * lead. notify-dev tells of no stop, only of a checkpoint while stopped.
   */
  vmStopped(stopped: boolean): void;
  /** The controller peer connected or went away. */
  peer(connected: boolean): void;
}

/** A checkpoint channel: one controller peer, reconnected or re-accepted when it goes. */
export interface CheckpointChannel {
  readonly kind: ChannelKind;
  /** True while a peer is attached that can take a request. */
  readonly connected: boolean;
  /** Where it listens (port 0 resolved) or connects, for the log. */
  readonly boundText: string;
  /** Binds a listen address; throws a `StartupError` naming the flag when it cannot. */
  bind(): Promise<void>;
  /** Serves peers one at a time until {@linkcode CheckpointChannel.close}. */
  serve(): Promise<void>;
  /** Sends one checkpoint request now. False when no peer could take it. */
  request(): boolean;
  /** Stops: closes the peer and any listener, aborts a pending connect. Idempotent. */
  close(): void;
}
