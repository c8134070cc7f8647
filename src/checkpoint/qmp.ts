/**
 * The checkpoint channel of KVM COLO (SPEC 7b): the primary QEMU's QMP monitor, reached
 * through an endpoint (`src/wire/endpoint.ts`, any ADDR form; usually `unix:PATH` to a
 * `-qmp unix:PATH,server=on,wait=off` monitor of its own) that reconnects with backoff. The
 * protocol lives in {@linkcode QmpSession}; this file only moves its bytes and drives its clock.
 *
 * @module
 */

import type { Logger } from "../log.ts";
import type { ChannelEvents, CheckpointChannel } from "./channel.ts";
import { QmpSession, type VmStateEvents } from "./qmp_session.ts";

/** Commands waiting to be written beyond this (1 MiB): the peer does not read (SPEC 8). */
export const MAX_OUTPUT_BYTES = 1 << 20;
/** How often the session's clock is driven (ms): polls and reply timeouts. */
const TICK_MS = 250;
const READ_SIZE = 64 * 1024;

/** What the channel needs of a connection: bytes in, bytes out, close. */
export interface ByteStream {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  close(): void;
  /** Leaves the kernel's delayed ACKs (TCP; see `Conn.quickAck`). */
  quickAck?(): void;
}

/**
 * What the channel needs of its endpoint: the public surface of `Endpoint` (named `qmp`),
 * which serves one peer at a time and connects again, or accepts the next, when it goes.
 */
export interface QmpEndpoint {
  readonly boundText: string;
  bind(): Promise<void>;
  serve(session: (conn: ByteStream) => Promise<void>): Promise<void>;
  close(): void;
}

const encoder = new TextEncoder();

/** Checkpoints over the primary QEMU's QMP monitor. */
export class QmpChannel implements CheckpointChannel {
  readonly kind = "qmp" as const;
  readonly #endpoint: QmpEndpoint;
  readonly #session: QmpSession;
  #conn: ByteStream | null = null;
  /** Why the channel ended the current connection, or null. */
  #dropReason: string | null = null;
  #queue: Uint8Array[] = [];
  #queuedBytes = 0;
  /** The connection a write loop runs for, or null. */
  #writer: ByteStream | null = null;
  #timer: ReturnType<typeof setInterval> | undefined;
  /** Set by {@linkcode QmpChannel.close}: the last detach summarises what was counted. */
  #closing = false;

  /**
   * `endpoint`: e.g. `new Endpoint("qmp", config.qmp, log)`. `watch`: see
   * {@linkcode QmpChannel.watcher}.
   */
  constructor(
    endpoint: QmpEndpoint,
    events: ChannelEvents,
    log: Logger,
    watch: VmStateEvents | null = null,
  ) {
    this.#endpoint = endpoint;
    this.#session = new QmpSession(
      {
        send: (command) => this.#send(command),
        drop: (reason) => this.#drop(reason),
        checkpointDone: (stopped) => events.checkpointDone(stopped),
        coloExit: (reason) => events.coloExit(reason),
        coloActive: () => events.coloActive(),
        vmStopped: (stopped) => events.vmStopped(stopped),
        peer: (connected) => events.peer(connected),
      },
      log,
      watch,
    );
  }

  /**
   * The secondary QEMU's monitor (`--qmp-secondary`): only its `STOP`s and `RESUME`s are
   * reported; it never takes a request and never decides a checkpoint.
   */
  static watcher(
    endpoint: QmpEndpoint,
    watch: VmStateEvents,
    peer: (connected: boolean) => void,
    log: Logger,
  ): QmpChannel {
    const none = () => {};
    return new QmpChannel(
      endpoint,
      { checkpointDone: none, coloExit: none, coloActive: none, vmStopped: none, peer },
      log,
      watch,
    );
  }

  /** True once the monitor accepted `qmp_capabilities`. */
  get connected(): boolean {
    return this.#session.ready;
  }

  get boundText(): string {
    return this.#endpoint.boundText;
  }

  /** The protocol state, for tests and the log. */
  get session(): QmpSession {
    return this.#session;
  }

  bind(): Promise<void> {
    return this.#endpoint.bind();
  }

  serve(): Promise<void> {
    return this.#endpoint.serve((conn) => this.#run(conn));
  }

  request(): boolean {
    return this.#session.request(performance.now());
  }

  close(): void {
    this.#closing = true;
    clearInterval(this.#timer);
    this.#endpoint.close();
    // Connected, the session summarises as it is detached.
    if (this.#conn === null) this.#session.flushLogs();
  }

  async #run(conn: ByteStream): Promise<void> {
    this.#conn = conn;
    this.#dropReason = null;
    const session = this.#session;
    session.attach(performance.now());
    this.#timer = setInterval(() => session.tick(performance.now()), TICK_MS);
    const buf = new Uint8Array(READ_SIZE);
    try {
      while (this.#dropReason === null) {
        let n: number | null;
        try {
          n = await conn.read(buf);
        } catch (error) {
          if (this.#dropReason !== null) break;
          throw error;
        }
        if (!n) break;
        session.push(buf.subarray(0, n), performance.now());
      }
    } finally {
      clearInterval(this.#timer);
      this.#conn = null;
      this.#queue = [];
      this.#queuedBytes = 0;
      session.detach(this.#closing);
    }
    // The endpoint logs the disconnect with this reason.
    if (this.#dropReason !== null) throw new Error(this.#dropReason);
  }

  #send(command: string): void {
    const conn = this.#conn;
    if (conn === null) return;
    const bytes = encoder.encode(command + "\n");
    this.#queue.push(bytes);
    this.#queuedBytes += bytes.length;
    if (this.#queuedBytes > MAX_OUTPUT_BYTES) {
      this.#drop(`the peer does not read: ${this.#queuedBytes} bytes of commands wait`);
      return;
    }
    if (this.#writer !== conn) this.#pump(conn);
  }

  /** One writer per connection; what queues while a write is under way goes out as one. */
  async #pump(conn: ByteStream): Promise<void> {
    this.#writer = conn;
    try {
      while (this.#conn === conn && this.#queue.length > 0) {
        const parts = this.#queue;
        this.#queue = [];
        let chunk = parts[0];
        if (parts.length > 1) {
          chunk = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
          let o = 0;
          for (const p of parts) {
            chunk.set(p, o);
            o += p.length;
          }
        }
        for (let o = 0; o < chunk.length;) o += await conn.write(chunk.subarray(o));
        // QEMU answers at once and often writes an event right after (STOP after the request
        // that starts a checkpoint, RESUME soon after a query-status reply): acknowledged
        // at once, its Nagle does not hold that event back (bench/README.md, issue 11).
        conn.quickAck?.();
        if (this.#conn === conn) this.#queuedBytes -= chunk.length;
      }
    } catch {
      // The connection failed under the write; its read loop sees the same and ends.
    } finally {
      if (this.#writer === conn) this.#writer = null;
    }
  }

  #drop(reason: string): void {
    if (this.#dropReason !== null) return;
    this.#dropReason = reason;
    try {
      this.#conn?.close();
    } catch {
      // already closed
    }
  }
}
