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
 * A nudge makes more short-lived objects than the young generation holds with the program's
 * `--max-semi-space-size=2`: V8 scavenges to place them, and the scavenge frees the dead young
 * ArrayBuffers too. Where the young generation is larger (V8's defaults, without the program's
 * flags) the objects may fit, nothing is collected, and V8's own schedule stands.
 *
 * @module
 */

/** TLS bytes, read plus written, between two looks at the external memory. */
export const NUDGE_BYTES = 4 * 2 ** 20;
/**
 * Growth of the external memory (ArrayBuffers, bytes) past its lowest level since the last
 * nudge that calls for the next one.
 */
export const NUDGE_GROWTH = 24 * 2 ** 20;

/**
 * Objects the nudge makes, 16 bytes each with V8's compressed pointers: 2.2 MB, more than the
 * young generation holds with `--max-semi-space-size=2` (2 MiB at most).
 */
const NUDGE_OBJECTS = 140_000;

/**
 * Where each of the nudge's objects is put for a moment, so that no compiler leaves it out
 * (written, never read).
 */
let _ballast: { n: number } | null = null;

/**
 * Allocates more short-lived objects than the young generation can hold, each let go at once.
 * Small objects (about 0.8 ms for all, scavenges included): arrays of 64 KiB took longer.
 */
function allocatePastYoungGeneration(): void {
  for (let n = 0; n < NUDGE_OBJECTS; n++) _ballast = { n };
  _ballast = null;
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
    this.#nudge = options.nudge ?? allocatePastYoungGeneration;
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
