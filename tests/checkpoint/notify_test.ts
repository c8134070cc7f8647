import assert from "node:assert/strict";
import {
  CheckpointRequests,
  classifyNotify,
  describeMessage,
} from "../../src/checkpoint/notify.ts";

const bytes = (s: string) => new TextEncoder().encode(s);

Deno.test("notify: messages match by exact length and bytes", () => {
  assert.equal(classifyNotify(bytes("COLO_CHECKPOINT")), "checkpoint");
  assert.equal(classifyNotify(bytes("COLO_USERSPACE_PROXY_INIT")), "proxy-init");
  assert.equal(classifyNotify(bytes("COLO_CHECKPOINT\0")), "unknown", "no NUL terminator");
  assert.equal(classifyNotify(bytes("COLO_CHECKPOIN")), "unknown", "no prefix match");
  assert.equal(classifyNotify(bytes("colo_checkpoint")), "unknown");
  assert.equal(classifyNotify(new Uint8Array(0)), "unknown");
});

Deno.test("notify: unknown messages are rendered printable for the log", () => {
  assert.equal(describeMessage(bytes("HELLO\n")), "HELLO\\x0a");
  assert.equal(describeMessage(new Uint8Array(100).fill(65)).length, 67);
});

Deno.test("notify: one request per epoch, coalescing until COLO_CHECKPOINT", () => {
  const r = new CheckpointRequests(3000);
  assert.equal(r.request(0), true, "the first need sends DO_CHECKPOINT");
  assert.equal(r.request(10), false, "further needs in the epoch are coalesced");
  assert.equal(r.request(2999), false);
  assert.equal(r.outstanding, true);
  r.done();
  assert.equal(r.outstanding, false);
  assert.equal(r.request(3000), true, "a new epoch, a new request");
});

Deno.test("notify: a request is repeated when no checkpoint came within compare-timeout", () => {
  const r = new CheckpointRequests(3000);
  assert.equal(r.request(100), true);
  assert.equal(r.request(3099), false);
  assert.equal(r.request(3100), true, "the controller missed it: ask again");
  assert.equal(r.request(3200), false);
});
