/**
 * What a soak trial is: a measured experiment against the real program that reports each
 * bound it checks as one row (bound, measured value, PASS/FAIL). Timings are reported; only
 * bounds decide.
 *
 * @module
 */

import { Program, type ProgramOptions } from "./program.ts";
import { num } from "./format.ts";
import { closeAll, connectData, type DataPeers, FrameReader } from "./traffic.ts";

/** How big a run is: the full profile, or `--short` for CI (a few seconds per trial). */
export interface Profile {
  short: boolean;
}

/** One bound checked by a trial. */
export interface Check {
  /** What is bounded, e.g. "CPU per frame on a new connection". */
  check: string;
  /** The bound, as a reader checks it: "<= 100 µs". */
  bound: string;
  /** What was measured, with enough context to judge it. */
  measured: string;
  pass: boolean;
  /** More lines for a failed check (the program's last log lines), printed under its row. */
  detail?: string;
}

/** A trial of the suite. */
export interface Trial {
  /** Number in the suite (SPEC 8 bound list order of the task). */
  id: number;
  /** Short name, used by `--only`. */
  name: string;
  /** What the trial does, in a line. */
  title: string;
  /** Longest the trial may take in each profile before it is stopped, in seconds. */
  limitSeconds: { short: number; full: number };
  run(profile: Profile, scope: Scope): Promise<Check[]>;
}

/**
 * Everything a trial opened: programs and connections, closed (and killed) when the trial
 * ends, whether it finished, failed or ran out of time.
 */
export class Scope {
  readonly #programs: Program[] = [];
  readonly #conns: Deno.Conn[] = [];
  readonly #cleanups: (() => void | Promise<void>)[] = [];

  /** Starts the program; it is killed at the end of the trial if still running. */
  async start(options: ProgramOptions = {}): Promise<Program> {
    const p = await Program.start(options);
    this.#programs.push(p);
    return p;
  }

  /** Connects to the program's primary-in, secondary-in and outdev; closed at the end. */
  async data(program: Program): Promise<DataPeers> {
    const peers = await connectData(program.ports);
    for (const c of Object.values(peers)) this.conn(c);
    return peers;
  }

  /** A {@linkcode FrameReader} on `conn`, closed (and awaited) at the end. */
  reader(
    conn: Deno.Conn,
    onFrame?: (f: Uint8Array) => void,
    rate: number | null = null,
  ): FrameReader {
    const r = new FrameReader(conn, onFrame, rate);
    this.defer(() => r.close());
    return r;
  }

  /** Registers a connection to close at the end. */
  conn<C extends Deno.Conn>(c: C): C {
    this.#conns.push(c);
    return c;
  }

  /** Closes the connections registered so far, now. */
  closeConns(): void {
    closeAll(...this.#conns.splice(0));
  }

  /** Registers a clean-up step (run last registered first). */
  defer(fn: () => void | Promise<void>): void {
    this.#cleanups.push(fn);
  }

  /** Runs the clean-ups, closes the connections, kills programs still running. */
  async close(): Promise<void> {
    for (const fn of this.#cleanups.reverse()) {
      try {
        await fn();
      } catch {
        // best effort: the rest must still be closed
      }
    }
    closeAll(...this.#conns);
    for (const p of this.#programs) if (p.running) await p.stop("SIGKILL");
  }
}

export { mib, num } from "./format.ts";

/** A check from a measured number and its upper bound. */
export function atMost(
  check: string,
  measured: number,
  bound: number,
  show: (n: number) => string,
  context = "",
): Check {
  return {
    check,
    bound: `<= ${show(bound)}`,
    measured: show(measured) + (context ? ` (${context})` : ""),
    pass: measured <= bound,
  };
}

/** The exit of a program stopped at the end of a trial: exit 0 within a few seconds. */
export function cleanExit(exit: { code: number; ms: number; killed: boolean }): Check {
  return {
    check: "exits 0 on SIGTERM (no crash)",
    bound: "exit 0 within 10 s",
    measured: exit.killed
      ? `no exit in ${num(exit.ms)} ms (killed)`
      : `exit ${exit.code} after ${num(exit.ms)} ms`,
    pass: !exit.killed && exit.code === 0,
  };
}
