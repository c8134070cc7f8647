/**
 * The QMP protocol of KVM COLO (SPEC 7b) as a pure state machine: bytes from the primary
 * QEMU's monitor in; commands, checkpoint decisions and COLO state changes out. No sockets and
 * no timers: {@linkcode QmpChannel} (qmp.ts) feeds it what it reads and the time, so every
 * branch is tested line by line.
 *
 * What QEMU 7.2 shows from outside (reference/colo-lab.md, "Checkpoints seen from outside"):
 * setting `x-checkpoint-delay`, even to its own value, starts a checkpoint at once; a
 * checkpoint is `STOP` (run state `colo`, then `MIGRATION_PASS` with the `events` capability)
 * and `RESUME` 40-100 ms later. A user's `stop`/`cont` looks the same except for the run state
 * (`paused`), so every `STOP` is followed by a `query-status`. Run state `colo` does not prove
 * that COLO runs: failover (`x-colo-lost-heartbeat`) stops the VM in that state too.
 *
 * Watching (`--qmp-secondary`): the same conversation with the secondary QEMU's monitor, which
 * only reports its `STOP`s and `RESUME`s ({@linkcode VmStateEvents}): after `qmp_capabilities`
 * nothing is sent, nothing is polled, no checkpoint is ever decided there.
 *
 * @module
 */

import { type Fields, type Logger, ThrottledWarning } from "../log.ts";
import type { ChannelEvents } from "./channel.ts";

/** A line longer than this (1 MiB) ends the connection (SPEC 8: every resource bounded). */
export const MAX_LINE_BYTES = 1 << 20;
/** QEMU's default `x-checkpoint-delay` (ms), for a monitor that does not report it. */
export const DEFAULT_CHECKPOINT_DELAY_MS = 20_000;
/** While COLO is not active, its state is asked for this often (ms). */
export const POLL_INTERVAL_MS = 1000;
/** A command unanswered this long (ms) means the monitor hangs: reconnect. */
export const REPLY_TIMEOUT_MS = 20_000;
/** Commands waiting for a reply; more means the peer does not answer: reconnect. */
export const MAX_PENDING_COMMANDS = 65536;
/** Repeated protocol oddities are logged once, then summarised this often (ms). */
export const SUMMARY_INTERVAL_MS = 60_000;
/** Classes of oddities kept apart (names come from the peer); the rest count as one. */
export const MAX_NOTE_CLASSES = 256;
/** COLO transitions of one direction logged per interval; the rest are counted (SPEC 8). */
export const COLO_LOG_BURST = 5;
/** The interval of {@linkcode COLO_LOG_BURST} (ms). */
export const COLO_LOG_INTERVAL_MS = 10_000;

/** What the session asks of the connection around it, besides {@linkcode ChannelEvents}. */
export interface QmpSessionSink extends ChannelEvents {
  /** Writes one command: a JSON object, without the line end. */
  send(command: string): void;
  /** Ends the connection; the channel reconnects (or re-accepts) as usual. */
  drop(reason: string): void;
}

/** What a watching session reports: the VM's own stops and resumes, as they are read. */
export interface VmStateEvents {
  /** `STOP`: the VM stopped (a checkpoint begins on the secondary, or a user's stop). */
  stopped(): void;
  /** `RESUME`: the VM runs again; what it sends from now on is the new epoch's. */
  resumed(): void;
}

/** The commands this session sends. */
export type QmpCommand =
  | "qmp_capabilities"
  | "query-migrate-parameters"
  | "migrate-set-parameters"
  | "query-status"
  | "query-colo-status"
  | "query-migrate";

/** Whether COLO runs, as far as the monitor told us; kept across reconnects. */
export type ColoState = "unknown" | "active" | "inactive";

/** One `STOP` and what is known about it. */
interface Stop {
  /** Run state from the `query-status` sent after it; null while unanswered. */
  runState: string | null;
  /** `MIGRATION_PASS` came before `RESUME`: a checkpoint. */
  pass: boolean;
  /** Its `RESUME` was read. */
  resumed: boolean;
  /** Classified (as a checkpoint or not): nothing more to do. */
  decided: boolean;
}

interface Pending {
  command: QmpCommand;
  sentAt: number;
  /** The `STOP` this `query-status` classifies. */
  stop: Stop | null;
  /** Part of a checkpoint request. */
  request: boolean;
}

type Phase = "detached" | "greeting" | "negotiating" | "ready";

type Json = Record<string, unknown>;

type NoteLevel = "warn" | "error" | "info" | "debug";

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The text of a field for the log, bounded. */
function text(v: unknown): string {
  let s: string;
  try {
    s = typeof v === "string" ? v : JSON.stringify(v) ?? String(v);
  } catch {
    // A value nested deeper than the stack (JSON.parse takes any depth): the peer's doing.
    return "(a value too deeply nested to show)";
  }
  return s.length > 200 ? `${s.slice(0, 200)}...` : s;
}

const decoder = new TextDecoder();

/** One QMP monitor conversation, reused across reconnects. */
export class QmpSession {
  readonly #sink: QmpSessionSink;
  readonly #log: Logger;
  /** Watching the secondary's monitor: report stops and resumes, send nothing but capabilities. */
  readonly #watch: VmStateEvents | null;
  #phase: Phase = "detached";
  /** Set once the session asked for the connection to end: ignore the rest. */
  #dropped = false;
  /**
   * When the session attached (ms) (-0: a double from the start; see src/comparator.ts,
   * #trimCheckedAt).
   */
  #attachedAt = -0;
  #nextId = 1;
  readonly #pending = new Map<number, Pending>();
  /** Bytes of the line not yet ended: `#partialBytes` of `#partial`. */
  #partial = new Uint8Array(0);
  #partialBytes = 0;
  #colo: ColoState = "unknown";
  /**
   * `COLO_EXIT` was seen and COLO was not seen leaving since. QEMU 7.2's primary goes on
   * reporting migration status `colo` and mode `primary` after `COLO_EXIT` until the operator
   * fails over (`x-colo-lost-heartbeat`): its COLO thread waits for that (measured, colo-lab).
   * Meanwhile a poll's "in COLO" is stale and does not end the passthrough.
   */
  #afterExit = false;
  /** `x-checkpoint-delay` as last read (ms). */
  #delay: number | null = null;
  #runState: string | null = null;
  /** Between `STOP` and `RESUME`. */
  #stopped: Stop | null = null;
  /** A checkpoint request is in flight (its query or its set). */
  #requesting = false;
  #pollWith: "query-colo-status" | "query-migrate" = "query-colo-status";
  #polling = false;
  #lastPoll = -Infinity;
  /** Oddities by class: logged once, then counted. */
  readonly #repeats = new Map<string, { level: NoteLevel; count: number }>();
  /**
   * When the repeats were last summarised (ms) (-0: a double from the start; see src/comparator.ts,
   * #trimCheckedAt).
   */
  #summarisedAt = -0;
  /** The time last passed in (ms), for the throttled lines below. */
  #now = -0;
  /** COLO flapping (COLO_EXIT, then active again) must not write two lines a flap. */
  readonly #inactiveLog: ThrottledWarning;
  readonly #activeLog: ThrottledWarning;

  /** `watch`: a watching session (`--qmp-secondary`) that reports there, see the module. */
  constructor(sink: QmpSessionSink, log: Logger, watch: VmStateEvents | null = null) {
    this.#sink = sink;
    this.#log = log;
    this.#watch = watch;
    const now = () => this.#now;
    const options = { burst: COLO_LOG_BURST };
    this.#inactiveLog = new ThrottledWarning(
      log,
      "colo-inactive",
      COLO_LOG_INTERVAL_MS,
      now,
      options,
    );
    this.#activeLog = new ThrottledWarning(log, "colo-active", COLO_LOG_INTERVAL_MS, now, options);
  }

  /** True once `qmp_capabilities` was accepted: requests can be sent. */
  get ready(): boolean {
    return this.#phase === "ready" && !this.#dropped;
  }

  /** COLO's state as last learned. */
  get colo(): ColoState {
    return this.#colo;
  }

  /** `x-checkpoint-delay` as last read, or null. */
  get checkpointDelay(): number | null {
    return this.#delay;
  }

  /** The run state as last read (`running`, `colo`, `paused`, ...), or null. */
  get runState(): string | null {
    return this.#runState;
  }

  /** Commands waiting for their reply. */
  get pendingCommands(): number {
    return this.#pending.size;
  }

  /** A new peer is connected: wait for its greeting. */
  attach(now: number): void {
    this.#phase = "greeting";
    this.#dropped = false;
    this.#attachedAt = now;
  }

  /**
   * The peer is gone. What it left unanswered is forgotten; the COLO state is kept. What was
   * counted and not logged is summarised when its interval is over, as while connected, or now
   * when `final` (the channel is closing): a peer that comes back at once must not make a
   * summary each time (SPEC 8).
   */
  detach(final = false): void {
    const wasReady = this.#phase === "ready";
    this.#phase = "detached";
    // A stop whose end (or whose run state) we did not see is no checkpoint we can vouch for.
    this.#pending.clear();
    const stopped = this.#stopped !== null;
    this.#stopped = null;
    this.#partial = new Uint8Array(0);
    this.#partialBytes = 0;
    this.#requesting = false;
    this.#polling = false;
    this.#lastPoll = -Infinity;
    if (final) this.flushLogs();
    // Without the monitor, a resume would go unseen: the inputs are paused as usual again.
    if (stopped) this.#sink.vmStopped(false);
    if (wasReady) this.#sink.peer(false);
  }

  /** Summarises everything counted and not logged yet (the channel is closing). */
  flushLogs(): void {
    this.#summarise();
    this.#inactiveLog.flush(true);
    this.#activeLog.flush(true);
  }

  /** Bytes read from the monitor. Lines end with `\n` (QEMU writes `\r\n`). */
  push(chunk: Uint8Array, now: number): void {
    let start = 0;
    while (!this.#dropped && this.#phase !== "detached") {
      const nl = chunk.indexOf(0x0a, start);
      const end = nl < 0 ? chunk.length : nl;
      if (this.#partialBytes + end - start > MAX_LINE_BYTES) {
        this.#drop(`a line longer than ${MAX_LINE_BYTES} bytes`);
        return;
      }
      if (nl < 0) {
        this.#keep(chunk.subarray(start, end));
        return;
      }
      let line = chunk.subarray(start, nl);
      if (this.#partialBytes > 0) {
        this.#keep(line);
        line = this.#partial.subarray(0, this.#partialBytes);
        this.#partialBytes = 0;
      }
      this.line(decoder.decode(line), now);
      start = nl + 1;
    }
  }

  /** Appends to the unfinished line; its buffer doubles, up to the line bound. */
  #keep(bytes: Uint8Array): void {
    const need = this.#partialBytes + bytes.length;
    if (need > this.#partial.length) {
      const grown = new Uint8Array(
        Math.min(Math.max(need, 2 * this.#partial.length, 4096), MAX_LINE_BYTES),
      );
      grown.set(this.#partial.subarray(0, this.#partialBytes));
      this.#partial = grown;
    }
    this.#partial.set(bytes, this.#partialBytes);
    this.#partialBytes = need;
  }

  /** One complete line from the monitor. */
  line(raw: string, now: number): void {
    if (this.#dropped || this.#phase === "detached") return;
    this.#now = now;
    const t = raw.trim();
    if (t === "") return;
    let msg: unknown;
    try {
      msg = JSON.parse(t);
    } catch {
      msg = undefined;
    }
    if (!isObject(msg)) {
      if (this.#phase === "greeting") {
        // `-mon ...,mode=control,pretty=on` spreads each JSON value over several lines.
        this.#drop(
          t === "{"
            ? "the QMP monitor writes pretty=on JSON over several lines; give the comparator one with pretty=off (-qmp unix:PATH,server=on,wait=off)"
            : "no QMP greeting: the peer is not a QMP monitor",
        );
        return;
      }
      this.#note("garbage", "warn", "qmp-garbage", { line: text(t) });
      return;
    }
    if (this.#phase === "greeting") {
      if (!("QMP" in msg)) {
        this.#drop("no QMP greeting: the peer is not a QMP monitor");
        return;
      }
      const version = isObject(msg.QMP) && isObject(msg.QMP.version) ? msg.QMP.version : null;
      const q = version && isObject(version.qemu) ? version.qemu : null;
      this.#log.info("qmp-greeting", {
        monitor: this.#monitor,
        qemu: q ? `${text(q.major)}.${text(q.minor)}.${text(q.micro)}` : "-",
        package: version ? text(version.package) : "-",
      });
      this.#phase = "negotiating";
      this.#send("qmp_capabilities", undefined, now);
      return;
    }
    if (typeof msg.event === "string") {
      this.#event(msg.event, isObject(msg.data) ? msg.data : {}, now);
    } else if ("return" in msg || "error" in msg) {
      this.#reply(msg, now);
    } else {
      this.#note("unknown-message", "warn", "qmp-unknown-message", { line: text(t) });
    }
  }

  /**
   * Requests a checkpoint (SPEC 7b): reads `x-checkpoint-delay` fresh, then sets it to that
   * value (the operator may have changed it; a stale value is never written back). False
   * while no monitor is ready; true also when a request is already in flight.
   */
  request(now: number): boolean {
    if (!this.ready || this.#watch !== null) return false;
    if (this.#requesting) return true;
    this.#requesting = true;
    this.#send("query-migrate-parameters", undefined, now, null, true);
    return true;
  }

  /** Time passes: poll COLO's state while it is not active, notice a monitor that hangs. */
  tick(now: number): void {
    if (this.#dropped || this.#phase === "detached") return;
    this.#now = now;
    this.#inactiveLog.flush();
    this.#activeLog.flush();
    if (this.#phase !== "ready") {
      if (now - this.#attachedAt > REPLY_TIMEOUT_MS) {
        this.#drop(`no QMP greeting and capabilities within ${REPLY_TIMEOUT_MS} ms`);
      }
      return;
    }
    for (const p of this.#pending.values()) {
      // Oldest first (a Map keeps insertion order).
      if (now - p.sentAt > REPLY_TIMEOUT_MS) {
        this.#drop(`no reply to ${p.command} within ${REPLY_TIMEOUT_MS} ms`);
        return;
      }
      break;
    }
    if (
      this.#watch === null && this.#colo !== "active" && !this.#polling &&
      now - this.#lastPoll >= POLL_INTERVAL_MS
    ) {
      this.#poll(now);
    }
    if (now - this.#summarisedAt >= SUMMARY_INTERVAL_MS) {
      this.#summarisedAt = now;
      this.#summarise();
    }
  }

  #poll(now: number): void {
    this.#polling = true;
    this.#lastPoll = now;
    this.#send(this.#pollWith, undefined, now);
  }

  #send(
    command: QmpCommand,
    args: Json | undefined,
    now: number,
    stop: Stop | null = null,
    request = false,
  ): void {
    if (this.#pending.size >= MAX_PENDING_COMMANDS) {
      this.#drop(`${MAX_PENDING_COMMANDS} commands unanswered`);
      return;
    }
    const id = this.#nextId++;
    this.#pending.set(id, { command, sentAt: now, stop, request });
    this.#sink.send(
      JSON.stringify(
        args === undefined ? { execute: command, id } : {
          execute: command,
          arguments: args,
          id,
        },
      ),
    );
  }

  #drop(reason: string): void {
    if (this.#dropped) return;
    this.#dropped = true;
    this.#sink.drop(reason);
  }

  // Events.

  #event(name: string, data: Json, now: number): void {
    const watch = this.#watch;
    if (watch !== null) {
      if (name === "STOP") watch.stopped();
      else if (name === "RESUME") watch.resumed();
      return;
    }
    switch (name) {
      case "STOP":
        if (this.#stopped !== null) return; // a repeated STOP adds nothing
        this.#stopped = { runState: null, pass: false, resumed: false, decided: false };
        this.#send("query-status", undefined, now, this.#stopped);
        this.#sink.vmStopped(true);
        return;
      case "MIGRATION_PASS":
        if (this.#stopped !== null) this.#stopped.pass = true;
        return;
      case "RESUME": {
        const s = this.#stopped;
        if (s === null) return; // resumed from a stop seen before we connected
        this.#stopped = null;
        s.resumed = true;
        this.#resumed(s);
        // After the flush: what the inputs hold from now on is the new epoch's.
        this.#sink.vmStopped(false);
        return;
      }
      case "COLO_EXIT":
        this.#afterExit = true;
        this.#setColo(
          false,
          `COLO_EXIT mode=${text(data.mode ?? "-")} reason=${text(data.reason ?? "-")}`,
        );
        return;
      case "MIGRATION":
        // Any migration state change is news: COLO entered again, or left for good.
        this.#afterExit = false;
        if (data.status === "colo") this.#setColo(true, "MIGRATION status=colo");
        else this.#log.debug("qmp-migration", { status: text(data.status ?? "-") });
        return;
      default:
        // `#note` bounds the class it keeps; the name shown is bounded here.
        this.#note(`event:${name}`, "debug", "qmp-event-ignored", { name: text(name) });
    }
  }

  /** A `RESUME` ended the stop `s`: a checkpoint's (flush) or not, or decided later. */
  #resumed(s: Stop): void {
    if (s.runState === null && !s.pass) return; // decided when its query-status is answered
    s.decided = true;
    // A reply without a run state says nothing against a checkpoint: count it unless COLO is
    // known to be off (a monitor that answers `{}` must not make checkpoints vanish).
    if (s.pass || s.runState === "colo") this.#checkpointDone("resume");
    else if (s.runState === "unknown" && this.#colo !== "inactive") {
      this.#checkpointDone("resume run_state=unknown");
    } else this.#log.debug("qmp-stop-not-checkpoint", { run_state: s.runState });
  }

  #checkpointDone(how: string): void {
    this.#log.debug("qmp-checkpoint-seen", { decided_on: how });
    // Read after RESUME: the VM runs again (the stop was told, and the inputs read on).
    this.#sink.checkpointDone(false);
  }

  /**
   * A `STOP` resumed before its `query-status` was answered, decided when the answer comes.
   * `colo`: a checkpoint. `paused`: a user's stop. Anything else (`running`: the query ran
   * after the resume, the monitor was busy through the whole stop, as it is while a
   * checkpoint holds QEMU's big lock) counts as a checkpoint unless COLO is known to be off.
   */
  #decideLate(s: Stop): void {
    s.decided = true;
    if (s.runState === "colo") this.#checkpointDone("late-reply");
    else if (s.runState !== "paused" && this.#colo !== "inactive") {
      this.#checkpointDone(`late-reply run_state=${s.runState}`);
    } else this.#log.debug("qmp-stop-not-checkpoint", { run_state: s.runState });
  }

  /** SPEC 7b: COLO ended or is active (again); both transitions at warn. */
  #setColo(active: boolean, why: string): void {
    const before = this.#colo;
    if (active) {
      this.#colo = "active";
      if (before === "inactive") {
        this.#activeLog.note({ channel: "qmp", seen: why, action: "comparing again" });
        this.#sink.coloActive();
      } else if (before === "unknown") this.#log.info("colo-active", { channel: "qmp", seen: why });
      return;
    }
    if (before === "inactive") return;
    this.#colo = "inactive";
    this.#inactiveLog.note({
      channel: "qmp",
      seen: why,
      action: "held frames released; primary passes through uncompared until COLO is active",
    });
    this.#sink.coloExit(why);
  }

  /** What a poll said. After `COLO_EXIT`, "in COLO" counts once COLO was seen leaving. */
  #polled(inColo: boolean, why: string): void {
    if (!inColo) this.#afterExit = false;
    else if (this.#afterExit) {
      this.#note("colo-stale", "info", "qmp-colo-stale", {
        seen: why,
        note: "QEMU reports COLO until failover (x-colo-lost-heartbeat) or a new migration; " +
          "passing through meanwhile",
      });
      return;
    }
    this.#setColo(inColo, why);
  }

  // Replies.

  #reply(msg: Json, now: number): void {
    const id = msg.id;
    const p = typeof id === "number" ? this.#pending.get(id) : undefined;
    if (p === undefined) {
      this.#note("unexpected-reply", "warn", "qmp-unexpected-reply", { id: text(id ?? "-") });
      return;
    }
    this.#pending.delete(id as number);
    if ("error" in msg) this.#failed(p, isObject(msg.error) ? msg.error : {}, now);
    else this.#returned(p, isObject(msg.return) ? msg.return : {}, now);
  }

  #failed(p: Pending, error: Json, now: number): void {
    // The class is the peer's word: shown and kept in bounded form, as every such value.
    const cls = typeof error.class === "string" ? text(error.class) : "unknown";
    this.#note(`error:${p.command}:${cls}`, "warn", "qmp-error", {
      command: p.command,
      class: cls,
      desc: text(error.desc ?? "-"),
    });
    switch (p.command) {
      case "qmp_capabilities":
        this.#drop(`qmp_capabilities refused: ${text(error.desc ?? cls)}`);
        return;
      case "query-migrate-parameters":
      case "migrate-set-parameters":
        // The request is lost; the comparator asks again after compare-timeout.
        if (p.request) this.#requesting = false;
        return;
      case "query-status":
        if (p.stop !== null) {
          p.stop.runState = "unknown";
          if (p.stop.resumed && !p.stop.decided) this.#decideLate(p.stop);
        }
        return;
      case "query-colo-status":
        this.#polling = false;
        if (cls === "CommandNotFound") {
          // A QEMU without query-colo-status (before 3.1): the migration status says as much.
          this.#pollWith = "query-migrate";
          this.#poll(now);
        }
        return;
      case "query-migrate":
        this.#polling = false;
        return;
    }
  }

  #returned(p: Pending, r: Json, now: number): void {
    switch (p.command) {
      case "qmp_capabilities":
        this.#phase = "ready";
        this.#log.info("qmp-ready", { monitor: this.#monitor });
        this.#sink.peer(true);
        if (this.#watch !== null) return;
        this.#send("query-migrate-parameters", undefined, now);
        this.#send("query-status", undefined, now);
        this.#polling = true;
        this.#lastPoll = now;
        this.#send(this.#pollWith, undefined, now);
        return;
      case "query-migrate-parameters": {
        let delay = r["x-checkpoint-delay"];
        if (
          typeof delay !== "number" || !Number.isInteger(delay) || delay < 0 ||
          delay > 0xffffffff
        ) {
          // Not a QEMU that runs COLO as 7.2 does (its value is a uint32); the request still goes
          // out, with the value last read or QEMU's default, so that a checkpoint is asked for
          // all the same.
          delay = this.#delay ?? DEFAULT_CHECKPOINT_DELAY_MS;
          this.#note("no-checkpoint-delay", "warn", "qmp-no-checkpoint-delay", {
            note: `this monitor reports no x-checkpoint-delay; requests set ${delay} ms`,
          });
          if (p.request) {
            this.#send("migrate-set-parameters", { "x-checkpoint-delay": delay }, now, null, true);
          }
          return;
        }
        if (delay !== this.#delay) {
          this.#log.info("qmp-checkpoint-delay", { ms: delay, previous: this.#delay });
        }
        this.#delay = delay;
        if (p.request) {
          this.#send("migrate-set-parameters", { "x-checkpoint-delay": delay }, now, null, true);
        }
        return;
      }
      case "migrate-set-parameters":
        this.#requesting = false;
        this.#log.debug("qmp-checkpoint-requested", { x_checkpoint_delay: this.#delay });
        return;
      case "query-status": {
        const state = typeof r.status === "string" ? r.status : "unknown";
        this.#runState = state;
        if (p.stop !== null) {
          p.stop.runState = state;
          if (p.stop.resumed && !p.stop.decided) this.#decideLate(p.stop);
        } else if (state === "colo" && this.#stopped === null) {
          // Connected in the middle of a checkpoint: its RESUME ends it.
          this.#stopped = { runState: state, pass: false, resumed: false, decided: false };
        }
        return;
      }
      case "query-colo-status": {
        this.#polling = false;
        const mode = r.mode;
        if (mode === "primary") this.#polled(true, "query-colo-status mode=primary");
        else if (typeof mode !== "string") {
          // Not QEMU's reply shape: only an explicit mode may switch comparing off.
          this.#note("colo-status-shape", "warn", "qmp-unexpected-reply", {
            command: "query-colo-status",
            note: "no mode in the reply; COLO's state left as it was",
          });
        } else if (mode === "secondary") {
          this.#note("secondary", "error", "qmp-wrong-peer", {
            note: "this monitor is the secondary QEMU's; give --qmp the primary's monitor",
          });
        } else {
          this.#polled(
            false,
            `query-colo-status mode=${text(mode ?? "-")} last-mode=${
              text(r["last-mode"] ?? "-")
            } reason=${text(r.reason ?? "-")}`,
          );
        }
        return;
      }
      case "query-migrate": {
        this.#polling = false;
        const status = typeof r.status === "string" ? r.status : "none";
        this.#polled(status === "colo", `query-migrate status=${status}`);
        return;
      }
    }
  }

  /** Whose monitor this is, for the log. */
  get #monitor(): string {
    return this.#watch === null ? "primary" : "secondary";
  }

  // Logged once per class, then summarised (SPEC 8).

  #note(key: string, level: NoteLevel, event: string, fields: Fields): void {
    key = text(key);
    if (this.#repeats.size >= MAX_NOTE_CLASSES && !this.#repeats.has(key)) key = "other";
    const seen = this.#repeats.get(key);
    if (seen === undefined) {
      this.#repeats.set(key, { level, count: 0 });
      this.#log.log(level, event, {
        ...fields,
        note: fields.note ?? "further ones are counted and summarised",
      });
      return;
    }
    seen.count++;
  }

  #summarise(): void {
    for (const [key, r] of this.#repeats) {
      if (r.count === 0) continue;
      this.#log.log(r.level === "debug" ? "debug" : "info", "qmp-repeated", {
        class: key,
        count: r.count,
      });
      r.count = 0;
    }
  }
}
