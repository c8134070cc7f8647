/**
 * Structured logs on stderr, one logfmt line per event:
 * `ts=2026-11-25T20:37:11.123Z level=info event=listening endpoint=primary-in address=...`.
 * At `trace`, QEMU's trace-event names appear as `event=colo_compare_main` and so on.
 *
 * @module
 */

/** Log levels, most severe first. */
export const LEVELS = ["error", "warn", "info", "debug", "trace"] as const;
/** A log level. */
export type Level = typeof LEVELS[number];

/** A field value. */
export type FieldValue = string | number | boolean | null | undefined;
/** Fields of one log line. */
export type Fields = Record<string, FieldValue>;

const encoder = new TextEncoder();

function formatValue(v: FieldValue): string {
  if (v === null || v === undefined) return "-";
  const s = String(v);
  return s === "" || /[\s"=\\]/.test(s) ? JSON.stringify(s) : s;
}

/** Formats one logfmt line (without the newline). */
export function formatLine(level: Level, event: string, fields: Fields, now = new Date()): string {
  let line = `ts=${now.toISOString()} level=${level} event=${event}`;
  for (const k in fields) {
    const v = fields[k];
    if (v !== undefined) line += ` ${k}=${formatValue(v)}`;
  }
  return line;
}

/** Writes log lines at or above a level. */
export class Logger {
  readonly level: Level;
  readonly #rank: number;
  readonly #write: (line: string) => void;

  /** `write` receives each finished line; by default it goes to stderr. */
  constructor(level: Level = "info", write?: (line: string) => void) {
    this.level = level;
    this.#rank = LEVELS.indexOf(level);
    this.#write = write ?? ((line) => {
      try {
        Deno.stderr.writeSync(encoder.encode(line + "\n"));
      } catch {
        // stderr closed: nothing sensible left to do with a log line
      }
    });
  }

  /** True when lines of `level` are written. */
  enabled(level: Level): boolean {
    return LEVELS.indexOf(level) <= this.#rank;
  }

  log(level: Level, event: string, fields: Fields = {}): void {
    if (this.enabled(level)) this.#write(formatLine(level, event, fields));
  }

  error(event: string, fields?: Fields): void {
    this.log("error", event, fields);
  }

  warn(event: string, fields?: Fields): void {
    this.log("warn", event, fields);
  }

  info(event: string, fields?: Fields): void {
    this.log("info", event, fields);
  }

  debug(event: string, fields?: Fields): void {
    this.log("debug", event, fields);
  }

  trace(event: string, fields?: Fields): void {
    this.log("trace", event, fields);
  }
}

interface LogClass {
  level: Level;
  event: string;
  key: Fields;
  total: number;
  unlogged: number;
  loggedAt: number;
}

/**
 * Events that can repeat without bound (dropped frames, unknown control messages, internal
 * errors): the first of each class is logged at once, the rest are counted and summarised
 * at most once per interval (SPEC 8: never a line each).
 */
export class ClassLog {
  readonly #log: Logger;
  readonly #intervalMs: number;
  readonly #now: () => number;
  readonly #classes = new Map<string, LogClass>();

  constructor(log: Logger, intervalMs = 10_000, now: () => number = () => performance.now()) {
    this.#log = log;
    this.#intervalMs = intervalMs;
    this.#now = now;
  }

  /**
   * Notes `n` occurrences of the class `event` + `key`. The first is logged with `key`,
   * `details` and `count`; later ones wait for {@linkcode ClassLog.flush}.
   */
  note(level: Level, event: string, key: Fields, details: Fields = {}, n = 1): void {
    let id = event;
    for (const k in key) id += `|${key[k]}`;
    const c = this.#classes.get(id);
    if (c !== undefined) {
      c.total += n;
      c.unlogged += n;
      return;
    }
    this.#classes.set(id, { level, event, key, total: n, unlogged: 0, loggedAt: this.#now() });
    this.#log.log(level, event, {
      ...key,
      ...details,
      count: n,
      note: `repeats are summarised every ${this.#intervalMs / 1000}s`,
    });
  }

  /** Occurrences of one class so far. */
  total(event: string, key: Fields): number {
    let id = event;
    for (const k in key) id += `|${key[k]}`;
    return this.#classes.get(id)?.total ?? 0;
  }

  /** Logs a summary line for each class with unlogged repeats (all of them when `final`). */
  flush(final = false): void {
    const now = this.#now();
    for (const c of this.#classes.values()) {
      if (c.unlogged === 0 || (!final && now - c.loggedAt < this.#intervalMs)) continue;
      this.#log.log(c.level, c.event, { ...c.key, count: c.unlogged, total: c.total });
      c.unlogged = 0;
      c.loggedAt = now;
    }
  }
}

/**
 * One warning that a peer can repeat without bound (a refused connection): the first is logged
 * at once, later ones at most once per interval, each line counting those not logged since
 * (`suppressed`).
 */
export class ThrottledWarning {
  readonly #log: Logger;
  readonly #event: string;
  readonly #intervalMs: number;
  readonly #now: () => number;
  #loggedAt = -Infinity;
  #suppressed = 0;

  constructor(
    log: Logger,
    event: string,
    intervalMs = 10_000,
    now: () => number = () => performance.now(),
  ) {
    this.#log = log;
    this.#event = event;
    this.#intervalMs = intervalMs;
    this.#now = now;
  }

  /** One occurrence, described by `fields`. */
  note(fields: Fields): void {
    const now = this.#now();
    if (now - this.#loggedAt < this.#intervalMs) {
      this.#suppressed++;
      return;
    }
    this.#log.warn(this.#event, { ...fields, suppressed: this.#suppressed || undefined });
    this.#loggedAt = now;
    this.#suppressed = 0;
  }
}
