/**
 * The lab's stories on a running pair. The request story: N HTTP GETs from the host through the
 * primary's hostfwd (a page both VMs serve alike and the role CGI in turn, a fresh TCP connection
 * each), optionally a failover half-way. The bulk story: downloads of a file both VMs serve alike,
 * each checked byte for byte, optionally with divergent requests beside them. And what came of
 * it: answers, latency or throughput, checkpoints asked for (and why) and done.
 *
 * @module
 */

import {
  BULK_PATH,
  bulkBytes,
  GUEST_HTTP_PORT,
  ROLE_PATH,
  SAME_PATH,
  STATIC_BODY,
} from "./guest.ts";
import { download, DownloadError, get, percentile } from "./http.ts";
import type { CheckpointRequest, ComparatorSummary, Pair } from "./pair.ts";

/** A request is given up after this long (a held reply never comes). */
const REQUEST_TIMEOUT_MS = 10_000;
/** The story stops early after this many failed requests in a row. */
const MAX_FAILED_IN_A_ROW = 3;

/** What happened to one request. */
export interface RequestResult {
  path: string;
  ok: boolean;
  /** The body said `role primary` (role requests), or was the static page. */
  fromPrimary: boolean;
  ms: number;
  /** After the failover. */
  afterFailover: boolean;
  error?: string;
}

/** The story's results for one mode. */
export interface StoryResult {
  results: RequestResult[];
  /** Wall time of the requests (failover included, settling at the end not). */
  seconds: number;
  /** Checkpoint requests our comparator logged during the requests. */
  requested: number;
  /** Checkpoints QEMU did (STOP..RESUME) during the requests. */
  done: number;
  /** The COLO_EXIT reason, when there was a failover. */
  coloExit?: string;
  /** Times the secondary's CGI read "secondary" (it really runs as the secondary). */
  secondaryRoleReads: number;
}

/** Progress after each request. */
export type Progress = (r: StoryResult, total: number) => void;

/**
 * Runs `n` requests on `pair`, the alike page and the role CGI in turn (`onlySame`: the alike
 * page only); with `failoverAt`, a failover before that request index.
 */
export async function drive(
  pair: Pair,
  n: number,
  options: {
    failoverAt?: number;
    /** Only the page both VMs serve alike: no checkpoint needed, compare-and-release alone. */
    onlySame?: boolean;
    progress?: Progress;
    aborted?: () => boolean;
  } = {},
): Promise<StoryResult> {
  const story: StoryResult = {
    results: [],
    seconds: 0,
    requested: 0,
    done: 0,
    secondaryRoleReads: 0,
  };
  const requested0 = pair.checkpointRequests;
  const done0 = pair.checkpoints.length;
  const t0 = performance.now();
  let failedInARow = 0;
  let afterFailover = false;
  const update = () => {
    story.requested = pair.checkpointRequests - requested0;
    story.done = pair.checkpoints.length - done0;
  };
  for (let i = 0; i < n && failedInARow < MAX_FAILED_IN_A_ROW && !options.aborted?.(); i++) {
    if (i === options.failoverAt) {
      story.secondaryRoleReads = pair.roleReads("secondary", "secondary");
      const exit = await pair.failover();
      story.coloExit = String(exit.data?.reason ?? "?");
      afterFailover = true;
    }
    const path = i % 2 === 0 || options.onlySame ? SAME_PATH : ROLE_PATH;
    const t = performance.now();
    try {
      const reply = await get(pair.httpPort, path, REQUEST_TIMEOUT_MS);
      const fromPrimary = path === ROLE_PATH
        ? reply.body.trim() === "role primary"
        : reply.body === STATIC_BODY;
      story.results.push({
        path,
        ok: reply.status === 200,
        fromPrimary,
        ms: reply.ms,
        afterFailover,
      });
      failedInARow = 0;
    } catch (error) {
      story.results.push({
        path,
        ok: false,
        fromPrimary: false,
        ms: performance.now() - t,
        afterFailover,
        error: error instanceof Error ? error.message : String(error),
      });
      failedInARow++;
    }
    update();
    options.progress?.(story, n);
  }
  story.seconds = (performance.now() - t0) / 1000;
  if (pair.options.mode === "ours" && !options.aborted?.()) await pair.settle();
  if (!afterFailover) story.secondaryRoleReads = pair.roleReads("secondary", "secondary");
  update();
  return story;
}

/** Requests answered, and answered with the primary's reply. */
export function answered(
  story: { results: RequestResult[] },
): { ok: number; fromPrimary: number } {
  const ok = story.results.filter((r) => r.ok);
  return { ok: ok.length, fromPrimary: ok.filter((r) => r.fromPrimary).length };
}

/** Latency percentiles of the answered requests (of one path, if given), ms. */
export function latency(story: StoryResult, path?: string): { p50: number; p99: number } {
  const ms = story.results.filter((r) => r.ok && (path === undefined || r.path === path))
    .map((r) => r.ms);
  return { p50: percentile(ms, 50), p99: percentile(ms, 99) };
}

/** Divergences our comparator counted (every `mismatch_*` but timeouts) in its summary. */
export function divergences(summary: ComparatorSummary | null): number | null {
  if (!summary) return null;
  let n = 0;
  for (const [k, v] of Object.entries(summary.fields)) {
    if (k.startsWith("mismatch_") && k !== "mismatch_timeout") n += Number(v);
  }
  return n;
}

/** A download is given up when no byte of it comes for this long (a stall). */
const DOWNLOAD_STALL_MS = 15_000;
/** The mixed bulk story: the pause between one role request's reply and the next request. */
const ROLE_GAP_MS = 250;

/** What happened to one download. */
export interface DownloadResult {
  /** Complete, and every byte the guest's file's. */
  ok: boolean;
  /** Body bytes received. */
  bytes: number;
  /** The offset of the first byte that is not the guest file's, if one is not. */
  firstWrong?: number;
  ms: number;
  /** The longest the stream stood still once the body had begun (ms). */
  longestGapMs: number;
  /** Checkpoints QEMU did while it ran. */
  checkpoints: number;
  /** Our comparator's checkpoint requests while it ran. */
  requests: CheckpointRequest[];
  error?: string;
}

/** The bulk story's results for one mode. */
export interface BulkResult {
  size: number;
  downloads: DownloadResult[];
  /** The role requests made while the downloads ran (the mixed story). */
  roles: RequestResult[];
  /** Wall time of the story (settling at the end not). */
  seconds: number;
  /** Our comparator's checkpoint requests during the story, settling included. */
  requests: CheckpointRequest[];
  /** Checkpoints QEMU did during the story, settling included. */
  done: number;
  /** qemu mode: QEMU's expiry scans that found a frame too old (timeout checkpoints). */
  qemuTimeouts: number;
}

/** Progress after each download. */
export type BulkProgress = (r: BulkResult, total: number) => void;

/** The offset of the first byte where `got` is not `want` (or `got` ends early), or -1. */
export function firstDifference(got: Uint8Array, want: Uint8Array): number {
  const n = Math.min(got.length, want.length);
  for (let i = 0; i < n; i++) if (got[i] !== want[i]) return i;
  return got.length === want.length ? -1 : n;
}

/**
 * The bulk story: `count` downloads of the first `size` bytes of the guest's bulk file, each on
 * a fresh connection, one after the other, each body checked byte for byte. Both VMs send the
 * same bytes, so no checkpoint is needed, however differently their TCP stacks cut the stream
 * into segments (SPEC 6). `mixed`: while each download runs, role requests go on beside it, one
 * after the other, each reply divergent and released by a checkpoint in the middle of the
 * transfer.
 */
export async function driveBulk(
  pair: Pair,
  size: number,
  count: number,
  options: { mixed?: boolean; progress?: BulkProgress; aborted?: () => boolean } = {},
): Promise<BulkResult> {
  const want = bulkBytes(size);
  const story: BulkResult = {
    size,
    downloads: [],
    roles: [],
    seconds: 0,
    requests: [],
    done: 0,
    qemuTimeouts: 0,
  };
  const requested0 = pair.checkpointRequestLog().length;
  const done0 = pair.checkpoints.length;
  const timeouts0 = pair.qemuTimeouts;
  const update = () => {
    story.requests = pair.checkpointRequestLog().slice(requested0);
    story.done = pair.checkpoints.length - done0;
    story.qemuTimeouts = pair.qemuTimeouts - timeouts0;
  };
  const t0 = performance.now();
  for (let i = 0; i < count && !options.aborted?.(); i++) {
    const requests0 = pair.checkpointRequestLog().length;
    const checkpoints0 = pair.checkpoints.length;
    const t = performance.now();
    let running = true;
    const roles = options.mixed ? roleRequests(pair, story.roles, () => running) : null;
    let result: Omit<DownloadResult, "checkpoints" | "requests">;
    try {
      const d = await download(pair.httpPort, `${BULK_PATH}?${size}`, DOWNLOAD_STALL_MS);
      const wrong = firstDifference(d.body, want);
      result = {
        ok: d.status === 200 && wrong < 0,
        bytes: d.body.length,
        firstWrong: wrong < 0 ? undefined : wrong,
        ms: d.ms,
        longestGapMs: d.longestGapMs,
        error: d.status === 200
          ? wrong < 0 ? undefined : `byte ${wrong} of ${d.body.length} is not the file's`
          : `HTTP status ${d.status}`,
      };
    } catch (error) {
      result = {
        ok: false,
        bytes: error instanceof DownloadError ? error.received : 0,
        ms: performance.now() - t,
        longestGapMs: NaN,
        error: error instanceof Error ? error.message : String(error),
      };
    }
    running = false;
    await roles;
    story.downloads.push({
      ...result,
      checkpoints: pair.checkpoints.length - checkpoints0,
      requests: pair.checkpointRequestLog().slice(requests0),
    });
    update();
    options.progress?.(story, count);
  }
  story.seconds = (performance.now() - t0) / 1000;
  if (pair.options.mode === "ours" && !options.aborted?.()) await pair.settle();
  update();
  return story;
}

/** Role requests one after the other, a short pause between, while `running()`. */
async function roleRequests(
  pair: Pair,
  out: RequestResult[],
  running: () => boolean,
): Promise<void> {
  while (running()) {
    const t = performance.now();
    try {
      const reply = await get(pair.httpPort, ROLE_PATH, REQUEST_TIMEOUT_MS);
      out.push({
        path: ROLE_PATH,
        ok: reply.status === 200,
        fromPrimary: reply.body.trim() === "role primary",
        ms: reply.ms,
        afterFailover: false,
      });
    } catch (error) {
      out.push({
        path: ROLE_PATH,
        ok: false,
        fromPrimary: false,
        ms: performance.now() - t,
        afterFailover: false,
        error: error instanceof Error ? error.message : String(error),
      });
    }
    await new Promise((r) => setTimeout(r, ROLE_GAP_MS));
  }
}

/** Body bytes per second over the downloads' own time (MiB/s), complete ones only. */
export function throughput(story: BulkResult): number {
  const ok = story.downloads.filter((d) => d.ok);
  const ms = ok.reduce((sum, d) => sum + d.ms, 0);
  return ms === 0 ? NaN : (ok.length * story.size) / (1024 * 1024) / (ms / 1000);
}

/** Checkpoint requests counted by reason, `reason` or `reason (other connection)`. */
export function byReason(requests: CheckpointRequest[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of requests) {
    const key = isHttp(r.conn) ? r.reason : `${r.reason} (${r.conn})`;
    out[key] = (out[key] ?? 0) + 1;
  }
  return out;
}

/** True for a connection of the guest's httpd (its replies, port 80 on the guest's side). */
export function isHttp(conn: string): boolean {
  return conn.startsWith("tcp ") && conn.includes(`:${GUEST_HTTP_PORT} > `);
}
