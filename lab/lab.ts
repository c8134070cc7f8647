/**
 * `deno task lab`: COLO in a box. Builds a tiny Debian guest, boots a real QEMU COLO pair on
 * loopback with this project's comparator between the VMs (or QEMU's own colo-compare), drives
 * HTTP through it and prints what happened: requests answered, latency, checkpoints asked for
 * and done, divergences, frames held at exit. With `--bulk`: downloads checked byte for byte,
 * throughput, and the checkpoints asked for by reason.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type AccelChoice, buildShim, chooseAccel } from "./accel.ts";
import { buildGuest, BULK_MAX_BYTES, cacheDir, type Guest, ROLE_PATH, SAME_PATH } from "./guest.ts";
import { percentile } from "./http.ts";
import { type ComparatorSummary, type Mode, Pair } from "./pair.ts";
import {
  answered,
  type BulkResult,
  byReason,
  divergences,
  drive,
  driveBulk,
  isHttp,
  latency,
  type StoryResult,
  throughput,
} from "./story.ts";

const HELP = `deno task lab [options]: a real QEMU COLO pair with this comparator in between

  --mode ours|qemu        the comparator: ours (main.ts, --qmp channel; default) or QEMU's
                          in-process colo-compare, for comparison
  --requests N            HTTP GETs through the pair, /cgi-bin/same and /cgi-bin/role in turn
                          (alike on both VMs, and not: each names its VM; default 200)
  --only-same             only /cgi-bin/same: no reply differs, so no checkpoint is needed
                          (the cost of comparing and releasing alone)
  --failover              kill the secondary half-way; the primary goes on alone (x-colo-lost-heartbeat)
  --bulk SIZE             the bulk story instead: downloads of SIZE bytes (e.g. 1M, 512K, 4M, at
                          most 4M) that both VMs serve alike, each on a fresh connection, each
                          checked byte for byte; throughput and checkpoints by reason (none is
                          needed: the same bytes, however each VM's TCP cuts them into segments)
  --downloads N           with --bulk: how many, one after the other (default 5)
  --mixed                 with --bulk: role requests beside each download, one after the other,
                          so that checkpoints fall in the middle of the transfers
  --compare               both modes one after the other, same guest: a table of req/s, p50, p99
                          (with --bulk: MiB/s, checkpoints done and asked for by reason)
  --accel auto|kvm|tcg    default auto: KVM when /dev/kvm is usable, else TCG
  --checkpoint-delay MS   QEMU's periodic checkpoint interval, x-checkpoint-delay (default 600000,
                          so that checkpoints come from the comparator)
  --secondary-monitor on|off
                          ours: also give the comparator the secondary's monitor
                          (--qmp-secondary), so its replies sent before the primary resumes
                          survive the checkpoint flush (default on)
  --guest-announce on|off virtio-net's guest_announce (default on, as QEMU's): on, the secondary's
                          guest announces itself (gratuitous ARP, unsolicited IPv6 neighbour
                          advertisements) after every checkpoint the secondary loads
  --sockets tcp|unix      the primary's compare0 and compare_out chardevs on TCP (default) or
                          on unix sockets, the comparator beside the primary QEMU; the
                          secondary's stream comes over TCP either way
  --keep                  keep the run directory (logs, command lines) and print where it is
  --capture               ours: the comparator writes every divergence to divergences.pcapng in
                          the run directory (--capture), which is then kept
  -h, --help
`;

class UsageError extends Error {}

interface LabOptions {
  modes: Mode[];
  requests: number;
  /** The bulk story's download size, or null for the request story. */
  bulk: number | null;
  downloads: number;
  mixed: boolean;
  capture: boolean;
  failover: boolean;
  onlySame: boolean;
  accel: "auto" | "kvm" | "tcg";
  checkpointDelayMs: number;
  keep: boolean;
  compare: boolean;
  secondaryMonitor: boolean;
  guestAnnounce: boolean;
  /** `--sockets unix`. */
  unixSockets: boolean;
}

function parse(args: string[]): LabOptions | null {
  let v;
  try {
    v = parseArgs({
      args,
      strict: true,
      options: {
        mode: { type: "string", default: "ours" },
        requests: { type: "string", default: "200" },
        failover: { type: "boolean", default: false },
        bulk: { type: "string" },
        downloads: { type: "string" },
        mixed: { type: "boolean", default: false },
        capture: { type: "boolean", default: false },
        "only-same": { type: "boolean", default: false },
        compare: { type: "boolean", default: false },
        accel: { type: "string", default: "auto" },
        "checkpoint-delay": { type: "string", default: "600000" },
        keep: { type: "boolean", default: false },
        "secondary-monitor": { type: "string", default: "on" },
        "guest-announce": { type: "string", default: "on" },
        sockets: { type: "string", default: "tcp" },
        help: { type: "boolean", short: "h", default: false },
      },
    }).values;
  } catch (error) {
    const msg = error instanceof Error ? error.message : String(error);
    const unknown = /Unknown option '([^']+)'/.exec(msg);
    throw new UsageError(unknown ? `unknown flag ${unknown[1]}; see --help` : `${msg}; see --help`);
  }
  if (v.help) return null;
  if (v.mode !== "ours" && v.mode !== "qemu") {
    throw new UsageError(`--mode: "${v.mode}" is not a mode; use ours or qemu`);
  }
  if (!["auto", "kvm", "tcg"].includes(v.accel)) {
    throw new UsageError(`--accel: "${v.accel}" is not auto, kvm or tcg`);
  }
  if (v.sockets !== "tcp" && v.sockets !== "unix") {
    throw new UsageError(`--sockets: "${v.sockets}" is not tcp or unix`);
  }
  for (const flag of ["secondary-monitor", "guest-announce"] as const) {
    if (v[flag] !== "on" && v[flag] !== "off") {
      throw new UsageError(`--${flag}: "${v[flag]}" is not on or off`);
    }
  }
  const count = (flag: string, text: string) => {
    if (!/^[1-9][0-9]*$/.test(text)) {
      throw new UsageError(`--${flag}: "${text}" is not a positive whole number`);
    }
    return Number(text);
  };
  const bulk = v.bulk === undefined ? null : bulkSize(v.bulk);
  if (bulk === null) {
    for (const flag of ["downloads", "mixed"] as const) {
      if (v[flag]) throw new UsageError(`--${flag} belongs to the bulk story: add --bulk SIZE`);
    }
  } else {
    for (const flag of ["failover", "only-same"] as const) {
      if (v[flag]) throw new UsageError(`--${flag} belongs to the request story, not --bulk`);
    }
  }
  return {
    modes: v.compare ? ["ours", "qemu"] : [v.mode],
    requests: count("requests", v.requests),
    bulk,
    downloads: count("downloads", v.downloads ?? "5"),
    mixed: v.mixed,
    capture: v.capture,
    failover: v.failover,
    onlySame: v["only-same"],
    accel: v.accel as LabOptions["accel"],
    checkpointDelayMs: count("checkpoint-delay", v["checkpoint-delay"]),
    keep: v.keep,
    compare: v.compare,
    secondaryMonitor: v["secondary-monitor"] === "on",
    guestAnnounce: v["guest-announce"] === "on",
    unixSockets: v.sockets === "unix",
  };
}

/** `--bulk`'s size: bytes, or with K/KiB or M/MiB; 1 byte to the guest file's 4 MiB. */
function bulkSize(text: string): number {
  const m = /^([1-9][0-9]*)(k|kib|m|mib)?$/i.exec(text);
  const unit = m?.[2]?.[0].toLowerCase();
  const size = m ? Number(m[1]) * (unit === "m" ? 1024 * 1024 : unit === "k" ? 1024 : 1) : 0;
  if (size < 1 || size > BULK_MAX_BYTES) {
    throw new UsageError(
      `--bulk: "${text}" is not a size from 1 byte to 4M (the guest's file); e.g. --bulk 1M`,
    );
  }
  return size;
}

const tty = Deno.stdout.isTerminal();
const encoder = new TextEncoder();

function say(text: string): void {
  Deno.stdout.writeSync(encoder.encode((tty ? "\r\x1b[K" : "") + text + "\n"));
}

function fmt(ms: number): string {
  return Number.isNaN(ms) ? "-" : `${ms.toFixed(1)} ms`;
}

/** One line of progress: the same words live and at the end. */
function statusLine(mode: Mode, s: StoryResult, total: number): string {
  const a = answered(s);
  const l = latency(s);
  const requested = mode === "ours" ? String(s.requested) : "in-process";
  return `${mode}: ${a.ok}/${total} answered (${a.fromPrimary} primary), ` +
    `p50 ${fmt(l.p50)} p99 ${fmt(l.p99)}, checkpoints requested ${requested} done ${s.done}`;
}

/** The bulk story's line of progress. */
function bulkLine(mode: Mode, b: BulkResult, total: number): string {
  const exact = b.downloads.filter((d) => d.ok).length;
  const requested = mode === "ours" ? String(b.requests.length) : "in-process";
  const roles = b.roles.length ? `, ${answered({ results: b.roles }).ok} role` : "";
  return `${mode}: ${exact}/${total} downloads of ${
    mib(b.size)
  } exact (${b.downloads.length} done${roles}), ` +
    `${mibs(throughput(b))}, checkpoints requested ${requested} done ${b.done}`;
}

function mib(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(2)} MiB`;
}

function mibs(rate: number): string {
  return Number.isNaN(rate) ? "- MiB/s" : `${rate.toFixed(2)} MiB/s`;
}

interface ModeResult {
  mode: Mode;
  /** The request story's results (null for the bulk story). */
  story: StoryResult | null;
  bulk: BulkResult | null;
  summary: ComparatorSummary | null;
  checkpointMedianMs: number;
  /** Median time the secondary resumed before the primary after a checkpoint. */
  resumeLeadMs: number;
}

/** The current pair, for the signal handler. */
let current: Pair | null = null;
let aborted = false;

async function runMode(
  mode: Mode,
  o: LabOptions,
  guest: Guest,
  accel: AccelChoice,
  preload: string | undefined,
): Promise<ModeResult> {
  const runDir = await Deno.makeTempDir({ prefix: `colo-lab-${mode}-` });
  say(`${mode}: starting the pair (run directory ${runDir})`);
  let ok = false;
  try {
    const pair = current = new Pair({
      mode,
      accel: accel.accel,
      guest,
      checkpointDelayMs: o.checkpointDelayMs,
      runDir,
      preload,
      comparatorQmp: true,
      comparatorSecondaryQmp: o.secondaryMonitor,
      comparatorArgs: o.capture ? ["--capture", `${runDir}/divergences.pcapng`] : [],
      guestAnnounce: o.guestAnnounce,
      unixSockets: o.unixSockets,
      note: (t) => say(`${mode}: ${t}`),
    });
    await pair.start();
    if (aborted) throw new Error("interrupted");
    const story = o.bulk === null ? await requestStory(pair, mode, o) : null;
    const bulk = o.bulk === null ? null : await bulkStory(pair, mode, o, o.bulk);
    const summary = await pair.stop();
    current = null;
    ok = !aborted;
    return {
      mode,
      story,
      bulk,
      summary,
      checkpointMedianMs: percentile(pair.checkpoints.map((c) => c.ms), 50),
      resumeLeadMs: percentile(pair.secondaryResumeLeadMs(), 50),
    };
  } finally {
    await current?.stop();
    current = null;
    if (o.keep || o.capture || !ok) say(`${mode}: logs kept in ${runDir}`);
    else await Deno.remove(runDir, { recursive: true });
  }
}

async function requestStory(pair: Pair, mode: Mode, o: LabOptions): Promise<StoryResult> {
  let last = 0;
  let exitSaid = false;
  const story = await drive(pair, o.requests, {
    failoverAt: o.failover ? Math.floor(o.requests / 2) : undefined,
    onlySame: o.onlySame,
    aborted: () => aborted,
    progress: (s, total) => {
      const n = s.results.length;
      if (tty) {
        Deno.stdout.writeSync(encoder.encode(`\r\x1b[K${statusLine(mode, s, total)}`));
      } else if (n === total || performance.now() - last > 5_000) {
        last = performance.now();
        say(statusLine(mode, s, total));
      }
      if (n === Math.floor(total / 2) && o.failover) {
        say(`${mode}: killing the secondary, x-colo-lost-heartbeat to the primary (failover)`);
      }
      if (s.coloExit && !exitSaid) {
        exitSaid = true;
        say(`${mode}: the primary left COLO (COLO_EXIT reason ${s.coloExit}) and serves alone`);
      }
    },
  });
  if (tty) say(statusLine(mode, story, o.requests));
  return story;
}

async function bulkStory(pair: Pair, mode: Mode, o: LabOptions, size: number): Promise<BulkResult> {
  let last = 0;
  const story = await driveBulk(pair, size, o.downloads, {
    mixed: o.mixed,
    aborted: () => aborted,
    progress: (b, total) => {
      if (tty) Deno.stdout.writeSync(encoder.encode(`\r\x1b[K${bulkLine(mode, b, total)}`));
      else if (b.downloads.length === total || performance.now() - last > 5_000) {
        last = performance.now();
        say(bulkLine(mode, b, total));
      }
      const d = b.downloads.at(-1)!;
      if (!d.ok) say(`${mode}: download ${b.downloads.length} failed: ${d.error}`);
    },
  });
  if (tty) say(bulkLine(mode, story, o.downloads));
  return story;
}

function report(r: ModeResult, o: LabOptions): void {
  if (r.bulk) reportBulk(r, r.bulk, o);
  else reportRequests(r, r.story!, o);
}

function reportRequests(r: ModeResult, s: StoryResult, o: LabOptions): void {
  const a = answered(s);
  const l = latency(s);
  const failed = s.results.filter((x) => !x.ok);
  say(
    `== ${r.mode}: ${a.ok}/${o.requests} requests answered, ${a.fromPrimary} with the primary's reply`,
  );
  const rate = (s.results.length / s.seconds).toFixed(1);
  const same = latency(s, SAME_PATH);
  const differ = latency(s, ROLE_PATH);
  say(`   ${rate} requests/s, latency p50 ${fmt(l.p50)}, p99 ${fmt(l.p99)}`);
  say(
    `   same on both VMs (${SAME_PATH}) p50 ${fmt(same.p50)} p99 ${fmt(same.p99)}, ` +
      `different (${ROLE_PATH}) p50 ${fmt(differ.p50)} p99 ${fmt(differ.p99)}`,
  );
  const requested = r.mode === "ours"
    ? `${s.requested} requested by the comparator (--qmp${
      o.secondaryMonitor ? " --qmp-secondary" : ""
    })`
    : "requested in-process";
  say(
    `   checkpoints: ${requested}, ${s.done} done by QEMU (STOP..RESUME, median ${
      fmt(r.checkpointMedianMs)
    }; the secondary resumed a median ${fmt(r.resumeLeadMs)} before the primary)`,
  );
  reportComparator(r);
  if (!o.onlySame) {
    say(
      `   the secondary's CGI read role "secondary" ${s.secondaryRoleReads} times (fw_cfg, not RAM)`,
    );
  }
  if (failed.length) say(`   ${failed.length} failed, first: ${failed[0].error}`);
}

/** Our comparator's exit summary: divergences, held frames, its own counts. */
function reportComparator(r: ModeResult): void {
  if (r.summary) {
    say(
      `   divergences ${
        divergences(r.summary)
      }, primary frames held at exit ${r.summary.heldPrimary}` +
        ` (comparator: checkpoints_requested=${r.summary.fields.checkpoints_requested}` +
        ` checkpoints_received=${r.summary.fields.checkpoints_received}` +
        ` secondary_kept_at_flush=${r.summary.fields.secondary_kept_at_flush ?? 0})`,
    );
  } else if (r.mode === "qemu") {
    say("   divergences and held frames: not reported by QEMU's colo-compare");
  }
}

/** "tcp-payload 2, timeout 1", or "none". */
function reasons(counts: Record<string, number>): string {
  const parts = Object.entries(counts).sort().map(([k, v]) => `${k} ${v}`);
  return parts.length ? parts.join(", ") : "none";
}

function reportBulk(r: ModeResult, b: BulkResult, o: LabOptions): void {
  const exact = b.downloads.filter((d) => d.ok);
  const ms = exact.map((d) => d.ms);
  say(
    `== ${r.mode}: ${exact.length}/${o.downloads} downloads of ${b.size} bytes complete and ` +
      `byte for byte the guest's file`,
  );
  say(
    `   ${mibs(throughput(b))} over the downloads' own time; a download took p50 ${
      fmt(percentile(ms, 50))
    }, max ${fmt(percentile(ms, 100))}; the longest the stream stood still: p50 ${
      fmt(percentile(exact.map((d) => d.longestGapMs), 50))
    }, max ${fmt(percentile(exact.map((d) => d.longestGapMs), 100))}`,
  );
  const during = b.downloads.reduce((n, d) => n + d.checkpoints, 0);
  say(
    `   checkpoints: ${b.done} done by QEMU (${during} while a download ran; STOP..RESUME, median ${
      fmt(r.checkpointMedianMs)
    })`,
  );
  if (r.mode === "ours") {
    const http = b.requests.filter((q) => isHttp(q.conn));
    const duringHttp = b.downloads.flatMap((d) => d.requests).filter((q) => isHttp(q.conn));
    say(
      `   requested by the comparator: ${b.requests.length}; by reason: ${
        reasons(byReason(b.requests))
      }`,
    );
    if (!o.mixed) {
      say(
        `   for the guest's HTTP replies (identical on both VMs): ${http.length}` +
          (http.length ? ` (${duringHttp.length} while a download ran)` : ""),
      );
    }
  } else {
    say(
      `   QEMU's expiry scans that found a frame older than compare_timeout (a timeout ` +
        `checkpoint each): ${b.qemuTimeouts}; QEMU traces no other TCP reason`,
    );
  }
  if (o.mixed) {
    const a = answered({ results: b.roles });
    say(
      `   role requests beside the downloads: ${a.ok}/${b.roles.length} answered, ` +
        `${a.fromPrimary} with the primary's reply`,
    );
  }
  reportComparator(r);
  for (const [i, d] of b.downloads.entries()) {
    if (!d.ok) say(`   download ${i + 1} failed after ${d.bytes} bytes: ${d.error}`);
  }
}

function table(results: ModeResult[], o: LabOptions): void {
  if (o.bulk !== null) return bulkTable(results, o);
  say("");
  say("| comparator | answered | requests/s | p50 | p99 | checkpoints done |");
  say("| --- | --- | --- | --- | --- | --- |");
  for (const r of results) {
    const s = r.story!;
    const l = latency(s);
    say(
      `| ${comparatorName(r.mode, o)} | ${answered(s).ok}/${s.results.length} | ` +
        `${(s.results.length / s.seconds).toFixed(1)} | ${fmt(l.p50)} | ${
          fmt(l.p99)
        } | ${s.done} |`,
    );
  }
}

function comparatorName(mode: Mode, o: LabOptions): string {
  return mode === "qemu"
    ? "QEMU colo-compare"
    : `this comparator (--qmp${o.secondaryMonitor ? " --qmp-secondary" : ""})`;
}

function bulkTable(results: ModeResult[], o: LabOptions): void {
  say("");
  say(
    "| comparator | exact | MiB/s | p50 download | longest stand-still | checkpoints done | " +
      "requested, by reason |",
  );
  say("| --- | --- | --- | --- | --- | --- | --- |");
  for (const r of results) {
    const b = r.bulk!;
    const exact = b.downloads.filter((d) => d.ok);
    const why = r.mode === "ours"
      ? reasons(byReason(b.requests))
      : `in-process (timeouts ${b.qemuTimeouts})`;
    say(
      `| ${comparatorName(r.mode, o)} | ${exact.length}/${b.downloads.length} | ${
        throughput(b).toFixed(2)
      } | ${fmt(percentile(exact.map((d) => d.ms), 50))} | ${
        fmt(percentile(exact.map((d) => d.longestGapMs), 100))
      } | ${b.done} | ${why} |`,
    );
  }
}

async function main(args: string[]): Promise<number> {
  let o;
  try {
    o = parse(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`lab: ${error.message}`);
    return 2;
  }
  if (o === null) {
    console.log(HELP);
    return 0;
  }
  let accel;
  try {
    accel = chooseAccel(o.accel);
  } catch (error) {
    console.error(`lab: ${error instanceof Error ? error.message : error}`);
    return 2;
  }
  const onSignal = () => {
    aborted = true;
    current?.stop();
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    say(`accelerator: ${accel.accel} (${accel.reason})`);
    const t0 = performance.now();
    const guest = await buildGuest();
    say(
      `guest: ${guest.kernelRelease} + busybox, ${guest.cached ? "cached" : "built"} in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s (${guest.initramfs})`,
    );
    if (guest.warning) say(`warning: ${guest.warning}`);
    const preload = accel.accel === "tcg" ? await buildShim(cacheDir()) : undefined;
    if (preload) say(`TCG: QEMU runs with the BQL work-around ${preload}`);
    const results: ModeResult[] = [];
    for (const mode of o.modes) {
      if (aborted) break;
      const r = await runMode(mode, o, guest, accel, preload);
      results.push(r);
      report(r, o);
    }
    if (o.compare && results.length === 2) table(results, o);
    if (aborted) {
      say("interrupted: everything the lab started has been stopped");
      return 130;
    }
    const bad = results.some((r) =>
      r.bulk ? r.bulk.downloads.some((d) => !d.ok) : answered(r.story!).ok === 0
    );
    return bad ? 1 : 0;
  } catch (error) {
    console.error(
      `lab: ${aborted ? "interrupted" : error instanceof Error ? error.message : error}`,
    );
    return aborted ? 130 : 1;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
