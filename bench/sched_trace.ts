/**
 * What held the CPUs while the latency run's slowest pairs waited (`bench.ts --sched-trace`):
 * the kernel's scheduler switches (tracefs, event `sched/sched_switch`) recorded around one
 * latency run, and for each slow pair the tasks that ran on each CPU during it, by owner (the
 * target, the generator, or another program), with each CPU's idle time.
 *
 * Why: a pair of the latency row waits one to four milliseconds a few times per run, whatever
 * the target, whenever a task it needs is woken on a CPU that a kernel thread or another
 * program holds while the other CPU idles (bench/README.md, "What the slowest pairs wait
 * for"). The row's worst pair is then a draw between the targets' runs; this says, per run,
 * which of its slowest pairs were the target's own time and which another program's.
 *
 * Needs root and tracefs (mounted here if it is not); without them the run goes on untraced
 * and says why. The tracing settings it changes are put back afterwards.
 *
 * @module
 */

const TRACEFS = "/sys/kernel/tracing";
/** Per-CPU ring size while tracing: about 250,000 switches per CPU, a QEMU latency run's 5x. */
const BUFFER_KB = 32768;
/** Tasks on a CPU for less than this during a pair are left out of its account. */
export const HOLD_MIN_US = 100;

/** Pairs under a millisecond looked at for one of the target's own (cause "own"), at most. */
const LOOK_MAX = 1000;

/** One context switch: at `ms` (the generator's epoch clock), `cpu` started running `tid`. */
export interface Switch {
  ms: number;
  cpu: number;
  tid: number;
  comm: string;
}

/**
 * Who a task belongs to: the target, the generator's main thread, one of the generator's
 * other threads (V8's compilers and collectors: the measurement's own noise), another program.
 */
export type Owner = "target" | "generator" | "generator helper" | "other";

/** A task's time on one CPU during one pair. */
export interface Hold {
  cpu: number;
  comm: string;
  tid: number;
  owner: Owner;
  us: number;
}

/** One slow pair and what ran while it waited. */
export interface PairAccount {
  /** When the pair's wait began (epoch ms), to find it in the target's own logs. */
  at: number;
  us: number;
  holds: Hold[];
  /** Idle time per CPU during the pair, µs. */
  idle: number[];
  /** How long every CPU was idle at once (a wake-up across CPUs that took its time), µs. */
  allIdle: number;
  /** What the pair waited for. */
  cause: Cause;
}

/**
 * What a slow pair waited for: another program on a CPU ({@linkcode HOLD_MIN_US} or more),
 * else one of the generator's helper threads that long, else every CPU idle at once that long
 * (a wake-up that took its time: on a virtual machine, the hypervisor running the vCPU late),
 * else the target's time (and the generator's main thread's).
 */
export type Cause = "other" | "generator" | "idle" | "own";

/** What a traced latency run reports. */
export interface SchedReport {
  /** The slowest warm pairs, slowest first. */
  slowest: PairAccount[];
  /**
   * The slowest warm pair whose cause is "own" (µs): none of the others; null when none of
   * the slowest pairs looked at was.
   */
  worstOwn: number | null;
  /** Warm pairs of a millisecond or more, by cause. */
  overMs: Record<Cause, number>;
}

/** The trace of one latency run, or why there is none. */
export class SchedTrace {
  readonly #saved: [string, string][] = [];

  private constructor() {}

  /** Starts tracing, or says why it cannot. */
  static start(): SchedTrace | string {
    if (Deno.uid() !== 0) return "needs root (tracefs)";
    if (!exists(`${TRACEFS}/trace`)) {
      const out = new Deno.Command("mount", {
        args: ["-t", "tracefs", "nodev", TRACEFS],
        stdout: "null",
        stderr: "piped",
      }).outputSync();
      if (!out.success || !exists(`${TRACEFS}/trace`)) {
        return `tracefs not mounted at ${TRACEFS} and mount failed: ` +
          new TextDecoder().decode(out.stderr).trim();
      }
    }
    const t = new SchedTrace();
    try {
      t.#set("tracing_on", "0");
      t.#set("trace_clock", "mono");
      t.#set("buffer_size_kb", String(BUFFER_KB));
      t.#set("events/sched/sched_switch/enable", "1");
      Deno.writeTextFileSync(`${TRACEFS}/trace`, "");
      t.#set("tracing_on", "1");
      t.mark();
    } catch (error) {
      t.#restore();
      return `tracefs: ${error instanceof Error ? error.message : error}`;
    }
    return t;
  }

  /**
   * A mark in the trace with the generator's clock at that moment, to read the trace's
   * timestamps on it (`performance.timeOrigin + performance.now()`, ms).
   */
  mark(): void {
    Deno.writeTextFileSync(
      `${TRACEFS}/trace_marker`,
      `colo-bench-clock ${(performance.timeOrigin + performance.now()).toFixed(4)}\n`,
    );
  }

  /** Stops tracing, puts the settings back and returns the switches, oldest first. */
  stop(): Switch[] {
    this.mark();
    Deno.writeTextFileSync(`${TRACEFS}/tracing_on`, "0");
    let text = "";
    try {
      text = Deno.readTextFileSync(`${TRACEFS}/trace`);
    } finally {
      Deno.writeTextFileSync(`${TRACEFS}/trace`, "");
      this.#restore();
    }
    return parseTrace(text);
  }

  #set(file: string, value: string): void {
    const path = `${TRACEFS}/${file}`;
    let old = Deno.readTextFileSync(path).trim();
    // trace_clock lists every clock with the current one in brackets; buffer_size_kb may say
    // "7 (expanded: 1408)".
    const chosen = /\[(\S+)\]/.exec(old) ?? /^(\d+) \(/.exec(old);
    if (chosen) old = chosen[1];
    this.#saved.push([path, old]);
    Deno.writeTextFileSync(path, value);
  }

  #restore(): void {
    for (const [path, value] of this.#saved.reverse()) {
      try {
        Deno.writeTextFileSync(path, value);
      } catch {
        // Left as it is: the trace's own settings, not the host's.
      }
    }
    this.#saved.length = 0;
  }
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

// `  deno-26174  [001] d..2. 26323.892049: sched_switch: prev_comm=... ==> next_comm=X next_pid=N`
const LINE = /^\s*.*?-\d+\s+\[(\d+)\]\s+\S+\s+(\d+\.\d+):\s+(\w+):\s+(.*)$/;
const NEXT = /next_comm=(.*) next_pid=(\d+)/;
const MARK = /colo-bench-clock (\d+\.\d+)/;

/**
 * The switches of a tracefs text, their times on the generator's clock (the first mark in the
 * text sets the offset). Exported for the tests.
 */
export function parseTrace(text: string): Switch[] {
  const raw: { s: number; cpu: number; tid: number; comm: string }[] = [];
  let offsetMs: number | null = null;
  for (const line of text.split("\n")) {
    const m = LINE.exec(line);
    if (!m) continue;
    const s = Number(m[2]);
    if (m[3] === "sched_switch") {
      const n = NEXT.exec(m[4]);
      if (n) raw.push({ s, cpu: Number(m[1]), tid: Number(n[2]), comm: n[1] });
    } else if (offsetMs === null) {
      const mark = MARK.exec(m[4]);
      if (mark) offsetMs = Number(mark[1]) - s * 1000;
    }
  }
  if (offsetMs === null) return [];
  const off = offsetMs;
  return raw.map((r) => ({ ms: r.s * 1000 + off, cpu: r.cpu, tid: r.tid, comm: r.comm }));
}

/** A task's time on one CPU (tid 0: the CPU idle). */
export interface Run {
  cpu: number;
  tid: number;
  comm: string;
  us: number;
}

/**
 * What ran on each CPU from `fromMs` to `toMs`: each task's time per CPU (the idle task is tid
 * 0), and how long every CPU was idle at once (µs). A CPU with no switch before `fromMs` in the
 * trace is left out (its first task is not known).
 */
export function occupancy(
  switches: readonly Switch[],
  cpus: number,
  fromMs: number,
  toMs: number,
): { runs: Run[]; allIdleUs: number } {
  // The first switch after fromMs, then back to each CPU's last switch before it.
  let lo = 0;
  let hi = switches.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (switches[mid].ms <= fromMs) lo = mid + 1;
    else hi = mid;
  }
  const current: (Switch | null)[] = new Array(cpus).fill(null);
  for (let i = lo - 1, found = 0; i >= 0 && found < cpus; i--) {
    const s = switches[i];
    if (s.cpu < cpus && current[s.cpu] === null) {
      current[s.cpu] = s;
      found++;
    }
  }
  const since: number[] = new Array(cpus).fill(fromMs);
  const out: Run[] = [];
  let allIdleUs = 0;
  let last = fromMs;
  // Called before each switch: the time since the last one, if every CPU was idle in it.
  const idleTill = (until: number) => {
    if (current.every((s) => s !== null && s.tid === 0)) allIdleUs += (until - last) * 1000;
    last = until;
  };
  const add = (cpu: number, until: number) => {
    const s = current[cpu];
    const us = (until - since[cpu]) * 1000;
    if (s === null || us <= 0) return;
    const same = out.find((o) => o.cpu === cpu && o.tid === s.tid);
    if (same) same.us += us;
    else out.push({ cpu, tid: s.tid, comm: s.comm, us });
  };
  for (let i = lo; i < switches.length && switches[i].ms < toMs; i++) {
    const s = switches[i];
    if (s.cpu >= cpus) continue;
    idleTill(s.ms);
    add(s.cpu, s.ms);
    current[s.cpu] = s;
    since[s.cpu] = s.ms;
  }
  idleTill(toMs);
  for (let cpu = 0; cpu < cpus; cpu++) add(cpu, toMs);
  return { runs: out, allIdleUs };
}

/** The thread group (process) of a thread, or -1 once it is gone. */
function tgidOf(tid: number, cache: Map<number, number>): number {
  let g = cache.get(tid);
  if (g !== undefined) return g;
  g = -1;
  try {
    const m = /^Tgid:\s+(\d+)/m.exec(Deno.readTextFileSync(`/proc/${tid}/status`));
    if (m) g = Number(m[1]);
  } catch {
    // exited
  }
  cache.set(tid, g);
  return g;
}

/**
 * The account of a traced run: `pairs` are the warm pairs' [start ms, µs]; the `count`
 * slowest are accounted for one by one. `ownerOf` says whose a thread is (tests give their
 * own; the generator reads /proc while the target still runs).
 */
export function account(
  switches: readonly Switch[],
  pairs: readonly [number, number][],
  cpus: number,
  ownerOf: (tid: number) => Owner,
  count = 5,
): SchedReport {
  const firstMs = switches.length ? switches[0].ms : Infinity;
  const accountOf = (start: number, us: number): PairAccount => {
    const { runs, allIdleUs } = occupancy(switches, cpus, start, start + us / 1000);
    const idle = new Array(cpus).fill(0);
    const holds: Hold[] = [];
    for (const r of runs) {
      if (r.tid === 0) idle[r.cpu] += r.us;
      else if (r.us >= HOLD_MIN_US) holds.push({ ...r, owner: ownerOf(r.tid) });
    }
    holds.sort((a, b) => b.us - a.us);
    const cause: Cause = holds.some((h) => h.owner === "other")
      ? "other"
      : holds.some((h) => h.owner === "generator helper")
      ? "generator"
      : allIdleUs >= HOLD_MIN_US
      ? "idle"
      : "own";
    return {
      at: start,
      us,
      holds,
      idle: idle.map(Math.round),
      allIdle: Math.round(allIdleUs),
      cause,
    };
  };
  const order = pairs.map((_, i) => i).sort((a, b) => pairs[b][1] - pairs[a][1]);
  const slowest: PairAccount[] = [];
  let worstOwn: number | null = null;
  const overMs: Record<Cause, number> = { other: 0, generator: 0, idle: 0, own: 0 };
  let looked = 0;
  for (const i of order) {
    const [start, us] = pairs[i];
    if (start < firstMs) continue;
    const a = accountOf(start, us);
    if (us >= 1000) overMs[a.cause]++;
    if (slowest.length < count) slowest.push(a);
    if (a.cause === "own" && worstOwn === null) worstOwn = us;
    if (us < 1000 && slowest.length >= count && (worstOwn !== null || ++looked > LOOK_MAX)) break;
  }
  return { slowest, worstOwn, overMs };
}

/** {@linkcode account} for a run against the process `targetPid`, from this generator. */
export function accountRun(
  switches: readonly Switch[],
  pairs: readonly [number, number][],
  targetPid: number,
): SchedReport {
  const cache = new Map<number, number>();
  const cpus = navigator.hardwareConcurrency;
  return account(switches, pairs, cpus, (tid) => {
    const g = tgidOf(tid, cache);
    if (g === targetPid) return "target";
    if (g !== Deno.pid) return "other";
    return tid === Deno.pid ? "generator" : "generator helper";
  });
}

/** One line of a report: each slow pair, what held a CPU in it, each CPU's idle time. */
export function describe(r: SchedReport): string {
  const us = (x: number) => `${Math.round(x)} µs`;
  const pairs = r.slowest.map((p) => {
    const holds = p.holds.map((h) =>
      `${h.owner === "other" ? "" : h.owner === "target" ? "target " : "generator "}` +
      `${h.comm}[${h.tid}] ` +
      `on CPU${h.cpu} ${us(h.us)}`
    );
    const idle = p.idle.map((x, cpu) => x >= HOLD_MIN_US ? `CPU${cpu} idle ${us(x)}` : "")
      .filter(Boolean);
    if (p.allIdle >= HOLD_MIN_US) idle.push(`all idle ${us(p.allIdle)}`);
    return `${us(p.us)} (${[...holds, ...idle].join(", ") || `nothing over ${us(HOLD_MIN_US)}`})`;
  });
  const o = r.overMs;
  return `slowest warm pairs: ${pairs.join("; ")}; pairs of 1 ms or more: ${o.other} with ` +
    `another program on a CPU, ${o.generator} with a generator's helper thread, ${o.idle} ` +
    `with every CPU idle, ${o.own} none of these; the worst of those ` +
    `${r.worstOwn === null ? "-" : us(r.worstOwn)}`;
}
