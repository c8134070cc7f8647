import assert from "node:assert/strict";
import v8 from "node:v8";
import { settledAtOnce } from "../../src/input/pump.ts";
import { SEND_AT_ONCE_MAX } from "../../src/wire/plain.ts";
import { opWaiting, readOp, waitingOpId } from "../../src/wire/read_op.ts";
import { writeAll } from "../../src/wire/transport.ts";
import { plainPair } from "../support/net.ts";

Deno.test("plain: Deno's read op is found on the pinned Deno (src/wire/read_op.ts)", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [accepted, peer] = await Promise.all([
    listener.accept(),
    Deno.connect({ hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port }),
  ]);
  try {
    const read = readOp(accepted);
    assert.ok(read, `no read op on Deno ${Deno.version.deno}: reads go through Conn.read`);
    await peer.write(new Uint8Array([7, 8, 9]));
    const buf = new Uint8Array(16);
    assert.equal(await read(buf), 3);
    assert.deepEqual(buf.subarray(0, 3), new Uint8Array([7, 8, 9]));
    peer.closeWrite();
    assert.equal(await read(buf), 0, "0 at the end of the stream");
  } finally {
    accepted.close();
    peer.close();
    listener.close();
  }
});

Deno.test("plain: a read settles at once when the bytes are there, and not when it waits (the pump's turns)", async () => {
  const { ours, peer, close } = await plainPair();
  try {
    assert.equal(ours.settlesOnTurn, true);
    await writeAll(peer, new Uint8Array(100));
    // The bytes reach our socket through loopback: wait until a read finds them.
    const buf = new Uint8Array(16);
    let got = (await ours.read(buf))!;
    assert.ok(got > 0 && got < 100);
    const there = ours.read(buf);
    assert.equal(await settledAtOnce(there), true, "bytes waiting: settled at once");
    got += (await there)!;
    while (got < 100) got += (await ours.read(buf))!;
    const waiting = ours.read(buf);
    assert.equal(await settledAtOnce(waiting), false, "nothing waiting: not settled");
    await writeAll(peer, new Uint8Array([1]));
    assert.equal(await waiting, 1);
  } finally {
    close();
  }
});

Deno.test("plain: reads the stream to its end, in order, whatever the chunking", async () => {
  const { ours, peer, close } = await plainPair();
  const sent = new Uint8Array(300_000).map((_, i) => (i * 7) & 0xff);
  const writing = writeAll(peer, sent).then(() => peer.closeWrite());
  const received = new Uint8Array(sent.length + 1);
  let filled = 0;
  const buf = new Uint8Array(4096);
  for (let n; (n = await ours.read(buf));) {
    received.set(buf.subarray(0, n), filled);
    filled += n;
  }
  await writing;
  assert.equal(filled, sent.length);
  assert.deepEqual(received.subarray(0, filled), sent);
  close();
});

Deno.test("plain: closing ends a read under way", async () => {
  const { ours, close } = await plainPair();
  const reading = ours.read(new Uint8Array(64)).then((n) => n, () => "rejected");
  ours.close();
  const outcome = await reading;
  assert.ok(!outcome || outcome === "rejected", `read resolved ${outcome} after close`);
  close();
});

/** Bytes in V8's old generation (no collection forced: garbage counts). */
function oldSpace(): number {
  return v8.getHeapSpaceStatistics().find((s) => s.space_name === "old_space")!.space_used_size;
}

Deno.test("plain: after a quiet moment, reads leave no garbage in the old generation (issue 11)", async () => {
  const { ours, peer, close } = await plainPair();
  // A read that waits while scavenges run: what promotes Deno.Conn.read's pending-read Set,
  // after which each of its reads leaves 40-120 bytes of old-generation garbage.
  const buf = new Uint8Array(64 * 1024);
  const waiting = ours.read(buf);
  let junk: unknown[] = [];
  for (let i = 0; i < 2_000_000; i++) {
    junk.push({ i, a: [i] });
    if (junk.length > 1000) junk = [];
  }
  await writeAll(peer, new Uint8Array(1));
  assert.equal(await waiting, 1);
  const READS = 5000;
  const one = new Uint8Array(512);
  const before = oldSpace();
  for (let i = 0; i < READS; i++) {
    await writeAll(peer, one);
    for (let got = 0; got < one.length;) got += (await ours.read(buf))!;
  }
  const perRead = (oldSpace() - before) / READS;
  assert.ok(perRead < 10, `${perRead.toFixed(1)} bytes of old generation per read`);
  close();
});

Deno.test("plain: every connection's read and write are the same two functions", async () => {
  // One call target for the writer's and the pumps' calls, whichever the connection: with a
  // closure per connection V8 threw away their compiled code at the real peers' first frames
  // (tests/warm_code_test.ts).
  const a = await plainPair();
  const b = await plainPair();
  try {
    assert.equal(a.ours.read, b.ours.read);
    assert.equal(a.ours.write, b.ours.write);
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("plain: a small write goes out at once past the op, a larger one is left to the op; none after close", async () => {
  const { ours, peer, close } = await plainPair();
  try {
    assert.ok(ours.trySend, "plain connections write at once");
    // From a view that does not start its buffer: the view's bytes, not its buffer's.
    const bytes = new Uint8Array(64).map((_, i) => i).subarray(8);
    assert.equal(ours.trySend(bytes, 10), 10);
    const got = new Uint8Array(10);
    let n = 0;
    while (n < 10) n += (await peer.read(got.subarray(n)))!;
    assert.deepEqual(got, bytes.slice(0, 10));
    assert.equal(ours.trySend(new Uint8Array(SEND_AT_ONCE_MAX + 1), SEND_AT_ONCE_MAX + 1), -1);
    ours.close();
    assert.equal(ours.trySend(bytes, 1), -1, "closed: never the descriptor's next owner");
  } finally {
    close();
  }
});

Deno.test("plain: a read op that waits is seen waiting until its bytes come; a promise not an op has no id", async () => {
  const { ours, peer, close } = await plainPair();
  try {
    const buf = new Uint8Array(16);
    const waiting = ours.read(buf);
    const id = waitingOpId(waiting);
    assert.ok(id >= 0, "an op that waits has an id");
    assert.equal(opWaiting(id), true);
    await writeAll(peer, new Uint8Array([1, 2]));
    assert.equal(await waiting, 2);
    assert.equal(opWaiting(id), false, "settled: no longer waiting");
    const settled = Promise.resolve(5);
    assert.equal(waitingOpId(settled), -1, "not an op");
  } finally {
    close();
  }
});

Deno.test("plain: a read at once takes what the socket holds, without an op; nothing there, the end and after close are not reads", async () => {
  const { ours, peer, close } = await plainPair();
  try {
    assert.ok(ours.tryRecv, "plain connections read at once");
    const buf = new Uint8Array(64);
    assert.equal(ours.tryRecv(buf), -1, "nothing there yet: would block");
    await writeAll(peer, new Uint8Array([7, 8, 9]));
    // The bytes are in the socket once the peer's write returned (loopback).
    let n = -1;
    for (let i = 0; i < 100 && n < 0; i++) {
      n = ours.tryRecv(buf);
      if (n < 0) await new Promise((r) => setTimeout(r, 1));
    }
    assert.equal(n, 3);
    assert.deepEqual(buf.subarray(0, 3), new Uint8Array([7, 8, 9]));
    assert.equal(ours.tryRecv(buf), -1, "taken: nothing left");
    peer.close();
    let end = -1;
    for (let i = 0; i < 100 && end < 0; i++) {
      end = ours.tryRecv(buf);
      if (end < 0) await new Promise((r) => setTimeout(r, 1));
    }
    assert.equal(end, 0, "the peer's end reads as 0: left to the op to tell");
    ours.close();
    assert.equal(ours.tryRecv(buf), -1, "closed: never the descriptor's next owner");
  } finally {
    close();
  }
});

Deno.test("plain: unread tells the bytes the socket received and no read took yet; -1 after close", async () => {
  const { ours, peer, close } = await plainPair();
  try {
    assert.ok(ours.unread, "plain connections tell what is unread");
    assert.equal(ours.unread(), 0);
    await writeAll(peer, new Uint8Array(1000));
    // On loopback the bytes are in our receive queue once the peer's write returned; the
    // kernel may show them a moment later on a loaded host.
    let unread = ours.unread();
    for (let i = 0; i < 100 && unread < 1000; i++) {
      await new Promise((r) => setTimeout(r, 1));
      unread = ours.unread();
    }
    assert.equal(unread, 1000);
    assert.equal(ours.tryRecv!(new Uint8Array(300)), 300);
    assert.equal(ours.unread(), 700, "what a read took is no longer unread");
    ours.close();
    assert.equal(ours.unread(), -1, "closed: never the descriptor's next owner");
  } finally {
    close();
  }
});
