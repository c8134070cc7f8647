/**
 * End-to-end with `--qmp` (SPEC 7b): the real program, its three streams over TCP (the inputs
 * over unix sockets where a test says so), and a scripted QEMU 7.2 monitor on a unix socket as
 * the KVM COLO controller.
 */

import assert from "node:assert/strict";
import { connectRetry, FrameCollector, sameBytes } from "../support/net.ts";
import { concat, frame, framed } from "../support/packets.ts";
import {
  connectInputStreams,
  type Program,
  startProgram,
  unixInputEndpoints,
} from "../support/program.ts";
import { QmpPeer } from "../support/qmp_peer.ts";
import { writeAll } from "../../src/wire/transport.ts";

interface KvmRig {
  program: Program;
  peer: QmpPeer;
  outdev: FrameCollector;
  sendPrimary(f: Uint8Array): Promise<void>;
  sendSecondary(f: Uint8Array): Promise<void>;
  /** Framed bytes for primary-in, written as they are. */
  writePrimary(bytes: Uint8Array): Promise<void>;
  close(): Promise<{ code: number; stderr: string }>;
}

async function startKvmRig(
  delay: number,
  flags: string[] = [],
  unixDir: string | null = null,
): Promise<KvmRig> {
  const peer = await QmpPeer.start();
  peer.delay = delay;
  const program = await startProgram({
    noNotify: true,
    flags: ["--qmp", peer.address, "--log-level", "debug", ...flags],
    ...(unixDir === null
      ? {}
      : { endpoints: [...unixInputEndpoints(unixDir), "--outdev", "tcp-listen:127.0.0.1:0"] }),
  });
  const { pri: primary, sec: secondary } = await connectInputStreams(program, unixDir);
  const outdev = new FrameCollector(await connectRetry(program.ports["outdev"]));
  for (const name of ["primary-in", "secondary-in", "outdev"]) {
    await program.waitForLine(new RegExp(`event=peer-connected endpoint=${name} `));
  }
  await peer.waitForClient(1);
  await program.waitForLine(/event=colo-active channel=qmp/);
  return {
    program,
    peer,
    outdev,
    sendPrimary: (f) => writeAll(primary, framed(f)),
    sendSecondary: (f) => writeAll(secondary, framed(f)),
    writePrimary: (bytes) => writeAll(primary, bytes),
    async close() {
      primary.close();
      secondary.close();
      await outdev.close();
      const r = await program.stop();
      await peer.close();
      return r;
    },
  };
}

/**
 * A stop in run state `runState` that the session has asked about (`query-status`), then
 * `RESUME`; `whileStopped` runs between the stop and the question's answer being awaited.
 */
async function stopAndResume(
  rig: KvmRig,
  runState: string,
  whileStopped: () => Promise<void> = () => Promise.resolve(),
): Promise<void> {
  rig.peer.runState = runState;
  const asked = rig.peer.received("query-status").length;
  await rig.peer.event("STOP");
  await whileStopped();
  await rig.peer.waitFor("query-status", asked + 1);
  rig.peer.runState = "running";
  await rig.peer.event("RESUME");
}

const udp = (payload: string) => frame({ udp: { payload } });
const tcp = (payload: string) => frame({ tcp: { seq: 1000, ack: 1, payload } });

Deno.test("e2e qmp: one migrate-set-parameters per epoch with the current delay; RESUME releases", async () => {
  const rig = await startKvmRig(4321);
  try {
    assert.match(await rig.program.waitForLine(/event=ready/), /checkpoint_channel=qmp/);
    assert.match(
      await rig.program.waitForLine(/event=connecting endpoint=qmp/),
      new RegExp(`address=${rig.peer.address}`),
    );
    const p1 = udp("primary says A");
    const p2 = tcp("primary TCP bytes");
    await rig.sendPrimary(p1);
    await rig.sendSecondary(udp("secondary says X"));
    await rig.peer.waitFor("migrate-set-parameters");
    assert.deepEqual(rig.peer.received("migrate-set-parameters")[0].arguments, {
      "x-checkpoint-delay": 4321,
    });
    await rig.sendPrimary(p2);
    await rig.sendSecondary(tcp("secondary TCP BYTES"));
    await rig.program.waitForLine(/event=checkpoint-coalesced reason=tcp-payload/);
    assert.equal(rig.peer.received("migrate-set-parameters").length, 1, "one per epoch");
    assert.equal(rig.peer.received("query-migrate-parameters").length, 2, "connect + request");
    assert.deepEqual(rig.outdev.frames, [], "divergent frames are held");
    await rig.peer.checkpoint();
    assert.deepEqual((await rig.outdev.waitFor(2)).map((r) => r.data), [p1, p2]);
    await rig.program.waitForLine(/event=checkpoint-done .*released=2 secondary_dropped=2/);
    // A new epoch; the operator changed the delay meanwhile.
    rig.peer.delay = 999;
    await rig.sendPrimary(udp("again"));
    await rig.sendSecondary(udp("different"));
    await rig.peer.waitFor("migrate-set-parameters", 2);
    assert.deepEqual(rig.peer.received("migrate-set-parameters")[1].arguments, {
      "x-checkpoint-delay": 999,
    });
    // A user's stop and cont flush nothing.
    await stopAndResume(rig, "paused");
    await rig.program.waitForLine(/event=qmp-stop-not-checkpoint run_state=paused/);
    assert.equal(rig.outdev.frames.length, 2);
  } finally {
    const r = await rig.close();
    assert.equal(r.code, 0);
  }
});

Deno.test("e2e qmp: what the inputs left unread while paused for their lead is read once the VMs stop, and the checkpoint's flush releases it", async () => {
  // --max-held-bytes 1M: a side is ahead past 128 KiB of frames held, and over its high mark past
  // 256 KiB of frames and 256 bytes each: 140 to 165 datagrams of 1 KB are between. A
  // compare-timeout of a minute: the pauses are not waived for a checkpoint that takes long.
  const rig = await startKvmRig(100, ["--max-held-bytes", "1M", "--compare-timeout", "60000"]);
  try {
    const datagram = (tag: string, i: number) =>
      frame({ udp: { payload: `${tag}${i}`.padEnd(1000, tag) } });
    const send = async (
      write: (f: Uint8Array) => Promise<void>,
      tag: string,
      from: number,
      n: number,
    ) => {
      for (let i = from; i < from + n; i++) await write(datagram(tag, i));
    };
    // 140 datagrams of each side that differ: a checkpoint is asked for, both sides are ahead.
    await send(rig.sendPrimary, "P", 0, 140);
    await send(rig.sendSecondary, "S", 0, 140);
    await rig.peer.waitFor("migrate-set-parameters");
    await rig.program.waitForLine(/event=input-paused side=primary reason=ahead/);
    await rig.program.waitForLine(/event=input-paused side=secondary reason=ahead/);
    // Sent before the VMs stop, left in the sockets: 25 more each, then a pair that matches on
    // another flow, released once both inputs have read that far.
    await send(rig.sendPrimary, "P", 140, 25);
    await send(rig.sendSecondary, "S", 140, 25);
    const marker = frame({ udp: { sport: 9, dport: 9, payload: "read through" } });
    await rig.sendPrimary(marker);
    await rig.sendSecondary(marker);
    await stopAndResume(rig, "colo", async () => {
      const found = await rig.outdev.waitUntil((f) => sameBytes(f.data, marker));
      assert.ok(found, "both inputs read what was sent before the stop");
    });
    const out = await rig.outdev.waitFor(166);
    const primaries = out.filter((f) => !sameBytes(f.data, marker)).map((f) => f.data);
    assert.deepEqual(primaries, Array.from({ length: 165 }, (_, i) => datagram("P", i)));
    await rig.program.waitForLine(/event=checkpoint-done .*released=165 secondary_dropped=165/);
    assert.equal(rig.peer.received("migrate-set-parameters").length, 1, "one checkpoint for all");
  } finally {
    const r = await rig.close();
    assert.equal(r.code, 0);
  }
});

Deno.test("e2e qmp: what an input paused for its held bytes could not read through the stop is the tail of the epoch RESUME ends", async () => {
  // --max-held-bytes 1M: the primary pauses past 256 KiB of frames held (and 256 bytes each),
  // and stays paused through the stop: that bound stays (the pause for a lead would not).
  // Unix inputs: a write to one completes once its bytes are in the program's socket, where
  // the tail is counted. Over TCP what the program's receive window had no room for waits in
  // the sender's kernel, and is not (README, Bounds).
  const dir = await Deno.makeTempDir();
  const rig = await startKvmRig(
    100,
    ["--max-held-bytes", "1M", "--compare-timeout", "60000"],
    dir,
  );
  const frames = Array.from({ length: 400 }, (_, i) => udp(`${i}`.padEnd(1000, "P")));
  let stderr = "";
  try {
    await rig.writePrimary(concat(...frames.map((f) => framed(f))));
    await rig.program.waitForLine(/event=input-paused side=primary reason=held-bytes/);
    // QEMU's periodic checkpoint: STOP, then RESUME.
    await stopAndResume(rig, "colo");
    assert.deepEqual((await rig.outdev.waitFor(400)).map((r) => r.data), frames);
    assert.match(
      await rig.program.waitForLine(/event=checkpoint-done/),
      /requested=false unread_primary_bytes=\d+ unread_secondary_bytes=0$/,
    );
  } finally {
    const r = await rig.close();
    await Deno.remove(dir, { recursive: true });
    stderr = r.stderr;
    assert.equal(r.code, 0);
  }
  const summary = /event=summary .*/.exec(stderr)?.[0] ?? "";
  assert.ok(summary.includes("released_by_checkpoint=400 "), summary);
  assert.ok(summary.includes("checkpoints_requested=0 "), "none asked for: nothing was left");
  assert.ok(summary.includes("held_primary_bytes=0 "), summary);
});

Deno.test("e2e qmp: COLO_EXIT releases what is held and passes the primary through until COLO is back", async () => {
  const rig = await startKvmRig(20000);
  try {
    const held = udp("held before failover");
    await rig.sendPrimary(held);
    await rig.sendSecondary(udp("diverged"));
    await rig.peer.waitFor("migrate-set-parameters");
    await rig.peer.event("COLO_EXIT", { mode: "primary", reason: "error" });
    assert.deepEqual((await rig.outdev.waitFor(1)).map((r) => r.data), [held]);
    assert.match(
      await rig.program.waitForLine(/event=colo-inactive/),
      /level=warn .*seen="COLO_EXIT mode=primary reason=error"/,
    );
    // As QEMU 7.2 does until failover, the monitor still says mode primary: a stale answer.
    const polls = rig.peer.received("query-colo-status").length;
    await rig.peer.waitFor("query-colo-status", polls + 1);
    await rig.program.waitForLine(/event=qmp-colo-stale/);
    const alone = [udp("primary alone 1"), tcp("primary alone 2")];
    for (const f of alone) await rig.sendPrimary(f);
    await rig.sendSecondary(udp("nobody compares this"));
    assert.deepEqual((await rig.outdev.waitFor(3)).map((r) => r.data), [held, ...alone]);
    // A new migration: the MIGRATION event says COLO is back.
    await rig.peer.event("MIGRATION", { status: "colo" });
    assert.match(
      await rig.program.waitForLine(/level=warn event=colo-active /),
      /seen="MIGRATION status=colo" action="comparing again"/,
    );
    await rig.sendPrimary(udp("compared again"));
    await rig.sendSecondary(udp("not the same"));
    await rig.peer.waitFor("migrate-set-parameters", 2);
    assert.equal(rig.outdev.frames.length, 3, "held again, not passed through");
  } finally {
    const r = await rig.close();
    assert.equal(r.code, 0);
    assert.match(r.stderr, /dropped_secondary_colo-inactive=1/);
  }
});

Deno.test("e2e qmp: while the monitor is away requests are undelivered; after it returns the scan asks again", async () => {
  const peer = await QmpPeer.start();
  const program = await startProgram({
    noNotify: true,
    flags: ["--qmp", peer.address, "--compare-timeout", "300", "--expired-scan-cycle", "50"],
  });
  const primary = await connectRetry(program.ports["primary-in"]);
  const secondary = await connectRetry(program.ports["secondary-in"]);
  const outdev = new FrameCollector(await connectRetry(program.ports["outdev"]));
  try {
    await peer.waitForClient(1);
    // QEMU's monitor goes away at the request, and refuses the handshake for a while.
    peer.script = (c) =>
      c.execute === "query-migrate-parameters" || c.execute === "qmp_capabilities"
        ? "hang-up"
        : "answer";
    await writeAll(primary, framed(udp("held")));
    await writeAll(secondary, framed(udp("diverged")));
    await program.waitForLine(/event=peer-disconnected endpoint=qmp /);
    assert.match(
      await program.waitForLine(/event=checkpoint-request-undelivered/),
      /level=warn .*reason=timeout .*note="qmp has no peer"/,
    );
    assert.equal(peer.received("migrate-set-parameters").length, 0);
    peer.script = () => "answer";
    // Back: the scan asks again after compare-timeout, and this time it is delivered.
    await peer.waitFor("migrate-set-parameters", 1, 5000);
    await peer.checkpoint();
    assert.deepEqual((await outdev.waitFor(1)).map((r) => r.data), [udp("held")]);
  } finally {
    primary.close();
    secondary.close();
    await outdev.close();
    const r = await program.stop();
    await peer.close();
    assert.equal(r.code, 0);
    assert.doesNotMatch(r.stderr, /event=no-checkpoint-channel/);
  }
});

Deno.test("e2e qmp: with --qmp-secondary a secondary frame read after the secondary's RESUME survives the flush and is matched; an older one is dropped", async () => {
  const watched = await QmpPeer.start();
  const rig = await startKvmRig(20000, ["--qmp-secondary", watched.address]);
  const port = (sport: number, payload: string) => frame({ udp: { sport, payload } });
  /** Once this pair is released, everything the secondary sent before it was read. */
  const secondaryRead = async (released: number) => {
    const f = port(9, `sync ${released}`);
    await rig.sendSecondary(f);
    await rig.sendPrimary(f);
    const out = await rig.outdev.waitFor(released);
    assert.deepEqual(out[released - 1].data, f);
  };
  try {
    await rig.program.waitForLine(/event=qmp-ready monitor=secondary/);
    await rig.program.waitForLine(/event=peer-connected endpoint=qmp-secondary /);
    assert.deepEqual(watched.commands.map((c) => c.execute), ["qmp_capabilities"]);
    const old = port(1, "sent before the secondary stopped");
    const reply = port(2, "the new epoch's reply");
    await rig.sendSecondary(old);
    await secondaryRead(1);
    // The secondary's checkpoint ends first: it resumes and answers at once.
    await watched.event("STOP");
    await watched.event("RESUME");
    await rig.program.waitForLine(/event=secondary-resumed /);
    await rig.sendSecondary(reply);
    await secondaryRead(2);
    await rig.peer.checkpoint();
    await rig.program.waitForLine(/event=checkpoint-done .*secondary_dropped=1 secondary_kept=1 /);
    // The primary's reply comes after its own RESUME and meets the kept frame.
    await rig.sendPrimary(reply);
    await rig.sendPrimary(old);
    assert.deepEqual((await rig.outdev.waitFor(3))[2].data, reply);
    await secondaryRead(4);
    assert.equal(
      rig.outdev.frames.length,
      4,
      "the old-epoch frame was dropped: the primary's copy waits",
    );
  } finally {
    const r = await rig.close();
    await watched.close();
    assert.equal(r.code, 0);
    assert.match(r.stderr, /secondary_kept_at_flush=1 /);
    assert.equal(
      watched.commands.length,
      1,
      "the secondary's monitor got nothing but capabilities",
    );
  }
});

Deno.test("e2e: without any checkpoint channel the start-up log warns that held output stays held", async () => {
  const program = await startProgram({ noNotify: true });
  try {
    await program.waitForLine(/level=warn event=no-checkpoint-channel /);
    assert.match(await program.waitForLine(/event=ready/), /checkpoint_channel=none/);
  } finally {
    await program.stop();
  }
});
