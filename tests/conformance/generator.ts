import type { Scenario } from "./scenario.ts";
export function randomScenario(seed: number): Scenario {
  throw new Error(`not yet ${seed}`);
}
