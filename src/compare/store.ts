/**
 * Where held frames live. A frame that must outlive the read buffer it arrived in is copied
 * into a slab: a block of the shared {@linkcode BlockPool} filled front to back and given back
 * once every frame in it is gone. Frames are held for moments and leave roughly in arrival
 * order, so slabs recycle quickly; the copy costs no allocation and no garbage, and memory
 * comes back in whole slabs instead of fragmenting the heap with thousands of small buffers.
 * Each side fills slabs of its own: a checkpoint drops every held secondary frame, and their
 * slabs are then free whole for the released primary frames (engine.ts `checkpoint`). A read
 * buffer ({@linkcode FrameStore.takeBlock}: a block of {@linkcode READ_BLOCK_SIZE}, or one of
 * the shared pool's) that is mostly held frames becomes their slab as it is, without a copy
 * ({@linkcode FrameStore.adopt}). Slabs are counted in units of {@linkcode SLAB_SIZE}: one
 * of 1 MiB is eight.
 *
 * @module
 */

import { BLOCK_SIZE, BlockPool, objectArray, READ_BLOCK_SIZE } from "../pool.ts";
import type { Packet } from "./packet.ts";

/** One slab: the frames copied into it and how many of them are still held. */
export class Slab {
  /** The block; empty while the record waits for reuse. */
  bytes: Uint8Array;
  used = 0;
  live = 0;
  /** Bytes of the frames still held in it. */
  liveBytes = 0;
  /** A read buffer kept for fewer frames than make a slab worth its block (`adopt`). */
  sparse = false;

  constructor(bytes: Uint8Array) {
    this.bytes = bytes;
  }
}

const NO_BYTES = new Uint8Array(0);
/** Slab records kept for reuse: a kept read buffer makes one per read at low load. */
const SPARE_SLABS = 8;

/** Slab size: the pool's block size. */
export const SLAB_SIZE = BLOCK_SIZE;
/** Frames larger than this (GSO) get a buffer of their own. */
const LARGE_FRAME = 16 * 1024;
/**
 * Frames this close together in the buffer they arrived in are copied together by
 * {@linkcode FrameStore.keepAll}: framing words, or a short frame that was not held, between
 * them cost less to copy along than a copy of their own.
 */
const RUN_GAP = 128;

/** The slab allocator for held frames. */
export class FrameStore {
  readonly #pool: BlockPool;
  /** Blocks the inputs read into (`takeBlock`), adopted as slabs or given back. */
  readonly #readPool: BlockPool;
  /** The slab each side is filling. */
  #primary: Slab | null = null;
  #secondary: Slab | null = null;
  #slabs = 0;
  /** Slabs adopted sparse (`adopt`) and not given back yet. */
  #sparse = 0;
  /** Of objects' elements kind from the start: the first push under traffic changes nothing. */
  readonly #spare: Slab[] = objectArray();

  /**
   * `pool`: blocks shared with the output buffer (the comparator's); one of its own if none.
   * `readPool`: the inputs' read blocks; one of its own if none.
   */
  constructor(
    pool: BlockPool = new BlockPool(),
    readPool: BlockPool = new BlockPool(READ_BLOCK_SIZE),
  ) {
    if (pool.size !== SLAB_SIZE) throw new RangeError(`slabs are ${SLAB_SIZE} bytes`);
    if (readPool.size === SLAB_SIZE) throw new RangeError(`read blocks are not ${SLAB_SIZE} bytes`);
    this.#pool = pool;
    this.#readPool = readPool;
  }

  /** Slabs in use (holding frames, or being filled), in units of {@linkcode SLAB_SIZE}. */
  get slabs(): number {
    return this.#slabs;
  }

  /** Read buffers adopted sparse (`adopt`) that still hold frames. */
  get sparseSlabs(): number {
    return this.#sparse;
  }

  /**
   * Gives `p` its own copy of its frame (in a slab, or alone when large), where it stays
   * while `p` is held: `p.bytes` must not be a slab already.
   */
  keep(p: Packet): void {
    const n = p.size;
    const from = p.at;
    if (n > LARGE_FRAME) {
      this.#move(p, p.bytes.slice(from, from + n), 0);
      return;
    }
    const slab = this.#slabFor(p.side === "primary", n);
    const at = slab.used;
    slab.bytes.set(p.frame(), at);
    slab.used = (at + n + 7) & ~7;
    this.#place(p, slab, at);
  }

  /**
   * Keeps the frames of `held[0, n)` that still lie in `bytes` (the buffer they arrived in;
   * the others were released or kept already) as {@linkcode FrameStore.keep} would, in turn,
   * but frames lying close together there are copied with one copy: a read buffer's held
   * frames are mostly adjacent, with only framing words between them (issue 11: one copy
   * and one view per frame were a tenth of the CPU per pair of small frames).
   */
  keepAll(bytes: Uint8Array, held: readonly Packet[], n: number): void {
    let i = 0;
    while (i < n) {
      const first = held[i++];
      if (!first.queued || first.bytes !== bytes) continue;
      if (first.size > LARGE_FRAME) {
        this.keep(first);
        continue;
      }
      const primary = first.side === "primary";
      const slab = this.#slabFor(primary, first.size);
      const room = SLAB_SIZE - slab.used;
      const from = first.at;
      let to = from + first.size;
      // The run: `first` and the frames after it, in arrival order, close behind each other.
      let end = i;
      for (; end < n; end++) {
        const p = held[end];
        if (!p.queued || p.bytes !== bytes) continue;
        if (
          p.at < to || p.at - to > RUN_GAP || p.at + p.size - from > room ||
          p.size > LARGE_FRAME || (p.side === "primary") !== primary
        ) break;
        to = p.at + p.size;
      }
      const at = slab.used;
      slab.bytes.set(bytes.subarray(from, to), at);
      slab.used = (at + to - from + 7) & ~7;
      this.#place(first, slab, at);
      for (; i < end; i++) {
        const p = held[i];
        if (p.queued && p.bytes === bytes) this.#place(p, slab, at + p.at - from);
      }
    }
  }

  /**
   * A block to read frames into, of `size` bytes: {@linkcode READ_BLOCK_SIZE}, or
   * {@linkcode SLAB_SIZE} (a block of the shared pool). One that {@linkcode FrameStore.adopt}
   * can make a slab of. Nothing may lie in it any more (its last user's frames are gone or
   * copied).
   */
  takeBlock(size: number = READ_BLOCK_SIZE): Uint8Array {
    if (size === SLAB_SIZE) return this.#pool.take();
    if (size !== this.#readPool.size) throw new RangeError(`no read blocks of ${size} bytes`);
    return this.#readPool.take();
  }

  /** Gives up read blocks unused for a while ({@linkcode BlockPool.trim}). */
  trim(now: number): void {
    this.#readPool.trim(now);
  }

  /**
   * Makes `block` (from {@linkcode FrameStore.takeBlock}: a read buffer its reader gives up)
   * the slab of the frames of `held[0, n)` that still lie in it: they stay where they are,
   * uncopied (issue 11). The block goes back to its pool once they are all gone, as any
   * slab's does. Nothing else is put into it.
   */
  adopt(block: Uint8Array, held: readonly Packet[], n: number, sparse = false): void {
    const slab = this.#slab(block);
    slab.used = block.length;
    slab.sparse = sparse;
    if (sparse) this.#sparse++;
    this.#slabs += block.length / SLAB_SIZE;
    for (let i = 0; i < n; i++) {
      const p = held[i];
      // A packet listed twice (released and reused within the read) is placed once.
      if (p.queued && p.bytes === block && p.slab === null) this.#place(p, slab, p.at);
    }
    if (slab.live === 0) this.#giveBack(slab);
  }

  /** The slab `side` fills, with room for `n` more bytes. */
  #slabFor(primary: boolean, n: number): Slab {
    const slab = primary ? this.#primary : this.#secondary;
    if (slab !== null && slab.used + n <= SLAB_SIZE) return slab;
    // A full slab holds frames (an emptied one would have been reset): it goes back once
    // its last frame is released.
    const fresh = this.#take();
    if (primary) this.#primary = fresh;
    else this.#secondary = fresh;
    return fresh;
  }

  /** `p`'s frame was copied to `at` in `slab`. */
  #place(p: Packet, slab: Slab, at: number): void {
    slab.live++;
    slab.liveBytes += p.size;
    this.#move(p, slab.bytes, at);
    p.slab = slab;
  }

  /** `p`'s frame is now `bytes[at, at + size)`: its compared bytes move with it. */
  #move(p: Packet, bytes: Uint8Array, at: number): void {
    p.start += at - p.at;
    p.bytes = bytes;
    p.at = at;
  }

  /** `p` is gone: its slab is reused once all of the slab's frames are gone. */
  release(p: Packet): void {
    const slab = p.slab;
    if (slab === null) return;
    p.slab = null;
    slab.liveBytes -= p.size;
    if (--slab.live > 0) return;
    if (slab === this.#primary || slab === this.#secondary) slab.used = 0;
    else this.#giveBack(slab);
  }

  /**
   * Moves a long-held frame into a buffer of its own, so that one stuck frame does not pin a
   * whole slab of frames long gone. Frames of a slab that is still mostly held stay: copying
   * them would free nothing until all are copied, and would double their memory meanwhile (a
   * flood's thousands of held frames at a timeout, released a checkpoint later). A slab is
   * "mostly held" down to a quarter of its bytes.
   */
  evacuate(p: Packet): void {
    if (p.slab === null || p.slab.liveBytes > p.slab.bytes.length >> 2) return;
    const own = p.frame().slice();
    this.release(p);
    this.#move(p, own, 0);
  }

  #take(): Slab {
    this.#slabs++;
    return this.#slab(this.#pool.take());
  }

  /** A slab record for `block`: a spare one, or a new one. */
  #slab(block: Uint8Array): Slab {
    const slab = this.#spare.pop();
    if (slab === undefined) return new Slab(block);
    slab.bytes = block;
    return slab;
  }

  #giveBack(slab: Slab): void {
    const bytes = slab.bytes;
    this.#slabs -= bytes.length / SLAB_SIZE;
    if (slab.sparse) this.#sparse--;
    (bytes.length === SLAB_SIZE ? this.#pool : this.#readPool).give(bytes);
    // No frame refers to it any more (each one's `slab` was cleared when it went).
    slab.bytes = NO_BYTES;
    slab.used = slab.live = slab.liveBytes = 0;
    slab.sparse = false;
    if (this.#spare.length < SPARE_SLABS) this.#spare.push(slab);
  }
}
