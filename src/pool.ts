/**
 * Fixed-size byte blocks shared by held frames (`compare/store.ts`, as slabs) and outdev's
 * output buffer (`output/writer.ts`, as chunks). A block given back is reused rather than left
 * to the garbage collector: V8 frees an ArrayBuffer only at a full collection, tens of MiB of
 * external memory later, and glibc keeps most of what it frees. So memory peaks at the blocks
 * in use at once, and a checkpoint flush writes the released frames into the blocks of the
 * dropped secondary frames instead of new ones (bench/README.md, issue 11).
 *
 * Blocks unused for a whole {@linkcode TRIM_INTERVAL_MS} go back to the allocator.
 *
 * @module
 */

/** Block size: many frames per block, a few blocks per read or write. */
export const BLOCK_SIZE = 256 * 1024;

/** Blocks that stayed free this long (ms) are given up by {@linkcode BlockPool.trim}. */
export const TRIM_INTERVAL_MS = 10_000;

/** A pool of blocks of one size. */
export class BlockPool {
  readonly size: number;
  readonly #free: Uint8Array[] = [];
  #blocks = 0;
  /** The fewest free blocks since the last trim: that many were not needed. */
  #leastFree = 0;
  #trimmedAt = 0;

  constructor(size: number = BLOCK_SIZE) {
    this.size = size;
  }

  /** Blocks allocated and not given up. */
  get blocks(): number {
    return this.#blocks;
  }

  /** Blocks waiting for reuse. */
  get free(): number {
    return this.#free.length;
  }

  /** A block, reused when one is free. Its bytes are whatever its last user left. */
  take(): Uint8Array {
    const b = this.#free.pop();
    if (b === undefined) {
      this.#blocks++;
      return new Uint8Array(this.size);
    }
    if (this.#free.length < this.#leastFree) this.#leastFree = this.#free.length;
    return b;
  }

  /** Gives back a block from {@linkcode BlockPool.take}; nothing may use it afterwards. */
  give(b: Uint8Array): void {
    this.#free.push(b);
  }

  /**
   * At most once per {@linkcode TRIM_INTERVAL_MS} (`now` in ms): gives up the blocks that were
   * free all along since the last trim, the least recently used first. Returns how many.
   */
  trim(now: number): number {
    if (now - this.#trimmedAt < TRIM_INTERVAL_MS) return 0;
    this.#trimmedAt = now;
    const unused = this.#leastFree;
    // The stack's bottom holds the blocks given back longest ago.
    this.#free.splice(0, unused);
    this.#blocks -= unused;
    this.#leastFree = this.#free.length;
    return unused;
  }
}
