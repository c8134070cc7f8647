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
import type { Seq32 } from "../packet/seq.ts";

/** One connection: its key, its two queues and its TCP comparison state. */
export class Connection {
  /** Position in first-seen order (increasing, never reused). */
  readonly id: number;
  /**
   * The key's bytes as a one-byte string (one char per byte): about 40 bytes of heap where a
   * Uint8Array of its own took an ArrayBuffer and a view, some 150 (issue 11: idle
   * connections). Built once per connection; lookups compare it char by char.
   */
  readonly key: string;
  readonly hash: number;
  /** Compared as a TCP byte stream (otherwise datagram by datagram). */
  readonly tcp: boolean;
  readonly primary = new PacketQueue();
  readonly secondary = new PacketQueue();
  /** TCP: the stream is known to agree up to here (QEMU's `compare_seq`). */
  compareSeq: Seq32 = 0;
  compareSeqSet = false;
  /** TCP: the highest ACK seen on each side, in serial order (QEMU's `pack` / `sack`). */
  primaryAck: Seq32 = 0;
  primaryAckSet = false;
  secondaryAck: Seq32 = 0;
  secondaryAckSet = false;
  /**
   * TCP: a FIN or RST was seen from the primary / from the secondary. A key is one direction
   * of a conversation, so "closed in both directions" (SPEC 8) means here: both VMs closed
   * their side of this direction, each with a FIN or an RST (the client's direction is a key
   * of its own that colo-compare never sees).
   */
  primaryClosed = false;
  secondaryClosed = false;
  /** Links in the table's first-seen list and in its hash bucket. */
  prev: Connection | null = null;
  next: Connection | null = null;
  bucketNext: Connection | null = null;
  /** Links in the table's idle list (least recently idle first), and when it became idle. */
  idlePrev: Connection | null = null;
  idleNext: Connection | null = null;
  idle = false;
  idleSince = 0;
  /** Index in the table's list of connections that hold frames, or -1. */
  heldAt = -1;
  #name: string | null = null;

  constructor(id: number, key: string, hash: number, tcp: boolean) {
    this.id = id;
    this.key = key;
    this.hash = hash;
    this.tcp = tcp;
  }

  /** True when neither queue holds a frame. */
  get empty(): boolean {
    return this.primary.length === 0 && this.secondary.length === 0;
  }

  /** True once both VMs closed this direction (FIN or RST from each). */
  get closed(): boolean {
    return this.primaryClosed && this.secondaryClosed;
  }

  /** The key as operators read it, e.g. `tcp 10.0.0.1:80 > 10.0.0.2:40000`. */
  get name(): string {
    return this.#name ??= describeKey(keyBytes(this.key));
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

/** True when `c`'s key is the first `keyLen` bytes of `key`. */
function hasKey(c: Connection, key: Uint8Array, keyLen: number): boolean {
  const k = c.key;
  if (k.length !== keyLen) return false;
  let i = 0;
  while (i < keyLen && k.charCodeAt(i) === key[i]) i++;
  return i === keyLen;
}

/** Orders connections by first sight. */
function byFirstSeen(a: Connection, b: Connection): number {
  return a.id - b.id;
}

/**
 * The connection table: a hash of keys to connections, the first-seen list of all of them,
 * the idle list (connections whose queues are empty, least recently idle first) and the list
 * of connections that hold frames. A connection is on exactly one of the last two once the
 * engine has placed it ({@linkcode ConnectionTable.markIdle} / {@linkcode markHeld}). Every
 * operation is O(1) except the flush, which sorts only the connections that hold frames.
 * Lookups take the key bytes in a scratch buffer and allocate nothing unless the connection is
 * new.
 */
export class ConnectionTable {
  #buckets = new Map<number, Connection>();
  /** Recently found connections, looked up before the Map (issue 11). */
  readonly #cache = new KeyCache();
  #first: Connection | null = null;
  #last: Connection | null = null;
  #idleFirst: Connection | null = null;
  #idleLast: Connection | null = null;
  #held: Connection[] = [];
  #spare: Connection[] = [];
  #size = 0;
  #nextId = 0;

  get size(): number {
    return this.#size;
  }

  /** Connections that hold frames. */
  get heldCount(): number {
    return this.#held.length;
  }

  /** The connection with this key, or null. */
  find(key: Uint8Array, keyLen: number): Connection | null {
    const cache = this.#cache;
    const cached = cache.get(key, keyLen);
    if (cached !== null) return cached;
    for (let c = this.#buckets.get(cache.hash) ?? null; c !== null; c = c.bucketNext) {
      if (hasKey(c, key, keyLen)) {
        cache.put(c, key, keyLen);
        return c;
      }
    }
    return null;
  }

  /** Adds a new connection at the end of first-seen order (neither idle nor held yet). */
  add(key: Uint8Array, keyLen: number, tcp: boolean): Connection {
    const hash = hashKey(key, keyLen);
    const c = new Connection(this.#nextId++, keyString(key, keyLen), hash, tcp);
    c.bucketNext = this.#buckets.get(hash) ?? null;
    this.#buckets.set(hash, c);
    c.prev = this.#last;
    if (this.#last) this.#last.next = c;
    else this.#first = c;
    this.#last = c;
    this.#size++;
    this.#cache.put(c, key, keyLen);
    return c;
  }

  /** Forgets a connection (its queues must be empty). */
  remove(c: Connection): void {
    this.#cache.forget(c);
    let b = this.#buckets.get(c.hash) ?? null;
    if (b === c) {
      if (c.bucketNext) this.#buckets.set(c.hash, c.bucketNext);
      else this.#buckets.delete(c.hash);
    } else {
      while (b !== null && b.bucketNext !== c) b = b.bucketNext;
      if (b) b.bucketNext = c.bucketNext;
    }
    if (c.prev) c.prev.next = c.next;
    else this.#first = c.next;
    if (c.next) c.next.prev = c.prev;
    else this.#last = c.prev;
    c.prev = c.next = c.bucketNext = null;
    this.#unlinkIdle(c);
    this.#unlinkHeld(c);
    this.#size--;
  }

  /** `c` holds nothing since `now`: it goes to the end of the idle list. */
  markIdle(c: Connection, now: number): void {
    if (c === this.#idleLast) {
      c.idleSince = now;
      return;
    }
    this.#unlinkHeld(c);
    this.#unlinkIdle(c);
    c.idle = true;
    c.idleSince = now;
    c.idlePrev = this.#idleLast;
    if (this.#idleLast) this.#idleLast.idleNext = c;
    else this.#idleFirst = c;
    this.#idleLast = c;
  }

  /** `c` holds frames: it leaves the idle list and joins the connections a flush walks. */
  markHeld(c: Connection): void {
    if (c.heldAt >= 0) return;
    this.#unlinkIdle(c);
    c.heldAt = this.#held.length;
    this.#held.push(c);
  }

  /** The connection idle for longest, or null. O(1). */
  oldestIdle(): Connection | null {
    return this.#idleFirst;
  }

  /**
   * Calls `fn` for every connection that holds frames, in first-seen order, and takes them off
   * the held list first (`fn` places each one again; if it throws, the rest are placed as
   * idle since `now` or held). O(h log h) for h such connections.
   */
  drainHeld(fn: (c: Connection) => void, now: number): void {
    const list = this.#held;
    if (list.length === 0) return;
    list.sort(byFirstSeen);
    this.#held = this.#spare;
    for (const c of list) c.heldAt = -1;
    let i = 0;
    try {
      for (; i < list.length; i++) fn(list[i]);
    } finally {
      // If `fn` threw, place the connections it did not place itself.
      for (; i < list.length; i++) {
        const c = list[i];
        if (c.heldAt >= 0 || c.idle) continue;
        if (c.empty) this.markIdle(c, now);
        else this.markHeld(c);
      }
      list.length = 0;
      this.#spare = list;
    }
  }

  /** Connections in first-seen order. */
  *[Symbol.iterator](): IterableIterator<Connection> {
    for (let c = this.#first; c !== null;) {
      const next = c.next;
      yield c;
      c = next;
    }
  }

  #unlinkIdle(c: Connection): void {
    if (!c.idle) return;
    if (c.idlePrev) c.idlePrev.idleNext = c.idleNext;
    else this.#idleFirst = c.idleNext;
    if (c.idleNext) c.idleNext.idlePrev = c.idlePrev;
    else this.#idleLast = c.idlePrev;
    c.idlePrev = c.idleNext = null;
    c.idle = false;
  }

  #unlinkHeld(c: Connection): void {
    const at = c.heldAt;
    if (at < 0) return;
    const list = this.#held;
    const last = list.pop()!;
    if (last !== c) {
      list[at] = last;
      last.heldAt = at;
    }
    c.heldAt = -1;
  }
}
