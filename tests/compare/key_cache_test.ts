/**
 * The connection table's lookup cache: it finds what it was given by the whole key, and never
 * a connection it was told to forget.
 */

import assert from "node:assert/strict";
import { KeyCache, slotOf } from "../../src/compare/key_cache.ts";
import { hashKey, KEY_MAX } from "../../src/packet/parse.ts";

/** An 18-byte (IPv4) or 42-byte (IPv6) key, in a buffer of KEY_MAX bytes as the parser has. */
function keyOf(seed: number, len = 18): Uint8Array {
  const k = new Uint8Array(KEY_MAX);
  for (let i = 0; i < len; i++) k[i] = (seed * 31 + i * 7) & 0xff;
  return k;
}

/** A stand-in connection (the cache stores them, it does not read them) and its key's hash. */
function connectionFor(key: Uint8Array, len: number, id = 0): { c: { id: number }; hash: number } {
  return { c: { id }, hash: hashKey(key, len) };
}

Deno.test("key cache: finds a connection by its whole key, the last byte included", () => {
  const cache = new KeyCache<{ id: number }>();
  const key = keyOf(1);
  const { c, hash } = connectionFor(key, 18);
  assert.equal(cache.get(key, 18), null);
  assert.equal(cache.hash, hash, "a miss leaves the key's hash for the table");
  cache.put(c, key, 18, hash);
  assert.equal(cache.get(key, 18), c);
  // The engine reuses one key buffer: the same buffer with other bytes is another key.
  for (const at of [0, 9, 16, 17]) {
    key[at] ^= 1;
    assert.equal(cache.get(key, 18), null, `byte ${at} differs`);
    key[at] ^= 1;
  }
  assert.equal(cache.get(key, 18), c);
  assert.equal(cache.get(key, 17), null, "a shorter key is another key");
});

Deno.test("key cache: IPv6 keys, and keys in a buffer that is not 32-bit aligned", () => {
  const cache = new KeyCache<{ id: number }>();
  const v6 = keyOf(2, 42);
  const { c: c6, hash: h6 } = connectionFor(v6, 42);
  cache.put(c6, v6, 42, h6);
  assert.equal(cache.get(v6, 42), c6);
  v6[41] ^= 0x80;
  assert.equal(cache.get(v6, 42), null);
  v6[41] ^= 0x80;
  const odd = new Uint8Array(KEY_MAX + 1).subarray(1);
  odd.set(keyOf(3).subarray(0, 18));
  const { c, hash } = connectionFor(odd, 18);
  cache.put(c, odd, 18, hash);
  assert.equal(cache.get(odd, 18), c);
  odd[17] ^= 1;
  assert.equal(cache.get(odd, 18), null);
});

Deno.test("key cache: a forgotten connection is never returned; a slot holds the last one put", () => {
  const cache = new KeyCache<{ id: number }>();
  const a = keyOf(4);
  const { c: ca, hash: ha } = connectionFor(a, 18);
  cache.put(ca, a, 18, ha);
  cache.forget(ca, ha);
  assert.equal(cache.get(a, 18), null);
  // Two keys whose hashes share a slot: the second replaces the first, which is then a miss.
  let seed = 5;
  let b = keyOf(seed);
  while (slotOf(hashKey(b, 18)) !== slotOf(ha)) b = keyOf(++seed);
  const { c: cb, hash: hb } = connectionFor(b, 18, 1);
  cache.put(ca, a, 18, ha);
  cache.put(cb, b, 18, hb);
  assert.equal(cache.get(b, 18), cb);
  assert.equal(cache.get(a, 18), null);
  // Forgetting the one no longer cached leaves the other.
  cache.forget(ca, ha);
  assert.equal(cache.get(b, 18), cb);
});
