/**
 * Pauses of the inputs in the log (SPEC 8: a pause and its end are logged at info) and in the
 * counters. A side's pause and its end are logged at most once per interval; pauses in between
 * are summarised (`event=input-pauses`), so a busy outdev cannot flood the log.
 *
 * @module
 */

import type { Side } from "../compare/packet.ts";
import type { Fields, Logger } from "../log.ts";
import type { Stats } from "../stats.ts";
import type { PauseReason } from "./control.ts";

interface SideLog {
  since: number;
  logged: boolean;
  loggedAt: number;
  /** Pauses since the last line about them, and their time. */
  quiet: number;
  quietMs: number;
}

/** Logs and counts the pauses of both inputs. */
export class PauseLog {
  readonly #log: Logger;
  readonly #stats: Stats;
  readonly #intervalMs: number;
  readonly #now: () => number;
  readonly #sides: Record<Side, SideLog> = {
    primary: { since: 0, logged: false, loggedAt: -Infinity, quiet: 0, quietMs: 0 },
    secondary: { since: 0, logged: false, loggedAt: -Infinity, quiet: 0, quietMs: 0 },
  };

  constructor(
    log: Logger,
    stats: Stats,
    intervalMs: number,
    now: () => number = () => performance.now(),
  ) {
    this.#log = log;
    this.#stats = stats;
    this.#intervalMs = intervalMs;
    this.#now = now;
  }

  /** `side` paused or resumed; `details` go on the pause line. */
  change(side: Side, paused: boolean, reason: PauseReason, details: Fields = {}): void {
    const s = this.#sides[side];
    const now = this.#now();
    if (paused) {
      s.since = now;
      s.logged = now - s.loggedAt >= this.#intervalMs;
      if (!s.logged) return;
      s.loggedAt = now;
      this.#log.info("input-paused", { side, reason, ...details });
      return;
    }
    const ms = now - s.since;
    this.#stats.paused(side, reason, ms);
    if (s.logged) {
      this.#log.info("input-resumed", { side, reason, paused_ms: Math.round(ms) });
    } else {
      s.quiet++;
      s.quietMs += ms;
    }
  }

  /** Summarises unlogged pauses once the interval passed (all of them when `final`). */
  flush(final = false): void {
    const now = this.#now();
    for (const side of ["primary", "secondary"] as const) {
      const s = this.#sides[side];
      if (s.quiet === 0 || (!final && now - s.loggedAt < this.#intervalMs)) continue;
      this.#log.info("input-pauses", { side, count: s.quiet, paused_ms: Math.round(s.quietMs) });
      s.quiet = 0;
      s.quietMs = 0;
      s.loggedAt = now;
    }
  }
}
