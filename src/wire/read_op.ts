/**
 * Deno's socket read op, called past `Deno.Conn.read` (issue 11). In Deno 2.9.6 `Conn.read` is
 * an async wrapper around the op that adds each pending read's promise to a `Set` and deletes
 * it when the read completes. Once one read has waited across two scavenges (any quiet
 * moment), that Set's table lives in V8's old generation, and from then on every read leaves
 * about 40-120 bytes there that only a full collection frees (bench/README.md, "Old-generation
 * garbage from Deno's own reads"). The op itself leaves none, and costs less CPU per read.
 *
 * The op and the socket's resource id are Deno internals (`Deno[Deno.internal].core.read`, the
 * `Deno.internal.rid` property). Where either is missing (another Deno), sockets are read
 * through `Conn.read` as before; `tests/wire/plain_test.ts` fails on the pinned Deno if the
 * op is not found.
 *
 * @module
 */

/** Reads into `p` (never empty); resolves to the bytes read, 0 at the end of the stream. */
export type ReadOp = (p: Uint8Array) => Promise<number>;

type CoreRead = (rid: number, p: Uint8Array) => Promise<number>;

const coreRead: CoreRead | null = (() => {
  const internal = (Deno as unknown as { internal?: symbol }).internal;
  if (typeof internal !== "symbol") return null;
  const internals = (Deno as unknown as Record<symbol, { core?: { read?: unknown } }>)[internal];
  const read = internals?.core?.read;
  return typeof read === "function" ? read as CoreRead : null;
})();

/** The property under which Deno keeps a socket's resource id, found on the first socket. */
let ridKey: symbol | null | undefined;

function ridOf(conn: Deno.Conn): number | null {
  if (ridKey === undefined) {
    ridKey = Object.getOwnPropertySymbols(conn).find((s) =>
      s.description === "Deno.internal.rid"
    ) ??
      null;
  }
  if (ridKey === null) return null;
  const rid = (conn as unknown as Record<symbol, unknown>)[ridKey];
  return typeof rid === "number" ? rid : null;
}

/** `conn`'s read op, or null where this Deno does not expose it. */
export function readOp(conn: Deno.Conn): ReadOp | null {
  if (coreRead === null) return null;
  const rid = ridOf(conn);
  if (rid === null) return null;
  return (p) => coreRead(rid, p);
}
