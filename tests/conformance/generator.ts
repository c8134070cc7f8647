/**
 * Seeded random conversations for the differential run: several TCP connections carrying the
 * same byte streams segmented differently (or alike) on each side, ACKs advancing at
 * different moments on each side, pure ACKs on one side or both, retransmissions, segments
 * delivered out of order, interleaved UDP, ICMP and GRE exchanges, ARP noise, occasional real
 * divergence followed by a checkpoint, Xen INITs. The result is an ordinary scenario (frames
 * as builder options), so a failing seed can be saved and replayed as a file.
 *
 * The conversations stay inside the behaviour QEMU 7.2 and we share; they avoid what SPEC 9
 * (and the rows this suite proposes) lets the two differ on:
 * - at most one held primary per datagram connection, and a datagram connection that
 *   diverged gets no more frames until the next checkpoint (QEMU compares and flushes
 *   non-TCP queues newest-first);
 * - ACK numbers never decrease on a side (segments delivered out of order carry the same
 *   ACK) and stay far from 2^32 (QEMU keeps the latest ACK and takes a numeric minimum);
 * - no Ethernet padding, no VLAN, no IPv6, no "other" protocol with differing IP headers;
 * - no TCP segment ends exactly at sequence 0 (QEMU reads compare_seq 0 as unset);
 * - no timers: compare-timeout is far longer than a run, so only mismatches ask for
 *   checkpoints (a fully matched secondary segment that QEMU keeps never times out);
 * - queues far below max-queue-size (QEMU counts the segments it keeps).
 *
 * @module
 */

import type { FrameSpec, Scenario, Step } from "./scenario.ts";

/** mulberry32: a small, good enough seeded generator. */
export class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = (seed * 0x9e3779b9) >>> 0 || 1;
  }
  /** A float in [0, 1). */
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)];
  }
}

type Side = "pri" | "sec";

interface TcpSide {
  pos: number;
  ack: number;
  sent: number;
  /** Ranges already sent, for retransmissions. */
  segments: [number, number][];
}

interface TcpConn {
  id: number;
  stream: string;
  length: number;
  isn: number;
  sport: number;
  dport: number;
  ackBase: number;
  /** Bytes the client has sent so far (each side acks them at its own moment). */
  client: number;
  pri: TcpSide;
  sec: TcpSide;
  blocked: boolean;
  finished: boolean;
}

interface DatagramFlow {
  id: number;
  kind: "udp" | "icmp" | "gre";
  next: number;
  /** Payload ids held in each queue (the model of both implementations). */
  heldP: string[];
  heldS: string[];
  sentS: number;
  /** Messages each side sends in all. */
  budget: number;
  blocked: boolean;
}

interface Event {
  side: Side | "notify";
  label?: string;
  message?: string;
}

/** Builds the scenario of one seed. */
export function randomScenario(seed: number): Scenario {
  const rng = new Rng(seed);
  const frames: Record<string, FrameSpec> = {};
  const streams: Record<string, { random: number; seed: number }> = {};
  const events: Event[] = [];
  let pendingCheckpoint = -1;

  const tcp: TcpConn[] = [];
  const nTcp = rng.int(1, 4);
  for (let i = 0; i < nTcp; i++) {
    const length = rng.chance(0.3) ? rng.int(50, 600) : rng.int(600, 6000);
    const isn = rng.chance(0.25)
      ? (0x100000000 - rng.int(1, length)) >>> 0
      : rng.int(1, 0xfff00000);
    const ackBase = rng.int(1_000_000, 1_500_000_000);
    streams[`t${i}`] = { random: length, seed: seed * 16 + i };
    tcp.push({
      id: i,
      stream: `t${i}`,
      length,
      isn,
      sport: 80 + i,
      dport: rng.int(32768, 60999),
      ackBase,
      client: 0,
      pri: { pos: 0, ack: ackBase, sent: 0, segments: [] },
      sec: { pos: 0, ack: ackBase, sent: 0, segments: [] },
      blocked: false,
      finished: false,
    });
  }
  const flows: DatagramFlow[] = [];
  const nFlows = rng.int(0, 3);
  for (let i = 0; i < nFlows; i++) {
    const kind = rng.pick(["udp", "udp", "icmp", "gre"] as const);
    flows.push({
      id: i,
      kind,
      next: 0,
      heldP: [],
      heldS: [],
      sentS: 0,
      budget: rng.int(3, 30),
      blocked: false,
    });
  }

  const tcpFrame = (
    c: TcpConn,
    side: Side,
    from: number,
    to: number,
    flags: string,
    tag: string,
  ): string => {
    const s = c[side];
    const label = `t${c.id}${side === "pri" ? "p" : "s"}${s.sent++}${tag}`;
    frames[label] = {
      ip: { src: "10.0.0.1", dst: `10.0.1.${c.id + 1}`, id: rng.int(0, 0xffff) },
      tcp: {
        sport: c.sport,
        dport: c.dport,
        isn: c.isn,
        seq: (c.isn + from) >>> 0,
        ack: s.ack,
        flags,
        window: side === "pri" ? 64240 : rng.pick([64240, 501, 29200]),
        payload: to > from ? { stream: c.stream, from, to } : undefined,
      },
    };
    return label;
  };

  // Sequence number of the segment end must never be 0 (see the module comment).
  const endsAtZero = (c: TcpConn, to: number) => ((c.isn + to) >>> 0) === 0;

  const maybeAck = (c: TcpConn, side: Side) => {
    if (rng.chance(0.4)) c[side].ack = c.ackBase + c.client;
  };

  const tcpData = (c: TcpConn, side: Side, ackNow = true): Event[] => {
    const s = c[side];
    const room = c.length - s.pos;
    let size = Math.min(room, rng.chance(0.2) ? rng.int(1, 40) : rng.int(40, 1448));
    // Often both guests cut the stream at the same places (same MSS, same writes).
    const other = c[side === "pri" ? "sec" : "pri"].segments.find(([f]) => f === s.pos);
    if (other && rng.chance(0.5)) size = other[1] - other[0];
    while (size > 1 && endsAtZero(c, s.pos + size)) size--;
    if (size <= 0 || endsAtZero(c, s.pos + size)) return [];
    if (ackNow) maybeAck(c, side);
    const from = s.pos, to = s.pos + size;
    s.pos = to;
    s.segments.push([from, to]);
    const fin = to === c.length && rng.chance(0.5);
    return [{ side, label: tcpFrame(c, side, from, to, fin ? "FPA" : "PA", "") }];
  };

  /** Two data segments of one side delivered in the wrong order (with the same ACK). */
  const tcpOutOfOrder = (c: TcpConn, side: Side): Event[] => {
    maybeAck(c, side);
    const first = tcpData(c, side, false);
    const second = tcpData(c, side, false);
    return [...second, ...first];
  };

  /** A pure ACK on one side only (the two guests ACK at different moments). */
  const tcpLoneAck = (c: TcpConn, side: Side): Event[] => {
    maybeAck(c, side);
    return [{ side, label: tcpFrame(c, side, c[side].pos, c[side].pos, "A", "ack") }];
  };

  /** A primary segment sent again on its own (a retransmission only the primary makes). */
  const tcpLoneRetransmission = (c: TcpConn, side: Side): Event[] => {
    if (c[side].segments.length === 0) return [];
    const [from, to] = rng.pick(c[side].segments.slice(-4));
    maybeAck(c, side);
    return [{ side, label: tcpFrame(c, side, from, to, "PA", "re") }];
  };

  /** A primary frame with no new bytes, after its secondary twin. */
  const tcpNoNewBytes = (c: TcpConn): Event[] => {
    const kind = rng.pick(["ack", "ack", "retransmit"] as const);
    maybeAck(c, "sec");
    maybeAck(c, "pri");
    if (kind === "ack") {
      return [
        { side: "sec", label: tcpFrame(c, "sec", c.sec.pos, c.sec.pos, "A", "ack") },
        { side: "pri", label: tcpFrame(c, "pri", c.pri.pos, c.pri.pos, "A", "ack") },
      ];
    }
    // Retransmit a range both sides already sent the same way.
    const common = c.pri.segments.filter(([f, t]) =>
      t <= c.sec.pos && c.sec.segments.some(([g, u]) => g === f && u === t)
    );
    if (common.length === 0) return [];
    const [from, to] = rng.pick(common);
    return [
      { side: "sec", label: tcpFrame(c, "sec", from, to, "PA", "re") },
      { side: "pri", label: tcpFrame(c, "pri", from, to, "PA", "re") },
    ];
  };

  const diverge = (c: TcpConn): Event[] => {
    // The secondary sends other bytes for its next range: a real difference.
    const s = c.sec;
    const size = Math.min(c.length - s.pos, rng.int(1, 600));
    if (size <= 0 || endsAtZero(c, s.pos + size)) return [];
    const label = tcpFrame(c, "sec", s.pos, s.pos + size, "PA", "x");
    frames[label].tcp!.payload = { random: size, seed: seed * 1000 + s.sent };
    s.pos += size;
    c.blocked = true;
    return [{ side: "sec", label }];
  };

  const datagram = (f: DatagramFlow, side: Side, corrupt: boolean): Event[] => {
    const n = side === "pri" ? f.next++ : f.sentS++;
    const id = corrupt ? `x${n}` : `${n}`;
    const label = `${f.kind[0]}${f.id}${side === "pri" ? "p" : "s"}${n}${corrupt ? "x" : ""}`;
    const text = `${f.kind}-${f.id}-msg-${id}-` + "z".repeat((n * 7 + f.id * 13) % 90);
    const ip = {
      src: "10.0.0.1",
      dst: `10.0.2.${f.id + 1}`,
      id: f.kind === "gre" ? n : rng.int(0, 0xffff),
    };
    frames[label] = f.kind === "udp"
      ? { ip, udp: { sport: 5000 + f.id, dport: 53, payload: text } }
      : f.kind === "icmp"
      ? { ip, icmp: { type: 0, id: f.id, seq: n, payload: text } }
      : {
        ip,
        raw: {
          proto: 47,
          bytes: {
            hex: "00000800" +
              [...text].map((ch) => ch.charCodeAt(0).toString(16).padStart(2, "0")).join(""),
          },
        },
      };
    // The model of both implementations for one datagram connection.
    if (side === "pri") {
      const at = f.heldS.indexOf(id);
      if (at >= 0) f.heldS.splice(at, 1);
      else {
        if (f.heldS.length > 0) f.blocked = true;
        f.heldP.push(id);
      }
    } else {
      f.heldS.push(id);
      if (f.heldP.length > 0) {
        const at = f.heldS.indexOf(f.heldP[0]);
        if (at >= 0) {
          f.heldS.splice(at, 1);
          f.heldP.shift();
        } else f.blocked = true;
      }
    }
    if (corrupt) f.blocked = true;
    return [{ side, label }];
  };

  const checkpoint = (): Event[] => {
    for (const c of tcp) {
      // Both VMs are the same again: the secondary goes on from where the primary is.
      const pos = c.pri.pos;
      c.sec.pos = pos;
      const ack = Math.max(c.pri.ack, c.sec.ack);
      c.pri.ack = c.sec.ack = ack;
      c.blocked = false;
    }
    for (const f of flows) {
      f.heldP = [];
      f.heldS = [];
      f.sentS = Math.max(f.sentS, f.next);
      f.next = f.sentS;
      f.blocked = false;
    }
    pendingCheckpoint = -1;
    return [{ side: "notify", message: "COLO_CHECKPOINT" }];
  };

  // Handshake: SYN-ACKs (no payload; nothing is queued yet, so either order is safe).
  for (const c of tcp) {
    const p = tcpFrame(c, "pri", -1, -1, "SA", "syn");
    const s = tcpFrame(c, "sec", -1, -1, "SA", "syn");
    events.push(
      ...(rng.chance(0.5)
        ? [{ side: "pri" as const, label: p }, { side: "sec" as const, label: s }]
        : [
          { side: "sec" as const, label: s },
          { side: "pri" as const, label: p },
        ]),
    );
  }
  if (rng.chance(0.5)) events.push({ side: "notify", message: "COLO_USERSPACE_PROXY_INIT" });

  // Weighted choice among what can happen next, until every stream and flow is used up.
  let arps = 0;
  for (let n = 0; n < 400; n++) {
    if (pendingCheckpoint >= 0 && n >= pendingCheckpoint) {
      events.push(...checkpoint());
      continue;
    }
    const open = tcp.filter((c) => !c.blocked && !c.finished);
    const live = flows.filter((f) => !f.blocked && (f.next < f.budget || f.sentS < f.budget));
    const work = open.length + live.length;
    if (work === 0) {
      if (pendingCheckpoint >= 0 || tcp.some((c) => c.blocked) || flows.some((f) => f.blocked)) {
        events.push(...checkpoint());
        continue;
      }
      break;
    }
    const choice = rng.next() * (6 * open.length + 3 * live.length + 0.5);
    if (choice < 6 * open.length) {
      const c = rng.pick(open);
      c.client += rng.chance(0.3) ? rng.int(1, 500) : 0;
      const r = rng.next();
      let ev: Event[] = [];
      if (r < 0.05 && pendingCheckpoint < 0) {
        ev = diverge(c);
        if (ev.length) pendingCheckpoint = n + rng.int(1, 6);
      } else if (r < 0.15) {
        ev = tcpNoNewBytes(c);
      } else if (r < 0.19) {
        ev = tcpLoneAck(c, "sec");
      } else if (r < 0.25) {
        ev = tcpOutOfOrder(c, rng.chance(0.5) ? "pri" : "sec");
      } else if (r < 0.29) {
        ev = tcpLoneAck(c, "pri");
      } else if (r < 0.32) {
        ev = tcpLoneRetransmission(c, rng.chance(0.6) ? "pri" : "sec");
      }
      if (ev.length === 0) {
        // Either side, but not too far apart: realistic lag.
        const lead = c.pri.pos - c.sec.pos;
        const side: Side = lead > 3000
          ? "sec"
          : lead < -3000
          ? "pri"
          : rng.chance(0.5)
          ? "pri"
          : "sec";
        ev = tcpData(c, side);
        if (ev.length === 0) ev = tcpData(c, side === "pri" ? "sec" : "pri");
      }
      if (c.pri.pos >= c.length && c.sec.pos >= c.length) c.finished = true;
      events.push(...ev);
    } else if (choice < 6 * open.length + 3 * live.length) {
      const f = rng.pick(live);
      const canPri = f.heldP.length === 0 && f.next < f.budget;
      const canSec = f.sentS < f.budget && f.sentS < f.next + 3;
      const side: Side = canPri && canSec
        ? (rng.chance(0.5) ? "pri" : "sec")
        : canPri
        ? "pri"
        : "sec";
      if (side === "sec" && !canSec) {
        // Nothing this flow can send now without breaking the one-held-primary rule.
        f.blocked = true;
        continue;
      }
      const corrupt = side === "sec" && pendingCheckpoint < 0 && rng.chance(0.05);
      events.push(...datagram(f, side, corrupt));
      if (f.blocked && pendingCheckpoint < 0) pendingCheckpoint = n + rng.int(1, 6);
    } else {
      const r = rng.next();
      if (r < 0.6) {
        const label = `arp${arps++}`;
        frames[label] = { arp: { sender: "10.0.0.1", target: `10.0.3.${arps % 250}` } };
        events.push({ side: rng.chance(0.8) ? "pri" : "sec", label });
      } else if (r < 0.85) {
        events.push(...checkpoint());
      } else {
        events.push({ side: "notify", message: "COLO_USERSPACE_PROXY_INIT" });
      }
    }
  }
  events.push(...checkpoint());

  return {
    name: `random-seed-${seed}`,
    rule: "random conversation: ours must produce QEMU's trace (normalised as in trace.ts)",
    description: `generated by generator.ts from seed ${seed}`,
    options: { compareTimeout: 600_000, expiredScanCycle: 60_000 },
    compareOnly: true,
    streams,
    frames,
    steps: toSteps(events, rng),
  };
}

/** Groups consecutive frames of one side into writes of up to four frames. */
function toSteps(events: Event[], rng: Rng): Step[] {
  const steps: Step[] = [];
  let i = 0;
  while (i < events.length) {
    const e = events[i];
    if (e.side === "notify") {
      steps.push({ ntf: e.message });
      i++;
      continue;
    }
    const batch = [e.label!];
    const max = rng.int(1, 4);
    while (batch.length < max && i + batch.length < events.length) {
      const n = events[i + batch.length];
      if (n.side !== e.side) break;
      batch.push(n.label!);
    }
    i += batch.length;
    steps.push(e.side === "pri" ? { pri: batch } : { sec: batch });
  }
  return steps;
}
