/**
 * Trial 3 (SPEC 8, "a checkpoint flush walks only connections that hold frames"): a storm of
 * `COLO_CHECKPOINT` while 16,384 and then 65,536 idle connections exist. Meanwhile a probe
 * pair goes through the data path again and again; its worst latency is the stall the storm
 * causes. The CPU each checkpoint costs must not grow with the idle connections.
 *
 * Whether idle connections are forgotten after 60 s cannot be seen from outside: the program
 * reports no connection count (see the suite's README).
 *
 * @module
 */

import { notifyMessage } from "../../tests/support/packets.ts";
import { connectRetry } from "../../tests/support/net.ts";
import { atMost, type Check, num, type Scope, type Trial } from "../trial.ts";
import { connectData, FrameReader, udpBatch, udpFramed, writeAll } from "../traffic.ts";

/**
 * A probe pair's worst latency while the storm runs: generous, the machine is shared (a walk
 * over every connection per checkpoint stalls for seconds).
 */
const STALL_BOUND_MS = 250;
/** CPU per COLO_CHECKPOINT with nothing held: QEMU needs about 3 µs. */
const CPU_PER_CHECKPOINT_BOUND_US = 50;
/** The probe flow: its own flow number, beyond the idle ones. */
const PROBE_FLOW = 0xf0_0000;

export const checkpointStorm: Trial = {
  id: 3,
  name: "checkpoint-storm",
  title: "COLO_CHECKPOINT storm with 16k and 65,536 idle connections",
  limitSeconds: { short: 60, full: 180 },
  async run(profile, scope: Scope) {
    const storm = profile.short ? 1_000 : 10_000;
    const program = await scope.start();
    const peers = await connectData(program.ports);
    for (const c of Object.values(peers)) scope.conn(c);
    const notify = scope.conn(await connectRetry(program.ports["notify-dev"]));
    // A COLO_USERSPACE_PROXY_INIT after the storm is answered once the storm was taken.
    let replies = 0;
    const drainNotify = new FrameReader(notify, (f) => {
      if (f.length === "COLO_COMPARE_GET_XEN_INIT".length) replies++;
    });
    scope.defer(() => drainNotify.close());
    let probesOut = 0;
    const out = new FrameReader(peers.outdev, (f) => {
      if (f.length > 30 && f[27] === 0xf0) probesOut++;
    });
    scope.defer(() => out.close());
    const done = program.count(/event=checkpoint-done\b/);
    const checks: Check[] = [];
    let idle = 0;
    for (const connections of [16_384, 65_536]) {
      // Idle connections: one matched pair each, out before the storm starts.
      const batch = udpBatch(idle, connections - idle, "idle after this pair");
      const want = out.frames + connections - idle;
      await writeAll(peers.primary, batch);
      await writeAll(peers.secondary, batch);
      if (!(await out.until(() => out.frames >= want, 60_000, 10_000))) {
        throw new Error(`the idle connections' pairs did not come out (${out.frames} frames)`);
      }
      idle = connections;
      const doneBefore = done();
      const cpu0 = program.cpu();
      const message = notifyMessage("COLO_CHECKPOINT");
      const marker = notifyMessage("COLO_USERSPACE_PROXY_INIT");
      const burst = new Uint8Array(message.length * storm + marker.length);
      for (let i = 0; i < storm; i++) burst.set(message, i * message.length);
      burst.set(marker, message.length * storm);
      const repliesBefore = replies;
      const writing = writeAll(notify, burst);
      // Probe pairs back to back until the storm was taken (or 60 s).
      const probe = udpFramed(PROBE_FLOW, "probe");
      let worst = 0;
      let probes = 0;
      let stuck = false;
      const deadline = performance.now() + 60_000;
      while (replies === repliesBefore && performance.now() < deadline) {
        const t = performance.now();
        const before = probesOut;
        await writeAll(peers.primary, probe);
        await writeAll(peers.secondary, probe);
        // A probe whose secondary copy a flush dropped waits for the next flush; once the
        // storm is over there is none, and that probe does not count.
        const stormOver = () => replies > repliesBefore;
        while (probesOut === before && !stormOver() && performance.now() - t < 10_000) {
          await out.until(() => probesOut > before, 20);
        }
        if (probesOut === before && stormOver()) break;
        worst = Math.max(worst, performance.now() - t);
        probes++;
        if (probesOut === before) {
          stuck = true;
          break;
        }
      }
      await writing;
      await drainNotify.until(() => replies > repliesBefore, deadline - performance.now());
      const cpuUs = ((program.cpu() - cpu0) * 1e6) / storm;
      const taken = done() - doneBefore;
      if (replies === repliesBefore) throw new Error(`the storm was not taken in 60 s`);
      checks.push(
        atMost(
          `data path stall during ${num(storm)} checkpoints, ${num(connections)} idle connections`,
          worst,
          STALL_BOUND_MS,
          (n) => `${n.toFixed(1)} ms`,
          `worst of ${probes} probe pairs${stuck ? ", the last still not out: cut off" : ""}; ${
            num(taken)
          } checkpoint-done lines`,
        ),
        atMost(
          `CPU per checkpoint, ${num(connections)} idle connections`,
          cpuUs,
          CPU_PER_CHECKPOINT_BOUND_US,
          (n) => `${n.toFixed(1)} µs`,
          "probe pairs included",
        ),
      );
    }
    return checks;
  },
};
