/**
 * V8's worker threads run at the lowest CPU priority, so that they never take a CPU from a
 * thread the traffic waits for (issue 11). With `--single-threaded-gc` (the program's V8 flags;
 * without it they are left alone, see {@linkcode gcSingleThreaded}) all they do is compile:
 * Maglev and TurboFan build faster code for the hot path in the background, and nothing waits
 * for them. At the main thread's priority, each compile job preempted whatever ran on the other
 * CPU: on a host a vCPU or QEMU's I/O thread, in the bench the load generator, and the pair
 * waiting for it was late by up to a scheduler slice (bench/README.md, "V8's compiler threads at
 * nice 19").
 *
 * Nice 19 was not enough: on Linux 6.18 (EEVDF) a compile job that was running kept its CPU for
 * up to a few ms after our main thread woke there, the other CPU idle (`perf sched timehist`;
 * bench/README.md, "V8's compiler threads as SCHED_IDLE"): a woken thread waits for the running
 * one's slice, whatever their nice values. A `SCHED_IDLE` thread is preempted as
 * soon as any other thread wakes on its CPU, and still gets a small share of a busy CPU, so the
 * compilations finish on a loaded host too. So the workers get both: nice 19, and `SCHED_IDLE`.
 *
 * The threads are found by name in `/proc/self/task` at start, while the `read` and `ffi`
 * permissions are still granted (src/permissions.ts), and lowered with libc's `setpriority` and
 * `sched_setscheduler`, which on Linux take a thread id. Lowering a thread's priority needs no
 * privilege. Where it cannot be done (not Linux, no permission) the threads keep their priority.
 *
 * @module
 */

import { openLibc } from "./libc.ts";

/** The nice value of V8's worker threads. */
export const HELPER_NICE = 19;
/** How V8 names its worker threads (`/proc/.../comm` keeps 15 bytes). */
const HELPER_NAME = "V8 DefaultWorke";
const PRIO_PROCESS = 0;
/** Linux's `SCHED_IDLE` scheduling policy. */
export const SCHED_IDLE = 5;

const SYMBOLS = {
  setpriority: { parameters: ["i32", "u32", "i32"], result: "i32" },
  sched_setscheduler: { parameters: ["i32", "i32", "buffer"], result: "i32" },
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

/** Linux's `SCHED_OTHER` scheduling policy, every thread's at start. */
export const SCHED_OTHER = 0;

/** How many of V8's worker threads were lowered: to nice 19, and to `SCHED_IDLE`. */
export interface Lowered {
  niced: number;
  idle: number;
  /**
   * Puts the lowered threads back to `SCHED_OTHER` (and nice 0 where that is allowed: raising
   * a nice value needs CAP_SYS_NICE; without it they stay at nice 19); returns how many went
   * back to `SCHED_OTHER`. For the exit: the process ends only once each worker has run again
   * to see that it must stop, and on a busy CPU a `SCHED_IDLE` thread waits about a second
   * for that. With two workers SIGTERM took 1-2 s to end the program on a loaded host
   * instead of 15 ms (soak trial 6).
   */
  restore(): number;
}

/**
 * Sets V8's worker threads to nice {@linkcode HELPER_NICE} and the `SCHED_IDLE` policy: how
 * many were set, or why none could be (a sentence for the start-up log).
 */
export function lowerHelperThreads(): Lowered | string {
  if (!gcSingleThreaded()) return "the collector is not single-threaded (--single-threaded-gc)";
  const libc = openLibc(SYMBOLS, "the compiler threads' priority");
  if (typeof libc === "string") return libc;
  let ids: number[];
  try {
    ids = threadsNamed(HELPER_NAME);
  } catch (error) {
    return `/proc/self/task: ${error instanceof Error ? error.message : error}`;
  }
  // struct sched_param: the static priority, 0 for SCHED_IDLE and SCHED_OTHER.
  const param = new Uint8Array(4);
  const idle: number[] = [];
  let niced = 0;
  for (const id of ids) {
    if (libc.setpriority(PRIO_PROCESS, id, HELPER_NICE) === 0) niced++;
    if (libc.sched_setscheduler(id, SCHED_IDLE, param) === 0) idle.push(id);
  }
  const restore = () => {
    let restored = 0;
    for (const id of idle) {
      if (libc.sched_setscheduler(id, SCHED_OTHER, param) === 0) restored++;
      libc.setpriority(PRIO_PROCESS, id, 0);
    }
    return restored;
  };
  return { niced, idle: idle.length, restore };
}
