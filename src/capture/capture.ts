/**
 * `--capture FILE` (SPEC 12): every divergence written to a pcapng file, the primary frame and
 * the secondary frame(s) it was compared with (for a timeout: the aged frame), each with a
 * comment naming the reason, the connection, the side and, for TCP, the sequence number of
 * the first differing byte. Bounded in bytes; past the bound it stops and says so once.
 *
 * @module
 */

import type { Connection } from "../compare/connection.ts";
import type { CheckpointReason } from "../compare/events.ts";
import type { Packet } from "../compare/packet.ts";
import { seqAdd, seqAfter, seqDiff } from "../compare/seq.ts";
import type { Logger } from "../log.ts";
import { enhancedPacket, interfaceDescription, sectionHeader } from "./pcapng.ts";
import { VERSION } from "../version.ts";
import { settledWithin, StartupError } from "../wire/endpoint.ts";
import { writeAll } from "../wire/transport.ts";

/** Default `--capture-max-bytes`: 64 MiB. */
export const DEFAULT_CAPTURE_MAX_BYTES = 64 * 1024 * 1024;

/** Interface numbers in the file: one per input. */
const IF_PRIMARY = 0;
const IF_SECONDARY = 1;

/** Where the pcapng bytes go. */
export interface ByteSink {
  write(bytes: Uint8Array): void;
  /** Writes what is pending, then closes. */
  close(): Promise<void>;
}

/**
 * The sequence number of the first payload byte where `p` and `s` differ, comparing the same
 * sequence positions; where one side has bytes the other lacks, the first such position.
 * Null when the two agree wherever both have bytes and end at the same place.
 */
export function firstDifferingSeq(p: Packet, s: Packet): number | null {
  const from = seqAfter(s.seq, p.seq) ? s.seq : p.seq;
  const to = seqAfter(s.seqEnd, p.seqEnd) ? p.seqEnd : s.seqEnd;
  const n = seqDiff(to, from);
  if (n > 0) {
    const pi = p.start + seqDiff(from, p.seq);
    const si = s.start + seqDiff(from, s.seq);
    for (let i = 0; i < n; i++) {
      if (p.bytes[pi + i] !== s.bytes[si + i]) return seqAdd(from, i);
    }
  }
  if (p.seq !== s.seq) return seqAfter(p.seq, s.seq) ? s.seq : p.seq;
  if (p.seqEnd !== s.seqEnd) return n > 0 ? to : from;
  return null;
}

function quote(s: string): string {
  return /[\s"=\\]/.test(s) ? JSON.stringify(s) : s;
}

/** Writes divergences as pcapng; see the module comment. */
export class DivergenceCapture {
  readonly #out: ByteSink;
  readonly #maxBytes: number;
  readonly #epochMs: (now: number) => number;
  readonly #log: Logger | null;
  #written = 0;
  #full = false;
  #failed = false;
  /** Divergences written, and those left out once the bound was reached. */
  captured = 0;
  skipped = 0;

  /**
   * `epochMs` maps the engine's clock to wall-clock milliseconds for the packet timestamps
   * (live: `performance.timeOrigin + now`; replay: the capture's own time).
   */
  constructor(
    out: ByteSink,
    options: { maxBytes?: number; epochMs: (now: number) => number; log?: Logger },
  ) {
    this.#out = out;
    this.#maxBytes = options.maxBytes ?? DEFAULT_CAPTURE_MAX_BYTES;
    this.#epochMs = options.epochMs;
    this.#log = options.log ?? null;
    const header = [
      sectionHeader(`colo-compare ${VERSION}`),
      interfaceDescription("primary-in"),
      interfaceDescription("secondary-in"),
    ];
    const size = header.reduce((n, b) => n + b.length, 0);
    if (size > this.#maxBytes) {
      // Not even the file's header fits: nothing is written (the bound holds).
      this.#full = true;
      this.#log?.warn("capture-full", {
        bytes: 0,
        max_bytes: this.#maxBytes,
        note: `the file's header alone is ${size} bytes; raise --capture-max-bytes`,
      });
      return;
    }
    this.#emit(header);
  }

  /** Bytes written to the file so far (handed to it: see `failed`). */
  get bytes(): number {
    return this.#written;
  }

  /** True once writing the file failed. */
  get broken(): boolean {
    return this.#failed;
  }

  /** Writing the file failed: said at once, and nothing more is captured. */
  failed(error: unknown): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#full = true;
    this.#log?.warn("capture-write-failed", {
      error: String(error),
      bytes_handed: this.#written,
      divergences: this.captured,
      note: "no further divergences are captured",
    });
  }

  /** The engine's divergence hook (`EngineSink.divergence`). */
  divergence(
    reason: CheckpointReason,
    conn: Connection,
    primary: Packet | null,
    secondaries: readonly Packet[],
    now: number,
  ): void {
    if (this.#full) {
      this.skipped++;
      return;
    }
    const n = this.captured + 1;
    const ts = this.#epochMs(now);
    const blocks: Uint8Array[] = [];
    const head = `divergence=${n} reason=${reason} conn=${quote(conn.name)}`;
    const tcpFields = (q: Packet, other: Packet | undefined | null) => {
      if (!conn.tcp) return "";
      let f = ` seq=${q.seq} len=${q.len}`;
      if (other) {
        const d = q.side === "primary" ? firstDifferingSeq(q, other) : firstDifferingSeq(other, q);
        f += d === null ? " first_diff_seq=none" : ` first_diff_seq=${d}`;
      }
      if (reason === "tcp-ack" && q.side === "primary") {
        f += ` ack=${q.ack} secondary_ack=${conn.secondaryAckSet ? conn.secondaryAck : "none"}`;
      }
      return f;
    };
    if (primary !== null) {
      blocks.push(enhancedPacket(
        IF_PRIMARY,
        ts,
        primary.frame().subarray(primary.vnetLen),
        `${head} side=primary${tcpFields(primary, secondaries[0])}` +
          (reason === "timeout" ? ` age_ms=${Math.round(now - primary.createdAt)}` : ""),
      ));
    }
    for (const s of secondaries) {
      blocks.push(enhancedPacket(
        IF_SECONDARY,
        ts,
        s.frame().subarray(s.vnetLen),
        `${head} side=secondary${tcpFields(s, primary)}` +
          (reason === "timeout" ? ` age_ms=${Math.round(now - s.createdAt)}` : ""),
      ));
    }
    let size = 0;
    for (const b of blocks) size += b.length;
    if (this.#written + size > this.#maxBytes) {
      this.#full = true;
      this.skipped++;
      this.#log?.warn("capture-full", {
        bytes: this.#written,
        max_bytes: this.#maxBytes,
        divergences: this.captured,
        note: "no further divergences are captured; raise --capture-max-bytes",
      });
      return;
    }
    this.captured = n;
    this.#emit(blocks);
  }

  /** Writes what is pending and closes the file. */
  close(): Promise<void> {
    return this.#out.close();
  }

  #emit(blocks: Uint8Array[]): void {
    for (const b of blocks) {
      this.#written += b.length;
      this.#out.write(b);
    }
  }
}

/** How long closing waits for a write still in flight (a hung mount) before it gives up (ms). */
export const CLOSE_WAIT_MS = 2000;

/**
 * A file written in the background: `write` queues, one write is in flight at a time, so the
 * engine never waits for the disk. The first failed write ends the writing; it is reported to
 * `onFailed` when it happens, or thrown by `close` when there is none.
 */
export class BackgroundFile implements ByteSink {
  readonly #file: Deno.FsFile;
  readonly #onFailed: ((error: unknown) => void) | null;
  #queue: Uint8Array[] = [];
  #writing: Promise<void> | null = null;
  #error: unknown = null;

  constructor(file: Deno.FsFile, onFailed: ((error: unknown) => void) | null = null) {
    this.#file = file;
    this.#onFailed = onFailed;
  }

  /** Creates (truncates) `path`; throws Deno's error when it cannot. */
  static create(path: string, onFailed: ((error: unknown) => void) | null = null): BackgroundFile {
    return new BackgroundFile(
      Deno.openSync(path, { write: true, create: true, truncate: true }),
      onFailed,
    );
  }

  write(bytes: Uint8Array): void {
    if (this.#error !== null) return;
    this.#queue.push(bytes);
    this.#writing ??= this.#drain();
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const chunks = this.#queue;
        this.#queue = [];
        for (const c of chunks) await writeAll(this.#file, c);
      }
    } catch (error) {
      this.#fail(error);
      this.#queue = [];
    } finally {
      this.#writing = null;
    }
  }

  #fail(error: unknown): void {
    if (this.#error !== null) return;
    this.#error = error;
    this.#onFailed?.(error);
  }

  /** Writes what is queued, waiting at most `waitMs` for the writes, and closes the file. */
  async close(waitMs = CLOSE_WAIT_MS): Promise<void> {
    const deadline = performance.now() + waitMs;
    while (this.#writing !== null) {
      if (!await settledWithin(this.#writing, deadline - performance.now())) {
        this.#fail(new Error(`a write did not end within ${waitMs} ms; the rest is lost`));
        this.#queue = [];
        break;
      }
    }
    try {
      this.#file.close();
    } catch {
      // Closed under a write that never ended.
    }
    if (this.#error !== null && this.#onFailed === null) throw this.#error;
  }
}

/**
 * Opens `--capture FILE` for the live comparator. Packets are stamped with the wall clock when
 * the divergence is seen (the engine's own clock stands still while outdev is congested).
 * Throws a `StartupError` naming the flag when the file cannot be created.
 */
export function openCapture(path: string, maxBytes: number, log: Logger): DivergenceCapture {
  let kind: Deno.FileInfo | null = null;
  try {
    kind = Deno.statSync(path);
  } catch {
    // Not there yet: created below.
  }
  if (kind !== null && (kind.isFifo || kind.isSocket)) {
    // Opening a FIFO waits for its reader, and a reader that stops would hold every write, the
    // exit's included (SPEC 8).
    throw new StartupError(
      `--capture ${path}: a ${kind.isFifo ? "FIFO" : "socket"} would hold the comparator ` +
        "while no one reads it; give a regular file (to watch it live: tail -c +1 -f FILE | tshark -r -)",
    );
  }
  let capture: DivergenceCapture | null = null;
  let file;
  try {
    file = BackgroundFile.create(path, (error) => capture?.failed(error));
  } catch (error) {
    throw new StartupError(
      `--capture ${path}: cannot create it (${(error as Error).message}); give a writable path`,
    );
  }
  log.info("capturing", { file: path, max_bytes: maxBytes });
  capture = new DivergenceCapture(file, {
    maxBytes,
    epochMs: () => performance.timeOrigin + performance.now(),
    log,
  });
  return capture;
}
