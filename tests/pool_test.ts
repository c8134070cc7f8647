import assert from "node:assert/strict";
import { BLOCK_SIZE, BlockPool, READ_BLOCK_SIZE, TRIM_INTERVAL_MS } from "../src/pool.ts";
import { readSizeFor } from "../src/comparator.ts";
import { parseAddress } from "../src/wire/address.ts";

Deno.test("pool: a block given back is the next one taken; none is allocated twice", () => {
  const pool = new BlockPool(1024);
  const a = pool.take();
  const b = pool.take();
  assert.equal(a.length, 1024);
  assert.notEqual(a, b);
  pool.give(a);
  assert.equal(pool.take(), a);
  assert.equal(pool.blocks, 2);
  assert.equal(pool.free, 0);
});

Deno.test("pool: trim gives up only the blocks that stayed free for a whole interval", () => {
  const pool = new BlockPool(1024);
  const blocks = Array.from({ length: 6 }, () => pool.take());
  blocks.forEach((b) => pool.give(b));
  let now = TRIM_INTERVAL_MS;
  assert.equal(pool.trim(now), 0, "given back within this interval: kept");
  // During the next interval four blocks are needed at once, then given back.
  const busy = [pool.take(), pool.take(), pool.take(), pool.take()];
  busy.forEach((b) => pool.give(b));
  assert.equal(pool.trim(now + 1), 0, "not before the interval is over");
  now += TRIM_INTERVAL_MS;
  assert.equal(pool.trim(now), 2, "two were never taken");
  assert.equal(pool.blocks, 4);
  assert.equal(pool.free, 4);
  now += TRIM_INTERVAL_MS;
  assert.equal(pool.trim(now), 4, "a quiet interval gives up the rest");
  assert.equal(pool.blocks, 0);
});

Deno.test("read size: 1 MiB for a plain input under a budget of 8 MiB or more; a pool block for TLS and smaller budgets", () => {
  const MiB = 2 ** 20;
  assert.equal(readSizeFor(parseAddress("tcp:127.0.0.1:9000"), 256 * MiB), READ_BLOCK_SIZE);
  assert.equal(readSizeFor(parseAddress("unix:/tmp/p.sock"), 8 * MiB), READ_BLOCK_SIZE);
  assert.equal(readSizeFor(parseAddress("tcp:127.0.0.1:9000"), 8 * MiB - 1), BLOCK_SIZE);
  assert.equal(readSizeFor(parseAddress("tls:127.0.0.1:9000"), 256 * MiB), BLOCK_SIZE);
});
