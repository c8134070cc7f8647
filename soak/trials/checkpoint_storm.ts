/**
 * Trial 3 (SPEC 8, "a checkpoint flush walks only connections that hold frames"): a storm of
 * `COLO_CHECKPOINT` while 16,384 and then 65,536 idle connections exist. Meanwhile a probe
 * pair goes through the data path again and again; its worst latency is the stall the storm
 * causes. The CPU each checkpoint costs must not grow with the idle connections.
 *
 * Then 10,000 TCP connections closed by both VMs (a FIN segment on each input) must be
 * forgotten at once, and (full profile, after a minute) the idle ones too: the exit summary's
 * `connections` field counts what is left.
 *
 * @module
 */

import { notifyMessage, TCP } from "../../tests/support/packets.ts";
import { connectRetry } from "../../tests/support/net.ts";
import { summaryField } from "../format.ts";
import { atMost, type Check, num, type Scope, type Trial } from "../trial.ts";
import { delay, TcpStreams, udpBatch, udpFramed, writeAll } from "../traffic.ts";

/**
 * A probe pair's worst latency while the storm runs: generous, the machine is shared (a walk
 * over every connection per checkpoint stalls for seconds).
 */
const STALL_BOUND_MS = 250;
/** CPU per COLO_CHECKPOINT with nothing held: QEMU needs about 3 µs. */
const CPU_PER_CHECKPOINT_BOUND_US = 50;
/** The probe flow: its own flow number, beyond the idle ones. */
const PROBE_FLOW = 0xf0_0000;
/** Connections closed by both VMs. */
const CLOSED_FLOWS = 10_000;
/** SPEC 8: an idle connection is forgotten after this long. */
const IDLE_FORGET_MS = 60_000;

/** A check of the exit summary's `connections` field. */
function connectionsLeft(
  summary: Record<string, string>,
  check: string,
  bound: number,
  context: string,
): Check {
  const left = summaryField(summary, "connections");
  if (left === undefined) {
    return {
      check,
      bound: `<= ${num(bound)}`,
      measured: "not reported (no connections field in the exit summary)",
      pass: false,
    };
  }
  return atMost(check, left, bound, num, context);
}

export const checkpointStorm: Trial = {
  id: 3,
  name: "checkpoint-storm",
  title: "COLO_CHECKPOINT storm with 16k and 65,536 idle connections",
  limitSeconds: { short: 60, full: 240 },
  async run(profile, scope: Scope) {
    // Short: 3,000, not fewer. At 1,000 the first checkpoints' one-offs (the checkpoint path's
    // first runs and its compilation on V8's worker threads) came to 10-65 us per checkpoint
    // from run to run; at 3,000, 3-29 us.
    const storm = profile.short ? 3_000 : 10_000;
    const program = await scope.start();
    const peers = await scope.data(program);
    const notify = scope.conn(await connectRetry(program.ports["notify-dev"]));
    // A COLO_USERSPACE_PROXY_INIT after the storm is answered once the storm was taken.
    let replies = 0;
    const drainNotify = scope.reader(notify, (f) => {
      if (f.length === "COLO_COMPARE_GET_XEN_INIT".length) replies++;
    });
    let probesOut = 0;
    const out = scope.reader(peers.outdev, (f) => {
      if (f.length > 30 && f[27] === 0xf0) probesOut++;
    });
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
        // Seen in CI twice, both times 49,652 frames out (about one 1 MiB read's frames short),
        // not reproduced here: what the program said last (pauses, checkpoints) and its exit
        // summary (frames in, released and dropped by reason) go with the error.
        await program.stop();
        throw new Error(
          `the idle connections' pairs did not come out (${out.frames} of ${want} frames); ` +
            `the program's last lines:\n${program.tail(30)}`,
        );
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
      const stormStart = performance.now();
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
      // No probe came back before the storm was over (a short storm): the storm's own length,
      // from the first message written to the marker's reply, bounds what a frame waited.
      if (probes === 0) worst = performance.now() - stormStart;
      const cpuUs = ((program.cpu() - cpu0) * 1e6) / storm;
      const taken = done() - doneBefore;
      if (replies === repliesBefore) throw new Error(`the storm was not taken in 60 s`);
      checks.push(
        atMost(
          `data path stall during ${num(storm)} checkpoints, ${num(connections)} idle connections`,
          worst,
          STALL_BOUND_MS,
          (n) => `${n.toFixed(1)} ms`,
          (probes === 0
            ? "no probe pair came back before the storm was over: the storm's own length"
            : `worst of ${probes} probe pairs${stuck ? ", the last still not out: cut off" : ""}`) +
            `; ${num(taken)} checkpoint-done lines`,
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
    // SPEC 8: a connection whose queues are empty is forgotten after 60 s idle (waited for in
    // the full profile only) and at once when both VMs closed it (a second program: this
    // table is full, so new connections would evict idle ones).
    if (!profile.short) {
      await delay(IDLE_FORGET_MS + 2_000);
      const exit = await program.stop();
      checks.push(connectionsLeft(
        exit.summary,
        `idle connections forgotten after 60 s (connections at exit)`,
        1,
        `${num(idle + 1)} seen, idle for ${(IDLE_FORGET_MS + 2_000) / 1000} s`,
      ));
    } else {
      await program.stop();
    }
    const closing = await scope.start({ noNotify: true });
    const closingPeers = await scope.data(closing);
    const closingOut = scope.reader(closingPeers.outdev);
    const fin = new TcpStreams(CLOSED_FLOWS, 10, 0x20_0000, TCP.FIN | TCP.ACK).next(CLOSED_FLOWS);
    await writeAll(closingPeers.primary, fin.primary);
    await writeAll(closingPeers.secondary, fin.secondary);
    await closingOut.until(() => closingOut.frames >= CLOSED_FLOWS, 30_000, 5_000);
    const exit = await closing.stop();
    checks.push(connectionsLeft(
      exit.summary,
      "connections closed by both VMs forgotten at once (connections at exit)",
      0,
      `${num(CLOSED_FLOWS)} seen, each one FIN segment from each VM; ${
        num(closingOut.frames)
      } frames out`,
    ));
    return checks;
  },
};
