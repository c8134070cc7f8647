/**
 * Drives one implementation through a scenario over its four sockets and records, after each
 * step, every frame that left outdev and every message that left notify-dev.
 *
 * A step is over when barriers say so, not after a fixed sleep:
 * - primary barrier: an ARP marker written to primary-in is passed straight to outdev by both
 *   implementations (SPEC 4), so once it comes out every earlier primary frame was handled;
 * - secondary barrier: a UDP marker is first held on primary-in (it has no partner yet), then
 *   its twin is written to secondary-in after the step's frames; the primary marker leaves
 *   outdev once the secondary stream was read up to the twin;
 * - notify barrier: `COLO_USERSPACE_PROXY_INIT` is answered at once with
 *   `COLO_COMPARE_GET_XEN_INIT`, after any DO_CHECKPOINT written before it.
 * Markers and barrier replies are removed from the record. Where no barrier is possible (a
 * stream left inside a frame, a disconnected stream, a timer step) a quiet period is used.
 *
 * @module
 */

import { arp, concat, ethernet, frame } from "../support/packets.ts";
import {
  connectRetry,
  connectUnixRetry,
  FrameCollector,
  type Received,
  sameBytes,
} from "../support/net.ts";
import type { Impl } from "./impl.ts";
import {
  type BuiltFrame,
  FrameBook,
  frameBytes,
  rawHex,
  type Scenario,
  type Step,
  type StreamName,
} from "./scenario.ts";

/** What one step produced. */
export interface StepRecord {
  out: Received[];
  /** DO_CHECKPOINT messages received during the step. */
  ckpts: number;
  /** Other notify-dev messages (barrier replies removed). */
  notify: string[];
  closed: StreamName[];
  stalled: StreamName[];
  exited: boolean;
}

/** Source MAC of every marker frame; never used by scenarios. */
export const MARKER_MAC = "02:c0:10:ba:44:1e";
const MARKER_MAC_BYTES = [0x02, 0xc0, 0x10, 0xba, 0x44, 0x1e];
const BARRIER_TIMEOUT_MS = 2000;
/** Quiet period used where no barrier is possible. */
export const QUIET_MS = 150;
const decoder = new TextDecoder();

/** True for a marker frame (by its source MAC, after any vnet header). */
export function isMarker(f: Received): boolean {
  const at = (f.vnetLen ?? 0) + 6;
  for (let i = 0; i < 6; i++) if (f.data[at + i] !== MARKER_MAC_BYTES[i]) return false;
  return true;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Tracks where a writer is inside the colo framing of a stream, so the driver knows whether a
 * barrier frame can be appended (only at a frame boundary).
 */
class FramingCursor {
  /** Bytes of the length word(s): 4, or 8 with a vnet word. */
  readonly #head: number;
  /** Header bytes collected so far, while `#inHead`. */
  #buf: number[] = [];
  #inHead = true;
  /** Frame bytes still to come, while not `#inHead`. */
  #need = 0;
  constructor(vnet: boolean) {
    this.#head = vnet ? 8 : 4;
  }
  get atBoundary(): boolean {
    return this.#inHead && this.#buf.length === 0;
  }
  reset(): void {
    this.#inHead = true;
    this.#buf = [];
    this.#need = 0;
  }
  feed(data: Uint8Array): void {
    let i = 0;
    while (i < data.length) {
      if (this.#inHead) {
        this.#buf.push(data[i++]);
        if (this.#buf.length === this.#head) {
          const len = ((this.#buf[0] << 24) | (this.#buf[1] << 16) | (this.#buf[2] << 8) |
            this.#buf[3]) >>> 0;
          this.#buf = [];
          if (len > 0) {
            this.#inHead = false;
            this.#need = len;
          }
        }
      } else {
        const n = Math.min(this.#need, data.length - i);
        i += n;
        this.#need -= n;
        if (this.#need === 0) this.#inHead = true;
      }
    }
  }
}

interface InStream {
  conn?: Deno.Conn;
  closed: boolean;
  cursor: FramingCursor;
  reader?: Promise<void>;
}

/** One connection to an implementation, driving one scenario. */
export class Session {
  readonly impl: Impl;
  readonly #vnet: boolean;
  readonly #book: FrameBook;
  #pri: InStream;
  #sec: InStream;
  #ntf: InStream;
  #out?: FrameCollector;
  #notify?: FrameCollector;
  #markers = 0;
  #closedSeen = new Set<StreamName>();
  #newlyClosed: StreamName[] = [];
  #stalled: StreamName[] = [];
  /** INITs written (by steps and barriers), replies taken, barrier replies still to strip. */
  #initsSent = 0;
  #repliesTaken = 0;
  #barrierOwed = 0;
  /** Streams that stalled: no more barriers through them until they are reconnected. */
  #dead = new Set<StreamName>();
  #exitReported = false;

  constructor(impl: Impl, scenario: Scenario, book = new FrameBook(scenario)) {
    this.impl = impl;
    this.#vnet = scenario.options?.vnet === true;
    this.#book = book;
    this.#pri = { closed: false, cursor: new FramingCursor(this.#vnet) };
    this.#sec = { closed: false, cursor: new FramingCursor(this.#vnet) };
    // QEMU's notify reader expects a vnet word when vnet is on; ours never does.
    this.#ntf = { closed: false, cursor: new FramingCursor(impl.notifyVnet) };
  }

  /** Connects all four streams and waits until each is really being served. */
  async open(): Promise<void> {
    await this.#connect("pri");
    await this.#connect("sec");
    await this.#connect("notify");
    await this.#connect("out");
    await this.#notifyBarrier();
    this.take();
  }

  #in(name: StreamName): InStream {
    if (name === "pri") return this.#pri;
    if (name === "sec") return this.#sec;
    if (name === "notify") return this.#ntf;
    throw new Error(`not an input stream: ${name}`);
  }

  async #connect(name: StreamName): Promise<void> {
    const at = this.impl.endpoints[name];
    const conn = "port" in at
      ? await connectRetry(at.port, 5000)
      : await connectUnixRetry(at.path, 5000);
    this.#closedSeen.delete(name);
    this.#dead.delete(name);
    if (name === "out") {
      this.#out = new FrameCollector(conn, this.#vnet);
      // QEMU drops what it releases while no outdev peer is accepted yet: repeat the marker.
      if (this.#primaryUsable()) {
        const deadline = performance.now() + BARRIER_TIMEOUT_MS;
        let ok = false;
        while (!ok && performance.now() < deadline && !this.impl.hasExited()) {
          ok = await this.#primaryBarrier(100);
        }
        if (!ok) {
          this.#stalled.push("out");
          this.#dead.add("out");
        }
      }
      return;
    }
    if (name === "notify") this.#notify = new FrameCollector(conn);
    const s = this.#in(name);
    s.conn = conn;
    s.closed = false;
    s.cursor.reset();
    // Inputs never carry anything back; reading them is how we learn that the peer closed.
    s.reader = name === "notify" ? undefined : this.#watchClose(name, s, conn);
    if (name === "pri" && this.#canPrimaryBarrier()) await this.#barrier("pri");
    if (name === "sec" && this.#canSecondaryBarrier()) {
      await this.#stallUnless("sec", this.#secondaryBarrier([]));
    }
    // notify: the step's own notify barrier follows.
  }

  async #watchClose(name: StreamName, s: InStream, conn: Deno.Conn): Promise<void> {
    const buf = new Uint8Array(1024);
    try {
      while ((await conn.read(buf)) !== null) {
        // nothing is expected on an input stream
      }
    } catch {
      // reset
    }
    if (s.conn === conn && !s.closed) {
      s.closed = true;
      this.#markClosed(name);
    }
  }

  #markClosed(name: StreamName): void {
    if (!this.#closedSeen.has(name)) {
      this.#closedSeen.add(name);
      this.#newlyClosed.push(name);
    }
  }

  #outReady(): boolean {
    return this.#out !== undefined && !this.#out.closed && !this.#dead.has("out");
  }

  #primaryUsable(): boolean {
    return !this.#pri.closed && this.#pri.conn !== undefined && this.#pri.cursor.atBoundary;
  }

  async #write(name: StreamName, data: Uint8Array): Promise<boolean> {
    const s = this.#in(name);
    if (!s.conn || s.closed) return false;
    s.cursor.feed(data);
    try {
      let o = 0;
      while (o < data.length) o += await s.conn.write(data.subarray(o));
      return true;
    } catch {
      s.closed = true;
      this.#markClosed(name);
      return false;
    }
  }

  #marker(kind: "arp" | "udp"): BuiltFrame {
    const n = ++this.#markers;
    const tag = `${(n >> 8) & 0xff}.${n & 0xff}`;
    const data = kind === "arp"
      ? ethernet(
        { srcMac: MARKER_MAC, dstMac: "ff:ff:ff:ff:ff:ff" },
        0x0806,
        arp(`198.18.${tag}`, "198.18.255.255").subarray(14, 42),
      )
      : frame({
        srcMac: MARKER_MAC,
        ip: { src: "198.18.255.1", dst: "198.18.255.2", id: n & 0xffff },
        // A connection of its own per barrier: a marker left held by a stream that stopped
        // being read can never be compared against a later one.
        udp: { sport: 1024 + (n % 60000), dport: 9, payload: `colo-conformance-barrier-${n}` },
      });
    return { label: `marker-${n}`, data, vnetLen: 0 };
  }

  #outHas(m: BuiltFrame, timeoutMs: number): Promise<boolean> {
    if (!this.#out) return Promise.resolve(false);
    return this.#out.waitUntil((f) => sameBytes(f.data, m.data), timeoutMs).then((f) =>
      f !== undefined
    );
  }

  /** Writes `prefix` (if any) then an ARP marker to primary-in and waits for the marker. */
  async #primaryBarrier(timeoutMs = BARRIER_TIMEOUT_MS, prefix?: Uint8Array): Promise<boolean> {
    const m = this.#marker("arp");
    const bytes = prefix
      ? concat(prefix, frameBytes([m], this.#vnet))
      : frameBytes([m], this.#vnet);
    if (!(await this.#write("pri", bytes))) return false;
    return await this.#outHas(m, timeoutMs);
  }

  /** Holds a UDP marker on primary-in, writes `frames` and the marker's twin to secondary-in. */
  async #secondaryBarrier(frames: BuiltFrame[], chunks?: number[]): Promise<boolean> {
    const held = this.#marker("udp");
    if (!(await this.#primaryBarrier(BARRIER_TIMEOUT_MS, frameBytes([held], this.#vnet)))) {
      // No barrier possible: write the frames anyway and let the caller wait quietly.
      await this.#writeChunks("sec", frameBytes(frames, this.#vnet), chunks);
      return false;
    }
    const payload = frameBytes(frames, this.#vnet);
    const twin = frameBytes([held], this.#vnet);
    if (chunks) {
      if (!(await this.#writeChunks("sec", payload, chunks))) return false;
      if (!(await this.#write("sec", twin))) return false;
    } else if (!(await this.#write("sec", concat(payload, twin)))) {
      return false;
    }
    return await this.#outHas(held, BARRIER_TIMEOUT_MS);
  }

  /** Writes COLO_USERSPACE_PROXY_INIT and waits until every INIT sent so far was answered. */
  async #notifyBarrier(): Promise<boolean> {
    const collector = this.#notify;
    if (!collector || collector.closed || this.#ntf.closed || !this.#ntf.cursor.atBoundary) {
      return false;
    }
    if (this.#dead.has("notify")) return false;
    if (!(await this.#write("notify", this.#notifyFrame("COLO_USERSPACE_PROXY_INIT")))) {
      return false;
    }
    this.#initsSent++;
    this.#barrierOwed++;
    const replies = () =>
      this.#repliesTaken +
      collector.frames.filter((r) => decoder.decode(r.data) === "COLO_COMPARE_GET_XEN_INIT")
        .length;
    // The condition is on the whole stream, not one frame: any frame serves as the witness.
    const ok = await collector.waitUntil(() => replies() >= this.#initsSent, BARRIER_TIMEOUT_MS);
    if (!ok) {
      this.#stalled.push("notify");
      this.#dead.add("notify");
    }
    return ok !== undefined;
  }

  #notifyFrame(text: string, exact = false): Uint8Array {
    const data = new TextEncoder().encode(text);
    return frameBytes([{ label: text, data, vnetLen: 0 }], this.impl.notifyVnet && !exact);
  }

  async #writeChunks(name: StreamName, data: Uint8Array, chunks?: number[]): Promise<boolean> {
    if (!chunks) return await this.#write(name, data);
    let o = 0;
    for (const c of chunks) {
      if (o >= data.length) break;
      if (!(await this.#write(name, data.subarray(o, o + c)))) return false;
      o += c;
      await sleep(3);
    }
    if (o < data.length) return await this.#write(name, data.subarray(o));
    return true;
  }

  async #quiet(ms = QUIET_MS): Promise<void> {
    while (true) {
      const last = Math.max(this.#out?.lastActivity ?? 0, this.#notify?.lastActivity ?? 0);
      const idle = performance.now() - last;
      if (idle >= ms) return;
      await sleep(ms - idle + 1);
    }
  }

  /** Runs one step and returns what it produced. */
  async step(step: Step): Promise<StepRecord> {
    if (this.impl.hasExited()) {
      await this.#quiet(20);
      return this.take();
    }
    const frames = (l: string | string[] | undefined) =>
      step.flood
        ? this.#book.flood([l ?? []].flat()[0], step.flood)
        : [l ?? []].flat().map((x) => this.#book.get(x));
    // True once a primary barrier passed after everything the step wrote was handled.
    let outSynced = false;
    let input = true;
    if (step.pri !== undefined) {
      const data = frameBytes(frames(step.pri), this.#vnet);
      if (step.chunks) {
        await this.#writeChunks("pri", data, step.chunks);
        if (this.#canPrimaryBarrier()) outSynced = await this.#barrier("pri");
      } else if (this.#canPrimaryBarrier()) {
        outSynced = await this.#barrier("pri", data);
      } else {
        await this.#write("pri", data);
      }
    } else if (step.sec !== undefined) {
      const fs = frames(step.sec);
      if (this.#canSecondaryBarrier()) {
        outSynced = await this.#stallUnless("sec", this.#secondaryBarrier(fs, step.chunks));
      } else {
        await this.#writeChunks("sec", frameBytes(fs, this.#vnet), step.chunks);
      }
    } else if (step.ntf !== undefined) {
      await this.#write("notify", this.#notifyFrame(step.ntf, step.exact));
      if (step.ntf === "COLO_USERSPACE_PROXY_INIT") this.#initsSent++;
    } else if (step.raw !== undefined) {
      const r = step.raw;
      const data = r.hex !== undefined ? rawHex(r.hex) : frameBytes(
        (r.frames ?? []).map((l) => this.#book.get(l)),
        r.into === "notify" ? this.impl.notifyVnet : this.#vnet,
      );
      const sent = data.slice(r.from ?? 0, r.to ?? data.length);
      await this.#write(r.into, sent);
      if (r.into === "notify") {
        // INITs hidden in raw bytes are answered too: count them for the notify barrier.
        const text = new TextDecoder("latin1").decode(sent);
        this.#initsSent += text.split("COLO_USERSPACE_PROXY_INIT").length - 1;
      }
      if (r.into === "pri" && this.#canPrimaryBarrier()) outSynced = await this.#barrier("pri");
      if (r.into === "sec" && this.#canSecondaryBarrier()) {
        outSynced = await this.#stallUnless("sec", this.#secondaryBarrier([]));
      }
    } else if (step.reconnect !== undefined) {
      await this.#connect(step.reconnect);
    } else {
      input = false;
      if (step.pause !== undefined) await sleep(step.pause);
      if (step.wait_ckpt !== undefined) await this.#waitCheckpoint(step.wait_ckpt);
      if (step.disconnect !== undefined) {
        await this.#disconnect(step.disconnect);
        await this.#quiet();
      }
    }
    if (input) {
      // The notify barrier orders notify-dev after the step; a primary barrier after it
      // catches what a notify message (a flush) released.
      const notifyOk = await this.#notifyBarrier();
      if (notifyOk && !outSynced && this.#canPrimaryBarrier()) {
        outSynced = await this.#barrier("pri");
      }
      if (!notifyOk || !outSynced) await this.#quiet();
    }
    // A peer that closed on us may take a moment to be noticed.
    await sleep(0);
    return this.take();
  }

  #canPrimaryBarrier(): boolean {
    return this.#outReady() && this.#primaryUsable() && !this.#dead.has("pri");
  }

  #canSecondaryBarrier(): boolean {
    return this.#canPrimaryBarrier() && !this.#sec.closed && this.#sec.conn !== undefined &&
      this.#sec.cursor.atBoundary && !this.#dead.has("sec");
  }

  /** A primary barrier (after `data`); a stream that stalls is not used for barriers again. */
  #barrier(name: "pri", data?: Uint8Array): Promise<boolean> {
    return this.#stallUnless(name, this.#primaryBarrier(BARRIER_TIMEOUT_MS, data));
  }

  async #waitCheckpoint(withinMs: number): Promise<void> {
    if (!this.#notify) return await sleep(withinMs);
    const seen = new Set(this.#notify.frames);
    await this.#notify.waitUntil(
      (r) => !seen.has(r) && decoder.decode(r.data) === "DO_CHECKPOINT",
      withinMs,
    );
  }

  async #stallUnless(name: StreamName, barrier: Promise<boolean>): Promise<boolean> {
    const ok = await barrier;
    if (!ok && !this.#in(name).closed && !this.impl.hasExited()) {
      this.#stalled.push(name);
      this.#dead.add(name);
    }
    return ok;
  }

  async #disconnect(name: StreamName): Promise<void> {
    if (name === "out") {
      await this.#out?.close();
      this.#out = undefined;
    } else if (name === "notify") {
      this.#ntf.closed = true;
      this.#ntf.conn = undefined;
      await this.#notify?.close();
      this.#notify = undefined;
    } else {
      await this.#closeInput(this.#in(name));
    }
    // Let the implementation notice.
    await sleep(50);
  }

  /** Removes and returns everything recorded since the last call. */
  take(): StepRecord {
    const out = (this.#out?.take() ?? []).filter((f) => !isMarker(f));
    const messages = (this.#notify?.take() ?? []).map((r) => decoder.decode(r.data));
    const notify: string[] = [];
    let ckpts = 0;
    for (const m of messages) {
      if (m === "DO_CHECKPOINT") ckpts++;
      else if (m === "COLO_COMPARE_GET_XEN_INIT" && this.#barrierOwed > 0) {
        this.#barrierOwed--;
      } else notify.push(m);
      if (m === "COLO_COMPARE_GET_XEN_INIT") this.#repliesTaken++;
    }
    if (this.#out?.closed) this.#markClosed("out");
    if (this.#notify?.closed) this.#markClosed("notify");
    const exited = this.impl.hasExited() && !this.#exitReported;
    if (exited) this.#exitReported = true;
    // A process that ended closes everything: that is reported once, as "exited".
    const gone = this.impl.hasExited();
    const rec: StepRecord = {
      out,
      ckpts,
      notify,
      closed: gone ? [] : this.#newlyClosed,
      stalled: gone ? [] : this.#stalled,
      exited,
    };
    this.#newlyClosed = [];
    this.#stalled = [];
    return rec;
  }

  /** Closes one input's connection and waits for its reader to finish. */
  async #closeInput(s: InStream): Promise<void> {
    const conn = s.conn;
    s.conn = undefined;
    s.closed = true;
    try {
      conn?.close();
    } catch {
      // already closed
    }
    await s.reader;
  }

  /** Closes every connection. */
  async close(): Promise<void> {
    for (const s of [this.#pri, this.#sec]) await this.#closeInput(s);
    this.#ntf.conn = undefined;
    await this.#out?.close();
    await this.#notify?.close();
  }
}

/** Runs a whole scenario against a started implementation; returns one record per step. */
export async function runScenario(impl: Impl, scenario: Scenario): Promise<StepRecord[]> {
  const session = new Session(impl, scenario);
  const records: StepRecord[] = [];
  try {
    await session.open();
    for (const step of scenario.steps) records.push(await session.step(step));
  } finally {
    await session.close();
  }
  return records;
}
