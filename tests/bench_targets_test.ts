import assert from "node:assert/strict";
import { cacheModules } from "../bench/targets.ts";

Deno.test("bench: ours' entry point goes through deno cache before the measurements", async () => {
  const main = new URL("../main.ts", import.meta.url).pathname;
  const said = await cacheModules([Deno.execPath(), "run", "-A", main]);
  assert.equal(said, `${main} transpiled into Deno's cache first`);
});

Deno.test("bench: a command without a .ts entry point is left alone, a failed cache is said", async () => {
  assert.equal(await cacheModules(["/usr/local/bin/colo-compare"]), undefined);
  const missing = await Deno.makeTempFile({ suffix: ".ts" });
  await Deno.remove(missing);
  const said = await cacheModules([Deno.execPath(), "run", missing]);
  assert.match(said ?? "", /^deno cache .* failed, the first row may count its transpiling: /);
});
