/**
 * A small packet builder for the demo, tests, benchmarks and the conformance suite:
 * Ethernet, 802.1Q, QinQ, IPv4, IPv6 (with extension headers), TCP (with options), UDP, ICMP,
 * ICMPv6, raw IP protocols, ARP, padding and truncation. Deliberately shares nothing with the
 * parser (`parse.ts`), so a bug there is not mirrored here.
 *
 * @module
 */

/** TCP flag bits. */
export const TCP = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10, URG: 0x20 } as const;

/** IP protocol numbers used in tests. */
export const PROTO = {
  ICMP: 1,
  TCP: 6,
  UDP: 17,
  GRE: 47,
  ESP: 50,
  AH: 51,
  ICMPV6: 58,
  SCTP: 132,
  UDPLITE: 136,
} as const;

/** One VLAN tag: `tpid` 0x8100 (802.1Q), 0x88a8 or 0x9100 (QinQ outer). */
export interface VlanTag {
  tpid?: number;
  vid: number;
  pcp?: number;
}

/** IPv4 header options. */
export interface Ip4Options {
  v?: 4;
  src?: string;
  dst?: string;
  id?: number;
  ttl?: number;
  tos?: number;
  /** Flags in the top 3 bits (0x2 = DF, 0x1 = MF). */
  flags?: number;
  /** Fragment offset in 8-byte units. */
  fragOffset?: number;
  /** IP options, padded to a multiple of 4 bytes. */
  options?: Uint8Array;
  /** Overrides the computed total length (to build insane headers). */
  totalLength?: number;
  /** Overrides the IHL nibble (to build insane headers). */
  ihl?: number;
  /** Overrides the version nibble. */
  version?: number;
}

/** An IPv6 extension header placed between the fixed header and the upper layer. */
export interface Ip6Ext {
  /** 0 hop-by-hop, 43 routing, 44 fragment, 60 destination options. */
  type: 0 | 43 | 44 | 60;
  /** For fragment headers: offset in 8-byte units and the M flag. */
  fragOffset?: number;
  more?: boolean;
  /** Extra option bytes for 0/43/60 (the header is padded to 8-byte multiples). */
  data?: Uint8Array;
}

/** IPv6 header options. */
export interface Ip6Options {
  v: 6;
  src?: string;
  dst?: string;
  hopLimit?: number;
  trafficClass?: number;
  flowLabel?: number;
  ext?: Ip6Ext[];
  /** Overrides the computed payload length. */
  payloadLength?: number;
}

/** TCP segment fields. */
export interface TcpOptions {
  sport?: number;
  dport?: number;
  seq?: number;
  ack?: number;
  flags?: number;
  window?: number;
  /** TCP options (padded to a multiple of 4 bytes with NOPs/zeros). */
  options?: Uint8Array;
  payload?: Uint8Array | string;
  /** Overrides the data offset nibble. */
  dataOffset?: number;
}

/** UDP datagram fields. */
export interface UdpOptions {
  sport?: number;
  dport?: number;
  payload?: Uint8Array | string;
  checksum?: number;
}

/** ICMP / ICMPv6 message fields. */
export interface IcmpOptions {
  type?: number;
  code?: number;
  id?: number;
  seq?: number;
  payload?: Uint8Array | string;
}

/** A whole frame description. */
export interface FrameOptions {
  srcMac?: string;
  dstMac?: string;
  vlans?: VlanTag[];
  ip?: Ip4Options | Ip6Options;
  tcp?: TcpOptions;
  udp?: UdpOptions;
  icmp?: IcmpOptions;
  /** Any other upper layer: protocol number and raw bytes (written verbatim). */
  raw?: { proto: number; bytes: Uint8Array | string };
  /** Pad the frame with zeros up to at least this many bytes (Ethernet minimum is 60). */
  padTo?: number;
  /** Cut the finished frame to this many bytes. */
  truncate?: number;
}

const encoder = new TextEncoder();

/** Bytes of a string or array. */
export function bytes(data: Uint8Array | string | undefined): Uint8Array {
  if (data === undefined) return new Uint8Array(0);
  return typeof data === "string" ? encoder.encode(data) : data;
}

/** Concatenates byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Parses "aa:bb:cc:dd:ee:ff". */
export function mac(text: string): Uint8Array {
  const parts = text.split(":");
  if (parts.length !== 6) throw new Error(`bad MAC ${text}`);
  return Uint8Array.from(parts.map((p) => parseInt(p, 16)));
}

/** Parses a dotted IPv4 address. */
export function ip4(text: string): Uint8Array {
  const parts = text.split(".").map(Number);
  if (parts.length !== 4 || parts.some((p) => !(p >= 0 && p <= 255))) {
    throw new Error(`bad IPv4 ${text}`);
  }
  return Uint8Array.from(parts);
}

/** Parses an IPv6 address (with "::" compression; no embedded IPv4). */
export function ip6(text: string): Uint8Array {
  const [head, tail] = text.includes("::") ? text.split("::") : [text, undefined];
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill("0"), ...t];
  if (groups.length !== 8) throw new Error(`bad IPv6 ${text}`);
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    const v = parseInt(g, 16);
    out[i * 2] = v >> 8;
    out[i * 2 + 1] = v & 0xff;
  });
  return out;
}

/** The Internet checksum (RFC 1071) of `data`, starting from `initial`. */
export function inetChecksum(data: Uint8Array, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < data.length; i += 2) sum += (data[i] << 8) | data[i + 1];
  if (data.length & 1) sum += data[data.length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function pseudoSum(src: Uint8Array, dst: Uint8Array, proto: number, length: number): number {
  let sum = 0;
  for (const a of [src, dst]) {
    for (let i = 0; i < a.length; i += 2) sum += (a[i] << 8) | a[i + 1];
  }
  sum += proto;
  sum += (length >>> 16) + (length & 0xffff);
  return sum;
}

function padOptions(options: Uint8Array | undefined): Uint8Array {
  const o = options ?? new Uint8Array(0);
  const n = (o.length + 3) & ~3;
  const out = new Uint8Array(n);
  out.set(o);
  return out;
}

function tcpSegment(t: TcpOptions): { proto: number; l4: Uint8Array; csumAt: number } {
  const options = padOptions(t.options);
  const payload = bytes(t.payload);
  const hl = 20 + options.length;
  const seg = new Uint8Array(hl + payload.length);
  const v = new DataView(seg.buffer);
  v.setUint16(0, t.sport ?? 80);
  v.setUint16(2, t.dport ?? 40000);
  v.setUint32(4, (t.seq ?? 1000) >>> 0);
  v.setUint32(8, (t.ack ?? 1) >>> 0);
  seg[12] = (t.dataOffset ?? hl / 4) << 4;
  seg[13] = t.flags ?? TCP.ACK | (payload.length > 0 ? TCP.PSH : 0);
  v.setUint16(14, t.window ?? 64240);
  seg.set(options, 20);
  seg.set(payload, hl);
  return { proto: PROTO.TCP, l4: seg, csumAt: 16 };
}

function udpDatagram(u: UdpOptions): { proto: number; l4: Uint8Array; csumAt: number } {
  const payload = bytes(u.payload);
  const d = new Uint8Array(8 + payload.length);
  const v = new DataView(d.buffer);
  v.setUint16(0, u.sport ?? 5353);
  v.setUint16(2, u.dport ?? 40000);
  v.setUint16(4, d.length);
  if (u.checksum !== undefined) v.setUint16(6, u.checksum);
  d.set(payload, 8);
  return { proto: PROTO.UDP, l4: d, csumAt: u.checksum === undefined ? 6 : -1 };
}

function icmpMessage(
  c: IcmpOptions,
  v6: boolean,
): { proto: number; l4: Uint8Array; csumAt: number } {
  const payload = bytes(c.payload);
  const m = new Uint8Array(8 + payload.length);
  const v = new DataView(m.buffer);
  m[0] = c.type ?? (v6 ? 129 : 0);
  m[1] = c.code ?? 0;
  v.setUint16(4, c.id ?? 1);
  v.setUint16(6, c.seq ?? 1);
  m.set(payload, 8);
  if (!v6) v.setUint16(2, inetChecksum(m));
  return { proto: v6 ? PROTO.ICMPV6 : PROTO.ICMP, l4: m, csumAt: v6 ? 2 : -1 };
}

function upperLayer(
  o: FrameOptions,
  v6: boolean,
): { proto: number; l4: Uint8Array; csumAt: number } {
  if (o.tcp) return tcpSegment(o.tcp);
  if (o.udp) return udpDatagram(o.udp);
  if (o.icmp) return icmpMessage(o.icmp, v6);
  if (o.raw) return { proto: o.raw.proto, l4: bytes(o.raw.bytes).slice(), csumAt: -1 };
  return { proto: 253, l4: new Uint8Array(0), csumAt: -1 };
}

/** Fills the upper layer's checksum (over the pseudo-header), where it has one. */
function setTransportChecksum(
  up: { proto: number; l4: Uint8Array; csumAt: number },
  src: Uint8Array,
  dst: Uint8Array,
): void {
  if (up.csumAt < 0) return;
  new DataView(up.l4.buffer, up.l4.byteOffset).setUint16(
    up.csumAt,
    inetChecksum(up.l4, pseudoSum(src, dst, up.proto, up.l4.length)),
  );
}

function ip4Packet(ip: Ip4Options, up: { proto: number; l4: Uint8Array; csumAt: number }) {
  const options = padOptions(ip.options);
  const hl = 20 + options.length;
  const src = ip4(ip.src ?? "10.0.0.1");
  const dst = ip4(ip.dst ?? "10.0.0.2");
  setTransportChecksum(up, src, dst);
  const h = new Uint8Array(hl);
  const v = new DataView(h.buffer);
  h[0] = ((ip.version ?? 4) << 4) | (ip.ihl ?? hl / 4);
  h[1] = ip.tos ?? 0;
  v.setUint16(2, ip.totalLength ?? hl + up.l4.length);
  v.setUint16(4, ip.id ?? 0x1234);
  v.setUint16(6, ((ip.flags ?? 0x2) << 13) | (ip.fragOffset ?? 0));
  h[8] = ip.ttl ?? 64;
  h[9] = up.proto;
  h.set(src, 12);
  h.set(dst, 16);
  h.set(options, 20);
  v.setUint16(10, inetChecksum(h));
  return { ethertype: 0x0800, bytes: concat(h, up.l4) };
}

function ip6Packet(ip: Ip6Options, up: { proto: number; l4: Uint8Array; csumAt: number }) {
  const src = ip6(ip.src ?? "fd00::1");
  const dst = ip6(ip.dst ?? "fd00::2");
  setTransportChecksum(up, src, dst);
  const exts = ip.ext ?? [];
  const extBytes: Uint8Array[] = [];
  exts.forEach((e, i) => {
    const next = i + 1 < exts.length ? exts[i + 1].type : up.proto;
    if (e.type === 44) {
      const f = new Uint8Array(8);
      f[0] = next;
      const off = ((e.fragOffset ?? 0) << 3) | (e.more ? 1 : 0);
      f[2] = off >> 8;
      f[3] = off & 0xff;
      f[7] = 0x42;
      extBytes.push(f);
    } else {
      const data = e.data ?? new Uint8Array(0);
      const len = (2 + data.length + 7) & ~7;
      const x = new Uint8Array(len);
      x[0] = next;
      x[1] = len / 8 - 1;
      x.set(data, 2);
      if (data.length === 0) x[2] = 1, x[3] = len - 4; // one PadN option
      extBytes.push(x);
    }
  });
  const rest = concat(...extBytes, up.l4);
  const h = new Uint8Array(40);
  const v = new DataView(h.buffer);
  v.setUint32(
    0,
    ((6 << 28) | ((ip.trafficClass ?? 0) << 20) | (ip.flowLabel ?? 0)) >>> 0,
  );
  v.setUint16(4, ip.payloadLength ?? rest.length);
  h[6] = exts.length > 0 ? exts[0].type : up.proto;
  h[7] = ip.hopLimit ?? 64;
  h.set(src, 8);
  h.set(dst, 24);
  return { ethertype: 0x86dd, bytes: concat(h, rest) };
}

/** Builds one Ethernet frame. */
export function frame(o: FrameOptions): Uint8Array {
  const ip = o.ip ?? {};
  const v6 = ip.v === 6;
  const up = upperLayer(o, v6);
  const l3 = v6 ? ip6Packet(ip as Ip6Options, up) : ip4Packet(ip as Ip4Options, up);
  return ethernet(o, l3.ethertype, l3.bytes);
}

/** Wraps an L3 payload in Ethernet (and VLAN tags), then pads and truncates. */
export function ethernet(
  o: Pick<FrameOptions, "srcMac" | "dstMac" | "vlans" | "padTo" | "truncate">,
  ethertype: number,
  payload: Uint8Array,
): Uint8Array {
  const tags = o.vlans ?? [];
  const head = new Uint8Array(14 + 4 * tags.length);
  const v = new DataView(head.buffer);
  head.set(mac(o.dstMac ?? "52:54:00:00:00:02"), 0);
  head.set(mac(o.srcMac ?? "52:54:00:00:00:01"), 6);
  let at = 12;
  for (const tag of tags) {
    v.setUint16(at, tag.tpid ?? 0x8100);
    v.setUint16(at + 2, ((tag.pcp ?? 0) << 13) | (tag.vid & 0xfff));
    at += 4;
  }
  v.setUint16(at, ethertype);
  let out = concat(head, payload);
  if (o.padTo !== undefined && out.length < o.padTo) {
    const padded = new Uint8Array(o.padTo);
    padded.set(out);
    out = padded;
  }
  if (o.truncate !== undefined) out = out.slice(0, o.truncate);
  return out;
}

/** An ARP request frame (padded to 60 bytes). */
export function arp(senderIp = "10.0.0.1", targetIp = "10.0.0.2"): Uint8Array {
  const a = new Uint8Array(28);
  const v = new DataView(a.buffer);
  v.setUint16(0, 1);
  v.setUint16(2, 0x0800);
  a[4] = 6;
  a[5] = 4;
  v.setUint16(6, 1);
  a.set(mac("52:54:00:00:00:01"), 8);
  a.set(ip4(senderIp), 14);
  a.set(ip4(targetIp), 24);
  return ethernet({ dstMac: "ff:ff:ff:ff:ff:ff", padTo: 60 }, 0x0806, a);
}

/** Prefixes a frame with `vnetLen` bytes of virtio-net header (filled with `fill`). */
export function withVnet(f: Uint8Array, vnetLen: number, fill = 0): Uint8Array {
  const out = new Uint8Array(vnetLen + f.length);
  out.fill(fill, 0, vnetLen);
  out.set(f, vnetLen);
  return out;
}

/**
 * Frames `data` for a colo chardev stream: u32 BE length, then (with `vnetLen` given) a u32
 * BE vnet length, then the bytes.
 */
export function framed(data: Uint8Array, vnetLen?: number): Uint8Array {
  const head = new Uint8Array(vnetLen === undefined ? 4 : 8);
  const v = new DataView(head.buffer);
  v.setUint32(0, data.length);
  if (vnetLen !== undefined) v.setUint32(4, vnetLen);
  return concat(head, data);
}

/** Frames an ASCII notify message (no vnet word, no NUL). */
export function notifyMessage(text: string): Uint8Array {
  return framed(encoder.encode(text));
}

/** Deterministic pseudo-random bytes (xorshift32) for payloads. */
export function pseudoRandomBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}
