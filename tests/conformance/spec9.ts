/**
 * Keeps SPEC section 9 ("Where we differ from QEMU 7.2 on purpose") and the scenarios in
 * step: every SPEC 9 scenario names a row of the table (or says it proposes a new one), and
 * every row has a scenario that shows QEMU 7.2 doing what the row says, unless the row cannot
 * be shown against QEMU 7.2 (listed below with the reason).
 *
 * @module
 */

import type { Scenario } from "./scenario.ts";
import { REPO_ROOT } from "./impl.ts";

/** Rows no scenario can show against QEMU 7.2, and why. */
export const UNSHOWABLE: Record<string, string> = {
  "seed: vnet header counted into TCP offsets":
    "QEMU 7.2 already has the fix (June 2021); vnet-tcp-split-offsets shows 7.2 and ours agree",
  "timeouts on the wall clock":
    "needs the host clock to jump under a running QEMU; not something a test may do",
  "output LIFO while outdev pushes back":
    "QEMU reorders only the frames it queues once its outdev socket is full, and how many the " +
    "kernel's socket buffers take first varies from run to run, so no trace of it is " +
    "deterministic (ours keeping FIFO and pausing the inputs: tests/e2e/backpressure_test.ts)",
};

/**
 * The first column of every row of the SPEC 9 table, and of every row listed as a bullet
 * under it (`- *QEMU 7.2* | *here* | *why*`), or undefined if SPEC.md is not found.
 */
export async function spec9Rows(): Promise<string[] | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(`${REPO_ROOT}/../shared/SPEC.md`);
  } catch {
    return undefined;
  }
  const start = text.indexOf("\n## 9.");
  if (start < 0) return undefined;
  const end = text.indexOf("\n## ", start + 1);
  const lines = text.slice(start, end < 0 ? undefined : end).split("\n");
  const table = lines
    .filter((l) => l.startsWith("|") && !/^\|\s*-/.test(l) && !/^\|\s*QEMU 7\.2\s*\|/.test(l))
    .map((l) => l.split("|")[1].trim());
  const bullets = lines.flatMap((l) => /^- \*([^*]+)\* \|/.exec(l)?.[1].trim() ?? []);
  return [...table, ...bullets];
}

function norm(s: string): string {
  return s.toLowerCase().replace(/[`"]/g, "").replace(/\s+/g, " ").trim();
}

/** Problems (failures) and notes (printed) about SPEC 9 coverage. */
export function spec9Coverage(
  rows: string[],
  scenarios: Scenario[],
): { problems: string[]; notes: string[] } {
  const problems: string[] = [];
  const notes: string[] = [];
  const byRow = new Map<string, string[]>(rows.map((r) => [norm(r), []]));
  const proposed = new Map<string, string[]>();
  for (const s of scenarios) {
    if (!s.spec9) continue;
    const rule = norm(s.spec9.rule);
    if (s.spec9.proposed) {
      proposed.set(s.spec9.rule, [...(proposed.get(s.spec9.rule) ?? []), s.name]);
      continue;
    }
    const row = [...byRow.keys()].find((r) => r.includes(rule) || rule.includes(r));
    if (row === undefined) {
      problems.push(`${s.name}: spec9.rule "${s.spec9.rule}" is not a row of SPEC 9`);
    } else byRow.get(row)!.push(s.name);
  }
  for (const r of rows) {
    const names = byRow.get(norm(r)) ?? [];
    const why = Object.entries(UNSHOWABLE).find(([k]) => norm(r).includes(norm(k)))?.[1];
    if (names.length > 0) notes.push(`SPEC 9 "${r}": ${names.join(", ")}`);
    else if (why) notes.push(`SPEC 9 "${r}": not shown against QEMU 7.2 (${why})`);
    else problems.push(`SPEC 9 row "${r}" has no scenario showing QEMU 7.2 differ`);
  }
  for (const [rule, names] of proposed) {
    notes.push(`proposed SPEC 9 row "${rule}": ${names.join(", ")}`);
  }
  return { problems, notes };
}
