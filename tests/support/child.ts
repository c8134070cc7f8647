/**
 * A script run in a Deno process of its own (a child that needs other V8 flags than the test
 * runner's), which prints one JSON value on stdout.
 *
 * @module
 */

import assert from "node:assert/strict";

/** Runs `deno ARGS`; asserts it exits 0 (its stderr as the message) and parses its stdout. */
export async function runJsonChild<T>(args: string[]): Promise<T> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout));
}
