/**
 * Turns measurements into the benchmark's table and its target checks.
 *
 * @module
 */

import type { LoadResult } from "./loadgen.ts";
import type { TargetName } from "./targets.ts";
import { describe } from "./sched_trace.ts";
import { plainOf, type WorkloadName, WORKLOADS } from "./workloads.ts";

/** All runs of one workload against one target (several with `--repeat`). */
export interface Measurement {
  workload: WorkloadName;
  target: TargetName;
  runs: LoadResult[];
  /** Peak RSS (VmHWM) of the target in each run, bytes. */
  peakRss: number[];
  /** Why it was not measured, when it was not. */
  skipped?: string;
  /** Errors of failed runs. */
  errors: string[];
}

/** One checked target of the issue. */
export interface Check {
  name: string;
  pass: boolean | undefined;
  detail: string;
}

/** Median of the numbers (undefined for none). */
export function median(xs: number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Median frames per second of a measurement. */
export function rate(m: Measurement | undefined): number | undefined {
  return median((m?.runs ?? []).flatMap((r) => r.framesPerSecond ?? []));
}

/** Median frames per CPU-second of the target (its cost per frame). */
function ratePerCpu(m: Measurement | undefined): number | undefined {
  return median((m?.runs ?? []).flatMap((r) => r.framesPerCpuSecond ?? []));
}

/** Primary frames of a measurement's runs that never came out of outdev. */
function lostIn(m: Measurement): number {
  return m.runs.reduce((s, r) => s + (r.lost ?? 0), 0);
}

function spread(m: Measurement): string {
  const xs = m.runs.flatMap((r) => r.framesPerSecond ?? []);
  if (xs.length < 2) return "";
  const med = median(xs)!;
  const half = (Math.max(...xs) - Math.min(...xs)) / 2;
  return ` ±${Math.round((half / med) * 100)}%`;
}

const fmtInt = (x: number | undefined) =>
  x === undefined ? "-" : Math.round(x).toLocaleString("en-US");
const fmtMiB = (x: number | undefined) => x === undefined ? "-" : `${(x / 2 ** 20).toFixed(1)} MiB`;
const fmtUs = (x: number | undefined) => x === undefined ? "-" : `${x.toFixed(0)} µs`;

/** The results table, one line per workload and target, as GitHub-flavoured Markdown. */
export function table(measurements: Measurement[]): string {
  const head = [
    "workload",
    "target",
    "frames/s",
    "frames/CPU-s",
    "Mbit/s",
    "p50",
    "p99",
    "peak RSS",
    "CPU target/gen",
    "lost",
    "ours/QEMU",
  ];
  const rows: string[][] = [];
  for (const m of measurements) {
    if (m.skipped || m.runs.length === 0) {
      const why = m.skipped ?? `failed: ${(m.errors[0] ?? "?").split("\n")[0]}`;
      rows.push([m.workload, m.target, why.length > 60 ? why.slice(0, 57) + "..." : why]);
      continue;
    }
    const r = rate(m);
    const frame = m.runs[0].frameBytes;
    const lat = (k: "p50" | "p99") => median(m.runs.flatMap((x) => x.latency?.[k] ?? []));
    const cpu = (k: "target" | "generator") => median(m.runs.flatMap((x) => x.cpu?.[k] ?? []));
    const lost = lostIn(m);
    const qemu = measurements.find((q) => q.workload === m.workload && q.target === "qemu");
    // A -tls workload's row reads like its plain one's.
    const latency = plainOf(m.workload) === "latency";
    let ratio = "";
    if (m.target === "ours" && qemu && m.workload !== "flood") {
      if (latency) {
        ratio = qemu.runs.length > 0 ? ratioLatency(m, qemu) : "";
      } else {
        const q = rate(qemu);
        ratio = r !== undefined && q ? `${(r / q).toFixed(2)}x` : "";
      }
    }
    const c = [cpu("target"), cpu("generator")];
    rows.push([
      m.workload,
      m.target === "sink" ? "sink (generator max)" : m.target,
      latency ? "-" : fmtInt(r) + spread(m),
      latency || m.target === "sink" ? "-" : fmtInt(ratePerCpu(m)),
      r === undefined || latency ? "-" : fmtInt((r * frame * 8) / 1e6),
      fmtUs(lat("p50")),
      fmtUs(lat("p99")),
      m.target === "sink" ? "-" : fmtMiB(median(m.peakRss)),
      c[0] === undefined ? "-" : `${c[0]}% / ${c[1]}%`,
      m.target === "sink" || m.workload === "flood" ? "-" : String(lost),
      ratio,
    ]);
  }
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    "| " + head.map((_, i) => (cells[i] ?? "").padEnd(widths[i])).join(" | ") + " |";
  return [line(head), "|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|", ...rows.map(line)]
    .join("\n");
}

function ratioLatency(ours: Measurement, qemu: Measurement): string {
  const p = (m: Measurement, k: "p50" | "p99") =>
    median(m.runs.flatMap((x) => x.latency?.[k] ?? []));
  const r50 = p(ours, "p50")! / p(qemu, "p50")!;
  const r99 = p(ours, "p99")! / p(qemu, "p99")!;
  return `p50 ${r50.toFixed(2)}x, p99 ${r99.toFixed(2)}x`;
}

/**
 * Where the anonymous RSS fell by more than this between two of a scale run's steps, or the
 * RSS at any moment from the priming on (`givenBack`), the target gave memory back in the
 * middle (ours: a malloc trim, and the executable's pages with it, src/malloc.ts, or a
 * collection that shrank V8's heap): the RSS those steps add is then no measurement of what the
 * connections cost (the pages given back in the priming come back as the counted steps run
 * code), and the run's figure per connection is left out of the checks.
 */
const GIVEN_BACK_BYTES = 2 ** 20;

type Scale = NonNullable<Measurement["runs"][number]["scale"]>;

export function givenBackDuringSteps(s: Scale): boolean {
  return (s.givenBack ?? 0) > GIVEN_BACK_BYTES ||
    s.anonSteps.some(([, rss], i) => i > 0 && s.anonSteps[i - 1][1] - rss > GIVEN_BACK_BYTES);
}

/** Extra lines for the scale and flood workloads, which one table row cannot hold. */
export function details(measurements: Measurement[]): string[] {
  const out: string[] = [];
  for (const m of measurements) {
    for (const r of m.runs) {
      if (r.scale) {
        const s = r.scale;
        out.push(
          `scale/${m.target}: ${s.connections} idle connections${
            s.primed
              ? ` (after ${s.primed} primed: RSS ${fmtMiB(s.rssUnprimed)} -> ${
                fmtMiB(s.rssBefore)
              })`
              : ""
          }: RSS ${fmtMiB(s.rssBefore)} -> ` +
            `${fmtMiB(s.rssAfter)} = ${s.bytesPerConnection} B/connection (marginal ` +
            `${s.marginalBytesPerConnection} B; steps ${
              s.steps.map(([c, r]) => `${c}:${(r / 2 ** 20).toFixed(1)}`).join(" ")
            } MiB; anonymous RSS ${s.anonBytesPerConnection} B/connection, steps ${
              s.anonSteps.map(([c, r]) => `${c}:${(r / 2 ** 20).toFixed(1)}`).join(" ")
            } MiB); busy connection ` +
            `${fmtInt(s.busyWithoutIdle)} -> ${fmtInt(s.busyWithIdle)} frames/s, ` +
            `${fmtInt(s.busyPerCpuWithoutIdle)} -> ${fmtInt(s.busyPerCpuWithIdle)} per ` +
            `CPU-second (${(s.ratio * 100).toFixed(0)}%)` +
            (givenBackDuringSteps(s)
              ? `; memory given back during the steps (${
                fmtMiB(s.givenBack ?? 0)
              } at most; a malloc trim or a collection): no figure per connection`
              : ""),
        );
      }
      if (r.latency) {
        const l = r.latency;
        out.push(
          `${m.workload}/${m.target}: warm ${l.samples} pairs p50 ${fmtUs(l.p50)} p99 ${
            fmtUs(l.p99)
          } ` +
            `p99.9 ${fmtUs(l.p999)} worst ${fmtUs(l.max)}; cold (first ${l.coldSamples} pairs ` +
            `after start) p99 ${fmtUs(l.coldP99)} worst ${fmtUs(l.coldMax)}; RSS before any ` +
            `peer ${fmtMiB(r.idleRss)}`,
        );
        if (l.sched !== undefined) {
          out.push(
            `${m.workload}/${m.target}: ${
              typeof l.sched === "string" ? l.sched : describe(l.sched)
            }`,
          );
        }
      }
      if (r.flood) {
        const f = r.flood;
        const series = f.samples.filter((_, i) => i % Math.ceil(f.samples.length / 12) === 0)
          .map(([t, rss]) => `${(t / 1000).toFixed(0)}s:${(rss / 2 ** 20).toFixed(0)}`).join(" ");
        out.push(
          `flood/${m.target}: ${f.seconds} s, secondary at ${f.secondaryRatio}x the primary's ` +
            `rate; RSS MiB over time ${series}; peak ${fmtMiB(f.peakRss)} (first half ` +
            `${fmtMiB(f.firstHalfPeak)}, second half ${fmtMiB(f.secondHalfPeak)}): ` +
            `${f.levelledOff ? "levelled off" : "STILL GROWING"}; ${r.checkpointRequests} ` +
            `DO_CHECKPOINT, ${f.checkpointsAnswered} COLO_CHECKPOINT answered`,
        );
      }
      if (r.checkpointsAnswered !== undefined) {
        const perCheckpoint = r.received === undefined || r.checkpointsAnswered === 0
          ? "-"
          : fmtInt(r.received / r.checkpointsAnswered);
        out.push(
          `${m.workload}/${m.target}: ${r.checkpointRequests} DO_CHECKPOINT, ` +
            `${r.checkpointsAnswered} COLO_CHECKPOINT answered, ${perCheckpoint} primary frames ` +
            `released per checkpoint`,
        );
      } else if (r.checkpointRequests > 0 && !r.flood) {
        out.push(`${m.workload}/${m.target}: ${r.checkpointRequests} checkpoint requests`);
      }
      for (const n of r.notes) out.push(`${m.workload}/${m.target}: ${n}`);
    }
    for (const e of m.errors) out.push(`${m.workload}/${m.target}: ERROR ${e}`);
  }
  return out;
}

/** Checks each target of issue 4 against the measurements. */
export function checks(measurements: Measurement[]): Check[] {
  const get = (w: WorkloadName, t: TargetName) =>
    measurements.find((m) => m.workload === w && m.target === t && m.runs.length > 0);
  const out: Check[] = [];
  const speed = (w: WorkloadName, factor: number) => {
    const ours = rate(get(w, "ours"));
    const qemu = rate(get(w, "qemu"));
    if (ours === undefined || qemu === undefined) {
      out.push({ name: `${w}: ours >= ${factor}x QEMU`, pass: undefined, detail: "not measured" });
      return;
    }
    out.push({
      name: `${w}: ours >= ${factor}x QEMU`,
      pass: ours >= factor * qemu,
      detail: `${fmtInt(ours)} vs ${fmtInt(qemu)} frames/s = ${(ours / qemu).toFixed(2)}x`,
    });
  };
  speed("tcp-1000", 3);
  speed("tcp-1000x100", 3);
  speed("tcp-64", 2);
  speed("udp-512", 2);

  // Issue 11: a fraction of the machine's limit, and memory against QEMU's.
  for (const w of ["tcp-1000", "tcp-1000x100", "tcp-64", "udp-512"] as const) {
    const ours = rate(get(w, "ours"));
    const fwd = rate(get(w, "forwarder"));
    out.push({
      name: `${w}: ours >= 60% of the forwarder`,
      pass: ours === undefined || fwd === undefined ? undefined : ours >= 0.6 * fwd,
      detail: ours === undefined || fwd === undefined
        ? "not measured"
        : `${fmtInt(ours)} vs ${fmtInt(fwd)} frames/s = ${((ours / fwd) * 100).toFixed(0)}%`,
    });
  }
  // Every workload measured for both, the TLS ones too (issue 11: "in every workload").
  for (const w of WORKLOADS) {
    const ours = median(get(w, "ours")?.peakRss ?? []);
    const qemu = median(get(w, "qemu")?.peakRss ?? []);
    if (ours === undefined || qemu === undefined) continue;
    out.push({
      name: `${w}: peak RSS <= 2x QEMU`,
      pass: ours <= 2 * qemu,
      detail: `${fmtMiB(ours)} vs ${fmtMiB(qemu)} = ${(ours / qemu).toFixed(2)}x`,
    });
  }
  // Replicas that differ: what each frame costs (QEMU compares each arrival with the whole
  // secondary queue), and no frame lost on the way through the checkpoints.
  const dOurs = get("diverged", "ours");
  const dQemu = get("diverged", "qemu");
  if (dOurs && dQemu) {
    const a = ratePerCpu(dOurs);
    const b = ratePerCpu(dQemu);
    const lost = [lostIn(dOurs), lostIn(dQemu)];
    out.push({
      name: "diverged: every primary frame released, ours at least QEMU's frames per CPU-second",
      pass: a === undefined || b === undefined ? undefined : a >= b && lost[0] === 0,
      detail: a === undefined || b === undefined
        ? "not measured"
        : `${fmtInt(a)} vs ${fmtInt(b)} frames per CPU-second = ${(a / b).toFixed(2)}x; ` +
          `lost ${lost[0]} (QEMU ${lost[1]})`,
    });
  }
  const idle = median(get("latency", "ours")?.runs.flatMap((r) => r.idleRss ?? []) ?? []);
  out.push({
    name: "idle RSS (no peer connected) <= 60 MiB",
    pass: idle === undefined ? undefined : idle <= 60 * 2 ** 20,
    detail: idle === undefined ? "not measured" : fmtMiB(idle),
  });

  const lo = get("latency", "ours");
  const lq = get("latency", "qemu");
  const latencyNames = {
    p50: "p50",
    p99: "p99",
    p999: "p99.9",
    max: "worst warm pair",
    coldP99: "cold-start p99 (first pairs after start)",
  } as const;
  for (const k of ["p50", "p99", "p999", "max", "coldP99"] as const) {
    const a = median(lo?.runs.flatMap((r) => r.latency?.[k] ?? []) ?? []);
    const b = median(lq?.runs.flatMap((r) => r.latency?.[k] ?? []) ?? []);
    out.push({
      name: `latency ${latencyNames[k]}: ours <= QEMU`,
      pass: a === undefined || b === undefined ? undefined : a <= b,
      detail: a === undefined || b === undefined ? "not measured" : `${fmtUs(a)} vs ${fmtUs(b)}`,
    });
  }

  const sc = get("scale", "ours")?.runs.flatMap((r) => r.scale ?? []) ?? [];
  const clean = sc.filter((s) => !givenBackDuringSteps(s));
  const perConn = median(clean.map((s) => s.bytesPerConnection));
  const anonPerConn = median(clean.map((s) => s.anonBytesPerConnection));
  const marginal = median(clean.map((s) => s.marginalBytesPerConnection));
  const busy = median(sc.map((s) => s.ratio));
  const unmeasured = sc.length === 0
    ? "not measured"
    : `not measured: memory was given back during the priming or the steps of ${
      sc.length === 1 ? "the run" : `all ${sc.length} runs`
    } (a malloc trim or a collection)`;
  const left = (clean.length < sc.length ? `; ${sc.length - clean.length} run(s) left out` : "") +
    (sc[0]?.primed ? `; counted after ${sc[0].primed} primed connections` : "");
  out.push({
    name: "scale: idle connection < 2 KiB",
    pass: perConn === undefined ? undefined : perConn < 2048,
    detail: perConn === undefined
      ? unmeasured
      : `${perConn} B/connection (RSS delta / connections; marginal slope ${marginal} B${left})`,
  });
  // Issue 11's target, on the process's own memory: the executable's pages in the RSS are
  // shared by every instance on the host and come back as code runs again after a malloc trim
  // gave them back, with or without connections (bench/README.md, "Idle connections: the
  // anonymous memory").
  out.push({
    name: "scale: idle connection <= 200 B (anonymous memory)",
    pass: anonPerConn === undefined ? undefined : anonPerConn <= 200,
    detail: anonPerConn === undefined
      ? unmeasured
      : `${anonPerConn} B/connection of anonymous memory ` +
        `(RSS ${perConn} B, marginal slope ${marginal} B${left})`,
  });
  out.push({
    name: "scale: busy throughput (per CPU-s) with idle >= 90%",
    pass: busy === undefined ? undefined : busy >= 0.9,
    detail: busy === undefined ? "not measured" : `${(busy * 100).toFixed(0)}% of without`,
  });

  const fl = get("flood", "ours")?.runs.flatMap((r) => r.flood ?? []) ?? [];
  out.push({
    name: "flood: memory levels off",
    pass: fl.length === 0 ? undefined : fl.every((f) => f.levelledOff),
    detail: fl.length === 0
      ? "not measured"
      : fl.map((f) => `peak ${fmtMiB(f.peakRss)} over ${f.seconds} s`).join("; "),
  });

  // The flood's secondary lags, and the diverged workload's replicas differ, by design.
  const ident = measurements.filter((m) =>
    m.target === "ours" && m.workload !== "flood" && m.workload !== "diverged" &&
    m.runs.length > 0
  );
  if (ident.length > 0) {
    const lost = ident.reduce((s, m) => s + lostIn(m), 0);
    const cps = ident.reduce((s, m) => s + m.runs.reduce((t, r) => t + r.checkpointRequests, 0), 0);
    out.push({
      name: "ours: every frame released, no checkpoint",
      pass: lost === 0 && cps === 0,
      detail: `${lost} lost, ${cps} checkpoint requests on identical streams`,
    });
  }

  // The generator must not be what limits a comparator: with the same settings it must have
  // driven a faster target (the forwarder, or the sink it only sends into) well above every
  // comparator's rate on the same workload.
  for (const w of ["tcp-1000", "tcp-1000x100", "tcp-64", "udp-512"] as const) {
    const fast = Math.max(rate(get(w, "sink")) ?? 0, rate(get(w, "forwarder")) ?? 0);
    const best = Math.max(rate(get(w, "ours")) ?? 0, rate(get(w, "qemu")) ?? 0);
    if (fast === 0 || best === 0) continue;
    const gen = median(
      ["ours", "qemu"].flatMap((t) =>
        get(w, t as TargetName)?.runs.flatMap((r) => r.cpu?.generator ?? []) ?? []
      ),
    );
    out.push({
      name: `${w}: generator is not the bottleneck`,
      pass: fast >= 1.5 * best,
      detail: `it drove the forwarder/sink at ${fmtInt(fast)} frames/s = ` +
        `${(fast / best).toFixed(1)}x the fastest comparator; its own CPU while driving the ` +
        `comparators: ${gen ?? "?"}% of a core`,
    });
  }
  return out;
}

/** The checks as lines. */
export function checkLines(list: Check[]): string[] {
  return list.map((c) =>
    `${c.pass === undefined ? "SKIP" : c.pass ? "PASS" : "FAIL"}  ${c.name}: ${c.detail}`
  );
}
