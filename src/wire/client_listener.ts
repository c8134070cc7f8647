/**
 * The listening socket of a control server (`--monitor`, `--metrics`; SPEC 8, 11, 12): a
 * `tcp-listen:` or `unix-listen:` address (the unix socket created with `--socket-mode`, a
 * stale one from an earlier run cleared), at most so many clients served at once (more are
 * closed at once; the refusals are logged at most once per interval), TCP keepalive on every
 * client. Closing stops the accepts, closes every client, removes the socket file and waits for
 * every session to end.
 *
 * @module
 */

import { type Logger, ThrottledWarning } from "../log.ts";
import { AcceptFailures } from "./accept.ts";
import type { Address } from "./address.ts";
import { clearStaleSocket, sleepUnless, StartupError } from "./endpoint.ts";
import { keepAlive, TcpTuner } from "./keepalive.ts";
import { addrText, listenUnix } from "./plain.ts";

/**
 * How long a client has been served before a new one may take its place (ms): long enough for a
 * real client to have spoken, and a burst of new connections is refused rather than served and
 * evicted one after another.
 */
export const EVICT_AFTER_MS = 1000;

/** Serves one client until it is gone; `conn` is closed by the listener afterwards. */
export type Session = (conn: Deno.Conn, peer: string) => Promise<void>;

/** A control server's listener with a bound on its clients. */
export class ClientListener {
  readonly #listener: Deno.Listener;
  readonly #socketPath: string | null;
  readonly #tuner: TcpTuner | null;
  /** The clients served, and when each was accepted (ms), oldest first. */
  readonly #conns = new Map<Deno.Conn, number>();
  readonly #sessions = new Set<Promise<void>>();
  #accepting: Promise<void> | null = null;
  /** Aborted at close: ends a pause after a failed accept at once. */
  readonly #closing = new AbortController();
  #closed = false;

  private constructor(listener: Deno.Listener, socketPath: string | null) {
    this.#listener = listener;
    this.#socketPath = socketPath;
    // Opened before the permissions are dropped; a dead client frees its slot (SPEC 11).
    this.#tuner = TcpTuner.shared();
  }

  /**
   * Listens on `address`; throws a `StartupError` naming `flag` (`--monitor`) when it cannot
   * be used.
   */
  static async open(flag: string, address: Address, socketMode: number): Promise<ClientListener> {
    if (address.transport === "unix") await clearStaleSocket(address.path, flag);
    try {
      return address.transport === "tcp"
        ? new ClientListener(Deno.listen({ hostname: address.host, port: address.port }), null)
        : new ClientListener(await listenUnix(address.path, socketMode), address.path);
    } catch (error) {
      throw new StartupError(
        `${flag} ${address.text}: cannot listen: ${(error as Error).message}; ` +
          "give a free port or a writable path",
      );
    }
  }

  /** Where it listens (port 0 resolved). */
  get boundText(): string {
    return this.#socketPath ?? addrText(this.#listener.addr);
  }

  /**
   * Accepts clients and runs `session` for each, at most `maxClients` at once. A client past
   * that takes the place of the one `evict` picks among those served (oldest first; one that
   * gave way already is no longer among them, though its session may not have ended yet), if
   * that one was served {@linkcode EVICT_AFTER_MS} at least: it is closed, and the eviction
   * logged as `<name>-client-evicted`. Otherwise the new client is closed at once and logged as
   * `<name>-client-refused`. Both are rate-limited. So a few silent connections cannot keep the
   * operator out for good (SPEC 8).
   */
  serve(
    name: string,
    maxClients: number,
    session: Session,
    log: Logger,
    evict: (served: ReadonlyMap<Deno.Conn, number>) => Deno.Conn | null = () => null,
  ): void {
    const refused = new ThrottledWarning(log, `${name}-client-refused`);
    const evicted = new ThrottledWarning(log, `${name}-client-evicted`);
    // A client gone before it was taken, or a listener short of descriptors, must not end
    // the accepts: the server would stay deaf while its socket still queues clients (SPEC 8).
    const failures = new AcceptFailures(log, { endpoint: name });
    this.#accepting = (async () => {
      while (!this.#closed) {
        let conn: Deno.Conn;
        try {
          conn = await this.#listener.accept();
        } catch (error) {
          if (this.#closed) break;
          const pause = failures.failed(error);
          if (pause > 0) await sleepUnless(pause, this.#closing.signal);
          continue;
        }
        let peer: string;
        try {
          peer = addrText(conn.remoteAddr);
          if (conn.remoteAddr.transport === "tcp") keepAlive(conn as Deno.TcpConn, this.#tuner);
        } catch (error) {
          // Not seen (a reset socket takes its options): whatever it is, this client only.
          closeQuietly(conn);
          failures.failed(error);
          continue;
        }
        failures.accepted();
        if (this.#conns.size >= maxClients) {
          const victim = evict(this.#conns);
          const since = victim === null ? undefined : this.#conns.get(victim);
          // A burst of new clients is refused, not served in turn: each costs a session.
          if (
            victim === null || since === undefined || performance.now() - since < EVICT_AFTER_MS
          ) {
            refused.note({ peer, note: `${maxClients} clients already` });
            conn.close();
            continue;
          }
          // Its session ends with the close and gives its slot back.
          evicted.note({ peer, note: `${maxClients} clients already; the stalest one gave way` });
          this.#conns.delete(victim);
          closeQuietly(victim);
        }
        this.#conns.set(conn, performance.now());
        const running = session(conn, peer).catch(() => {}).finally(() => {
          this.#conns.delete(conn);
          this.#sessions.delete(running);
          closeQuietly(conn);
        });
        this.#sessions.add(running);
      }
    })();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.#listener);
    this.#closing.abort();
    for (const conn of this.#conns.keys()) closeQuietly(conn);
    await this.#accepting;
    if (this.#socketPath !== null) {
      try {
        Deno.removeSync(this.#socketPath);
      } catch {
        // already gone
      }
    }
    await Promise.allSettled([...this.#sessions]);
  }
}

/** Closes `c`, which may be closed already. */
export function closeQuietly(c: { close(): void }): void {
  try {
    c.close();
  } catch {
    // already closed
  }
}
