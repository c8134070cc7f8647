/**
 * A pcapng writer (the format of Wireshark and tshark): a section header, one interface per
 * input, and enhanced packet blocks that carry a comment each. Blocks are built as bytes; the
 * caller decides where they go.
 *
 * @module
 */

/** pcapng block types. */
const SHB = 0x0a0d0d0a;
const IDB = 0x00000001;
const EPB = 0x00000006;
const BYTE_ORDER_MAGIC = 0x1a2b3c4d;
/** Option codes. */
const OPT_ENDOFOPT = 0;
const OPT_COMMENT = 1;
const IF_NAME = 2;
const IF_TSRESOL = 9;
/** LINKTYPE_ETHERNET. */
export const LINKTYPE_ETHERNET = 1;

const encoder = new TextEncoder();

const pad4 = (n: number) => (n + 3) & ~3;

/** One option: code, then the value (padded to 4 bytes when written). */
type Option = [code: number, value: Uint8Array];

function optionsLength(options: Option[]): number {
  let n = options.length > 0 ? 4 : 0; // opt_endofopt
  for (const [, v] of options) n += 4 + pad4(v.length);
  return n;
}

function writeOptions(view: DataView, at: number, options: Option[]): number {
  if (options.length === 0) return at;
  const bytes = new Uint8Array(view.buffer, view.byteOffset);
  for (const [code, value] of options) {
    view.setUint16(at, code, true);
    view.setUint16(at + 2, value.length, true);
    bytes.set(value, at + 4);
    at += 4 + pad4(value.length);
  }
  view.setUint16(at, OPT_ENDOFOPT, true);
  view.setUint16(at + 2, 0, true);
  return at + 4;
}

/** A block: type, total length, `body` bytes (written by `fill`), options, total length. */
function block(
  type: number,
  bodyLength: number,
  options: Option[],
  fill: (view: DataView, bytes: Uint8Array) => void,
): Uint8Array {
  const total = 12 + pad4(bodyLength) + optionsLength(options);
  const bytes = new Uint8Array(total);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, type, true);
  view.setUint32(4, total, true);
  fill(new DataView(bytes.buffer, 8), bytes.subarray(8));
  writeOptions(view, 8 + pad4(bodyLength), options);
  view.setUint32(total - 4, total, true);
  return bytes;
}

/** The section header block that starts a file (little-endian, section length unknown). */
export function sectionHeader(application: string): Uint8Array {
  // shb_userappl is option 4.
  return block(SHB, 16, [[4, encoder.encode(application)]], (v) => {
    v.setUint32(0, BYTE_ORDER_MAGIC, true);
    v.setUint16(4, 1, true);
    v.setUint16(6, 0, true);
    v.setBigInt64(8, -1n, true);
  });
}

/** An Ethernet interface with a name; timestamps in microseconds (if_tsresol 6). */
export function interfaceDescription(name: string): Uint8Array {
  return block(IDB, 8, [[IF_NAME, encoder.encode(name)], [IF_TSRESOL, Uint8Array.of(6)]], (v) => {
    v.setUint16(0, LINKTYPE_ETHERNET, true);
    v.setUint16(2, 0, true);
    v.setUint32(4, 0, true); // no snap length
  });
}

/** One packet on interface `ifIndex` at `epochMs` (wall clock), with an optional comment. */
export function enhancedPacket(
  ifIndex: number,
  epochMs: number,
  frame: Uint8Array,
  comment?: string,
): Uint8Array {
  const options: Option[] = comment === undefined ? [] : [[OPT_COMMENT, encoder.encode(comment)]];
  const us = BigInt(Math.round(epochMs * 1000));
  return block(EPB, 20 + frame.length, options, (v, bytes) => {
    v.setUint32(0, ifIndex, true);
    v.setUint32(4, Number(us >> 32n), true);
    v.setUint32(8, Number(us & 0xffffffffn), true);
    v.setUint32(12, frame.length, true);
    v.setUint32(16, frame.length, true);
    bytes.set(frame, 20);
  });
}
