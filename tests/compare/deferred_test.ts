/**
 * The deferred frames' buffer (src/compare/deferred.ts): its size follows the reads it takes.
 *
 * @module
 */

import assert from "node:assert/strict";
import { DEFER_BYTES, DEFER_MAX_BYTES, DeferredFrames } from "../../src/compare/deferred.ts";
import { TRIM_INTERVAL_MS } from "../../src/pool.ts";

Deno.test("deferred: the buffer grows to a read block for a large read and goes back once none came for a trim interval", () => {
  const d = new DeferredFrames();
  assert.equal(d.bytes.length, 0, "nothing before the first deferred frame");
  d.start("primary", 4, 40_000);
  assert.equal(d.bytes.length, DEFER_BYTES);
  assert.equal(d.capacity, DEFER_BYTES / 64);
  d.start("secondary", 4, DEFER_BYTES + 1);
  assert.equal(d.bytes.length, DEFER_MAX_BYTES);
  assert.equal(d.capacity, DEFER_MAX_BYTES / 64);
  let now = TRIM_INTERVAL_MS;
  d.trim(now);
  assert.equal(d.bytes.length, DEFER_MAX_BYTES, "a large read since the last trim: kept");
  d.start("primary", 4, 40_000);
  d.trim(now + 1);
  assert.equal(d.bytes.length, DEFER_MAX_BYTES, "not before the interval is over");
  d.trim(now += TRIM_INTERVAL_MS);
  assert.equal(d.bytes.length, DEFER_BYTES, "only small reads since: back to the first size");
  assert.equal(d.capacity, DEFER_BYTES / 64);
  assert.equal(d.pending, 0);
});

Deno.test("deferred: a grown buffer with frames pending is not trimmed", () => {
  const d = new DeferredFrames();
  d.start("primary", 4, DEFER_MAX_BYTES);
  d.count = 3; // three frames pending
  d.trim(TRIM_INTERVAL_MS);
  d.trim(2 * TRIM_INTERVAL_MS);
  assert.equal(d.bytes.length, DEFER_MAX_BYTES);
  assert.equal(d.pending, 3);
});
