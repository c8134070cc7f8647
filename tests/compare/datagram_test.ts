import assert from "node:assert/strict";
import { CompareEngine } from "../../src/compare/engine.ts";
import { frame, PROTO } from "../support/packets.ts";
import { Recorder } from "../support/recorder.ts";

function setup() {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, rec);
  return {
    rec,
    engine,
    p: (f: Uint8Array, vnetLen = 0) => engine.primary(f, vnetLen, 0),
    s: (f: Uint8Array, vnetLen = 0) => engine.secondary(f, vnetLen, 0),
  };
}

const udp = (payload: string, ip: Record<string, number> = {}, padTo?: number) =>
  frame({ ip: { ...ip }, udp: { payload }, padTo });

Deno.test("datagram: equal UDP payloads match whatever the IP ID, TTL and TOS", () => {
  const { rec, p, s } = setup();
  const prim = udp("hello", { id: 1, ttl: 64, tos: 0 });
  p(prim);
  s(udp("hello", { id: 9999, ttl: 3, tos: 0x10 }));
  assert.deepEqual(rec.released, [prim]);
  assert.deepEqual(rec.checkpoints, []);
});

Deno.test("datagram: the oldest primary is compared first (FIFO release)", () => {
  const { rec, p, s } = setup();
  const p1 = udp("one");
  const p2 = udp("two");
  p(p1);
  p(p2);
  s(udp("one"));
  assert.deepEqual(rec.released, [p1], "one released, no spurious checkpoint");
  assert.deepEqual(rec.checkpoints, []);
  s(udp("two"));
  assert.deepEqual(rec.released, [p1, p2]);
});

Deno.test("datagram: the first matching secondary anywhere in the queue is consumed", () => {
  const { rec, p, s, engine } = setup();
  s(udp("b"));
  s(udp("a"));
  const pa = udp("a");
  p(pa);
  assert.deepEqual(rec.released, [pa]);
  assert.equal(engine.heldSecondary, 1, "the unmatched secondary stays queued");
});

Deno.test("datagram: no match requests a checkpoint; the flush releases in order", () => {
  const { rec, p, s, engine } = setup();
  const p1 = udp("x1");
  const p2 = udp("x2");
  p(p1);
  p(p2);
  s(udp("different"));
  assert.deepEqual(rec.checkpoints, ["datagram"]);
  engine.checkpoint();
  assert.deepEqual(rec.released, [p1, p2]);
  assert.deepEqual(rec.releaseReasons, ["checkpoint", "checkpoint"]);
  assert.ok(rec.discards.includes("secondary:checkpoint"));
});

Deno.test("datagram: Ethernet padding and the vnet header are outside the compared bytes", () => {
  const { rec, p, s } = setup();
  const prim = udp("hi", {}, 60);
  p(prim);
  s(udp("hi"));
  assert.deepEqual(rec.released, [prim]);
  const vnetPrim = new Uint8Array([...new Uint8Array(12).fill(1), ...udp("v")]);
  p(vnetPrim, 12);
  s(udp("v"), 0);
  assert.deepEqual(rec.released, [prim, vnetPrim]);
  assert.deepEqual(rec.checkpoints, []);
});

Deno.test("datagram: other protocols compare their IP payload only (IP IDs may differ)", () => {
  const { rec, p, s } = setup();
  const gre = frame({ ip: { id: 1 }, raw: { proto: PROTO.GRE, bytes: "tunnelled" } });
  p(gre);
  s(frame({ ip: { id: 2 }, raw: { proto: PROTO.GRE, bytes: "tunnelled" } }));
  assert.deepEqual(rec.released, [gre]);
  p(frame({ raw: { proto: PROTO.GRE, bytes: "tunnelleD" } }));
  s(frame({ raw: { proto: PROTO.GRE, bytes: "tunnelled" } }));
  assert.deepEqual(rec.checkpoints, ["datagram"]);
});

Deno.test("datagram: ICMP flows are keyed per address pair", () => {
  const { rec, p, s } = setup();
  const toB = frame({ ip: { dst: "10.0.0.2" }, icmp: { seq: 1 } });
  const toC = frame({ ip: { dst: "10.0.0.3" }, icmp: { seq: 1 } });
  p(toB);
  p(toC);
  s(frame({ ip: { dst: "10.0.0.3" }, icmp: { seq: 1 } }));
  assert.deepEqual(rec.released, [toC], "the flow to .3 is independent of the one to .2");
  assert.deepEqual(rec.checkpoints, []);
});

Deno.test("datagram: IPv6 and VLAN-tagged frames are compared, not passed through", () => {
  const { rec, p, s } = setup();
  const v6 = frame({ ip: { v: 6, ext: [{ type: 60 }] }, udp: { payload: "six" } });
  p(v6);
  assert.deepEqual(rec.released, [], "held until the secondary's copy arrives");
  s(frame({ ip: { v: 6, ext: [{ type: 60 }], hopLimit: 1 }, udp: { payload: "six" } }));
  assert.deepEqual(rec.released, [v6]);
  const tagged = frame({ vlans: [{ vid: 10 }], udp: { payload: "t" } });
  p(tagged);
  s(frame({ vlans: [{ vid: 11 }], udp: { payload: "t" } }));
  assert.deepEqual(rec.released, [v6], "another VLAN is another connection");
  s(frame({ vlans: [{ vid: 10 }], udp: { payload: "t" } }));
  assert.deepEqual(rec.released, [v6, tagged]);
});

Deno.test("datagram: a neighbour advertisement and an MLD report only the secondary sends (its guest announcing itself after each checkpoint it loads) are dropped and time out into no checkpoint; the primary's go out at once", () => {
  const { rec, p, s, engine } = setup();
  const na = frame({ ip: { v: 6, dst: "ff02::1" }, icmp: { type: 136, payload: "announce" } });
  const mld = frame({ ip: { v: 6, dst: "ff02::16", ext: [{ type: 0 }] }, icmp: { type: 143 } });
  s(na);
  s(mld);
  assert.equal(engine.tick(10_000), false);
  assert.deepEqual(rec.checkpoints, []);
  assert.deepEqual(rec.discards, [
    "secondary:neighbour-discovery",
    "secondary:multicast-listener-discovery",
  ]);
  p(na);
  p(mld);
  assert.deepEqual(rec.released, [na, mld]);
  assert.equal(engine.tick(20_000), false);
  assert.deepEqual(rec.checkpoints, []);
});
