/**
 * Reads capture files for `colo-compare replay` (SPEC 12): classic pcap (either byte order,
 * microsecond or nanosecond timestamps; QEMU's `filter-dump` writes this) and pcapng (every
 * section in its own byte order, `if_tsresol` and `if_tsoffset` honoured). Ethernet only.
 *
 * @module
 */

/** One captured frame. */
export interface CapturedFrame {
  /** Capture time in milliseconds since the epoch. */
  timeMs: number;
  /** The Ethernet frame as captured (a view into the file's bytes). */
  data: Uint8Array;
  /** True when the capture kept fewer bytes than the frame had (snap length). */
  truncated: boolean;
}

/** A file that is not a capture this reader understands; `message` says why. */
export class CaptureFormatError extends Error {}

const LINKTYPE_ETHERNET = 1;

/** Capture time of a timestamp counted in `1 / unitsPerSecond` seconds, in ms (exact split). */
function toMs(ts: bigint, unitsPerSecond: bigint, offsetSeconds = 0n): number {
  const seconds = ts / unitsPerSecond + offsetSeconds;
  const rest = ts % unitsPerSecond;
  return Number(seconds) * 1000 + (Number(rest) * 1000) / Number(unitsPerSecond);
}

/** Parses a whole capture file (pcap or pcapng, detected by its magic number). */
export function readCapture(bytes: Uint8Array): CapturedFrame[] {
  if (bytes.length < 4) throw new CaptureFormatError("too short to be a pcap or pcapng file");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0, false);
  if (magic === 0x0a0d0d0a) return readPcapng(bytes, view);
  return readPcap(bytes, view);
}

function readPcap(bytes: Uint8Array, view: DataView): CapturedFrame[] {
  const magic = view.getUint32(0, true);
  let le: boolean;
  let units: bigint;
  if (magic === 0xa1b2c3d4) [le, units] = [true, 1_000_000n];
  else if (magic === 0xa1b23c4d) [le, units] = [true, 1_000_000_000n];
  else if (magic === 0xd4c3b2a1) [le, units] = [false, 1_000_000n];
  else if (magic === 0x4d3cb2a1) [le, units] = [false, 1_000_000_000n];
  else throw new CaptureFormatError("not a pcap or pcapng file (unknown magic number)");
  if (bytes.length < 24) throw new CaptureFormatError("pcap header truncated");
  const linktype = view.getUint32(20, le) & 0xffff;
  if (linktype !== LINKTYPE_ETHERNET) {
    throw new CaptureFormatError(`link type ${linktype} is not Ethernet (1)`);
  }
  const frames: CapturedFrame[] = [];
  let at = 24;
  while (at + 16 <= bytes.length) {
    const sec = view.getUint32(at, le);
    const frac = view.getUint32(at + 4, le);
    const caplen = view.getUint32(at + 8, le);
    const origlen = view.getUint32(at + 12, le);
    at += 16;
    if (at + caplen > bytes.length) break; // a file cut short mid-record: keep what is whole
    frames.push({
      timeMs: toMs(BigInt(sec) * units + BigInt(frac), units),
      data: bytes.subarray(at, at + caplen),
      truncated: caplen < origlen,
    });
    at += caplen;
  }
  return frames;
}

interface Interface {
  linktype: number;
  unitsPerSecond: bigint;
  offsetSeconds: bigint;
}

function readPcapng(bytes: Uint8Array, view: DataView): CapturedFrame[] {
  const frames: CapturedFrame[] = [];
  let le = true;
  let interfaces: Interface[] = [];
  let lastTime = 0;
  let at = 0;
  while (at + 12 <= bytes.length) {
    const type = view.getUint32(at, le);
    if (type === 0x0a0d0d0a) {
      // Section header: its byte-order magic decides how this section is read.
      const bom = view.getUint32(at + 8, true);
      if (bom === 0x1a2b3c4d) le = true;
      else if (bom === 0x4d3c2b1a) le = false;
      else throw new CaptureFormatError("pcapng section header with a bad byte-order magic");
      interfaces = [];
    }
    const total = view.getUint32(at + 4, le);
    if (total < 12 || total % 4 !== 0 || at + total > bytes.length) break;
    const body = at + 8;
    const end = at + total - 4;
    if (type === 1) {
      const iface: Interface = {
        linktype: view.getUint16(body, le),
        unitsPerSecond: 1_000_000n,
        offsetSeconds: 0n,
      };
      for (const [code, o, len] of options(view, body + 8, end, le)) {
        if (code === 9 && len >= 1) {
          const r = bytes[o];
          iface.unitsPerSecond = (r & 0x80) ? 1n << BigInt(r & 0x7f) : 10n ** BigInt(r);
        } else if (code === 14 && len >= 8) {
          iface.offsetSeconds = view.getBigInt64(o, le);
        }
      }
      interfaces.push(iface);
    } else if (type === 6 || type === 2) {
      // Enhanced packet block, or the obsolete packet block (16-bit interface id).
      const id = type === 6 ? view.getUint32(body, le) : view.getUint16(body, le);
      const iface = interfaces[id];
      if (iface === undefined) {
        throw new CaptureFormatError(`pcapng packet on interface ${id}, which is not described`);
      }
      if (iface.linktype !== LINKTYPE_ETHERNET) {
        throw new CaptureFormatError(`link type ${iface.linktype} is not Ethernet (1)`);
      }
      const ts = (BigInt(view.getUint32(body + 4, le)) << 32n) |
        BigInt(view.getUint32(body + 8, le));
      const caplen = view.getUint32(body + 12, le);
      const origlen = view.getUint32(body + 16, le);
      lastTime = toMs(ts, iface.unitsPerSecond, iface.offsetSeconds);
      frames.push({
        timeMs: lastTime,
        data: bytes.subarray(body + 20, Math.min(body + 20 + caplen, end)),
        truncated: caplen < origlen,
      });
    } else if (type === 3) {
      // Simple packet block: no timestamp; it was captured after the previous packet.
      const origlen = view.getUint32(body, le);
      const caplen = Math.min(origlen, end - body - 4);
      frames.push({
        timeMs: lastTime,
        data: bytes.subarray(body + 4, body + 4 + caplen),
        truncated: caplen < origlen,
      });
    }
    at += total;
  }
  return frames;
}

/** The options of a block body: [code, value offset, value length]. */
function* options(
  view: DataView,
  at: number,
  end: number,
  le: boolean,
): Generator<[number, number, number]> {
  while (at + 4 <= end) {
    const code = view.getUint16(at, le);
    const len = view.getUint16(at + 2, le);
    if (code === 0) return;
    yield [code, at + 4, len];
    at += 4 + ((len + 3) & ~3);
  }
}
