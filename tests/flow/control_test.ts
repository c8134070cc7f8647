import assert from "node:assert/strict";
import type { Side } from "../../src/compare/packet.ts";
import { FlowControl, heldMarks, type PauseReason } from "../../src/flow/control.ts";

function flow(
  lead = { leadHigh: 10_000, leadLow: 5_000 },
): { f: FlowControl; events: [Side, boolean, PauseReason][] } {
  const events: [Side, boolean, PauseReason][] = [];
  const f = new FlowControl({ high: 100, low: 50, ...lead }, (side, paused, reason) => {
    events.push([side, paused, reason]);
  });
  f.peer("primary", true);
  f.peer("secondary", true);
  return { f, events };
}

Deno.test("flow: a congested outdev pauses both inputs together, and its drain resumes both", () => {
  const { f, events } = flow();
  f.outdev(true);
  assert.deepEqual(events, [
    ["primary", true, "outdev-congested"],
    ["secondary", true, "outdev-congested"],
  ]);
  assert.ok(f.paused("primary") && f.paused("secondary"));
  f.outdev(false);
  assert.deepEqual(events.slice(2), [
    ["primary", false, "outdev-congested"],
    ["secondary", false, "outdev-congested"],
  ]);
});

Deno.test("flow: a side above the high mark pauses alone until below the low mark", () => {
  const { f, events } = flow();
  f.held(100, 0);
  assert.equal(events.length, 0, "at the mark is not above it");
  f.held(101, 0);
  assert.deepEqual(events, [["primary", true, "held-bytes"]]);
  assert.equal(f.paused("secondary"), false);
  f.held(60, 0);
  assert.equal(f.paused("primary"), true, "hysteresis: still above the low mark");
  f.held(49, 0);
  assert.deepEqual(events[1], ["primary", false, "held-bytes"]);
});

Deno.test("flow: the held pause holds whether or not the other side is connected", () => {
  const { f } = flow();
  f.peer("secondary", false);
  f.held(0, 0);
  f.held(500, 0);
  assert.equal(f.paused("primary"), true);
  f.peer("secondary", true);
  assert.equal(f.paused("primary"), true);
  f.peer("secondary", false);
  assert.equal(f.paused("primary"), true, "the other side leaving does not resume it");
  f.held(0, 0);
  assert.equal(f.paused("primary"), false, "a checkpoint that empties the queues does");
});

Deno.test("flow: an input without a peer is not paused; a new peer starts paused if it must", () => {
  const { f, events } = flow();
  f.outdev(true);
  f.peer("primary", false);
  assert.equal(f.paused("primary"), false);
  assert.deepEqual(events.at(-1), ["primary", false, "outdev-congested"]);
  f.peer("primary", true);
  assert.equal(f.paused("primary"), true);
});

Deno.test("flow: outdev draining leaves a side paused that still holds too much", () => {
  const { f, events } = flow();
  f.held(0, 200);
  f.outdev(true);
  f.outdev(false);
  assert.equal(f.paused("primary"), false);
  assert.equal(f.paused("secondary"), true);
  assert.equal(f.reason("secondary"), "held-bytes");
  assert.deepEqual(events, [
    ["secondary", true, "held-bytes"],
    ["primary", true, "outdev-congested"],
    ["secondary", true, "outdev-congested"], // still paused, for a new reason
    ["primary", false, "outdev-congested"],
    ["secondary", true, "held-bytes"],
  ]);
});

Deno.test("flow: held marks are a quarter and an eighth of the budget; the lead a few reads", () => {
  assert.deepEqual(heldMarks(256 * 2 ** 20), {
    high: 64 * 2 ** 20,
    low: 32 * 2 ** 20,
    leadHigh: 2 ** 20,
    leadLow: 2 ** 19,
  });
  const small = heldMarks(2 ** 20);
  assert.ok(small.leadHigh <= small.low && small.leadLow < small.leadHigh);
});

Deno.test("flow: a side that runs ahead pauses while the other catches up", () => {
  const { f, events } = flow({ leadHigh: 20, leadLow: 10 });
  f.held(21, 0);
  assert.deepEqual(events, [["primary", true, "ahead"]]);
  f.held(15, 0);
  assert.equal(f.paused("primary"), true, "hysteresis");
  f.held(9, 0);
  assert.deepEqual(events[1], ["primary", false, "ahead"]);
});

Deno.test("flow: never ahead of an absent side: the lead pause ends when the other side leaves", () => {
  const { f, events } = flow({ leadHigh: 20, leadLow: 10 });
  f.held(0, 30);
  assert.equal(f.paused("secondary"), true);
  f.peer("primary", false);
  assert.equal(f.paused("secondary"), false);
  assert.deepEqual(events.at(-1), ["secondary", false, "ahead"]);
  f.peer("primary", true);
  assert.equal(f.paused("secondary"), true);
});

Deno.test("flow: both sides ahead never pause both: one reads on", () => {
  const { f } = flow({ leadHigh: 20, leadLow: 10 });
  f.held(30, 30);
  assert.notEqual(f.paused("primary"), f.paused("secondary"));
  // The paused one catches up no more; the other reads and matches its frames.
  f.held(5, 30);
  assert.equal(f.paused("primary"), false);
  assert.equal(f.paused("secondary"), true, "now the secondary is the one ahead");
});

Deno.test("flow: a side that runs ahead while the other is paused for its lead pauses, and the other reads on", () => {
  const { f } = flow({ leadHigh: 20, leadLow: 10 });
  f.held(30, 0); // the primary ahead, on frames the secondary may never send
  assert.equal(f.paused("primary"), true);
  // The secondary, reading on, runs ahead too: kept paused, the primary could never catch up
  // with it, and its queue overflowed.
  f.held(30, 30);
  assert.equal(f.paused("secondary"), true);
  assert.equal(f.reason("secondary"), "ahead");
  assert.equal(f.paused("primary"), false, "the primary catches up");
  f.held(30, 5);
  assert.equal(f.paused("secondary"), false);
  assert.equal(f.paused("primary"), true, "ahead again, and the other reads");
});

Deno.test("flow: of two sides ahead, one long only where nothing matched reads on; the other, long where frames matched, pauses", () => {
  const { f } = flow({ leadHigh: 20, leadLow: 10 });
  f.held(0, 0, "none", "matched"); // the secondary ahead on a connection both send on
  assert.equal(f.paused("secondary"), true);
  // A one-sided burst makes the primary long too, later: paused for it, the primary would
  // never catch up with the secondary's queue, which overflowed with identical frames.
  f.held(0, 0, "unmatched", "matched");
  assert.equal(f.paused("secondary"), true, "the primary catches up with the secondary's lead");
  assert.equal(f.paused("primary"), false);
  f.held(0, 0, "unmatched", "none"); // caught up: the primary is paused for its own
  assert.equal(f.paused("secondary"), false);
  assert.equal(f.paused("primary"), true);
  // The secondary runs ahead again where frames matched: the later of two such would read
  // on, but not against a lead where nothing matched.
  f.held(0, 0, "unmatched", "matched");
  assert.equal(f.paused("secondary"), true);
  assert.equal(f.paused("primary"), false);
  // Both long where frames matched: the later pauses, as before.
  f.held(0, 0, "matched", "matched");
  assert.equal(f.paused("primary"), false);
  assert.equal(f.paused("secondary"), true);
});

/** Both sides ahead while a checkpoint is on its way: both pause, the flush will settle both. */
function bothAheadForCheckpoint(): FlowControl {
  const { f } = flow({ leadHigh: 20, leadLow: 10 });
  f.checkpointPending(true);
  f.held(30, 30);
  assert.ok(f.paused("primary") && f.paused("secondary"), "both paused while the VMs run");
  return f;
}

Deno.test("flow: while a checkpoint is on its way both sides ahead pause; when it is done one reads on", () => {
  const f = bothAheadForCheckpoint();
  f.checkpointPending(false);
  assert.notEqual(f.paused("primary"), f.paused("secondary"));
  f.held(0, 0); // the flush emptied the queues
  assert.ok(!f.paused("primary") && !f.paused("secondary"));
});

Deno.test("flow: a side ahead of one paused for its held bytes reads on, unless a checkpoint is on its way", () => {
  const { f } = flow({ leadHigh: 20, leadLow: 10 });
  f.held(150, 30); // the primary is over its high mark, the secondary ahead
  assert.equal(f.reason("primary"), "held-bytes");
  assert.equal(f.paused("secondary"), false, "never both for being ahead");
  f.checkpointPending(true);
  assert.equal(f.paused("secondary"), true);
  assert.equal(f.reason("secondary"), "ahead");
});

Deno.test("flow: a lead pause that times out is waived until the side has caught up", () => {
  const { f, events } = flow({ leadHigh: 20, leadLow: 10 });
  f.held(30, 0); // the secondary is connected but sends nothing
  assert.equal(f.paused("primary"), true);
  f.leadTimeout("primary");
  assert.deepEqual(events.at(-1), ["primary", false, "ahead"]);
  f.held(40, 0);
  assert.equal(f.paused("primary"), false, "waived: reads on");
  f.held(5, 0); // a checkpoint emptied the queues
  f.held(30, 0);
  assert.equal(f.paused("primary"), true, "the lead counts again");
  f.leadTimeout("secondary");
  assert.equal(f.paused("primary"), true, "a timeout for the other side changes nothing");
});

Deno.test("flow: a queue grown long after a lead was waived is a new lead: the side pauses again", () => {
  const { f } = flow({ leadHigh: 20, leadLow: 10 });
  f.held(0, 0, "unmatched", "none"); // a long queue the secondary never sends
  assert.equal(f.paused("primary"), true);
  f.leadTimeout("primary");
  assert.equal(f.paused("primary"), false, "waived");
  f.newLead("primary"); // another connection's queue grew long, still ahead for the first
  assert.equal(f.paused("primary"), true);
  assert.equal(f.reason("primary"), "ahead");
  f.newLead("secondary");
  assert.equal(f.paused("secondary"), false, "nothing waived: nothing changes");
});

Deno.test("flow: a side with a long queue is ahead whatever its bytes, until it is short again", () => {
  const { f, events } = flow({ leadHigh: 20, leadLow: 10 });
  f.held(5, 0, "matched", "none"); // few bytes, but a queue near max-queue-size
  assert.deepEqual(events, [["primary", true, "ahead"]]);
  f.held(5, 0, "none", "none");
  assert.deepEqual(events.at(-1), ["primary", false, "ahead"]);
  f.held(0, 5, "none", "matched");
  assert.deepEqual(events.at(-1), ["secondary", true, "ahead"]);
});

Deno.test("flow: the held-bytes marks count what the frames cost (their bookkeeping too), the lead only their bytes", () => {
  const { f, events } = flow();
  // 40 bytes of small frames that cost 120 against the budget: above the high mark.
  f.held(40, 0, "none", "none", 120, 0);
  assert.deepEqual(events, [["primary", true, "held-bytes"]]);
  f.held(40, 0, "none", "none", 45, 0);
  assert.deepEqual(events.slice(1), [["primary", false, "held-bytes"]]);
  // The lead mark (10,000) is one of bytes: 10,001 of them are ahead whatever their cost says.
  f.held(10_001, 0, "none", "none", 40, 0);
  assert.deepEqual(events.slice(2), [["primary", true, "ahead"]]);
});

Deno.test("flow: while the VMs are stopped for a checkpoint no side pauses for its lead; the held-bytes mark still holds", () => {
  const f = bothAheadForCheckpoint();
  f.vmsStopped(true);
  assert.ok(!f.paused("primary") && !f.paused("secondary"), "what is in flight is read");
  f.held(150, 30); // over the primary's high mark
  assert.equal(f.reason("primary"), "held-bytes");
  assert.ok(f.paused("primary") && !f.paused("secondary"));
  f.held(30, 30);
  assert.ok(!f.paused("primary"));
  f.vmsStopped(false);
  assert.ok(
    f.paused("primary") && f.paused("secondary"),
    "running again, still pending: as before",
  );
  f.checkpointPending(false);
  f.held(0, 0); // the flush
  assert.ok(!f.paused("primary") && !f.paused("secondary"));
});
