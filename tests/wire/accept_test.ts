import assert from "node:assert/strict";
import { AcceptFailures, lostBeforeAccept } from "../../src/wire/accept.ts";
import { Logger } from "../../src/log.ts";
import { resetConnections } from "../support/net.ts";

function recorder(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: new Logger("debug", (line) => lines.push(line)), lines };
}

Deno.test("accept: a connection reset before it was taken fails Deno's accept with NotConnected", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    // Nothing accepts while the connection is made and reset: it waits in the listen queue.
    await resetConnections(listener.addr.port, 1);
    await assert.rejects(listener.accept(), (e) => lostBeforeAccept(e));
  } finally {
    listener.close();
  }
});

Deno.test("accept: a connection lost before accept costs no pause and a line per interval", () => {
  const { log, lines } = recorder();
  const failures = new AcceptFailures(log, { endpoint: "primary-in" });
  for (let i = 0; i < 1000; i++) {
    assert.equal(failures.failed(new Deno.errors.NotConnected("gone")), 0);
  }
  assert.equal(lines.length, 1);
  assert.match(lines[0], /level=warn event=peer-lost-before-accept endpoint=primary-in/);
});

Deno.test("accept: a listener that cannot accept pauses 100 ms doubling to 1 s, then afresh", () => {
  const { log, lines } = recorder();
  const failures = new AcceptFailures(log, { endpoint: "monitor" });
  const emfile = () => failures.failed(new Error("Too many open files (os error 24)"));
  assert.deepEqual([emfile(), emfile(), emfile(), emfile(), emfile(), emfile()], [
    100,
    200,
    400,
    800,
    1000,
    1000,
  ]);
  failures.accepted();
  assert.equal(emfile(), 100);
  assert.equal(lines.length, 1, "one line per interval");
  assert.match(lines[0], /level=warn event=accept-failed endpoint=monitor .*retry_ms=100/);
});
