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

/** Accumulates characters and returns each complete top-level text. */
export class JsonSplitter {
  #text = "";
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
    for (const c of chunk) {
      if (this.#depth === 0 && !this.#bare) {
        if (WS.test(c)) continue;
        this.#text = c;
        if (c === "{" || c === "[") this.#depth = 1;
        else if (c === "}" || c === "]") out.push(this.#take());
        else this.#bare = true;
        continue;
      }
      if (this.#bare) {
        if (WS.test(c) || c === "{" || c === "[") {
          out.push(this.#take());
          if (!WS.test(c)) {
            this.#text = c;
            this.#depth = 1;
          }
          continue;
        }
        this.#text += c;
      } else {
        if (!this.#skipping) this.#text += c;
        if (this.#inString) {
          if (this.#escaped) this.#escaped = false;
          else if (c === "\\") this.#escaped = true;
          else if (c === '"') this.#inString = false;
        } else if (c === '"') this.#inString = true;
        else if (c === "{" || c === "[") {
          if (++this.#depth > MAX_NESTING && !this.#skipping) {
            this.#skipping = true;
            this.#text = "";
            out.push(new SplitError("JSON nesting depth limit exceeded"));
          }
        } else if (c === "}" || c === "]") {
          if (--this.#depth === 0) {
            const skipped = this.#skipping;
            const text = this.#take();
            if (!skipped) out.push(text);
          }
        }
      }
      if (this.#text.length > MAX_TEXT_CHARS) {
        this.#take();
        throw new TextTooLong(`a JSON text longer than ${MAX_TEXT_CHARS} characters`);
      }
    }
    return out;
  }

  #take(): string {
    const t = this.#text;
    this.#text = "";
    this.#depth = 0;
    this.#inString = false;
    this.#escaped = false;
    this.#bare = false;
    this.#skipping = false;
    return t;
  }
}
