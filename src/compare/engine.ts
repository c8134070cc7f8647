/**
 * The compare engine: frames in, decisions out. Synchronous, no I/O, no timers: the socket
 * layer feeds it "frame on primary / secondary", "checkpoint done" and "tick at time T", and
 * it reports releases, discards and checkpoint needs to an {@linkcode EngineSink}.
 *
 * @module
 */

import {
  DATAGRAM,
  FrameInfo,
  type FrameKind,
  parseFrameAt,
  TCP_SEGMENT,
  TH_FIN,
  TH_RST,
  TH_SYN,
  UNSUPPORTED,
} from "../packet/parse.ts";
import type { Connection } from "./connection.ts";
import { ConnectionTable } from "./connection.ts";
import type { CompareContext } from "./context.ts";
import { bytesEqual } from "./bytes.ts";
import { compareDatagrams, sameDatagram } from "./datagram.ts";
import type {
  CheckpointReason,
  DiscardReason,
  EngineSink,
  ReleaseReason,
  Tracer,
} from "./events.ts";
import { Packet, type PacketQueue, type Side } from "./packet.ts";
import { type Seq32, seqAdd, seqAfter } from "../packet/seq.ts";
import { FrameStore, SLAB_SIZE } from "./store.ts";
import { DEFER_FRAMES, DeferredFrames } from "./deferred.ts";
import { type BlockPool, objectArray, Pool, READ_BLOCK_SIZE } from "../pool.ts";
import {
  comparedAlready,
  compareTcp,
  dropIfFullyMatched,
  flushedTcp,
  passAfterMatchedSecondary,
  sameSegment,
  settledUpTo,
} from "./tcp.ts";
import { NET_BUFSIZE, wordAt, writeHeader } from "../wire/codec.ts";

/** Engine settings (SPEC 2), plus resource bounds QEMU does not have. */
export interface EngineOptions {
  /** A held frame older than this (ms) needs a checkpoint. */
  compareTimeout: number;
  /** Each side of a connection holds at most this many frames plus one (QEMU's rule). */
  maxQueueSize: number;
  /** Connections kept; beyond it the one idle for longest is forgotten (SPEC 8). */
  maxConnections?: number;
  /** A connection whose queues stayed empty this long (ms) is forgotten (SPEC 8). */
  idleTimeout?: number;
  /** Bytes of frames held in all queues together; beyond it frames are dropped. */
  maxHeldBytes?: number;
  /** Blocks for held frames, shared with the output buffer (default: a pool of its own). */
  pool?: BlockPool;
  /** Blocks the inputs read into (`readBuffer`; default: a pool of its own). */
  readPool?: BlockPool;
  /** Idle connections that keep a handle (default `AWAKE_IDLE_MAX`; tests hibernate more). */
  awakeIdleConnections?: number;
  /**
   * Bytes of held frames from which {@linkcode CompareEngine.keepHeldInPlace} keeps them in
   * their read buffer instead of copying them (default: three quarters of the buffer, see
   * `keepInPlaceFrom`; tests lower it).
   */
  keepInPlaceFrom?: number;
  /**
   * Defer the arrivals a read brings while nothing is held (`deferred.ts`; default true).
   * Tests of how held frames are kept in slabs turn it off.
   */
  deferArrivals?: boolean;
}

/** Default bound on connections: four times QEMU's table, which QEMU wipes when full. */
export const DEFAULT_MAX_CONNECTIONS = 65536;
/** Default idle time after which a connection is forgotten (SPEC 8). */
export const DEFAULT_IDLE_TIMEOUT = 60_000;
/** Default bound on held bytes. */
export const DEFAULT_MAX_HELD_BYTES = 1 << 30;
/**
 * Bytes a held frame costs besides its own (its record, its place in a queue and the list of
 * held frames), counted against `--max-held-bytes`: else frames of 46 bytes could hold several
 * times the budget (measured: ~300 B of RSS a held frame besides its bytes).
 */
export const HELD_FRAME_COST = 256;
/** The least slabs held frames may use before those of nearly empty slabs move out (1 MiB). */
export const MIN_SLAB_BUDGET = 8;
/**
 * A read buffer whose held frames fill three quarters of it is kept as their slab (see
 * `keepHeldInPlace`): at most a quarter of it is then memory held for nothing, as in a slab
 * whose frames go at different times.
 */
export function keepInPlaceFrom(block: Uint8Array): number {
  return block.length - (block.length >> 2);
}
/**
 * Read buffers kept for fewer held bytes than {@linkcode keepInPlaceFrom} at one time: a block
 * each at most, until their frames go (issue 11: at low load a held frame's copy into a slab
 * and its copy out again were two views of garbage per frame).
 */
export const SPARSE_KEPT_MAX = 2;

/**
 * Queues of fewer frames than this are never long (see `CompareEngine.longQueue`): what a read
 * brings beyond them is dropped, as QEMU, reading 4 KiB at a time, drops it too.
 */
export const LONG_QUEUE_MIN = 64;

/** Three quarters of `maxQueueSize`, or never for queues shorter than `LONG_QUEUE_MIN`. */
export function longMark(maxQueueSize: number): number {
  return maxQueueSize < LONG_QUEUE_MIN ? Infinity : (maxQueueSize * 3) >> 2;
}

/** The comparator's state and rules, for one primary/secondary pair. */
export class CompareEngine implements CompareContext {
  readonly tracer: Tracer | null;
  readonly #sink: EngineSink;
  #compareTimeout: number;
  #maxQueueSize: number;
  /** The sink's optional divergence hook, or null: costs nothing when no capture is on. */
  readonly #divergence: NonNullable<EngineSink["divergence"]> | null;
  /** The last serial given to a queued frame (`Packet.serial`). */
  #serial = 0;
  /** What each connection's last divergence told the hook (`#tell`). */
  readonly #told = new WeakMap<Connection, Told>();
  /** The sink's optional `settle`, or null. */
  readonly #settles: boolean;
  readonly #maxConnections: number;
  readonly #idleTimeout: number;
  readonly #maxHeldBytes: number;
  /** Slabs that `--max-held-bytes` pays for (at least {@linkcode MIN_SLAB_BUDGET}). */
  readonly #slabBudget: number;
  /** Slabs in use past which held frames move out of nearly empty slabs (`#unpinSlabs`). */
  #unpinAt: number;
  /** The `keepInPlaceFrom` option, or 0 for three quarters of the block. */
  readonly #keepInPlaceFrom: number;
  /** Blocks handed out by `readBuffer` and not adopted since. */
  readonly #readBuffers = new WeakSet<Uint8Array>();
  readonly #table: ConnectionTable;
  readonly #info = new FrameInfo();
  /**
   * Packet records for reuse: a flood's tens of thousands of held frames would otherwise be
   * old-generation garbage at every checkpoint (the pool trims itself in `tick`).
   */
  readonly #packets = new Pool(() => new Packet());
  readonly #store: FrameStore;
  /**
   * Held packets whose frames still lie in `#unkeptIn`, the buffer they arrived in, in
   * arrival order (the first `#unkeptCount`): {@linkcode CompareEngine.keepHeld} copies them
   * into slabs, adjacent ones together. Listed again after being released and reused is
   * harmless (`FrameStore.keepAll` skips what is no longer there).
   */
  readonly #unkept: Packet[] = objectArray();
  #unkeptCount = 0;
  /** Bytes of the frames listed in `#unkept` (some may have left since: at most this many). */
  #unkeptBytes = 0;
  #unkeptIn: Uint8Array = EMPTY;
  /** Arrivals not queued yet (`deferred.ts`), counted as held in `#heldPrimary` and so on. */
  readonly #deferred = new DeferredFrames();
  readonly #defers: boolean;
  /**
   * The framing words' bytes before each frame of the streams `takeRun` takes runs of (4, or 8
   * with `vnet`); 0 before its first run. Frames deferred by `#input` get the same.
   */
  #runHeader = 0;
  /** The held frame the frame being input is byte for byte (see `#connectionOf`), or null. */
  #twin: Packet | null = null;
  /**
   * Bytes known equal (issue 11): `#sameIn[#sameFrom, #sameTo)` held what `#sameAs` holds from
   * `#sameAsFrom` on when they were compared. A read's held frames are kept back to back, and
   * the other side's copies arrive back to back too: one comparison covers many twins.
   * Forgotten by `keepHeld`, before either array can change.
   */
  #sameIn: Uint8Array = EMPTY;
  #sameFrom = 0;
  #sameTo = 0;
  #sameAs: Uint8Array = EMPTY;
  #sameAsFrom = 0;
  /** Bytes the next comparison for a twin tries at once: grows while they are equal. */
  #sameSpan = 0;
  /** COLO is not active (SPEC 7b): primary frames pass through, secondary ones are dropped. */
  #passthrough = false;
  /** The sides whose next frames are the tail of the epoch a checkpoint ended (`epochTail`). */
  #tailPrimary = false;
  #tailSecondary = false;
  /** Why primary frames are released as they come, uncompared; null: they are compared. */
  #primaryPass: ReleaseReason | null = null;
  /** Why secondary frames are dropped as they come; null: they are compared. */
  #secondaryDrop: DiscardReason | null = null;
  /** Held packets in arrival order, oldest first (arrival time order, too). */
  #oldest: Packet | null = null;
  #newest: Packet | null = null;
  #heldPrimary = 0;
  #heldSecondary = 0;
  #heldPrimaryBytes = 0;
  #heldSecondaryBytes = 0;
  /** Queue length past which a queue is long (see `longQueue`). */
  #longMark: number;
  /** A queue of the side grew past three quarters of max-queue-size (see `longQueue`). */
  #longPrimary = false;
  #longSecondary = false;
  /** The connections whose queue of the side grew past that mark, until down to a quarter. */
  readonly #longPrimaryConns: Connection[] = objectArray();
  readonly #longSecondaryConns: Connection[] = objectArray();
  /**
   * Set when a queue grows past three quarters of max-queue-size; the input clears it. It
   * stops the read's decoding there until flow control has decided whether that side pauses:
   * a read of small frames can hold more than max-queue-size of them.
   */
  queueGrewLong = false;
  /**
   * The latest time seen (input or tick): when a checkpoint's connections became idle. `-0`: a
   * double from the start. Its first fractional time changed the field's representation and
   * deprecated the class's map; the real comparator's engine, made before the warm-up, then
   * met the warm-up's code with the old map ("wrong map", bench/README.md, "Answers written at
   * once").
   */
  #now = -0;
  /** Checkpoint flushes so far (`CompareContext.epoch`). */
  #epoch = 0;

  constructor(options: EngineOptions, sink: EngineSink, tracer: Tracer | null = null) {
    this.#sink = sink;
    this.tracer = tracer;
    this.#compareTimeout = options.compareTimeout;
    this.#maxQueueSize = options.maxQueueSize;
    this.#longMark = longMark(options.maxQueueSize);
    this.#maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    this.#idleTimeout = options.idleTimeout ?? DEFAULT_IDLE_TIMEOUT;
    this.#maxHeldBytes = options.maxHeldBytes ?? DEFAULT_MAX_HELD_BYTES;
    this.#slabBudget = Math.max(MIN_SLAB_BUDGET, Math.ceil(this.#maxHeldBytes / SLAB_SIZE));
    this.#unpinAt = this.#slabBudget;
    this.#keepInPlaceFrom = options.keepInPlaceFrom ?? 0;
    this.#defers = options.deferArrivals ?? true;
    this.#table = new ConnectionTable(options.awakeIdleConnections);
    this.#store = new FrameStore(options.pool, options.readPool);
    this.#divergence = sink.divergence?.bind(sink) ?? null;
    this.#settles = sink.settle !== undefined;
  }

  /** `compare-timeout` in ms; settable at runtime (QMP `qom-set`, SPEC 12). */
  get compareTimeout(): number {
    return this.#compareTimeout;
  }

  set compareTimeout(ms: number) {
    this.#compareTimeout = ms;
  }

  /** `max-queue-size`; settable at runtime, applies to the next frame admitted. */
  get maxQueueSize(): number {
    return this.#maxQueueSize;
  }

  set maxQueueSize(n: number) {
    this.#settleDeferred();
    this.#maxQueueSize = n;
    this.#longMark = longMark(n);
  }

  /**
   * True when holding one more frame of `size` bytes would pass `--max-held-bytes`: the held
   * frames' bytes and {@linkcode HELD_FRAME_COST} for each of them, this one included.
   */
  #overBudget(size: number): boolean {
    const frames = this.#heldPrimary + this.#heldSecondary + 1;
    return this.#heldPrimaryBytes + this.#heldSecondaryBytes + size + frames * HELD_FRAME_COST >
      this.#maxHeldBytes;
  }

  /** What the side's held frames cost against `--max-held-bytes` (bytes and bookkeeping). */
  heldCost(side: Side): number {
    return side === "primary"
      ? this.#heldPrimaryBytes + this.#heldPrimary * HELD_FRAME_COST
      : this.#heldSecondaryBytes + this.#heldSecondary * HELD_FRAME_COST;
  }

  /** Frames held from the primary (waiting for the secondary or a checkpoint). */
  get heldPrimary(): number {
    return this.#heldPrimary;
  }

  /** Frames held from the secondary. */
  get heldSecondary(): number {
    return this.#heldSecondary;
  }

  /** Bytes held from the primary. */
  get heldPrimaryBytes(): number {
    return this.#heldPrimaryBytes;
  }

  /** Bytes held from the secondary. */
  get heldSecondaryBytes(): number {
    return this.#heldSecondaryBytes;
  }

  /**
   * True once a queue of `side` held more than three quarters of max-queue-size frames (of
   * {@linkcode LONG_QUEUE_MIN} or more), until each queue of `side` that did holds no more
   * than a quarter of it. Flow control pauses such a side while the other catches up (SPEC 8):
   * another read of small frames must not overflow the queue, whose excess QEMU's rule drops.
   * Held bytes alone miss this: 1 MiB of lead is a thousand 1 KiB frames, or sixteen thousand
   * small ones. Frames of other connections do not count: a frame or two per read that the
   * other side never sends, waiting for the timeout, kept the side "long" (paused, or its lead
   * waived for good) after the other side had caught up with the long queue (a red-team run:
   * the secondary, never paused while the primary is, overflowed its copy of identical traffic).
   */
  longQueue(side: Side): boolean {
    const primary = side === "primary";
    if (!(primary ? this.#longPrimary : this.#longSecondary)) return false;
    const conns = primary ? this.#longPrimaryConns : this.#longSecondaryConns;
    const quarter = this.#maxQueueSize >> 2;
    let n = 0;
    for (let i = 0; i < conns.length; i++) {
      const c = conns[i];
      if ((primary ? c.primary : c.secondary).length > quarter) conns[n++] = c;
    }
    conns.length = n;
    if (n > 0) return true;
    if (primary) this.#longPrimary = false;
    else this.#longSecondary = false;
    return false;
  }

  /**
   * Whether a long queue of the side (see {@linkcode CompareEngine.longQueue}, called first)
   * is on a connection where frames matched before: one the other side sends on, and so
   * catches up with. A side whose long queues are all on connections where nothing matched
   * yet may be waiting for frames the other never sends (a one-sided burst, until its
   * timeout); flow control weighs the two leads apart.
   */
  longQueueMatched(side: Side): boolean {
    const conns = side === "primary" ? this.#longPrimaryConns : this.#longSecondaryConns;
    for (let i = 0; i < conns.length; i++) if (conns[i].matched) return true;
    return false;
  }

  /** `conn`'s queue of the side grew past three quarters of max-queue-size (`longQueue`). */
  #grewLong(primary: boolean, conn: Connection): void {
    const conns = primary ? this.#longPrimaryConns : this.#longSecondaryConns;
    if (!conns.includes(conn)) conns.push(conn);
    if (primary) this.#longPrimary = true;
    else this.#longSecondary = true;
  }

  /**
   * Held frames whose bytes were never (fully) compared: every held primary frame, and held
   * secondary frames except TCP segments with nothing left to compare. O(held frames).
   */
  uncompared(): { primary: number; secondary: number } {
    this.#settleDeferred();
    let secondary = 0;
    for (let p = this.#oldest; p !== null; p = p.newer) {
      if (p.side === "secondary" && !this.#settled(p)) secondary++;
    }
    return { primary: this.#heldPrimary, secondary };
  }

  /** Connections known. */
  get connections(): number {
    return this.#table.size;
  }

  /** Connections that hold frames (the ones a checkpoint flush walks). */
  get heldConnections(): number {
    return this.#table.heldCount;
  }

  /** Arrival time of the oldest held frame, or null when nothing is held. */
  get oldestHeldAt(): number | null {
    this.#settleDeferred();
    return this.#oldest?.createdAt ?? null;
  }

  /** Connections in first-seen order. */
  connectionList(): Iterable<Connection> {
    this.#settleDeferred();
    return this.#table;
  }

  /**
   * A frame arrived on primary-in: the whole of `frame`, which may change once this returns
   * (it is copied at once if held).
   */
  primary(frame: Uint8Array, vnetLen: number, now: number): void {
    this.primaryAt(frame, 0, frame.length, vnetLen, now);
    this.keepHeld();
  }

  /** A frame arrived on secondary-in: the whole of `frame`, as for `primary`. */
  secondary(frame: Uint8Array, vnetLen: number, now: number): void {
    this.secondaryAt(frame, 0, frame.length, vnetLen, now);
    this.keepHeld();
  }

  /**
   * A frame arrived on primary-in: `bytes[at, at + size)`, read where it lies (a read
   * buffer). The sink is handed it the same way. If it is held, it is copied by the next
   * {@linkcode CompareEngine.keepHeld}: `bytes` must not change until then (a frame in
   * another array calls it first).
   */
  primaryAt(bytes: Uint8Array, at: number, size: number, vnetLen: number, now: number): void {
    const pass = this.#primaryPass;
    if (pass === null || size === 0) this.#input("primary", bytes, at, size, vnetLen, now);
    else if (pass === "checkpoint") this.#releaseTail(bytes, at, size, vnetLen, now);
    else this.#sink.release(bytes, at, size, vnetLen, pass);
  }

  /**
   * A primary frame of an epoch's tail (`epochTail`) goes out as the flush sends a held one: a
   * TCP segment's bytes count as compared (`flushedTcp`), so that the secondary's copy, should
   * it come after all, is dropped as compared (by the expiry scan, as after a flush) instead of
   * asking for a checkpoint once it times out. ACKs and FINs are not tracked, on either side's
   * tail: both sides' tracking goes on from the new epoch.
   */
  #releaseTail(bytes: Uint8Array, at: number, size: number, vnetLen: number, now: number): void {
    if (now > this.#now) this.#now = now;
    const info = this.#info;
    if (parseFrameAt(bytes, at, size, vnetLen, info) === UNSUPPORTED) {
      this.#sink.release(bytes, at, size, vnetLen, "passthrough", info.reason);
      return;
    }
    if (info.kind === TCP_SEGMENT && info.payloadLen > 0) {
      // A connection is made where none is (a full table of held ones: none, and the frame
      // goes out all the same).
      const conn = this.#table.find(info.key, info.keyLen) ?? this.#newConnection(info);
      if (conn !== null) {
        settledUpTo(conn, seqAdd(info.seq, info.payloadLen));
        this.#place(conn, now);
      }
    }
    this.#sink.release(bytes, at, size, vnetLen, "checkpoint");
  }

  /** A frame arrived on secondary-in: `bytes[at, at + size)`, as for `primaryAt`. */
  secondaryAt(bytes: Uint8Array, at: number, size: number, vnetLen: number, now: number): void {
    const drop = this.#secondaryDrop;
    if (drop !== null && size > 0) this.#sink.discard("secondary", drop, bytes, at, size, null);
    else this.#input("secondary", bytes, at, size, vnetLen, now);
  }

  /**
   * A checkpoint completed (SPEC 7): for every connection in first-seen order, release every
   * held primary frame in order and drop every held secondary frame. Only connections that
   * hold frames are walked (SPEC 8); they are idle from `now` on (default: the latest time
   * the engine saw). TCP bytes flushed count as compared (see `flushedTcp`).
   *
   * `secondaryCutoff` (`--qmp-secondary`): the secondary resumed at this time, so its frames
   * that arrived later are the new epoch's; they stay queued and are compared with the
   * primary's next frames. Returns how many were kept.
   */
  checkpoint(now: number = this.#now, secondaryCutoff: number | null = null): number {
    this.#settleDeferred();
    this.#epoch++;
    // The sink may read the released frames later (`releaseHeld`): they must be in slabs.
    this.keepHeld();
    const sink = this.#sink;
    let kept = 0;
    // The held secondary frames are dropped first, in arrival order: their slabs (each side
    // fills its own) are then free for the output buffer the released primary frames are
    // written into, so a flush needs hardly more memory than what was held.
    for (let s = this.#oldest; s !== null;) {
      const next = s.newer;
      if (s.side === "secondary") {
        if (secondaryCutoff !== null && s.createdAt > secondaryCutoff) kept++;
        else {
          this.#unhold(s);
          sink.discard("secondary", "checkpoint", s.bytes, s.at, s.size, s.conn);
          this.#recycle(s);
        }
      }
      s = next;
    }
    this.#table.drainHeld((conn) => {
      if (conn.primary.length > 0) {
        conn.primary.drain((p) => {
          if (conn.tcp) flushedTcp(conn, p);
          this.#unhold(p);
          if (sink.releaseHeld !== undefined) sink.releaseHeld(p, this.#recycleLater);
          else {
            sink.release(p.bytes, p.at, p.size, p.vnetLen, "checkpoint", undefined, p.createdAt);
            this.#recycle(p);
          }
        });
      }
      // What the secondary queue still lists is either dropped above or the new epoch's.
      if (conn.secondary.length > 0) conn.secondary.drainUnless(isHeld, ignore);
      this.#place(conn, now);
    }, now);
    return kept;
  }

  /**
   * COLO ended (`on`, SPEC 7b `COLO_EXIT`): release everything held exactly as
   * {@linkcode CompareEngine.checkpoint} does, then pass every primary frame through
   * uncompared and drop every secondary frame, until COLO is active again (`off`).
   */
  setPassthrough(on: boolean): void {
    if (on === this.#passthrough) return;
    this.#settleDeferred();
    this.#passthrough = on;
    this.#uncompared();
    if (on) this.checkpoint();
  }

  /**
   * `side`'s next frames are (`on`), or are no longer, the tail of the epoch the last
   * checkpoint ended: sent before it, read after its flush (the comparator knows how many
   * bytes). Each is treated as the flush treated what was held: a primary frame is released at
   * once (reason "checkpoint"), a secondary frame dropped, none held or compared.
   */
  epochTail(side: Side, on: boolean): void {
    this.#settleDeferred();
    if (side === "primary") this.#tailPrimary = on;
    else this.#tailSecondary = on;
    this.#uncompared();
  }

  /** Sets what happens to frames that are not compared, from COLO's state and the tails. */
  #uncompared(): void {
    const colo = !this.#passthrough;
    this.#primaryPass = !colo ? "passthrough" : this.#tailPrimary ? "checkpoint" : null;
    this.#secondaryDrop = !colo ? "colo-inactive" : this.#tailSecondary ? "checkpoint" : null;
  }

  /** True while COLO is not active and frames pass uncompared. */
  get passthrough(): boolean {
    return this.#passthrough;
  }

  /**
   * The expiry scan (SPEC 6, "Timers"): if any held frame is older than `compare-timeout`,
   * report it and return true. Also forgets connections idle for `idleTimeout` (SPEC 8).
   * Costs O(expired) however many connections exist.
   */
  tick(now: number): boolean {
    this.#settleDeferred();
    if (now > this.#now) this.#now = now;
    this.#forgetIdle(now);
    this.#rearmUnpin();
    this.#packets.trim(now);
    this.#table.trim(now);
    this.#store.trim(now);
    let oldest = this.#oldest;
    while (oldest !== null && now - oldest.createdAt > this.#compareTimeout) {
      if (!this.#settled(oldest)) {
        this.tracer?.trace("colo_old_packet_check_found", {
          old_time: Math.round(oldest.createdAt),
        });
        // Frames this old may stay for long (no checkpoint may ever come): give them their
        // own buffers so they do not pin slabs of frames long gone.
        for (let p: Packet | null = oldest; p !== null; p = p.newer) {
          if (now - p.createdAt <= this.#compareTimeout) break;
          this.#store.evacuate(p);
        }
        if (this.#divergence !== null) {
          const aged = oldest.side === "primary";
          this.#tell("timeout", oldest.conn!, aged ? oldest : null, aged ? [] : [oldest], now);
        }
        this.#sink.checkpoint("timeout", oldest.conn, now);
        return true;
      }
      // A secondary TCP segment with nothing left to compare waits only to pair with a
      // payload-less primary; it is no reason for a checkpoint (SPEC 9, fully matched).
      const conn = oldest.conn!;
      conn.secondary.remove(oldest);
      this.dropSecondary(oldest);
      this.#place(conn, now);
      oldest = this.#oldest;
    }
    return false;
  }

  /** True for a held secondary TCP segment none of whose payload still needs comparing. */
  #settled(p: Packet): boolean {
    if (p.side !== "secondary" || !p.conn!.tcp) return false;
    const conn = p.conn!;
    return p.len === 0 || p.offset >= p.len || comparedAlready(conn, p);
  }

  #input(
    side: Side,
    bytes: Uint8Array,
    at: number,
    size: number,
    vnetLen: number,
    now: number,
  ): void {
    const sink = this.#sink;
    if (size === 0) {
      sink.discard(side, "empty", bytes, at, 0, null);
      return;
    }
    if (
      this.#deferred.pending > 0 || (this.#runHeader !== 0 && this.#oldest === null && this.#defers)
    ) {
      if (this.#takeOne(side, bytes, at, size, vnetLen, now)) return;
      this.#settleDeferred();
    }
    if (bytes !== this.#unkeptIn && this.#unkeptCount > 0) this.keepHeld();
    if (now > this.#now) this.#now = now;
    const info = this.#info;
    const conn = this.#connectionOf(side, bytes, at, size, vnetLen, now);
    if (conn === null) return;
    const kind = info.kind;
    const primary = side === "primary";
    if ((primary ? conn.primary : conn.secondary).length > this.#maxQueueSize) {
      this.tracer?.trace("colo_compare_drop_packet", {
        queue: side,
        str: "queue size too big, drop packet",
      });
      if (primary && kind === TCP_SEGMENT && info.payloadLen > 0) {
        const end = seqAdd(info.seq, info.payloadLen);
        const known = this.#table.droppedUntil(conn);
        if (known === undefined || seqAfter(end, known)) this.#table.setDroppedUntil(conn, end);
      }
      sink.discard(side, "queue-full", bytes, at, size, conn);
      return;
    }
    if (this.#overBudget(size)) {
      sink.discard(side, "memory-limit", bytes, at, size, conn);
      this.#place(conn, now);
      this.#sink.checkpoint("resources", conn, now);
      return;
    }

    if (kind === TCP_SEGMENT) this.#trackTcp(primary, conn, info);
    if (
      this.tracer === null && this.#pairAtOnce(primary, conn, kind, bytes, at, size, vnetLen, now)
    ) {
      this.#place(conn, now);
      return;
    }

    this.#enqueue(side, primary, conn, kind, bytes, at, size, vnetLen, now);
  }

  /**
   * Holds the frame `#info` describes on `conn` and compares what can be compared there; the
   * arriving frame's checks (queue full, held bytes) and `#trackTcp` are done.
   */
  #enqueue(
    side: Side,
    primary: boolean,
    conn: Connection,
    kind: FrameKind,
    bytes: Uint8Array,
    at: number,
    size: number,
    vnetLen: number,
    now: number,
  ): void {
    const info = this.#info;
    const queue = this.#table.queueFor(conn, side);
    const p = this.#packet(side, conn, bytes, at, size, vnetLen, now);
    if (kind === TCP_SEGMENT) {
      p.start = info.payload;
      p.len = info.payloadLen;
      p.seq = info.seq;
      p.seqEnd = seqAdd(info.seq, info.payloadLen);
      p.ack = info.ack;
      p.flags = info.flags;
      queue.insertBySeq(p);
    } else {
      p.start = info.l4;
      p.len = info.ipEnd - info.l4;
      queue.push(p);
    }
    const long = this.#longMark;
    if (queue.length > long) {
      if (queue.length === long + 1) {
        this.queueGrewLong = true;
        this.#grewLong(primary, conn);
      } else if (!(primary ? this.#longPrimary : this.#longSecondary)) {
        // Past a mark lowered at runtime (`maxQueueSize`).
        this.#grewLong(primary, conn);
      }
    }
    this.#hold(p);

    if (conn.tcp) {
      // A primary segment takes the pass a dropped matched secondary left: QEMU pops that
      // segment now, ahead of the secondaries queued behind it. A primary with nothing to
      // compare goes out against it alone (the queued ones wait for the next primary); one
      // with bytes to compare meets the queue.
      if (primary && conn.takeMatchedSecondaryDropped(this.#epoch)) {
        passAfterMatchedSecondary(this, conn, p);
        if (conn.secondary.length > 0) compareTcp(this, conn, now);
      } else if (!primary || conn.secondary.length > 0) compareTcp(this, conn, now);
      // Otherwise the primary segment waits for its twin: `compareTcp` would find only that
      // out. Not called for it, the large function is not run (and not compiled) for the
      // commonest arrival of a request-and-answer stream, which the warm-up, sending both
      // copies at once, seldom makes (bench/README.md, "The generator warmed before the cold
      // row").
    } else compareDatagrams(this, conn, now);

    // Still queued: it must outlive the read buffer it points into.
    if (p.queued && p.bytes === bytes) {
      this.#unkeptIn = bytes;
      this.#unkept[this.#unkeptCount++] = p;
      this.#unkeptBytes += size;
    }
    this.#place(conn, now);
  }

  /**
   * Takes the whole frames of `bytes[at, end)` that arrive on `side` in the steady state, one
   * after the other, without the decoder handing each over (issue 11): frames that are byte
   * for byte the other side's oldest held frames (one replica's read brings what the other's
   * brought a moment before), and frames that arrive while the other side holds nothing (the
   * first replica's read). `bytes[at, end)` holds framed messages (SPEC 3: a `len` word, a
   * `vnet_len` word when `vnet`, the frame). Each is taken exactly as `primaryAt` /
   * `secondaryAt` would take it; the run stops before the first frame that is not whole there
   * or that the general path must decide (not comparable, a new connection, a queue growing
   * long or full, the held-bytes bound, a twin the other side's queue does not pair at once),
   * and returns where it stopped (`at` when it took none). A `len` beyond the framing's bound
   * stops it too: the decoder breaks the stream there (SPEC 3). {@linkcode runFrames} says how
   * many frames it took, and {@linkcode runEnd} where the frame it took or was taking last ends.
   *
   * While nothing is held, the frames it would hold are deferred instead (`deferred.ts`): not
   * queued, and paired with their twins from the other side's next read straight from their
   * copies, one comparison for a whole read of twins; anything else queues them first.
   */
  takeRun(
    side: Side,
    bytes: Uint8Array,
    at: number,
    end: number,
    vnet: boolean,
    now: number,
  ): number {
    this.runFrames = 0;
    this.runEnd = at;
    if (
      this.tracer !== null ||
      (side === "primary" ? this.#primaryPass : this.#secondaryDrop) !== null
    ) {
      return at;
    }
    if (bytes !== this.#unkeptIn && this.#unkeptCount > 0) this.keepHeld();
    if (now > this.#now) this.#now = now;
    const primary = side === "primary";
    const header = vnet ? 8 : 4;
    this.#runHeader = header;
    let i = at;
    const deferred = this.#deferred;
    if (deferred.pending > 0 && deferred.side !== side) {
      i = this.#takeTwins(primary, bytes, at, end, header, now);
      // Stopped at a frame that is not the next deferred one's twin: `#input` takes it.
      if (deferred.pending > 0) return i;
    }
    if (this.#defers && this.#oldest === null) {
      if (end - i <= deferred.room()) {
        i = this.#defer(side, primary, bytes, i, end, header, now);
        // Stopped at a frame it may not defer: `#input` takes it, after the deferred ones.
        if (deferred.pending > 0) return i;
      } else {
        // A read larger than the deferred frames' room (a 1 MiB read under load) is held the
        // usual way, behind them: deferring part of it only to queue it all later costs more.
        this.#settleDeferred();
      }
    }
    while (end - i >= header) {
      const size = wordAt(bytes, i);
      const f = i + header;
      if (size === 0 || size > end - f || size > NET_BUFSIZE) break;
      const vnetLen = vnet ? wordAt(bytes, i + 4) : 0;
      this.runEnd = f + size;
      const oldest = this.#oldest;
      if (oldest !== null && oldest.side !== side) {
        if (!this.#pairTwin(primary, bytes, f, size, vnetLen, now)) break;
      } else if (
        (primary ? this.#heldSecondary : this.#heldPrimary) !== 0 ||
        !this.#holdAtOnce(side, primary, bytes, f, size, vnetLen, now)
      ) break;
      i = f + size;
      this.runFrames++;
    }
    return i;
  }

  /** Frames deferred so far (`deferred.ts`): how often the path is taken, for tests. */
  framesDeferred = 0;
  /** Frames the last {@linkcode CompareEngine.takeRun} took. */
  runFrames = 0;
  /**
   * Where the frame the last {@linkcode CompareEngine.takeRun} took or was taking last ends:
   * when it threw, decoding goes on there (the frame it failed on is lost, as one `primaryAt`
   * or `secondaryAt` throws on).
   */
  runEnd = 0;

  /**
   * `takeRun`'s frames from `bytes[at]` on while nothing is held and the decoder hands over
   * frames from `side` in a row: defers each that `#deferFrame` takes, and copies them, with
   * their framing words, at once. Returns where it stopped.
   */
  #defer(
    side: Side,
    primary: boolean,
    bytes: Uint8Array,
    at: number,
    end: number,
    header: number,
    now: number,
  ): number {
    if (primary ? this.#longPrimary : this.#longSecondary) return at;
    const deferred = this.#deferred;
    if (deferred.pending === 0) this.#startDeferred(side, header);
    const base = deferred.end;
    const room = deferred.bytes.length - base;
    let i = at;
    while (end - i >= header && deferred.count < DEFER_FRAMES) {
      const size = wordAt(bytes, i);
      const f = i + header;
      if (size === 0 || size > end - f || size > NET_BUFSIZE || f + size - at > room) break;
      const vnetLen = header === 8 ? wordAt(bytes, i + 4) : 0;
      if (!this.#deferFrame(primary, bytes, f, size, vnetLen, now, base + f - at)) break;
      i = f + size;
      this.runEnd = i;
      this.runFrames++;
    }
    if (i > at) {
      deferred.bytes.set(bytes.subarray(at, i), base);
      deferred.end = base + i - at;
    }
    return i;
  }

  /**
   * Defers the frame `bytes[at, at + size)`, to be copied to `to` in the deferred bytes, if it
   * is one `#holdAtOnce` would hold (nothing is held, so it is the first of its side's queue
   * on its connection or follows the deferred ones there) and a TCP segment with payload, in
   * sequence after any deferred before it on its connection, and not one that could close or
   * open it. Does for it what holding it does to the connection (its ACK and flags noted, the
   * matched secondary's pass taken, the connection held) and counts it as held. Returns false,
   * having changed nothing, otherwise.
   */
  #deferFrame(
    primary: boolean,
    bytes: Uint8Array,
    at: number,
    size: number,
    vnetLen: number,
    now: number,
    to: number,
  ): boolean {
    const info = this.#info;
    if (
      parseFrameAt(bytes, at, size, vnetLen, info) !== TCP_SEGMENT || info.payloadLen === 0 ||
      (info.flags & (TH_SYN | TH_FIN | TH_RST)) !== 0
    ) return false;
    const conn = this.#table.find(info.key, info.keyLen);
    if (conn === null || conn.closed || !conn.tcp) return false;
    const queued = conn.deferred;
    if (
      queued >= this.#longMark || queued >= this.#maxQueueSize || this.#overBudget(size) ||
      (queued > 0 && (info.seq | 0) !== conn.deferredEnd) ||
      (primary && conn.passDue(this.#epoch))
    ) return false;
    this.#trackTcp(primary, conn, info);
    // As `#enqueue` takes it: a pass noted in an earlier epoch is gone.
    if (primary) conn.takeMatchedSecondaryDropped(this.#epoch);
    const deferred = this.#deferred;
    const j = deferred.count++;
    const seqEnd = seqAdd(info.seq, info.payloadLen);
    deferred.at[j] = to;
    deferred.size[j] = size;
    deferred.vnetLen[j] = vnetLen;
    deferred.payload[j] = info.payload - at;
    deferred.len[j] = info.payloadLen;
    deferred.flags[j] = info.flags;
    deferred.seq[j] = info.seq;
    deferred.seqEnd[j] = seqEnd;
    deferred.ack[j] = info.ack;
    deferred.createdAt[j] = now;
    deferred.conn[j] = conn;
    conn.deferred = queued + 1;
    conn.deferredEnd = seqEnd | 0;
    this.framesDeferred++;
    this.#countHeld(primary, 1, size);
    this.#place(conn, now);
    return true;
  }

  /**
   * `takeRun`'s frames from `bytes[at]` on while the other side's frames are deferred: each
   * that is byte for byte the oldest deferred one, with the same framing words, is decided by
   * `#pairDeferred`. Returns where it stopped.
   */
  #takeTwins(
    primary: boolean,
    bytes: Uint8Array,
    at: number,
    end: number,
    header: number,
    now: number,
  ): number {
    const deferred = this.#deferred;
    const held = deferred.bytes;
    // One comparison for all the twins in the steady state: as many bytes as both have.
    const from = deferred.at[deferred.head] - header;
    const span = Math.min(end - at, deferred.end - from);
    const sameTo = span > 0 && bytesEqual(bytes, at, held, from, span) ? at + span : at;
    let i = at;
    while (deferred.head < deferred.count && end - i >= header) {
      const size = wordAt(bytes, i);
      const f = i + header;
      if (size === 0 || size > end - f || size > NET_BUFSIZE) break;
      if (
        f + size > sameTo && (
          size !== deferred.size[deferred.head] ||
          !bytesEqual(held, deferred.at[deferred.head] - header, bytes, i, header + size)
        )
      ) break;
      this.runEnd = f + size;
      const vnetLen = header === 8 ? wordAt(bytes, i + 4) : 0;
      if (!this.#pairDeferred(primary, bytes, f, size, vnetLen, now)) break;
      i = f + size;
      this.runFrames++;
    }
    return i;
  }

  /**
   * The frame `bytes[at, at + size)` is byte for byte the oldest deferred frame, from the other
   * side: decides the two as `#pairTwin` decides a twin at the head of its queue (the primary
   * of the two released, the secondary dropped) and returns true, or returns false, having
   * changed nothing, where `#pairTwin` leaves the frame to `#input` (the held-bytes bound, a
   * segment compared already).
   */
  #pairDeferred(
    primary: boolean,
    bytes: Uint8Array,
    at: number,
    size: number,
    vnetLen: number,
    now: number,
  ): boolean {
    const deferred = this.#deferred;
    const j = deferred.head;
    const conn = deferred.conn[j]!;
    // Sequence numbers as stored, int32: compared and stored mod 2^32 all the same, and never
    // a number the compiled code must check is still an int32 (a uint32 above 2^31 made V8
    // throw this function's code away at the real peers' first such segment).
    const seqEnd = deferred.seqEnd[j];
    if (
      this.#overBudget(size) || (conn.compareSeqSet && !seqAfter(seqEnd, conn.compareSeq))
    ) return false;
    const info = this.#info;
    info.flags = deferred.flags[j];
    info.ack = deferred.ack[j];
    this.#trackTcp(primary, conn, info);
    conn.compareSeq = seqEnd;
    conn.compareSeqSet = true;
    // As `#paired` decides, the twin taken off its queue first.
    conn.takeMatchedSecondaryDropped(this.#epoch);
    conn.noteMatched();
    deferred.conn[j] = null;
    deferred.head = j + 1;
    conn.deferred--;
    const sink = this.#sink;
    const twin = deferred.at[j];
    if (primary) {
      sink.release(bytes, at, size, vnetLen, "compared", undefined, now);
      this.#countHeld(false, -1, size);
      sink.discard("secondary", "compared", deferred.bytes, twin, size, conn);
      // `dropIfFullyMatched` would find no matched secondary segment queued here.
    } else {
      this.#countHeld(true, -1, size);
      sink.release(
        deferred.bytes,
        twin,
        size,
        vnetLen,
        "compared",
        undefined,
        deferred.createdAt[j],
      );
      sink.discard("secondary", "compared", bytes, at, size, conn);
    }
    this.#place(conn, now);
    return true;
  }

  /**
   * A frame handed over on its own (`#input`: one the decoder assembled across reads, say)
   * while frames are deferred or nothing is held, on a stream `takeRun` takes: deferred (behind
   * those of its side), or decided with the oldest deferred frame when its twin. False when
   * `#input` must take it, after the deferred ones.
   */
  #takeOne(
    side: Side,
    bytes: Uint8Array,
    at: number,
    size: number,
    vnetLen: number,
    now: number,
  ): boolean {
    const deferred = this.#deferred;
    const primary = side === "primary";
    if (now > this.#now) this.#now = now;
    if (deferred.pending > 0 && deferred.side !== side) {
      const j = deferred.head;
      if (
        size !== deferred.size[j] || vnetLen !== deferred.vnetLen[j] ||
        !bytesEqual(deferred.bytes, deferred.at[j], bytes, at, size)
      ) return false;
      return this.#pairDeferred(primary, bytes, at, size, vnetLen, now);
    }
    const header = deferred.pending > 0 ? deferred.header : this.#runHeader;
    if ((header === 4 && vnetLen !== 0) || (primary ? this.#longPrimary : this.#longSecondary)) {
      return false;
    }
    if (deferred.pending === 0) this.#startDeferred(side, header);
    const to = deferred.end + header;
    if (deferred.count >= DEFER_FRAMES || to + size > deferred.bytes.length) return false;
    if (!this.#deferFrame(primary, bytes, at, size, vnetLen, now, to)) return false;
    writeHeader(deferred.bytes, deferred.end, size, header === 8, vnetLen);
    deferred.bytes.set(bytes.subarray(at, at + size), to);
    deferred.end = to + size;
    return true;
  }

  /** Deferred frames from `side` start over at the front of the deferred bytes. */
  #startDeferred(side: Side, header: number): void {
    // The bytes about to be overwritten may be released frames the sink has not copied.
    if (this.#settles) this.#sink.settle!();
    this.#deferred.start(side, header);
  }

  /**
   * Queues the deferred frames (`#defer`) as `#holdAtOnce` would have queued them when they
   * came, and keeps them in slabs: before anything but `takeRun` sees the held frames.
   */
  #settleDeferred(): void {
    const deferred = this.#deferred;
    if (deferred.pending === 0) return;
    if (this.#unkeptCount > 0) this.keepHeld();
    const side = deferred.side;
    const primary = side === "primary";
    const bytes = deferred.bytes;
    this.#unkeptIn = bytes;
    for (let j = deferred.head; j < deferred.count; j++) {
      const conn = deferred.conn[j]!;
      deferred.conn[j] = null;
      conn.deferred--;
      const size = deferred.size[j];
      // Counted as held since it came: `#hold` counts it again.
      this.#countHeld(primary, -1, size);
      const at = deferred.at[j];
      const p = this.#packet(
        side,
        conn,
        bytes,
        at,
        size,
        deferred.vnetLen[j],
        deferred.createdAt[j],
      );
      p.start = at + deferred.payload[j];
      p.len = deferred.len[j];
      p.seq = deferred.seq[j];
      p.seqEnd = deferred.seqEnd[j];
      p.ack = deferred.ack[j];
      p.flags = deferred.flags[j];
      (primary ? conn.primary : conn.secondary).insertBySeq(p);
      this.#hold(p);
      // As `#enqueue` does: with no primary held it only looks at the secondary queue's head.
      if (!primary) compareTcp(this, conn, this.#now);
      this.#unkept[this.#unkeptCount++] = p;
      this.#unkeptBytes += size;
    }
    deferred.head = deferred.count;
    this.keepHeld();
  }

  /**
   * `takeRun`'s frame `bytes[at, at + size)` when the other side's oldest held frame may be
   * its twin: takes it through `#input`'s steps for a twin (`#fieldsOf`, `#trackTcp`,
   * `#pairAtOnce`) and returns true, or returns false when `#input` must take it: not a twin,
   * its queue-full or held-bytes path, or not paired at once (`#trackTcp` then ran twice,
   * which notes the same ACK and flags again).
   */
  #pairTwin(
    primary: boolean,
    bytes: Uint8Array,
    at: number,
    size: number,
    vnetLen: number,
    now: number,
  ): boolean {
    const twin = this.#twinOf(primary ? "primary" : "secondary", bytes, at, size, vnetLen);
    if (twin === null) return false;
    const conn = twin.conn!;
    if (
      (primary ? conn.primary : conn.secondary).length !== 0 || this.#overBudget(size)
    ) return false;
    const other = primary ? conn.secondary : conn.primary;
    if (other.peek() === twin) {
      // The twin heads its queue (the steady state): `#pairAtOnce` with `sameSegment` for a
      // segment that is its head byte for byte, without `#fieldsOf` first.
      if (conn.tcp) {
        if (twin.len === 0 || comparedAlready(conn, twin)) return false;
        const info = this.#info;
        info.flags = twin.flags;
        info.ack = twin.ack;
        this.#trackTcp(primary, conn, info);
        conn.compareSeq = twin.seqEnd;
        conn.compareSeqSet = true;
      }
      this.#paired(primary, conn, other, twin, bytes, at, size, vnetLen, now);
      this.#place(conn, now);
      return true;
    }
    this.#twin = twin;
    this.#fieldsOf(twin, at);
    const kind = this.#info.kind;
    if (kind === TCP_SEGMENT) this.#trackTcp(primary, conn, this.#info);
    if (!this.#pairAtOnce(primary, conn, kind, bytes, at, size, vnetLen, now)) return false;
    this.#place(conn, now);
    return true;
  }

  /**
   * `takeRun`'s frame `bytes[at, at + size)` when the other side holds nothing: it can only
   * be held. Holds it as `#input` would and returns true, or returns false, having changed
   * nothing, when `#input` must decide.
   */
  #holdAtOnce(
    side: Side,
    primary: boolean,
    bytes: Uint8Array,
    at: number,
    size: number,
    vnetLen: number,
    now: number,
  ): boolean {
    if (primary ? this.#longPrimary : this.#longSecondary) return false;
    const info = this.#info;
    if (parseFrameAt(bytes, at, size, vnetLen, info) === UNSUPPORTED) return false;
    const conn = this.#table.find(info.key, info.keyLen);
    if (conn === null || conn.closed) return false;
    const queued = (primary ? conn.primary : conn.secondary).length;
    if (
      queued >= this.#longMark || queued >= this.#maxQueueSize || this.#overBudget(size)
    ) return false;
    const kind = info.kind;
    if (kind === TCP_SEGMENT) this.#trackTcp(primary, conn, info);
    this.#enqueue(side, primary, conn, kind, bytes, at, size, vnetLen, now);
    return true;
  }

  /**
   * Copies the held frames that still lie in the buffer they arrived in into slabs (frames
   * adjacent there with one copy, issue 11). The input calls it once the frames of a read
   * were handed in, before it reuses its buffer.
   */
  keepHeld(): void {
    this.#sameIn = this.#sameAs = EMPTY;
    const n = this.#unkeptCount;
    if (n === 0) return;
    // Released frames of an emptied slab may lie where these go.
    if (this.#settles) this.#sink.settle!();
    this.#store.keepAll(this.#unkeptIn, this.#unkept, n);
    this.#unlist(n);
    if (this.#store.slabs > this.#unpinAt) this.#unpinSlabs();
  }

  /**
   * The slabs in use outgrew what `--max-held-bytes` pays for: each held frame of a slab that
   * holds little else moves to a buffer of its own (`FrameStore.evacuate`), so that frames held
   * one or two a read do not pin a 128 KiB slab each until they time out (SPEC 8: memory of
   * held frames bounded by the budget, not by the input rate times compare-timeout). Slabs
   * still mostly held stay; the walk comes again only once the slabs in use doubled (or at the
   * next scan), so that it costs O(1) a slab.
   */
  #unpinSlabs(): void {
    for (let p = this.#oldest; p !== null; p = p.newer) this.#store.evacuate(p);
    this.#rearmUnpin();
  }

  /** The next walk of {@linkcode CompareEngine.#unpinSlabs}: once the slabs in use doubled. */
  #rearmUnpin(): void {
    this.#unpinAt = Math.max(this.#slabBudget, 2 * this.#store.slabs);
  }

  /** Empties the list of held frames still in their read buffer (they were kept). */
  #unlist(n: number): void {
    this.#unkept.fill(EMPTY_PACKET, 0, n);
    this.#unkeptCount = this.#unkeptBytes = 0;
    this.#unkeptIn = EMPTY;
  }

  /**
   * {@linkcode CompareEngine.keepHeld} for an input that reads into blocks from
   * {@linkcode CompareEngine.readBuffer}: when the held frames lie in such a block and fill at
   * least `keepInPlaceFrom` bytes of it, or fewer while under {@linkcode SPARSE_KEPT_MAX} such
   * blocks hold frames, they are not copied; the block becomes their slab (issue 11: a copy
   * per held frame less), goes back to the pool once they are all gone, and the input must
   * read into another block. Returns true then; otherwise copies them as `keepHeld` does and
   * returns false (the input reads into the same block again).
   */
  keepHeldInPlace(): boolean {
    const block = this.#unkeptIn;
    const n = this.#unkeptCount;
    // A frame listed seldom leaves within the read that brought it (the other side's copies
    // come in other reads): the bytes listed are about the bytes held. At worst a block is
    // kept for fewer; it goes back with the last of them all the same.
    if (n === 0 || !this.#readBuffers.has(block)) {
      this.keepHeld();
      return false;
    }
    // Fewer bytes than make the block worth keeping: kept all the same while few such blocks
    // are (a frame held until the other side's copy comes, one read at a time: no copy in and
    // none out, `FrameWriter`'s write in place), else copied.
    const sparse = this.#unkeptBytes < (this.#keepInPlaceFrom || keepInPlaceFrom(block));
    if (sparse && this.#store.sparseSlabs >= SPARSE_KEPT_MAX) {
      this.keepHeld();
      return false;
    }
    this.#sameIn = this.#sameAs = EMPTY;
    // The sink copies what it was handed from this block now: once the frames kept here are
    // gone, the block is the pool's again.
    if (this.#settles) this.#sink.settle!();
    this.#readBuffers.delete(block);
    this.#store.adopt(block, this.#unkept, n, sparse);
    this.#unlist(n);
    if (this.#store.slabs > this.#unpinAt) this.#unpinSlabs();
    return true;
  }

  /**
   * A block to read frames into, for {@linkcode CompareEngine.keepHeldInPlace}: of
   * {@linkcode READ_BLOCK_SIZE} bytes, or of the slabs' size (`SLAB_SIZE`, from the shared
   * pool). The sink copies what it was handed first: the block may have been a slab whose
   * frames it has not copied yet.
   */
  readBuffer(size: number = READ_BLOCK_SIZE): Uint8Array {
    if (this.#settles) this.#sink.settle!();
    const block = this.#store.takeBlock(size);
    this.#readBuffers.add(block);
    return block;
  }

  /**
   * Parses the frame into `#info` and finds its connection, or admits a new one. Returns null
   * when the frame was passed through or dropped instead (not comparable, SPEC 4; or no room
   * for its connection). A frame that is byte for byte the other side's oldest held frame (the
   * common case: the replicas' outputs in the same order) is not parsed: the same bytes parse
   * the same, so its fields and connection are that frame's (issue 11).
   */
  #connectionOf(
    side: Side,
    bytes: Uint8Array,
    at: number,
    size: number,
    vnetLen: number,
    now: number,
  ): Connection | null {
    const info = this.#info;
    const twin = this.tracer === null ? this.#twinOf(side, bytes, at, size, vnetLen) : null;
    this.#twin = twin;
    if (twin !== null) return this.#fieldsOf(twin, at);
    const sink = this.#sink;
    if (parseFrameAt(bytes, at, size, vnetLen, info) === UNSUPPORTED) {
      this.tracer?.trace("colo_compare_main", { str: `${side}: unsupported packet in` });
      if (side === "primary") sink.release(bytes, at, size, vnetLen, "passthrough", info.reason);
      else sink.discard(side, info.reason, bytes, at, size, null);
      return null;
    }
    let conn = this.#table.find(info.key, info.keyLen);
    if (conn !== null && conn.closed && conn.empty && (info.flags & TH_SYN) !== 0 && conn.tcp) {
      // Kept, closed and empty, only for a matched secondary's pass (`#place`): a SYN opens
      // the 4-tuple anew, and the new connection must not inherit the old one's compared
      // position and ACKs (a new ISN behind them would be released uncompared).
      this.#table.remove(conn);
      conn = null;
    }
    conn ??= this.#newConnection(info);
    if (conn === null) {
      sink.discard(side, "table-full", bytes, at, size, null);
      sink.checkpoint("resources", null, now);
    }
    return conn;
  }

  /**
   * Fills `#info` for a frame at `at` that is `twin` byte for byte, as parsing it would (the
   * same bytes parse the same), and returns its connection: held, so in the table and with
   * its handle.
   */
  #fieldsOf(twin: Packet, at: number): Connection {
    const info = this.#info;
    const conn = twin.conn!;
    const start = at + twin.start - twin.at;
    if (conn.tcp) {
      info.kind = TCP_SEGMENT;
      info.payload = start;
      info.payloadLen = twin.len;
      info.seq = twin.seq;
      info.ack = twin.ack;
      info.flags = twin.flags;
    } else {
      info.kind = DATAGRAM;
      info.l4 = start;
      info.ipEnd = start + twin.len;
    }
    return conn;
  }

  /**
   * The other side's oldest held frame when `bytes[at, at + size)` (with `vnetLen`) is byte
   * for byte that frame, or null.
   */
  #twinOf(
    side: Side,
    bytes: Uint8Array,
    at: number,
    size: number,
    vnetLen: number,
  ): Packet | null {
    const oldest = this.#oldest;
    if (oldest === null || oldest.side === side || oldest.size !== size) return null;
    // Another frame of the same size (the oldest waits for a retransmission, say) mostly ends
    // in other bytes: told apart without the native comparison's call.
    const end = size - 1;
    if (oldest.vnetLen !== vnetLen || oldest.bytes[oldest.at + end] !== bytes[at + end]) {
      return null;
    }
    const held = oldest.bytes;
    if (
      bytes === this.#sameIn && held === this.#sameAs && at >= this.#sameFrom &&
      at + size <= this.#sameTo && at - this.#sameFrom === oldest.at - this.#sameAsFrom
    ) return oldest;
    // Compare on past this frame, as far as the last comparisons found equal bytes and no
    // further than the held frames go: past the newest of them lie stale bytes (a slab's or a
    // read block's earlier contents), and with one frame per read (a request and its answer)
    // comparing those would cost up to a block's length per frame and never find a twin.
    const newest = this.#newest!;
    const heldEnd = newest.side === oldest.side && newest.bytes === held
      ? newest.at + newest.size
      : oldest.at + size;
    const span = Math.min(this.#sameSpan, bytes.length - at, heldEnd - oldest.at);
    if (span > size && bytesEqual(held, oldest.at, bytes, at, span)) {
      this.#sameIn = bytes;
      this.#sameFrom = at;
      this.#sameTo = at + span;
      this.#sameAs = held;
      this.#sameAsFrom = oldest.at;
      this.#sameSpan = Math.min(2 * span, MAX_SAME_SPAN);
      return oldest;
    }
    if (!bytesEqual(held, oldest.at, bytes, at, size)) {
      this.#sameSpan = 0;
      return null;
    }
    this.#sameSpan = 4 * size;
    return oldest;
  }

  /** A TCP segment's FIN/RST and ACK, noted before it is compared (SPEC 6, 8). */
  #trackTcp(primary: boolean, conn: Connection, info: FrameInfo): void {
    if ((info.flags & (TH_FIN | TH_RST)) !== 0) {
      if (primary) conn.primaryClosed = true;
      else conn.secondaryClosed = true;
    }
    // The ACK field of every segment, as QEMU reads it whatever the flags: a SYN or an RST
    // without the ACK flag carries one too (mostly 0).
    if (primary) {
      if (!conn.primaryAckSet || seqAfter(info.ack, conn.primaryAck)) {
        conn.primaryAck = info.ack;
        conn.primaryAckSet = true;
      }
    } else if (!conn.secondaryAckSet || seqAfter(info.ack, conn.secondaryAck)) {
      conn.secondaryAck = info.ack;
      conn.secondaryAckSet = true;
    }
  }

  /**
   * The common case, decided without queueing the arriving frame (issue 11): its own side
   * holds nothing on `conn` and it is the twin of the other side's oldest held frame (the
   * same TCP segment, or the same datagram). Releases the primary and drops the secondary
   * exactly as queueing it and running `compareTcp` / `compareDatagrams` would, and returns
   * true; returns false, having changed nothing, when the general path must decide.
   */
  #pairAtOnce(
    primary: boolean,
    conn: Connection,
    kind: FrameKind,
    bytes: Uint8Array,
    at: number,
    size: number,
    vnetLen: number,
    now: number,
  ): boolean {
    if ((primary ? conn.primary : conn.secondary).length !== 0) return false;
    const other = primary ? conn.secondary : conn.primary;
    const head = other.peek();
    if (head === undefined) return false;
    const info = this.#info;
    // The head itself, byte for byte: its payload needs no comparing again.
    const same = head === this.#twin;
    if (kind === TCP_SEGMENT) {
      if (!sameSegment(conn, head, info, bytes, same)) {
        return false;
      }
    } else if (!same && !sameDatagram(head, bytes, info.l4, info.ipEnd - info.l4)) return false;
    this.#paired(primary, conn, other, head, bytes, at, size, vnetLen, now);
    return true;
  }

  /**
   * The arriving frame `bytes[at, at + size)` matched `head`, the head of `other` (the other
   * side's queue on `conn`): the primary of the two goes out, the secondary is dropped.
   */
  #paired(
    primary: boolean,
    conn: Connection,
    other: PacketQueue,
    head: Packet,
    bytes: Uint8Array,
    at: number,
    size: number,
    vnetLen: number,
    now: number,
  ): void {
    other.shift();
    // QEMU's comparison here takes a matched secondary it still held off its queue first.
    if (conn.tcp) conn.takeMatchedSecondaryDropped(this.#epoch);
    conn.noteMatched();
    if (primary) {
      this.#sink.release(bytes, at, size, vnetLen, "compared", undefined, now);
      this.dropSecondary(head);
      if (conn.tcp) dropIfFullyMatched(this, conn);
    } else {
      this.sendPrimary(head);
      this.#sink.discard("secondary", "compared", bytes, at, size, conn);
    }
  }

  /** Admits a new connection; when the table is full, the one idle for longest goes. O(1). */
  #newConnection(info: FrameInfo): Connection | null {
    const table = this.#table;
    if (table.size >= this.#maxConnections) {
      const idle = table.oldestIdle();
      if (idle === null) return null;
      this.tracer?.trace("colo_compare_connection_evicted", { conn: idle.name });
      table.remove(idle);
    }
    return table.add(info.key, info.keyLen, info.kind === TCP_SEGMENT);
  }

  /**
   * After its queues changed: a connection that holds frames is one a flush walks; one that
   * holds nothing is idle from `now`, or forgotten at once when both VMs closed it (SPEC 8).
   * Not while a dropped matched secondary's pass is due: QEMU still holds that segment, and
   * lets the close's last primary segment (its final ACK, say) go out against it. The pass
   * is taken by the next primary segment; until then the connection is idle.
   */
  #place(conn: Connection, now: number): void {
    const table = this.#table;
    if (!conn.empty) table.markHeld(conn);
    else if (conn.closed && !(conn.tcp && conn.passDue(this.#epoch))) table.remove(conn);
    else table.markIdle(conn, now);
  }

  /** Forgets connections idle for `idleTimeout` or longer, oldest first. O(forgotten). */
  #forgetIdle(now: number): void {
    this.#table.forgetIdle(now, this.#idleTimeout);
  }

  /** A packet record for the frame `bytes[at, at + size)` about to be queued on `conn`. */
  #packet(
    side: Side,
    conn: Connection,
    bytes: Uint8Array,
    at: number,
    size: number,
    vnetLen: number,
    createdAt: number,
  ): Packet {
    const p = this.#packets.take();
    p.serial = this.#serial = (this.#serial + 1) | 0;
    p.bytes = bytes;
    p.at = at;
    p.size = size;
    p.vnetLen = vnetLen;
    p.createdAt = createdAt;
    p.side = side;
    p.conn = conn;
    p.offset = 0;
    return p;
  }

  #hold(p: Packet): void {
    p.queued = true;
    p.older = this.#newest;
    p.newer = null;
    if (this.#newest) this.#newest.newer = p;
    else this.#oldest = p;
    this.#newest = p;
    this.#countHeld(p.side === "primary", 1, p.size);
  }

  #unhold(p: Packet): void {
    p.queued = false;
    if (p.older) p.older.newer = p.newer;
    else this.#oldest = p.newer;
    if (p.newer) p.newer.older = p.older;
    else this.#newest = p.older;
    p.older = p.newer = null;
    this.#countHeld(p.side === "primary", -1, p.size);
  }

  /** `n` frames of `size` bytes more held from a side (fewer when `n` is negative). */
  #countHeld(primary: boolean, n: number, size: number): void {
    if (primary) {
      this.#heldPrimary += n;
      this.#heldPrimaryBytes += n * size;
    } else {
      this.#heldSecondary += n;
      this.#heldSecondaryBytes += n * size;
    }
  }

  /**
   * Where the last primary TCP segment dropped at a full queue ended, per connection (SPEC 5,
   * the `tcp-gap` rule in `tcp.ts`); kept by the table for the few connections that
   * overflowed (a handle is not the connection for long: see `Connection`).
   */
  primaryDroppedUntil(conn: Connection): Seq32 | undefined {
    const until = this.#table.droppedUntil(conn);
    if (until === undefined || !conn.compareSeqSet || seqAfter(until, conn.compareSeq)) {
      return until;
    }
    // The compared stream has passed it: forgotten.
    this.#table.setDroppedUntil(conn, undefined);
    return undefined;
  }

  /** Checkpoint flushes so far: the epoch frames held now belong to. */
  get epoch(): number {
    return this.#epoch;
  }

  /** Gives back a packet the sink was handed by a checkpoint flush, once it is written. */
  readonly #recycleLater = (p: Packet): void => this.#recycle(p);

  #recycle(p: Packet): void {
    this.#store.release(p);
    p.bytes = EMPTY;
    p.at = 0;
    p.size = 0;
    p.conn = null;
    this.#packets.give(p);
  }

  // CompareContext, used by the TCP and datagram rules.

  sendPrimary(p: Packet): void {
    p.conn!.noteMatched();
    this.#unhold(p);
    this.tracer?.trace("colo_compare_main", { str: "packet same and release packet" });
    this.#sink.release(p.bytes, p.at, p.size, p.vnetLen, "compared", undefined, p.createdAt);
    this.#recycle(p);
  }

  dropSecondary(s: Packet): void {
    this.#unhold(s);
    this.#sink.discard("secondary", "compared", s.bytes, s.at, s.size, s.conn);
    this.#recycle(s);
  }

  mismatch(reason: CheckpointReason, conn: Connection, now: number): void {
    if (this.#divergence !== null) {
      // The rules compare the primary head with the secondary head (TCP) or with every held
      // secondary datagram: those are the frames the divergence is about.
      const secondaries: Packet[] = [];
      if (conn.tcp) {
        const s = conn.secondary.peek();
        if (s !== undefined) secondaries.push(s);
      } else {
        for (let i = 0; i < conn.secondary.length; i++) secondaries.push(conn.secondary.at(i));
      }
      this.#tell(reason, conn, conn.primary.peek() ?? null, secondaries, now);
    }
    this.#sink.checkpoint(reason, conn, now);
  }

  /**
   * Gives a divergence to the hook, once: a frame that waits is compared again at every frame
   * its connection receives (and a timeout is seen at every scan until a checkpoint), and each
   * time the hook was given the same frames, with every secondary held so far (a capture full
   * of copies of one divergence, quadratic in the queue). A comparison told again for the same
   * frame gives the hook only the secondaries that came since, with the primary, and nothing
   * when none came; a frame's timeout is told once. The two are kept apart, so that a scan's
   * timeout between two arrivals does not make the next comparison whole again.
   */
  #tell(
    reason: CheckpointReason,
    conn: Connection,
    primary: Packet | null,
    secondaries: Packet[],
    now: number,
  ): void {
    const head = primary ?? secondaries[0];
    if (head === undefined) return this.#divergence!(reason, conn, primary, secondaries, now);
    let told = this.#told.get(conn);
    if (told === undefined) {
      told = { reason, head: head.serial, last: head.serial, aged: null };
      this.#told.set(conn, told);
    } else if (reason === "timeout") {
      if (told.aged === head.serial) return;
    } else if (told.reason === reason && told.head === head.serial) {
      // TCP: one secondary, the head of its queue (by sequence number, not arrival). Others:
      // every secondary held, in arrival order, none taken out while the primary waits.
      const last = told.last;
      secondaries = conn.tcp
        ? secondaries.filter((s) => s.serial !== last)
        : secondaries.filter((s) => ((s.serial - last) | 0) > 0);
      if (secondaries.length === 0) return;
    }
    if (reason === "timeout") told.aged = head.serial;
    else {
      told.reason = reason;
      told.head = head.serial;
      told.last = secondaries.length === 0 ? head.serial : secondaries.at(-1)!.serial;
    }
    this.#divergence!(reason, conn, primary, secondaries, now);
  }
}

/** What a connection's divergences told the hook (frames by their serials). */
interface Told {
  /**
   * The last comparison told: its reason, its primary frame, the last secondary given (a
   * timeout, until a comparison is told: no comparison's reason).
   */
  reason: CheckpointReason;
  head: number;
  last: number;
  /** The last frame whose timeout was told, or null. */
  aged: number | null;
}

const EMPTY = new Uint8Array(0);
/** The most bytes one comparison for twins covers (a read's). */
const MAX_SAME_SPAN = READ_BLOCK_SIZE;
/** What `#unkept` holds past its end. */
const EMPTY_PACKET = new Packet();

function isHeld(p: Packet): boolean {
  return p.queued;
}

function ignore(): void {}
