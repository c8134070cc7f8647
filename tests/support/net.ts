/**
 * Socket helpers for tests: free ports, connecting with retry, a plain connection as the
 * program sees one, and a collector that reads colo-framed messages from a stream and lets a
 * test await them.
 *
 * @module
 */

import net from "node:net";
import { parseAddress } from "../../src/wire/address.ts";
import { PlainTransport } from "../../src/wire/plain.ts";
import type { Conn } from "../../src/wire/transport.ts";

/**
 * A plain transport listening on a free port: the program's end of one TCP connection
 * (accepted) and the peer's. `close` closes both ends and the listener, whichever the test
 * closed already.
 */
export async function plainPair(): Promise<
  { ours: Conn; peer: Deno.TcpConn; close: () => void }
> {
  const listener = await new PlainTransport().listen(parseAddress("tcp-listen:127.0.0.1:0"));
  const port = Number(listener.boundText.split(":").pop());
  const [ours, peer] = await Promise.all([
    listener.accept(),
    Deno.connect({ hostname: "127.0.0.1", port }),
  ]);
  return {
    ours,
    peer,
    close() {
      ours.close();
      try {
        peer.close();
      } catch { /* closed by the test */ }
      listener.close();
    },
  };
}

/** Returns a TCP port on 127.0.0.1 that was free a moment ago (for programs that need a number). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Returns `count` distinct free ports. */
export function freePorts(count: number): number[] {
  const listeners = Array.from(
    { length: count },
    () => Deno.listen({ hostname: "127.0.0.1", port: 0 }),
  );
  const ports = listeners.map((l) => (l.addr as Deno.NetAddr).port);
  for (const l of listeners) l.close();
  return ports;
}

/** Connects to 127.0.0.1:port, retrying while the peer is not yet listening. */
export async function connectRetry(port: number, timeoutMs = 10_000): Promise<Deno.TcpConn> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.setNoDelay(true);
      return conn;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/**
 * Opens `count` connections to 127.0.0.1:port one after the other and resets each (RST, not
 * FIN) once the handshake is done. With the listening process stopped (SIGSTOP) they wait in
 * its listen queue and are gone before it can accept them.
 */
export async function resetConnections(port: number, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const socket = net.connect(port, "127.0.0.1");
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", () => resolve());
      socket.once("error", reject);
    });
    await new Promise<void>((resolve) => {
      socket.once("close", () => resolve());
      socket.resetAndDestroy();
    });
  }
}

/** Connects to a UNIX socket, retrying while the peer is not yet listening. */
export async function connectUnixRetry(path: string, timeoutMs = 10_000): Promise<Deno.UnixConn> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    try {
      return await Deno.connect({ transport: "unix", path });
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** One framed message read from a stream. */
export interface Received {
  /** The frame bytes (after the length and optional vnet words). */
  data: Uint8Array;
  /** The vnet length word, when the stream carries one. */
  vnetLen?: number;
  /** performance.now() when the message was complete. */
  at: number;
}

/** True when two frames are the same bytes (to find one among those a collector received). */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Reads framed messages (u32 BE length [+ u32 BE vnet length] + bytes) from a connection in
 * the background, and lets tests await a count or a quiet period.
 */
export class FrameCollector {
  readonly frames: Received[] = [];
  #conn: Deno.Conn;
  #vnet: boolean;
  #pending = new Uint8Array(0);
  #waiters: (() => void)[] = [];
  #closed = false;
  #done: Promise<void>;
  #lastActivity = performance.now();

  /** `pace`: the first `slowReads` reads each wait `gapMs` before they read (a slow peer). */
  constructor(conn: Deno.Conn, vnet = false, pace?: { slowReads: number; gapMs: number }) {
    this.#conn = conn;
    this.#vnet = vnet;
    this.#done = this.#loop(pace?.slowReads ?? 0, pace?.gapMs ?? 0);
  }

  /** True once the peer closed the stream. */
  get closed(): boolean {
    return this.#closed;
  }

  async #loop(slowReads: number, gapMs: number): Promise<void> {
    const buf = new Uint8Array(256 * 1024);
    try {
      for (let reads = 0;; reads++) {
        if (reads < slowReads) await new Promise((r) => setTimeout(r, gapMs));
        const n = await this.#conn.read(buf);
        if (n === null) break;
        this.#lastActivity = performance.now();
        this.#feed(buf.subarray(0, n));
      }
    } catch {
      // closed under us
    }
    this.#closed = true;
    this.#wake();
  }

  #feed(chunk: Uint8Array): void {
    const all = new Uint8Array(this.#pending.length + chunk.length);
    all.set(this.#pending);
    all.set(chunk, this.#pending.length);
    const head = this.#vnet ? 8 : 4;
    let o = 0;
    const v = new DataView(all.buffer);
    while (all.length - o >= head) {
      const len = v.getUint32(o);
      if (all.length - o < head + len) break;
      this.frames.push({
        data: all.slice(o + head, o + head + len),
        vnetLen: this.#vnet ? v.getUint32(o + 4) : undefined,
        at: performance.now(),
      });
      o += head + len;
    }
    this.#pending = all.slice(o);
    this.#wake();
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  #changed(): Promise<void> {
    return new Promise((r) => this.#waiters.push(r));
  }

  /** Waits until at least `count` frames arrived; throws after `timeoutMs`. */
  async waitFor(count: number, timeoutMs = 5000): Promise<Received[]> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(new Error(`timed out waiting for ${count} frames (have ${this.frames.length})`)),
        timeoutMs,
      );
    });
    try {
      while (this.frames.length < count) {
        if (this.#closed) throw new Error(`stream closed with ${this.frames.length} frames`);
        await Promise.race([this.#changed(), timeout]);
      }
      return this.frames.slice(0, count);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Waits until a frame not yet taken satisfies `match`; returns it, or `undefined` when
   * `timeoutMs` passed or the stream closed first.
   */
  async waitUntil(
    match: (f: Received) => boolean,
    timeoutMs = 5000,
  ): Promise<Received | undefined> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let expired = false;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        expired = true;
        resolve();
      }, timeoutMs);
    });
    try {
      while (true) {
        const found = this.frames.find(match);
        if (found) return found;
        if (this.#closed || expired) return undefined;
        await Promise.race([this.#changed(), timeout]);
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** performance.now() of the last bytes read. */
  get lastActivity(): number {
    return this.#lastActivity;
  }

  /** Waits until nothing has arrived for `quietMs`, then returns every frame so far. */
  async quiet(quietMs = 150): Promise<Received[]> {
    while (true) {
      const idle = performance.now() - this.#lastActivity;
      if (idle >= quietMs || this.#closed) return this.frames.slice();
      await new Promise((r) => setTimeout(r, quietMs - idle + 1));
    }
  }

  /** Removes and returns every frame collected so far. */
  take(): Received[] {
    return this.frames.splice(0, this.frames.length);
  }

  /** Closes the connection and waits for the reader to finish. */
  async close(): Promise<void> {
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
    await this.#done;
  }
}
