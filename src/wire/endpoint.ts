/**
 * Socket endpoints (SPEC 2): a listen endpoint serves one peer at a time and accepts the next
 * whenever the current one is gone; a connect endpoint connects, and reconnects with a short
 * backoff whenever the peer goes away.
 *
 * @module
 */

import type { Logger } from "../log.ts";
import type { Address } from "./address.ts";

/** The streams, named as their flags. */
export type EndpointName = "primary-in" | "secondary-in" | "outdev" | "notify-dev" | "qmp";

/** A problem at start that the user must fix; the message names the flag and the fix. */
export class StartupError extends Error {}

/** Runs one peer's connection until it ends. */
export type Session = (conn: Deno.Conn) => Promise<void>;

const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 1000;

function peerText(conn: Deno.Conn): string {
  const a = conn.remoteAddr;
  if (a.transport === "tcp") {
    return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
  }
  return a.transport;
}

function reasonText(error: unknown): string {
  if (error instanceof Deno.errors.AddrInUse) return "address already in use";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (error instanceof Deno.errors.NotFound) return "no such file or directory";
  if (error instanceof Deno.errors.AddrNotAvailable) return "address not available on this host";
  if (error instanceof Error) return error.message;
  return String(error);
}

/** One endpoint and the peer currently attached to it. */
export class Endpoint {
  readonly name: EndpointName;
  readonly address: Address;
  readonly #log: Logger;
  #listener: Deno.Listener | null = null;
  #conn: Deno.Conn | null = null;
  #closed = false;
  #wake: (() => void) | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #socketPath: string | null = null;

  constructor(name: EndpointName, address: Address, log: Logger) {
    this.name = name;
    this.address = address;
    this.#log = log;
  }

  /** Where a listen endpoint actually listens (port 0 resolved), or the address text. */
  get boundText(): string {
    const a = this.#listener?.addr;
    if (a?.transport === "tcp") {
      return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
    }
    if (a?.transport === "unix") return a.path ?? this.address.text;
    return this.address.text;
  }

  /** True while a peer is attached. */
  get connected(): boolean {
    return this.#conn !== null;
  }

  /**
   * Binds a listen endpoint (nothing to do for connect endpoints). Throws a
   * {@linkcode StartupError} that names the flag when the address cannot be used.
   */
  async bind(): Promise<void> {
    const a = this.address;
    if (!a.listen) return;
    const flag = `--${this.name}`;
    try {
      if (a.transport === "tcp") {
        this.#listener = Deno.listen({ hostname: a.host, port: a.port, transport: "tcp" });
      } else {
        await this.#clearStaleSocket(a.path, flag);
        this.#listener = Deno.listen({ path: a.path, transport: "unix" });
        this.#socketPath = a.path;
      }
    } catch (error) {
      if (error instanceof StartupError) throw error;
      const fix = error instanceof Deno.errors.AddrInUse
        ? "pick a free port or stop the program using it"
        : error instanceof Deno.errors.PermissionDenied
        ? "use a port above 1023, a writable directory, or run with the needed rights"
        : "give an address this host can listen on";
      throw new StartupError(
        `${flag} ${a.text}: cannot listen: ${reasonText(error)}; ${fix}`,
      );
    }
  }

  async #clearStaleSocket(path: string, flag: string): Promise<void> {
    let info: Deno.FileInfo;
    try {
      info = await Deno.lstat(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return;
      throw error;
    }
    if (!info.isSocket) {
      throw new StartupError(
        `${flag} unix-listen:${path}: the path exists and is not a socket; remove it or choose another path`,
      );
    }
    try {
      const probe = await Deno.connect({ transport: "unix", path });
      probe.close();
    } catch {
      // Nobody answers: a socket file left behind by an earlier run.
      await Deno.remove(path);
      return;
    }
    throw new StartupError(
      `${flag} unix-listen:${path}: another program is listening there; stop it or choose another path`,
    );
  }

  /** Serves peers one at a time until {@linkcode Endpoint.close}. */
  async serve(session: Session): Promise<void> {
    let backoff = BACKOFF_MIN_MS;
    let failures = 0;
    while (!this.#closed) {
      let conn: Deno.Conn;
      try {
        conn = await this.#next();
      } catch (error) {
        if (this.#closed) break;
        if (this.#listener) {
          this.#log.error("accept-failed", { endpoint: this.name, error: reasonText(error) });
        } else {
          failures++;
          this.#log.log(failures === 1 ? "warn" : "debug", "connect-failed", {
            endpoint: this.name,
            address: this.address.text,
            error: reasonText(error),
            retry_ms: backoff,
          });
        }
        await this.#sleep(backoff);
        backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
        continue;
      }
      if (this.#closed) {
        conn.close();
        break;
      }
      failures = 0;
      backoff = BACKOFF_MIN_MS;
      if (conn.remoteAddr.transport === "tcp") (conn as Deno.TcpConn).setNoDelay(true);
      this.#conn = conn;
      const peer = peerText(conn);
      this.#log.info("peer-connected", { endpoint: this.name, peer });
      let why = "closed";
      try {
        await session(conn);
      } catch (error) {
        why = reasonText(error);
      } finally {
        this.#conn = null;
        try {
          conn.close();
        } catch {
          // already closed
        }
      }
      if (!this.#closed) {
        this.#log.info("peer-disconnected", { endpoint: this.name, peer, reason: why });
        if (!this.#listener) await this.#sleep(BACKOFF_MIN_MS);
      }
    }
  }

  #next(): Promise<Deno.Conn> {
    if (this.#listener) return this.#listener.accept();
    const a = this.address;
    return a.transport === "tcp"
      ? Deno.connect({ hostname: a.host, port: a.port, transport: "tcp" })
      : Deno.connect({ path: a.path, transport: "unix" });
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.#wake = resolve;
      this.#timer = setTimeout(resolve, ms);
    });
  }

  /** Drops the current peer (the next one is accepted or connected as usual). */
  dropPeer(): void {
    try {
      this.#conn?.close();
    } catch {
      // already closed
    }
  }

  /** Stops serving: closes the listener and the current peer. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#wake?.();
    try {
      this.#listener?.close();
    } catch {
      // already closed
    }
    this.dropPeer();
    if (this.#socketPath) {
      try {
        Deno.removeSync(this.#socketPath);
      } catch {
        // gone already
      }
    }
  }
}
