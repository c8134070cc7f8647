/**
 * The lab's story on a running pair: N HTTP GETs from the host through the primary's hostfwd
 * (a page both VMs serve alike and the role CGI in turn, a fresh TCP connection each), optionally a
 * failover half-way, and what came of it: answers, latency, checkpoints asked for and done.
 *
 * @module
 */

import { ROLE_PATH, SAME_PATH, STATIC_BODY } from "./guest.ts";
import { get, percentile } from "./http.ts";
import type { ComparatorSummary, Pair } from "./pair.ts";

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
export function answered(story: StoryResult): { ok: number; fromPrimary: number } {
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
