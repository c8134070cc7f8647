import assert from "node:assert/strict";
import {
  CaptureFormatError,
  CaptureReader,
  MAX_INTERFACES,
  readCapture,
} from "../../src/replay/pcap.ts";
import { enhancedPacket, interfaceDescription, sectionHeader } from "../../src/capture/pcapng.ts";
import { concat, frame } from "../support/packets.ts";
import { pcapFile, pcapngFile, type TimedFrame } from "../support/pcap.ts";

const frames: TimedFrame[] = [
  { timeMs: 1_700_000_000_123.456, data: frame({ udp: { payload: "one" } }) },
  { timeMs: 1_700_000_001_000.001, data: frame({ udp: { payload: "two, longer" } }) },
];

async function assertSame(bytes: Uint8Array, precisionMs: number): Promise<void> {
  const got = await readCapture(bytes);
  assert.equal(got.length, frames.length);
  for (const [i, f] of frames.entries()) {
    assert.deepEqual(got[i].data, f.data);
    assert.ok(
      Math.abs(got[i].timeMs - f.timeMs) <= precisionMs,
      `time ${got[i].timeMs} vs ${f.timeMs}`,
    );
    assert.equal(got[i].truncated, false);
  }
}

for (const bigEndian of [false, true]) {
  for (const nanoseconds of [false, true]) {
    Deno.test(
      `pcap: reads ${bigEndian ? "big" : "little"}-endian files with ${
        nanoseconds ? "nano" : "micro"
      }second timestamps`,
      async () => {
        await assertSame(pcapFile(frames, { bigEndian, nanoseconds }), 0.001);
      },
    );
  }
  Deno.test(`pcapng: reads ${bigEndian ? "big" : "little"}-endian sections`, async () => {
    await assertSame(pcapngFile(frames, { bigEndian }), 0.001);
    await assertSame(pcapngFile(frames, { bigEndian, tsresol: 9 }), 0.000001);
    await assertSame(pcapngFile(frames, { bigEndian, tsresol: 0x80 | 20 }), 0.001);
  });
}

Deno.test("pcap: a frame cut by the snap length is marked truncated", async () => {
  const got = await readCapture(pcapFile(frames, { snaplen: 50 }));
  assert.equal(got[0].data.length, 45);
  assert.equal(got[0].truncated, false);
  assert.equal(got[1].data.length, 50);
  assert.equal(got[1].truncated, true);
});

Deno.test("pcap: a file cut short mid-record keeps the whole records", async () => {
  const bytes = pcapFile(frames);
  assert.equal((await readCapture(bytes.subarray(0, bytes.length - 3))).length, 1);
});

Deno.test("pcapng: reads what --capture writes", async () => {
  const f = frame({ udp: { payload: "x" } });
  const bytes = new Uint8Array([
    ...sectionHeader("test"),
    ...interfaceDescription("primary-in"),
    ...enhancedPacket(0, 1234.5, f, "a comment"),
  ]);
  const got = await readCapture(bytes);
  assert.equal(got.length, 1);
  assert.deepEqual(got[0].data, f);
  assert.equal(got[0].timeMs, 1234.5);
});

Deno.test("pcap: anything else is refused with a reason", async () => {
  await assert.rejects(readCapture(new TextEncoder().encode("hello world")), CaptureFormatError);
  const linux = pcapFile(frames);
  new DataView(linux.buffer).setUint32(20, 113, true); // LINKTYPE_LINUX_SLL
  await assert.rejects(readCapture(linux), /link type 113 is not Ethernet/);
});

Deno.test("pcap: frames larger than the reader's buffer, and a stream in small reads", async () => {
  const big = [
    { timeMs: 1, data: frame({ udp: { payload: "x".repeat(60_000) } }) },
    { timeMs: 2, data: frame({ udp: { payload: "y".repeat(300_000 - 42) } }) },
  ];
  for (const bytes of [pcapFile(big, { snaplen: 1 << 20 }), pcapngFile(big)]) {
    let at = 0;
    // 1000 bytes per read: every record is split across reads.
    const reader = new CaptureReader((buf) => {
      if (at >= bytes.length) return Promise.resolve(null);
      const n = Math.min(buf.length, 1000, bytes.length - at);
      buf.set(bytes.subarray(at, at + n));
      at += n;
      return Promise.resolve(n);
    });
    for (const f of big) {
      const got = await reader.next();
      assert.deepEqual(got?.data, f.data);
    }
    assert.equal(await reader.next(), null);
  }
});

Deno.test("pcapng: a block shorter than its fixed fields, or whose two lengths differ, is refused; an option past its block is not read", async () => {
  const good = pcapngFile([{ timeMs: 5, data: frame({ udp: { payload: "x" } }) }]);
  const le = new DataView(good.buffer);
  // The enhanced packet block follows the section header (28 bytes) and the interface (32).
  const epb = 28 + 32;
  assert.equal(le.getUint32(epb, true), 6);
  // An enhanced packet block of 12 bytes: before, its fields were read from the next block.
  const short = new Uint8Array([...good.subarray(0, epb), ...block(6, 12), ...good.subarray(epb)]);
  await assert.rejects(readCapture(short), /type 6 and 12 bytes \(at least 32\)/);
  const mismatched = good.slice();
  const total = le.getUint32(epb + 4, true);
  new DataView(mismatched.buffer).setUint32(epb + total - 4, total + 4, true);
  await assert.rejects(readCapture(mismatched), CaptureFormatError);
  // if_tsoffset (8 bytes) announced at the very end of the interface block.
  const idb = new Uint8Array([...block(1, 24)]);
  const v = new DataView(idb.buffer);
  v.setUint16(8, 1, true); // Ethernet
  v.setUint16(16, 14, true);
  v.setUint16(18, 8, true);
  const tail = new Uint8Array([...good.subarray(0, 28), ...idb, ...good.subarray(epb)]);
  assert.equal((await readCapture(tail)).length, 1);
});

/** A pcapng block of `total` bytes (little-endian), zero but for its type and lengths. */
function block(type: number, total: number): Uint8Array {
  const v = new DataView(new ArrayBuffer(total));
  v.setUint32(0, type, true);
  v.setUint32(4, total, true);
  v.setUint32(total - 4, total, true);
  return new Uint8Array(v.buffer);
}

Deno.test("pcapng: a section describing more interfaces than the bound is refused, not kept in memory", async () => {
  // Each interface description is 20 bytes of file and was an object of ~90 bytes in memory:
  // 100 MB of them took replay to 467 MB of RSS (a capture of frames, 63 MB).
  const idbs = new Uint8Array(20 * (MAX_INTERFACES + 1));
  const v = new DataView(idbs.buffer);
  for (let at = 0; at < idbs.length; at += 20) {
    v.setUint32(at, 1, true);
    v.setUint32(at + 4, 20, true);
    v.setUint16(at + 8, 1, true); // Ethernet
    v.setUint32(at + 16, 20, true);
  }
  const f = frame({ udp: { payload: "x" } });
  const last = enhancedPacket(MAX_INTERFACES - 1, 5, f);
  const atBound = concat(sectionHeader("test"), idbs.subarray(20), last);
  const got = await readCapture(atBound);
  assert.equal(got.length, 1);
  assert.deepEqual(got[0].data, f);
  const past = concat(sectionHeader("test"), idbs, last);
  await assert.rejects(
    readCapture(past),
    new RegExp(`more than ${MAX_INTERFACES} interfaces in one pcapng section`),
  );
});
