import assert from "node:assert/strict";
import {
  DATAGRAM,
  describeKey,
  FrameInfo,
  parseFrame,
  parseFrameAt,
  TCP_SEGMENT,
  UNSUPPORTED,
} from "../../src/packet/parse.ts";
import { arp, ethernet, frame, PROTO, pseudoRandomBytes, withVnet } from "../support/packets.ts";

function parse(f: Uint8Array, vnetLen = 0): FrameInfo {
  const info = new FrameInfo();
  parseFrame(f, vnetLen, info);
  return info;
}

function keyOf(f: Uint8Array, vnetLen = 0): string {
  const info = parse(f, vnetLen);
  assert.notEqual(info.kind, UNSUPPORTED, `unsupported: ${info.reason}`);
  return describeKey(info.key.slice(0, info.keyLen));
}

Deno.test("parse: an IPv4 TCP segment yields seq, ack, flags and the payload range", () => {
  const f = frame({
    tcp: { sport: 80, dport: 4000, seq: 0xfffffff0, ack: 77, flags: 0x18, payload: "abcdef" },
  });
  const info = parse(f);
  assert.equal(info.kind, TCP_SEGMENT);
  assert.equal(info.seq, 0xfffffff0);
  assert.equal(info.ack, 77);
  assert.equal(info.flags, 0x18);
  assert.equal(info.payload, 14 + 20 + 20);
  assert.equal(info.payloadLen, 6);
  assert.equal(keyOf(f), "tcp 10.0.0.1:80 > 10.0.0.2:4000");
});

Deno.test("parse: TCP options move the payload; Ethernet padding is never payload", () => {
  const opts = new Uint8Array([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
  const info = parse(frame({ tcp: { options: opts, payload: "xy" }, padTo: 60 }));
  assert.equal(info.payload, 14 + 20 + 32);
  assert.equal(info.payloadLen, 2);
  const ack = parse(frame({ tcp: { flags: 0x10 }, padTo: 60 }));
  assert.equal(ack.payloadLen, 0, "a padded pure ACK has no payload");
});

Deno.test("parse: UDP, ICMP and other protocols are datagrams compared from the IP payload", () => {
  const udp = parse(frame({ udp: { payload: "hello" }, padTo: 64 }));
  assert.equal(udp.kind, DATAGRAM);
  assert.equal(udp.l4, 34);
  assert.equal(udp.ipEnd, 34 + 8 + 5);
  const gre = parse(frame({ raw: { proto: PROTO.GRE, bytes: "grepayload" } }));
  assert.equal(gre.kind, DATAGRAM);
  assert.equal(gre.ipEnd - gre.l4, 10);
});

Deno.test("parse: the key has addresses, protocol, ports, SPIs and VLAN ids, no direction swap", () => {
  assert.equal(
    keyOf(frame({ udp: { sport: 53, dport: 999 } })),
    "udp 10.0.0.1:53 > 10.0.0.2:999",
  );
  assert.equal(
    keyOf(frame({ ip: { src: "10.0.0.2", dst: "10.0.0.1" }, udp: { sport: 999, dport: 53 } })),
    "udp 10.0.0.2:999 > 10.0.0.1:53",
  );
  assert.equal(keyOf(frame({ icmp: {} })), "icmp 10.0.0.1 > 10.0.0.2");
  const esp = new Uint8Array([0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1]);
  assert.equal(
    keyOf(frame({ raw: { proto: PROTO.ESP, bytes: esp } })),
    "esp 10.0.0.1 > 10.0.0.2 spi=0xdeadbeef",
  );
  const ah = new Uint8Array([6, 4, 0, 0, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 1]);
  assert.equal(
    keyOf(frame({ raw: { proto: PROTO.AH, bytes: ah } })),
    "ah 10.0.0.1 > 10.0.0.2 spi=0x12345678",
  );
  assert.equal(
    keyOf(frame({ vlans: [{ vid: 10 }], udp: {} })),
    "udp 10.0.0.1:5353 > 10.0.0.2:40000 vlan=10",
  );
  assert.equal(
    keyOf(frame({ vlans: [{ tpid: 0x88a8, vid: 100 }, { vid: 20 }], tcp: {} })),
    "tcp 10.0.0.1:80 > 10.0.0.2:40000 vlan=100.20",
  );
  assert.equal(
    keyOf(frame({ vlans: [{ tpid: 0x9100, vid: 7 }], udp: {} })),
    "udp 10.0.0.1:5353 > 10.0.0.2:40000 vlan=7",
  );
});

Deno.test("parse: IPv6 with hop-by-hop, routing, destination options and fragment headers", () => {
  const f = frame({
    ip: { v: 6, src: "fd00::1", dst: "fd00::2", ext: [{ type: 0 }, { type: 43 }, { type: 60 }] },
    tcp: { seq: 5, payload: "data" },
  });
  const info = parse(f);
  assert.equal(info.kind, TCP_SEGMENT);
  assert.equal(info.payloadLen, 4);
  assert.equal(keyOf(f), "tcp [fd00::1]:80 > [fd00::2]:40000");
  const frag = frame({
    ip: { v: 6, ext: [{ type: 44, fragOffset: 10, more: true }] },
    udp: { payload: "x" },
  });
  assert.equal(parse(frag).kind, DATAGRAM);
  assert.equal(keyOf(frag), "udp [fd00::1] > [fd00::2] fragments");
  assert.equal(keyOf(frame({ ip: { v: 6 }, icmp: {} })), "icmpv6 [fd00::1] > [fd00::2]");
});

Deno.test("parse: IPv4 fragments are parsed as the packets they look like, as QEMU parses them", () => {
  const first = frame({ ip: { flags: 0x1 }, udp: { payload: "part one" } });
  const later = frame({ ip: { flags: 0, fragOffset: 100 }, raw: { proto: 17, bytes: "two!" } });
  assert.equal(keyOf(first), "udp 10.0.0.1:5353 > 10.0.0.2:40000");
  // A later fragment's first four bytes stand where the ports would be: "tw" and "o!".
  assert.equal(keyOf(later), "udp 10.0.0.1:29815 > 10.0.0.2:28449");
  assert.equal(parse(later).kind, DATAGRAM);
  const tcpFirst = frame({ ip: { flags: 0x1 }, tcp: { seq: 7, payload: "first part" } });
  assert.equal(parse(tcpFirst).kind, TCP_SEGMENT);
  assert.equal(parse(tcpFirst).payloadLen, 10);
  // A later TCP fragment of 16 bytes holds all QEMU reads of a header (bytes 0-13) and, with
  // a data offset of 4 bytes, its payload: a segment, as in QEMU. With 13 bytes QEMU would
  // read past the frame: passed through.
  const tcpLater = (n: number) =>
    frame({
      ip: { flags: 0, fragOffset: 185 },
      raw: { proto: 6, bytes: Uint8Array.from({ length: n }, (_, i) => (i === 12 ? 0x10 : i)) },
    });
  assert.equal(parse(tcpLater(16)).kind, TCP_SEGMENT);
  assert.equal(parse(tcpLater(16)).payloadLen, 12);
  assert.equal(parse(tcpLater(14)).payloadLen, 10);
  assert.equal(parse(tcpLater(13)).reason, "truncated-transport");
});

Deno.test("parse: the vnet header is skipped and bounded to 20 bytes", () => {
  const f = frame({ tcp: { payload: "abc" } });
  const info = parse(withVnet(f, 12, 0xee), 12);
  assert.equal(info.kind, TCP_SEGMENT);
  assert.equal(info.payload, 12 + 54);
  assert.equal(parse(withVnet(f, 24), 24).reason, "vnet-header");
  assert.equal(parse(new Uint8Array(10), 12).reason, "vnet-header");
});

Deno.test("parse: non-IP, runts and insane IP headers are unsupported, each with its class", () => {
  const cases: [Uint8Array, string][] = [
    [arp(), "not-ip"],
    [ethernet({}, 0x88cc, new Uint8Array(40)), "not-ip"],
    [new Uint8Array(13), "runt"],
    [frame({ udp: {} }).slice(0, 20), "bad-ipv4-header"],
    [frame({ ip: { ihl: 4 }, udp: {} }), "bad-ipv4-header"],
    [frame({ ip: { version: 6 }, udp: {} }), "bad-ipv4-header"],
    [frame({ ip: { totalLength: 400 }, udp: {} }), "bad-ipv4-header"],
    [frame({ ip: { totalLength: 10 }, udp: {} }), "bad-ipv4-header"],
    [frame({ ip: { v: 6, payloadLength: 900 }, udp: {} }), "bad-ipv6-header"],
    [frame({ tcp: {} }).slice(0, 14 + 20 + 10), "bad-ipv4-header"],
    [frame({ ip: { totalLength: 30 }, tcp: {} }).slice(0, 14 + 30), "truncated-transport"],
    [frame({ tcp: { dataOffset: 15 } }), "truncated-transport"],
    [frame({ ip: { totalLength: 22 }, udp: {} }).slice(0, 14 + 22), "truncated-transport"],
    [frame({ vlans: [{ vid: 1 }, { vid: 2 }, { vid: 3 }], udp: {} }), "vlan-stack"],
    // SPEC 4: one 802.1Q tag, or a service tag then one 802.1Q tag; nothing else is skipped.
    [frame({ vlans: [{ vid: 1 }, { vid: 2 }], udp: {} }), "vlan-stack"],
    [frame({ vlans: [{ tpid: 0x88a8, vid: 1 }, { tpid: 0x88a8, vid: 2 }], udp: {} }), "vlan-stack"],
    [frame({ vlans: [{ tpid: 0x88a8, vid: 1 }, { tpid: 0x9100, vid: 2 }], udp: {} }), "vlan-stack"],
  ];
  for (const [f, reason] of cases) {
    const info = parse(f);
    assert.equal(info.kind, UNSUPPORTED, `expected ${reason}`);
    assert.equal(info.reason, reason);
  }
});

Deno.test("parse: transport fields are read where the frame holds them, as QEMU reads them", () => {
  // A data offset below 5 words: the payload starts inside the header.
  const short = parse(frame({ tcp: { dataOffset: 2, payload: "abcd" } }));
  assert.equal(short.kind, TCP_SEGMENT);
  assert.equal(short.payload, short.l4 + 8);
  assert.equal(short.payloadLen, 12 + 4);
  // A data offset that ends past the IP total length but inside the frame (bytes beyond the
  // total length, Ethernet padding say): a segment without payload, as QEMU reads the header
  // there. One that ends past the frame (QEMU reads past its buffer) passes through.
  const beyond = parse(frame({ ip: { totalLength: 30 }, tcp: { seq: 9 } }));
  assert.equal(beyond.kind, TCP_SEGMENT);
  assert.equal(beyond.seq, 9);
  assert.equal(beyond.payloadLen, 0);
  // UDP ports past a short IP total length, in the frame's bytes beyond it.
  const udp = frame({ ip: { totalLength: 22 }, udp: {} });
  assert.equal(parse(udp).kind, DATAGRAM);
  assert.equal(keyOf(udp), "udp 10.0.0.1:5353 > 10.0.0.2:40000");
});

Deno.test("parse: every truncation and random corruption of valid frames parses without throwing", () => {
  const samples = [
    frame({ tcp: { payload: "hello world", options: new Uint8Array([2, 4, 5, 0xb4]) } }),
    frame({ vlans: [{ tpid: 0x88a8, vid: 1 }, { vid: 2 }], udp: { payload: "x" } }),
    frame({ ip: { v: 6, ext: [{ type: 0 }, { type: 44, fragOffset: 0, more: true }] }, tcp: {} }),
    frame({ ip: { v: 6, ext: [{ type: 60 }] }, icmp: { payload: "ping" } }),
  ];
  const info = new FrameInfo();
  for (const f of samples) {
    for (let n = 0; n <= f.length; n++) parseFrame(f.subarray(0, n), 0, info);
    for (let seed = 1; seed <= 300; seed++) {
      const g = f.slice();
      const noise = pseudoRandomBytes(4, seed);
      g[noise[0] % g.length] = noise[1];
      g[noise[2] % g.length] = noise[3];
      parseFrame(g, 0, info);
      if (info.kind !== UNSUPPORTED) {
        assert.ok(info.l4 <= info.ipEnd && info.ipEnd <= g.length, `seed ${seed}`);
        if (info.kind === TCP_SEGMENT) assert.ok(info.payload + info.payloadLen <= g.length);
      }
    }
  }
});

Deno.test("parse: a frame inside a larger buffer parses as on its own, its bounds its own end", () => {
  const samples = [
    frame({ tcp: { payload: "hello world", options: new Uint8Array([2, 4, 5, 0xb4]) } }),
    frame({ vlans: [{ vid: 7 }], udp: { payload: "x".repeat(40) } }),
    frame({ ip: { v: 6, ext: [{ type: 0 }] }, tcp: { payload: "abc" } }),
    frame({ ip: { v: 6, ext: [{ type: 60 }] }, icmp: { payload: "ping" } }),
  ];
  const alone = new FrameInfo();
  const inside = new FrameInfo();
  for (const f of samples) {
    // Every truncation, with the rest of the frame (and more) after it in the buffer: the
    // parse must not read past the frame's end, which the bytes after it would make valid.
    for (let n = 0; n <= f.length; n++) {
      for (const at of [0, 5, 61]) {
        const buf = new Uint8Array(at + f.length + 16).fill(0xee);
        buf.set(f, at);
        const kind = parseFrame(f.slice(0, n), 0, alone);
        assert.equal(parseFrameAt(buf, at, n, 0, inside), kind, `${n} bytes at ${at}`);
        if (kind === UNSUPPORTED) {
          assert.equal(inside.reason, alone.reason);
          continue;
        }
        assert.deepEqual(
          [inside.l3, inside.l4, inside.ipEnd],
          [alone.l3 + at, alone.l4 + at, alone.ipEnd + at],
        );
        if (kind === TCP_SEGMENT) {
          assert.deepEqual(
            [inside.payload, inside.payloadLen, inside.seq],
            [alone.payload + at, alone.payloadLen, alone.seq],
          );
        }
        assert.deepEqual(
          inside.key.subarray(0, inside.keyLen),
          alone.key.subarray(0, alone.keyLen),
        );
      }
    }
  }
});

Deno.test("parse: IPv6 neighbour and multicast listener discovery (ICMPv6 130-137, 143) are not compared, as ARP is not; other ICMPv6 is", () => {
  for (const type of [133, 134, 135, 136, 137]) {
    const info = parse(frame({ ip: { v: 6 }, icmp: { type, payload: "nd" } }));
    assert.equal(info.kind, UNSUPPORTED, `type ${type}`);
    assert.equal(info.reason, "neighbour-discovery");
  }
  // Behind a hop-by-hop header too.
  const hop = parse(frame({ ip: { v: 6, ext: [{ type: 0 }] }, icmp: { type: 136 } }));
  assert.equal(hop.reason, "neighbour-discovery");
  for (const type of [130, 131, 132, 143]) {
    const info = parse(frame({ ip: { v: 6, ext: [{ type: 0 }] }, icmp: { type } }));
    assert.equal(info.reason, "multicast-listener-discovery", `type ${type}`);
  }
  // Echo, errors: compared.
  for (const type of [1, 2, 128, 129, 138, 144]) {
    assert.equal(parse(frame({ ip: { v: 6 }, icmp: { type } })).kind, DATAGRAM, `type ${type}`);
  }
  // ICMP (v4) type 136 is no neighbour discovery.
  assert.equal(parse(frame({ icmp: { type: 136 } })).kind, DATAGRAM);
});
