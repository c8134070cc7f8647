/**
 * SPEC 11: TCP keepalive on every TCP connection, so a dead peer is noticed within a minute.
 * The first tests read the options back from the kernel on both ends of plain and TLS
 * connections; the last one takes a peer away for real in a network namespace of its own
 * (root and `unshare` needed, else it is skipped), with the kernel's default timing in place,
 * and measures when the running program lets go of it.
 */

import assert from "node:assert/strict";
import { Logger } from "../../src/log.ts";
import { parseAddress } from "../../src/wire/address.ts";
import { DEAD_PEER_TIMING, deadPeerAfterMs, TcpTuner } from "../../src/wire/keepalive.ts";
import type { SocketName } from "../../src/wire/socket_fd.ts";
import { PlainTransport } from "../../src/wire/plain.ts";
import { TlsTransport } from "../../src/wire/tls.ts";
import { loadCredentials } from "../../src/wire/tls_creds.ts";
import type { Transport } from "../../src/wire/transport.ts";
import { makeCreds, removeCreds } from "../support/tls_creds.ts";

const tuner = TcpTuner.shared();
const EXPECTED = {
  keepalive: true,
  idleS: 30,
  intervalS: 5,
  probes: 5,
  userTimeoutMs: 55_000,
};

function nameOf(text: string): SocketName {
  const colon = text.lastIndexOf(":");
  return { hostname: text.slice(0, colon), port: Number(text.slice(colon + 1)) };
}

/** Connects `transport` to itself on `host` and reads both ends' options back. */
async function bothEnds(transport: Transport, scheme: string, host: string) {
  const listener = await transport.listen(parseAddress(`${scheme}-listen:${host}:0`));
  const port = nameOf(listener.boundText).port;
  const accepted = listener.accept();
  const client = await transport.connect(
    parseAddress(`${scheme}:${host}:${port}`),
    new AbortController().signal,
  );
  const server = await accepted;
  try {
    // The server's peer is the client's own address.
    const clientName = nameOf(server.peer);
    const serverName = nameOf(listener.boundText);
    return {
      server: tuner!.read(serverName, clientName),
      client: tuner!.read(clientName, serverName),
    };
  } finally {
    client.close();
    server.close();
    listener.close();
  }
}

Deno.test("keepalive: a dead peer is given up 55 s after it last answered", () => {
  assert.equal(deadPeerAfterMs(DEAD_PEER_TIMING), 55_000);
  assert.ok(deadPeerAfterMs(DEAD_PEER_TIMING) < 60_000);
});

/** A test that needs the TCP tuner (libc through FFI); ignored, visibly, where it is absent. */
function tunerTest(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name: tuner ? name : `keepalive: SKIPPED (${TcpTuner.unavailable})`,
    ignore: tuner === null,
    fn,
  });
}

tunerTest(
  "keepalive: both ends of a plain TCP connection, over IPv4 and IPv6, get the timing",
  async () => {
    const plain = new PlainTransport(undefined, tuner);
    for (const host of ["127.0.0.1", "[::1]"]) {
      const ends = await bothEnds(plain, "tcp", host);
      assert.deepEqual(ends, { server: EXPECTED, client: EXPECTED }, host);
    }
  },
);

tunerTest(
  "keepalive: without a tuner the kernel's timing stays (the test above could fail)",
  async () => {
    const ends = await bothEnds(new PlainTransport(), "tcp", "127.0.0.1");
    assert.equal(ends.server?.keepalive, true);
    assert.notEqual(ends.server?.idleS, EXPECTED.idleS);
    assert.equal(ends.server?.userTimeoutMs, 0);
  },
);

tunerTest(
  "keepalive: both ends of a TLS connection get the timing",
  async () => {
    const creds = await makeCreds();
    try {
      const tls = new TlsTransport({
        creds: loadCredentials(creds.dir, { server: true, client: true }),
        authz: null,
        log: new Logger("error"),
        tuner,
      });
      const ends = await bothEnds(tls, "tls", "127.0.0.1");
      assert.deepEqual(ends, { server: EXPECTED, client: EXPECTED });
    } finally {
      await removeCreds(creds);
    }
  },
);

const SCRIPT = new URL("../support/dead_peer.ts", import.meta.url).pathname;
const canNamespace = Deno.uid() === 0 &&
  (await new Deno.Command("unshare", { args: ["-n", "true"], stderr: "null" }).output()).success;

Deno.test({
  name: canNamespace
    ? "keepalive: the program lets go of a dead notify-dev peer and a vanished outdev within a minute, kernel defaults untouched"
    : "keepalive: SKIPPED (needs root and unshare for a network namespace)",
  ignore: !canNamespace,
  async fn() {
    const out = await new Deno.Command("unshare", {
      args: [
        "-n",
        "sh",
        "-c",
        `ip link set lo up && exec "${Deno.execPath()}" run -A "${SCRIPT}"`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.ok(out.success, new TextDecoder().decode(out.stderr) + text);
    const r = JSON.parse(text.trim().split("\n").pop()!);
    // The kernel's own timing would take over two hours (keepalive) and about 15 minutes
    // (retransmissions); ours gives each peer up 55 s after it last answered.
    assert.equal(r.kernelKeepaliveS, 7200);
    for (const endpoint of ["notify-dev", "outdev"]) {
      const ms = r.noticedMs[endpoint];
      assert.ok(ms > 20_000 && ms < 60_000, `${endpoint} noticed after ${ms} ms`);
    }
  },
});
