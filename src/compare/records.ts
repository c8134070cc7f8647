/**
 * Connection records (issue 11: an idle connection should cost at most 200 bytes, as in QEMU):
 * the state of every connection in one fixed-size record of typed-array memory, off the V8
 * heap. Objects on the heap cost about twice their bytes in resident memory (the old
 * generation grows in steps, with room to spare); a record costs exactly its bytes.
 *
 * A record holds an IPv4 key whole (18 bytes); the last 24 bytes of an IPv6 key (42) lie in
 * its chunk's spill array, made when the chunk takes its first IPv6 key. So an IPv4 connection
 * costs 64 bytes, an IPv6 one 88.
 *
 * Records live in chunks of 4,096, allocated as the table first needs them and never copied
 * (no doubling), and freed slots are reused, most recently freed first. A slot's chunk stays
 * allocated at the table's high-water mark: at most 88 bytes x `max-connections` (5.5 MiB
 * for the default 65,536, all of them IPv6).
 *
 * @module
 */

import { KEY_MAX } from "../packet/parse.ts";
import { objectArray } from "../pool.ts";

/** Bytes per record: a multiple of 8, for the float64 id. */
export const RECORD_BYTES = 64;
/** 32-bit words per record. */
const RECORD_WORDS = RECORD_BYTES / 4;

// A record's fields, as 32-bit word offsets (or byte offsets where named so). Words 0-1 are
// the id, a float64 (first-seen order; increasing, never reused, exact up to 2^53).
/** Next slot in the same hash bucket, or in the free list; -1 ends either. */
export const BUCKET_NEXT = 2;
/** Links in the idle list (-1: none). */
export const IDLE_PREV = 3;
export const IDLE_NEXT = 4;
/** TCP: `compare_seq` and the two ACKs, unsigned 32-bit (read through the Uint32Array). */
export const COMPARE_SEQ = 5;
export const PRIMARY_ACK = 6;
export const SECONDARY_ACK = 7;
/** When it became idle: whole milliseconds, rounded up, as int32 (wraps after 24.8 days). */
export const IDLE_SINCE = 8;
/** The key's hash (`hashKey`, 30 bits): buckets and the lookup cache need it again. */
export const HASH = 9;
/** The flag bits (see `connection.ts`). */
export const FLAGS = 10;
/** Byte offsets: the key's first bytes (up to KEY_INLINE) and its length. */
export const KEY_BYTE = 44;
export const KEY_LEN_BYTE = 62;
/** Key bytes a record holds itself: an IPv4 key (see `parse.ts`), whole. */
export const KEY_INLINE = 18;
/** Key bytes past KEY_INLINE, in the chunk's spill array: the rest of an IPv6 key. */
export const KEY_SPILL = KEY_MAX - KEY_INLINE;

if (KEY_BYTE + KEY_INLINE > KEY_LEN_BYTE || KEY_LEN_BYTE >= RECORD_BYTES) {
  throw new Error("a key does not fit in a record");
}

/** log2 of the records per chunk. */
export const CHUNK_SHIFT = 12;
export const CHUNK_SLOTS = 1 << CHUNK_SHIFT;
export const CHUNK_MASK = CHUNK_SLOTS - 1;

/** The word index of `slot`'s record in its chunk (a multiple of 2: the id is aligned). */
export function wordOf(slot: number): number {
  return (slot & CHUNK_MASK) * RECORD_WORDS;
}

/**
 * 4,096 records in one ArrayBuffer, seen through one view per element type, and the rest of
 * their keys where longer than {@linkcode KEY_INLINE}.
 */
export class RecordChunk {
  readonly i32: Int32Array;
  readonly u32: Uint32Array;
  readonly u8: Uint8Array;
  readonly f64: Float64Array;
  /** {@linkcode KEY_SPILL} bytes per slot: none until a key of the chunk needs them. */
  spill: Uint8Array | null = null;

  constructor(slots = CHUNK_SLOTS) {
    const buffer = new ArrayBuffer(slots * RECORD_BYTES);
    this.i32 = new Int32Array(buffer);
    this.u32 = new Uint32Array(buffer);
    this.u8 = new Uint8Array(buffer);
    this.f64 = new Float64Array(buffer);
  }

  /** Where `slot`'s spilled key bytes start in {@linkcode RecordChunk.spill}. */
  static spillAt(slot: number): number {
    return (slot & CHUNK_MASK) * KEY_SPILL;
  }
}

/** No records: what a handle that is not bound to a connection reads. */
export const NO_RECORDS = new RecordChunk(0);

/** All records, by slot number; slots are handed out and taken back in O(1). */
export class Records {
  /**
   * Not `[]`, an array of small integers until its first chunk changed its map: the compiled
   * {@linkcode Records.alloc} was thrown away at the first connection of every comparator,
   * the real one's after the warm-up too (tests/warm_code_test.ts).
   */
  readonly #chunks: RecordChunk[] = objectArray();
  /** Slots ever handed out: the next fresh slot. */
  #fresh = 0;
  /** The most recently freed slot (linked through BUCKET_NEXT), or -1. */
  #free = -1;

  /** Bytes of all chunks and their spill arrays (off the V8 heap). */
  get byteLength(): number {
    let bytes = this.#chunks.length * CHUNK_SLOTS * RECORD_BYTES;
    for (const chunk of this.#chunks) bytes += chunk.spill?.byteLength ?? 0;
    return bytes;
  }

  /** The chunk that holds `slot`'s record (at {@linkcode wordOf}). */
  chunkOf(slot: number): RecordChunk {
    return this.#chunks[slot >>> CHUNK_SHIFT];
  }

  /** A slot whose record is all zeros. */
  alloc(): number {
    let slot = this.#free;
    if (slot >= 0) {
      this.#free = this.get(slot, BUCKET_NEXT);
      const at = wordOf(slot);
      this.chunkOf(slot).i32.fill(0, at, at + RECORD_WORDS);
    } else {
      slot = this.#fresh++;
      if ((slot >>> CHUNK_SHIFT) === this.#chunks.length) this.#chunks.push(new RecordChunk());
    }
    return slot;
  }

  /** Takes `slot` back. Its bytes stay as they were until it is handed out again. */
  free(slot: number): void {
    this.set(slot, BUCKET_NEXT, this.#free);
    this.#free = slot;
  }

  /** A 32-bit field of `slot`, as int32. */
  get(slot: number, word: number): number {
    return this.chunkOf(slot).i32[wordOf(slot) + word];
  }

  set(slot: number, word: number, value: number): void {
    this.chunkOf(slot).i32[wordOf(slot) + word] = value;
  }

  /** The flag bits of `slot`. */
  flags(slot: number): number {
    return this.get(slot, FLAGS);
  }

  /** The first-seen position of `slot`'s connection. */
  id(slot: number): number {
    return this.chunkOf(slot).f64[wordOf(slot) >>> 1];
  }

  /** Fills a fresh record: id, key bytes (the first `keyLen` of `key`), hash and flags. */
  fill(slot: number, id: number, key: Uint8Array, keyLen: number, hash: number, flags: number) {
    const chunk = this.chunkOf(slot);
    const at = wordOf(slot);
    const bytes = at << 2;
    chunk.f64[at >>> 1] = id;
    chunk.i32[at + HASH] = hash;
    chunk.i32[at + FLAGS] = flags;
    chunk.u8[bytes + KEY_LEN_BYTE] = keyLen;
    const inline = keyLen < KEY_INLINE ? keyLen : KEY_INLINE;
    for (let i = 0; i < inline; i++) chunk.u8[bytes + KEY_BYTE + i] = key[i];
    if (keyLen > KEY_INLINE) {
      const spill = chunk.spill ??= new Uint8Array(CHUNK_SLOTS * KEY_SPILL);
      const at = RecordChunk.spillAt(slot) - KEY_INLINE;
      for (let i = KEY_INLINE; i < keyLen; i++) spill[at + i] = key[i];
    }
  }

  /** True when `slot`'s key is the first `keyLen` bytes of `key`. */
  hasKey(slot: number, key: Uint8Array, keyLen: number): boolean {
    const chunk = this.chunkOf(slot);
    const u8 = chunk.u8;
    const bytes = wordOf(slot) << 2;
    if (u8[bytes + KEY_LEN_BYTE] !== keyLen) return false;
    const at = bytes + KEY_BYTE;
    const inline = keyLen < KEY_INLINE ? keyLen : KEY_INLINE;
    for (let i = 0; i < inline; i++) if (u8[at + i] !== key[i]) return false;
    if (keyLen > KEY_INLINE) {
      const spill = chunk.spill!;
      const from = RecordChunk.spillAt(slot) - KEY_INLINE;
      for (let i = KEY_INLINE; i < keyLen; i++) if (spill[from + i] !== key[i]) return false;
    }
    return true;
  }
}

/** The key of `slot`, whose record is in `chunk` (a copy). */
export function keyOf(chunk: RecordChunk, slot: number): Uint8Array {
  const bytes = wordOf(slot) << 2;
  const keyLen = chunk.u8[bytes + KEY_LEN_BYTE];
  const key = new Uint8Array(keyLen);
  const inline = keyLen < KEY_INLINE ? keyLen : KEY_INLINE;
  key.set(chunk.u8.subarray(bytes + KEY_BYTE, bytes + KEY_BYTE + inline));
  if (keyLen > KEY_INLINE) {
    const at = RecordChunk.spillAt(slot);
    key.set(chunk.spill!.subarray(at, at + keyLen - KEY_INLINE), KEY_INLINE);
  }
  return key;
}
