/**
 * Numbers as the soak report prints them.
 *
 * @module
 */

/** Bytes as MiB with one decimal. */
export function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** A number with thousands separators. */
export function num(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

/** Frames dropped by the program, from its exit summary (every `dropped_*` field). */
export function droppedInSummary(summary: Record<string, string>): number {
  let n = 0;
  for (const [k, v] of Object.entries(summary)) if (k.startsWith("dropped_")) n += Number(v);
  return n;
}

/** A numeric field of the exit summary, or undefined when the program does not report it. */
export function summaryField(summary: Record<string, string>, field: string): number | undefined {
  return summary[field] === undefined ? undefined : Number(summary[field]);
}
