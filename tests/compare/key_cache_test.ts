/**
 * The connection table's lookup cache: it finds what it was given by the whole key, and never
 * a connection it was told to forget.
 */

import assert from "node:assert/strict";
import { KeyCache, otherSlotOf, slotOf } from "../../src/compare/key_cache.ts";
import { hashKey, hashKeyWords, KEY_MAX } from "../../src/packet/parse.ts";

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

/** The IPv4 key of source address `n` (bytes 10-13): distinct for every `n` below 2^32. */
function keyFrom(n: number, k = keyOf(0)): Uint8Array {
  new DataView(k.buffer).setUint32(10, n);
  return k;
}

/** The first key after `from` (by source address) that `fits` its hash. */
function keyAfter(from: number, fits: (hash: number) => boolean): [Uint8Array, number] {
  const scratch = keyOf(0);
  for (let n = from + 1;; n++) {
    if (fits(hashKey(keyFrom(n, scratch), 18))) return [keyFrom(n), n];
  }
}

Deno.test("key cache: a forgotten connection is never returned", () => {
  const cache = new KeyCache<{ id: number }>();
  const a = keyOf(4);
  const { c: ca, hash: ha } = connectionFor(a, 18);
  cache.put(ca, a, 18, ha);
  cache.forget(ca, ha);
  assert.equal(cache.get(a, 18), null);
  // One in its other slot (its first one taken) is forgotten too.
  const [b] = keyAfter(0, (h) => slotOf(h) === slotOf(ha) && otherSlotOf(h) !== slotOf(ha));
  const { c: cb, hash: hb } = connectionFor(b, 18, 1);
  cache.put(ca, a, 18, ha);
  cache.put(cb, b, 18, hb);
  assert.equal(cache.get(b, 18), cb);
  cache.forget(cb, hb);
  assert.equal(cache.get(b, 18), null);
  assert.equal(cache.get(a, 18), ca, "forgetting one leaves the other");
  cache.forget(ca, ha);
  assert.equal(cache.get(a, 18), null);
});

Deno.test("key cache: two keys that share a slot are both found; a third replaces one", () => {
  const cache = new KeyCache<{ id: number }>();
  const [a, n] = keyAfter(0, () => true);
  const ha = hashKey(a, 18);
  const shares = (h: number) => slotOf(h) === slotOf(ha) && otherSlotOf(h) === otherSlotOf(ha);
  const [b, m] = keyAfter(n, shares);
  const [c] = keyAfter(m, shares);
  const { c: ca } = connectionFor(a, 18, 0);
  const { c: cb, hash: hb } = connectionFor(b, 18, 1);
  const { c: cc, hash: hc } = connectionFor(c, 18, 2);
  cache.put(ca, a, 18, ha);
  cache.put(cb, b, 18, hb);
  for (let turn = 0; turn < 3; turn++) {
    assert.equal(cache.get(a, 18), ca);
    assert.equal(cache.get(b, 18), cb);
  }
  // Both slots full: the one not filled last (a's) goes.
  cache.put(cc, c, 18, hc);
  assert.equal(cache.get(c, 18), cc);
  assert.equal(cache.get(b, 18), cb);
  assert.equal(cache.get(a, 18), null);
  assert.equal(cache.hash, ha);
  // Putting a connection already cached does not take a second slot.
  cache.put(cc, c, 18, hc);
  assert.equal(cache.get(b, 18), cb);
});

Deno.test("key hash: the same through a 32-bit view as byte by byte, every key length", () => {
  const buf = new Uint8Array(KEY_MAX + 2);
  for (let i = 0; i < buf.length; i++) buf[i] = (i * 89 + 13) & 0xff;
  const words = new Uint32Array(buf.buffer, 0, (KEY_MAX + 2) >>> 2);
  const seen = new Set<number>();
  for (let len = 0; len <= KEY_MAX; len++) {
    const h = hashKey(buf, len);
    assert.equal(hashKeyWords(words, buf, len), h, `length ${len}`);
    assert.ok(h >= 0 && h < 2 ** 30, "30 bits");
    seen.add(h);
  }
  assert.equal(seen.size, KEY_MAX + 1, "every length hashes differently");
});

Deno.test("key hash: keys differing in a word's high bits land in different slots", () => {
  // Destination addresses 10.0.0.2, 10.64.0.2, 10.128.0.2 and 10.192.0.2: key byte 15, the
  // high byte of a word, differs only in its top two bits (without the final mixing they fell
  // out of the 30-bit hash, and the four keys shared one bucket and one cache slot).
  const hashes = new Set<number>();
  const slots = new Set<number>();
  for (const high of [0, 0x40, 0x80, 0xc0]) {
    const k = keyFrom(1);
    k.set([10, high, 0, 2], 14);
    const h = hashKey(k, 18);
    hashes.add(h);
    slots.add(slotOf(h));
  }
  assert.equal(hashes.size, 4);
  assert.equal(slots.size, 4);
});

Deno.test("key cache: connections taking turns, forgotten and replaced, never another key's", () => {
  // Against the truth (a Map by key): the cache may miss, but what it returns is the
  // connection last put for that very key and not forgotten since. Rounds in a steady order
  // (the guess of the slot found next), bursts (the last slot), and random lookups, with
  // connections forgotten and others put in their slots meanwhile.
  let seed = 11;
  const random = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const cache = new KeyCache<{ id: number }>();
  const truth = new Map<number, { id: number }>();
  const keys = Array.from({ length: 300 }, (_, i) => keyFrom(i * 7919));
  const lookup = keys[0].slice();
  let next = 0;
  /** Lookups in the second and third of three rounds in one order, and how many hit. */
  let again = 0;
  let hitAgain = 0;
  const visit = (k: number, counted = false) => {
    lookup.set(keys[k]);
    const got = cache.get(lookup, 18);
    const want = truth.get(k);
    if (counted) again++;
    if (got !== null) {
      assert.equal(got, want, `key ${k}`);
      if (counted) hitAgain++;
      return;
    }
    if (want !== undefined) cache.put(want, lookup, 18, cache.hash);
  };
  for (let step = 0; step < 400; step++) {
    const live = [...truth.keys()];
    const r = random(10);
    if (r === 0 || live.length < 20) {
      // A new connection on a key: the table forgets the old one first (the cache with it).
      const k = random(keys.length);
      const old = truth.get(k);
      if (old !== undefined) cache.forget(old, hashKey(keys[k], 18));
      const c = { id: next++ };
      truth.set(k, c);
      lookup.set(keys[k]);
      assert.equal(cache.get(lookup, 18), null);
      cache.put(c, lookup, 18, cache.hash);
    } else if (r === 1) {
      const k = live[random(live.length)];
      cache.forget(truth.get(k)!, hashKey(keys[k], 18));
      truth.delete(k);
    } else if (r < 5) {
      const order = live.slice(0, 100);
      for (let round = 0; round < 3; round++) for (const k of order) visit(k, round > 0);
    } else if (r < 7) {
      const k = live[random(live.length)];
      for (let i = 0; i < 5; i++) visit(k);
    } else {
      for (let i = 0; i < 50; i++) visit(random(keys.length));
    }
  }
  assert.ok(hitAgain >= 0.95 * again, `${hitAgain} of ${again} found again`);
});

/**
 * `count` IPv4 keys (18 bytes) that an unkeyed FNV-1a over 32-bit words, the hash before the
 * keyed one, took to one state: bytes 0-11 vary (ports), and the word at bytes 12-15 (in the
 * addresses, which a guest picks) undoes them. The construction a hash flood uses.
 */
function fnvCollidingKeys(count: number): Uint8Array[] {
  const BASIS = 0x811c9dc5;
  const PRIME = 0x01000193;
  const PRIME_INVERSE = 0x359c449b; // PRIME * PRIME_INVERSE = 1 (mod 2^32)
  assert.equal(Math.imul(PRIME, PRIME_INVERSE), 1);
  const TARGET = 0x12345678;
  const keys: Uint8Array[] = [];
  for (let n = 0; n < count; n++) {
    const k = new Uint8Array(KEY_MAX);
    k.set([4, 17, 10, 1, 0, 0, (n >> 8) & 0xff, n & 0xff, 0x07, 0xd0, 0, 0, 0, 0, 0, 0, 7, 8]);
    const view = new DataView(k.buffer);
    let h = BASIS;
    for (let w = 0; w < 3; w++) h = Math.imul(h ^ view.getUint32(w * 4, true), PRIME);
    view.setUint32(12, (Math.imul(TARGET, PRIME_INVERSE) ^ h) >>> 0, true);
    // Sanity: the unkeyed hash's state after the last whole word is the same for every key.
    assert.equal(Math.imul(h ^ view.getUint32(12, true), PRIME), Math.imul(TARGET, 1));
    keys.push(k);
  }
  return keys;
}

Deno.test("key hash: keys made to collide under an unkeyed hash spread over hashes and slots", () => {
  const keys = fnvCollidingKeys(4096);
  const hashes = new Set(keys.map((k) => hashKey(k, 18)));
  const slots = new Set(keys.map((k) => slotOf(hashKey(k, 18))));
  assert.ok(hashes.size >= 4090, `${hashes.size} hashes for 4096 keys`);
  // 4096 keys over 1024 slots: about 1005 slots taken when spread at random.
  assert.ok(slots.size >= 950, `${slots.size} slots for 4096 keys`);
});

Deno.test("key hash: keyed anew in every process", async () => {
  const code =
    `import { hashKey } from ${
      JSON.stringify(new URL("../../src/packet/parse.ts", import.meta.url).href)
    };` +
    `console.log(hashKey(new Uint8Array(18).fill(7), 18));`;
  const run = async () => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-config", code],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    assert.equal(out.code, 0);
    return new TextDecoder().decode(out.stdout).trim();
  };
  const [a, b] = await Promise.all([run(), run()]);
  assert.match(a, /^\d+$/);
  assert.notEqual(a, b, "two processes, one hash: the secret is not random");
});
