/**
 * What the lab and the second reference QEMU download or build once and keep outside the
 * repository: where (`$XDG_CACHE_HOME/colo-compare`, else `~/.cache/colo-compare`), and the
 * SHA-256 that keys or checks it.
 *
 * @module
 */

/** `$XDG_CACHE_HOME/colo-compare`, else `~/.cache/colo-compare`. */
export function cacheRoot(env: (name: string) => string | undefined = Deno.env.get): string {
  return `${env("XDG_CACHE_HOME") || `${env("HOME") ?? "/tmp"}/.cache`}/colo-compare`;
}

/** Lowercase hex SHA-256 of `bytes`. */
export async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}
