/**
 * The connection table's lookup cache (issue 11): finding a connection by its key through the
 * table's Map costs a hash of the key and a comparison with the key string, char by char, on
 * every frame. Here a fixed array of slots holds recently found connections with a copy of
 * their keys as 32-bit words: a key compares in five words (IPv4) or eleven (IPv6). Before
 * hashing at all, two guesses are tried: the slot of the last lookup (consecutive frames
 * mostly belong to one connection), then the slot found after it the last time it was found
 * (connections that take turns in a steady order, as the 100 flows of the bench's
 * tcp-1000x100 do, find each other without a hash). Otherwise a key may lie in either of two
 * slots picked by its hash (two ways: 100 connections taking turns all find their own instead
 * of the ones whose slots coincide missing in turn).
 *
 * @module
 */

import { hashKey, hashKeyWords, KEY_MAX, LITTLE_ENDIAN } from "../packet/parse.ts";

/** Slots: a power of two. About 50 KB. */
const SLOTS = 1024;
const SLOT_BITS = 10;
/** 32-bit words that hold the longest key. */
const KEY_WORDS = Math.ceil(KEY_MAX / 4);

/**
 * The first slot of a key hash: the top bits of a multiplicative hash of it (as `bucketOf` in
 * `connection.ts` takes a bucket; the other slot takes the next bits).
 */
export function slotOf(hash: number): number {
  return Math.imul(hash, 0x9e3779b1) >>> (32 - SLOT_BITS);
}

/** The other slot of a key hash: the next bits of the same product. */
export function otherSlotOf(hash: number): number {
  return (Math.imul(hash, 0x9e3779b1) >>> (32 - 2 * SLOT_BITS)) & (SLOTS - 1);
}

/**
 * A two-way cache of connections (`T`: the table's handles) by key. It never holds a
 * connection it was told to forget.
 */
export class KeyCache<T extends object> {
  /** The hash of the key of the last {@linkcode KeyCache.get} that missed. */
  hash = 0;
  readonly #conns: (T | null)[] = new Array(SLOTS).fill(null);
  /** Each slot's key: KEY_WORDS words (as bytes too), and its length in bytes. */
  readonly #words = new Uint32Array(SLOTS * KEY_WORDS);
  readonly #bytes = new Uint8Array(this.#words.buffer);
  readonly #lens = new Uint8Array(SLOTS);
  /** The slot of the last hit or fill, or -1. */
  #recent = -1;
  /**
   * For each slot, the slot found (or filled) right after it the last time, or -1: a guess,
   * checked against the whole key like any slot.
   */
  readonly #next = new Int16Array(SLOTS).fill(-1);
  /** The slot filled last, or -1: of two full slots, `put` replaces the other one. */
  #filled = -1;
  /** The key buffer last looked up, as 32-bit words (null: not 4-byte aligned). */
  #keyOf: Uint8Array | null = null;
  #keyWords: Uint32Array | null = null;

  /** The connection with the first `keyLen` bytes of `key`, or null (then `hash` is set). */
  get(key: Uint8Array, keyLen: number): T | null {
    if (key !== this.#keyOf) {
      // Once per key buffer: the engine passes the same one every time.
      this.#keyOf = key;
      this.#keyWords = (key.byteOffset & 3) === 0
        ? new Uint32Array(key.buffer, key.byteOffset, key.length >>> 2)
        : null;
    }
    const recent = this.#recent;
    const conns = this.#conns;
    let guess = -1;
    if (recent >= 0) {
      if (this.#matches(recent, key, keyLen)) return conns[recent];
      guess = this.#next[recent];
      if (guess >= 0 && guess !== recent && this.#matches(guess, key, keyLen)) {
        this.#recent = guess;
        return conns[guess];
      }
    }
    const keyWords = this.#keyWords;
    const hash = keyWords !== null && LITTLE_ENDIAN
      ? hashKeyWords(keyWords, key, keyLen)
      : hashKey(key, keyLen);
    const slot = slotOf(hash);
    if (
      slot !== recent && slot !== guess && conns[slot] !== null && this.#matches(slot, key, keyLen)
    ) {
      this.#found(slot);
      return conns[slot];
    }
    const other = otherSlotOf(hash);
    if (
      other !== recent && other !== guess && conns[other] !== null &&
      this.#matches(other, key, keyLen)
    ) {
      this.#found(other);
      return conns[other];
    }
    this.hash = hash;
    return null;
  }

  /**
   * Remembers `c`, whose key is the first `keyLen` bytes of `key` and hashes to `hash`: in
   * the first of its two slots that is free, else in the one not filled last, whose
   * connection is then a miss (and put again when the table finds it).
   */
  put(c: T, key: Uint8Array, keyLen: number, hash: number): void {
    const conns = this.#conns;
    const first = slotOf(hash);
    const other = otherSlotOf(hash);
    let slot = first;
    if (conns[first] !== null && conns[first] !== c) {
      if (conns[other] === null || conns[other] === c) slot = other;
      else if (this.#filled === first) slot = other;
    }
    const bytes = this.#bytes;
    const at = slot * KEY_WORDS * 4;
    for (let i = 0; i < keyLen; i++) bytes[at + i] = key[i];
    this.#lens[slot] = keyLen;
    conns[slot] = c;
    this.#found(slot);
    this.#filled = slot;
  }

  /** The last lookup ended at `slot`: it is the next guess after the one before. */
  #found(slot: number): void {
    if (this.#recent >= 0) this.#next[this.#recent] = slot;
    this.#recent = slot;
  }

  /** `c`, whose key hashes to `hash`, is gone from the table: it is never returned again. */
  forget(c: T, hash: number): void {
    this.#empty(c, slotOf(hash));
    this.#empty(c, otherSlotOf(hash));
  }

  #empty(c: T, slot: number): void {
    if (this.#conns[slot] !== c) return;
    this.#conns[slot] = null;
    this.#lens[slot] = 0;
    if (this.#recent === slot) this.#recent = -1;
    if (this.#filled === slot) this.#filled = -1;
  }

  #matches(slot: number, key: Uint8Array, keyLen: number): boolean {
    if (this.#lens[slot] !== keyLen) return false;
    const keyWords = this.#keyWords;
    let i = 0;
    if (keyWords !== null) {
      const words = this.#words;
      const base = slot * KEY_WORDS;
      const whole = keyLen >>> 2;
      // Last word first: addresses and ports, where keys of one workload differ, lie there.
      for (let w = whole - 1; w >= 0; w--) if (keyWords[w] !== words[base + w]) return false;
      i = whole << 2;
    }
    const bytes = this.#bytes;
    const at = slot * KEY_WORDS * 4;
    for (; i < keyLen; i++) if (key[i] !== bytes[at + i]) return false;
    return true;
  }
}
