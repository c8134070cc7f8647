/**
 * End-to-end: the real program fed mutated frames of every kind (SPEC 4: whatever comes in is
 * classified, compared or passed through, never a crash), over real sockets. Seeded, so a
 * failure repeats: TCP, UDP, ICMP and other protocols over IPv4 and IPv6, some VLAN-tagged,
 * with bytes of their headers overwritten and some cut short; on both inputs as identical
 * pairs, pairs that differ, or one side alone; with random vnet lengths when vnet is on; and
 * the notify peer asking for checkpoints and sending words the protocol does not know. The
 * framing itself stays valid here (framing abuse: `bounds_test.ts`, `wire/codec_test.ts`).
 */

import assert from "node:assert/strict";
import { FrameCollector, resetConnections, sameBytes } from "../support/net.ts";
import { QmpClient } from "../support/qmp_client.ts";
import {
  concat,
  frame,
  framed,
  type FrameOptions,
  notifyMessage,
  withVnet,
} from "../support/packets.ts";
import { startProgram } from "../support/program.ts";
import { Rng } from "../conformance/generator.ts";
import { parseLogfmt } from "../../soak/program.ts";
import { writeAll } from "../../src/wire/transport.ts";

/** A well-formed frame of a random kind on one of a few flows. */
function someFrame(r: Rng): Uint8Array {
  const flow = r.int(0, 20);
  const payload = Uint8Array.from({ length: r.int(0, 1400) }, () => r.int(0, 255));
  const o: FrameOptions = {
    ip: r.next() < 0.2
      ? { v: 6, src: "fd00::1", dst: `fd00::${flow + 2}` }
      : { src: "10.0.0.1", dst: `10.0.1.${flow}` },
    vlans: r.next() < 0.1 ? [{ vid: r.int(0, 4095) }] : undefined,
  };
  switch (r.int(0, 4)) {
    case 0:
    case 1: {
      const seq = r.int(0, 2 ** 32 - 1);
      return frame({ ...o, tcp: { dport: 40000 + flow, seq, flags: r.int(0, 255), payload } });
    }
    case 2:
      return frame({ ...o, udp: { dport: 1000 + flow, payload } });
    case 3:
      return frame({ ...o, icmp: { id: flow, payload } });
    default:
      return frame({ ...o, raw: { proto: r.int(0, 255), bytes: payload } });
  }
}

/** `f` with up to six bytes of its first 80 overwritten, and one time in ten cut short. */
function mutated(r: Rng, f: Uint8Array): Uint8Array {
  const g = f.slice();
  for (let n = r.int(0, 6); n > 0; n--) g[r.int(0, Math.min(g.length, 80) - 1)] = r.int(0, 255);
  return r.next() < 0.1 ? g.subarray(0, r.int(0, g.length)) : g;
}

/** The fields of the last stderr line with `event=NAME`, as numbers. */
function fields(stderr: string, name: string): Record<string, number> {
  const line = stderr.split("\n").findLast((l) => l.includes(` event=${name} `));
  assert.ok(line, `no event=${name} line`);
  return Object.fromEntries(Object.entries(parseLogfmt(line)).map(([k, v]) => [k, Number(v)]));
}

for (const vnet of [false, true]) {
  Deno.test(
    `e2e: mutated frames of every kind on both inputs${
      vnet ? " (vnet, headers of random lengths)" : ""
    }: no error, every primary frame accounted for, a matched pair still released, exit 0`,
    async () => {
      const r = new Rng(vnet ? 2 : 1);
      const p = await startProgram({
        flags: ["--compare-timeout", "200", ...(vnet ? ["--vnet-hdr-support"] : [])],
      });
      const connect = (name: string) =>
        Deno.connect({ hostname: "127.0.0.1", port: p.ports[name] });
      const primary = await connect("primary-in");
      const secondary = await connect("secondary-in");
      const outdev = new FrameCollector(await connect("outdev"), vnet);
      const notify = await connect("notify-dev");
      // The notify peer reads whatever it is sent (checkpoint requests, init replies).
      const notifyDrained = (async () => {
        const buf = new Uint8Array(4096);
        while ((await notify.read(buf).catch(() => null)) !== null) { /* drain */ }
      })();
      // With vnet: a virtio-net header as long as the vnet word says, mostly 10 or 12 bytes,
      // sometimes a word that does not fit the frame.
      const wire = (f: Uint8Array) => {
        if (!vnet) return framed(f);
        const v = r.pick([0, 10, 12, 12, r.int(0, 100)]);
        return framed(withVnet(f, v, r.int(0, 255)), v);
      };
      // Notify messages carry no vnet word here (SPEC 9).
      const say = (text: string) => writeAll(notify, notifyMessage(text));
      let rssPeak = 0;
      let primaries = 0;
      let stopped: { code: number; stderr: string } | undefined;
      try {
        for (let round = 0; round < 300; round++) {
          const ps: Uint8Array[] = [];
          const ss: Uint8Array[] = [];
          for (let n = r.int(1, 40); n > 0; n--) {
            const f = someFrame(r);
            const kind = r.next();
            if (kind < 0.6) {
              ps.push(wire(f));
              ss.push(wire(r.next() < 0.8 ? f : mutated(r, f)));
            } else if (kind < 0.8) ps.push(wire(mutated(r, f)));
            else ss.push(wire(mutated(r, f)));
          }
          primaries += ps.length;
          await Promise.all([writeAll(primary, concat(...ps)), writeAll(secondary, concat(...ss))]);
          if (round % 25 === 24) {
            await say(r.pick(["COLO_CHECKPOINT", "COLO_USERSPACE_PROXY_INIT", "NOT_A_MESSAGE"]));
          }
          if (round % 50 === 0) {
            const status = Deno.readTextFileSync(`/proc/${p.pid}/status`);
            rssPeak = Math.max(rssPeak, Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024);
          }
        }
        // What is held goes out with a checkpoint; then a pair on a new flow is released. The
        // notify socket and the inputs are not ordered: a marker sent right after the message
        // may have its secondary half flushed by it and its primary half read after it, held
        // for good. So a primary frame alone on a flow of its own goes first, and the marker
        // only once a checkpoint has let that one out (the message again until it has).
        const alone = frame({ udp: { sport: 9, dport: 9, payload: "hostile-test flushed" } });
        const aloneIn = vnet ? withVnet(alone, 12) : alone;
        await writeAll(primary, framed(aloneIn, vnet ? 12 : undefined));
        primaries++;
        const same = (a: Uint8Array) => (f: { data: Uint8Array }) => sameBytes(f.data, a);
        let flushed;
        for (let tries = 0; tries < 5 && !flushed; tries++) {
          await say("COLO_CHECKPOINT");
          flushed = await outdev.waitUntil(same(aloneIn), 2_000);
        }
        assert.ok(flushed, "no checkpoint let out the frame held alone");
        const udp = frame({ udp: { sport: 7, dport: 7, payload: "hostile-test marker" } });
        const marker = vnet ? withVnet(udp, 12) : udp;
        const sent = framed(marker, vnet ? 12 : undefined);
        await Promise.all([writeAll(primary, sent), writeAll(secondary, sent)]);
        const out = await outdev.waitUntil(same(marker), 10_000);
        assert.ok(out, "the marker pair never came out on outdev");
        assert.ok(rssPeak < 256 * 2 ** 20, `RSS ${rssPeak} B`);
      } finally {
        primary.close();
        secondary.close();
        notify.close();
        stopped = await p.stop();
        await outdev.close();
        await notifyDrained;
      }
      const { code, stderr } = stopped;
      assert.equal(code, 0, stderr);
      const errors = stderr.split("\n").filter((l) => /level=error|internal-error/.test(l));
      assert.deepEqual(errors, []);
      // Every primary frame is accounted for: sent to outdev (compared, passed through or
      // flushed by a checkpoint), dropped for a reason (an empty frame), or held at exit (read
      // after the last checkpoint: the notify socket and the inputs are not ordered).
      const summary = fields(stderr, "summary");
      const out = summary.released + summary.passed_through + summary.released_by_checkpoint;
      const dropped = Object.entries(summary)
        .filter(([k]) => k.startsWith("dropped_primary_"))
        .reduce((n, [, v]) => n + v, 0);
      const held = stderr.includes(" event=held-at-exit ")
        ? fields(stderr, "held-at-exit").primary
        : 0;
      assert.equal(summary.primary_in, primaries + 1);
      assert.equal(outdev.frames.length, out);
      assert.equal(out + dropped + held, summary.primary_in);
    },
  );
}

Deno.test("e2e: connections reset before they are accepted stall no endpoint: packet streams, notify-dev, the monitor, /metrics", async () => {
  const p = await startProgram({
    flags: ["--monitor", "tcp-listen:127.0.0.1:0", "--metrics", "tcp-listen:127.0.0.1:0"],
  });
  const endpoints = ["primary-in", "secondary-in", "outdev", "notify-dev", "monitor", "metrics"];
  try {
    // Stopped, the program accepts nothing: every connection waits in a listen queue and is
    // reset there. Paused 100 ms each (as before), the packet endpoints took 4 s to come
    // back; the monitor and /metrics never did.
    Deno.kill(p.pid, "SIGSTOP");
    try {
      for (const name of endpoints) await resetConnections(p.ports[name], 40);
    } finally {
      Deno.kill(p.pid, "SIGCONT");
    }
    const resumed = performance.now();
    const connect = (name: string) => Deno.connect({ hostname: "127.0.0.1", port: p.ports[name] });
    const primary = await connect("primary-in");
    const secondary = await connect("secondary-in");
    const outdev = new FrameCollector(await connect("outdev"));
    const monitor = await QmpClient.connect(p.ports["monitor"]);
    try {
      const f = frame({ udp: { payload: "after the resets" } });
      await writeAll(primary, framed(f));
      await writeAll(secondary, framed(f));
      assert.deepEqual((await outdev.waitFor(1)).map((r) => r.data), [f]);
      const scrape = await fetch(`http://127.0.0.1:${p.ports["metrics"]}/metrics`);
      assert.equal(scrape.status, 200);
      assert.match(await scrape.text(), /colo_compare_/);
      assert.ok(
        performance.now() - resumed < 2_000,
        `the endpoints took ${Math.round(performance.now() - resumed)} ms to serve again`,
      );
    } finally {
      primary.close();
      secondary.close();
      await outdev.close();
      await monitor.close();
    }
    const { code, stderr } = await p.stop();
    assert.equal(code, 0);
    assert.doesNotMatch(stderr, /level=error/);
    for (const name of endpoints) {
      const lost = stderr.split("\n").filter((l) =>
        l.includes("event=peer-lost-before-accept") && l.includes(`endpoint=${name} `)
      );
      assert.equal(lost.length, 1, `${name}: one line for its 40 lost connections`);
    }
  } finally {
    await p.stop().catch(() => {});
  }
});

Deno.test("e2e: peers and monitor clients connecting in a loop log 20 lines of each per 10 s, then a count", async () => {
  const p = await startProgram({ flags: ["--monitor", "tcp-listen:127.0.0.1:0"] });
  const LOOPS = 30;
  try {
    const connect = (name: string) => Deno.connect({ hostname: "127.0.0.1", port: p.ports[name] });
    for (let i = 0; i < LOOPS; i++) {
      (await connect("primary-in")).close();
      const client = await QmpClient.connect(p.ports["monitor"]); // reads the greeting
      await client.close();
    }
    // A primary peer served after the loop: the endpoint accepts one peer after another, so
    // every peer of the loop was accepted and gone before it. It stays until the stop.
    const primary = await connect("primary-in");
    const secondary = await connect("secondary-in");
    const outdev = new FrameCollector(await connect("outdev"));
    let stopped;
    try {
      const f = frame({ udp: { payload: "after the loop" } });
      await writeAll(primary, framed(f));
      await writeAll(secondary, framed(f));
      assert.deepEqual((await outdev.waitFor(1)).map((r) => r.data), [f]);
      stopped = await p.stop();
    } finally {
      primary.close();
      secondary.close();
      await outdev.close();
    }
    const { code, stderr } = stopped;
    assert.equal(code, 0);
    const lines = stderr.split("\n");
    const count = (event: string, extra = "") => {
      const all = lines.filter((l) => l.includes(`event=${event} `) && l.includes(extra));
      const summary = all.filter((l) => l.includes("suppressed="));
      return {
        logged: all.length - summary.length,
        suppressed: summary.reduce((n, l) => n + Number(/suppressed=(\d+)/.exec(l)![1]), 0),
      };
    };
    // 31 peers on primary-in; 30 of them left before the stop (the last one's end is the stop's,
    // not logged).
    assert.deepEqual(count("peer-connected", "endpoint=primary-in "), {
      logged: 20,
      suppressed: 11,
    });
    assert.deepEqual(count("peer-disconnected", "endpoint=primary-in "), {
      logged: 20,
      suppressed: 10,
    });
    assert.deepEqual(count("monitor-client-connected"), { logged: 20, suppressed: 10 });
  } finally {
    await p.stop().catch(() => {});
  }
});

Deno.test("e2e: a notify-dev peer that asks and resets in a loop logs 20 failed writes per 10 s, not a line each", async () => {
  // Each peer sends a burst of COLO_USERSPACE_PROXY_INIT and closes without reading: the
  // answers meet a reset socket. Before, each such session wrote a warn line (50 here; a
  // probe that kept at it: 393 in 15 s).
  const p = await startProgram();
  try {
    const port = p.ports["notify-dev"];
    const init = notifyMessage("COLO_USERSPACE_PROXY_INIT");
    const burst = concat(...Array.from({ length: 1000 }, () => init));
    // Each peer reads the start of its answers (so it is served, not refused as a second
    // peer while the last session ends), then closes with the rest unread: a reset.
    for (let served = 0; served < 80;) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        await writeAll(c, burst);
        if ((await c.read(new Uint8Array(1))) !== null) served++;
      } catch {
        // refused
      } finally {
        c.close();
      }
    }
    // A peer that reads its answer: served (not refused as a second peer) once the loop's
    // sessions are over.
    const answer = notifyMessage("COLO_COMPARE_GET_XEN_INIT");
    for (let served = false; !served;) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        await writeAll(c, init);
        const buf = new Uint8Array(answer.length);
        let n = 0;
        for (let got; n < buf.length && (got = await c.read(buf.subarray(n))) !== null;) n += got;
        served = n === buf.length;
      } catch {
        // refused while a session of the loop was still on
      } finally {
        c.close();
      }
    }
    const { code, stderr } = await p.stop();
    assert.equal(code, 0);
    const failed = stderr.split("\n").filter((l) =>
      l.includes("event=write-failed ") && l.includes("endpoint=notify-dev")
    );
    assert.ok(failed.length > 0, "no write failed: the test did not reset a socket under a write");
    assert.ok(failed.length <= 21, `${failed.length} write-failed lines`);
  } finally {
    await p.stop().catch(() => {});
  }
});
