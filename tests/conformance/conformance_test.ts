/**
 * A handful of the conformance scenarios (those marked `"smoke": true`) under `deno test`,
 * against QEMU 7.2 and, when `main.ts` exists, our program. The whole suite and the random
 * conversations run with `deno task conformance`.
 */

import assert from "node:assert/strict";
import { type ImplKind, oursAvailable, qemuAvailable } from "./impl.ts";
import { loadScenarios } from "./scenario.ts";
import { checkScenario } from "./check.ts";
import { randomScenario } from "./generator.ts";

const haveQemu = await qemuAvailable();
const kinds: ImplKind[] = ["qemu", ...(oursAvailable() ? ["ours" as const] : [])];
const dir = new URL("./scenarios", import.meta.url).pathname;
const smoke = (await loadScenarios(dir)).filter((e) => e.scenario.smoke);

Deno.test("conformance: the scenario files load and name a SPEC rule each", async () => {
  const all = await loadScenarios(dir);
  assert.ok(all.length >= 80, `only ${all.length} scenarios`);
  assert.ok(smoke.length >= 5, `only ${smoke.length} smoke scenarios`);
});

Deno.test("conformance: the random generator is deterministic per seed", () => {
  assert.deepEqual(randomScenario(42), randomScenario(42));
  assert.notDeepEqual(randomScenario(42).steps, randomScenario(43).steps);
});

for (const { scenario } of smoke) {
  Deno.test({
    name: `conformance: ${scenario.name} behaves as QEMU 7.2 does${
      haveQemu ? "" : " (skipped: qemu-system-x86_64 not on PATH)"
    }`,
    ignore: !haveQemu,
    fn: async () => {
      const v = await checkScenario(scenario, kinds);
      assert.deepEqual(v.problems, [], v.problems.join("\n"));
    },
  });
}
