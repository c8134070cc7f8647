/**
 * End-to-end, on a busy host (SPEC 8: no stall, whatever the machine's load): V8's worker
 * threads keep the program's priority. Lowered (nice 19 and `SCHED_IDLE`, to keep their
 * compilations off the CPU a frame waits for), they stalled the main thread for seconds when the
 * CPUs were busy: the main thread waited for a starved worker (a collection needs every thread
 * that compiles to stop first), and an input went unread meanwhile (bench/README.md, "V8's
 * compiler threads back at the program's priority").
 */

import assert from "node:assert/strict";
import { statFields } from "../../bench/proc.ts";
import { TcpStreams } from "../../soak/traffic.ts";
import { PROGRAM_V8_FLAGS } from "../../src/v8_flags.ts";
import { writeAll } from "../../src/wire/transport.ts";
import { startRig } from "../support/fixture.ts";
import { TCP } from "../support/packets.ts";
import { startProgram } from "../support/program.ts";

/** The nice value and the scheduling policy of thread `tid` of process `pid`. */
function priorityOf(pid: number, tid: number): [number, number] {
  const f = statFields(Deno.readTextFileSync(`/proc/${pid}/task/${tid}/stat`));
  return [Number(f[16]), Number(f[38])];
}

Deno.test({
  name: "contention: every thread of the program keeps the priority it started with",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const program = await startProgram({ denoFlags: [PROGRAM_V8_FLAGS] });
    try {
      const tasks = [...Deno.readDirSync(`/proc/${program.pid}/task`)].map((t) => Number(t.name));
      const main = priorityOf(program.pid, program.pid);
      assert.deepEqual(tasks.map((t) => priorityOf(program.pid, t)), tasks.map(() => main));
    } finally {
      await program.stop();
    }
  },
});

Deno.test({
  name:
    "contention: with four busy processes on the CPUs, three bursts of 10,000 closing connections all come out, no input left unread",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const busy = Array.from({ length: 4 }, () =>
      new Deno.Command("sh", {
        args: ["-c", "while :; do :; done"],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn());
    const rig = await startRig({ denoFlags: [PROGRAM_V8_FLAGS] });
    try {
      for (let burst = 0; burst < 3; burst++) {
        // New connections each time: new code paths, compiled while the CPUs are busy. Every
        // primary segment waits for its secondary copy, sent once all primaries were.
        const fin = new TcpStreams(10_000, 10, 0x20_0000 + burst * 10_000, TCP.FIN | TCP.ACK)
          .next(10_000);
        await writeAll(rig.primary, fin.primary);
        await writeAll(rig.secondary, fin.secondary);
        const want = (burst + 1) * 10_000;
        await rig.outdev.waitUntil(() => rig.outdev.frames.length >= want, 10_000);
        assert.equal(rig.outdev.frames.length, want, `burst ${burst}: a stall`);
      }
    } finally {
      for (const p of busy) p.kill("SIGKILL");
      await Promise.all(busy.map((p) => p.status));
      const stopped = await rig.close();
      assert.equal(stopped.code, 0, stopped.stderr);
    }
  },
});
