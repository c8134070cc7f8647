/**
 * A Prometheus histogram with fixed bucket bounds: `observe` is a short scan and one
 * increment, no allocation (it runs once per released frame when metrics are on).
 *
 * @module
 */

/** Bucket bounds in seconds, for times from 100 µs to 10 s. */
export const SECONDS_BUCKETS: readonly number[] = [
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

/** Counts of observations per bucket, their sum and count. */
export class Histogram {
  readonly bounds: readonly number[];
  /** Per bucket (not cumulative); the last one is +Inf. */
  readonly #counts: Float64Array;
  #sum = 0;
  #count = 0;

  constructor(bounds: readonly number[] = SECONDS_BUCKETS) {
    this.bounds = bounds;
    this.#counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && value > b[i]) i++;
    this.#counts[i]++;
    this.#sum += value;
    this.#count++;
  }

  get sum(): number {
    return this.#sum;
  }

  get count(): number {
    return this.#count;
  }

  /** Cumulative counts per bound, +Inf last (as Prometheus exposes them). */
  cumulative(): number[] {
    const out: number[] = [];
    let n = 0;
    for (const c of this.#counts) out.push(n += c);
    return out;
  }
}
