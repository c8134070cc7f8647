/**
 * A minimal QMP client for monitor tests: one JSON message per line, replies and events kept
 * apart, each awaitable.
 *
 * @module
 */

import { JsonLines } from "./json_lines.ts";

// deno-lint-ignore no-explicit-any
export type Message = Record<string, any>;

/** A connected QMP client. */
export class QmpClient {
  readonly conn: Deno.Conn;
  readonly replies: Message[] = [];
  readonly events: Message[] = [];
  greeting: Message | null = null;
  #waiters: (() => void)[] = [];
  #closed = false;
  #reading: Promise<void>;

  constructor(conn: Deno.Conn) {
    this.conn = conn;
    this.#reading = this.#read();
  }

  static async connect(port: number): Promise<QmpClient> {
    const c = new QmpClient(await Deno.connect({ hostname: "127.0.0.1", port }));
    await c.#until(() => c.greeting !== null, "the greeting");
    return c;
  }

  async #read(): Promise<void> {
    const lines = new JsonLines();
    const buf = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await this.conn.read(buf);
        if (n === null) break;
        for (const value of lines.push(buf.subarray(0, n))) {
          const m = value as Record<string, unknown>;
          if ("QMP" in m) this.greeting = m;
          else if ("event" in m) this.events.push(m);
          else this.replies.push(m);
        }
        this.#wake();
      }
    } catch {
      // closed
    }
    this.#closed = true;
    this.#wake();
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  /** True once the server closed the connection. */
  get closed(): boolean {
    return this.#closed;
  }

  async #until(ready: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`QMP: no ${what} in ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      while (!ready()) {
        if (this.#closed) throw new Error(`QMP: connection closed before ${what}`);
        await Promise.race([new Promise<void>((r) => this.#waiters.push(r)), timeout]);
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** Writes raw text. */
  async write(text: string): Promise<void> {
    const bytes = new TextEncoder().encode(text);
    let o = 0;
    while (o < bytes.length) o += await this.conn.write(bytes.subarray(o));
  }

  /** Sends a message and returns the next reply. */
  async send(message: unknown): Promise<Message> {
    const n = this.replies.length;
    await this.write(JSON.stringify(message) + "\n");
    await this.#until(() => this.replies.length > n, "reply");
    return this.replies[n];
  }

  /** Waits until `count` replies arrived in all. */
  async waitReplies(count: number): Promise<Message[]> {
    await this.#until(() => this.replies.length >= count, `${count} replies`);
    return this.replies.slice(0, count);
  }

  /** `execute` with arguments; returns the reply. */
  execute(command: string, args?: Message, id?: unknown): Promise<Message> {
    const m: Message = { execute: command };
    if (args !== undefined) m.arguments = args;
    if (id !== undefined) m.id = id;
    return this.send(m);
  }

  /** Waits for an event named `name` matching `match`, not yet taken; returns it. */
  async event(name: string, match: (m: Message) => boolean = () => true): Promise<Message> {
    let found: Message | undefined;
    await this.#until(() => {
      const i = this.events.findIndex((e) => e.event === name && match(e));
      if (i < 0) return false;
      found = this.events.splice(i, 1)[0];
      return true;
    }, `event ${name}`);
    return found!;
  }

  async close(): Promise<void> {
    try {
      this.conn.close();
    } catch {
      // already closed
    }
    await this.#reading;
  }
}
