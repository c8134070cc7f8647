/**
 * Connection records (issue 11: an idle connection should cost at most 200 bytes, as in QEMU):
 * the state of every connection in one fixed-size record of typed-array memory, off the V8
 * heap. Objects on the heap cost about twice their bytes in resident memory (the old
 * generation grows in steps, with room to spare); a record costs exactly its bytes.
 *
 * Records live in chunks of 4,096, allocated as the table first needs them and never copied
 * (no doubling), and freed slots are reused, most recently freed first. A slot's chunk stays
 * allocated at the table's high-water mark: at most 88 bytes x `max-connections` (5.5 MiB
 * for the default 65,536).
 *
 * @module
 */

import { KEY_MAX } from "../packet/parse.ts";

/** Bytes per record: a multiple of 8, for the float64 id. */
export const RECORD_BYTES = 88;
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
/** Byte offsets: the key's bytes (up to KEY_MAX) and its length. */
export const KEY_BYTE = 44;
export const KEY_LEN_BYTE = 86;

if (KEY_BYTE + KEY_MAX > KEY_LEN_BYTE || KEY_LEN_BYTE >= RECORD_BYTES) {
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

/** 4,096 records in one ArrayBuffer, seen through one view per element type. */
export class RecordChunk {
  readonly i32: Int32Array;
  readonly u32: Uint32Array;
  readonly u8: Uint8Array;
  readonly f64: Float64Array;

  constructor(slots = CHUNK_SLOTS) {
    const buffer = new ArrayBuffer(slots * RECORD_BYTES);
    this.i32 = new Int32Array(buffer);
    this.u32 = new Uint32Array(buffer);
    this.u8 = new Uint8Array(buffer);
    this.f64 = new Float64Array(buffer);
  }
}

/** No records: what a handle that is not bound to a connection reads. */
export const NO_RECORDS = new RecordChunk(0);

/** All records, by slot number; slots are handed out and taken back in O(1). */
export class Records {
  readonly #chunks: RecordChunk[] = [];
  /** Slots ever handed out: the next fresh slot. */
  #fresh = 0;
  /** The most recently freed slot (linked through BUCKET_NEXT), or -1. */
  #free = -1;

  /** Bytes of all chunks (off the V8 heap). */
  get byteLength(): number {
    return this.#chunks.length * CHUNK_SLOTS * RECORD_BYTES;
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
    for (let i = 0; i < keyLen; i++) chunk.u8[bytes + KEY_BYTE + i] = key[i];
  }

  /** True when `slot`'s key is the first `keyLen` bytes of `key`. */
  hasKey(slot: number, key: Uint8Array, keyLen: number): boolean {
    const u8 = this.chunkOf(slot).u8;
    const bytes = wordOf(slot) << 2;
    if (u8[bytes + KEY_LEN_BYTE] !== keyLen) return false;
    const at = bytes + KEY_BYTE;
    for (let i = 0; i < keyLen; i++) if (u8[at + i] !== key[i]) return false;
    return true;
  }
}
