/**
 * notify-dev as a {@linkcode CheckpointChannel} (SPEC 7a): `DO_CHECKPOINT` out, `COLO_CHECKPOINT`
 * and `COLO_USERSPACE_PROXY_INIT` in. Bounded whatever the peer does (SPEC 8): a peer that does
 * not read is disconnected once 1 MiB of output waits for it, and unknown or repeated messages
 * are logged once per class, then summarised.
 *
 * @module
 */

import { type ClassLog, type Logger, ThrottledWarning, writeFailedLines } from "../log.ts";
import { FrameWriter } from "../output/writer.ts";
import { FrameDecoder, NET_BUFSIZE } from "../wire/codec.ts";
import { type Endpoint, settledWithin } from "../wire/endpoint.ts";
import type { Conn } from "../wire/transport.ts";
import type { ChannelEvents, CheckpointChannel } from "./channel.ts";
import {
  classifyNotify,
  COLO_COMPARE_GET_XEN_INIT,
  describeMessage,
  DO_CHECKPOINT,
} from "./notify.ts";

/** Output waiting for a control peer beyond this disconnects it (SPEC 8). */
export const CONTROL_BACKLOG_MAX = 1024 * 1024;
/** How long a peer whose stream broke is given to take the answers sent before it broke (ms). */
const FLUSH_BEFORE_RESET_MS = 1000;

const encoder = new TextEncoder();
const DO_CHECKPOINT_BYTES = encoder.encode(DO_CHECKPOINT);
const GET_XEN_INIT_BYTES = encoder.encode(COLO_COMPARE_GET_XEN_INIT);

/** The Xen COLO notify channel. */
export class NotifyChannel implements CheckpointChannel {
  readonly kind = "notify-dev" as const;
  readonly #endpoint: Endpoint;
  readonly #events: ChannelEvents;
  readonly #log: Logger;
  readonly #classes: ClassLog;
  readonly #out: FrameWriter;
  readonly #onBacklogDrop: () => void;
  /** A peer's broken stream: its fault (warn), a line per interval at most (SPEC 8). */
  readonly #oversize: ThrottledWarning;
  #conn: Conn | null = null;

  /** `endpoint`: the notify-dev endpoint, served by this channel. */
  constructor(
    endpoint: Endpoint,
    events: ChannelEvents,
    log: Logger,
    classes: ClassLog,
    onBacklogDrop: () => void = () => {},
  ) {
    this.#endpoint = endpoint;
    this.#events = events;
    this.#log = log;
    this.#classes = classes;
    this.#onBacklogDrop = onBacklogDrop;
    this.#oversize = new ThrottledWarning(log, "oversize-frame");
    const writeFailed = writeFailedLines(log, "notify-dev");
    this.#out = new FrameWriter({
      vnet: false,
      highWater: CONTROL_BACKLOG_MAX,
      lowWater: CONTROL_BACKLOG_MAX / 2,
      maxBufferedDisconnected: 0,
      onWriteError: (e) => writeFailed.note({ error: String(e) }),
    });
    this.#endpoint.onPeer((connected) => events.peer(connected));
  }

  get connected(): boolean {
    return this.#out.connected;
  }

  get boundText(): string {
    return this.#endpoint.boundText;
  }

  bind(): Promise<void> {
    return this.#endpoint.bind();
  }

  serve(): Promise<void> {
    return this.#endpoint.serve((conn) => this.#session(conn));
  }

  request(): boolean {
    return this.#send(DO_CHECKPOINT_BYTES);
  }

  close(): void {
    this.#endpoint.close();
  }

  async #session(conn: Conn): Promise<void> {
    this.#conn = conn;
    this.#out.attach(conn);
    const decoder = new FrameDecoder({
      onFrame: (bytes, at, size) => this.#onMessage(bytes.subarray(at, at + size)),
    }, false);
    const buf = new Uint8Array(4096);
    try {
      while (true) {
        const n = await conn.read(buf);
        if (!n) break;
        const broken = decoder.push(buf.subarray(0, n));
        if (broken) {
          this.#oversize.note({
            endpoint: "notify-dev",
            len: broken.len,
            max: NET_BUFSIZE,
            action: "connection reset",
          });
          // Answers to the messages before it (a COLO_USERSPACE_PROXY_INIT read in the same
          // chunk) still go out first, as QEMU's, which are written as each is read.
          await settledWithin(this.#out.idle(), FLUSH_BEFORE_RESET_MS);
          return;
        }
        if (this.#conn !== conn) return; // dropped for not reading
      }
    } finally {
      this.#conn = null;
      this.#out.detach(conn);
    }
  }

  /** Sends one message; a peer with too much unread output is disconnected instead. */
  #send(bytes: Uint8Array): boolean {
    const conn = this.#conn;
    if (conn === null) return false;
    this.#out.write(bytes, 0);
    if (this.#out.pendingBytes <= CONTROL_BACKLOG_MAX) return true;
    this.#log.warn("peer-not-reading", {
      endpoint: "notify-dev",
      peer: conn.peer,
      waiting_bytes: this.#out.pendingBytes,
      action: "disconnected; its output is dropped",
    });
    this.#onBacklogDrop();
    this.#conn = null;
    this.#out.detach(conn);
    conn.close();
    return false;
  }

  #onMessage(frame: Uint8Array): void {
    switch (classifyNotify(frame)) {
      case "proxy-init":
        this.#classes.note("info", "notify-proxy-init", {}, { reply: COLO_COMPARE_GET_XEN_INIT });
        this.#send(GET_XEN_INIT_BYTES);
        break;
      case "checkpoint":
        // Sent before the PVM is resumed (prior-art.md, 1.3): both VMs are still stopped.
        this.#events.checkpointDone(true);
        break;
      default:
        this.#classes.note("warn", "notify-unknown", {}, {
          message: describeMessage(frame),
          length: frame.length,
        });
    }
  }
}
