/**
 * `colo-compare replay` (SPEC 12): the compare engine run over two captures instead of two
 * sockets. The capture timestamps are the clock: frames are fed in timestamp order, the
 * expiry scan runs every `expired-scan-cycle` of capture time, and a requested checkpoint
 * completes at once (or `checkpointDelay` ms of capture time later). The report says what the
 * live comparator would have done: frames released, checkpoints by reason and connection, the
 * first divergences with their bytes.
 *
 * @module
 */

import { firstDifferingSeq } from "../capture/capture.ts";
import { CheckpointRequests } from "../checkpoint/notify.ts";
import type { Connection } from "../compare/connection.ts";
import { CompareEngine } from "../compare/engine.ts";
import type {
  CheckpointReason,
  DiscardReason,
  EngineSink,
  ReleaseReason,
} from "../compare/events.ts";
import type { Packet, Side } from "../compare/packet.ts";
import { Stats } from "../stats.ts";
import type { FrameSource } from "./pcap.ts";

/** Engine settings and the model of the checkpoint controller. */
export interface ReplayOptions {
  compareTimeout: number;
  expiredScanCycle: number;
  maxQueueSize: number;
  /** Capture-time ms from a checkpoint request to its completion (0: at once). */
  checkpointDelay: number;
  /** How many divergences the report shows with their bytes. */
  divergencesShown: number;
}

/** One frame of a divergence, as the report shows it. */
export interface DivergentFrame {
  side: Side;
  /** Whole frame length, and the compared bytes (TCP payload or IP payload) in hex. */
  length: number;
  /** TCP: the sequence number of the first payload byte. */
  seq?: number;
  /** Up to 64 compared bytes, from the first differing byte (TCP) or the start, in hex. */
  bytes: string;
}

/** One divergence, for the report. */
export interface Divergence {
  /** ms since the first frame of the captures. */
  atMs: number;
  reason: CheckpointReason;
  connection: string;
  /** TCP: the sequence number of the first differing byte, when there is one. */
  firstDiffSeq?: number;
  frames: DivergentFrame[];
}

/** What `replay` reports (the `--json` output). */
export interface ReplayReport {
  frames: { primary: number; secondary: number; truncated: number };
  durationMs: number;
  released: { compared: number; passthrough: number; checkpoint: number };
  secondary: { compared: number; flushed: number };
  dropped: Record<string, number>;
  /** Divergences and timeouts by reason (some are folded into an outstanding request). */
  divergences: Record<string, number>;
  /** Checkpoint requests sent (one per epoch), by the reason and connection that caused it. */
  checkpoints: {
    requested: number;
    done: number;
    byReason: Record<string, number>;
    byConnection: Record<string, number>;
  };
  /** Requests in order, as the live comparator would log them. */
  requests: { atMs: number; reason: CheckpointReason; connection: string }[];
  firstDivergences: Divergence[];
  /** Held when the captures ended and every later scan and checkpoint had run. */
  heldAtEnd: { primary: number; secondary: number };
}

const BYTES_SHOWN = 64;

function hex(data: Uint8Array, from: number, to: number): string {
  let s = "";
  for (let i = from; i < Math.min(to, from + BYTES_SHOWN); i++) {
    s += data[i].toString(16).padStart(2, "0");
  }
  return s;
}

function increment(record: Record<string, number>, key: string): void {
  record[key] = (record[key] ?? 0) + 1;
}

/** The sink that counts what the engine decides during a replay. */
class ReplaySink implements EngineSink {
  readonly stats = new Stats();
  readonly requests = new CheckpointRequests(0);
  readonly report: ReplayReport["checkpoints"] = {
    requested: 0,
    done: 0,
    byReason: {},
    byConnection: {},
  };
  readonly requestLog: ReplayReport["requests"] = [];
  readonly divergences: Divergence[] = [];
  /** Capture time when the requested checkpoint completes, or null. */
  doneAt: number | null = null;
  #start: number;
  #options: ReplayOptions;
  #capture: EngineSink["divergence"] | null;

  constructor(options: ReplayOptions, start: number, capture: EngineSink["divergence"] | null) {
    this.#options = options;
    this.#start = start;
    this.#capture = capture;
    this.requests = new CheckpointRequests(options.compareTimeout);
  }

  release(
    _bytes: Uint8Array,
    _at: number,
    _size: number,
    _vnetLen: number,
    reason: ReleaseReason,
  ): void {
    if (reason === "compared") this.stats.releasedCompared++;
    else if (reason === "passthrough") this.stats.passedThrough++;
    else this.stats.releasedByCheckpoint++;
  }

  discard(side: Side, reason: DiscardReason): void {
    if (reason === "compared") this.stats.secondaryCompared++;
    else if (reason === "checkpoint") this.stats.secondaryFlushed++;
    else this.stats.drop(side, reason);
  }

  checkpoint(reason: CheckpointReason, conn: Connection | null, now: number): void {
    this.stats.need(reason);
    if (!this.requests.request(now)) return;
    const connection = conn?.name ?? "-";
    this.report.requested++;
    increment(this.report.byReason, reason);
    increment(this.report.byConnection, connection);
    this.requestLog.push({ atMs: now - this.#start, reason, connection });
    // A repeated request (none came within compare-timeout) does not postpone the checkpoint
    // the first one started: with a delay longer than the timeout it would never come.
    this.doneAt ??= now + this.#options.checkpointDelay;
  }

  divergence(
    reason: CheckpointReason,
    conn: Connection,
    primary: Packet | null,
    secondaries: readonly Packet[],
    now: number,
  ): void {
    this.#capture?.(reason, conn, primary, secondaries, now);
    if (this.divergences.length >= this.#options.divergencesShown) return;
    const d: Divergence = { atMs: now - this.#start, reason, connection: conn.name, frames: [] };
    const diff = conn.tcp && primary && secondaries[0]
      ? firstDifferingSeq(primary, secondaries[0])
      : null;
    if (diff !== null) d.firstDiffSeq = diff;
    for (const p of primary ? [primary, ...secondaries] : secondaries) {
      const from = p.start + (diff !== null ? Math.max(0, (diff - p.seq) >>> 0) : 0);
      const f: DivergentFrame = {
        side: p.side,
        length: p.size,
        bytes: from < p.start + p.len ? hex(p.bytes, from, p.start + p.len) : "",
      };
      if (conn.tcp) f.seq = p.seq;
      d.frames.push(f);
    }
    this.divergences.push(d);
  }
}

/**
 * Replays `primary` and `secondary` (each in capture order) through a fresh engine, merged by
 * timestamp (primary first on a tie). `capture` receives every divergence (for `--capture`).
 */
export async function replay(
  primary: FrameSource,
  secondary: FrameSource,
  options: ReplayOptions,
  capture: EngineSink["divergence"] | null = null,
): Promise<ReplayReport> {
  // One frame of lookahead per side; a side is read on only once its frame was compared
  // (the engine copies what it keeps, so the reader may reuse its buffer).
  let p = await primary.next();
  let q = await secondary.next();
  const first = Math.min(p?.timeMs ?? Infinity, q?.timeMs ?? Infinity);
  const start = Number.isFinite(first) ? first : 0;
  const sink = new ReplaySink(options, start, capture);
  const engine = new CompareEngine(
    { compareTimeout: options.compareTimeout, maxQueueSize: options.maxQueueSize },
    sink,
  );
  const stats = sink.stats;
  let truncated = 0;
  let nextScan = start + options.expiredScanCycle;
  // A capture's timestamps may step back (clock adjustments): its own order wins, and time
  // never runs backwards for the engine.
  let now = start;
  const complete = () => {
    sink.doneAt = null;
    sink.requests.done();
    sink.report.done++;
    engine.checkpoint();
  };
  /** Runs the completions and scans due up to `until`, in time order. */
  const advance = (until: number) => {
    while (true) {
      const done = sink.doneAt;
      if (done !== null && done <= until && done <= nextScan) {
        now = Math.max(now, done);
        complete();
      } else if (nextScan <= until) {
        const cycle = options.expiredScanCycle;
        // No connection left (so nothing held) and no checkpoint due by `until`: the scans up
        // to it would find nothing, and only the last runs. A capture whose clock jumps by
        // years no longer costs a scan per cycle of the jump.
        if (engine.connections === 0 && (done === null || done > until)) {
          nextScan += Math.floor((until - nextScan) / cycle) * cycle;
        }
        now = nextScan;
        engine.tick(now);
        const next = nextScan + cycle;
        // Past 2^53 ms a cycle no longer moves the time (a damaged capture): no more scans.
        nextScan = next > nextScan ? next : Infinity;
      } else return;
    }
  };
  while (p !== null || q !== null) {
    const takePrimary = q === null || (p !== null && p.timeMs <= q.timeMs);
    const f = (takePrimary ? p : q)!;
    advance(f.timeMs);
    now = Math.max(now, f.timeMs);
    if (f.truncated) truncated++;
    if (takePrimary) {
      stats.primaryIn++;
      engine.primary(f.data, 0, now);
      p = await primary.next();
    } else {
      stats.secondaryIn++;
      engine.secondary(f.data, 0, now);
      q = await secondary.next();
    }
  }
  // After the captures: the scans and checkpoints that would still have come.
  const end = now;
  const horizon = end + options.compareTimeout + 2 * options.expiredScanCycle +
    options.checkpointDelay;
  while (
    (engine.heldPrimary + engine.heldSecondary > 0 || sink.doneAt !== null) &&
    Math.min(nextScan, sink.doneAt ?? Infinity) <= horizon
  ) {
    advance(Math.min(nextScan, sink.doneAt ?? Infinity));
  }
  const uncompared = engine.uncompared();
  const dropped: Record<string, number> = {};
  for (const [k, v] of [...stats.dropped].sort()) dropped[k] = v;
  const divergences: Record<string, number> = {};
  for (const [k, v] of [...stats.checkpointNeeds].sort()) divergences[k] = v;
  return {
    frames: { primary: stats.primaryIn, secondary: stats.secondaryIn, truncated },
    durationMs: end - start,
    released: {
      compared: stats.releasedCompared,
      passthrough: stats.passedThrough,
      checkpoint: stats.releasedByCheckpoint,
    },
    secondary: { compared: stats.secondaryCompared, flushed: stats.secondaryFlushed },
    dropped,
    divergences,
    checkpoints: sink.report,
    requests: sink.requestLog,
    firstDivergences: sink.divergences,
    heldAtEnd: { primary: uncompared.primary, secondary: uncompared.secondary },
  };
}

/** Hex bytes as ASCII, `.` for anything not printable. */
function printable(hexBytes: string): string {
  let s = "";
  for (let i = 0; i < hexBytes.length; i += 2) {
    const c = parseInt(hexBytes.slice(i, i + 2), 16);
    s += c >= 0x20 && c < 0x7f ? String.fromCharCode(c) : ".";
  }
  return s;
}

/** The report as text for an operator. */
export function formatReport(r: ReplayReport): string {
  const lines: string[] = [];
  const total = r.released.compared + r.released.passthrough + r.released.checkpoint;
  const secs = (r.durationMs / 1000).toFixed(3);
  lines.push(
    `frames: primary ${r.frames.primary}, secondary ${r.frames.secondary} over ${secs} s` +
      (r.frames.truncated ? ` (${r.frames.truncated} truncated by the capture)` : ""),
  );
  lines.push(
    `released: ${total} (compared ${r.released.compared}, passthrough ${r.released.passthrough}, ` +
      `by checkpoint ${r.released.checkpoint})`,
  );
  const perSecond = r.durationMs > 0 ? (r.checkpoints.requested * 1000) / r.durationMs : 0;
  lines.push(
    `checkpoints: ${r.checkpoints.requested} requested` +
      (r.durationMs > 0 ? ` (${perSecond.toFixed(2)}/s)` : "") + `, ${r.checkpoints.done} done`,
  );
  const list = (rec: Record<string, number>) =>
    Object.entries(rec).sort((a, b) => b[1] - a[1]).map(([k, v]) => `  ${v}\t${k}`);
  if (r.checkpoints.requested > 0) {
    lines.push("by reason:", ...list(r.checkpoints.byReason));
    lines.push("by connection:", ...list(r.checkpoints.byConnection).slice(0, 20));
  }
  if (Object.keys(r.divergences).length > 0) {
    lines.push("divergences (including those folded into an outstanding request):");
    lines.push(...list(r.divergences));
  }
  if (Object.keys(r.dropped).length > 0) lines.push("dropped:", ...list(r.dropped));
  if (r.heldAtEnd.primary || r.heldAtEnd.secondary) {
    lines.push(
      `held at the end, never compared: primary ${r.heldAtEnd.primary}, ` +
        `secondary ${r.heldAtEnd.secondary}`,
    );
  }
  for (const [n, d] of r.firstDivergences.entries()) {
    lines.push(
      `divergence ${n + 1} at +${d.atMs.toFixed(3)} ms: ${d.reason} on ${d.connection}` +
        (d.firstDiffSeq !== undefined ? `, first differing byte at seq ${d.firstDiffSeq}` : ""),
    );
    for (const f of d.frames) {
      const seq = f.seq !== undefined ? ` seq ${f.seq}` : "";
      const shown = f.bytes ? `${f.bytes}  "${printable(f.bytes)}"` : "(no payload)";
      lines.push(`  ${f.side.padEnd(9)} ${f.length} bytes${seq}: ${shown}`);
    }
  }
  return lines.join("\n");
}
