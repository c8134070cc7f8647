import assert from "node:assert/strict";
import { PROGRAM_V8_FLAGS } from "../src/v8_flags.ts";
import { gcSingleThreaded, HELPER_NICE, threadsNamed } from "../src/helper_threads.ts";
import { startProgram } from "./support/program.ts";

/** Each thread of process `pid`: its name and nice value (`/proc/PID/task/TID/stat`). */
function threads(pid: number): { id: number; name: string; nice: number }[] {
  const out = [];
  for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
    const stat = Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/stat`);
    // pid (comm) state ...: the fields after the name, from the state on; nice is field 19.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    out.push({
      id: +t.name,
      name: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")),
      nice: +fields[16],
    });
  }
  return out;
}

Deno.test("helper threads: found by name in a task directory", () => {
  const dir = Deno.makeTempDirSync();
  try {
    for (const [id, name] of [[11, "deno"], [12, "V8 DefaultWorke"], [13, "tokio-runtime-w"]]) {
      Deno.mkdirSync(`${dir}/${id}`);
      Deno.writeTextFileSync(`${dir}/${id}/comm`, `${name}\n`);
    }
    Deno.mkdirSync(`${dir}/14`); // a thread that ended while we looked: no comm
    assert.deepEqual(threadsNamed("V8 DefaultWorke", dir), [12]);
    assert.deepEqual(threadsNamed("nothing", dir), []);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("helper threads: lowered only where the collector is single-threaded", () => {
  const none = () => "";
  const fails = (): string => {
    throw new Deno.errors.NotCapable("no read permission");
  };
  assert.equal(gcSingleThreaded(true, fails, fails), true, "compile.sh's binary bakes it in");
  const cmdline = "deno\0run\0--v8-flags=--max-semi-space-size=1,--single-threaded-gc\0main.ts\0";
  assert.equal(gcSingleThreaded(false, () => cmdline, none), true);
  assert.equal(gcSingleThreaded(false, none, () => "--single_threaded_gc"), true, "DENO_V8_FLAGS");
  assert.equal(gcSingleThreaded(false, () => "deno\0run\0main.ts\0", none), false);
  assert.equal(gcSingleThreaded(false, () => "--single-threaded-gc-x", none), false);
  assert.equal(gcSingleThreaded(false, () => "--v8-flags=--no-single-threaded-gc", none), false);
  assert.equal(gcSingleThreaded(false, fails, fails), false, "unreadable: left alone");
});

Deno.test({
  name: "helper threads: the program runs V8's workers at nice 19, its other threads as started",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const program = await startProgram({
      denoFlags: [PROGRAM_V8_FLAGS],
      flags: ["--log-level", "debug"],
    });
    try {
      const line = await program.waitForLine(/event=compiler-threads/);
      const all = threads(program.pid);
      const workers = all.filter((t) => t.name === "V8 DefaultWorke");
      assert.ok(workers.length > 0, `no V8 worker threads among ${JSON.stringify(all)}`);
      assert.match(line, new RegExp(`nice=${HELPER_NICE} threads=${workers.length}\\b`));
      assert.deepEqual(workers.map((t) => t.nice), workers.map(() => HELPER_NICE));
      // The rest keep the nice value the program was started with (its main thread's).
      const start = all.find((t) => t.id === program.pid)!.nice;
      const others = all.filter((t) => t.name !== "V8 DefaultWorke");
      assert.deepEqual(others.map((t) => t.nice), others.map(() => start), JSON.stringify(others));
    } finally {
      await program.stop();
    }
  },
});
