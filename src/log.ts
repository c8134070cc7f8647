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

/** Empty, or with whitespace, `"`, `=`, `\` or a control character in it. */
function needsQuotes(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c <= 0x20 || (c >= 0x7f && c <= 0x9f) || c === 0x22 || c === 0x3d || c === 0x5c) {
      return true;
    }
  }
  return s === "" || /\s/.test(s);
}

function formatValue(v: FieldValue): string {
  if (v === null || v === undefined) return "-";
  const s = String(v);
  if (!needsQuotes(s)) return s;
  // Quoted, and control characters escaped: a peer's ESC, BEL or NUL never reaches a
  // terminal or a log reader raw (JSON escapes those below 0x20, not DEL and C1).
  return JSON.stringify(s).replace(
    /[\x7f-\x9f]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
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

/** Classes a {@linkcode ClassLog} tells apart; later ones are counted together (SPEC 8). */
export const MAX_LOG_CLASSES = 256;

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
    if (this.#classes.size >= MAX_LOG_CLASSES && !this.#classes.has(id)) {
      // Classes past the bound (an internal error's message that names a changing value)
      // share one per event.
      key = { class: "other" };
      id = `${event}|other`;
    }
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
 * One line that a peer or a client can repeat without bound (a refused connection, a changed
 * property, a COLO flap): the first `burst` of each interval are logged at once, the rest
 * counted; the next line logged says how many were not (`suppressed`), and so does
 * {@linkcode ThrottledWarning.flush} once their interval is over, so a burst followed by
 * silence is still accounted for.
 */
export class ThrottledWarning {
  readonly #log: Logger;
  readonly #event: string;
  readonly #intervalMs: number;
  readonly #now: () => number;
  readonly #level: Level;
  readonly #burst: number;
  readonly #key: Fields;
  readonly #overflow: Level | null;
  /** When the current interval began, and how many lines were logged in it. */
  #windowAt = -Infinity;
  #logged = 0;
  #suppressed = 0;

  /**
   * `options`: `level` (default warn), `burst` (lines per interval, default 1), `key` (fields
   * on every line, the summary's too: which class it counts), `overflow` (a level the lines past
   * the burst are still written at, where it is enabled: `--log-level debug` shows each one;
   * counted all the same).
   */
  constructor(
    log: Logger,
    event: string,
    intervalMs = 10_000,
    now: () => number = () => performance.now(),
    options: { level?: Level; burst?: number; key?: Fields; overflow?: Level } = {},
  ) {
    this.#log = log;
    this.#event = event;
    this.#intervalMs = intervalMs;
    this.#now = now;
    this.#level = options.level ?? "warn";
    this.#burst = options.burst ?? 1;
    this.#key = options.key ?? {};
    this.#overflow = options.overflow ?? null;
  }

  /** One occurrence, described by `fields`; true when it was logged. */
  note(fields: Fields): boolean {
    const now = this.#now();
    if (now - this.#windowAt >= this.#intervalMs) {
      this.#windowAt = now;
      this.#logged = 0;
    }
    if (this.#logged >= this.#burst) {
      this.#suppressed++;
      if (this.#overflow !== null) {
        this.#log.log(this.#overflow, this.#event, { ...this.#key, ...fields });
      }
      return false;
    }
    this.#logged++;
    this.#log.log(this.#level, this.#event, {
      ...this.#key,
      ...fields,
      suppressed: this.#suppressed || undefined,
    });
    this.#suppressed = 0;
    return true;
  }

  /** Occurrences not logged yet. */
  get suppressed(): number {
    return this.#suppressed;
  }

  /** Ms until {@linkcode ThrottledWarning.flush} would log the count (0: now). */
  get summaryDueInMs(): number {
    return Math.max(0, this.#windowAt + this.#intervalMs - this.#now());
  }

  /** Logs how many were not logged, once the interval they fell in is over (or when `final`). */
  flush(final = false): void {
    if (this.#suppressed === 0) return;
    const now = this.#now();
    if (!final && now - this.#windowAt < this.#intervalMs) return;
    this.#log.log(this.#level, this.#event, {
      ...this.#key,
      suppressed: this.#suppressed,
      note: `counted, not logged: at most ${this.#burst} per ${this.#intervalMs / 1000}s`,
    });
    this.#suppressed = 0;
    // The summary is this interval's line: what follows at once is counted for the next one.
    this.#windowAt = now;
    this.#logged = this.#burst;
  }
}

/**
 * Failed writes to a peer (`event=write-failed`): at most 20 lines per 10 s per endpoint, then a
 * count (the rest at debug). A peer that connects, sends and resets in a loop fails a write each
 * time, and must not grow the log by a line each (SPEC 8).
 */
export function writeFailedLines(log: Logger, endpoint: string): ThrottledWarning {
  return new ThrottledWarning(log, "write-failed", 10_000, undefined, {
    burst: 20,
    overflow: "debug",
    key: { endpoint },
  });
}
