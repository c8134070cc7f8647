/**
 * Where held frames live. A frame that must outlive the read buffer it arrived in is copied
 * into a slab: a block of the shared {@linkcode BlockPool} filled front to back and given back
 * once every frame in it is gone. Frames are held for moments and leave roughly in arrival
 * order, so slabs recycle quickly; the copy costs no allocation and no garbage, and memory
 * comes back in whole slabs instead of fragmenting the heap with thousands of small buffers.
 * Each side fills slabs of its own: a checkpoint drops every held secondary frame, and their
 * slabs are then free whole for the released primary frames (engine.ts `checkpoint`).
 *
 * @module
 */

import { BLOCK_SIZE, BlockPool } from "../pool.ts";
import type { Packet } from "./packet.ts";

/** One slab: the frames copied into it and how many of them are still held. */
export class Slab {
  readonly bytes: Uint8Array;
  used = 0;
  live = 0;
  /** Bytes of the frames still held in it. */
  liveBytes = 0;

  constructor(bytes: Uint8Array) {
    this.bytes = bytes;
  }
}

/** Slab size: the pool's block size. */
export const SLAB_SIZE = BLOCK_SIZE;
/** Frames larger than this (GSO) get a buffer of their own. */
const LARGE_FRAME = 16 * 1024;
/**
 * A long-held frame is moved out of its slab only while the slab's held bytes are below this:
 * then the copy frees a slab of frames long gone. A slab still mostly held stays whole.
 */
const EVACUATE_BELOW = SLAB_SIZE / 4;

/** The slab allocator for held frames. */
export class FrameStore {
  readonly #pool: BlockPool;
  /** The slab each side is filling. */
  #primary: Slab | null = null;
  #secondary: Slab | null = null;
  #slabs = 0;

  /** `pool`: blocks shared with the output buffer (the comparator's); one of its own if none. */
  constructor(pool: BlockPool = new BlockPool()) {
    if (pool.size !== SLAB_SIZE) throw new RangeError(`slabs are ${SLAB_SIZE} bytes`);
    this.#pool = pool;
  }

  /** Slabs in use (holding frames, or being filled). */
  get slabs(): number {
    return this.#slabs;
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
    const primary = p.side === "primary";
    let slab = primary ? this.#primary : this.#secondary;
    if (slab === null || slab.used + n > SLAB_SIZE) {
      // A full slab holds frames (an emptied one would have been reset): it goes back once
      // its last frame is released.
      slab = this.#take();
      if (primary) this.#primary = slab;
      else this.#secondary = slab;
    }
    const at = slab.used;
    slab.bytes.set(p.frame(), at);
    slab.used = (at + n + 7) & ~7;
    slab.live++;
    slab.liveBytes += n;
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
   * flood's thousands of held frames at a timeout, released a checkpoint later).
   */
  evacuate(p: Packet): void {
    if (p.slab === null || p.slab.liveBytes > EVACUATE_BELOW) return;
    const own = p.frame().slice();
    this.release(p);
    this.#move(p, own, 0);
  }

  #take(): Slab {
    this.#slabs++;
    return new Slab(this.#pool.take());
  }

  #giveBack(slab: Slab): void {
    this.#slabs--;
    this.#pool.give(slab.bytes);
  }
}
