/**
 * Bytes received but not yet read, in one buffer of our own: what a TLS socket decrypts while
 * no read is waiting (src/wire/tls.ts). Appending copies; the buffer grows as needed (the
 * transport stops reading at its high-water mark, so the size stays bounded), and a large one
 * is let go once emptied.
 *
 * @module
 */

/** The smallest buffer made. */
const MIN_BYTES = 64 * 1024;
/**
 * An emptied buffer up to this size is kept for the next bytes; a larger one is let go. A
 * user that stops appending well below it makes one buffer, never garbage.
 */
export const BACKLOG_KEEP_BYTES = 256 * 1024;

/** A FIFO of bytes: `push` copies in, `take` copies out. */
export class ByteBacklog {
  #buf: Uint8Array | null = null;
  #head = 0;
  #tail = 0;

  /** Bytes held. */
  get length(): number {
    return this.#tail - this.#head;
  }

  /** Bytes of buffer held, used or not. */
  get capacity(): number {
    return this.#buf?.length ?? 0;
  }

  /** Appends `src[from, to)`. */
  push(src: Uint8Array, from: number, to: number): void {
    const n = to - from;
    if (n <= 0) return;
    let buf = this.#buf;
    if (buf === null || this.#tail + n > buf.length) {
      const live = this.#tail - this.#head;
      if (buf !== null && live + n <= buf.length) {
        buf.copyWithin(0, this.#head, this.#tail);
      } else {
        let size = Math.max(MIN_BYTES, buf?.length ?? 0);
        while (size < live + n) size *= 2;
        const grown = new Uint8Array(size);
        if (buf !== null) grown.set(buf.subarray(this.#head, this.#tail));
        this.#buf = buf = grown;
      }
      this.#head = 0;
      this.#tail = live;
    }
    buf.set(src.subarray(from, to), this.#tail);
    this.#tail += n;
  }

  /** Moves as many bytes as fit into `p`, oldest first; returns how many. */
  take(p: Uint8Array): number {
    const buf = this.#buf;
    const n = Math.min(p.length, this.#tail - this.#head);
    if (buf === null || n === 0) return 0;
    p.set(buf.subarray(this.#head, this.#head + n));
    this.#head += n;
    if (this.#head === this.#tail) {
      this.#head = this.#tail = 0;
      if (buf.length > BACKLOG_KEEP_BYTES) this.#buf = null;
    }
    return n;
  }
}
