/**
 * glibc through FFI, for what Deno does not offer: the keepalive timing (src/wire/keepalive.ts)
 * and giving malloc's free memory back (src/malloc.ts). Opened at start, while the `ffi`
 * permission is still granted; src/permissions.ts revokes it afterwards, and what was opened
 * stays callable.
 *
 * @module
 */

/**
 * libc's `symbols`, or why they cannot be had, as a sentence about `purpose` (the keepalive
 * timing's log line says it): not Linux, no `ffi` permission, or no such library or symbol.
 */
export function openLibc<S extends Deno.ForeignLibraryInterface>(
  symbols: S,
  purpose: string,
): Deno.DynamicLibrary<S>["symbols"] | string {
  if (Deno.build.os !== "linux") return `${purpose} is set on Linux only (${Deno.build.os})`;
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    return `no ffi permission to set ${purpose}`;
  }
  try {
    return Deno.dlopen("libc.so.6", symbols).symbols;
  } catch (error) {
    return `libc.so.6: ${error instanceof Error ? error.message : error}`;
  }
}
