/**
 * Summarises a V8 `.cpuprofile` (from `deno run --cpu-prof` or `deno task bench --cpu-prof
 * DIR`): the functions with the most self time, and the most inclusive time, as a table.
 *
 *   deno run --allow-read bench/profile.ts FILE.cpuprofile [--top N]
 *
 * @module
 */

import { parseArgs } from "node:util";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

/** One function's share of the profile, in percent of all samples. */
export interface HotFunction {
  name: string;
  where: string;
  self: number;
  total: number;
}

function label(f: CallFrame): { name: string; where: string } {
  const file = f.url.replace(/^file:\/\//, "").replace(/^.*\/(src|bench|tests)\//, "$1/");
  return {
    name: f.functionName || "(anonymous)",
    where: file ? `${file}:${f.lineNumber + 1}` : "",
  };
}

/** Self and inclusive time per function, hottest first by self time. */
export function summarise(profile: CpuProfile): HotFunction[] {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const hits = new Map<number, number>();
  if (profile.samples) {
    for (const s of profile.samples) hits.set(s, (hits.get(s) ?? 0) + 1);
  } else {
    for (const n of profile.nodes) hits.set(n.id, n.hitCount ?? 0);
  }
  let all = 0;
  for (const h of hits.values()) all += h;
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  const names = new Map<string, { name: string; where: string }>();
  // Inclusive time: walk down from each root, counting each function once per stack.
  const walk = (id: number, onStack: Set<string>): number => {
    const n = byId.get(id)!;
    const l = label(n.callFrame);
    const key = `${l.name} ${l.where}`;
    names.set(key, l);
    const own = hits.get(id) ?? 0;
    self.set(key, (self.get(key) ?? 0) + own);
    let sum = own;
    const fresh = !onStack.has(key);
    if (fresh) onStack.add(key);
    for (const c of n.children ?? []) sum += walk(c, onStack);
    if (fresh) {
      onStack.delete(key);
      total.set(key, (total.get(key) ?? 0) + sum);
    }
    return sum;
  };
  const children = new Set(profile.nodes.flatMap((n) => n.children ?? []));
  for (const n of profile.nodes) if (!children.has(n.id)) walk(n.id, new Set());
  return [...names].map(([key, l]) => ({
    ...l,
    self: (100 * (self.get(key) ?? 0)) / all,
    total: (100 * (total.get(key) ?? 0)) / all,
  })).sort((a, b) => b.self - a.self);
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: { top: { type: "string", default: "25" } },
    allowPositionals: true,
  });
  if (positionals.length !== 1) {
    console.error("usage: deno run --allow-read bench/profile.ts FILE.cpuprofile [--top N]");
    Deno.exit(2);
  }
  const profile = JSON.parse(await Deno.readTextFile(positionals[0])) as CpuProfile;
  const top = Number(values.top);
  const rows = summarise(profile);
  const seconds = (profile.endTime - profile.startTime) / 1e6;
  console.log(`${positionals[0]}: ${seconds.toFixed(1)} s sampled\n`);
  console.log("  self%  total%  function (where)");
  for (const r of rows.slice(0, top)) {
    console.log(
      `${r.self.toFixed(1).padStart(7)} ${r.total.toFixed(1).padStart(7)}  ${r.name}` +
        (r.where ? ` (${r.where})` : ""),
    );
  }
  console.log("\nmost inclusive time:");
  for (const r of [...rows].sort((a, b) => b.total - a.total).slice(0, top)) {
    console.log(`${r.total.toFixed(1).padStart(7)}  ${r.name}${r.where ? ` (${r.where})` : ""}`);
  }
}
