/**
 * The plain transport: TCP and unix sockets, no TLS (SPEC 2, 11). Every TCP connection gets
 * `TCP_NODELAY` and keepalive; `unix-listen:` sockets are created with the configured mode,
 * whatever the umask.
 *
 * @module
 */

import type { Address } from "./address.ts";
import type { Conn, Listener, Transport } from "./transport.ts";
import { keepAlive, type TcpTuner } from "./keepalive.ts";
import { readableRid, readRid, socketFd } from "./read_op.ts";
import { SocketFinder } from "./socket_fd.ts";
import { openLibc } from "../libc.ts";
import { READ_BLOCK_SIZE } from "../pool.ts";

/** The largest write {@linkcode Conn.trySend} makes at once; longer ones take the op. */
export const SEND_AT_ONCE_MAX = 4096;

const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;

/**
 * `size_t` arguments as the BigInts TurboFan's fast call takes, made once per size: given a
 * number, the call deoptimized at every use ("not a BigInt"; bench/README.md, "Inputs driven by
 * the poller"). Holey but not sparse, so its lookups stay fast.
 */
const SIZES: (bigint | undefined)[] = new Array(SEND_AT_ONCE_MAX + 1);

/** libc's `send(2)`, without waiting and without SIGPIPE; null where it cannot be reached. */
let sysSend: ((fd: number, p: Uint8Array, len: number) => number) | null = null;
let sysOpened = false;

function openSend(): void {
  if (sysOpened) return;
  sysOpened = true;
  const libc = openLibc(
    {
      send: { parameters: ["i32", "buffer", "usize", "i32"], result: "i32" },
      recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "i32" },
      ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
    } as const,
    "writes without an op",
  );
  if (typeof libc === "string") return;
  sysSend = (fd, p, len) =>
    libc.send(fd, p, SIZES[len] ??= BigInt(len), MSG_DONTWAIT | MSG_NOSIGNAL);
  sysRecv = (fd, p) =>
    libc.recv(fd, p, p.length === READ_BLOCK_SIZE ? BLOCK_LEN : BigInt(p.length), MSG_DONTWAIT);
  const count = new Int32Array(1);
  sysOutq = (fd) => libc.ioctl(fd, SIOCOUTQ, count) === 0 ? count[0] : -1;
  sysInq = (fd) => libc.ioctl(fd, SIOCINQ, count) === 0 ? count[0] : -1;
}

/** `SIOCOUTQ` (`TIOCOUTQ`): bytes in a socket's send queue its peer has not taken. */
const SIOCOUTQ = 0x5411n;
/** The send queue's bytes by `ioctl(2)`; null where it cannot be reached. */
let sysOutq: ((fd: number) => number) | null = null;

/** `SIOCINQ` (`FIONREAD`): bytes in a socket's receive queue not read yet. */
const SIOCINQ = 0x541bn;
/** The receive queue's bytes by `ioctl(2)`; null where it cannot be reached. */
let sysInq: ((fd: number) => number) | null = null;

/**
 * The bytes socket `fd` has received and not yet given to a read (the kernel's receive queue),
 * or -1 where that cannot be asked (no libc: libc is opened at the first use, or by the first
 * plain transport, while the `ffi` permission is granted).
 */
export function socketUnread(fd: number): number {
  openSend();
  return sysInq === null ? -1 : sysInq(fd);
}

/**
 * The bytes written to socket `fd` that are still in the kernel (over TCP not yet acknowledged
 * by the peer; over a unix socket not yet read by it), or -1 where that cannot be asked (as
 * {@linkcode socketUnread}).
 */
export function socketUnsent(fd: number): number {
  openSend();
  return sysOutq === null ? -1 : sysOutq(fd);
}

/** libc's `recv(2)` without waiting; null where it cannot be reached. */
let sysRecv: ((fd: number, p: Uint8Array) => number) | null = null;
/** The read buffers' size as a BigInt (see {@linkcode SIZES}). */
const BLOCK_LEN = BigInt(READ_BLOCK_SIZE);

/** Default mode of the sockets `unix-listen:` creates (SPEC 11). */
export const DEFAULT_SOCKET_MODE = 0o600;

/** `127.0.0.1:40312`, `[::1]:40312`, or the transport name. */
export function addrText(a: Deno.Addr): string {
  if (a.transport === "tcp" || a.transport === "udp") {
    return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
  }
  return a.transport;
}

/**
 * A Deno socket as a {@linkcode Conn}; `read` is Deno's read op where it can be reached
 * (src/wire/read_op.ts), `write` Deno's own. TCP gets `TCP_NODELAY` and keepalive, with
 * `tuner`'s timing where there is one (SPEC 11). A unix socket's descriptor, which Deno does
 * not tell, is found by its addresses (src/wire/socket_fd.ts), and claimed until it closes.
 */
function wrap(conn: Deno.Conn, tuner: TcpTuner | null): Conn {
  let fd = socketFd(conn) ?? undefined;
  let quickAck: (() => void) | undefined;
  if (conn.remoteAddr.transport === "unix" && fd === undefined) {
    const local = (conn.localAddr as Deno.UnixAddr).path;
    const found = SocketFinder.shared()?.unix(local, (conn.remoteAddr as Deno.UnixAddr).path);
    if (found !== undefined && found >= 0) {
      return new PlainConn(conn, addrText(conn.remoteAddr), found, undefined, true);
    }
  } else if (conn.remoteAddr.transport === "tcp") {
    const tcp = conn as Deno.TcpConn;
    tcp.setNoDelay(true);
    // Deno shows the descriptor of an accepted socket, not of one it connected: found by
    // its addresses then, as for the keepalive timing.
    const found = keepAlive(tcp, tuner, fd);
    if (found >= 0) {
      fd = found;
      quickAck = () => void tuner!.quickAck(found);
    }
  }
  return new PlainConn(conn, addrText(conn.remoteAddr), fd, quickAck);
}

/**
 * One class for every plain connection: the outdev writer's and the input pumps' calls to
 * `read` and `write` then have one target, whichever the connection. With a closure per
 * connection, V8 compiled them in the warm-up for its throwaway comparators' closures, and threw
 * that code away at the real comparator's first frames (bench/README.md, "Cold start").
 */
class PlainConn implements Conn {
  readonly #conn: Deno.Conn;
  /** For Deno's read op (src/wire/read_op.ts); -1: `Conn.read`. */
  readonly #rid: number;
  #closed = false;
  readonly peer: string;
  readonly fd: number | undefined;
  readonly quickAck: (() => void) | undefined;
  /** `fd` is a unix socket's, claimed from {@linkcode SocketFinder} until close. */
  readonly #claimed: boolean;
  /** Deno's read op settles at once or at a later turn; `Conn.read` wraps it in awaits. */
  readonly settlesOnTurn: boolean;

  constructor(
    conn: Deno.Conn,
    peer: string,
    fd: number | undefined,
    quickAck: (() => void) | undefined,
    claimed = false,
  ) {
    this.#conn = conn;
    // Stored twice: a field V8 takes for constant until its second store, and `trySend` reads
    // it per write; its first `close` after the warm-up would throw that code away.
    this.#closed = false;
    this.#rid = readableRid(conn) ?? -1;
    this.settlesOnTurn = this.#rid >= 0;
    this.peer = peer;
    this.fd = fd;
    this.quickAck = quickAck;
    this.#claimed = claimed;
  }

  read(p: Uint8Array): Promise<number | null> {
    return this.#rid >= 0 ? readRid(this.#rid, p) : this.#conn.read(p);
  }

  write(p: Uint8Array): Promise<number> {
    return this.#conn.write(p);
  }

  trySend(p: Uint8Array, len: number): number {
    // Only while the runtime holds the socket open: its descriptor may be another's after.
    if (this.#closed || sysSend === null || this.fd === undefined || len > SEND_AT_ONCE_MAX) {
      return -1;
    }
    // -1 when it would block (EAGAIN) or failed: the op writes then, and tells the error.
    return sysSend(this.fd, p, len);
  }

  tryRecv(p: Uint8Array): number {
    if (this.#closed || sysRecv === null || this.fd === undefined) return -1;
    return sysRecv(this.fd, p);
  }

  kernelQueued(): number {
    if (this.#closed || this.fd === undefined) return -1;
    return socketUnsent(this.fd);
  }

  unread(): number {
    if (this.#closed || this.fd === undefined) return -1;
    return socketUnread(this.fd);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // already closed by Deno (a failed read or write)
    }
    if (this.#claimed) SocketFinder.shared()!.release(this.fd!);
  }
}

class PlainListener implements Listener {
  readonly #listener: Deno.Listener;
  readonly #path: string | null;
  readonly boundText: string;
  #closed = false;

  readonly #tuner: TcpTuner | null;

  constructor(listener: Deno.Listener, path: string | null, tuner: TcpTuner | null) {
    this.#tuner = tuner;
    this.#listener = listener;
    this.#path = path;
    const a = listener.addr;
    this.boundText = path ?? addrText(a);
  }

  async accept(): Promise<Conn> {
    return wrap(await this.#listener.accept(), this.#tuner);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener.close();
    } catch {
      // already closed
    }
    if (this.#path !== null) {
      try {
        Deno.removeSync(this.#path);
      } catch {
        // gone already
      }
    }
  }
}

/**
 * Binds a unix socket at `path` with `mode`, never visible with the umask's mode: it is
 * created in a fresh 0700 directory beside `path`, given its mode, then renamed into place.
 */
export async function listenUnix(path: string, mode: number): Promise<Deno.Listener> {
  const slash = path.lastIndexOf("/");
  const dir = slash < 0 ? "." : slash === 0 ? "/" : path.slice(0, slash);
  const tmp = await Deno.makeTempDir({ dir, prefix: ".colo-compare-" });
  try {
    await Deno.chmod(tmp, 0o700);
    const inner = `${tmp}/s`;
    const listener = Deno.listen({ path: inner, transport: "unix" });
    try {
      await Deno.chmod(inner, mode);
      await Deno.rename(inner, path);
    } catch (error) {
      listener.close();
      throw error;
    }
    return listener;
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

/** TCP and unix sockets. */
export class PlainTransport implements Transport {
  readonly #socketMode: number;
  readonly #tuner: TcpTuner | null;

  /**
   * `socketMode`: mode of `unix-listen:` sockets (`--socket-mode`); `tuner` sets the keepalive
   * timing of TCP connections (null: the kernel's).
   */
  constructor(socketMode: number = DEFAULT_SOCKET_MODE, tuner: TcpTuner | null = null) {
    // libc's calls are opened now, while the `ffi` permission is granted (src/permissions.ts).
    openSend();
    SocketFinder.shared();
    this.#socketMode = socketMode;
    this.#tuner = tuner;
  }

  async listen(address: Address): Promise<Listener> {
    if (address.transport === "tcp") {
      const l = Deno.listen({ hostname: address.host, port: address.port, transport: "tcp" });
      return new PlainListener(l, null, this.#tuner);
    }
    return new PlainListener(
      await listenUnix(address.path, this.#socketMode),
      address.path,
      this.#tuner,
    );
  }

  async connect(address: Address, signal: AbortSignal): Promise<Conn> {
    signal.throwIfAborted();
    const pending = address.transport === "tcp"
      ? Deno.connect({ hostname: address.host, port: address.port, transport: "tcp", signal })
      : Deno.connect({ path: address.path, transport: "unix" });
    // Deno's signal closes a connection being made; the race makes the abort prompt even
    // where it does not (unix), and a connection that completes after it is closed.
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
    });
    try {
      const conn = await Promise.race([pending, aborted]);
      return wrap(conn, this.#tuner);
    } catch (error) {
      pending.then((c) => c.close(), () => {});
      throw error;
    } finally {
      signal.removeEventListener("abort", onAbort!);
    }
  }
}
