/**
 * The compiled binary, where one can be built here (`deno compile` needs the denort runtime:
 * downloaded, or named by DENORT_BIN). Without one, the test says plainly that it skipped.
 */

import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;
const BINARY = `${ROOT}dist/colo-compare`;

async function build(): Promise<string | null> {
  const out = await new Deno.Command("sh", {
    args: [`${ROOT}compile.sh`],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (out.success) return null;
  return new TextDecoder().decode(out.stderr).trim().split("\n").pop() ?? "compile.sh failed";
}

const whyNot = await build();

Deno.test({
  name: whyNot === null
    ? "compile: the colo-compare binary runs --version, rejects bad flags and passes the demo"
    : `compile: SKIPPED, no binary could be built here (${whyNot})`,
  ignore: whyNot !== null,
  async fn() {
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
