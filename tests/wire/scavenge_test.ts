/**
 * The scavenge nudge (issue 11): it looks at the external memory once per interval of TLS
 * bytes and nudges when it grew past its lowest level; a nudge really makes V8 free dead
 * ArrayBuffers; every TLS connection counts what it reads and writes.
 */

import assert from "node:assert/strict";
import { runJsonChild } from "../support/child.ts";
import { Logger } from "../../src/log.ts";
import { parseAddress } from "../../src/wire/address.ts";
import { ScavengeNudge } from "../../src/wire/scavenge.ts";
import { type TlsConn, TlsTransport } from "../../src/wire/tls.ts";
import { loadCredentials } from "../../src/wire/tls_creds.ts";
import type { Conn } from "../../src/wire/transport.ts";
import { makeCreds, removeCreds } from "../support/tls_creds.ts";
import type { ScavengeChildResult } from "../support/scavenge_child.ts";
import { PROGRAM_V8_FLAGS } from "../../src/v8_flags.ts";

Deno.test("scavenge: looks at the external memory once per interval and nudges when it grew past its lowest level", () => {
  let looks = 0;
  let external = 50;
  let nudged = 0;
  const nudge = new ScavengeNudge({
    every: 100,
    growth: 20,
    external: () => (looks++, external),
    nudge: () => {
      nudged++;
      external = 35; // what the scavenge left
    },
  });
  nudge.count(60);
  assert.equal(looks, 0);
  nudge.count(60); // 120: the first look, 50 is the level
  assert.deepEqual([looks, nudged], [1, 0]);
  external = 30; // V8 collected on its own: the level follows it down
  nudge.count(100);
  external = 50; // 20 past 30: not more than the growth
  nudge.count(99);
  assert.equal(looks, 2, "the interval starts again after each look");
  nudge.count(1);
  assert.deepEqual([looks, nudged], [3, 0]);
  external = 51;
  nudge.count(100); // 21 past 30: a nudge, then the level is what it left
  assert.deepEqual([looks, nudged, nudge.nudges], [5, 1, 1]);
  external = 55; // 20 past 35
  nudge.count(250); // one count, however large, is one look
  assert.deepEqual([looks, nudged], [6, 1]);
  external = 56;
  nudge.count(100);
  assert.deepEqual([looks, nudged], [8, 2]);
});

const CHILD = new URL("../support/scavenge_child.ts", import.meta.url).pathname;

/** External bytes before and after a nudge (or none), in a process with `flags` (the program's). */
function child(
  mode: "nudge" | "none",
  flags: string = PROGRAM_V8_FLAGS,
): Promise<ScavengeChildResult> {
  return runJsonChild(["run", flags, CHILD, mode]);
}

Deno.test("scavenge: with the program's V8 flags a nudge frees the ArrayBuffers nothing refers to, which stay without it", async () => {
  const nudged = await child("nudge");
  const left = await child("none");
  for (const r of [nudged, left]) assert.ok(r.before >= 20 * 2 ** 20, `${r.before} bytes before`);
  assert.ok(nudged.after < 4 * 2 ** 20, `external ${nudged.before} -> ${nudged.after} bytes`);
  assert.ok(left.after >= 20 * 2 ** 20, `without a nudge ${left.before} -> ${left.after} bytes`);
});

Deno.test("scavenge: a nudge frees them with a young generation eight times the program's too", async () => {
  const flags = PROGRAM_V8_FLAGS.replaceAll("semi-space-size=2,", "semi-space-size=16,");
  assert.notEqual(flags, PROGRAM_V8_FLAGS);
  const nudged = await child("nudge", flags);
  assert.ok(nudged.before >= 20 * 2 ** 20, `${nudged.before} bytes before`);
  assert.ok(nudged.after < 4 * 2 ** 20, `external ${nudged.before} -> ${nudged.after} bytes`);
});

Deno.test("scavenge: a TLS connection counts the bytes it writes, and those it reads in node:tls's buffers", async () => {
  const creds = await makeCreds();
  const counted: number[] = [];
  const scavenge = new ScavengeNudge({
    every: 64 * 1024,
    growth: -1,
    external: () => 0,
    nudge: () => counted.push(1),
  });
  const t = new TlsTransport({
    creds: loadCredentials(creds.dir, { server: true, client: true }),
    authz: null,
    log: new Logger("error"),
    scavenge,
  });
  const listener = await t.listen(parseAddress("tls-listen:127.0.0.1:0"));
  const conns: Conn[] = [];
  try {
    const accepted = listener.accept();
    const port = Number(listener.boundText.split(":").pop());
    conns.push(
      await t.connect(parseAddress(`tls:127.0.0.1:${port}`), new AbortController().signal),
    );
    conns.push(await accepted);
    const [client, server] = conns;
    const total = 1024 * 1024;
    const chunk = new Uint8Array(16 * 1024);
    const buf = new Uint8Array(64 * 1024);
    const writing = (async () => {
      for (let sent = 0; sent < total; sent += chunk.length) await client.write(chunk);
    })();
    let got = 0;
    while (got < total) {
      const n = await server.read(buf);
      assert.notEqual(n, null);
      got += n!;
    }
    await writing;
    // 1 MiB written by the client, through the counter: 16 intervals of 64 KiB at most, and at
    // least 12 (a look forgets what a count of up to one 16 KiB write brought past the
    // interval). The 1 MiB read by the server counts too where node:tls hands it over in
    // buffers of its own; read into ours (the pinned Deno), it leaves no garbage and does not.
    const [min, max] = (server as TlsConn).ownBuffers ? [12, 16] : [16, 32];
    assert.ok(
      scavenge.nudges >= min && scavenge.nudges <= max,
      `${scavenge.nudges} nudges, not ${min}-${max}`,
    );
    assert.equal(counted.length, scavenge.nudges);
  } finally {
    for (const c of conns) c.close();
    listener.close();
    await removeCreds(creds);
  }
});
