/**
 * `Deno.Conn.read` against Deno's read op (src/wire/read_op.ts), on one loopback connection:
 * old-generation bytes left per read once a read has waited across scavenges, and the time of
 * a 512-byte round trip (a write, then reads until it has all arrived). Run once per way,
 * alternating, after a Deno upgrade:
 *
 * ```
 * deno run -A bench/read_op.ts conn 200000
 * deno run -A bench/read_op.ts op 200000
 * ```
 *
 * @module
 */

import v8 from "node:v8";
import { readOp } from "../src/wire/read_op.ts";

const way = Deno.args[0] ?? "op";
const rounds = Number(Deno.args[1] ?? 100_000);
if (way !== "conn" && way !== "op") throw new Error(`way: conn or op, not ${way}`);

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const [ours, peer] = await Promise.all([
  listener.accept(),
  Deno.connect({ hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port }),
]);
const op = readOp(ours);
if (way === "op" && op === null) throw new Error(`no read op on Deno ${Deno.version.deno}`);
const read = way === "conn" ? (p: Uint8Array) => ours.read(p) : op!;

const oldSpace = () =>
  v8.getHeapSpaceStatistics().find((s) => s.space_name === "old_space")!.space_used_size;

// One read waits while scavenges run: what promotes Conn.read's pending-read Set.
const buf = new Uint8Array(64 * 1024);
const waiting = read(buf);
let junk: unknown[] = [];
for (let i = 0; i < 2_000_000; i++) {
  junk.push({ i, a: [i] });
  if (junk.length > 1000) junk = [];
}
await peer.write(new Uint8Array(1));
await waiting;

const one = new Uint8Array(512);
const before = oldSpace();
const start = performance.now();
for (let i = 0; i < rounds; i++) {
  await peer.write(one);
  for (let got = 0; got < one.length;) got += (await read(buf))!;
}
const us = (performance.now() - start) * 1000 / rounds;
const perRead = (oldSpace() - before) / rounds;
console.log(
  `${way}: ${rounds} round trips, ${us.toFixed(2)} us each, ` +
    `${perRead.toFixed(1)} B of old generation per read (Deno ${Deno.version.deno})`,
);
ours.close();
peer.close();
listener.close();
