/**
 * `--monitor`: the QMP dialect in-process against a fake comparator, and end to end against
 * the real program (a runtime compare_timeout is used by the next expiry scan).
 */

import assert from "node:assert/strict";
import type { ComparatorView, InsideEvent, Settings } from "../../src/inside/view.ts";
import { EventHub } from "../../src/inside/view.ts";
import { Logger } from "../../src/log.ts";
import { MAX_NESTING } from "../../src/monitor/json_splitter.ts";
import {
  MAX_CLIENTS,
  MAX_PENDING_OUTPUT,
  MonitorServer,
  SET_LOG_BURST,
} from "../../src/monitor/server.ts";
import { Stats } from "../../src/stats.ts";
import { parseAddress } from "../../src/wire/address.ts";
import { EVICT_AFTER_MS } from "../../src/wire/client_listener.ts";
import { startRig } from "../support/fixture.ts";
import { frame } from "../support/packets.ts";
import { QmpClient } from "../support/qmp_client.ts";

/** A comparator stand-in: settings in a plain object, events from a hub. */
function fakeView() {
  const settings: Settings = {
    compareTimeout: 3000,
    expiredScanCycle: 1000,
    maxQueueSize: 1024,
    vnetHdrSupport: false,
    endpoints: { "primary-in": "tcp-listen:127.0.0.1:9001", outdev: "tcp:127.0.0.1:9003" },
  };
  const hub = new EventHub();
  let epoch = 0;
  const view: ComparatorView = {
    settings,
    snapshot: () => ({
      stats: new Stats(),
      heldFrames: { primary: 2, secondary: 0 },
      heldBytes: { primary: 120, secondary: 0 },
      connections: 1,
      paused: { primary: false, secondary: false },
      peers: { "primary-in": true },
      epoch,
      checkpointOutstanding: false,
    }),
    checkpointDone: () => void epoch++,
    subscribe: (l) => hub.subscribe(l),
  };
  return { view, settings, emit: (e: InsideEvent) => hub.emit(e) };
}

async function withMonitor(
  fn: (ctx: {
    port: number;
    settings: Settings;
    emit: (e: InsideEvent) => void;
    logs: string[];
  }) => Promise<void>,
): Promise<void> {
  const { view, settings, emit } = fakeView();
  const logs: string[] = [];
  const server = new MonitorServer(view, "colo-compare0", new Logger("info", (l) => logs.push(l)));
  await server.listen(parseAddress("tcp-listen:127.0.0.1:0"));
  try {
    await fn({ port: Number(server.boundText.split(":").pop()), settings, emit, logs });
  } finally {
    await server.close();
  }
}

Deno.test("monitor: greeting, capabilities negotiation, execute/return/error with id echo", async () => {
  await withMonitor(async ({ port }) => {
    const c = await QmpClient.connect(port);
    try {
      assert.deepEqual(c.greeting!.QMP.version.qemu, { major: 7, minor: 2, micro: 0 });
      assert.deepEqual(c.greeting!.QMP.capabilities, []);
      const early = await c.execute("query-colo-compare", undefined, 1);
      assert.equal(early.error.class, "CommandNotFound");
      assert.equal(early.id, 1);
      assert.deepEqual(await c.execute("qmp_capabilities", undefined, "a"), {
        return: {},
        id: "a",
      });
      const again = await c.execute("qmp_capabilities");
      assert.equal(again.error.class, "CommandNotFound");
      const unknown = await c.execute("no-such-command", undefined, { n: [1] });
      assert.deepEqual(unknown, {
        error: { class: "CommandNotFound", desc: "The command no-such-command has not been found" },
        id: { n: [1] },
      });
      const q = await c.execute("query-colo-compare");
      assert.deepEqual(q.return.held.primary, { frames: 2, bytes: 120 });
      assert.equal(q.return.settings.compare_timeout, 3000);
      const done = await c.execute("colo-compare-checkpoint-done");
      assert.deepEqual(done, { return: { epoch: 1 } });
    } finally {
      await c.close();
    }
  });
});

Deno.test("monitor: with every slot taken, a client that never negotiated gives way; negotiated ones keep theirs", async () => {
  await withMonitor(async ({ port, logs }) => {
    const silent: Deno.Conn[] = [];
    const talking: QmpClient[] = [];
    try {
      for (let i = 0; i < MAX_CLIENTS; i++) {
        silent.push(await Deno.connect({ hostname: "127.0.0.1", port }));
      }
      // Once they have been there a while, each new client takes the place of the oldest
      // silent one, and is served.
      await new Promise((r) => setTimeout(r, EVICT_AFTER_MS));
      for (let i = 0; i < MAX_CLIENTS; i++) {
        const c = await QmpClient.connect(port);
        talking.push(c);
        assert.deepEqual(await c.execute("qmp_capabilities"), { return: {} });
      }
      assert.equal(logs.filter((l) => l.includes("event=monitor-client-evicted")).length, 1);
      // Every slot is a negotiated client's now: one more is refused, they stay.
      const late = await Deno.connect({ hostname: "127.0.0.1", port });
      silent.push(late);
      const buf = new Uint8Array(4096);
      assert.equal(await late.read(buf), null, "refused");
      assert.ok(logs.some((l) => l.includes("event=monitor-client-refused")));
      const q = await talking[0].execute("query-colo-compare");
      assert.equal(q.return.connections, 1);
    } finally {
      for (const c of silent) c.close();
      for (const c of talking) await c.close();
    }
  });
});

Deno.test("monitor: qom-list, qom-get and qom-set with QEMU's names and validation", async () => {
  await withMonitor(async ({ port, settings }) => {
    const c = await QmpClient.connect(port);
    try {
      await c.execute("qmp_capabilities");
      const objects = await c.execute("qom-list", { path: "/objects" });
      assert.deepEqual(objects.return, [{ name: "colo-compare0", type: "child<colo-compare>" }]);
      const props = await c.execute("qom-list", { path: "/objects/colo-compare0" });
      const names = props.return.map((p: { name: string }) => p.name);
      for (const n of ["compare_timeout", "expired_scan_cycle", "max_queue_size", "primary_in"]) {
        assert.ok(names.includes(n), n);
      }
      const path = "/objects/colo-compare0";
      assert.deepEqual(await c.execute("qom-get", { path, property: "compare_timeout" }), {
        return: 3000,
      });
      assert.deepEqual(await c.execute("qom-get", { path, property: "primary_in" }), {
        return: "tcp-listen:127.0.0.1:9001",
      });
      for (
        const [property, value] of [
          ["compare_timeout", 250],
          ["expired_scan_cycle", 20],
          ["max_queue_size", 7],
        ] as const
      ) {
        assert.deepEqual(await c.execute("qom-set", { path, property, value }), { return: {} });
      }
      assert.equal(settings.compareTimeout, 250);
      assert.equal(settings.expiredScanCycle, 20);
      assert.equal(settings.maxQueueSize, 7);
      // The partial path (the id alone) resolves as in QEMU.
      assert.deepEqual(
        await c.execute("qom-get", { path: "colo-compare0", property: "max_queue_size" }),
        { return: 7 },
      );
      const zero = await c.execute("qom-set", { path, property: "compare_timeout", value: 0 });
      assert.deepEqual(zero.error, {
        class: "GenericError",
        desc: "Property 'colo-compare.compare_timeout' requires a positive value",
      });
      const big = await c.execute("qom-set", {
        path,
        property: "max_queue_size",
        value: 2 ** 32,
      });
      assert.equal(big.error.desc, "Parameter 'max_queue_size' expects uint32_t");
      const text = await c.execute("qom-set", { path, property: "max_queue_size", value: "9" });
      assert.match(text.error.desc, /expected: integer/);
      const ro = await c.execute("qom-set", { path, property: "primary_in", value: "x" });
      assert.equal(ro.error.class, "GenericError");
      assert.equal(settings.compareTimeout, 250, "refused values change nothing");
      assert.equal(settings.maxQueueSize, 7);
      const missing = await c.execute("qom-get", { path: "/objects/other", property: "x" });
      assert.equal(missing.error.class, "DeviceNotFound");
      const noProp = await c.execute("qom-get", { path, property: "nope" });
      assert.equal(noProp.error.desc, "Property 'colo-compare.nope' not found");
      const noArg = await c.execute("qom-get", { path });
      assert.equal(noArg.error.desc, "Parameter 'property' is missing");
    } finally {
      await c.close();
    }
  });
});

Deno.test("monitor: garbage gets QMP error objects and the session goes on", async () => {
  await withMonitor(async ({ port, logs }) => {
    const c = await QmpClient.connect(port);
    try {
      await c.execute("qmp_capabilities");
      const n = c.replies.length;
      await c.write('garbage\n42\n{"execute": 5}\n{"arguments": {}}\n{"execute": "x", "foo": 1}\n');
      await c.write('{"execute": "query-version"}\n');
      await c.waitReplies(n + 6); // five errors, then the version
      const errors = c.replies.slice(n, n + 5).map((r) => r.error?.desc);
      assert.match(errors[0], /^JSON parse error/);
      assert.equal(errors[1], "QMP input must be a JSON object");
      assert.equal(errors[2], "QMP input member 'execute' must be a string");
      assert.equal(errors[3], "QMP input lacks member 'execute'");
      assert.equal(errors[4], "QMP input member 'foo' is unexpected");
      assert.equal(c.replies[n + 5].return.package.startsWith("colo-compare"), true);
      // One line per class (a parse error, a non-object): the rest are counted.
      assert.equal(logs.filter((l) => l.includes("event=monitor-bad-input")).length, 2);
    } finally {
      await c.close();
    }
  });
});

Deno.test("monitor: JSON nested deeper than QEMU's limit gets QEMU's error, logged once, and the session goes on", async () => {
  await withMonitor(async ({ port, logs }) => {
    const c = await QmpClient.connect(port);
    try {
      await c.execute("qmp_capabilities");
      // At the limit (the command object counts as one level): answered, the id echoed.
      const fits = "[".repeat(MAX_NESTING - 1) + "]".repeat(MAX_NESTING - 1);
      const echoed = await c.send(JSON.parse(`{"execute":"query-version","id":${fits}}`));
      assert.equal(JSON.stringify(echoed.id), fits);
      const n = c.replies.length;
      const deep = "[".repeat(400_000) + "]".repeat(400_000);
      let text = "";
      for (let i = 0; i < 3; i++) text += `{"execute":"query-version","id":${deep}}\n`;
      text += `{"execute":"qom-get","arguments":{"path":"/objects/colo-compare0",` +
        `"property":"compare_timeout","x":${'{"a":'.repeat(2000)}1${"}".repeat(2000)}}}\n`;
      await c.write(text + '{"execute":"query-version","id":"after"}\n');
      const replies = (await c.waitReplies(n + 5)).slice(n);
      for (const r of replies.slice(0, 4)) {
        assert.deepEqual(r, {
          error: { class: "GenericError", desc: "JSON nesting depth limit exceeded" },
        });
      }
      assert.equal(replies[4].id, "after");
      assert.ok(replies[4].return.package.startsWith("colo-compare"));
      assert.deepEqual(logs.filter((l) => / level=error /.test(l)), []);
      const bad = logs.filter((l) => l.includes("event=monitor-bad-input"));
      assert.equal(bad.length, 1, bad.join("\n"));
      assert.match(bad[0], / level=warn .* class=nesting /);
    } finally {
      await c.close();
    }
  });
});

Deno.test("monitor: hostile command names, properties and values get QMP errors, never an internal error", async () => {
  await withMonitor(async ({ port, logs, settings }) => {
    const c = await QmpClient.connect(port);
    try {
      await c.execute("qmp_capabilities");
      const path = "/objects/colo-compare0";
      for (const name of ["toString", "__proto__", "constructor", "hasOwnProperty"]) {
        const r = await c.execute(name);
        assert.deepEqual(r.error, {
          class: "CommandNotFound",
          desc: `The command ${name} has not been found`,
        });
        for (const command of ["qom-get", "qom-set"]) {
          const args = command === "qom-set"
            ? { path, property: name, value: 1 }
            : { path, property: name };
          const p = await c.execute(command, args);
          assert.equal(p.error?.desc, `Property 'colo-compare.${name}' not found`, command);
        }
      }
      const nested = JSON.parse("[".repeat(MAX_NESTING - 3) + "]".repeat(MAX_NESTING - 3));
      const v = await c.execute("qom-set", { path, property: "compare_timeout", value: nested });
      assert.match(v.error.desc, /expected: integer/);
      const p = await c.execute("qom-get", { path: nested, property: "compare_timeout" });
      assert.match(p.error.desc, /Invalid parameter type for 'path'/);
      const a = await c.execute("qom-list", { path, [`k${"x".repeat(1000)}`]: nested });
      assert.match(a.error.desc, /^Parameter 'kxxx.*' is unexpected$/);
      // JSON.parse makes "__proto__" an own member: an unexpected one, not a prototype.
      const n = c.replies.length;
      await c.write(
        '{"execute":"qom-get","arguments":{"__proto__":{"path":"x"},"path":"/","property":"x"}}\n',
      );
      const proto = (await c.waitReplies(n + 1))[n];
      assert.equal(proto.error.desc, "Parameter '__proto__' is unexpected");
      assert.equal(settings.compareTimeout, 3000);
      assert.deepEqual(logs.filter((l) => / level=error /.test(l)), []);
    } finally {
      await c.close();
    }
  });
});

Deno.test("monitor: qom-set is logged for the first few per interval, the rest summarised with a count", async () => {
  let logs: string[] = [];
  await withMonitor(async (ctx) => {
    logs = ctx.logs;
    const c = await QmpClient.connect(ctx.port);
    try {
      await c.execute("qmp_capabilities");
      const path = "/objects/colo-compare0";
      for (let i = 0; i < 50; i++) {
        const r = await c.execute("qom-set", { path, property: "compare_timeout", value: 100 + i });
        assert.deepEqual(r, { return: {} });
      }
      assert.equal(ctx.settings.compareTimeout, 149);
      const sets = logs.filter((l) => l.includes("event=monitor-set"));
      assert.equal(sets.length, SET_LOG_BURST);
      assert.match(sets[0], / level=info event=monitor-set property=compare_timeout value=100$/);
    } finally {
      await c.close();
    }
  });
  // Closing the monitor summarises what waited for the end of its interval.
  const sets = logs.filter((l) => l.includes("event=monitor-set"));
  assert.equal(sets.length, SET_LOG_BURST + 1);
  assert.match(sets.at(-1)!, / suppressed=40 /);
});

Deno.test("monitor: timer properties take QEMU 7.2's uint32 range", async () => {
  await withMonitor(async ({ port, settings }) => {
    const c = await QmpClient.connect(port);
    try {
      await c.execute("qmp_capabilities");
      const path = "/objects/colo-compare0";
      for (const property of ["compare_timeout", "expired_scan_cycle"]) {
        for (const value of [2 ** 31, 2 ** 32 - 1]) {
          assert.deepEqual(await c.execute("qom-set", { path, property, value }), { return: {} });
          assert.deepEqual(await c.execute("qom-get", { path, property }), { return: value });
        }
        for (const value of [2 ** 32, -1]) {
          const r = await c.execute("qom-set", { path, property, value });
          assert.equal(r.error.desc, `Parameter '${property}' expects uint32_t`);
        }
      }
      assert.equal(settings.compareTimeout, 2 ** 32 - 1);
      assert.equal(settings.expiredScanCycle, 2 ** 32 - 1);
    } finally {
      await c.close();
    }
  });
});

Deno.test("monitor: events with timestamps reach every negotiated client; drops are rate-limited", async () => {
  await withMonitor(async ({ port, emit }) => {
    const a = await QmpClient.connect(port);
    const b = await QmpClient.connect(port);
    const quiet = await QmpClient.connect(port); // never negotiates: gets no events
    try {
      await a.execute("qmp_capabilities");
      await b.execute("qmp_capabilities");
      emit({ kind: "checkpoint-request", reason: "tcp-payload", connection: "tcp 1 > 2" });
      emit({ kind: "peer", endpoint: "outdev", connected: false });
      for (const c of [a, b]) {
        const e = await c.event("COLO_COMPARE_CHECKPOINT_REQUEST");
        assert.deepEqual(e.data, { reason: "tcp-payload", connection: "tcp 1 > 2" });
        const now = Date.now() / 1000;
        assert.ok(Math.abs(e.timestamp.seconds - now) < 5, "seconds since the epoch");
        assert.ok(e.timestamp.microseconds >= 0 && e.timestamp.microseconds < 1e6);
        assert.deepEqual((await c.event("COLO_COMPARE_PEER")).data, {
          endpoint: "outdev",
          connected: false,
        });
      }
      for (let i = 0; i < 100; i++) {
        emit({ kind: "drop", side: "secondary", reason: "queue-full", count: 1 });
      }
      const first = await a.event("COLO_COMPARE_DROP");
      assert.deepEqual(first.data, { side: "secondary", reason: "queue-full", count: 1 });
      const summary = await a.event("COLO_COMPARE_DROP");
      assert.equal(summary.data.count, 99, "the rest come as one event a second later");
      const gap = (summary.timestamp.seconds - first.timestamp.seconds) * 1e6 +
        summary.timestamp.microseconds - first.timestamp.microseconds;
      assert.ok(gap >= 900_000, `${gap} µs apart`);
      assert.equal(quiet.events.length, 0);
    } finally {
      await a.close();
      await b.close();
      await quiet.close();
    }
  });
});

Deno.test("monitor: a client that does not read is cut off at 1 MiB of waiting output", async () => {
  await withMonitor(async ({ port, logs }) => {
    const c = await QmpClient.connect(port);
    const other = await QmpClient.connect(port);
    try {
      await c.execute("qmp_capabilities");
      await other.execute("qmp_capabilities");
      // A client that writes commands and never reads a reply.
      const slow = await Deno.connect({ hostname: "127.0.0.1", port });
      const line = new TextEncoder().encode(
        '{"execute": "qmp_capabilities"}\n' + '{"execute": "query-commands"}\n'.repeat(2000),
      );
      let cutOff = false;
      for (let i = 0; i < 200 && !cutOff; i++) {
        try {
          await slow.write(line);
        } catch {
          cutOff = true; // the server closed the connection
        }
        cutOff ||= logs.some((l) => l.includes("event=monitor-client-cut-off"));
      }
      assert.ok(cutOff, "cut off");
      assert.ok(logs.some((l) => l.includes("event=monitor-client-cut-off")), logs.join("\n"));
      assert.ok(
        logs.some((l) => l.includes(`more than ${MAX_PENDING_OUTPUT} bytes`)),
        "the log names the bound",
      );
      slow.close();
      // The other client is served as before.
      assert.ok((await other.execute("query-version")).return);
    } finally {
      await c.close();
      await other.close();
    }
  });
});

Deno.test("monitor: compare_timeout set over QMP is used by the next expiry scan", async () => {
  const rig = await startRig({
    flags: [
      "--monitor",
      "tcp-listen:127.0.0.1:0",
      "--compare-timeout",
      "600000",
      "--expired-scan-cycle",
      "20",
    ],
  });
  const c = await QmpClient.connect(rig.program.ports["monitor"]);
  try {
    await c.execute("qmp_capabilities");
    await rig.sendPrimary(frame({ udp: { payload: "waits for a secondary that never comes" } }));
    // Held (once read), and with a 10-minute timeout no scan asks for a checkpoint.
    let before = await c.execute("query-colo-compare");
    while (before.return.held.primary.frames === 0) before = await c.execute("query-colo-compare");
    assert.equal(before.return.settings.compare_timeout, 600000);
    assert.equal(before.return["checkpoint-outstanding"], false);
    assert.deepEqual(before.return.peers, {
      "primary-in": true,
      "secondary-in": true,
      outdev: true,
      "notify-dev": true,
    });
    assert.equal(c.events.filter((e) => e.event === "COLO_COMPARE_CHECKPOINT_REQUEST").length, 0);
    const set = await c.execute("qom-set", {
      path: "/objects/colo-compare0",
      property: "compare_timeout",
      value: 100,
    });
    assert.deepEqual(set, { return: {} });
    const event = await c.event("COLO_COMPARE_CHECKPOINT_REQUEST");
    assert.equal(event.data.reason, "timeout");
    assert.match(event.data.connection, /^udp /);
    await rig.notify.waitFor(1);
    assert.deepEqual(rig.notifyTexts(), ["DO_CHECKPOINT"]);
    // A controller of any kind reports the checkpoint over the monitor: the frame is flushed.
    assert.deepEqual(await c.execute("colo-compare-checkpoint-done"), { return: { epoch: 1 } });
    await rig.outdev.waitFor(1);
    const after = await c.execute("query-colo-compare");
    assert.equal(after.return.held.primary.frames, 0);
    assert.equal(after.return.counters.released_by_checkpoint, 1);
  } finally {
    await c.close();
    await rig.close();
  }
});

Deno.test("monitor: an expired_scan_cycle beyond a timer's range is kept but never fires the scan early", async () => {
  // 2^32-1 ms, as QEMU accepts; a timer given more than 2^31-1 ms would fire every 1 ms.
  const rig = await startRig({
    flags: [
      "--monitor",
      "tcp-listen:127.0.0.1:0",
      "--compare-timeout",
      "100",
      "--expired-scan-cycle",
      String(2 ** 32 - 1),
    ],
  });
  const c = await QmpClient.connect(rig.program.ports["monitor"]);
  const path = "/objects/colo-compare0";
  const property = "expired_scan_cycle";
  const heldThenQuiet = async (payload: string) => {
    await rig.sendPrimary(frame({ udp: { payload } }));
    let q = await c.execute("query-colo-compare");
    while (q.return.held.primary.frames === 0) q = await c.execute("query-colo-compare");
    // No event can say "the scan did not run": a window five times compare_timeout.
    await new Promise((r) => setTimeout(r, 500));
    q = await c.execute("query-colo-compare");
    assert.equal(q.return["checkpoint-outstanding"], false, payload);
    assert.equal(c.events.filter((e) => e.event === "COLO_COMPARE_CHECKPOINT_REQUEST").length, 0);
  };
  try {
    await c.execute("qmp_capabilities");
    await heldThenQuiet("held from the start, with the cycle from the flag");
    assert.deepEqual(await c.execute("qom-get", { path, property }), { return: 2 ** 32 - 1 });
    // The scan still works once the cycle is short again.
    assert.deepEqual(await c.execute("qom-set", { path, property, value: 20 }), { return: {} });
    assert.equal((await c.event("COLO_COMPARE_CHECKPOINT_REQUEST")).data.reason, "timeout");
    await c.execute("colo-compare-checkpoint-done");
    await rig.outdev.waitFor(1);
    const big = await c.execute("qom-set", { path, property, value: 2 ** 32 - 1 });
    assert.deepEqual(big, { return: {} });
    await heldThenQuiet("held after the cycle was set over the monitor");
    assert.deepEqual(await c.execute("qom-get", { path, property }), { return: 2 ** 32 - 1 });
    assert.deepEqual(rig.program.stderr.filter((l) => /TimeoutOverflow/.test(l)), []);
  } finally {
    await c.close();
    await rig.close();
  }
});

/** Leaves a unix socket file nobody listens on: a process listening there is killed. */
async function leaveStaleSocket(path: string): Promise<void> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `Deno.listen({ transport: "unix", path: ${
        JSON.stringify(path)
      } }); console.log("up"); setInterval(() => {}, 1000);`,
    ],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.getReader();
  await reader.read(); // "up": it listens
  child.kill("SIGKILL");
  await child.status;
  reader.releaseLock();
  await child.stdout.cancel();
}

Deno.test("monitor: unix-listen replaces a stale socket, is mode 0600, and is removed at close", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/qmp.sock`;
  try {
    // A socket file left behind by an earlier run: a process killed while it listened.
    await leaveStaleSocket(path);
    assert.ok((await Deno.lstat(path)).isSocket);
    const { view } = fakeView();
    const server = new MonitorServer(view, "colo-compare0", new Logger("error", () => {}));
    await server.listen(parseAddress(`unix-listen:${path}`));
    try {
      assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
      const c = new QmpClient(await Deno.connect({ transport: "unix", path }));
      try {
        assert.deepEqual(await c.execute("qmp_capabilities"), { return: {} });
      } finally {
        await c.close();
      }
    } finally {
      await server.close();
    }
    await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
    // A live socket is someone else's: refused, left alone.
    const live = Deno.listen({ transport: "unix", path });
    try {
      const third = new MonitorServer(view, "colo-compare0", new Logger("error", () => {}));
      await assert.rejects(
        third.listen(parseAddress(`unix-listen:${path}`)),
        /another program is listening there/,
      );
      assert.ok((await Deno.lstat(path)).isSocket);
    } finally {
      live.close();
    }
    // Any other file at the path is the user's: refused, not removed.
    await Deno.writeTextFile(path, "not a socket");
    const other = new MonitorServer(view, "colo-compare0", new Logger("error", () => {}));
    await assert.rejects(other.listen(parseAddress(`unix-listen:${path}`)), /is not a socket/);
    assert.equal(await Deno.readTextFile(path), "not a socket");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
