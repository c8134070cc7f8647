/**
 * Held frames kept in the read buffer they arrived in (issue 11): a block from the engine's
 * pool whose held frames fill enough of it becomes their slab instead of their being copied;
 * anything else is copied as before, and a kept block is the pool's again only once its
 * frames are gone and what outdev was handed from it is copied.
 */

import assert from "node:assert/strict";
import { CompareEngine, SPARSE_KEPT_MAX } from "../../src/compare/engine.ts";
import { SLAB_SIZE } from "../../src/compare/store.ts";
import { BlockPool, READ_BLOCK_SIZE } from "../../src/pool.ts";
import { concat, frame, framed } from "../support/packets.ts";
import { outdev } from "../support/outdev.ts";
import { Recorder } from "../support/recorder.ts";

const udp = (payload: string, sport = 1000) => frame({ udp: { sport, payload } });
const options = { compareTimeout: 3000, maxQueueSize: 1024 };

/** Writes `frames` into `buf` back to back, each behind a 4-byte word, and hands them in. */
function read(
  engine: CompareEngine,
  side: "primary" | "secondary",
  buf: Uint8Array,
  frames: Uint8Array[],
): void {
  let at = 0;
  for (const f of frames) {
    at += 4;
    buf.set(f, at);
    if (side === "primary") engine.primaryAt(buf, at, f.length, 0, 0);
    else engine.secondaryAt(buf, at, f.length, 0, 0);
    at += f.length;
  }
}

Deno.test("in place: a read block full enough keeps its held frames; less, and they are copied", () => {
  const frames = Array.from({ length: 10 }, (_, i) => udp(`frame ${i}`, 1000 + i));
  const bytes = frames.reduce((n, f) => n + f.length, 0);
  for (const [from, keeps] of [[bytes, true], [bytes + 1, false]] as const) {
    const rec = new Recorder();
    const readPool = new BlockPool(READ_BLOCK_SIZE);
    const engine = new CompareEngine({ ...options, readPool, keepInPlaceFrom: from }, rec);
    // Blocks kept for fewer bytes, as many as may be: their frames wait for their twins.
    const waiting = Array.from({ length: SPARSE_KEPT_MAX }, (_, i) => udp(`wait ${i}`, 3000 + i));
    for (const f of waiting) {
      read(engine, "primary", engine.readBuffer(), [f]);
      assert.equal(engine.keepHeldInPlace(), true, "a sparse block kept");
    }
    const block = engine.readBuffer();
    read(engine, "primary", block, frames);
    assert.equal(engine.keepHeldInPlace(), keeps, `held ${bytes} bytes, from ${from}`);
    if (!keeps) block.fill(0xee); // the next read into it
    read(engine, "secondary", new Uint8Array(SLAB_SIZE), [...waiting, ...frames]);
    assert.deepEqual(rec.released, [...waiting, ...frames]);
    assert.equal(engine.heldPrimary, 0);
    // Kept: the blocks went back to the pool with their last frame; copied: the reader has it.
    assert.equal(readPool.free, SPARSE_KEPT_MAX + (keeps ? 1 : 0));
  }
});

Deno.test("in place: a block with fewer held bytes is kept while few such blocks hold frames", () => {
  const rec = new Recorder();
  const readPool = new BlockPool(READ_BLOCK_SIZE);
  const engine = new CompareEngine({ ...options, readPool }, rec);
  for (let round = 0; round < 3; round++) {
    // One frame at a time, its twin after it: the same block comes back for the next read.
    const f = udp(`request ${round}`);
    const block = engine.readBuffer();
    read(engine, "primary", block, [f]);
    assert.equal(engine.keepHeldInPlace(), true);
    read(engine, "secondary", new Uint8Array(SLAB_SIZE), [f]);
    assert.deepEqual(rec.released.at(-1), f);
    assert.equal(readPool.free, 1, "the kept block is the pool's again with its frame gone");
  }
  assert.equal(engine.heldPrimary, 0);
});

Deno.test("in place: frames in any other array are copied, whatever their size", () => {
  const rec = new Recorder();
  const engine = new CompareEngine({ ...options, keepInPlaceFrom: 1 }, rec);
  engine.readBuffer(); // a block handed out, but not the one read into
  const own = new Uint8Array(SLAB_SIZE);
  const frames = [udp("a"), udp("b", 2000)];
  read(engine, "primary", own, frames);
  assert.equal(engine.keepHeldInPlace(), false);
  own.fill(0xee);
  read(engine, "secondary", new Uint8Array(SLAB_SIZE), frames);
  assert.deepEqual(rec.released, frames);
});

Deno.test("in place: a block whose frames are gone is handed out again only after outdev copied them", async () => {
  const pool = new BlockPool();
  const { out, sink, written } = outdev(pool);
  const engine = new CompareEngine({ ...options, pool, keepInPlaceFrom: 1 }, sink);
  const frames = [udp("first"), udp("second", 2000)];
  const block = engine.readBuffer();
  read(engine, "primary", block, frames);
  assert.equal(engine.keepHeldInPlace(), true);
  // Their twins release them: outdev is handed them where they lie, in the kept block, which
  // goes back to the pool with the last of them, before outdev has copied them.
  read(engine, "secondary", new Uint8Array(SLAB_SIZE), frames);
  assert.equal(engine.heldPrimary, 0);
  const next = engine.readBuffer();
  assert.equal(next, block, "the pool hands the same block out again");
  next.fill(0xee); // the next read
  out.flush();
  await out.idle();
  assert.deepEqual(concat(...written), concat(...frames.map((f) => framed(f))));
});
