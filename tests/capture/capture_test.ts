import assert from "node:assert/strict";
import { BackgroundFile, type ByteSink, DivergenceCapture } from "../../src/capture/capture.ts";
import { CompareEngine } from "../../src/compare/engine.ts";
import type { Connection } from "../../src/compare/connection.ts";
import type { CheckpointReason } from "../../src/compare/events.ts";
import type { Packet } from "../../src/compare/packet.ts";
import { frame, TCP, withVnet } from "../support/packets.ts";
import { Recorder } from "../support/recorder.ts";

/** A Recorder that also hands divergences to a capture. */
class CapturingRecorder extends Recorder {
  constructor(readonly capture: DivergenceCapture) {
    super();
  }
  divergence(
    reason: CheckpointReason,
    conn: Connection,
    primary: Packet | null,
    secondaries: readonly Packet[],
    now: number,
  ): void {
    this.capture.divergence(reason, conn, primary, secondaries, now);
  }
}

/** Runs tshark on `path`; returns one line per packet of tab-separated fields. */
async function tshark(path: string, fields: string[]): Promise<string[][]> {
  const out = await new Deno.Command("tshark", {
    args: ["-r", path, "-T", "fields", "-E", "separator=\t", ...fields.flatMap((f) => ["-e", f])],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `tshark failed: ${err}`);
  const text = new TextDecoder().decode(out.stdout).trimEnd();
  return text === "" ? [] : text.split("\n").map((l) => l.split("\t"));
}

const tcp = (seq: number, payload: string, ack = 1) =>
  frame({
    ip: { src: "10.0.0.1", dst: "10.0.0.2" },
    tcp: { sport: 80, dport: 40000, seq, ack, flags: TCP.ACK | TCP.PSH, payload },
  });
const udp = (payload: string) =>
  frame({ ip: { src: "10.0.0.1", dst: "10.0.0.3" }, udp: { sport: 53, dport: 5353, payload } });

Deno.test("capture: tshark reads every divergence with its frames and comments", async () => {
  const path = await Deno.makeTempFile({ suffix: ".pcapng" });
  try {
    const capture = new DivergenceCapture(BackgroundFile.create(path), {
      epochMs: (now) => 1_700_000_000_000 + now,
    });
    const rec = new CapturingRecorder(capture);
    const engine = new CompareEngine({ compareTimeout: 100, maxQueueSize: 1024 }, rec);
    // TCP: byte 1003 differs.
    engine.primary(tcp(1000, "hello world"), 0, 0);
    engine.secondary(tcp(1000, "helXo world"), 0, 1);
    engine.checkpoint();
    // UDP: the primary is compared with both held secondary datagrams.
    engine.secondary(udp("one"), 0, 2);
    engine.secondary(udp("two"), 0, 3);
    engine.primary(udp("three"), 0, 4);
    engine.checkpoint();
    // A primary frame alone times out.
    engine.primary(udp("alone"), 0, 10);
    assert.equal(engine.tick(200), true);
    assert.deepEqual(rec.checkpoints, ["tcp-payload", "datagram", "timeout"]);
    await capture.close();

    const rows = await tshark(path, [
      "frame.interface_name",
      "ip.dst",
      "frame.time_epoch",
      "frame.comment",
    ]);
    assert.equal(rows.length, 6, rows.join("\n"));
    const [iface, dst, time, comment] = [0, 1, 2, 3].map((i) => rows.map((r) => r[i]));
    assert.deepEqual(iface, [
      "primary-in",
      "secondary-in",
      "primary-in",
      "secondary-in",
      "secondary-in",
      "primary-in",
    ]);
    assert.deepEqual(dst, ["10.0.0.2", "10.0.0.2", "10.0.0.3", "10.0.0.3", "10.0.0.3", "10.0.0.3"]);
    assert.equal(Number(time[0]), 1_700_000_000.001, "the time of the frame that diverged");
    assert.equal(Number(time[5]), 1_700_000_000.2, "the time of the expiry scan");
    const conn = '"tcp 10.0.0.1:80 > 10.0.0.2:40000"';
    assert.equal(
      comment[0],
      `divergence=1 reason=tcp-payload conn=${conn} side=primary seq=1000 len=11 first_diff_seq=1003`,
    );
    assert.equal(
      comment[1],
      `divergence=1 reason=tcp-payload conn=${conn} side=secondary seq=1000 len=11 first_diff_seq=1003`,
    );
    assert.match(comment[2], /^divergence=2 reason=datagram conn="udp .*" side=primary$/);
    assert.match(comment[3], /^divergence=2 reason=datagram .* side=secondary$/);
    assert.match(comment[4], /^divergence=2 reason=datagram .* side=secondary$/);
    assert.match(comment[5], /^divergence=3 reason=timeout .* side=primary age_ms=190$/);
  } finally {
    await Deno.remove(path);
  }
});

/** Keeps written bytes in memory. */
class MemorySink implements ByteSink {
  readonly chunks: Uint8Array[] = [];
  write(bytes: Uint8Array): void {
    this.chunks.push(bytes);
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** A capture bounded at `maxBytes` into memory, the events it warns of, and an engine with it. */
function boundedCapture(maxBytes: number) {
  const lines: string[] = [];
  const sink = new MemorySink();
  const capture = new DivergenceCapture(sink, {
    maxBytes,
    epochMs: (now) => now,
    log: new (class {
      warn(event: string) {
        lines.push(event);
      }
    })() as never,
  });
  const rec = new CapturingRecorder(capture);
  const engine = new CompareEngine({ compareTimeout: 100, maxQueueSize: 1024 }, rec);
  return { lines, sink, capture, rec, engine };
}

Deno.test("capture: stops at --capture-max-bytes and says so once", () => {
  const { lines, capture, rec, engine } = boundedCapture(1000);
  for (let i = 0; i < 10; i++) {
    engine.primary(udp(`p${i}`), 0, i);
    engine.secondary(udp(`s${i}`), 0, i);
    engine.checkpoint();
  }
  assert.equal(rec.checkpoints.length, 10);
  assert.ok(capture.bytes <= 1000);
  assert.ok(capture.captured >= 2, `captured ${capture.captured}`);
  assert.equal(capture.captured + capture.skipped, 10);
  assert.deepEqual(lines, ["capture-full"]);
});

Deno.test("capture: a bound smaller than the file's header writes nothing and says so", () => {
  const { lines, sink, capture, engine } = boundedCapture(100);
  engine.primary(udp("p"), 0, 0);
  engine.secondary(udp("s"), 0, 0);
  engine.checkpoint();
  assert.equal(capture.bytes, 0);
  assert.deepEqual(sink.chunks, [], "not even the header");
  assert.equal(capture.skipped, 1);
  assert.deepEqual(lines, ["capture-full"], "once");
});

Deno.test("capture: an engine whose sink has no divergence hook behaves the same", () => {
  const plain = new Recorder();
  const capturing = new CapturingRecorder(
    new DivergenceCapture(new MemorySink(), { epochMs: (n) => n }),
  );
  for (const rec of [plain, capturing]) {
    const engine = new CompareEngine({ compareTimeout: 100, maxQueueSize: 1024 }, rec);
    engine.primary(tcp(1, "abc"), 0, 0);
    engine.secondary(tcp(1, "abd"), 0, 0);
    engine.tick(500);
  }
  assert.deepEqual(capturing.log, plain.log);
});

Deno.test("capture: frames with a vnet header are written as plain Ethernet", async () => {
  const path = await Deno.makeTempFile({ suffix: ".pcapng" });
  try {
    const capture = new DivergenceCapture(BackgroundFile.create(path), { epochMs: (n) => n });
    const engine = new CompareEngine(
      { compareTimeout: 100, maxQueueSize: 1024 },
      new CapturingRecorder(capture),
    );
    engine.primary(withVnet(udp("primary"), 12, 0xee), 12, 0);
    engine.secondary(withVnet(udp("secondary"), 12, 0xee), 12, 1);
    await capture.close();
    const rows = await tshark(path, ["eth.type", "ip.dst", "udp.dstport", "frame.len"]);
    assert.deepEqual(rows, [
      ["0x0800", "10.0.0.3", "5353", String(udp("primary").length)],
      ["0x0800", "10.0.0.3", "5353", String(udp("secondary").length)],
    ]);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("capture: a failed write is reported when it happens, not thrown at close", async () => {
  const failures: unknown[] = [];
  const file = BackgroundFile.create("/dev/full", (e) => failures.push(e));
  file.write(new Uint8Array(4096));
  file.write(new Uint8Array(4096));
  await file.close();
  assert.equal(failures.length, 1, "once");
  assert.match(String(failures[0]), /space/i);
  // Without a listener the error is the caller's at close (replay's way).
  const plain = BackgroundFile.create("/dev/full");
  plain.write(new Uint8Array(4096));
  await assert.rejects(plain.close(), /space/i);
});

Deno.test("capture: closing gives up on a write that never ends (a hung mount) after its wait", async () => {
  let closed = false;
  // A file whose writes never complete: no op, no timer left behind.
  const stuck = {
    write: () => new Promise<number>(() => {}),
    close: () => void (closed = true),
  } as unknown as Deno.FsFile;
  const failures: unknown[] = [];
  const file = new BackgroundFile(stuck, (e) => failures.push(e));
  file.write(new Uint8Array(10));
  file.write(new Uint8Array(10));
  await file.close(20);
  assert.equal(closed, true);
  assert.equal(failures.length, 1);
  assert.match(String(failures[0]), /a write did not end within 20 ms/);
});

/** Records what each divergence was about: the reason and the payloads of its frames. */
class DivergenceLog extends Recorder {
  readonly told: string[] = [];
  divergence(
    reason: CheckpointReason,
    conn: Connection,
    primary: Packet | null,
    secondaries: readonly Packet[],
  ): void {
    // The payload: TCP's, or the UDP datagram's after its 8-byte header.
    const text = (p: Packet) =>
      new TextDecoder().decode(p.bytes.subarray(p.start + (conn.tcp ? 0 : 8), p.start + p.len));
    this.told.push(`${reason} ${primary ? text(primary) : "-"} [${secondaries.map(text)}]`);
  }
}

Deno.test("capture: a frame compared again as its connection receives more is told once, then only with the secondaries that came since", () => {
  const rec = new DivergenceLog();
  const engine = new CompareEngine({ compareTimeout: 100, maxQueueSize: 1024 }, rec);
  // UDP: each frame the connection receives compares the waiting primary anew.
  engine.primary(udp("p"), 0, 0);
  engine.secondary(udp("a"), 0, 1);
  engine.secondary(udp("b"), 0, 2);
  engine.primary(udp("q"), 0, 3);
  engine.secondary(udp("c"), 0, 4);
  // TCP: the primary and secondary heads differ; more primary data comes behind them.
  engine.primary(tcp(1000, "hello"), 0, 5);
  engine.secondary(tcp(1000, "hellX"), 0, 6);
  engine.primary(tcp(1005, "world"), 0, 7);
  // The aged frame at two scans without a checkpoint in between.
  engine.tick(150);
  engine.tick(300);
  assert.deepEqual(rec.told, [
    "datagram p [a]",
    "datagram p [b]",
    "datagram p [c]",
    "tcp-payload hello [hellX]",
    "timeout p []",
  ]);
  // Every comparison that failed still asks for its checkpoint.
  assert.deepEqual(rec.checkpoints, [
    "datagram",
    "datagram",
    "datagram",
    "datagram",
    "tcp-payload",
    "tcp-payload",
    "timeout",
    "timeout",
  ]);
  // A timeout between two arrivals does not make the next comparison whole again.
  engine.secondary(udp("e"), 0, 310);
  engine.tick(400);
  engine.secondary(udp("f"), 0, 410);
  assert.deepEqual(rec.told.slice(5), ["datagram p [e]", "datagram p [f]"]);
  // After a checkpoint the same connection's next divergence is told whole.
  engine.checkpoint();
  engine.primary(udp("r"), 0, 500);
  engine.secondary(udp("d"), 0, 501);
  assert.deepEqual(rec.told.slice(7), ["datagram r [d]"]);
});
