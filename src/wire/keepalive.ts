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
 * Deno does not expose a socket's file descriptor, so the descriptor is found by its addresses:
 * the one whose local and peer address are the connection's. libc is opened once at start,
 * while the `ffi` permission is still granted; the permission is revoked afterwards with the
 * others (src/permissions.ts), and only the five functions below stay callable. The same tuner
 * has the kernel acknowledge at once where it would hold our ACKs back ({@linkcode
 * TcpTuner.quickAck}: after a TLS handshake, after a QMP command).
 *
 * @module
 */

import { openLibc } from "../libc.ts";

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

/** One end of a TCP connection as the runtime reports it. */
export interface SocketName {
  hostname: string;
  port: number;
}

// Linux's numbers (<sys/socket.h>, <netinet/tcp.h>, <fcntl.h>).
const SOL_SOCKET = 1;
const SO_KEEPALIVE = 9;
const IPPROTO_TCP = 6;
const TCP_KEEPIDLE = 4;
const TCP_KEEPINTVL = 5;
const TCP_KEEPCNT = 6;
const TCP_USER_TIMEOUT = 18;
const TCP_QUICKACK = 12;
const F_GETFD = 1;
const AF_INET = 2;
const AF_INET6 = 10;
/** Descriptors are handed out lowest first, so this many unused ones in a row end the search. */
const FREE_RUN_END = 1024;
const MAX_FD = 1 << 20;

const SYMBOLS = {
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** The canonical text of an IP address, so Deno's and the kernel's spellings compare equal. */
export function canonicalIp(host: string): string {
  const h = host.startsWith("[") ? host.slice(1, -1) : host;
  if (!h.includes(":")) return h;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(h);
  if (mapped) return mapped[1];
  try {
    return new URL(`http://[${h}]/`).hostname.slice(1, -1);
  } catch {
    return h.toLowerCase();
  }
}

/** `ip|port` of a `sockaddr_in` / `sockaddr_in6`, or null for another family. */
function sockaddrText(a: Uint8Array): string | null {
  const family = a[0] | (a[1] << 8);
  const port = (a[2] << 8) | a[3];
  if (family === AF_INET) return `${a[4]}.${a[5]}.${a[6]}.${a[7]}|${port}`;
  if (family !== AF_INET6) return null;
  const groups: string[] = [];
  for (let i = 8; i < 24; i += 2) groups.push(((a[i] << 8) | a[i + 1]).toString(16));
  return `${canonicalIp(groups.join(":"))}|${port}`;
}

function nameText(n: SocketName): string {
  return `${canonicalIp(n.hostname)}|${n.port}`;
}

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
  readonly #addr = new Uint8Array(128);
  readonly #len = new Uint32Array(1);
  readonly #int = new Int32Array(1);
  readonly #intLen = new Uint32Array(1);

  static #shared: TcpTuner | null | undefined;
  /** Why {@linkcode TcpTuner.shared} is null, for the log line at start. */
  static unavailable = "";

  private constructor(libc: Libc, timing: KeepaliveTiming) {
    this.#libc = libc;
    this.timing = timing;
  }

  /**
   * The process's tuner with {@linkcode DEAD_PEER_TIMING}, opened on first call (which must
   * come before the permissions are dropped), or null with the reason in `unavailable`.
   */
  static shared(): TcpTuner | null {
    if (TcpTuner.#shared !== undefined) return TcpTuner.#shared;
    const libc = openLibc(SYMBOLS, "keepalive timing");
    if (typeof libc === "string") {
      TcpTuner.unavailable = libc;
      TcpTuner.#shared = null;
    } else TcpTuner.#shared = new TcpTuner(libc, DEAD_PEER_TIMING);
    return TcpTuner.#shared;
  }

  /**
   * Gives the TCP socket connecting `local` and `remote` our keepalive timing, and returns its
   * descriptor (for polling and {@linkcode TcpTuner.quickAck}), or -1 when no such socket is
   * found (it closed meanwhile); `fd`: the descriptor, where the caller knows it already (no
   * search then). An option the kernel refuses leaves its default.
   */
  tuneSocket(local: SocketName, remote: SocketName, fd = -1): number {
    const found = fd >= 0 ? fd : this.#find(local, remote);
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
    const fd = this.#find(local, remote);
    if (fd < 0) return null;
    return {
      keepalive: this.#get(fd, SOL_SOCKET, SO_KEEPALIVE) !== 0,
      idleS: this.#get(fd, IPPROTO_TCP, TCP_KEEPIDLE),
      intervalS: this.#get(fd, IPPROTO_TCP, TCP_KEEPINTVL),
      probes: this.#get(fd, IPPROTO_TCP, TCP_KEEPCNT),
      userTimeoutMs: this.#get(fd, IPPROTO_TCP, TCP_USER_TIMEOUT),
    };
  }

  #find(local: SocketName, remote: SocketName): number {
    const want = nameText(remote);
    const wantLocal = nameText(local);
    let free = 0;
    for (let fd = 3; fd < MAX_FD && free < FREE_RUN_END; fd++) {
      if (this.#libc.fcntl(fd, F_GETFD, 0) === -1) {
        free++;
        continue;
      }
      free = 0;
      if (this.#name(this.#libc.getpeername, fd) !== want) continue;
      if (this.#name(this.#libc.getsockname, fd) === wantLocal) return fd;
    }
    return -1;
  }

  #name(call: Libc["getpeername"], fd: number): string | null {
    this.#len[0] = this.#addr.length;
    return call(fd, this.#addr, this.#len) === 0 ? sockaddrText(this.#addr) : null;
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
