/**
 * Traces: what a scenario produced, step by step, in a normalised form that two
 * implementations can be compared on, and the expectation a scenario writes down.
 *
 * Normalisations (each one a SPEC 9 row or a property of the harness, never a loosening of a
 * comparison of frames):
 * - markers and barrier replies are removed by the driver (`driver.ts`);
 * - released frames are named by the label of the scenario frame with the same bytes and vnet
 *   length word (the first label, when several frames are identical); anything else is shown
 *   as `?` plus its length and first bytes;
 * - DO_CHECKPOINT: QEMU sends one per mismatch and per timer scan, we send one per checkpoint
 *   epoch (SPEC 7 and 9). The trace therefore records `ckpt` at the first step of an epoch in
 *   which at least one DO_CHECKPOINT arrived; an epoch begins at every step that sends
 *   COLO_CHECKPOINT. Scenarios with `countCheckpoints` compare the raw count instead.
 *
 * @module
 */

import { toHex } from "./scenario.ts";
import type { FrameBook, Scenario, Step, StepExpect, StreamName } from "./scenario.ts";
import type { StepRecord } from "./driver.ts";

/** One step of a normalised trace. */
export interface TraceStep {
  out: string[];
  ckpt: boolean;
  ckpts: number;
  notify: string[];
  closed: StreamName[];
  stalled: StreamName[];
  exited: boolean;
}

/** Names frames by their scenario label. */
export class Labeller {
  #byKey = new Map<string, string>();

  constructor(book: FrameBook) {
    for (const l of book.labels()) {
      const f = book.get(l);
      const key = `${f.vnetLen}/${toHex(f.data)}`;
      if (!this.#byKey.has(key)) this.#byKey.set(key, l);
    }
  }

  /** The label of a released frame, or a short description of an unknown one. */
  name(data: Uint8Array, vnetLen = 0): string {
    const label = this.#byKey.get(`${vnetLen}/${toHex(data)}`);
    if (label !== undefined) return label;
    return `?${data.length}b/v${vnetLen}:${toHex(data.subarray(0, 24))}`;
  }

  /** The canonical label of a label (the first frame with the same bytes). */
  canonical(book: FrameBook, label: string): string {
    const f = book.get(label);
    return this.name(f.data, f.vnetLen);
  }
}

/** Turns the driver's records into a trace. */
export function normalise(
  records: StepRecord[],
  scenario: Scenario,
  labeller: Labeller,
): TraceStep[] {
  let epochAsked = false;
  return records.map((r, i) => {
    if (scenario.steps[i].ntf === "COLO_CHECKPOINT") epochAsked = false;
    const ckpt = r.ckpts > 0 && !epochAsked;
    if (r.ckpts > 0) epochAsked = true;
    return {
      out: r.out.map((f) => labeller.name(f.data, f.vnetLen ?? 0)),
      ckpt,
      ckpts: r.ckpts,
      notify: r.notify,
      closed: [...r.closed].sort(),
      stalled: [...r.stalled].sort(),
      exited: r.exited,
    };
  });
}

/** The expected trace written in a scenario, for ours (`qemu` false) or QEMU. */
export function expected(
  scenario: Scenario,
  book: FrameBook,
  labeller: Labeller,
  qemu: boolean,
): TraceStep[] {
  return scenario.steps.map((step) => {
    const e: StepExpect = qemu && step.qemu ? { ...pick(step), ...step.qemu } : pick(step);
    return {
      out: (e.out ?? []).map((l) => labeller.canonical(book, l)),
      ckpt: e.ckpt ?? false,
      ckpts: e.ckpts ?? 0,
      notify: e.notify ?? [],
      closed: [...(e.closed ?? [])].sort(),
      stalled: [...(e.stalled ?? [])].sort(),
      exited: e.exited ?? false,
    };
  });
}

function pick(step: Step): StepExpect {
  const { out, ckpt, ckpts, notify, closed, stalled, exited } = step;
  return { out, ckpt, ckpts, notify, closed, stalled, exited };
}

/** One step as a line: what came out and what happened. */
export function describe(t: TraceStep, countCheckpoints = false): string {
  const parts: string[] = [];
  if (t.out.length > 0) parts.push(`out [${t.out.join(" ")}]`);
  if (countCheckpoints ? t.ckpts > 0 : t.ckpt) {
    parts.push(countCheckpoints ? `DO_CHECKPOINT x${t.ckpts}` : "checkpoint");
  }
  if (t.notify.length > 0) parts.push(`notify [${t.notify.join(" ")}]`);
  if (t.closed.length > 0) parts.push(`closed [${t.closed.join(" ")}]`);
  if (t.stalled.length > 0) parts.push(`stalled [${t.stalled.join(" ")}]`);
  if (t.exited) parts.push("process exited");
  return parts.length > 0 ? parts.join(", ") : "-";
}

/** A step's action, for printing. */
export function action(step: Step): string {
  const list = (v: string | string[]) =>
    [v].flat().join(" ") + (step.flood ? ` x${step.flood} (each its own connection)` : "");
  if (step.pri !== undefined) return `pri ${list(step.pri)}${step.chunks ? " (split)" : ""}`;
  if (step.sec !== undefined) return `sec ${list(step.sec)}${step.chunks ? " (split)" : ""}`;
  if (step.ntf !== undefined) return `notify ${step.ntf}${step.exact ? " (exact)" : ""}`;
  if (step.raw !== undefined) {
    const what = step.raw.hex !== undefined
      ? `${step.raw.hex.replace(/\s/g, "").length / 2} bytes`
      : `[${step.raw.frames?.join(" ")}][${step.raw.from ?? 0}:${step.raw.to ?? ""}]`;
    return `raw ${step.raw.into} ${what}`;
  }
  if (step.pause !== undefined) return `pause ${step.pause} ms`;
  if (step.wait_ckpt !== undefined) return `wait for checkpoint (${step.wait_ckpt} ms)`;
  if (step.disconnect !== undefined) return `disconnect ${step.disconnect}`;
  if (step.reconnect !== undefined) return `reconnect ${step.reconnect}`;
  return "?";
}

/** Index of the first step where two traces differ, or -1. */
export function firstDifference(a: TraceStep[], b: TraceStep[], countCheckpoints = false): number {
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (!a[i] || !b[i]) return i;
    if (describe(a[i], countCheckpoints) !== describe(b[i], countCheckpoints)) return i;
  }
  return -1;
}

/** Two traces side by side, the differing steps marked. */
export function sideBySide(
  steps: Step[],
  left: { title: string; trace: TraceStep[] },
  right: { title: string; trace: TraceStep[] },
  countCheckpoints = false,
): string {
  const rows = steps.map((s, i) => {
    const a = left.trace[i] ? describe(left.trace[i], countCheckpoints) : "(not run)";
    const b = right.trace[i] ? describe(right.trace[i], countCheckpoints) : "(not run)";
    return { mark: a === b ? " " : "!", n: String(i), act: action(s), a, b };
  });
  const w1 = Math.max(4, ...rows.map((r) => r.act.length));
  const w2 = Math.max(left.title.length, ...rows.map((r) => r.a.length));
  const lines = [
    `    ${"#".padEnd(3)} ${"step".padEnd(w1)}  ${left.title.padEnd(w2)}  ${right.title}`,
    ...rows.map((r) =>
      `  ${r.mark} ${r.n.padEnd(3)} ${r.act.padEnd(w1)}  ${r.a.padEnd(w2)}  ${r.b}`
    ),
  ];
  return lines.join("\n");
}
