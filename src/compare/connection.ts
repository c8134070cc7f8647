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
import type { Seq32 } from "../packet/seq.ts";

// Bits of `Connection.#flags`: nine booleans in one small integer (issue 11: every field of
// a connection is 8 bytes of heap, for each of up to 65,536 of them).
const TCP = 1 << 0;
const COMPARE_SEQ_SET = 1 << 1;
const PRIMARY_ACK_SET = 1 << 2;
const SECONDARY_ACK_SET = 1 << 3;
const PRIMARY_CLOSED = 1 << 4;
const SECONDARY_CLOSED = 1 << 5;
const IDLE = 1 << 6;
const HELD = 1 << 7;
const PRIMARY_DROPPED = 1 << 8;

/** `flags` with `bit` set or cleared (a function, not a private method: those cost a field). */
function withBit(flags: number, bit: number, on: boolean): number {
  return on ? flags | bit : flags & ~bit;
}

/**
 * The queue a connection that holds no frame on a side shows for it: always empty, never
 * pushed to (frames go into a queue of the connection's own, see
 * {@linkcode Connection.queueFor}).
 */
const NO_FRAMES = new PacketQueue();

/** The two queues of a connection that holds frames (one field where two took 8 bytes more). */
export class HeldFrames {
  readonly primary = new PacketQueue();
  readonly secondary = new PacketQueue();
}

/** Names of connections that were named (logs, traces): few, and forgotten with them. */
const names = new WeakMap<Connection, string>();

/**
 * One connection: its key, its two queues and its TCP comparison state.
 *
 * Kept small (issue 11: an idle connection should cost at most 200 bytes, as in QEMU): the
 * booleans share one integer, the 32-bit sequence and ACK numbers are stored as signed 32-bit
 * integers (Deno's V8 keeps those in the field itself as small integers; an unsigned one above
 * 2^31 would be a heap number of 16 bytes more), and a connection has queues of its own only
 * while it holds frames. Where the bytes go: bench/README.md, "Idle connections".
 */
export class Connection {
  /** Position in first-seen order (increasing, never reused). */
  readonly id: number;
  /**
   * The key's bytes as a one-byte string (one char per byte): about 40 bytes of heap where a
   * Uint8Array of its own took an ArrayBuffer and a view, some 150 (issue 11: idle
   * connections). Built once per connection; lookups compare it char by char.
   */
  readonly key: string;
  #flags: number;
  /** Its queues while it holds frames, otherwise null. */
  #frames: HeldFrames | null = null;
  // Seq32 values as int32 (`| 0`); the accessors give them back unsigned.
  #compareSeq = 0;
  #primaryAck = 0;
  #secondaryAck = 0;
  /** Link in the table's hash bucket. */
  bucketNext: Connection | null = null;
  /** Links in the table's idle list or in its list of connections that hold frames. */
  listPrev: Connection | null = null;
  listNext: Connection | null = null;
  /** When it became idle: whole milliseconds, rounded up, as int32 (wraps after 24.8 days). */
  #idleSince = 0;

  constructor(id: number, key: string, tcp: boolean) {
    this.id = id;
    this.key = key;
    this.#flags = tcp ? TCP : 0;
  }

  /** Compared as a TCP byte stream (otherwise datagram by datagram). */
  get tcp(): boolean {
    return (this.#flags & TCP) !== 0;
  }

  /** The frames held from the primary, in order (an empty queue when there are none). */
  get primary(): PacketQueue {
    return this.#frames?.primary ?? NO_FRAMES;
  }

  /** The frames held from the secondary, in order. */
  get secondary(): PacketQueue {
    return this.#frames?.secondary ?? NO_FRAMES;
  }

  /** The queue of `side` to add a frame to: the connection's own, taken from `pool` if new. */
  queueFor(side: Side, pool: HeldFrames[]): PacketQueue {
    const frames = this.#frames ??= pool.pop() ?? new HeldFrames();
    return side === "primary" ? frames.primary : frames.secondary;
  }

  /** Gives its queues back to `pool` (up to `max` kept there) once both are empty. */
  returnQueues(pool: HeldFrames[], max: number): void {
    const frames = this.#frames;
    if (frames === null || frames.primary.length !== 0 || frames.secondary.length !== 0) return;
    this.#frames = null;
    if (pool.length < max) pool.push(frames);
  }

  /** TCP: the stream is known to agree up to here (QEMU's `compare_seq`). */
  get compareSeq(): Seq32 {
    return this.#compareSeq >>> 0;
  }

  set compareSeq(seq: Seq32) {
    this.#compareSeq = seq | 0;
  }

  get compareSeqSet(): boolean {
    return (this.#flags & COMPARE_SEQ_SET) !== 0;
  }

  set compareSeqSet(on: boolean) {
    this.#flags = withBit(this.#flags, COMPARE_SEQ_SET, on);
  }

  /** TCP: the highest ACK seen on each side, in serial order (QEMU's `pack` / `sack`). */
  get primaryAck(): Seq32 {
    return this.#primaryAck >>> 0;
  }

  set primaryAck(ack: Seq32) {
    this.#primaryAck = ack | 0;
  }

  get primaryAckSet(): boolean {
    return (this.#flags & PRIMARY_ACK_SET) !== 0;
  }

  set primaryAckSet(on: boolean) {
    this.#flags = withBit(this.#flags, PRIMARY_ACK_SET, on);
  }

  get secondaryAck(): Seq32 {
    return this.#secondaryAck >>> 0;
  }

  set secondaryAck(ack: Seq32) {
    this.#secondaryAck = ack | 0;
  }

  get secondaryAckSet(): boolean {
    return (this.#flags & SECONDARY_ACK_SET) !== 0;
  }

  set secondaryAckSet(on: boolean) {
    this.#flags = withBit(this.#flags, SECONDARY_ACK_SET, on);
  }

  /**
   * TCP: a FIN or RST was seen from the primary / from the secondary. A key is one direction
   * of a conversation, so "closed in both directions" (SPEC 8) means here: both VMs closed
   * their side of this direction, each with a FIN or an RST (the client's direction is a key
   * of its own that colo-compare never sees).
   */
  get primaryClosed(): boolean {
    return (this.#flags & PRIMARY_CLOSED) !== 0;
  }

  set primaryClosed(on: boolean) {
    this.#flags = withBit(this.#flags, PRIMARY_CLOSED, on);
  }

  get secondaryClosed(): boolean {
    return (this.#flags & SECONDARY_CLOSED) !== 0;
  }

  set secondaryClosed(on: boolean) {
    this.#flags = withBit(this.#flags, SECONDARY_CLOSED, on);
  }

  /** On the table's idle list. */
  get idle(): boolean {
    return (this.#flags & IDLE) !== 0;
  }

  set idle(on: boolean) {
    this.#flags = withBit(this.#flags, IDLE, on);
  }

  /** On the table's list of connections that hold frames. */
  get held(): boolean {
    return (this.#flags & HELD) !== 0;
  }

  set held(on: boolean) {
    this.#flags = withBit(this.#flags, HELD, on);
  }

  /**
   * TCP: a primary segment with payload was dropped because its queue was full (SPEC 5),
   * since the last checkpoint flush of this connection. Its bytes will not come again
   * unless the guest retransmits them.
   */
  get primaryDropped(): boolean {
    return (this.#flags & PRIMARY_DROPPED) !== 0;
  }

  set primaryDropped(on: boolean) {
    this.#flags = withBit(this.#flags, PRIMARY_DROPPED, on);
  }

  /** True when neither queue holds a frame. */
  get empty(): boolean {
    return this.primary.length === 0 && this.secondary.length === 0;
  }

  /** True once both VMs closed this direction (FIN or RST from each). */
  get closed(): boolean {
    return (this.#flags & (PRIMARY_CLOSED | SECONDARY_CLOSED)) ===
      (PRIMARY_CLOSED | SECONDARY_CLOSED);
  }

  /** Notes that the connection holds nothing since `now` (ms). */
  idleFrom(now: number): void {
    this.#idleSince = Math.ceil(now) | 0;
  }

  /**
   * Milliseconds it has held nothing at `now`, in whole ms, never more than the truth (`now`
   * rounded down, the start rounded up): exact for intervals under 2^31 ms, 24.8 days, far
   * beyond the idle timeout that forgets it (SPEC 8).
   */
  idleFor(now: number): number {
    return ((Math.floor(now) | 0) - this.#idleSince) | 0;
  }

  /** The key as operators read it, e.g. `tcp 10.0.0.1:80 > 10.0.0.2:40000`. */
  get name(): string {
    let name = names.get(this);
    if (name === undefined) names.set(this, name = describeKey(keyBytes(this.key)));
    return name;
  }
}

/** The key bytes of a connection's key string. */
function keyBytes(key: string): Uint8Array {
  const b = new Uint8Array(key.length);
  for (let i = 0; i < key.length; i++) b[i] = key.charCodeAt(i);
  return b;
}

/** The first `n` bytes of `key` as a flat one-byte string (never a chain of concatenations). */
function keyString(key: Uint8Array, n: number): string {
  return String.fromCharCode(...key.subarray(0, n));
}

/**
 * The table's hash of a key string: the same FNV-1a as `hashKey` in `packet/parse.ts` over the
 * same bytes, so a connection needs no field for it.
 */
export function keyHash(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h & 0x3fffffff;
}

/** Orders connections by first sight. */
function byFirstSeen(a: Connection, b: Connection): number {
  return a.id - b.id;
}

/**
 * Queue pairs kept for connections that start holding frames again: enough that a busy table
 * rarely allocates, few enough not to count per connection (each pair is about 190 bytes).
 */
const QUEUE_POOL_MAX = 256;

/** Fewest hash buckets (a power of two, as every bucket count); doubled when outnumbered. */
const MIN_BUCKETS = 64;

/**
 * The bucket of `hash` among `2^(32 - shift)`: the top bits of a multiplicative (Fibonacci)
 * hash. FNV-1a's low bits depend only on the low bits of each key byte, so keys whose address
 * and port change together fill few buckets when taken by `hash & mask` (3.2 probes per lookup
 * for 100 such flows in 128 buckets, 1.5 this way).
 */
function bucketOf(hash: number, shift: number): number {
  return Math.imul(hash, 0x9e3779b1) >>> shift;
}

/** `n` empty buckets (a packed array: no holes for lookups to check). */
function emptyBuckets(n: number): (Connection | null)[] {
  return Array.from({ length: n }, () => null);
}

/**
 * The connection table: a hash of keys to connections, the idle list (connections whose
 * queues are empty, least recently idle first) and the list of connections that hold frames
 * (both linked through the connection itself, which is on one of them at most).
 * A connection is on exactly one of the two once the engine has placed it
 * ({@linkcode ConnectionTable.markIdle} / {@linkcode markHeld}). Every operation is O(1)
 * except the flush, which sorts only the connections that hold frames, and the walk in
 * first-seen order (sorts them all; tests and diagnostics only). Lookups take the key bytes in
 * a scratch buffer and allocate nothing unless the connection is new.
 *
 * The hash is an array of chains (linked through `bucketNext`), at most one connection per
 * bucket on average: 8 to 16 bytes per connection where a `Map` entry took about 37 (issue
 * 11). It doubles and halves with the table, O(n) then, O(1) amortized, as a `Map` does.
 */
export class ConnectionTable {
  #buckets: (Connection | null)[] = emptyBuckets(MIN_BUCKETS);
  /** 32 - log2(buckets). */
  #shift = 32 - Math.log2(MIN_BUCKETS);
  #idle = new ConnectionList();
  #held = new ConnectionList();
  /** Scratch list for {@linkcode ConnectionTable.drainHeld}. */
  #draining: Connection[] = [];
  #queues: HeldFrames[] = [];
  /** Recently found connections, looked up before the hash (issue 11). */
  readonly #cache = new KeyCache();
  #size = 0;
  #nextId = 0;

  get size(): number {
    return this.#size;
  }

  /** Connections that hold frames. */
  get heldCount(): number {
    return this.#held.count;
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
    for (let c = this.#buckets[bucketOf(hash, this.#shift)]; c !== null; c = c.bucketNext) {
      const k = c.key;
      if (k.length !== keyLen) continue;
      let i = 0;
      while (i < keyLen && k.charCodeAt(i) === key[i]) i++;
      if (i === keyLen) {
        cache.put(c, key, keyLen, hash);
        return c;
      }
    }
    return null;
  }

  /** Adds a new connection, last in first-seen order (neither idle nor held yet). */
  add(key: Uint8Array, keyLen: number, tcp: boolean): Connection {
    const c = new Connection(this.#nextId++, keyString(key, keyLen), tcp);
    if (++this.#size > this.#buckets.length) this.#rehash(this.#buckets.length * 2);
    const buckets = this.#buckets;
    const hash = hashKey(key, keyLen);
    const at = bucketOf(hash, this.#shift);
    c.bucketNext = buckets[at];
    buckets[at] = c;
    this.#cache.put(c, key, keyLen, hash);
    return c;
  }

  /** The queue of `c` to add a frame from `side` to (a connection holds queues only then). */
  queueFor(c: Connection, side: Side): PacketQueue {
    return c.queueFor(side, this.#queues);
  }

  /** Forgets a connection (its queues must be empty). */
  remove(c: Connection): void {
    const buckets = this.#buckets;
    const hash = keyHash(c.key);
    this.#cache.forget(c, hash);
    const at = bucketOf(hash, this.#shift);
    let b = buckets[at];
    if (b === c) {
      buckets[at] = c.bucketNext;
    } else {
      while (b !== null && b.bucketNext !== c) b = b.bucketNext;
      if (b) b.bucketNext = c.bucketNext;
    }
    c.bucketNext = null;
    c.returnQueues(this.#queues, QUEUE_POOL_MAX);
    this.#unlist(c);
    if (--this.#size < buckets.length / 4 && buckets.length > MIN_BUCKETS) {
      this.#rehash(buckets.length / 2);
    }
  }

  /** `c` holds nothing since `now`: it goes to the end of the idle list. */
  markIdle(c: Connection, now: number): void {
    c.returnQueues(this.#queues, QUEUE_POOL_MAX);
    c.idleFrom(now);
    if (c === this.#idle.last) return;
    this.#unlist(c);
    c.idle = true;
    this.#idle.append(c);
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
    return this.#idle.first;
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

  /** Connections in first-seen order (a snapshot: O(n log n), for tests and diagnostics). */
  [Symbol.iterator](): IterableIterator<Connection> {
    const all: Connection[] = [];
    for (const first of this.#buckets) {
      for (let c: Connection | null = first; c !== null; c = c.bucketNext) all.push(c);
    }
    return all.sort(byFirstSeen).values();
  }

  /** Moves every connection to a new array of `n` buckets (a power of two). O(connections). */
  #rehash(n: number): void {
    const old = this.#buckets;
    const buckets = emptyBuckets(n);
    const shift = 32 - Math.log2(n);
    for (let first of old) {
      while (first !== null) {
        const c = first;
        first = c.bucketNext;
        const at = bucketOf(keyHash(c.key), shift);
        c.bucketNext = buckets[at];
        buckets[at] = c;
      }
    }
    this.#buckets = buckets;
    this.#shift = shift;
  }

  /** Takes `c` off the idle or the held list, whichever it is on. */
  #unlist(c: Connection): void {
    if (c.idle) {
      this.#idle.unlink(c);
      c.idle = false;
    } else if (c.held) {
      this.#held.unlink(c);
      c.held = false;
    }
  }
}

/** A doubly linked list of connections through their `listPrev` / `listNext`. O(1) each. */
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
