/**
 * End-to-end: a slow outdev pauses the inputs (back-pressure) instead of growing memory, and
 * nothing is lost or reordered once it reads again.
 */

import assert from "node:assert/strict";
import { connectRetry, FrameCollector } from "../support/net.ts";
import { concat, frame, framed, pseudoRandomBytes } from "../support/packets.ts";
import { startProgram } from "../support/program.ts";

function rssMiB(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

/** Writes `data`, or gives up after `ms` without progress; returns whether it all went. */
async function writeWithin(conn: Deno.Conn, data: Uint8Array, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stalled = new Promise<false>((r) => timer = setTimeout(() => r(false), ms));
  const done = (async () => {
    for (let o = 0; o < data.length;) o += await conn.write(data.subarray(o));
    return true as const;
  })();
  try {
    return await Promise.race([done, stalled]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Sends identical TCP segments (1000 bytes each, in rounds of 200) on both inputs until their
 * writes stall for 1.5 s, at most 200,000; returns how many were accepted, and whether they
 * stalled. The writes left hanging go into `pending`.
 */
async function sendUntilStalled(
  pri: Deno.Conn,
  sec: Deno.Conn,
  pending: Promise<unknown>[],
): Promise<{ sent: number; stalled: boolean }> {
  const payload = pseudoRandomBytes(1000, 3);
  const ROUND = 200;
  let sent = 0;
  // 200 MB would be buffered without back-pressure; with it, writes stall far earlier.
  while (sent < 200_000) {
    const frames = Array.from(
      { length: ROUND },
      (_, i) => framed(frame({ tcp: { seq: 1 + (sent + i) * 1000, payload } })),
    );
    const batch = concat(...frames);
    const [a, b] = [writeWithin(pri, batch, 1500), writeWithin(sec, batch, 1500)];
    pending.push(a, b);
    if (!(await a) || !(await b)) return { sent, stalled: true };
    sent += ROUND;
  }
  return { sent, stalled: false };
}

/** The program with all three peers connected; outdev's peer reads nothing until told. */
async function startWithOutdevUnread() {
  const program = await startProgram({ noNotify: true });
  const pri = await connectRetry(program.ports["primary-in"]);
  const sec = await connectRetry(program.ports["secondary-in"]);
  const outConn = await connectRetry(program.ports["outdev"]);
  await program.waitForLine(/event=peer-connected endpoint=outdev /);
  return { program, pri, sec, outConn };
}

/** Frames `sendUntilStalled` sent, each in its place: sequence numbers 1, 1001, 2001, ... */
function assertInSequence(got: { data: Uint8Array }[]): void {
  got.forEach((r, i) => {
    const seq = new DataView(r.data.buffer, r.data.byteOffset).getUint32(38);
    if (seq !== 1 + i * 1000) assert.fail(`frame ${i} has seq ${seq}`);
  });
}

Deno.test("e2e: a stalled outdev pauses the inputs; memory stays bounded; nothing is lost", async () => {
  const { program, pri, sec, outConn } = await startWithOutdevUnread();
  const pending: Promise<unknown>[] = [];
  try {
    const { sent, stalled } = await sendUntilStalled(pri, sec, pending);
    assert.ok(stalled, "the inputs never stopped being read");
    assert.ok(sent * 1054 < 100 * 2 ** 20, `${sent} frames accepted before the stall`);
    const rss = rssMiB(program.pid);
    assert.ok(rss < 250, `the comparator grew to ${rss.toFixed(0)} MiB`);
    // outdev reads again: every frame of the rounds that were accepted comes out, in order.
    const out = new FrameCollector(outConn);
    const got = await out.waitFor(sent, 30_000);
    assertInSequence(got);
    await out.close();
  } finally {
    pri.close();
    sec.close();
    try {
      outConn.close();
    } catch {
      // closed by the collector
    }
    await Promise.allSettled(pending);
    const { code } = await program.stop();
    assert.equal(code, 0);
  }
});

Deno.test("e2e: SIGTERM with outdev stalled exits 0 once outdev took nothing for a second, counting what it could not send", async () => {
  const { program, pri, sec, outConn } = await startWithOutdevUnread();
  const pending: Promise<unknown>[] = [];
  try {
    assert.ok((await sendUntilStalled(pri, sec, pending)).stalled);
    const began = performance.now();
    const { code, stderr } = await program.stop();
    const ms = performance.now() - began;
    assert.equal(code, 0);
    // SHUTDOWN_STALL_MS (1 s) without a byte taken, then out; not the whole 5 s flush bound.
    assert.ok(ms < 3500, `exited after ${ms.toFixed(0)} ms`);
    assert.match(
      stderr,
      /event=unsent-at-exit endpoint=outdev bytes=\d+ reason="outdev took nothing for 1000 ms"/,
    );
    assert.doesNotMatch(stderr, /event=write-failed/, "the stop's own cut is no peer's failure");
  } finally {
    pri.close();
    sec.close();
    outConn.close();
    await Promise.allSettled(pending);
  }
});

Deno.test("e2e: SIGTERM with outdev reading slowly: everything released goes out, past the stall bound", async () => {
  const { program, pri, sec, outConn } = await startWithOutdevUnread();
  const pending: Promise<unknown>[] = [];
  let out: FrameCollector | undefined;
  try {
    const { sent, stalled } = await sendUntilStalled(pri, sec, pending);
    assert.ok(stalled);
    const began = performance.now();
    const stopped = program.stop();
    // Three reads 0.6 s apart, then at full speed: the stop waits 1.8 s or more, each gap
    // shorter than the second without progress that ends it.
    out = new FrameCollector(outConn, false, { slowReads: 3, gapMs: 600 });
    const { code, stderr } = await stopped;
    const ms = performance.now() - began;
    assert.equal(code, 0);
    assert.doesNotMatch(stderr, /event=unsent-at-exit/);
    assert.ok(ms >= 1800, `stopped after ${ms.toFixed(0)} ms, before the slow reads ended`);
    // Every frame released went out (one side's last frames may have stayed unread: held).
    const released = Number(/event=summary .*\breleased=(\d+)/.exec(stderr)![1]);
    assert.ok(released > 0 && released <= sent, `released ${released} of ${sent}`);
    const got = await out.waitFor(released, 10_000);
    assert.equal(got.length, released);
    assertInSequence(got);
  } finally {
    pri.close();
    sec.close();
    if (out) await out.close();
    else outConn.close();
    await Promise.allSettled(pending);
  }
});
