/**
 * The connection table's bounds (SPEC 8): O(1) admission and eviction however full, idle and
 * closed connections forgotten, and a checkpoint flush that walks only connections holding
 * frames, in first-seen order.
 */

import assert from "node:assert/strict";
import { AWAKE_IDLE_MAX, ConnectionTable } from "../../src/compare/connection.ts";
import { CompareEngine } from "../../src/compare/engine.ts";
import { KEY_INLINE, keyOf as recordKey, Records } from "../../src/compare/records.ts";
import { FrameInfo, KEY_MAX, parseFrame } from "../../src/packet/parse.ts";
import { frame, TCP } from "../support/packets.ts";
import { Recorder } from "../support/recorder.ts";

/** A UDP frame on connection number `n` (distinct keys for n up to 2^24). */
function udpOn(n: number, payload = "x"): Uint8Array {
  return frame({
    ip: { dst: `10.${(n >> 16) & 0xff}.${(n >> 8) & 0xff}.${n & 0xff}` },
    udp: { sport: 7, payload },
  });
}

function tcpOn(sport: number, seq: number, flags: number, payload = ""): Uint8Array {
  return frame({ tcp: { sport, seq, ack: 1, flags, payload } });
}

const FULL = 65_536;

/** An engine whose table is full of connections that each hold one primary frame. */
function fullOfHeld(): { engine: CompareEngine; rec: Recorder } {
  const rec = new Recorder();
  const engine = new CompareEngine(
    { compareTimeout: 3000, maxQueueSize: 1024, maxConnections: FULL },
    rec,
  );
  for (let n = 0; n < FULL; n++) engine.primary(udpOn(n), 0, 0);
  assert.equal(engine.connections, FULL);
  assert.equal(engine.heldConnections, FULL);
  return { engine, rec };
}

Deno.test("table: a frame on a new connection with 65,536 held connections is dropped in bounded time", () => {
  const { engine, rec } = fullOfHeld();
  const frames = Array.from({ length: 5000 }, (_, i) => udpOn(FULL + i));
  const t0 = performance.now();
  for (const f of frames) engine.primary(f, 0, 1);
  const ms = performance.now() - t0;
  // Scanning the table for an idle connection cost ~2 ms a frame (10 s here); O(1) admission
  // takes microseconds. The bound is generous for a loaded machine.
  assert.ok(ms < 2000, `5000 frames took ${ms.toFixed(0)} ms`);
  assert.equal(rec.discards.filter((d) => d === "primary:table-full").length, 5000);
  assert.equal(engine.connections, FULL);
  assert.equal(engine.heldPrimary, FULL, "no held frame was lost");
});

Deno.test("table: 65,536 held connections do not slow a frame on another connection", () => {
  const { engine, rec } = fullOfHeld();
  // Free one slot: the last connection's frame is matched, so it becomes idle.
  engine.secondary(udpOn(FULL - 1), 0, 0);
  assert.equal(engine.heldConnections, FULL - 1);
  rec.clear();
  const t0 = performance.now();
  for (let i = 0; i < 5000; i++) {
    // Each pair lands on a new connection, evicting the one idle for longest (the previous).
    const f = udpOn(FULL + i);
    engine.primary(f, 0, 1);
    engine.secondary(f, 0, 1);
  }
  const ms = performance.now() - t0;
  assert.ok(ms < 2000, `5000 pairs took ${ms.toFixed(0)} ms`);
  assert.equal(rec.released.length, 5000);
  assert.deepEqual(rec.discards.filter((d) => d !== "secondary:compared"), []);
  assert.equal(engine.connections, FULL);
  assert.equal(engine.heldPrimary, FULL - 1);
});

Deno.test("table: a full table evicts the connection idle for longest, not the first seen", () => {
  const rec = new Recorder();
  const engine = new CompareEngine(
    { compareTimeout: 3000, maxQueueSize: 1024, maxConnections: 3 },
    rec,
  );
  for (const n of [1, 2, 3]) {
    engine.primary(udpOn(n), 0, n);
    engine.secondary(udpOn(n), 0, n);
  }
  // Connection 1 is used again: now 2 is the one idle for longest.
  engine.primary(udpOn(1, "again"), 0, 10);
  engine.secondary(udpOn(1, "again"), 0, 10);
  engine.primary(udpOn(4), 0, 11);
  assert.deepEqual(
    [...engine.connectionList()].map((c) => c.name.split(" ")[3]),
    ["10.0.0.1:40000", "10.0.0.3:40000", "10.0.0.4:40000"],
  );
});

Deno.test("table: a connection idle for 60 s is forgotten; a busy or holding one is not", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 1e9, maxQueueSize: 1024 }, rec);
  engine.primary(udpOn(1), 0, 0);
  engine.secondary(udpOn(1), 0, 0); // idle from 0
  engine.primary(udpOn(2), 0, 0); // holds a frame
  engine.primary(udpOn(3), 0, 0);
  engine.secondary(udpOn(3), 0, 0);
  engine.primary(udpOn(3, "later"), 0, 30_000);
  engine.secondary(udpOn(3, "later"), 0, 30_000); // idle from 30 s
  engine.tick(59_999);
  assert.equal(engine.connections, 3);
  engine.tick(60_000);
  assert.deepEqual([...engine.connectionList()].map((c) => c.id), [1, 2]);
  engine.tick(90_000);
  assert.deepEqual([...engine.connectionList()].map((c) => c.id), [1], "still holding a frame");
  engine.tick(1e7);
  assert.equal(engine.connections, 1);
  engine.checkpoint(); // idle from the latest time seen, 1e7
  engine.tick(1e7 + 59_999);
  assert.equal(engine.connections, 1);
  engine.tick(1e7 + 60_000);
  assert.equal(engine.connections, 0);
});

Deno.test("table: the idle timeout is an engine option", () => {
  const engine = new CompareEngine(
    { compareTimeout: 1e9, maxQueueSize: 1024, idleTimeout: 5 },
    new Recorder(),
  );
  engine.primary(udpOn(1), 0, 0);
  engine.secondary(udpOn(1), 0, 0);
  engine.tick(5);
  assert.equal(engine.connections, 0);
});

Deno.test("table: forgetting idle connections costs only the ones forgotten", () => {
  const engine = new CompareEngine({ compareTimeout: 1e9, maxQueueSize: 1024 }, new Recorder());
  for (let n = 0; n < 20_000; n++) {
    engine.primary(udpOn(n), 0, n);
    engine.secondary(udpOn(n), 0, n);
  }
  const t0 = performance.now();
  for (let t = 0; t < 10_000; t++) engine.tick(60_000 + t); // each forgets one
  const ms = performance.now() - t0;
  assert.equal(engine.connections, 10_000);
  assert.ok(ms < 500, `10,000 ticks took ${ms.toFixed(0)} ms`);
});

Deno.test("table: a TCP connection both VMs closed (FIN) is forgotten once it holds nothing", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, rec);
  const data = tcpOn(80, 1, TCP.ACK | TCP.PSH, "bye");
  engine.primary(data, 0, 0);
  engine.secondary(data, 0, 0);
  const fin = tcpOn(80, 4, TCP.FIN | TCP.ACK);
  engine.primary(fin, 0, 0);
  assert.equal(engine.connections, 1, "only the primary closed");
  engine.secondary(fin, 0, 0);
  assert.deepEqual(rec.released, [data, fin]);
  assert.equal(engine.connections, 0, "both VMs closed it and nothing is held");
});

Deno.test("table: a key seen again after its connection was forgotten gets a fresh connection", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, rec);
  const fin = tcpOn(80, 1, TCP.FIN | TCP.ACK);
  engine.primary(fin, 0, 0);
  engine.secondary(fin, 0, 0);
  assert.equal(engine.connections, 0, "forgotten right after the last frame looked it up");
  // The same key again: a new connection with fresh TCP state, not the one just forgotten.
  const again = tcpOn(80, 1, TCP.ACK | TCP.PSH, "again");
  engine.primary(again, 0, 1);
  assert.equal(engine.connections, 1);
  const [conn] = engine.connectionList();
  assert.equal(conn.primaryClosed, false);
  assert.equal(conn.compareSeqSet, false);
  engine.secondary(again, 0, 1);
  assert.deepEqual(rec.released, [fin, again]);
});

Deno.test("table: FIN from one VM only keeps the connection; RST from both forgets it", () => {
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, new Recorder());
  engine.primary(tcpOn(81, 1, TCP.FIN | TCP.ACK), 0, 0);
  engine.secondary(tcpOn(81, 1, TCP.ACK), 0, 0);
  assert.equal(engine.connections, 1);
  engine.primary(tcpOn(82, 1, TCP.RST), 0, 0);
  engine.secondary(tcpOn(82, 1, TCP.RST | TCP.ACK), 0, 0);
  assert.deepEqual([...engine.connectionList()].map((c) => c.name.split(" ")[1]), [
    "10.0.0.1:81",
  ]);
});

Deno.test("table: a closed connection that still holds frames is forgotten after the checkpoint flush", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, rec);
  const p = tcpOn(80, 1, TCP.FIN | TCP.ACK | TCP.PSH, "primary");
  engine.primary(p, 0, 0);
  engine.secondary(tcpOn(80, 1, TCP.FIN | TCP.ACK | TCP.PSH, "second!"), 0, 0);
  assert.deepEqual(rec.checkpoints, ["tcp-payload"]);
  assert.equal(engine.connections, 1);
  engine.checkpoint();
  assert.deepEqual(rec.released, [p]);
  assert.equal(engine.connections, 0);
});

Deno.test("table: a checkpoint flushes only connections that hold frames, in first-seen order", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 1e9, maxQueueSize: 1024 }, rec);
  for (let n = 0; n < 16_384; n++) {
    engine.primary(udpOn(n), 0, 0);
    engine.secondary(udpOn(n), 0, 0);
  }
  // Connections become held in another order than they were first seen.
  const held = [900, 5, 16_000, 42].map((n) => udpOn(n, `held ${n}`));
  for (const f of held) engine.primary(f, 0, 1);
  assert.equal(engine.heldConnections, 4);
  rec.clear();
  engine.checkpoint();
  assert.deepEqual(rec.released, [held[1], held[3], held[0], held[2]]);
  assert.equal(engine.heldConnections, 0);
  // 10,000 checkpoints with 16k idle connections walked every connection each time before
  // (3.7 s); now they walk nothing.
  const t0 = performance.now();
  for (let i = 0; i < 10_000; i++) {
    engine.primary(udpOn(7, "one"), 0, 2);
    engine.checkpoint();
  }
  const ms = performance.now() - t0;
  assert.ok(ms < 1000, `10,000 checkpoints took ${ms.toFixed(0)} ms`);
  assert.equal(engine.connections, 16_384);
});

Deno.test("table: a sink that throws during a flush leaves the unflushed connections held", () => {
  let throwOnce = true;
  const rec = new Recorder();
  const sink = {
    release: (
      f: Uint8Array,
      at: number,
      size: number,
      v: number,
      r: "compared" | "passthrough" | "checkpoint",
    ) => {
      if (r === "checkpoint" && throwOnce) {
        throwOnce = false;
        throw new Error("outdev broke");
      }
      rec.release(f, at, size, v, r);
    },
    discard: rec.discard.bind(rec),
    checkpoint: rec.checkpoint.bind(rec),
  };
  const engine = new CompareEngine({ compareTimeout: 1e9, maxQueueSize: 1024 }, sink);
  engine.primary(udpOn(1), 0, 0);
  engine.primary(udpOn(2), 0, 0);
  assert.throws(() => engine.checkpoint(), /outdev broke/);
  assert.equal(engine.heldConnections, 1, "connection 2 was not reached and is still held");
  engine.checkpoint();
  assert.deepEqual(rec.released, [udpOn(2)]);
});

Deno.test("table: a connection's record keeps the key bytes the parser gave", () => {
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, new Recorder());
  const frames = [
    udpOn(1),
    tcpOn(80, 1, TCP.ACK),
    frame({ ip: { v: 6, src: "fd00::1", dst: "fd00::2" }, udp: { sport: 9, payload: "v6" } }),
    frame({ vlans: [{ vid: 7 }], ip: { dst: "10.9.8.7" }, tcp: { sport: 22, payload: "vlan" } }),
  ];
  for (const f of frames) engine.primary(f, 0, 0);
  const conns = [...engine.connectionList()];
  assert.equal(conns.length, frames.length);
  const info = new FrameInfo();
  for (const [i, f] of frames.entries()) {
    parseFrame(f, 0, info);
    assert.deepEqual(conns[i].keyBytes(), info.key.slice(0, info.keyLen), conns[i].name);
    assert.equal(conns[i].protocol, info.key[1]);
  }
});

/** A UDP frame over IPv6 on connection number `n`: keys alike but for the destination's end. */
function udp6On(n: number, payload = "x"): Uint8Array {
  const dst = `fd00::${((n >> 16) & 0xffff).toString(16)}:${(n & 0xffff).toString(16)}`;
  return frame({ ip: { v: 6, src: "fd00::1", dst }, udp: { sport: 7, payload } });
}

Deno.test("table: IPv6 keys that differ only in the bytes past a record's own are told apart, over several chunks and reused slots", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 1e9, maxQueueSize: 1024 }, rec);
  // 5,000 of each family: the records fill two chunks, IPv4 and IPv6 interleaved.
  for (let n = 0; n < 5000; n++) {
    engine.primary(udp6On(n), 0, n);
    engine.primary(udpOn(n), 0, n);
  }
  assert.equal(engine.connections, 10_000);
  // Each secondary finds its own connection: a wrong match would release another's primary.
  for (let n = 4999; n >= 0; n--) engine.secondary(udp6On(n), 0, 6000);
  assert.deepEqual(rec.released, Array.from({ length: 5000 }, (_, i) => udp6On(4999 - i)));
  assert.equal(engine.connections, 10_000);
  // Forgotten, their slots are taken by IPv4 keys and then by IPv6 keys again.
  engine.tick(6000 + 70_000);
  assert.equal(engine.connections, 5000);
  for (let n = 0; n < 2000; n++) engine.primary(udpOn(10_000 + n), 0, 80_000);
  for (let n = 0; n < 3000; n++) engine.primary(udp6On(70_000 + n), 0, 80_000);
  // Every record gives back the key the parser made, spilled bytes included.
  const info = new FrameInfo();
  const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  const keyOfFrame = (f: Uint8Array) => {
    parseFrame(f, 0, info);
    return hex(info.key.subarray(0, info.keyLen));
  };
  const expected = [
    ...Array.from({ length: 5000 }, (_, n) => keyOfFrame(udpOn(n))),
    ...Array.from({ length: 2000 }, (_, n) => keyOfFrame(udpOn(10_000 + n))),
    ...Array.from({ length: 3000 }, (_, n) => keyOfFrame(udp6On(70_000 + n))),
  ];
  assert.deepEqual([...engine.connectionList()].map((c) => hex(c.keyBytes())), expected);
  for (let n = 0; n < 3000; n++) engine.secondary(udp6On(70_000 + n), 0, 80_000);
  assert.equal(rec.released.length, 8000);
  assert.deepEqual(
    rec.released.slice(5000),
    Array.from({ length: 3000 }, (_, i) => udp6On(70_000 + i)),
  );
});

Deno.test("records: keys with the same hash are told apart by their bytes, the spilled ones too", () => {
  const records = new Records();
  const a = new Uint8Array(KEY_MAX).fill(1);
  const b = a.slice();
  b[KEY_MAX - 1] = 2; // past the record's own bytes
  const c = a.slice();
  c[3] = 2; // in the record's own bytes
  const slots = [a, b, c].map((key) => {
    const slot = records.alloc();
    records.fill(slot, slot, key, KEY_MAX, 5, 0);
    return slot;
  });
  for (const [i, key] of [a, b, c].entries()) {
    for (const [j, slot] of slots.entries()) {
      assert.equal(records.hasKey(slot, key, KEY_MAX), i === j, `key ${i}, slot ${j}`);
    }
    assert.equal(records.hasKey(slots[i], key, KEY_INLINE), false, "a shorter key is another key");
  }
  assert.deepEqual(recordKey(records.chunkOf(slots[1]), slots[1]), b);
});

Deno.test("table: every connection is still found while the hash grows to 20,000 and shrinks back", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 1e9, maxQueueSize: 1024 }, rec);
  for (let n = 0; n < 20_000; n++) engine.primary(udpOn(n), 0, n);
  assert.equal(engine.connections, 20_000);
  // Each secondary finds its connection (a new one would hold it, not release the primary).
  for (let n = 0; n < 20_000; n += 2) engine.secondary(udpOn(n), 0, 30_000);
  assert.equal(rec.released.length, 10_000);
  assert.equal(engine.connections, 20_000);
  // The even ones idle since 30 s are forgotten at 90 s; the odd ones still hold a frame.
  engine.tick(90_000);
  assert.equal(engine.connections, 10_000);
  for (let n = 1; n < 20_000; n += 2) engine.secondary(udpOn(n), 0, 90_000);
  assert.equal(rec.released.length, 20_000);
  assert.equal(engine.connections, 10_000);
  assert.equal(engine.heldConnections, 0);
  engine.tick(200_000);
  assert.equal(engine.connections, 0);
  engine.primary(udpOn(5), 0, 200_000);
  engine.secondary(udpOn(5), 0, 200_000);
  assert.equal(rec.released.length, 20_001);
  assert.equal(engine.connections, 1);
});

Deno.test("table: a TCP connection hibernated among 1,000 idle ones keeps its compared bytes and its FIN", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, rec);
  const data = tcpOn(80, 1, TCP.ACK | TCP.PSH, "abc");
  engine.primary(data, 0, 0);
  engine.secondary(data, 0, 0);
  const fin = tcpOn(81, 1, TCP.FIN | TCP.ACK);
  engine.primary(fin, 0, 0);
  engine.secondary(tcpOn(81, 1, TCP.ACK), 0, 0);
  // Far more idle connections than keep a handle: the two above hibernate.
  for (let n = 0; n < 4 * AWAKE_IDLE_MAX; n++) {
    engine.primary(udpOn(n), 0, 1);
    engine.secondary(udpOn(n), 0, 1);
  }
  assert.equal(engine.connections, 2 + 4 * AWAKE_IDLE_MAX);
  rec.clear();
  // Port 80 compared "abc" up to 4: the primary's retransmission of it goes out with the
  // next secondary segment uncompared (a fresh connection would compare it with "xyz").
  engine.primary(data, 0, 2);
  engine.secondary(tcpOn(80, 1, TCP.ACK | TCP.PSH, "xyz"), 0, 2);
  assert.deepEqual(rec.released, [data]);
  assert.equal(engine.heldPrimary + engine.heldSecondary, 0);
  // Port 81's primary closed before hibernating: the secondary's FIN closes it for good.
  engine.primary(tcpOn(81, 2, TCP.ACK), 0, 2);
  engine.secondary(tcpOn(81, 2, TCP.FIN | TCP.ACK), 0, 2);
  assert.equal(engine.connections, 1 + 4 * AWAKE_IDLE_MAX);
  assert.deepEqual(rec.checkpoints, []);
});

/** An IPv4-sized key (18 bytes) distinct for each `n`, in a parser-sized buffer. */
function keyOf(n: number): Uint8Array {
  const k = new Uint8Array(KEY_MAX);
  k[0] = 4;
  k[1] = 17;
  k.set([n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff], 14);
  return k;
}

Deno.test("table: a connection holding frames keeps its handle; an idle one hibernates and wakes with its state", () => {
  const table = new ConnectionTable();
  const held = table.add(keyOf(0), 18, false);
  table.queueFor(held, "primary");
  table.markHeld(held);
  const idle = table.add(keyOf(1), 18, true);
  idle.compareSeq = 0xfedc_ba98;
  idle.compareSeqSet = true;
  idle.primaryAck = 0x8000_0001;
  table.setDroppedUntil(idle, 0x9000_0000);
  table.markIdle(idle, 5.5);
  for (let n = 2; n < 2 + 2 * AWAKE_IDLE_MAX; n++) {
    table.markIdle(table.add(keyOf(n), 18, false), 6);
  }
  assert.equal(table.size, 2 + 2 * AWAKE_IDLE_MAX);
  assert.equal(table.awakeCount, 1 + AWAKE_IDLE_MAX, "the held one and the most recently idle");
  assert.equal(table.find(keyOf(0), 18), held, "the same handle while it holds frames");
  const woken = table.find(keyOf(1), 18)!;
  assert.notEqual(idle.slot, woken.slot, "hibernated: its old handle went to another connection");
  assert.equal(table.find(keyOf(1), 18), woken, "one live handle at a time");
  assert.deepEqual(
    [woken.id, woken.tcp, woken.compareSeq, woken.compareSeqSet, woken.primaryAck, woken.idle],
    [1, true, 0xfedc_ba98, true, 0x8000_0001, true],
  );
  assert.equal(woken.idleFor(6), 0, "idle since 6 ms (5.5 rounded up)");
  assert.equal(table.droppedUntil(woken), 0x9000_0000, "the tcp-gap mark is the connection's");
  assert.equal(table.droppedUntil(held), undefined);
  assert.deepEqual([...table].slice(0, 3).map((c) => c.id), [0, 1, 2]);
  table.remove(woken);
  assert.equal(table.find(keyOf(1), 18), null);
  assert.equal(table.size, 1 + 2 * AWAKE_IDLE_MAX);
  // Its record is reused for the next new connection, which starts from nothing.
  const next = table.add(keyOf(1), 18, false);
  assert.deepEqual(
    [next.id, next.tcp, next.compareSeqSet, next.idle, table.droppedUntil(next)],
    [2 + 2 * AWAKE_IDLE_MAX, false, false, false, undefined],
  );
});
