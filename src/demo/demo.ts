/**
 * `colo-compare demo`: the real comparator, over loopback sockets, between two simulated
 * guests and a simulated Xen COLO controller, all in this process. A few hundred exchanges
 * match although the secondary segments and acknowledges differently; one NTP reply really
 * differs and must cost exactly one checkpoint. The demo exits 0 only if outdev saw what a
 * correct comparator must produce.
 *
 * @module
 */

import { COLO_CHECKPOINT, COLO_USERSPACE_PROXY_INIT, DO_CHECKPOINT } from "../checkpoint/notify.ts";
import { type Config, DEFAULTS, UsageError } from "../cli.ts";
import { Comparator } from "../comparator.ts";
import { type Level, LEVELS, Logger } from "../log.ts";
import { encodeFrame, FrameDecoder } from "../wire/codec.ts";
import { boundPort, parseAddress } from "../wire/address.ts";
import { writeAll } from "../wire/transport.ts";
import { captureAndReplay, replayCommand, replaySummary, type SentFrame } from "./captures.ts";
import {
  type Conversation,
  conversations,
  divergentConversation,
  type GuestFrame,
  Guests,
  interleave,
  Rng,
} from "./traffic.ts";
import { frameKey, judge } from "./verdict.ts";

/** Demo settings. */
export interface DemoOptions {
  /** Log level for the comparator's own lines (default: warn). */
  logLevel: Level | null;
  /** Where the summary goes (default: stdout). */
  print?: (line: string) => void;
  /** Conversations before and after the divergence. */
  before?: number;
  after?: number;
  seed?: number;
  /** Show the live progress line (default: only when stdout is a terminal). */
  progress?: boolean;
  /** Keep the two VMs' captures in this directory (default: a temporary one, deleted). */
  keepCaptures?: string | null;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const PHASE_TIMEOUT_MS = 20_000;
/** How long the simulated controller takes for a checkpoint (suspend, transfer, resume). */
const CHECKPOINT_MS = 20;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function listenAddress() {
  return parseAddress("tcp-listen:127.0.0.1:0");
}

/** Feeds everything `conn` delivers to `decoder` until the connection ends. */
async function readFrames(conn: Deno.Conn, decoder: FrameDecoder, size: number): Promise<void> {
  const buf = new Uint8Array(size);
  try {
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      decoder.push(buf.subarray(0, n));
    }
  } catch {
    // closed at the end of the demo
  }
}

/** The COLO controller's side of notify-dev, as Xen's libxl plays it. */
class Controller {
  readonly requests: number[] = [];
  #conn: Deno.Conn;
  #initReply: Promise<string>;
  #done: Promise<void>;
  #pending: Promise<void>[] = [];

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
    let answered!: (s: string) => void;
    this.#initReply = new Promise((r) => answered = r);
    const d = new FrameDecoder({
      onFrame: (bytes, at, size) => {
        const text = decoder.decode(bytes.subarray(at, at + size));
        if (text === DO_CHECKPOINT) this.#pending.push(this.#checkpoint());
        else answered(text);
      },
    }, false);
    this.#done = readFrames(conn, d, 4096);
  }

  /** Sends COLO_USERSPACE_PROXY_INIT and waits (as Xen does, 500 ms) for the reply. */
  async init(): Promise<string> {
    await writeAll(this.#conn, encodeFrame(encoder.encode(COLO_USERSPACE_PROXY_INIT)));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const reply = await Promise.race([
      this.#initReply,
      new Promise<string>((r) => timer = setTimeout(() => r("(no reply within 500 ms)"), 500)),
    ]);
    clearTimeout(timer);
    return reply;
  }

  /** Suspends both VMs, transfers state (simulated), resumes, tells the comparator. */
  async #checkpoint(): Promise<void> {
    this.requests.push(performance.now());
    await sleep(CHECKPOINT_MS);
    await writeAll(this.#conn, encodeFrame(encoder.encode(COLO_CHECKPOINT)));
  }

  async close(): Promise<void> {
    await Promise.all(this.#pending);
    this.#conn.close();
    await this.#done;
  }
}

/** The client behind outdev: records what arrives and when. */
class Client {
  readonly arrivals = new Map<string, number[]>();
  readonly order: string[] = [];
  count = 0;
  #want = 0;
  #reached: (() => void) | null = null;
  #done: Promise<void>;
  #conn: Deno.Conn;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
    const d = new FrameDecoder({
      onFrame: (bytes, start, size) => {
        const key = frameKey(bytes.subarray(start, start + size));
        const at = performance.now();
        const list = this.arrivals.get(key);
        if (list) list.push(at);
        else this.arrivals.set(key, [at]);
        this.order.push(key);
        this.count++;
        if (this.#reached && this.count >= this.#want) {
          this.#reached();
          this.#reached = null;
        }
      },
    }, false);
    this.#done = readFrames(conn, d, 256 * 1024);
  }

  /** Resolves when `n` frames have arrived in all; rejects after a timeout. */
  async until(n: number, what: string): Promise<void> {
    if (this.count >= n) return;
    this.#want = n;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        new Promise<void>((r) => this.#reached = r),
        new Promise<never>((_, reject) =>
          timer = setTimeout(
            () =>
              reject(new Error(`${what}: outdev received ${this.count} of ${n} frames in time`)),
            PHASE_TIMEOUT_MS,
          )
        ),
      ]);
    } finally {
      clearTimeout(timer);
      this.#reached = null;
    }
  }

  async close(): Promise<void> {
    this.#conn.close();
    await this.#done;
  }
}

/** Writes one VM's frames with a guest-like pace, stamping when each was sent. */
async function guest(
  conn: Deno.Conn,
  frames: GuestFrame[],
  sentAt: Map<GuestFrame, number>,
  rng: Rng,
  onSent: () => void,
): Promise<void> {
  for (const f of frames) {
    sentAt.set(f, performance.now());
    await writeAll(conn, encodeFrame(f.bytes));
    onSent();
    if (rng.next() < 0.25) await sleep(rng.int(0, 1));
  }
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

/** Runs the demo; returns the exit status (0 only when the comparator behaved correctly). */
export async function runDemo(options: DemoOptions): Promise<number> {
  const print = options.print ?? ((line: string) => console.log(line));
  const keep = options.keepCaptures ?? null;
  if (keep !== null) {
    try {
      await Deno.mkdir(keep, { recursive: true });
    } catch (error) {
      throw new UsageError(
        `--keep-captures ${keep}: cannot create it (${
          (error as Error).message
        }); give a writable directory`,
      );
    }
  }
  const shown = options.logLevel ?? "warn";
  const checkpointLines: string[] = [];
  // The comparator logs at info at least, so the demo can read its checkpoint requests; only
  // lines at the chosen level are shown.
  const log = new Logger(LEVELS.indexOf(shown) > LEVELS.indexOf("info") ? shown : "info", (l) => {
    if (l.includes("event=checkpoint-request")) checkpointLines.push(l);
    const level = /level=(\w+)/.exec(l)?.[1] as Level;
    if (LEVELS.indexOf(level) <= LEVELS.indexOf(shown)) console.error(l);
  });
  const config: Config = {
    primaryIn: listenAddress(),
    secondaryIn: listenAddress(),
    outdev: listenAddress(),
    notifyDev: listenAddress(),
    qmp: null,
    compareTimeout: 1000,
    expiredScanCycle: 100,
    maxQueueSize: 1024,
    vnetHdrSupport: false,
    maxHeldBytes: DEFAULTS.maxHeldBytes,
    socketMode: DEFAULTS.socketMode,
    tlsCreds: null,
    tlsAuthz: null,
    logLevel: shown,
  };
  const comparator = new Comparator(config, log);
  await comparator.start();
  const ports = comparator.addresses();
  const connect = async (name: string) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: boundPort(ports[name]) });
    conn.setNoDelay(true); // as QEMU's chardevs do: no Nagle delay on small frames
    return conn;
  };
  const primary = await connect("primary-in");
  const secondary = await connect("secondary-in");
  const client = new Client(await connect("outdev"));
  const controller = new Controller(await connect("notify-dev"));

  const rng = new Rng(options.seed ?? 20261125);
  const ids = new Guests();
  const before = conversations(1, options.before ?? 240, rng, ids);
  const divergence = divergentConversation(before.length + 1, rng, ids);
  const after = conversations(before.length + 2, options.after ?? 80, rng, ids);
  const phases: { name: string; list: Conversation[] }[] = [
    { name: "exchanges", list: before },
    { name: "divergence", list: [divergence] },
    { name: "after the checkpoint", list: after },
  ];
  const all = [...before, divergence, ...after];
  const totalPrimary = all.reduce((n, c) => n + c.primary.length, 0);
  const totalSecondary = all.reduce((n, c) => n + c.secondary.length, 0);

  const sentAt = new Map<GuestFrame, number>();
  let sent = 0;
  let phaseName = "";
  const progress = options.progress ?? Deno.stdout.isTerminal();
  const started = performance.now();
  const showProgress = () => {
    const s = comparator.stats;
    const line = `  ${phaseName.padEnd(22)} sent ${String(sent).padStart(5)}/${
      totalPrimary + totalSecondary
    }  released ${
      String(client.count).padStart(5)
    }/${totalPrimary}  checkpoints ${s.checkpointsRequested}  ${
      ((performance.now() - started) / 1000).toFixed(1)
    } s`;
    Deno.stdout.writeSync(encoder.encode(`\r\x1b[2K${line}`));
  };
  const ticker = progress ? setInterval(showProgress, 100) : undefined;

  let failure: string | null = null;
  const initReply = await controller.init();
  const order: Record<"primary" | "secondary", GuestFrame[]> = { primary: [], secondary: [] };
  try {
    let expected = 0;
    for (const phase of phases) {
      phaseName = phase.name;
      expected += phase.list.reduce((n, c) => n + c.primary.length, 0);
      const pri = interleave(phase.list, "primary", 8, rng);
      const sec = interleave(phase.list, "secondary", 8, rng);
      order.primary.push(...pri);
      order.secondary.push(...sec);
      await Promise.all([
        guest(primary, pri, sentAt, new Rng(rng.int(1, 1e9)), () => sent++),
        guest(secondary, sec, sentAt, new Rng(rng.int(1, 1e9)), () => sent++),
      ]);
      await client.until(expected, phase.name);
    }
  } catch (error) {
    failure = error instanceof Error ? error.message : String(error);
  } finally {
    clearInterval(ticker);
    if (progress) {
      showProgress();
      Deno.stdout.writeSync(encoder.encode("\n"));
    }
  }
  const elapsed = performance.now() - started;
  primary.close();
  secondary.close();
  await controller.close();
  await client.close();
  const report = await comparator.stop();

  // The same frames, stamped with their send times, through `colo-compare replay`'s engine.
  const replayOptions = {
    compareTimeout: config.compareTimeout,
    expiredScanCycle: config.expiredScanCycle,
    maxQueueSize: config.maxQueueSize,
    checkpointDelay: CHECKPOINT_MS,
    divergencesShown: 0,
  };
  const sentFrames = (side: "primary" | "secondary"): SentFrame[] =>
    order[side].filter((f) => sentAt.has(f)).map((f) => ({
      epochMs: performance.timeOrigin + sentAt.get(f)!,
      bytes: f.bytes,
    }));
  const dir = keep ?? await Deno.makeTempDir({ prefix: "colo-compare-demo-" });
  let replayed;
  try {
    replayed = await captureAndReplay(
      dir,
      { primary: sentFrames("primary"), secondary: sentFrames("secondary") },
      replayOptions,
    );
  } finally {
    if (keep === null) await Deno.remove(dir, { recursive: true });
  }

  const stats = comparator.stats;
  const problems = judge({
    conversations: all,
    divergent: divergence,
    received: client.order,
    initReply,
    doCheckpoints: controller.requests.length,
    checkpointRequests: checkpointLines,
    releasedByCheckpoint: stats.releasedByCheckpoint,
    dropped: stats.droppedOn("primary") + stats.droppedOn("secondary") + stats.outdevOverflow,
    heldAtEnd: report.heldPrimary + report.heldSecondary,
    replayCheckpoints: replayed.checkpoints.requested,
  });
  if (failure) problems.unshift(failure);
  const latencies: number[] = [];
  for (const c of all) {
    for (const p of c.primary) {
      const arrived = client.arrivals.get(frameKey(p.bytes))?.[0];
      if (arrived === undefined || p.completedBy === undefined) continue;
      latencies.push(arrived - Math.max(sentAt.get(p)!, sentAt.get(c.secondary[p.completedBy])!));
    }
  }
  const request = checkpointLines[0] ?? "";
  latencies.sort((a, b) => a - b);
  const kinds = (k: string) => all.filter((c) => c.kind === k).length;
  const reason = /reason=(\S+)/.exec(request)?.[1] ?? "-";
  print("");
  print(
    `colo-compare demo: ${all.length} exchanges (${kinds("tcp")} TCP, ${
      kinds("udp") + kinds("ntp")
    } UDP, ${kinds("icmp")} ICMP) from a simulated primary and secondary VM, in ${
      (elapsed / 1000).toFixed(1)
    } s`,
  );
  print(
    `  frames in        primary ${stats.primaryIn}, secondary ${stats.secondaryIn} (segmented and acknowledged differently)`,
  );
  print(
    `  frames released  ${client.count} of ${totalPrimary}: ${stats.releasedCompared} after comparison, ${stats.releasedByCheckpoint} by the checkpoint`,
  );
  print(
    `  checkpoints      ${stats.checkpointsRequested} requested (${reason}: ${divergence.label}, the replicas' NTP timestamps differ), ${stats.checkpointsReceived} done`,
  );
  print(
    `  added latency    median ${percentile(latencies, 0.5).toFixed(3)} ms, p99 ${
      percentile(latencies, 0.99).toFixed(3)
    } ms (${latencies.length} frames, from both copies sent to released on outdev)`,
  );
  print(`  replay           ${replaySummary(replayed)}`);
  const command = replayCommand(keep ?? "DIR", replayOptions);
  print(
    keep === null
      ? `  captures         deleted; keep them with colo-compare demo --keep-captures DIR, then: ${command}`
      : `  captures         kept in ${keep}: ${command}`,
  );
  if (problems.length === 0) {
    print(
      "  result           PASS: every primary frame reached outdev once, in order; one checkpoint, for the divergence, as replay counts",
    );
    return 0;
  }
  print("  result           FAIL");
  for (const p of problems) print(`    - ${p}`);
  return 1;
}
