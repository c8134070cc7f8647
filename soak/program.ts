/**
 * The program under test, as a black box: `deno run -A` of main.ts with the program's V8 flags
 * (src/v8_flags.ts), or `--cmd`, on loopback,
 * its stderr counted line by line (a trial may make it log millions of lines, so only a
 * bounded sample is kept), its RSS, CPU time and open file descriptors read from `/proc`, and
 * its exit summary (`event=summary`) parsed from the logfmt it writes.
 *
 * @module
 */

import { PROGRAM_RUN_FLAGS } from "../src/v8_flags.ts";
import { readMemory, readThreadsCpuSeconds } from "../bench/proc.ts";
import { listenEndpoints } from "../tests/support/program.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
/** Lines kept for error reports and late lookups (the rest are only counted). */
const KEPT_LINES = 2000;
/** Lines kept whatever else is logged: start-up, peers, pauses, exit. */
const ALWAYS_KEPT =
  /event=(listening|connecting|ready|summary|held-at-exit|unsent-at-exit|stopping|peer-\w+|input-\w+)\b/;

/** The command that runs the comparator; its flags follow. Set once by the suite (`--cmd`). */
export const programCommand: string[] = [
  Deno.execPath(),
  "run",
  "-A",
  ...PROGRAM_RUN_FLAGS,
  MAIN,
];

/** Fields of one logfmt line (`key=value`, values possibly JSON-quoted). */
export type LogFields = Record<string, string>;

/** Parses one logfmt line. */
export function parseLogfmt(line: string): LogFields {
  const fields: LogFields = {};
  const re = /(\w[\w.-]*)=("(?:[^"\\]|\\.)*"|\S*)/g;
  for (let m; (m = re.exec(line)) !== null;) {
    const v = m[2];
    fields[m[1]] = v.startsWith('"') ? JSON.parse(v) : v;
  }
  return fields;
}

/** How a stopped program ended. */
export interface Exit {
  /** Exit status (137 etc. when it had to be killed). */
  code: number;
  /** Milliseconds from the signal to the exit. */
  ms: number;
  /** True when it did not exit by itself within the grace period and was killed. */
  killed: boolean;
  /** Fields of `event=summary`, empty when there was none. */
  summary: LogFields;
}

/** Options for {@linkcode startProgram}. */
export interface ProgramOptions {
  /** Endpoint flags; default: four `tcp-listen:127.0.0.1:0` endpoints. */
  endpoints?: string[];
  /** Omit --notify-dev from the default endpoints. */
  noNotify?: boolean;
  /** Extra flags. */
  flags?: string[];
  /** Wait for `event=ready` (default true). */
  waitReady?: boolean;
}

/** A running comparator. */
export class Program {
  readonly pid: number;
  /** Ports of the tcp-listen endpoints by endpoint name (from `event=listening`). */
  readonly ports: Record<string, number> = {};
  /** stderr lines and bytes so far. */
  lines = 0;
  bytes = 0;
  readonly #child: Deno.ChildProcess;
  readonly #kept: string[] = [];
  readonly #important: string[] = [];
  readonly #counters: { re: RegExp; n: number }[] = [];
  /** Lines per event name. */
  readonly events = new Map<string, number>();
  #waiters: { re: RegExp; resolve: (line: string) => void }[] = [];
  readonly #reading: Promise<void>;
  readonly status: Promise<Deno.CommandStatus>;
  #exited = false;

  private constructor(args: string[]) {
    this.#child = new Deno.Command(programCommand[0], {
      args: [...programCommand.slice(1), ...args],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.pid = this.#child.pid;
    this.status = this.#child.status.then((s) => {
      this.#exited = true;
      return s;
    });
    this.#reading = this.#read();
  }

  /** Starts the program and (by default) waits until it is ready. */
  static async start(options: ProgramOptions = {}): Promise<Program> {
    const endpoints = options.endpoints ?? listenEndpoints(options.noNotify);
    const p = new Program([...endpoints, ...(options.flags ?? [])]);
    if (options.waitReady === false) return p;
    try {
      await p.waitForLine(/event=ready/, 20_000);
    } catch (error) {
      await p.stop("SIGKILL");
      throw error;
    }
    for (const l of p.#important) {
      const m = /event=listening endpoint=(\S+) address=\S*:(\d+)$/.exec(l);
      if (m) p.ports[m[1]] = Number(m[2]);
    }
    return p;
  }

  async #read(): Promise<void> {
    const decoder = new TextDecoder();
    let rest = "";
    for await (const chunk of this.#child.stderr) {
      this.bytes += chunk.length;
      rest += decoder.decode(chunk, { stream: true });
      let at = 0;
      for (let nl; (nl = rest.indexOf("\n", at)) >= 0; at = nl + 1) this.#line(rest.slice(at, nl));
      rest = rest.slice(at);
    }
    if (rest) this.#line(rest);
  }

  #line(line: string): void {
    this.lines++;
    const event = /event=(\S+)/.exec(line)?.[1] ?? "-";
    this.events.set(event, (this.events.get(event) ?? 0) + 1);
    if (ALWAYS_KEPT.test(line)) this.#important.push(line);
    this.#kept.push(line);
    if (this.#kept.length > KEPT_LINES * 2) this.#kept.splice(0, KEPT_LINES);
    for (const c of this.#counters) if (c.re.test(line)) c.n++;
    if (this.#waiters.length === 0) return;
    this.#waiters = this.#waiters.filter((w) => {
      if (!w.re.test(line)) return true;
      w.resolve(line);
      return false;
    });
  }

  /** Counts lines matching `re` from now on; read the count with the returned function. */
  count(re: RegExp): () => number {
    const c = { re, n: 0 };
    this.#counters.push(c);
    return () => c.n;
  }

  /** Important lines (start-up, peers, pauses, exit) matching `re`, oldest first. */
  found(re: RegExp): string[] {
    return this.#important.filter((l) => re.test(l));
  }

  /** The events that logged the most lines: "name N, name N". */
  topEvents(n = 3): string {
    return [...this.events].sort((a, b) => b[1] - a[1]).slice(0, n).map(([e, c]) => `${e} ${c}`)
      .join(", ");
  }

  /** The last lines written, for error reports. */
  tail(n = 20): string {
    return this.#kept.slice(-n).join("\n");
  }

  /**
   * Resolves with a line matching `re` (an important or recent one already written, else the
   * next); rejects after `timeoutMs` or when the program exits first.
   */
  waitForLine(re: RegExp, timeoutMs = 10_000): Promise<string> {
    const earlier = this.#important.find((l) => re.test(l)) ?? this.#kept.find((l) => re.test(l));
    if (earlier) return Promise.resolve(earlier);
    return new Promise((resolve, reject) => {
      const waiter = { re, resolve: (l: string) => done(() => resolve(l)) };
      const timer = setTimeout(
        () => done(() => reject(new Error(`no log line matching ${re} in ${timeoutMs} ms`))),
        timeoutMs,
      );
      const exited = this.status.then(() =>
        done(() => reject(new Error(`program exited before logging ${re}:\n${this.tail()}`)))
      );
      let settled = false;
      const done = (settle: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        settle();
      };
      this.#waiters.push(waiter);
      void exited;
    });
  }

  /** True until the process has exited. */
  get running(): boolean {
    return !this.#exited;
  }

  /** Resident set size now, bytes (0 once gone). */
  rss(): number {
    return readMemory(this.pid)?.rss ?? 0;
  }

  /** Peak resident set size (`VmHWM`), bytes. */
  peakRss(): number {
    return readMemory(this.pid)?.peak ?? 0;
  }

  /** CPU seconds used so far by the threads alive now. */
  cpu(): number {
    return readThreadsCpuSeconds(this.pid) ?? 0;
  }

  /** Open file descriptors now. */
  fds(): number {
    let n = 0;
    for (const _ of Deno.readDirSync(`/proc/${this.pid}/fd`)) n++;
    return n;
  }

  /**
   * Sends `signal` and waits up to `graceMs` for the exit; kills it after that. Returns how
   * it ended and its exit summary.
   */
  async stop(signal: Deno.Signal = "SIGTERM", graceMs = 15_000): Promise<Exit> {
    const t0 = performance.now();
    let killed = false;
    try {
      this.#child.kill(signal);
    } catch {
      // already exited
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((r) => timer = setTimeout(() => r("late"), graceMs));
    const first = await Promise.race([this.status, late]);
    clearTimeout(timer);
    const ms = performance.now() - t0;
    if (first === "late") {
      killed = true;
      try {
        this.#child.kill("SIGKILL");
      } catch {
        // exited meanwhile
      }
    }
    const status = await this.status;
    await this.#reading;
    const line = this.#important.findLast((l) => /event=summary\b/.test(l));
    return { code: status.code, ms, killed, summary: line ? parseLogfmt(line) : {} };
  }
}

/** Samples a program's RSS every `everyMs` and keeps the peak. */
export class RssSampler {
  peak = 0;
  readonly #timer: ReturnType<typeof setInterval>;

  constructor(program: Program, everyMs = 100) {
    this.peak = program.rss();
    this.#timer = setInterval(() => {
      this.peak = Math.max(this.peak, program.rss());
    }, everyMs);
  }

  /** Stops sampling; returns the peak. */
  stop(): number {
    clearInterval(this.#timer);
    return this.peak;
  }
}
