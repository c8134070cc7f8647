// A pass-through "comparator" that compares nothing: the machine-limit baseline of the
// benchmark. It forwards the primary-in byte stream to outdev unchanged (the framing passes
// through because it is byte-identical), reads and discards secondary-in, and accepts a
// notify-dev peer that it never writes to. With --discard it forwards nothing (a sink that
// measures how fast the load generator can send).
//
// Node.js, because its libuv socket path moved ~1.6x more bytes than a Deno read/write loop
// here (see bench/README.md). Its command line and stderr lines mirror the comparator's:
//   node bench/forwarder.mjs --primary-in tcp-listen:127.0.0.1:0 --secondary-in ... \
//     --outdev ... [--notify-dev ...] [--discard]
// prints `event=listening endpoint=NAME address=HOST:PORT` per endpoint, then `event=ready`.
import net from "node:net";
import process from "node:process";

const endpoints = ["primary-in", "secondary-in", "outdev", "notify-dev"];
const args = process.argv.slice(2);
const addresses = new Map();
let discard = false;
for (let i = 0; i < args.length; i++) {
  const name = args[i].replace(/^--/, "");
  if (name === "discard") {
    discard = true;
  } else if (endpoints.includes(name) && i + 1 < args.length) {
    const m = args[++i].match(/^tcp-listen:(.*):(\d+)$/);
    if (!m) fail(`--${name}: only tcp-listen:HOST:PORT is supported`);
    addresses.set(name, { host: m[1].replace(/^\[|\]$/g, ""), port: Number(m[2]) });
  } else {
    fail(`unknown argument ${args[i]}`);
  }
}
for (const name of endpoints.slice(0, 3)) {
  if (!addresses.has(name)) fail(`--${name} is required`);
}

function fail(message) {
  process.stderr.write(`level=error event=usage msg="${message}"\n`);
  process.exit(2);
}

/** The connected outdev peer, if any. */
let outdev = null;
/** Primary sockets paused until outdev drains. */
const paused = new Set();

function onPrimary(socket) {
  socket.on("data", (chunk) => {
    if (discard || outdev === null) return;
    if (!outdev.write(chunk)) {
      socket.pause();
      paused.add(socket);
    }
  });
}

function onOutdev(socket) {
  outdev = socket;
  socket.on("drain", () => {
    for (const s of paused) s.resume();
    paused.clear();
  });
  socket.on("close", () => {
    if (outdev === socket) outdev = null;
    for (const s of paused) s.resume();
    paused.clear();
  });
  socket.resume(); // nothing is expected from the outdev peer; keep reading to see its close
}

function onDiscard(socket) {
  socket.resume();
}

const handlers = {
  "primary-in": onPrimary,
  "secondary-in": onDiscard,
  "outdev": onOutdev,
  "notify-dev": onDiscard,
};

let pending = addresses.size;
for (const [name, { host, port }] of addresses) {
  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.setNoDelay(true);
    socket.on("error", () => {});
    handlers[name](socket);
  });
  server.on("error", (e) => fail(`--${name}: ${e.message}`));
  server.listen(port, host, () => {
    const a = server.address();
    process.stderr.write(
      `level=info event=listening endpoint=${name} address=${a.address}:${a.port}\n`,
    );
    if (--pending === 0) process.stderr.write("level=info event=ready\n");
  });
}

for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
