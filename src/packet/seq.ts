/**
 * Serial-number arithmetic (RFC 1982) for 32-bit TCP sequence and acknowledgement numbers:
 * every comparison of two `Seq32` values in the project goes through here, so wrap-around at
 * 2^32 is handled in one place.
 *
 * @module
 */

/** A TCP sequence or acknowledgement number: an unsigned 32-bit integer that wraps. */
export type Seq32 = number;

/** `a + n`, wrapped to 32 bits. */
export function seqAdd(a: Seq32, n: number): Seq32 {
  return (a + n) >>> 0;
}

/** True when `a` comes strictly after `b` (QEMU's `after()`). */
export function seqAfter(a: Seq32, b: Seq32): boolean {
  return ((a - b) | 0) > 0;
}

/** Signed distance from `b` to `a`, in (-2^31, 2^31]. */
export function seqDiff(a: Seq32, b: Seq32): number {
  return (a - b) | 0;
}

/** The later of two numbers in serial order (the wrap-safe max). */
export function seqMax(a: Seq32, b: Seq32): Seq32 {
  return seqAfter(b, a) ? b : a;
}

/** The earlier of two numbers in serial order (the wrap-safe min). */
export function seqMin(a: Seq32, b: Seq32): Seq32 {
  return seqAfter(b, a) ? a : b;
}
