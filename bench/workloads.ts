/**
 * The benchmark's workloads and the pre-built, framed byte patterns the load generator
 * sends. A pattern is written again and again; between rounds only the TCP sequence numbers
 * are moved on, so every round is a new stretch of the same byte streams.
 *
 * @module
 */

import { arp, frame, framed, pseudoRandomBytes } from "../tests/support/packets.ts";

/** Names of the workloads, in the order the report lists them. */
export const WORKLOADS = [
  "tcp-1000",
  "tcp-1000x100",
  "tcp-64",
  "udp-512",
  "latency",
  "scale",
  "flood",
  "diverged",
  "tcp-1000-tls",
  "tcp-1000x100-tls",
  "tcp-64-tls",
  "udp-512-tls",
  "latency-tls",
  "tcp-1000-unix",
  "latency-unix",
] as const;

/** One workload's name. */
export type WorkloadName = typeof WORKLOADS[number];

/** A workload over plain TCP: what a `-tls` or `-unix` workload does over TLS or unix sockets. */
export type PlainWorkload = Exclude<WorkloadName, `${string}-tls` | `${string}-unix`>;

/**
 * True for the `-tls` workloads: primary-in, secondary-in and outdev are TLS servers
 * (`tls-listen:`, QEMU's chardevs with `tls-creds`, client certificates required) and the
 * generator connects as a TLS client with the client certificate; notify-dev stays plain.
 */
export function overTls(workload: WorkloadName): boolean {
  return workload.endsWith("-tls");
}

/**
 * True for the `-unix` workloads: primary-in, secondary-in and outdev are unix sockets
 * (`unix-listen:`, QEMU's chardevs with `path=`); notify-dev stays on TCP.
 */
export function overUnix(workload: WorkloadName): boolean {
  return workload.endsWith("-unix");
}

/** The plain workload a `-tls` or `-unix` one runs (a plain one is its own). */
export function plainOf(workload: WorkloadName): PlainWorkload {
  return workload.replace(/-(tls|unix)$/, "") as PlainWorkload;
}

/** What one stream of frames looks like. */
export interface StreamShape {
  proto: "tcp" | "udp";
  /** Bytes of TCP or UDP payload per frame. */
  payload: number;
  /** Connections (flows) the frames are spread over round-robin. */
  connections: number;
}

/** The stream each plain workload sends (scale and latency use the tcp-1000 shape). */
const PLAIN_SHAPES: Record<PlainWorkload, StreamShape> = {
  "tcp-1000": { proto: "tcp", payload: 1000, connections: 1 },
  "tcp-1000x100": { proto: "tcp", payload: 1000, connections: 100 },
  "tcp-64": { proto: "tcp", payload: 64, connections: 1 },
  "udp-512": { proto: "udp", payload: 512, connections: 1 },
  "latency": { proto: "tcp", payload: 1000, connections: 1 },
  "scale": { proto: "tcp", payload: 1000, connections: 1 },
  "flood": { proto: "tcp", payload: 1000, connections: 16 },
  "diverged": { proto: "udp", payload: 512, connections: 64 },
};

/** The stream of every workload: a `-tls` one sends what its plain one does. */
export const SHAPES = Object.fromEntries(
  WORKLOADS.map((w) => [w, PLAIN_SHAPES[plainOf(w)]]),
) as Record<WorkloadName, StreamShape>;

/** Ethernet + IPv4 + TCP/UDP header bytes in front of the payload (no VLAN, no options). */
export function headerBytes(proto: "tcp" | "udp"): number {
  return 14 + 20 + (proto === "tcp" ? 20 : 8);
}

/** Length of one Ethernet frame of `shape` (what the Mbit/s column counts). */
export function frameBytes(shape: StreamShape): number {
  return headerBytes(shape.proto) + shape.payload;
}

/** The ARP frame sent to check that the outdev path is live; its length marks it apart. */
export const PROBE = framed(arp());
/** Length word of a probe frame (60); no workload frame has this length. */
export const PROBE_LEN = PROBE.length - 4;

/** A framed byte pattern and where its TCP sequence numbers sit. */
export interface Pattern {
  /** Framed frames, back to back. */
  bytes: Uint8Array;
  /** Frames in one round of the pattern. */
  frames: number;
  /** Byte offset, within `bytes`, of each frame's TCP sequence number (empty for UDP). */
  seqOffsets: Uint32Array;
  /** Each frame's sequence number in round 0. */
  seqStart: Uint32Array;
  /** How far every sequence number moves per round (frames per connection * payload). */
  seqAdvance: number;
  /** Byte offset of each frame's start (its length word) within `bytes`. */
  frameOffsets: Uint32Array;
}

/** Source address of connection `i` (distinct keys for up to 2^24 connections). */
export function sourceAddress(i: number): string {
  return `10.${1 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
}

/**
 * Builds a pattern of at least `minFrames` frames (and at least `minBytes` bytes) of `shape`,
 * spread round-robin over its connections. TCP payloads differ frame by frame, so a
 * comparison across misaligned segments really mismatches; UDP payloads are the same in every
 * datagram of a flow, so QEMU 7.2's newest-first datagram comparison (SPEC section 9) cannot
 * turn a little skew between the two inputs into spurious mismatches (the compared bytes and
 * their cost are the same). `udpSeed` picks the UDP payload: the `diverged` workload's
 * secondary sends another one, of the same length.
 */
export function buildPattern(
  shape: StreamShape,
  minFrames: number,
  minBytes = 0,
  firstConnection = 0,
  udpSeed = 7,
): Pattern {
  const wire = 4 + frameBytes(shape);
  const wanted = Math.max(minFrames, Math.ceil(minBytes / wire));
  const perConnection = Math.max(1, Math.ceil(wanted / shape.connections));
  const frames = perConnection * shape.connections;
  const bytes = new Uint8Array(frames * wire);
  const seqOffsets = new Uint32Array(shape.proto === "tcp" ? frames : 0);
  const seqStart = new Uint32Array(seqOffsets.length);
  const frameOffsets = new Uint32Array(frames);
  const udpPayload = pseudoRandomBytes(shape.payload, udpSeed);
  // A few distinct payloads reused round-robin keep building fast for big patterns.
  const tcpPayloads = Array.from(
    { length: Math.min(frames, 997) },
    (_, i) => pseudoRandomBytes(shape.payload, i + 1),
  );
  let at = 0;
  for (let k = 0; k < perConnection; k++) {
    for (let c = 0; c < shape.connections; c++) {
      const i = k * shape.connections + c;
      const ip = { src: sourceAddress(firstConnection + c), dst: "10.0.0.2" };
      const seq = (1000 + (firstConnection + c) * 7919 + k * shape.payload) >>> 0;
      const f = shape.proto === "tcp"
        ? frame({
          ip,
          tcp: { sport: 80, dport: 40000, seq, ack: 1, payload: tcpPayloads[i % 997] },
        })
        : frame({ ip, udp: { sport: 5353, dport: 40000, payload: udpPayload } });
      bytes.set(framed(f), at);
      frameOffsets[i] = at;
      if (shape.proto === "tcp") {
        seqOffsets[i] = at + 4 + 14 + 20 + 4;
        seqStart[i] = seq;
      }
      at += wire;
    }
  }
  return {
    bytes,
    frames,
    seqOffsets,
    seqStart,
    seqAdvance: perConnection * shape.payload,
    frameOffsets,
  };
}

/** Rewrites the pattern's TCP sequence numbers for round `round`. */
export function setRound(pattern: Pattern, round: number): void {
  const b = pattern.bytes;
  const shift = Math.imul(round, pattern.seqAdvance) >>> 0;
  for (let i = 0; i < pattern.seqOffsets.length; i++) {
    const seq = (pattern.seqStart[i] + shift) >>> 0;
    const o = pattern.seqOffsets[i];
    b[o] = seq >>> 24;
    b[o + 1] = (seq >>> 16) & 255;
    b[o + 2] = (seq >>> 8) & 255;
    b[o + 3] = seq & 255;
  }
}
