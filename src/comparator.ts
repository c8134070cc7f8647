/**
 * The running comparator: the composition root. It only wires one object per job, talking by
 * events: an endpoint per stream, an {@linkcode InputPump} per input, one
 * {@linkcode FlowControl} deciding pauses, the outdev {@linkcode FrameWriter}, the checkpoint
 * channel with the one-request-per-epoch rule, and the {@linkcode ComparatorSink} counting and
 * forwarding the engine's decisions. The engine itself stays synchronous.
 *
 * @module
 */

import {
  DEFAULT_CAPTURE_MAX_BYTES,
  type DivergenceCapture,
  openCapture,
} from "./capture/capture.ts";
import type { ChannelEvents, CheckpointChannel } from "./checkpoint/channel.ts";
import { CheckpointRequests } from "./checkpoint/notify.ts";
import { NotifyChannel } from "./checkpoint/notify_channel.ts";
import { QmpChannel } from "./checkpoint/qmp.ts";
import { type Config, MAX_TIMER_MS } from "./cli.ts";
import type { Connection } from "./compare/connection.ts";
import { CompareEngine } from "./compare/engine.ts";
import type { CheckpointReason, Tracer } from "./compare/events.ts";
import type { Side } from "./compare/packet.ts";
import { CompareClock } from "./flow/clock.ts";
import {
  FlowControl,
  heldMarks,
  LEAD_PAUSE_MS,
  type LongQueue,
  type PauseReason,
} from "./flow/control.ts";
import { PauseLog } from "./flow/pause_log.ts";
import { Inside, type InsideHost } from "./inside/inside.ts";
import type { Settings } from "./inside/view.ts";
import {
  BYTES_PER_TURN,
  InputPump,
  PARK,
  type ParkDecision,
  READ_NOW,
  TO_OP,
} from "./input/pump.ts";
import { ClassLog, type Logger, ThrottledWarning, writeFailedLines } from "./log.ts";
import { FrameWriter } from "./output/writer.ts";
import { ComparatorSink } from "./sink.ts";
import { Stats } from "./stats.ts";
import { type Address, usesTls } from "./wire/address.ts";
import { Endpoint, type EndpointName, settledWithin } from "./wire/endpoint.ts";
import { BLOCK_SIZE, BlockPool, READ_BLOCK_SIZE } from "./pool.ts";
import { PlainTransport } from "./wire/plain.ts";
import { deadPeerAfterMs, TcpTuner } from "./wire/keepalive.ts";
import { MallocTrimmer } from "./malloc.ts";
import type { ExecutablePages } from "./exec_pages.ts";
import { PollWait } from "./wire/poll_wait.ts";
import type { Conn, Transport } from "./wire/transport.ts";

/** outdev: pause the inputs above this many unsent bytes, resume below the low mark. */
const OUT_HIGH_WATER = 4 * 1024 * 1024;
const OUT_LOW_WATER = 1024 * 1024;
/** outdev disconnected: released frames kept for the next peer, in bytes and in age (SPEC 8). */
const OUT_MAX_BUFFERED = 32 * 1024 * 1024;
const OUT_MAX_AGE_MS = 10_000;
/** Repeating events are logged once per class, then summarised at most this often. */
const SUMMARY_INTERVAL_MS = 10_000;
/**
 * Checkpoint lines (requests, flushes, requests with no peer to take them) logged per
 * {@linkcode SUMMARY_INTERVAL_MS} at most, each kind; the rest are counted and summarised. A
 * controller checkpointing many times a second, or a peer reporting checkpoints in a loop, then
 * grows the log at a bounded rate (SPEC 8); the counters and the monitor's events miss none, and
 * `--log-level debug` shows every one.
 */
const CHECKPOINT_LINES_PER_INTERVAL = 50;
/**
 * How often the comparator looks at the anonymous RSS for a malloc trim (ms; src/malloc.ts):
 * often enough to trim within the compilers' burst at the first bulk traffic, which sets the
 * peak within a few hundred milliseconds. A look reads `/proc/self/status` through a descriptor
 * opened at start: microseconds.
 */
const TRIM_CHECK_MS = 100;
/**
 * Inputs read without an op, and park, only this long (ms) after the event loop last turned:
 * then they read through ops, and the loop turns for timers and the other sockets (SPEC 8).
 */
const PARK_BUDGET_MS = 2;
/**
 * After a TLS peer connects (its handshake runs node:tls's, node:crypto's and rustls's code
 * once), the executable's pages go back this long (ms) after it, once for a burst of
 * connects (src/exec_pages.ts); at once when every TLS endpoint has its peer.
 */
const PEER_RELEASE_DELAY_MS = 100;
/**
 * Releases after peer connects are at least this far apart (ms): a peer that reconnects in a
 * loop costs one release (0.3-0.8 ms) per interval at most.
 */
const PEER_RELEASE_INTERVAL_MS = 10_000;
/**
 * `--qmp-secondary`: the secondary's RESUME counts for a flush only if it was read at most this
 * long (ms) before the primary's. In a checkpoint it comes 35-40 ms before (lab, median); an
 * older one is no part of this checkpoint (a user's `cont`, a missed `STOP`).
 */
const MAX_SECONDARY_RESUME_LEAD_MS = 1000;
/** Shutdown waits at most this long for outdev to take what was released... */
const SHUTDOWN_FLUSH_MS = 5_000;
/** ...and no longer than this once outdev takes nothing (a peer that does not read). */
const SHUTDOWN_STALL_MS = 1_000;

/**
 * What an input reads at a time. 1 MiB where the kernel's loopback work is what it saves
 * (src/pool.ts, `READ_BLOCK_SIZE`) and the budget takes it: one read may be held whole before
 * flow control sees it, so it must stay a small part of `--max-held-bytes` (1 MiB reads under
 * a 1 MiB budget dropped 18,784 primary frames as memory-limit in a flow probe; none at 128
 * KiB). A TLS input reads what node:tls decrypted, in records of 16 KiB: a pool block, which
 * costs less memory (its 1 MiB reads took tcp-1000x100-tls's peak from 1.9x to 2.05x QEMU's).
 */
export function readSizeFor(input: Address, maxHeldBytes: number): number {
  return usesTls(input) || maxHeldBytes < 8 * READ_BLOCK_SIZE ? BLOCK_SIZE : READ_BLOCK_SIZE;
}

/** What {@linkcode Comparator.stop} reports. */
export interface StopReport {
  /** Frames still held and never compared when the comparator stopped. */
  heldPrimary: number;
  heldSecondary: number;
  /** Released frames that could not be written before exit. */
  unsentBytes: number;
}

/** A checkpoint request that went out (or would have, with no channel). */
export interface CheckpointRequestEvent {
  reason: CheckpointReason;
  conn: Connection | null;
  /** Whether a channel took it. */
  delivered: boolean;
}

/** A peer came or went on one endpoint. */
export interface PeerEvent {
  endpoint: EndpointName;
  connected: boolean;
  peer: string;
}

/** What monitors, metrics and captures can subscribe to. */
export interface ComparatorEvents {
  checkpointRequest?(event: CheckpointRequestEvent): void;
  peer?(event: PeerEvent): void;
  pause?(side: Side, paused: boolean, reason: PauseReason): void;
}

/** What a {@linkcode Comparator} is built with besides its config and logger. */
export interface ComparatorOptions {
  /**
   * The TLS transport (`TlsTransport` over `--tls-creds`, read at start); needed when any
   * address is `tls`. Built by the caller, so that a program without TLS never loads node:tls
   * and node:crypto (about 4 MiB of RSS, bench/README.md issue 11).
   */
  tls?: Transport | null;
  /**
   * The executable's read-only pages, given back with each malloc trim (src/exec_pages.ts); the
   * program's own, opened by main.ts (a comparator in a test leaves its runner's alone).
   */
  pages?: ExecutablePages | null;
  /** The engine's time (src/warmup.ts gives its comparators a faster one). */
  clock?: CompareClock;
  /**
   * How much the input pumps read before they make sure the event loop turns
   * (src/input/pump.ts; src/warmup.ts gives its comparators a smaller one).
   */
  bytesPerTurn?: number;
  /**
   * What each input reads at a time, instead of {@linkcode readSizeFor}'s choice (src/warmup.ts
   * gives its second comparator pool blocks).
   */
  readSize?: number | null;
  /**
   * Whether it trims malloc's free memory as its RSS grows (src/malloc.ts); default true.
   * src/warmup.ts's throwaway comparators do not: the warm-up trims after every 100 pairs.
   */
  trims?: boolean;
}

/** One comparator instance: the program's whole runtime state, wired. */
export class Comparator {
  readonly config: Config;
  readonly stats = new Stats();
  readonly engine: CompareEngine;
  readonly #log: Logger;
  readonly #classes: ClassLog;
  /** `checkpoint-request`, `checkpoint-done` (info) and `checkpoint-request-undelivered`. */
  readonly #checkpointLines: {
    request: ThrottledWarning;
    done: ThrottledWarning;
    undelivered: ThrottledWarning;
  };
  readonly #endpoints: Endpoint[] = [];
  readonly #primary: Endpoint;
  readonly #secondary: Endpoint;
  readonly #outdev: Endpoint;
  readonly #channel: CheckpointChannel | null;
  /** `--qmp-secondary`: the secondary QEMU's monitor, watched for its STOP and RESUME. */
  readonly #secondaryMonitor: QmpChannel | null = null;
  /** Compare-clock time the secondary's RESUME was read, until its STOP or the next flush. */
  #secondaryResumedAt: number | null = null;
  /** Endpoints served by a channel rather than here. */
  readonly #channelEndpoints: Endpoint[] = [];
  readonly #out: FrameWriter;
  /** Blocks shared by held frames and the outdev buffer (issue 11: a flush reuses them). */
  readonly #pool = new BlockPool();
  readonly #sink: ComparatorSink;
  readonly #flow: FlowControl;
  readonly #pumps: Record<Side, InputPump>;
  readonly #requests: CheckpointRequests;
  readonly #subscribers: ComparatorEvents[] = [];
  readonly #pauseLog: PauseLog;
  /** Writes to outdev that failed: a peer that connects and resets in a loop (SPEC 8). */
  readonly #writeFailedLines: ThrottledWarning;
  readonly #clock: CompareClock;
  readonly #leadTimers: Record<Side, ReturnType<typeof setTimeout> | undefined> = {
    primary: undefined,
    secondary: undefined,
  };
  readonly #serving: Promise<void>[] = [];
  #timer: ReturnType<typeof setInterval> | undefined;
  /** The malloc trimmer's looks, every {@linkcode TRIM_CHECK_MS}. */
  #trimTimer: ReturnType<typeof setInterval> | undefined;
  /** `expired-scan-cycle`; the monitor may change it at runtime. */
  #scanCycle: number;
  /** Seeing inside (SPEC 12): `--capture`, and `--metrics`/`--monitor` (null when off). */
  #capture: DivergenceCapture | null = null;
  readonly #inside: Inside | null;
  /**
   * Engine time of the chunk, scan or checkpoint being processed (for the hold-time metric).
   * `-0`, not `0`: a double from the start, which compares as 0. A field that starts as a small
   * integer and takes its first fractional time later changes its representation for the whole
   * class, and V8 drops the code compiled for the class's objects (bench/README.md, "Compiled
   * before listening"); the real comparator is made before the warm-up, whose first fractional
   * time would otherwise deprecate its map. Time fields that the warm-up does not reach start as
   * `-0` for the same reason.
   */
  #now = -0;
  #stopping = false;
  #started = false;
  readonly #tuner: TcpTuner | null;
  /** Gives malloc's free memory back (issue 11); null where glibc cannot be reached. */
  readonly #trimmer: MallocTrimmer | null;
  /** The executable's read-only pages, given back with each malloc trim (null: left alone). */
  readonly #pages: ExecutablePages | null;
  /** Polls the inputs for a moment before the event loop would sleep (src/wire/poll_wait.ts). */
  readonly #poll: PollWait | null;
  /**
   * An input's read waits for its socket: once neither input has anything queued to run and
   * outdev has nothing under way (whose completion would), the inputs are polled before the
   * event loop sleeps. Outdev's answer went out at once (`FrameWriter.flush`), so no write
   * completes later to start it.
   */
  readonly #inputsWait = (): void => {
    const poll = this.#poll;
    if (poll === null || this.#out.busy) return;
    if (this.#pumps.primary.idle && this.#pumps.secondary.idle) poll.settle();
  };
  /** The inputs' bits in the poller's readiness mask (0: not parked, not polled). */
  readonly #inputBits = { primary: 0, secondary: 0 };
  /** When the event loop last turned, as far as the inputs saw (`performance.now()`, ms). */
  #turnAt = -0;
  /** A poll found nothing: the inputs wait in ops until one has settled. */
  #noPark = false;
  /**
   * What input `side` does when its socket is empty after a small read (issue 11): a read op
   * that waits costs some 550 bytes of garbage and a turn of the event loop, a read of bytes
   * already there (`Conn.tryRecv`) neither. So while the other input has work queued, it parks
   * without an op; the input that comes to its read last polls both sockets for the poller's
   * window (src/wire/poll_wait.ts), unparks the other if that became readable, and reads at
   * once if it did itself. When neither did, both ask for their reads by op, and the event loop
   * sleeps. Not while outdev has a write under way (its completion is a turn of its own), nor
   * longer than {@linkcode PARK_BUDGET_MS} after the event loop last turned.
   */
  readonly #park = (side: Side): ParkDecision => {
    const poll = this.#poll;
    const other = this.#otherPump(side);
    const bit = this.#inputBits[side];
    if (
      poll === null || bit === 0 || this.#noPark || this.#out.busy ||
      performance.now() - this.#turnAt > PARK_BUDGET_MS
    ) {
      other.unpark();
      return TO_OP;
    }
    const otherBit = this.#inputBits[other.side];
    const withOther = otherBit !== 0;
    // The other reads next: this one waits for it to come to its own read and poll (an input
    // that does not park, or one paused, would not).
    if (!other.idle) return withOther && !other.paused ? PARK : TO_OP;
    const ready = poll.catchInputs();
    // Every operation below runs whatever the outcome: the warm-up, whose peers share this
    // thread, never sees an input become readable while it polls, and code first run under
    // traffic would be compiled again there (bench/README.md, "Cold start").
    // -1, no poll made (no window now, or an input holds bytes read already), tells nothing of
    // either socket: both read through ops. Taken as a mask, -1 had every bit set, and an input
    // whose peer's read waited in an op read "at once" again and again, finding nothing, with
    // the event loop kept from turning (and that op from settling) for the whole budget: 2 ms
    // pairs (bench/README.md, "What the slowest pairs wait for"). The mask is 0 for it, made
    // without a branch: the warm-up never catches an input, and a `&` it never ran would be
    // compiled again under traffic.
    const came = ready > 0;
    const mask = ready & ~(ready >> 31);
    const selfReady = (mask & bit) !== 0;
    const otherReady = (mask & otherBit) !== 0;
    if (!came) this.#noPark = ready === 0;
    // Nothing came: both go to their ops. The other came: it reads (or parks again).
    if (!came || otherReady) other.unpark();
    // Only the other came: it reads first (a read op of its that waited settles at the next
    // turn), this one waits for it.
    return selfReady ? READ_NOW : came && withOther ? PARK : TO_OP;
  };
  /** Input `side` asks for a read by op: the other, if parked, reads or parks anew. */
  readonly #reading = (side: Side): void => this.#otherPump(side).unpark();
  /** Whether an input may read without an op now: the event loop turned lately. */
  readonly #recvNow = (): boolean => performance.now() - this.#turnAt <= PARK_BUDGET_MS;
  /** A read waited for its socket: the event loop has turned. */
  readonly #turned = (): void => {
    this.#turnAt = performance.now();
    this.#noPark = false;
  };
  /** The release that follows peer connects, while it waits. */
  #peerRelease: ReturnType<typeof setTimeout> | undefined;
  /** When the last such release ran (`performance.now()` ms). */
  #peerReleasedAt = -Infinity;
  /** The endpoints with a TLS address (served or a channel's). */
  readonly #tlsEndpoints: Endpoint[] = [];
  /** Each input's connection while it is served. */
  readonly #inputConns: Record<Side, Conn | null> = { primary: null, secondary: null };

  /**
   * `options`: see {@linkcode ComparatorOptions}. The program's own comparator (main.ts) is
   * given `tls` and `pages`, the warm-up's throwaways their own clock and read sizes.
   */
  constructor(config: Config, log: Logger, options: ComparatorOptions = {}) {
    const {
      tls = null,
      pages = null,
      clock = new CompareClock(),
      bytesPerTurn = BYTES_PER_TURN,
      readSize = null,
      trims = true,
    } = options;
    this.config = config;
    this.#clock = clock;
    this.#log = log;
    this.#scanCycle = config.expiredScanCycle;
    this.#classes = new ClassLog(log, SUMMARY_INTERVAL_MS);
    const lines = (event: string, level: "info" | "warn") =>
      new ThrottledWarning(log, event, SUMMARY_INTERVAL_MS, undefined, {
        level,
        burst: CHECKPOINT_LINES_PER_INTERVAL,
        overflow: "debug",
      });
    this.#checkpointLines = {
      request: lines("checkpoint-request", "info"),
      done: lines("checkpoint-done", "info"),
      undelivered: lines("checkpoint-request-undelivered", "warn"),
    };
    this.#pauseLog = new PauseLog(log, this.stats, SUMMARY_INTERVAL_MS);
    this.#writeFailedLines = writeFailedLines(log, "outdev");
    // SPEC 11: dead peers within a minute. Opened now, while the ffi permission is granted
    // (the TLS transport the caller built uses the same shared tuner).
    this.#tuner = TcpTuner.shared();
    this.#pages = pages;
    this.#trimmer = !trims
      ? null
      : pages
      ? MallocTrimmer.open(() => this.#releasePages(pages), () => pages.anonymousRss())
      : MallocTrimmer.open();
    this.#poll = PollWait.open();
    const plain = new PlainTransport(config.socketMode, this.#tuner);
    const transport = (a: Address): Transport => {
      if (!usesTls(a)) return plain;
      if (!tls) throw new Error(`${a.text}: a tls address needs the --tls-creds credentials`);
      return tls;
    };
    this.#out = new FrameWriter({
      vnet: config.vnetHdrSupport,
      highWater: OUT_HIGH_WATER,
      lowWater: OUT_LOW_WATER,
      maxBufferedDisconnected: OUT_MAX_BUFFERED,
      maxAgeDisconnected: OUT_MAX_AGE_MS,
      onOverflow: (n) => this.#sink.outdevLost("disconnected-overflow", n),
      onExpired: (n) => this.#sink.outdevLost("too-old", n),
      onCongestion: (on) => {
        this.#clock.hold(on);
        this.#flow.outdev(on);
      },
      // A write cut off by the stop itself is no peer's failure: `unsent-at-exit` counts it.
      onWriteError: (e) => {
        if (!this.#stopping) this.#writeFailedLines.note({ error: String(e) });
      },
      idle: this.#poll,
      pool: this.#pool,
    });
    this.#sink = new ComparatorSink(
      this.stats,
      this.#out,
      this.#classes,
      (reason, conn, now) => this.#checkpointNeeded(reason, conn, now),
    );
    this.#inside = Inside.wanted(config) ? new Inside(config, this.#insideHost(), log) : null;
    this.#wireInside();
    const tracer: Tracer | null = log.enabled("trace")
      ? { trace: (name, fields) => log.trace(name, fields) }
      : null;
    this.engine = new CompareEngine(
      {
        compareTimeout: config.compareTimeout,
        maxQueueSize: config.maxQueueSize,
        maxHeldBytes: config.maxHeldBytes,
        pool: this.#pool,
      },
      this.#sink,
      tracer,
    );
    this.#requests = new CheckpointRequests(config.compareTimeout);
    this.#flow = new FlowControl(
      heldMarks(config.maxHeldBytes),
      (side, paused, reason) => this.#onPause(side, paused, reason),
    );
    this.#pumps = {
      primary: this.#pump("primary", bytesPerTurn, readSize),
      secondary: this.#pump("secondary", bytesPerTurn, readSize),
    };

    /** `served`: bound and served here (the channel's endpoint is served by the channel). */
    const endpoint = (name: EndpointName, address: Address, served = true) => {
      const e = new Endpoint(name, address, transport(address), log);
      const tls = usesTls(address);
      if (tls) this.#tlsEndpoints.push(e);
      e.onPeer((connected, peer) => {
        this.#emit((s) => s.peer?.({ endpoint: name, connected, peer }));
        if (connected && tls) this.#releaseAfterPeer();
      });
      if (served) this.#endpoints.push(e);
      else this.#channelEndpoints.push(e);
      return e;
    };
    this.#primary = endpoint("primary-in", config.primaryIn);
    this.#secondary = endpoint("secondary-in", config.secondaryIn);
    this.#outdev = endpoint("outdev", config.outdev);
    this.#primary.onPeer((c) => this.#flow.peer("primary", c));
    this.#secondary.onPeer((c) => this.#flow.peer("secondary", c));

    // The checkpoint channel (SPEC 7): QMP for KVM COLO, notify-dev for Xen, or none. Its
    // endpoint is served by the channel; the session logs COLO's transitions itself.
    const events: ChannelEvents = {
      checkpointDone: (stopped) => this.#checkpointArrived(stopped),
      coloExit: () => this.#coloExit(),
      coloActive: () => this.engine.setPassthrough(false),
      vmStopped: (stopped) => this.#flow.vmsStopped(stopped),
      peer: () => {},
    };
    if (config.qmp) {
      const e = endpoint("qmp", config.qmp, false);
      this.#channel = new QmpChannel(e, events, log);
      if (config.qmpSecondary) {
        this.#secondaryMonitor = QmpChannel.watcher(
          endpoint("qmp-secondary", config.qmpSecondary, false),
          {
            stopped: () => this.#secondaryResumedAt = null,
            resumed: () => {
              this.#secondaryResumedAt = this.#clock.now();
              log.debug("secondary-resumed", { at_ms: Math.round(this.#secondaryResumedAt) });
            },
          },
          () => this.#secondaryResumedAt = null,
          log,
        );
      }
    } else if (config.notifyDev) {
      const e = endpoint("notify-dev", config.notifyDev, false);
      this.#channel = new NotifyChannel(
        e,
        events,
        log,
        this.#classes,
        () => this.stats.controlPeersDropped++,
      );
    } else this.#channel = null;
  }

  #pump(side: Side, bytesPerTurn: number, size: number | null): InputPump {
    const engine = this.engine;
    const stats = this.stats;
    const address = side === "primary" ? this.config.primaryIn : this.config.secondaryIn;
    const readSize = size ?? readSizeFor(address, this.config.maxHeldBytes);
    // A queue grew long with this frame: the pump stops decoding its read for flow control.
    const grewLong = () => {
      engine.queueGrewLong = false;
      this.#flow.newLead(side);
      return true;
    };
    const frame = side === "primary"
      ? (bytes: Uint8Array, at: number, size: number, v: number, now: number) => {
        stats.primaryIn++;
        engine.primaryAt(bytes, at, size, v, now);
        return engine.queueGrewLong && grewLong();
      }
      : (bytes: Uint8Array, at: number, size: number, v: number, now: number) => {
        stats.secondaryIn++;
        engine.secondaryAt(bytes, at, size, v, now);
        return engine.queueGrewLong && grewLong();
      };
    const vnet = this.config.vnetHdrSupport;
    const internalError = (error: unknown) => {
      // The read may end here: what it left held or released must not stay in its buffer.
      engine.keepHeld();
      this.#out.flush();
      this.#sink.internalError(`${side}-in`, error);
    };
    // Frames taken without being handed over one by one (`CompareEngine.takeRun`).
    const run = (bytes: Uint8Array, at: number, end: number, now: number) => {
      let to;
      try {
        to = engine.takeRun(side, bytes, at, end, vnet, now);
      } catch (error) {
        // The frame it failed on is lost, as one `frame` fails on; the rest go on.
        internalError(error);
        to = engine.runEnd;
      }
      if (side === "primary") stats.primaryIn += engine.runFrames;
      else stats.secondaryIn += engine.runFrames;
      return to;
    };
    return new InputPump(
      side,
      vnet,
      {
        // The arrival time of a chunk's frames, kept for the hold time of what they release.
        now: () => {
          this.#poll?.arrived();
          // What the chunk releases goes out with `chunk`'s flush, not with a task of its own.
          this.#out.defer();
          return this.#now = this.#clock.now();
        },
        frame,
        run,
        chunk: () => {
          // Held frames leave the read buffer before it is reused, or keep it when they fill it
          // (the pump then reads into another block); released frames are copied out of it too
          // and go out now, before the next read is even asked for.
          const kept = engine.keepHeldInPlace();
          this.#out.flush();
          this.#heldChanged();
          return kept;
        },
        decide: () => this.#heldChanged(),
        buffer: () => engine.readBuffer(readSize),
        internalError,
        oversize: () => this.stats.oversizeResets++,
        waiting: this.#inputsWait,
        park: this.#park,
        recvNow: this.#recvNow,
        reading: this.#reading,
        turned: this.#turned,
      },
      this.#log,
      bytesPerTurn,
    );
  }

  /** Subscribes to checkpoint requests, peer changes and pauses. */
  subscribe(events: ComparatorEvents): void {
    this.#subscribers.push(events);
  }

  #emit(f: (s: ComparatorEvents) => void): void {
    for (const s of this.#subscribers) f(s);
  }

  /** True while `side`'s input is paused. */
  paused(side: Side): boolean {
    return this.#flow.paused(side);
  }

  /** Where each endpoint listens or connects (port 0 resolved once bound). */
  addresses(): Record<string, string> {
    const r: Record<string, string> = {};
    for (const e of this.#endpoints) r[e.name] = e.boundText;
    if (this.#channel) r[this.#channel.kind] = this.#channel.boundText;
    if (this.#secondaryMonitor) r["qmp-secondary"] = this.#secondaryMonitor.boundText;
    return r;
  }

  /**
   * Binds every listen endpoint, opens the capture and starts the inside servers, and logs the
   * addresses; nothing is accepted or read until {@linkcode Comparator.start}: a peer that
   * connects meanwhile waits in the kernel's queue (main.ts binds before its warm-up). On a
   * `StartupError` nothing is left listening.
   */
  async bind(): Promise<void> {
    if (this.#started) return;
    try {
      for (const e of this.#endpoints) await e.bind();
      await this.#channel?.bind();
      await this.#secondaryMonitor?.bind();
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
      this.#channel?.close();
      this.#secondaryMonitor?.close();
      await this.#capture?.close();
      throw error;
    }
    this.#started = true;
    for (const e of this.#endpoints) this.#logAddress(e.name, e.address, e.boundText);
    for (const e of this.#channelEndpoints) this.#logAddress(e.name, e.address, e.boundText);
  }

  /**
   * Binds (unless {@linkcode Comparator.bind} did), then starts serving. On a `StartupError`
   * nothing is left listening.
   */
  async start(): Promise<void> {
    await this.bind();
    if (this.#serving.length > 0 || this.#stopping) return;
    this.#serving.push(
      this.#primary.serve((c) => this.#runInput("primary", c)),
      this.#secondary.serve((c) => this.#runInput("secondary", c)),
      this.#outdev.serve((c) => this.#serveOutdev(c)),
    );
    if (this.#channel) this.#serving.push(this.#channel.serve());
    if (this.#secondaryMonitor) this.#serving.push(this.#secondaryMonitor.serve());
    // The warm-up before this grew the RSS and gave back what it left: the first trim check
    // (two seconds after start) trimmed nonetheless, under the first traffic, and gave the
    // executable's pages back just as the hot path ran them (bench/README.md, "The generator
    // warmed before the cold row").
    this.#trimmer?.rebase();
    const trimmer = this.#trimmer;
    if (trimmer !== null) {
      this.#trimTimer = setInterval(
        () => trimmer.maybeTrim().catch((e) => this.#sink.internalError("malloc-trim", e)),
        TRIM_CHECK_MS,
      );
    }
    this.#startScans(this.#scanCycle);
    const c = this.config;
    this.#log.info("ready", {
      compare_timeout_ms: c.compareTimeout,
      expired_scan_cycle_ms: c.expiredScanCycle,
      max_queue_size: c.maxQueueSize,
      max_held_bytes: c.maxHeldBytes,
      vnet_hdr_support: c.vnetHdrSupport,
      notify_dev: c.notifyDev ? "on" : "off",
      checkpoint_channel: this.#channel?.kind ?? "none",
      dead_peer_after_s: this.#tuner ? deadPeerAfterMs(this.#tuner.timing) / 1000 : "kernel",
    });
    if (this.#tuner === null) this.#log.info("keepalive-timing", { note: TcpTuner.unavailable });
    if (this.#channel === null) {
      this.#log.warn("no-checkpoint-channel", {
        note: "divergent output stays held until a checkpoint that never comes; " +
          "give --qmp (KVM COLO) or --notify-dev (Xen COLO)",
      });
    }
  }

  #logAddress(name: string, address: Address, bound: string): void {
    if (address.listen) this.#log.info("listening", { endpoint: name, address: bound });
    else this.#log.info("connecting", { endpoint: name, address: address.text });
  }

  /**
   * Graceful stop (SPEC 8): stop reading, send everything already released, report what was
   * held and never compared. Prompt even while a connect is pending (it is aborted).
   */
  async stop(): Promise<StopReport> {
    if (this.#stopping || !this.#started) {
      return { heldPrimary: 0, heldSecondary: 0, unsentBytes: 0 };
    }
    this.#stopping = true;
    clearInterval(this.#timer);
    clearInterval(this.#trimTimer);
    clearTimeout(this.#leadTimers.primary);
    clearTimeout(this.#leadTimers.secondary);
    clearTimeout(this.#peerRelease);
    this.#pumps.primary.stop();
    this.#pumps.secondary.stop();
    this.#primary.close();
    this.#secondary.close();
    this.#channel?.close();
    this.#secondaryMonitor?.close();
    const cut = await this.#drainOutdev();
    this.#outdev.close();
    await Promise.allSettled(this.#serving);
    await this.#trimmer?.settled();
    const uncompared = this.engine.uncompared();
    const report: StopReport = {
      heldPrimary: uncompared.primary,
      heldSecondary: uncompared.secondary,
      unsentBytes: this.#out.unsentBytes,
    };
    this.#flushLogs(true);
    await this.#closeInside();
    if (report.heldPrimary || report.heldSecondary) {
      this.#log.warn("held-at-exit", {
        primary: report.heldPrimary,
        secondary: report.heldSecondary,
        note: "never compared; not sent",
      });
    }
    if (report.unsentBytes) {
      this.#log.warn("unsent-at-exit", {
        endpoint: "outdev",
        bytes: report.unsentBytes,
        reason: cut ?? "outdev gone",
      });
    }
    this.#log.info("summary", {
      ...this.stats.summary(),
      held_primary_bytes: this.engine.heldPrimaryBytes,
      held_secondary_bytes: this.engine.heldSecondaryBytes,
      connections: this.engine.connections,
      malloc_trims: this.#trimmer?.trims ?? "off",
      executable_releases: this.#pages?.releases ?? "off",
      input_polls: this.#poll
        ? `${this.#poll.caught}/${this.#poll.caught + this.#poll.missed}`
        : "off",
      // Reads made without Deno's op: request-and-answer traffic reads most of its frames so.
      input_reads_at_once: this.#pumps.primary.readsAtOnce + this.#pumps.secondary.readsAtOnce,
    });
    return report;
  }

  /**
   * Waits for outdev to take what was released (SPEC 8): as long as it keeps taking, up to
   * {@linkcode SHUTDOWN_FLUSH_MS}, but a peer that takes nothing for
   * {@linkcode SHUTDOWN_STALL_MS} is not waited for. Why it stopped waiting, or null when
   * everything went (or outdev has no peer).
   */
  async #drainOutdev(): Promise<string | null> {
    const out = this.#out;
    const idle = out.idle();
    const deadline = performance.now() + SHUTDOWN_FLUSH_MS;
    for (let untaken = out.untakenBytes;;) {
      const left = deadline - performance.now();
      if (left <= 0) return `flush bound of ${SHUTDOWN_FLUSH_MS} ms`;
      if (await settledWithin(idle, Math.min(SHUTDOWN_STALL_MS, left))) return null;
      const now = out.untakenBytes;
      if (now >= untaken) return `outdev took nothing for ${SHUTDOWN_STALL_MS} ms`;
      untaken = now;
    }
  }

  /** Serves an input peer, its socket polled before the event loop sleeps while it is on. */
  async #runInput(side: Side, conn: Conn): Promise<void> {
    const fd = conn.fd;
    const watched = fd !== undefined && this.#poll !== null &&
      this.#poll.watch(fd, conn.pending?.bind(conn) ?? null);
    this.#parks[side] = watched && conn.settlesOnTurn ? fd : -1;
    this.#rebit();
    this.#inputConns[side] = conn;
    try {
      await this.#pumps[side].run(conn);
    } finally {
      this.#inputConns[side] = null;
      this.#parks[side] = -1;
      if (watched) this.#poll!.unwatch(fd);
      this.#rebit();
      this.#otherPump(side).unpark();
    }
  }

  /** The pump of the input that is not `side`. */
  #otherPump(side: Side): InputPump {
    return this.#pumps[side === "primary" ? "secondary" : "primary"];
  }

  /** The descriptors of the inputs that may park (-1: none). */
  readonly #parks = { primary: -1, secondary: -1 };

  /** The inputs' bits after a watch or an unwatch (which moves another's). */
  #rebit(): void {
    const poll = this.#poll;
    for (const side of ["primary", "secondary"] as const) {
      const fd = this.#parks[side];
      this.#inputBits[side] = poll === null || fd < 0 ? 0 : poll.bitOf(fd);
    }
  }

  // outdev: the writer sends; reading only tells when the peer goes away.

  async #serveOutdev(conn: Conn): Promise<void> {
    this.#out.attach(conn);
    try {
      const sink = new Uint8Array(4096);
      while (await conn.read(sink));
    } catch {
      // reset by peer: gone all the same
    } finally {
      this.#out.detach(conn);
    }
  }

  // Flow control: the pumps do what it decides; the pause log says so.

  #heldChanged(): void {
    const engine = this.engine;
    const p = engine.heldPrimaryBytes;
    const s = engine.heldSecondaryBytes;
    if (p + s > this.stats.heldBytesPeak) this.stats.heldBytesPeak = p + s;
    // Against the budget, each frame costs its bookkeeping too (HELD_FRAME_COST).
    this.#flow.held(
      p,
      s,
      this.#longQueue("primary"),
      this.#longQueue("secondary"),
      engine.heldCost("primary"),
      engine.heldCost("secondary"),
    );
  }

  /** Whether `side` has a long queue, and where (see {@linkcode LongQueue}). */
  #longQueue(side: Side): LongQueue {
    const engine = this.engine;
    if (!engine.longQueue(side)) return "none";
    return engine.longQueueMatched(side) ? "matched" : "unmatched";
  }

  #onPause(side: Side, paused: boolean, reason: PauseReason): void {
    if (paused) this.#pumps[side].pause();
    else this.#pumps[side].resume();
    clearTimeout(this.#leadTimers[side]);
    if (paused && reason === "ahead") this.#armLead(side, this.#clock.now());
    this.#pauseLog.change(side, paused, reason, {
      held_bytes: side === "primary"
        ? this.engine.heldPrimaryBytes
        : this.engine.heldSecondaryBytes,
      outdev_pending_bytes: this.#out.pendingBytes,
    });
    this.#emit((s) => s.pause?.(side, paused, reason));
  }

  /**
   * A side paused for running ahead reads on once the other side has read nothing for
   * {@linkcode LEAD_PAUSE_MS}: while the other side reads, it is catching up, and reading on
   * would only overflow a queue (QEMU's rule then drops the primary's frames). A timer that
   * fires late says this process did not run (a loaded host): the other side could not read
   * either, so the pause goes on. So it does while a checkpoint asked for is on its way to a
   * connected controller: the flush settles what the side is ahead with, and reading on
   * meanwhile only fills its queues (the flood: both sides full, 34 MiB, at each request).
   * Never longer than compare-timeout from the pause, however the other side reads (a
   * secondary that sends on, but never what is held, must not stall the primary).
   */
  #armLead(side: Side, pausedAt: number): void {
    const stats = this.stats;
    const otherIn = () => side === "primary" ? stats.secondaryIn : stats.primaryIn;
    const readBefore = otherIn();
    const due = performance.now() + LEAD_PAUSE_MS;
    this.#leadTimers[side] = setTimeout(() => {
      const wait = this.#clock.now() - pausedAt < this.engine.compareTimeout && (
        otherIn() !== readBefore ||
        performance.now() - due > LEAD_PAUSE_MS / 2 ||
        (this.#requests.outstanding && this.#channel?.connected === true)
      );
      if (wait) this.#armLead(side, pausedAt);
      else {
        this.#flow.checkpointPending(false);
        this.#flow.leadTimeout(side);
      }
    }, LEAD_PAUSE_MS);
  }

  // The expiry scan.

  #scan(): void {
    this.#turnAt = performance.now();
    const now = this.#now = this.#clock.now();
    try {
      this.engine.tick(now);
    } catch (error) {
      this.#sink.internalError("expiry-scan", error);
    }
    this.#pool.trim(now);
    this.#out.flush();
    this.#heldChanged();
    this.#flushLogs();
  }

  /**
   * Logs the counts of what the summarised and throttled lines left out, once their interval
   * is over (at once: `final`, at the stop).
   */
  #flushLogs(final = false): void {
    this.#classes.flush(final);
    this.#pauseLog.flush(final);
    const lines = this.#checkpointLines;
    lines.request.flush(final);
    lines.done.flush(final);
    lines.undelivered.flush(final);
    this.#writeFailedLines.flush(final);
    for (const e of this.#endpoints) e.flushLogs(final);
    for (const e of this.#channelEndpoints) e.flushLogs(final);
  }

  /**
   * Once a TLS peer has connected, the code of its handshake (about 6 MiB of the executable in
   * the TLS bench rows) is not run again until the next: its pages go back shortly after, when
   * the connects of a start are done. Not after a plain peer: what connected it is a few pages,
   * and the release would take the hot path's code too, just as the first frames run it (the
   * first pairs after start then waited for page faults: bench/README.md, "The release after
   * peers connect, only for TLS peers"). main.ts gave back what the start used already.
   */
  #releaseAfterPeer(): void {
    const pages = this.#pages;
    if (pages === null) return;
    // Once every TLS endpoint has its peer, no handshake is left to wait for: the pages go back
    // before the traffic's own growth (V8's compilers, buffers) adds to them. 100 ms later, that
    // moment was the peak of the TLS bench rows (bench/README.md, "The release once every TLS
    // peer is there").
    const all = this.#tlsEndpoints.every((e) => e.connected);
    if (this.#peerRelease !== undefined) {
      if (!all) return;
      clearTimeout(this.#peerRelease);
    }
    const wait = Math.max(
      all ? 0 : PEER_RELEASE_DELAY_MS,
      this.#peerReleasedAt + PEER_RELEASE_INTERVAL_MS - performance.now(),
    );
    this.#peerRelease = setTimeout(() => {
      this.#peerRelease = undefined;
      this.#peerReleasedAt = performance.now();
      this.#releasePages(pages);
    }, wait);
  }

  /** With a malloc trim: the executable's pages the program no longer reads go back too. */
  #releasePages(pages: ExecutablePages): void {
    try {
      const { refused } = pages.release();
      if (refused > 0) this.#log.warn("executable-pages", { refused });
    } catch (error) {
      this.#sink.internalError("executable-pages", error);
    }
  }

  // Checkpoints: one request per epoch, whatever the channel (SPEC 7).

  #checkpointNeeded(reason: CheckpointReason, conn: Connection | null, now: number): void {
    const where = conn?.name ?? "-";
    if (!this.#requests.request(now)) {
      this.stats.checkpointsCoalesced++;
      this.#log.debug("checkpoint-coalesced", { reason, conn: where });
      return;
    }
    const channel = this.#channel;
    let delivered = false;
    if (channel === null) {
      this.stats.checkpointsRequested++;
      this.#checkpointLines.request.note({ reason, conn: where, channel: "none" });
    } else if (!channel.request()) {
      // Counted as outstanding all the same: the scan asks again after compare-timeout.
      this.stats.checkpointsUndelivered++;
      this.#checkpointLines.undelivered.note({
        reason,
        conn: where,
        note: `${channel.kind} has no peer`,
      });
    } else {
      delivered = true;
      this.#flow.checkpointPending(true);
      this.stats.checkpointsRequested++;
      this.#checkpointLines.request.note({ reason, conn: where, channel: channel.kind });
    }
    this.#emit((s) => s.checkpointRequest?.({ reason, conn, delivered }));
  }

  /** COLO ended (SPEC 7b): everything held goes out, the primary passes through uncompared. */
  #coloExit(): void {
    this.#requests.done();
    this.#flow.checkpointPending(false);
    try {
      this.engine.setPassthrough(true);
    } catch (error) {
      this.#sink.internalError("colo-exit", error);
    }
    this.#out.flush();
    this.#heldChanged();
  }

  /**
   * The controller says a checkpoint happened (SPEC 7): flush. What an input's socket still
   * holds then, and what it read and has not decoded yet, may have been sent before the VMs
   * stopped for it: read as the next epoch's, a primary frame of it would wait for a copy the
   * secondary, restored from the primary's state, never sends, and go out with the checkpoint
   * a timeout asks for seconds later (QEMU, which reads its inputs whenever they are readable,
   * releases it with the flush). So that much of each such input is the epoch's tail: its
   * primary frames go out as they are read and its secondary frames are dropped, as the flush
   * would have done, without being held first. `stopped` (notify-dev): the VMs have not run
   * since, and every input's unread bytes are the old epoch's. Over QMP the VM runs again when
   * `RESUME` is read, and an input that read on through the stop (`vmStopped`) has only new
   * bytes there; an input that was paused (outdev, held bytes) could not, and its are old.
   */
  #checkpointArrived(stopped: boolean): void {
    const primary = this.#oldUnread("primary", stopped);
    const secondary = this.#oldUnread("secondary", stopped);
    const tails = {
      primary: this.#hasTail("primary", primary),
      secondary: this.#hasTail("secondary", secondary),
    };
    const tail = tails.primary || tails.secondary;
    this.#checkpointDone(
      tail ? { unread_primary_bytes: primary ?? 0, unread_secondary_bytes: secondary ?? 0 } : null,
    );
    if (tails.primary) this.#epochTail("primary", primary!);
    if (tails.secondary) this.#epochTail("secondary", secondary!);
  }

  /**
   * The bytes of input `side` that are the old epoch's (see `#checkpointArrived`): what its
   * socket holds (-1: unknown, a socket whose descriptor was not found), or null when none can
   * be.
   */
  #oldUnread(side: Side, stopped: boolean): number | null {
    const conn = this.#inputConns[side];
    if (conn === null || !(stopped || this.#flow.paused(side))) return null;
    return conn.unread?.() ?? -1;
  }

  /** Whether input `side` has a tail: bytes in its socket, or a read not decoded yet. */
  #hasTail(side: Side, unread: number | null): boolean {
    // An input that waits on its socket has nothing read and undecoded.
    return unread !== null && (unread > 0 || !this.#pumps[side].idle);
  }

  /** Input `side`'s next `unread` bytes, and what it read and has not decoded, are the tail. */
  #epochTail(side: Side, unread: number): void {
    const engine = this.engine;
    engine.epochTail(side, true);
    this.#pumps[side].mark(Math.max(unread, 0), () => engine.epochTail(side, false));
  }

  /** Flushes: a new epoch starts. `extra`: fields for its log line. */
  #checkpointDone(extra: Record<string, number> | null = null): void {
    this.#now = this.#clock.now();
    this.stats.checkpointsReceived++;
    const outstanding = this.#requests.outstanding;
    this.#requests.done();
    this.#flow.checkpointPending(false);
    const released = this.stats.releasedByCheckpoint;
    const dropped = this.stats.secondaryFlushed;
    let kept = 0;
    try {
      kept = this.engine.checkpoint(undefined, this.#secondaryCutoff());
      this.stats.secondaryKeptAtFlush += kept;
    } catch (error) {
      this.#sink.internalError("checkpoint", error);
    }
    const fields = {
      channel: this.#channel?.kind ?? "none",
      released: this.stats.releasedByCheckpoint - released,
      secondary_dropped: this.stats.secondaryFlushed - dropped,
      ...(this.#secondaryMonitor ? { secondary_kept: kept } : {}),
      requested: outstanding,
      ...extra,
    };
    // Periodic checkpoints that change nothing are routine: debug only. A tail is news.
    if (outstanding || fields.released || fields.secondary_dropped || extra !== null) {
      this.#checkpointLines.done.note(fields);
    } else this.#log.debug("checkpoint-done", fields);
    this.#out.flush();
    this.#heldChanged();
    this.#inside?.onCheckpointDone(this.stats.checkpointsReceived, performance.now());
  }

  /**
   * `--qmp-secondary`: secondary frames read after this time are the new epoch's and survive
   * the flush; null (drop them all, SPEC 7b) unless the secondary's RESUME of this checkpoint
   * was read. Each RESUME serves one flush.
   */
  #secondaryCutoff(): number | null {
    const at = this.#secondaryResumedAt;
    this.#secondaryResumedAt = null;
    if (at === null || this.#now - at > MAX_SECONDARY_RESUME_LEAD_MS) return null;
    return at;
  }

  // Seeing inside (SPEC 12): capture, metrics and monitor, each only when asked for.

  /** Hooks the capture and the metrics into the sink and subscribes the monitor's events. */
  #wireInside(): void {
    if (this.config.capture) {
      this.#sink.divergence = (reason, conn, primary, secondaries, now) =>
        this.#capture?.divergence(reason, conn, primary, secondaries, now);
    }
    const inside = this.#inside;
    if (inside === null) return;
    const holdTime = inside.holdTime;
    if (holdTime !== null) {
      this.#sink.onHeldRelease = (arrivedAt) => holdTime.observe((this.#now - arrivedAt) / 1000);
    }
    this.#sink.onLost = (side, reason, frames) => inside.onDrop(side, reason, frames);
    this.subscribe({
      checkpointRequest: (e) =>
        inside.onCheckpointRequested(e.reason, e.conn?.name ?? null, performance.now()),
      peer: (e) => inside.onPeer(e.endpoint, e.connected),
    });
  }

  async #closeInside(): Promise<void> {
    await this.#inside?.close();
    const capture = this.#capture;
    if (capture === null) return;
    await capture.close().catch((e) =>
      this.#log.error("capture-write-failed", { error: String(e) })
    );
    this.#log.info("capture-closed", {
      divergences: capture.captured,
      skipped: capture.skipped,
      bytes: capture.bytes,
      ...(capture.broken
        ? { note: "writing failed (logged then): not all of it is in the file" }
        : {}),
    });
  }

  /** The comparator as metrics and the monitor see it: a snapshot, settings, a flush. */
  #insideHost(): InsideHost {
    // deno-lint-ignore no-this-alias
    const comparator = this;
    const settings: Settings = {
      get compareTimeout() {
        return comparator.engine.compareTimeout;
      },
      set compareTimeout(ms: number) {
        comparator.engine.compareTimeout = ms;
        comparator.#requests.retryAfterMs = ms;
      },
      get expiredScanCycle() {
        return comparator.#scanCycle;
      },
      set expiredScanCycle(ms: number) {
        comparator.#restartScan(ms);
      },
      get maxQueueSize() {
        return comparator.engine.maxQueueSize;
      },
      set maxQueueSize(n: number) {
        comparator.engine.maxQueueSize = n;
      },
      vnetHdrSupport: this.config.vnetHdrSupport,
      get endpoints() {
        return comparator.addresses();
      },
    };
    return {
      settings,
      snapshot: () => {
        const engine = this.engine;
        const peers: Record<string, boolean> = {};
        for (const e of this.#endpoints) peers[e.name] = e.connected;
        if (this.#channel) peers[this.#channel.kind] = this.#channel.connected;
        return {
          stats: this.stats,
          heldFrames: { primary: engine.heldPrimary, secondary: engine.heldSecondary },
          heldBytes: { primary: engine.heldPrimaryBytes, secondary: engine.heldSecondaryBytes },
          connections: engine.connections,
          paused: { primary: this.paused("primary"), secondary: this.paused("secondary") },
          peers,
          epoch: this.stats.checkpointsReceived,
          checkpointOutstanding: this.#requests.outstanding,
        };
      },
      checkpointDone: () => this.#checkpointArrived(false),
    };
  }

  /** A new `expired-scan-cycle`: as in QEMU, it applies from the next scan on. */
  #restartScan(ms: number): void {
    this.#scanCycle = ms;
    if (this.#timer === undefined || this.#stopping) return;
    clearInterval(this.#timer);
    this.#startScans(ms);
  }

  /** The expiry scan every `ms`, clamped to what a timer takes (the cycle may reach 2^32-1 ms, as in QEMU). */
  #startScans(ms: number): void {
    this.#timer = setInterval(() => this.#scan(), Math.min(ms, MAX_TIMER_MS));
  }
}
