/**
 * Throughput of framed traffic over the candidate TLS stacks (SPEC 11), to choose one:
 * plain TCP (the baseline), rustls behind Deno.listenTls/Deno.connectTls (server
 * authentication only: Deno.listenTls cannot ask for client certificates), and node:tls as
 * src/wire/tls.ts uses it (mutual TLS), also with a Deno.connectTls client.
 *
 *   deno run -A bench/tls.ts [--seconds 3] [--sizes 64,1000,65536]
 *
 * A sender process connects and writes colo frames (u32 length + bytes) in 256 KiB batches
 * as fast as the receiver takes them; this process listens, reads into one 256 KiB buffer and
 * decodes every frame with the program's FrameDecoder. One row per stack and frame size, with
 * the CPU both processes used (frames per receiver CPU-second holds up better than frames/s on
 * a loaded machine).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { makeCreds, removeCreds } from "../tests/support/tls_creds.ts";
import { Logger } from "../src/log.ts";
import { parseAddress } from "../src/wire/address.ts";
import { FrameDecoder } from "../src/wire/codec.ts";
import { TlsTransport } from "../src/wire/tls.ts";
import { loadCredentials } from "../src/wire/tls_creds.ts";
import type { Conn, Listener } from "../src/wire/transport.ts";
import { readCpuSeconds } from "./proc.ts";

const STACKS = ["tcp", "deno-tls", "node-tls", "node-tls+deno-connect"] as const;
type Stack = typeof STACKS[number];
const BATCH = 256 * 1024;

/** A Deno connection seen through {@linkcode Conn}. */
function denoConn(c: Deno.Conn): Conn {
  return {
    read: (p) => c.read(p),
    write: (p) => c.write(p),
    close: () => c.close(),
    peer: "bench",
  };
}

function transport(dir: string): TlsTransport {
  const creds = loadCredentials(dir, { server: true, client: true });
  return new TlsTransport({ creds, authz: ["O=Example,CN=client"], log: new Logger("error") });
}

async function listen(stack: Stack, dir: string): Promise<Listener> {
  const read = (f: string) => Deno.readTextFileSync(`${dir}/${f}`);
  if (stack === "tcp" || stack === "deno-tls") {
    const l = stack === "tcp" ? Deno.listen({ hostname: "127.0.0.1", port: 0 }) : Deno.listenTls({
      hostname: "127.0.0.1",
      port: 0,
      cert: read("server-cert.pem"),
      key: read("server-key.pem"),
    });
    return {
      accept: async () => denoConn(await l.accept()),
      close: () => l.close(),
      boundText: `127.0.0.1:${(l.addr as Deno.NetAddr).port}`,
    };
  }
  return await transport(dir).listen(parseAddress("tls-listen:127.0.0.1:0"));
}

async function connect(stack: Stack, dir: string, port: number): Promise<Conn> {
  const read = (f: string) => Deno.readTextFileSync(`${dir}/${f}`);
  if (stack === "tcp") return denoConn(await Deno.connect({ hostname: "127.0.0.1", port }));
  if (stack === "node-tls") {
    return await transport(dir).connect(
      parseAddress(`tls:127.0.0.1:${port}`),
      new AbortController().signal,
    );
  }
  const conn = await Deno.connectTls({
    hostname: "127.0.0.1",
    port,
    caCerts: [read("ca-cert.pem")],
    cert: read("client-cert.pem"),
    key: read("client-key.pem"),
  });
  await conn.handshake();
  return denoConn(conn);
}

async function send(stack: Stack, dir: string, port: number, size: number): Promise<void> {
  const conn = await connect(stack, dir, port);
  const batch = new Uint8Array(
    Math.max(BATCH, size + 4) - (Math.max(BATCH, size + 4) % (size + 4)),
  );
  const view = new DataView(batch.buffer);
  for (let o = 0; o < batch.length; o += size + 4) view.setUint32(o, size);
  try {
    while (true) {
      for (let o = 0; o < batch.length;) o += await conn.write(batch.subarray(o));
    }
  } catch {
    // the receiver closed: done
  }
  conn.close();
}

async function receive(stack: Stack, dir: string, size: number, seconds: number) {
  const listener = await listen(stack, dir);
  const port = Number(listener.boundText.split(":").pop());
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", import.meta.filename!, "--role", "send", "--stack", stack, "--dir", dir],
    env: { BENCH_PORT: String(port), BENCH_SIZE: String(size) },
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  const conn = await listener.accept();
  let frames = 0;
  const decoder = new FrameDecoder({
    onFrame: () => {
      frames++;
    },
  }, false);
  const buf = new Uint8Array(BATCH);
  let bytes = 0;
  const warmEnd = performance.now() + 500;
  while (performance.now() < warmEnd) decoder.push(buf.subarray(0, (await conn.read(buf))!));
  frames = 0;
  const start = performance.now();
  const cpu0 = [readCpuSeconds("self") ?? 0, readCpuSeconds(child.pid) ?? 0];
  const end = start + seconds * 1000;
  while (performance.now() < end) {
    const n = await conn.read(buf);
    if (n === null) break;
    bytes += n;
    decoder.push(buf.subarray(0, n));
  }
  const elapsed = (performance.now() - start) / 1000;
  const recvCpu = (readCpuSeconds("self") ?? 0) - cpu0[0];
  const sendCpu = (readCpuSeconds(child.pid) ?? 0) - cpu0[1];
  conn.close();
  listener.close();
  await child.status;
  return {
    mbps: (bytes * 8) / elapsed / 1e6,
    fps: frames / elapsed,
    recvCpu: recvCpu / elapsed,
    sendCpu: sendCpu / elapsed,
    framesPerRecvCpu: frames / recvCpu,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      role: { type: "string" },
      stack: { type: "string" },
      dir: { type: "string" },
      seconds: { type: "string", default: "3" },
      sizes: { type: "string", default: "64,1000,65536" },
      stacks: { type: "string", default: STACKS.join(",") },
    },
  });
  if (values.role === "send") {
    const port = Number(Deno.env.get("BENCH_PORT"));
    const size = Number(Deno.env.get("BENCH_SIZE"));
    return await send(values.stack as Stack, values.dir!, port, size);
  }
  const creds = await makeCreds();
  try {
    console.log(
      "| stack | frame bytes | Mbit/s | frames/s | CPU receiver | CPU sender | frames per receiver CPU-s |",
    );
    console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (const stack of values.stacks.split(",") as Stack[]) {
      for (const size of values.sizes.split(",").map(Number)) {
        const r = await receive(stack, creds.dir, size, Number(values.seconds));
        const pct = (x: number) => `${(x * 100).toFixed(0)}%`;
        console.log(
          `| ${stack} | ${size} | ${r.mbps.toFixed(0)} | ${r.fps.toFixed(0)} | ${
            pct(r.recvCpu)
          } | ${pct(r.sendCpu)} | ${r.framesPerRecvCpu.toFixed(0)} |`,
        );
      }
    }
  } finally {
    await removeCreds(creds);
  }
}

if (import.meta.main) await main();
