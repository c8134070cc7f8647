/**
 * A socket's file descriptor, where Deno does not tell it. Deno 2.9.6 shows the descriptor of
 * an accepted TCP socket only (`Deno.internal.fd`, src/wire/read_op.ts): not of a TCP socket it
 * connected, nor of any unix socket. The descriptor is what the keepalive timing, the input
 * poller (src/wire/poll_wait.ts), the reads and writes without an op, and the queue sizes of
 * a checkpoint's tail (src/wire/plain.ts) work on, so it is found among the process's
 * descriptors by the socket's two addresses, as the kernel names them (`getsockname(2)`,
 * `getpeername(2)`).
 *
 * A TCP connection's two addresses are its own. A unix connection's are not: every connection
 * accepted on one listening path has that path and an unnamed peer, every one connected to a
 * path the reverse. So a unix socket found is claimed until its connection closes, a claimed
 * one is not found again, and where two unclaimed sockets match, neither is taken: the
 * connection then goes without its descriptor (read and written through Deno's ops alone), as
 * it would where libc cannot be reached. A wrong descriptor would read another connection's
 * bytes; none is the safe side.
 *
 * libc is opened at the first {@linkcode SocketFinder.shared}, which must come while the `ffi`
 * permission is granted (src/permissions.ts revokes it after start).
 *
 * @module
 */

import { openLibc } from "../libc.ts";

/** One end of a TCP connection as the runtime reports it. */
export interface SocketName {
  hostname: string;
  port: number;
}

// Linux's numbers (<sys/socket.h>, <poll.h>).
const POLLNVAL = 0x20;
const AF_UNIX = 1;
const AF_INET = 2;
const AF_INET6 = 10;
/** Descriptors are handed out lowest first, so this many unused ones in a row end the search. */
const FREE_RUN_END = 1024;
const MAX_FD = 1 << 20;
/**
 * Descriptors asked at once whether they are open: one `poll(2)` with no events and no wait
 * marks each closed one `POLLNVAL`. One `fcntl(2)` each took some 110 us a search, most of it
 * for the free run that ends it.
 */
const BATCH = 1024;
/** `struct pollfd`: `int fd; short events; short revents;`. */
const POLLFD_SIZE = 8;
/** `sizeof(sa_family_t)`: the length of an unnamed unix socket's address. */
const FAMILY_LEN = 2;

const SYMBOLS = {
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  poll: { parameters: ["buffer", "usize", "i32"], result: "i32" },
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

function nameText(n: SocketName): string {
  return `${canonicalIp(n.hostname)}|${n.port}`;
}

/** A unix socket's address as {@linkcode sockaddrText} writes it: its path, or unnamed. */
function unixText(path: string | null): string {
  return path === null || path === "" ? "unix|" : `unix|${path}`;
}

const utf8 = new TextDecoder();

/**
 * `ip|port` of a `sockaddr_in` / `sockaddr_in6`, `unix|path` of a `sockaddr_un` (`unix|`
 * unnamed), of `len` bytes; null for another family.
 */
function sockaddrText(a: Uint8Array, len: number): string | null {
  const family = a[0] | (a[1] << 8);
  if (family === AF_UNIX) {
    if (len <= FAMILY_LEN) return unixText(null);
    const path = a.subarray(FAMILY_LEN, len);
    const end = path.indexOf(0);
    // An abstract address (a NUL first) is none of ours: Deno's addresses are paths.
    return end === 0 ? null : unixText(utf8.decode(end < 0 ? path : path.subarray(0, end)));
  }
  const port = (a[2] << 8) | a[3];
  if (family === AF_INET) return `${a[4]}.${a[5]}.${a[6]}.${a[7]}|${port}`;
  if (family !== AF_INET6) return null;
  const groups: string[] = [];
  for (let i = 8; i < 24; i += 2) groups.push(((a[i] << 8) | a[i + 1]).toString(16));
  return `${canonicalIp(groups.join(":"))}|${port}`;
}

/**
 * Finds sockets' descriptors by their addresses. {@linkcode SocketFinder.shared} opens libc
 * once per process; it is null where that cannot be done (not Linux, no `ffi` permission, no
 * libc.so.6), and then no descriptor is found.
 */
export class SocketFinder {
  readonly #libc: Libc;
  readonly #addr = new Uint8Array(128);
  readonly #len = new Uint32Array(1);
  readonly #pollfds = new Uint8Array(BATCH * POLLFD_SIZE);
  readonly #pollView = new DataView(this.#pollfds.buffer);
  /** Unix sockets found for a connection that is still open. */
  readonly #claimed = new Set<number>();

  static #shared: SocketFinder | null | undefined;
  /** Why {@linkcode SocketFinder.shared} is null. */
  static unavailable = "";

  private constructor(libc: Libc) {
    this.#libc = libc;
  }

  /**
   * The process's finder, opened on first call (which must come before the permissions are
   * dropped), or null with the reason in `unavailable`.
   */
  static shared(): SocketFinder | null {
    if (SocketFinder.#shared !== undefined) return SocketFinder.#shared;
    const libc = openLibc(SYMBOLS, "socket descriptors");
    if (typeof libc === "string") {
      SocketFinder.unavailable = libc;
      SocketFinder.#shared = null;
    } else SocketFinder.#shared = new SocketFinder(libc);
    return SocketFinder.#shared;
  }

  /** The descriptor of the TCP socket connecting `local` and `remote`, or -1. */
  tcp(local: SocketName, remote: SocketName): number {
    const found = this.#matching(nameText(local), nameText(remote), 1);
    return found.length === 1 ? found[0] : -1;
  }

  /**
   * The descriptor of the unix socket whose own address is `local` and whose peer's is
   * `remote` (null: unnamed), claimed until {@linkcode release}; -1 when there is none, or
   * more than one unclaimed (module doc).
   */
  unix(local: string | null, remote: string | null): number {
    const found = this.#matching(unixText(local), unixText(remote), 2);
    if (found.length !== 1) return -1;
    this.#claimed.add(found[0]);
    return found[0];
  }

  /** Gives up the claim on unix socket `fd`, before its connection closes. */
  release(fd: number): void {
    this.#claimed.delete(fd);
  }

  /** Up to `most` open, unclaimed descriptors whose addresses are `local` and `remote`. */
  #matching(local: string, remote: string, most: number): number[] {
    const found: number[] = [];
    const view = this.#pollView;
    let free = 0;
    for (let base = 3; base < MAX_FD && free < FREE_RUN_END; base += BATCH) {
      const n = Math.min(BATCH, MAX_FD - base);
      for (let i = 0; i < n; i++) {
        view.setInt32(i * POLLFD_SIZE, base + i, true);
        view.setInt32(i * POLLFD_SIZE + 4, 0, true);
      }
      this.#libc.poll(this.#pollfds, BigInt(n), 0);
      for (let i = 0; i < n && free < FREE_RUN_END; i++) {
        if (view.getInt16(i * POLLFD_SIZE + 6, true) & POLLNVAL) {
          free++;
          continue;
        }
        free = 0;
        const fd = base + i;
        if (this.#claimed.has(fd)) continue;
        // A listening socket has no peer: getpeername fails, and it is never taken.
        if (this.#name(this.#libc.getpeername, fd) !== remote) continue;
        if (this.#name(this.#libc.getsockname, fd) !== local) continue;
        found.push(fd);
        if (found.length === most) return found;
      }
    }
    return found;
  }

  #name(call: Libc["getpeername"], fd: number): string | null {
    this.#len[0] = this.#addr.length;
    if (call(fd, this.#addr, this.#len) !== 0) return null;
    return sockaddrText(this.#addr, Math.min(this.#len[0], this.#addr.length));
  }
}
