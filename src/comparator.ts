/**
 * The running comparator: four endpoints around one compare engine. This layer owns all I/O:
 * reading and decoding the inputs, batching output, back-pressure, reconnection, the expiry
 * timer and the notify-dev protocol. The engine itself stays synchronous.
 *
 * @module
 */

import {
  CheckpointRequests,
  classifyNotify,
  COLO_COMPARE_GET_XEN_INIT,
  describeMessage,
  DO_CHECKPOINT,
} from "./checkpoint/notify.ts";
import {
  DEFAULT_CAPTURE_MAX_BYTES,
  type DivergenceCapture,
  openCapture,
} from "./capture/capture.ts";
import type { Config } from "./cli.ts";
import type { Connection } from "./compare/connection.ts";
import { CompareEngine } from "./compare/engine.ts";
import type {
  CheckpointReason,
  DiscardReason,
  EngineSink,
  ReleaseReason,
  Tracer,
} from "./compare/events.ts";
import type { Side } from "./compare/packet.ts";
import type { Logger } from "./log.ts";
import { Inside } from "./inside/inside.ts";
import type { Settings, Snapshot } from "./inside/view.ts";
import { FrameWriter } from "./output/writer.ts";
import { Stats } from "./stats.ts";
import { FrameDecoder, NET_BUFSIZE } from "./wire/codec.ts";
import { Endpoint, type EndpointName } from "./wire/endpoint.ts";

/** Bytes asked of the socket per read: many frames per read, one decode pass each. */
const READ_SIZE = 256 * 1024;
/** outdev: pause the inputs above this many unsent bytes, resume below the low mark. */
const OUT_HIGH_WATER = 4 * 1024 * 1024;
const OUT_LOW_WATER = 1024 * 1024;
/** outdev disconnected: released frames kept for the next peer. */
const OUT_MAX_BUFFERED = 32 * 1024 * 1024;
/** Held bytes per side above which that side's input pauses until comparison catches up. */
const HELD_HIGH_WATER = 64 * 1024 * 1024;
const HELD_LOW_WATER = 32 * 1024 * 1024;
/** A class of dropped frames is logged at once, then summarised at most this often. */
const DROP_LOG_INTERVAL_MS = 10_000;
/** Shutdown waits at most this long for outdev to take what was released. */
const SHUTDOWN_FLUSH_MS = 5_000;

const encoder = new TextEncoder();
const DO_CHECKPOINT_BYTES = encoder.encode(DO_CHECKPOINT);
const GET_XEN_INIT_BYTES = encoder.encode(COLO_COMPARE_GET_XEN_INIT);

interface DropClass {
  total: number;
  unlogged: number;
  loggedAt: number;
}

/** What {@linkcode Comparator.stop} reports. */
export interface StopReport {
  /** Frames still held and never compared when the comparator stopped. */
  heldPrimary: number;
  heldSecondary: number;
  /** Released frames that could not be written before exit. */
  unsentBytes: number;
}

/** One comparator instance: the program's whole runtime state. */
export class Comparator implements EngineSink {
  readonly config: Config;
  readonly stats = new Stats();
  readonly engine: CompareEngine;
  readonly #log: Logger;
  readonly #endpoints: Endpoint[] = [];
  readonly #primary: Endpoint;
  readonly #secondary: Endpoint;
  readonly #outdev: Endpoint;
  readonly #notify: Endpoint | null;
  readonly #out: FrameWriter;
  readonly #notifyOut: FrameWriter;
  readonly #requests: CheckpointRequests;
  readonly #drops = new Map<string, DropClass>();
  readonly #serving: Promise<void>[] = [];
  /** Arrival time stamped on every frame of the chunk being decoded. */
  #now = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  /** `expired-scan-cycle`, changeable at runtime through the monitor. */
  #scanCycle: number;
  #stopping = false;
  #started = false;
  #paused = { primary: false, secondary: false };
  #resume = { primary: [] as (() => void)[], secondary: [] as (() => void)[] };
  #heldHigh = { primary: false, secondary: false };
  /** `--capture`: opened at start; the engine's divergence hook exists only with it. */
  #capture: DivergenceCapture | null = null;
  divergence?: EngineSink["divergence"];
  /** `--metrics` / `--monitor`, or null when neither is given. */
  readonly #inside: Inside | null;

  constructor(config: Config, log: Logger) {
    this.config = config;
    this.#log = log;
    this.#scanCycle = config.expiredScanCycle;
    if (config.capture) {
      this.divergence = (reason, conn, primary, secondaries, now) =>
        this.#capture?.divergence(reason, conn, primary, secondaries, now);
    }
    const tracer: Tracer | null = log.enabled("trace")
      ? { trace: (name, fields) => log.trace(name, fields) }
      : null;
    this.engine = new CompareEngine(
      { compareTimeout: config.compareTimeout, maxQueueSize: config.maxQueueSize },
      this,
      tracer,
    );
    this.#requests = new CheckpointRequests(config.compareTimeout);
    this.#inside = Inside.wanted(config) ? new Inside(config, this.#insideHost(), log) : null;
    const ep = (name: EndpointName, a: Config["outdev"]) => {
      const e = new Endpoint(name, a, log);
      this.#endpoints.push(e);
      return e;
    };
    this.#primary = ep("primary-in", config.primaryIn);
    this.#secondary = ep("secondary-in", config.secondaryIn);
    this.#outdev = ep("outdev", config.outdev);
    this.#notify = config.notifyDev ? ep("notify-dev", config.notifyDev) : null;
    this.#out = new FrameWriter({
      vnet: config.vnetHdrSupport,
      highWater: OUT_HIGH_WATER,
      lowWater: OUT_LOW_WATER,
      maxBufferedDisconnected: OUT_MAX_BUFFERED,
      onOverflow: (n) => {
        this.stats.outdevOverflow += n;
        this.#noteDrop("outdev", "disconnected-overflow", null, n);
      },
      onDrained: () => this.#recheck(),
      onWriteError: (e) => log.warn("write-failed", { endpoint: "outdev", error: String(e) }),
    });
    this.#notifyOut = new FrameWriter({
      vnet: false,
      highWater: 64 * 1024,
      lowWater: 16 * 1024,
      maxBufferedDisconnected: 0,
      onWriteError: (e) => log.warn("write-failed", { endpoint: "notify-dev", error: String(e) }),
    });
  }

  /** Where each endpoint listens or connects (port 0 resolved once bound). */
  addresses(): Record<string, string> {
    const r: Record<string, string> = {};
    for (const e of this.#endpoints) r[e.name] = e.boundText;
    return r;
  }

  /**
   * Binds every listen endpoint, then starts serving. On a {@linkcode StartupError} nothing
   * is left listening.
   */
  async start(): Promise<void> {
    try {
      for (const e of this.#endpoints) await e.bind();
      const c = this.config;
      if (c.capture) {
        this.#capture = openCapture(
          c.capture,
          c.captureMaxBytes ?? DEFAULT_CAPTURE_MAX_BYTES,
          this.#log,
        );
      }
      await this.#inside?.start();
    } catch (error) {
      for (const e of this.#endpoints) e.close();
      await this.#capture?.close();
      throw error;
    }
    this.#started = true;
    for (const e of this.#endpoints) {
      if (e.address.listen) this.#log.info("listening", { endpoint: e.name, address: e.boundText });
      else this.#log.info("connecting", { endpoint: e.name, address: e.address.text });
    }
    this.#serving.push(
      this.#primary.serve((c) => this.#readInput("primary", c)),
      this.#secondary.serve((c) => this.#readInput("secondary", c)),
      this.#outdev.serve((c) => this.#serveOutdev(c)),
    );
    if (this.#notify) this.#serving.push(this.#notify.serve((c) => this.#serveNotify(c)));
    this.#timer = setInterval(() => this.#scan(), this.#scanCycle);
    const c = this.config;
    this.#log.info("ready", {
      compare_timeout_ms: c.compareTimeout,
      expired_scan_cycle_ms: c.expiredScanCycle,
      max_queue_size: c.maxQueueSize,
      vnet_hdr_support: c.vnetHdrSupport,
      notify_dev: c.notifyDev ? "on" : "off",
    });
  }

  /**
   * Graceful stop (SPEC 8): stop reading, send everything already released, report what was
   * held and never compared.
   */
  async stop(): Promise<StopReport> {
    if (this.#stopping || !this.#started) {
      return { heldPrimary: 0, heldSecondary: 0, unsentBytes: 0 };
    }
    this.#stopping = true;
    clearInterval(this.#timer);
    this.#primary.close();
    this.#secondary.close();
    this.#notify?.close();
    this.#wakeAll();
    let deadline: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#out.idle(),
      new Promise<void>((r) => deadline = setTimeout(r, SHUTDOWN_FLUSH_MS)),
    ]);
    clearTimeout(deadline);
    this.#outdev.close();
    await Promise.allSettled(this.#serving);
    if (this.#capture !== null) {
      await this.#capture.close().catch((e) =>
        this.#log.error("capture-write-failed", { error: String(e) })
      );
      this.#log.info("capture-closed", {
        divergences: this.#capture.captured,
        skipped: this.#capture.skipped,
        bytes: this.#capture.bytes,
      });
    }
    const uncompared = this.engine.uncompared();
    const report: StopReport = {
      heldPrimary: uncompared.primary,
      heldSecondary: uncompared.secondary,
      unsentBytes: this.#out.pendingBytes,
    };
    this.#flushDropLog(true);
    await this.#inside?.close();
    if (report.heldPrimary || report.heldSecondary) {
      this.#log.warn("held-at-exit", {
        primary: report.heldPrimary,
        secondary: report.heldSecondary,
        note: "never compared; not sent",
      });
    }
    if (report.unsentBytes) {
      this.#log.warn("unsent-at-exit", { endpoint: "outdev", bytes: report.unsentBytes });
    }
    this.#log.info("summary", this.stats.summary());
    return report;
  }

  // Inputs.

  async #readInput(side: Side, conn: Deno.Conn): Promise<void> {
    const engine = this.engine;
    const stats = this.stats;
    const decoder = new FrameDecoder(
      side === "primary"
        ? {
          onFrame: (f, v) => {
            stats.primaryIn++;
            engine.primary(f, v, this.#now);
          },
        }
        : {
          onFrame: (f, v) => {
            stats.secondaryIn++;
            engine.secondary(f, v, this.#now);
          },
        },
      this.config.vnetHdrSupport,
    );
    const buf = new Uint8Array(READ_SIZE);
    const name = side === "primary" ? "primary-in" : "secondary-in";
    this.#recheck();
    this.#inside?.onPeer(name, true);
    try {
      while (!this.#stopping) {
        if (this.#paused[side]) await this.#waitResume(side);
        if (this.#stopping) break;
        const n = await conn.read(buf);
        if (n === null) break;
        this.#now = performance.now();
        const broken = decoder.push(buf.subarray(0, n));
        // Released frames go out now, before the next read is even asked for.
        this.#out.flush();
        this.#recheck();
        if (broken) {
          this.stats.oversizeResets++;
          this.#log.error("oversize-frame", {
            endpoint: name,
            len: broken.len,
            max: NET_BUFSIZE,
            action: "connection reset; other streams go on",
          });
          return;
        }
      }
    } finally {
      if (decoder.midFrame && !this.#stopping) {
        this.#log.warn("partial-frame-lost", { endpoint: name });
      }
      this.#recheck();
      this.#inside?.onPeer(name, false);
    }
  }

  async #serveOutdev(conn: Deno.Conn): Promise<void> {
    this.#out.attach(conn);
    this.#inside?.onPeer("outdev", true);
    try {
      // The peer sends nothing; reading tells us when it goes away.
      const sink = new Uint8Array(4096);
      while ((await conn.read(sink)) !== null);
    } catch {
      // reset by peer: gone all the same
    } finally {
      this.#out.detach(conn);
      this.#recheck();
      this.#inside?.onPeer("outdev", false);
    }
  }

  async #serveNotify(conn: Deno.Conn): Promise<void> {
    this.#notifyOut.attach(conn);
    this.#inside?.onPeer("notify-dev", true);
    const decoder = new FrameDecoder({ onFrame: (f) => this.#onNotify(f) }, false);
    const buf = new Uint8Array(4096);
    try {
      while (!this.#stopping) {
        const n = await conn.read(buf);
        if (n === null) break;
        this.#now = performance.now();
        const broken = decoder.push(buf.subarray(0, n));
        if (broken) {
          this.stats.oversizeResets++;
          this.#log.error("oversize-frame", {
            endpoint: "notify-dev",
            len: broken.len,
            max: NET_BUFSIZE,
            action: "connection reset",
          });
          return;
        }
      }
    } finally {
      this.#notifyOut.detach(conn);
      this.#inside?.onPeer("notify-dev", false);
    }
  }

  #onNotify(frame: Uint8Array): void {
    switch (classifyNotify(frame)) {
      case "proxy-init":
        this.#log.info("notify-proxy-init", { reply: COLO_COMPARE_GET_XEN_INIT });
        this.#notifyOut.write(GET_XEN_INIT_BYTES, 0);
        break;
      case "checkpoint":
        this.#checkpointDone("notify-dev");
        break;
      default:
        this.#log.warn("notify-unknown", { message: describeMessage(frame), length: frame.length });
    }
  }

  /** A checkpoint completed (SPEC 7): flush, a new epoch starts. */
  #checkpointDone(by: string): void {
    this.stats.checkpointsReceived++;
    this.#requests.done();
    const before = this.stats.releasedByCheckpoint;
    const dropped = this.stats.secondaryFlushed;
    this.engine.checkpoint();
    this.#log.info("checkpoint-done", {
      by,
      released: this.stats.releasedByCheckpoint - before,
      secondary_dropped: this.stats.secondaryFlushed - dropped,
    });
    this.#inside?.onCheckpointDone(this.stats.checkpointsReceived, this.#now);
    this.#recheck();
  }

  // Seeing inside (SPEC 12): the comparator as metrics and the monitor see it.

  #insideHost() {
    // deno-lint-ignore no-this-alias
    const comparator = this;
    const engine = this.engine;
    const settings: Settings = {
      get compareTimeout() {
        return engine.compareTimeout;
      },
      set compareTimeout(ms: number) {
        engine.compareTimeout = ms;
      },
      get expiredScanCycle() {
        return comparator.#scanCycle;
      },
      set expiredScanCycle(ms: number) {
        comparator.#restartScan(ms);
      },
      get maxQueueSize() {
        return engine.maxQueueSize;
      },
      set maxQueueSize(n: number) {
        engine.maxQueueSize = n;
      },
      vnetHdrSupport: this.config.vnetHdrSupport,
      get endpoints() {
        return comparator.addresses();
      },
    };
    return {
      settings,
      snapshot: (): Snapshot => ({
        stats: this.stats,
        heldFrames: { primary: engine.heldPrimary, secondary: engine.heldSecondary },
        heldBytes: { primary: engine.heldPrimaryBytes, secondary: engine.heldSecondaryBytes },
        connections: engine.connections,
        paused: { ...this.#paused },
        peers: Object.fromEntries(this.#endpoints.map((e) => [e.name, e.connected])),
        epoch: this.stats.checkpointsReceived,
        checkpointOutstanding: this.#requests.outstanding,
      }),
      checkpointDone: () => {
        this.#now = performance.now();
        this.#checkpointDone("monitor");
        this.#out.flush();
      },
    };
  }

  /** A new `expired-scan-cycle`: as in QEMU, it applies from the next scan on. */
  #restartScan(ms: number): void {
    this.#scanCycle = ms;
    if (this.#timer === undefined || this.#stopping) return;
    clearInterval(this.#timer);
    this.#timer = setInterval(() => this.#scan(), ms);
  }

  // Back-pressure: an input pauses while outdev is congested, or while its own side holds
  // too much that the other side has not matched yet.

  #recheck(): void {
    const e = this.engine;
    const h = this.#heldHigh;
    if (h.primary ? e.heldPrimaryBytes < HELD_LOW_WATER : e.heldPrimaryBytes > HELD_HIGH_WATER) {
      h.primary = !h.primary;
    }
    if (
      h.secondary ? e.heldSecondaryBytes < HELD_LOW_WATER : e.heldSecondaryBytes > HELD_HIGH_WATER
    ) {
      h.secondary = !h.secondary;
    }
    const out = this.#out.congested;
    this.#setPaused("primary", out || (h.primary && this.#secondary.connected));
    this.#setPaused("secondary", out || (h.secondary && this.#primary.connected));
  }

  #setPaused(side: Side, paused: boolean): void {
    if (this.#paused[side] === paused) return;
    this.#paused[side] = paused;
    this.#log.debug(paused ? "input-paused" : "input-resumed", { side });
    if (!paused) {
      const w = this.#resume[side];
      this.#resume[side] = [];
      for (const f of w) f();
    }
  }

  #waitResume(side: Side): Promise<void> {
    return new Promise((r) => this.#resume[side].push(r));
  }

  #wakeAll(): void {
    for (const side of ["primary", "secondary"] as const) {
      const w = this.#resume[side];
      this.#resume[side] = [];
      for (const f of w) f();
    }
  }

  // The expiry scan.

  #scan(): void {
    this.engine.tick(performance.now());
    this.#flushDropLog(false);
  }

  // EngineSink.

  release(frame: Uint8Array, vnetLen: number, reason: ReleaseReason, arrivedAt?: number): void {
    if (arrivedAt !== undefined) this.#inside?.onReleased(arrivedAt, this.#now);
    if (reason === "compared") this.stats.releasedCompared++;
    else if (reason === "passthrough") this.stats.passedThrough++;
    else this.stats.releasedByCheckpoint++;
    this.#out.write(frame, vnetLen);
  }

  discard(side: Side, reason: DiscardReason, _frame: Uint8Array, conn: Connection | null): void {
    if (reason === "compared") {
      this.stats.secondaryCompared++;
      return;
    }
    if (reason === "checkpoint") {
      this.stats.secondaryFlushed++;
      return;
    }
    this.stats.drop(side, reason);
    this.#noteDrop(side, reason, conn, 1);
  }

  checkpoint(reason: CheckpointReason, conn: Connection | null, now: number): void {
    this.stats.need(reason);
    const where = conn?.name ?? "-";
    if (!this.#requests.request(now)) {
      this.stats.checkpointsCoalesced++;
      this.#log.debug("checkpoint-coalesced", { reason, conn: where });
      return;
    }
    this.#inside?.onCheckpointRequested(reason, conn?.name ?? null, now);
    if (this.#notify === null) {
      this.stats.checkpointsRequested++;
      this.#log.info("checkpoint-request", { reason, conn: where, channel: "none" });
      return;
    }
    if (!this.#notifyOut.connected) {
      // Counted as outstanding all the same: the scan asks again after compare-timeout.
      this.stats.checkpointsUndelivered++;
      this.#log.warn("checkpoint-request-undelivered", {
        reason,
        conn: where,
        note: "notify-dev has no peer",
      });
      return;
    }
    this.stats.checkpointsRequested++;
    this.#notifyOut.write(DO_CHECKPOINT_BYTES, 0);
    this.#log.info("checkpoint-request", { reason, conn: where, channel: "notify-dev" });
  }

  // Dropped frames: one line per class, then a summary at most every 10 s.

  #noteDrop(side: string, reason: string, conn: Connection | null, n: number): void {
    const key = `${side}:${reason}`;
    let c = this.#drops.get(key);
    if (c === undefined) {
      c = { total: 0, unlogged: 0, loggedAt: this.#now };
      this.#drops.set(key, c);
      c.total += n;
      this.#inside?.onDrop(side as Side | "outdev", reason, n);
      this.#log.warn("frames-dropped", {
        side,
        reason,
        conn: conn?.name,
        count: n,
        note: `further drops of this class are summarised every ${DROP_LOG_INTERVAL_MS / 1000}s`,
      });
      return;
    }
    c.total += n;
    c.unlogged += n;
    this.#inside?.onDrop(side as Side | "outdev", reason, n);
  }

  #flushDropLog(final: boolean): void {
    const now = performance.now();
    for (const [key, c] of this.#drops) {
      if (c.unlogged === 0 || (!final && now - c.loggedAt < DROP_LOG_INTERVAL_MS)) continue;
      const [side, reason] = key.split(":");
      this.#log.warn("frames-dropped", { side, reason, count: c.unlogged, total: c.total });
      c.unlogged = 0;
      c.loggedAt = now;
    }
  }
}
