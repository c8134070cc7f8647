/**
 * QMP's framing read from a byte stream: one JSON value per line. Shared by the scripted QMP
 * peer, the test QMP client and the lab's QMP client.
 *
 * @module
 */

/** Splits bytes, as they arrive, into parsed JSON values, one per non-empty line. */
export class JsonLines {
  readonly #decoder = new TextDecoder();
  #rest = "";

  /** Takes the next bytes; returns the values of the lines they complete, in order. */
  push(bytes: Uint8Array): unknown[] {
    this.#rest += this.#decoder.decode(bytes, { stream: true });
    const values: unknown[] = [];
    let nl;
    while ((nl = this.#rest.indexOf("\n")) >= 0) {
      const line = this.#rest.slice(0, nl).trim();
      this.#rest = this.#rest.slice(nl + 1);
      if (line !== "") values.push(JSON.parse(line));
    }
    return values;
  }
}
