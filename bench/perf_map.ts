/**
 * Makes a V8 perf map (`/tmp/perf-PID.map`, from `--v8-flags=--perf-basic-prof`) tell the truth
 * for `perf report`: V8 appends a line for every code object it makes and never takes one out,
 * so once the code of the warm-up is collected and its addresses are reused, the map holds two
 * names for one address and `perf report` may take the old one (a warm-up function's name on
 * the hot path's samples; bench/README.md, "tcp-1000x100: where the kernel's work lands").
 * Each line here drops the earlier lines whose ranges it overlaps, and the map is written back
 * sorted, the original kept beside it as `MAP.orig`.
 *
 *   deno run --allow-read --allow-write bench/perf_map.ts /tmp/perf-PID.map
 *
 * @module
 */

/** One line of a perf map: `START SIZE NAME`, start and size in hex. */
export interface MapEntry {
  start: bigint;
  size: bigint;
  name: string;
}

/** The entries of a perf map's text; lines that are not `START SIZE NAME` are left out. */
export function parseMap(text: string): MapEntry[] {
  const out: MapEntry[] = [];
  for (const line of text.split("\n")) {
    const m = /^([0-9a-fA-F]+) ([0-9a-fA-F]+) (.*)$/.exec(line);
    if (m) out.push({ start: BigInt(`0x${m[1]}`), size: BigInt(`0x${m[2]}`), name: m[3] });
  }
  return out;
}

/**
 * The entries still true at the end: each one drops the earlier entries it overlaps. Sorted by
 * address.
 */
export function latestEntries(entries: readonly MapEntry[]): MapEntry[] {
  // Kept entries sorted by start and never overlapping each other, so the ones a new entry
  // overlaps are a run next to where it goes.
  const kept: MapEntry[] = [];
  for (const e of entries) {
    const end = e.start + e.size;
    let lo = 0;
    let hi = kept.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (kept[mid].start + kept[mid].size <= e.start) lo = mid + 1;
      else hi = mid;
    }
    let to = lo;
    while (to < kept.length && kept[to].start < end) to++;
    kept.splice(lo, to - lo, e);
  }
  return kept;
}

/** A perf map's text for `entries`. */
export function formatMap(entries: readonly MapEntry[]): string {
  return entries.map((e) => `${e.start.toString(16)} ${e.size.toString(16)} ${e.name}\n`).join("");
}

if (import.meta.main) {
  const path = Deno.args[0];
  if (path === undefined || Deno.args.length !== 1) {
    console.error("usage: deno run --allow-read --allow-write bench/perf_map.ts /tmp/perf-PID.map");
    Deno.exit(2);
  }
  const text = Deno.readTextFileSync(path);
  const before = parseMap(text);
  const after = latestEntries(before);
  Deno.writeTextFileSync(`${path}.orig`, text);
  Deno.writeTextFileSync(path, formatMap(after));
  console.log(
    `${path}: ${before.length} entries, ${after.length} kept (${
      before.length - after.length
    } overlapped by later code); the original is ${path}.orig`,
  );
}
