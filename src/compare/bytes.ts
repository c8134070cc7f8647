/**
 * Byte-range equality for payload comparison.
 *
 * @module
 */

/**
 * True when `a[ao, ao+len)` equals `b[bo, bo+len)`. A range that runs past either array is
 * never equal (a malformed or misaligned segment must not read out of bounds).
 */
export function bytesEqual(
  a: Uint8Array,
  ao: number,
  b: Uint8Array,
  bo: number,
  len: number,
): boolean {
  if (ao + len > a.length || bo + len > b.length) return false;
  for (let i = 0; i < len; i++) {
    if (a[ao + i] !== b[bo + i]) return false;
  }
  return true;
}
