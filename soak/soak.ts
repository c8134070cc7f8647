/**
 * `deno task soak`: the fault suite. Starts the real program for each trial, drives its
 * sockets the way misbehaving peers would, and checks every resource bound of SPEC 8 (and the
 * one-peer rule of SPEC 11). One row per bound: name, bound, measured, PASS/FAIL; a table at
 * the end; exit status 1 when any bound failed.
 *
 * ```
 * deno task soak                       # full profile: 2.5-5 minutes, stops by itself
 * deno task soak --short               # CI profile: a few seconds per trial
 * deno task soak --only table-full,churn --json r.json
 * deno task soak --cmd "./colo-compare" # a compiled binary instead of deno run main.ts
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { programCommand } from "./program.ts";
import { type Check, type Profile, Scope, type Trial } from "./trial.ts";
import { TRIALS } from "./trials/mod.ts";

/** The outcome of one trial: its checks, or one failed check saying why it did not finish. */
export interface TrialResult {
  trial: Trial;
  checks: Check[];
  seconds: number;
}

/** Runs one trial within its time limit; whatever happens, everything it opened is closed. */
export async function runTrial(trial: Trial, profile: Profile): Promise<TrialResult> {
  const scope = new Scope();
  const t0 = performance.now();
  const limit = profile.short ? trial.limitSeconds.short : trial.limitSeconds.full;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const run = trial.run(profile, scope);
  let checks: Check[];
  try {
    checks = await Promise.race([
      run,
      new Promise<never>((_, reject) =>
        timer = setTimeout(() => reject(new Error(`did not finish in ${limit} s`)), limit * 1000)
      ),
    ]);
  } catch (error) {
    run.catch(() => {});
    const [first, ...rest] = (error instanceof Error ? error.message : String(error)).split("\n");
    checks = [{
      check: "trial completes",
      bound: `within ${limit} s, no error`,
      measured: first,
      pass: false,
      detail: rest.join("\n") || undefined,
    }];
  } finally {
    clearTimeout(timer);
    await scope.close();
  }
  return { trial, checks, seconds: (performance.now() - t0) / 1000 };
}

/** One result line: `PASS  1 table-full  check: measured (bound)`. */
export function resultLine(r: TrialResult, c: Check): string {
  const line = `${
    c.pass ? "PASS" : "FAIL"
  }  ${r.trial.id} ${r.trial.name}  ${c.check}: ${c.measured} (bound ${c.bound})`;
  return c.detail ? `${line}\n${c.detail.replace(/^/gm, "      ")}` : line;
}

/** The results as a markdown table. */
export function table(results: TrialResult[]): string {
  const rows = [["#", "trial", "bound checked", "bound", "measured", "result"]];
  for (const r of results) {
    for (const c of r.checks) {
      rows.push([
        String(r.trial.id),
        r.trial.name,
        c.check,
        c.bound,
        c.measured,
        c.pass ? "PASS" : "FAIL",
      ]);
    }
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  const line = (row: string[]) => `| ${row.map((cell, i) => cell.padEnd(widths[i])).join(" | ")} |`;
  return [
    line(rows[0]),
    `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`,
    ...rows.slice(1).map(line),
  ]
    .join("\n");
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      short: { type: "boolean" },
      only: { type: "string" },
      json: { type: "string" },
      cmd: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log('deno task soak [--short] [--only NAME,...] [--json FILE] [--cmd "CMD ARGS"]');
    console.log(TRIALS.map((t) => `  ${t.id} ${t.name.padEnd(16)} ${t.title}`).join("\n"));
    return 0;
  }
  if (values.cmd) programCommand.splice(0, programCommand.length, ...values.cmd.split(/\s+/));
  const only = values.only?.split(",");
  const unknown = only?.filter((n) => !TRIALS.some((t) => t.name === n));
  if (unknown?.length) {
    console.error(`--only: no trial named ${unknown.join(", ")}; see --help`);
    return 2;
  }
  const profile: Profile = { short: values.short ?? false };
  const commit = new TextDecoder().decode(
    (await new Deno.Command("git", { args: ["rev-parse", "--short", "HEAD"], stderr: "null" })
      .output()).stdout,
  ).trim();
  console.log(
    `soak (${profile.short ? "short" : "full"} profile), commit ${commit || "?"}, program: ${
      programCommand.join(" ")
    }, load ${Deno.loadavg().map((x) => x.toFixed(2)).join(" ")}, ${new Date().toISOString()}`,
  );
  const results: TrialResult[] = [];
  for (const trial of TRIALS) {
    if (only && !only.includes(trial.name)) continue;
    console.log(`-- ${trial.id} ${trial.name}: ${trial.title}`);
    const r = await runTrial(trial, profile);
    results.push(r);
    for (const c of r.checks) console.log(resultLine(r, c));
    console.log(`   (${r.seconds.toFixed(1)} s)`);
  }
  console.log("");
  console.log(table(results));
  const failed = results.flatMap((r) => r.checks).filter((c) => !c.pass).length;
  const total = results.flatMap((r) => r.checks).length;
  console.log(`\n${total - failed} of ${total} bounds hold; ${failed} failed`);
  if (values.json) {
    await Deno.writeTextFile(
      values.json,
      JSON.stringify(
        { commit, profile, results: results.map((r) => ({ ...r, trial: r.trial.name })) },
        null,
        2,
      ),
    );
  }
  return failed > 0 ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
