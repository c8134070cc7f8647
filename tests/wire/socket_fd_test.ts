/**
 * Descriptors Deno does not tell, found by the sockets' addresses (src/wire/socket_fd.ts): a
 * unix connection's, accepted or connected, is its own (a write through it reaches its peer and
 * no other), two connections on one path get one each, and where two unclaimed sockets match
 * none is taken.
 */

import assert from "node:assert/strict";
import { parseAddress } from "../../src/wire/address.ts";
import { PlainTransport } from "../../src/wire/plain.ts";
import { canonicalIp, SocketFinder } from "../../src/wire/socket_fd.ts";
import type { Conn } from "../../src/wire/transport.ts";

const finder = SocketFinder.shared();

Deno.test("socket_fd: addresses compare in one spelling, whoever wrote them", () => {
  assert.equal(canonicalIp("0:0:0:0:0:0:0:1"), "::1");
  assert.equal(canonicalIp("[::1]"), "::1");
  assert.equal(canonicalIp("::ffff:127.0.0.1"), "127.0.0.1");
  assert.equal(canonicalIp("FE80:0:0:0:0:0:0:A"), "fe80::a");
  assert.equal(canonicalIp("10.0.0.1"), "10.0.0.1");
});

/** A test that needs libc through FFI; ignored, visibly, where it is absent. */
function finderTest(name: string, fn: (finder: SocketFinder) => Promise<void>): void {
  Deno.test({
    name: finder ? name : `socket_fd: SKIPPED (${SocketFinder.unavailable})`,
    ignore: finder === null,
    fn: () => fn(finder!),
  });
}

/** Reads exactly `n` bytes from `conn`. */
async function readN(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const got = new Uint8Array(n);
  for (let o = 0; o < n;) {
    const k = await conn.read(got.subarray(o));
    if (k === null) throw new Error(`the stream ended after ${o} of ${n} bytes`);
    o += k;
  }
  return got;
}

finderTest(
  "socket_fd: accepted unix connections, two on one path, each written through its own descriptor",
  async () => {
    const dir = await Deno.makeTempDir();
    const listener = await new PlainTransport().listen(parseAddress(`unix-listen:${dir}/s.sock`));
    const conns: Conn[] = [];
    const peers: Deno.UnixConn[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        const [ours, peer] = await Promise.all([
          listener.accept(),
          Deno.connect({ transport: "unix", path: `${dir}/s.sock` }),
        ]);
        conns.push(ours);
        peers.push(peer);
      }
      assert.ok(conns[0].fd !== undefined && conns[1].fd !== undefined, "both found");
      assert.notEqual(conns[0].fd, conns[1].fd);
      // Each write reaches its own peer: written the other way round, the sizes would cross.
      assert.equal(conns[1].trySend!(new Uint8Array(3).fill(1), 3), 3);
      assert.equal(conns[0].trySend!(new Uint8Array(5).fill(0), 5), 5);
      assert.deepEqual(await readN(peers[0], 5), new Uint8Array(5));
      assert.deepEqual(await readN(peers[1], 3), new Uint8Array(3).fill(1));
      await peers[1].write(new Uint8Array(7));
      let unread = conns[1].unread!();
      for (let i = 0; i < 100 && unread < 7; i++) {
        await new Promise((r) => setTimeout(r, 1));
        unread = conns[1].unread!();
      }
      assert.equal(unread, 7);
      assert.equal(conns[0].unread!(), 0);
    } finally {
      for (const c of conns) c.close();
      for (const p of peers) p.close();
      listener.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

finderTest(
  "socket_fd: a connected unix socket is found by the path it connected to, not the listener's side",
  async () => {
    const dir = await Deno.makeTempDir();
    const path = `${dir}/s.sock`;
    const listener = Deno.listen({ transport: "unix", path });
    const transport = new PlainTransport();
    const accepting = listener.accept();
    const ours = await transport.connect(
      parseAddress(`unix:${path}`),
      new AbortController().signal,
    );
    const peer = await accepting;
    try {
      assert.ok(ours.fd !== undefined, "found");
      assert.equal(ours.trySend!(new Uint8Array([4, 2]), 2), 2);
      assert.deepEqual(await readN(peer, 2), new Uint8Array([4, 2]));
    } finally {
      ours.close();
      peer.close();
      listener.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

finderTest(
  "socket_fd: two unclaimed sockets that match are neither taken; a claim is given back at close",
  async (finder) => {
    const dir = await Deno.makeTempDir();
    const path = `${dir}/s.sock`;
    const listener = Deno.listen({ transport: "unix", path });
    const pairs: Deno.UnixConn[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        const [a, c] = await Promise.all([
          listener.accept(),
          Deno.connect({ transport: "unix", path }),
        ]);
        pairs.push(a as Deno.UnixConn, c);
      }
      assert.equal(finder.unix(path, null), -1, "two accepted sockets match: neither");
      // The connecting ends have the listener's path as their peer: two of them too.
      assert.equal(finder.unix(null, path), -1);
      pairs[2].close();
      const only = finder.unix(path, null);
      assert.ok(only >= 0, "one left: found");
      assert.equal(finder.unix(path, null), -1, "claimed: not found again");
      finder.release(only);
      assert.equal(finder.unix(path, null), only, "given back: found again");
      finder.release(only);
    } finally {
      for (const c of pairs) {
        try {
          c.close();
        } catch { /* closed above */ }
      }
      listener.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
