/**
 * `--metrics`' HTTP server in-process: what it answers, and its bounds whatever a client does
 * (SPEC 8): clients at once, a client that never sends its request, an endless request head;
 * `unix-listen:` made with the socket mode (SPEC 11).
 */

import assert from "node:assert/strict";
import { Logger } from "../../src/log.ts";
import {
  MAX_CLIENTS,
  MAX_HEAD_BYTES,
  type MetricsServer,
  serveMetrics,
} from "../../src/metrics/server.ts";
import { boundPort, parseAddress } from "../../src/wire/address.ts";
import { EVICT_AFTER_MS } from "../../src/wire/client_listener.ts";

const BODY = "# TYPE colo_compare_up gauge\ncolo_compare_up 1\n";

/** A server on a free port (port 0) whose log lines are kept. */
async function start(timeoutMs?: number) {
  const lines: string[] = [];
  const server = await serveMetrics(
    parseAddress("tcp-listen:127.0.0.1:0"),
    () => BODY,
    new Logger("info", (l) => lines.push(l)),
    undefined,
    timeoutMs,
  );
  const port = boundPort(server.boundText);
  return { server, port, lines };
}

/** Sends `request` on a new connection and returns everything the server sent until it closed. */
async function exchange(port: number, request: string | Uint8Array): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const bytes = typeof request === "string" ? new TextEncoder().encode(request) : request;
    for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
    return await readToEnd(conn);
  } finally {
    conn.close();
  }
}

/** Reads until the server closes; a reset counts as the end. */
async function readToEnd(conn: Deno.Conn): Promise<string> {
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  const buf = new Uint8Array(4096);
  try {
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      chunks.push(buf.slice(0, n));
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.ConnectionReset)) throw error;
  }
  return new TextDecoder().decode(await new Blob(chunks).bytes());
}

async function stop(server: MetricsServer): Promise<void> {
  await server.close();
}

Deno.test("metrics server: GET and HEAD /metrics, 404 elsewhere, 405 for other methods, one request per connection", async () => {
  const { server, port } = await start();
  try {
    const get = await exchange(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.match(get, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(get, /\r\ncontent-type: text\/plain; version=0\.0\.4; charset=utf-8\r\n/);
    assert.match(get, new RegExp(`\\r\\ncontent-length: ${BODY.length}\\r\\n`));
    assert.match(get, /\r\nconnection: close\r\n/);
    assert.ok(get.endsWith(`\r\n\r\n${BODY}`), get);

    const withQuery = await exchange(port, "GET /metrics?x=1 HTTP/1.0\r\n\r\n");
    assert.match(withQuery, /^HTTP\/1\.1 200 OK\r\n/);

    const head = await exchange(port, "HEAD /metrics HTTP/1.1\r\n\r\n");
    assert.match(head, /^HTTP\/1\.1 200 OK\r\n/);
    assert.ok(head.endsWith("\r\n\r\n"), "HEAD has no body");

    assert.match(await exchange(port, "GET / HTTP/1.1\r\n\r\n"), /^HTTP\/1\.1 404 /);
    const post = await exchange(port, "POST /metrics HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    assert.match(post, /^HTTP\/1\.1 405 /);
    assert.match(post, /\r\nallow: GET, HEAD\r\n/);
    assert.match(await exchange(port, "garbage\r\n\r\n"), /^HTTP\/1\.1 400 /);
    // Bare line feeds (RFC 9112 2.2), and the absolute form a server must take (3.2.2).
    assert.match(await exchange(port, "GET /metrics HTTP/1.1\nHost: x\n\n"), /^HTTP\/1\.1 200 /);
    assert.match(
      await exchange(port, `GET http://127.0.0.1:${port}/metrics HTTP/1.1\r\n\r\n`),
      /^HTTP\/1\.1 200 /,
    );
    assert.match(await exchange(port, "GET http://x/other HTTP/1.1\r\n\r\n"), /^HTTP\/1\.1 404 /);

    // fetch() is an HTTP client like Prometheus's.
    const r = await fetch(`http://127.0.0.1:${port}/metrics`);
    assert.equal(r.status, 200);
    assert.equal(await r.text(), BODY);
  } finally {
    await stop(server);
  }
});

Deno.test("metrics server: a request head split across writes is read whole", async () => {
  const { server, port } = await start();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const enc = new TextEncoder();
    for (const part of ["GET /met", "rics HTTP/1.1\r\nHost: x\r", "\n\r", "\n"]) {
      await conn.write(enc.encode(part));
    }
    assert.match(await readToEnd(conn), /^HTTP\/1\.1 200 OK\r\n/);
  } finally {
    conn.close();
    await stop(server);
  }
});

Deno.test("metrics server: a request head up to the bound is read whole; longer is answered 431", async () => {
  const { server, port } = await start();
  try {
    const head = (n: number) => "GET /metrics HTTP/1.1\r\nx: " + "a".repeat(n) + "\r\n\r\n";
    for (const n of [900, 1020, 4000, MAX_HEAD_BYTES - 40]) {
      assert.match(await exchange(port, head(n)), /^HTTP\/1\.1 200 /, `a header of ${n} bytes`);
    }
    assert.match(await exchange(port, head(MAX_HEAD_BYTES)), /^HTTP\/1\.1 431 /);
    // The server goes on.
    assert.match(await exchange(port, "GET /metrics HTTP/1.1\r\n\r\n"), /^HTTP\/1\.1 200 /);
  } finally {
    await stop(server);
  }
});

Deno.test("metrics server: a client that never sends its request is cut off after the timeout", async () => {
  const { server, port } = await start(200);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const started = performance.now();
    assert.equal(await readToEnd(conn), "", "closed without an answer");
    assert.ok(performance.now() - started >= 150, "not before the timeout");
  } finally {
    conn.close();
    await stop(server);
  }
});

Deno.test("metrics server: past the bound on clients a new one is refused at once, then takes the oldest one's place, logged once", async () => {
  const { server, port, lines } = await start();
  const idle: Deno.Conn[] = [];
  try {
    for (let i = 0; i < MAX_CLIENTS; i++) {
      idle.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    }
    // At once: refused (a burst of new clients is not served in turn).
    assert.equal(await exchange(port, "GET /metrics HTTP/1.1\r\n\r\n"), "", "closed, no answer");
    assert.ok(lines.some((l) => l.includes("event=metrics-client-refused")));
    await new Promise((r) => setTimeout(r, EVICT_AFTER_MS));
    // Then accepted after the idle ones (one accept loop, in order), and served; its slot was
    // the oldest idle client's, whose connection was closed with no answer.
    assert.match(await exchange(port, "GET /metrics HTTP/1.1\r\n\r\n"), /^HTTP\/1\.1 200 /);
    assert.equal(await readToEnd(idle.shift()!), "");
    // That one has gone when it was answered: one more fills the slots, the next evicts again.
    idle.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    idle.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    assert.equal(await readToEnd(idle.shift()!), "", "the oldest gave way again");
    const evictions = lines.filter((l) => l.includes("event=metrics-client-evicted"));
    assert.equal(evictions.length, 1, "evictions are rate-limited");
    assert.match(evictions[0], /level=warn .*note="16 clients already; the stalest one gave way"/);
    // The clients still there are served as they ask.
    const next = idle.shift()!;
    await next.write(new TextEncoder().encode("GET /metrics HTTP/1.1\r\n\r\n"));
    assert.match(await readToEnd(next), /^HTTP\/1\.1 200 /);
    next.close();
  } finally {
    for (const c of idle) c.close();
    await stop(server);
  }
});

Deno.test("metrics server: unix-listen is made with the socket mode and removed at close", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/metrics.sock`;
  try {
    const server = await serveMetrics(
      parseAddress(`unix-listen:${path}`),
      () => BODY,
      new Logger("error", () => {}),
      0o600,
    );
    try {
      assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
      const conn = await Deno.connect({ transport: "unix", path });
      try {
        await conn.write(new TextEncoder().encode("GET /metrics HTTP/1.1\r\n\r\n"));
        assert.match(await readToEnd(conn), /^HTTP\/1\.1 200 /);
      } finally {
        conn.close();
      }
    } finally {
      await server.close();
    }
    await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
