/**
 * The lab's HTTP client: one GET per fresh TCP connection (as a browser or curl loop would),
 * timed from connect to the server's close, and latency percentiles.
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

/** The `p`-th percentile (0..100) of `values`, nearest rank; NaN when empty. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}
