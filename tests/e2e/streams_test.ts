/**
 * End-to-end: the real program over real sockets; exact bytes on outdev and notify-dev.
 */

import assert from "node:assert/strict";
import { startRig } from "../support/fixture.ts";
import { connectRetry, FrameCollector } from "../support/net.ts";
import {
  arp,
  concat,
  frame,
  framed,
  notifyMessage,
  pseudoRandomBytes,
  withVnet,
} from "../support/packets.ts";
import { writeAll } from "../../src/wire/transport.ts";
import { startProgram, unixInputEndpoints } from "../support/program.ts";

const DATA = pseudoRandomBytes(3000, 7);
const seg = (from: number, to: number, ack = 1) =>
  frame({ tcp: { seq: 5000 + from, ack, payload: DATA.subarray(from, to) } });

Deno.test("e2e: matched TCP and UDP frames leave outdev byte-identical and in order", async () => {
  const rig = await startRig();
  try {
    const prim = [seg(0, 1000), seg(1000, 2000), seg(2000, 3000)];
    const u = frame({ udp: { payload: "datagram" } });
    for (const f of prim) await rig.sendPrimary(f);
    await rig.sendPrimary(u);
    await rig.sendSecondary(seg(0, 1500));
    await rig.sendSecondary(frame({ ip: { id: 77 }, udp: { payload: "datagram" } }));
    await rig.sendSecondary(seg(1500, 3000));
    const out = await rig.outdev.waitFor(4);
    const tcpOut = out.map((r) => r.data).filter((d) => d[23] === 6);
    assert.deepEqual(tcpOut, prim);
    assert.ok(out.some((r) => r.data.length === u.length && r.data.every((b, i) => b === u[i])));
    assert.deepEqual(rig.notifyTexts(), []);
  } finally {
    await rig.close();
  }
});

Deno.test("e2e: frames split across writes at every size are reassembled", async () => {
  const rig = await startRig();
  try {
    const frames = [seg(0, 700), seg(700, 1400), seg(1400, 2100)];
    const stream = concat(...frames.map((f) => framed(f)));
    for (let o = 0, step = 1; o < stream.length; o += step, step = (step * 7) % 97 + 1) {
      await rig.primary.write(stream.subarray(o, Math.min(o + step, stream.length)));
    }
    await rig.sendSecondary(seg(0, 2100));
    assert.deepEqual((await rig.outdev.waitFor(3)).map((r) => r.data), frames);
  } finally {
    await rig.close();
  }
});

Deno.test("e2e: a divergence sends one DO_CHECKPOINT; COLO_CHECKPOINT releases what was held", async () => {
  const rig = await startRig({ flags: ["--log-level", "debug"] });
  try {
    const p1 = frame({ udp: { payload: "primary says A" } });
    const p2 = frame({ udp: { payload: "primary says B" } });
    await rig.sendPrimary(p1);
    await rig.sendSecondary(frame({ udp: { payload: "secondary says X" } }));
    await rig.notify.waitFor(1);
    await rig.sendPrimary(p2); // more traffic on the diverged connection
    await rig.sendSecondary(frame({ udp: { payload: "secondary says Y" } }));
    await rig.program.waitForLine(/event=checkpoint-coalesced/);
    assert.deepEqual(rig.notifyTexts(), ["DO_CHECKPOINT"], "one request per epoch");
    assert.deepEqual([...rig.notify.frames[0].data], [
      ...new TextEncoder().encode("DO_CHECKPOINT"),
    ]);
    await rig.sendNotify("COLO_CHECKPOINT");
    assert.deepEqual((await rig.outdev.waitFor(2)).map((r) => r.data), [p1, p2]);
    // A new epoch: the next divergence is requested again.
    await rig.sendPrimary(frame({ udp: { payload: "again" } }));
    await rig.sendSecondary(frame({ udp: { payload: "different" } }));
    await rig.notify.waitFor(2);
    assert.deepEqual(rig.notifyTexts(), ["DO_CHECKPOINT", "DO_CHECKPOINT"]);
  } finally {
    await rig.close();
  }
});

Deno.test("e2e: checkpoints many times over log 50 lines of each kind per 10 s, then a count", async () => {
  const rig = await startRig();
  let closed = false;
  try {
    const ROUNDS = 70;
    for (let i = 0; i < ROUNDS; i++) {
      await rig.sendPrimary(frame({ udp: { sport: 2000 + i, payload: "primary" } }));
      await rig.sendSecondary(frame({ udp: { sport: 2000 + i, payload: "secondary" } }));
      await rig.notify.waitFor(i + 1);
      await rig.sendNotify("COLO_CHECKPOINT");
      await rig.outdev.waitFor(i + 1);
    }
    closed = true;
    const { code, stderr } = await rig.close();
    assert.equal(code, 0);
    for (const event of ["checkpoint-request", "checkpoint-done"]) {
      const lines = stderr.split("\n").filter((l) => l.includes(`event=${event} `));
      assert.equal(lines.filter((l) => !l.includes("suppressed=")).length, 50, event);
      // The count comes at the stop at the latest: nothing goes unaccounted for.
      assert.equal(lines.filter((l) => l.includes(`suppressed=${ROUNDS - 50} `)).length, 1, event);
    }
    assert.match(stderr, new RegExp(`event=summary .*checkpoints_requested=${ROUNDS} `));
  } finally {
    if (!closed) await rig.close();
  }
});

Deno.test("e2e: COLO_USERSPACE_PROXY_INIT is answered at once; unknown messages change nothing", async () => {
  const rig = await startRig();
  try {
    await rig.sendNotify("COLO_USERSPACE_PROXY_INIT");
    const [reply] = await rig.notify.waitFor(1);
    assert.deepEqual(
      [...framed(reply.data)],
      [...framed(new TextEncoder().encode("COLO_COMPARE_GET_XEN_INIT"))],
    );
    await rig.sendNotify("HELLO");
    await rig.program.waitForLine(/event=notify-unknown message=HELLO/);
    assert.equal(rig.notify.frames.length, 1);
  } finally {
    await rig.close();
  }
});

Deno.test("e2e: a frame held past compare-timeout requests a checkpoint", async () => {
  const rig = await startRig({ flags: ["--compare-timeout", "150", "--expired-scan-cycle", "30"] });
  try {
    const started = performance.now();
    await rig.sendPrimary(frame({ udp: { payload: "lonely" } }));
    await rig.notify.waitFor(1);
    assert.ok(performance.now() - started >= 150, "not before the timeout");
    assert.deepEqual(rig.notifyTexts(), ["DO_CHECKPOINT"]);
    await rig.program.waitForLine(/event=checkpoint-request reason=timeout/);
  } finally {
    await rig.close();
  }
});

Deno.test("e2e: unsupported primary frames pass through; unsupported secondary frames are dropped", async () => {
  const rig = await startRig();
  try {
    const a = arp();
    await rig.sendSecondary(arp("10.9.9.9"));
    await rig.sendPrimary(a);
    const runt = new Uint8Array([1, 2, 3]);
    await rig.sendPrimary(runt);
    assert.deepEqual((await rig.outdev.waitFor(2)).map((r) => r.data), [a, runt]);
  } finally {
    const { stderr } = await rig.close();
    assert.match(stderr, /dropped_secondary_not-ip=1/);
    assert.match(stderr, /passed_through=2/);
  }
});

Deno.test("e2e: an oversize frame resets that connection only; a new peer is accepted", async () => {
  const rig = await startRig();
  try {
    const bad = new Uint8Array([0x00, 0x01, 0x10, 0x01, 1, 2, 3]); // len 69633
    await rig.primary.write(bad);
    await rig.program.waitForLine(/event=oversize-frame endpoint=primary-in len=69633/);
    // The secondary stream is untouched; a fresh primary connection works.
    const fresh = await connectRetry(rig.program.ports["primary-in"]);
    try {
      const f = seg(0, 100);
      await fresh.write(framed(f));
      await rig.sendSecondary(f);
      assert.deepEqual((await rig.outdev.waitFor(1)).map((r) => r.data), [f]);
    } finally {
      fresh.close();
    }
  } finally {
    await rig.close();
  }
});

Deno.test("e2e: notify-dev answers COLO_USERSPACE_PROXY_INIT before it resets a stream that broke in the same write", async () => {
  const rig = await startRig();
  try {
    const oversize = new Uint8Array([0x00, 0x01, 0x10, 0x01]); // len 69633
    await writeAll(rig.notifyConn, concat(notifyMessage("COLO_USERSPACE_PROXY_INIT"), oversize));
    await rig.program.waitForLine(/event=oversize-frame endpoint=notify-dev len=69633/);
    await rig.notify.waitFor(1);
    assert.deepEqual(rig.notifyTexts(), ["COLO_COMPARE_GET_XEN_INIT"]);
  } finally {
    await rig.close();
  }
});

Deno.test("e2e: a peer that leaves mid-frame costs only that frame", async () => {
  const rig = await startRig();
  try {
    const half = framed(seg(0, 500)).subarray(0, 200);
    await rig.primary.write(half);
    rig.primary.close();
    await rig.program.waitForLine(/event=partial-frame-lost endpoint=primary-in/);
    const again = await connectRetry(rig.program.ports["primary-in"]);
    try {
      const f = seg(0, 500);
      await again.write(framed(f));
      await rig.sendSecondary(f);
      assert.deepEqual((await rig.outdev.waitFor(1)).map((r) => r.data), [f]);
    } finally {
      again.close();
    }
  } finally {
    await rig.close();
  }
});

Deno.test("e2e: with vnet, outdev carries each frame's own vnet_len; notify never a vnet word", async () => {
  const rig = await startRig({ vnet: true });
  try {
    const p = withVnet(seg(0, 300), 12, 0x01);
    await rig.sendPrimary(p, 12);
    await rig.sendSecondary(withVnet(seg(0, 300), 10, 0x02), 10);
    const [out] = await rig.outdev.waitFor(1);
    assert.equal(out.vnetLen, 12);
    assert.deepEqual(out.data, p);
    await rig.sendNotify("COLO_USERSPACE_PROXY_INIT"); // no vnet word, even with vnet on
    const [reply] = await rig.notify.waitFor(1);
    assert.equal(new TextDecoder().decode(reply.data), "COLO_COMPARE_GET_XEN_INIT");
  } finally {
    await rig.close();
  }
});

Deno.test("e2e: released frames wait for outdev's next peer while it is away", async () => {
  const rig = await startRig();
  try {
    await rig.outdev.close();
    await rig.program.waitForLine(/event=peer-disconnected endpoint=outdev/);
    const f = seg(0, 800);
    await rig.sendPrimary(f);
    await rig.sendSecondary(f);
    await rig.sendPrimary(arp());
    await rig.program.waitForLine(/event=peer-connected endpoint=primary-in/);
    const next = new FrameCollector(await connectRetry(rig.program.ports["outdev"]));
    try {
      // The two inputs are read independently, so the two releases may come in either order.
      const got = (await next.waitFor(2)).map((r) => r.data).sort((a, b) => b.length - a.length);
      assert.deepEqual(got, [f, arp()]);
    } finally {
      await next.close();
    }
  } finally {
    await rig.close();
  }
});

Deno.test("e2e: SIGTERM sends what was released, reports held frames, exits 0", async () => {
  const rig = await startRig();
  const f = seg(0, 100);
  await rig.sendPrimary(f);
  await rig.sendSecondary(f);
  await rig.sendPrimary(frame({ udp: { payload: "never compared" } }));
  // A pair after it: once its primary is released, the datagram before it on primary-in has
  // been read (and is held), whatever the load; SIGTERM could otherwise come first.
  const g = seg(100, 200);
  await rig.sendPrimary(g);
  await rig.sendSecondary(g);
  await rig.outdev.waitFor(2);
  const { code, stderr } = await rig.close();
  assert.equal(code, 0);
  assert.match(stderr, /event=held-at-exit primary=1 secondary=0/);
  assert.match(stderr, /event=summary primary_in=3 secondary_in=2 released=2 /);
});

Deno.test("e2e: unix sockets, and connect endpoints that reconnect", async () => {
  const dir = await Deno.makeTempDir();
  const outdev = Deno.listen({ transport: "unix", path: `${dir}/out.sock` });
  const program = await startProgram({
    endpoints: [...unixInputEndpoints(dir), "--outdev", `unix:${dir}/out.sock`],
  });
  try {
    const pri = await Deno.connect({ transport: "unix", path: `${dir}/pri.sock` });
    const sec = await Deno.connect({ transport: "unix", path: `${dir}/sec.sock` });
    const first = new FrameCollector(await outdev.accept());
    const f1 = seg(0, 100);
    await pri.write(framed(f1));
    await sec.write(framed(f1));
    assert.deepEqual((await first.waitFor(1)).map((r) => r.data), [f1]);
    await first.close(); // outdev peer goes away: the program reconnects
    const second = new FrameCollector(await outdev.accept());
    const f2 = seg(100, 200);
    await pri.write(framed(f2));
    await sec.write(framed(f2));
    assert.deepEqual((await second.waitFor(1)).map((r) => r.data), [f2]);
    await second.close();
    pri.close();
    sec.close();
  } finally {
    const { code } = await program.stop();
    outdev.close();
    assert.equal(code, 0);
    const left = [...Deno.readDirSync(dir)].map((e) => e.name);
    assert.ok(!left.includes("pri.sock") && !left.includes("sec.sock"), "socket files removed");
    await Deno.remove(dir, { recursive: true });
  }
});
