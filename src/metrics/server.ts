/**
 * `--metrics ADDR` (SPEC 12): an HTTP/1.1 server with one resource, `GET /metrics`.
 *
 * It is small on purpose, so that every resource has a bound whatever a client does (SPEC 8):
 * at most {@linkcode MAX_CLIENTS} connections at once (more are closed at once), one request
 * per connection (`Connection: close`; Prometheus reconnects for each scrape), a request head
 * of at most {@linkcode MAX_HEAD_BYTES}, and {@linkcode CLIENT_TIMEOUT_MS} for a client to send
 * its request and take the answer. `unix-listen:` sockets are made with `--socket-mode` (SPEC
 * 11), as the endpoints' are.
 *
 * @module
 */

import type { Logger } from "../log.ts";
import type { Address } from "../wire/address.ts";
import { ClientListener, closeQuietly } from "../wire/client_listener.ts";
import { DEFAULT_SOCKET_MODE } from "../wire/plain.ts";
import { writeAll } from "../wire/transport.ts";

/** The content type of the Prometheus text format. */
const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";
/** Connections served at once; more are closed at once. */
export const MAX_CLIENTS = 16;
/** A request head longer than this is answered 431 and the connection closed. */
export const MAX_HEAD_BYTES = 16 * 1024;
/** The request head's first buffer; it grows fourfold up to {@linkcode MAX_HEAD_BYTES}. */
const FIRST_HEAD_BYTES = 1024;
/** A client that has not sent its request and taken the answer after this long is cut off. */
export const CLIENT_TIMEOUT_MS = 10_000;

const encoder = new TextEncoder();
const LF = 0x0a;
const CR = 0x0d;

/** A running metrics server. */
export interface MetricsServer {
  /** Where it listens (port 0 resolved). */
  readonly boundText: string;
  close(): Promise<void>;
}

/** What to answer, before it is written. */
interface Answer {
  status: number;
  reason: string;
  headers: Record<string, string>;
  body: string;
  /** HEAD: the headers only. */
  headOnly: boolean;
}

/**
 * Serves `render()` at `GET /metrics` on a `tcp-listen:` or `unix-listen:` address. Throws a
 * `StartupError` naming `--metrics` when the address cannot be used.
 */
export async function serveMetrics(
  address: Address,
  render: () => string,
  log: Logger,
  socketMode = DEFAULT_SOCKET_MODE,
  timeoutMs = CLIENT_TIMEOUT_MS,
): Promise<MetricsServer> {
  const listener = await ClientListener.open("--metrics", address, socketMode);
  log.info("listening", { endpoint: "metrics", address: listener.boundText });
  listener.serve(
    "metrics",
    MAX_CLIENTS,
    async (conn) => {
      // Closing ends the pending read or write.
      const timer = setTimeout(() => closeQuietly(conn), timeoutMs);
      try {
        const head = await readHead(conn);
        if (head === null) return;
        const answer = head === "too-long"
          ? plain(431, "Request Header Fields Too Large", "request head too long\n")
          : answerTo(head, render, log);
        await writeAll(conn, encodeAnswer(answer));
      } finally {
        clearTimeout(timer);
      }
    },
    log,
    oldest,
  );
  return { boundText: listener.boundText, close: () => listener.close() };
}

/**
 * With every slot taken, the client served longest gives way to a new one: each has one
 * request to send, and one that has not sent it yet is the likeliest to be holding a slot
 * (slow clients cannot keep a scrape out for their whole timeout).
 */
function oldest(served: ReadonlyMap<Deno.Conn, number>): Deno.Conn | null {
  for (const c of served.keys()) return c;
  return null;
}

/**
 * The request head (up to the blank line), `"too-long"` past {@linkcode MAX_HEAD_BYTES}, or
 * null when the client left first.
 */
async function readHead(conn: Deno.Conn): Promise<string | "too-long" | null> {
  // A scrape's head is a few hundred bytes: the buffer grows only for longer ones (a crowd of
  // silent clients, each served a while, then costs a little each, not the bound).
  let buf = new Uint8Array(FIRST_HEAD_BYTES);
  let filled = 0;
  while (true) {
    if (filled === buf.length) {
      if (buf.length === MAX_HEAD_BYTES) return "too-long";
      const bigger = new Uint8Array(Math.min(buf.length * 4, MAX_HEAD_BYTES));
      bigger.set(buf);
      buf = bigger;
    }
    const n = await conn.read(buf.subarray(filled));
    if (n === null) return null;
    const from = Math.max(0, filled - 2);
    filled += n;
    const end = headEnd(buf.subarray(0, filled), from);
    if (end >= 0) return new TextDecoder().decode(buf.subarray(0, end));
  }
}

/**
 * Where the head's blank line begins in `bytes` (searched from `from`): a line end followed by
 * an empty line, each `\r\n` or a bare `\n` (RFC 9112 2.2 lets a server take one), or -1.
 */
function headEnd(bytes: Uint8Array, from: number): number {
  for (let i = from; i < bytes.length; i++) {
    if (bytes[i] !== LF) continue;
    const next = bytes[i + 1] === CR ? i + 2 : i + 1;
    if (bytes[next] === LF) return i + 1;
  }
  return -1;
}

/** The answer to a request head: the metrics, or why not. */
function answerTo(head: string, render: () => string, log: Logger): Answer {
  const line = head.slice(0, head.indexOf("\n") >>> 0).replace(/\r$/, "");
  const m = /^([A-Z]+) (\S+) HTTP\/1\.[01]$/.exec(line);
  if (m === null) return plain(400, "Bad Request", "bad request line\n");
  const [, method, target] = m;
  // The absolute form (`GET http://host:9464/metrics`), which a server must take (RFC 9112).
  const origin = target.replace(/^https?:\/\/[^/?]*/i, "") || "/";
  const q = origin.indexOf("?");
  const path = q < 0 ? origin : origin.slice(0, q);
  if (path !== "/metrics") {
    return plain(404, "Not Found", "colo-compare: the only resource is /metrics\n");
  }
  if (method !== "GET" && method !== "HEAD") {
    const a = plain(405, "Method Not Allowed", "GET only\n");
    a.headers.allow = "GET, HEAD";
    return a;
  }
  let body: string;
  try {
    body = render();
  } catch (error) {
    log.error("metrics-request-failed", { error: String(error) });
    return plain(500, "Internal Server Error", "internal error\n");
  }
  return {
    status: 200,
    reason: "OK",
    headers: { "content-type": CONTENT_TYPE },
    body,
    headOnly: method === "HEAD",
  };
}

function plain(status: number, reason: string, body: string): Answer {
  return {
    status,
    reason,
    headers: { "content-type": "text/plain; charset=utf-8" },
    body,
    headOnly: false,
  };
}

function encodeAnswer(a: Answer): Uint8Array {
  const body = encoder.encode(a.body);
  let head = `HTTP/1.1 ${a.status} ${a.reason}\r\n`;
  for (const [k, v] of Object.entries(a.headers)) head += `${k}: ${v}\r\n`;
  head += `content-length: ${body.length}\r\nconnection: close\r\n\r\n`;
  const h = encoder.encode(head);
  if (a.headOnly) return h;
  const out = new Uint8Array(h.length + body.length);
  out.set(h);
  out.set(body, h.length);
  return out;
}
