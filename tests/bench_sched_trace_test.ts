/**
 * bench/sched_trace.ts: a tracefs text read on the generator's clock, and each slow pair told
 * apart by what it waited for: another program on a CPU, every CPU idle at once, or neither.
 * A synthetic trace of two CPUs; the real one is read by `deno task bench --sched-trace`.
 */

import assert from "node:assert/strict";
import {
  account,
  describe,
  occupancy,
  type Owner,
  parseTrace,
  type Switch,
} from "../bench/sched_trace.ts";

// Trace seconds 100.000000 on are the generator's epoch ms 5000 on.
const HEADER = `# tracer: nop
#
# entries-in-buffer/entries-written: 9/9   #P:2
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
`;

function sw(cpu: number, s: string, prev: string, next: string, nextPid: number): string {
  return `  ${prev}-1 [00${cpu}] d..2. ${s}: sched_switch: prev_comm=${prev} prev_pid=1 ` +
    `prev_prio=120 prev_state=S ==> next_comm=${next} next_pid=${nextPid} next_prio=120`;
}

const TRACE = HEADER + [
  `  bench-7 [000] ...1. 100.000000: tracing_mark_write: colo-bench-clock 5000.0000`,
  sw(0, "100.000100", "x", "deno", 10), // the target on CPU0
  sw(1, "100.000100", "x", "swapper/1", 0), // CPU1 idle
  // Pair 1, 5001.000-5002.500 ms: kdamond holds CPU0 1.2 ms, CPU1 idles.
  sw(0, "100.001100", "deno", "kdamond.0", 107),
  sw(0, "100.002300", "kdamond.0", "deno", 10),
  // Pair 2, 5010.000-5010.800 ms: both CPUs idle 0.6 ms.
  sw(0, "100.010100", "deno", "swapper/0", 0),
  sw(0, "100.010700", "swapper/0", "V8 DefaultWorke", 11),
  // Pair 3, 5020.000-5020.500 ms: the target's own thread runs.
  sw(0, "100.020000", "V8 DefaultWorke", "deno", 10),
  sw(0, "100.020600", "deno", "swapper/0", 0),
  // Pair 4, 5030.000-5030.800 ms: the generator's compiler thread holds CPU1 0.6 ms.
  sw(1, "100.030100", "swapper/1", "V8 DefaultWorke", 21),
  sw(1, "100.030700", "V8 DefaultWorke", "swapper/1", 0),
].join("\n") + "\n";

const owners: Record<number, Owner> = {
  10: "target",
  11: "target",
  21: "generator helper",
  107: "other",
};
const ownerOf = (tid: number): Owner => owners[tid] ?? "other";

Deno.test("parseTrace: switches on the generator's clock, task names with spaces kept", () => {
  const s = parseTrace(TRACE);
  assert.equal(s.length, 10);
  assert.deepEqual({ ...s[0], ms: Math.round(s[0].ms * 1000) }, {
    ms: 5_000_100,
    cpu: 0,
    tid: 10,
    comm: "deno",
  });
  assert.equal(s[5].comm, "V8 DefaultWorke");
  assert.ok(Math.abs(s[2].ms - 5001.1) < 1e-6);
});

Deno.test("parseTrace: no clock mark, no switches (times cannot be read)", () => {
  assert.deepEqual(parseTrace(TRACE.replace(/.*colo-bench-clock.*\n/, "")), []);
});

Deno.test("occupancy: each task's time per CPU and the time every CPU was idle", () => {
  const s = parseTrace(TRACE);
  const { runs, allIdleUs } = occupancy(s, 2, 5010, 5010.8);
  const of = (cpu: number, tid: number) =>
    Math.round(runs.find((r) => r.cpu === cpu && r.tid === tid)?.us ?? 0);
  assert.equal(of(0, 10), 100);
  assert.equal(of(0, 0), 600);
  assert.equal(of(0, 11), 100);
  assert.equal(of(1, 0), 800);
  assert.equal(Math.round(allIdleUs), 600);
});

Deno.test("occupancy: a CPU with no switch before the window is left out", () => {
  const s: Switch[] = [{ ms: 10, cpu: 1, tid: 5, comm: "a" }];
  assert.deepEqual(occupancy(s, 2, 20, 21).runs.map((r) => r.cpu), [1]);
});

Deno.test("account: slow pairs by cause, the worst of the target's own", () => {
  const s = parseTrace(TRACE);
  const pairs: [number, number][] = [[5001, 1500], [5010, 800], [5020, 500], [5030, 30]];
  const r = account(s, pairs, 2, ownerOf, 3);
  assert.deepEqual(r.slowest.map((p) => p.cause), ["other", "idle", "own"]);
  assert.deepEqual(r.slowest[0].holds.map((h) => [h.comm, h.cpu, Math.round(h.us)]), [
    ["kdamond.0", 0, 1200],
    ["deno", 0, 300],
  ]);
  assert.equal(r.slowest[0].idle[1], 1500);
  assert.equal(r.worstOwn, 500);
  assert.deepEqual(r.overMs, { other: 1, generator: 0, idle: 0, own: 0 });
  const line = describe(r);
  assert.match(line, /1500 µs \(kdamond\.0\[107\] on CPU0 1200 µs, target deno\[10\] on CPU0 300/);
  assert.match(line, /800 µs \(.*all idle 600 µs\)/);
  assert.match(line, /the worst of those 500 µs$/);
});

Deno.test("account: a pair held up by one of the generator's own threads is the generator's", () => {
  const r = account(parseTrace(TRACE), [[5030, 800], [5020, 500]], 2, ownerOf);
  assert.deepEqual(r.slowest.map((p) => p.cause), ["generator", "own"]);
  assert.match(describe(r), /800 µs \(generator V8 DefaultWorke\[21\] on CPU1 600 µs/);
  assert.equal(r.worstOwn, 500);
});

Deno.test("account: pairs before the trace began are not accounted", () => {
  const r = account(parseTrace(TRACE), [[4000, 5000], [5020, 500]], 2, ownerOf);
  assert.deepEqual(r.slowest.map((p) => p.us), [500]);
});
