/**
 * The load generator: a process of its own that connects to a comparator's four endpoints,
 * sends the same pre-built frame stream on primary-in and secondary-in with large writes, and
 * counts what comes out of outdev by its length words alone. One run, one workload; the
 * result is one JSON line on stdout.
 *
 *   deno run -A bench/loadgen.ts '{"workload":"tcp-1000",...}'
 *
 * @module
 */

import { connectRetry, connectUnixRetry } from "../tests/support/net.ts";
import { notifyMessage } from "../tests/support/packets.ts";
import { rawClient } from "../tests/support/tls_creds.ts";
import { readCpuSeconds, readMemory } from "./proc.ts";
import { accountRun, type SchedReport, SchedTrace } from "./sched_trace.ts";
import type { Ports } from "./targets.ts";
import {
  buildPattern,
  frameBytes,
  type Pattern,
  plainOf,
  PROBE,
  PROBE_LEN,
  setRound,
  SHAPES,
  type StreamShape,
  type WorkloadName,
} from "./workloads.ts";

/** What the orchestrator asks of one generator run. */
export interface LoadConfig {
  workload: WorkloadName;
  /** Where the target listens (TCP ports; unix socket paths in the `-unix` workloads). */
  ports: Ports;
  /** The comparator's pid, for RSS and CPU samples. */
  targetPid: number;
  warmupMs: number;
  windowMs: number;
  /** Give up waiting for the last frames after this long without progress. */
  drainQuietMs: number;
  /** Send only, count nothing (the target is a sink): measures the generator itself. */
  sendOnly?: boolean;
  /** Warm pairs measured (after the cold pairs and the warm-up pairs). */
  latencyPairs: number;
  latencyWarmup: number;
  /** The first pairs after start, measured apart: the cost of compilation and warm-up. */
  latencyCold: number;
  /** Trace the scheduler during each latency run (`bench.ts --sched-trace`). */
  schedTrace?: boolean;
  /** Where each latency run's pairs go, in order (`bench.ts --latency-dump`). */
  latencyDump?: { file: string; target: string };
  scaleConnections: number;
  /**
   * Connections opened before the scale run's first measurement and not counted: what a
   * target pays once, at its first connections, whatever their number (its first full
   * collection and the code pages that brings back, its tables' first growth), stays out of
   * the figure per connection.
   */
  scalePrime: number;
  floodMs: number;
  /** The lagging secondary sends this fraction of the primary's rounds. */
  floodSecondaryRatio: number;
  /** In the flood, answer DO_CHECKPOINT with COLO_CHECKPOINT after this long. */
  checkpointDelayMs: number;
  /** Bytes per write call. */
  writeSize: number;
  /** Frames in flight (sent, not yet out of outdev) per connection; 0 = no limit. */
  windowPerConnection: number;
  /**
   * For the `-tls` workloads: the credentials directory (QEMU's file names); primary-in,
   * secondary-in and outdev are then reached over TLS with its client certificate.
   */
  tlsDir?: string;
}

/** CPU use of the comparator and of this generator over a window, in percent of one core. */
export interface CpuUse {
  target?: number;
  generator?: number;
}

/** Added latency of one pair, in µs: warm percentiles, and the first pairs after start. */
export interface Latency {
  p50: number;
  p99: number;
  p999: number;
  mean: number;
  /** The worst warm pair. */
  max: number;
  samples: number;
  /** p99 and worst of the first `coldSamples` pairs after start (no warm-up before them). */
  coldP99: number;
  coldMax: number;
  coldSamples: number;
  /** What held the CPUs in the slowest warm pairs (`--sched-trace`), or why it is not known. */
  sched?: SchedReport | string;
}

/** What one generator run reports. */
export interface LoadResult {
  workload: WorkloadName;
  frameBytes: number;
  /** Frames released per second on outdev in the window (or sent, with sendOnly). */
  framesPerSecond?: number;
  /** Frames per second written on primary-in in the window. */
  sentPerSecond?: number;
  /** Frames per CPU-second of the comparator (all its threads) in the window. */
  framesPerCpuSecond?: number;
  cpu?: CpuUse;
  /** Primary frames sent in total, and frames that came out of outdev. */
  sent?: number;
  received?: number;
  /** sent - received after the drain (0 when every frame was released). */
  lost?: number;
  /** DO_CHECKPOINT requests seen on notify-dev. */
  checkpointRequests: number;
  /** COLO_CHECKPOINT answers sent (the `diverged` workload). */
  checkpointsAnswered?: number;
  latency?: Latency;
  /** The comparator's RSS before any peer connected (latency workload). */
  idleRss?: number;
  scale?: {
    connections: number;
    /** Connections opened before `rssBefore` (not counted), if any. */
    primed?: number;
    /** RSS before the primed connections were opened. */
    rssUnprimed?: number;
    rssBefore: number;
    rssAfter: number;
    /** (RSS after - RSS before) / connections. */
    bytesPerConnection: number;
    /** Least-squares slope of RSS over connections opened, in bytes per connection. */
    marginalBytesPerConnection: number;
    /** [connections opened, RSS] after each step. */
    steps: [number, number][];
    /**
     * The same over the anonymous part of the RSS: the process's own memory, without the
     * pages of its executable (which ours gives back at a malloc trim and maps back as it runs
     * code again, src/exec_pages.ts) or of other files.
     */
    anonBytesPerConnection: number;
    anonSteps: [number, number][];
    /**
     * The largest fall of the RSS from the priming to the last step (bytes): memory given back
     * in that time, which the steps' readings can miss when it grows back between two of them.
     */
    givenBack?: number;
    busyWithoutIdle: number;
    busyWithIdle: number;
    busyPerCpuWithoutIdle?: number;
    busyPerCpuWithIdle?: number;
    /** Busy-connection throughput with the idle connections over without (per CPU-second). */
    ratio: number;
  };
  flood?: {
    seconds: number;
    secondaryRatio: number;
    samples: [number, number][];
    peakRss: number;
    firstHalfPeak: number;
    secondHalfPeak: number;
    levelledOff: boolean;
    checkpointsAnswered: number;
    primarySent: number;
    secondarySent: number;
  };
  /** Resident set size of the comparator when the run ended. */
  rssEnd?: number;
  /** Peak resident set size (VmHWM) of the comparator when the run ended. */
  peakRss?: number;
  notes: string[];
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** What the run is doing now, for the watchdog's message. */
let phase = "starting";

export async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let o = 0;
  while (o < data.length) o += await conn.write(data.subarray(o));
}

/**
 * A list of waiters for a frame count, made at this one place so that V8 sees one kind of array:
 * the list a counter started with came from its field initializer, an array V8 had seen hold
 * small integers only, and the first wait on a new counter threw away the compiled pair loop
 * (bench/README.md, "The generator warmed twice").
 */
function waiterList(): { count: number; wake: () => void }[] {
  return [];
}

/**
 * Counts frames on outdev by their length words, without looking at or copying the frame
 * bytes. Probe frames (ARP, 60 bytes) are counted apart.
 */
class OutdevCounter {
  frames = 0;
  probes = 0;
  lastProgress = performance.now();
  closed = false;
  #need = 0;
  #headerBytes = 0;
  #len = 0;
  /** Waiters for a frame count, and the smallest count any of them waits for. */
  #waiters = waiterList();
  #waitFor = Infinity;
  readonly done: Promise<void>;

  constructor(conn: Deno.Conn) {
    this.done = this.#loop(conn);
  }

  async #loop(conn: Deno.Conn): Promise<void> {
    const buf = new Uint8Array(1 << 20);
    try {
      while (true) {
        const n = await conn.read(buf);
        if (n === null) break;
        this.#feed(buf, n);
      }
    } catch {
      // closed under us
    }
    this.closed = true;
    this.#wakeUpTo(Infinity);
  }

  #wakeUpTo(frames: number): void {
    const still = waiterList();
    let least = Infinity;
    for (const w of this.#waiters) {
      if (w.count <= frames) {
        w.wake();
      } else {
        still.push(w);
        least = Math.min(least, w.count);
      }
    }
    this.#waiters = still;
    this.#waitFor = least;
  }

  #feed(buf: Uint8Array, n: number): void {
    let i = 0;
    let need = this.#need;
    while (i < n) {
      if (need > 0) {
        const take = need < n - i ? need : n - i;
        need -= take;
        i += take;
        if (need === 0) this.#complete(this.#len);
        continue;
      }
      if (this.#headerBytes === 0 && n - i >= 4) {
        this.#len = ((buf[i] << 24) | (buf[i + 1] << 16) | (buf[i + 2] << 8) | buf[i + 3]) >>> 0;
        i += 4;
      } else {
        if (this.#headerBytes === 0) this.#len = 0;
        this.#len = ((this.#len << 8) | buf[i++]) >>> 0;
        if (++this.#headerBytes < 4) continue;
        this.#headerBytes = 0;
      }
      need = this.#len;
      if (need === 0) this.#complete(0);
    }
    this.#need = need;
  }

  #complete(len: number): void {
    if (len === PROBE_LEN) this.probes++;
    else this.frames++;
    this.lastProgress = performance.now();
    if (this.frames >= this.#waitFor) this.#wakeUpTo(this.frames);
  }

  /** Resolves once `count` workload frames have arrived (or the stream closed). */
  until(count: number): Promise<void> {
    if (this.frames >= count || this.closed) return Promise.resolve();
    this.#waitFor = Math.min(this.#waitFor, count);
    return new Promise((wake) => this.#waiters.push({ count, wake }));
  }

  /** Waits until `count` frames arrived, or nothing arrived for `quietMs`. */
  async drain(count: number, quietMs: number): Promise<void> {
    this.lastProgress = performance.now();
    while (this.frames < count && !this.closed) {
      if (performance.now() - this.lastProgress > quietMs) return;
      await Promise.race([this.until(count), sleep(50)]);
    }
  }
}

const DO_CHECKPOINT = new TextEncoder().encode("DO_CHECKPOINT");

function sameBytes(a: Uint8Array, at: number, b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (a[at + i] !== b[i]) return false;
  return true;
}

/**
 * Reads notify-dev: counts DO_CHECKPOINT requests and, when asked to play the COLO
 * controller, answers with COLO_CHECKPOINT after a delay (requests that arrive meanwhile
 * are folded into the one checkpoint).
 */
class NotifyPeer {
  requests = 0;
  answered = 0;
  #pending = new Uint8Array(0);
  #answering = false;
  answerAfterMs: number | undefined;
  readonly done: Promise<void>;

  constructor(readonly conn: Deno.Conn) {
    this.done = this.#loop();
  }

  async #loop(): Promise<void> {
    const buf = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await this.conn.read(buf);
        if (n === null) break;
        const all = new Uint8Array(this.#pending.length + n);
        all.set(this.#pending);
        all.set(buf.subarray(0, n), this.#pending.length);
        let o = 0;
        while (all.length - o >= 4) {
          const len = ((all[o] << 24) | (all[o + 1] << 16) | (all[o + 2] << 8) | all[o + 3]) >>> 0;
          if (all.length - o < 4 + len) break;
          if (len === DO_CHECKPOINT.length && sameBytes(all, o + 4, DO_CHECKPOINT)) this.#request();
          o += 4 + len;
        }
        this.#pending = all.slice(o);
      }
    } catch {
      // closed under us
    }
  }

  #request(): void {
    this.requests++;
    if (this.answerAfterMs === undefined || this.#answering) return;
    this.#answering = true;
    setTimeout(() => {
      this.#answering = false;
      this.answered++;
      writeAll(this.conn, notifyMessage("COLO_CHECKPOINT")).catch(() => {});
    }, this.answerAfterMs);
  }
}

/** The four connections to a comparator, outdev and notify first so nothing released is lost. */
export interface Peers {
  primary: Deno.Conn;
  secondary: Deno.Conn;
  outdev: Deno.Conn;
  counter: OutdevCounter;
  notify?: NotifyPeer;
  close(): Promise<void>;
}

/**
 * A TLS client connection with the client certificate of `dir`, handshake done, retrying
 * while the comparator is not listening yet. Deno's rustls client: it encrypts at about half
 * the CPU of node:tls (bench/tls.ts), so the generator stays out of the way.
 */
async function connectTlsRetry(port: number, dir: string, timeoutMs = 10_000): Promise<Deno.Conn> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    try {
      const conn = await rawClient(port, dir);
      await conn.handshake();
      return conn;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(20);
    }
  }
}

export async function connect(cfg: Pick<LoadConfig, "ports" | "tlsDir">): Promise<Peers> {
  phase = "connecting";
  const dir = cfg.tlsDir;
  const stream = (at: number | string) =>
    typeof at === "string"
      ? connectUnixRetry(at)
      : dir
      ? connectTlsRetry(at, dir)
      : connectRetry(at);
  const outdev = await stream(cfg.ports.outdev);
  const notifyConn = cfg.ports.notify ? await connectRetry(cfg.ports.notify) : undefined;
  const primary = await stream(cfg.ports.primary);
  const secondary = await stream(cfg.ports.secondary);
  const counter = new OutdevCounter(outdev);
  const notify = notifyConn ? new NotifyPeer(notifyConn) : undefined;
  return {
    primary,
    secondary,
    outdev,
    counter,
    notify,
    async close() {
      for (const c of [primary, secondary, outdev, notifyConn]) {
        try {
          c?.close();
        } catch { /* already closed */ }
      }
      await counter.done;
      await notify?.done;
    },
  };
}

/**
 * Sends an ARP frame on primary-in until one comes out of outdev: the comparator has
 * accepted every peer and the release path is live. (QEMU accepts its chardev peers
 * asynchronously and drops what it releases before outdev is accepted.)
 */
export async function probe(peers: Peers): Promise<void> {
  phase = "probing the release path";
  for (let attempt = 0; attempt < 50; attempt++) {
    await writeAll(peers.primary, PROBE);
    const deadline = performance.now() + 200;
    while (performance.now() < deadline) {
      if (peers.counter.probes > 0) return;
      await sleep(5);
    }
  }
  throw new Error("no probe frame came out of outdev in 10 s: is the comparator forwarding?");
}

/** CPU seconds of the comparator and of this process, to turn into percentages later. */
function cpuMark(pid: number): { at: number; target?: number; self?: number } {
  return { at: performance.now(), target: readCpuSeconds(pid), self: readCpuSeconds("self") };
}

function cpuBetween(a: ReturnType<typeof cpuMark>, b: ReturnType<typeof cpuMark>): CpuUse {
  const seconds = (b.at - a.at) / 1000;
  const pct = (x?: number, y?: number) =>
    x === undefined || y === undefined ? undefined : Math.round(((y - x) / seconds) * 100);
  return { target: pct(a.target, b.target), generator: pct(a.self, b.self) };
}

/** One input's writer state in a {@linkcode PairedSender}. */
interface SenderSide {
  conn: Deno.Conn;
  /** This side's own copy of the pattern (the two sides may be in different rounds). */
  pattern: Pattern;
  /** Pattern bytes written since the sender started. */
  bytes: number;
  /** Bytes of the write under way (not yet in `bytes`), or 0. */
  writing: number;
  /** Resolvers waiting for this side to write more. */
  moved: (() => void)[];
}

/**
 * Writes the same pattern, round after round, on primary-in and secondary-in: one writer per
 * input, neither more than `maxLead` bytes ahead of the other, so both copies are segmented
 * identically and neither input runs away; a full socket on one side does not stall the
 * other. At most `window` frames are in flight on each input (written, not yet out of
 * outdev), as a guest's TCP receive window would allow. That bounds how far the comparator
 * can read one input ahead of the other: QEMU reads primary-in faster than secondary-in under
 * load, and without a window its primary queue overflows `max_queue_size` within a second
 * (dropped frames, then a mismatch on every frame). `stop()` ends both sides at the same
 * round boundary, so every primary frame sent has its secondary copy.
 */
class PairedSender {
  readonly #primary: SenderSide;
  readonly #secondary: SenderSide;
  readonly #wire: number;
  readonly #step: number;
  readonly #maxLead: number;
  readonly #firstRound: number;
  /** Once stopping: the byte count both sides end at. */
  #endBytes = Infinity;
  readonly done: Promise<void>;

  constructor(
    readonly peers: Peers,
    pattern: Pattern,
    writeSize: number,
    readonly window: number,
    /** Frames already counted on outdev before this sender started. */
    readonly base: number,
    firstRound = 0,
    /** What secondary-in is sent, if not `pattern` (the same frames, the same framing). */
    secondaryPattern?: Pattern,
  ) {
    this.#wire = pattern.bytes.length / pattern.frames;
    this.#step = Math.max(this.#wire, Math.min(writeSize, Math.floor(window * this.#wire / 4)));
    this.#maxLead = 4 * this.#step;
    this.#firstRound = firstRound;
    this.#primary = { conn: peers.primary, pattern, bytes: 0, writing: 0, moved: [] };
    this.#secondary = {
      conn: peers.secondary,
      pattern: secondaryPattern ?? { ...pattern, bytes: pattern.bytes.slice() },
      bytes: 0,
      writing: 0,
      moved: [],
    };
    this.done = Promise.all([
      this.#run(this.#primary, this.#secondary),
      this.#run(this.#secondary, this.#primary),
    ]).then(() => {});
  }

  async #run(me: SenderSide, other: SenderSide): Promise<void> {
    const b = me.pattern.bytes;
    const counter = this.peers.counter;
    while (me.bytes < this.#endBytes) {
      setRound(me.pattern, this.#firstRound + me.bytes / b.length);
      for (let o = 0; o < b.length; o += this.#step) {
        const slice = b.subarray(o, Math.min(b.length, o + this.#step));
        // stop() may have come while this side stood at a round boundary (o is then 0).
        if (me.bytes >= this.#endBytes) return;
        while (me.bytes + slice.length - other.bytes > this.#maxLead) {
          await new Promise<void>((r) => other.moved.push(r));
        }
        // The window holds for each input: a comparator can hold at most `window` frames of
        // either side (what it read of one side and has not yet matched with the other).
        const inFlight = Math.ceil((me.bytes + slice.length) / this.#wire);
        if (inFlight - this.window > counter.frames - this.base) {
          await counter.until(this.base + inFlight - this.window);
          if (counter.closed) {
            this.#endBytes = me.bytes;
            for (const w of me.moved.splice(0)) w();
            return;
          }
        }
        if (me.bytes >= this.#endBytes) return;
        me.writing = slice.length;
        await writeAll(me.conn, slice);
        me.writing = 0;
        me.bytes += slice.length;
        for (const w of me.moved.splice(0)) w();
      }
    }
  }

  /** Rounds written completely on both inputs, counted from the first round. */
  get rounds(): number {
    const len = this.#primary.pattern.bytes.length;
    return this.#firstRound +
      Math.floor(Math.min(this.#primary.bytes, this.#secondary.bytes) / len);
  }

  /** Primary frames completely sent. */
  get frames(): number {
    return Math.floor(this.#primary.bytes / this.#wire);
  }

  /** Both sides finish the round the one further ahead is in, then stop. */
  async stop(): Promise<void> {
    phase = `stopping the senders (primary at ${this.#primary.bytes} bytes, secondary at ` +
      `${this.#secondary.bytes})`;
    const len = this.#primary.pattern.bytes.length;
    // A write under way counts: a side that just began a round must not end it alone (one
    // slice of primary frames without their secondary copies, "lost" though never compared).
    const p = this.#primary;
    const s = this.#secondary;
    const ahead = Math.max(p.bytes + p.writing, s.bytes + s.writing);
    this.#endBytes = Math.ceil(ahead / len) * len;
    await this.done;
  }
}

/** Frames the generator keeps in flight for `shape` (no limit when nothing is counted). */
function windowFor(cfg: LoadConfig, shape: StreamShape): number {
  if (cfg.sendOnly || cfg.windowPerConnection <= 0) return Infinity;
  return cfg.windowPerConnection * shape.connections;
}

/** What one measuring window saw. */
interface Window {
  framesPerSecond: number;
  sentPerSecond: number;
  /** Frames per second of the comparator's own CPU time: its cost per frame, whatever else
   * runs on the machine. */
  framesPerCpuSecond?: number;
  cpu: CpuUse;
}

/**
 * Measures released frames per second after a warm-up, then checks the count.
 *
 * The `diverged` workload: replicas that differ in every datagram (as a QUIC service's do), the
 * secondary's payload another than the primary's, of the same length; this process answers
 * checkpoint requests like a COLO controller, after `checkpointDelayMs` (0 from bench.ts: the
 * comparator is never kept waiting, so the row measures what it can carry). Every primary frame
 * then comes out in a checkpoint's flush.
 */
async function throughput(cfg: LoadConfig, result: LoadResult): Promise<void> {
  const shape = SHAPES[cfg.workload];
  const diverged = cfg.workload === "diverged";
  const peers = await connect(cfg);
  // A sink forwards nothing, not even the probe; it accepts its peers at once.
  if (!cfg.sendOnly) await probe(peers);
  if (diverged && peers.notify) peers.notify.answerAfterMs = cfg.checkpointDelayMs;
  const pattern = buildPattern(shape, 512, 1 << 20);
  const sender = new PairedSender(
    peers,
    pattern,
    cfg.writeSize,
    windowFor(cfg, shape),
    peers.counter.frames,
    0,
    diverged ? buildPattern(shape, pattern.frames, 0, 0, 8) : undefined,
  );
  const window = await measureWindow(cfg, peers, sender, cfg.warmupMs);
  Object.assign(result, window);
  await sender.stop();
  await finish(cfg, peers, sender.frames, result);
  if (diverged) result.checkpointsAnswered = peers.notify?.answered ?? 0;
}

async function measureWindow(
  cfg: LoadConfig,
  peers: Peers,
  sender: PairedSender,
  warmupMs: number,
): Promise<Window> {
  phase = "warm-up";
  await sleep(warmupMs);
  phase = "measuring";
  const c0 = cpuMark(cfg.targetPid);
  const f0 = peers.counter.frames;
  const s0 = sender.frames;
  await sleep(cfg.windowMs);
  const c1 = cpuMark(cfg.targetPid);
  const seconds = (c1.at - c0.at) / 1000;
  const sentPerSecond = Math.round((sender.frames - s0) / seconds);
  const frames = cfg.sendOnly ? sender.frames - s0 : peers.counter.frames - f0;
  const cpuSeconds = c0.target === undefined || c1.target === undefined
    ? undefined
    : c1.target - c0.target;
  return {
    framesPerSecond: Math.round(frames / seconds),
    sentPerSecond,
    framesPerCpuSecond: cpuSeconds ? Math.round(frames / cpuSeconds) : undefined,
    cpu: cpuBetween(c0, c1),
  };
}

/** Waits for the last frames, records what was lost, and closes. */
async function finish(cfg: LoadConfig, peers: Peers, sent: number, result: LoadResult) {
  phase = `draining (${peers.counter.frames} of ${sent} frames out)`;
  if (!cfg.sendOnly) {
    await peers.counter.drain(sent, cfg.drainQuietMs);
    result.sent = sent;
    result.received = peers.counter.frames;
    result.lost = sent - peers.counter.frames;
  }
  result.checkpointRequests = peers.notify?.requests ?? 0;
  const memory = readMemory(cfg.targetPid);
  result.rssEnd = memory?.rss;
  result.peakRss = memory?.peak;
  phase = "closing the connections";
  await peers.close();
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/**
 * One frame pair at a time: write the primary copy, then the secondary copy, and time from
 * the moment both writes returned until the frame has been read from outdev. The first
 * `latencyCold` pairs after start are measured apart (the comparator's code is not compiled
 * yet); then `latencyWarmup` pairs unmeasured, then `latencyPairs` warm pairs. Before any of
 * them the generator warms its own code against a pass-through of its own
 * ({@linkcode warmGenerator}), so that the cold row is the target's cold start, not also the
 * generator's.
 */
async function latency(cfg: LoadConfig, result: LoadResult): Promise<void> {
  // A recorder per round, each with cold, skipped and warm pairs, as the measured run's: the
  // pair loop's call of it and each of its paths have run before the target's first pair.
  await warmGenerator(
    (peers, pairs, done) => timePairs(peers, pairs, recorder([], [], pairs >> 2, pairs >> 2), done),
    cfg.tlsDir,
  );
  result.idleRss = readMemory(cfg.targetPid)?.rss;
  const peers = await connect(cfg);
  await probe(peers);
  const total = cfg.latencyCold + cfg.latencyWarmup + cfg.latencyPairs;
  const cold: number[] = [];
  const samples: number[] = [];
  const starts = cfg.schedTrace ? new Float64Array(total) : undefined;
  const trace = cfg.schedTrace ? SchedTrace.start() : null;
  let sched: SchedReport | string | undefined;
  try {
    await timePairs(
      peers,
      total,
      recorder(cold, samples, cfg.latencyCold, cfg.latencyWarmup),
      0,
      starts,
    );
  } finally {
    if (typeof trace === "string") sched = `not traced: ${trace}`;
    else if (trace !== null) {
      const first = cfg.latencyCold + cfg.latencyWarmup;
      const warm = samples.map((us, k): [number, number] => [starts![first + k], us]);
      sched = accountRun(trace.stop(), warm, cfg.targetPid);
    }
  }
  if (cfg.latencyDump) {
    const { file, target } = cfg.latencyDump;
    Deno.writeTextFileSync(file, JSON.stringify({ target, cold, warm: samples }) + "\n", {
      append: true,
    });
  }
  result.latency = { ...latencyOf(samples, cold), sched };
  await finish(cfg, peers, total, result);
}

/**
 * Pairs between the generator's own minor collections in a latency loop: a power of two, each
 * collection made just before the pair that starts a stretch, while the target waits for it.
 */
const PAIRS_PER_COLLECTION = 1024;

/**
 * A minor collection now, where bench.ts exposes V8's `gc` (the latency workloads). Made
 * between two pairs, before the young generation fills (bench.ts gives it 16 MiB, the pairs of a
 * stretch allocate about 4 MB), the generator's collections fall outside the timed pairs: left
 * to V8 they came every ~750 pairs, 0.1-0.2 ms inside one, and were both targets' p99.9
 * (bench/README.md, "The generator's own collections in the tail").
 */
function collectBetweenPairs(): void {
  (globalThis as { gc?: (options: { type: "minor" }) => void }).gc?.({ type: "minor" });
}

/** Where pair i's µs go: the first `cold` to `coldOut`, those after `skip` more to `warmOut`. */
function recorder(
  coldOut: number[],
  warmOut: number[],
  cold: number,
  skip: number,
): (i: number, us: number) => void {
  return (i, us) => {
    if (i < cold) coldOut.push(us);
    else if (i >= cold + skip) warmOut.push(us);
  };
}

/**
 * Sends `total` latency pairs to `peers` one at a time; `record` gets each pair's µs. `done`:
 * the pairs `peers` served before. `starts` gets when each pair's wait began (the epoch in ms,
 * as the scheduler trace reads it).
 */
async function timePairs(
  peers: Peers,
  total: number,
  record: (i: number, us: number) => void,
  done = 0,
  starts?: Float64Array,
): Promise<void> {
  const pattern = buildPattern(SHAPES.latency, total);
  const wire = pattern.bytes.length / pattern.frames;
  for (let i = 0; i < total; i++) {
    if ((i & (PAIRS_PER_COLLECTION - 1)) === 0) collectBetweenPairs();
    const f = pattern.bytes.subarray(pattern.frameOffsets[i], pattern.frameOffsets[i] + wire);
    await writeAll(peers.primary, f);
    await writeAll(peers.secondary, f);
    const t0 = performance.now();
    await peers.counter.until(done + i + 1);
    const t1 = performance.now();
    if (peers.counter.closed) throw new Error("outdev closed during the latency run");
    record(i, (t1 - t0) * 1000);
    if (starts) starts[i] = performance.timeOrigin + t0;
  }
}

/**
 * Pairs the generator sends to its own pass-through before the latency run, in rounds of
 * {@linkcode GENERATOR_WARMUP_ROUND}: the pair loop is then called often enough to be compiled
 * as a function (not only on stack, where a new call does not find it), and with bench.ts's
 * V8 flags for the latency workloads (`GENERATOR_V8_FLAGS_LATENCY`) its writes, reads and
 * outdev decoding reach V8's optimising compiler. With 5,000 pairs in one call and V8's
 * default thresholds, about 40 ms of the generator's compiles still fell in the target's cold
 * pairs.
 */
const GENERATOR_WARMUP_PAIRS = 6000;
const GENERATOR_WARMUP_ROUND = 500;

/**
 * Runs a latency loop against a pass-through in this process ({@linkcode startPassThrough}),
 * {@linkcode GENERATOR_WARMUP_PAIRS} pairs in rounds: `round` sends `pairs` pairs to `peers`,
 * which served `done` before; over TLS with `tlsDir`. Without it the generator compiled its own
 * code during the target's cold pairs, and every target's cold row carried that cost
 * (bench/README.md, "The generator warmed before the cold row"). bench/latency_mix.ts warms its
 * loop with it too.
 *
 * Half the pairs go through one pass-through, half through a second with connections and an
 * outdev counter of its own: code V8 compiled for the first one's objects alone is thrown away
 * and compiled again at the second's first pairs, here, instead of at the target's (the
 * generator's pair loop and outdev reader were, 20-40 ms of compiling in the target's first
 * 8,000 pairs: bench/README.md, "The generator warmed twice").
 */
export async function warmGenerator(
  round: (peers: Peers, pairs: number, done: number) => Promise<void>,
  tlsDir?: string,
): Promise<void> {
  const saved = phase;
  phase = "warming the generator";
  // An op left pending all through, as the run's own are (its notify-dev read): Deno keeps an
  // op's promise in a ring of 4,096 and moves one still pending out of it when its slot comes
  // round again. That path first ran in the target's pairs, where V8 threw away the outdev
  // reader's compiled read for it.
  const idle = Deno.listen({ hostname: "127.0.0.1", port: 0, transport: "tcp" });
  const pending = idle.accept().then((c) => c.close(), () => {});
  try {
    const half = GENERATOR_WARMUP_PAIRS / 2;
    for (const pairs of [half, GENERATOR_WARMUP_PAIRS - half]) {
      const self = startPassThrough(tlsDir);
      try {
        const peers = await connect({ ports: self.ports, tlsDir });
        try {
          await probe(peers);
          for (let done = 0; done < pairs; done += GENERATOR_WARMUP_ROUND) {
            await round(peers, Math.min(GENERATOR_WARMUP_ROUND, pairs - done), done);
          }
        } finally {
          await peers.close();
        }
      } finally {
        await self.close();
      }
    }
  } finally {
    idle.close();
    await pending;
    phase = saved;
  }
}

/** A pass-through in the generator's own process: see {@linkcode startPassThrough}. */
interface PassThrough {
  ports: { primary: number; secondary: number; outdev: number };
  /** Closes its sockets once the generator's are closed, and waits for its loops. */
  close(): Promise<void>;
}

/**
 * A target in this process that compares nothing: primary-in is forwarded to outdev,
 * secondary-in read and dropped (as bench/forwarder.ts does). For warming the generator. With
 * `tlsDir`, over TLS with the server certificate of the bench's credentials (Deno's rustls; the
 * generator's client side is what the TLS rows use), so that the generator's TLS reads and
 * writes are compiled before the target's first pair too.
 */
function startPassThrough(tlsDir?: string): PassThrough {
  const read = (f: string) => Deno.readTextFileSync(`${tlsDir}/${f}`);
  const listeners: Deno.Listener[] = [0, 1, 2].map(() =>
    tlsDir
      ? Deno.listenTls({
        hostname: "127.0.0.1",
        port: 0,
        cert: read("server-cert.pem"),
        key: read("server-key.pem"),
      })
      : Deno.listen({ hostname: "127.0.0.1", port: 0, transport: "tcp" })
  );
  const port = (l: Deno.Listener) => (l.addr as Deno.NetAddr).port;
  const [primary, secondary, outdev] = listeners.map(port);
  const closeListeners = () => {
    for (const l of listeners) {
      try {
        l.close();
      } catch { /* closed already */ }
    }
  };
  const conns = Promise.all(listeners.map((l) => l.accept())).finally(closeListeners);
  const forward = async (from: Deno.Conn, to: Deno.Conn | null) => {
    const buf = new Uint8Array(64 * 1024);
    try {
      for (let n; (n = await from.read(buf)) !== null;) {
        if (to !== null) await writeAll(to, buf.subarray(0, n));
      }
    } catch {
      // closed under us
    }
  };
  const loops = conns.then(([p, s, o]) => Promise.all([forward(p, o), forward(s, null)]));
  return {
    ports: { primary, secondary, outdev },
    async close() {
      closeListeners(); // a generator that never connected: accept fails, nothing to wait for
      await loops.catch(() => {});
      for (const c of await conns.catch(() => [])) {
        try {
          c.close();
        } catch { /* already closed */ }
      }
    },
  };
}

/** The latency row of warm `samples` and `cold` ones (µs each; both are sorted in place). */
export function latencyOf(samples: number[], cold: number[]): Latency {
  samples.sort((a, b) => a - b);
  cold.sort((a, b) => a - b);
  return {
    p50: round1(percentile(samples, 50)),
    p99: round1(percentile(samples, 99)),
    p999: round1(percentile(samples, 99.9)),
    mean: round1(samples.reduce((a, b) => a + b, 0) / samples.length),
    max: round1(samples[samples.length - 1]),
    samples: samples.length,
    coldP99: round1(percentile(cold, 99)),
    coldMax: round1(cold[cold.length - 1] ?? 0),
    coldSamples: cold.length,
  };
}

const round1 = (x: number) => Math.round(x * 10) / 10;

const SCALE_STEPS = 5;

/**
 * The comparator's RSS and its anonymous part once it has been idle a moment: the least of
 * three samples 100 ms apart, each.
 */
async function settledRss(pid: number): Promise<{ rss: number; anon: number }> {
  let rss = Infinity;
  let anon = Infinity;
  for (let i = 0; i < 3; i++) {
    await sleep(100);
    const m = readMemory(pid);
    rss = Math.min(rss, m?.rss ?? 0);
    anon = Math.min(anon, m?.anon ?? 0);
  }
  return { rss, anon };
}

/** Least-squares slope of y over x. */
function slope(points: [number, number][]): number {
  const n = points.length;
  const mx = points.reduce((s, [x]) => s + x, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

/** How often {@linkcode ReleaseWatch} reads the target's RSS (ms). */
const RELEASE_WATCH_MS = 20;

/**
 * The largest fall of a process's RSS, from the highest it was seen at, while it is watched: a
 * release of memory somewhere in that time, which a reading at each step can miss (the RSS
 * grows back before the next).
 */
class ReleaseWatch {
  #high = 0;
  #fall = 0;
  readonly #timer: ReturnType<typeof setInterval>;

  constructor(pid: number) {
    const look = () => {
      const rss = readMemory(pid)?.rss;
      if (rss === undefined) return;
      this.#high = Math.max(this.#high, rss);
      this.#fall = Math.max(this.#fall, this.#high - rss);
    };
    look();
    this.#timer = setInterval(look, RELEASE_WATCH_MS);
  }

  /** Stops watching; the largest fall seen (bytes). */
  stop(): number {
    clearInterval(this.#timer);
    return this.#fall;
  }
}

/**
 * Busy-connection throughput, then `scalePrime` connections (not counted) and `scaleConnections`
 * more opened by one matched segment pair each (held bytes: none), the comparator's RSS growth
 * per counted connection, and the busy-connection throughput again with all of them in its
 * table.
 */
async function scale(cfg: LoadConfig, result: LoadResult): Promise<void> {
  const peers = await connect(cfg);
  await probe(peers);
  const busy = buildPattern(SHAPES.scale, 512, 1 << 20);
  const window = windowFor(cfg, SHAPES.scale);
  let sender = new PairedSender(peers, busy, cfg.writeSize, window, peers.counter.frames);
  const before = await measureWindow(cfg, peers, sender, cfg.warmupMs);
  await sender.stop();
  let sent = sender.frames;
  await peers.counter.drain(sent, cfg.drainQuietMs);
  const unprimed = await settledRss(cfg.targetPid);

  // One segment pair per idle connection (64-byte payload; connection 0 is the busy one).
  const openIdle = async (first: number, count: number) => {
    const idle = buildPattern({ proto: "tcp", payload: 64, connections: count }, count, 0, first);
    for (let o = 0; o < idle.bytes.length; o += cfg.writeSize) {
      const slice = idle.bytes.subarray(o, Math.min(idle.bytes.length, o + cfg.writeSize));
      await Promise.all([writeAll(peers.primary, slice), writeAll(peers.secondary, slice)]);
    }
    sent += idle.frames;
    await peers.counter.drain(sent, cfg.drainQuietMs);
  };
  // The primed connections first, then the counted ones in five steps with the comparator's
  // RSS after each: the least-squares slope is the marginal cost of a connection, which
  // one-off heap growth does not blur.
  let settledBefore = unprimed;
  // Watched from the priming on: a release then (ours: a malloc trim, which gives the
  // executable's pages back too) is followed by pages coming back as code runs again, during
  // the counted steps.
  const watch = new ReleaseWatch(cfg.targetPid);
  if (cfg.scalePrime > 0) {
    await openIdle(1, cfg.scalePrime);
    settledBefore = await settledRss(cfg.targetPid);
  }
  const rssBefore = settledBefore.rss;
  const steps: [number, number][] = [[0, rssBefore]];
  const anonSteps: [number, number][] = [[0, settledBefore.anon]];
  const stepSize = Math.ceil(cfg.scaleConnections / SCALE_STEPS);
  for (let first = 0; first < cfg.scaleConnections; first += stepSize) {
    const count = Math.min(stepSize, cfg.scaleConnections - first);
    await openIdle(1 + cfg.scalePrime + first, count);
    const settled = await settledRss(cfg.targetPid);
    steps.push([first + count, settled.rss]);
    anonSteps.push([first + count, settled.anon]);
  }
  const givenBack = watch.stop();
  if (peers.counter.frames < sent) {
    result.notes.push(`scale: ${sent - peers.counter.frames} idle-opening frames not released`);
  }
  const rssAfter = steps[steps.length - 1][1];

  sender = new PairedSender(
    peers,
    busy,
    cfg.writeSize,
    window,
    peers.counter.frames,
    sender.rounds,
  );
  const after = await measureWindow(cfg, peers, sender, cfg.warmupMs);
  await sender.stop();
  sent += sender.frames;
  result.framesPerSecond = after.framesPerSecond;
  result.framesPerCpuSecond = after.framesPerCpuSecond;
  result.cpu = after.cpu;
  // On a shared machine the comparator does not always get a whole core: the check uses its
  // cost per frame (frames per CPU-second) where /proc gives it, the wall-clock rate otherwise.
  const cost = (w: Window) => w.framesPerCpuSecond ?? w.framesPerSecond;
  result.scale = {
    connections: cfg.scaleConnections,
    primed: cfg.scalePrime,
    rssUnprimed: unprimed.rss,
    rssBefore,
    rssAfter,
    bytesPerConnection: Math.round((rssAfter - rssBefore) / cfg.scaleConnections),
    marginalBytesPerConnection: Math.round(slope(steps)),
    steps,
    anonBytesPerConnection: Math.round(
      (anonSteps[anonSteps.length - 1][1] - anonSteps[0][1]) / cfg.scaleConnections,
    ),
    anonSteps,
    givenBack,
    busyWithoutIdle: before.framesPerSecond,
    busyWithIdle: after.framesPerSecond,
    busyPerCpuWithoutIdle: before.framesPerCpuSecond,
    busyPerCpuWithIdle: after.framesPerCpuSecond,
    ratio: Math.round((cost(after) / cost(before)) * 1000) / 1000,
  };
  await finish(cfg, peers, sent, result);
}

/**
 * The lagging secondary: primary-in at full speed, secondary-in the same stream at a fraction
 * of the primary's rate, this process answering checkpoint requests like a COLO controller.
 * Samples the comparator's RSS every 500 ms.
 */
async function flood(cfg: LoadConfig, result: LoadResult): Promise<void> {
  const shape = SHAPES.flood;
  const peers = await connect(cfg);
  await probe(peers);
  if (peers.notify) peers.notify.answerAfterMs = cfg.checkpointDelayMs;
  const primaryPattern = buildPattern(shape, 512, 1 << 20);
  const secondaryPattern = buildPattern(shape, 512, 1 << 20);
  let primaryRounds = 0;
  let secondaryRounds = 0;
  let stop = false;
  const send = async (
    conn: Deno.Conn,
    pattern: Pattern,
    next: () => number,
    mayGo: () => boolean,
  ) => {
    while (!stop) {
      if (!mayGo()) {
        await sleep(2);
        continue;
      }
      setRound(pattern, next());
      for (let o = 0; o < pattern.bytes.length; o += cfg.writeSize) {
        await writeAll(conn, pattern.bytes.subarray(o, o + cfg.writeSize));
      }
    }
  };
  // Writes fail once the run closes the sockets under them; that is the end, not an error.
  const primaryDone = send(peers.primary, primaryPattern, () => primaryRounds++, () => true)
    .catch(() => {});
  const secondaryDone = send(
    peers.secondary,
    secondaryPattern,
    () => secondaryRounds++,
    () => secondaryRounds < primaryRounds * cfg.floodSecondaryRatio,
  ).catch(() => {});
  const samples: [number, number][] = [];
  const start = performance.now();
  const c0 = cpuMark(cfg.targetPid);
  const f0 = peers.counter.frames;
  while (performance.now() - start < cfg.floodMs) {
    await sleep(500);
    samples.push([
      Math.round(performance.now() - start),
      readMemory(cfg.targetPid)?.rss ?? 0,
    ]);
  }
  const c1 = cpuMark(cfg.targetPid);
  stop = true;
  // The paced secondary may wait on a full socket that nobody reads any more: close first.
  const released = peers.counter.frames - f0;
  await peers.close();
  await Promise.all([primaryDone, secondaryDone]);
  const half = samples.length >> 1;
  const peakOf = (s: [number, number][]) => s.reduce((m, [, r]) => Math.max(m, r), 0);
  const firstHalfPeak = peakOf(samples.slice(0, half));
  const secondHalfPeak = peakOf(samples.slice(half));
  result.framesPerSecond = Math.round(released / ((c1.at - c0.at) / 1000));
  result.cpu = cpuBetween(c0, c1);
  result.checkpointRequests = peers.notify?.requests ?? 0;
  result.rssEnd = samples.at(-1)?.[1];
  result.peakRss = readMemory(cfg.targetPid)?.peak;
  result.flood = {
    seconds: Math.round((c1.at - c0.at) / 1000),
    secondaryRatio: cfg.floodSecondaryRatio,
    samples,
    peakRss: peakOf(samples),
    firstHalfPeak,
    secondHalfPeak,
    // Levelled off: the second half never rose more than 10% (or 8 MiB) above the first.
    levelledOff: secondHalfPeak <= Math.max(firstHalfPeak * 1.1, firstHalfPeak + 8 * 2 ** 20),
    checkpointsAnswered: peers.notify?.answered ?? 0,
    primarySent: primaryRounds * primaryPattern.frames,
    secondarySent: secondaryRounds * secondaryPattern.frames,
  };
}

/** Runs one workload as `cfg` says and returns what it measured. */
export async function run(cfg: LoadConfig): Promise<LoadResult> {
  const shape: StreamShape = SHAPES[cfg.workload];
  const result: LoadResult = {
    workload: cfg.workload,
    frameBytes: frameBytes(shape),
    checkpointRequests: 0,
    notes: [],
  };
  switch (plainOf(cfg.workload)) {
    case "latency":
      await latency(cfg, result);
      break;
    case "scale":
      await scale(cfg, result);
      break;
    case "flood":
      await flood(cfg, result);
      break;
    default:
      await throughput(cfg, result);
  }
  return result;
}

if (import.meta.main) {
  const cfg = JSON.parse(Deno.args[0]) as LoadConfig;
  // A run that has not ended long after it should have is reported, not waited for.
  const limitMs = 60_000 + 2 * (cfg.warmupMs + cfg.windowMs) + 3 * cfg.drainQuietMs +
    (cfg.workload === "flood" ? cfg.floodMs : 0) +
    (plainOf(cfg.workload) === "latency" ? 60_000 : 0);
  setTimeout(() => {
    console.log(JSON.stringify({ error: `stuck after ${limitMs / 1000} s while ${phase}` }));
    Deno.exit(1);
  }, limitMs);
  try {
    const result = await run(cfg);
    console.log(JSON.stringify(result));
  } catch (e) {
    console.log(JSON.stringify({ error: e instanceof Error ? e.message : String(e) }));
    Deno.exit(1);
  }
  Deno.exit(0);
}
