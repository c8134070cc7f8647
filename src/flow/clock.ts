/**
 * The compare clock: monotonic milliseconds that stand still while outdev is congested.
 * Both inputs are paused then (SPEC 8), so the side that was a little ahead holds frames whose
 * partners wait unread in the other input; they must not time out because the client reads
 * slowly (no timeout checkpoint on identical streams, however slow the client).
 *
 * @module
 */

/** The monotonic clock (ms): one function for every comparator's clock. */
const monotonic = (): number => performance.now();

/** Time for the engine: arrival stamps, the expiry scan, the checkpoint retry. */
export class CompareClock {
  readonly #real: () => number;
  /** Engine milliseconds per real one (the warm-up's throwaway comparators run faster). */
  readonly #speed: number;
  /**
   * Time spent held, in all (ms) (-0: a double from the start; see src/comparator.ts,
   * #trimCheckedAt).
   */
  #frozenMs = -0;
  #since: number | null = null;

  /**
   * `real`: the monotonic clock (`performance.now` by default). `speed`: engine milliseconds
   * per real one; src/warmup.ts runs its comparators' periodic work (the expiry scan's pool and
   * table trims, ten seconds apart) many times within its second.
   */
  constructor(real: () => number = monotonic, speed = 1) {
    this.#real = real;
    this.#speed = speed;
  }

  now(): number {
    const ms = this.#since === null ? this.#real() - this.#frozenMs : this.#since - this.#frozenMs;
    return ms * this.#speed;
  }

  /** Stops the clock (`true`) or lets it run on from where it stopped (`false`). */
  hold(on: boolean): void {
    if (on && this.#since === null) this.#since = this.#real();
    else if (!on && this.#since !== null) {
      this.#frozenMs += this.#real() - this.#since;
      this.#since = null;
    }
  }
}
