/**
 * The TLS transport and its credentials (SPEC 11), with certificates made by openssl for the
 * test: mutual TLS on tls-listen:, server verification on tls:, --tls-authz by subject DN as
 * QEMU writes it, refusals that are logged (rate-limited) and never reach accept(), and
 * credentials that fail at start with a line naming the file.
 */

import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { Logger } from "../../src/log.ts";
import { parseAddress } from "../../src/wire/address.ts";
import { Endpoint } from "../../src/wire/endpoint.ts";
import { TcpTuner } from "../../src/wire/keepalive.ts";
import { MAX_CONNECTIONS, type TlsConn, TlsTransport } from "../../src/wire/tls.ts";
import { CredentialsError, loadCredentials } from "../../src/wire/tls_creds.ts";
import { runJsonChild } from "../support/child.ts";
import type { Conn, Listener } from "../../src/wire/transport.ts";
import { certificateVersion, subjectDn } from "../../src/wire/x509.ts";
import {
  makeCreds,
  rawClient,
  removeCreds,
  sendUntilRefused,
  type TestCreds,
} from "../support/tls_creds.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Log lines at warn and above, with a way to await the next one. */
class Lines {
  readonly lines: string[] = [];
  #waiters: ((line: string) => void)[] = [];
  readonly log = new Logger("warn", (line) => {
    this.lines.push(line);
    for (const w of this.#waiters.splice(0)) w(line);
  });

  next(): Promise<string> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}

function transport(
  dir: string,
  log: Logger,
  authz: string[] | null = null,
  tuner: TcpTuner | null = null,
): TlsTransport {
  const creds = loadCredentials(dir, { server: true, client: true });
  return new TlsTransport({ creds, authz, log, tuner });
}

function portOf(l: Listener): number {
  return Number(l.boundText.split(":").pop());
}

async function readText(conn: Conn, length: number): Promise<string> {
  const buf = new Uint8Array(length);
  let n = 0;
  while (n < length) {
    const got = await conn.read(buf.subarray(n));
    if (got === null) break;
    n += got;
  }
  return decoder.decode(buf.subarray(0, n));
}

let creds: TestCreds;

Deno.test.beforeAll(async () => {
  creds = await makeCreds();
});

Deno.test.afterAll(async () => {
  await removeCreds(creds);
});

Deno.test("tls: tls: and tls-listen: carry bytes both ways with mutual TLS", async () => {
  const lines = new Lines();
  const t = transport(creds.dir, lines.log, ["O=Example,CN=client"]);
  const listener = await t.listen(parseAddress("tls-listen:127.0.0.1:0"));
  try {
    const accepted = listener.accept();
    const client = await t.connect(
      parseAddress(`tls:127.0.0.1:${portOf(listener)}`),
      new AbortController().signal,
    );
    const server = await accepted;
    try {
      assert.match(server.peer, /^127\.0\.0\.1:\d+$/);
      assert.equal((server as { subject?: string }).subject, "O=Example,CN=client");
      await client.write(encoder.encode("from the client"));
      assert.equal(await readText(server, 15), "from the client");
      await server.write(encoder.encode("and back"));
      assert.equal(await readText(client, 8), "and back");
      client.close();
      assert.equal(await server.read(new Uint8Array(8)), null);
    } finally {
      client.close();
      server.close();
    }
  } finally {
    listener.close();
  }
  assert.deepEqual(lines.lines, []);
});

Deno.test("tls: clients without a certificate, of another CA, or with a DN not in --tls-authz are refused with a warn line", async () => {
  for (
    const [dir, withCert, reason] of [
      [creds.dir, false, /reason="[^"]*[Cc]ertificate/],
      // Deno's node:tls reports this refusal only as "socket hang up".
      [creds.otherCaDir, true, /reason="[^"]+"/],
      [creds.wrongDnDir, true, /reason="subject \\"O=Example,CN=intruder\\" not in --tls-authz"/],
    ] as const
  ) {
    const lines = new Lines();
    const t = transport(creds.dir, lines.log, ["O=Example,CN=client"]);
    const listener = await t.listen(parseAddress("tls-listen:127.0.0.1:0"));
    try {
      const warned = lines.next();
      await sendUntilRefused(await rawClient(portOf(listener), dir, withCert), "REFUSED");
      const line = await warned;
      assert.match(line, /level=warn event=tls-refused address=tls-listen:127\.0\.0\.1:0 peer=127/);
      assert.match(line, reason);
    } finally {
      listener.close();
    }
  }
});

Deno.test("tls: refusals are logged once per interval, never reach accept(), and what they sent is never read", async () => {
  const lines = new Lines();
  const t = transport(creds.dir, lines.log, ["O=Example,CN=client"]);
  const listener = await t.listen(parseAddress("tls-listen:127.0.0.1:0"));
  const port = portOf(listener);
  try {
    const accepted = listener.accept();
    for (const dir of [creds.dir, creds.wrongDnDir, creds.otherCaDir, creds.wrongDnDir]) {
      // Each returns once the server has closed the connection on it.
      await sendUntilRefused(await rawClient(port, dir, dir !== creds.dir), "REFUSED PEER BYTES");
    }
    assert.equal(lines.lines.length, 1, lines.lines.join("\n"));
    // The next good client is the one accept() returns, with its own bytes only.
    const good = await rawClient(port, creds.dir);
    await good.handshake();
    await good.write(encoder.encode("good"));
    const server = await accepted;
    try {
      assert.equal((server as { subject?: string }).subject, "O=Example,CN=client");
      assert.equal(await readText(server, 4), "good");
    } finally {
      server.close();
      good.close();
    }
  } finally {
    listener.close();
  }
});

Deno.test("tls: a peer that never finishes its handshake is dropped after the timeout, and one that speaks no TLS at once; neither stalls a good client", async () => {
  const lines = new Lines();
  const creds0 = loadCredentials(creds.dir, { server: true, client: true });
  const t = new TlsTransport({
    creds: creds0,
    authz: null,
    log: lines.log,
    handshakeTimeoutMs: 300,
  });
  const listener = await t.listen(parseAddress("tls-listen:127.0.0.1:0"));
  const port = portOf(listener);
  const silent = await Deno.connect({ hostname: "127.0.0.1", port });
  const garbage = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await garbage.write(encoder.encode("GET / HTTP/1.0\r\n\r\n"));
    // While the silent peer hangs in its handshake, a good client is served.
    const accepted = listener.accept();
    const good = await t.connect(
      parseAddress(`tls:127.0.0.1:${port}`),
      new AbortController().signal,
    );
    const server = await accepted;
    await good.write(encoder.encode("ok"));
    assert.equal(await readText(server, 2), "ok");
    // Both bad peers are closed by the server: their reads end.
    const ended = async (c: Deno.Conn) => {
      try {
        while (await c.read(new Uint8Array(64)) !== null) { /* an alert, then the end */ }
      } catch {
        // reset
      }
    };
    const started = performance.now();
    await Promise.all([ended(silent), ended(garbage)]);
    assert.ok(performance.now() - started < 5000);
    // The good client, served, outlived the handshake timeout the silent one was dropped by.
    await good.write(encoder.encode("still"));
    assert.equal(await readText(server, 5), "still");
    good.close();
    server.close();
    assert.equal(lines.lines.length, 2, lines.lines.join("\n"));
    assert.ok(
      lines.lines.some((l) => /event=tls-refused .*peer=127\.0\.0\.1:\d+ reason=/.test(l)),
      "the peer that spoke no TLS is refused",
    );
    assert.ok(
      lines.lines.some((l) => /event=tls-handshake-dropped .*reason="no ClientHello/.test(l)),
      "the silent peer is dropped",
    );
  } finally {
    silent.close();
    garbage.close();
    listener.close();
  }
});

/** True when the server closes `c` (its read ends or is reset) before `ms`. */
async function closedWithin(c: Deno.Conn, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const read = c.read(new Uint8Array(64)).then(() => true, () => true);
  const late = new Promise<boolean>((r) => timer = setTimeout(() => r(false), ms));
  try {
    return await Promise.race([read, late]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("tls: past the bound on connections a new one takes the slot of the stalest handshake (silent ones first, then the oldest), never an authorized peer's; drops logged once per interval (SPEC 8, 11)", async () => {
  const lines = new Lines();
  const t = transport(creds.dir, lines.log);
  const listener = await t.listen(parseAddress("tls-listen:127.0.0.1:0"));
  const port = portOf(listener);
  const open: Deno.Conn[] = [];
  const dial = async () => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    open.push(c);
    return c;
  };
  try {
    // The oldest has sent the first byte of a ClientHello: progress, so it is dropped last.
    const progressed = await dial();
    await progressed.write(new Uint8Array([0x16]));
    await new Promise((r) => setTimeout(r, 50)); // for the server to read that byte
    const idle: Deno.Conn[] = [];
    for (let i = 1; i < MAX_CONNECTIONS; i++) idle.push(await dial());
    const extra: Deno.Conn[] = [];
    for (let i = 0; i < MAX_CONNECTIONS; i++) extra.push(await dial());
    // 16 new ones made room by dropping the 15 silent old ones, then the oldest new one.
    for (const c of [...idle, extra[0]]) {
      assert.ok(await closedWithin(c, 5000), "a silent handshake made room");
    }
    for (const c of [progressed, ...extra.slice(1)]) {
      assert.equal(await closedWithin(c, 20), false, "the bound holds the other 16");
    }
    assert.equal(lines.lines.length, 1, lines.lines.join("\n"));
    assert.match(
      lines.lines[0],
      new RegExp(`level=warn event=tls-handshake-dropped .*peer=127\\.0\\.0\\.1:\\d+ reason="16 `),
    );

    // All slots taken by handshakes: an authorized peer still gets in, and stays while
    // silent connections keep coming.
    const accepted = listener.accept();
    const good = await t.connect(
      parseAddress(`tls:127.0.0.1:${port}`),
      new AbortController().signal,
    );
    const server = await accepted;
    try {
      for (let i = 0; i < 2 * MAX_CONNECTIONS; i++) await dial();
      await good.write(encoder.encode("still in"));
      assert.equal(await readText(server, 8), "still in");
      assert.equal(lines.lines.length, 1, "further drops are counted, not logged one by one");
    } finally {
      good.close();
      server.close();
    }
  } finally {
    for (const c of open) c.close();
    listener.close();
  }
});

Deno.test("tls: a peer that sends no byte is dropped after the ClientHello timeout; one that has begun its handshake is given the handshake timeout", async () => {
  const lines = new Lines();
  const t = new TlsTransport({
    creds: loadCredentials(creds.dir, { server: true, client: true }),
    authz: null,
    log: lines.log,
    helloTimeoutMs: 200,
    handshakeTimeoutMs: 60_000,
  });
  const listener = await t.listen(parseAddress("tls-listen:127.0.0.1:0"));
  const port = portOf(listener);
  const silent = await Deno.connect({ hostname: "127.0.0.1", port });
  const started = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await started.write(new Uint8Array([0x16, 0x03, 0x01]));
    assert.ok(await closedWithin(silent, 5000), "the silent peer is dropped");
    assert.equal(await closedWithin(started, 400), false, "the started handshake goes on");
    assert.equal(lines.lines.length, 1, lines.lines.join("\n"));
    assert.match(
      lines.lines[0],
      /event=tls-handshake-dropped .*reason="no ClientHello within 200 ms"/,
    );
  } finally {
    silent.close();
    started.close();
    listener.close();
  }
});

Deno.test("tls: peers that break off mid-handshake or send damaged records do not crash or stall the listener", async () => {
  const lines = new Lines();
  const t = transport(creds.dir, lines.log);
  const listener = await t.listen(parseAddress("tls-listen:127.0.0.1:0"));
  const port = portOf(listener);
  try {
    const rng = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i * 151 + n * 7) & 0xff);
    for (let i = 0; i < 20; i++) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      // A TLS handshake record header, then damaged content of varying length, then gone.
      await c.write(new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, ...rng(i * 13)]));
      c.close();
    }
    for (let i = 0; i < 5; i++) {
      // A real handshake, dropped before it finishes.
      const c = await rawClient(port, creds.dir);
      c.close();
    }
    const good = await t.connect(
      parseAddress(`tls:127.0.0.1:${port}`),
      new AbortController().signal,
    );
    await good.write(encoder.encode("still here"));
    // Peers whose handshake completed before they left may come out of accept() first: they
    // read as ended at once.
    let text = "";
    while (text !== "still here") {
      const server = await listener.accept();
      text = await readText(server, 10);
      server.close();
    }
    good.close();
    assert.doesNotMatch(lines.lines.join("\n"), /level=error/);
  } finally {
    listener.close();
  }
});

Deno.test("tls: --tls-authz compares the DN in the certificate's order; the reversed DN refuses", async () => {
  for (const [authz, admitted] of [[["CN=client,O=Example"], false], [null, true]] as const) {
    const lines = new Lines();
    const t = transport(creds.dir, lines.log, authz === null ? null : [...authz]);
    const listener = await t.listen(parseAddress("tls-listen:127.0.0.1:0"));
    try {
      const client = await rawClient(portOf(listener), creds.wrongDnDir);
      if (admitted) {
        const server = await listener.accept();
        assert.equal((server as { subject?: string }).subject, "O=Example,CN=intruder");
        server.close();
        client.close();
      } else {
        const warned = lines.next();
        await sendUntilRefused(client, "x");
        assert.match(await warned, /not in --tls-authz/);
      }
    } finally {
      listener.close();
    }
  }
});

Deno.test("tls: tls: refuses a server whose certificate another CA signed", async () => {
  const lines = new Lines();
  const foreign = new TlsTransport({
    creds: {
      ...loadCredentials(creds.dir, { server: false, client: true }),
      server: {
        cert: Deno.readTextFileSync(`${creds.foreignServerDir}/server-cert.pem`),
        key: Deno.readTextFileSync(`${creds.foreignServerDir}/server-key.pem`),
      },
    },
    authz: null,
    log: lines.log,
  });
  const listener = await foreign.listen(parseAddress("tls-listen:127.0.0.1:0"));
  try {
    const t = transport(creds.dir, lines.log);
    await assert.rejects(
      t.connect(parseAddress(`tls:127.0.0.1:${portOf(listener)}`), new AbortController().signal),
    );
  } finally {
    listener.close();
  }
});

Deno.test("tls: tls: fails to connect when the server closes right after the handshake (our certificate refused by its authz)", async () => {
  const lines = new Lines();
  const listener = await transport(creds.dir, lines.log, ["O=Example,CN=client"])
    .listen(parseAddress("tls-listen:127.0.0.1:0"));
  try {
    const intruder = transport(creds.wrongDnDir, lines.log);
    await assert.rejects(
      intruder.connect(
        parseAddress(`tls:127.0.0.1:${portOf(listener)}`),
        new AbortController().signal,
      ),
      /closed the connection right after the handshake: it refused our client certificate/,
    );
  } finally {
    listener.close();
  }
});

Deno.test("tls: connect rejects at once when its signal aborts during the handshake", async () => {
  // A TCP listener that accepts and never answers the ClientHello.
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held = silent.accept();
  try {
    const t = transport(creds.dir, new Lines().log);
    const abort = new AbortController();
    const connecting = t.connect(
      parseAddress(`tls:127.0.0.1:${(silent.addr as Deno.NetAddr).port}`),
      abort.signal,
    );
    const conn = await held;
    abort.abort(new Error("stopping"));
    await assert.rejects(connecting, /stopping/);
    conn.close();
  } finally {
    silent.close();
  }
});

Deno.test("tls: an endpoint gives up a connect whose server accepts and never answers the ClientHello, says so, and tries again", async () => {
  // Before, nothing timed the handshake of a connect: the endpoint stayed "connecting" for
  // good (40 s measured, one accept, no retry, no line), its output lost meanwhile. The
  // endpoint's connect timeout bounds the handshake too; the line names what never came.
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted: Deno.Conn[] = [];
  let retried!: () => void;
  const again = new Promise<void>((r) => retried = r);
  const accepting = (async () => {
    for await (const c of silent) if (accepted.push(c) === 2) retried();
  })();
  const lines = new Lines();
  const t = new TlsTransport({
    creds: loadCredentials(creds.dir, { server: true, client: true }),
    authz: null,
    log: lines.log,
  });
  const address = parseAddress(`tls:127.0.0.1:${(silent.addr as Deno.NetAddr).port}`);
  const e = new Endpoint("outdev", address, t, lines.log);
  e.connectTimeoutMs = 300;
  const serving = e.serve(() => Promise.resolve());
  try {
    const failed = await lines.next();
    assert.match(
      failed,
      /event=connect-failed .*error="no TLS handshake \(not connected within 300 ms\)"/,
    );
    await again; // connected once more, after the backoff
  } finally {
    e.close();
    await serving;
    silent.close();
    await accepting;
    for (const c of accepted) c.close();
  }
});

Deno.test("tls: credentials: each bad file fails with one line naming the file and the problem", () => {
  const cases: [string, { server: boolean; client: boolean }, RegExp][] = [
    [
      creds.expiredDir,
      { server: true, client: false },
      /expired\/server-cert\.pem: the certificate expired on /,
    ],
    [
      creds.mismatchDir,
      { server: true, client: false },
      /mismatch\/server-key\.pem: does not match server-cert\.pem/,
    ],
    [
      creds.foreignServerDir,
      { server: true, client: false },
      /foreign\/server-cert\.pem: not signed by ca-cert\.pem/,
    ],
    [
      creds.otherCaDir,
      { server: false, client: true },
      /other-ca\/client-cert\.pem: not signed by ca-cert\.pem/,
    ],
    [
      `${creds.root}/missing`,
      { server: true, client: false },
      /missing\/ca-cert\.pem: cannot read it \(no such file\)/,
    ],
  ];
  for (const [dir, needs, message] of cases) {
    assert.throws(() => loadCredentials(dir, needs), (e: unknown) => {
      assert.ok(e instanceof CredentialsError);
      assert.match(e.message, message);
      assert.ok(!e.message.includes("\n"));
      return true;
    });
  }
  // Only the pair an address needs is read: the expired server pair is not needed to connect.
  assert.equal(loadCredentials(creds.expiredDir, { server: false, client: true }).server, null);
});

Deno.test("tls: credentials: a key file that is not a key, and an X.509 v1 certificate", async () => {
  const dir = await Deno.makeTempDir({ dir: creds.root });
  for (const f of ["ca-cert.pem", "server-cert.pem"]) {
    await Deno.copyFile(`${creds.dir}/${f}`, `${dir}/${f}`);
  }
  await Deno.writeTextFile(`${dir}/server-key.pem`, "not a key\n");
  assert.throws(
    () => loadCredentials(dir, { server: true, client: false }),
    /server-key\.pem: not an unencrypted PEM private key/,
  );
  // A v1 certificate: openssl x509 -req without extensions.
  const out = await new Deno.Command("openssl", {
    args: [
      ...["x509", "-req", "-in", `${creds.root}/server.csr`, "-CA", `${creds.root}/ca-cert.pem`],
      ...["-CAkey", `${creds.root}/ca-key.pem`, "-days", "3", "-out", `${dir}/server-cert.pem`],
    ],
    stderr: "null",
  }).output();
  assert.ok(out.success);
  await Deno.copyFile(`${creds.dir}/server-key.pem`, `${dir}/server-key.pem`);
  const pem = await Deno.readTextFile(`${dir}/server-cert.pem`);
  assert.equal(certificateVersion(new Uint8Array(new X509Certificate(pem).raw)), 1);
  assert.throws(
    () => loadCredentials(dir, { server: true, client: false }),
    /server-cert\.pem: an X\.509 v1 certificate, which TLS here refuses; regenerate it with v3 extensions/,
  );
});

Deno.test("tls: subjectDn writes the subject as QEMU's authz-simple compares it", async () => {
  const dir = await Deno.makeTempDir({ dir: creds.root });
  const out = await new Deno.Command("openssl", {
    args: [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"],
      ...["-keyout", `${dir}/k.pem`, "-out", `${dir}/c.pem`, "-days", "1", "-multivalue-rdn"],
      ...["-subj", "/C=DE/O=Example\\, Inc./OU=a+OU=b/CN=client one"],
    ],
    stderr: "null",
  }).output();
  assert.ok(out.success);
  const cert = new X509Certificate(await Deno.readTextFile(`${dir}/c.pem`));
  assert.equal(
    subjectDn(new Uint8Array(cert.raw)),
    "C=DE,O=Example\\, Inc.,OU=a+OU=b,CN=client one",
  );
  assert.equal(certificateVersion(new Uint8Array(cert.raw)), 3);
});

/**
 * A `tls-listen:` listener of ours and a raw TLS client of the test's (Deno's: Nagle on),
 * connected; with `tuner`, our sockets get their options as the program's do.
 */
async function rawPair(tuner: TcpTuner | null = null) {
  const t = transport(creds.dir, new Lines().log, null, tuner);
  const listener = await t.listen(parseAddress("tls-listen:127.0.0.1:0"));
  const accepted = listener.accept();
  const client = await rawClient(portOf(listener), creds.dir);
  await client.handshake();
  return { listener, client, server: await accepted };
}

/** Waits until `count()` stops growing for 50 ms (at most 10 s). */
async function untilStalled(count: () => number): Promise<void> {
  let last = -1;
  for (let i = 0; i < 200 && last !== count(); i++) {
    last = count();
    await new Promise((r) => setTimeout(r, 50));
  }
}

Deno.test("tls: a peer sending while we do not read is held back by TCP, and nothing is lost (SPEC 8)", async () => {
  const { listener, client, server } = await rawPair();
  const chunk = new Uint8Array(256 * 1024).map((_, i) => i & 0xff);
  const total = 256 * 1024 * 1024;
  let sent = 0;
  const sending = (async () => {
    while (sent < total) sent += await client.write(chunk.subarray(sent % chunk.length));
  })();
  try {
    // Nobody reads: the sender must stall once the 1 MiB high water and the kernel's socket
    // buffers are full, long before the 256 MiB it would send.
    await untilStalled(() => sent);
    assert.ok(sent < 64 * 1024 * 1024, `the peer sent ${sent} bytes that nobody read`);
    // Reading again takes everything, in order.
    const buf = new Uint8Array(1024 * 1024);
    let got = 0;
    while (got < total) {
      const n = await server.read(buf);
      assert.notEqual(n, null);
      for (let i = 0; i < n!; i += 4093) assert.equal(buf[i], ((got + i) % chunk.length) & 0xff);
      got += n!;
    }
    await sending;
  } finally {
    client.close();
    server.close();
    listener.close();
  }
});

/** A listener, and a client of our transport connected to it as `server`. */
async function transportPair() {
  const t = transport(creds.dir, new Lines().log);
  const listener = await t.listen(parseAddress("tls-listen:127.0.0.1:0"));
  const accepted = listener.accept();
  const client = await t.connect(
    parseAddress(`tls:127.0.0.1:${portOf(listener)}`),
    new AbortController().signal,
  );
  return { listener, client, server: await accepted };
}

Deno.test("tls: a write settles once node:tls has the bytes: the caller reuses its buffer at once and the peer reads what was written", async () => {
  const { listener, client, server } = await transportPair();
  try {
    // One buffer, refilled as soon as each write settles, as outdev's writer reuses its chunks.
    const buf = new Uint8Array(128 * 1024);
    const ROUNDS = 16;
    const reading = (async () => {
      const got = new Uint8Array(buf.length);
      for (let round = 0; round < ROUNDS; round++) {
        let n = 0;
        while (n < got.length) {
          const r = await client.read(got.subarray(n));
          assert.notEqual(r, null);
          n += r!;
        }
        assert.ok(got.every((b) => b === round + 1), `round ${round}: bytes of a later round`);
      }
    })();
    for (let round = 0; round < ROUNDS; round++) {
      buf.fill(round + 1);
      let sent = 0;
      while (sent < buf.length) sent += await server.write(buf.subarray(sent));
    }
    await reading;
  } finally {
    client.close();
    server.close();
    listener.close();
  }
});

Deno.test("tls: a write to a peer that stopped reading waits, and fails once the connection is gone (SPEC 8)", async () => {
  const { listener, client, server } = await rawPair();
  const chunk = new Uint8Array(256 * 1024);
  let sent = 0;
  const writing = (async () => {
    for (;;) sent += await server.write(chunk);
  })();
  const failed = writing.then(() => null, (error: Error) => error);
  try {
    // Nobody reads: the writes stall once the socket buffers are full.
    await untilStalled(() => sent);
    assert.ok(sent < 64 * 1024 * 1024, `${sent} bytes written to a peer that reads nothing`);
  } finally {
    client.close();
  }
  const error = await failed;
  assert.ok(error instanceof Error, "the stalled write failed when the peer went");
  server.close();
  listener.close();
});

Deno.test("tls: both ends read into buffers of ours: 64 MiB arrive in order and leave no pile of ArrayBuffers (issue 11)", async () => {
  const { listener, client, server } = await transportPair();
  try {
    // On the pinned Deno the internals are there; a Deno without them would fall back to
    // node:tls's own buffers, and this says so.
    assert.equal((client as { ownBuffers?: boolean }).ownBuffers, true);
    assert.equal((server as { ownBuffers?: boolean }).ownBuffers, true);
    const chunk = new Uint8Array(256 * 1024).map((_, i) => (i * 7) & 0xff);
    const total = 64 * 1024 * 1024;
    const sending = (async () => {
      for (let sent = 0; sent < total; sent += chunk.length) await client.write(chunk);
    })();
    // node:tls's own path made a 64 KiB ArrayBuffer per ciphertext read and another per
    // decrypted chunk, freed only by the next collection: tens of MiB of external memory.
    const base = Deno.memoryUsage().external;
    let peak = 0;
    const buf = new Uint8Array(100_000);
    let got = 0;
    while (got < total) {
      const n = await server.read(buf);
      assert.notEqual(n, null);
      for (let i = 0; i < n!; i += 997) {
        assert.equal(buf[i], (((got + i) % chunk.length) * 7) & 0xff);
      }
      got += n!;
      peak = Math.max(peak, Deno.memoryUsage().external - base);
    }
    await sending;
    assert.ok(peak < 16 * 2 ** 20, `external memory grew ${(peak / 2 ** 20).toFixed(1)} MiB`);
    // And back the other way, the client reading.
    await server.write(encoder.encode("and back"));
    assert.equal(await readText(client, 8), "and back");
  } finally {
    client.close();
    server.close();
    listener.close();
  }
});

Deno.test("tls: what a client sends with the end of its handshake, before its connection is taken, is read whole", async () => {
  const t = transport(creds.dir, new Lines().log);
  const listener = await t.listen(parseAddress("tls-listen:127.0.0.1:0"));
  const client = await rawClient(portOf(listener), creds.dir);
  const data = new Uint8Array(200_000).map((_, i) => i % 253);
  let server: Conn | undefined;
  try {
    // Written at once (the handshake finishes inside the first write), accepted afterwards.
    for (let sent = 0; sent < data.length;) sent += await client.write(data.subarray(sent));
    server = await listener.accept();
    const buf = new Uint8Array(data.length);
    let got = 0;
    while (got < data.length) {
      const n = await server.read(buf.subarray(got));
      assert.notEqual(n, null);
      got += n!;
    }
    assert.deepEqual(buf, data);
  } finally {
    client.close();
    server?.close();
    listener.close();
  }
});

/** The program's socket tuner (libc), which these tests need. */
function tuner(): TcpTuner {
  const t = TcpTuner.shared();
  assert.ok(t, `libc reachable for socket options (${TcpTuner.unavailable})`);
  return t;
}

Deno.test("tls: a peer without TCP_NODELAY is acknowledged at once after the handshake: its second small write is not held back by a delayed ACK (issue 11)", async () => {
  // The session tickets we send after its Finished make Linux hold back our ACKs, and Nagle
  // then keeps the peer's next small write until the first is acknowledged: 40 ms or more.
  const delays: number[] = [];
  // The fastest of three connections: a busy machine may delay one read, not three.
  for (let round = 0; round < 3; round++) {
    const { listener, client, server } = await rawPair(tuner());
    try {
      await client.write(encoder.encode("first"));
      assert.equal(await readText(server, 5), "first");
      const sent = performance.now();
      await client.write(encoder.encode("second"));
      assert.equal(await readText(server, 6), "second");
      delays.push(performance.now() - sent);
    } finally {
      client.close();
      server.close();
      listener.close();
    }
  }
  assert.ok(Math.min(...delays) < 25, `the second write took ${delays.map(Math.round)} ms`);
});

Deno.test("tls: an input tells its socket's descriptor for polling, and holds bytes it decrypted (pending, unread) until they are read", async () => {
  const { listener, client, server: conn } = await rawPair(tuner());
  const server = conn as TlsConn;
  try {
    assert.ok(server.fd !== undefined && server.fd > 2, `descriptor ${server.fd}`);
    assert.equal(server.pending(), false);
    const came = new Promise<void>((resolve) => server.onceData(resolve));
    await client.write(encoder.encode("held"));
    await came;
    assert.equal(server.pending(), true, "decrypted, not read yet");
    assert.ok(server.unread() >= 4, `unread ${server.unread()}: at least the decrypted bytes`);
    assert.equal(await readText(server, 4), "held");
    assert.equal(server.pending(), false);
    assert.equal(server.unread(), 0, "read: nothing left in the socket or the TLS layer");
  } finally {
    client.close();
    server.close();
    listener.close();
  }
});

Deno.test("tls: connections opened and closed before their handshake leave nothing behind (node:tls's own handshake timer kept each ~6 KB for 10 s)", async () => {
  const child = new URL("../support/tls_churn_child.ts", import.meta.url).pathname;
  const { bytesPerConnection } = await runJsonChild<{ bytesPerConnection: number }>(
    ["run", "-A", "--v8-flags=--expose-gc", child, creds.dir],
  );
  assert.ok(bytesPerConnection < 1000, `${Math.round(bytesPerConnection)} bytes per connection`);
});
