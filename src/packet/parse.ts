/**
 * Classifying a frame (SPEC 4) and building its connection key (SPEC 5), in place: the parser
 * reads the frame's own bytes and fills a reused {@linkcode FrameInfo}, so the hot path
 * allocates nothing.
 *
 * @module
 */

import type { Seq32 } from "./seq.ts";

/** QEMU refuses vnet headers longer than `virtio_net_hdr_v1_hash`. */
export const MAX_VNET_HDR_LEN = 20;

/** What the comparator does with a frame. */
export type FrameKind = typeof UNSUPPORTED | typeof TCP_SEGMENT | typeof DATAGRAM;
/** Not comparable: passed through from the primary, dropped from the secondary. */
export const UNSUPPORTED = 0;
/** A TCP segment: compared as part of its connection's byte stream. */
export const TCP_SEGMENT = 1;
/** Any other IP packet: compared whole, by its IP payload. */
export const DATAGRAM = 2;

/** Why a frame is not comparable; the class it is counted and logged under. */
export type UnsupportedReason =
  | "runt"
  | "vnet-header"
  | "not-ip"
  | "vlan-stack"
  | "bad-ipv4-header"
  | "bad-ipv6-header"
  | "truncated-transport"
  | "neighbour-discovery"
  | "multicast-listener-discovery";

/** IP protocol numbers the key and the comparison care about. */
export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_DCCP = 33;
export const IPPROTO_ESP = 50;
export const IPPROTO_AH = 51;
export const IPPROTO_ICMPV6 = 58;
export const IPPROTO_SCTP = 132;
export const IPPROTO_UDPLITE = 136;

/** Largest key: flags, protocol, two VLAN ids, ports, two IPv6 addresses. */
export const KEY_MAX = 10 + 32;

/** Key byte 0: IP version in the low bits, this bit for IPv6 fragments. */
export const KEY_FRAGMENT = 0x80;

/** TCP FIN and RST: a side closed its direction (connections are then forgotten, SPEC 8). */
export const TH_FIN = 0x01;
export const TH_SYN = 0x02;
export const TH_RST = 0x04;

/**
 * The parse of one frame; one instance is reused for every frame. Offsets are positions in
 * the array parsed (the frame may lie inside a larger buffer, see `parseFrameAt`).
 */
export class FrameInfo {
  kind: FrameKind = UNSUPPORTED;
  reason: UnsupportedReason = "runt";
  /** 4 or 6. */
  ipVersion = 0;
  /** Upper-layer protocol (after IPv6 extension headers). */
  proto = 0;
  /** Offset of the IP header in the frame (after vnet header, Ethernet and VLAN tags). */
  l3 = 0;
  /** Offset of the upper-layer header: the start of the compared IP payload. */
  l4 = 0;
  /** End of the IP payload (IP total length); Ethernet padding lies beyond it. */
  ipEnd = 0;
  /**
   * True for IPv6 fragments (a fragment header): no transport header is assumed. IPv4
   * fragments are parsed as whole packets, as QEMU parses them.
   */
  fragment = false;
  /** TCP only: sequence and acknowledgement numbers, flags, payload offset and length. */
  seq: Seq32 = -0;
  ack: Seq32 = -0;
  flags = 0;
  payload = 0;
  payloadLen = 0;
  /** Connection key bytes (first `keyLen` bytes valid); the table hashes them when it must. */
  readonly key = new Uint8Array(KEY_MAX);
  keyLen = 0;
}

function u16(f: Uint8Array, at: number): number {
  return (f[at] << 8) | f[at + 1];
}

function u32(f: Uint8Array, at: number): number {
  return ((f[at] << 24) | (f[at + 1] << 16) | (f[at + 2] << 8) | f[at + 3]) >>> 0;
}

function isVlanTpid(t: number): boolean {
  return t === 0x8100 || t === 0x88a8 || t === 0x9100;
}

/**
 * IPv6's link-level control, ICMPv6 neighbour discovery (router and neighbour solicitations and
 * advertisements, redirects: types 133-137, IPv6's ARP) and multicast listener discovery
 * (queries and reports: 130-132 and 143, IPv6's IGMP), is not compared, as ARP is not (SPEC 4).
 * A secondary QEMU makes its guest announce itself after every checkpoint it loads (virtio-net's
 * post-load resets the announce timer; the guest's `netdev_notify_peers`): gratuitous ARPs,
 * unsolicited neighbour advertisements and MLD reports that the primary never sends. Compared,
 * each of them timed out into a checkpoint, which made the secondary announce again: a
 * checkpoint every compare-timeout + expired-scan-cycle for as long as COLO ran (the lab's
 * `--guest-announce`). Null for any other ICMPv6 message.
 */
function linkControl(frame: Uint8Array, l4: number, ipEnd: number): UnsupportedReason | null {
  if (l4 >= ipEnd) return null;
  const type = frame[l4];
  if (type >= 133 && type <= 137) return "neighbour-discovery";
  if ((type >= 130 && type <= 132) || type === 143) return "multicast-listener-discovery";
  return null;
}

/** The outer tags of QinQ: a service tag, then one 802.1Q tag (SPEC 4). */
function isServiceTpid(t: number): boolean {
  return t === 0x88a8 || t === 0x9100;
}

function unsupported(info: FrameInfo, reason: UnsupportedReason): FrameKind {
  info.kind = UNSUPPORTED;
  info.reason = reason;
  return UNSUPPORTED;
}

/**
 * Parses `frame` (which starts with `vnetLen` bytes of virtio-net header) into `info` and
 * returns its kind. Every offset is bounds-checked: no frame, however malformed, reads past
 * its end.
 */
export function parseFrame(frame: Uint8Array, vnetLen: number, info: FrameInfo): FrameKind {
  return parseFrameAt(frame, 0, frame.length, vnetLen, info);
}

/**
 * {@linkcode parseFrame} for the frame `bytes[at, at + size)`, read where it lies (a read
 * buffer: no view per frame, issue 11). The offsets in `info` are positions in `bytes`.
 */
export function parseFrameAt(
  frame: Uint8Array,
  at: number,
  size: number,
  vnetLen: number,
  info: FrameInfo,
): FrameKind {
  if (vnetLen > MAX_VNET_HDR_LEN || vnetLen > size) return unsupported(info, "vnet-header");
  // Every bound below is checked against the frame's end, not the array's.
  const end = at + size;
  let off = at + vnetLen + 12;
  if (end < off + 2) return unsupported(info, "runt");
  let type = u16(frame, off);
  off += 2;
  let outer = 0;
  let inner = 0;
  if (isVlanTpid(type)) {
    // One 802.1Q tag, or a service tag and then one 802.1Q tag; other stacks are not
    // compared (QEMU too reads a service tag followed by another as no IP frame).
    if (end < off + 4) return unsupported(info, "runt");
    const service = isServiceTpid(type);
    outer = 0x1000 | (u16(frame, off) & 0xfff);
    type = u16(frame, off + 2);
    off += 4;
    if (service && type === 0x8100) {
      if (end < off + 4) return unsupported(info, "runt");
      inner = 0x1000 | (u16(frame, off) & 0xfff);
      type = u16(frame, off + 2);
      off += 4;
    }
    if (isVlanTpid(type)) return unsupported(info, "vlan-stack");
  }
  info.l3 = off;
  const key = info.key;
  let keyLen: number;
  let proto: number;
  let l4: number;
  let ipEnd: number;
  let fragment = false;
  if (type === 0x0800) {
    if (end < off + 20) return unsupported(info, "bad-ipv4-header");
    const vihl = frame[off];
    const hl = (vihl & 0x0f) << 2;
    const total = u16(frame, off + 2);
    if ((vihl >> 4) !== 4 || hl < 20 || total < hl || off + total > end) {
      return unsupported(info, "bad-ipv4-header");
    }
    proto = frame[off + 9];
    // Fragments are not told apart: as in QEMU, each is keyed and compared as the packet it
    // looks like (a later fragment's "ports" are its first bytes), so that both replicas'
    // fragments meet where QEMU's do.
    l4 = off + hl;
    ipEnd = off + total;
    info.ipVersion = 4;
    key[0] = 4;
    for (let i = 0; i < 8; i++) key[10 + i] = frame[off + 12 + i];
    keyLen = 18;
  } else if (type === 0x86dd) {
    if (end < off + 40 || (frame[off] >> 4) !== 6) return unsupported(info, "bad-ipv6-header");
    ipEnd = off + 40 + u16(frame, off + 4);
    if (ipEnd > end) return unsupported(info, "bad-ipv6-header");
    proto = frame[off + 6];
    l4 = off + 40;
    // Skip hop-by-hop, routing, destination-options and fragment headers.
    for (let n = 0; proto === 0 || proto === 43 || proto === 60 || proto === 44; n++) {
      if (n === 8 || l4 + 8 > ipEnd) return unsupported(info, "bad-ipv6-header");
      const next = frame[l4];
      if (proto === 44) {
        if (u16(frame, l4 + 2) !== 0) fragment = true; // offset or M flag
        l4 += 8;
      } else {
        l4 += (frame[l4 + 1] + 1) << 3;
      }
      proto = next;
    }
    if (l4 > ipEnd) return unsupported(info, "bad-ipv6-header");
    info.ipVersion = 6;
    key[0] = 6;
    for (let i = 0; i < 32; i++) key[10 + i] = frame[off + 8 + i];
    keyLen = 42;
  } else {
    return unsupported(info, "not-ip");
  }
  key[1] = proto;
  key[2] = outer >> 8;
  key[3] = outer;
  key[4] = inner >> 8;
  key[5] = inner;
  key[6] =
    key[7] =
    key[8] =
    key[9] =
      0;
  info.proto = proto;
  info.l4 = l4;
  info.ipEnd = ipEnd;
  info.fragment = fragment;
  info.kind = DATAGRAM;
  if (fragment) {
    // A fragment carries no usable transport header: key it by addresses and protocol only
    // and compare it whole.
    key[0] |= KEY_FRAGMENT;
  } else if (proto === IPPROTO_TCP) {
    // QEMU reads the header's fields wherever they lie in the frame, and takes the data
    // offset as it is, even below 20 bytes (the payload then starts inside the header). So
    // here, where the frame holds them; a header the frame does not hold (QEMU reads past
    // its buffer) passes through. QEMU reads bytes 0-13 only (ports, sequence and ACK
    // numbers, data offset, flags): a shorter transport part that holds them, a later
    // fragment of 14 to 19 bytes say, is compared there, so here too. A data offset that
    // ends past the IP total length but inside the frame (a short later fragment padded to
    // the Ethernet minimum) leaves no payload: a segment without data, held and released as
    // QEMU holds and releases it (QEMU takes the padding after it for data, SPEC 9).
    if (l4 + 14 > end) return unsupported(info, "truncated-transport");
    const doff = (frame[l4 + 12] >> 4) << 2;
    if (l4 + doff > end) return unsupported(info, "truncated-transport");
    for (let i = 0; i < 4; i++) key[6 + i] = frame[l4 + i];
    info.seq = u32(frame, l4 + 4);
    info.ack = u32(frame, l4 + 8);
    info.flags = frame[l4 + 13];
    info.payload = l4 + doff;
    info.payloadLen = Math.max(0, ipEnd - (l4 + doff));
    info.kind = TCP_SEGMENT;
  } else if (
    proto === IPPROTO_UDP || proto === IPPROTO_UDPLITE || proto === IPPROTO_SCTP ||
    proto === IPPROTO_DCCP || proto === IPPROTO_ESP
  ) {
    // Ports (ESP: the SPI) are the first four bytes of the transport header, read where the
    // frame holds them, as QEMU reads them (past the IP total length too).
    if (l4 + 4 > end) return unsupported(info, "truncated-transport");
    for (let i = 0; i < 4; i++) key[6 + i] = frame[l4 + i];
  } else if (proto === IPPROTO_AH) {
    if (l4 + 8 > end) return unsupported(info, "truncated-transport");
    for (let i = 0; i < 4; i++) key[6 + i] = frame[l4 + 4 + i];
  } else if (proto === IPPROTO_ICMPV6 && info.ipVersion === 6) {
    const control = linkControl(frame, l4, ipEnd);
    if (control !== null) return unsupported(info, control);
  }
  info.keyLen = keyLen;
  return info.kind;
}

/**
 * The key hash's secret: 64 random bits per process. Without one, whoever picks a few bytes of
 * many keys (a guest its destination ports, a client the interface id of its IPv6 address) could
 * give them all one hash, and every lookup, admission and eviction would walk one long chain
 * (SPEC 8: O(1) however full the table).
 */
const SECRET = crypto.getRandomValues(new Uint32Array(2));
const K0 = SECRET[0] | 0;
const K1 = SECRET[1] | 0;

/** `hashKey`'s key assembled into 32-bit words (little-endian, as a view reads them there). */
const keyWords = new Uint32Array(Math.ceil(KEY_MAX / 4));

/**
 * The hash of a connection key (its first `len` bytes), 30 bits: HalfSipHash-1-3 (SipHash on
 * 32-bit words, as Linux's `hsiphash` keys its hash tables) keyed with {@linkcode SECRET}, so
 * no set of keys collides whatever the process's secret. About 30 ns for an IPv4 key; the key
 * cache hashes only frames its guesses miss (a new connection, one out of turn).
 * {@linkcode hashKeyWords} is the same hash read through a 32-bit view.
 */
export function hashKey(key: Uint8Array, len: number): number {
  const whole = len >>> 2;
  for (let w = 0, i = 0; w < whole; w++, i += 4) {
    keyWords[w] = key[i] | (key[i + 1] << 8) | (key[i + 2] << 16) | (key[i + 3] << 24);
  }
  return hashKeyWords(keyWords, key, len);
}

/**
 * {@linkcode hashKey} of `key`'s first `len` bytes, with `words` a 32-bit view of the same
 * bytes (from `key[0]` on). Only on little-endian hosts (see {@linkcode LITTLE_ENDIAN}), where
 * a view's word is the word `hashKey` assembles. One compression round per word, the last word
 * the tail bytes under the length, then three finishing rounds.
 */
export function hashKeyWords(words: Uint32Array, key: Uint8Array, len: number): number {
  const whole = len >>> 2;
  let v0 = K0;
  let v1 = K1;
  let v2 = 0x6c796765 ^ K0;
  let v3 = 0x74656462 ^ K1;
  let m = 0;
  for (let r = 0; r < whole + 4; r++) {
    if (r < whole) m = words[r];
    else if (r === whole) {
      m = len << 24;
      for (let i = whole << 2, shift = 0; i < len; i++, shift += 8) m |= key[i] << shift;
    } else if (r === whole + 1) {
      m = 0;
      v2 ^= 0xff;
    }
    v3 ^= m;
    v0 = (v0 + v1) | 0;
    v1 = ((v1 << 5) | (v1 >>> 27)) ^ v0;
    v0 = (v0 << 16) | (v0 >>> 16);
    v2 = (v2 + v3) | 0;
    v3 = ((v3 << 8) | (v3 >>> 24)) ^ v2;
    v0 = (v0 + v3) | 0;
    v3 = ((v3 << 7) | (v3 >>> 25)) ^ v0;
    v2 = (v2 + v1) | 0;
    v1 = ((v1 << 13) | (v1 >>> 19)) ^ v2;
    v2 = (v2 << 16) | (v2 >>> 16);
    v0 ^= m;
  }
  return (v1 ^ v3) & 0x3fffffff;
}

/** True when a 32-bit typed array reads its bytes little-endian (every host Deno runs on). */
export const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

const PROTO_NAMES: Record<number, string> = {
  [IPPROTO_ICMP]: "icmp",
  [IPPROTO_TCP]: "tcp",
  [IPPROTO_UDP]: "udp",
  [IPPROTO_DCCP]: "dccp",
  47: "gre",
  [IPPROTO_ESP]: "esp",
  [IPPROTO_AH]: "ah",
  [IPPROTO_ICMPV6]: "icmpv6",
  [IPPROTO_SCTP]: "sctp",
  [IPPROTO_UDPLITE]: "udplite",
};

/** The name logs use for an IP protocol number. */
export function protoName(proto: number): string {
  return PROTO_NAMES[proto] ?? `proto-${proto}`;
}

function addressText(key: Uint8Array, at: number, v6: boolean): string {
  if (!v6) return `${key[at]}.${key[at + 1]}.${key[at + 2]}.${key[at + 3]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((key[at + i] << 8) | key[at + i + 1]).toString(16));
  // Compress the longest run of zero groups, as RFC 5952 does.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== "0") {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  if (best < 0) return `[${groups.join(":")}]`;
  return `[${groups.slice(0, best).join(":")}::${groups.slice(best + bestLen).join(":")}]`;
}

/**
 * A connection key as operators read it: `tcp 10.0.0.1:80 > 10.0.0.2:40000`, with
 * `vlan=10` / `vlan=10.20` and `fragments` where they apply.
 */
export function describeKey(key: Uint8Array): string {
  const v6 = (key[0] & 0x0f) === 6;
  const proto = key[1];
  const src = addressText(key, 10, v6);
  const dst = addressText(key, v6 ? 26 : 14, v6);
  const sp = (key[6] << 8) | key[7];
  const dp = (key[8] << 8) | key[9];
  const outer = ((key[2] << 8) | key[3]) & 0xfff;
  const inner = ((key[4] << 8) | key[5]) & 0xfff;
  const hasOuter = (key[2] & 0x10) !== 0;
  const hasInner = (key[4] & 0x10) !== 0;
  const withPorts = (key[0] & KEY_FRAGMENT) === 0 &&
    (proto === IPPROTO_TCP || proto === IPPROTO_UDP || proto === IPPROTO_UDPLITE ||
      proto === IPPROTO_SCTP || proto === IPPROTO_DCCP);
  const spi = (key[0] & KEY_FRAGMENT) === 0 && (proto === IPPROTO_ESP || proto === IPPROTO_AH);
  let text = withPorts
    ? `${protoName(proto)} ${src}:${sp} > ${dst}:${dp}`
    : `${protoName(proto)} ${src} > ${dst}`;
  if (spi) text += ` spi=0x${(((sp << 16) | dp) >>> 0).toString(16)}`;
  if (hasOuter) text += hasInner ? ` vlan=${outer}.${inner}` : ` vlan=${outer}`;
  if ((key[0] & KEY_FRAGMENT) !== 0) text += " fragments";
  return text;
}
