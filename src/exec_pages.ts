/**
 * The pages of the runtime's executable that the program no longer reads go back to the
 * kernel (issue 11). RSS counts every page of the deno executable the process has touched:
 * its machine code, read-only data and relocations, about 25 MiB of an idle comparator's 47
 * and 40 MiB of a busy one's peak (bench/README.md, "What a throughput row's peak is made
 * of"). Most of them served the start (module loading, the relocations the loader applied,
 * code no frame ever runs) and are never read again, yet stay counted.
 *
 * `madvise(MADV_DONTNEED)` over the executable's read-only mappings unmaps those pages from
 * the process. They stay in the page cache, shared with every other instance on the host;
 * whatever the program still runs comes back at its next use as a minor fault, without I/O.
 * Only mappings the process cannot have written are given back: private, not writable, and
 * with no anonymous (copied-on-write) page in them, so nothing is lost that the file does not
 * hold. The mappings are read again from `/proc/self/smaps` at each release (0.3-0.8 ms), so
 * a page written since (a debugger's breakpoint, a uprobe) keeps its mapping where it is.
 *
 * Given back once the comparator listens, 100 ms after TLS peers connect (a handshake's code;
 * at most once per 10 s, src/comparator.ts), and again with each malloc trim (src/malloc.ts):
 * the compilers' code, run while the hot path was compiled, goes as well once it is idle.
 * libc, `/proc/self/smaps` and `/proc/self/status` (the anonymous RSS the malloc trimmer then
 * watches) are opened at start, while `ffi` and `read` are granted.
 *
 * @module
 */

import { openLibc } from "./libc.ts";

const MADV_DONTNEED = 4;

// The address as a plain integer: making a pointer object needs the `ffi` permission at
// every call, and the releases at malloc trims come after it is revoked.
const SYMBOLS = {
  madvise: { parameters: ["usize", "usize", "i32"], result: "i32" },
} as const;

/** A range of mapped addresses. */
export interface PageRange {
  start: bigint;
  length: number;
}

/** `start-end perms offset dev inode [path]`, the first line of each mapping in smaps. */
const MAPPING = /^([0-9a-f]+)-([0-9a-f]+) ([-r][-w][-x][ps]) \S+ \S+ \S+\s*(.*)$/;

/**
 * The mappings of `exe` in `smaps` (the text of `/proc/PID/smaps`) that can be given back:
 * private, not writable, no anonymous page.
 */
export function readOnlyMappings(smaps: string, exe: string): PageRange[] {
  const ranges: PageRange[] = [];
  let current: PageRange | null = null;
  for (const line of smaps.split("\n")) {
    const m = MAPPING.exec(line);
    if (m !== null) {
      if (current !== null) ranges.push(current);
      const [, from, to, perms, path] = m;
      const start = BigInt(`0x${from}`);
      current = path === exe && perms[1] === "-" && perms[3] === "p"
        ? { start, length: Number(BigInt(`0x${to}`) - start) }
        : null;
    } else if (current !== null && line.startsWith("Anonymous:")) {
      if (!/^Anonymous:\s+0 kB/.test(line)) current = null;
    }
  }
  if (current !== null) ranges.push(current);
  return ranges;
}

/** The executable's read-only mappings, and the call that gives their pages back. */
export class ExecutablePages {
  readonly #smaps: () => string;
  readonly #exe: string;
  readonly #madvise: (start: bigint, length: bigint, advice: number) => number;
  readonly #close: () => void;
  readonly #status: () => string;
  /** Times the pages were given back. */
  releases = 0;

  /**
   * `smaps` and `status` read the process's `/proc/self/smaps` and `/proc/self/status` afresh;
   * `exe` is the executable's path. Tests give their own.
   */
  constructor(
    smaps: () => string,
    exe: string,
    madvise: (start: bigint, length: bigint, advice: number) => number,
    close: () => void = () => {},
    status: () => string = () => "",
  ) {
    this.#smaps = smaps;
    this.#exe = exe;
    this.#madvise = madvise;
    this.#close = close;
    this.#status = status;
  }

  /**
   * The anonymous part of the process's RSS (`RssAnon`), in bytes: what the malloc trimmer
   * watches when the executable's pages are given back with its trims. The whole RSS would
   * drop by the pages given back and rise again as the running code maps them back, and each
   * rise would call for the next trim. The whole RSS where `RssAnon` cannot be read.
   */
  anonymousRss(): number {
    const kb = /^RssAnon:\s+(\d+) kB/m.exec(this.#status());
    return kb ? Number(kb[1]) * 1024 : Deno.memoryUsage().rss;
  }

  /**
   * The executable's pages, or why they cannot be given back (a sentence for the log).
   * `/proc/self/smaps` and `/proc/self/status` stay open, to be read again after the `read`
   * permission is gone.
   */
  static open(): ExecutablePages | string {
    const libc = openLibc(SYMBOLS, "giving the executable's pages back");
    if (typeof libc === "string") return libc;
    let exe: string;
    try {
      exe = Deno.execPath();
    } catch (error) {
      return `the executable's path: ${error instanceof Error ? error.message : error}`;
    }
    const files: Deno.FsFile[] = [];
    try {
      for (const path of ["/proc/self/smaps", "/proc/self/status"]) files.push(Deno.openSync(path));
    } catch (error) {
      files.forEach((f) => f.close());
      return `/proc/self: ${error instanceof Error ? error.message : error}`;
    }
    const [smaps, status] = files;
    return new ExecutablePages(
      () => readAgain(smaps),
      exe,
      libc.madvise,
      () => files.forEach((f) => f.close()),
      () => readAgain(status),
    );
  }

  /**
   * Gives the pages of the executable's read-only mappings back, as they are now: bytes of
   * the mappings, and how many of them the kernel refused (none, normally).
   */
  release(): { bytes: number; refused: number } {
    this.releases++;
    let bytes = 0;
    let refused = 0;
    for (const r of readOnlyMappings(this.#smaps(), this.#exe)) {
      bytes += r.length;
      if (this.#madvise(r.start, BigInt(r.length), MADV_DONTNEED) !== 0) refused++;
    }
    return { bytes, refused };
  }

  /** Closes `/proc/self/smaps` and `/proc/self/status`. */
  close(): void {
    this.#close();
  }
}

/** Where `/proc` files are read into, a piece at a time. */
const scratch = new Uint8Array(64 * 1024);

/**
 * The whole text of `file` (a `/proc` file, made afresh at each read from its start), read
 * through one buffer: the trimmer reads `/proc/self/status` every 100 ms.
 */
function readAgain(file: Deno.FsFile): string {
  file.seekSync(0, Deno.SeekMode.Start);
  const decoder = new TextDecoder();
  let text = "";
  for (;;) {
    const n = file.readSync(scratch);
    if (n === null || n === 0) break;
    text += decoder.decode(scratch.subarray(0, n), { stream: true });
  }
  return text + decoder.decode();
}
