/**
 * A pass-through "comparator" that compares nothing: the machine-limit baseline of the
 * benchmark. It forwards the primary-in byte stream to outdev unchanged (the framing passes
 * through because it is byte-identical), reads and discards secondary-in, and accepts a
 * notify-dev peer that it never writes to. With `--discard` it forwards nothing: a sink that
 * shows how fast the load generator can send.
 *
 * Deno, because a read loop into one reused 256 KiB buffer with awaited writes moved about
 * 1.3x the frames of a Node.js `net` forwarder (which allocates a fresh Buffer per 64 KiB
 * 'data' event) here, at less than half its RSS (bench/README.md). Its command line and stderr
 * lines mirror the comparator's:
 *
 *   deno run --allow-net bench/forwarder.ts --primary-in tcp-listen:127.0.0.1:0 \
 *     --secondary-in ... --outdev ... [--notify-dev ...] [--discard]
 *
 * prints `event=listening endpoint=NAME address=HOST:PORT` per endpoint, then `event=ready`.
 *
 * @module
 */

const ENDPOINTS = ["primary-in", "secondary-in", "outdev", "notify-dev"] as const;
type EndpointName = typeof ENDPOINTS[number];

/** Bytes read per call: many frames per read, as the comparators do. */
const READ_SIZE = 256 * 1024;

function fail(message: string): never {
  console.error(`level=error event=usage msg="${message}"`);
  Deno.exit(2);
}

function parse(
  args: string[],
): { addresses: Map<EndpointName, Deno.ListenOptions>; discard: boolean } {
  const addresses = new Map<EndpointName, Deno.ListenOptions>();
  let discard = false;
  for (let i = 0; i < args.length; i++) {
    const name = args[i].replace(/^--/, "");
    if (name === "discard") {
      discard = true;
      continue;
    }
    if (!(ENDPOINTS as readonly string[]).includes(name) || i + 1 >= args.length) {
      fail(`unknown argument ${args[i]}`);
    }
    const m = args[++i].match(/^tcp-listen:(.*):(\d+)$/);
    if (!m) fail(`--${name}: only tcp-listen:HOST:PORT is supported`);
    addresses.set(name as EndpointName, {
      hostname: m[1].replace(/^\[|\]$/g, ""),
      port: Number(m[2]),
    });
  }
  for (const name of ENDPOINTS.slice(0, 3)) {
    if (!addresses.has(name)) fail(`--${name} is required`);
  }
  return { addresses, discard };
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let o = 0;
  while (o < data.length) o += await conn.write(data.subarray(o));
}

/** The connected outdev peer, if any. */
let outdev: Deno.Conn | null = null;

/** Reads a peer until it leaves; primary-in bytes go to outdev unless discarding. */
async function pump(conn: Deno.Conn, forward: boolean): Promise<void> {
  const buf = new Uint8Array(READ_SIZE);
  try {
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      // Awaiting the write before the next read is the back-pressure.
      if (forward && outdev !== null) await writeAll(outdev, buf.subarray(0, n));
    }
  } catch {
    // the peer (or outdev) went away
  }
  try {
    conn.close();
  } catch { /* already closed */ }
}

async function serve(name: EndpointName, listener: Deno.Listener, discard: boolean) {
  for await (const conn of listener) {
    (conn as Deno.TcpConn).setNoDelay(true);
    if (name === "outdev") {
      outdev = conn;
      pump(conn, false).then(() => {
        if (outdev === conn) outdev = null;
      });
    } else {
      pump(conn, name === "primary-in" && !discard);
    }
  }
}

if (import.meta.main) {
  const { addresses, discard } = parse(Deno.args);
  const serving: Promise<void>[] = [];
  for (const [name, options] of addresses) {
    let listener: Deno.Listener;
    try {
      listener = Deno.listen({ ...options, transport: "tcp" });
    } catch (e) {
      fail(`--${name}: ${e instanceof Error ? e.message : e}`);
    }
    const a = listener.addr as Deno.NetAddr;
    console.error(`level=info event=listening endpoint=${name} address=${a.hostname}:${a.port}`);
    serving.push(serve(name, listener, discard));
  }
  console.error("level=info event=ready");
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    Deno.addSignalListener(signal, () => Deno.exit(0));
  }
  await Promise.all(serving);
}
