/**
 * The compare clock: monotonic milliseconds that stand still while outdev is congested.
 * Both inputs are paused then (SPEC 8), so the side that was a little ahead holds frames whose
 * partners wait unread in the other input; they must not time out because the client reads
 * slowly (no timeout checkpoint on identical streams, however slow the client).
 *
 * @module
 */

/** Time for the engine: arrival stamps, the expiry scan, the checkpoint retry. */
export class CompareClock {
  readonly #real: () => number;
  /** Time spent held, in all (ms) (-0: a double from the start; see src/comparator.ts, #trimCheckedAt). */
  #frozenMs = -0;
  #since: number | null = null;

  /** `real`: the monotonic clock (`performance.now` by default). */
  constructor(real: () => number = () => performance.now()) {
    this.#real = real;
  }

  now(): number {
    return this.#since === null ? this.#real() - this.#frozenMs : this.#since - this.#frozenMs;
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
