/**
 * Least privilege (SPEC 11): once the endpoints are bound and the credentials read, the
 * program gives back every Deno permission it no longer needs, so a bug on the input path
 * cannot read files, spawn programs, read the environment or load native code.
 *
 * `ffi` goes too: libc's socket-option calls for the keepalive timing (src/wire/keepalive.ts)
 * and `malloc_trim` (src/malloc.ts) were opened before and stay callable, but nothing more can
 * be loaded.
 *
 * What stays: `net`; `read` and `write` only while a `unix:` endpoint must reconnect (Deno
 * checks both on every unix connect), `write` also while a `unix-listen:` socket file must be
 * removed at exit. Deno cannot narrow a blanket grant to some paths (revoking one path of
 * `--allow-read` changes nothing), so these stay whole or go whole.
 *
 * @module
 */

import type { Address } from "./wire/address.ts";

/** The permissions the program is ever granted (compile.sh) or may be (`deno run -A`). */
const NAMES = ["read", "write", "net", "env", "run", "ffi", "sys", "import"] as const;
type Name = typeof NAMES[number];

/** Which permissions the running program still needs for `addresses`. */
export function neededPermissions(addresses: readonly Address[]): Set<Name> {
  const needed = new Set<Name>(["net"]);
  for (const a of addresses) {
    if (a.transport !== "unix") continue;
    needed.add("write");
    if (!a.listen) needed.add("read");
  }
  return needed;
}

/**
 * Revokes every permission `addresses` do not need and returns the state of each, as queried
 * afterwards (`granted`, or `prompt`, which without a terminal to ask means refused).
 */
export function dropPermissions(addresses: readonly Address[]): Record<Name, Deno.PermissionState> {
  const needed = neededPermissions(addresses);
  const states = {} as Record<Name, Deno.PermissionState>;
  for (const name of NAMES) {
    if (!needed.has(name)) Deno.permissions.revokeSync({ name });
    states[name] = Deno.permissions.querySync({ name }).state;
  }
  return states;
}
