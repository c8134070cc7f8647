/**
 * `--monitor ADDR` (SPEC 12): a QMP-compatible server. Each client gets the greeting, must
 * negotiate with `qmp_capabilities`, then may `execute` commands (`id` echoed) and receives
 * events with timestamps. Several clients at once; a client that sends garbage gets a QMP
 * error object, one that does not read is cut off once 1 MiB of output waits for it.
 *
 * @module
 */

import type { ComparatorView, InsideEvent } from "../inside/view.ts";
import { type Logger, ThrottledWarning } from "../log.ts";
import { VERSION } from "../version.ts";
import type { Address } from "../wire/address.ts";
import { ClientListener } from "../wire/client_listener.ts";
import { DEFAULT_SOCKET_MODE } from "../wire/plain.ts";
import { writeAll } from "../wire/transport.ts";
import { JsonSplitter, SplitError, TextTooLong } from "./json_splitter.ts";
import { QmpError, QomTree } from "./qom.ts";

/** Output waiting for one client beyond which it is disconnected (SPEC 8). */
export const MAX_PENDING_OUTPUT = 1024 * 1024;
/** Clients served at once; past them a new one takes a silent one's place, or is closed. */
export const MAX_CLIENTS = 16;
/** A class of dropped frames gives at most one `COLO_COMPARE_DROP` per this period. */
export const DROP_EVENT_INTERVAL_MS = 1000;
/** `qom-set`s logged per interval; the rest are counted in the next line (SPEC 8). */
export const SET_LOG_BURST = 10;
/** The interval of {@linkcode SET_LOG_BURST} (ms). */
export const SET_LOG_INTERVAL_MS = 10_000;
/**
 * Clients connecting and leaving: at most this many lines of each per
 * {@linkcode SET_LOG_INTERVAL_MS}, then a count (a connect loop must not flood the log, SPEC 8).
 */
export const CLIENT_LOG_BURST = 20;
/** Bad input of one class is logged once per this interval (ms), then summarised. */
export const BAD_INPUT_LOG_INTERVAL_MS = 60_000;

/** Classes of bad input, each logged once per interval. */
type BadInput = "parse-error" | "not-an-object" | "nesting";

const encoder = new TextEncoder();

/** The QEMU version whose QMP dialect this speaks. */
const QEMU_VERSION = { major: 7, minor: 2, micro: 0 };

type Json = unknown;
type Command = (args: Record<string, Json>) => Json;

interface DropClass {
  pending: number;
  sentAt: number;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/** One connected QMP client. */
class Client {
  readonly peer: string;
  negotiated = false;
  #conn: Deno.Conn;
  #queue: Uint8Array[] = [];
  #pending = 0;
  #writing = false;
  #closed = false;
  #onOverflow: (c: Client) => void;

  constructor(conn: Deno.Conn, peer: string, onOverflow: (c: Client) => void) {
    this.#conn = conn;
    this.peer = peer;
    this.#onOverflow = onOverflow;
  }

  get conn(): Deno.Conn {
    return this.#conn;
  }

  send(message: Json): void {
    if (this.#closed) return;
    const bytes = encoder.encode(JSON.stringify(message) + "\r\n");
    this.#pending += bytes.length;
    if (this.#pending > MAX_PENDING_OUTPUT) {
      this.#onOverflow(this);
      this.close();
      return;
    }
    this.#queue.push(bytes);
    if (!this.#writing) this.#drain();
  }

  async #drain(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0 && !this.#closed) {
        const chunk = this.#queue.shift()!;
        await writeAll(this.#conn, chunk);
        this.#pending -= chunk.length;
      }
    } catch {
      this.close();
    } finally {
      this.#writing = false;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue = [];
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }
}

function timestamp(): { seconds: number; microseconds: number } {
  const us = Math.floor((performance.timeOrigin + performance.now()) * 1000);
  return { seconds: Math.floor(us / 1e6), microseconds: us % 1e6 };
}

function isObject(v: Json): v is Record<string, Json> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function stringArg(args: Record<string, Json>, name: string): string {
  const v = args[name];
  if (v === undefined) throw new QmpError("GenericError", `Parameter '${name}' is missing`);
  if (typeof v !== "string") {
    throw new QmpError("GenericError", `Invalid parameter type for '${name}', expected: string`);
  }
  return v;
}

function onlyArgs(args: Record<string, Json>, names: string[]): void {
  for (const k of Object.keys(args)) {
    if (!names.includes(k)) throw new QmpError("GenericError", `Parameter '${k}' is unexpected`);
  }
}

/** The QMP-compatible monitor. */
export class MonitorServer {
  readonly #view: ComparatorView;
  readonly #log: Logger;
  readonly #qom: QomTree;
  readonly #commands: Record<string, Command>;
  readonly #clients = new Set<Client>();
  readonly #drops = new Map<string, DropClass>();
  #listener: ClientListener | null = null;
  #unsubscribe: (() => void) | null = null;
  #closed = false;
  #overflowLogged = false;
  readonly #sets: ThrottledWarning;
  readonly #connectedLines: ThrottledWarning;
  readonly #disconnectedLines: ThrottledWarning;
  readonly #badInputs = new Map<BadInput, ThrottledWarning>();
  /** Logs the counts of what was not logged, once their interval is over. */
  #summaryTimer: ReturnType<typeof setTimeout> | undefined;
  #summaryAt = 0;

  constructor(view: ComparatorView, id: string, log: Logger) {
    this.#view = view;
    this.#log = log;
    this.#qom = new QomTree(id, view.settings);
    this.#sets = new ThrottledWarning(log, "monitor-set", SET_LOG_INTERVAL_MS, undefined, {
      level: "info",
      burst: SET_LOG_BURST,
    });
    const clientLines = (event: string) =>
      new ThrottledWarning(log, event, SET_LOG_INTERVAL_MS, undefined, {
        level: "info",
        burst: CLIENT_LOG_BURST,
        overflow: "debug",
      });
    this.#connectedLines = clientLines("monitor-client-connected");
    this.#disconnectedLines = clientLines("monitor-client-disconnected");
    this.#commands = {
      "query-version": () => ({ qemu: QEMU_VERSION, package: `colo-compare ${VERSION}` }),
      "query-commands": () => Object.keys(this.#commands).map((name) => ({ name })),
      "qom-list": (a) => {
        onlyArgs(a, ["path"]);
        return this.#qom.list(stringArg(a, "path"));
      },
      "qom-get": (a) => {
        onlyArgs(a, ["path", "property"]);
        return this.#qom.get(stringArg(a, "path"), stringArg(a, "property"));
      },
      "qom-set": (a) => {
        onlyArgs(a, ["path", "property", "value"]);
        if (!("value" in a)) throw new QmpError("GenericError", "Parameter 'value' is missing");
        const path = stringArg(a, "path");
        const property = stringArg(a, "property");
        this.#qom.set(path, property, a.value);
        this.#throttled(this.#sets, { property, value: a.value as number });
        return {};
      },
      "query-colo-compare": (a) => {
        onlyArgs(a, []);
        return this.#query();
      },
      "colo-compare-checkpoint-done": (a) => {
        onlyArgs(a, []);
        this.#view.checkpointDone();
        return { epoch: this.#view.snapshot().epoch };
      },
    };
  }

  /** Where it listens (port 0 resolved). */
  get boundText(): string {
    return this.#listener?.boundText ?? "-";
  }

  /**
   * Listens (a `unix-listen:` socket created with `socketMode`, as the endpoints do); throws a
   * `StartupError` naming `--monitor` when the address cannot be used.
   */
  async listen(address: Address, socketMode = DEFAULT_SOCKET_MODE): Promise<void> {
    this.#listener = await ClientListener.open("--monitor", address, socketMode);
    this.#log.info("listening", { endpoint: "monitor", address: this.boundText });
    this.#unsubscribe = this.#view.subscribe((e) => this.#onEvent(e));
    this.#listener.serve(
      "monitor",
      MAX_CLIENTS,
      (conn, peer) => this.#serve(conn, peer),
      this.#log,
      (served) => this.#stalestSilent(served),
    );
  }

  /**
   * With every slot taken, the longest-connected client that has not negotiated
   * (`qmp_capabilities`) gives way to a new one: connections that never speak QMP cannot keep
   * the operator out. Clients that negotiated keep their slots, as QEMU's one client does.
   */
  #stalestSilent(served: ReadonlyMap<Deno.Conn, number>): Deno.Conn | null {
    for (const c of this.#clients) if (!c.negotiated && served.has(c.conn)) return c.conn;
    return null;
  }

  async #serve(conn: Deno.Conn, peer: string): Promise<void> {
    const client = new Client(conn, peer, (c) => {
      // Logged once; later ones are the same story.
      if (!this.#overflowLogged) {
        this.#overflowLogged = true;
        this.#log.warn("monitor-client-cut-off", {
          peer: c.peer,
          note: `more than ${MAX_PENDING_OUTPUT} bytes of output waited for it`,
        });
      }
    });
    this.#clients.add(client);
    this.#throttled(this.#connectedLines, { peer });
    client.send({
      QMP: {
        version: { qemu: QEMU_VERSION, package: `colo-compare ${VERSION}` },
        capabilities: [],
      },
    });
    const splitter = new JsonSplitter();
    const decoder = new TextDecoder();
    // Commands are short; a long one comes in several reads.
    const buf = new Uint8Array(4 * 1024);
    try {
      while (true) {
        const n = await conn.read(buf);
        if (n === null) break;
        let texts: (string | SplitError)[];
        try {
          texts = splitter.push(decoder.decode(buf.subarray(0, n), { stream: true }));
        } catch (error) {
          if (!(error instanceof TextTooLong)) throw error;
          client.send({
            error: { class: "GenericError", desc: `JSON parse error, ${error.message}` },
          });
          break;
        }
        for (const t of texts) {
          if (t instanceof SplitError) {
            this.#noteBadInput(client, "nesting");
            client.send({ error: { class: "GenericError", desc: t.desc } });
          } else this.#handle(client, t);
        }
      }
    } catch {
      // reset by peer, or closed by us: gone all the same
    } finally {
      this.#clients.delete(client);
      client.close();
      this.#throttled(this.#disconnectedLines, { peer });
    }
  }

  #handle(client: Client, text: string): void {
    let message: Json;
    try {
      message = JSON.parse(text);
    } catch (error) {
      this.#noteBadInput(client, "parse-error");
      client.send({
        error: { class: "GenericError", desc: `JSON parse error, ${(error as Error).message}` },
      });
      return;
    }
    if (!isObject(message)) {
      this.#noteBadInput(client, "not-an-object");
      client.send({ error: { class: "GenericError", desc: "QMP input must be a JSON object" } });
      return;
    }
    const reply = (body: { return: Json } | { error: { class: string; desc: string } }) =>
      client.send("id" in message ? { ...body, id: message.id } : body);
    try {
      for (const k of Object.keys(message)) {
        if (k !== "execute" && k !== "arguments" && k !== "id") {
          throw new QmpError("GenericError", `QMP input member '${k}' is unexpected`);
        }
      }
      const name = message.execute;
      if (name === undefined) {
        throw new QmpError("GenericError", "QMP input lacks member 'execute'");
      }
      if (typeof name !== "string") {
        throw new QmpError("GenericError", "QMP input member 'execute' must be a string");
      }
      const args = message.arguments ?? {};
      if (!isObject(args)) {
        throw new QmpError("GenericError", "QMP input member 'arguments' must be an object");
      }
      if (name === "qmp_capabilities") {
        if (client.negotiated) {
          throw new QmpError(
            "CommandNotFound",
            "Capabilities negotiation is already complete, command ignored",
          );
        }
        client.negotiated = true;
        reply({ return: {} });
        return;
      }
      if (!client.negotiated) {
        throw new QmpError(
          "CommandNotFound",
          "Expecting capabilities negotiation with 'qmp_capabilities'",
        );
      }
      // Own commands only: "toString" or "__proto__" is not found, not called.
      const command = Object.hasOwn(this.#commands, name) ? this.#commands[name] : undefined;
      if (command === undefined) {
        throw new QmpError("CommandNotFound", `The command ${name} has not been found`);
      }
      reply({ return: command(args) });
    } catch (error) {
      if (error instanceof QmpError) {
        reply({ error: { class: error.errorClass, desc: error.message } });
      } else {
        this.#log.error("monitor-command-failed", {
          error: String(error),
          stack: (error as Error)?.stack,
        });
        reply({ error: { class: "GenericError", desc: `internal error: ${String(error)}` } });
      }
    }
  }

  /** Bad input is answered with a QMP error; logged once per class and interval (SPEC 8). */
  #noteBadInput(client: Client, kind: BadInput): void {
    let w = this.#badInputs.get(kind);
    if (w === undefined) {
      w = new ThrottledWarning(
        this.#log,
        "monitor-bad-input",
        BAD_INPUT_LOG_INTERVAL_MS,
        undefined,
        {
          key: { class: kind },
        },
      );
      this.#badInputs.set(kind, w);
    }
    this.#throttled(w, { peer: client.peer, note: "answered with a QMP error" });
  }

  /** Notes one occurrence; what is not logged is summarised when its interval is over. */
  #throttled(w: ThrottledWarning, fields: Record<string, string | number>): void {
    if (w.note(fields) || this.#closed) return;
    this.#schedule(w.summaryDueInMs);
  }

  /** Arms the summary timer to fire in `ms`, unless it fires sooner already. */
  #schedule(ms: number): void {
    const at = performance.now() + ms;
    if (this.#summaryTimer !== undefined && this.#summaryAt <= at) return;
    clearTimeout(this.#summaryTimer);
    this.#summaryAt = at;
    this.#summaryTimer = setTimeout(() => this.#summarise(), ms);
  }

  #throttlers(): ThrottledWarning[] {
    return [this.#sets, this.#connectedLines, this.#disconnectedLines, ...this.#badInputs.values()];
  }

  #summarise(): void {
    this.#summaryTimer = undefined;
    for (const w of this.#throttlers()) {
      w.flush();
      if (w.suppressed > 0 && !this.#closed) this.#schedule(w.summaryDueInMs);
    }
  }

  #query(): Json {
    const s = this.#view.snapshot();
    const st = s.stats;
    const settings = this.#view.settings;
    return {
      epoch: s.epoch,
      "checkpoint-outstanding": s.checkpointOutstanding,
      connections: s.connections,
      held: {
        primary: { frames: s.heldFrames.primary, bytes: s.heldBytes.primary },
        secondary: { frames: s.heldFrames.secondary, bytes: s.heldBytes.secondary },
      },
      paused: s.paused,
      peers: s.peers,
      settings: {
        compare_timeout: settings.compareTimeout,
        expired_scan_cycle: settings.expiredScanCycle,
        max_queue_size: settings.maxQueueSize,
      },
      counters: st.summary(),
    };
  }

  #broadcast(event: string, data: Record<string, Json>): void {
    const message = { event, data, timestamp: timestamp() };
    for (const c of this.#clients) if (c.negotiated) c.send(message);
  }

  #onEvent(e: InsideEvent): void {
    switch (e.kind) {
      case "checkpoint-request": {
        const data: Record<string, Json> = { reason: e.reason };
        if (e.connection !== null) data.connection = e.connection;
        this.#broadcast("COLO_COMPARE_CHECKPOINT_REQUEST", data);
        break;
      }
      case "peer":
        this.#broadcast("COLO_COMPARE_PEER", { endpoint: e.endpoint, connected: e.connected });
        break;
      case "drop":
        this.#drop(e.side, e.reason, e.count);
        break;
      case "checkpoint-done":
        break;
    }
  }

  /** `COLO_COMPARE_DROP`, at most one per class and second; counts in between are summed. */
  #drop(side: string, reason: string, count: number): void {
    const key = `${side}:${reason}`;
    let c = this.#drops.get(key);
    if (c === undefined) {
      c = { pending: 0, sentAt: -Infinity, timer: undefined };
      this.#drops.set(key, c);
    }
    c.pending += count;
    if (c.timer !== undefined) return;
    const wait = c.sentAt + DROP_EVENT_INTERVAL_MS - performance.now();
    const send = () => {
      c.timer = undefined;
      c.sentAt = performance.now();
      this.#broadcast("COLO_COMPARE_DROP", { side, reason, count: c.pending });
      c.pending = 0;
    };
    if (wait <= 0) send();
    else c.timer = setTimeout(send, wait);
  }

  /** Closes the listener and every client. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#unsubscribe?.();
    for (const c of this.#drops.values()) clearTimeout(c.timer);
    clearTimeout(this.#summaryTimer);
    for (const w of this.#throttlers()) w.flush(true);
    for (const c of this.#clients) c.close();
    await this.#listener?.close();
  }
}
