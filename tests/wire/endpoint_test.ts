import assert from "node:assert/strict";
import { Logger } from "../../src/log.ts";
import { parseAddress } from "../../src/wire/address.ts";
import { Endpoint } from "../../src/wire/endpoint.ts";
import { PlainTransport } from "../../src/wire/plain.ts";
import type { Conn, Listener, Transport } from "../../src/wire/transport.ts";

function recordingLog(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: new Logger("debug", (l) => lines.push(l)), lines };
}

/** A transport whose connect never completes until aborted. */
class HangingTransport implements Transport {
  pending = 0;
  listen(): Promise<Listener> {
    throw new Error("not used");
  }
  connect(_a: unknown, signal: AbortSignal): Promise<Conn> {
    this.pending++;
    return new Promise((_, reject) => {
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
    });
  }
}

Deno.test("endpoint: close() aborts a pending connect at once", async () => {
  const t = new HangingTransport();
  const { log } = recordingLog();
  const e = new Endpoint("outdev", parseAddress("tcp:127.0.0.1:9"), t, log);
  const serving = e.serve(() => Promise.resolve());
  await Promise.resolve();
  assert.equal(t.pending, 1);
  const start = performance.now();
  e.close();
  await serving;
  assert.ok(performance.now() - start < 100, "serve() did not end promptly");
});

Deno.test("endpoint: close() during the reconnect backoff ends serve() at once", async () => {
  const { log, lines } = recordingLog();
  // Nothing listens on this port: connect fails, the endpoint sleeps before retrying.
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const e = new Endpoint(
    "outdev",
    parseAddress(`tcp:127.0.0.1:${port}`),
    new PlainTransport(),
    log,
  );
  const serving = e.serve(() => Promise.resolve());
  while (!lines.some((x) => x.includes("event=connect-failed"))) {
    await new Promise((r) => setTimeout(r, 5));
  }
  const start = performance.now();
  e.close();
  await serving;
  assert.ok(performance.now() - start < 50, "the backoff sleep was not cut short");
});

Deno.test("endpoint: a second peer is closed at once and logged at warn; the first stays", async () => {
  const { log, lines } = recordingLog();
  const e = new Endpoint(
    "primary-in",
    parseAddress("tcp-listen:127.0.0.1:0"),
    new PlainTransport(),
    log,
  );
  await e.bind();
  const changes: [boolean, string][] = [];
  let connectedSeen: boolean | null = null;
  e.onPeer((c, peer) => {
    changes.push([c, peer]);
    connectedSeen = e.connected;
  });
  const got: number[] = [];
  const serving = e.serve(async (conn) => {
    const buf = new Uint8Array(16);
    let n;
    while ((n = await conn.read(buf)) !== null) got.push(...buf.subarray(0, n));
  });
  const port = Number(e.boundText.split(":").pop());
  const first = await Deno.connect({ hostname: "127.0.0.1", port });
  while (changes.length === 0) await new Promise((r) => setTimeout(r, 5));
  assert.equal(connectedSeen, true, "announced before the endpoint was connected");
  const second = await Deno.connect({ hostname: "127.0.0.1", port });
  // The endpoint closes the second connection: its read ends.
  assert.equal(await second.read(new Uint8Array(1)), null);
  second.close();
  const warn = lines.find((x) => x.includes("event=peer-rejected"));
  assert.ok(warn?.includes("level=warn"), lines.join("\n"));
  assert.match(warn!, /peer=127\.0\.0\.1:\d+/);
  await first.write(new Uint8Array([7]));
  while (got.length === 0) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(got, [7]);
  first.close();
  while (changes.length < 2) await new Promise((r) => setTimeout(r, 5));
  assert.equal(changes[1][0], false);
  assert.equal(connectedSeen, false, "announced before the endpoint was disconnected");
  e.close();
  await serving;
});

Deno.test("endpoint: TCP peers get keepalive", async () => {
  const { log } = recordingLog();
  const e = new Endpoint(
    "outdev",
    parseAddress("tcp-listen:127.0.0.1:0"),
    new PlainTransport(),
    log,
  );
  await e.bind();
  let attached!: () => void;
  const ready = new Promise<void>((r) => attached = r);
  const serving = e.serve(async (conn) => {
    attached();
    await conn.read(new Uint8Array(1));
  });
  const port = Number(e.boundText.split(":").pop());
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  await ready;
  const ss = new Deno.Command("ss", {
    args: ["-tno", "state", "established", `( sport = :${port} )`],
  }).outputSync();
  assert.match(new TextDecoder().decode(ss.stdout), /timer:\(keepalive/);
  c.close();
  e.close();
  await serving;
});

Deno.test("endpoint: unix-listen sockets get the socket mode, not the umask's", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const mode of [0o600, 0o660]) {
      const path = `${dir}/s${mode.toString(8)}.sock`;
      const { log } = recordingLog();
      const e = new Endpoint(
        "primary-in",
        parseAddress(`unix-listen:${path}`),
        new PlainTransport(mode),
        log,
      );
      await e.bind();
      assert.equal((await Deno.lstat(path)).mode! & 0o777, mode);
      // Nothing else is left beside it.
      const names = [];
      for await (const d of Deno.readDir(dir)) names.push(d.name);
      assert.deepEqual(names, [`s${mode.toString(8)}.sock`]);
      const serving = e.serve(() => Promise.resolve());
      e.close();
      await serving;
      await assert.rejects(Deno.lstat(path), Deno.errors.NotFound);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
