/**
 * Run inside a fresh network namespace (see tests/wire/keepalive_test.ts), with the kernel's
 * keepalive defaults: the real program serves a TCP notify-dev peer and writes its outdev to a
 * TCP listener of ours; its inputs come over unix sockets. Then the loopback goes down, so
 * both TCP peers are gone without a FIN or RST: the notify-dev peer is silent, and what the
 * program writes to outdev afterwards is never acknowledged. Prints how long the program took
 * to let go of each.
 *
 * @module
 */

import { encodeFrame } from "../../src/wire/codec.ts";
import { connectUnixRetry } from "./net.ts";
import { frame } from "./packets.ts";
import { startProgram } from "./program.ts";

const kernelKeepaliveS = Number(
  (await Deno.readTextFile("/proc/sys/net/ipv4/tcp_keepalive_time")).trim(),
);
const dir = await Deno.makeTempDir({ prefix: "dead-peer-" });
const outdev = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const program = await startProgram({
  endpoints: [
    "--primary-in",
    `unix-listen:${dir}/primary`,
    "--secondary-in",
    `unix-listen:${dir}/secondary`,
    "--outdev",
    `tcp:127.0.0.1:${outdev.addr.port}`,
    "--notify-dev",
    "tcp-listen:127.0.0.1:0",
  ],
});
// outdev's peer: takes the connection, never reads (nothing to acknowledge once lo is down).
const outdevPeer = await outdev.accept();
const notify = await Deno.connect({ hostname: "127.0.0.1", port: program.ports["notify-dev"] });
const primary = await connectUnixRetry(`${dir}/primary`);
const secondary = await connectUnixRetry(`${dir}/secondary`);
for (const endpoint of ["primary-in", "secondary-in", "outdev", "notify-dev"]) {
  await program.waitForLine(new RegExp(`event=peer-connected endpoint=${endpoint} `));
}

await new Deno.Command("ip", { args: ["link", "set", "lo", "down"] }).output();
const down = performance.now();
// Identical frames on both inputs are released to outdev, where nothing acknowledges them.
const f = encodeFrame(frame({ udp: { payload: "x".repeat(1000) } }));
for (let i = 0; i < 64; i++) {
  await primary.write(f);
  await secondary.write(f);
}
const noticedMs: Record<string, number> = {};
await Promise.all(["notify-dev", "outdev"].map(async (endpoint) => {
  await program.waitForLine(new RegExp(`event=peer-disconnected endpoint=${endpoint} `), 120_000);
  noticedMs[endpoint] = Math.round(performance.now() - down);
}));

const { stderr } = await program.stop();
for (const c of [notify, primary, secondary, outdevPeer, outdev]) c.close();
await Deno.remove(dir, { recursive: true });
console.error(stderr);
console.log(JSON.stringify({ kernelKeepaliveS, noticedMs }));
