/**
 * replay reads what QEMU's filter-dump writes, as it is: a real QEMU 7.2 (no guest) dumps a
 * frame sent into its socket netdev; the file is replayed against itself.
 */

import assert from "node:assert/strict";
import dgram from "node:dgram";
import { arraySource, readCapture } from "../../src/replay/pcap.ts";
import { replay } from "../../src/replay/replay.ts";
import { qemuAvailable, qemuBinary } from "../conformance/impl.ts";
import { freePorts } from "../support/net.ts";
import { frame } from "../support/packets.ts";

const QEMU = await qemuAvailable();
if (!QEMU) console.warn(`filter_dump_test: ${qemuBinary()} not installed; skipped`);

Deno.test({
  name: "replay: a pcap written by QEMU 7.2's filter-dump is read as it is",
  ignore: !QEMU,
  async fn() {
    const dir = await Deno.makeTempDir();
    const file = `${dir}/dump.pcap`;
    const [remote, local] = freePorts(2);
    const qemu = new Deno.Command(qemuBinary(), {
      args: [
        ...["-machine", "pc,accel=tcg", "-nodefaults", "-display", "none", "-monitor", "none"],
        ...["-serial", "none", "-S"],
        ...["-netdev", `socket,id=n0,udp=127.0.0.1:${remote},localaddr=127.0.0.1:${local}`],
        ...["-device", "e1000,netdev=n0"],
        ...["-object", `filter-dump,id=f0,netdev=n0,file=${file}`],
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const udp = dgram.createSocket("udp4");
    const send = (data: Uint8Array) =>
      new Promise<void>((resolve, reject) =>
        udp.send(data, local, "127.0.0.1", (error) => error ? reject(error) : resolve())
      );
    const sent = frame({
      ip: { src: "10.0.0.1", dst: "10.0.0.2" },
      udp: { sport: 53, dport: 5678, payload: "dumped by QEMU" },
    });
    try {
      // QEMU creates the file (24-byte header) when the filter starts; then one datagram of
      // the socket netdev is one frame. Polled: an external process gives no event to await.
      const deadline = Date.now() + 20_000;
      const size = () => Deno.stat(file).then((s) => s.size, () => 0);
      while (await size() < 24 + 16 + sent.length) {
        assert.ok(Date.now() < deadline, "QEMU wrote no frame within 20 s");
        if (await size() >= 24) {
          await send(sent);
        }
        await new Promise((r) => setTimeout(r, 200));
      }
      const frames = await readCapture(await Deno.readFile(file));
      assert.ok(frames.length >= 1);
      assert.deepEqual(frames[0].data, sent);
      assert.equal(frames[0].truncated, false);
      // filter-dump stamps the VM's virtual clock (0: the VM never ran) plus the time the dump
      // started.
      assert.ok(Math.abs(frames[0].timeMs - Date.now()) < 60_000, `${frames[0].timeMs}`);
      const report = await replay(arraySource(frames), arraySource(frames), {
        compareTimeout: 3000,
        expiredScanCycle: 1000,
        maxQueueSize: 1024,
        checkpointDelay: 0,
        divergencesShown: 10,
      });
      assert.equal(report.released.compared, frames.length);
      assert.equal(report.checkpoints.requested, 0);
    } finally {
      await new Promise<void>((resolve) => udp.close(() => resolve()));
      qemu.kill("SIGTERM");
      await qemu.status;
      await qemu.stderr.cancel();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
