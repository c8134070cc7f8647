/**
 * Nudges V8 into a young-generation collection when the ArrayBuffers that `node:tls` leaves
 * behind pile up, which frees them (issue 11).
 *
 * Deno 2.9.6's `node:tls` hands every decrypted chunk over in a fresh 64 KiB ArrayBuffer, and
 * the layers under it allocate more per read and per write: buffers dead at once, but outside
 * V8's heap. A dead ArrayBuffer is freed by the next collection, young or full; but what little
 * JavaScript each chunk makes seldom fills the young generation, and the first full collection
 * waits for V8's initial global allocation limit (heap plus external bytes). Until then 40-63
 * MiB of dead buffers piled up in malloc's heap in the first second of a TLS stream: the peak
 * of the TLS bench rows (bench/README.md, "Where the TLS memory is"). Once V8's full
 * collections have started (every ~20 ms in tcp-1000-tls) they keep the pile below about 20
 * MiB; a nudge is for the time before, or whenever they lag.
 *
 * Since the transport reads into buffers of its own (src/wire/tls.ts, `readIntoOwnBuffers`),
 * the pinned Deno's reads leave none of these, and its writes none either (bench/README.md, "TLS
 * reads into buffers of ours"): the count then takes only the bytes written, and the nudge is
 * for a Deno whose `node:tls` does not let the transport read into its own buffers.
 *
 * A nudge makes short-lived objects until V8 has scavenged to place them (the young
 * generation's used bytes fell), whatever size the young generation has (`--max-semi-space-size`:
 * 2 MiB with the program's flags, up to 32 MiB with V8's own), and the scavenge frees the dead
 * young ArrayBuffers too.
 *
 * @module
 */

import v8 from "node:v8";

/** TLS bytes, read plus written, between two looks at the external memory. */
export const NUDGE_BYTES = 4 * 2 ** 20;
/**
 * Growth of the external memory (ArrayBuffers, bytes) past its lowest level since the last
 * nudge that calls for the next one.
 */
export const NUDGE_GROWTH = 24 * 2 ** 20;

/** Objects the nudge makes between two looks at the young generation: 32 bytes each, 256 KiB. */
const NUDGE_BATCH = 8_192;
/**
 * The most objects one nudge makes (64 MiB): more than two semi-spaces of V8's largest default
 * young generation, should no scavenge ever show.
 */
const NUDGE_MAX_OBJECTS = 2_097_152;

/**
 * Where the nudge's objects are put for a moment, a slot each in turn: objects kept in an array
 * other code can reach are really made. Written to a variable one after the other, V8's
 * optimising compiler made only the last (the loop runs long enough to be compiled while it
 * runs), and no scavenge came.
 */
const ballast: ({ n: number } | null)[] = new Array(16).fill(null);

/** Bytes in use in the young generation now. */
function youngUsed(): number {
  for (const space of v8.getHeapSpaceStatistics()) {
    if (space.space_name === "new_space") return space.space_used_size;
  }
  return 0;
}

/**
 * Allocates short-lived objects until the young generation's used bytes fall: V8 has
 * scavenged. Small objects (about 0.8 ms for 2 MiB of them, the scavenge included): arrays of
 * 64 KiB took longer.
 */
function allocateUntilScavenged(): void {
  let used = youngUsed();
  for (let made = 0; made < NUDGE_MAX_OBJECTS; made += NUDGE_BATCH) {
    for (let n = 0; n < NUDGE_BATCH; n++) ballast[n & 15] = { n };
    const now = youngUsed();
    if (now < used) break;
    used = now;
  }
  ballast.fill(null);
}

/** What a {@linkcode ScavengeNudge} is made of; tests give their own. */
export interface NudgeOptions {
  /** TLS bytes between two looks. */
  every?: number;
  /** External memory growth that calls for a nudge. */
  growth?: number;
  /** The process's external memory now (bytes). */
  external?: () => number;
  /** Makes V8 scavenge. */
  nudge?: () => void;
}

/**
 * Counts TLS bytes; after every {@linkcode NUDGE_BYTES} looks at the external memory (16 us),
 * and nudges V8 into a scavenge once it has grown {@linkcode NUDGE_GROWTH} past its lowest
 * level since the last nudge. A growth, not a level: what the pool's blocks and held frames
 * keep is external too, and live (with a fixed level of 24 MiB tcp-1000x100-tls nudged at
 * every look: 18% fewer frames per CPU-second). A lower mark nudges between V8's own
 * collections as well (a fixed 16 MiB: tcp-1000-tls 12% fewer frames per CPU-second).
 */
export class ScavengeNudge {
  readonly #every: number;
  readonly #growth: number;
  readonly #external: () => number;
  readonly #nudge: () => void;
  #since = 0;
  /** The lowest external memory seen since the last nudge (or the first look). */
  #level = Infinity;
  /** Nudges so far. */
  nudges = 0;

  constructor(options: NudgeOptions = {}) {
    this.#every = options.every ?? NUDGE_BYTES;
    this.#growth = options.growth ?? NUDGE_GROWTH;
    this.#external = options.external ?? (() => Deno.memoryUsage().external);
    this.#nudge = options.nudge ?? allocateUntilScavenged;
  }

  /** Counts `bytes` read or written over TLS; looks (and maybe nudges) once per interval. */
  count(bytes: number): void {
    this.#since += bytes;
    if (this.#since < this.#every) return;
    this.#since = 0;
    const external = this.#external();
    this.#level = Math.min(this.#level, external);
    if (external - this.#level <= this.#growth) return;
    this.nudges++;
    this.#nudge();
    this.#level = this.#external();
  }
}

/** The program's one nudge, shared by every TLS connection: the garbage is the process's. */
export const TLS_SCAVENGE = new ScavengeNudge();
