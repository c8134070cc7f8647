import assert from "node:assert/strict";
import { CompareEngine, HELD_FRAME_COST } from "../../src/compare/engine.ts";
import { FrameWriter } from "../../src/output/writer.ts";
import { BlockPool } from "../../src/pool.ts";
import { arp, frame, TCP } from "../support/packets.ts";
import { Recorder } from "../support/recorder.ts";

const udp = (payload: string, sport = 1000) => frame({ udp: { sport, payload } });

Deno.test("engine: unsupported primary frames pass through at once; secondary ones are dropped", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, rec);
  const held = udp("held");
  engine.primary(held, 0, 0);
  const a = arp();
  engine.primary(a, 0, 0);
  engine.secondary(arp(), 0, 0);
  assert.deepEqual(rec.released, [a], "the ARP overtakes the held UDP frame, as in QEMU");
  assert.deepEqual(rec.releaseReasons, ["passthrough"]);
  assert.deepEqual(rec.discards, ["secondary:not-ip"]);
});

Deno.test("engine: zero-length frames are ignored on both sides", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, rec);
  engine.primary(new Uint8Array(0), 0, 0);
  engine.secondary(new Uint8Array(0), 0, 0);
  assert.deepEqual(rec.released, []);
  assert.deepEqual(rec.discards, ["primary:empty", "secondary:empty"]);
});

Deno.test("engine: a side holds max-queue-size + 1 frames per connection, then drops", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 4 }, rec);
  for (let i = 0; i < 8; i++) engine.primary(udp(`p${i}`), 0, 0);
  for (let i = 0; i < 7; i++) engine.secondary(udp(`s${i}`, 2000), 0, 0);
  assert.equal(engine.heldPrimary, 5);
  assert.equal(engine.heldSecondary, 5);
  assert.deepEqual(rec.discards, [
    "primary:queue-full",
    "primary:queue-full",
    "primary:queue-full",
    "secondary:queue-full",
    "secondary:queue-full",
  ]);
  assert.deepEqual(rec.checkpoints, [], "a full queue drops; it does not checkpoint (QEMU)");
  engine.checkpoint();
  assert.deepEqual(rec.released.map((f) => new TextDecoder().decode(f.subarray(42))), [
    "p0",
    "p1",
    "p2",
    "p3",
    "p4",
  ]);
});

Deno.test("engine: longQueue: set by a queue past three quarters of max-queue-size, cleared at a quarter held", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 64 }, rec);
  for (let i = 0; i < 4; i++) engine.primary(udp(`p${i}`, 1001 + i), 0, 0);
  for (let i = 0; i < 48; i++) engine.primary(udp(`q${i}`), 0, 0);
  assert.equal(engine.longQueue("primary"), false, "a queue of 48 is not past 48");
  assert.equal(engine.queueGrewLong, false);
  engine.primary(udp("q48"), 0, 0);
  assert.equal(engine.longQueue("primary"), true, "a queue of 49 is");
  assert.equal(engine.queueGrewLong, true, "the input is told at once");
  engine.queueGrewLong = false;
  engine.primary(udp("q49"), 0, 0);
  assert.equal(engine.queueGrewLong, false, "only when the queue grows past the mark");
  assert.equal(engine.longQueue("secondary"), false);
  for (let i = 0; i < 4; i++) engine.secondary(udp(`p${i}`, 1001 + i), 0, 0);
  for (let i = 0; i < 33; i++) engine.secondary(udp(`q${i}`), 0, 0);
  assert.equal(engine.heldPrimary, 17);
  assert.equal(engine.longQueue("primary"), true, "17 held: more than a quarter");
  engine.secondary(udp("q33"), 0, 0);
  assert.equal(engine.longQueue("primary"), false, "16 held: no more than a quarter");
});

Deno.test("engine: longQueueMatched: whether a long queue is on a connection where frames matched", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 64 }, rec);
  for (let i = 0; i < 49; i++) engine.primary(udp(`a${i}`, 2000), 0, 0);
  assert.equal(engine.longQueue("primary"), true);
  assert.equal(engine.longQueueMatched("primary"), false, "nothing matched on it yet");
  engine.secondary(udp("b0", 3000), 0, 0);
  engine.primary(udp("b0", 3000), 0, 0);
  assert.equal(engine.longQueueMatched("primary"), false, "frames matched elsewhere only");
  for (let i = 0; i < 49; i++) engine.secondary(udp(`c${i}`, 4000), 0, 0);
  engine.primary(udp("c0", 4000), 0, 0); // matched at once, against the secondary's head
  assert.equal(engine.longQueue("secondary"), true);
  assert.equal(engine.longQueueMatched("secondary"), true);
  engine.secondary(udp("a0", 2000), 0, 0); // the primary's head goes out compared
  assert.equal(engine.longQueueMatched("primary"), true);
});

Deno.test("engine: longQueue: cleared once the long queue is down to a quarter, whatever other connections hold", () => {
  // The red-team's run: a primary read of one frame on a connection the secondary never sends
  // and 127 on one both send. The stray frames wait for the timeout; they must not keep the
  // primary "long" (paused for its lead) after the secondary caught up with the long queue: the
  // secondary, never paused while the primary is, then ran on until its own copy overflowed.
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 64 }, rec);
  for (let i = 0; i < 20; i++) engine.primary(udp(`a${i}`, 2001 + i), 0, 0);
  for (let i = 0; i < 49; i++) engine.primary(udp(`q${i}`), 0, 0);
  assert.equal(engine.longQueue("primary"), true, "a queue of 49 is long");
  for (let i = 0; i < 32; i++) engine.secondary(udp(`q${i}`), 0, 0);
  assert.equal(engine.longQueue("primary"), true, "17 left on it: more than a quarter");
  engine.secondary(udp("q32"), 0, 0);
  assert.equal(engine.heldPrimary, 36, "20 strays and 16 on the long queue");
  assert.equal(engine.longQueue("primary"), false, "16 on the long queue: no longer long");
  for (let i = 49; i < 98; i++) engine.primary(udp(`q${i}`), 0, 0);
  assert.equal(engine.longQueue("primary"), true, "long again");
});

Deno.test("engine: longQueue: never for queues shorter than 64 frames (QEMU's drops stay as they are)", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 63 }, rec);
  for (let i = 0; i < 64; i++) engine.primary(udp(`q${i}`), 0, 0);
  assert.equal(engine.longQueue("primary"), false);
  assert.equal(engine.queueGrewLong, false);
});

Deno.test("engine: the expiry scan fires only for frames strictly older than compare-timeout", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 300, maxQueueSize: 1024 }, rec);
  assert.equal(engine.tick(10_000), false, "nothing held");
  engine.primary(udp("a"), 0, 1000);
  engine.secondary(udp("b", 2000), 0, 1100);
  assert.equal(engine.tick(1300), false, "exactly the timeout is not older");
  assert.equal(engine.tick(1300.5), true);
  assert.deepEqual(rec.checkpoints, ["timeout"]);
  engine.checkpoint();
  assert.equal(engine.tick(99_999), false, "flushed");
  // A held secondary frame alone also times out.
  engine.secondary(udp("c", 3000), 0, 5000);
  assert.equal(engine.tick(5301), true);
});

Deno.test("engine: the expiry scan tracks the oldest held frame as frames come and go", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 100, maxQueueSize: 1024 }, rec);
  engine.primary(udp("old"), 0, 0);
  engine.primary(udp("new", 7), 0, 50);
  engine.secondary(udp("old"), 0, 60); // releases the oldest
  assert.equal(engine.oldestHeldAt, 50);
  assert.equal(engine.tick(140), false);
  assert.equal(engine.tick(151), true);
});

Deno.test("engine: the expiry scan costs the same with 10,000 idle connections", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 100, maxQueueSize: 1024 }, rec);
  for (let i = 0; i < 10_000; i++) {
    const f = udp("x", i + 1);
    engine.primary(f, 0, 0);
    engine.secondary(f, 0, 0);
  }
  assert.equal(engine.connections, 10_000);
  assert.equal(engine.oldestHeldAt, null, "every connection is idle");
  assert.equal(engine.tick(1e9), false);
});

Deno.test("engine: a checkpoint flushes connections in first-seen order", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, rec);
  const c2 = udp("second-seen", 2);
  const c1a = udp("first-seen a", 1);
  const c1b = udp("first-seen b", 1);
  engine.secondary(udp("s", 1), 0, 0); // connection 1 is first seen from the secondary
  engine.primary(c2, 0, 0);
  engine.primary(c1a, 0, 0);
  engine.primary(c1b, 0, 0);
  rec.clear();
  engine.checkpoint();
  assert.deepEqual(rec.released, [c1a, c1b, c2]);
});

Deno.test("engine: a full connection table forgets the oldest idle connection", () => {
  const rec = new Recorder();
  const engine = new CompareEngine(
    { compareTimeout: 3000, maxQueueSize: 1024, maxConnections: 3 },
    rec,
  );
  const busy = udp("busy", 1);
  engine.primary(busy, 0, 0); // connection 1 holds a frame
  for (const port of [2, 3]) {
    engine.primary(udp("x", port), 0, 0);
    engine.secondary(udp("x", port), 0, 0);
  }
  engine.primary(udp("y", 4), 0, 0); // evicts connection 2, the oldest idle
  assert.equal(engine.connections, 3);
  assert.deepEqual(
    [...engine.connectionList()].map((c) => c.name),
    [
      "udp 10.0.0.1:1 > 10.0.0.2:40000",
      "udp 10.0.0.1:3 > 10.0.0.2:40000",
      "udp 10.0.0.1:4 > 10.0.0.2:40000",
    ],
  );
  engine.primary(udp("z", 5), 0, 0); // evicts connection 3
  engine.primary(udp("w", 6), 0, 0); // nothing idle left: dropped, checkpoint asked
  assert.ok(rec.discards.includes("primary:table-full"));
  assert.deepEqual(rec.checkpoints, ["resources"]);
  assert.equal(engine.heldPrimary, 3, "no held frame was lost");
});

Deno.test("engine: frames beyond the held-bytes budget are dropped and a checkpoint asked", () => {
  const rec = new Recorder();
  // A frame of 142 bytes costs 142 + HELD_FRAME_COST: one fits in 600 bytes, two do not.
  const engine = new CompareEngine(
    { compareTimeout: 3000, maxQueueSize: 1024, maxHeldBytes: 600 },
    rec,
  );
  engine.primary(udp("a".repeat(100)), 0, 0);
  engine.primary(udp("b".repeat(100)), 0, 0);
  assert.equal(engine.heldPrimary, 1);
  assert.deepEqual(rec.discards, ["primary:memory-limit"]);
  assert.deepEqual(rec.checkpoints, ["resources"]);
});

Deno.test("engine: a stranded secondary segment with nothing to compare is no reason for a checkpoint", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 100, maxQueueSize: 1024 }, rec);
  const data = frame({ tcp: { seq: 1, payload: "abcd" } });
  engine.primary(data, 0, 0);
  engine.secondary(data, 0, 0);
  // The secondary's FIN arrives; the primary's is still on its way.
  engine.secondary(frame({ tcp: { seq: 5, flags: 0x11 } }), 0, 10);
  assert.deepEqual(engine.uncompared(), { primary: 0, secondary: 0 });
  assert.equal(engine.tick(500), false, "QEMU would request a checkpoint here");
  assert.equal(engine.heldSecondary, 0, "the settled FIN is dropped instead");
  // Unsettled secondary data still times out.
  engine.secondary(frame({ tcp: { seq: 5, payload: "more" } }), 0, 600);
  assert.deepEqual(engine.uncompared(), { primary: 0, secondary: 1 });
  assert.equal(engine.tick(701), true);
  assert.deepEqual(rec.checkpoints, ["timeout"]);
});

Deno.test("engine: the trace carries QEMU's trace-event names", () => {
  const traced: string[] = [];
  const engine = new CompareEngine(
    { compareTimeout: 100, maxQueueSize: 1 },
    new Recorder(),
    { trace: (name, fields) => traced.push(`${name} ${Object.values(fields).join(" ")}`) },
  );
  engine.primary(udp("same"), 0, 0);
  engine.secondary(udp("same"), 0, 0);
  engine.primary(udp("abc"), 0, 0);
  engine.secondary(udp("xyz"), 0, 0);
  engine.primary(frame({ tcp: { payload: "tcp" } }), 0, 0);
  engine.secondary(frame({ tcp: { payload: "tcp" } }), 0, 0);
  engine.primary(arp(), 0, 0);
  for (let i = 0; i < 3; i++) engine.secondary(udp(`q${i}`, 9), 0, 0);
  engine.tick(1000);
  for (
    const want of [
      "colo_compare_main compare udp",
      "colo_compare_main packet same and release packet",
      "colo_compare_udp_miscompare primary pkt size 45",
      "colo_compare_main packet different",
      "colo_compare_tcp_info pri",
      "colo_compare_tcp_info sec",
      "colo_compare_main primary: unsupported packet in",
      "colo_compare_drop_packet secondary queue size too big, drop packet",
      "colo_old_packet_check_found",
    ]
  ) {
    assert.ok(
      traced.some((t) => t.startsWith(want)),
      `missing "${want}" in:\n${traced.join("\n")}`,
    );
  }
});

Deno.test("engine: a checkpoint with a secondary cutoff keeps newer UDP secondary frames and compares them next epoch", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, rec);
  engine.primary(udp("old-p"), 0, 10);
  engine.secondary(udp("old-s"), 0, 20); // before the secondary resumed: old epoch
  engine.secondary(udp("reply"), 0, 40); // after it resumed at 30: the new epoch's
  assert.equal(engine.checkpoint(50, 30), 1, "one secondary frame kept");
  assert.deepEqual(rec.released.map((f) => new TextDecoder().decode(f.subarray(42))), ["old-p"]);
  assert.deepEqual(rec.discards, ["secondary:checkpoint"]);
  assert.equal(engine.heldSecondary, 1);
  assert.equal(engine.oldestHeldAt, 40);
  engine.primary(udp("reply"), 0, 60);
  assert.equal(rec.released.length, 2, "the primary's reply matches the kept frame at once");
  assert.deepEqual(rec.releaseReasons, ["checkpoint", "compared"]);
  assert.equal(engine.heldPrimary + engine.heldSecondary, 0);
});

Deno.test("engine: a checkpoint with a secondary cutoff keeps newer TCP segments; compare_seq moves past the flushed primary", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, rec);
  const seg = (seq: number, payload: string) =>
    frame({ tcp: { seq, ack: 7, flags: TCP.ACK, payload } });
  engine.primary(seg(100, "abcd"), 0, 10); // old epoch, released by the flush
  engine.secondary(seg(96, "wxyz"), 0, 20); // old epoch, not lined up with it: dropped
  engine.secondary(seg(104, "efgh"), 0, 40); // new epoch, kept
  assert.equal(engine.checkpoint(50, 30), 1);
  assert.deepEqual(rec.discards, ["secondary:checkpoint"]);
  engine.primary(seg(104, "efgh"), 0, 60);
  assert.deepEqual(rec.releaseReasons, ["checkpoint", "compared"]);
  assert.deepEqual(rec.checkpoints, [], "no divergence");
  assert.equal(engine.heldPrimary + engine.heldSecondary, 0);
  // A kept segment that differs is a divergence of the new epoch, as usual.
  engine.secondary(seg(108, "ijkl"), 0, 70);
  engine.checkpoint(80, 65);
  engine.primary(seg(108, "ijXX"), 0, 90);
  assert.deepEqual(rec.checkpoints, ["tcp-payload"]);
});

Deno.test("engine: a checkpoint without a cutoff drops every held secondary frame, however new", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024 }, rec);
  engine.secondary(udp("a"), 0, 10);
  engine.secondary(udp("b", 7), 0, 1000);
  assert.equal(engine.checkpoint(5), 0);
  assert.equal(engine.heldSecondary, 0);
  assert.equal(engine.oldestHeldAt, null);
  assert.deepEqual(rec.discards, ["secondary:checkpoint", "secondary:checkpoint"]);
  // A frame arriving exactly at the cutoff is not newer than it.
  engine.secondary(udp("c"), 0, 30);
  assert.equal(engine.checkpoint(40, 30), 0);
  assert.equal(engine.heldSecondary, 0);
});

Deno.test("engine: a checkpoint flush writes the released frames into the dropped secondary frames' blocks", () => {
  const pool = new BlockPool();
  // outdev without a peer: everything released stays in its buffer, in blocks of the pool.
  const out = new FrameWriter({
    vnet: false,
    highWater: 1 << 30,
    lowWater: 0,
    maxBufferedDisconnected: 1 << 30,
    pool,
  });
  const sink = {
    release: (bytes: Uint8Array, at: number, size: number, vnetLen: number) =>
      void out.writeAt(bytes, at, size, vnetLen),
    discard: () => {},
    checkpoint: () => {},
  };
  const engine = new CompareEngine({ compareTimeout: 3000, maxQueueSize: 1024, pool }, sink);
  // 16 connections whose replicas diverge: every frame stays held on both sides.
  const payload = (side: string, i: number) => `${side}${i}`.padEnd(1000, ".");
  for (let i = 0; i < 256; i++) {
    for (let c = 0; c < 16; c++) engine.primary(udp(payload("p", i), 1000 + c), 0, 0);
    for (let c = 0; c < 16; c++) engine.secondary(udp(payload("s", i), 1000 + c), 0, 0);
  }
  const held = engine.heldPrimaryBytes + engine.heldSecondaryBytes;
  const blocksHeld = pool.blocks;
  assert.ok(blocksHeld * pool.size >= held);
  engine.checkpoint(1);
  assert.equal(engine.heldPrimary + engine.heldSecondary, 0);
  assert.equal(out.pendingBytes, 16 * 256 * (4 + udp(payload("p", 0)).length), "all released");
  // The released frames (and their length words) took the secondary frames' blocks: at most
  // a few more than were held, not half as many again.
  assert.ok(
    pool.blocks <= blocksHeld + 2,
    `${pool.blocks} blocks after the flush, ${blocksHeld} before`,
  );
});

Deno.test("engine: one held frame per read does not pin a slab each: the slabs' memory stays near --max-held-bytes", () => {
  // A read of the primary: one frame of a connection that is never matched, then frames the
  // secondary matches a moment later. Each read's held frames were copied into a slab of their
  // own side, and the one frame left pinned the whole 128 KiB slab until a timeout moved it
  // out: the live comparator at 52 MB/s held 282 MiB of RSS (58 MiB without the lone frames)
  // against 0.8 MB of held frames, whatever --max-held-bytes said.
  const pool = new BlockPool();
  const rec = new Recorder();
  const maxHeldBytes = 2 * 2 ** 20;
  const engine = new CompareEngine(
    { compareTimeout: 3000, maxQueueSize: 1024, maxHeldBytes, pool },
    rec,
  );
  const y = frame({ udp: { sport: 7, payload: "y".repeat(1000) } });
  const perRead = Math.floor((128 * 1024 - 100) / (y.length + 4));
  const reads = 200;
  for (let r = 0; r < reads; r++) {
    const buf = new Uint8Array(128 * 1024);
    const lone = frame({ udp: { sport: 1 + r, dport: 9, payload: `lone ${r}` } });
    buf.set(lone, 0);
    const ys: Uint8Array[] = [];
    let at = lone.length;
    engine.primaryAt(buf, 0, lone.length, 0, r);
    for (let k = 0; k < perRead; k++, at += y.length) {
      const f = y.slice();
      new DataView(f.buffer).setUint32(f.length - 4, r * 1000 + k);
      buf.set(f, at);
      ys.push(f);
      engine.primaryAt(buf, at, f.length, 0, r);
    }
    engine.keepHeld();
    for (const f of ys) engine.secondary(f, 0, r);
    engine.keepHeld();
  }
  assert.equal(engine.heldPrimary, reads, "the lone frames are held");
  assert.equal(engine.heldSecondary, 0);
  assert.equal(rec.released.length, reads * perRead, "the others were compared and released");
  const bytes = pool.blocks * pool.size;
  assert.ok(
    bytes <= 2 * maxHeldBytes,
    `${pool.blocks} blocks (${bytes} bytes) for ${reads} held frames against ${maxHeldBytes}`,
  );
});

Deno.test("engine: each held frame counts its bookkeeping against the held-bytes budget, so small frames cannot hold several times the budget", () => {
  // 46-byte frames, one per connection, none matched: the budget was reached at 22,795 frames
  // of 1 MiB, each costing ~300 bytes of memory besides its bytes (the live comparator with
  // the default 256M: 896 MiB of RSS with 2 x 67 MB of frames held).
  const rec = new Recorder();
  const maxHeldBytes = 2 ** 20;
  const engine = new CompareEngine(
    { compareTimeout: 3000, maxQueueSize: 1024, maxHeldBytes },
    rec,
  );
  const f = frame({ udp: { sport: 1, payload: "abcd" } });
  for (let i = 0; i < 30_000 && rec.checkpoints.length === 0; i++) {
    const g = f.slice();
    new DataView(g.buffer).setUint16(34, 1 + i); // a connection of its own
    engine.primary(g, 0, 0);
  }
  assert.deepEqual(rec.checkpoints, ["resources"]);
  const held = engine.heldPrimary;
  assert.equal(
    held,
    Math.floor(maxHeldBytes / (f.length + HELD_FRAME_COST)),
    `${held} frames of ${f.length} bytes held against ${maxHeldBytes}`,
  );
});
