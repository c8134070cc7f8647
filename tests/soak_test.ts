/**
 * The soak suite's short profile (`deno task soak --short`) as tests: each trial runs the real
 * program and every bound it measures must hold.
 *
 * @module
 */

import assert from "node:assert/strict";
import { resultLine, runTrial } from "../soak/soak.ts";
import { TRIALS } from "../soak/trials/mod.ts";

for (const trial of TRIALS) {
  Deno.test(`soak --short: ${trial.name}: ${trial.title} stays within its bounds`, async () => {
    const result = await runTrial(trial, { short: true });
    const failed = result.checks.filter((c) => !c.pass).map((c) => resultLine(result, c));
    assert.deepEqual(failed, [], failed.join("\n"));
  });
}
