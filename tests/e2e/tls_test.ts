/**
 * End-to-end TLS (SPEC 11) with the real program: QEMU 7.2's TLS chardevs interoperate both
 * ways (QEMU connects to our tls-listen:, we connect to QEMU's TLS server with its
 * authz-simple), refused clients leave no trace but one warn line, bad credentials end the
 * program at start, and after start the program holds only the permissions it needs.
 * The QEMU tests skip, saying so, where qemu-system-x86_64 is not installed.
 */

import assert from "node:assert/strict";
import { Logger } from "../../src/log.ts";
import { parseAddress } from "../../src/wire/address.ts";
import { MAX_CONNECTIONS, TlsTransport } from "../../src/wire/tls.ts";
import { loadCredentials } from "../../src/wire/tls_creds.ts";
import { qemuAvailable, qemuBinary } from "../conformance/impl.ts";
import { connectRetry, FrameCollector, freePorts } from "../support/net.ts";
import { arp, framed } from "../support/packets.ts";
import { startProgram } from "../support/program.ts";
import {
  makeCreds,
  rawClient,
  removeCreds,
  sendUntilRefused,
  type TestCreds,
} from "../support/tls_creds.ts";
import { writeAll } from "../../src/wire/transport.ts";

const haveQemu = await qemuAvailable();
const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const skipped = haveQemu ? "" : " (skipped: qemu-system-x86_64 not on PATH)";

let creds: TestCreds;

Deno.test.beforeAll(async () => {
  creds = await makeCreds();
});

Deno.test.afterAll(async () => {
  await removeCreds(creds);
});

/** QEMU 7.2's colo-compare with the given chardevs and objects, no guest. */
function startQemu(args: string[]): { stop(): Promise<string> } {
  const child = new Deno.Command(qemuBinary(), {
    args: [
      ...["-machine", "none", "-nodefaults", "-display", "none", "-monitor", "none"],
      ...["-serial", "none", "-object", "iothread,id=io1", ...args],
      "-object",
      "colo-compare,id=cmp,primary_in=pri,secondary_in=sec,outdev=out,iothread=io1",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  return {
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch {
        // already gone
      }
      await child.status;
      return await stderr;
    },
  };
}

/** ARP frames that differ by address: what a colo-compare passes through at once. */
function markers(count: number, base: number): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => arp(`10.9.${base}.${i + 1}`, "10.9.0.254"));
}

/**
 * Sends the first marker into `input` until it comes out of `output` (QEMU drops what it
 * releases before its outdev peer is up), then the rest; returns the frames that came out.
 */
async function carry(
  input: Deno.Conn,
  output: FrameCollector,
  frames: Uint8Array[],
): Promise<Uint8Array[]> {
  const first = frames[0].join();
  while (!output.frames.some((f) => f.data.join() === first)) {
    await writeAll(input, framed(frames[0]));
    await output.waitUntil((f) => f.data.join() === first, 200);
  }
  for (const f of frames.slice(1)) await writeAll(input, framed(f));
  const last = frames[frames.length - 1].join();
  assert.ok(await output.waitUntil((f) => f.data.join() === last, 10_000), "last frame arrived");
  const start = output.frames.findLastIndex((f) => f.data.join() === first);
  return output.frames.slice(start).map((f) => f.data);
}

Deno.test({
  name:
    `e2e tls: QEMU 7.2's TLS chardev client (verify-peer=on) feeds our tls-listen: primary-in${skipped}`,
  ignore: !haveQemu,
  async fn() {
    const ours = await startProgram({
      endpoints: [
        ...["--primary-in", "tls-listen:127.0.0.1:0", "--secondary-in", "tcp-listen:127.0.0.1:0"],
        ...["--outdev", "tcp-listen:127.0.0.1:0"],
      ],
      flags: ["--tls-creds", creds.dir, "--tls-authz", "O=Example,CN=client"],
    });
    const [qpri, qsec] = freePorts(2);
    const qemu = startQemu([
      ...["-object", `tls-creds-x509,id=tls0,dir=${creds.dir},endpoint=client,verify-peer=on`],
      ...["-chardev", `socket,id=pri,host=127.0.0.1,port=${qpri},server=on,wait=off`],
      ...["-chardev", `socket,id=sec,host=127.0.0.1,port=${qsec},server=on,wait=off`],
      "-chardev",
      `socket,id=out,host=127.0.0.1,port=${ours.ports["primary-in"]},tls-creds=tls0,reconnect=1`,
    ]);
    const pri = await connectRetry(qpri);
    const sec = await connectRetry(qsec);
    const out = new FrameCollector(await connectRetry(ours.ports["outdev"]));
    try {
      await ours.waitForLine(/event=peer-connected endpoint=primary-in/);
      const sent = markers(50, 1);
      const got = await carry(pri, out, sent);
      assert.deepEqual(got.map((f) => f.join()), sent.map((f) => f.join()));
    } finally {
      pri.close();
      sec.close();
      await out.close();
      const qemuLog = await qemu.stop();
      const { code, stderr } = await ours.stop();
      assert.equal(code, 0, stderr);
      assert.doesNotMatch(stderr, /tls-refused/, qemuLog);
    }
  },
});

/**
 * QEMU 7.2's colo-compare whose primary_in is a TLS server chardev (verify-peer=on) that
 * admits the client `identity` (QEMU's option syntax: the DN's commas doubled).
 */
function qemuTlsServer(identity: string) {
  const [qpri, qsec, qout] = freePorts(3);
  const qemu = startQemu([
    ...["-object", `tls-creds-x509,id=tls0,dir=${creds.dir},endpoint=server,verify-peer=on`],
    ...["-object", `authz-simple,id=auth0,identity=${identity}`],
    "-chardev",
    `socket,id=pri,host=127.0.0.1,port=${qpri},server=on,wait=off,tls-creds=tls0,tls-authz=auth0`,
    ...["-chardev", `socket,id=sec,host=127.0.0.1,port=${qsec},server=on,wait=off`],
    ...["-chardev", `socket,id=out,host=127.0.0.1,port=${qout},server=on,wait=off`],
  ]);
  return { qemu, qpri, qsec, qout };
}

Deno.test({
  name:
    `e2e tls: our tls: outdev connects to QEMU 7.2's TLS server chardev (verify-peer=on, authz-simple)${skipped}`,
  ignore: !haveQemu,
  async fn() {
    const { qemu, qpri, qsec, qout } = qemuTlsServer("O=Example,,CN=client");
    const qsecConn = await connectRetry(qsec);
    const qemuOut = new FrameCollector(await connectRetry(qout));
    const ours = await startProgram({
      endpoints: [
        ...["--primary-in", "tcp-listen:127.0.0.1:0", "--secondary-in", "tcp-listen:127.0.0.1:0"],
        ...["--outdev", `tls:127.0.0.1:${qpri}`],
      ],
      flags: ["--tls-creds", creds.dir],
    });
    const pri = await connectRetry(ours.ports["primary-in"]);
    try {
      await ours.waitForLine(/event=peer-connected endpoint=outdev/);
      const sent = markers(50, 2);
      const got = await carry(pri, qemuOut, sent);
      assert.deepEqual(got.map((f) => f.join()), sent.map((f) => f.join()));
    } finally {
      pri.close();
      qsecConn.close();
      await qemuOut.close();
      const { code, stderr } = await ours.stop();
      const qemuLog = await qemu.stop();
      assert.equal(code, 0, stderr + qemuLog);
    }
  },
});

Deno.test({
  name:
    `e2e tls: QEMU 7.2's tls-authz with our DN reversed refuses us: one connect-failed warn line, not a peer that comes and goes${skipped}`,
  ignore: !haveQemu,
  async fn() {
    // Our client is O=Example,CN=client: QEMU 7.2 compares the DN in the certificate's order,
    // so the reversed name refuses it (as --tls-authz does here).
    const { qemu, qpri, qout } = qemuTlsServer("CN=client,,O=Example");
    // QEMU opens its chardevs in order: once outdev listens, the TLS primary_in does too.
    const qemuOut = await connectRetry(qout);
    const ours = await startProgram({
      endpoints: [
        ...["--primary-in", "tcp-listen:127.0.0.1:0", "--secondary-in", "tcp-listen:127.0.0.1:0"],
        ...["--outdev", `tls:127.0.0.1:${qpri}`],
      ],
      flags: ["--tls-creds", creds.dir, "--log-level", "debug"],
    });
    try {
      const line = await ours.waitForLine(/event=connect-failed endpoint=outdev .*handshake/);
      assert.match(line, /level=warn .*refused our client certificate/);
      // Two more attempts (backoff 100, 200 ms), logged at debug only.
      await ours.waitForLine(/level=debug event=connect-failed endpoint=outdev .* retry_ms=400/);
    } finally {
      const { code, stderr } = await ours.stop();
      qemuOut.close();
      await qemu.stop();
      assert.equal(code, 0, stderr);
      assert.equal(stderr.match(/level=warn event=connect-failed/g)?.length, 1, stderr);
      assert.doesNotMatch(stderr, /event=peer-connected/);
    }
  },
});

/**
 * The program with primary-in on `tls-listen:` (only `O=Example,CN=client` authorized), the
 * secondary and outdev plain; outdev read by a collector.
 */
async function startTlsPrimary() {
  const ours = await startProgram({
    endpoints: [
      ...["--primary-in", "tls-listen:127.0.0.1:0", "--secondary-in", "tcp-listen:127.0.0.1:0"],
      ...["--outdev", "tcp-listen:127.0.0.1:0"],
    ],
    flags: ["--tls-creds", creds.dir, "--tls-authz", "O=Example,CN=client"],
  });
  const out = new FrameCollector(await connectRetry(ours.ports["outdev"]));
  return { ours, out, port: ours.ports["primary-in"] };
}

Deno.test("e2e tls: clients without a certificate, of another CA or with another DN are refused; one warn line; nothing they send is compared or released", async () => {
  const { ours, out, port } = await startTlsPrimary();
  const [refused, good] = [markers(3, 3), markers(1, 4)[0]];
  try {
    const clients: [string, boolean][] = [
      [creds.dir, false],
      [creds.otherCaDir, true],
      [creds.wrongDnDir, true],
    ];
    for (const [i, [dir, withCert]] of clients.entries()) {
      await sendUntilRefused(await rawClient(port, dir, withCert), framed(refused[i]));
    }
    const conn = await rawClient(port, creds.dir);
    await conn.handshake();
    await conn.write(framed(good));
    const first = await out.waitFor(1);
    assert.deepEqual(first[0].data, good);
    conn.close();
    await ours.waitForLine(/event=peer-disconnected endpoint=primary-in/);
  } finally {
    await out.close();
  }
  const { code, stderr } = await ours.stop();
  assert.equal(code, 0, stderr);
  assert.equal(out.frames.length, 1, "only the authorized client's frame was released");
  const refusals = stderr.split("\n").filter((l) => l.includes("event=tls-refused"));
  assert.equal(refusals.length, 1, stderr);
  assert.match(refusals[0], /level=warn .*peer=127\.0\.0\.1:\d+ reason=/);
  assert.match(stderr, /event=summary primary_in=1 /);
  assert.equal(stderr.match(/event=peer-connected endpoint=primary-in/g)?.length, 1);
});

Deno.test("e2e tls: unauthenticated connections that fill the slots and refill them at once do not keep an authorized peer out; their drops are logged rate-limited", async () => {
  const { ours, out, port } = await startTlsPrimary();
  // Twice as many silent connections as there are slots, each reopened as soon as the program
  // drops it: the slots never have room of their own.
  let stop = false;
  let dropped = 0;
  const live = new Set<Deno.Conn>();
  const attackers = Array.from({ length: 2 * MAX_CONNECTIONS }, async () => {
    while (!stop) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      live.add(c);
      await c.read(new Uint8Array(64)).catch(() => null);
      // Whoever takes it out of `live` closes it: here when the program dropped it.
      if (live.delete(c)) {
        dropped++;
        c.close();
      }
    }
  });
  const good = markers(1, 5)[0];
  let conn: Deno.TlsConn | null = null;
  try {
    await ours.waitForLine(/event=tls-handshake-dropped /);
    const started = performance.now();
    for (let tries = 0; conn === null; tries++) {
      assert.ok(performance.now() - started < 3000, `the authorized peer is still out: ${tries}`);
      const c = await rawClient(port, creds.dir);
      try {
        await c.handshake();
        await c.write(framed(good));
        conn = c;
      } catch {
        c.close(); // dropped while in its handshake: the next try
      }
    }
    await out.waitUntil((f) => f.data.join() === good.join(), 5000);
    assert.ok(performance.now() - started < 3000, "the authorized peer's frame came through");
    assert.ok(dropped >= MAX_CONNECTIONS, `silent connections were dropped: ${dropped}`);
  } finally {
    stop = true;
    for (const c of [...live]) {
      live.delete(c);
      c.close();
    }
    await Promise.all(attackers);
    conn?.close();
    await out.close();
  }
  const { code, stderr } = await ours.stop();
  assert.equal(code, 0, stderr);
  assert.equal(out.frames.length, 1, stderr);
  const drops = stderr.split("\n").filter((l) => l.includes("event=tls-handshake-dropped"));
  assert.ok(drops.length >= 1 && drops.length <= 2, drops.join("\n"));
  assert.match(drops[0], /level=warn .*reason="16 connections already/);
  assert.doesNotMatch(stderr, /level=error/);
  assert.equal(stderr.match(/event=peer-connected endpoint=primary-in/g)?.length, 1, stderr);
});

Deno.test("e2e tls: notify-dev over tls-listen: answers COLO_USERSPACE_PROXY_INIT to an authorized client", async () => {
  const ours = await startProgram({
    endpoints: [
      ...["--primary-in", "tcp-listen:127.0.0.1:0", "--secondary-in", "tcp-listen:127.0.0.1:0"],
      ...["--outdev", "tcp-listen:127.0.0.1:0", "--notify-dev", "tls-listen:[::1]:0"],
    ],
    flags: ["--tls-creds", creds.dir, "--tls-authz", "O=Example,CN=client"],
  });
  const controller = new TlsTransport({
    creds: loadCredentials(creds.dir, { server: false, client: true }),
    authz: null,
    log: new Logger("error"),
  });
  const conn = await controller.connect(
    parseAddress(`tls:[::1]:${ours.ports["notify-dev"]}`),
    new AbortController().signal,
  );
  try {
    await conn.write(framed(new TextEncoder().encode("COLO_USERSPACE_PROXY_INIT")));
    const reply = "COLO_COMPARE_GET_XEN_INIT";
    const buf = new Uint8Array(4 + reply.length);
    for (let n = 0; n < buf.length;) {
      const got = await conn.read(buf.subarray(n));
      assert.notEqual(got, null, "the reply arrived before the stream ended");
      n += got!;
    }
    assert.deepEqual(buf, framed(new TextEncoder().encode(reply)));
  } finally {
    conn.close();
  }
  const { code, stderr } = await ours.stop();
  assert.equal(code, 0, stderr);
});

async function run(args: string[]): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("e2e tls: bad credentials and a tls address without --tls-creds exit 2 with one line", async () => {
  const streams = [
    ...["--primary-in", "tls-listen:127.0.0.1:0", "--secondary-in", "tcp-listen:127.0.0.1:0"],
    ...["--outdev", "tls:127.0.0.1:9"],
  ];
  const cases: [string[], RegExp][] = [
    [streams, /^colo-compare: --primary-in tls-listen:127\.0\.0\.1:0 needs --tls-creds DIR/],
    [
      [...streams, "--tls-creds", creds.expiredDir],
      /^colo-compare: --tls-creds: \S+\/expired\/server-cert\.pem: the certificate expired on /,
    ],
    [
      [...streams, "--tls-creds", creds.mismatchDir],
      /^colo-compare: --tls-creds: \S+\/mismatch\/server-key\.pem: does not match server-cert\.pem/,
    ],
    [
      [...streams, "--tls-creds", creds.otherCaDir],
      /^colo-compare: --tls-creds: \S+\/other-ca\/client-cert\.pem: not signed by ca-cert\.pem/,
    ],
    [
      [...streams, "--tls-creds", `${creds.root}/nowhere`],
      /^colo-compare: --tls-creds: \S+\/nowhere\/ca-cert\.pem: cannot read it \(no such file\)/,
    ],
    [
      [
        ...["--primary-in", "tcp-listen:127.0.0.1:0", "--secondary-in", "tcp-listen:127.0.0.1:0"],
        ...["--outdev", "tls:127.0.0.1:9", "--tls-creds", creds.dir, "--tls-authz", "CN=x"],
      ],
      /^colo-compare: --tls-authz checks clients of tls-listen: addresses, and none is given/,
    ],
  ];
  for (const [args, message] of cases) {
    const { code, stderr } = await run(args);
    assert.equal(code, 2, stderr);
    assert.match(stderr, message);
    assert.equal(stderr.trimEnd().split("\n").length, 1, stderr);
  }
});

Deno.test("e2e: after start the program keeps only net, and write (and read) only for unix sockets; keepalive timing outlives ffi", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (
      const [extra, read, write] of [
        [["--outdev", "tcp-listen:127.0.0.1:0"], "prompt", "prompt"],
        [["--outdev", `unix-listen:${dir}/out.sock`], "prompt", "granted"],
        [["--outdev", `unix:${dir}/peer.sock`], "granted", "granted"],
      ] as const
    ) {
      const ours = await startProgram({
        endpoints: [
          ...["--primary-in", "tls-listen:127.0.0.1:0", "--secondary-in", "tcp-listen:127.0.0.1:0"],
          ...extra,
        ],
        flags: ["--tls-creds", creds.dir],
      });
      const line = await ours.waitForLine(/event=permissions /);
      // ffi is gone, yet a peer that comes after the drop still gets the keepalive timing
      // (libc was opened before): its keepalive timer runs from 30 s, not the kernel's 2 h.
      const port = ours.ports["secondary-in"];
      const peer = await Deno.connect({ hostname: "127.0.0.1", port });
      await ours.waitForLine(/event=peer-connected endpoint=secondary-in /);
      const ss = new TextDecoder().decode(
        new Deno.Command("ss", { args: ["-tno", "state", "established", `( sport = :${port} )`] })
          .outputSync().stdout,
      );
      peer.close();
      const timer = /timer:\(keepalive,(\d+)sec/.exec(ss);
      assert.ok(timer && Number(timer[1]) <= 30, ss);
      const { code, stderr } = await ours.stop();
      assert.equal(code, 0, stderr);
      assert.equal(
        line.replace(/^.* event=permissions /, ""),
        `read=${read} write=${write} net=granted env=prompt run=prompt ffi=prompt sys=prompt import=prompt`,
      );
      // What write stays for: the unix-listen socket file is removed at exit.
      await assert.rejects(Deno.lstat(`${dir}/out.sock`), Deno.errors.NotFound);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
