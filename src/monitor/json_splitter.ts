/**
 * Splits a QMP input stream into its top-level JSON texts, as QEMU's json-streamer does: a
 * text ends where its outermost `{...}` or `[...]` closes (strings and escapes respected);
 * anything else at top level runs to the next whitespace and is handed on as it is, so the
 * caller can answer it with a parse error. A text nested deeper than QEMU's limit (1024) comes
 * out as one {@linkcode SplitError} with QEMU's words, and the rest of it is skipped.
 *
 * @module
 */

/** The longest text accepted; beyond it the stream is given up (QEMU: 64 MiB, ours: less). */
export const MAX_TEXT_CHARS = 1024 * 1024;

/**
 * Objects and arrays open at once beyond which a text is refused, as in QEMU's json-streamer
 * (MAX_NESTING): deeper values would overflow the stack of JSON.stringify and the like.
 */
export const MAX_NESTING = 1024;

/** Thrown by {@linkcode JsonSplitter.push} when one text exceeds {@linkcode MAX_TEXT_CHARS}. */
export class TextTooLong extends Error {}

/** A text refused by the splitter; `desc` is QEMU's wording for the QMP error. */
export class SplitError {
  constructor(readonly desc: string) {}
}

const WS = /\s/;

/** Whitespace between texts: as `\s`, the common ASCII cases without a regular expression. */
function isSpace(c: string): boolean {
  return c === " " || c === "\n" || c === "\r" || c === "\t" || (c > "\x7f" && WS.test(c));
}

/**
 * An unfinished text, as flat strings: slices of the chunks it came in, two neighbours joined
 * whenever the older is at most twice the newer's length, so at most about log2(length) of
 * them, and each character copied as often. Appended with `+=`, V8 keeps a string as a chain
 * of its pieces: about 32 bytes per character when a client sends one at a time (a red-team
 * run: 16 clients each holding 1000 KiB of an unfinished text took 530 MB).
 */
class Pieces {
  #parts: string[] = [];
  length = 0;

  add(piece: string): void {
    if (piece === "") return;
    const parts = this.#parts;
    parts.push(piece);
    this.length += piece.length;
    while (parts.length >= 2 && parts[parts.length - 2].length <= 2 * parts.at(-1)!.length) {
      const newer = parts.pop()!;
      parts.push([parts.pop()!, newer].join(""));
    }
  }

  /** All of it, and `last` after it; empty again. */
  take(last: string): string {
    const text = this.#parts.join("") + last;
    this.#parts = [];
    this.length = 0;
    return text;
  }
}

/** Accumulates characters and returns each complete top-level text. */
export class JsonSplitter {
  readonly #text = new Pieces();
  #depth = 0;
  #inString = false;
  #escaped = false;
  /** True while a bare (non-structured) token is being read at top level. */
  #bare = false;
  /**
   * True while the rest of a text nested too deep is skipped: its depth is still followed,
   * nothing is kept. QEMU starts parsing afresh there and answers each stray bracket with an
   * error of its own (thousands for one message); one error per text is enough.
   */
  #skipping = false;

  /** Adds `chunk`; returns the texts it completed, and errors for those refused, in order. */
  push(chunk: string): (string | SplitError)[] {
    const out: (string | SplitError)[] = [];
    // Where the current text's characters in `chunk` begin; -1: none are kept.
    let from = this.#bare || (this.#depth > 0 && !this.#skipping) ? 0 : -1;
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk[i];
      if (this.#depth === 0 && !this.#bare) {
        if (isSpace(c)) continue;
        from = i;
        if (c === "{" || c === "[") this.#depth = 1;
        else if (c === "}" || c === "]") {
          out.push(this.#take(chunk.slice(from, i + 1)));
          from = -1;
        } else this.#bare = true;
        continue;
      }
      if (this.#bare) {
        if (isSpace(c) || c === "{" || c === "[") {
          out.push(this.#take(chunk.slice(from, i)));
          from = -1;
          if (!isSpace(c)) {
            from = i;
            this.#depth = 1;
          }
          continue;
        }
      } else if (this.#inString) {
        if (this.#escaped) this.#escaped = false;
        else if (c === "\\") this.#escaped = true;
        else if (c === '"') this.#inString = false;
      } else if (c === '"') this.#inString = true;
      else if (c === "{" || c === "[") {
        if (++this.#depth > MAX_NESTING && !this.#skipping) {
          this.#skipping = true;
          this.#text.take("");
          from = -1;
          out.push(new SplitError("JSON nesting depth limit exceeded"));
        }
      } else if (c === "}" || c === "]") {
        if (--this.#depth === 0) {
          const skipped = this.#skipping;
          const text = this.#take(from < 0 ? "" : chunk.slice(from, i + 1));
          from = -1;
          if (!skipped) out.push(text);
        }
      }
      if (from >= 0 && this.#text.length + i + 1 - from > MAX_TEXT_CHARS) {
        this.#take("");
        throw new TextTooLong(`a JSON text longer than ${MAX_TEXT_CHARS} characters`);
      }
    }
    if (from >= 0) this.#text.add(chunk.slice(from));
    return out;
  }

  /** The text so far and its `last` characters; the splitter is at top level again. */
  #take(last: string): string {
    const t = this.#text.take(last);
    this.#depth = 0;
    this.#inString = false;
    this.#escaped = false;
    this.#bare = false;
    this.#skipping = false;
    return t;
  }
}
