/**
 * `deno task bench`: measures our comparator, QEMU 7.2's colo-compare and a pass-through
 * forwarder side by side on loopback, with the same load from a separate generator process,
 * and prints one table plus a PASS/FAIL line per target of issue 4.
 *
 *   deno task bench [--quick] [--only W,W] [--targets ours,qemu,forwarder,sink]
 *                   [--duration S] [--warmup S] [--repeat N] [--flood-duration S]
 *                   [--json FILE] [--ours "CMD ARGS"] [--cpu-prof DIR] [--sched-trace] [--strict]
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { LoadConfig, LoadResult } from "./loadgen.ts";
import { describeMachine } from "./proc.ts";
import {
  checkLines,
  checks,
  details,
  givenBackDuringSteps,
  type Measurement,
  table,
} from "./report.ts";
import {
  cacheModules,
  defaultOursCommand,
  start,
  type TargetName,
  type TargetOptions,
  TARGETS,
  unavailable,
} from "./targets.ts";
import { overTls, overUnix, plainOf, type WorkloadName, WORKLOADS } from "./workloads.ts";
import { makeCreds, removeCreds } from "../tests/support/tls_creds.ts";

const USAGE = `usage: deno task bench [options]
  --quick              short smoke run (a few seconds per target)
  --only W[,W...]      workloads: ${WORKLOADS.join(", ")}
                       (-tls: the same over mutual TLS, -unix: over unix sockets; ours
                       and QEMU only)
  --targets T[,T...]   ${TARGETS.join(", ")} (default: all; sink = generator send-only max)
  --duration S         measuring window per throughput run (default 5, quick 0.5)
  --warmup S           warm-up before the window (default 2, quick 0.3)
  --repeat N           runs of each measurement but the flood, median reported (default 1);
                       round by round, each target once per round
  --flood-duration S   lagging-secondary flood length (default 60, quick 2)
  --scale-connections N  idle connections in the scale run (default 10000, quick 1000)
  --scale-prime N      connections opened before the scale run counts (default 2000, quick 200)
  --scale-scan-cycle MS  expired-scan-cycle for ours and QEMU in the scale run (default 10)
  --window N           frames in flight per connection (default 1000, within max-queue-size)
  --json FILE          also write every measurement as JSON
  --ours "CMD ARGS"    command for our comparator (default: deno run -A
                         --no-code-cache --v8-flags=... main.ts)
  --cpu-prof DIR       write V8 CPU profiles of ours into DIR
  --latency-dump FILE  append each latency run's pairs, in order, to FILE (a JSON line per run:
                       target, cold, warm, in us)
  --sched-trace        in each latency run, trace the kernel's scheduler (root, tracefs) and
                       say what ran on each CPU during the slowest warm pairs
  --strict             exit 1 when a target check fails (always exit 1 when a run fails)`;

/**
 * Workloads each target takes part in (the forwarder has no connection table to scale, and
 * speaks no TLS and no unix sockets).
 */
function applies(target: TargetName, workload: WorkloadName): boolean {
  if (overTls(workload) || overUnix(workload)) return target === "ours" || target === "qemu";
  if (target === "sink") return !["latency", "scale", "flood", "diverged"].includes(workload);
  if (target === "forwarder") return !["scale", "flood", "diverged"].includes(workload);
  return true;
}

function parse() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean", default: false },
      only: { type: "string" },
      targets: { type: "string" },
      duration: { type: "string" },
      warmup: { type: "string" },
      repeat: { type: "string" },
      "flood-duration": { type: "string" },
      "scale-connections": { type: "string" },
      "scale-scan-cycle": { type: "string" },
      "scale-prime": { type: "string" },
      window: { type: "string" },
      json: { type: "string" },
      ours: { type: "string" },
      "cpu-prof": { type: "string" },
      "latency-dump": { type: "string" },
      "sched-trace": { type: "boolean", default: false },
      strict: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const list = <T extends string>(flag: string, text: string | undefined, all: readonly T[]) => {
    if (text === undefined) return [...all];
    const xs = text.split(",").map((x) => x.trim()).filter(Boolean);
    for (const x of xs) {
      if (!all.includes(x as T)) usage(`--${flag}: unknown "${x}"; choose from ${all.join(", ")}`);
    }
    return xs as T[];
  };
  const num = (flag: string, text: string | undefined, fallback: number) => {
    if (text === undefined) return fallback;
    const x = Number(text);
    if (!(x > 0)) usage(`--${flag} needs a positive number, got "${text}"`);
    return x;
  };
  const quick = values.quick;
  return {
    quick,
    workloads: list("only", values.only, WORKLOADS),
    targets: list("targets", values.targets, TARGETS),
    windowMs: num("duration", values.duration, quick ? 0.5 : 5) * 1000,
    warmupMs: num("warmup", values.warmup, quick ? 0.3 : 2) * 1000,
    repeat: Math.round(num("repeat", values.repeat, 1)),
    floodMs: num("flood-duration", values["flood-duration"], quick ? 2 : 60) * 1000,
    scaleConnections: Math.round(
      num("scale-connections", values["scale-connections"], quick ? 1000 : 10_000),
    ),
    scalePrime: Math.round(num("scale-prime", values["scale-prime"], quick ? 200 : 2000)),
    scaleScanCycleMs: num("scale-scan-cycle", values["scale-scan-cycle"], 10),
    window: Math.round(num("window", values.window, 1000)),
    json: values.json,
    oursCommand: values.ours ? values.ours.split(/\s+/).filter(Boolean) : defaultOursCommand(),
    cpuProfileDir: values["cpu-prof"],
    latencyDump: values["latency-dump"],
    schedTrace: values["sched-trace"],
    strict: values.strict,
  };
}

function usage(message: string): never {
  console.error(`bench: ${message}\n${USAGE}`);
  Deno.exit(2);
}

type Options = ReturnType<typeof parse>;

const generatorScript = new URL("./loadgen.ts", import.meta.url).pathname;

/**
 * The generator's V8 flags in the latency workloads: its hot path (the pair loop, Deno's read
 * and write ops, outdev decoding) reaches V8's optimising compiler within its own warm-up
 * (bench/loadgen.ts), as ours' does with the same counts (src/v8_flags.ts), instead of during
 * the target's cold pairs. `--expose-gc`: the pair loop collects its own garbage between two
 * pairs, in a young generation of 16 MiB it does not fill meanwhile (bench/loadgen.ts,
 * `collectBetweenPairs`).
 */
const GENERATOR_V8_FLAGS_LATENCY = "--v8-flags=--invocation-count-for-maglev=100," +
  "--invocation-count-for-turbofan=300,--min-semi-space-size=16,--max-semi-space-size=16," +
  "--expose-gc";

/**
 * Runs one workload once against a freshly started target; a `-unix` workload's sockets in a
 * directory made for the run.
 */
async function runOnce(
  opts: Options,
  target: TargetName,
  workload: WorkloadName,
  tlsDir: string | undefined,
): Promise<{ result: LoadResult; peakRss: number }> {
  const unixDir = overUnix(workload) ? await Deno.makeTempDir({ prefix: "colo-bench-" }) : null;
  try {
    return await runIn(opts, target, workload, tlsDir, unixDir);
  } finally {
    if (unixDir !== null) await Deno.remove(unixDir, { recursive: true });
  }
}

/** {@linkcode runOnce}, with the `-unix` workloads' sockets in `unixDir`. */
async function runIn(
  opts: Options,
  target: TargetName,
  workload: WorkloadName,
  tlsDir: string | undefined,
  unixDir: string | null,
): Promise<{ result: LoadResult; peakRss: number }> {
  const targetOpts: TargetOptions = {
    oursCommand: opts.oursCommand,
    cpuProfileDir: opts.cpuProfileDir,
    expiredScanCycleMs: workload === "scale" ? opts.scaleScanCycleMs : undefined,
    tlsDir: overTls(workload) ? tlsDir : undefined,
    unixDir: unixDir ?? undefined,
  };
  const running = await start(target, targetOpts);
  try {
    const cfg: LoadConfig = {
      workload,
      ports: running.ports,
      targetPid: running.pid,
      warmupMs: opts.warmupMs,
      windowMs: opts.windowMs,
      // The diverged workload's last primary frames may arrive after the checkpoint that
      // dropped their secondary copies: they wait for compare-timeout (3 s) and the next expiry
      // scan (1 s) to ask for the checkpoint that releases them.
      drainQuietMs: workload === "diverged" ? 6000 : 3000,
      sendOnly: target === "sink",
      latencyPairs: opts.quick ? 300 : 20_000,
      latencyWarmup: opts.quick ? 50 : 500,
      latencyCold: opts.quick ? 100 : 2000,
      latencyDump: opts.latencyDump === undefined ? undefined : { file: opts.latencyDump, target },
      schedTrace: opts.schedTrace,
      scaleConnections: opts.scaleConnections,
      scalePrime: opts.scalePrime,
      floodMs: opts.floodMs,
      floodSecondaryRatio: 0.5,
      // The diverged workload measures what a comparator carries, not the controller's pace.
      checkpointDelayMs: workload === "diverged" ? 0 : 20,
      writeSize: 256 * 1024,
      windowPerConnection: opts.window,
      tlsDir: targetOpts.tlsDir,
    };
    const out = await new Deno.Command(Deno.execPath(), {
      // -A: Deno reads /proc (the target's RSS and CPU) only with every permission.
      args: [
        "run",
        "-A",
        ...(plainOf(workload) === "latency" ? [GENERATOR_V8_FLAGS_LATENCY] : []),
        generatorScript,
        JSON.stringify(cfg),
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "";
    let parsed: LoadResult & { error?: string };
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new Error(
        `load generator failed (exit ${out.code}): ${new TextDecoder().decode(out.stderr)}`,
      );
    }
    if (parsed.error) {
      throw new Error(`${parsed.error}\n--- ${target} stderr ---\n${running.stderrTail()}`);
    }
    return { result: parsed, peakRss: parsed.peakRss ?? 0 };
  } finally {
    await running.stop();
  }
}

function progress(message: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(message));
}

/** Runs the benchmark; exit status 1 if a run failed, or with `--strict` if a check failed. */
async function main(): Promise<number> {
  const opts = parse();
  const machine = describeMachine();
  const started = new Date();
  const skip = new Map<TargetName, string>();
  for (const t of opts.targets) {
    const why = await unavailable(t, { oursCommand: opts.oursCommand });
    if (why) skip.set(t, why);
  }
  progress(
    `bench: ${machine.cores} cores ${machine.cpu}, ${machine.memory}, load ${machine.load}\n`,
  );
  if (opts.targets.includes("ours") && !skip.has("ours")) {
    const cached = await cacheModules(opts.oursCommand);
    if (cached !== undefined) progress(`bench: ${cached}\n`);
  }
  // The -tls workloads' credentials: made with openssl for this run, removed after it.
  const creds = opts.workloads.some(overTls) ? await makeCreds() : undefined;
  try {
    return await measure(opts, machine, started, skip, creds?.dir);
  } finally {
    if (creds) await removeCreds(creds);
  }
}

/**
 * A scale run in which the target gave memory back during the steps (a malloc trim; its figure
 * per connection is left out of the checks, bench/report.ts) is run again, this many times at
 * most: every run is kept and reported.
 */
const SCALE_RETRIES = 2;

/** Measures every workload on every target, prints the report; the exit status. */
async function measure(
  opts: Options,
  machine: ReturnType<typeof describeMachine>,
  started: Date,
  skip: Map<TargetName, string>,
  tlsDir: string | undefined,
): Promise<number> {
  const measurements: Measurement[] = [];
  for (const workload of opts.workloads) {
    const runnable: Measurement[] = [];
    for (const target of opts.targets) {
      if (!applies(target, workload)) continue;
      const m: Measurement = { workload, target, runs: [], peakRss: [], errors: [] };
      measurements.push(m);
      if (skip.has(target)) m.skipped = `skipped: ${skip.get(target)}`;
      else runnable.push(m);
    }
    // Round by round, every target once per round: this machine's speed drifts by up to 2x
    // within minutes (bench/README.md, "Interleaved rounds"), and a ratio of two targets
    // measured one after the other would be the drift's as much as theirs.
    const repeat = workload === "flood" ? 1 : opts.repeat;
    for (let i = 0; i < repeat; i++) {
      for (const m of runnable) {
        const target = m.target;
        for (let attempt = 0;; attempt++) {
          progress(
            `bench: ${workload} / ${target}${repeat > 1 ? ` (${i + 1}/${repeat})` : ""}${
              attempt > 0 ? ` (again: memory given back during the steps)` : ""
            } ... `,
          );
          try {
            const { result, peakRss } = await runOnce(opts, target, workload, tlsDir);
            m.runs.push(result);
            m.peakRss.push(peakRss);
            progress(summary(result, peakRss) + "\n");
            // A scale run disturbed by a release has no figure per connection: once more.
            if (result.scale && givenBackDuringSteps(result.scale) && attempt < SCALE_RETRIES) {
              continue;
            }
          } catch (e) {
            const message = e instanceof Error ? e.message : String(e);
            m.errors.push(message);
            progress(`FAILED: ${message}\n`);
          }
          break;
        }
      }
    }
  }
  const checked = checks(measurements);
  const load = describeMachine().load;
  const lines = [
    `Machine: ${machine.cores} x ${machine.cpu}, ${machine.memory} RAM, ` +
    `${Deno.build.os}/${Deno.build.arch}, Deno ${Deno.version.deno}; ` +
    `load average ${machine.load} at start, ${load} at end`,
    `Settings: window ${opts.windowMs / 1000} s after ${opts.warmupMs / 1000} s warm-up, ` +
    `repeat ${opts.repeat}, generator window ${opts.window} frames in flight per connection`,
    "",
    table(measurements),
    "",
    ...details(measurements),
    "",
    ...checkLines(checked),
  ];
  console.log(lines.join("\n"));
  if (opts.json) {
    await Deno.writeTextFile(
      opts.json,
      JSON.stringify(
        {
          started: started.toISOString(),
          machine,
          endLoad: load,
          options: opts,
          measurements,
          checks: checked,
        },
        null,
        2,
      ) + "\n",
    );
  }
  if (measurements.some((m) => m.errors.length > 0)) return 1;
  return opts.strict && checked.some((c) => c.pass === false) ? 1 : 0;
}

function summary(r: LoadResult, peakRss: number): string {
  const parts: string[] = [];
  if (r.framesPerSecond !== undefined) {
    parts.push(`${r.framesPerSecond.toLocaleString("en-US")} frames/s`);
  }
  if (r.latency) {
    const l = r.latency;
    parts.push(
      `p50 ${l.p50} µs p99 ${l.p99} µs p99.9 ${l.p999} µs max ${l.max} µs, ` +
        `cold p99 ${l.coldP99} µs`,
    );
  }
  if (r.lost) parts.push(`${r.lost} lost`);
  if (r.cpu) parts.push(`cpu ${r.cpu.target}%/${r.cpu.generator}%`);
  if (r.scale) parts.push(`${r.scale.bytesPerConnection} B/conn, busy ${r.scale.ratio}`);
  if (r.flood) parts.push(`flood peak ${(r.flood.peakRss / 2 ** 20).toFixed(1)} MiB`);
  if (peakRss > 0) parts.push(`peak RSS ${(peakRss / 2 ** 20).toFixed(1)} MiB`);
  return parts.join(", ");
}

if (import.meta.main) Deno.exit(await main());
