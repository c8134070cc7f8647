/**
 * The engine while COLO is not active (SPEC 7b, after `COLO_EXIT`): held frames released as
 * by a checkpoint, then the primary passes through uncompared and the secondary is dropped.
 */

import assert from "node:assert/strict";
import { CompareEngine } from "../../src/compare/engine.ts";
import { arp, concat, frame, framed } from "../support/packets.ts";
import { Recorder } from "../support/recorder.ts";

const udp = (payload: string, sport = 1000) => frame({ udp: { sport, payload } });
const tcp = (seq: number, payload: string) => frame({ tcp: { seq, ack: 1, payload } });

Deno.test("engine: passthrough on releases what is held exactly as a checkpoint does", () => {
  const feed = (engine: CompareEngine) => {
    engine.primary(udp("p1"), 0, 0);
    engine.primary(tcp(100, "hello"), 0, 1);
    engine.primary(udp("p2", 1001), 0, 2);
    engine.secondary(udp("s1"), 0, 3);
    engine.secondary(tcp(100, "HELLO"), 0, 4);
  };
  const byCheckpoint = new Recorder();
  const a = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, byCheckpoint);
  feed(a);
  byCheckpoint.clear();
  a.checkpoint();
  const byPassthrough = new Recorder();
  const b = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, byPassthrough);
  feed(b);
  byPassthrough.clear();
  b.setPassthrough(true);
  assert.ok(byCheckpoint.log.length > 0);
  assert.deepEqual(byPassthrough.log, byCheckpoint.log);
  assert.equal(b.heldPrimary + b.heldSecondary, 0);
  assert.equal(b.passthrough, true);
});

Deno.test("engine: in passthrough every primary frame leaves at once, every secondary one is dropped", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 2 }, rec);
  engine.setPassthrough(true);
  const prim = [udp("a"), tcp(5, "b"), udp("c"), udp("d"), udp("e")];
  for (const f of prim) engine.primary(f, 0, 0);
  engine.secondary(udp("x"), 0, 0);
  engine.secondary(tcp(5, "b"), 0, 0);
  engine.primary(new Uint8Array(0), 0, 0);
  assert.deepEqual(rec.released, prim, "in order, beyond max-queue-size, never held");
  assert.deepEqual(rec.releaseReasons, prim.map(() => "passthrough"));
  assert.deepEqual(rec.discards, [
    "secondary:colo-inactive",
    "secondary:colo-inactive",
    "primary:empty",
  ]);
  assert.deepEqual(rec.checkpoints, []);
  assert.equal(engine.tick(1e9), false, "nothing held, nothing times out");
  assert.equal(engine.connections, 0, "no connection state is built");
});

Deno.test("engine: passthrough off compares again; switching to the same state changes nothing", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, rec);
  engine.setPassthrough(false);
  engine.primary(udp("held"), 0, 0);
  assert.equal(engine.heldPrimary, 1, "setting off while off released nothing");
  engine.setPassthrough(true);
  engine.setPassthrough(true);
  assert.deepEqual(rec.releaseReasons, ["checkpoint"], "the second on releases nothing more");
  engine.setPassthrough(false);
  rec.clear();
  engine.primary(udp("p"), 0, 0);
  assert.deepEqual(rec.released, [], "held again, waiting for the secondary");
  engine.secondary(udp("p"), 0, 0);
  assert.deepEqual(rec.releaseReasons, ["compared"]);
  engine.primary(udp("q"), 0, 0);
  engine.secondary(udp("r"), 0, 0);
  assert.deepEqual(rec.checkpoints, ["datagram"]);
});

Deno.test("engine: an epoch's tail: a side's frames are released (primary) or dropped (secondary) as the checkpoint's flush would, never held; the other side and the end of the tail compare again", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, rec);
  engine.epochTail("primary", true);
  engine.primary(udp("old 1"), 0, 0);
  engine.primary(tcp(5, "old 2"), 0, 1);
  assert.deepEqual(rec.released, [udp("old 1"), tcp(5, "old 2")], "at once, uncompared");
  assert.deepEqual(rec.releaseReasons, ["checkpoint", "checkpoint"]);
  // The secondary's tail is dropped; its frames after it are compared.
  engine.epochTail("secondary", true);
  engine.secondary(udp("old s"), 0, 2);
  engine.epochTail("secondary", false);
  engine.secondary(udp("new"), 0, 3);
  assert.deepEqual(rec.discards, ["secondary:checkpoint"]);
  assert.equal(engine.heldSecondary, 1, "after its tail, held for comparison");
  engine.epochTail("primary", false);
  engine.primary(udp("new"), 0, 4);
  assert.deepEqual(rec.released.at(-1), udp("new"));
  assert.deepEqual(rec.releaseReasons.at(-1), "compared");
  assert.deepEqual(rec.checkpoints, []);
  assert.equal(engine.heldPrimary + engine.heldSecondary, 0);
});

Deno.test("engine: COLO_EXIT's passthrough wins over a tail, and the tail goes on after COLO is back", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, rec);
  engine.epochTail("secondary", true);
  engine.setPassthrough(true);
  engine.secondary(udp("a"), 0, 0);
  engine.setPassthrough(false);
  engine.secondary(udp("b"), 0, 1);
  assert.deepEqual(rec.discards, ["secondary:colo-inactive", "secondary:checkpoint"]);
  engine.epochTail("secondary", false);
  engine.secondary(udp("c"), 0, 2);
  assert.equal(engine.heldSecondary, 1);
});

Deno.test("engine: a read of a side in its tail is not taken as a run: each frame is handed over", () => {
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, new Recorder());
  const bytes = framedAll([udp("a"), udp("b")]);
  engine.epochTail("primary", true);
  assert.equal(engine.takeRun("primary", bytes, 0, bytes.length, false, 0), 0);
  assert.equal(engine.runFrames, 0);
  engine.epochTail("primary", false);
  engine.epochTail("secondary", true);
  assert.equal(engine.takeRun("secondary", bytes, 0, bytes.length, false, 0), 0);
});

function framedAll(frames: Uint8Array[]): Uint8Array {
  return concat(...frames.map((f) => framed(f)));
}

Deno.test("engine: a primary TCP segment of a tail counts as compared, as a flushed one does: the secondary's copy, coming late, is dropped by the scan, not a timeout's checkpoint", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, rec);
  engine.epochTail("primary", true);
  engine.primary(tcp(100, "hello"), 0, 0);
  engine.primary(arp("10.0.0.1", "10.0.0.2"), 0, 0);
  engine.epochTail("primary", false);
  assert.deepEqual(rec.releaseReasons, ["checkpoint", "passthrough"]);
  engine.secondary(tcp(100, "hello"), 0, 1);
  // As after a flush: nothing can pair with it, and the expiry scan drops it.
  assert.equal(engine.tick(10_000), false, "nothing times out");
  assert.equal(engine.heldSecondary, 0, "dropped as compared");
  assert.deepEqual(rec.checkpoints, []);
  // The next bytes are compared as usual.
  engine.primary(tcp(105, "world"), 0, 2);
  engine.secondary(tcp(105, "WORLD"), 0, 3);
  assert.equal(rec.checkpoints.length, 1);
});
