/**
 * Deno's socket read op, called past `Deno.Conn.read` (issue 11), and a socket's file
 * descriptor (for src/wire/poll_wait.ts). In Deno 2.9.6 `Conn.read` is an async wrapper around
 * the op that adds each pending read's promise to a `Set` and deletes it when the read
 * completes. Once one read has waited across two scavenges (any quiet moment), that Set's
 * table lives in V8's old generation, and from then on every read leaves about 40-120 bytes
 * there that only a full collection frees (bench/README.md, "Old-generation garbage from
 * Deno's own reads"). The op itself leaves none, and costs less CPU per read.
 *
 * The op, the socket's resource id and its descriptor are Deno internals
 * (`Deno[Deno.internal].core.read`, the `Deno.internal.rid` and `Deno.internal.fd`
 * properties). Where either is missing (another Deno), sockets are read through `Conn.read` as
 * before; `tests/wire/plain_test.ts` fails on the pinned Deno if the op is not found.
 *
 * @module
 */

/** Reads into `p` (never empty); resolves to the bytes read, 0 at the end of the stream. */
export type ReadOp = (p: Uint8Array) => Promise<number>;

type CoreRead = (rid: number, p: Uint8Array) => Promise<number>;

interface Core {
  read?: unknown;
  hasPromise?: unknown;
  promiseIdSymbol?: unknown;
}

const core: Core | null = (() => {
  const internal = (Deno as unknown as { internal?: symbol }).internal;
  if (typeof internal !== "symbol") return null;
  return (Deno as unknown as Record<symbol, { core?: Core }>)[internal]?.core ?? null;
})();

const coreRead: CoreRead | null = typeof core?.read === "function" ? core.read as CoreRead : null;

/** Deno's key to a waiting op's promise id, and its check that the op has not completed. */
const promiseId = typeof core?.promiseIdSymbol === "symbol" ? core.promiseIdSymbol : null;
const hasPromise = typeof core?.hasPromise === "function"
  ? core.hasPromise as (id: number) => boolean
  : null;

/**
 * The id of the op behind `read` (from {@linkcode readRid}) while it waits for its socket, or
 * -1: it settled at once (Deno keeps no id then), or this Deno does not tell.
 */
export function waitingOpId(read: Promise<unknown>): number {
  if (promiseId === null || hasPromise === null) return -1;
  const id = (read as unknown as Record<symbol, unknown>)[promiseId];
  return typeof id === "number" ? id : -1;
}

/**
 * Shows {@linkcode waitingOpId} a read that settled at once (Deno gives a plain promise then,
 * without the id): the warm-up calls it once its peers' reads have all waited (they share its
 * thread, so no byte is ever there before a read asks). Under traffic, a read that found its
 * bytes already there was the first such promise V8 saw there, and it threw away the input
 * pumps' compiled read loop (tests/warm_code_test.ts).
 */
export function teachSettledAtOnce(): void {
  const settled = Promise.resolve(0);
  for (let i = 0; i < 16; i++) waitingOpId(settled);
}

/**
 * True while op `id` (from {@linkcode waitingOpId}) has not been settled: no continuation of
 * its `await` is queued. Deno settles an op's promise in the turn whose poll found it done.
 */
export function opWaiting(id: number): boolean {
  return id >= 0 && hasPromise!(id);
}

/** The properties under which Deno keeps a socket's resource id and descriptor. */
const keys = new Map<string, symbol | null>();

/** `conn`'s number under the internal property `name`, or null. */
function internalNumber(conn: Deno.Conn, name: string): number | null {
  let key = keys.get(name);
  if (key === undefined) {
    key = Object.getOwnPropertySymbols(conn).find((s) => s.description === name) ?? null;
    keys.set(name, key);
  }
  if (key === null) return null;
  const value = (conn as unknown as Record<symbol, unknown>)[key];
  return typeof value === "number" ? value : null;
}

/** `conn`'s file descriptor (Deno's `Deno.internal.fd` property), or null. */
export function socketFd(conn: Deno.Conn): number | null {
  const fd = internalNumber(conn, "Deno.internal.fd");
  return fd !== null && fd >= 0 ? fd : null;
}

/**
 * The resource id to give {@linkcode readRid} for `conn`, or null where this Deno does not
 * expose the op or the id.
 */
export function readableRid(conn: Deno.Conn): number | null {
  return coreRead === null ? null : internalNumber(conn, "Deno.internal.rid");
}

/** Reads socket `rid` (from {@linkcode readableRid}) into `p`, through Deno's read op. */
export function readRid(rid: number, p: Uint8Array): Promise<number> {
  return coreRead!(rid, p);
}

/** `conn`'s read op, or null where this Deno does not expose it. */
export function readOp(conn: Deno.Conn): ReadOp | null {
  const rid = readableRid(conn);
  return rid === null ? null : (p) => readRid(rid, p);
}
