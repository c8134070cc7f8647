import assert from "node:assert/strict";
import { Logger } from "../../src/log.ts";
import { parseAddress } from "../../src/wire/address.ts";
import { Endpoint, settledWithin } from "../../src/wire/endpoint.ts";
import { PlainTransport } from "../../src/wire/plain.ts";
import type { Conn, Listener, Transport } from "../../src/wire/transport.ts";

function recordingLog(): {
  log: Logger;
  lines: string[];
  line(pattern: RegExp): Promise<string>;
} {
  const lines: string[] = [];
  let waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  const log = new Logger("debug", (l) => {
    lines.push(l);
    waiters = waiters.filter((w) => !(w.re.test(l) && (w.resolve(l), true)));
  });
  const line = (re: RegExp) =>
    new Promise<string>((resolve) => {
      const found = lines.find((l) => re.test(l));
      if (found) resolve(found);
      else waiters.push({ re, resolve });
    });
  return { log, lines, line };
}

/** Resolves on the next peer change of `e`. */
function nextPeerChange(e: Endpoint, changes: [boolean, boolean][]): Promise<void> {
  const n = changes.length;
  return new Promise((resolve) => {
    e.onPeer(() => {
      if (changes.length > n) resolve();
    });
  });
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

Deno.test("endpoint: a connect that hangs (SYNs dropped) is given up after its timeout and tried again", async () => {
  const t = new HangingTransport();
  const { log, line } = recordingLog();
  const e = new Endpoint("outdev", parseAddress("tcp:127.0.0.1:9"), t, log);
  e.connectTimeoutMs = 30;
  const serving = e.serve(() => Promise.resolve());
  const failed = await line(/event=connect-failed/);
  assert.match(failed, /not connected within 30 ms/);
  // The second attempt follows the backoff (100 ms), as after a refused connect.
  await line(/event=connect-failed .*retry_ms=200/);
  assert.equal(t.pending, 2);
  e.close();
  await serving;
});

Deno.test("endpoint: aborting its signal closes it, a pending connect included", async () => {
  const t = new HangingTransport();
  const { log } = recordingLog();
  const abort = new AbortController();
  const e = new Endpoint("outdev", parseAddress("tcp:127.0.0.1:9"), t, log, abort.signal);
  const serving = e.serve(() => Promise.resolve());
  await Promise.resolve();
  abort.abort();
  await serving;
  assert.equal(e.signal.aborted, true);
});

Deno.test("endpoint: close() during the reconnect backoff ends serve() at once", async () => {
  const { log, line } = recordingLog();
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
  await line(/event=connect-failed/);
  const start = performance.now();
  e.close();
  await serving;
  assert.ok(performance.now() - start < 50, "the backoff sleep was not cut short");
});

/** A transport whose connects succeed at once, each with a peer that has already left. */
class HangUpTransport implements Transport {
  connects: number[] = [];
  listen(): Promise<Listener> {
    throw new Error("not used");
  }
  connect(): Promise<Conn> {
    this.connects.push(performance.now());
    return Promise.resolve({
      read: () => Promise.resolve(null),
      write: (p: Uint8Array) => Promise.resolve(p.length),
      close: () => {},
      peer: "127.0.0.1:9",
    });
  }
}

Deno.test("endpoint: a server that hangs up at once is called back ever more slowly, as a refusing one", async () => {
  const t = new HangUpTransport();
  const { log } = recordingLog();
  const e = new Endpoint("outdev", parseAddress("tcp:127.0.0.1:9"), t, log);
  let fifth: () => void;
  const fiveConnects = new Promise<void>((r) => fifth = r);
  const serving = e.serve(() => {
    if (t.connects.length === 5) fifth();
    return Promise.resolve();
  });
  await fiveConnects;
  e.close();
  await serving;
  const gaps = t.connects.slice(1).map((at, i) => at - t.connects[i]);
  // 100, 200, 400, 800 ms (timers fire a little late, never early).
  gaps.forEach((gap, i) => assert.ok(gap >= 100 * 2 ** i - 5, `gap ${i}: ${gap} ms`));
});

Deno.test("endpoint: a second peer is closed at once and logged at warn; the first stays", async () => {
  const { log, line } = recordingLog();
  const e = new Endpoint(
    "primary-in",
    parseAddress("tcp-listen:127.0.0.1:0"),
    new PlainTransport(),
    log,
  );
  await e.bind();
  // Each change with what `connected` said while it was announced.
  const changes: [boolean, boolean][] = [];
  e.onPeer((c) => changes.push([c, e.connected]));
  let received!: (b: number) => void;
  const got = new Promise<number>((r) => received = r);
  const serving = e.serve(async (conn) => {
    const buf = new Uint8Array(16);
    while (await conn.read(buf)) received(buf[0]);
  });
  const port = Number(e.boundText.split(":").pop());
  let change = nextPeerChange(e, changes);
  const first = await Deno.connect({ hostname: "127.0.0.1", port });
  await change;
  assert.deepEqual(changes, [[true, true]], "announced before the endpoint was connected");
  const second = await Deno.connect({ hostname: "127.0.0.1", port });
  // The endpoint closes the second connection: its read ends.
  assert.equal(await second.read(new Uint8Array(1)), null);
  second.close();
  const warn = await line(/event=peer-rejected/);
  assert.match(warn, /level=warn .*peer=127\.0\.0\.1:\d+/);
  await first.write(new Uint8Array([7]));
  assert.equal(await got, 7, "the first peer is still served");
  change = nextPeerChange(e, changes);
  first.close();
  await change;
  assert.deepEqual(changes[1], [false, false], "announced before the endpoint was disconnected");
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

Deno.test("settledWithin: true for a promise that resolves or rejects in time, false for one that never does", async () => {
  assert.equal(await settledWithin(Promise.resolve(1), 1000), true);
  assert.equal(await settledWithin(Promise.reject(new Error("no")), 1000), true);
  assert.equal(await settledWithin(new Promise(() => {}), 10), false);
});
