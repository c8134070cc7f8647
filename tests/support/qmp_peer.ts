/**
 * A scripted QMP monitor that speaks like QEMU 7.2's (greeting, `\r\n` line ends, replies with
 * the command's id, events with timestamps), for channel and end-to-end tests of SPEC 7b.
 * It serves one client at a time, as a QEMU `-qmp unix:PATH,server=on,wait=off` does.
 *
 * @module
 */

import { JsonLines } from "./json_lines.ts";

type Json = Record<string, unknown>;

/** A command the peer received. */
export interface ReceivedCommand {
  execute: string;
  arguments?: Json;
  id?: unknown;
}

/** How the peer treats one command: answer it (the default), ignore it, or hang up. */
export type Script = (cmd: ReceivedCommand) => "answer" | "ignore" | "hang-up";

const encoder = new TextEncoder();

export const GREETING = {
  QMP: {
    version: {
      qemu: { micro: 22, minor: 2, major: 7 },
      package: "Debian 1:7.2+dfsg-7+deb12u18+b3",
    },
    capabilities: ["oob"],
  },
};

/** The QMP monitor of a primary QEMU in (or out of) COLO. */
export class QmpPeer {
  /** `x-checkpoint-delay`, as an operator set it. */
  delay = 20000;
  /** `query-status`'s run state. */
  runState = "running";
  /** `query-colo-status`'s mode. */
  coloMode: "primary" | "none" | "secondary" = "primary";
  /** Decides per command; by default everything is answered. */
  script: Script = () => "answer";
  /** Commands received, over every client, in order. */
  readonly commands: ReceivedCommand[] = [];
  /** Clients accepted so far. */
  clients = 0;
  /** The address to give `--qmp`: `unix:PATH`, or `tcp:127.0.0.1:PORT`. */
  readonly address: string;
  readonly #listener: Deno.Listener;
  /** TCP: Nagle stays on for each client, as on QEMU's monitors unless `nodelay=on`. */
  readonly #tcp: boolean;
  #conn: Deno.Conn | null = null;
  #reading = true;
  #waiters: (() => void)[] = [];
  #serving: Promise<void>;
  #closed = false;
  readonly #dir: string;

  private constructor(dir: string, tcp: boolean) {
    this.#dir = dir;
    this.#tcp = tcp;
    if (tcp) {
      this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      this.address = `tcp:127.0.0.1:${(this.#listener.addr as Deno.NetAddr).port}`;
    } else {
      this.#listener = Deno.listen({ transport: "unix", path: `${dir}/qmp.sock` });
      this.address = `unix:${dir}/qmp.sock`;
    }
    this.#serving = this.#serve();
  }

  /**
   * Listens on a fresh unix socket in a temporary directory, or with `tcp` on a TCP port of
   * 127.0.0.1 as `-qmp tcp:...,server=on` does.
   */
  static async start(tcp = false): Promise<QmpPeer> {
    return new QmpPeer(await Deno.makeTempDir({ prefix: "qmp-peer-" }), tcp);
  }

  /** True while a client is connected. */
  get connected(): boolean {
    return this.#conn !== null;
  }

  async #serve(): Promise<void> {
    while (!this.#closed) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch {
        break;
      }
      if (this.#tcp) (conn as Deno.TcpConn).setNoDelay(false);
      this.#conn = conn;
      this.#reading = true;
      this.clients++;
      this.#wake();
      try {
        await this.#write(conn, GREETING);
        await this.#read(conn);
      } catch {
        // the client went away
      } finally {
        try {
          conn.close();
        } catch {
          // already closed
        }
        if (this.#conn === conn) this.#conn = null;
        this.#wake();
      }
    }
  }

  async #read(conn: Deno.Conn): Promise<void> {
    const buf = new Uint8Array(64 * 1024);
    const lines = new JsonLines();
    while (true) {
      if (!this.#reading) {
        // Not reading: wait until the client goes away (close() or hangUp() ends this).
        await new Promise<void>((r) => this.#waiters.push(r));
        if (this.#conn !== conn) return;
        continue;
      }
      const n = await conn.read(buf);
      if (n === null) return;
      for (const value of lines.push(buf.subarray(0, n))) {
        const cmd = value as ReceivedCommand;
        this.commands.push(cmd);
        this.#wake();
        const how = this.script(cmd);
        if (how === "hang-up") {
          conn.close();
          return;
        }
        if (how === "answer") await this.#write(conn, this.#answer(cmd));
      }
    }
  }

  #answer(cmd: ReceivedCommand): Json {
    const ok = (value: Json) => ({ return: value, id: cmd.id });
    switch (cmd.execute) {
      case "qmp_capabilities":
        return ok({});
      case "query-migrate-parameters":
        return ok({ "downtime-limit": 300, "x-checkpoint-delay": this.delay });
      case "migrate-set-parameters": {
        const d = cmd.arguments?.["x-checkpoint-delay"];
        if (typeof d === "number") this.delay = d;
        return ok({});
      }
      case "query-status":
        return ok({
          status: this.runState,
          singlestep: false,
          running: this.runState === "running",
        });
      case "query-colo-status":
        return ok({ mode: this.coloMode, "last-mode": "none", reason: "none" });
      case "query-migrate":
        return ok(this.coloMode === "primary" ? { status: "colo" } : {});
      default:
        return {
          id: cmd.id,
          error: {
            class: "CommandNotFound",
            desc: `The command ${cmd.execute} has not been found`,
          },
        };
    }
  }

  async #write(conn: Deno.Conn, msg: Json): Promise<void> {
    const bytes = encoder.encode(JSON.stringify(msg) + "\r\n");
    for (let o = 0; o < bytes.length;) o += await conn.write(bytes.subarray(o));
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  /** Waits until `ok()` holds, re-checking whenever a command or client arrives. */
  async until(ok: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
    });
    try {
      while (!ok()) await Promise.race([new Promise<void>((r) => this.#waiters.push(r)), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The commands received with this name. */
  received(execute: string): ReceivedCommand[] {
    return this.commands.filter((c) => c.execute === execute);
  }

  /** Waits until `count` commands with this name arrived in total. */
  waitFor(execute: string, count = 1, timeoutMs = 5000): Promise<void> {
    return this.until(
      () => this.received(execute).length >= count,
      `${count} ${execute} (have ${this.received(execute).length})`,
      timeoutMs,
    );
  }

  /** Waits until the `n`th client has connected and finished the handshake queries. */
  async waitForClient(n: number): Promise<void> {
    await this.until(() => this.clients >= n && this.#conn !== null, `client ${n}`);
    await this.waitFor("query-colo-status", n);
  }

  /** Sends an event as QEMU does. */
  async event(name: string, data?: Json): Promise<void> {
    const conn = this.#conn;
    if (conn === null) throw new Error(`no client to send ${name} to`);
    const now = Date.now();
    await this.#write(conn, {
      timestamp: { seconds: Math.floor(now / 1000), microseconds: (now % 1000) * 1000 },
      event: name,
      ...(data ? { data } : {}),
    });
  }

  /**
   * One checkpoint as QEMU 7.2 shows it: `STOP`, the run state `colo` while the client asks,
   * `MIGRATION_PASS`, then `RESUME` once the client's `query-status` was answered.
   */
  async checkpoint(): Promise<void> {
    const asked = this.received("query-status").length;
    this.runState = "colo";
    await this.event("STOP");
    await this.waitFor("query-status", asked + 1);
    await this.event("MIGRATION_PASS", { pass: asked + 2 });
    this.runState = "running";
    await this.event("RESUME");
  }

  /** Stops reading from the current client (its commands pile up in the socket). */
  stopReading(): void {
    this.#reading = false;
  }

  /** Sends raw bytes to the client, as they are. */
  async sendRaw(bytes: Uint8Array): Promise<void> {
    const conn = this.#conn;
    if (conn === null) throw new Error("no client");
    for (let o = 0; o < bytes.length;) o += await conn.write(bytes.subarray(o));
  }

  /** Hangs up on the current client. */
  hangUp(): void {
    const conn = this.#conn;
    this.#conn = null;
    try {
      conn?.close();
    } catch {
      // already closed
    }
    this.#wake();
  }

  /** Stops listening, hangs up, removes the socket. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#listener.close();
    this.hangUp();
    await this.#serving;
    await Deno.remove(this.#dir, { recursive: true });
  }
}
