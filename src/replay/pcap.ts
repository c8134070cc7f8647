/**
 * Reads capture files for `colo-compare replay` (SPEC 12): classic pcap (either byte order,
 * microsecond or nanosecond timestamps; QEMU's `filter-dump` writes this) and pcapng (every
 * section in its own byte order, `if_tsresol` and `if_tsoffset` honoured). Ethernet only.
 * Frames are read one at a time through one reused buffer, so a capture of any size replays
 * in little memory.
 *
 * @module
 */

/** One captured frame. */
export interface CapturedFrame {
  /** Capture time in milliseconds since the epoch. */
  timeMs: number;
  /** The Ethernet frame as captured (a view: valid until the next frame is read). */
  data: Uint8Array;
  /** True when the capture kept fewer bytes than the frame had (snap length). */
  truncated: boolean;
}

/** Frames one at a time; `null` at the end. */
export interface FrameSource {
  next(): Promise<CapturedFrame | null>;
}

/** A file that is not a capture this reader understands; `message` says why. */
export class CaptureFormatError extends Error {}

/** Reads into `buf`; the number of bytes, or null at the end (as `Deno.FsFile.read`). */
export type Read = (buf: Uint8Array) => Promise<number | null>;

const LINKTYPE_ETHERNET = 1;
const PCAPNG_SHB = 0x0a0d0d0a;
/** A block or record larger than this is not a capture of Ethernet frames. */
const MAX_RECORD = 16 * 1024 * 1024;
/**
 * Interfaces one pcapng section may describe (each is kept until the section ends): more is a
 * damaged or hostile file, whose 20-byte descriptions would otherwise grow the reader without
 * bound (~90 bytes each).
 */
export const MAX_INTERFACES = 65536;
/**
 * The least total length of the pcapng blocks read, by type: their fixed fields and both length
 * words (a shorter one made the reader take its fields from the next block, or past the end).
 */
const MIN_BLOCK: Record<number, number> = {
  [PCAPNG_SHB]: 28,
  1: 20, // interface description
  2: 32, // packet (obsolete)
  3: 16, // simple packet
  6: 32, // enhanced packet
};

/** Capture time of a timestamp counted in `1 / unitsPerSecond` seconds, in ms (exact split). */
function toMs(ts: bigint, unitsPerSecond: bigint, offsetSeconds = 0n): number {
  const seconds = ts / unitsPerSecond + offsetSeconds;
  const rest = ts % unitsPerSecond;
  return Number(seconds) * 1000 + (Number(rest) * 1000) / Number(unitsPerSecond);
}

interface Interface {
  linktype: number;
  unitsPerSecond: bigint;
  offsetSeconds: bigint;
}

/** Reads pcap or pcapng (detected by the magic number) from a byte stream. */
export class CaptureReader implements FrameSource {
  readonly #read: Read;
  #buf = new Uint8Array(256 * 1024);
  #view = new DataView(this.#buf.buffer);
  #start = 0;
  #end = 0;
  #eof = false;
  #format: "pcap" | "pcapng" | null = null;
  #le = true;
  /** pcap: timestamp units per second. */
  #units = 1_000_000n;
  /** pcapng: the interfaces of the current section, and the last timestamp seen. */
  #interfaces: Interface[] = [];
  #lastTime = 0;

  constructor(read: Read) {
    this.#read = read;
  }

  /** A reader over bytes already in memory. */
  static fromBytes(bytes: Uint8Array): CaptureReader {
    let at = 0;
    return new CaptureReader((buf) => {
      if (at >= bytes.length) return Promise.resolve(null);
      const n = Math.min(buf.length, bytes.length - at);
      buf.set(bytes.subarray(at, at + n));
      at += n;
      return Promise.resolve(n);
    });
  }

  /** Makes `n` bytes from the current position available; false when the stream ends first. */
  async #fill(n: number): Promise<boolean> {
    if (this.#end - this.#start >= n) return true;
    if (n > this.#buf.length) {
      const bigger = new Uint8Array(Math.max(n, this.#buf.length * 2));
      bigger.set(this.#buf.subarray(this.#start, this.#end));
      this.#end -= this.#start;
      this.#start = 0;
      this.#buf = bigger;
      this.#view = new DataView(bigger.buffer);
    } else if (this.#start > 0) {
      this.#buf.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    while (this.#end - this.#start < n && !this.#eof) {
      const got = await this.#read(this.#buf.subarray(this.#end));
      if (got === null) this.#eof = true;
      else this.#end += got;
    }
    return this.#end - this.#start >= n;
  }

  async next(): Promise<CapturedFrame | null> {
    if (this.#format === null) await this.#header();
    return this.#format === "pcap" ? await this.#nextPcap() : await this.#nextPcapng();
  }

  async #header(): Promise<void> {
    if (!(await this.#fill(4))) {
      throw new CaptureFormatError("too short to be a pcap or pcapng file");
    }
    const v = this.#view;
    if (v.getUint32(this.#start, false) === PCAPNG_SHB) {
      this.#format = "pcapng";
      return;
    }
    const magic = v.getUint32(this.#start, true);
    if (magic === 0xa1b2c3d4) [this.#le, this.#units] = [true, 1_000_000n];
    else if (magic === 0xa1b23c4d) [this.#le, this.#units] = [true, 1_000_000_000n];
    else if (magic === 0xd4c3b2a1) [this.#le, this.#units] = [false, 1_000_000n];
    else if (magic === 0x4d3cb2a1) [this.#le, this.#units] = [false, 1_000_000_000n];
    else throw new CaptureFormatError("not a pcap or pcapng file (unknown magic number)");
    if (!(await this.#fill(24))) throw new CaptureFormatError("pcap header truncated");
    const linktype = v.getUint32(this.#start + 20, this.#le) & 0xffff;
    if (linktype !== LINKTYPE_ETHERNET) {
      throw new CaptureFormatError(`link type ${linktype} is not Ethernet (1)`);
    }
    this.#start += 24;
    this.#format = "pcap";
  }

  async #nextPcap(): Promise<CapturedFrame | null> {
    // A file cut short mid-record ends with the last whole record.
    if (!(await this.#fill(16))) return null;
    const le = this.#le;
    let at = this.#start;
    const sec = this.#view.getUint32(at, le);
    const frac = this.#view.getUint32(at + 4, le);
    const caplen = this.#view.getUint32(at + 8, le);
    const origlen = this.#view.getUint32(at + 12, le);
    if (caplen > MAX_RECORD) throw new CaptureFormatError(`a record of ${caplen} bytes`);
    if (!(await this.#fill(16 + caplen))) return null;
    at = this.#start + 16;
    this.#start = at + caplen;
    return {
      timeMs: toMs(BigInt(sec) * this.#units + BigInt(frac), this.#units),
      data: this.#buf.subarray(at, at + caplen),
      truncated: caplen < origlen,
    };
  }

  async #nextPcapng(): Promise<CapturedFrame | null> {
    while (await this.#fill(12)) {
      const v = this.#view;
      const at = this.#start;
      const type = v.getUint32(at, this.#le);
      if (type === PCAPNG_SHB) {
        // Section header: its byte-order magic decides how this section is read.
        const bom = v.getUint32(at + 8, true);
        if (bom === 0x1a2b3c4d) this.#le = true;
        else if (bom === 0x4d3c2b1a) this.#le = false;
        else throw new CaptureFormatError("pcapng section header with a bad byte-order magic");
        this.#interfaces = [];
      }
      const total = v.getUint32(at + 4, this.#le);
      if (total < 12 || total % 4 !== 0 || total > MAX_RECORD) {
        throw new CaptureFormatError(`pcapng block of ${total} bytes`);
      }
      const least = MIN_BLOCK[type] ?? 12;
      if (total < least) {
        throw new CaptureFormatError(
          `pcapng block of type ${type} and ${total} bytes (at least ${least})`,
        );
      }
      if (!(await this.#fill(total))) return null;
      const trailer = this.#view.getUint32(this.#start + total - 4, this.#le);
      if (trailer !== total) {
        throw new CaptureFormatError(`pcapng block of ${total} bytes whose end says ${trailer}`);
      }
      const frame = this.#block(type, this.#start, total);
      this.#start += total;
      if (frame !== null) return frame;
    }
    return null;
  }

  /** One whole pcapng block at `at`: a frame, or null for blocks that carry none. */
  #block(type: number, at: number, total: number): CapturedFrame | null {
    const v = this.#view;
    const le = this.#le;
    const body = at + 8;
    const end = at + total - 4;
    if (type === 1) {
      if (this.#interfaces.length >= MAX_INTERFACES) {
        throw new CaptureFormatError(
          `more than ${MAX_INTERFACES} interfaces in one pcapng section`,
        );
      }
      const iface: Interface = {
        linktype: v.getUint16(body, le),
        unitsPerSecond: 1_000_000n,
        offsetSeconds: 0n,
      };
      for (let o = body + 8; o + 4 <= end;) {
        const code = v.getUint16(o, le);
        const len = v.getUint16(o + 2, le);
        // The end of options, or one that runs past its block: the rest is not read.
        if (code === 0 || o + 4 + len > end) break;
        if (code === 9 && len >= 1) {
          const r = this.#buf[o + 4];
          iface.unitsPerSecond = (r & 0x80) ? 1n << BigInt(r & 0x7f) : 10n ** BigInt(r);
        } else if (code === 14 && len >= 8) {
          iface.offsetSeconds = v.getBigInt64(o + 4, le);
        }
        o += 4 + ((len + 3) & ~3);
      }
      this.#interfaces.push(iface);
      return null;
    }
    if (type === 6 || type === 2) {
      // Enhanced packet block, or the obsolete packet block (16-bit interface id).
      const id = type === 6 ? v.getUint32(body, le) : v.getUint16(body, le);
      const iface = this.#interfaces[id];
      if (iface === undefined) {
        throw new CaptureFormatError(`pcapng packet on interface ${id}, which is not described`);
      }
      if (iface.linktype !== LINKTYPE_ETHERNET) {
        throw new CaptureFormatError(`link type ${iface.linktype} is not Ethernet (1)`);
      }
      const ts = (BigInt(v.getUint32(body + 4, le)) << 32n) | BigInt(v.getUint32(body + 8, le));
      const caplen = v.getUint32(body + 12, le);
      const origlen = v.getUint32(body + 16, le);
      this.#lastTime = toMs(ts, iface.unitsPerSecond, iface.offsetSeconds);
      return {
        timeMs: this.#lastTime,
        data: this.#buf.subarray(body + 20, Math.min(body + 20 + caplen, end)),
        truncated: caplen < origlen,
      };
    }
    if (type === 3) {
      // Simple packet block: no timestamp; it was captured after the previous packet.
      const origlen = v.getUint32(body, le);
      const caplen = Math.min(origlen, end - body - 4);
      return {
        timeMs: this.#lastTime,
        data: this.#buf.subarray(body + 4, body + 4 + caplen),
        truncated: caplen < origlen,
      };
    }
    return null;
  }
}

/** Every frame of a capture in memory, each with its own copy of the bytes. */
export async function readCapture(bytes: Uint8Array): Promise<CapturedFrame[]> {
  const reader = CaptureReader.fromBytes(bytes);
  const frames: CapturedFrame[] = [];
  for (let f = await reader.next(); f !== null; f = await reader.next()) {
    frames.push({ ...f, data: f.data.slice() });
  }
  return frames;
}

/** A source over frames already in memory. */
export function arraySource(frames: readonly CapturedFrame[]): FrameSource {
  let i = 0;
  return { next: () => Promise.resolve(i < frames.length ? frames[i++] : null) };
}
