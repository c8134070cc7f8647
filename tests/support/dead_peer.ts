/**
 * Run inside a fresh network namespace (see tests/wire/keepalive_test.ts): an endpoint serves
 * one TCP peer, then the loopback goes down, so the peer is dead without a FIN or RST. Prints
 * how long the endpoint took to notice, from TCP keepalive alone.
 *
 * @module
 */

import { Logger } from "../../src/log.ts";
import { parseAddress } from "../../src/wire/address.ts";
import { Endpoint } from "../../src/wire/endpoint.ts";
import { PlainTransport } from "../../src/wire/plain.ts";

const e = new Endpoint(
  "primary-in",
  parseAddress("tcp-listen:127.0.0.1:0"),
  new PlainTransport(),
  new Logger("error"),
);
await e.bind();
let attached!: () => void;
let gone!: () => void;
const ready = new Promise<void>((r) => attached = r);
const ended = new Promise<void>((r) => gone = r);
e.onPeer((connected) => connected ? attached() : gone());
const serving = e.serve(async (conn) => {
  while ((await conn.read(new Uint8Array(64))) !== null);
});
const port = Number(e.boundText.split(":").pop());
const peer = await Deno.connect({ hostname: "127.0.0.1", port });
await ready;
await new Deno.Command("ip", { args: ["link", "set", "lo", "down"] }).output();
const down = performance.now();
await ended;
console.log(
  JSON.stringify({ noticedMs: Math.round(performance.now() - down), connected: e.connected }),
);
e.close();
peer.close();
await serving;
