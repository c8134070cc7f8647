/**
 * Where held frames live. A frame that must outlive the read buffer it arrived in is copied
 * into a slab: a 256 KiB buffer filled front to back and reused once every frame in it is
 * gone. Frames are held for moments and leave roughly in arrival order, so slabs recycle
 * quickly; the copy costs no allocation and no garbage, and memory comes back in whole slabs
 * instead of fragmenting the heap with thousands of small buffers.
 *
 * @module
 */

import type { Packet } from "./packet.ts";

/** One slab: the frames copied into it and how many of them are still held. */
export class Slab {
  readonly bytes: Uint8Array;
  used = 0;
  live = 0;
  /** Bytes of the frames still held in it. */
  liveBytes = 0;

  constructor(size: number) {
    this.bytes = new Uint8Array(size);
  }
}

/** Slab size: many frames per slab, and above the allocator's threshold for mapped memory. */
export const SLAB_SIZE = 256 * 1024;
/** Frames larger than this (GSO) get a buffer of their own. */
const LARGE_FRAME = 16 * 1024;
/**
 * A long-held frame is moved out of its slab only while the slab's held bytes are below this:
 * then the copy frees a slab of frames long gone. A slab still mostly held stays whole.
 */
const EVACUATE_BELOW = SLAB_SIZE / 4;
/** Empty slabs kept for reuse; the rest are left to the garbage collector. */
const FREE_SLABS_MAX = 16;

/** The slab allocator for held frames. */
export class FrameStore {
  #current: Slab | null = null;
  readonly #free: Slab[] = [];
  #slabs = 0;

  /** Slabs allocated and not yet given back to the garbage collector. */
  get slabs(): number {
    return this.#slabs;
  }

  /** Gives `p` its own copy of `frame` (in a slab, or alone when large). */
  keep(p: Packet, frame: Uint8Array): void {
    const n = frame.length;
    if (n > LARGE_FRAME) {
      p.data = frame.slice();
      return;
    }
    let slab = this.#current;
    if (slab === null || slab.used + n > SLAB_SIZE) {
      slab = this.#free.pop() ?? this.#allocate();
      this.#current = slab;
    }
    const at = slab.used;
    slab.bytes.set(frame, at);
    slab.used = (at + n + 7) & ~7;
    slab.live++;
    slab.liveBytes += n;
    p.data = slab.bytes.subarray(at, at + n);
    p.slab = slab;
  }

  /** `p` is gone: its slab is reused once all of the slab's frames are gone. */
  release(p: Packet): void {
    const slab = p.slab;
    if (slab === null) return;
    p.slab = null;
    slab.liveBytes -= p.data.length;
    if (--slab.live > 0) return;
    slab.used = 0;
    if (slab === this.#current) return;
    if (this.#free.length < FREE_SLABS_MAX) this.#free.push(slab);
    else this.#slabs--;
  }

  /**
   * Moves a long-held frame into a buffer of its own, so that one stuck frame does not pin a
   * whole slab of frames long gone. Frames of a slab that is still mostly held stay: copying
   * them would free nothing until all are copied, and would double their memory meanwhile (a
   * flood's thousands of held frames at a timeout, released a checkpoint later).
   */
  evacuate(p: Packet): void {
    if (p.slab === null || p.slab.liveBytes > EVACUATE_BELOW) return;
    const own = p.data.slice();
    this.release(p);
    p.data = own;
  }

  #allocate(): Slab {
    this.#slabs++;
    return new Slab(SLAB_SIZE);
  }
}
