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
