/**
 * End-to-end: every bound of SPEC 8 holds whatever the peers do, over real sockets.
 */

import assert from "node:assert/strict";
import { connectRetry, FrameCollector } from "../support/net.ts";
import { concat, frame, framed, notifyMessage, pseudoRandomBytes } from "../support/packets.ts";
import {
  connectInputStreams,
  type Program,
  startProgram,
  unixInputEndpoints,
} from "../support/program.ts";
import { writeAll } from "../../src/wire/transport.ts";

function rssMiB(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

/** Writes `data`, or gives up after `ms` without progress; returns whether it all went. */
async function writeWithin(conn: Deno.Conn, data: Uint8Array, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stalled = new Promise<false>((r) => timer = setTimeout(() => r(false), ms));
  const done = (async () => {
    await writeAll(conn, data);
    return true as const;
  })();
  try {
    return await Promise.race([done, stalled]);
  } finally {
    clearTimeout(timer);
  }
}

/** `count` TCP segments of `size` payload bytes on `flows` connections, from `start`. */
function segments(start: number, count: number, size: number, flows = 1): Uint8Array {
  const payload = pseudoRandomBytes(size, 7);
  return concat(
    ...Array.from({ length: count }, (_, k) => {
      const i = start + k;
      const flow = i % flows;
      return framed(frame({
        tcp: { sport: 1024 + flow, seq: 1 + Math.floor(i / flows) * size, payload },
      }));
    }),
  );
}

/** Reads framed frames from `conn` at about `bytesPerSecond`, counting them. */
function slowReader(conn: Deno.Conn, bytesPerSecond: number) {
  let frames = 0;
  let pending = new Uint8Array(0);
  let stopped = false;
  const done = (async () => {
    const buf = new Uint8Array(bytesPerSecond / 20);
    while (!stopped) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) break;
      const all = concat(pending, buf.subarray(0, n));
      let o = 0;
      while (all.length - o >= 4) {
        const len = new DataView(all.buffer, all.byteOffset + o).getUint32(0);
        if (all.length - o < 4 + len) break;
        o += 4 + len;
        frames++;
      }
      pending = all.slice(o);
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return {
    get frames() {
      return frames;
    },
    async stop() {
      stopped = true;
      conn.close();
      await done;
    },
  };
}

Deno.test("e2e: a slow outdev reader pauses both inputs together: identical streams never time out", async () => {
  const program = await startProgram({ noNotify: true, flags: ["--compare-timeout", "1500"] });
  const pri = await connectRetry(program.ports["primary-in"]);
  const sec = await connectRetry(program.ports["secondary-in"]);
  const reader = slowReader(await connectRetry(program.ports["outdev"]), 200_000);
  await program.waitForLine(/event=peer-connected endpoint=outdev /);
  const FRAMES = 8000; // 8 MB: the reader needs 40 s, so the inputs must pause for most of it
  const data = segments(0, FRAMES, 1000, 16);
  const writing = [writeAll(pri, data), writeAll(sec, data)];
  try {
    await program.waitForLine(/event=input-paused side=\w+ reason=outdev-congested/);
    // Four seconds of pausing: long enough for a drifting primary to time out (1.5 s).
    await new Promise((r) => setTimeout(r, 4000));
    assert.ok(reader.frames > 0, "outdev got nothing");
    const paused = program.stderr.filter((l) =>
      /event=input-paused .*reason=outdev-congested/.test(l)
    );
    assert.ok(paused.some((l) => l.includes("side=primary")), "primary never paused");
    assert.ok(paused.some((l) => l.includes("side=secondary")), "secondary never paused");
    assert.ok(paused.every((l) => l.includes("level=info")));
    const timeouts = program.stderr.filter((l) =>
      /event=checkpoint-request reason=timeout/.test(l)
    );
    assert.deepEqual(timeouts, [], "a held frame timed out: the inputs drifted apart");
  } finally {
    pri.close();
    sec.close();
    await Promise.allSettled(writing);
    await reader.stop();
    const { code, stderr } = await program.stop();
    assert.equal(code, 0);
    const summary = stderr.split("\n").find((l) => l.includes("event=summary"))!;
    assert.doesNotMatch(summary, /mismatch_timeout/);
  }
});

Deno.test("e2e: with the secondary away, held bytes stay bounded: the primary pauses, memory stays flat", async () => {
  const program = await startProgram({ noNotify: true, flags: ["--max-held-bytes", "8M"] });
  const pri = await connectRetry(program.ports["primary-in"]);
  const out = new FrameCollector(await connectRetry(program.ports["outdev"]));
  await program.waitForLine(/event=peer-connected endpoint=primary-in /);
  let sent = 0;
  let stalled = false;
  const pending: Promise<unknown>[] = [];
  try {
    // 1000 flows, 200 MB offered; nothing can be compared (no secondary ever connects).
    while (sent < 200_000) {
      const w = writeWithin(pri, segments(sent, 1000, 1000, 1000), 1500);
      pending.push(w);
      if (!(await w)) {
        stalled = true;
        break;
      }
      sent += 1000;
    }
    assert.ok(stalled, "the primary input was never paused");
    const line = await program.waitForLine(/event=input-paused side=primary reason=held-bytes/);
    assert.match(line, /level=info/);
    const rss = rssMiB(program.pid);
    assert.ok(rss < 200, `the comparator grew to ${rss.toFixed(0)} MiB`);
    assert.ok(sent * 1054 < 40 * 2 ** 20, `${sent} frames were read before the pause`);
    assert.equal(out.frames.length, 0);
  } finally {
    pri.close();
    await out.close();
    await Promise.allSettled(pending);
    const { code, stderr } = await program.stop();
    assert.equal(code, 0);
    const peak = Number(/held_bytes_peak=(\d+)/.exec(stderr)?.[1]);
    assert.ok(peak > 0 && peak <= 8 * 2 ** 20, `held ${peak} bytes against --max-held-bytes 8M`);
  }
});

/** Peers on all four endpoints, once the notify-dev one is in. */
/** primary-in, secondary-in and outdev (read by a collector) of a program without notify-dev. */
async function connectInputs(program: Program) {
  const pri = await connectRetry(program.ports["primary-in"]);
  const sec = await connectRetry(program.ports["secondary-in"]);
  const out = new FrameCollector(await connectRetry(program.ports["outdev"]));
  await program.waitForLine(/event=peer-connected endpoint=outdev /);
  return { pri, sec, out };
}

/** The inputs and outdev of {@linkcode connectInputs}. */
type Inputs = Awaited<ReturnType<typeof connectInputs>>;

/** Every endpoint: the inputs on unix sockets in `dir`, outdev and notify-dev on TCP. */
function endpointsWithUnixInputs(dir: string): string[] {
  return [
    ...unixInputEndpoints(dir),
    ...["--outdev", "tcp-listen:127.0.0.1:0", "--notify-dev", "tcp-listen:127.0.0.1:0"],
  ];
}

/** Connects to every stream; the inputs to the unix sockets in `dir` where it is given. */
async function connectAll(program: Program, dir: string | null = null) {
  const { pri, sec } = await connectInputStreams(program, dir);
  const ntf = await connectRetry(program.ports["notify-dev"]);
  const notify = new FrameCollector(ntf);
  const out = new FrameCollector(await connectRetry(program.ports["outdev"]));
  await program.waitForLine(/event=peer-connected endpoint=notify-dev /);
  return { pri, sec, ntf, notify, out };
}

Deno.test("e2e: a checkpoint resumes a primary paused on held bytes after the secondary left", async () => {
  const program = await startProgram({ flags: ["--max-held-bytes", "4M"] });
  const { pri, sec, ntf, notify, out } = await connectAll(program);
  const writing = writeAll(pri, segments(0, 3000, 1000, 10)); // 3 MB: above the 1 MiB mark
  try {
    await program.waitForLine(/event=input-paused side=primary reason=held-bytes/);
    sec.close();
    await program.waitForLine(/event=peer-disconnected endpoint=secondary-in/);
    await writeAll(ntf, notifyMessage("COLO_CHECKPOINT"));
    await program.waitForLine(/event=input-resumed side=primary reason=held-bytes/);
    await writing;
    // Each checkpoint releases what is held; the primary reads on until all of it went out.
    for (let i = 0; i < 20 && out.frames.length < 3000; i++) {
      await writeAll(ntf, notifyMessage("COLO_CHECKPOINT"));
      await out.waitFor(3000, 300).catch(() => {});
    }
    assert.equal(out.frames.length, 3000);
  } finally {
    pri.close();
    await out.close();
    await notify.close();
    await writing.catch(() => {});
    const { code } = await program.stop();
    assert.equal(code, 0);
  }
});

Deno.test("e2e: a side paused for running ahead waits for a checkpoint on its way, not only 100 ms", async () => {
  const program = await startProgram();
  const { pri, sec, ntf, notify, out } = await connectAll(program);
  let writing: Promise<void> = Promise.resolve();
  try {
    // A divergence: the checkpoint is asked for, and not answered yet.
    const payload = pseudoRandomBytes(100, 3);
    await writeAll(pri, framed(frame({ tcp: { sport: 7, seq: 1, payload } })));
    const other = payload.slice();
    other[0] ^= 1;
    await writeAll(sec, framed(frame({ tcp: { sport: 7, seq: 1, payload: other } })));
    await program.waitForLine(/event=checkpoint-request reason=tcp-payload/);
    // The primary runs 3 MB ahead on other flows: paused above the 1 MiB lead.
    writing = writeAll(pri, segments(0, 3000, 1000, 10));
    await program.waitForLine(/event=input-paused side=primary reason=ahead/);
    const pausedAt = performance.now();
    // Well past the 100 ms after which a lead pause is waived while no checkpoint is coming.
    await new Promise((r) => setTimeout(r, 400));
    await writeAll(ntf, notifyMessage("COLO_CHECKPOINT"));
    const resumed = await program.waitForLine(/event=input-resumed side=primary reason=ahead/);
    const done = program.stderr.findIndex((l) => l.includes("event=checkpoint-done"));
    assert.ok(done >= 0 && done < program.stderr.indexOf(resumed), "resumed before the flush");
    // What its socket held then is the epoch's tail, released as it is read.
    assert.match(program.stderr[done], /unread_primary_bytes=[1-9]/);
    assert.ok(performance.now() - pausedAt >= 400);
    assert.ok(Number(/paused_ms=(\d+)/.exec(resumed)![1]) >= 400, resumed);
  } finally {
    pri.close();
    sec.close();
    await writing.catch(() => {});
    await out.close();
    await notify.close();
    const { code } = await program.stop();
    assert.equal(code, 0);
  }
});

/**
 * Closes the test's connections, stops the program (exit 0) and checks that its summary line
 * holds each of `counted`.
 */
async function stopCounting(
  program: Program,
  conns: { pri: Deno.Conn; sec: Deno.Conn; out: FrameCollector; notify: FrameCollector },
  counted: string[],
): Promise<void> {
  conns.pri.close();
  conns.sec.close();
  await conns.out.close();
  await conns.notify.close();
  const { code, stderr } = await program.stop();
  assert.equal(code, 0);
  const summary = /event=summary .*/.exec(stderr)?.[0] ?? "";
  for (const c of counted) assert.ok(summary.includes(c), `${c}in ${summary}`);
}

/**
 * A thousand datagrams a side that differ, on one flow: a checkpoint is asked for, and both
 * sides pause for their lead at three quarters of max-queue-size (768), the rest left unread:
 * 32 of the first 800 read and not decoded yet (or in the sockets), the last 200, sent once
 * both had paused, in the sockets. QEMU, which reads whatever is readable, flushes all 1000;
 * read after the flush as the next epoch's, 232 primaries would wait for a second checkpoint.
 * `unix`: the inputs are unix sockets, whose descriptors Deno does not tell (found by their
 * addresses, src/wire/socket_fd.ts, for their queues to be asked).
 */
async function epochTail(unix: boolean): Promise<void> {
  const dir = unix ? await Deno.makeTempDir() : "";
  const program = await startProgram(unix ? { endpoints: endpointsWithUnixInputs(dir) } : {});
  const { pri, sec, ntf, notify, out } = await connectAll(program, unix ? dir : null);
  const datagram = (tag: string, i: number) =>
    frame({ udp: { payload: `${tag}${i}`.padEnd(100, tag) } });
  const stream = (tag: string, from: number, to: number) =>
    concat(...Array.from({ length: to - from }, (_, i) => framed(datagram(tag, from + i))));
  try {
    await Promise.all([writeAll(pri, stream("P", 0, 800)), writeAll(sec, stream("S", 0, 800))]);
    await notify.waitFor(1);
    await program.waitForLine(/event=input-paused side=primary reason=ahead/);
    await program.waitForLine(/event=input-paused side=secondary reason=ahead/);
    const rest = [stream("P", 800, 1000), stream("S", 800, 1000)];
    await Promise.all([writeAll(pri, rest[0]), writeAll(sec, rest[1])]);
    await writeAll(ntf, notifyMessage("COLO_CHECKPOINT"));
    const released = (await out.waitFor(1000)).map((r) => r.data);
    assert.deepEqual(released, Array.from({ length: 1000 }, (_, i) => datagram("P", i)));
    // The flush releases what was held; what was left unread is the tail, released as read.
    const done = await program.waitForLine(/event=checkpoint-done/);
    const unread = /requested=true unread_primary_bytes=(\d+) unread_secondary_bytes=(\d+)$/
      .exec(done);
    assert.ok(unread, done);
    assert.ok(+unread[1] >= rest[0].length && +unread[2] >= rest[1].length, done);
  } finally {
    await stopCounting(program, { pri, sec, out, notify }, [
      "released_by_checkpoint=1000 ",
      "secondary_flushed=1000 ",
      "checkpoints_requested=1 ",
      "checkpoints_received=1 ",
      "held_primary_bytes=0 held_secondary_bytes=0 ",
    ]);
    if (unix) await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("e2e: what the inputs left unread while paused for their lead is the tail of COLO_CHECKPOINT's epoch (the VMs are still stopped): its primary frames released as read, its secondary ones dropped", async () => {
  await epochTail(false);
});

Deno.test("e2e: over unix sockets too, what the paused inputs left unread (their sockets' queues, found by address) is the epoch's tail", async () => {
  await epochTail(true);
});

Deno.test("e2e: a side ahead on one connection pauses while the other reads, however slowly: no queue overflows", async () => {
  const program = await startProgram({ noNotify: true });
  const { pri, sec, out } = await connectInputs(program);
  // 3,000 frames of 1 KB on one connection: 3 MB, three times max-queue-size (1,024). Nothing
  // but the pause keeps the primary's queue from overflowing: frames a full queue drops never
  // come out (no checkpoint channel here).
  const COUNT = 3000;
  const STEP = 50;
  const writing = writeAll(pri, segments(0, COUNT, 1000));
  try {
    await program.waitForLine(/event=input-paused side=primary reason=ahead/);
    // The secondary sends the same frames a little at a time (a slow sender: 50 frames every
    // 10 ms, each step once the last came out): it keeps sending, for several times the
    // 100 ms after which a lead pause is waived for a peer that sends nothing.
    const started = performance.now();
    for (let k = 0; k < COUNT; k += STEP) {
      await writeAll(sec, segments(k, STEP, 1000));
      await out.waitFor(k + STEP, 5000);
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(performance.now() - started > 300);
    await writing;
    out.frames.forEach((f, i) => {
      const seq = new DataView(f.data.buffer, f.data.byteOffset).getUint32(38);
      if (seq !== 1 + i * 1000) assert.fail(`frame ${i} has seq ${seq}`);
    });
  } finally {
    pri.close();
    sec.close();
    await writing.catch(() => {});
    await out.close();
    const { code, stderr } = await program.stop();
    assert.equal(code, 0);
    assert.doesNotMatch(stderr, /dropped_primary_queue-full/);
  }
});

/**
 * `count` framed UDP datagrams of 1 KB on one connection, each numbered in its payload's first
 * four bytes (frame byte 42); the same bytes on every call, as both replicas send them.
 */
function numberedDatagrams(count: number): Uint8Array {
  const payload = pseudoRandomBytes(1000, 7);
  return concat(
    ...Array.from({ length: count }, (_, k) => {
      const data = payload.slice();
      new DataView(data.buffer).setUint32(0, k);
      return framed(frame({ udp: { sport: 7, dport: 9, payload: data } }));
    }),
  );
}

/** Fails unless the frames carry the numbers of {@linkcode numberedDatagrams} 0, 1, 2, ... */
function assertNumberedInOrder(frames: readonly { data: Uint8Array }[]): void {
  frames.forEach((f, i) => {
    const n = new DataView(f.data.buffer, f.data.byteOffset).getUint32(42);
    if (n !== i) assert.fail(`frame ${i} carries ${n}`);
  });
}

/** `count` tiny primary datagrams on one connection the secondary never sends. */
function soloDatagrams(count: number): Uint8Array {
  return concat(
    ...Array.from({ length: count }, () => framed(frame({ udp: { sport: 2000, payload: "a" } }))),
  );
}

/**
 * Connects the inputs and outdev of `program`, runs `send` (which hands each write it leaves
 * under way to `track`), then expects {@linkcode numberedDatagrams}' `count` frames out in
 * order among the 1 KB ones, and, once everything is closed, a clean exit without a frame
 * dropped at a full queue.
 */
async function expectNumberedThrough(
  program: Program,
  count: number,
  send: (io: Inputs, track: (write: Promise<unknown>) => void) => Promise<void>,
): Promise<void> {
  const io = await connectInputs(program);
  const writes: Promise<unknown>[] = [];
  try {
    await send(io, (write) => writes.push(write));
    const got = await io.out.waitFor(count, 10_000);
    await Promise.all(writes);
    const ours = got.filter((f) => f.data.length > 1000);
    assert.equal(ours.length, count);
    assertNumberedInOrder(ours);
  } finally {
    io.pri.close();
    io.sec.close();
    await Promise.allSettled(writes);
    await io.out.close();
    const { code, stderr } = await program.stop();
    assert.equal(code, 0);
    assert.doesNotMatch(stderr, /queue-full/);
  }
}

Deno.test("e2e: frames on other connections that wait for the timeout do not keep a side paused for a long queue the other caught up with", async () => {
  const program = await startProgram({ noNotify: true });
  const { pri, sec, out } = await connectInputs(program);
  // 300 primary frames on connections the secondary never sends (more than a quarter of
  // max-queue-size, 1,024), then 3,000 frames of 1 KB on one connection both send. The primary
  // pauses once that queue is long; the secondary sends all of it at once. Counting the strays,
  // the primary stayed "long" after the secondary had caught up, and the secondary, never
  // paused while the primary is, overflowed its queue: frames dropped, never to come out (no
  // checkpoint channel here).
  const COUNT = 3000;
  const strays = concat(
    ...Array.from(
      { length: 300 },
      (_, i) => framed(frame({ udp: { sport: 2000 + i, payload: "a" } })),
    ),
  );
  const writing = writeAll(pri, concat(strays, numberedDatagrams(COUNT)));
  try {
    await program.waitForLine(/event=input-paused side=primary reason=ahead/);
    await writeAll(sec, numberedDatagrams(COUNT));
    await out.waitFor(COUNT, 10_000);
    await writing;
    assertNumberedInOrder(out.frames);
  } finally {
    pri.close();
    sec.close();
    await writing.catch(() => {});
    await out.close();
    const { code, stderr } = await program.stop();
    assert.equal(code, 0);
    assert.doesNotMatch(stderr, /queue-full/);
  }
});

Deno.test("e2e: small frames on one connection from both sides at once: reads of a thousand frames overflow no queue", async () => {
  const program = await startProgram({ noNotify: true });
  const { pri, sec, out } = await connectInputs(program);
  // 40,000 segments of 64 bytes (126 bytes framed): one 128 KiB read holds 1,040 of them, more
  // than max-queue-size. Both sides are written together, 512 KiB at a time, as two replicas
  // send; QEMU, reading 4 KiB at a time, releases them all.
  const COUNT = 40_000;
  const all = segments(0, COUNT, 64);
  try {
    for (let o = 0; o < all.length; o += 512 * 1024) {
      const part = all.subarray(o, Math.min(all.length, o + 512 * 1024));
      await Promise.all([writeAll(pri, part), writeAll(sec, part)]);
    }
    await out.waitFor(COUNT, 20_000);
  } finally {
    pri.close();
    sec.close();
    await out.close();
    const { code, stderr } = await program.stop();
    assert.equal(code, 0);
    assert.doesNotMatch(stderr, /queue-full/);
  }
});

Deno.test("e2e: a notify peer that never reads is disconnected once 1 MiB waits; repeats are summarised", async () => {
  const program = await startProgram({});
  const ntf = await connectRetry(program.ports["notify-dev"]); // never reads
  await program.waitForLine(/event=peer-connected endpoint=notify-dev /);
  // Each COLO_USERSPACE_PROXY_INIT asks for a 29-byte reply: 200k of them, 5.8 MB of replies.
  const inits = concat(
    ...Array.from({ length: 1000 }, () => notifyMessage("COLO_USERSPACE_PROXY_INIT")),
  );
  const junk = concat(...Array.from({ length: 1000 }, (_, i) => notifyMessage(`JUNK ${i}`)));
  try {
    for (let i = 0; i < 200; i++) {
      if (!(await writeWithin(ntf, i % 2 ? inits : concat(inits, junk), 1000))) break;
    }
  } catch {
    // the program closed the connection under us: what this test wants
  }
  await program.waitForLine(/event=peer-not-reading endpoint=notify-dev/);
  ntf.close();
  await program.waitForLine(/event=peer-disconnected endpoint=notify-dev/);
  const rss = rssMiB(program.pid);
  const { code, stderr } = await program.stop();
  assert.equal(code, 0);
  assert.ok(rss < 150, `the comparator grew to ${rss.toFixed(0)} MiB`);
  const lines = stderr.split("\n");
  const count = (re: RegExp) => lines.filter((l) => re.test(l)).length;
  assert.equal(count(/event=notify-proxy-init .*count=1 /), 1);
  assert.equal(count(/event=notify-unknown message=/), 1);
  assert.ok(count(/event=notify-(proxy-init|unknown)/) <= 4, "a line per message");
  assert.match(stderr, /event=notify-unknown count=\d+ total=\d+/, "no summary of the repeats");
  assert.match(stderr, /control_peers_dropped=1/);
});

Deno.test("e2e: outdev leaving keeps at most 32 MiB of released frames; the rest is counted", async () => {
  const program = await startProgram({});
  const pri = await connectRetry(program.ports["primary-in"]);
  const ntf = await connectRetry(program.ports["notify-dev"]);
  const notify = new FrameCollector(ntf);
  const first = await connectRetry(program.ports["outdev"]); // connected, never reads
  await program.waitForLine(/event=peer-connected endpoint=outdev /);
  // 48 MiB held (no secondary), then one checkpoint releases all of it to the stalled outdev.
  const FRAMES = 48 * 1024;
  for (let i = 0; i < FRAMES; i += 4096) await writeAll(pri, segments(i, 4096, 1000, 100));
  await program.waitForLine(/event=checkpoint-request reason=timeout/, 10_000);
  await writeAll(ntf, notifyMessage("COLO_CHECKPOINT"));
  await program.waitForLine(/event=checkpoint-done channel=notify-dev released=\d+/);
  first.close();
  await program.waitForLine(/event=frames-dropped side=outdev reason=disconnected-overflow/);
  const out = new FrameCollector(await connectRetry(program.ports["outdev"]));
  await out.waitFor(1000, 10_000);
  const got = await out.quiet(500);
  const kept = Math.floor(32 * 2 ** 20 / 1058);
  assert.ok(got.length <= kept, `${got.length} frames kept, bound ${kept}`);
  assert.ok(got.length > kept / 2, `only ${got.length} frames kept`);
  pri.close();
  await out.close();
  await notify.close();
  const { code, stderr } = await program.stop();
  assert.equal(code, 0);
  const overflow = Number(/dropped_outdev_overflow=(\d+)/.exec(stderr)?.[1]);
  assert.ok(overflow >= FRAMES - kept - 8192, `only ${overflow} frames counted as dropped`);
});

Deno.test("e2e: damaged primary IP frames pass through, counted, logged once per class", async () => {
  const program = await startProgram({ noNotify: true });
  const pri = await connectRetry(program.ports["primary-in"]);
  const out = new FrameCollector(await connectRetry(program.ports["outdev"]));
  const bad = frame({ udp: { payload: "x" } });
  bad[14] = 0x43; // IPv4 with IHL 3: an insane header
  await writeAll(pri, concat(...Array.from({ length: 100 }, () => framed(bad))));
  await out.waitFor(100);
  pri.close();
  await out.close();
  const { code, stderr } = await program.stop();
  assert.equal(code, 0);
  const lines = stderr.split("\n").filter((l) => l.includes("event=frames-passed-through"));
  assert.ok(lines.length >= 1 && lines.length <= 2, lines.join("\n"));
  assert.match(lines[0], /level=warn .*side=primary reason=bad-ipv4-header/);
  assert.match(stderr, /passed_through_bad-ipv4-header=100/);
});

Deno.test("e2e: SIGTERM is prompt while a tcp: connect is still pending", async () => {
  // A listener that never accepts, its accept queue filled: the kernel drops further SYNs, so
  // a connect to it hangs (for minutes) instead of failing.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const fillers: Deno.Conn[] = [];
  let full = false;
  while (!full && fillers.length < 10_000) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 200);
    try {
      fillers.push(await Deno.connect({ hostname: "127.0.0.1", port, signal: abort.signal }));
    } catch {
      full = true;
    } finally {
      clearTimeout(timer);
    }
  }
  assert.ok(full, "the accept queue never filled");
  const program = await startProgram({
    noNotify: true,
    endpoints: [
      "--primary-in",
      "tcp-listen:127.0.0.1:0",
      "--secondary-in",
      "tcp-listen:127.0.0.1:0",
      "--outdev",
      `tcp:127.0.0.1:${port}`,
    ],
  });
  try {
    await new Promise((r) => setTimeout(r, 1000));
    assert.ok(
      !program.stderr.some((l) =>
        /endpoint=outdev/.test(l) && /peer-connected|connect-failed/.test(l)
      ),
      "the connect did not hang",
    );
    const start = performance.now();
    const { code } = await program.stop();
    const ms = performance.now() - start;
    assert.equal(code, 0);
    assert.ok(ms < 2000, `stopping took ${ms.toFixed(0)} ms`);
  } finally {
    await program.stop("SIGKILL");
    for (const c of fillers) c.close();
    listener.close();
  }
});

Deno.test("e2e: a side paused for a long queue the other never sends resumes when the other runs a long queue ahead too: neither overflows", async () => {
  const program = await startProgram({ noNotify: true });
  // 800 primary frames on a connection the secondary never sends: past three quarters of
  // max-queue-size (1,024), so the primary pauses as ahead. Then 3,000 frames of 1 KB on one
  // connection both send. The secondary, sending all of it, runs a long queue of its own; kept
  // paused while the secondary read on, the primary never caught up, and the secondary's queue
  // overflowed: identical frames dropped, never to come out (no checkpoint channel here).
  const COUNT = 3000;
  await expectNumberedThrough(program, COUNT, async ({ pri, sec }, track) => {
    track(writeAll(pri, concat(soloDatagrams(800), numberedDatagrams(COUNT))));
    await program.waitForLine(/event=input-paused side=primary reason=ahead/);
    await writeAll(sec, numberedDatagrams(COUNT));
  });
});

Deno.test("e2e: a lead waived for a queue the other never sends does not cover a queue that grows long later", async () => {
  // At debug every pause is logged, not only the first of each 10 s.
  const program = await startProgram({ noNotify: true, flags: ["--log-level", "debug"] });
  // 800 primary frames on a connection the secondary never sends: the primary pauses as
  // ahead, and the secondary, sending nothing for 100 ms, has the lead waived. Then 3,000
  // frames of 1 KB on one connection both send, the secondary once the primary has paused for
  // its long queue there (it must send within 100 ms: a fixed 50 ms delay let a loaded CI
  // machine waive the lead again). Waived for good while the first connection's frames kept
  // the primary ahead, the primary never paused for the second and overflowed it.
  const COUNT = 3000;
  await expectNumberedThrough(program, COUNT, async ({ pri, sec }, track) => {
    await writeAll(pri, soloDatagrams(800));
    await program.waitForLine(/event=input-paused side=primary reason=ahead/);
    await program.waitForLine(/event=input-resumed side=primary reason=ahead/);
    track(writeAll(pri, numberedDatagrams(COUNT)));
    await program.waitForLine(/level=debug event=input-paused side=primary reason=ahead/);
    await writeAll(sec, numberedDatagrams(COUNT));
  });
});

Deno.test("e2e: a side long where frames matched stays paused when the other grows long on frames of its own: it catches up, nothing overflows", async () => {
  const program = await startProgram({ noNotify: true });
  // 3,000 frames of 1 KB on one connection both send. The first ten go out compared; then the
  // secondary sends the rest at once and pauses as ahead, its queue past three quarters of
  // max-queue-size (1,024). Then the primary sends 800 frames the secondary never sends, and
  // the rest. Paused for those as the later of two sides ahead, the primary never caught up,
  // and the secondary, reading on, overflowed its queue with identical frames (a stress probe).
  const COUNT = 3000;
  const all = numberedDatagrams(COUNT);
  const first = all.subarray(0, 10 * (all.length / COUNT));
  await expectNumberedThrough(program, COUNT, async ({ pri, sec, out }, track) => {
    await writeAll(pri, first);
    await writeAll(sec, first);
    await out.waitFor(10, 10_000);
    track(writeAll(sec, all.subarray(first.length)));
    await program.waitForLine(/event=input-paused side=secondary reason=ahead/);
    track(writeAll(pri, concat(soloDatagrams(800), all.subarray(first.length))));
  });
});

Deno.test("e2e: under a 1 MiB --max-held-bytes no read holds more than the budget takes: identical traffic is all released", async () => {
  const program = await startProgram({ noNotify: true, flags: ["--max-held-bytes", "1M"] });
  const { pri, sec, out } = await connectInputs(program);
  // 20,000 datagrams of 1 KB on 100 connections, both sides written at once, 1 MiB at a time.
  // A read is held whole before flow control sees it: with 1 MiB reads under a 1 MiB budget,
  // frames were dropped as memory-limit (a flow probe: 18,784 of 30,000 primary frames).
  const COUNT = 20_000;
  const payload = pseudoRandomBytes(1000, 7);
  const all = concat(
    ...Array.from({ length: COUNT }, (_, k) => {
      const data = payload.slice();
      new DataView(data.buffer).setUint32(0, k);
      return framed(frame({ udp: { sport: 1000 + k % 100, dport: 9, payload: data } }));
    }),
  );
  try {
    for (let o = 0; o < all.length; o += 1024 * 1024) {
      const part = all.subarray(o, Math.min(all.length, o + 1024 * 1024));
      await Promise.all([writeAll(pri, part), writeAll(sec, part)]);
    }
    const got = await out.waitFor(COUNT, 20_000);
    assert.equal(got.length, COUNT);
  } finally {
    pri.close();
    sec.close();
    await out.close();
    const { code, stderr } = await program.stop();
    assert.equal(code, 0);
    assert.doesNotMatch(stderr, /memory-limit|queue-full/);
  }
});

Deno.test("e2e: what an input paused for its held bytes left unread is the tail of COLO_CHECKPOINT's epoch too: released with it, no timeout's checkpoint after", async () => {
  // --max-held-bytes 1M: the primary pauses past 256 KiB of frames held (and 256 bytes each);
  // the secondary, connected and silent, waives its lead after 100 ms. Unix inputs: a write to
  // one completes once its bytes are in the program's socket, where the tail is counted. Over
  // TCP what the program's receive window had no room for waits in the sender's kernel, and
  // is not (README, Bounds).
  const dir = await Deno.makeTempDir();
  const program = await startProgram({
    flags: ["--max-held-bytes", "1M", "--compare-timeout", "60000"],
    endpoints: endpointsWithUnixInputs(dir),
  });
  const { pri, sec, ntf, notify, out } = await connectAll(program, dir);
  const datagram = (i: number) => frame({ udp: { payload: `${i}`.padEnd(1000, "P") } });
  const frames = Array.from({ length: 400 }, (_, i) => datagram(i));
  try {
    await writeAll(pri, concat(...frames.map((f) => framed(f))));
    await program.waitForLine(/event=input-paused side=primary reason=held-bytes/);
    // A Xen checkpoint comes every 5 s whether asked for or not.
    await writeAll(ntf, notifyMessage("COLO_CHECKPOINT"));
    const released = (await out.waitFor(400)).map((r) => r.data);
    assert.deepEqual(released, frames);
    assert.match(
      await program.waitForLine(/event=checkpoint-done/),
      /requested=false unread_primary_bytes=\d+ unread_secondary_bytes=0$/,
    );
  } finally {
    // None asked for: nothing was left for the next epoch.
    await stopCounting(program, { pri, sec, out, notify }, [
      "released_by_checkpoint=400 ",
      "checkpoints_requested=0 ",
      "held_primary_bytes=0 ",
    ]);
    await Deno.remove(dir, { recursive: true });
  }
});
