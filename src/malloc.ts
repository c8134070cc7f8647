/**
 * Memory that malloc holds free goes back to the kernel (issue 11). Deno's buffers come from
 * glibc's malloc, which keeps what is freed for reuse and returns it only from the top of its
 * heap: over TLS (`node:tls`), where every record passes through buffers of its own, a
 * tcp-1000 stream left 45 MiB free but resident inside malloc's heap after a few seconds
 * (bench/README.md). Once a second the comparator asks malloc how much it holds free; above
 * {@linkcode FREE_HELD_MAX} it calls `malloc_trim(0)` on a thread of Deno's pool, which gives
 * the free pages back wherever they lie.
 *
 * libc is opened at start, while the `ffi` permission is still granted (src/permissions.ts);
 * where it cannot be (not Linux with glibc, no permission), nothing is trimmed.
 *
 * @module
 */

/** Free bytes malloc may hold before they are given back. */
export const FREE_HELD_MAX = 8 * 2 ** 20;

const SYMBOLS = {
  // struct mallinfo2: ten size_t fields; `fordblks` (free bytes held) is the ninth.
  mallinfo2: { parameters: [], result: { struct: Array(10).fill("usize") } },
  // Off the main thread: trimming a large heap takes milliseconds.
  malloc_trim: { parameters: ["usize"], result: "i32", nonblocking: true },
} as const;

type Malloc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** Gives malloc's free memory back when it holds more than {@linkcode FREE_HELD_MAX}. */
export class MallocTrimmer {
  readonly #malloc: Malloc;
  #trimming = false;
  /** Trims started (for tests and the log at exit). */
  trims = 0;

  private constructor(malloc: Malloc) {
    this.#malloc = malloc;
  }

  /** The trimmer, or null where glibc's malloc cannot be reached (then nothing is trimmed). */
  static open(): MallocTrimmer | null {
    if (Deno.build.os !== "linux") return null;
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return null;
    try {
      return new MallocTrimmer(Deno.dlopen("libc.so.6", SYMBOLS).symbols);
    } catch {
      return null; // not glibc (no mallinfo2 before 2.33): nothing to trim
    }
  }

  /** Bytes malloc holds free (`mallinfo2().fordblks`). */
  freeHeld(): number {
    const info = this.#malloc.mallinfo2();
    return Number(new DataView(info.buffer, info.byteOffset, 80).getBigUint64(64, true));
  }

  /**
   * Trims when more than {@linkcode FREE_HELD_MAX} is held free and no trim is under way;
   * resolves when done (at once when there was nothing to do). True when a trim ran.
   */
  async maybeTrim(): Promise<boolean> {
    if (this.#trimming || this.freeHeld() <= FREE_HELD_MAX) return false;
    this.#trimming = true;
    this.trims++;
    try {
      await this.#malloc.malloc_trim(0n);
    } finally {
      this.#trimming = false;
    }
    return true;
  }
}
