/**
 * What an endpoint needs from a transport: listen and accept, or connect (abortably), and then
 * a byte stream to read and write. Plain TCP and unix sockets are one transport, TLS another
 * (SPEC 11); endpoints, readers and writers see only these interfaces.
 *
 * @module
 */

import type { Address } from "./address.ts";

/** One peer's byte stream. */
export interface Conn {
  /** Reads into `p` (never empty); the number of bytes read, 0 or null at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes some of `p`; the number of bytes written. */
  write(p: Uint8Array): Promise<number>;
  /**
   * Writes `p[0, len)` at once if the socket takes it, past the runtime's write op: the bytes
   * the kernel took (0 or more), or -1 when `write` must do it (an error, or not available).
   * A stream's small writes (an answer) then cost no op, no promise and no view (issue 11).
   */
  trySend?(p: Uint8Array, len: number): number;
  /**
   * Optional: reads into `p` at once, without an op (`recv(2)`, `MSG_DONTWAIT`): the bytes
   * read, or 0 or less when none were (would block, the end, an error: the op then tells).
   * Only while no read op of this connection waits.
   */
  tryRecv?(p: Uint8Array): number;
  /**
   * Bytes written to the socket that its peer has not taken yet (the kernel's send queue,
   * `SIOCOUTQ`), or -1 where unknown: how a shutdown sees a slow peer read.
   */
  kernelQueued?(): number;
  /**
   * Bytes received and not read yet, or -1 where unknown: the kernel's receive queue
   * (`SIOCINQ`), and for TLS what it took from the socket and holds besides (the records in
   * the kernel counted as they are, encrypted). How a checkpoint knows how much of an input
   * was sent before it (src/comparator.ts, `#checkpointArrived`: the epoch's tail).
   */
  unread?(): number;
  /** Closes the stream. Idempotent. */
  close(): void;
  /** The peer as operators read it: `127.0.0.1:40312`, `[::1]:40312`, `unix`. */
  readonly peer: string;
  /** The socket's file descriptor where the transport knows it, for polling. */
  readonly fd?: number;
  /**
   * True when a read that has not settled by the time it returns settles only at a later turn
   * of the event loop: Deno's read op, whose result comes with the loop's poll for I/O. The
   * input pump then knows that a read which waited was a turn (src/input/pump.ts). Not for
   * reads that may settle later within the same turn (a TLS layer's, fed by its own reads).
   */
  readonly settlesOnTurn?: boolean;
  /**
   * True while bytes already taken from the socket wait for `read` (a TLS layer decrypts
   * ahead): the socket then need not be readable for the next read to return at once.
   */
  pending?(): boolean;
  /**
   * Has the kernel acknowledge the peer's next bytes at once. Writing a request that answers
   * what the peer sent makes Linux hold back our ACKs for a reply to carry them, and a peer
   * with Nagle on (QEMU's chardevs and monitors unless `nodelay=on`) then keeps its next small
   * write (an event after its reply) until the delayed-ACK timer fires: 40 ms. For a channel
   * of requests, replies and events, called after each write; TCP only, where the socket's
   * descriptor and libc are known.
   */
  quickAck?(): void;
}

/** A bound listen address. */
export interface Listener {
  /** The next peer (for TLS: once its handshake and authorization passed). */
  accept(): Promise<Conn>;
  /** Stops listening. Idempotent. */
  close(): void;
  /** Where it listens, port 0 resolved: `127.0.0.1:9001`, or the socket path. */
  readonly boundText: string;
}

/** Makes listeners and connections for addresses of one kind. */
export interface Transport {
  /** Binds `address` (a listen address). Throws Deno's errors as they are. */
  listen(address: Address): Promise<Listener>;
  /** Connects to `address` (a connect address); rejects once `signal` aborts. */
  connect(address: Address, signal: AbortSignal): Promise<Conn>;
}

/** Writes all of `p` to `w`, however many writes that takes. */
export async function writeAll(
  w: { write(p: Uint8Array): Promise<number> },
  p: Uint8Array,
): Promise<void> {
  for (let off = 0; off < p.length;) off += await w.write(p.subarray(off));
}
