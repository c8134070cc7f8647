/**
 * The QMP session of KVM COLO (SPEC 7b), line by line: no sockets, no timers.
 */

import assert from "node:assert/strict";
import {
  COLO_LOG_BURST,
  COLO_LOG_INTERVAL_MS,
  DEFAULT_CHECKPOINT_DELAY_MS,
  MAX_LINE_BYTES,
  MAX_NOTE_CLASSES,
  POLL_INTERVAL_MS,
  QmpSession,
  type QmpSessionSink,
  REPLY_TIMEOUT_MS,
  SUMMARY_INTERVAL_MS,
  type VmStateEvents,
} from "../../src/checkpoint/qmp_session.ts";
import { Logger } from "../../src/log.ts";

type Json = Record<string, unknown>;

const GREETING = JSON.stringify({
  QMP: {
    version: { qemu: { micro: 22, minor: 2, major: 7 }, package: "Debian 1:7.2+dfsg-7" },
    capabilities: ["oob"],
  },
});

/** Records what the session does; answers as a test tells it to. */
class Harness implements QmpSessionSink {
  readonly sent: Json[] = [];
  readonly happened: string[] = [];
  readonly drops: string[] = [];
  readonly logs: string[] = [];
  readonly session: QmpSession;
  now = 1000;

  /** `watch`: a watching session (`--qmp-secondary`). */
  constructor(watch: VmStateEvents | null = null) {
    this.session = new QmpSession(this, new Logger("debug", (l) => this.logs.push(l)), watch);
  }

  send(command: string): void {
    this.sent.push(JSON.parse(command));
  }
  drop(reason: string): void {
    this.drops.push(reason);
  }
  checkpointDone(): void {
    this.happened.push("checkpoint-done");
    this.stops.push("checkpoint-done");
  }
  coloExit(reason: string): void {
    this.happened.push(`colo-exit: ${reason}`);
  }
  coloActive(): void {
    this.happened.push("colo-active");
  }
  /** `vmStopped` calls, apart from `happened`, with the flushes between them. */
  readonly stops: string[] = [];
  vmStopped(stopped: boolean): void {
    this.stops.push(stopped ? "stopped" : "running");
  }
  peer(connected: boolean): void {
    this.happened.push(`peer ${connected}`);
  }

  /** Feeds one line as QEMU writes it. */
  line(msg: Json | string): void {
    this.session.push(
      new TextEncoder().encode((typeof msg === "string" ? msg : JSON.stringify(msg)) + "\r\n"),
      this.now,
    );
  }

  /** The commands sent and not yet looked at, as `execute` names (with arguments if any). */
  take(): Json[] {
    return this.sent.splice(0, this.sent.length);
  }

  /** The id of the last command sent with this name. */
  idOf(execute: string): number {
    for (let i = this.sent.length - 1; i >= 0; i--) {
      if (this.sent[i].execute === execute) return this.sent[i].id as number;
    }
    throw new Error(`no ${execute} was sent: ${JSON.stringify(this.sent)}`);
  }

  reply(execute: string, value: Json): void {
    this.line({ return: value, id: this.idOf(execute) });
  }

  fail(execute: string, cls: string, desc: string): void {
    this.line({ id: this.idOf(execute), error: { class: cls, desc } });
  }

  event(name: string, data?: Json): void {
    this.line({
      timestamp: { seconds: 1796157418, microseconds: 635093 },
      event: name,
      ...(data ? { data } : {}),
    });
  }

  /** Attaches, greets, accepts the capabilities: the three queries are sent, not answered. */
  negotiate(): void {
    this.session.attach(this.now);
    this.line(GREETING);
    this.reply("qmp_capabilities", {});
  }

  /** Greeting, capabilities, and the three answers of a QEMU in COLO (or not). */
  connect(mode: "primary" | "none" = "primary", delay = 20000, status = "running"): void {
    this.negotiate();
    this.reply("query-migrate-parameters", { "x-checkpoint-delay": delay, "downtime-limit": 300 });
    this.reply("query-status", { status, singlestep: false, running: status === "running" });
    this.reply("query-colo-status", { mode, "last-mode": "none", reason: "none" });
    this.sent.length = 0;
    this.happened.length = 0;
  }

  /** One checkpoint as QEMU 7.2 shows it, with the query-status answered in between. */
  checkpoint(runState = "colo", pass = false): void {
    this.event("STOP");
    if (pass) this.event("MIGRATION_PASS", { pass: 7 });
    this.reply("query-status", { status: runState, singlestep: false, running: false });
    this.event("RESUME");
  }

  logged(event: string): string[] {
    return this.logs.filter((l) => l.includes(` event=${event}`));
  }
}

const executes = (cmds: Json[]) => cmds.map((c) => c.execute);

Deno.test("qmp session: the greeting is answered with qmp_capabilities, nothing before it", () => {
  const h = new Harness();
  assert.equal(h.session.request(h.now), false, "no request before a monitor is attached");
  h.session.attach(h.now);
  assert.deepEqual(h.sent, []);
  h.line(GREETING);
  assert.deepEqual(h.take(), [{ execute: "qmp_capabilities", id: 1 }]);
  assert.equal(h.session.ready, false, "not ready until the capabilities are accepted");
  assert.equal(h.session.request(h.now), false);
  assert.match(h.logged("qmp-greeting")[0], /qemu=7\.2\.22 package="Debian 1:7\.2\+dfsg-7"/);
});

Deno.test("qmp session: a peer that does not greet as QMP is dropped", () => {
  for (const first of ["DO_CHECKPOINT", '{"return": {}}', "[1,2]"]) {
    const h = new Harness();
    h.session.attach(h.now);
    h.line(first);
    assert.deepEqual(h.drops, ["no QMP greeting: the peer is not a QMP monitor"], first);
    assert.deepEqual(h.sent, []);
    h.line(GREETING);
    assert.deepEqual(h.sent, [], "nothing more is read once dropped");
  }
});

Deno.test("qmp session: a pretty=on monitor is named as such, with the fix", () => {
  const h = new Harness();
  h.session.attach(h.now);
  h.line("{");
  h.line('    "QMP": {');
  assert.equal(h.drops.length, 1);
  assert.match(h.drops[0], /pretty=on .* pretty=off/);
});

Deno.test("qmp session: qmp_capabilities refused drops the connection, naming QEMU's reason", () => {
  const h = new Harness();
  h.session.attach(h.now);
  h.line(GREETING);
  h.fail("qmp_capabilities", "GenericError", "Capabilities negotiation is already complete");
  assert.deepEqual(h.drops, [
    "qmp_capabilities refused: Capabilities negotiation is already complete",
  ]);
  assert.equal(h.session.ready, false);
  assert.deepEqual(h.happened, [], "no peer event for a monitor that never became ready");
});

Deno.test("qmp session: once ready it reads the delay, the run state and COLO's state", () => {
  const h = new Harness();
  h.negotiate();
  assert.equal(h.session.ready, true);
  assert.deepEqual(h.happened, ["peer true"]);
  const sent = h.sent.slice(1);
  assert.deepEqual(executes(sent), [
    "query-migrate-parameters",
    "query-status",
    "query-colo-status",
  ]);
  assert.equal(new Set(sent.map((c) => c.id)).size, 3, "every command has its own id");
  h.reply("query-migrate-parameters", { "x-checkpoint-delay": 12345 });
  assert.equal(h.session.checkpointDelay, 12345);
  h.reply("query-status", { status: "running", singlestep: false, running: true });
  assert.equal(h.session.runState, "running");
  h.reply("query-colo-status", { mode: "primary", "last-mode": "none", reason: "none" });
  assert.equal(h.session.colo, "active");
  assert.deepEqual(h.happened, ["peer true"], "active from the start: nothing to change");
  assert.equal(h.session.pendingCommands, 0);
});

Deno.test("qmp session: COLO not running at connect passes through; mode primary later compares", () => {
  const g = new Harness();
  g.negotiate();
  g.reply("query-colo-status", { mode: "none", "last-mode": "primary", reason: "error" });
  assert.deepEqual(g.happened, [
    "peer true",
    "colo-exit: query-colo-status mode=none last-mode=primary reason=error",
  ]);
  assert.equal(g.logged("colo-inactive").length, 1);
  assert.match(g.logged("colo-inactive")[0], /level=warn/);
  // Polled at a modest rate while not active.
  g.take();
  g.now += POLL_INTERVAL_MS - 1;
  g.session.tick(g.now);
  assert.deepEqual(g.take(), [], "not before the poll interval");
  g.now += 1;
  g.session.tick(g.now);
  assert.deepEqual(executes(g.sent), ["query-colo-status"]);
  g.now += POLL_INTERVAL_MS * 5;
  g.session.tick(g.now);
  assert.equal(g.sent.length, 1, "one poll at a time");
  g.reply("query-colo-status", { mode: "primary", "last-mode": "primary", reason: "none" });
  assert.deepEqual(g.happened.slice(2), ["colo-active"]);
  assert.match(g.logged("colo-active")[0], /level=warn/);
  g.take();
  g.now += POLL_INTERVAL_MS * 5;
  g.session.tick(g.now);
  assert.deepEqual(g.sent, [], "no polling while COLO is active");
});

Deno.test("qmp session: a request reads the delay fresh, then sets exactly that value", () => {
  const h = new Harness();
  h.connect("primary", 20000);
  assert.equal(h.session.request(h.now), true);
  assert.deepEqual(executes(h.sent), ["query-migrate-parameters"], "no set before the read");
  assert.equal(h.session.request(h.now), true, "a second request joins the one in flight");
  assert.equal(h.sent.length, 1);
  // The operator changed the delay since we connected: never write the stale 20000 back.
  h.reply("query-migrate-parameters", { "x-checkpoint-delay": 5000, "max-bandwidth": 1 });
  h.sent.shift();
  const set = h.take();
  assert.equal(set.length, 1);
  assert.equal(set[0].execute, "migrate-set-parameters");
  assert.deepEqual(set[0].arguments, { "x-checkpoint-delay": 5000 });
  assert.equal(h.session.checkpointDelay, 5000);
  assert.equal(h.session.request(h.now), true);
  assert.deepEqual(h.sent, [], "still in flight until the set is answered");
  h.line({ return: {}, id: set[0].id as number });
  assert.equal(h.session.request(h.now), true);
  assert.deepEqual(executes(h.take()), ["query-migrate-parameters"], "the next request goes out");
  assert.deepEqual(h.happened, [], "a request alone flushes nothing");
});

Deno.test("qmp session: STOP in run state colo, then RESUME, is one checkpoint done", () => {
  const h = new Harness();
  h.connect();
  h.event("STOP");
  assert.deepEqual(executes(h.sent), ["query-status"], "every STOP is classified");
  h.reply("query-status", { status: "colo", singlestep: false, running: false });
  assert.deepEqual(h.happened, [], "nothing until RESUME: the old epoch ends there");
  h.event("RESUME");
  assert.deepEqual(h.happened, ["checkpoint-done"]);
  h.event("RESUME");
  assert.deepEqual(h.happened, ["checkpoint-done"], "a RESUME without a STOP is no checkpoint");
  // QEMU's periodic checkpoints look the same and flush too.
  h.checkpoint();
  assert.deepEqual(h.happened, ["checkpoint-done", "checkpoint-done"]);
});

Deno.test("qmp session: STOP tells the VM stopped at once; RESUME tells it runs only after the flush", () => {
  const h = new Harness();
  h.connect();
  h.event("STOP");
  assert.deepEqual(h.stops, ["stopped"], "before its run state is known");
  h.event("STOP");
  assert.deepEqual(h.stops, ["stopped"], "a repeated STOP adds nothing");
  h.reply("query-status", { status: "colo", singlestep: false, running: false });
  h.event("RESUME");
  assert.deepEqual(h.stops, ["stopped", "checkpoint-done", "running"]);
  // A user's stop is a stop too (nothing new comes meanwhile); its cont flushes nothing.
  h.stops.length = 0;
  h.checkpoint("paused");
  assert.deepEqual(h.stops, ["stopped", "running"]);
  // Resumed before the reply: running at once, the flush when the reply decides it.
  h.stops.length = 0;
  h.event("STOP");
  h.event("RESUME");
  h.reply("query-status", { status: "colo" });
  assert.deepEqual(h.stops, ["stopped", "running", "checkpoint-done"]);
  // A monitor lost during a stop would never show its RESUME.
  h.stops.length = 0;
  h.event("STOP");
  h.session.detach();
  assert.deepEqual(h.stops, ["stopped", "running"]);
  h.stops.length = 0;
  h.session.detach();
  assert.deepEqual(h.stops, [], "nothing to end when no stop was open");
});

Deno.test("qmp session: a user's stop (run state paused) and cont flush nothing", () => {
  const h = new Harness();
  h.connect();
  h.checkpoint("paused");
  assert.deepEqual(h.happened, []);
  assert.equal(h.logged("qmp-stop-not-checkpoint").length, 1);
});

Deno.test("qmp session: a repeated STOP sends one query-status", () => {
  const h = new Harness();
  h.connect();
  h.event("STOP");
  h.event("STOP");
  assert.deepEqual(executes(h.sent), ["query-status"]);
  h.reply("query-status", { status: "colo" });
  h.event("RESUME");
  assert.deepEqual(h.happened, ["checkpoint-done"]);
});

Deno.test("qmp session: RESUME before the query-status reply is decided when the reply comes", async (t) => {
  await t.step("colo: a checkpoint, done at the reply", () => {
    const h = new Harness();
    h.connect();
    h.event("STOP");
    h.event("RESUME");
    assert.deepEqual(h.happened, [], "undecided at RESUME");
    h.reply("query-status", { status: "colo" });
    assert.deepEqual(h.happened, ["checkpoint-done"]);
  });
  await t.step("paused: a user's stop, nothing", () => {
    const h = new Harness();
    h.connect();
    h.event("STOP");
    h.event("RESUME");
    h.reply("query-status", { status: "paused" });
    assert.deepEqual(h.happened, []);
  });
  await t.step(
    "running while COLO is active: the monitor was busy all through a checkpoint",
    () => {
      const h = new Harness();
      h.connect("primary");
      h.event("STOP");
      h.event("RESUME");
      h.reply("query-status", { status: "running" });
      assert.deepEqual(h.happened, ["checkpoint-done"]);
    },
  );
  await t.step("running while COLO is not active: no checkpoint is possible, nothing", () => {
    const h = new Harness();
    h.connect("none");
    h.event("STOP");
    h.event("RESUME");
    h.reply("query-status", { status: "running" });
    assert.deepEqual(h.happened, []);
  });
  await t.step("an error reply counts as undetermined", () => {
    const h = new Harness();
    h.connect("primary");
    h.event("STOP");
    h.event("RESUME");
    h.fail("query-status", "GenericError", "oops");
    assert.deepEqual(h.happened, ["checkpoint-done"]);
  });
});

Deno.test("qmp session: two stops resumed before their replies are each decided by their own", () => {
  const h = new Harness();
  h.connect("none"); // no COLO: "running" would not count
  h.event("STOP");
  h.event("RESUME");
  h.event("STOP");
  h.event("RESUME");
  const [first, second] = h.sent.filter((c) => c.execute === "query-status").map((c) => c.id);
  h.line({ return: { status: "colo" }, id: first });
  assert.deepEqual(h.happened, ["checkpoint-done"], "the first was a checkpoint");
  h.line({ return: { status: "paused" }, id: second });
  assert.deepEqual(h.happened, ["checkpoint-done"], "the second a user's stop");
});

Deno.test("qmp session: MIGRATION_PASS marks a checkpoint without waiting for query-status", () => {
  const h = new Harness();
  h.connect();
  h.event("STOP");
  h.event("MIGRATION_PASS", { pass: 3 });
  h.event("RESUME");
  assert.deepEqual(h.happened, ["checkpoint-done"], "decided at RESUME");
  h.reply("query-status", { status: "running" });
  assert.deepEqual(h.happened, ["checkpoint-done"], "the late reply adds nothing");
  h.event("MIGRATION_PASS", { pass: 4 });
  h.event("RESUME");
  assert.deepEqual(h.happened, ["checkpoint-done"], "a pass outside a stop is no checkpoint");
});

Deno.test("qmp session: connected in the middle of a checkpoint, its RESUME flushes", () => {
  const h = new Harness();
  h.connect("primary", 20000, "colo");
  h.event("RESUME");
  assert.deepEqual(h.happened, ["checkpoint-done"]);
});

Deno.test("qmp session: COLO_EXIT passes through; MIGRATION colo compares again", () => {
  const h = new Harness();
  h.connect("primary");
  h.event("COLO_EXIT", { mode: "primary", reason: "error" });
  assert.deepEqual(h.happened, ["colo-exit: COLO_EXIT mode=primary reason=error"]);
  h.event("COLO_EXIT", { mode: "primary", reason: "error" });
  assert.equal(h.happened.length, 1, "one transition, one event");
  h.event("MIGRATION", { status: "active" });
  h.event("MIGRATION", { status: "completed" });
  assert.equal(h.happened.length, 1);
  h.event("MIGRATION", { status: "colo" });
  assert.deepEqual(h.happened.slice(1), ["colo-active"]);
  h.event("MIGRATION", { status: "colo" });
  assert.equal(h.happened.length, 2);
  assert.equal(h.logged("colo-inactive").length, 1);
  assert.equal(h.logged("colo-active").filter((l) => l.includes("level=warn")).length, 1);
});

Deno.test("qmp session: COLO flapping logs its first transitions, then counts them", () => {
  const h = new Harness();
  h.connect("primary");
  for (let i = 0; i < 100; i++) {
    h.event("COLO_EXIT", { mode: "primary", reason: "error" });
    h.event("MIGRATION", { status: "colo" });
  }
  // Every transition still takes effect; only the log is bounded.
  assert.equal(h.happened.length, 200);
  assert.equal(h.happened.at(-1), "colo-active");
  const warned = (event: string) => h.logged(event).filter((l) => l.includes("level=warn"));
  assert.equal(warned("colo-inactive").length, COLO_LOG_BURST);
  assert.equal(warned("colo-active").length, COLO_LOG_BURST);
  h.now += COLO_LOG_INTERVAL_MS / 2;
  h.session.tick(h.now);
  assert.equal(warned("colo-inactive").length, COLO_LOG_BURST, "no summary before the interval");
  h.now += COLO_LOG_INTERVAL_MS / 2;
  h.session.tick(h.now);
  assert.match(warned("colo-inactive").at(-1)!, / suppressed=95 /);
  assert.match(warned("colo-active").at(-1)!, / suppressed=95 /);
  // A later exit, past the interval, is logged again.
  h.now += COLO_LOG_INTERVAL_MS;
  h.event("COLO_EXIT", { mode: "primary", reason: "heartbeat" });
  assert.match(warned("colo-inactive").at(-1)!, /reason=heartbeat/);
});

Deno.test("qmp session: values nested deeper than the stack allows are logged as such, never thrown", () => {
  const deep = (d: number) => JSON.parse("[".repeat(d) + "]".repeat(d));
  const h = new Harness();
  h.session.attach(h.now);
  const greeting = JSON.parse(GREETING);
  greeting.QMP.version.qemu.major = deep(200_000);
  greeting.QMP.version.package = deep(200_000);
  h.line(greeting);
  // Shown bounded (String() of such a value would overflow the stack).
  assert.match(h.logged("qmp-greeting")[0], /qemu=\[{200}\.\.\.\.2\.22 package=\[{200}\.\.\./);
  h.reply("qmp_capabilities", {});
  h.reply("query-migrate-parameters", { "x-checkpoint-delay": 100 });
  h.reply("query-status", { status: "running" });
  h.line({ return: { mode: "none", reason: deep(200_000) }, id: h.idOf("query-colo-status") });
  h.event("MIGRATION", { status: "colo" });
  h.event("COLO_EXIT", { mode: deep(200_000), reason: deep(200_000) });
  h.line({ return: {}, id: deep(200_000) });
  h.line({ error: { class: "GenericError", desc: deep(200_000) }, id: h.idOf("query-status") });
  assert.deepEqual(h.drops, []);
  assert.deepEqual(h.logs.filter((l) => / level=error /.test(l)), []);
  const exit = h.happened.findLast((e) => e.startsWith("colo-exit: "));
  assert.match(exit!, /^colo-exit: COLO_EXIT mode=\[{200}\.\.\. reason=\[{200}\.\.\.$/);
});

Deno.test("qmp session: after COLO_EXIT a stale mode primary is not taken for COLO back", () => {
  // Measured on QEMU 7.2: the secondary lost, the primary says COLO_EXIT and then goes on
  // reporting mode primary / status colo until failover (x-colo-lost-heartbeat).
  const h = new Harness();
  h.connect("primary");
  h.event("COLO_EXIT", { mode: "primary", reason: "error" });
  const poll = (r: Json) => {
    h.sent.length = 0;
    h.now += POLL_INTERVAL_MS;
    h.session.tick(h.now);
    assert.deepEqual(executes(h.sent), ["query-colo-status"], "polled while not active");
    h.reply("query-colo-status", r);
  };
  poll({ mode: "primary", "last-mode": "none", reason: "none" });
  poll({ mode: "primary", "last-mode": "none", reason: "none" });
  assert.equal(h.session.colo, "inactive", "still passing through");
  assert.deepEqual(h.happened, ["colo-exit: COLO_EXIT mode=primary reason=error"]);
  assert.equal(h.logged("qmp-colo-stale").length, 1, "said once, not per poll");
  // The operator fails over: COLO is left for good; a new migration brings it back.
  poll({ mode: "none", "last-mode": "primary", reason: "request" });
  assert.equal(h.happened.length, 1, "already inactive");
  poll({ mode: "primary", "last-mode": "primary", reason: "none" });
  assert.deepEqual(h.happened.slice(1), ["colo-active"]);
  // With the events capability, the MIGRATION event says so at once.
  h.event("COLO_EXIT", { mode: "primary", reason: "error" });
  h.event("MIGRATION", { status: "colo" });
  assert.deepEqual(h.happened.slice(2), [
    "colo-exit: COLO_EXIT mode=primary reason=error",
    "colo-active",
  ]);
});

Deno.test("qmp session: run state colo alone does not end the passthrough (failover uses it too)", () => {
  // Measured on QEMU 7.2: x-colo-lost-heartbeat after the secondary died shows as STOP (run
  // state colo), MIGRATION completed, RESUME; COLO is over, not back.
  const h = new Harness();
  h.connect("primary");
  h.event("COLO_EXIT", { mode: "primary", reason: "error" });
  h.event("STOP");
  h.event("MIGRATION", { status: "completed" });
  h.reply("query-status", { status: "colo" });
  h.event("RESUME");
  assert.deepEqual(h.happened, [
    "colo-exit: COLO_EXIT mode=primary reason=error",
    "checkpoint-done",
  ]);
  assert.equal(h.session.colo, "inactive");
});

Deno.test("qmp session: without query-colo-status, COLO's state is polled by query-migrate", () => {
  const h = new Harness();
  h.negotiate();
  h.fail(
    "query-colo-status",
    "CommandNotFound",
    "The command query-colo-status has not been found",
  );
  assert.equal(h.sent.at(-1)!.execute, "query-migrate");
  h.reply("query-migrate", {});
  assert.equal(h.session.colo, "inactive", "no migration at all");
  h.now += POLL_INTERVAL_MS;
  h.session.tick(h.now);
  assert.equal(h.sent.at(-1)!.execute, "query-migrate");
  h.reply("query-migrate", { status: "colo" });
  assert.equal(h.session.colo, "active");
  assert.deepEqual(h.happened.slice(-1), ["colo-active"]);
});

Deno.test("qmp session: the monitor's own secondary is named, never taken for the primary", () => {
  const h = new Harness();
  h.negotiate();
  h.reply("query-colo-status", { mode: "secondary", "last-mode": "none", reason: "none" });
  assert.equal(h.session.colo, "unknown");
  assert.match(h.logged("qmp-wrong-peer")[0], /level=error .*primary/);
});

Deno.test("qmp session: error replies are logged once per class and release the request", () => {
  const h = new Harness();
  h.connect();
  for (let i = 0; i < 3; i++) {
    assert.equal(h.session.request(h.now), true);
    h.fail("query-migrate-parameters", "GenericError", "busy");
  }
  assert.equal(h.logged("qmp-error").length, 1, "once per class");
  assert.equal(h.session.request(h.now), true);
  h.reply("query-migrate-parameters", { "x-checkpoint-delay": 100 });
  h.fail("migrate-set-parameters", "GenericError", "Parameter 'x-checkpoint-delay' expects...");
  assert.equal(h.logged("qmp-error").length, 2, "another command is another class");
  h.take();
  assert.equal(h.session.request(h.now), true);
  assert.deepEqual(executes(h.sent), ["query-migrate-parameters"], "a failed request is retried");
  h.reply("query-migrate-parameters", { "max-bandwidth": 1 });
  assert.equal(h.logged("qmp-no-checkpoint-delay").length, 1, "a monitor without it is named");
  assert.deepEqual(
    h.sent[1],
    {
      execute: "migrate-set-parameters",
      arguments: { "x-checkpoint-delay": 100 },
      id: h.sent[1].id,
    },
    "the request still goes out, with the value last read",
  );
  // Repeats are summarised, not logged a line each.
  h.session.detach(true);
  assert.match(
    h.logged("qmp-repeated")[0],
    /class=error:query-migrate-parameters:GenericError count=2/,
  );
  assert.deepEqual(h.drops, []);
});

Deno.test("qmp session: an x-checkpoint-delay beyond QEMU's uint32 is not written back; the last one read is", () => {
  const h = new Harness();
  h.connect();
  for (
    const [reply, sent] of [[2000, 2000], [1e308, 2000], [2 ** 32, 2000], [
      2 ** 32 - 1,
      2 ** 32 - 1,
    ]]
  ) {
    assert.equal(h.session.request(h.now), true);
    h.reply("query-migrate-parameters", { "x-checkpoint-delay": reply });
    assert.deepEqual(h.sent.at(-1)!.arguments, { "x-checkpoint-delay": sent }, `after ${reply}`);
    h.reply("migrate-set-parameters", {});
    h.checkpoint();
  }
  assert.equal(h.logged("qmp-no-checkpoint-delay").length, 1);
});

Deno.test("qmp session: garbage, unknown messages, unknown events and stray replies change nothing", () => {
  const h = new Harness();
  h.connect();
  for (let i = 0; i < 3; i++) {
    h.line("this is not json");
    h.line("[1, 2, 3]");
    h.line('{"hello": "world"}');
    h.event("RTC_CHANGE", { offset: 1 });
    h.event("NIC_RX_FILTER_CHANGED");
    h.line({ return: {}, id: 999 });
    h.line({ return: {}, id: "not ours" });
    h.line("");
  }
  assert.deepEqual(h.happened, []);
  assert.deepEqual(h.drops, []);
  assert.deepEqual(h.sent, []);
  assert.equal(h.logged("qmp-garbage").length, 1);
  assert.equal(h.logged("qmp-unknown-message").length, 1);
  assert.equal(h.logged("qmp-unexpected-reply").length, 1);
  assert.equal(h.logged("qmp-event-ignored").length, 2, "once per event name");
  assert.equal(h.session.ready, true);
  h.checkpoint();
  assert.deepEqual(h.happened, ["checkpoint-done"], "still works after all that");
});

Deno.test("qmp session: classes of oddities named by the peer are bounded", () => {
  const h = new Harness();
  h.connect();
  for (let i = 0; i < 10_000; i++) h.event(`MADE_UP_${i}`);
  const lines = h.logged("qmp-event-ignored").length;
  assert.ok(lines <= MAX_NOTE_CLASSES + 1, `${lines} lines for 10000 event names`);
  h.session.detach(true);
  assert.match(h.logged("qmp-repeated").at(-1)!, /class=other count=\d+/);
});

Deno.test("qmp session: an error class or event name of 900 KiB is logged and kept in bounded form", () => {
  const h = new Harness();
  h.connect();
  const huge = "X".repeat(900 * 1024);
  for (let i = 0; i < 3; i++) {
    assert.equal(h.session.request(h.now), true);
    h.fail("query-migrate-parameters", `${huge}${i}`, "busy");
    h.event(`${huge}${i}`);
  }
  const lines = [...h.logged("qmp-error"), ...h.logged("qmp-event-ignored")];
  assert.equal(lines.length, 2, "the classes differ past what is kept of them: one each");
  for (const l of lines) assert.ok(l.length < 1000, `a line of ${l.length} bytes`);
  h.session.detach(true);
  for (const l of h.logged("qmp-repeated")) assert.ok(l.length < 1000, `a line of ${l.length}`);
});

Deno.test("qmp session: a peer that comes back at once gets no summary per connection; the interval holds across them", () => {
  const h = new Harness();
  for (let i = 0; i < 100; i++) {
    h.connect();
    for (let k = 0; k < 3; k++) h.event(`MADE_UP_${k}`);
    h.now += 100;
    h.session.tick(h.now);
    h.session.detach();
  }
  assert.equal(h.logged("qmp-event-ignored").length, 3, "each class logged once, ever");
  assert.deepEqual(h.logged("qmp-repeated"), [], "none within the interval");
  h.connect();
  h.now += SUMMARY_INTERVAL_MS;
  h.session.tick(h.now);
  assert.equal(h.logged("qmp-repeated").length, 3, "one line per class once it is over");
  assert.match(h.logged("qmp-repeated")[0], /class=event:MADE_UP_0 count=99$/);
  h.event("MADE_UP_0");
  h.session.detach(true);
  assert.match(h.logged("qmp-repeated").at(-1)!, /class=event:MADE_UP_0 count=1$/, "closing: now");
});

Deno.test("qmp session: lines split at every byte boundary are read whole", () => {
  const text = new TextEncoder().encode(
    GREETING + "\r\n" + JSON.stringify({ return: {}, id: 1 }) + "\r\n" +
      JSON.stringify({ event: "STOP" }) + "\n",
  );
  for (let cut = 0; cut <= text.length; cut++) {
    for (const step of [1, 7, text.length]) {
      const h = new Harness();
      h.session.attach(h.now);
      const parts = [text.subarray(0, cut)];
      for (let o = cut; o < text.length; o += step) parts.push(text.subarray(o, o + step));
      for (const p of parts) h.session.push(p, h.now);
      assert.deepEqual(
        executes(h.sent),
        [
          "qmp_capabilities",
          "query-migrate-parameters",
          "query-status",
          "query-colo-status",
          "query-status",
        ],
        `cut at ${cut}, step ${step}`,
      );
      assert.deepEqual(h.drops, []);
    }
  }
});

Deno.test("qmp session: a line longer than 1 MiB drops the connection", () => {
  const h = new Harness();
  h.connect();
  const chunk = new Uint8Array(64 * 1024).fill(0x20);
  for (let i = 0; i < MAX_LINE_BYTES / chunk.length; i++) h.session.push(chunk, h.now);
  assert.deepEqual(h.drops, [], "exactly 1 MiB still fits");
  h.session.push(new Uint8Array([0x20]), h.now);
  assert.deepEqual(h.drops, [`a line longer than ${MAX_LINE_BYTES} bytes`]);
});

Deno.test("qmp session: a monitor that stops answering is dropped", () => {
  const h = new Harness();
  h.connect();
  h.session.request(h.now);
  h.now += REPLY_TIMEOUT_MS;
  h.session.tick(h.now);
  assert.deepEqual(h.drops, []);
  h.now += 1;
  h.session.tick(h.now);
  assert.deepEqual(h.drops, [`no reply to query-migrate-parameters within ${REPLY_TIMEOUT_MS} ms`]);
  const g = new Harness();
  g.session.attach(g.now);
  g.now += REPLY_TIMEOUT_MS + 1;
  g.session.tick(g.now);
  assert.deepEqual(g.drops, [`no QMP greeting and capabilities within ${REPLY_TIMEOUT_MS} ms`]);
});

Deno.test("qmp session: a disconnect forgets the open stop and the request, keeps COLO's state", () => {
  const h = new Harness();
  h.connect("primary");
  h.event("COLO_EXIT", { mode: "primary", reason: "error" });
  h.session.request(h.now);
  h.event("STOP");
  h.reply("query-status", { status: "colo" });
  h.happened.length = 0;
  h.session.detach();
  assert.deepEqual(h.happened, ["peer false"]);
  assert.equal(h.session.ready, false);
  assert.equal(h.session.request(h.now), false, "no request while disconnected");
  assert.equal(h.session.colo, "inactive");
  h.connect("primary");
  assert.equal(h.session.colo, "inactive", "after COLO_EXIT, mode primary is stale");
  h.event("RESUME");
  assert.deepEqual(h.happened, [], "a RESUME whose STOP came on another connection");
  assert.equal(h.session.request(h.now), true, "the old request does not block a new one");
  assert.deepEqual(executes(h.sent), ["query-migrate-parameters"]);
});

Deno.test("qmp session: a monitor that answers {} to every query keeps comparing and its STOP/RESUME flushes", () => {
  const h = new Harness();
  h.negotiate();
  h.reply("query-migrate-parameters", {});
  h.reply("query-status", {});
  h.reply("query-colo-status", {});
  assert.deepEqual(
    h.happened,
    ["peer true"],
    "no mode in the reply: comparing is not switched off",
  );
  assert.equal(h.logged("qmp-unexpected-reply").length, 1);
  h.happened.length = 0;
  h.event("STOP");
  h.reply("query-status", {});
  h.event("RESUME");
  assert.deepEqual(h.happened, ["checkpoint-done"]);
  h.happened.length = 0;
  h.event("STOP");
  h.reply("query-status", { status: "paused", running: false });
  h.event("RESUME");
  assert.deepEqual(h.happened, [], "an explicit paused stop still flushes nothing");
  h.take();
  assert.equal(h.session.request(h.now), true);
  h.reply("query-migrate-parameters", {});
  assert.deepEqual(h.sent.map((c) => [c.execute, c.arguments]), [
    ["query-migrate-parameters", undefined],
    ["migrate-set-parameters", { "x-checkpoint-delay": DEFAULT_CHECKPOINT_DELAY_MS }],
  ], "the request goes out with QEMU's default when no value was ever read");
});

Deno.test("qmp session: a watching session (--qmp-secondary) reports STOP and RESUME and sends nothing after the capabilities", () => {
  const seen: string[] = [];
  const h = new Harness({
    stopped: () => seen.push("stopped"),
    resumed: () => seen.push("resumed"),
  });
  h.negotiate();
  assert.deepEqual(executes(h.take()), ["qmp_capabilities"], "no queries once ready");
  assert.deepEqual(h.happened, ["peer true"]);
  assert.equal(h.logged("qmp-ready")[0].includes("monitor=secondary"), true);
  h.event("STOP");
  h.event("MIGRATION_PASS", { pass: 3 });
  h.event("RESUME");
  h.event("COLO_EXIT", { mode: "secondary", reason: "error" });
  assert.deepEqual(seen, ["stopped", "resumed"]);
  assert.deepEqual(h.happened, ["peer true"], "no checkpoint decided, no COLO state change");
  assert.equal(h.session.request(h.now), false, "a watching session takes no request");
  h.now += 10 * POLL_INTERVAL_MS;
  h.session.tick(h.now);
  assert.deepEqual(h.take(), [], "never polls");
  assert.deepEqual(h.drops, []);
});
