/**
 * Objects reused instead of left to the garbage collector, kept for as long as they are
 * needed: the fixed-size byte blocks shared by held frames (`compare/store.ts`, as slabs) and
 * outdev's output buffer (`output/writer.ts`, as chunks), and the engine's held-frame records.
 *
 * V8 frees an ArrayBuffer only at a full collection, tens of MiB of external memory later,
 * and glibc keeps most of what it frees; an object that lived through a few scavenges is
 * garbage in the old generation once it goes, which grows the heap until the next full
 * collection. Reused, memory peaks at what is in use at once, and a checkpoint flush writes
 * the released frames into the blocks of the dropped secondary frames instead of new ones
 * (bench/README.md, issue 11). What stays unused for a whole {@linkcode TRIM_INTERVAL_MS} is
 * given up.
 *
 * @module
 */

/**
 * Block size: many frames per block, a few blocks per read or write. 128 KiB rather than 256:
 * the throughput rows peaked 1-3 MiB lower at the same frames per second (bench/README.md).
 * It must hold the largest frame (`NET_BUFSIZE`, 69,632 bytes) whole.
 */
export const BLOCK_SIZE = 128 * 1024;

/**
 * Read size of the plain (`tcp:`, `unix:`) inputs: each reads into a block of this size, which
 * becomes the slab of its frames when they fill most of it (src/compare/store.ts, `adopt`); a
 * TLS input, or one under a `--max-held-bytes` below 8 MiB, reads into a block of
 * {@linkcode BLOCK_SIZE} (src/comparator.ts, `readSizeFor`). 1 MiB, not a block: when
 * the inputs are full (tcp-1000x100), each read of ours gives the sender's window back, and
 * on loopback the kernel sends the sender's waiting segments there and then, on ours' CPU:
 * fewer, larger reads leave more of that work to the sender (bench/README.md, "1 MiB reads").
 */
export const READ_BLOCK_SIZE = 1024 * 1024;

/** Objects that stayed free this long (ms) are given up by {@linkcode Pool.trim}. */
export const TRIM_INTERVAL_MS = 10_000;

/**
 * An empty array whose elements kind is already that of objects. A `[]` is one of small
 * integers until its first object changes its map, in every instance again: code compiled on
 * the warm-up's instances expected the changed map and was thrown away at the real one's.
 */
export function objectArray<T>(): T[] {
  const a = [null as T];
  a.pop();
  return a;
}

/** A pool of interchangeable objects. */
export class Pool<T> {
  readonly #make: () => T;
  readonly #free: T[] = objectArray();
  #made = 0;
  /** The fewest free objects since the last trim: that many were not needed. */
  #leastFree = 0;
  /**
   * When the last trim ran (ms) (-0: a double from the start; see src/comparator.ts,
   * #trimCheckedAt).
   */
  #trimmedAt = -0;

  constructor(make: () => T) {
    this.#make = make;
  }

  /** Objects made and not given up. */
  get made(): number {
    return this.#made;
  }

  /** Objects waiting for reuse. */
  get free(): number {
    return this.#free.length;
  }

  /** An object, reused when one is free. It holds whatever its last user left. */
  take(): T {
    const x = this.#free.pop();
    if (x === undefined) {
      this.#made++;
      return this.#make();
    }
    if (this.#free.length < this.#leastFree) this.#leastFree = this.#free.length;
    return x;
  }

  /** Gives back an object from {@linkcode Pool.take}; nothing may use it afterwards. */
  give(x: T): void {
    this.#free.push(x);
  }

  /**
   * At most once per {@linkcode TRIM_INTERVAL_MS} (`now` in ms): gives up the objects that
   * were free all along since the last trim, the least recently used first. Returns how many.
   */
  trim(now: number): number {
    if (now - this.#trimmedAt < TRIM_INTERVAL_MS) return 0;
    this.#trimmedAt = now;
    const unused = this.#leastFree;
    // The stack's bottom holds the objects given back longest ago.
    this.#free.splice(0, unused);
    this.#made -= unused;
    this.#leastFree = this.#free.length;
    return unused;
  }
}

/** A pool of byte blocks of one size. */
export class BlockPool extends Pool<Uint8Array> {
  readonly size: number;

  constructor(size: number = BLOCK_SIZE) {
    super(() => new Uint8Array(size));
    this.size = size;
  }

  /** Blocks allocated and not given up. */
  get blocks(): number {
    return this.made;
  }
}
