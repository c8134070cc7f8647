/**
 * A held frame (QEMU's `Packet`) and the per-side queues of a connection.
 *
 * @module
 */

import type { Seq32 } from "../packet/seq.ts";
import { seqAfter } from "../packet/seq.ts";
import type { Connection } from "./connection.ts";
import type { Slab } from "./store.ts";

/** Which input a frame came from. */
export type Side = "primary" | "secondary";

const EMPTY = new Uint8Array(0);
/** A queue keeps the backing store of at most this many slots while empty. */
const KEEP_SLOTS = 16;

/**
 * One frame held by the comparator: the whole frame as received (vnet header included) is
 * `bytes[at, at + size)`. `bytes` is the frame itself (a view into a read buffer) while it is
 * being compared on arrival, and the slab it was copied into (or a copy of its own) once it
 * stays queued: a held frame has no view of its own, which would cost about 100 bytes of heap
 * per frame (bench/README.md, issue 11).
 */
export class Packet {
  bytes: Uint8Array = EMPTY;
  /** Where the frame starts in `bytes`. */
  at = 0;
  /** The frame's length in bytes. */
  size = 0;
  /** The slab `bytes` is, or null (see `store.ts`). */
  slab: Slab | null = null;
  vnetLen = 0;
  /** Monotonic milliseconds at arrival. */
  createdAt = 0;
  side: Side = "primary";
  conn: Connection | null = null;
  /** True while the packet sits in a queue. */
  queued = false;
  /**
   * Start (in `bytes`) and length of the compared bytes: the TCP payload, or the whole IP
   * payload.
   */
  start = 0;
  len = 0;
  /** TCP only. `offset` counts payload bytes already matched against the other side. */
  seq: Seq32 = 0;
  seqEnd: Seq32 = 0;
  ack: Seq32 = 0;
  flags = 0;
  offset = 0;
  /** Neighbours in the engine's arrival-order list of held packets (for the expiry scan). */
  older: Packet | null = null;
  newer: Packet | null = null;

  /** The whole frame: a view made on each call (release, discard, capture), never kept. */
  frame(): Uint8Array {
    const b = this.bytes;
    return this.at === 0 && this.size === b.length ? b : b.subarray(this.at, this.at + this.size);
  }
}

/**
 * A deque of packets: O(1) at both ends, sorted insertion for TCP (almost always at the
 * tail), removal anywhere for datagram matching.
 */
export class PacketQueue {
  #items: Packet[] = [];
  #head = 0;

  get length(): number {
    return this.#items.length - this.#head;
  }

  /** The `i`-th packet from the head. */
  at(i: number): Packet {
    return this.#items[this.#head + i];
  }

  peek(): Packet | undefined {
    return this.#head < this.#items.length ? this.#items[this.#head] : undefined;
  }

  push(p: Packet): void {
    this.#items.push(p);
  }

  shift(): Packet | undefined {
    if (this.#head >= this.#items.length) return undefined;
    const p = this.#items[this.#head];
    this.#items[this.#head++] = undefined as unknown as Packet;
    if (this.#head === this.#items.length) {
      this.#empty();
    } else if (this.#head >= 64 && this.#head * 2 >= this.#items.length) {
      this.#items.splice(0, this.#head);
      this.#head = 0;
    }
    return p;
  }

  /**
   * Every slot is vacated. A short array is emptied with `pop`, which keeps its backing store
   * (`length = 0` frees it, and the next `push` allocates a new one: one allocation per held
   * frame, issue 11); a long one (a flood's) is let go.
   */
  #empty(): void {
    const items = this.#items;
    if (items.length > KEEP_SLOTS) items.length = 0;
    else while (items.length > 0) items.pop();
    this.#head = 0;
  }

  /** Removes `p` wherever it is; false if it is not queued here. */
  remove(p: Packet): boolean {
    const i = this.#items.indexOf(p, this.#head);
    if (i < 0) return false;
    this.removeAt(i - this.#head);
    return true;
  }

  /** Removes the `i`-th packet from the head. */
  removeAt(i: number): Packet {
    if (i === 0) return this.shift()!;
    return this.#items.splice(this.#head + i, 1)[0];
  }

  /**
   * Inserts a TCP segment by sequence number, after every segment it does not come before:
   * equal sequence numbers keep arrival order (QEMU 7.2 compares the older copy first).
   */
  insertBySeq(p: Packet): void {
    const items = this.#items;
    let i = items.length;
    while (i > this.#head && seqAfter(items[i - 1].seq, p.seq)) i--;
    if (i === items.length) items.push(p);
    else items.splice(i, 0, p);
  }

  /**
   * Keeps, in order, the packets for which `keep` is true and removes the rest, calling `fn`
   * for each one removed, from the head. O(length).
   */
  drainUnless(keep: (p: Packet) => boolean, fn: (p: Packet) => void): void {
    const items = this.#items;
    let kept = 0;
    for (let i = this.#head; i < items.length; i++) {
      const p = items[i];
      if (keep(p)) items[kept++] = p;
      else fn(p);
    }
    items.length = kept;
    this.#head = 0;
  }

  /** Empties the queue, calling `fn` for each packet from the head. */
  drain(fn: (p: Packet) => void): void {
    const items = this.#items;
    const head = this.#head;
    this.#items = [];
    this.#head = 0;
    for (let i = head; i < items.length; i++) fn(items[i]);
  }
}
