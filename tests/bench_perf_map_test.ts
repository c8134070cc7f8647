import assert from "node:assert/strict";
import { formatMap, latestEntries, type MapEntry, parseMap } from "../bench/perf_map.ts";

const MAP = [
  "1000 100 JS:~warmUp file:///main/src/warmup.ts:1:1",
  "1200 80 JS:^Pool file:///main/src/pool.ts:29:3",
  "1000 40 JS:*'#pairTwin file:///main/src/compare/engine.ts:453:16",
  "1080 20 JS:*'takeRun file:///main/src/compare/engine.ts:417:14",
  "not a map line",
  "",
].join("\n");

Deno.test("perf map: a later code object takes the addresses of the earlier ones it overlaps", () => {
  const kept = latestEntries(parseMap(MAP));
  assert.deepEqual(kept.map((e) => e.name.split(" ")[0]), [
    "JS:*'#pairTwin",
    "JS:*'takeRun",
    "JS:^Pool",
  ]);
  assert.equal(
    formatMap(kept),
    "1000 40 JS:*'#pairTwin file:///main/src/compare/engine.ts:453:16\n" +
      "1080 20 JS:*'takeRun file:///main/src/compare/engine.ts:417:14\n" +
      "1200 80 JS:^Pool file:///main/src/pool.ts:29:3\n",
  );
});

Deno.test("perf map: the same as checking every earlier entry, on random maps", () => {
  let seed = 7;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  for (let round = 0; round < 200; round++) {
    const entries: MapEntry[] = [];
    for (let i = 0; i < 40; i++) {
      entries.push({ start: BigInt(rand(2000)), size: BigInt(1 + rand(120)), name: `f${i}` });
    }
    const naive: MapEntry[] = [];
    for (const e of entries) {
      for (let j = naive.length - 1; j >= 0; j--) {
        const k = naive[j];
        if (k.start < e.start + e.size && e.start < k.start + k.size) naive.splice(j, 1);
      }
      naive.push(e);
    }
    naive.sort((a, b) => (a.start < b.start ? -1 : 1));
    assert.deepEqual(latestEntries(entries).map((e) => e.name), naive.map((e) => e.name));
  }
});
