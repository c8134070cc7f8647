/**
 * Seeded random conversations for the differential run: several TCP connections carrying the
 * same byte streams segmented differently (or alike) on each side, ACKs advancing at
 * different moments on each side, pure ACKs on one side or both, retransmissions, segments
 * delivered out of order, sides closing with a FIN on data or a bare FIN or RST, interleaved
 * UDP, ICMP, GRE, SCTP and ESP exchanges, ARP noise, occasional real divergence followed by a
 * checkpoint, Xen INITs. Some UDP flows send their datagrams as IPv4 fragments (mostly alike on
 * both sides; sometimes fragmented differently, or whole on one side, or with only the first
 * fragment on one side), keyed and compared as the packets they look like, as QEMU 7.2 and
 * ours do; in some flows the later fragments of different datagrams share keys, and a
 * diverging secondary may differ inside a later fragment only. Some TCP connections send
 * segments as IPv4 fragments: the first fragment, which holds the TCP header, is a segment
 * whose payload ends at the fragment's end (QEMU and ours take the payload length from the
 * IP total length, or the equal frame length), so the rest of the segment is a gap in that
 * side's stream; each later fragment is a TCP segment of the connection its first four bytes
 * name, with sequence number, ACK and data offset read from its bytes 4-13. Some TCP
 * connections are opened by a SYN without the ACK flag (ACK field 0, or
 * not), carry data segments flagged "P" or "FP" only (ACK field mostly the side's latest,
 * sometimes 0 or another value) or close with a bare "R" or "F" (RSTs also mid-stream, after
 * which that side sends nothing new); their ACK fields count like any other, and the model
 * below leaves out what the two would decide differently. Over that, per seed
 * ({@linkcode decorate}): vnet headers, QinQ or
 * 0x88a8 tags, TCP and IPv4 options, DF/TTL/TOS noise, Ethernet padding (the same on both
 * sides) on the frames that are not TCP, and writes split at random points. The
 * result is an ordinary scenario (frames as builder options), so a failing seed can be saved
 * and replayed as a file.
 *
 * Sequence and ACK numbers often start just below 2^32 and wrap; ACKs decrease when
 * segments that carry different ACKs are delivered out of order or a stale pure ACK comes
 * late; a datagram connection may hold several secondary datagrams at once.
 *
 * The conversations stay inside the behaviour QEMU 7.2 and we share; they avoid what SPEC 9
 * (and the rows this suite proposes) lets the two differ on:
 * - at most one held primary per datagram connection, and a datagram connection that
 *   diverged gets no more frames until the next checkpoint (QEMU compares and flushes
 *   non-TCP queues newest-first);
 * - every TCP frame is checked against a model of QEMU 7.2's TCP comparison
 *   ({@linkcode TcpModel}) and left out when QEMU would compare bytes at different sequence
 *   positions, when its ACK rule (latest ACK of each side, numeric minimum) and ours (highest
 *   ACK in serial order) would decide differently, when its "compared" test and ours (which
 *   counts flushed bytes as compared) disagree (a primary that meets a fully matched secondary
 *   QEMU keeps and we dropped passes alike: we note the drop);
 * - no Ethernet padding on TCP frames (QEMU takes it for payload) and none that differs
 *   between the sides, no 802.1Q outer tag, no IPv6, no "other" protocol with differing IP
 *   headers; IPv4 fragments only for UDP and TCP. UDP: no later fragment is shorter than 8
 *   bytes, and each later fragment's connection (named by its first four bytes, its "ports")
 *   keeps the datagram rules above: a later fragment that would be its second held primary,
 *   or come after a divergence there, is lost instead. TCP: the first fragment holds the
 *   whole header; every later fragment holds the 14 header bytes QEMU reads (ports to
 *   flags; a later fragment of 14 to 19 bytes is a segment too) and the data offset its
 *   byte 12 gives (QEMU reads past a shorter one: no behaviour to compare);
 *   each later fragment's connection has its own {@linkcode TcpModel}, and takes no frames
 *   once both sides sent one there with FIN or RST in its flags byte (the rule for closed
 *   connections below); a QinQ or 0x88a8 tag only the same on every frame (QEMU keys
 *   without VLAN ids), datagram IPv4 options only the same per flow;
 * - TCP segments without the ACK flag go through the same model: QEMU and ours take their ACK
 *   field as they take any other (SPEC 9's row: QEMU the latest, ours the highest);
 * - no TCP segment ends exactly at sequence 0 (QEMU reads compare_seq 0 as unset), later
 *   fragments read as segments included;
 * - no frames on a TCP connection after both VMs sent their FIN or RST (ours forgets a closed
 *   connection once it holds nothing; QEMU keeps it, in its old place in the flush order);
 * - no timers: compare-timeout is far longer than a run, so only mismatches ask for
 *   checkpoints (a fully matched secondary segment that QEMU keeps never times out);
 * - queues: most seeds far below max-queue-size; some run with a max-queue-size of 1 to 8, where
 *   both refuse a frame that finds its queue holding more (its ACK not noted), and a TCP
 *   secondary segment is left out where QEMU would count a fully matched segment it keeps and
 *   we dropped (SPEC 9), so that the two would admit it differently.
 *
 * A secondary SYN-ACK often carries the secondary's own ISN, anywhere in the sequence space
 * (QEMU's filter-rewriter moves the secondary's other segments into the primary's sequence
 * space, not its SYN-ACK), and either side may send its SYN-ACK again later, with its first
 * (stale) ACK field: payload-less segments far from the data in the sequence-ordered queues.
 *
 * Some seeds ("wide") carry hundreds of short TCP connections instead of one to four: more
 * than ours keeps handles for while idle, so most connections go idle and are woken again with
 * the state they had.
 *
 * @module
 */

import { type FrameSpec, type Scenario, type Step, toHex } from "./scenario.ts";
import { pseudoRandomBytes } from "../support/packets.ts";

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

/** One TCP segment as the model sees it: stream offsets, ACK, and whether its bytes differ. */
interface ModelSegment {
  from: number;
  to: number;
  ack: number;
  diverged: boolean;
  offset: number;
}

/**
 * A model of QEMU 7.2's TCP comparison (seed lines 352-501, with 7.2's ACK tracking) for one
 * connection, with the few facts of ours that can differ (see the module comment). Plain data,
 * so a connection's state can be copied and restored when a frame is left out.
 */
interface TcpModel {
  pri: ModelSegment[];
  sec: ModelSegment[];
  /** QEMU's compare_seq and ours (ours also moves past bytes a checkpoint flushed). */
  csQemu: number | null;
  csOurs: number | null;
  /** QEMU: the latest ACK of each side; ours: the highest in serial order. */
  packLatest: number;
  sackLatest: number;
  maxPrimaryAck: number | null;
  maxSecondaryAck: number | null;
}

function newModel(): TcpModel {
  return {
    pri: [],
    sec: [],
    csQemu: null,
    csOurs: null,
    packLatest: 0,
    sackLatest: 0,
    maxPrimaryAck: null,
    maxSecondaryAck: null,
  };
}

/** Serial-number "a comes after b". */
function after(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}

function serialMax(max: number | null, ack: number): number {
  return max === null || after(ack, max) ? ack : max;
}

/**
 * A segment arrives: queue it as QEMU does and run QEMU's comparison. False when QEMU and
 * ours would part (the frame must be left out of the conversation). `maxQueue`: the
 * max-queue-size of a small-queue seed; a queue already holding more refuses the segment (it
 * is lost, its ACK not noted, in QEMU and in ours). Ours may hold one secondary segment fewer:
 * a fully matched one it dropped (SPEC 9) and QEMU keeps; where that makes the two admit
 * differently the segment is left out.
 */
function modelArrive(
  m: TcpModel,
  side: Side,
  seg: ModelSegment,
  maxQueue = Infinity,
): boolean {
  const queue = side === "pri" ? m.pri : m.sec;
  if (queue.length > maxQueue - 1) {
    const matched = side === "sec" && queue.some((s) => s.to > s.from && s.offset >= s.to - s.from);
    const qemuDrops = queue.length > maxQueue;
    const oursDrops = queue.length - (matched ? 1 : 0) > maxQueue;
    if (qemuDrops !== oursDrops) return false;
    if (qemuDrops) return true;
  }
  if (side === "pri") {
    m.packLatest = seg.ack >>> 0;
    m.maxPrimaryAck = serialMax(m.maxPrimaryAck, seg.ack >>> 0);
  } else {
    m.sackLatest = seg.ack >>> 0;
    m.maxSecondaryAck = serialMax(m.maxSecondaryAck, seg.ack >>> 0);
  }
  let i = queue.length;
  while (i > 0 && queue[i - 1].from > seg.from) i--;
  queue.splice(i, 0, { ...seg, offset: 0 });
  return modelCompare(m);
}

/** QEMU's `colo_compare_tcp` loop on the model; false where ours would decide otherwise. */
function modelCompare(m: TcpModel): boolean {
  const compared = (cs: number | null, x: ModelSegment) => cs !== null && x.to <= cs;
  const advance = (to: number) => {
    m.csQemu = to;
    m.csOurs = m.csOurs === null || to > m.csOurs ? to : m.csOurs;
  };
  while (true) {
    const p = m.pri[0];
    const s = m.sec[0];
    if (p === undefined || s === undefined) return true;
    let primaryDone = p.from === p.to;
    if (!primaryDone) {
      primaryDone = compared(m.csQemu, p);
      if (primaryDone !== compared(m.csOurs, p)) return false;
    }
    if (primaryDone) m.pri.shift();
    if (s.from !== s.to && compared(m.csQemu, s) !== compared(m.csOurs, s)) return false;
    if (s.from === s.to || compared(m.csQemu, s)) {
      m.sec.shift();
      continue;
    }
    if (primaryDone) continue;
    const equal = !p.diverged && !s.diverged;
    if (p.from === s.from && p.to === s.to && equal) {
      advance(p.to);
      m.pri.shift();
      m.sec.shift();
      continue;
    }
    if (p.from + p.offset !== s.from + s.offset) return false; // misaligned: SPEC 9
    if (!equal) return true; // a real divergence: both stop and ask for a checkpoint
    if (p.to <= s.to) {
      const qemu = !after(p.ack, Math.min(m.packLatest, m.sackLatest));
      const ours = m.maxSecondaryAck !== null && !after(p.ack, m.maxSecondaryAck) &&
        !after(p.ack, m.maxPrimaryAck!);
      if (qemu !== ours) return false;
      if (!qemu) return true;
      s.offset += p.to - p.from - p.offset;
      advance(p.to);
      m.pri.shift();
      continue;
    }
    p.offset += s.to - s.from - s.offset;
    advance(s.to);
    m.sec.shift();
  }
}

/** A checkpoint flush: queues emptied; ours counts the flushed primary bytes as compared. */
function modelFlush(m: TcpModel): void {
  for (const p of m.pri) {
    if (p.to > p.from && (m.csOurs === null || p.to > m.csOurs)) m.csOurs = p.to;
  }
  m.pri = [];
  m.sec = [];
}

interface TcpConn {
  id: number;
  model: TcpModel;
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
  /**
   * The sides that sent a FIN (1: primary, 2: secondary). Once both have, the connection takes
   * no more frames: ours forgets a connection both VMs closed as soon as it holds nothing, and
   * a frame on it afterwards opens a new one, last in the flush order (SPEC 9's row of
   * forgotten connections; scenario closed-connection-seen-again-flushes-last).
   */
  fins: number;
  /** Frames left out in a row because the model said QEMU and ours would part. */
  leftOut: number;
  /** How often a data segment goes without the ACK flag ("P", "FP"); 0 on most connections. */
  noAck: number;
  /** Opened by the VMs (a SYN with ACK field 0, no ACK flag) rather than answered (SYN-ACK). */
  synOpen: boolean;
  /**
   * Where the secondary's SYN-ACK lies, from the ISN (-1: at the primary's ISN). QEMU's
   * filter-rewriter moves the secondary's segments into the primary's sequence space, but not
   * its SYN-ACK: that one carries the secondary's own ISN, anywhere in the sequence space.
   */
  secSyn: number;
  /** How often a data segment leaves as IPv4 fragments; 0 on most connections. */
  frag: number;
  /** The first-fragment size ("side:from:to" -> bytes, 0: whole) each side used per range. */
  fragSizes: Map<string, number>;
  /**
   * The connections later fragments open (keyed by their first four bytes, read as ports):
   * each is a TCP connection of its own in QEMU and in ours, compared on the model too.
   */
  fragConns: Map<string, FragConn>;
}

/**
 * A connection of later TCP fragments: they parse as segments whose sequence number, ACK,
 * data offset and flags are bytes 4-13 of the fragment. `base` is the first sequence number
 * seen (the model counts from it); `fins` the sides whose fragment had FIN or RST set (ours
 * forgets the connection once both did and it holds nothing, as for any TCP connection).
 */
interface FragConn {
  model: TcpModel;
  base: number;
  fins: number;
}

interface DatagramFlow {
  id: number;
  kind: "udp" | "icmp" | "gre" | "sctp" | "esp";
  next: number;
  /** Payload ids held in each queue (the model of both implementations). */
  heldP: string[];
  heldS: string[];
  sentS: number;
  /** Messages each side sends in all. */
  budget: number;
  blocked: boolean;
  /** UDP only: datagrams are built as blocks that may be sent as IPv4 fragments. */
  frag: boolean;
  /** How each message is sent by each side (fragment size, 0 for whole; the rest sent). */
  shapes: Map<number, FragShape>;
  /**
   * Fragmenting flows: later fragments start with (flow, block) only, not the message, so
   * that the later fragments of different datagrams at the same offset share one key.
   */
  sharedKeys: boolean;
  /** The connections of later fragments, by their first four bytes (hex). */
  later: Map<string, DatagramQueue>;
}

/** The model of one datagram connection: payload ids held on each side. */
interface DatagramQueue {
  heldP: string[];
  heldS: string[];
  /** Diverged (or about to compare newest-first): no more frames until the next checkpoint. */
  blocked: boolean;
}

/**
 * How one UDP datagram leaves each VM: whole (size 0) or as IPv4 fragments of `size` bytes of
 * IP payload; `rest` false sends the first fragment only (the others lost).
 */
interface FragShape {
  pri: number;
  sec: number;
  priRest: boolean;
  secRest: boolean;
}

interface Event {
  side: Side | "notify";
  label?: string;
  message?: string;
}

/**
 * Datagram flows of "other" protocols: their number and the bytes before the message (GRE's
 * header; SCTP's ports and ESP's SPI, which are part of the key).
 */
const RAW_PROTOCOLS: Record<string, { proto: number; head: (id: number) => string }> = {
  gre: { proto: 47, head: () => "00000800" },
  sctp: { proto: 132, head: (id) => (0x0bb80000 + id).toString(16).padStart(8, "0") },
  esp: { proto: 50, head: (id) => (0x00001000 + id).toString(16).padStart(8, "0") + "00000001" },
};

/**
 * IP payload bytes of a TCP segment's first fragment (multiples of 8; at least 24, so that
 * the 20-byte header fits with some payload).
 */
const TCP_FRAGMENT_SIZES = [24, 32, 40, 64, 136, 512];

const TCP_FLAG_BITS: Record<string, number> = { F: 1, S: 2, R: 4, P: 8, A: 16, U: 32 };

/** A later TCP fragment as QEMU and ours read it: "ports", sequence number, payload length. */
interface LaterFragment {
  key: string;
  seq: number;
  len: number;
  /** Its flags byte has FIN or RST set. */
  closes: boolean;
}

/** IP payload bytes per fragment (multiples of 8) for fragmenting UDP flows. */
const FRAGMENT_SIZES = [16, 24, 32, 40, 48, 64];

/** Builds the scenario of one seed. */
export function randomScenario(seed: number): Scenario {
  const rng = new Rng(seed);
  // Fragments and segments without ACK draw from a generator of their own, so that a seed
  // that uses neither gives the conversation it gave before them.
  const xr = new Rng(seed * 104729 + 7);
  // TCP fragments, UDP fragments sharing keys and more RST closes: a third generator, for the
  // same reason.
  const yr = new Rng(seed * 130363 + 11);
  // Small queues: a generator of their own too. Some seeds run with a max-queue-size of 1 to
  // 8, so that queues fill and refuse frames (QEMU's admission rule, SPEC 5), on both sides,
  // on TCP and datagram connections alike.
  const qr = new Rng(seed * 15485863 + 3);
  // SYN-ACKs at the secondary's own ISN, and SYN-ACKs sent again later: one more.
  const ir = new Rng(seed * 7727 + 13);
  const maxQueue = qr.chance(0.3) ? qr.int(1, 8) : Infinity;
  const frames: Record<string, FrameSpec> = {};
  const streams: Record<string, { random: number; seed: number }> = {};
  const events: Event[] = [];
  let pendingCheckpoint = -1;

  const tcp: TcpConn[] = [];
  /** Each TCP connection's stream, for the bytes of segments sent as fragments. */
  const streamBytes = new Map<number, Uint8Array>();
  // Wide seeds: hundreds of TCP connections with short streams, more than the connections
  // that keep a handle while idle (AWAKE_IDLE_MAX, 256): most of them go idle and are woken
  // again with the compared position and ACKs they had (ours keeps them off the heap).
  const wide = qr.chance(0.05);
  const nTcp = wide ? qr.int(260, 420) : rng.int(1, 4);
  for (let i = 0; i < nTcp; i++) {
    const length = wide
      ? rng.int(20, 400)
      : rng.chance(0.3)
      ? rng.int(50, 600)
      : rng.int(600, 6000);
    const isn = rng.chance(0.4) ? (0x100000000 - rng.int(1, length)) >>> 0 : rng.int(1, 0xfff00000);
    // ACKs, too, may wrap during the conversation.
    const ackBase = rng.chance(0.3)
      ? (0x100000000 - rng.int(1, 3000)) >>> 0
      : rng.int(1_000_000, 1_500_000_000);
    streams[`t${i}`] = { random: length, seed: seed * 16 + i };
    tcp.push({
      id: i,
      model: newModel(),
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
      fins: 0,
      leftOut: 0,
      noAck: xr.chance(0.3) ? xr.pick([0.1, 0.3, 0.7]) : 0,
      synOpen: xr.chance(0.3),
      secSyn: ir.chance(0.4) ? ir.int(-0x7fff0000, 0x7fff0000) : -1,
      frag: yr.chance(0.3) ? yr.pick([0.2, 0.5, 0.9]) : 0,
      fragSizes: new Map(),
      fragConns: new Map(),
    });
    streamBytes.set(i, pseudoRandomBytes(length, seed * 16 + i));
  }
  const flows: DatagramFlow[] = [];
  const nFlows = rng.int(0, 4);
  for (let i = 0; i < nFlows; i++) {
    const kind = rng.pick(["udp", "udp", "icmp", "gre", "udp", "icmp", "sctp", "esp"] as const);
    flows.push({
      id: i,
      kind,
      next: 0,
      heldP: [],
      heldS: [],
      sentS: 0,
      budget: rng.int(3, 30),
      blocked: false,
      frag: kind === "udp" && xr.chance(0.4),
      shapes: new Map(),
      sharedKeys: yr.chance(0.5),
      later: new Map(),
    });
  }

  /** A TCP connection's destination address (wide seeds: ports tell apart those beyond 250). */
  const tcpDst = (c: TcpConn) => `10.0.1.${(c.id % 250) + 1}`;

  /** What the TCP model needs to know of each TCP frame, by label. */
  const segments = new Map<string, ModelSegment>();

  const tcpFrame = (
    c: TcpConn,
    side: Side,
    from: number,
    to: number,
    flags: string,
    tag: string,
    ackField = c[side].ack,
  ): string => {
    const s = c[side];
    const label = `t${c.id}${side === "pri" ? "p" : "s"}${s.sent++}${tag}`;
    segments.set(label, {
      from,
      to: Math.max(from, to),
      ack: ackField >>> 0,
      diverged: false,
      offset: 0,
    });
    frames[label] = {
      ip: { src: "10.0.0.1", dst: tcpDst(c), id: rng.int(0, 0xffff) },
      tcp: {
        sport: c.sport,
        dport: c.dport,
        isn: c.isn,
        seq: (c.isn + from) >>> 0,
        ack: ackField >>> 0,
        flags,
        window: side === "pri" ? 64240 : rng.pick([64240, 501, 29200]),
        payload: to > from ? { stream: c.stream, from, to } : undefined,
      },
    };
    return label;
  };

  /** Later TCP fragments by label: what routes them to their own connection's model. */
  const laterFragments = new Map<string, LaterFragment>();
  /** The frames just built include a diverging later TCP fragment (a checkpoint is due). */
  let laterDiverged = false;

  /**
   * A data segment that leaves as IPv4 fragments of `size` bytes of IP payload (`rest` false:
   * the first only, the others lost). The first fragment holds the TCP header: QEMU and ours
   * take it for a segment whose payload ends at the fragment's end, [from, from + size - 20)
   * in the stream, and the model sees it so; the bytes after it are a gap in this side's
   * stream, which the model treats as any other. Each later fragment parses as a TCP segment
   * of its own connection: ports, sequence number, ACK, data offset and flags are its first 14
   * bytes ({@linkcode tcpFragmentSize} keeps those sane). `corrupt`: the last later fragment
   * (when it carries payload) has its last byte changed, a divergence only that fragment's
   * connection sees (its key and sequence number are the same).
   */
  const tcpFragments = (
    c: TcpConn,
    side: Side,
    from: number,
    to: number,
    flags: string,
    ackField: number,
    size: number,
    rest: boolean,
    corrupt = false,
  ): Event[] => {
    const seg = tcpSegmentBytes(c, from, to, flags, ackField, side === "pri" ? 64240 : 501);
    const last = seg.length - (seg.length - 1) % size - 1; // where the last fragment starts
    const lastPayload = seg.length - last - ((seg[last + 12] >> 4) << 2);
    const diverged = corrupt && rest && last > 0 && lastPayload > 0;
    if (diverged) seg[seg.length - 1] ^= 0xff;
    const base = `t${c.id}${side === "pri" ? "p" : "s"}${c[side].sent++}`;
    const ipId = yr.int(0, 0xffff);
    const events: Event[] = [];
    const parts = rest ? Math.ceil(seg.length / size) : 1;
    for (let k = 0; k < parts; k++) {
      const at = k * size, end = Math.min(seg.length, at + size);
      const label = k === 0 ? base : `${base}f${k}`;
      frames[label] = {
        ip: {
          src: "10.0.0.1",
          dst: tcpDst(c),
          id: ipId,
          flags: end < seg.length ? 1 : 0,
          fragOffset: at / 8,
        },
        raw: { proto: 6, bytes: { hex: toHex(seg.subarray(at, end)) } },
      };
      if (k === 0) {
        segments.set(label, {
          from,
          to: from + size - 20,
          ack: ackField >>> 0,
          diverged: false,
          offset: 0,
        });
      } else {
        const part = seg.subarray(at, end);
        const view = new DataView(part.buffer, part.byteOffset, part.byteLength);
        laterFragments.set(label, {
          key: toHex(part.subarray(0, 4)),
          seq: view.getUint32(4),
          len: part.length - ((part[12] >> 4) << 2),
          closes: (part[13] & 0x05) !== 0,
        });
        segments.set(label, {
          from: 0,
          to: 0,
          ack: view.getUint32(8),
          diverged: diverged && at === last,
          offset: 0,
        });
      }
      events.push({ side, label });
    }
    if (diverged) laterDiverged = true;
    return events;
  };

  /** A TCP segment's bytes as the VM sends them: a 20-byte header, then its stream bytes. */
  const tcpSegmentBytes = (
    c: TcpConn,
    from: number,
    to: number,
    flags: string,
    ackField: number,
    window: number,
  ): Uint8Array => {
    const seg = new Uint8Array(20 + to - from);
    const v = new DataView(seg.buffer);
    v.setUint16(0, c.sport);
    v.setUint16(2, c.dport);
    v.setUint32(4, (c.isn + from) >>> 0);
    v.setUint32(8, ackField >>> 0);
    seg[12] = 5 << 4;
    seg[13] = [...flags].reduce((bits, f) => bits | TCP_FLAG_BITS[f], 0);
    v.setUint16(14, window);
    seg.set(streamBytes.get(c.id)!.subarray(from, to), 20);
    return seg;
  };

  /**
   * The first-fragment size a side uses for segment [from, to) (0: sent whole): often the
   * other side's (both guests fragment alike, so their later fragments pair up), else one of
   * its own. Only sizes whose every fragment QEMU and ours read alike: the first holds the
   * whole TCP header, every later one holds the 14 bytes of header QEMU reads and the data
   * offset its byte 12 gives, and no segment, first or later, ends at sequence 0.
   */
  const tcpFragmentSize = (
    c: TcpConn,
    side: Side,
    from: number,
    to: number,
    flags: string,
    ackField: number,
  ): number => {
    if (c.frag === 0) return 0;
    const range = `${from}:${to}`;
    const other = c.fragSizes.get(`${side === "pri" ? "sec" : "pri"}:${range}`);
    let size = other !== undefined && yr.chance(0.8)
      ? other
      : yr.chance(c.frag)
      ? yr.pick(TCP_FRAGMENT_SIZES)
      : 0;
    if (size >= 20 + to - from || (size > 0 && endsAtZero(c, from + size - 20))) size = 0;
    if (size > 0) {
      const seg = tcpSegmentBytes(c, from, to, flags, ackField, 0);
      for (let at = size; at < seg.length; at += size) {
        const part = seg.subarray(at, Math.min(seg.length, at + size));
        if (part.length < 14) {
          size = 0;
          break;
        }
        const doff = (part[12] >> 4) << 2;
        const seq = new DataView(part.buffer, part.byteOffset).getUint32(4);
        if (doff > part.length || ((seq + part.length - doff) >>> 0) === 0) {
          size = 0;
          break;
        }
      }
    }
    c.fragSizes.set(`${side}:${range}`, size);
    return size;
  };

  /** A segment arrives on the model: its connection's, or its later-fragment connection's. */
  const tcpArrive = (c: TcpConn, side: Side, label: string): boolean => {
    const later = laterFragments.get(label);
    if (later === undefined) return modelArrive(c.model, side, segments.get(label)!, maxQueue);
    let conn = c.fragConns.get(later.key);
    if (conn === undefined) {
      conn = { model: newModel(), base: later.seq, fins: 0 };
      c.fragConns.set(later.key, conn);
    }
    // Ours forgets a connection both sides closed: nothing more on it (see TcpConn.fins).
    if (conn.fins === 3) return false;
    if (later.closes) conn.fins |= side === "pri" ? 1 : 2;
    const from = (later.seq - conn.base) | 0;
    const seg = segments.get(label)!;
    const to = from + Math.max(0, later.len);
    return modelArrive(conn.model, side, { ...seg, from, to }, maxQueue);
  };

  // Sequence number of the segment end must never be 0 (see the module comment).
  const endsAtZero = (c: TcpConn, to: number) => ((c.isn + to) >>> 0) === 0;

  const maybeAck = (c: TcpConn, side: Side) => {
    if (rng.chance(0.4)) c[side].ack = c.ackBase + c.client;
  };

  const tcpData = (c: TcpConn, side: Side, ackNow = true, finOk = true): Event[] => {
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
    const fin = to === c.length && rng.chance(0.5) && finOk;
    if (fin) c.fins |= side === "pri" ? 1 : 2;
    let flags = fin ? "FPA" : "PA";
    let ack = s.ack;
    if (c.noAck > 0 && xr.chance(c.noAck)) {
      // No ACK flag: the ACK field still counts, in QEMU and in ours; mostly the side's
      // latest ACK, sometimes 0 or another value (the model leaves out what would part).
      const r = xr.next();
      ack = r < 0.7 ? s.ack : r < 0.85 ? 0 : s.ack - xr.int(-2000, 2000);
      flags = fin ? "FP" : "P";
    }
    const fragSize = tcpFragmentSize(c, side, from, to, flags, ack);
    if (fragSize > 0) {
      // Now and then the secondary differs inside a later fragment only.
      const corrupt = side === "sec" && pendingCheckpoint < 0 && yr.chance(0.2);
      return tcpFragments(c, side, from, to, flags, ack, fragSize, !yr.chance(0.1), corrupt);
    }
    return [{ side, label: tcpFrame(c, side, from, to, flags, "", ack) }];
  };

  /**
   * Two data segments of one side delivered in the wrong order; the later one often carries
   * a higher ACK, so the side's latest ACK goes down.
   */
  const tcpOutOfOrder = (c: TcpConn, side: Side): Event[] => {
    maybeAck(c, side);
    const first = tcpData(c, side, false);
    if (rng.chance(0.5)) {
      c.client += rng.int(1, 400);
      c[side].ack = c.ackBase + c.client;
    }
    // No FIN on the segment delivered first: the one after it would follow the FIN.
    const second = tcpData(c, side, false, false);
    return [...second, ...first];
  };

  /**
   * A pure ACK on one side only (the two guests ACK at different moments); sometimes a stale
   * one, delivered late with an ACK below the side's latest.
   */
  const tcpLoneAck = (c: TcpConn, side: Side): Event[] => {
    maybeAck(c, side);
    const ack = c[side].ack;
    if (rng.chance(0.25)) c[side].ack = ack - rng.int(1, 600);
    const label = tcpFrame(c, side, c[side].pos, c[side].pos, "A", "ack");
    c[side].ack = ack;
    return [{ side, label }];
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

  /**
   * A side that sent its whole stream closes with a segment of its own, no payload: a FIN or
   * an RST, with the ACK flag (QEMU takes the ACK field of every segment, flag or not).
   */
  const tcpBareClose = (c: TcpConn, side: Side): Event[] => {
    const bit = side === "pri" ? 1 : 2;
    if (c[side].pos < c.length || (c.fins & bit) !== 0) return [];
    maybeAck(c, side);
    c.fins |= bit;
    // RSTs were rare (about 6 in 300 seeds): more of them, from a generator of their own.
    const picked = rng.pick(["FA", "FA", "FPA", "RA"]);
    const flags = yr.chance(0.35) ? "RA" : picked;
    if (xr.chance(0.3)) {
      // Without the ACK flag: an RST often with ACK field 0.
      const bare = flags.replace("A", "");
      const ack = bare === "R" && xr.chance(0.5) ? 0 : c[side].ack;
      return [{ side, label: tcpFrame(c, side, c[side].pos, c[side].pos, bare, "close", ack) }];
    }
    return [{ side, label: tcpFrame(c, side, c[side].pos, c[side].pos, flags, "close") }];
  };

  /**
   * A side sends its SYN-ACK again, late (the client's ACK of it was lost on that side's way):
   * no payload, at its ISN (the secondary's own, see `secSyn`), with the ACK field of the
   * first one, now stale. QEMU keeps it queued, in sequence order, until it is the lowest
   * segment when a comparison runs.
   */
  const tcpSynAgain = (c: TcpConn, side: Side): Event[] => {
    if (c.synOpen) return [];
    const at = side === "sec" ? c.secSyn : -1;
    return [{ side, label: tcpFrame(c, side, at, at, "SA", "synre", c.ackBase) }];
  };

  /**
   * A side aborts mid-stream: a bare RST at its position (ACK flag or not, the field often 0
   * then), and nothing new from it afterwards. A VM that resets stops sending; the other may
   * go on, its bytes then wait until a checkpoint, as they do in QEMU.
   */
  const tcpAbort = (c: TcpConn, side: Side): Event[] => {
    const bit = side === "pri" ? 1 : 2;
    if ((c.fins & bit) !== 0 || c[side].pos >= c.length) return [];
    maybeAck(c, side);
    c.fins |= bit;
    const flags = yr.chance(0.6) ? "RA" : "R";
    const ack = flags === "R" && yr.chance(0.5) ? 0 : c[side].ack;
    const label = tcpFrame(c, side, c[side].pos, c[side].pos, flags, "rst", ack);
    c[side].pos = c.length;
    return [{ side, label }];
  };

  const diverge = (c: TcpConn): Event[] => {
    // The secondary sends other bytes for its next range: a real difference.
    const s = c.sec;
    const size = Math.min(c.length - s.pos, rng.int(1, 600));
    if (size <= 0 || endsAtZero(c, s.pos + size)) return [];
    const label = tcpFrame(c, "sec", s.pos, s.pos + size, "PA", "x");
    frames[label].tcp!.payload = { random: size, seed: seed * 1000 + s.sent };
    segments.get(label)!.diverged = true;
    s.pos += size;
    c.blocked = true;
    return [{ side: "sec", label }];
  };

  /** A fragmenting flow's message n: how each side sends it, decided at its first use. */
  const shapeOf = (f: DatagramFlow, n: number): FragShape => {
    let shape = f.shapes.get(n);
    if (shape === undefined) {
      const size = xr.chance(0.25) ? 0 : xr.pick(FRAGMENT_SIZES);
      shape = { pri: size, sec: size, priRest: true, secRest: true };
      const r = xr.next();
      if (r < 0.12) {
        // Fragmented differently (or whole) on one side: the first fragments differ.
        shape[xr.chance(0.5) ? "pri" : "sec"] = xr.pick([0, ...FRAGMENT_SIZES]);
      } else if (r < 0.24 && size > 0) {
        // Only the first fragment on one side.
        shape[xr.chance(0.5) ? "priRest" : "secRest"] = false;
      }
      f.shapes.set(n, shape);
    }
    return shape;
  };

  /**
   * A UDP datagram of a fragmenting flow, whole or as IPv4 fragments. Its payload is 8-byte
   * blocks, each opening with 4 bytes of its own (flow, message, block; or, with `sharedKeys`,
   * flow and block only): a later fragment is keyed by its first 4 bytes as if they were
   * ports (QEMU and ours), so each later fragment is a connection of its own, or one shared
   * by the later fragments of every message at that offset. Those connections have a model
   * each, kept by the flow's rules: a later fragment that would be a second held primary, or
   * come after a divergence there, is lost instead. The first fragment (or the whole
   * datagram) is the flow's message, in the flow's model, named by its bytes. A corrupt
   * secondary has other bytes in one block: the first (in the first fragment) or any other
   * (often in a later fragment: a divergence only that fragment's connection sees).
   */
  const fragmented = (f: DatagramFlow, side: Side, corrupt: boolean): Event[] => {
    const n = side === "pri" ? f.next++ : f.sentS++;
    const shape = shapeOf(f, n);
    const blocks = 2 + (n * 5 + f.id * 3) % 14;
    const total = 8 + 8 * blocks;
    const bytes = new Uint8Array(total);
    const udp = new DataView(bytes.buffer);
    udp.setUint16(0, 5000 + f.id);
    udp.setUint16(2, 53);
    udp.setUint16(4, total);
    const bad = !corrupt ? -1 : yr.chance(0.5) ? 0 : yr.int(1, blocks - 1);
    for (let j = 0; j < blocks; j++) {
      const at = 8 + 8 * j;
      bytes.set([0xf0 | f.id, f.sharedKeys ? 0xee : n & 0xff, j & 0xff, 0x5a], at);
      bytes.fill(j === bad ? 0x78 : (n * 31 + j * 7 + f.id) & 0xff, at + 4, at + 8);
    }
    const size = shape[side] < total ? shape[side] : 0;
    const rest = side === "pri" ? shape.priRest : shape.secRest;
    const base = `u${f.id}${side === "pri" ? "p" : "s"}${n}${corrupt ? "x" : ""}`;
    /** Whether the corrupt block lies in [from, to). */
    const badIn = (from: number, to: number) => bad >= 0 && 8 + 8 * bad >= from && 8 + 8 * bad < to;
    const firstTo = size === 0 ? total : size;
    const id = `${badIn(0, firstTo) ? "x" : ""}${n}${size > 0 ? `f${size}` : ""}`;
    const ipId = xr.int(0, 0xffff);
    const events: Event[] = [];
    const parts = size === 0 ? 1 : rest ? Math.ceil(total / size) : 1;
    for (let k = 0; k < parts; k++) {
      const from = k * size, to = size === 0 ? total : Math.min(total, from + size);
      if (k > 0) {
        const key = toHex(bytes.subarray(from, from + 4));
        let q = f.later.get(key);
        if (q === undefined) f.later.set(key, q = { heldP: [], heldS: [], blocked: false });
        // Lost on the way: QEMU and ours would part (see DatagramQueue), or keep it simple.
        if (q.blocked || (side === "pri" && q.heldP.length > 0)) continue;
        const here = badIn(from, to);
        datagramModel(q, side, `${here ? "x" : ""}${n}:${to - from}`, here);
      }
      const label = k === 0 ? base : `${base}f${k}`;
      frames[label] = {
        ip: size === 0 ? { src: "10.0.0.1", dst: `10.0.2.${f.id + 1}`, id: ipId } : {
          src: "10.0.0.1",
          dst: `10.0.2.${f.id + 1}`,
          id: ipId,
          flags: to < total ? 1 : 0,
          fragOffset: from / 8,
        },
        raw: { proto: 17, bytes: { hex: toHex(bytes.subarray(from, to)) } },
      };
      events.push({ side, label });
    }
    datagramModel(f, side, id, corrupt);
    return events;
  };

  /**
   * The model of both implementations for one datagram connection. A queue that holds more
   * than max-queue-size (small-queue seeds) refuses the datagram, in QEMU and in ours.
   */
  const datagramModel = (f: DatagramQueue, side: Side, id: string, corrupt: boolean) => {
    if ((side === "pri" ? f.heldP : f.heldS).length > maxQueue) {
      if (corrupt) f.blocked = true;
      return;
    }
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
  };

  const datagram = (f: DatagramFlow, side: Side, corrupt: boolean): Event[] => {
    if (f.frag) return fragmented(f, side, corrupt);
    const n = side === "pri" ? f.next++ : f.sentS++;
    const id = corrupt ? `x${n}` : `${n}`;
    const label = `${f.kind[0]}${f.id}${side === "pri" ? "p" : "s"}${n}${corrupt ? "x" : ""}`;
    const text = `${f.kind}-${f.id}-msg-${id}-` + "z".repeat((n * 7 + f.id * 13) % 90);
    const ip = {
      src: "10.0.0.1",
      dst: `10.0.2.${f.id + 1}`,
      // QEMU compares "other" protocols with their IP header: the same ID on both sides.
      id: f.kind === "udp" || f.kind === "icmp" ? rng.int(0, 0xffff) : n,
    };
    frames[label] = f.kind === "udp"
      ? { ip, udp: { sport: 5000 + f.id, dport: 53, payload: text } }
      : f.kind === "icmp"
      ? { ip, icmp: { type: 0, id: f.id, seq: n, payload: text } }
      : {
        ip,
        raw: {
          proto: RAW_PROTOCOLS[f.kind].proto,
          bytes: {
            hex: RAW_PROTOCOLS[f.kind].head(f.id) + toHex(new TextEncoder().encode(text)),
          },
        },
      };
    datagramModel(f, side, id, corrupt);
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
      c.leftOut = 0;
      modelFlush(c.model);
      for (const f of c.fragConns.values()) modelFlush(f.model);
    }
    for (const f of flows) {
      f.heldP = [];
      f.heldS = [];
      f.sentS = Math.max(f.sentS, f.next);
      f.next = f.sentS;
      f.blocked = false;
      f.later.clear();
    }
    pendingCheckpoint = -1;
    return [{ side: "notify", message: "COLO_CHECKPOINT" }];
  };

  // Handshake: SYN-ACKs (no payload; nothing is queued yet, so either order is safe).
  // Or the VMs open the connection: a SYN without the ACK flag, ACK field 0 (sometimes not).
  for (const c of tcp) {
    const syn = c.synOpen ? "S" : "SA";
    const synAck = c.synOpen ? (xr.chance(0.8) ? 0 : xr.int(1, 0xffffffff)) : c.pri.ack;
    const p = tcpFrame(c, "pri", -1, -1, syn, "syn", synAck);
    const at = c.synOpen ? -1 : c.secSyn;
    const s = tcpFrame(c, "sec", at, at, syn, "syn", synAck);
    const ev: Event[] = rng.chance(0.5)
      ? [{ side: "pri", label: p }, { side: "sec", label: s }]
      : [{ side: "sec", label: s }, { side: "pri", label: p }];
    for (const e of ev) modelArrive(c.model, e.side as Side, segments.get(e.label!)!, maxQueue);
    events.push(...ev);
  }
  if (rng.chance(0.5)) events.push({ side: "notify", message: "COLO_USERSPACE_PROXY_INIT" });

  // Weighted choice among what can happen next, until every stream and flow is used up.
  let arps = 0;
  for (let n = 0; n < (wide ? 10 * nTcp : 400); n++) {
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
      const saved = structuredClone(c);
      const savedPending = pendingCheckpoint;
      laterDiverged = false;
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
      } else if (r < 0.4) {
        ev = tcpBareClose(c, rng.chance(0.5) ? "pri" : "sec");
      }
      if (ev.length === 0 && yr.chance(0.015)) ev = tcpAbort(c, yr.chance(0.5) ? "pri" : "sec");
      if (ev.length === 0 && ir.chance(0.03)) ev = tcpSynAgain(c, ir.chance(0.6) ? "sec" : "pri");
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
      if (!ev.every((e) => tcpArrive(c, e.side as Side, e.label!))) {
        // QEMU and ours would part here (the module comment): leave these frames out, and
        // after a few such frames let a checkpoint bring the two VMs together again.
        for (const e of ev) {
          delete frames[e.label!];
          segments.delete(e.label!);
          laterFragments.delete(e.label!);
        }
        Object.assign(c, saved);
        pendingCheckpoint = savedPending;
        if (++c.leftOut >= 8 && pendingCheckpoint < 0) pendingCheckpoint = n + 1;
        continue;
      }
      c.leftOut = 0;
      if (laterDiverged && pendingCheckpoint < 0) pendingCheckpoint = n + yr.int(1, 6);
      // Both streams sent: often done, else a bare FIN or RST may still close a side.
      const sent = c.pri.pos >= c.length && c.sec.pos >= c.length;
      if (c.fins === 3 || (sent && rng.chance(0.4))) c.finished = true;
      events.push(...ev);
    } else if (choice < 6 * open.length + 3 * live.length) {
      const f = rng.pick(live);
      const canPri = f.heldP.length === 0 && f.next < f.budget;
      const canSec = f.sentS < f.budget && f.sentS < f.next + 6;
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
      const diverged = f.blocked || [...f.later.values()].some((q) => q.blocked);
      if (diverged && pendingCheckpoint < 0) pendingCheckpoint = n + rng.int(1, 6);
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

  const scenario: Scenario = {
    name: `random-seed-${seed}`,
    rule: "random conversation: ours must produce QEMU's trace (normalised as in trace.ts)",
    description: `generated by generator.ts from seed ${seed}`,
    options: {
      compareTimeout: 600_000,
      expiredScanCycle: 60_000,
      ...(maxQueue === Infinity ? {} : { maxQueueSize: maxQueue }),
    },
    compareOnly: true,
    streams,
    frames,
    steps: toSteps(events, rng),
  };
  decorate(scenario, seed);
  return scenario;
}

function randomHex(rng: Rng, len: number): string {
  return toHex(Uint8Array.from({ length: len }, () => rng.int(0, 255)));
}

/**
 * Header variety laid over a finished conversation, from a generator of its own (the
 * conversation of a seed stays what it was): vnet headers of any length QEMU accepts (per
 * frame for TCP, per flow for datagrams: QEMU compares datagrams on the frame length), a
 * QinQ or lone 0x88a8 service tag on every IP frame (the same everywhere: QEMU leaves VLAN ids
 * out of the key), TCP options of any length on either side, IPv4 options (TCP: any, per
 * frame; datagrams: the same bytes per flow, since QEMU compares UDP and ICMP from a fixed
 * 14-byte Ethernet offset and GRE with its IP header), DF, TTL and TOS noise outside GRE, and
 * writes split at random points. None of it is a SPEC 9 difference.
 */
function decorate(s: Scenario, seed: number): void {
  const rng = new Rng(seed * 7919 + 17);
  const vnet = rng.chance(0.3);
  const tags = rng.chance(0.25)
    ? rng.chance(0.6)
      ? [{ tpid: 0x88a8, vid: rng.int(1, 4094) }, { tpid: 0x8100, vid: rng.int(1, 4094) }]
      : [{ tpid: 0x88a8, vid: rng.int(1, 4094) }]
    : undefined;
  const tcpOptions = rng.chance(0.35);
  const ipOptions = rng.chance(0.3);
  const ipNoise = rng.chance(0.5);
  const vnetLengths = [0, 10, 12, 20, rng.int(1, 20)];
  const flowVnet = new Map<string, number>();
  const flowIpOptions = new Map<string, string>();
  for (const [label, f] of Object.entries(s.frames)) {
    const flow = /^([tuigse]\d+)[ps]\d/.exec(label)?.[1];
    if (flow === undefined) {
      // ARP: only a vnet header.
      if (vnet) f.vnet = rng.pick(vnetLengths);
      continue;
    }
    const isTcp = f.tcp !== undefined;
    const isOther = f.raw !== undefined;
    if (vnet) {
      if (isTcp) f.vnet = rng.pick(vnetLengths);
      else {
        if (!flowVnet.has(flow)) flowVnet.set(flow, rng.pick(vnetLengths));
        f.vnet = flowVnet.get(flow)!;
      }
      if (f.vnet) f.vnetFill = rng.int(0, 255);
    }
    if (tags) f.vlans = tags;
    const ip = f.ip as Record<string, unknown>;
    if (ipOptions) {
      if (isTcp) {
        if (rng.chance(0.5)) ip.options = randomHex(rng, 4 * rng.int(1, 10));
      } else {
        if (!flowIpOptions.has(flow)) {
          flowIpOptions.set(flow, rng.chance(0.5) ? randomHex(rng, 4 * rng.int(1, 10)) : "");
        }
        const options = flowIpOptions.get(flow)!;
        if (options) ip.options = options;
      }
    }
    if (ipNoise && !isOther) {
      if (rng.chance(0.5)) ip.flags = 2; // DF: not a fragment
      ip.ttl = rng.int(1, 255);
      ip.tos = rng.int(0, 255);
    }
    if (isTcp && tcpOptions && rng.chance(0.6)) {
      f.tcp!.options = randomHex(rng, 4 * rng.int(1, 10));
    }
  }
  // Ethernet padding on the frames that are not TCP (a NIC pads what is shorter than its
  // minimum, both VMs' alike): QEMU compares UDP and ICMP on the frame length, padding
  // included, and "other" protocols whole, so only padding the same on both sides. From a
  // generator of its own, so the rest of a seed's decoration stays what it was.
  const pr = new Rng(seed * 48611 + 5);
  const padTo = pr.chance(0.3) ? pr.pick([60, 64, 128]) : 0;
  if (padTo > 0) {
    for (const [label, f] of Object.entries(s.frames)) {
      if (!label.startsWith("t") && f.tcp === undefined) f.padTo = padTo;
    }
  }
  if (vnet) s.options = { ...s.options, vnet: true };
  for (const step of s.steps) {
    if ((step.pri !== undefined || step.sec !== undefined) && rng.chance(0.15)) {
      step.chunks = [rng.int(1, 9), rng.int(1, 80), rng.int(1, 400)];
    }
  }
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
