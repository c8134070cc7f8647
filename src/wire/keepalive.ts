/**
 * Dead peers within a minute (SPEC 11): TCP keepalive with our own timing on every TCP
 * connection. Deno's `setKeepAlive` turns keepalive on but leaves its timing to the kernel
 * (Linux: 2 h idle, then 9 probes 75 s apart), and `node:net`'s delay sets only the idle time.
 * So on Linux the socket options are set through libc: probes after 30 s of silence, 5 s
 * apart, 5 unanswered give the peer up, and `TCP_USER_TIMEOUT` gives up a peer that leaves
 * what we sent unacknowledged for as long (keepalive never probes while data is in flight, and
 * the kernel retransmits for some 15 minutes). Either way the endpoint is free again after
 * about 55 s.
 *
 * Deno does not expose a connected socket's file descriptor, so the descriptor is found by its
 * addresses (src/wire/socket_fd.ts). libc is opened once at start, while the `ffi` permission
 * is still granted; the permission is revoked afterwards with the others (src/permissions.ts),
 * and only the functions opened stay callable. The same tuner has the kernel acknowledge at
 * once where it would hold our ACKs back ({@linkcode TcpTuner.quickAck}: after a TLS
 * handshake, after a QMP command).
 *
 * @module
 */

import { openLibc } from "../libc.ts";
import { SocketFinder, type SocketName } from "./socket_fd.ts";

/** When a silent peer is given up (SPEC 11: within a minute). */
export interface KeepaliveTiming {
  /** Seconds of silence before the first probe (`TCP_KEEPIDLE`). */
  idleS: number;
  /** Seconds between probes (`TCP_KEEPINTVL`). */
  intervalS: number;
  /** Unanswered probes that end the connection (`TCP_KEEPCNT`). */
  probes: number;
}

/** The default: a dead peer is noticed 30 + 5 x 5 = 55 s after it last answered. */
export const DEAD_PEER_TIMING: KeepaliveTiming = { idleS: 30, intervalS: 5, probes: 5 };

/** How long until a silent peer is given up with `timing`, in milliseconds. */
export function deadPeerAfterMs(timing: KeepaliveTiming): number {
  return (timing.idleS + timing.intervalS * timing.probes) * 1000;
}

/** What a socket's options read back as (tests, and the log at start). */
export interface KeepaliveSettings {
  keepalive: boolean;
  idleS: number;
  intervalS: number;
  probes: number;
  userTimeoutMs: number;
}

// Linux's numbers (<sys/socket.h>, <netinet/tcp.h>).
const SOL_SOCKET = 1;
const SO_KEEPALIVE = 9;
const IPPROTO_TCP = 6;
const TCP_KEEPIDLE = 4;
const TCP_KEEPINTVL = 5;
const TCP_KEEPCNT = 6;
const TCP_USER_TIMEOUT = 18;
const TCP_QUICKACK = 12;

const SYMBOLS = {
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/**
 * Turns keepalive on for `tcp`, with `tuner`'s timing where there is one (else the kernel's).
 * Returns the socket's descriptor where the tuner found it (`fd`: where the caller knows it
 * already), else -1.
 */
export function keepAlive(tcp: Deno.TcpConn, tuner: TcpTuner | null, fd = -1): number {
  tcp.setKeepAlive(true);
  return tuner?.tuneSocket(tcp.localAddr, tcp.remoteAddr, fd) ?? -1;
}

/**
 * Sets keepalive timing on TCP sockets, found by their addresses. {@linkcode TcpTuner.shared}
 * opens libc once per process; it is null where that cannot be done (not Linux, no `ffi`
 * permission, no libc.so.6), and then the kernel's timing applies.
 */
export class TcpTuner {
  readonly timing: KeepaliveTiming;
  readonly #libc: Libc;
  readonly #finder: SocketFinder;
  readonly #int = new Int32Array(1);
  readonly #intLen = new Uint32Array(1);

  static #shared: TcpTuner | null | undefined;
  /** Why {@linkcode TcpTuner.shared} is null, for the log line at start. */
  static unavailable = "";

  private constructor(libc: Libc, finder: SocketFinder, timing: KeepaliveTiming) {
    this.#libc = libc;
    this.#finder = finder;
    this.timing = timing;
  }

  /**
   * The process's tuner with {@linkcode DEAD_PEER_TIMING}, opened on first call (which must
   * come before the permissions are dropped), or null with the reason in `unavailable`.
   */
  static shared(): TcpTuner | null {
    if (TcpTuner.#shared !== undefined) return TcpTuner.#shared;
    const libc = openLibc(SYMBOLS, "keepalive timing");
    const finder = SocketFinder.shared();
    if (typeof libc === "string" || finder === null) {
      TcpTuner.unavailable = typeof libc === "string" ? libc : SocketFinder.unavailable;
      TcpTuner.#shared = null;
    } else TcpTuner.#shared = new TcpTuner(libc, finder, DEAD_PEER_TIMING);
    return TcpTuner.#shared;
  }

  /**
   * Gives the TCP socket connecting `local` and `remote` our keepalive timing, and returns its
   * descriptor (for polling and {@linkcode TcpTuner.quickAck}), or -1 when no such socket is
   * found (it closed meanwhile); `fd`: the descriptor, where the caller knows it already (no
   * search then). An option the kernel refuses leaves its default.
   */
  tuneSocket(local: SocketName, remote: SocketName, fd = -1): number {
    const found = fd >= 0 ? fd : this.#finder.tcp(local, remote);
    if (found >= 0) this.#tuneFd(found);
    return found;
  }

  #tuneFd(fd: number): boolean {
    const t = this.timing;
    return this.#set(fd, SOL_SOCKET, SO_KEEPALIVE, 1) &&
      this.#set(fd, IPPROTO_TCP, TCP_KEEPIDLE, t.idleS) &&
      this.#set(fd, IPPROTO_TCP, TCP_KEEPINTVL, t.intervalS) &&
      this.#set(fd, IPPROTO_TCP, TCP_KEEPCNT, t.probes) &&
      this.#set(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, deadPeerAfterMs(t));
  }

  /**
   * Sends the ACK the kernel holds back on socket `fd`, if any, and has it acknowledge at once
   * from now on. When we write soon after the peer did (a TLS handshake's flight and session
   * tickets, a QMP command), Linux takes the connection for a conversation and holds back its
   * ACKs for a reply to carry them. A peer without `TCP_NODELAY` (QEMU's chardevs and monitors
   * unless `nodelay=on`) then keeps its next small write until the last is acknowledged: 40 ms
   * (bench/README.md, issue 11). Our next write may start that again. False when the kernel
   * refuses.
   */
  quickAck(fd: number): boolean {
    return this.#set(fd, IPPROTO_TCP, TCP_QUICKACK, 1);
  }

  /** The keepalive options of the socket connecting `local` and `remote`, or null. */
  read(local: SocketName, remote: SocketName): KeepaliveSettings | null {
    const fd = this.#finder.tcp(local, remote);
    if (fd < 0) return null;
    return {
      keepalive: this.#get(fd, SOL_SOCKET, SO_KEEPALIVE) !== 0,
      idleS: this.#get(fd, IPPROTO_TCP, TCP_KEEPIDLE),
      intervalS: this.#get(fd, IPPROTO_TCP, TCP_KEEPINTVL),
      probes: this.#get(fd, IPPROTO_TCP, TCP_KEEPCNT),
      userTimeoutMs: this.#get(fd, IPPROTO_TCP, TCP_USER_TIMEOUT),
    };
  }

  #set(fd: number, level: number, option: number, value: number): boolean {
    this.#int[0] = value;
    return this.#libc.setsockopt(fd, level, option, this.#int, 4) === 0;
  }

  #get(fd: number, level: number, option: number): number {
    this.#int[0] = -1;
    this.#intLen[0] = 4;
    return this.#libc.getsockopt(fd, level, option, this.#int, this.#intLen) === 0
      ? this.#int[0]
      : -1;
  }
}
