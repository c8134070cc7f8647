/**
 * Shrinks a scenario on which ours and QEMU disagree to a small one that still shows a
 * difference (delta debugging over its steps), so a failing random seed can be read and
 * saved as a hand-written scenario.
 *
 * @module
 */

import type { ImplKind } from "./impl.ts";
import type { Scenario, Step } from "./scenario.ts";
import { checkScenario } from "./check.ts";
import { firstDifference } from "./trace.ts";

/** Upper bound on reruns while shrinking (each runs both implementations once). */
const MAX_TRIES = 80;

function framesUsed(steps: Step[]): Set<string> {
  const used = new Set<string>();
  for (const s of steps) {
    for (const l of [s.pri ?? [], s.sec ?? []].flat()) used.add(l);
    for (const l of s.raw?.frames ?? []) used.add(l);
  }
  return used;
}

/** The scenario with only these steps and the frames they use. */
export function withSteps(s: Scenario, steps: Step[]): Scenario {
  const used = framesUsed(steps);
  const frames = Object.fromEntries(Object.entries(s.frames).filter(([l]) => used.has(l)));
  // Frames inherit through "like": keep what they inherit from.
  for (const f of Object.values(frames)) {
    let like = f.like;
    while (like !== undefined && !(like in frames)) {
      frames[like] = s.frames[like];
      like = s.frames[like].like;
    }
  }
  return { ...s, steps, frames };
}

/**
 * How ours and QEMU first part on `s`: the step's input and each one's trace there, or null
 * when they do not part.
 */
async function difference(s: Scenario, kinds: ImplKind[]): Promise<string | null> {
  const v = await checkScenario(s, kinds);
  if (!v.problems.some((p) => p.startsWith("ours differs from QEMU"))) return null;
  const q = v.runs.qemu?.trace ?? [], o = v.runs.ours?.trace ?? [];
  const at = firstDifference(q, o, s.countCheckpoints === true);
  const { pri, sec, ntf } = s.steps[at] ?? {};
  return JSON.stringify({ pri, sec, ntf, qemu: q[at] ?? null, ours: o[at] ?? null });
}

/**
 * Returns the smallest scenario found whose traces still differ between ours and QEMU in the
 * same way: at a step with the same input, with the same trace of each there. Any difference
 * would do otherwise, and a conversation cut short can part for a reason SPEC 9 names (seed
 * 80278: a retransmission released later by ours was cut down to bytes compared at different
 * positions). Steps are removed in chunks, halving the chunk size when nothing can be removed
 * (ddmin).
 */
export async function minimise(s: Scenario, kinds: ImplKind[]): Promise<Scenario> {
  const how = await difference(s, kinds);
  const differs = async (c: Scenario, k: ImplKind[]) =>
    how !== null && await difference(c, k) === how;
  let steps = s.steps.slice();
  let tries = 0;
  let chunk = Math.max(1, Math.floor(steps.length / 2));
  while (chunk >= 1 && tries < MAX_TRIES) {
    let removed = false;
    for (let at = 0; at < steps.length && tries < MAX_TRIES; at += chunk) {
      const candidate = [...steps.slice(0, at), ...steps.slice(at + chunk)];
      if (candidate.length === 0) continue;
      tries++;
      if (await differs(withSteps(s, candidate), kinds)) {
        steps = candidate;
        removed = true;
        at -= chunk;
      }
    }
    if (!removed) chunk = Math.floor(chunk / 2);
  }
  const small = withSteps(s, steps);
  return {
    ...small,
    name: `${s.name}-minimised`,
    description: `${
      s.description ?? ""
    } (minimised from ${s.steps.length} to ${steps.length} steps in ${tries} reruns)`
      .trim(),
  };
}
