/**
 * The program run from a checkout with {@linkcode PROGRAM_RUN_FLAGS} keeps no file of Deno's
 * cache mapped: `deno run` otherwise maps its V8 code cache for the life of the process, 4 MiB
 * of every peak (src/v8_flags.ts).
 */

import assert from "node:assert/strict";
import { PROGRAM_RUN_FLAGS, PROGRAM_V8_FLAGS } from "../src/v8_flags.ts";
import { startProgram } from "./support/program.ts";

/** The files of Deno's code cache that `pid` has mapped. */
function codeCacheMappings(pid: number): string[] {
  const maps = Deno.readTextFileSync(`/proc/${pid}/maps`).split("\n");
  return [...new Set(maps.filter((l) => /v8_code_cache/.test(l)).map((l) => l.split(/\s+/)[5]))];
}

/** The code cache mappings of the program started with `denoFlags`, once it is ready. */
async function mappedWith(denoFlags: readonly string[]): Promise<string[]> {
  const program = await startProgram({ denoFlags: [...denoFlags], flags: ["--no-warmup"] });
  try {
    await program.waitForLine(/event=ready/);
    return codeCacheMappings(program.pid);
  } finally {
    await program.stop();
  }
}

Deno.test({
  name: "run flags: the program maps no code cache of deno run's",
  ignore: Deno.build.os !== "linux",
  async fn() {
    assert.ok(PROGRAM_RUN_FLAGS.includes(PROGRAM_V8_FLAGS));
    // Without the flag the same start maps it (where Deno's cache directory can hold one): what
    // the assertion below tells apart.
    const without = await mappedWith([PROGRAM_V8_FLAGS]);
    const withFlags = await mappedWith(PROGRAM_RUN_FLAGS);
    assert.deepEqual(withFlags, [], `mapped with ${PROGRAM_RUN_FLAGS.join(" ")}`);
    if (without.length === 0) {
      console.log("run flags: deno run mapped no code cache here without the flag either");
    }
  },
});
