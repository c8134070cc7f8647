/**
 * Simulated guest output for the demo: realistic server-side conversations (HTTP-like TCP,
 * DNS-like UDP, ICMP echo replies) as a primary and a secondary VM would send them. Both VMs
 * produce the same bytes, but the secondary segments its TCP streams differently, acknowledges
 * at other moments and numbers its IP packets differently, as a real replica does.
 *
 * @module
 */

import { frame, TCP } from "../packet/build.ts";

/** A small deterministic PRNG (xorshift32), so every demo run is the same. */
export class Rng {
  #x: number;
  constructor(seed: number) {
    this.#x = seed >>> 0 || 1;
  }
  /** A float in [0, 1). */
  next(): number {
    let x = this.#x;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#x = x >>> 0;
    return this.#x / 0x100000000;
  }
  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  /** Random bytes. */
  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = this.int(0, 255);
    return b;
  }
}

/** One frame a simulated VM sends. */
export interface GuestFrame {
  conversation: number;
  bytes: Uint8Array;
  /** For the latency figure: primary data frames name the secondary frame that completes them. */
  completedBy?: number;
  /** Index in its side's list within the conversation. */
  index: number;
  /** TCP: the sequence number and payload length. */
  seq?: number;
  len?: number;
}

/** Both VMs' output for one exchange with one client. */
export interface Conversation {
  id: number;
  kind: "tcp" | "udp" | "icmp" | "ntp";
  label: string;
  primary: GuestFrame[];
  secondary: GuestFrame[];
  /** True when the two VMs really disagree (the demo's one divergence). */
  divergent: boolean;
}

const SERVER = "10.0.0.10";
const SERVER_MAC = "52:54:00:12:34:56";
const CLIENT_MAC = "52:54:00:ab:cd:ef";

function clientIp(n: number): string {
  return `192.168.${1 + ((n >> 8) & 0x3f)}.${1 + (n & 0xff) % 250}`;
}

/**
 * What the two simulated VMs keep between conversations: IP identification counters (the
 * replicas number their packets independently) and how their NICs pad short frames.
 */
export class Guests {
  primary = 0x1000;
  secondary = 0x7000;
  /** Ethernet minimum frame size the NICs pad to, or undefined for no padding. */
  readonly padTo: number | undefined;

  constructor(options: { pad?: boolean } = {}) {
    this.padTo = options.pad === false ? undefined : 60;
  }
}

function tcpConversation(id: number, rng: Rng, ids: Guests): Conversation {
  const client = clientIp(id);
  const cport = 40000 + id;
  const isn = rng.int(0, 0xffffffff);
  let clientSeq = rng.int(0, 0xffffffff);
  const requests = rng.int(1, 3);
  const responses: { ack: number; body: Uint8Array }[] = [];
  clientSeq = (clientSeq + 1) >>> 0; // the client's SYN
  const synAck = clientSeq;
  for (let r = 0; r < requests; r++) {
    clientSeq = (clientSeq + rng.int(80, 600)) >>> 0; // the request, received by both VMs
    responses.push({ ack: clientSeq, body: rng.bytes(rng.int(200, 24000)) });
  }
  const build = (side: "primary" | "secondary", style: Rng): GuestFrame[] => {
    const out: GuestFrame[] = [];
    const seg = (seq: number, ack: number, flags: number, payload?: Uint8Array) =>
      out.push({
        conversation: id,
        index: out.length,
        seq: seq >>> 0,
        len: payload?.length ?? 0,
        bytes: frame({
          srcMac: SERVER_MAC,
          dstMac: CLIENT_MAC,
          ip: {
            src: SERVER,
            dst: client,
            id: side === "primary" ? ids.primary++ : ids.secondary++,
          },
          tcp: {
            sport: 80,
            dport: cport,
            seq: seq >>> 0,
            ack,
            flags,
            window: side === "primary" ? 64240 : 65160,
            payload,
          },
          padTo: ids.padTo,
        }),
      });
    seg(isn, synAck, TCP.SYN | TCP.ACK);
    let seq = (isn + 1) >>> 0;
    for (const { ack, body } of responses) {
      // The primary acknowledges the request at once; the secondary mostly piggybacks.
      if (side === "primary" ? style.next() < 0.7 : style.next() < 0.2) seg(seq, ack, TCP.ACK);
      // The primary sends MSS-sized segments; the secondary's segments vary (GSO, timing).
      for (let o = 0; o < body.length;) {
        const n = Math.min(body.length - o, side === "primary" ? 1448 : style.int(300, 2896));
        const last = o + n === body.length;
        seg(seq + o, ack, TCP.ACK | (last ? TCP.PSH : 0), body.subarray(o, o + n));
        o += n;
      }
      seq = (seq + body.length) >>> 0;
    }
    seg(seq, responses[responses.length - 1].ack, TCP.FIN | TCP.ACK);
    return out;
  };
  const primary = build("primary", new Rng(rng.int(1, 1e9)));
  const secondary = build("secondary", new Rng(rng.int(1, 1e9)));
  linkCompletions(primary, secondary);
  return {
    id,
    kind: "tcp",
    label: `tcp ${SERVER}:80 > ${client}:${cport}`,
    primary,
    secondary,
    divergent: false,
  };
}

/** For each primary data segment, the secondary segment that holds its last byte. */
function linkCompletions(primary: GuestFrame[], secondary: GuestFrame[]): void {
  for (const p of primary) {
    if (!p.len) continue;
    const last = (p.seq! + p.len - 1) >>> 0;
    const i = secondary.findIndex((s) => s.len! > 0 && ((last - s.seq!) >>> 0) < s.len!);
    if (i >= 0) p.completedBy = i;
  }
}

function datagramConversation(
  id: number,
  kind: "udp" | "icmp" | "ntp",
  rng: Rng,
  ids: Guests,
): Conversation {
  const client = clientIp(id);
  const cport = 40000 + id;
  const payload = kind === "icmp" ? rng.bytes(56) : rng.bytes(rng.int(40, 480));
  const build = (side: "primary" | "secondary", body: Uint8Array): GuestFrame[] => [{
    conversation: id,
    index: 0,
    completedBy: 0,
    bytes: frame({
      srcMac: SERVER_MAC,
      dstMac: CLIENT_MAC,
      ip: { src: SERVER, dst: client, id: side === "primary" ? ids.primary++ : ids.secondary++ },
      ...(kind === "icmp"
        ? { icmp: { type: 0, id: id & 0xffff, seq: 1, payload: body } }
        : { udp: { sport: kind === "ntp" ? 123 : 53, dport: cport, payload: body } }),
      padTo: ids.padTo,
    }),
  }];
  let secondaryBody = payload;
  if (kind === "ntp") {
    // The transmit timestamp comes from each VM's own clock: the replicas really differ.
    secondaryBody = payload.slice();
    secondaryBody[payload.length - 1] ^= 0x5a;
  }
  const label = kind === "icmp"
    ? `icmp ${SERVER} > ${client}`
    : `udp ${SERVER}:${kind === "ntp" ? 123 : 53} > ${client}:${cport}`;
  return {
    id,
    kind,
    label,
    primary: build("primary", payload),
    secondary: build("secondary", secondaryBody),
    divergent: kind === "ntp",
  };
}

/** `count` ordinary (matching) conversations, numbered from `firstId`. */
export function conversations(
  firstId: number,
  count: number,
  rng: Rng,
  ids: Guests,
): Conversation[] {
  const list: Conversation[] = [];
  for (let i = 0; i < count; i++) {
    const id = firstId + i;
    const r = rng.next();
    if (r < 0.5) list.push(tcpConversation(id, rng, ids));
    else if (r < 0.88) list.push(datagramConversation(id, "udp", rng, ids));
    else list.push(datagramConversation(id, "icmp", rng, ids));
  }
  return list;
}

/** The demo's one real divergence: an NTP reply whose timestamp differs between the VMs. */
export function divergentConversation(id: number, rng: Rng, ids: Guests): Conversation {
  return datagramConversation(id, "ntp", rng, ids);
}

/**
 * Merges the conversations' frames for one VM the way a guest's scheduler would: up to
 * `window` conversations in flight at once, each one's frames in order.
 */
export function interleave(
  list: Conversation[],
  side: "primary" | "secondary",
  window: number,
  rng: Rng,
): GuestFrame[] {
  const out: GuestFrame[] = [];
  const active: { frames: GuestFrame[]; next: number }[] = [];
  let nextConversation = 0;
  while (nextConversation < list.length || active.length > 0) {
    while (active.length < window && nextConversation < list.length) {
      active.push({ frames: list[nextConversation++][side], next: 0 });
    }
    const i = rng.int(0, active.length - 1);
    const a = active[i];
    out.push(a.frames[a.next++]);
    if (a.next === a.frames.length) active.splice(i, 1);
  }
  return out;
}
