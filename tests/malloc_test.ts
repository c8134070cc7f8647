import assert from "node:assert/strict";
import {
  MallocTrimmer,
  RSS_BURST,
  RSS_GROWTH,
  TRIM_WINDOW_MS,
  TRIMS_PER_WINDOW,
} from "../src/malloc.ts";
import { dlopenCalls } from "./support/dlopen_count.ts";
import { runJsonChild } from "./support/child.ts";
import type { MmapChildResult } from "./support/mmap_child.ts";

const MiB = 2 ** 20;

/**
 * A trimmer over a fake RSS and a trim that takes `freed` bytes off it when it completes
 * (`state.release`, set while a trim is under way); `look` is a look whose trim, if it starts
 * one, completes at once.
 */
function fake(start: number) {
  const state = { rss: start, trims: 0, freed: 0, release: null as (() => void) | null };
  const trimmer = new MallocTrimmer(
    () =>
      new Promise<void>((resolve) => {
        state.trims++;
        state.release = () => {
          state.release = null;
          state.rss -= state.freed;
          resolve();
        };
      }),
    () => state.rss,
  );
  const look = (now?: number) => {
    const trimmed = trimmer.maybeTrim(now);
    state.release?.();
    return trimmed;
  };
  return { state, trimmer, look };
}

/** Grows the fake RSS by `bytes` in steps under RSS_BURST, looking after each: false if any trimmed. */
async function growSlowly(
  state: { rss: number },
  trimmer: MallocTrimmer,
  bytes: number,
): Promise<boolean> {
  const step = RSS_BURST - 1;
  for (let left = bytes; left > 0; left -= step) {
    state.rss += Math.min(step, left);
    if (await trimmer.maybeTrim()) return false;
  }
  return true;
}

Deno.test("malloc: slow growth trims nothing until the RSS has grown 8 MiB past its level when made", async () => {
  const { state, trimmer, look } = fake(200 * MiB);
  assert.equal(await look(), false);
  assert.ok(await growSlowly(state, trimmer, RSS_GROWTH - 1));
  assert.equal(state.trims, 0);
  state.rss += 1;
  assert.equal(await look(), true);
});

Deno.test("malloc: 2 MiB grown between two looks trims at once, far below the 8 MiB", async () => {
  const { state, look } = fake(200 * MiB);
  state.rss += RSS_BURST - 1;
  assert.equal(await look(), false);
  state.rss += RSS_BURST;
  assert.equal(await look(), true);
  assert.equal(state.trims, 1);
  // The level and the last look are now the RSS after the trim: 2 MiB more is the next burst.
  state.rss += RSS_BURST - 1;
  assert.equal(await look(), false);
  state.rss += RSS_BURST;
  assert.equal(await look(), true);
});

Deno.test("malloc: at most 5 trims within any 10 s, then the next once the oldest is 10 s old", async () => {
  const { state, trimmer, look } = fake(100 * MiB);
  const burst = (now: number) => {
    state.rss += RSS_BURST;
    return look(now);
  };
  for (let i = 0; i < TRIMS_PER_WINDOW; i++) assert.equal(await burst(i * 100), true);
  assert.equal(await burst(TRIM_WINDOW_MS - 1), false, "a sixth within 10 s of the first");
  assert.equal(state.trims, TRIMS_PER_WINDOW);
  assert.equal(await burst(TRIM_WINDOW_MS), true, "10 s after the first");
  assert.equal(await burst(TRIM_WINDOW_MS + 50), false, "within 10 s of the second");
  assert.equal(await burst(TRIM_WINDOW_MS + 100), true);
  assert.equal(trimmer.trims, TRIMS_PER_WINDOW + 2);
});

Deno.test("malloc: after a rebase, growth counts from the RSS then (a warm-up's is not the program's)", async () => {
  const { state, trimmer, look } = fake(30 * MiB);
  state.rss += RSS_GROWTH + MiB; // the warm-up's
  trimmer.rebase();
  assert.equal(await look(), false);
  assert.ok(await growSlowly(state, trimmer, RSS_GROWTH - 1));
  state.rss += 1;
  assert.equal(await look(), true);
  assert.equal(state.trims, 1);
});

Deno.test("malloc: growth past the level trims once; the level is then what is left", async () => {
  const { state, trimmer, look } = fake(100 * MiB);
  state.freed = 5 * MiB;
  assert.ok(await growSlowly(state, trimmer, RSS_GROWTH - 1));
  state.rss += MiB + 1;
  const trimming = trimmer.maybeTrim();
  state.rss += RSS_BURST;
  assert.equal(await trimmer.maybeTrim(), false, "no second trim while one is under way");
  state.rss -= RSS_BURST;
  let settled = false;
  const waiting = trimmer.settled().then(() => settled = true);
  await Promise.resolve();
  assert.equal(settled, false, "settled waits for the trim under way");
  state.release!();
  await waiting;
  assert.equal(await trimming, true);
  assert.equal(state.trims, 1);
  assert.equal(trimmer.trims, 1);
  // Left at 104 MiB: 111 MiB is not enough for the next trim, 112 MiB is.
  assert.equal(state.rss, 104 * MiB);
  assert.ok(await growSlowly(state, trimmer, RSS_GROWTH - 1));
  state.rss += 1;
  assert.equal(await look(), true);
  assert.equal(state.trims, 2);
});

Deno.test({
  name: "malloc: glibc's malloc_trim is reached here and completes",
  ignore: Deno.build.os !== "linux",
  async fn() {
    let rss = 0;
    const real = MallocTrimmer.open();
    assert.ok(real !== null, "libc.so.6 with malloc_trim (glibc) on this Linux machine");
    // Through a wrapper over the same library call, with a fake RSS to make it trim.
    const trimmer = new MallocTrimmer(() => real.trimNow(), () => rss);
    rss = RSS_GROWTH;
    assert.equal(await trimmer.maybeTrim(), true);
  },
});

Deno.test({
  name: "malloc: what is given back with each trim runs first, once per trim",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const order: string[] = [];
    const real = MallocTrimmer.open(() => order.push("also"));
    assert.ok(real !== null, "libc.so.6 with malloc_trim (glibc) on this Linux machine");
    const trim = real.trimNow();
    order.push("started");
    await trim;
    await real.trimNow();
    assert.deepEqual(order, ["also", "started", "also"]);
  },
});

Deno.test({
  name: "malloc: libc is opened once per process, whatever the number of trimmers",
  ignore: Deno.build.os !== "linux",
  fn() {
    // The first may have been opened by another test of this process already.
    assert.ok(MallocTrimmer.open() !== null);
    assert.equal(
      dlopenCalls(() => {
        assert.ok(MallocTrimmer.open() !== null);
        assert.ok(MallocTrimmer.open(() => {}) !== null);
      }),
      0,
    );
  },
});

const MMAP_CHILD = new URL("./support/mmap_child.ts", import.meta.url).pathname;

Deno.test({
  name: "malloc: with the mmap threshold fixed at the block size, blocks stay out of malloc's heap",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const run = (mode: string) =>
      runJsonChild<MmapChildResult>(["run", "-A", "--v8-flags=--expose-gc", MMAP_CHILD, mode]);
    const fixed = await run("fixed");
    const moving = await run("glibc");
    assert.equal(fixed.fixed, true, "glibc took the threshold");
    // 40 blocks are 5 MiB: with glibc's own threshold, risen past the first block freed, they
    // come from the heap; fixed, each has a mapping of its own.
    assert.ok(moving.heapGrowth >= 4 * MiB, `glibc's threshold: [heap] +${moving.heapGrowth} B`);
    assert.ok(fixed.heapGrowth < MiB, `fixed: [heap] +${fixed.heapGrowth} B`);
  },
});
