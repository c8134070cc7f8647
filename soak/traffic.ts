/**
 * The soak trials' peers: flows of frames built once and patched per frame, writers that push
 * them into an input, a reader for outdev (optionally slow) that checks every primary frame
 * comes out once and in order, and a COLO controller for notify-dev.
 *
 * A flow is one TCP or UDP connection from `10.a.b.c:40000` to `10.200.0.1:80`; its number
 * is the low 24 bits of the source address, so a frame read back says which flow it is.
 *
 * @module
 */

import { connectRetry } from "../tests/support/net.ts";
import { num } from "./format.ts";
import { arp, frame, framed, notifyMessage, TCP } from "../tests/support/packets.ts";

/** Offsets in an unframed frame: Ethernet 14 + IPv4 20 (no options) + TCP 20. */
const IP_TOTAL_LENGTH_AT = 16;
const IP_SRC_AT = 26;
const TCP_SEQ_AT = 38;
const ETH_IP_TCP = 14 + 20 + 20;

/** The source address of flow `n` (0 <= n < 2^24). */
export function flowAddress(n: number): string {
  return `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;
}

/** The flow a frame belongs to (its source address's low 24 bits). */
export function flowOf(f: Uint8Array): number {
  return (f[IP_SRC_AT + 1] << 16) | (f[IP_SRC_AT + 2] << 8) | f[IP_SRC_AT + 3];
}

/**
 * One framed UDP datagram of flow `n` whose payload is `payload`. No UDP checksum (0, as IPv4
 * allows), so {@linkcode udpBatch}'s copies, which differ only in the source address, are the
 * same datagram byte for byte.
 */
export function udpFramed(n: number, payload: Uint8Array | string): Uint8Array {
  return framed(frame({
    ip: { src: flowAddress(n), dst: "10.200.0.1" },
    udp: { sport: 40000, dport: 80, payload, checksum: 0 },
  }));
}

/** A framed ARP request (passed through at once from the primary) tagged by its target. */
export function arpFramed(tag: number): Uint8Array {
  return framed(arp("10.0.0.1", flowAddress(tag)));
}

/** True for an ARP frame (what {@linkcode arpFramed} sends) whose tag is `tag`. */
export function isArp(f: Uint8Array, tag?: number): boolean {
  if (f.length < 42 || f[12] !== 0x08 || f[13] !== 0x06) return false;
  return tag === undefined || ((f[39] << 16) | (f[40] << 8) | f[41]) === tag;
}

/** Identical (or deliberately divergent) TCP byte streams for the two inputs. */
export class TcpStreams {
  readonly flows: number;
  readonly payload: number;
  /** Frames handed out so far (over all flows). */
  frames = 0;
  readonly #templates: Uint8Array[] = [];
  readonly #seq: number[] = [];

  /** `flows` connections numbered from `firstFlow`, `payload` bytes per segment. */
  constructor(flows: number, payload: number, firstFlow = 0, flags = TCP.ACK | TCP.PSH) {
    this.flows = flows;
    this.payload = payload;
    for (let i = 0; i < flows; i++) {
      const n = firstFlow + i;
      const bytes = new Uint8Array(payload);
      for (let j = 0; j < payload; j++) bytes[j] = (n * 31 + j) & 0xff;
      this.#templates.push(framed(frame({
        ip: { src: flowAddress(n), dst: "10.200.0.1" },
        tcp: { sport: 40000, dport: 80, seq: 0, ack: 1, flags, payload: bytes },
      })));
      this.#seq.push(initialSeq(n));
    }
  }

  /** Bytes of one framed segment. */
  get framedSize(): number {
    return this.#templates[0].length;
  }

  /**
   * The next `count` segments, round-robin over the flows, for both inputs. `diverge(i)`
   * picks frames (by number since the start) whose secondary copy differs in one byte.
   */
  next(
    count: number,
    diverge?: (i: number) => boolean,
  ): { primary: Uint8Array; secondary: Uint8Array } {
    const size = this.framedSize;
    const primary = new Uint8Array(count * size);
    const view = new DataView(primary.buffer);
    const divergent: number[] = [];
    for (let k = 0; k < count; k++, this.frames++) {
      const flow = this.frames % this.flows;
      const at = k * size;
      primary.set(this.#templates[flow], at);
      view.setUint32(at + 4 + TCP_SEQ_AT, this.#seq[flow]);
      this.#seq[flow] = (this.#seq[flow] + this.payload) >>> 0;
      if (diverge?.(this.frames)) divergent.push(at + 4 + ETH_IP_TCP);
    }
    if (divergent.length === 0) return { primary, secondary: primary };
    const secondary = primary.slice();
    for (const at of divergent) secondary[at] ^= 0xff;
    return { primary, secondary };
  }
}

/** Flow `n`'s first sequence number: near the wrap for some flows, so it is crossed. */
function initialSeq(n: number): number {
  return (0xffff0000 + n * 7919) >>> 0;
}

/**
 * Checks that every TCP segment of a {@linkcode TcpStreams} comes out exactly once and in
 * order per flow: each flow's next segment must start where the last one ended.
 */
export class OrderCheck {
  inOrder = 0;
  /** Segments that came again (sequence before the expected one). */
  duplicates = 0;
  /** Segments after a hole (one or more segments skipped). */
  gaps = 0;
  /** Frames that belong to no flow of the check. */
  foreign = 0;
  readonly #next = new Map<number, number>();
  /** Segments in order per flow (index: flow - first). */
  readonly #perFlow: number[];
  readonly #first: number;
  readonly #flows: number;

  constructor(streams: TcpStreams, firstFlow = 0) {
    this.#first = firstFlow;
    this.#flows = streams.flows;
    this.#perFlow = new Array(streams.flows).fill(0);
  }

  /** The fewest segments any flow has delivered in order. */
  lowest(): number {
    return Math.min(...this.#perFlow);
  }

  /** Looks at one frame read from outdev. */
  add(f: Uint8Array): void {
    const flow = flowOf(f);
    if (f.length < ETH_IP_TCP || flow < this.#first || flow >= this.#first + this.#flows) {
      this.foreign++;
      return;
    }
    const seq = ((f[TCP_SEQ_AT] << 24) | (f[TCP_SEQ_AT + 1] << 16) | (f[TCP_SEQ_AT + 2] << 8) |
      f[TCP_SEQ_AT + 3]) >>> 0;
    const len = ((f[IP_TOTAL_LENGTH_AT] << 8) | f[IP_TOTAL_LENGTH_AT + 1]) - 40;
    const expected = this.#next.get(flow) ?? initialSeq(flow);
    if (seq === expected) {
      this.inOrder++;
      this.#perFlow[flow - this.#first]++;
    } else if (((seq - expected) | 0) < 0) this.duplicates++;
    else this.gaps++;
    if (((seq - expected) | 0) >= 0) this.#next.set(flow, (seq + len) >>> 0);
  }

  /** Segments seen, in order or not. */
  get seen(): number {
    return this.inOrder + this.duplicates + this.gaps;
  }

  /** "N in order, D duplicated, G gaps, M missing" for the report. */
  describe(sent: number): string {
    const missing = sent - this.inOrder;
    return `${num(this.inOrder)} in order, ${num(this.duplicates)} duplicated, ${
      num(this.gaps)
    } gaps, ${num(Math.max(missing, 0))} missing` +
      (this.foreign ? `, ${num(this.foreign)} foreign` : "");
  }

  /** True when exactly `sent` segments came out, all in order. */
  exact(sent: number): boolean {
    return this.inOrder === sent && this.duplicates === 0 && this.gaps === 0;
  }
}

/**
 * A gate for {@linkcode PairedPump}: the next batch waits until no flow has more than `window`
 * segments written and not yet out of outdev, as a guest's TCP window allows. Below
 * `--max-queue-size`, so a program that reads one input ahead of the other never overflows a
 * connection's queue (SPEC 5 drops what overflows by design).
 */
export function windowGate(
  out: FrameReader,
  order: OrderCheck,
  flows: number,
  window: number,
  timeoutMs: number,
): (sent: number) => Promise<boolean> {
  return (sent) =>
    out.until(() => (sent + PUMP_BATCH) / flows - order.lowest() <= window, timeoutMs);
}

/**
 * Reads framed messages from a connection (outdev or notify-dev) and hands each to
 * `onFrame` (a view, valid during the call). With a rate, it reads no faster than that.
 */
export class FrameReader {
  frames = 0;
  bytes = 0;
  closed = false;
  /** Bytes per second, or null for as fast as possible. */
  rate: number | null;
  readonly #conn: Deno.Conn;
  readonly #onFrame: (f: Uint8Array) => void;
  readonly #done: Promise<void>;
  #waiters: (() => void)[] = [];

  constructor(
    conn: Deno.Conn,
    onFrame: (f: Uint8Array) => void = () => {},
    rate: number | null = null,
  ) {
    this.#conn = conn;
    this.#onFrame = onFrame;
    this.rate = rate;
    this.#done = this.#loop();
  }

  async #loop(): Promise<void> {
    const buf = new Uint8Array(1 << 20);
    let have = 0;
    let rateSince = performance.now();
    let rateBytes = 0;
    try {
      while (true) {
        let room = buf.length - have;
        if (this.rate !== null) {
          // Read at most 50 ms worth, after waiting until the bytes so far are due.
          const slice = Math.max(1, Math.floor(this.rate / 20));
          const due = rateSince + (rateBytes / this.rate) * 1000 - performance.now();
          if (due > 0) await new Promise((r) => setTimeout(r, due));
          room = Math.min(room, slice);
        } else {
          rateSince = performance.now();
          rateBytes = 0;
        }
        const n = await this.#conn.read(buf.subarray(have, have + room));
        if (n === null) break;
        rateBytes += n;
        this.bytes += n;
        have += n;
        let o = 0;
        while (have - o >= 4) {
          const len = ((buf[o] << 24) | (buf[o + 1] << 16) | (buf[o + 2] << 8) | buf[o + 3]) >>> 0;
          if (have - o < 4 + len) break;
          this.frames++;
          this.#onFrame(buf.subarray(o + 4, o + 4 + len));
          o += 4 + len;
        }
        buf.copyWithin(0, o, have);
        have -= o;
        this.#wake();
      }
    } catch {
      // reset by the peer: closed all the same
    }
    this.closed = true;
    this.#wake();
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  /**
   * Resolves once `done()` holds; false when `timeoutMs` passed, the stream closed, or (with
   * `quietMs`) nothing arrived for that long first.
   */
  async until(done: () => boolean, timeoutMs: number, quietMs = Infinity): Promise<boolean> {
    const deadline = performance.now() + timeoutMs;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let lastBytes = this.bytes;
    let lastChange = performance.now();
    try {
      while (!done()) {
        const now = performance.now();
        if (this.bytes !== lastBytes) {
          lastBytes = this.bytes;
          lastChange = now;
        }
        const left = Math.min(deadline - now, lastChange + quietMs - now);
        if (this.closed || left <= 0) return done();
        await new Promise<void>((r) => {
          this.#waiters.push(r);
          timer = setTimeout(r, left);
        });
        clearTimeout(timer);
      }
      return true;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes the connection and waits for the read loop to end. */
  async close(): Promise<void> {
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
    await this.#done;
  }
}

/** Writes all of `bytes` (Deno's `write` may take part of it). */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let o = 0; o < bytes.length;) o += await conn.write(bytes.subarray(o));
}

/**
 * Plays the COLO controller on notify-dev: answers each `DO_CHECKPOINT` with
 * `COLO_CHECKPOINT` after `delayMs` (requests arriving meanwhile are folded into it).
 */
export class Controller {
  requests = 0;
  checkpoints = 0;
  readonly reader: FrameReader;
  readonly #conn: Deno.Conn;
  #pending = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #writing: Promise<void> = Promise.resolve();

  constructor(conn: Deno.Conn, delayMs = 5) {
    this.#conn = conn;
    const answer = notifyMessage("COLO_CHECKPOINT");
    this.reader = new FrameReader(conn, (f) => {
      if (new TextDecoder().decode(f) !== "DO_CHECKPOINT") return;
      this.requests++;
      if (this.#pending) return;
      this.#pending = true;
      this.#timer = setTimeout(() => {
        this.#pending = false;
        this.checkpoints++;
        this.#writing = this.#writing.then(() => writeAll(conn, answer)).catch(() => {});
      }, delayMs);
    });
  }

  /** Stops answering and closes the connection. */
  async close(): Promise<void> {
    clearTimeout(this.#timer);
    await this.#writing;
    await this.reader.close();
  }
}

/** The three data connections of a program with tcp-listen endpoints. */
export interface DataPeers {
  primary: Deno.TcpConn;
  secondary: Deno.TcpConn;
  outdev: Deno.TcpConn;
}

/** Connects to primary-in, secondary-in and outdev of `ports`. */
export async function connectData(ports: Record<string, number>): Promise<DataPeers> {
  return {
    primary: await connectRetry(ports["primary-in"]),
    secondary: await connectRetry(ports["secondary-in"]),
    outdev: await connectRetry(ports["outdev"]),
  };
}

/** Closes connections, ignoring ones already closed. */
export function closeAll(...conns: (Deno.Conn | null | undefined)[]): void {
  for (const c of conns) {
    try {
      c?.close();
    } catch {
      // already closed
    }
  }
}

/** Waits `ms` (for pacing load and for deadlines, never as synchronisation). */
export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * `count` framed UDP datagrams of flows `first`, `first + 1`, ... with the same payload, built
 * from one template (only the source address differs).
 */
export function udpBatch(first: number, count: number, payload: string): Uint8Array {
  const template = udpFramed(0, payload);
  const size = template.length;
  const out = new Uint8Array(count * size);
  for (let k = 0; k < count; k++) {
    const at = k * size;
    const n = first + k;
    out.set(template, at);
    out[at + 4 + IP_SRC_AT + 1] = (n >> 16) & 255;
    out[at + 4 + IP_SRC_AT + 2] = (n >> 8) & 255;
    out[at + 4 + IP_SRC_AT + 3] = n & 255;
  }
  return out;
}

/** Segments per batch a pump writes (one write call each). */
export const PUMP_BATCH = 256;

/**
 * Writes the same {@linkcode TcpStreams} into both inputs as fast as each socket takes it,
 * each side on its own (as two VMs would): a side the program does not read falls behind,
 * and the other runs ahead by at most `maxAheadFrames` (the generator's memory bound).
 * A side given as null is not written.
 */
export class PairedPump {
  /** Frames written per side. */
  readonly sent = { primary: 0, secondary: 0 };
  /** Largest difference seen between the two sides' frames written. */
  maxDrift = 0;
  readonly #streams: TcpStreams;
  readonly #batches: { primary: Uint8Array; secondary: Uint8Array }[] = [];
  /** Frames in batches dropped from the front of `#batches` (written by both sides). */
  #base = 0;
  #stopAt = Infinity;
  readonly #maxAhead: number;
  readonly #diverge?: (i: number) => boolean;
  readonly #gate?: (sent: number) => Promise<unknown>;
  readonly #wakers: (() => void)[] = [];
  readonly #done: Promise<void>[];
  /** Frames each side has written or is writing (what a stop must let the other reach). */
  readonly #claimed = { primary: 0, secondary: 0 };
  /** Sides whose connection failed: the other no longer waits for them. */
  readonly #dead = { primary: false, secondary: false };

  constructor(
    streams: TcpStreams,
    peers: { primary: Deno.Conn | null; secondary: Deno.Conn | null },
    options: {
      maxAheadFrames?: number;
      diverge?: (i: number) => boolean;
      limit?: number;
      /** Awaited before each batch with the frames that side has written (a window). */
      gate?: (sent: number) => Promise<unknown>;
    } = {},
  ) {
    this.#streams = streams;
    this.#maxAhead = options.maxAheadFrames ?? 1 << 20;
    this.#diverge = options.diverge;
    this.#stopAt = options.limit ?? Infinity;
    this.#gate = options.gate;
    this.#done = [];
    if (peers.primary) this.#done.push(this.#run("primary", peers.primary));
    else this.sent.primary = -1;
    if (peers.secondary) this.#done.push(this.#run("secondary", peers.secondary));
    else this.sent.secondary = -1;
  }

  async #run(side: "primary" | "secondary", conn: Deno.Conn): Promise<void> {
    const other = side === "primary" ? "secondary" : "primary";
    try {
      while (this.sent[side] < this.#stopAt) {
        const theirs = this.sent[other];
        if (theirs >= 0 && !this.#dead[other] && this.sent[side] - theirs >= this.#maxAhead) {
          await new Promise<void>((r) => this.#wakers.push(r));
          continue;
        }
        if (this.#gate) {
          await this.#gate(this.sent[side]);
          if (this.sent[side] >= this.#stopAt) break;
        }
        const index = (this.sent[side] - this.#base) / PUMP_BATCH;
        while (this.#batches.length <= index) {
          this.#batches.push(this.#streams.next(PUMP_BATCH, this.#diverge));
        }
        this.#claimed[side] = this.sent[side] + PUMP_BATCH;
        await writeAll(conn, this.#batches[index][side]);
        this.sent[side] += PUMP_BATCH;
        if (theirs >= 0) {
          this.maxDrift = Math.max(this.maxDrift, Math.abs(this.sent[side] - this.sent[other]));
        }
        this.#trim();
        for (const w of this.#wakers.splice(0)) w();
      }
    } catch {
      // the connection was closed under us: this side stops
      this.#dead[side] = true;
    }
    for (const w of this.#wakers.splice(0)) w();
  }

  #trim(): void {
    const written = (side: "primary" | "secondary") =>
      this.sent[side] < 0 || this.#dead[side] ? Infinity : this.sent[side];
    const low = Math.min(written("primary"), written("secondary"));
    while (this.#batches.length > 0 && this.#base + PUMP_BATCH <= low) {
      this.#batches.shift();
      this.#base += PUMP_BATCH;
    }
  }

  /**
   * Stops both sides at the same frame (the furthest either has reached); resolves when both
   * wrote up to it, or false after `timeoutMs` (a side the program stopped reading).
   */
  stop(timeoutMs: number): Promise<boolean> {
    this.#stopAt = Math.max(this.#claimed.primary, this.#claimed.secondary);
    for (const w of this.#wakers.splice(0)) w();
    return this.finished(timeoutMs);
  }

  /** Resolves true once both sides wrote everything (up to the limit), false after `timeoutMs`. */
  async finished(timeoutMs: number): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<false>((r) => timer = setTimeout(() => r(false), timeoutMs));
    const ok = await Promise.race([Promise.all(this.#done).then(() => true), late]);
    clearTimeout(timer);
    return ok && !this.#dead.primary && !this.#dead.secondary;
  }

  /** Frames of the primary stream written (the ones outdev must deliver). */
  get total(): number {
    return Math.max(this.sent.primary, 0);
  }
}
