import assert from "node:assert/strict";
import { PROGRAM_V8_FLAGS } from "../src/v8_flags.ts";
import {
  gcSingleThreaded,
  HELPER_NICE,
  SCHED_IDLE,
  SCHED_OTHER,
  threadsNamed,
} from "../src/helper_threads.ts";
import { statFields } from "../bench/proc.ts";
import { startProgram } from "./support/program.ts";

/** The nice value of thread `tid` of process `pid` (field 19 of its `stat`). */
function niceOf(pid: number, tid: number): number {
  return Number(statFields(Deno.readTextFileSync(`/proc/${pid}/task/${tid}/stat`))[16]);
}

/** The scheduling policy of thread `tid` of process `pid` (field 41 of its `stat`). */
function policyOf(pid: number, tid: number): number {
  return Number(statFields(Deno.readTextFileSync(`/proc/${pid}/task/${tid}/stat`))[38]);
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
  name:
    "helper threads: the program runs V8's workers at nice 19 and SCHED_IDLE, its other threads as started",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const program = await startProgram({
      denoFlags: [PROGRAM_V8_FLAGS],
      flags: ["--log-level", "debug"],
    });
    try {
      const line = await program.waitForLine(/event=compiler-threads/);
      const tasks = `/proc/${program.pid}/task`;
      const workers = threadsNamed("V8 DefaultWorke", tasks);
      const all = [...Deno.readDirSync(tasks)].map((t) => Number(t.name));
      assert.ok(workers.length > 0, `no V8 worker threads among ${all.length} threads`);
      const n = workers.length;
      assert.match(line, new RegExp(`nice=${HELPER_NICE} threads=${n} sched_idle=${n}\\b`));
      assert.deepEqual(workers.map((t) => niceOf(program.pid, t)), workers.map(() => HELPER_NICE));
      assert.deepEqual(workers.map((t) => policyOf(program.pid, t)), workers.map(() => SCHED_IDLE));
      // The rest keep the nice value and the policy the program was started with (its main
      // thread's).
      const start = niceOf(program.pid, program.pid);
      const policy = policyOf(program.pid, program.pid);
      const others = all.filter((t) => !workers.includes(t));
      assert.deepEqual(others.map((t) => niceOf(program.pid, t)), others.map(() => start));
      assert.deepEqual(others.map((t) => policyOf(program.pid, t)), others.map(() => policy));
    } finally {
      await program.stop();
    }
  },
});

Deno.test({
  name:
    "helper threads: restore() puts the workers back to SCHED_OTHER for the exit (nice 0 where allowed)",
  ignore: Deno.build.os !== "linux",
  async fn() {
    // A process of its own with a single-threaded collector, reporting on its own threads.
    const module = new URL("../src/helper_threads.ts", import.meta.url).href;
    const proc = new URL("../bench/proc.ts", import.meta.url).href;
    const code = `
      import { lowerHelperThreads, threadsNamed } from "${module}";
      import { statFields } from "${proc}";
      const ids = threadsNamed("V8 DefaultWorke");
      const state = () => ids.map((t) => {
        const f = statFields(Deno.readTextFileSync("/proc/self/task/" + t + "/stat"));
        return [Number(f[16]), Number(f[38])];
      });
      const lowered = lowerHelperThreads();
      if (typeof lowered === "string") throw new Error(lowered);
      const before = state();
      const restored = lowered.restore();
      console.log(JSON.stringify({ n: ids.length, before, restored, after: state() }));
    `;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--v8-flags=--single-threaded-gc", code],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    const r = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.ok(r.n > 0, "no V8 worker threads");
    assert.deepEqual(r.before, Array(r.n).fill([HELPER_NICE, SCHED_IDLE]));
    assert.equal(r.restored, r.n);
    assert.deepEqual(r.after.map(([, policy]: number[]) => policy), Array(r.n).fill(SCHED_OTHER));
    // Root may raise the nice value again; anyone else mostly keeps 19 (RLIMIT_NICE).
    if (Deno.uid() === 0) assert.deepEqual(r.after.map(([n]: number[]) => n), Array(r.n).fill(0));
  },
});
