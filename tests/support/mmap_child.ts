/**
 * Run by tests/malloc_test.ts: frees one pool-sized block (glibc raises its mmap threshold past
 * a mapped chunk freed), then makes 40 more and prints how much malloc's main heap grew with
 * them, as one JSON line. Given `fixed`, the threshold is fixed at the block size first, as
 * main.ts does. Needs `--expose-gc`.
 *
 * @module
 */

import { fixMmapThreshold } from "../../src/malloc.ts";
import { BLOCK_SIZE } from "../../src/pool.ts";

/** What the child prints. */
export interface MmapChildResult {
  fixed: boolean;
  /** Growth of `[heap]`'s resident bytes while the 40 blocks were made. */
  heapGrowth: number;
}

const gc = (globalThis as unknown as { gc(): void }).gc;

/** Resident bytes of the main arena's heap (`[heap]` in smaps). */
function heapRss(): number {
  let rss = 0;
  let inHeap = false;
  for (const line of Deno.readTextFileSync("/proc/self/smaps").split("\n")) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inHeap = line.endsWith("[heap]");
    else if (inHeap && line.startsWith("Rss:")) rss += Number(line.split(/\s+/)[1]) * 1024;
  }
  return rss;
}

const fixed = Deno.args[0] === "fixed" ? fixMmapThreshold(BLOCK_SIZE) : false;
let first: Uint8Array | null = new Uint8Array(BLOCK_SIZE).fill(1);
first[0] = 2;
first = null;
gc();
gc();
await new Promise((r) => setTimeout(r, 10));
const before = heapRss();
const blocks = Array.from({ length: 40 }, (_, i) => new Uint8Array(BLOCK_SIZE).fill(i + 1));
const result: MmapChildResult = { fixed, heapGrowth: heapRss() - before };
console.log(JSON.stringify(result));
if (blocks.length !== 40) Deno.exit(1);
