/**
 * Child of tests/warmup_test.ts: runs the warm-up in a process with the program's V8 flags
 * (and `--allow-natives-syntax`), then prints, as one JSON line, which tier V8 left each of the
 * hot path's functions in: "turbofan", "maglev" or "other" (baseline code, the interpreter, or
 * no code at all).
 *
 * @module
 */

import { parseCommandLine } from "../../src/cli.ts";
import type { Config } from "../../src/cli.ts";
import { parseFrameAt } from "../../src/packet/parse.ts";
import { FrameDecoder } from "../../src/wire/codec.ts";
import { warmUp } from "../../src/warmup.ts";
import { listenEndpoints } from "./program.ts";

/** What the child prints. */
export interface WarmupChildResult {
  pairs: number;
  tiers: Record<string, "turbofan" | "maglev" | "other">;
  /** `%GetOptimizationStatus` of each, for a failure's message. */
  status: Record<string, number>;
}

// V8 15's %GetOptimizationStatus bits: 1 << 5 TurboFan code, 1 << 4 Maglev code.
const status = new Function("f", "return %GetOptimizationStatus(f)") as (f: unknown) => number;
const tier = (f: unknown) => {
  const s = status(f);
  return s & (1 << 5) ? "turbofan" : s & (1 << 4) ? "maglev" : "other";
};

const command = parseCommandLine(listenEndpoints(true));
const report = await warmUp((command as { config: Config }).config);
const result: WarmupChildResult = {
  pairs: report.pairs,
  tiers: { parseFrameAt: tier(parseFrameAt), push: tier(FrameDecoder.prototype.push) },
  status: { parseFrameAt: status(parseFrameAt), push: status(FrameDecoder.prototype.push) },
};
console.log(JSON.stringify(result));
