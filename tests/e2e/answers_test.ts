/**
 * End-to-end: request-and-answer traffic, one pair at a time, as the latency row sends it
 * (issue 11): inputs that find their socket empty after a small read park, the last to come
 * polls both, and what came is read at once, without Deno's read op.
 */

import assert from "node:assert/strict";
import { startRig } from "../support/fixture.ts";
import { connectRetry, FrameCollector } from "../support/net.ts";
import { frame, framed, pseudoRandomBytes } from "../support/packets.ts";
import { makeCreds, rawClient, removeCreds } from "../support/tls_creds.ts";
import {
  connectInputStreams,
  listenEndpoints,
  startProgram,
  unixInputEndpoints,
} from "../support/program.ts";
import { writeAll } from "../../src/wire/transport.ts";

const DATA = pseudoRandomBytes(200, 5);

/** The `key=value` fields of the program's summary line. */
function summaryOf(stderr: string): Record<string, string> {
  const line = stderr.split("\n").find((l) => l.includes("event=summary")) ?? "";
  return Object.fromEntries(
    line.split(" ").map((kv) => kv.split("=")).filter((kv) => kv.length === 2),
  );
}

/**
 * 600 pairs, one at a time, through a fresh program: every answer leaves outdev once and in
 * order. Returns its reads made without an op, and its polls caught of those made.
 */
async function answers(): Promise<{ atOnce: number; polls: string }> {
  const rig = await startRig();
  let stderr = "";
  const pairs = 600;
  const sent: Uint8Array[] = [];
  try {
    for (let i = 0; i < pairs; i++) {
      const f = frame({
        tcp: { seq: 1000 + 100 * i, ack: 1, payload: DATA.subarray(0, 100) },
      });
      sent.push(f);
      if (i % 2 === 0) {
        await rig.sendPrimary(f);
        await rig.sendSecondary(f);
      } else {
        await rig.sendSecondary(f);
        await rig.sendPrimary(f);
      }
      await rig.outdev.waitFor(i + 1);
    }
    assert.deepEqual(rig.outdev.frames.map((r) => r.data), sent);
  } finally {
    ({ stderr } = await rig.close());
  }
  const summary = summaryOf(stderr);
  return { atOnce: Number(summary.input_reads_at_once), polls: summary.input_polls };
}

Deno.test("e2e: answers one at a time, either side first, each leave outdev once and in order; some are read without an op", async () => {
  // Whether a frame is read at once depends on when this process's next write comes: within
  // the poll window (64 us at most) of the comparator's last read, or not. Here it comes within
  // it in most runs (1-166 of 1,200 frames read at once) and in about one in eight not once
  // (the window, adapting, closed): a second and a third program are tried before failing.
  const tries: string[] = [];
  let atOnce = 0;
  for (let i = 0; i < 3 && atOnce === 0; i++) {
    const run = await answers();
    atOnce = run.atOnce;
    tries.push(`${atOnce} of 1200 frames (polls ${run.polls})`);
  }
  console.log(`reads at once: ${tries.join(", ")}`);
  assert.ok(atOnce > 0, `no read without an op: ${tries.join(", ")}`);
});

Deno.test("e2e: an input that finds its socket empty does not keep the other's read op waiting: no pair waits out the 2 ms read-at-once budget", async () => {
  // The primary over TCP, whose socket is polled; the secondary over TLS, whose reads come from
  // node:tls at a turn of the event loop (it never parks). Once the primary's frame is in, the
  // primary input finds its socket empty while the secondary's read waits for a turn of the
  // event loop. It used to read "at once" again and again until the 2 ms budget was spent (a
  // poll not made, -1, taken as a mask with every bit set), the event loop kept from turning
  // and the secondary's read from settling: every pair left outdev 2 ms late (bench/README.md,
  // "What the slowest pairs wait for"). A unix secondary did the same until its descriptor was
  // found (src/wire/socket_fd.ts); TLS inputs still never park.
  const creds = await makeCreds();
  const program = await startProgram({
    endpoints: [
      "--primary-in",
      "tcp-listen:127.0.0.1:0",
      "--secondary-in",
      "tls-listen:127.0.0.1:0",
      "--outdev",
      "tcp-listen:127.0.0.1:0",
    ],
    flags: ["--tls-creds", creds.dir],
  });
  const pri = await connectRetry(program.ports["primary-in"]);
  const sec = await rawClient(program.ports["secondary-in"], creds.dir);
  const out = new FrameCollector(await connectRetry(program.ports["outdev"]));
  const waits: number[] = [];
  try {
    for (const name of ["primary-in", "secondary-in", "outdev"]) {
      await program.waitForLine(new RegExp(`event=peer-connected endpoint=${name} `));
    }
    for (let i = 0; i < 50; i++) {
      const f = frame({ tcp: { seq: 1000 + 100 * i, ack: 1, payload: DATA.subarray(0, 100) } });
      // A third of a millisecond since the last answer (spent here, not slept: a timer's least
      // is 1 ms): longer than the poller waits for, so no poll window is open.
      const next = performance.now() + 0.3;
      while (performance.now() < next) continue;
      await writeAll(pri, framed(f));
      // As long again before the secondary's copy: the primary's has been read by then.
      const sent = performance.now() + 0.3;
      while (performance.now() < sent) continue;
      await writeAll(sec, framed(f));
      await out.waitFor(i + 1);
      waits.push(performance.now() - sent);
    }
  } finally {
    pri.close();
    sec.close();
    await out.close();
    await program.stop();
    await removeCreds(creds);
  }
  waits.sort((a, b) => a - b);
  const median = waits[waits.length >> 1];
  assert.ok(median < 1, `median wait after the second frame ${median.toFixed(2)} ms`);
});

Deno.test("e2e: answers that keep coming without a pause leave the timers their turns: a held frame times out on time (SPEC 8)", async () => {
  const rig = await startRig({ flags: ["--compare-timeout", "100", "--expired-scan-cycle", "10"] });
  try {
    // A primary frame of a flow the secondary never answers: a checkpoint request once it has
    // waited 100 ms, found by the expiry scan, a timer.
    await rig.sendPrimary(frame({ udp: { sport: 7000, dport: 7001, payload: "alone" } }));
    const heldAt = performance.now();
    let i = 0;
    while (rig.notifyTexts().length === 0 && performance.now() - heldAt < 2000) {
      const f = frame({ tcp: { seq: 1000 + 100 * i, ack: 1, payload: DATA.subarray(0, 100) } });
      await rig.sendPrimary(f);
      await rig.sendSecondary(f);
      await rig.outdev.waitFor(++i);
    }
    const waited = performance.now() - heldAt;
    assert.deepEqual(rig.notifyTexts(), ["DO_CHECKPOINT"]);
    assert.ok(waited < 1000, `the checkpoint request came after ${waited.toFixed(0)} ms`);
    assert.ok(i > 10, `pairs went on meanwhile: ${i}`);
  } finally {
    await rig.close();
  }
});

for (const transport of ["tcp", "unix"] as const) {
  Deno.test(`e2e: answers over ${transport} sockets, some written a few bytes at a time, each leave outdev once and in order`, async () => {
    const dir = await Deno.makeTempDir();
    const program = await startProgram({
      endpoints: transport === "unix"
        ? [...unixInputEndpoints(dir), "--outdev", "tcp-listen:127.0.0.1:0"]
        : listenEndpoints(true),
    });
    const { pri, sec } = await connectInputStreams(program, transport === "unix" ? dir : null);
    const out = new FrameCollector(await connectRetry(program.ports["outdev"]));
    let stderr = "";
    try {
      for (const name of ["primary-in", "secondary-in", "outdev"]) {
        await program.waitForLine(new RegExp(`event=peer-connected endpoint=${name} `));
      }
      const sent: Uint8Array[] = [];
      for (let i = 0; i < 300; i++) {
        const f = frame({ tcp: { seq: 1000 + 100 * i, ack: 1, payload: DATA.subarray(0, 100) } });
        sent.push(f);
        const bytes = framed(f);
        for (const conn of i % 2 === 0 ? [pri, sec] : [sec, pri]) {
          // Every tenth pair in pieces of 7 bytes: reads of a part of a frame, then its rest.
          const step = i % 10 === 3 ? 7 : bytes.length;
          for (let o = 0; o < bytes.length; o += step) {
            await writeAll(conn, bytes.subarray(o, o + step));
          }
        }
        await out.waitFor(i + 1);
      }
      assert.deepEqual(out.frames.map((r) => r.data), sent);
    } finally {
      pri.close();
      sec.close();
      await out.close();
      const stopped = await program.stop();
      stderr = stopped.stderr;
      await Deno.remove(dir, { recursive: true });
    }
    // A unix socket's descriptor, which Deno does not tell, is found by its addresses: its
    // input is polled and read without an op, as a TCP input is.
    const atOnce = Number(summaryOf(stderr).input_reads_at_once);
    assert.ok(atOnce > 0, `no read at once: ${atOnce}`);
  });
}
