/**
 * Connections (SPEC 5): one per key, each direction its own, listed in first-seen order.
 *
 * @module
 */

import { describeKey } from "../packet/parse.ts";
import { PacketQueue } from "./packet.ts";
import type { Seq32 } from "../packet/seq.ts";

/** One connection: its key, its two queues and its TCP comparison state. */
export class Connection {
  /** Position in first-seen order (increasing, never reused). */
  readonly id: number;
  readonly key: Uint8Array;
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
  /** Links in the table's first-seen list and in its hash bucket. */
  prev: Connection | null = null;
  next: Connection | null = null;
  bucketNext: Connection | null = null;
  #name: string | null = null;

  constructor(id: number, key: Uint8Array, hash: number, tcp: boolean) {
    this.id = id;
    this.key = key;
    this.hash = hash;
    this.tcp = tcp;
  }

  /** True when neither queue holds a frame. */
  get idle(): boolean {
    return this.primary.length === 0 && this.secondary.length === 0;
  }

  /** The key as operators read it, e.g. `tcp 10.0.0.1:80 > 10.0.0.2:40000`. */
  get name(): string {
    return this.#name ??= describeKey(this.key);
  }
}

/**
 * The connection table: a hash of keys to connections plus the first-seen list. Lookups take
 * the key bytes in a scratch buffer and allocate nothing unless the connection is new.
 */
export class ConnectionTable {
  #buckets = new Map<number, Connection>();
  #first: Connection | null = null;
  #last: Connection | null = null;
  #size = 0;
  #nextId = 0;

  get size(): number {
    return this.#size;
  }

  /** The connection with this key, or null. */
  find(key: Uint8Array, keyLen: number, hash: number): Connection | null {
    for (let c = this.#buckets.get(hash) ?? null; c !== null; c = c.bucketNext) {
      const k = c.key;
      if (k.length !== keyLen) continue;
      let i = 0;
      while (i < keyLen && k[i] === key[i]) i++;
      if (i === keyLen) return c;
    }
    return null;
  }

  /** Adds a new connection at the end of first-seen order. */
  add(key: Uint8Array, keyLen: number, hash: number, tcp: boolean): Connection {
    const c = new Connection(this.#nextId++, key.slice(0, keyLen), hash, tcp);
    c.bucketNext = this.#buckets.get(hash) ?? null;
    this.#buckets.set(hash, c);
    c.prev = this.#last;
    if (this.#last) this.#last.next = c;
    else this.#first = c;
    this.#last = c;
    this.#size++;
    return c;
  }

  /** Removes a connection (its queues must be empty). */
  remove(c: Connection): void {
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
    this.#size--;
  }

  /** The oldest connection (first seen) that holds nothing, or null. */
  oldestIdle(): Connection | null {
    for (let c = this.#first; c !== null; c = c.next) if (c.idle) return c;
    return null;
  }

  /** Connections in first-seen order. */
  *[Symbol.iterator](): IterableIterator<Connection> {
    for (let c = this.#first; c !== null;) {
      const next = c.next;
      yield c;
      c = next;
    }
  }
}
