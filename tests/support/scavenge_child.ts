/**
 * Run by tests/wire/scavenge_test.ts with the program's V8 flags: makes 20 MiB of ArrayBuffers
 * that nothing refers to, nudges (or, given `none`, does not), and prints the external memory
 * before and after as one JSON line.
 *
 * @module
 */

import { ScavengeNudge } from "../../src/wire/scavenge.ts";

/** What the child prints. */
export interface ScavengeChildResult {
  before: number;
  after: number;
}

let last = new Uint8Array(0);
for (let i = 0; i < 320; i++) last = new Uint8Array(64 * 1024);
const before = Deno.memoryUsage().external;
const nudge = Deno.args[0] === "none"
  ? new ScavengeNudge({ every: 1, growth: -1, nudge: () => {} })
  : new ScavengeNudge({ every: 1, growth: -1 });
nudge.count(last.length);
const result: ScavengeChildResult = { before, after: Deno.memoryUsage().external };
console.log(JSON.stringify(result));
