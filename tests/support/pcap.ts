/**
 * Capture files for replay tests, written independently of the reader under test: classic
 * pcap in either byte order with microsecond or nanosecond timestamps (QEMU's filter-dump
 * writes the microsecond kind in host order), and pcapng in either byte order.
 *
 * @module
 */

/** A frame and the time it was captured (ms since the epoch). */
export interface TimedFrame {
  timeMs: number;
  data: Uint8Array;
}

function join(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, at), at += p.length;
  return out;
}

/** Classic pcap, Ethernet, snap length `snaplen` (longer frames are cut, as filter-dump does). */
export function pcapFile(
  frames: TimedFrame[],
  o: { bigEndian?: boolean; nanoseconds?: boolean; snaplen?: number } = {},
): Uint8Array {
  const le = !o.bigEndian;
  const snaplen = o.snaplen ?? 65536;
  const header = new DataView(new ArrayBuffer(24));
  header.setUint32(0, o.nanoseconds ? 0xa1b23c4d : 0xa1b2c3d4, le);
  header.setUint16(4, 2, le);
  header.setUint16(6, 4, le);
  header.setUint32(16, snaplen, le);
  header.setUint32(20, 1, le);
  const parts: Uint8Array[] = [new Uint8Array(header.buffer)];
  const unit = o.nanoseconds ? 1e6 : 1e3; // units per ms
  for (const f of frames) {
    const caplen = Math.min(f.data.length, snaplen);
    const rec = new DataView(new ArrayBuffer(16));
    const units = BigInt(Math.round(f.timeMs * unit));
    const perSecond = BigInt(unit * 1000);
    rec.setUint32(0, Number(units / perSecond), le);
    rec.setUint32(4, Number(units % perSecond), le);
    rec.setUint32(8, caplen, le);
    rec.setUint32(12, f.data.length, le);
    parts.push(new Uint8Array(rec.buffer), f.data.subarray(0, caplen));
  }
  return join(parts);
}

/** pcapng with one Ethernet interface; `tsresol` as in `if_tsresol` (default 6: µs). */
export function pcapngFile(
  frames: TimedFrame[],
  o: { bigEndian?: boolean; tsresol?: number } = {},
): Uint8Array {
  const le = !o.bigEndian;
  const blockOf = (type: number, body: Uint8Array) => {
    const padded = (body.length + 3) & ~3;
    const v = new DataView(new ArrayBuffer(12 + padded));
    v.setUint32(0, type, le);
    v.setUint32(4, 12 + padded, le);
    new Uint8Array(v.buffer).set(body, 8);
    v.setUint32(8 + padded, 12 + padded, le);
    return new Uint8Array(v.buffer);
  };
  const shb = new DataView(new ArrayBuffer(16));
  shb.setUint32(0, 0x1a2b3c4d, le);
  shb.setUint16(4, 1, le);
  shb.setBigInt64(8, -1n, le);
  const tsresol = o.tsresol ?? 6;
  const idb = new DataView(new ArrayBuffer(8 + 8 + 4));
  idb.setUint16(0, 1, le);
  idb.setUint16(8, 9, le); // if_tsresol
  idb.setUint16(10, 1, le);
  idb.setUint8(12, tsresol);
  const parts: Uint8Array[] = [
    blockOf(0x0a0d0d0a, new Uint8Array(shb.buffer)),
    blockOf(1, new Uint8Array(idb.buffer)),
  ];
  const perMs = tsresol & 0x80 ? 2 ** (tsresol & 0x7f) / 1000 : 10 ** tsresol / 1000;
  for (const f of frames) {
    const body = new DataView(new ArrayBuffer(20 + f.data.length));
    const ts = BigInt(Math.round(f.timeMs * perMs));
    body.setUint32(4, Number(ts >> 32n), le);
    body.setUint32(8, Number(ts & 0xffffffffn), le);
    body.setUint32(12, f.data.length, le);
    body.setUint32(16, f.data.length, le);
    new Uint8Array(body.buffer).set(f.data, 20);
    parts.push(blockOf(6, new Uint8Array(body.buffer)));
  }
  return join(parts);
}
