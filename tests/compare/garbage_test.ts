/**
 * The hot path's garbage (issue 11): compared pairs go through the frame decoder, the engine,
 * the sink and the outdev writer (`bench/pipeline.ts`, in a process of its own with the
 * program's V8 flags) and V8's sampling heap profiler counts the bytes they allocate. Every
 * byte is a scavenge sooner, and a pause on the one thread that also serves the sockets.
 *
 * Before: 46 bytes per tcp-64 pair (a heap number per frame for the sequence numbers of 2^31 and
 * above passed to `sameSegment`, and a queue array grown anew each time a read's frames were
 * held), 30 per udp-512 pair (the queue arrays).
 */

import assert from "node:assert/strict";
import { PROGRAM_V8_FLAGS } from "../../src/v8_flags.ts";
import { runJsonChild } from "../support/child.ts";

const pipeline = new URL("../../bench/pipeline.ts", import.meta.url).pathname;

interface Allocated {
  workload: string;
  pairs: number;
  bytesPerPair: number;
}

for (const [workload, most] of [["tcp-64", 12], ["udp-512", 20]] as const) {
  Deno.test(`garbage: a ${workload} pair allocates under ${most} bytes on the hot path`, async () => {
    const run = () =>
      runJsonChild<Allocated>([
        "run",
        "-A",
        PROGRAM_V8_FLAGS,
        pipeline,
        "--workload",
        workload,
        "--rounds",
        "2",
        "--allocated",
      ]);
    // A second run decides: code still compiling (or compiled again) in the measured rounds
    // allocates more. 1 of 27 runs of this code gave 19 bytes per tcp-64 pair, the others
    // 2.8-5.0. What this guards against fails both runs: 46 and 30 bytes per pair in every run
    // before.
    const runs = [await run()];
    if (runs[0].bytesPerPair >= most) runs.push(await run());
    const r = runs[runs.length - 1];
    assert.ok(r.pairs >= 100_000, `${r.pairs} pairs`);
    assert.ok(
      r.bytesPerPair < most,
      `${runs.map((x) => x.bytesPerPair.toFixed(1)).join(", ")} bytes per pair`,
    );
  });
}
