/**
 * A small QMP client for the lab: one connection to a QEMU monitor socket, commands answered
 * by id, and every event kept with QEMU's own timestamp. (The comparator's checkpoint channel
 * has its own client; this one drives and watches the VMs.)
 *
 * @module
 */

import { JsonLines } from "../tests/support/json_lines.ts";

/** A QMP event as QEMU sends it. */
export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  /** QEMU's clock, in seconds. */
  at: number;
}

/** A command QEMU refused. */
export class QmpError extends Error {}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

/** One QMP connection (capabilities negotiated). */
export class Qmp {
  readonly name: string;
  /** Every event received, in order. */
  readonly events: QmpEvent[] = [];
  readonly #conn: Deno.UnixConn;
  readonly #pending = new Map<number, Pending>();
  #listeners: ((e: QmpEvent) => void)[] = [];
  /** Called once when the connection ends (QEMU gone, or close()). */
  #closers = new Set<() => void>();
  #nextId = 1;
  #closed = false;
  readonly #reading: Promise<void>;
  #greeting!: () => void;

  private constructor(name: string, conn: Deno.UnixConn) {
    this.name = name;
    this.#conn = conn;
    const greeted = new Promise<void>((r) => this.#greeting = r);
    this.#reading = this.#read();
    this.ready = greeted;
  }

  /** Resolves once QEMU's greeting has arrived. */
  readonly ready: Promise<void>;

  /**
   * Connects to QEMU's `-qmp unix:PATH,server=on,wait=off` socket, retrying while QEMU is
   * still creating it (as long as `alive()`), and negotiates capabilities.
   */
  static async connect(
    name: string,
    path: string,
    alive: () => boolean = () => true,
    timeoutMs = 10_000,
  ): Promise<Qmp> {
    const deadline = Date.now() + timeoutMs;
    let conn: Deno.UnixConn;
    for (;;) {
      try {
        conn = await Deno.connect({ transport: "unix", path });
        break;
      } catch (error) {
        if (!alive()) throw new Error(`${name}: exited before its QMP socket ${path} was up`);
        if (Date.now() > deadline) throw new Error(`${name}: no QMP socket at ${path}: ${error}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    const qmp = new Qmp(name, conn);
    try {
      await qmp.ready;
      await qmp.execute("qmp_capabilities");
    } catch (error) {
      await qmp.close();
      throw error;
    }
    return qmp;
  }

  /** Runs a command; resolves with its `return`, rejects with {@linkcode QmpError}. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.#closed) return Promise.reject(new Error(`${this.name}: QMP connection closed`));
    const id = this.#nextId++;
    const msg = JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id });
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.#conn.write(new TextEncoder().encode(msg + "\n")).catch((e) => {
        this.#pending.delete(id);
        reject(new Error(`${this.name}: ${command}: ${e}`));
      });
    });
  }

  /** Calls `fn` on every event from now on; returns a function that stops it. */
  onEvent(fn: (e: QmpEvent) => void): () => void {
    this.#listeners.push(fn);
    return () => this.#listeners = this.#listeners.filter((f) => f !== fn);
  }

  /** The first event from now on that satisfies `match`; rejects after `timeoutMs` or on abort. */
  waitForEvent(
    match: (e: QmpEvent) => boolean,
    timeoutMs: number,
    what: string,
    signal?: AbortSignal,
  ): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const settle = (f: () => void) => {
        clearTimeout(timer);
        off();
        signal?.removeEventListener("abort", aborted);
        f();
      };
      const aborted = () =>
        settle(() => reject(new Error(`${this.name}: stopped waiting for ${what}`)));
      const timer = setTimeout(
        () => settle(() => reject(new Error(`${this.name}: no ${what} within ${timeoutMs} ms`))),
        timeoutMs,
      );
      const lost = () =>
        settle(() => reject(new Error(`${this.name}: QMP connection lost before ${what}`)));
      const stopListening = this.onEvent((e) => {
        if (match(e)) settle(() => resolve(e));
      });
      const off = () => {
        stopListening();
        this.#closers.delete(lost);
      };
      this.#closers.add(lost);
      signal?.addEventListener("abort", aborted);
      if (this.#closed) lost();
    });
  }

  /** Closes the connection; pending commands fail. Idempotent. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      try {
        this.#conn.close();
      } catch {
        // already closed by the peer
      }
    }
    await this.#reading;
  }

  async #read(): Promise<void> {
    const lines = new JsonLines();
    const buf = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await this.#conn.read(buf);
        if (n === null) break;
        for (const value of lines.push(buf.subarray(0, n))) {
          this.#message(value as Record<string, unknown>);
        }
      }
    } catch {
      // closed under us (close() or QEMU gone): same as end of stream
    } finally {
      this.#closed = true;
      for (const p of this.#pending.values()) {
        p.reject(new Error(`${this.name}: QMP connection lost`));
      }
      this.#pending.clear();
      for (const f of [...this.#closers]) f();
    }
  }

  #message(m: Record<string, unknown>): void {
    if ("QMP" in m) {
      this.#greeting();
    } else if ("event" in m) {
      const ts = m.timestamp as { seconds: number; microseconds: number };
      const e: QmpEvent = {
        event: m.event as string,
        data: m.data as Record<string, unknown> | undefined,
        at: ts.seconds + ts.microseconds / 1e6,
      };
      this.events.push(e);
      for (const f of [...this.#listeners]) f(e);
    } else if (typeof m.id === "number") {
      const p = this.#pending.get(m.id);
      if (!p) return;
      this.#pending.delete(m.id);
      if ("error" in m) {
        const err = m.error as { class: string; desc: string };
        p.reject(new QmpError(`${this.name}: ${err.class}: ${err.desc}`));
      } else {
        p.resolve(m.return);
      }
    }
  }
}
