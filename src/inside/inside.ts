/**
 * Seeing inside (SPEC 12), wired in one place: `--metrics` and `--monitor` around a running
 * comparator. The composition root creates one {@linkcode Inside} when either flag is given,
 * implements {@linkcode InsideHost} and calls the `on...` methods as things happen; with
 * neither flag it creates none and pays nothing.
 *
 * @module
 */

import type { Address } from "../wire/address.ts";
import type { CheckpointReason } from "../compare/events.ts";
import type { Side } from "../compare/packet.ts";
import type { Logger } from "../log.ts";
import { type Histograms, renderMetrics } from "../metrics/exposition.ts";
import { Histogram } from "../metrics/histogram.ts";
import { type MetricsServer, serveMetrics } from "../metrics/server.ts";
import { MonitorServer } from "../monitor/server.ts";
import { type ComparatorView, EventHub, type Settings, type Snapshot } from "./view.ts";

/** What the composition root provides. */
export interface InsideHost {
  snapshot(): Snapshot;
  readonly settings: Settings;
  /** Flush as on `COLO_CHECKPOINT` (the monitor's `colo-compare-checkpoint-done`). */
  checkpointDone(): void;
}

/** The flags of SPEC 12 this module serves. */
export interface InsideOptions {
  metrics?: Address | null;
  monitor?: Address | null;
  /** The monitor's object id (default `colo-compare0`). */
  id?: string;
  /** Mode of a `unix-listen:` monitor socket (`--socket-mode`). */
  socketMode?: number;
}

/** Metrics and monitor of one comparator. */
export class Inside {
  readonly #options: InsideOptions;
  readonly #host: InsideHost;
  readonly #log: Logger;
  readonly #events = new EventHub();
  /** Filled only with `--metrics`. */
  readonly #histograms: Histograms | null;
  #requestedAt: number | null = null;
  #metrics: MetricsServer | null = null;
  #monitor: MonitorServer | null = null;

  constructor(options: InsideOptions, host: InsideHost, log: Logger) {
    this.#options = options;
    this.#host = host;
    this.#log = log;
    this.#histograms = options.metrics
      ? { holdTime: new Histogram(), checkpointRoundTrip: new Histogram() }
      : null;
  }

  /** True when any of `--metrics`, `--monitor` is given. */
  static wanted(options: InsideOptions): boolean {
    return Boolean(options.metrics || options.monitor);
  }

  /**
   * With `--metrics`, the histogram of hold times (seconds a released primary frame was held,
   * on the engine's clock): the composition root feeds it directly from the sink, once per
   * released frame; null without `--metrics`.
   */
  get holdTime(): Histogram | null {
    return this.#histograms?.holdTime ?? null;
  }

  /** The comparator as the monitor sees it. */
  get view(): ComparatorView {
    const host = this.#host;
    return {
      snapshot: () => host.snapshot(),
      settings: host.settings,
      checkpointDone: () => host.checkpointDone(),
      subscribe: (l) => this.#events.subscribe(l),
    };
  }

  /** Listens on the metrics and monitor addresses; throws a `StartupError` naming the flag. */
  async start(): Promise<void> {
    const o = this.#options;
    try {
      if (o.metrics) {
        const h = this.#histograms!;
        this.#metrics = await serveMetrics(
          o.metrics,
          () => renderMetrics(this.#host.snapshot(), h),
          this.#log,
          o.socketMode,
        );
      }
      if (o.monitor) {
        this.#monitor = new MonitorServer(this.view, o.id ?? "colo-compare0", this.#log);
        await this.#monitor.listen(o.monitor, o.socketMode);
      }
    } catch (error) {
      await this.close();
      throw error;
    }
  }

  async close(): Promise<void> {
    await this.#monitor?.close();
    await this.#metrics?.close();
    this.#monitor = this.#metrics = null;
  }

  /** A checkpoint request went out (or would have, with no channel); `now` monotonic ms. */
  onCheckpointRequested(reason: CheckpointReason, connection: string | null, now: number): void {
    this.#requestedAt ??= now;
    if (this.#events.active) this.#events.emit({ kind: "checkpoint-request", reason, connection });
  }

  /** A checkpoint completed (epoch is the new count); `now` on the same clock as the request. */
  onCheckpointDone(epoch: number, now: number): void {
    if (this.#requestedAt !== null) {
      this.#histograms?.checkpointRoundTrip.observe((now - this.#requestedAt) / 1000);
      this.#requestedAt = null;
    }
    if (this.#events.active) this.#events.emit({ kind: "checkpoint-done", epoch });
  }

  onPeer(endpoint: string, connected: boolean): void {
    if (this.#events.active) this.#events.emit({ kind: "peer", endpoint, connected });
  }

  onDrop(side: Side | "outdev", reason: string, count: number): void {
    if (this.#events.active) this.#events.emit({ kind: "drop", side, reason, count });
  }
}
