/**
 * Connections (SPEC 5): one per key, each direction its own, listed in first-seen order; and
 * their bounds (SPEC 8): idle and closed connections are forgotten, and admitting or evicting
 * one costs O(1) however full the table is.
 *
 * @module
 */

import { describeKey, hashKey } from "../packet/parse.ts";
import { KeyCache } from "./key_cache.ts";
import { PacketQueue } from "./packet.ts";
import type { Side } from "./packet.ts";
import { objectArray, Pool } from "../pool.ts";
import type { Seq32 } from "../packet/seq.ts";
import {
  BUCKET_NEXT,
  CHUNK_MASK,
  CHUNK_SHIFT,
  CHUNK_SLOTS,
  COMPARE_SEQ,
  FLAGS,
  HASH,
  IDLE_NEXT,
  IDLE_PREV,
  IDLE_SINCE,
  KEY_BYTE,
  keyOf,
  NO_RECORDS,
  PRIMARY_ACK,
  type RecordChunk,
  Records,
  SECONDARY_ACK,
  wordOf,
} from "./records.ts";

// Bits of a record's flags word.
const TCP = 1 << 0;
const COMPARE_SEQ_SET = 1 << 1;
const PRIMARY_ACK_SET = 1 << 2;
const SECONDARY_ACK_SET = 1 << 3;
const PRIMARY_CLOSED = 1 << 4;
const SECONDARY_CLOSED = 1 << 5;
const IDLE = 1 << 6;
const HELD = 1 << 7;
const MATCHED_SECONDARY_DROPPED = 1 << 8;
const MATCHED = 1 << 9;
/** The checkpoint epoch of `MATCHED_SECONDARY_DROPPED`, mod 2^16, in the flag word's top half. */
const EPOCH_SHIFT = 16;

/** Sets or clears `bit` of the word at `at` (a function: a private method costs a brand check). */
function setBit(u32: Uint32Array, at: number, bit: number, on: boolean): void {
  u32[at] = on ? u32[at] | bit : u32[at] & ~bit;
}

/** Names of connections that were named (logs, traces): few, and forgotten with them. */
const names = new WeakMap<Connection, string>();

/**
 * One connection, as the engine and the comparison rules see it: its two queues and its TCP
 * comparison state. A handle on the connection's record (`records.ts`), where the state is
 * kept off the V8 heap (issue 11: an idle connection should cost at most 200 bytes, as in
 * QEMU); the handle itself holds only the queues and the links of the table's lists.
 *
 * The table keeps a handle only while the connection holds frames or was used recently (the
 * {@linkcode AWAKE_IDLE_MAX} most recently idle ones): an idle connection past that is
 * hibernated, its handle given back to the table's pool, and the next frame on its key gets a
 * handle from the pool with the same state. A connection has one handle at a time, so a handle
 * is the connection for as long as anything (a held `Packet`, the lookup cache, the flush) can
 * hold it; nothing may keep one beyond that (a `Packet` drops its own when recycled, sinks read
 * what they need when called). Handles and their queues are reused, not left to the garbage
 * collector: a burst of new connections would otherwise leave their handles and queue arrays
 * in the old generation by the thousand (issue 11). Where the bytes go: bench/README.md,
 * "Idle connections".
 */
export class Connection {
  /** The frames held from the primary, in order. */
  readonly primary = new PacketQueue();
  /** The frames held from the secondary, in order. */
  readonly secondary = new PacketQueue();
  #slot = -1;
  #chunk: RecordChunk = NO_RECORDS;
  // The record's chunk as bytes and as unsigned 32-bit words, and where the record is in each:
  // the hot path reads and writes them on every frame.
  #u8: Uint8Array = NO_RECORDS.u8;
  #u32: Uint32Array = NO_RECORDS.u32;
  /** Word index of the record in its chunk. */
  #at = 0;
  /** Word index of the record's flags in its chunk. */
  #flagsAt = 0;
  /**
   * Its frames the engine deferred (`deferred.ts`): held as much as queued ones, so that the
   * connection is not idle, hibernated or evicted meanwhile. None whenever the handle is free.
   */
  deferred = 0;
  /** TCP: where the last of those segments ends (int32, read as uint32). */
  deferredEnd = 0;
  /** Links in the table's list of connections that hold frames or of recently idle ones. */
  listPrev: Connection | null = null;
  listNext: Connection | null = null;

  /** The handle of `slot`'s connection (a handle from the pool: of none before). */
  bind(records: Records, slot: number): this {
    this.#slot = slot;
    const chunk = this.#chunk = records.chunkOf(slot);
    this.#u8 = chunk.u8;
    this.#u32 = chunk.u32;
    this.#at = wordOf(slot);
    this.#flagsAt = this.#at + FLAGS;
    names.delete(this);
    return this;
  }

  /** The slot of its record in the table's records. */
  get slot(): number {
    return this.#slot;
  }

  /** Position in first-seen order (increasing, never reused). */
  get id(): number {
    return this.#chunk.f64[this.#at >>> 1];
  }

  /** The key's bytes (a copy). */
  keyBytes(): Uint8Array {
    return keyOf(this.#chunk, this.#slot);
  }

  /** The IP protocol number (key byte 1). */
  get protocol(): number {
    return this.#u8[(this.#at << 2) + KEY_BYTE + 1];
  }

  /** Compared as a TCP byte stream (otherwise datagram by datagram). */
  get tcp(): boolean {
    return (this.#u32[this.#flagsAt] & TCP) !== 0;
  }

  /** TCP: the stream is known to agree up to here (QEMU's `compare_seq`). */
  get compareSeq(): Seq32 {
    return this.#u32[this.#at + COMPARE_SEQ];
  }

  set compareSeq(seq: Seq32) {
    this.#u32[this.#at + COMPARE_SEQ] = seq;
  }

  get compareSeqSet(): boolean {
    return (this.#u32[this.#flagsAt] & COMPARE_SEQ_SET) !== 0;
  }

  set compareSeqSet(on: boolean) {
    setBit(this.#u32, this.#flagsAt, COMPARE_SEQ_SET, on);
  }

  /** TCP: the highest ACK seen on each side, in serial order (QEMU's `pack` / `sack`). */
  get primaryAck(): Seq32 {
    return this.#u32[this.#at + PRIMARY_ACK];
  }

  set primaryAck(ack: Seq32) {
    this.#u32[this.#at + PRIMARY_ACK] = ack;
  }

  get primaryAckSet(): boolean {
    return (this.#u32[this.#flagsAt] & PRIMARY_ACK_SET) !== 0;
  }

  set primaryAckSet(on: boolean) {
    setBit(this.#u32, this.#flagsAt, PRIMARY_ACK_SET, on);
  }

  get secondaryAck(): Seq32 {
    return this.#u32[this.#at + SECONDARY_ACK];
  }

  set secondaryAck(ack: Seq32) {
    this.#u32[this.#at + SECONDARY_ACK] = ack;
  }

  get secondaryAckSet(): boolean {
    return (this.#u32[this.#flagsAt] & SECONDARY_ACK_SET) !== 0;
  }

  set secondaryAckSet(on: boolean) {
    setBit(this.#u32, this.#flagsAt, SECONDARY_ACK_SET, on);
  }

  /**
   * TCP: a FIN or RST was seen from the primary / from the secondary. A key is one direction
   * of a conversation, so "closed in both directions" (SPEC 8) means here: both VMs closed
   * their side of this direction, each with a FIN or an RST (the client's direction is a key
   * of its own that colo-compare never sees).
   */
  get primaryClosed(): boolean {
    return (this.#u32[this.#flagsAt] & PRIMARY_CLOSED) !== 0;
  }

  set primaryClosed(on: boolean) {
    setBit(this.#u32, this.#flagsAt, PRIMARY_CLOSED, on);
  }

  get secondaryClosed(): boolean {
    return (this.#u32[this.#flagsAt] & SECONDARY_CLOSED) !== 0;
  }

  set secondaryClosed(on: boolean) {
    setBit(this.#u32, this.#flagsAt, SECONDARY_CLOSED, on);
  }

  /**
   * A primary frame went out here as the same as the secondary's: both VMs send on this
   * connection, so a queue that grows long on it is one the other side catches up with (flow
   * control, `CompareEngine.longQueueMatched`).
   */
  get matched(): boolean {
    return (this.#u32[this.#flagsAt] & MATCHED) !== 0;
  }

  /** Notes a compared primary frame (see `matched`). */
  noteMatched(): void {
    this.#u32[this.#flagsAt] |= MATCHED;
  }

  /** On the table's idle list. */
  get idle(): boolean {
    return (this.#u32[this.#flagsAt] & IDLE) !== 0;
  }

  set idle(on: boolean) {
    setBit(this.#u32, this.#flagsAt, IDLE, on);
  }

  /** On the table's list of connections that hold frames. */
  get held(): boolean {
    return (this.#u32[this.#flagsAt] & HELD) !== 0;
  }

  set held(on: boolean) {
    setBit(this.#u32, this.#flagsAt, HELD, on);
  }

  /**
   * TCP: a fully matched secondary segment was dropped here (SPEC 9: QEMU keeps it queued) in
   * checkpoint epoch `epoch`. QEMU's next comparison on this connection takes that segment off
   * its queue first, and lets the primary segment it pops pass when it has nothing to compare
   * (no payload, or bytes compared already). `takeMatchedSecondaryDropped` tells whether such a
   * pass is due, once.
   */
  noteMatchedSecondaryDropped(epoch: number): void {
    const u32 = this.#u32;
    const at = this.#flagsAt;
    u32[at] = (u32[at] & 0xffff) | MATCHED_SECONDARY_DROPPED | ((epoch & 0xffff) << EPOCH_SHIFT);
  }

  /**
   * Whether a fully matched secondary segment was dropped here in checkpoint epoch `epoch`
   * and not taken yet (a checkpoint flush empties QEMU's queues: one from an earlier epoch is
   * gone there). Taken either way.
   */
  takeMatchedSecondaryDropped(epoch: number): boolean {
    const u32 = this.#u32;
    const at = this.#flagsAt;
    const flags = u32[at];
    if ((flags & MATCHED_SECONDARY_DROPPED) === 0) return false;
    u32[at] = flags & 0xffff & ~MATCHED_SECONDARY_DROPPED;
    return flags >>> EPOCH_SHIFT === (epoch & 0xffff);
  }

  /**
   * Whether a pass noted by {@linkcode noteMatchedSecondaryDropped} in epoch `epoch` is still
   * due (not taken): QEMU holds that segment yet. Changes nothing.
   */
  passDue(epoch: number): boolean {
    const flags = this.#u32[this.#flagsAt];
    return (flags & MATCHED_SECONDARY_DROPPED) !== 0 && flags >>> EPOCH_SHIFT === (epoch & 0xffff);
  }

  /** True when neither queue holds a frame, and none is deferred. */
  get empty(): boolean {
    return this.primary.length === 0 && this.secondary.length === 0 && this.deferred === 0;
  }

  /** True once both VMs closed this direction (FIN or RST from each). */
  get closed(): boolean {
    return (~this.#u32[this.#flagsAt] & (PRIMARY_CLOSED | SECONDARY_CLOSED)) ===
      0;
  }

  /** Notes that the connection holds nothing since `now` (ms). */
  idleFrom(now: number): void {
    this.#u32[this.#at + IDLE_SINCE] = Math.ceil(now);
  }

  /**
   * Milliseconds it has held nothing at `now`, in whole ms, never more than the truth (`now`
   * rounded down, the start rounded up): exact for intervals under 2^31 ms, 24.8 days, far
   * beyond the idle timeout that forgets it (SPEC 8).
   */
  idleFor(now: number): number {
    return idleMs(this.#chunk.i32[this.#at + IDLE_SINCE], now);
  }

  /** The key as operators read it, e.g. `tcp 10.0.0.1:80 > 10.0.0.2:40000`. */
  get name(): string {
    let name = names.get(this);
    if (name === undefined) names.set(this, name = describeKey(this.keyBytes()));
    return name;
  }
}

/** Milliseconds from `since` (whole ms as int32, see `idleFrom`) to `now`, wrap-safe. */
function idleMs(since: number, now: number): number {
  return ((Math.floor(now) | 0) - since) | 0;
}

/**
 * Idle connections that keep their handle (the most recently idle ones): the busy connections
 * of a workload find theirs in the lookup cache, and the rest hibernate (see
 * {@linkcode Connection}). As many as the lookup cache has slots.
 */
export const AWAKE_IDLE_MAX = 256;

/** Fewest hash buckets (a power of two, as every bucket count); doubled when outnumbered. */
const MIN_BUCKETS = 64;

/**
 * The bucket of `hash` among `2^(32 - shift)`: the top bits of a multiplicative (Fibonacci)
 * hash. Chosen when the key hash was FNV-1a, whose low bits put keys whose address and port
 * change together into few buckets; harmless with the keyed hash that followed it.
 */
function bucketOf(hash: number, shift: number): number {
  return Math.imul(hash, 0x9e3779b1) >>> shift;
}

/** `n` empty buckets (-1: no slot). */
function emptyBuckets(n: number): Int32Array {
  return new Int32Array(n).fill(-1);
}

/**
 * The connection table: a hash of keys to connections, the idle list (connections whose
 * queues are empty, least recently idle first) and the list of connections that hold frames.
 * A connection is on exactly one of the two once the engine has placed it
 * ({@linkcode ConnectionTable.markIdle} / {@linkcode markHeld}). Every operation is O(1)
 * except the flush, which sorts only the connections that hold frames, and the walk in
 * first-seen order (sorts them all; tests and diagnostics only). Lookups take the key bytes in
 * a scratch buffer and allocate nothing unless the connection is new or was hibernated.
 *
 * Every connection is a record in typed-array memory (`records.ts`, 64 bytes, 88 for IPv6),
 * and the hash buckets and the idle list link records by slot: an idle connection costs its
 * record and a bucket or two, about 75 bytes (IPv6 100), none of it on the V8 heap (issue 11).
 * The connections that hold frames and the {@linkcode AWAKE_IDLE_MAX} most recently idle ones
 * also have a handle ({@linkcode Connection}), found by slot in `#bySlot`; the list of
 * connections that hold frames and the list of recently idle ones link those handles.
 */
export class ConnectionTable {
  readonly #records = new Records();
  /** First slot of each bucket's chain (linked through BUCKET_NEXT), or -1. */
  #buckets = emptyBuckets(MIN_BUCKETS);
  /** 32 - log2(buckets). */
  #shift = 32 - Math.log2(MIN_BUCKETS);
  /** The idle list, by slot (linked through IDLE_PREV / IDLE_NEXT): all idle connections. */
  #idleFirst = -1;
  #idleLast = -1;
  /** Handles of the connections that hold frames. */
  #held = new ConnectionList();
  /** Handles of idle connections, least recently idle or found first (hibernated from here). */
  #awakeIdle = new ConnectionList();
  /**
   * The live handle of each connection that has one, by slot: an array per chunk of records,
   * made with it and kept (a `Map` rehashed its whole table every few thousand handles taken
   * and given back: old-generation garbage when connections open in a burst).
   */
  readonly #bySlot: (Connection | null)[][] = objectArray();
  #awakeCount = 0;
  /** Handles not in use (trimmed by {@linkcode ConnectionTable.trim}). */
  readonly #handles = new Pool(() => new Connection());
  /** Scratch list for {@linkcode ConnectionTable.drainHeld}. */
  #draining: Connection[] = objectArray();
  /** Recently found connections, looked up before the hash (issue 11). */
  readonly #cache = new KeyCache<Connection>();
  /**
   * TCP: where the last primary segment dropped at a full queue ended, by slot (SPEC 5, the
   * `tcp-gap` rule): only the few connections that overflowed; forgotten with the connection.
   */
  readonly #droppedUntil = new Map<number, Seq32>();
  readonly #awakeIdleMax: number;
  #size = 0;
  #nextId = 0;

  /**
   * `awakeIdleMax`: idle connections that keep their handle (at least 1; fewer than the
   * default only to test hibernation).
   */
  constructor(awakeIdleMax: number = AWAKE_IDLE_MAX) {
    this.#awakeIdleMax = Math.max(1, awakeIdleMax);
  }

  get size(): number {
    return this.#size;
  }

  /** Connections that hold frames. */
  get heldCount(): number {
    return this.#held.count;
  }

  /** Connections with a handle (those holding frames and the recently idle ones). */
  get awakeCount(): number {
    return this.#awakeCount;
  }

  /** Bytes of the connection records and hash buckets, off the V8 heap. */
  get recordBytes(): number {
    return this.#records.byteLength + this.#buckets.byteLength;
  }

  /**
   * The connection with this key, or null. Recently found connections are looked up in a small
   * cache first (issue 11); the table hashes the key only when the cache misses.
   */
  find(key: Uint8Array, keyLen: number): Connection | null {
    const cache = this.#cache;
    const cached = cache.get(key, keyLen);
    if (cached !== null) return cached;
    const hash = cache.hash;
    const records = this.#records;
    for (
      let s = this.#buckets[bucketOf(hash, this.#shift)];
      s >= 0;
      s = records.get(s, BUCKET_NEXT)
    ) {
      if (records.get(s, HASH) !== hash || !records.hasKey(s, key, keyLen)) continue;
      const c = this.#handle(s);
      cache.put(c, key, keyLen, hash);
      return c;
    }
    return null;
  }

  /** Adds a new connection, last in first-seen order (neither idle nor held yet). */
  add(key: Uint8Array, keyLen: number, tcp: boolean): Connection {
    const records = this.#records;
    const slot = records.alloc();
    const hash = hashKey(key, keyLen);
    records.fill(slot, this.#nextId++, key, keyLen, hash, tcp ? TCP : 0);
    if (++this.#size > this.#buckets.length) this.#rehash(this.#buckets.length * 2);
    const at = bucketOf(hash, this.#shift);
    records.set(slot, BUCKET_NEXT, this.#buckets[at]);
    this.#buckets[at] = slot;
    const c = this.#handles.take().bind(records, slot);
    this.#setHandle(slot, c);
    this.#cache.put(c, key, keyLen, hash);
    return c;
  }

  /** The queue of `c` to add a frame from `side` to. */
  queueFor(c: Connection, side: Side): PacketQueue {
    return side === "primary" ? c.primary : c.secondary;
  }

  /** Where the last primary segment `c` dropped at a full queue ended, if it did (see `tcp.ts`). */
  droppedUntil(c: Connection): Seq32 | undefined {
    return this.#droppedUntil.size === 0 ? undefined : this.#droppedUntil.get(c.slot);
  }

  setDroppedUntil(c: Connection, until: Seq32 | undefined): void {
    if (until === undefined) this.#droppedUntil.delete(c.slot);
    else this.#droppedUntil.set(c.slot, until);
  }

  /** Gives up handles unused for a while (see `Pool.trim`; `now` in ms). */
  trim(now: number): void {
    this.#handles.trim(now);
  }

  /** Forgets a connection (its queues must be empty). */
  remove(c: Connection): void {
    this.#removeSlot(c.slot);
  }

  /** `c` holds nothing since `now`: it goes to the end of the idle list. */
  markIdle(c: Connection, now: number): void {
    c.idleFrom(now);
    const awakeIdle = this.#awakeIdle;
    if (c === awakeIdle.last && c.slot === this.#idleLast) return;
    this.#unlist(c);
    c.idle = true;
    this.#appendIdle(c.slot);
    awakeIdle.append(c);
    if (awakeIdle.count > this.#awakeIdleMax) this.#hibernate(awakeIdle.first!);
  }

  /** `c` holds frames: it leaves the idle list and joins the connections a flush walks. */
  markHeld(c: Connection): void {
    if (c.held) return;
    this.#unlist(c);
    c.held = true;
    this.#held.append(c);
  }

  /** The connection idle for longest, or null. O(1). */
  oldestIdle(): Connection | null {
    return this.#idleFirst < 0 ? null : this.#handle(this.#idleFirst);
  }

  /** Forgets the connections idle for `timeout` ms or longer at `now`, oldest first (SPEC 8). */
  forgetIdle(now: number, timeout: number): void {
    const records = this.#records;
    for (let s = this.#idleFirst; s >= 0; s = this.#idleFirst) {
      if (idleMs(records.get(s, IDLE_SINCE), now) < timeout) break;
      this.#removeSlot(s);
    }
  }

  /**
   * Calls `fn` for every connection that holds frames, in first-seen order, and takes them off
   * the held list first (`fn` places each one again; if it throws, the rest are placed as
   * idle since `now` or held). O(h log h) for h such connections.
   */
  drainHeld(fn: (c: Connection) => void, now: number): void {
    const held = this.#held;
    if (held.count === 0) return;
    const list = this.#draining;
    while (held.first !== null) {
      const c = held.first;
      held.unlink(c);
      c.held = false;
      list.push(c);
    }
    list.sort(byFirstSeen);
    let i = 0;
    try {
      for (; i < list.length; i++) fn(list[i]);
    } finally {
      // If `fn` threw, place the connections it did not place itself.
      for (; i < list.length; i++) {
        const c = list[i];
        if (c.held || c.idle) continue;
        if (c.empty) this.markIdle(c, now);
        else this.markHeld(c);
      }
      list.length = 0;
    }
  }

  /**
   * Connections in first-seen order (a snapshot: O(n log n), for tests and diagnostics, to be
   * read at once). A hibernated connection comes as a handle of its own, outside the pool, that
   * only reads it; it stays hibernated.
   */
  [Symbol.iterator](): IterableIterator<Connection> {
    const records = this.#records;
    const slots: number[] = [];
    for (const first of this.#buckets) {
      for (let s = first; s >= 0; s = records.get(s, BUCKET_NEXT)) slots.push(s);
    }
    slots.sort((a, b) => records.id(a) - records.id(b));
    return slots.map((s) => this.#handleOf(s) ?? new Connection().bind(records, s)).values();
  }

  /** The live handle of `slot`'s connection; a hibernated one wakes up. */
  #handle(slot: number): Connection {
    let c = this.#handleOf(slot);
    if (c === null) {
      c = this.#handles.take().bind(this.#records, slot);
      this.#setHandle(slot, c);
      // It was idle (only idle connections hibernate): the newest of the recently idle.
      const awakeIdle = this.#awakeIdle;
      awakeIdle.append(c);
      if (awakeIdle.count > this.#awakeIdleMax) this.#hibernate(awakeIdle.first!);
    }
    return c;
  }

  /** The live handle of `slot`'s connection, or null. */
  #handleOf(slot: number): Connection | null {
    const chunk = this.#bySlot[slot >>> CHUNK_SHIFT];
    return chunk === undefined ? null : chunk[slot & CHUNK_MASK];
  }

  #setHandle(slot: number, c: Connection | null): void {
    const chunk = this.#bySlot[slot >>> CHUNK_SHIFT] ??= new Array(CHUNK_SLOTS).fill(null);
    if ((chunk[slot & CHUNK_MASK] === null) !== (c === null)) this.#awakeCount += c ? 1 : -1;
    chunk[slot & CHUNK_MASK] = c;
  }

  /** Takes the handle of `c`, an idle connection, back to the pool; its state stays in its record. */
  #hibernate(c: Connection): void {
    this.#awakeIdle.unlink(c);
    this.#setHandle(c.slot, null);
    this.#cache.forget(c, this.#records.get(c.slot, HASH));
    this.#handles.give(c);
  }

  /** Forgets the connection in `slot` (its queues must be empty), with its handle if any. */
  #removeSlot(slot: number): void {
    const records = this.#records;
    const hash = records.get(slot, HASH);
    const c = this.#handleOf(slot);
    if (c !== null) {
      this.#cache.forget(c, hash);
      if (c.held) this.#held.unlink(c);
      else if (c.idle) this.#awakeIdle.unlink(c);
      this.#setHandle(slot, null);
      this.#handles.give(c);
    }
    if ((records.flags(slot) & IDLE) !== 0) this.#unlinkIdle(slot);
    if (this.#droppedUntil.size !== 0) this.#droppedUntil.delete(slot);
    const buckets = this.#buckets;
    const at = bucketOf(hash, this.#shift);
    const next = records.get(slot, BUCKET_NEXT);
    let b = buckets[at];
    if (b === slot) {
      buckets[at] = next;
    } else {
      while (b >= 0 && records.get(b, BUCKET_NEXT) !== slot) b = records.get(b, BUCKET_NEXT);
      if (b >= 0) records.set(b, BUCKET_NEXT, next);
    }
    records.free(slot);
    if (--this.#size < buckets.length / 4 && buckets.length > MIN_BUCKETS) {
      this.#rehash(buckets.length / 2);
    }
  }

  /** Moves every connection to a new array of `n` buckets (a power of two). O(connections). */
  #rehash(n: number): void {
    const records = this.#records;
    const old = this.#buckets;
    const buckets = emptyBuckets(n);
    const shift = 32 - Math.log2(n);
    for (let first of old) {
      while (first >= 0) {
        const s = first;
        first = records.get(s, BUCKET_NEXT);
        const at = bucketOf(records.get(s, HASH), shift);
        records.set(s, BUCKET_NEXT, buckets[at]);
        buckets[at] = s;
      }
    }
    this.#buckets = buckets;
    this.#shift = shift;
  }

  /** Takes `c` off the idle or the held list, whichever it is on. */
  #unlist(c: Connection): void {
    if (c.idle) {
      this.#unlinkIdle(c.slot);
      this.#awakeIdle.unlink(c);
      c.idle = false;
    } else if (c.held) {
      this.#held.unlink(c);
      c.held = false;
    }
  }

  #appendIdle(slot: number): void {
    const records = this.#records;
    const last = this.#idleLast;
    records.set(slot, IDLE_PREV, last);
    records.set(slot, IDLE_NEXT, -1);
    if (last >= 0) records.set(last, IDLE_NEXT, slot);
    else this.#idleFirst = slot;
    this.#idleLast = slot;
  }

  #unlinkIdle(slot: number): void {
    const records = this.#records;
    const prev = records.get(slot, IDLE_PREV);
    const next = records.get(slot, IDLE_NEXT);
    if (prev >= 0) records.set(prev, IDLE_NEXT, next);
    else this.#idleFirst = next;
    if (next >= 0) records.set(next, IDLE_PREV, prev);
    else this.#idleLast = prev;
  }
}

/** Orders connections by first sight. */
function byFirstSeen(a: Connection, b: Connection): number {
  return a.id - b.id;
}

/** A doubly linked list of connection handles through their `listPrev` / `listNext`. O(1) each. */
class ConnectionList {
  first: Connection | null = null;
  last: Connection | null = null;
  count = 0;

  append(c: Connection): void {
    c.listPrev = this.last;
    c.listNext = null;
    if (this.last) this.last.listNext = c;
    else this.first = c;
    this.last = c;
    this.count++;
  }

  unlink(c: Connection): void {
    if (c.listPrev) c.listPrev.listNext = c.listNext;
    else this.first = c.listNext;
    if (c.listNext) c.listNext.listPrev = c.listPrev;
    else this.last = c.listPrev;
    c.listPrev = c.listNext = null;
    this.count--;
  }
}
