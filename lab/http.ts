/**
 * The lab's HTTP client: one GET per fresh TCP connection (as a browser or curl loop would),
 * timed from connect to the server's close, and latency percentiles. A download keeps the body
 * as bytes and is given up when no byte comes for a while (a stall), not after a fixed time.
 *
 * @module
 */

/** One answered request. */
export interface Reply {
  status: number;
  body: string;
  ms: number;
}

const encoder = new TextEncoder();

/** GET `path` from 127.0.0.1:`port` (HTTP/1.0, so the server closes); rejects after `timeoutMs`. */
export async function get(port: number, path: string, timeoutMs: number): Promise<Reply> {
  const t0 = performance.now();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    conn.close();
  }, timeoutMs);
  try {
    await conn.write(encoder.encode(`GET ${path} HTTP/1.0\r\nHost: guest\r\n\r\n`));
    const decoder = new TextDecoder();
    let text = "";
    const buf = new Uint8Array(16 * 1024);
    for (;;) {
      let n: number | null;
      try {
        n = await conn.read(buf);
      } catch (error) {
        throw new Error(`GET ${path}: ${timedOut ? `no reply in ${timeoutMs} ms` : error}`);
      }
      if (n === null) break;
      text += decoder.decode(buf.subarray(0, n), { stream: true });
    }
    text += decoder.decode();
    const head = /^HTTP\/1\.\d (\d{3})/.exec(text);
    if (!head) {
      throw new Error(`GET ${path}: not an HTTP reply (${JSON.stringify(text.slice(0, 40))})`);
    }
    const split = text.indexOf("\r\n\r\n");
    return {
      status: Number(head[1]),
      body: split < 0 ? "" : text.slice(split + 4),
      ms: performance.now() - t0,
    };
  } finally {
    clearTimeout(timer);
    if (!timedOut) {
      try {
        conn.close();
      } catch {
        // closed by the timeout
      }
    }
  }
}

/** One download: the body as bytes. */
export interface Download {
  status: number;
  /** `Content-Length`, when the server sent one. */
  length: number | null;
  body: Uint8Array;
  /** From connect to the server's close. */
  ms: number;
  /** The longest wait for a read, from the first body byte on (how long the stream stood still). */
  longestGapMs: number;
}

/** A download that ended early, with how many body bytes it got. */
export class DownloadError extends Error {
  readonly received: number;
  constructor(message: string, received: number) {
    super(message);
    this.received = received;
  }
}

/** Where the head ends (after CR LF CR LF) in `bytes[0, to)`, looking from `from` on; or -1. */
function headEnd(bytes: Uint8Array, from: number, to: number): number {
  for (let i = Math.max(0, from - 3); i + 4 <= to; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) {
      return i + 4;
    }
  }
  return -1;
}

/**
 * GETs `path` from 127.0.0.1:`port` (HTTP/1.0) and keeps the body as bytes; rejects with a
 * {@linkcode DownloadError} after `stallMs` without a byte (however long the whole takes), or
 * when the body is shorter than its `Content-Length`.
 */
export async function download(port: number, path: string, stallMs: number): Promise<Download> {
  const t0 = performance.now();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  let stalled = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      stalled = true;
      conn.close();
    }, stallMs);
  };
  let buf = new Uint8Array(256 * 1024);
  let used = 0;
  let bodyAt = -1;
  let lastRead = 0;
  let longestGapMs = 0;
  const received = () => bodyAt < 0 ? 0 : used - bodyAt;
  try {
    arm();
    await conn.write(encoder.encode(`GET ${path} HTTP/1.0\r\nHost: guest\r\n\r\n`));
    for (;;) {
      if (used === buf.length) {
        const bigger = new Uint8Array(buf.length * 2);
        bigger.set(buf);
        buf = bigger;
      }
      let n: number | null;
      try {
        n = await conn.read(buf.subarray(used));
      } catch (error) {
        const why = stalled ? `stalled, no byte in ${stallMs} ms,` : String(error);
        throw new DownloadError(`GET ${path}: ${why} after ${received()} body bytes`, received());
      }
      const now = performance.now();
      if (bodyAt >= 0) longestGapMs = Math.max(longestGapMs, now - lastRead);
      lastRead = now;
      if (n === null) break;
      arm();
      const before = used;
      used += n;
      if (bodyAt < 0) bodyAt = headEnd(buf, before, used);
    }
  } finally {
    clearTimeout(timer);
    if (!stalled) conn.close();
  }
  const ms = performance.now() - t0;
  const head = new TextDecoder().decode(buf.subarray(0, bodyAt < 0 ? Math.min(used, 80) : bodyAt));
  const status = /^HTTP\/1\.\d (\d{3})/.exec(head);
  if (!status || bodyAt < 0) {
    throw new DownloadError(`GET ${path}: not an HTTP reply (${JSON.stringify(head)})`, 0);
  }
  const declared = /\r\ncontent-length: *(\d+)/i.exec(head);
  const length = declared ? Number(declared[1]) : null;
  if (length !== null && received() < length) {
    throw new DownloadError(
      `GET ${path}: the server closed after ${received()} of ${length} body bytes`,
      received(),
    );
  }
  return {
    status: Number(status[1]),
    length,
    body: buf.subarray(bodyAt, used),
    ms,
    longestGapMs,
  };
}

/** The `p`-th percentile (0..100) of `values`, nearest rank; NaN when empty. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}
