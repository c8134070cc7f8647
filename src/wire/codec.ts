/**
 * The colo chardev framing (SPEC 3), QEMU's `SocketReadState`: every message is a u32
 * big-endian `len`, on packet streams with `--vnet-hdr-support` a u32 big-endian `vnet_len`,
 * then `len` bytes. Bytes may arrive split at any point.
 *
 * @module
 */

/** Largest valid `len`: a 64 KiB GSO frame plus room for Ethernet and virtio-net headers. */
export const NET_BUFSIZE = 4096 + 65536;

/** Receives the frames a {@linkcode FrameDecoder} finds. */
export interface FrameSink {
  /**
   * One complete frame: `bytes[at, at + size)`, where it lies (no view per frame, issue 11).
   * `bytes` is the chunk pushed, which lives as long as its owner keeps it (a read buffer is
   * reused for the next read: copy the frame first if it must live longer); or, for a frame
   * split across chunks, an array of the frame's own that the decoder never touches again.
   * `vnetLen` is 0 on streams without a vnet word. Returning true stops the chunk's decoding
   * after this frame (see {@linkcode FrameDecoder.stoppedAt}).
   */
  onFrame(bytes: Uint8Array, at: number, size: number, vnetLen: number): boolean | void;
  /**
   * Optional: `chunk[at, end)` starts with a `len` word. The sink may take the whole frames
   * that follow there at once, as `onFrame` would take them one by one, and returns where it
   * stopped (`at` when it took none); decoding goes on from there.
   */
  run?(chunk: Uint8Array, at: number, end: number): number;
}

/** Why a stream could not be decoded any further. */
export interface OversizeError {
  /** The offending `len` word. */
  len: number;
}

const STATE_LEN = 0;
const STATE_VNET = 1;
const STATE_DATA = 2;

/**
 * Incremental decoder for one connection. A complete frame that lies inside one chunk is
 * handed out where it lies in that chunk (no copy, no view); only frames split across chunks
 * are assembled, each in an array of its own (at most one per chunk).
 */
export class FrameDecoder {
  readonly #vnet: boolean;
  readonly #sink: FrameSink;
  /** The sink takes runs of frames (`FrameSink.run`). */
  readonly #runs: boolean;
  #state = STATE_LEN;
  #word = 0;
  #wordBytes = 0;
  #len = 0;
  #vnetLen = 0;
  /** The split frame being assembled, `#fill` bytes of it so far. */
  #buf: Uint8Array = EMPTY;
  #fill = 0;
  /**
   * Where the last `push` stopped because the sink asked it to: the rest of that chunk,
   * `chunk[stoppedAt, end)`, starts with a `len` word and is not decoded yet. -1 when the
   * whole chunk was.
   */
  stoppedAt = -1;

  /** `vnet`: the stream carries a `vnet_len` word after every `len`. */
  constructor(sink: FrameSink, vnet: boolean) {
    this.#sink = sink;
    this.#vnet = vnet;
    this.#runs = sink.run !== undefined;
  }

  /** True when the decoder holds part of a frame (a peer leaving now loses that frame). */
  get midFrame(): boolean {
    return this.#state !== STATE_LEN || this.#wordBytes !== 0;
  }

  /** Forgets any partial frame: the next byte starts a new `len` word. */
  reset(): void {
    this.#state = STATE_LEN;
    this.#word = 0;
    this.#wordBytes = 0;
    this.#fill = 0;
    this.#buf = EMPTY;
  }

  /**
   * Feeds one chunk, `chunk[start, end)`. Calls the sink for every frame completed by it and
   * returns `null`, or returns the oversize `len` that breaks the stream (the rest of the
   * chunk is not read). `end` spares a read loop a view per read (issue 11). A sink that
   * returns true stops it early: see {@linkcode FrameDecoder.stoppedAt}.
   */
  push(chunk: Uint8Array, end: number = chunk.length, start = 0): OversizeError | null {
    const n = end;
    let i = start;
    this.stoppedAt = -1;
    while (i < n) {
      if (this.#state === STATE_DATA) {
        const want = this.#len - this.#fill;
        const take = n - i < want ? n - i : want;
        if (this.#fill === 0 && take === this.#len) {
          // The whole frame is in this chunk: hand it out where it lies.
          i += take;
          this.#state = STATE_LEN;
          if (this.#sink.onFrame(chunk, i - take, take, this.#vnetLen) === true && i < n) {
            this.stoppedAt = i;
            return null;
          }
          continue;
        }
        // Its own array, not a reused one: the sink may keep the frame where it lies.
        if (this.#fill === 0) this.#buf = new Uint8Array(this.#len);
        const buf = this.#buf;
        buf.set(chunk.subarray(i, i + take), this.#fill);
        this.#fill += take;
        i += take;
        if (this.#fill === this.#len) {
          this.#fill = 0;
          this.#buf = EMPTY;
          this.#state = STATE_LEN;
          if (this.#sink.onFrame(buf, 0, this.#len, this.#vnetLen) === true && i < n) {
            this.stoppedAt = i;
            return null;
          }
        }
        continue;
      }
      if (this.#state === STATE_LEN && this.#wordBytes === 0 && this.#runs) {
        i = this.#sink.run!(chunk, i, n);
        if (i >= n) break;
      }
      // Collect a 4-byte big-endian word; the common case reads it in one go.
      if (this.#wordBytes === 0 && n - i >= 4) {
        this.#word = wordAt(chunk, i);
        i += 4;
      } else {
        this.#word = ((this.#word << 8) | chunk[i++]) >>> 0;
        if (++this.#wordBytes < 4) continue;
        this.#wordBytes = 0;
      }
      if (this.#state === STATE_LEN) {
        const len = this.#word;
        if (len > NET_BUFSIZE) {
          this.reset();
          return { len };
        }
        this.#len = len;
        this.#vnetLen = 0;
        if (this.#vnet) {
          this.#state = STATE_VNET;
        } else if (len === 0) {
          this.#sink.onFrame(EMPTY, 0, 0, 0);
        } else {
          this.#state = STATE_DATA;
        }
      } else {
        this.#vnetLen = this.#word;
        if (this.#len === 0) {
          this.#state = STATE_LEN;
          this.#sink.onFrame(EMPTY, 0, 0, this.#vnetLen);
        } else {
          this.#state = STATE_DATA;
        }
      }
    }
    return null;
  }
}

const EMPTY = new Uint8Array(0);

/** The big-endian 32-bit word at `at` of `bytes`: a framing word (`len`, `vnet_len`). */
export function wordAt(bytes: Uint8Array, at: number): number {
  return ((bytes[at] << 24) | (bytes[at + 1] << 16) | (bytes[at + 2] << 8) | bytes[at + 3]) >>> 0;
}

/** Bytes of framing before a frame of a stream: 4, or 8 with a vnet word. */
export function headerSize(vnet: boolean): number {
  return vnet ? 8 : 4;
}

/**
 * Writes the framing words for a `len`-byte frame at `at` in `out` and returns the offset of
 * the frame bytes.
 */
export function writeHeader(
  out: Uint8Array,
  at: number,
  len: number,
  vnet: boolean,
  vnetLen: number,
): number {
  out[at] = len >>> 24;
  out[at + 1] = len >>> 16;
  out[at + 2] = len >>> 8;
  out[at + 3] = len;
  if (!vnet) return at + 4;
  out[at + 4] = vnetLen >>> 24;
  out[at + 5] = vnetLen >>> 16;
  out[at + 6] = vnetLen >>> 8;
  out[at + 7] = vnetLen;
  return at + 8;
}

/** One framed message as a new array (for small control messages and tests). */
export function encodeFrame(frame: Uint8Array, vnet = false, vnetLen = 0): Uint8Array {
  const out = new Uint8Array(headerSize(vnet) + frame.length);
  out.set(frame, writeHeader(out, 0, frame.length, vnet, vnetLen));
  return out;
}
