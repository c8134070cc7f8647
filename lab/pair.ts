/**
 * A real COLO pair on loopback, wired as QEMU's docs/COLO-FT.txt: a primary and a secondary
 * QEMU running the lab's guest, and between them either QEMU's in-process colo-compare
 * (`mode: "qemu"`) or this project's comparator (`mode: "ours"`, `main.ts` as a subprocess in
 * place of `compare1`, `compare0-0`, `compare_out0`, the iothread and the colo-compare object,
 * with a QMP monitor of its own on the primary).
 *
 * Everything runs from a temporary run directory (sockets, logs) on free loopback ports, and
 * {@linkcode Pair.stop} stops every process it started, whatever state start-up reached.
 *
 * @module
 */

import { PROGRAM_RUN_FLAGS } from "../src/v8_flags.ts";
import { type Guest, READY_MARK, ROLE_FW_CFG, roleValue } from "./guest.ts";
import { Child } from "./process.ts";
import { Qmp, type QmpEvent } from "./qmp.ts";

/** Which comparator sits between the VMs. */
export type Mode = "ours" | "qemu";
/** How QEMU runs the guests. */
export type Accel = "kvm" | "tcg";

/** How to start a pair. */
export interface PairOptions {
  mode: Mode;
  accel: Accel;
  guest: Guest;
  /** `x-checkpoint-delay`: ms between QEMU's own periodic checkpoints. */
  checkpointDelayMs: number;
  /** Where sockets and logs go (created by the caller, removed by the caller). */
  runDir: string;
  /** LD_PRELOAD library for QEMU (the TCG work-around), if any. */
  preload?: string;
  /** Give our comparator the primary's QMP monitor (`--qmp`). */
  comparatorQmp: boolean;
  /**
   * Also give it the secondary's own monitor (`--qmp-secondary`, needs `comparatorQmp`): the
   * secondary QEMU gets a second `-qmp` socket for it.
   */
  comparatorSecondaryQmp?: boolean;
  /** Extra comparator flags. */
  comparatorArgs?: string[];
  /**
   * The primary's `compare0` and `compare_out` chardevs (and QEMU's comparator's clients of
   * them) on unix sockets in `runDir` instead of TCP: the comparator beside the primary QEMU on
   * one host. The secondary's `red1` connects over TCP, as from another host.
   */
  unixSockets?: boolean;
  /**
   * virtio-net's `guest_announce` (QEMU's default: on). On, the secondary QEMU asks its guest to
   * announce itself after every checkpoint it loads (virtio-net's post-load resets the announce
   * timer), and the guest sends gratuitous ARPs and unsolicited IPv6 neighbour advertisements
   * that the primary never sends.
   */
  guestAnnounce?: boolean;
  /** Progress lines ("primary booted in 3.1 s"). */
  note?: (text: string) => void;
}

/** One QEMU checkpoint as the primary's QMP events show it: STOP, then RESUME. */
export interface Checkpoint {
  /** QEMU's clock at STOP, seconds. */
  at: number;
  ms: number;
}

/** One checkpoint request our comparator logged: why, and for which connection. */
export interface CheckpointRequest {
  reason: string;
  conn: string;
}

/** The comparator's exit summary, as logged. */
export interface ComparatorSummary {
  fields: Record<string, string>;
  /** Primary frames held and never compared at exit (`event=held-at-exit`). */
  heldPrimary: number;
  /** `checkpoint-request` lines logged. */
  requestLines: number;
}

const MAIN = new URL("../main.ts", import.meta.url).pathname;
/** Guest RAM: not a multiple of 256 KiB (see colo-lab.md: QEMU < 9.0 TCG dirty tracking). */
const GUEST_RAM = "262136K";
const BOOT_TIMEOUT_MS = 90_000;
const COLO_TIMEOUT_MS = 60_000;
/** The comparator's default compare-timeout and expired-scan-cycle, and a margin. */
const SETTLE_MS = 3_000 + 1_000 + 500;

/** Ports that were free a moment ago, all distinct. */
function freePorts(count: number): number[] {
  const ls = Array.from({ length: count }, () => Deno.listen({ hostname: "127.0.0.1", port: 0 }));
  const ports = ls.map((l) => (l.addr as Deno.NetAddr).port);
  for (const l of ls) l.close();
  return ports;
}

/** Parses `key=value` pairs of one logfmt line. */
export function logfmt(line: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of line.matchAll(/([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)/g)) {
    out[m[1]] = m[2].startsWith('"') ? JSON.parse(m[2]) : m[2];
  }
  return out;
}

/**
 * The checkpoint requests among the comparator's log lines. A line that only counts the lines not
 * logged at info has no reason and is not a request (a request line may carry such a count, and
 * is one); `checkpoint-request-undelivered` is not a request either (the summary does not count it).
 */
export function checkpointRequestsIn(lines: string[]): CheckpointRequest[] {
  const out: CheckpointRequest[] = [];
  for (const l of lines) {
    if (!l.includes("event=checkpoint-request ")) continue;
    const f = logfmt(l);
    if (f.event === "checkpoint-request" && f.reason) {
      out.push({ reason: f.reason, conn: f.conn ?? "-" });
    }
  }
  return out;
}

/** A running pair. */
export class Pair {
  readonly options: PairOptions;
  /** The host port forwarded to the guest's :80 through the primary (and the comparator). */
  readonly httpPort: number;
  /** Checkpoints QEMU completed since COLO started. */
  readonly checkpoints: Checkpoint[] = [];
  /** The primary's and the secondary's QMP events (the lab's own monitors). */
  primaryEvents: QmpEvent[] = [];
  secondaryEvents: QmpEvent[] = [];
  primary: Child | null = null;
  secondary: Child | null = null;
  comparator: Child | null = null;
  #pQmp: Qmp | null = null;
  #sQmp: Qmp | null = null;
  #stopping: Promise<ComparatorSummary | null> | null = null;
  readonly #ports: {
    mirror: number;
    compare0: number;
    compare1: number;
    out: number;
    migration: number;
  };

  /** A pair not started yet: {@linkcode start} boots it, {@linkcode stop} ends it at any time. */
  constructor(options: PairOptions) {
    this.options = options;
    const [http, mirror, compare0, compare1, out, migration] = freePorts(6);
    this.httpPort = http;
    this.#ports = { mirror, compare0, compare1, out, migration };
  }

  /**
   * Boots both VMs and brings them into COLO (migration status `colo`). On failure, or when
   * {@linkcode stop} is called meanwhile (a signal), everything started so far is stopped.
   */
  async start(): Promise<void> {
    try {
      await this.#start();
    } catch (error) {
      await this.stop();
      throw error;
    }
  }

  /** Throws once stop() has begun: start-up must not start anything after that. */
  #live(): void {
    if (this.#stopping) throw new Error("stopped while starting");
  }

  /**
   * `checkpoint-request` lines our comparator has logged so far (0 in qemu mode): one per
   * request at debug level, where the comparator runs here (at info, 50 per 10 s then a count).
   */
  get checkpointRequests(): number {
    return this.checkpointRequestLog().length;
  }

  /**
   * The checkpoint requests our comparator has logged so far, each with its reason and the
   * connection it was for (`-` for none).
   */
  checkpointRequestLog(): CheckpointRequest[] {
    return checkpointRequestsIn(this.comparator?.lines ?? []);
  }

  /**
   * QEMU's colo-compare (qemu mode): its expiry scans that found a frame older than
   * compare_timeout, each one a checkpoint request (its `colo_old_packet_check_found` trace).
   * QEMU traces no other reason for a TCP checkpoint.
   */
  get qemuTimeouts(): number {
    return this.primary?.lines.filter((l) => l.startsWith("colo_old_packet_check_found"))
      .length ?? 0;
  }

  /**
   * Per checkpoint since COLO started, how long before the primary's `RESUME` the secondary's
   * came (ms). The comparator flushes on the primary's; secondary frames of the new epoch read
   * in between are flushed with the old one.
   */
  secondaryResumeLeadMs(): number[] {
    const since = this.checkpoints[0]?.at ?? Infinity;
    const secondary = this.secondaryEvents.filter((e) => e.event === "RESUME" && e.at >= since);
    const leads: number[] = [];
    for (const e of this.primaryEvents) {
      if (e.event !== "RESUME" || e.at < since) continue;
      const s = secondary.findLast((x) => x.at <= e.at && e.at - x.at < 1);
      if (s) leads.push((e.at - s.at) * 1000);
    }
    return leads;
  }

  /** Times the secondary's CGI ran and read its role as `role` (from its serial console). */
  roleReads(vm: "primary" | "secondary", role: string): number {
    const child = vm === "primary" ? this.primary : this.secondary;
    return child?.lines.filter((l) => l.trim() === `cgi-role ${role}`).length ?? 0;
  }

  #qemu(name: "primary" | "secondary", extra: string[]): Child {
    const { guest, accel, runDir, preload, guestAnnounce } = this.options;
    const args = [
      "-name",
      name,
      "-nodefaults",
      "-machine",
      "pc",
      "-accel",
      accel,
      "-cpu",
      "qemu64",
      "-m",
      GUEST_RAM,
      "-smp",
      "1",
      "-display",
      "none",
      "-no-reboot",
      "-kernel",
      guest.kernel,
      "-initrd",
      guest.initramfs,
      "-append",
      "console=ttyS0 quiet panic=-1",
      "-serial",
      "stdio",
      "-device",
      `virtio-net-pci,id=e0,netdev=hn0,romfile=${
        guestAnnounce === false ? ",guest_announce=off" : ""
      }`,
      "-fw_cfg",
      `name=${ROLE_FW_CFG},string=${roleValue(name)}`,
      "-qmp",
      `unix:${runDir}/${name[0]}.qmp,server=on,wait=off`,
      ...extra,
    ];
    Deno.writeTextFileSync(
      `${runDir}/cmdlines`,
      `${name}: qemu-system-x86_64 ${args.join(" ")}\n`,
      {
        append: true,
      },
    );
    return new Child(
      name,
      "qemu-system-x86_64",
      args,
      `${runDir}/${name}.log`,
      preload ? { LD_PRELOAD: preload } : undefined,
    );
  }

  /** Our comparator watches the secondary's monitor (`--qmp-secondary`). */
  get #watchSecondary(): boolean {
    const o = this.options;
    return o.mode === "ours" && o.comparatorQmp && (o.comparatorSecondaryQmp ?? false);
  }

  async #start(): Promise<void> {
    const { mode, runDir, checkpointDelayMs } = this.options;
    const note = this.options.note ?? (() => {});
    const p = this.#ports;
    // compare0 and compare_out on unix sockets with --sockets unix, by the port each replaces;
    // the others on TCP.
    const unixPath = new Map<number, string>(
      this.options.unixSockets
        ? [[p.compare0, `${runDir}/compare0.sock`], [p.out, `${runDir}/out.sock`]]
        : [],
    );
    const at = (port: number) => {
      const path = unixPath.get(port);
      return path === undefined ? `host=127.0.0.1,port=${port}` : `path=${path}`;
    };
    // Where the comparator reaches a chardev server of the primary's.
    const reach = (port: number) => {
      const path = unixPath.get(port);
      return path === undefined ? `tcp:127.0.0.1:${port}` : `unix:${path}`;
    };
    const server = (
      id: string,
      port: number,
    ) => ["-chardev", `socket,id=${id},${at(port)},server=on,wait=off`];
    const client = (
      id: string,
      port: number,
      more = "",
    ) => ["-chardev", `socket,id=${id},${at(port)}${more}`];
    const t0 = performance.now();

    // The primary, as COLO-FT.txt; with our comparator, without QEMU's compare and its clients.
    const primaryArgs = [
      "-netdev",
      `user,id=hn0,hostfwd=tcp:127.0.0.1:${this.httpPort}-:80`,
      ...server("mirror0", p.mirror),
      ...server("compare0", p.compare0),
      ...server("compare_out", p.out),
    ];
    if (mode === "qemu") {
      primaryArgs.push(
        ...server("compare1", p.compare1),
        ...client("compare0-0", p.compare0),
        ...client("compare_out0", p.out),
      );
    }
    primaryArgs.push(
      "-object",
      "filter-mirror,id=m0,netdev=hn0,queue=tx,outdev=mirror0",
      "-object",
      "filter-redirector,id=redire0,netdev=hn0,queue=rx,indev=compare_out",
      "-object",
      "filter-redirector,id=redire1,netdev=hn0,queue=rx,outdev=compare0",
    );
    if (mode === "qemu") {
      primaryArgs.push(
        "-object",
        "iothread,id=iothread1",
        "-object",
        "colo-compare,id=comp0,primary_in=compare0-0,secondary_in=compare1,outdev=compare_out0,iothread=iothread1",
        // A line per expiry scan that finds a frame too old (a checkpoint for a timeout).
        "-trace",
        "enable=colo_old_packet_check_found",
      );
    } else {
      // The comparator's own monitor: one QMP socket serves one client (SPEC 7b).
      primaryArgs.push("-qmp", `unix:${runDir}/c.qmp,server=on,wait=off`);
    }
    this.primary = this.#qemu("primary", primaryArgs);
    this.#pQmp = await Qmp.connect("primary", `${runDir}/p.qmp`, () => this.primary!.running);
    this.#live();
    this.primaryEvents = this.#pQmp.events;
    // At once, so no periodic checkpoint at QEMU's default 20000 ms comes first.
    await this.#pQmp.execute("migrate-set-parameters", { "x-checkpoint-delay": checkpointDelayMs });
    this.#live();

    let secondaryIn = p.compare1;
    if (mode === "ours") {
      const args = [
        "run",
        "-A",
        ...PROGRAM_RUN_FLAGS,
        MAIN,
        "--primary-in",
        reach(p.compare0),
        "--secondary-in",
        "tcp-listen:127.0.0.1:0",
        "--outdev",
        reach(p.out),
        ...(this.options.comparatorQmp ? ["--qmp", `unix:${runDir}/c.qmp`] : []),
        ...(this.#watchSecondary ? ["--qmp-secondary", `unix:${runDir}/sc.qmp`] : []),
        // Every checkpoint request a line (the story counts them).
        "--log-level",
        "debug",
        ...(this.options.comparatorArgs ?? []),
      ];
      Deno.writeTextFileSync(`${runDir}/cmdlines`, `comparator: deno ${args.join(" ")}\n`, {
        append: true,
      });
      this.comparator = new Child("comparator", Deno.execPath(), args, `${runDir}/comparator.log`);
      const listening = await this.comparator.waitForLine(
        /event=listening endpoint=secondary-in address=\S*:\d+$/,
        30_000,
      );
      secondaryIn = Number(/:(\d+)$/.exec(listening)![1]);
      this.#live();
    }

    this.secondary = this.#qemu("secondary", [
      "-netdev",
      "user,id=hn0",
      ...client("red0", p.mirror, ",reconnect=1"),
      ...client("red1", secondaryIn, ",reconnect=1"),
      "-object",
      "filter-redirector,id=f1,netdev=hn0,queue=tx,indev=red0",
      "-object",
      "filter-redirector,id=f2,netdev=hn0,queue=rx,outdev=red1",
      "-object",
      "filter-rewriter,id=rew0,netdev=hn0,queue=all",
      "-incoming",
      `tcp:127.0.0.1:${p.migration}`,
      ...(this.#watchSecondary ? ["-qmp", `unix:${runDir}/sc.qmp,server=on,wait=off`] : []),
    ]);
    this.#sQmp = await Qmp.connect("secondary", `${runDir}/s.qmp`, () => this.secondary!.running);
    this.secondaryEvents = this.#sQmp.events;
    this.#live();

    // A KVM that cannot run the guest stops it with "KVM internal error" (and QEMU waits).
    const boot = await this.primary.waitForLine(
      new RegExp(`${READY_MARK}|KVM internal error`),
      BOOT_TIMEOUT_MS,
    );
    if (!boot.includes(READY_MARK)) throw new Error(`the primary's guest did not boot: ${boot}`);
    const booted = performance.now();
    note(`guest booted on the primary in ${((booted - t0) / 1000).toFixed(1)} s`);

    // COLO: x-colo on both (the secondary does not need it in 7.2; harmless), events on the
    // primary (MIGRATION_PASS per checkpoint), then migrate; status "colo" ends start-up.
    const xColo = { capability: "x-colo", state: true };
    await this.#sQmp.execute("migrate-set-capabilities", { capabilities: [xColo] });
    await this.#pQmp.execute("migrate-set-capabilities", {
      capabilities: [xColo, { capability: "events", state: true }],
    });
    const giveUp = new AbortController();
    const colo = this.#pQmp.waitForEvent(
      (e) =>
        e.event === "MIGRATION" && ["colo", "failed", "cancelled"].includes(String(e.data?.status)),
      COLO_TIMEOUT_MS,
      "MIGRATION status colo",
      giveUp.signal,
    );
    try {
      await this.#pQmp.execute("migrate", { uri: `tcp:127.0.0.1:${p.migration}` });
    } catch (error) {
      giveUp.abort();
      await colo.catch(() => {});
      throw error;
    }
    const reached = await colo;
    if (reached.data?.status !== "colo") {
      throw new Error(`migration to the secondary ended "${reached.data?.status}", not in COLO`);
    }
    note(`COLO after ${((performance.now() - booted) / 1000).toFixed(1)} s more (status colo)`);
    this.#countCheckpoints(this.#pQmp);
  }

  #countCheckpoints(qmp: Qmp): void {
    let stoppedAt: number | null = null;
    qmp.onEvent((e) => {
      if (e.event === "STOP") stoppedAt = e.at;
      else if (e.event === "RESUME" && stoppedAt !== null) {
        this.checkpoints.push({ at: stoppedAt, ms: (e.at - stoppedAt) * 1000 });
        stoppedAt = null;
      }
    });
  }

  /**
   * Lets held frames come to an end before the comparator is stopped: after the last request
   * a frame is either matched by the secondary's within moments, or held until it is older
   * than compare-timeout and the expiry scan asks for a checkpoint. So wait for both bounds,
   * then for a checkpoint under way to finish.
   */
  async settle(): Promise<void> {
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const last = this.primaryEvents.findLast((e) => e.event === "STOP" || e.event === "RESUME");
    if (last?.event === "STOP" && this.#pQmp) {
      await this.#pQmp.waitForEvent((e) => e.event === "RESUME", 10_000, "RESUME").catch(() => {});
    }
  }

  /** The primary's COLO state (`query-colo-status`). */
  async coloStatus(): Promise<{ mode: string; reason?: string }> {
    return await this.#pQmp!.execute("query-colo-status");
  }

  /**
   * Failover with the secondary lost (COLO-FT.txt "Primary Failover"): kill the secondary,
   * then `x-colo-lost-heartbeat` on the primary, which leaves COLO (`COLO_EXIT`) and runs alone.
   * With QEMU's comparator the primary's filters are deleted first, as COLO-FT.txt says (QEMU's
   * colo-compare would hold the primary's output for good); ours passes through after COLO_EXIT.
   */
  async failover(): Promise<QmpEvent> {
    const q = this.#pQmp!;
    const giveUp = new AbortController();
    // Waited for from before the kill: a checkpoint may find the secondary gone at once.
    const exit = q.waitForEvent((e) => e.event === "COLO_EXIT", 30_000, "COLO_EXIT", giveUp.signal);
    try {
      this.secondary!.kill("SIGKILL");
      await this.secondary!.status;
      if (this.options.mode === "qemu") {
        for (const id of ["m0", "redire0", "redire1"]) await q.execute("object-del", { id });
      }
      try {
        await q.execute("x-colo-lost-heartbeat");
      } catch (error) {
        // Refused when a checkpoint found the secondary gone first (COLO_EXIT reason "error").
        if (!q.events.some((e) => e.event === "COLO_EXIT")) throw error;
      }
    } catch (error) {
      giveUp.abort();
      await exit.catch(() => {});
      throw error;
    }
    return await exit;
  }

  /**
   * Stops everything started (comparator first, for its exit summary), closes the monitors.
   * Idempotent; resolves with the comparator's summary when there was one.
   */
  stop(): Promise<ComparatorSummary | null> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<ComparatorSummary | null> {
    let summary: ComparatorSummary | null = null;
    if (this.comparator) {
      await this.comparator.stop();
      const line = this.comparator.lines.find((l) => l.includes("event=summary"));
      const held = this.comparator.lines.find((l) => l.includes("event=held-at-exit"));
      if (line) {
        summary = {
          fields: logfmt(line),
          heldPrimary: held ? Number(logfmt(held).primary) : 0,
          requestLines: this.checkpointRequests,
        };
      }
    }
    await Promise.all([this.primary?.stop(), this.secondary?.stop()]);
    await Promise.all([this.#pQmp?.close(), this.#sQmp?.close()]);
    return summary;
  }
}
