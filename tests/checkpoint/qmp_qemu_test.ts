/**
 * The QMP channel against a real QEMU 7.2 monitor (no guest, `-machine none`): the greeting,
 * `qmp_capabilities` and the queries have the shape the session expects, a request writes back
 * the delay just read, and a user's `stop`/`cont` is no checkpoint. Real COLO checkpoints need
 * two VMs: the lab proves those. Skips, saying so, where QEMU is not installed.
 */

import assert from "node:assert/strict";
import type { ChannelEvents } from "../../src/checkpoint/channel.ts";
import { QmpChannel } from "../../src/checkpoint/qmp.ts";
import { Logger } from "../../src/log.ts";
import { parseAddress } from "../../src/wire/address.ts";
import { Endpoint } from "../../src/wire/endpoint.ts";
import { PlainTransport } from "../../src/wire/plain.ts";
import { qemuAvailable, qemuBinary, qemuVersion } from "../conformance/impl.ts";
import { connectUnixRetry } from "../support/net.ts";

const haveQemu = await qemuAvailable();

/** A second monitor on the same QEMU, for the test to play the operator. */
class Operator {
  readonly #conn: Deno.Conn;
  #rest = "";
  readonly #buf = new Uint8Array(65536);
  #id = 0;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  async #line(): Promise<Record<string, unknown>> {
    while (true) {
      const nl = this.#rest.indexOf("\n");
      if (nl >= 0) {
        const line = this.#rest.slice(0, nl);
        this.#rest = this.#rest.slice(nl + 1);
        return JSON.parse(line);
      }
      const n = await this.#conn.read(this.#buf);
      if (n === null) throw new Error("QEMU closed the operator's monitor");
      this.#rest += new TextDecoder().decode(this.#buf.subarray(0, n));
    }
  }

  /** Runs a command and returns its reply (events on this monitor are skipped). */
  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const id = ++this.#id;
    const text = JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id });
    await this.#conn.write(new TextEncoder().encode(text + "\n"));
    while (true) {
      const msg = await this.#line();
      if (msg.id !== id) continue;
      if ("error" in msg) throw new Error(`${command}: ${JSON.stringify(msg.error)}`);
      return msg.return;
    }
  }

  static async open(path: string): Promise<Operator> {
    const op = new Operator(await connectUnixRetry(path));
    await op.#line(); // greeting
    await op.execute("qmp_capabilities");
    return op;
  }

  close(): void {
    this.#conn.close();
  }
}

Deno.test({
  name: `qmp channel vs QEMU 7.2: greeting, capabilities, queries, a request, a user's stop${
    haveQemu ? "" : " (skipped: qemu-system-x86_64 not on PATH)"
  }`,
  ignore: !haveQemu,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "qmp-qemu-" });
    const qemu = new Deno.Command(qemuBinary(), {
      args: [
        ...["-machine", "none", "-nodefaults", "-display", "none"],
        ...["-monitor", "none", "-serial", "none"],
        ...["-qmp", `unix:${dir}/compare.sock,server=on,wait=off`],
        ...["-qmp", `unix:${dir}/operator.sock,server=on,wait=off`],
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const logs: string[] = [];
    const happened: string[] = [];
    let wake = () => {};
    const log = new Logger("debug", (l) => {
      logs.push(l);
      wake();
    });
    const until = async (re: RegExp) => {
      const deadline = setTimeout(() => wake(), 10_000);
      try {
        const start = performance.now();
        while (!logs.some((l) => re.test(l))) {
          if (performance.now() - start > 10_000) throw new Error(`no ${re}:\n${logs.join("\n")}`);
          await new Promise<void>((r) => wake = r);
        }
        return logs.find((l) => re.test(l))!;
      } finally {
        clearTimeout(deadline);
      }
    };
    const events: ChannelEvents = {
      checkpointDone: () => happened.push("checkpoint-done"),
      coloExit: (reason) => happened.push(`colo-exit: ${reason}`),
      coloActive: () => happened.push("colo-active"),
      vmStopped: () => {},
      peer: (connected) => happened.push(`peer ${connected}`),
    };
    const channel = new QmpChannel(
      new Endpoint("qmp", parseAddress(`unix:${dir}/compare.sock`), new PlainTransport(), log),
      events,
      log,
    );
    let operator: Operator | null = null;
    let serving: Promise<void> | null = null;
    try {
      operator = await Operator.open(`${dir}/operator.sock`);
      await operator.execute("migrate-set-parameters", { "x-checkpoint-delay": 3333 });
      await channel.bind();
      serving = channel.serve();
      // The version the monitor greets with is the binary's own (7.2, or COLO_QEMU's).
      const version = (await qemuVersion()).match(/version (\d+\.\d+\.\d+)/)![1];
      assert.match(await until(/event=qmp-greeting/), new RegExp(`qemu=${version} package=`));
      await until(/event=colo-inactive/);
      assert.equal(channel.connected, true);
      assert.deepEqual(happened, [
        "peer true",
        "colo-exit: query-colo-status mode=none last-mode=none reason=none",
      ]);
      assert.match(logs.find((l) => /event=qmp-checkpoint-delay/.test(l))!, /ms=3333/);
      // The operator changes the delay; the request writes back what it reads now.
      await operator.execute("migrate-set-parameters", { "x-checkpoint-delay": 4444 });
      assert.equal(channel.request(), true);
      assert.match(await until(/event=qmp-checkpoint-requested/), /x_checkpoint_delay=4444/);
      const params = await operator.execute("query-migrate-parameters") as Record<string, unknown>;
      assert.equal(params["x-checkpoint-delay"], 4444, "the operator's value is kept");
      // A user's stop and cont: STOP in run state paused, no checkpoint.
      await operator.execute("stop");
      // No event says the channel's query-status was answered: look, briefly, until it was.
      for (let i = 0; channel.session.runState !== "paused"; i++) {
        assert.ok(i < 500, `run state ${channel.session.runState}`);
        await new Promise((r) => setTimeout(r, 10));
      }
      await operator.execute("cont");
      await until(/event=qmp-stop-not-checkpoint run_state=paused/);
      assert.ok(!happened.includes("checkpoint-done"), happened.join(", "));
      assert.ok(!logs.some((l) => /level=(warn|error) event=qmp-/.test(l)), logs.join("\n"));
    } finally {
      channel.close();
      await serving;
      operator?.close();
      qemu.kill("SIGTERM");
      await qemu.status;
      await Deno.remove(dir, { recursive: true });
    }
  },
});
