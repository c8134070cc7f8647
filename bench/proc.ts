/**
 * Reads a process's memory and CPU time from Linux `/proc`, for the benchmark's RSS and CPU
 * columns. Every function returns `undefined` where `/proc` is missing or the process is gone.
 *
 * Deno asks for `--allow-all` to read anything under `/proc`: the load generator, which
 * samples the comparator, runs with `-A`; the orchestrator only uses `describeMachine`.
 *
 * @module
 */

import os from "node:os";

/** Memory of one process, in bytes. */
export interface MemorySample {
  /** Resident set size now (`VmRSS`). */
  rss: number;
  /** Peak resident set size since the process started (`VmHWM`). */
  peak: number;
  /** The anonymous part of the resident set (`RssAnon`): no pages of mapped files. */
  anon: number;
  /** The resident pages of mapped files (`RssFile`). */
  file: number;
}

/** Reads `VmRSS`, `VmHWM`, `RssAnon` and `RssFile` of `pid`. */
export function readMemory(pid: number): MemorySample | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/status`);
  } catch {
    return undefined;
  }
  const kib = (name: string): number => {
    const m = text.match(new RegExp(`^${name}:\\s+(\\d+) kB`, "m"));
    return m ? Number(m[1]) * 1024 : 0;
  };
  return { rss: kib("VmRSS"), peak: kib("VmHWM"), anon: kib("RssAnon"), file: kib("RssFile") };
}

/** Clock ticks per second of `utime`/`stime` in `/proc/PID/stat` (USER_HZ, 100 on Linux). */
const TICKS_PER_SECOND = 100;

/**
 * The fields of a `/proc/.../stat` line after the command name, from field 3 (the state) on:
 * the name (field 2) may contain spaces, the fields after its closing paren are fixed.
 */
export function statFields(text: string): string[] {
  return text.slice(text.lastIndexOf(")") + 2).split(" ");
}

/** CPU time (user + system, all threads) consumed by `pid` so far, in seconds. */
export function readCpuSeconds(pid: number | "self"): number | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return undefined;
  }
  const rest = statFields(text);
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  return (utime + stime) / TICKS_PER_SECOND;
}

/**
 * CPU time of `pid`'s threads alive now (seconds), to the nanosecond: the sum of
 * `/proc/PID/task/TID/schedstat`'s first field. `/proc/PID/stat` counts whole clock ticks
 * (10 ms), charged to whichever thread a tick finds running: over a window of tens of
 * milliseconds that is off by several ticks either way. Threads that ended are not counted (a
 * window across a thread's end reads low); undefined when the process is gone.
 */
export function readThreadsCpuSeconds(pid: number): number | undefined {
  let ns = 0;
  try {
    for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/schedstat`).split(" ")[0]);
      } catch {
        // the thread ended meanwhile
      }
    }
  } catch {
    return undefined;
  }
  return ns / 1e9;
}

/** The load averages and a short machine description, for the report header. */
export function describeMachine(): { load: string; cpu: string; cores: number; memory: string } {
  return {
    load: Deno.loadavg().map((x) => x.toFixed(2)).join(" "),
    cpu: os.cpus()[0]?.model ?? "?",
    cores: navigator.hardwareConcurrency,
    memory: `${(Deno.systemMemoryInfo().total / 2 ** 30).toFixed(1)} GiB`,
  };
}
