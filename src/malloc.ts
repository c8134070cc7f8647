/**
 * Memory that malloc holds free goes back to the kernel (issue 11). Deno's buffers come from
 * glibc's malloc, which keeps what is freed for reuse and returns it only from the top of its
 * heap: over TLS (`node:tls`), where every record passes through buffers of its own, a
 * tcp-1000 stream kept about 45 MiB free but resident inside malloc's heap (bench/README.md).
 *
 * Asking malloc how much it holds free (`mallinfo2`) walks its free lists on the calling thread
 * (milliseconds on a fragmented heap), so the trigger is the process's RSS instead, a few
 * microseconds to read: once it has grown {@linkcode RSS_GROWTH} past what it was after the last
 * trim (or at start), `malloc_trim(0)` runs on a thread of Deno's pool and gives malloc's free pages back
 * wherever they lie. Memory in use stays, and the next trim waits for the next growth. A fast
 * growth between two looks ({@linkcode RSS_BURST}) trims at once: V8's compilers fill malloc's
 * arenas, and touch the executable's pages given back with each trim, within a few hundred
 * milliseconds of the first traffic of a kind. At most {@linkcode TRIMS_PER_WINDOW} trims per
 * {@linkcode TRIM_WINDOW_MS}, one every 2 s on average, as when the trimmer looked every 2 s.
 *
 * libc is opened at start, while the `ffi` permission is still granted (src/permissions.ts);
 * where it cannot be (not Linux, no permission), nothing is trimmed.
 *
 * @module
 */

import { openLibc } from "./libc.ts";

/** RSS growth (bytes) past the level after the last trim that calls for the next one. */
export const RSS_GROWTH = 8 * 2 ** 20;

/**
 * RSS growth (bytes) since the trimmer last looked that calls for a trim at once, however far
 * the RSS is from its level: with the comparator looking every 100 ms, the compilers' burst at
 * the first bulk traffic (10 MiB of malloc's arenas and 12 MiB of the executable's pages within
 * 0.35 s) is trimmed while it runs, where {@linkcode RSS_GROWTH} looked at every 2 s came after
 * it had set the peak. Slower growth (a busy stream's heap) waits for {@linkcode RSS_GROWTH}:
 * trims under steady traffic cost it (bench/README.md, "Trims while the compilers run").
 */
export const RSS_BURST = 2 * 2 ** 20;

/** At most this many trims within any {@linkcode TRIM_WINDOW_MS}. */
export const TRIMS_PER_WINDOW = 5;

/** The window of {@linkcode TRIMS_PER_WINDOW} (ms): one trim every 2 s on average. */
export const TRIM_WINDOW_MS = 10_000;

const SYMBOLS = {
  // Off the main thread: trimming a large heap takes milliseconds.
  malloc_trim: { parameters: ["usize"], result: "i32", nonblocking: true },
  mallopt: { parameters: ["i32", "i32"], result: "i32" },
} as const;

/** `mallopt`'s parameter for the request size from which malloc maps memory of its own. */
const M_MMAP_THRESHOLD = -3;

/**
 * libc's `malloc_trim` and `mallopt`, once opened: shared by every trimmer of the process (the
 * warm-up's and its comparators' as well as the real comparator's) and the threshold below.
 */
let libcMalloc: Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] | null = null;

/** libc's malloc functions, or why they cannot be had. */
function mallocOf(purpose: string): Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] | string {
  if (libcMalloc === null) {
    const libc = openLibc(SYMBOLS, purpose);
    if (typeof libc === "string") return libc;
    libcMalloc = libc;
  }
  return libcMalloc;
}

/**
 * Has malloc give every request of `bytes` or more a mapping of its own, from now on; true when
 * glibc took it. Called at start with the pool's block size (src/pool.ts): the blocks that hold
 * reads, held frames and outdev's chunks then come and go as mappings of their own, and a block
 * the pool gives up goes back to the kernel at once. glibc's own threshold starts at 128 KiB and
 * rises to the size of the first mapped chunk freed: after the pool's first block went (132 KiB
 * with malloc's header), every later block came from malloc's heaps, where a block given up
 * stays resident among smaller allocations until a trim can reach it. Fixed, the threshold no
 * longer moves: 2 MiB lower peaks in the TLS rows, about 1 MiB in the plain ones, the same frames
 * per second (bench/README.md, "malloc's mmap threshold fixed at the block size").
 */
export function fixMmapThreshold(bytes: number): boolean {
  const malloc = mallocOf("the mmap threshold");
  return typeof malloc !== "string" && malloc.mallopt(M_MMAP_THRESHOLD, bytes) === 1;
}

/** Gives malloc's free memory back when the RSS has grown {@linkcode RSS_GROWTH}. */
export class MallocTrimmer {
  readonly #trim: () => Promise<unknown>;
  readonly #rss: () => number;
  /** RSS after the last trim, or when the trimmer was made. */
  #level: number;
  /** RSS at the last look ({@linkcode MallocTrimmer.maybeTrim}). */
  #looked: number;
  /** The trim under way, or null. */
  #running: Promise<unknown> | null = null;
  /** When the last {@linkcode TRIMS_PER_WINDOW} trims started (ms), oldest first. */
  readonly #startedAt: number[] = [];
  /** Trims started. */
  trims = 0;

  /** `trim` and `rss` are libc's and the process's; tests give their own. */
  constructor(trim: () => Promise<unknown>, rss: () => number = () => Deno.memoryUsage().rss) {
    this.#trim = trim;
    this.#rss = rss;
    this.#level = this.#looked = rss();
  }

  /**
   * The trimmer over glibc's `malloc_trim`, or null where it cannot be reached. `also` runs
   * before each trim: the executable's pages go back with malloc's (src/exec_pages.ts), and
   * `rss` is then the part of the RSS those pages are not in.
   */
  static open(also?: () => void, rss?: () => number): MallocTrimmer | null {
    const malloc = mallocOf("malloc trims");
    if (typeof malloc === "string") return null;
    const trim = () => {
      also?.();
      return malloc.malloc_trim(0n);
    };
    return new MallocTrimmer(trim, rss);
  }

  /**
   * Counts the growth from the RSS now: what grew before (the warm-up's comparators, which
   * trimmed after themselves) calls for no trim of the program's (src/comparator.ts, `start`).
   */
  rebase(): void {
    this.#level = this.#looked = this.#rss();
  }

  /** Trims now, whatever the RSS. */
  trimNow(): Promise<unknown> {
    return this.#trim();
  }

  /**
   * Trims when the RSS has grown {@linkcode RSS_GROWTH} past its level after the last trim, or
   * {@linkcode RSS_BURST} since the last look, no trim is under way and fewer than
   * {@linkcode TRIMS_PER_WINDOW} started in the {@linkcode TRIM_WINDOW_MS} before `now` (ms,
   * any clock that does not go back); resolves when done (at once when there was nothing to
   * do). True when a trim ran.
   */
  async maybeTrim(now: number = performance.now()): Promise<boolean> {
    const rss = this.#rss();
    const burst = rss - this.#looked >= RSS_BURST;
    this.#looked = rss;
    if (this.#running !== null) return false;
    const started = this.#startedAt;
    if (started.length === TRIMS_PER_WINDOW && now - started[0] < TRIM_WINDOW_MS) return false;
    if (!burst && rss - this.#level < RSS_GROWTH) return false;
    if (started.length === TRIMS_PER_WINDOW) started.shift();
    started.push(now);
    this.trims++;
    this.#running = this.#trim();
    try {
      await this.#running;
    } finally {
      this.#running = null;
      this.#level = this.#looked = this.#rss();
    }
    return true;
  }

  /** Resolves once no trim is under way (at stop: nothing is left running). */
  async settled(): Promise<void> {
    await this.#running?.catch(() => {});
  }
}
