/**
 * Runs one scenario against one or both implementations and judges the traces: each against
 * the scenario's written expectation (QEMU's variant for SPEC 9 scenarios), and ours against
 * QEMU's for every scenario that is not a deliberate difference.
 *
 * @module
 */

import { type ImplKind, startImpl } from "./impl.ts";
import { runScenario } from "./driver.ts";
import { FrameBook, type Scenario } from "./scenario.ts";
import {
  describe,
  expected,
  firstDifference,
  Labeller,
  normalise,
  sideBySide,
  type TraceStep,
} from "./trace.ts";

/** One implementation's run of one scenario. */
export interface Run {
  kind: ImplKind;
  trace: TraceStep[];
  /** stderr of the implementation. */
  log: string;
  /** Set when the run itself broke (start failure, exception, bad exit status). */
  error?: string;
  ms: number;
}

/** The verdict on one scenario. */
export interface Verdict {
  scenario: Scenario;
  runs: Partial<Record<ImplKind, Run>>;
  /** Human-readable problems; empty when the scenario passed. */
  problems: string[];
}

/** Runs a scenario against one implementation, always stopping it. */
export async function execute(kind: ImplKind, scenario: Scenario): Promise<Run> {
  const t0 = performance.now();
  const book = new FrameBook(scenario);
  const labeller = new Labeller(book);
  let impl;
  try {
    impl = await startImpl(kind, scenario.options ?? {});
  } catch (e) {
    return { kind, trace: [], log: "", error: (e as Error).message, ms: performance.now() - t0 };
  }
  let error: string | undefined;
  let records;
  try {
    records = await runScenario(impl, scenario);
  } catch (e) {
    error = `driver error: ${(e as Error).stack ?? e}`;
  }
  const wasRunning = !impl.hasExited();
  const status = await impl.stop();
  if (kind === "ours" && wasRunning && !error && status.code !== 0) {
    error = `exit status ${status.code}${status.signal ? ` (${status.signal})` : ""} after SIGTERM`;
  }
  return {
    kind,
    trace: records ? normalise(records, scenario, labeller) : [],
    log: impl.log(),
    error,
    ms: performance.now() - t0,
  };
}

/** Runs a scenario on the given implementations concurrently and judges it. */
export async function checkScenario(scenario: Scenario, kinds: ImplKind[]): Promise<Verdict> {
  const runs: Partial<Record<ImplKind, Run>> = {};
  await Promise.all(kinds.map(async (k) => (runs[k] = await execute(k, scenario))));
  return judge(scenario, runs);
}

/** Judges runs of a scenario against its expectations and against each other. */
export function judge(scenario: Scenario, runs: Partial<Record<ImplKind, Run>>): Verdict {
  const book = new FrameBook(scenario);
  const labeller = new Labeller(book);
  const counts = scenario.countCheckpoints === true;
  const problems: string[] = [];
  for (const kind of ["qemu", "ours"] as const) {
    const run = runs[kind];
    if (!run) continue;
    if (run.error) {
      problems.push(`${kind}: ${run.error}${tail(run.log)}`);
      continue;
    }
    if (scenario.compareOnly) continue;
    const want = expected(scenario, book, labeller, kind === "qemu");
    const at = firstDifference(run.trace, want, counts);
    if (at >= 0) {
      const what = kind === "qemu"
        ? (scenario.spec9
          ? "QEMU no longer behaves as the SPEC 9 row says"
          : "QEMU differs from the scenario's expectation")
        : "ours differs from the scenario's expectation";
      problems.push(
        `${kind}: ${what} at step ${at}\n` +
          sideBySide(
            scenario.steps,
            { title: "expected", trace: want },
            { title: kind, trace: run.trace },
            counts,
          ),
      );
    }
  }
  const q = runs.qemu, o = runs.ours;
  if (q && o && !q.error && !o.error && !scenario.spec9) {
    const at = firstDifference(q.trace, o.trace, counts);
    if (at >= 0) {
      problems.push(
        `ours differs from QEMU at step ${at}\n` +
          sideBySide(scenario.steps, { title: "qemu", trace: q.trace }, {
            title: "ours",
            trace: o.trace,
          }, counts),
      );
    }
  }
  return { scenario, runs, problems };
}

function tail(log: string): string {
  const lines = log.trim().split("\n").slice(-15);
  return lines.length && lines[0]
    ? `\n    stderr (last lines):\n      ${lines.join("\n      ")}`
    : "";
}

/** Checks that every SPEC 9 scenario's QEMU expectation really differs from ours. */
export function spec9Problems(scenario: Scenario): string[] {
  if (!scenario.spec9) return [];
  const book = new FrameBook(scenario);
  const labeller = new Labeller(book);
  const counts = scenario.countCheckpoints === true;
  const ours = expected(scenario, book, labeller, false);
  const qemu = expected(scenario, book, labeller, true);
  return firstDifference(ours, qemu, counts) < 0
    ? [`SPEC 9 scenario whose QEMU expectation equals ours: it shows no difference`]
    : [];
}

/** A one-line trace summary, for verbose output. */
export function traceLine(trace: TraceStep[], counts = false): string {
  return trace.map((t, i) => `${i}:${describe(t, counts)}`).join(" | ");
}
