/**
 * `deno task conformance`: the differential conformance suite. Runs every hand-written
 * scenario under `scenarios/` and a number of random conversations against QEMU 7.2's own
 * colo-compare and against our program, and fails on any difference that SPEC 9 does not
 * list. See `README.md` in this folder.
 *
 *   deno task conformance [--seeds N] [--seed S] [--filter TEXT] [--impl qemu|ours|both]
 *                         [--jobs J] [--file PATH] [--qemu BIN] [--verbose] [--list]
 *
 * Exit status: 0 all passed, 1 a failure, 2 bad usage, 77 skipped (no QEMU).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type ImplKind, oursAvailable, qemuAvailable, qemuBinary, qemuVersion } from "./impl.ts";
import { loadScenarios, type Scenario, validateScenario } from "./scenario.ts";
import { checkScenario, execute, judge, spec9Problems, traceLine, type Verdict } from "./check.ts";
import { randomScenario } from "./generator.ts";
import { minimise } from "./minimise.ts";
import { spec9Coverage, spec9Rows } from "./spec9.ts";

/** Exit status when the suite cannot run for lack of QEMU (automake's "skipped"). */
export const EXIT_SKIPPED = 77;

const USAGE = `usage: deno task conformance [options]
  --seeds N        random conversations to run (default 200; 0 for none)
  --seed S         run only random seed S (repeatable with --seeds to start there)
  --filter TEXT    only scenarios whose name contains TEXT (random seeds are skipped)
  --impl WHICH     qemu, ours or both (default both; qemu alone checks the expectations)
  --jobs J         scenarios run at once (default 2)
  --file PATH      run the scenarios of this JSON file (e.g. a saved reproduction)
  --qemu BIN       the reference QEMU binary (default: $COLO_QEMU, else qemu-system-x86_64
                   from PATH); QEMU 10.0.2: --qemu "$(deno task -q qemu10)"
  --no-minimise    do not shrink failing random seeds
  --verbose        print every trace
  --list           list the scenarios and exit`;

function fail(msg: string): never {
  console.error(`conformance: ${msg}\n${USAGE}`);
  Deno.exit(2);
}

async function pool<T, R>(items: T[], jobs: number, f: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(jobs, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await f(items[i]);
      }
    }),
  );
  return out;
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

function report(v: Verdict, verbose: boolean, label = v.scenario.name): void {
  const times = Object.values(v.runs).map((r) => `${r.kind} ${seconds(r.ms)}`).join(", ");
  if (v.problems.length === 0) {
    console.log(`ok    ${label}  (${times})`);
  } else {
    console.log(`FAIL  ${label}  (${times})`);
    console.log(`      rule: ${v.scenario.rule}`);
    for (const p of v.problems) console.log(p.replace(/^/gm, "      "));
  }
  if (verbose) {
    for (const r of Object.values(v.runs)) {
      console.log(`      ${r.kind}: ${traceLine(r.trace, v.scenario.countCheckpoints)}`);
    }
  }
}

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: Deno.args,
      options: {
        seeds: { type: "string" },
        seed: { type: "string" },
        filter: { type: "string" },
        impl: { type: "string" },
        jobs: { type: "string" },
        file: { type: "string", multiple: true },
        qemu: { type: "string" },
        "no-minimise": { type: "boolean" },
        verbose: { type: "boolean", short: "v" },
        list: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
    });
  } catch (e) {
    fail((e as Error).message);
  }
  const o = parsed.values;
  if (o.help) {
    console.log(USAGE);
    return 0;
  }
  const num = (v: string | undefined, name: string, dflt: number) => {
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) fail(`--${name} needs a whole number, got "${v}"`);
    return n;
  };
  const seedCount = num(o.seeds, "seeds", o.seed !== undefined ? 1 : 200);
  const firstSeed = num(o.seed, "seed", 1);
  const jobs = Math.max(1, num(o.jobs, "jobs", 2));
  const verbose = o.verbose === true;
  if (o.impl !== undefined && !["qemu", "ours", "both"].includes(o.impl)) {
    fail(`--impl must be qemu, ours or both, got "${o.impl}"`);
  }

  // Every QEMU this process starts is this one (impl.ts reads it at each start).
  if (o.qemu !== undefined) Deno.env.set("COLO_QEMU", o.qemu);

  const dir = new URL("./scenarios", import.meta.url).pathname;
  let scenarios: Scenario[] = [];
  if (o.file) {
    for (const f of o.file) {
      const parsedFile = JSON.parse(await Deno.readTextFile(f));
      const list: Scenario[] = Array.isArray(parsedFile.scenarios)
        ? parsedFile.scenarios
        : [parsedFile];
      for (const s of list) validateScenario(s, f);
      scenarios.push(...list);
    }
  } else {
    scenarios = (await loadScenarios(dir)).map((e) => e.scenario);
  }
  if (o.filter !== undefined) scenarios = scenarios.filter((s) => s.name.includes(o.filter!));
  // --seed runs random conversations only.
  if (o.seed !== undefined) scenarios = [];
  if (o.list) {
    for (const s of scenarios) console.log(`${s.name}${s.spec9 ? "  [SPEC 9]" : ""}  — ${s.rule}`);
    console.log(`${scenarios.length} scenarios`);
    return 0;
  }

  const haveQemu = await qemuAvailable();
  const haveOurs = oursAvailable();
  const which = o.impl ?? "both";
  const kinds: ImplKind[] = [];
  if (which !== "ours") {
    if (!haveQemu && Deno.env.get("COLO_QEMU")) {
      // Asked for by name: not a machine without QEMU, a mistake to report.
      console.error(`conformance: the reference QEMU ${qemuBinary()} does not run`);
      return 1;
    }
    if (!haveQemu) {
      console.log(
        "conformance: SKIPPED — qemu-system-x86_64 is not on PATH, so there is no reference to " +
          "compare with (install it: apt-get install -y --no-install-recommends qemu-system-x86)." +
          " Nothing was checked.",
      );
      return EXIT_SKIPPED;
    }
    kinds.push("qemu");
  }
  if (which !== "qemu") {
    if (!haveOurs) {
      if (which === "ours") fail("main.ts not found at the repository root");
      console.log("conformance: main.ts not found — checking QEMU against the expectations only");
    } else kinds.push("ours");
  }
  const withRandom = o.filter === undefined && !o.file && seedCount > 0;
  const randomKinds = kinds.includes("qemu") && kinds.includes("ours");
  console.log(
    `conformance: ${scenarios.length} scenarios` +
      (withRandom ? `, ${seedCount} random seeds from ${firstSeed}` : "") +
      ` against ${kinds.join(" and ")}` +
      (haveQemu ? ` (${await qemuVersion()})` : ""),
  );

  const t0 = performance.now();
  let failed = 0;
  for (const s of scenarios) {
    const p = spec9Problems(s);
    if (p.length > 0) {
      failed++;
      console.log(`FAIL  ${s.name}: ${p.join("; ")}`);
    }
  }
  let spec9Summary = "";
  if (o.filter === undefined && !o.file && o.seed === undefined) {
    const rows = await spec9Rows();
    if (!rows) {
      spec9Summary = "SPEC 9 coverage not checked (../shared/SPEC.md not found)";
    } else {
      const { problems, notes } = spec9Coverage(rows, scenarios);
      for (const p of problems) console.log(`FAIL  SPEC 9 coverage: ${p}`);
      if (verbose) { for (const n of notes) console.log(`      ${n}`); }
      failed += problems.length;
      const proposed = notes.filter((n) => n.startsWith("proposed")).length;
      spec9Summary = `SPEC 9: ${rows.length} rows, ${problems.length} uncovered, ` +
        `${proposed} proposed rows (see --verbose)`;
    }
  }
  const verdicts = await pool(scenarios, jobs, async (s) => {
    const v = await checkScenario(s, kinds);
    report(v, verbose);
    return v;
  });
  // The reference's own races: a scenario that ours passed and QEMU did not is run on QEMU once
  // more, and judged again with ours' run. (QEMU 10.0.2 once closed a reconnected secondary in
  // framing-oversize-secondary, where 7.2 and its other runs let it stall.) Said, not hidden.
  const secondRun: string[] = [];
  if (kinds.includes("qemu")) {
    for (const [i, v] of verdicts.entries()) {
      if (v.problems.length === 0 || v.problems.some((p) => p.startsWith("ours:"))) continue;
      const again = judge(v.scenario, { ...v.runs, qemu: await execute("qemu", v.scenario) });
      if (again.problems.length > 0) continue;
      console.log(`      ${v.scenario.name}: as expected on a second QEMU run; the first was not`);
      secondRun.push(v.scenario.name);
      verdicts[i] = again;
    }
  }
  const failedScenarios = verdicts.filter((v) => v.problems.length > 0);
  failed += failedScenarios.length;
  const tScenarios = performance.now() - t0;

  let seedsRun = 0, seedsFailed = 0;
  const badSeeds: number[] = [];
  if (withRandom && !randomKinds) {
    console.log("conformance: random seeds need both QEMU and ours — skipped");
  } else if (withRandom) {
    const seeds = Array.from({ length: seedCount }, (_, i) => firstSeed + i);
    await pool(seeds, jobs, async (seed) => {
      const s = randomScenario(seed);
      const v = await checkScenario(s, kinds);
      seedsRun++;
      if (v.problems.length === 0) {
        if (verbose) report(v, verbose, `seed ${seed}`);
        return;
      }
      seedsFailed++;
      badSeeds.push(seed);
      report(v, verbose, `seed ${seed}`);
      const again = await checkScenario(s, kinds);
      if (again.problems.length === 0) {
        console.log(`      seed ${seed} did not fail a second time: the difference is not stable`);
        return;
      }
      if (!o["no-minimise"]) {
        const small = await minimise(s, kinds);
        const path = `${Deno.env.get("TMPDIR") ?? "/tmp"}/conformance-seed-${seed}.json`;
        await Deno.writeTextFile(path, JSON.stringify(small, null, 2) + "\n");
        console.log(
          `      minimal reproduction (${small.steps.length} of ${s.steps.length} steps): ${path}\n` +
            `      rerun: deno task conformance --file ${path}`,
        );
      }
    });
  }
  const total = performance.now() - t0;
  const q = verdicts.filter((v) => v.runs.qemu && !v.problems.some((p) => p.startsWith("qemu")));
  const ours = verdicts.filter((v) => v.runs.ours && !v.problems.some((p) => p.startsWith("ours")));
  const parts = [`${scenarios.length} scenarios in ${seconds(tScenarios)}`];
  if (kinds.includes("qemu")) {
    parts.push(
      `qemu ${q.length}/${scenarios.length} as expected` +
        (secondRun.length ? ` (on a second run: ${secondRun.join(" ")})` : ""),
    );
  }
  if (kinds.includes("ours")) parts.push(`ours ${ours.length}/${scenarios.length} as expected`);
  if (spec9Summary) parts.push(spec9Summary);
  if (withRandom && randomKinds) {
    parts.push(`${seedsRun - seedsFailed}/${seedsRun} random seeds clean`);
    if (badSeeds.length) parts.push(`failing seeds: ${badSeeds.sort((a, b) => a - b).join(" ")}`);
  }
  const ok = failed === 0 && seedsFailed === 0;
  console.log(
    `conformance: ${ok ? "PASS" : "FAIL"} — ${parts.join(", ")}; total ${seconds(total)}` +
      (failedScenarios.length
        ? `\n  failed: ${failedScenarios.map((v) => v.scenario.name).join(" ")}`
        : ""),
  );
  return ok ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
