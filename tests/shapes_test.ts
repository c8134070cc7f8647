/**
 * Time fields that get their first fractional value only after start keep their class's map
 * (bench/README.md, "Compiled before listening"): V8 drops the code compiled for a map that
 * changes, and the hot path would be compiled again under traffic.
 */

import assert from "node:assert/strict";
import { runJsonChild } from "./support/child.ts";

const CHILD = new URL("./support/shapes_child.ts", import.meta.url).pathname;

Deno.test("shapes: a clock held once, a pool trimmed once, a checkpoint requested once keep their maps", async () => {
  assert.deepEqual(await runJsonChild(["run", "--v8-flags=--allow-natives-syntax", CHILD]), {
    CompareClock: true,
    Pool: true,
    CheckpointRequests: true,
  });
});
