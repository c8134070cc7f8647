/**
 * The TLS transport (SPEC 11), built on `node:tls`: `tls-listen:` requires a client
 * certificate signed by the CA (QEMU's `verify-peer=on`) and, with `--tls-authz`, one whose
 * subject DN is listed; `tls:` verifies the server's certificate and presents the client
 * certificate. A refused or failed handshake is one rate-limited warn line; nothing a refused
 * peer sent is ever read. (Deno.listenTls cannot ask for client certificates at all, so the
 * listener needs node:tls. Connects use it too, although Deno.connectTls sends at about half
 * the CPU (bench/tls.ts): only node:tls shows us the server's chain, which we check against
 * ca-cert.pem ourselves, since Deno.connectTls trusts Mozilla's roots besides the given CA.)
 *
 * Every socket reads ciphertext and plaintext into buffers of ours rather than node:tls's new
 * 64 KiB ArrayBuffer per read ({@linkcode readIntoOwnBuffers}; issue 11, bench/README.md).
 *
 * @module
 */

import net from "node:net";
import tls from "node:tls";
import { X509Certificate } from "node:crypto";
import { type Logger, ThrottledWarning } from "../log.ts";
import { AcceptFailures } from "./accept.ts";
import { reasonText } from "./endpoint.ts";
import type { Address } from "./address.ts";
import type { Conn, Listener, Transport } from "./transport.ts";
import { signedBy, TLS_FILES, type TlsCredentials } from "./tls_creds.ts";
import { subjectDn } from "./x509.ts";
import { DEAD_PEER_TIMING, type TcpTuner } from "./keepalive.ts";
import { type ScavengeNudge, TLS_SCAVENGE } from "./scavenge.ts";
import { BACKLOG_KEEP_BYTES, ByteBacklog } from "./byte_backlog.ts";
import { socketUnread } from "./plain.ts";

/** Above this many received bytes not yet read, the socket stops reading (back-pressure). */
const READ_HIGH_WATER = 1024 * 1024;
/**
 * The same, reading into buffers of ours: what is over stays in the kernel's socket buffer.
 * Half of what a backlog keeps, so that one backlog buffer serves a connection's whole life
 * (one let go and made anew at every fill was a pile of dead ArrayBuffers again).
 */
const BACKLOG_HIGH_WATER = BACKLOG_KEEP_BYTES / 2;
/** A peer that has not finished its handshake after this long is dropped. */
const HANDSHAKE_TIMEOUT_MS = 10_000;
/**
 * A peer that has sent not one byte (no ClientHello) after this long is dropped: a client
 * sends its ClientHello right after connecting, so a silent one only holds a slot.
 */
const HELLO_TIMEOUT_MS = 3_000;
/** Authorized peers waiting for the endpoint to take them; more are closed. */
const MAX_PENDING = 4;
/**
 * TCP connections a `tls-listen:` address keeps at once, in their handshake, waiting or
 * served (SPEC 8: an unauthenticated peer opening connections costs us a bounded ~35 KB each).
 * When all are taken, a new connection takes the slot of the handshake that made the least
 * progress (no byte received before some bytes, then the oldest), so that peers without a
 * certificate cannot keep an authorized one out (SPEC 11): its handshake, done in
 * milliseconds, is never the stalest. Only when no connection is in its handshake is the new
 * one closed, before any TLS state is made for it. TLS state is made only once a connection
 * has sent its first bytes.
 */
export const MAX_CONNECTIONS = 16;
/** Refused handshakes: the first is logged, then at most one summary line per interval. */
const REFUSAL_LOG_INTERVAL_MS = 10_000;
/** After our handshake, how long a server has to refuse our certificate by closing. */
const REFUSAL_GRACE_MS = 250;
const REFUSED_AFTER_HANDSHAKE = "the server closed the connection right after the handshake: " +
  "it refused our client certificate (its CA, or its tls-authz list)";
/** TCP keepalive on every connection (SPEC 11), when no {@linkcode TcpTuner} sets it all. */
const KEEPALIVE_DELAY_MS = DEAD_PEER_TIMING.idleS * 1000;

/** What {@linkcode TlsTransport} is made of. */
export interface TlsTransportOptions {
  creds: TlsCredentials;
  /** Accepted client subject DNs (`--tls-authz`); null accepts any certificate the CA signed. */
  authz: readonly string[] | null;
  log: Logger;
  /** A peer that has not finished its handshake after this long is dropped (default 10 s). */
  handshakeTimeoutMs?: number;
  /** A peer that has sent no byte after this long is dropped (default 3 s). */
  helloTimeoutMs?: number;
  /** Sets the keepalive timing of every connection; null leaves it to the kernel. */
  tuner?: TcpTuner | null;
  /**
   * Counts the bytes of every connection, to free `node:tls`'s buffers (default: the
   * program's).
   */
  scavenge?: ScavengeNudge;
}

function hostPort(host: string | undefined, port: number | undefined): string {
  const h = host ?? "?";
  return h.includes(":") ? `[${h}]:${port}` : `${h}:${port}`;
}

/** The peer of a TLS socket; after a failed handshake only its TCP socket still knows it. */
function peerOf(socket: tls.TLSSocket): string {
  const tcp = (socket as { _parent?: { remoteAddress?: string; remotePort?: number } })._parent;
  return hostPort(socket.remoteAddress ?? tcp?.remoteAddress, socket.remotePort ?? tcp?.remotePort);
}

/**
 * Closes a socket we are done with. Late errors from it (a reset racing the close) must not
 * reach Node's "unhandled 'error' event", which would end the program.
 */
function discard(socket: tls.TLSSocket): void {
  socket.on("error", () => {});
  socket.destroy();
}

function nodeErrorToDeno(error: unknown): unknown {
  const code = (error as { code?: string })?.code;
  const message = error instanceof Error ? error.message : String(error);
  switch (code) {
    case "EADDRINUSE":
      return new Deno.errors.AddrInUse(message);
    case "EACCES":
    case "EPERM":
      return new Deno.errors.PermissionDenied(message);
    case "EADDRNOTAVAIL":
      return new Deno.errors.AddrNotAvailable(message);
    case "ECONNREFUSED":
      return new Deno.errors.ConnectionRefused(message);
    default:
      return error;
  }
}

/**
 * The peer's certificate chain as the TLS stack received it, leaf first; checked against
 * ca-cert.pem by us as well, whatever roots the TLS stack trusts.
 */
function peerChain(socket: tls.TLSSocket): X509Certificate[] {
  const chain: X509Certificate[] = [];
  let c: tls.DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  while (c?.raw && chain.length < 8) {
    chain.push(new X509Certificate(c.raw));
    if (c.issuerCertificate === c) break;
    c = c.issuerCertificate;
  }
  return chain;
}

/**
 * The subject DN of a peer whose certificate chains to ca-cert.pem (checked here as well as
 * by the TLS stack), or why the peer is refused. Never throws: a peer's certificate cannot
 * crash the program.
 */
function peerSubject(socket: tls.TLSSocket, creds: TlsCredentials, role: string): string | Error {
  try {
    const chain = peerChain(socket);
    if (!socket.authorized || chain.length === 0 || !chainsToCa(chain, creds)) {
      return new Error(`${role} certificate not signed by ${TLS_FILES.ca}`);
    }
    return subjectDn(new Uint8Array(chain[0].raw));
  } catch {
    return new Error(`unreadable ${role} certificate`);
  }
}

/** True when each certificate from the leaf up is signed by the next, up to one of the CAs. */
function chainsToCa(chain: X509Certificate[], creds: TlsCredentials): boolean {
  for (let i = 0; i < chain.length; i++) {
    if (signedBy(chain[i], creds.caCerts)) return true;
    if (i + 1 >= chain.length || !signedBy(chain[i], [chain[i + 1]])) return false;
  }
  return false;
}

/** The TCP handle under a `node:tls` socket (Deno's node compatibility layer). */
interface RawHandle {
  readStop?(): unknown;
  readStart?(): unknown;
}

/** What Deno 2.9.6's `node:tls` reads through; none of it is public API. */
interface NativeTcpHandle extends RawHandle {
  useUserBuffer?(buffer: Uint8Array): unknown;
  onread?: (buffer?: ArrayBuffer | Uint8Array) => unknown;
}
interface TlsWrapHandle extends RawHandle {
  useUserBuffer?(buffer: Uint8Array): unknown;
  _nativeTcpHandle?: NativeTcpHandle;
}

/**
 * The TCP handle reads ciphertext into this buffer, and the TLS layer copies it at once
 * (Deno's `TLSWrap.receive`); a read, its copy and its decryption run in one call on the main
 * thread, so all connections share it.
 */
let cipherBuffer: Uint8Array | null = null;
/** The TLS layer copies plaintext here, at most this much per callback; shared likewise. */
let clearBuffer: Uint8Array | null = null;
const CIPHER_BUFFER_BYTES = 64 * 1024;
const CLEAR_BUFFER_BYTES = 16 * 1024;
/**
 * How often (ms) at most a connection's socket is told to acknowledge at once
 * ({@linkcode TcpTuner.quickAck}) as bytes come: the TLS layer may send (session tickets
 * after the handshake, a key update) at any moment and so put the kernel back into holding
 * ACKs; a call each time would be a system call per read.
 */
const QUICK_ACK_INTERVAL_MS = 10;
/** The Deno whose `node:tls` internals {@linkcode readIntoOwnBuffers} sets (the pinned one). */
const OWN_BUFFERS_DENO = "2.9.6";

function symbolNamed(o: object, description: string): symbol | undefined {
  return Object.getOwnPropertySymbols(o).find((s) => s.description === description);
}

/**
 * Makes `socket` read into our two shared buffers instead of a fresh 64 KiB ArrayBuffer for
 * each ciphertext read and another for each decrypted chunk (issue 11: those dead buffers
 * were the TLS rows' memory peaks and much of their CPU, in V8's full collections). Node's
 * `onread: { buffer, callback }` option does this for the plaintext of `tls.connect`, not for
 * a server's sockets nor for the ciphertext; this sets the same fields on any socket, and
 * points the TCP handle underneath at a buffer of ours as well. `deliver` gets each piece of
 * plaintext, `n` bytes at the start of the shared buffer, to copy before it returns; false
 * stops reading. Deno internals, found by name, and read in the source of the one Deno
 * version this is done on: on another version, or where any is missing, nothing is changed
 * and false is returned, and the socket's `data` events serve as before.
 */
function readIntoOwnBuffers(
  socket: tls.TLSSocket,
  deliver: (n: number, buffer: Uint8Array) => boolean,
): boolean {
  if (Deno.version.deno !== OWN_BUFFERS_DENO) return false;
  const handle = (socket as { _handle?: TlsWrapHandle })._handle;
  const tcp = handle?._nativeTcpHandle;
  const kBuffer = symbolNamed(socket, "kBuffer");
  const kBufferCb = symbolNamed(socket, "kBufferCb");
  const onread = tcp?.onread;
  if (
    typeof handle?.useUserBuffer !== "function" || typeof tcp?.useUserBuffer !== "function" ||
    typeof onread !== "function" || kBuffer === undefined || kBufferCb === undefined ||
    socket.destroyed || socket.readableEnded
  ) {
    return false;
  }
  const cipher = cipherBuffer ??= new Uint8Array(CIPHER_BUFFER_BYTES);
  const clear = clearBuffer ??= new Uint8Array(CLEAR_BUFFER_BYTES);
  const fields = socket as unknown as Record<symbol, unknown>;
  fields[kBuffer] = clear;
  fields[kBufferCb] = deliver;
  handle.useUserBuffer(clear);
  tcp.useUserBuffer(cipher);
  // With a buffer of ours the TCP handle reports a read without one: it is ours.
  tcp.onread = function (this: unknown, buffer?: ArrayBuffer | Uint8Array) {
    return onread.call(this, buffer ?? cipher);
  };
  // The handle took its `onread` when it started reading: a restart takes ours.
  tcp.readStop?.();
  tcp.readStart?.();
  return true;
}

/** One peer over a `node:tls` socket, read and written through {@linkcode Conn}. */
export class TlsConn implements Conn {
  readonly peer: string;
  /** The peer certificate's subject DN, as `--tls-authz` names it. */
  readonly subject: string;
  /**
   * True when the socket reads into buffers of ours ({@linkcode readIntoOwnBuffers}); false
   * where this Deno's `node:tls` does not allow it, and its `data` events serve instead.
   */
  readonly ownBuffers: boolean;
  /** The TCP socket's descriptor, where it was found (for polling the input). */
  readonly fd?: number;
  readonly #socket: tls.TLSSocket;
  /** Bytes received while no read was waiting (own buffers). */
  readonly #backlog = new ByteBacklog();
  /** The waiting read's buffer and how much of it is filled (own buffers). */
  #reader: Uint8Array | null = null;
  #filled = 0;
  /** True while reading is stopped for the high-water mark. */
  #stopped = false;
  /** Chunks from `data` events, the first read from at `#offset` (no own buffers). */
  readonly #chunks: Uint8Array[] = [];
  #offset = 0;
  #buffered = 0;
  #ended = false;
  #error: Error | null = null;
  #wake: (() => void) | null = null;
  /** Called once at the next bytes received (see {@linkcode onceData}). */
  #onData: (() => void) | null = null;
  /**
   * Has the kernel acknowledge at once ({@linkcode TcpTuner.quickAck}), or null; called with
   * bytes received, at most every {@linkcode QUICK_ACK_INTERVAL_MS}, and when it last was.
   */
  #quickAck: (() => void) | null = null;
  #quickAckAt = -Infinity;
  /** Fails the write under way, if any, once the socket is destroyed. */
  #gone: (() => void) | null = null;
  readonly #scavenge: ScavengeNudge;

  constructor(
    socket: tls.TLSSocket,
    subject: string,
    tuner: TcpTuner | null = null,
    scavenge: ScavengeNudge = TLS_SCAVENGE,
  ) {
    this.#socket = socket;
    this.#scavenge = scavenge;
    this.subject = subject;
    this.peer = peerOf(socket);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, KEEPALIVE_DELAY_MS);
    const fd = tuner?.tuneSocket(
      { hostname: socket.localAddress ?? "", port: socket.localPort ?? 0 },
      { hostname: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 },
    ) ?? -1;
    if (fd >= 0) {
      this.fd = fd;
      this.#quickAck = () => tuner!.quickAck(fd);
    }
    this.ownBuffers = readIntoOwnBuffers(socket, (n, buffer) => this.#deliver(n, buffer));
    if (this.ownBuffers) {
      // What was decrypted before (with the handshake) waits in the stream's own buffer.
      for (let c = socket.read() as Uint8Array | null; c !== null; c = socket.read()) {
        this.#deliver(c.length, c);
      }
    } else {
      socket.on("data", (chunk: Uint8Array) => {
        this.#ackNow();
        this.#chunks.push(chunk);
        this.#buffered += chunk.length;
        this.#scavenge.count(chunk.length);
        if (this.#buffered >= READ_HIGH_WATER) this.#pause(true);
        this.#notify();
      });
    }
    socket.on("end", () => {
      this.#ended = true;
      this.#notify();
    });
    socket.on("error", (error: Error) => {
      this.#error ??= error;
      this.#notify();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#notify();
    });
  }

  /** Runs `fn` once, at the next bytes received; null cancels. */
  onceData(fn: (() => void) | null): void {
    this.#onData = fn;
  }

  /**
   * Takes `buffer[0, n)` (own buffers): into the waiting read's buffer while it has room and
   * nothing is older, the rest into the backlog. False stops reading (the high-water mark).
   */
  #deliver(n: number, buffer: Uint8Array): boolean {
    this.#ackNow();
    let from = 0;
    const reader = this.#reader;
    if (reader !== null && this.#backlog.length === 0) {
      from = Math.min(n, reader.length - this.#filled);
      reader.set(from === buffer.length ? buffer : buffer.subarray(0, from), this.#filled);
      this.#filled += from;
    }
    this.#backlog.push(buffer, from, n);
    const more = this.#backlog.length < BACKLOG_HIGH_WATER;
    if (!more && !this.#stopped) {
      this.#stopped = true;
      this.#tcp()?.readStop?.();
    }
    this.#notify();
    return more;
  }

  /** Bytes came: the kernel acknowledges at once, unless it was told so very recently. */
  #ackNow(): void {
    if (this.#quickAck === null) return;
    const now = performance.now();
    if (now - this.#quickAckAt < QUICK_ACK_INTERVAL_MS) return;
    this.#quickAckAt = now;
    this.#quickAck();
  }

  /** The TCP handle under the TLS socket. */
  #tcp(): RawHandle | undefined {
    return (this.#socket as { _parent?: { _handle?: RawHandle } })._parent?._handle ??
      (this.#socket as { _handle?: TlsWrapHandle })._handle?._nativeTcpHandle;
  }

  /**
   * Stops or restarts reading (SPEC 8). Deno 2.9.6's `node:tls` goes on reading the TCP socket
   * under a paused TLS socket and keeps what it decrypts out of sight (a peer could grow our
   * memory by all it sends), so the TCP handle underneath is stopped too.
   */
  #pause(on: boolean): void {
    const tcp = this.#tcp();
    if (on) {
      this.#socket.pause();
      tcp?.readStop?.();
    } else {
      tcp?.readStart?.();
      this.#socket.resume();
    }
  }

  #notify(): void {
    const onData = this.#onData;
    if (onData !== null && (this.#filled > 0 || this.#backlog.length > 0 || this.#buffered > 0)) {
      this.#onData = null;
      onData();
    }
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
    // The peer's end of its stream leaves ours writable; an error or a destroyed socket not.
    if (this.#error || this.#socket.destroyed) this.#gone?.();
  }

  quickAck(): void {
    this.#quickAck?.();
  }

  pending(): boolean {
    return this.#filled > 0 || this.#backlog.length > 0 || this.#buffered > 0;
  }

  unread(): number {
    if (this.fd === undefined || this.#socket.destroyed) return -1;
    const kernel = socketUnread(this.fd);
    if (kernel < 0) return -1;
    return kernel + this.#filled + this.#backlog.length + this.#buffered +
      this.#socket.readableLength;
  }

  read(p: Uint8Array): Promise<number | null> {
    return this.ownBuffers ? this.#readOwn(p) : this.#readChunks(p);
  }

  async #readOwn(p: Uint8Array): Promise<number | null> {
    if (p.length === 0) return 0;
    for (;;) {
      if (this.#backlog.length > 0) {
        const n = this.#backlog.take(p);
        if (this.#stopped && this.#backlog.length < BACKLOG_HIGH_WATER / 2) {
          this.#stopped = false;
          this.#tcp()?.readStart?.();
          this.#socket.read(0); // restarts the TLS layer's reads
        }
        return n;
      }
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      this.#reader = p;
      this.#filled = 0;
      await new Promise<void>((resolve) => this.#wake = resolve);
      const n = this.#filled;
      this.#reader = null;
      this.#filled = 0;
      if (n > 0) return n;
    }
  }

  async #readChunks(p: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    let n = 0;
    while (n < p.length && this.#chunks.length > 0) {
      const chunk = this.#chunks[0];
      const take = Math.min(p.length - n, chunk.length - this.#offset);
      p.set(chunk.subarray(this.#offset, this.#offset + take), n);
      n += take;
      this.#offset += take;
      if (this.#offset === chunk.length) {
        this.#chunks.shift();
        this.#offset = 0;
      }
    }
    this.#buffered -= n;
    if (this.#socket.isPaused() && this.#buffered < READ_HIGH_WATER / 2) this.#pause(false);
    return n;
  }

  write(p: Uint8Array): Promise<number> {
    if (this.#error) return Promise.reject(this.#error);
    if (this.#socket.destroyed) return Promise.reject(new Deno.errors.BrokenPipe("closed"));
    // node:tls keeps `p` until it has encrypted it and handed it to the TCP socket, and the
    // caller reuses `p` once this settles: so it settles at the write's callback, as a plain
    // socket's write does once the kernel has the bytes. (A copy per write instead left a dead
    // ArrayBuffer of up to 128 KiB each, and more of V8's full collections: bench/README.md.)
    this.#scavenge.count(p.length);
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (error?: Error | null) => {
        if (settled) return;
        settled = true;
        if (this.#gone === gone) this.#gone = null;
        if (error) reject(error);
        else resolve(p.length);
      };
      // Should the socket be destroyed without calling back, the write fails all the same.
      const gone = () => settle(this.#error ?? new Deno.errors.BrokenPipe("closed"));
      this.#gone = gone;
      this.#socket.write(p, settle);
    });
  }

  close(): void {
    this.#ended = true;
    this.#socket.destroy(); // its "error" listener stays: late errors are harmless
    this.#notify();
  }
}

let readPathNoted = false;

/** Logs once, at debug level, whether TLS sockets read into buffers of ours. */
function noteReadPath(log: Logger, conn: TlsConn): void {
  if (readPathNoted) return;
  readPathNoted = true;
  log.debug("tls-read-path", { own_buffers: conn.ownBuffers, deno: Deno.version.deno });
}

/** A TCP connection to a `tls-listen:` address, from its accept until it closes. */
interface Slot {
  /** True until the TLS server's handshake on it succeeded. */
  handshaking: boolean;
  /**
   * Drops it if it has sent nothing by {@linkcode HELLO_TIMEOUT_MS}, or not finished its
   * handshake by the handshake timeout; cleared when it has, or when it closes.
   */
  timer: ReturnType<typeof setTimeout> | undefined;
}

/**
 * The connection to drop to make room: of those in their handshake, the oldest that sent no
 * byte, or else the oldest. `slots` iterates oldest first; at most {@linkcode MAX_CONNECTIONS}.
 */
function stalest(slots: Map<net.Socket, Slot>): net.Socket | null {
  let oldest: net.Socket | null = null;
  for (const [socket, slot] of slots) {
    if (!slot.handshaking) continue;
    if (socket.bytesRead === 0) return socket;
    oldest ??= socket;
  }
  return oldest;
}

/** A `tls-listen:` address: peers come out of `accept()` only once authorized. */
class TlsListener implements Listener {
  readonly #server: tls.Server;
  readonly #front: net.Server;
  readonly #pending: TlsConn[] = [];
  /** Every TCP connection the listener keeps (SPEC 8), oldest first. */
  readonly #slots = new Map<net.Socket, Slot>();
  #waiter: { resolve: (c: TlsConn) => void; reject: (e: Error) => void } | null = null;
  readonly #log: Logger;
  readonly #address: string;
  #closed = false;
  boundText = "";

  constructor(address: Address, options: TlsTransportOptions, server: KeyPairPem) {
    const { creds, authz, log } = options;
    this.#log = log;
    this.#address = address.text;
    // Refused handshakes: the first logged at once, then one line per interval with a count.
    const refusals = new ThrottledWarning(log, "tls-refused", REFUSAL_LOG_INTERVAL_MS);
    const noteRefusal = (peer: string, reason: string) =>
      refusals.note({ address: address.text, peer, reason });
    this.#server = tls.createServer({
      key: server.key,
      cert: server.cert,
      ca: creds.caPem,
      requestCert: true,
      rejectUnauthorized: true,
      // node:tls's own handshake timer is not cancelled when a connection closes before its
      // handshake ends (Deno 2.9): its closure kept the socket, ~6 KB of heap and ~20 KB of
      // RSS, for the whole timeout, so connections opened and closed in a loop grew the program
      // by their rate times 10 s. No timer there (<= 0); ours, per slot, is cleared on close.
      handshakeTimeout: -1,
    });
    // Handshakes we dropped to make room or for silence: one class of their own, so that an
    // attack's churn does not hide the refusal of a certificate.
    const drops = new ThrottledWarning(log, "tls-handshake-dropped", REFUSAL_LOG_INTERVAL_MS);
    const slots = this.#slots;
    const helloTimeoutMs = options.helloTimeoutMs ?? HELLO_TIMEOUT_MS;
    const handshakeTimeoutMs = options.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS;
    /** Frees the slot of `socket` now, whether or not its close is seen later. */
    const free = (socket: net.Socket) => {
      const slot = slots.get(socket);
      if (slot === undefined) return;
      clearTimeout(slot.timer);
      slots.delete(socket);
    };
    /** Connections we dropped, whose handshake failing is then no refusal to log. */
    const dropped = new WeakSet<net.Socket>();
    const drop = (socket: net.Socket, reason: string) => {
      free(socket);
      dropped.add(socket);
      drops.note({
        address: address.text,
        peer: hostPort(socket.remoteAddress, socket.remotePort),
        reason,
      });
      socket.destroy();
    };
    this.#server.on("tlsClientError", (error: Error, socket: tls.TLSSocket) => {
      // A handshake we dropped ourselves was logged as such.
      const tcp = (socket as { _parent?: net.Socket })._parent;
      if (tcp === undefined || !dropped.has(tcp)) noteRefusal(peerOf(socket), error.message);
      discard(socket);
    });
    // The TCP listener in front keeps the bound: a new connection past it takes the slot of the
    // stalest handshake, or is closed before the TLS server sees it (a TLS socket made even for
    // a closed connection costs ~40 KB that stays).
    this.#front = net.createServer((socket: net.Socket) => {
      if (slots.size >= MAX_CONNECTIONS) {
        const victim = stalest(slots);
        if (victim === null) {
          noteRefusal(
            hostPort(socket.remoteAddress, socket.remotePort),
            `${MAX_CONNECTIONS} authorized connections already (waiting or served)`,
          );
          socket.destroy();
          return;
        }
        drop(
          victim,
          `${MAX_CONNECTIONS} connections already: the stalest handshake made room for a new one`,
        );
      }
      const slot: Slot = { handshaking: true, timer: undefined };
      const helloMs = Math.min(helloTimeoutMs, handshakeTimeoutMs);
      slot.timer = setTimeout(() => {
        slot.timer = undefined;
        if (!slot.handshaking) return;
        if (socket.bytesRead === 0) return drop(socket, `no ClientHello within ${helloMs} ms`);
        slot.timer = setTimeout(() => {
          slot.timer = undefined;
          if (slot.handshaking) drop(socket, `no handshake within ${handshakeTimeoutMs} ms`);
        }, handshakeTimeoutMs - helloMs);
      }, helloMs);
      slots.set(socket, slot);
      socket.once("close", () => free(socket));
      // TLS state only once the peer has said something (its ClientHello, read into the
      // socket's buffer, where the TLS socket takes it from): a silent connection costs a TCP
      // socket alone, and a crowd of them taking each other's slots does not make (and leave
      // to the garbage collector) a TLS socket each. 4,000 silent connections grew the program
      // by 40-50 MiB (soak trial 10, idle-clients).
      socket.once("readable", () => {
        if (!slots.has(socket)) return;
        if (socket.readableLength === 0) {
          // The peer closed without a byte: nothing to make TLS state for.
          free(socket);
          socket.destroy();
          return;
        }
        this.#server.emit("connection", socket);
      });
    });
    this.#server.on("secureConnection", (socket: tls.TLSSocket) => {
      const tcp = (socket as { _parent?: net.Socket })._parent;
      const slot = tcp && slots.get(tcp);
      if (slot) {
        slot.handshaking = false;
        clearTimeout(slot.timer);
      }
      const peer = peerOf(socket);
      const refuse = (reason: string) => {
        discard(socket);
        noteRefusal(peer, reason);
      };
      if (this.#closed) return discard(socket);
      const subject = peerSubject(socket, creds, "client");
      if (subject instanceof Error) return refuse(subject.message);
      if (authz && !authz.includes(subject)) {
        return refuse(`subject "${subject}" not in --tls-authz`);
      }
      const conn = new TlsConn(socket, subject, options.tuner, options.scavenge);
      noteReadPath(log, conn);
      if (this.#waiter) {
        const w = this.#waiter;
        this.#waiter = null;
        w.resolve(conn);
      } else if (this.#pending.length < MAX_PENDING) {
        this.#pending.push(conn);
        // A peer that leaves while waiting leaves the queue too, so it never fills with dead ones.
        socket.once("close", () => {
          const i = this.#pending.indexOf(conn);
          if (i >= 0) this.#pending.splice(i, 1);
        });
      } else {
        conn.close();
        log.warn("tls-pending-full", { address: address.text, peer });
      }
    });
  }

  listen(host: string, port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (error: Error) => reject(nodeErrorToDeno(error));
      this.#front.once("error", onError);
      this.#front.listen(port, host, () => {
        this.#front.off("error", onError);
        // After binding, a failing accept is logged (a peer's doing or a shortage, never a
        // bug: warn, rate-limited), never thrown out of an event handler.
        const failures = new AcceptFailures(this.#log, { address: this.#address });
        this.#front.on("error", (error: Error) => failures.failed(nodeErrorToDeno(error)));
        const a = this.#front.address();
        if (a && typeof a === "object") this.boundText = hostPort(a.address, a.port);
        resolve();
      });
    });
  }

  accept(): Promise<Conn> {
    const next = this.#pending.shift();
    if (next) return Promise.resolve(next);
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("listener closed"));
    if (this.#waiter) return Promise.reject(new Deno.errors.Busy("accept already pending"));
    return new Promise((resolve, reject) => this.#waiter = { resolve, reject });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#front.close();
    // Handshakes under way end with the listener (their timers too); peers taken stay theirs.
    for (const [socket, slot] of this.#slots) {
      clearTimeout(slot.timer);
      if (slot.handshaking) socket.destroy();
    }
    this.#slots.clear();
    for (const c of this.#pending.splice(0)) c.close();
    this.#waiter?.reject(new Deno.errors.BadResource("listener closed"));
    this.#waiter = null;
  }
}

type KeyPairPem = { cert: string; key: string };

/** `tls:` and `tls-listen:` addresses (SPEC 11). */
export class TlsTransport implements Transport {
  readonly #options: TlsTransportOptions;

  constructor(options: TlsTransportOptions) {
    this.#options = options;
  }

  async listen(address: Address): Promise<Listener> {
    if (address.transport !== "tcp") throw new TypeError(`${address.text} is not a tls address`);
    const server = this.#options.creds.server;
    if (!server) throw new Error(`no ${TLS_FILES.serverCert} loaded for ${address.text}`);
    const listener = new TlsListener(address, this.#options, server);
    await listener.listen(address.host, address.port);
    return listener;
  }

  connect(address: Address, signal: AbortSignal): Promise<Conn> {
    if (address.transport !== "tcp") throw new TypeError(`${address.text} is not a tls address`);
    const { creds } = this.#options;
    const client = creds.client;
    if (!client) throw new Error(`no ${TLS_FILES.clientCert} loaded for ${address.text}`);
    signal.throwIfAborted();
    return new Promise((resolve, reject) => {
      const socket = tls.connect({
        host: address.host,
        port: address.port,
        ca: creds.caPem,
        cert: client.cert,
        key: client.key,
        rejectUnauthorized: true,
      });
      let timer: ReturnType<typeof setTimeout> | undefined;
      const settle = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        socket.off("error", fail);
        socket.off("close", onClose);
      };
      const fail = (error: unknown) => {
        settle();
        discard(socket);
        reject(nodeErrorToDeno(error));
      };
      // A server that takes the TCP connection and never answers the ClientHello is given up
      // when the endpoint's connect timeout aborts `signal`; the line says how far it got.
      let tcpConnected = false;
      let secured = false;
      socket.once("connect", () => tcpConnected = true);
      const onAbort = () =>
        fail(
          tcpConnected && !secured
            ? new Error(`no TLS handshake (${reasonText(signal.reason)})`)
            : signal.reason,
        );
      const onClose = () => fail(new Error(REFUSED_AFTER_HANDSHAKE));
      signal.addEventListener("abort", onAbort, { once: true });
      socket.once("error", fail);
      socket.once("secureConnect", () => {
        secured = true;
        const subject = peerSubject(socket, creds, "server");
        if (subject instanceof Error) return fail(subject);
        // TLS 1.3: the server judges our certificate after our side of the handshake is done
        // (QEMU's tls-authz closes at once). A close within the grace is that refusal, and a
        // connect failure with backoff, not a peer that comes and goes ten times a second.
        const conn = new TlsConn(socket, subject, this.#options.tuner, this.#options.scavenge);
        noteReadPath(this.#options.log, conn);
        const succeed = () => {
          settle();
          conn.onceData(null);
          resolve(conn);
        };
        socket.once("close", onClose);
        conn.onceData(succeed);
        timer = setTimeout(succeed, REFUSAL_GRACE_MS);
      });
    });
  }
}
