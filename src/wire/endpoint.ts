/**
 * Socket endpoints (SPEC 2, 11) on a {@linkcode Transport}: a listen endpoint serves one peer
 * at a time and accepts the next whenever the current one is gone (a second peer while one is
 * attached is closed at once); a connect endpoint connects, and reconnects with a short
 * backoff whenever the peer goes away. Closing an endpoint aborts a pending connect, backoff
 * sleep or accept at once. Peer changes are announced after the endpoint's state changed.
 *
 * @module
 */

import { type Logger, ThrottledWarning } from "../log.ts";
import { AcceptFailures } from "./accept.ts";
import type { Address } from "./address.ts";
import type { Conn, Listener, Transport } from "./transport.ts";

/** The streams, named as their flags. */
export type EndpointName =
  | "primary-in"
  | "secondary-in"
  | "outdev"
  | "notify-dev"
  | "qmp"
  | "qmp-secondary";

/** A problem at start that the user must fix; the message names the flag and the fix. */
export class StartupError extends Error {}

/** Runs one peer's connection until it ends (or the connection is closed under it). */
export type Session = (conn: Conn) => Promise<void>;

/** Told of every peer change, after {@linkcode Endpoint.connected} says so. */
export type PeerListener = (connected: boolean, peer: string) => void;

const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 1000;
/**
 * A connect (with its TLS handshake) not done after this long is given up and retried: a host
 * that drops SYNs (down, or behind a firewall) held it for the kernel's SYN retries, about two
 * minutes, before the endpoint tried again.
 */
export const CONNECT_TIMEOUT_MS = 10_000;
/** A connected peer gone sooner than this counts as a failed connect for the backoff. */
const BRIEF_SESSION_MS = 1000;
/** Rejected second peers: one warn line, then at most one summary per this period. */
const REJECT_LOG_INTERVAL_MS = 10_000;
/**
 * Peers connecting and leaving: at most this many lines of each per
 * {@linkcode REJECT_LOG_INTERVAL_MS}, then a count. A loop that connects and hangs up must not
 * grow the log without bound (SPEC 8); a peer that comes and goes now and then is logged each
 * time.
 */
const PEER_LINES_PER_INTERVAL = 20;

/** Words for an error a user can act on. */
export function reasonText(error: unknown): string {
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
  readonly #transport: Transport;
  readonly #log: Logger;
  readonly #abort = new AbortController();
  readonly #listeners: PeerListener[] = [];
  #listener: Listener | null = null;
  #conn: Conn | null = null;
  readonly #rejected: ThrottledWarning;
  readonly #connectedLines: ThrottledWarning;
  readonly #disconnectedLines: ThrottledWarning;
  /** How long a connect may take before it is given up and retried (`tcp:`, `unix:`, `tls:`). */
  connectTimeoutMs = CONNECT_TIMEOUT_MS;

  /** `signal`: aborting it closes the endpoint, as {@linkcode Endpoint.close} does. */
  constructor(
    name: EndpointName,
    address: Address,
    transport: Transport,
    log: Logger,
    signal?: AbortSignal,
  ) {
    this.name = name;
    this.address = address;
    this.#transport = transport;
    this.#log = log;
    this.#rejected = new ThrottledWarning(log, "peer-rejected", REJECT_LOG_INTERVAL_MS);
    const peerLines = (event: string) =>
      new ThrottledWarning(log, event, REJECT_LOG_INTERVAL_MS, undefined, {
        level: "info",
        burst: PEER_LINES_PER_INTERVAL,
        overflow: "debug",
        key: { endpoint: name },
      });
    this.#connectedLines = peerLines("peer-connected");
    this.#disconnectedLines = peerLines("peer-disconnected");
    signal?.addEventListener("abort", () => this.close(), { once: true });
  }

  /** Where a listen endpoint actually listens (port 0 resolved), or the address text. */
  get boundText(): string {
    return this.#listener?.boundText ?? this.address.text;
  }

  /** True while a peer is attached. */
  get connected(): boolean {
    return this.#conn !== null;
  }

  /** The attached peer (`127.0.0.1:40312`, `unix`), or null. */
  get peer(): string | null {
    return this.#conn?.peer ?? null;
  }

  /** Aborted once the endpoint is closed. */
  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  /** Calls `listener` on every peer change, after the change. */
  onPeer(listener: PeerListener): void {
    this.#listeners.push(listener);
  }

  /**
   * Binds a listen endpoint (nothing to do for connect endpoints). Throws a
   * {@linkcode StartupError} that names the flag when the address cannot be used.
   */
  async bind(): Promise<void> {
    const a = this.address;
    if (!a.listen) return;
    const flag = `--${this.name}`;
    if (a.transport === "unix") await clearStaleSocket(a.path, flag);
    try {
      this.#listener = await this.#transport.listen(a);
    } catch (error) {
      if (error instanceof StartupError) throw error;
      const fix = error instanceof Deno.errors.AddrInUse
        ? "pick a free port or stop the program using it"
        : error instanceof Deno.errors.PermissionDenied
        ? "use a port above 1023, a writable directory, or run with the needed rights"
        : "give an address this host can listen on";
      throw new StartupError(`${flag} ${a.text}: cannot listen: ${reasonText(error)}; ${fix}`);
    }
  }

  /** Serves peers one at a time until {@linkcode Endpoint.close}. */
  serve(session: Session): Promise<void> {
    return this.#listener
      ? this.#serveListen(this.#listener, session)
      : this.#serveConnect(session);
  }

  async #serveListen(listener: Listener, session: Session): Promise<void> {
    let current: Promise<void> = Promise.resolve();
    const signal = this.#abort.signal;
    const failures = new AcceptFailures(this.#log, { endpoint: this.name });
    while (!signal.aborted) {
      let conn: Conn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (signal.aborted) break;
        const pause = failures.failed(error);
        if (pause > 0) await this.#sleep(pause);
        continue;
      }
      failures.accepted();
      if (signal.aborted) {
        conn.close();
        break;
      }
      if (this.#conn !== null) {
        this.#reject(conn);
        continue;
      }
      current = this.#run(conn, session);
    }
    await current;
  }

  /** SPEC 11: one peer per endpoint; a second one is closed at once and logged (rate-limited). */
  #reject(conn: Conn): void {
    conn.close();
    this.#rejected.note({
      endpoint: this.name,
      peer: conn.peer,
      active: this.#conn?.peer,
      note: "one peer per endpoint; the active peer stays",
    });
  }

  async #serveConnect(session: Session): Promise<void> {
    const signal = this.#abort.signal;
    let backoff = BACKOFF_MIN_MS;
    let failures = 0;
    while (!signal.aborted) {
      let conn: Conn;
      try {
        conn = await this.#connectOnce(signal);
      } catch (error) {
        if (signal.aborted) break;
        failures++;
        this.#log.log(failures === 1 ? "warn" : "debug", "connect-failed", {
          endpoint: this.name,
          address: this.address.text,
          error: reasonText(error),
          retry_ms: backoff,
        });
        await this.#sleep(backoff);
        backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
        continue;
      }
      failures = 0;
      const began = performance.now();
      await this.#run(conn, session);
      // A peer that hangs up at once is called back ever more slowly, as one that refuses
      // is: a server that drops every connection must not cost ten connections, and their
      // log lines, a second (SPEC 8).
      const brief = performance.now() - began < BRIEF_SESSION_MS;
      const pause = brief ? backoff : BACKOFF_MIN_MS;
      backoff = brief ? Math.min(backoff * 2, BACKOFF_MAX_MS) : BACKOFF_MIN_MS;
      await this.#sleep(pause);
    }
  }

  /** One connect, given up after {@linkcode Endpoint.connectTimeoutMs} or when `signal` aborts. */
  async #connectOnce(signal: AbortSignal): Promise<Conn> {
    const attempt = new AbortController();
    const stop = () => attempt.abort(signal.reason);
    signal.addEventListener("abort", stop, { once: true });
    const ms = this.connectTimeoutMs;
    const timer = setTimeout(() => attempt.abort(new Error(`not connected within ${ms} ms`)), ms);
    try {
      return await this.#transport.connect(this.address, attempt.signal);
    } finally {
      clearTimeout(timer);
      signal.removeEventListener("abort", stop);
    }
  }

  /** Attaches `conn`, runs the session, detaches; announces both changes after they happen. */
  async #run(conn: Conn, session: Session): Promise<void> {
    this.#conn = conn;
    const peer = conn.peer;
    this.#connectedLines.note({ peer });
    this.#announce(true, peer);
    let why = "closed";
    try {
      await session(conn);
    } catch (error) {
      why = reasonText(error);
    } finally {
      conn.close();
      this.#conn = null;
    }
    if (!this.#abort.signal.aborted) {
      this.#disconnectedLines.note({ peer, reason: why });
    }
    this.#announce(false, peer);
  }

  #announce(connected: boolean, peer: string): void {
    for (const l of this.#listeners) l(connected, peer);
  }

  /** Waits `ms`, or less if the endpoint is closed meanwhile. */
  #sleep(ms: number): Promise<void> {
    return sleepUnless(ms, this.#abort.signal);
  }

  /** Logs what the throttled lines counted once their period is over (at once: `final`). */
  flushLogs(final = false): void {
    this.#rejected.flush(final);
    this.#connectedLines.flush(final);
    this.#disconnectedLines.flush(final);
  }

  /** Drops the current peer (the next one is accepted or connected as usual). */
  dropPeer(): void {
    this.#conn?.close();
  }

  /**
   * Stops serving: aborts a pending connect, accept or backoff, closes the listener and the
   * current peer. Idempotent.
   */
  close(): void {
    if (this.#abort.signal.aborted) return;
    this.#abort.abort(new Error(`${this.name} closed`));
    this.#listener?.close();
    this.dropPeer();
  }
}

/**
 * Waits for `promise` to settle, at most `ms`: true when it did in time (whether it resolved
 * or rejected), false when the time ran out first. The timer goes either way.
 */
export async function settledWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), ms));
  try {
    return await Promise.race([promise.then(() => true, () => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits `ms`, or less if `signal` aborts meanwhile (at once if it has). */
export function sleepUnless(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * Before listening on a unix socket path: a socket file nobody answers on (left by an earlier
 * run) is removed; a live socket or any other file is refused with a `StartupError` naming
 * `flag`.
 */
export async function clearStaleSocket(path: string, flag: string): Promise<void> {
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
