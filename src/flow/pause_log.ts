/**
 * Pauses of the inputs in the log (SPEC 8: a pause and its end are logged at info) and in the
 * counters. A side's pause for one reason and its end are logged at most once per interval;
 * pauses in between are summarised (`event=input-pauses`), so a busy outdev cannot flood the
 * log, and logged each at debug. A pause whose reason changes counts as the end of one pause
 * and the start of another.
 *
 * @module
 */

import type { Side } from "../compare/packet.ts";
import type { Fields, Logger } from "../log.ts";
import type { Stats } from "../stats.ts";
import type { PauseReason } from "./control.ts";

interface SideLog {
  paused: boolean;
  reason: PauseReason;
  since: number;
  logged: boolean;
  /** When a pause of this side was last logged, by reason. */
  loggedAt: Map<PauseReason, number>;
  /** Pauses since the last line about them, and their time. */
  quiet: number;
  quietMs: number;
}

function sideLog(): SideLog {
  return {
    paused: false,
    reason: "held-bytes",
    since: 0,
    logged: false,
    loggedAt: new Map(),
    quiet: 0,
    quietMs: 0,
  };
}

/** Logs and counts the pauses of both inputs. */
export class PauseLog {
  readonly #log: Logger;
  readonly #stats: Stats;
  readonly #intervalMs: number;
  readonly #now: () => number;
  readonly #sides: Record<Side, SideLog> = { primary: sideLog(), secondary: sideLog() };
  /**
   * When the summary of unlogged pauses was last written (-0: a double from the start; see
   * src/comparator.ts, #trimCheckedAt).
   */
  #summarisedAt = -0;

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

  /** `side` paused (or its reason changed) or resumed; `details` go on the pause line. */
  change(side: Side, paused: boolean, reason: PauseReason, details: Fields = {}): void {
    const s = this.#sides[side];
    const now = this.#now();
    if (s.paused) this.#ended(side, s, now);
    s.paused = paused;
    if (!paused) return;
    s.reason = reason;
    s.since = now;
    s.logged = now - (s.loggedAt.get(reason) ?? -Infinity) >= this.#intervalMs;
    if (!s.logged) {
      if (this.#log.enabled("debug")) this.#log.debug("input-paused", { side, reason, ...details });
      return;
    }
    s.loggedAt.set(reason, now);
    this.#log.info("input-paused", { side, reason, ...details });
  }

  #ended(side: Side, s: SideLog, now: number): void {
    const ms = now - s.since;
    this.#stats.paused(side, s.reason, ms);
    if (s.logged) {
      this.#log.info("input-resumed", { side, reason: s.reason, paused_ms: Math.round(ms) });
    } else {
      s.quiet++;
      s.quietMs += ms;
      if (this.#log.enabled("debug")) {
        this.#log.debug("input-resumed", { side, reason: s.reason, paused_ms: Math.round(ms) });
      }
    }
  }

  /** Summarises unlogged pauses once the interval passed (all of them when `final`). */
  flush(final = false): void {
    const now = this.#now();
    if (!final && now - this.#summarisedAt < this.#intervalMs) return;
    this.#summarisedAt = now;
    for (const side of ["primary", "secondary"] as const) {
      const s = this.#sides[side];
      if (s.quiet === 0) continue;
      this.#log.info("input-pauses", { side, count: s.quiet, paused_ms: Math.round(s.quietMs) });
      s.quiet = 0;
      s.quietMs = 0;
    }
  }
}
