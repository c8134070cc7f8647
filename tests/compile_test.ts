/**
 * The compiled binary, where one can be built here (`deno compile` needs the denort runtime:
 * downloaded, or named by DENORT_BIN). Without one, the test says plainly that it skipped.
 */

import assert from "node:assert/strict";
import { PROGRAM_V8_FLAGS } from "../src/v8_flags.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const BINARY = `${ROOT}dist/colo-compare`;

/** compile.sh's exit status when there is no denort runtime to build with (not a bug). */
const NO_RUNTIME = 3;

async function build(): Promise<{ code: number; message: string }> {
  const out = await new Deno.Command("sh", {
    args: [`${ROOT}compile.sh`],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const message = new TextDecoder().decode(out.stderr).trim().split("\n").pop() ?? "";
  return { code: out.code, message };
}

const built = await build();
// Only a missing runtime skips the test: a program that does not compile fails it.
const whyNot = built.code === NO_RUNTIME ? built.message : null;

Deno.test({
  name: whyNot === null
    ? "compile: the colo-compare binary runs --version, rejects bad flags and passes the demo"
    : `compile: SKIPPED, no binary could be built here (${whyNot})`,
  ignore: whyNot !== null,
  async fn() {
    assert.equal(built.code, 0, `compile.sh failed: ${built.message}`);
    const run = (args: string[]) =>
      new Deno.Command(BINARY, { args, stdout: "piped", stderr: "piped" }).output();
    const version = await run(["--version"]);
    assert.equal(version.code, 0);
    assert.match(new TextDecoder().decode(version.stdout), /^colo-compare \d/);
    const bad = await run(["--compare-timeout", "0"]);
    assert.equal(bad.code, 2);
    const demo = await run(["demo"]);
    assert.equal(demo.code, 0, new TextDecoder().decode(demo.stdout));
    assert.match(new TextDecoder().decode(demo.stdout), /result +PASS/);
  },
});

Deno.test("compile: the binary bakes in the V8 flags the program runs with", () => {
  const script = Deno.readTextFileSync(`${ROOT}compile.sh`);
  assert.equal(script.match(/^V8_FLAGS="([^"]*)"$/m)?.[1], PROGRAM_V8_FLAGS);
});
