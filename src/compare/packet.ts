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
/** A queue keeps an array of at most this many slots while empty. */
const KEEP_SLOTS = 16;
/**
 * Longer arrays of queues that emptied, for the next queue that grows past
 * {@linkcode KEEP_SLOTS}: arrays of at most {@linkcode MAX_SPARE_ARRAY_SLOTS} slots, at most
 * {@linkcode MAX_SPARE_SLOTS} in all (256 KiB), shared by every queue of the process. A queue
 * that fills with a read's frames (a thousand or two of a stream's segments held until the other
 * side's read) and empties again otherwise grew a new array each time, one reallocation after
 * another: about 30 bytes of garbage per compared pair in tcp-64, most of the hot path's (issue
 * 11). Counted in slots, not arrays: many queues that fill a little and empty together (64 UDP
 * flows whose replicas differ, some 60 frames a side each between checkpoints) let all but eight
 * of their arrays go at each flush under a limit of eight arrays, old-generation garbage that
 * grew the diverged row's heap to 36 MiB (bench/README.md, "Queue arrays kept by their slots").
 */
const spares: (Packet | undefined)[][] = [];
/** Slots of the arrays in {@linkcode spares}. */
let spareSlots = 0;
const MAX_SPARE_ARRAY_SLOTS = 8192;
const MAX_SPARE_SLOTS = 65536;

/** The spare arrays kept for queues that grow, and their slots (for tests). */
export function queueSpares(): { arrays: number; slots: number } {
  return { arrays: spares.length, slots: spareSlots };
}

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
   * The engine's count of queued frames when this one was queued (int32, wrapping): tells a
   * frame from a later one that reuses this record, for `--capture` (each divergence told once).
   */
  serial = 0;
  /**
   * Start (in `bytes`) and length of the compared bytes: the TCP payload, or the whole IP
   * payload.
   */
  start = 0;
  len = 0;
  // TCP only: the sequence numbers, stored as int32 and read as uint32. V8 keeps an int32 in
  // the field itself (a Smi); a uint32 above 2^31, half of all sequence numbers, would make
  // each of the three fields a heap number of its own, 16 bytes more per held frame each.
  #seq = 0;
  #seqEnd = 0;
  #ack = 0;
  /** TCP only: the segment's flags. */
  flags = 0;
  /**
   * TCP: the payload bytes already matched against the other side. A primary datagram at the
   * head of its queue: how many secondary datagrams at the head of theirs it was compared
   * with and did not match (src/compare/datagram.ts).
   */
  offset = 0;
  /** Neighbours in the engine's arrival-order list of held packets (for the expiry scan). */
  older: Packet | null = null;
  newer: Packet | null = null;

  get seq(): Seq32 {
    return this.#seq >>> 0;
  }

  set seq(seq: Seq32) {
    this.#seq = seq | 0;
  }

  get seqEnd(): Seq32 {
    return this.#seqEnd >>> 0;
  }

  set seqEnd(seq: Seq32) {
    this.#seqEnd = seq | 0;
  }

  get ack(): Seq32 {
    return this.#ack >>> 0;
  }

  set ack(seq: Seq32) {
    this.#ack = seq | 0;
  }

  /** The whole frame: a view made on each call (release, discard, capture), never kept. */
  frame(): Uint8Array {
    const b = this.bytes;
    return this.at === 0 && this.size === b.length ? b : b.subarray(this.at, this.at + this.size);
  }
}

/**
 * The items of a queue that never held a packet: shared, always empty (`push` gives the queue
 * an array of its own). Made from `[undefined]` so that it has the elements kind of every
 * queue's array.
 */
const NO_ITEMS: (Packet | undefined)[] = [undefined];
NO_ITEMS.length = 0;

/**
 * Moves `items[from, end)` down to `to` (< `from`), empties the slots left behind and returns
 * the new end. A plain loop: `copyWithin` takes V8's generic path, slower by far.
 */
function moveDown(items: (Packet | undefined)[], to: number, from: number, end: number): number {
  let j = to;
  for (let i = from; i < end; i++) items[j++] = items[i];
  for (let i = j; i < end; i++) items[i] = undefined;
  return j;
}

/**
 * A deque of packets: O(1) at both ends, sorted insertion for TCP (almost always at the
 * tail), removal anywhere for datagram matching.
 */
export class PacketQueue {
  /**
   * The queue is `#items[#head, #tail)`; the slots around it are empty. The array is kept
   * when the queue empties, unless long (setting `length = 0` would free it and the next frame
   * allocate another, old-generation garbage by the thousand when connections open in a
   * burst; issue 11); a long one goes to the spares, and a queue that grows past a short one
   * takes a spare. None until the first packet, then room for two:
   * what most queues ever hold (an empty `[]` takes room for 17 at the first push).
   */
  #items: (Packet | undefined)[] = NO_ITEMS;
  #head = 0;
  #tail = 0;

  get length(): number {
    return this.#tail - this.#head;
  }

  /** The `i`-th packet from the head. */
  at(i: number): Packet {
    return this.#items[this.#head + i]!;
  }

  peek(): Packet | undefined {
    return this.#head < this.#tail ? this.#items[this.#head] : undefined;
  }

  push(p: Packet): void {
    const items = this.#items;
    if (this.#tail < items.length) items[this.#tail] = p;
    else if (items.length < KEEP_SLOTS || !this.#toSpare()) {
      if (items !== NO_ITEMS) items.push(p);
      else this.#items = [p, undefined];
    } else this.#items[this.#tail] = p;
    this.#tail++;
  }

  /**
   * Moves the queue into a spare array longer than its own, if there is one (see
   * {@linkcode spares}); false if not.
   */
  #toSpare(): boolean {
    const items = this.#items;
    const spare = spares.pop();
    if (spare === undefined) return false;
    if (spare.length <= items.length) {
      spares.push(spare);
      return false;
    }
    spareSlots -= spare.length;
    this.#tail = this.#tail - this.#head;
    for (let i = 0; i < this.#tail; i++) spare[i] = items[this.#head + i];
    this.#head = 0;
    this.#items = spare;
    return true;
  }

  shift(): Packet | undefined {
    if (this.#head >= this.#tail) return undefined;
    const items = this.#items;
    const p = items[this.#head];
    items[this.#head++] = undefined;
    if (this.#head === this.#tail) {
      this.#empty();
    } else if (this.#head >= 64 && this.#head * 2 >= this.#tail) {
      // Mostly emptied from the head: move what is left to the front.
      this.#tail = moveDown(items, 0, this.#head, this.#tail);
      this.#head = 0;
    }
    return p;
  }

  /**
   * The queue is empty and every slot vacated: a short array is kept for the next packets, a
   * long one goes to the {@linkcode spares} while they have room and it is not a flood's, and
   * is let go otherwise.
   */
  #empty(): void {
    const items = this.#items;
    if (items.length > KEEP_SLOTS) {
      if (
        items.length <= MAX_SPARE_ARRAY_SLOTS && spareSlots + items.length <= MAX_SPARE_SLOTS
      ) {
        spares.push(items);
        spareSlots += items.length;
      }
      this.#items = NO_ITEMS;
    }
    this.#head = this.#tail = 0;
  }

  /** Removes `p` wherever it is; false if it is not queued here. */
  remove(p: Packet): boolean {
    const i = this.#items.indexOf(p, this.#head);
    if (i < 0 || i >= this.#tail) return false;
    this.removeAt(i - this.#head);
    return true;
  }

  /** Removes the `i`-th packet from the head. */
  removeAt(i: number): Packet {
    if (i === 0) return this.shift()!;
    const items = this.#items;
    const at = this.#head + i;
    const p = items[at]!;
    this.#tail = moveDown(items, at, at + 1, this.#tail);
    return p;
  }

  /**
   * Inserts a TCP segment by sequence number, after every segment it does not come before:
   * equal sequence numbers keep arrival order (QEMU 7.2 compares the older copy first).
   */
  insertBySeq(p: Packet): void {
    const items = this.#items;
    const tail = this.#tail;
    let i = tail;
    while (i > this.#head && seqAfter(items[i - 1]!.seq, p.seq)) i--;
    if (i === tail) {
      this.push(p);
      return;
    }
    if (tail === items.length) items.push(undefined);
    for (let j = tail; j > i; j--) items[j] = items[j - 1];
    items[i] = p;
    this.#tail++;
  }

  /**
   * Keeps, in order, the packets for which `keep` is true and removes the rest, calling `fn`
   * for each one removed, from the head. O(length).
   */
  drainUnless(keep: (p: Packet) => boolean, fn: (p: Packet) => void): void {
    const items = this.#items;
    const tail = this.#tail;
    let kept = 0;
    for (let i = this.#head; i < tail; i++) {
      const p = items[i]!;
      if (keep(p)) items[kept++] = p;
      else fn(p);
    }
    items.fill(undefined, kept, tail);
    this.#head = 0;
    this.#tail = kept;
  }

  /** Empties the queue, then calls `fn` for each packet it held, from the head (`fn` must not add to it). */
  drain(fn: (p: Packet) => void): void {
    const items = this.#items;
    const tail = this.#tail;
    let i = this.#head;
    this.#head = this.#tail = 0;
    try {
      for (; i < tail; i++) {
        const p = items[i]!;
        items[i] = undefined;
        fn(p);
      }
    } finally {
      items.fill(undefined, i, tail);
      if (this.#tail === 0) this.#empty();
    }
  }
}
