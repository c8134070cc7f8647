/**
 * V8's worker threads run at the lowest CPU priority (nice 19), so that they never take a CPU
 * from a thread the traffic waits for (issue 11). With `--single-threaded-gc` (the program's V8
 * flags; without it they are left alone, see {@linkcode gcSingleThreaded}) all they do is
 * compile: Maglev and TurboFan build faster code for the hot path in the background, and nothing
 * waits for them. At the main thread's priority, each compile job preempted whatever ran on the
 * other CPU: on a host a vCPU or QEMU's I/O thread, in the bench the load generator, and the pair
 * waiting for it was late by up to a scheduler slice (bench/README.md, "V8's compiler threads at
 * nice 19").
 *
 * The threads are found by name in `/proc/self/task` at start, while the `read` and `ffi`
 * permissions are still granted (src/permissions.ts), and reniced with libc's `setpriority`,
 * which on Linux takes a thread id. Raising a thread's nice value needs no privilege. Where
 * either cannot be done (not Linux, no permission) the threads keep their priority.
 *
 * @module
 */

import { openLibc } from "./libc.ts";

/** The nice value of V8's worker threads. */
export const HELPER_NICE = 19;
/** How V8 names its worker threads (`/proc/.../comm` keeps 15 bytes). */
const HELPER_NAME = "V8 DefaultWorke";
const PRIO_PROCESS = 0;

const SYMBOLS = {
  setpriority: { parameters: ["i32", "u32", "i32"], result: "i32" },
} as const;

/** The ids of this process's threads named `name`, read from `tasks` (a `/proc` task dir). */
export function threadsNamed(name: string, tasks = "/proc/self/task"): number[] {
  const ids: number[] = [];
  for (const entry of Deno.readDirSync(tasks)) {
    try {
      if (Deno.readTextFileSync(`${tasks}/${entry.name}/comm`).trimEnd() === name) {
        ids.push(Number(entry.name));
      }
    } catch {
      // The thread ended while we looked.
    }
  }
  return ids;
}

/**
 * Whether V8 collects garbage on the main thread alone (`--single-threaded-gc`): the binary
 * compile.sh builds has it baked in, `deno run` names it in its command line or in
 * `DENO_V8_FLAGS`. Without it the workers also help the collector, and the main thread waits
 * for their part of each collection: at nice 19 that wait grows whenever the CPUs are busy, so
 * they are then left as they are (bench/README.md has the rows of both).
 */
export function gcSingleThreaded(
  standalone = Deno.build.standalone,
  cmdline = () => Deno.readTextFileSync("/proc/self/cmdline"),
  env = () => Deno.env.get("DENO_V8_FLAGS") ?? "",
): boolean {
  if (standalone) return true;
  const named = (read: () => string) => {
    try {
      return /(^|[\s,=\0])--single[-_]threaded[-_]gc(?![\w-])/.test(read());
    } catch {
      return false;
    }
  };
  return named(cmdline) || named(env);
}

/**
 * Sets V8's worker threads to nice {@linkcode HELPER_NICE}: how many were set, or why none
 * could be (a sentence for the start-up log).
 */
export function lowerHelperThreads(): number | string {
  if (!gcSingleThreaded()) return "the collector is not single-threaded (--single-threaded-gc)";
  const libc = openLibc(SYMBOLS, "the compiler threads' priority");
  if (typeof libc === "string") return libc;
  let ids: number[];
  try {
    ids = threadsNamed(HELPER_NAME);
  } catch (error) {
    return `/proc/self/task: ${error instanceof Error ? error.message : error}`;
  }
  let set = 0;
  for (const id of ids) {
    if (libc.setpriority(PRIO_PROCESS, id, HELPER_NICE) === 0) set++;
  }
  return set;
}
