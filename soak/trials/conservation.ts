/**
 * Trial 8 (SPEC 6-8, frame conservation): a million primary frames over 64 TCP flows, the
 * secondary identical; then a million more where one secondary segment in 5,000 differs in a
 * byte, with this trial playing the COLO controller (each `DO_CHECKPOINT` answered by
 * `COLO_CHECKPOINT` 5 ms later). Each flow has at most 512 segments in flight, as a guest's
 * TCP window would allow. Every primary frame must come out exactly once, in order per
 * connection, however it was released (compared or flushed).
 *
 * @module
 */

import { connectRetry } from "../../tests/support/net.ts";
import { droppedInSummary, num } from "../format.ts";
import type { Check, Scope, Trial } from "../trial.ts";
import { Controller, OrderCheck, PairedPump, TcpStreams, windowGate } from "../traffic.ts";

const FLOWS = 64;
const PAYLOAD = 200;
const DIVERGE_EVERY = 5000;
/** Segments per flow in flight (see {@linkcode windowGate}). */
const WINDOW = 512;

async function conserve(
  scope: Scope,
  frames: number,
  divergent: boolean,
): Promise<Check> {
  // A short timeout: secondary segments whose primaries a checkpoint released wait for it.
  const program = await scope.start({
    flags: ["--compare-timeout", "200", "--expired-scan-cycle", "50"],
  });
  const peers = await scope.data(program);
  const controller = new Controller(scope.conn(await connectRetry(program.ports["notify-dev"])));
  scope.defer(() => controller.close());
  const streams = new TcpStreams(FLOWS, PAYLOAD, 0x10_0000);
  const order = new OrderCheck(streams, 0x10_0000);
  const out = scope.reader(peers.outdev, (f) => order.add(f));
  const t0 = performance.now();
  const pump = new PairedPump(streams, peers, {
    maxAheadFrames: 64 * 1024,
    limit: frames,
    gate: windowGate(out, order, FLOWS, WINDOW, 30_000),
    diverge: divergent ? (i) => i % DIVERGE_EVERY === DIVERGE_EVERY - 1 : undefined,
  });
  // At least 5,000 frames a second per side, and 45 s whatever the count. On two cores shared
  // with two busy processes, this process (generator, controller and reader in one) wrote
  // the short run's 50,000 in 0.3-27 s, against 1-2 s unshared: the program waited for it.
  const even = await pump.finished(Math.max(frames / 5, 45_000));
  const sent = pump.total;
  await out.until(() => order.seen >= sent, 60_000, 5_000);
  const seconds = (performance.now() - t0) / 1000;
  scope.defer(async () => void await pump.stop(0));
  const exit = await program.stop();
  const dropped = droppedInSummary(exit.summary);
  const mismatches = Object.entries(exit.summary).filter(([k]) => k.startsWith("mismatch_"))
    .map(([k, v]) => `${k.slice(9)} ${v}`).join(", ");
  const kind = divergent
    ? `1 secondary segment in ${num(DIVERGE_EVERY)} divergent`
    : "identical streams";
  return {
    check: `${num(sent)} primary frames out exactly once, in order (${kind})`,
    bound: `${num(sent)} in order, 0 duplicated, 0 gaps, 0 missing`,
    measured: `${order.describe(sent)} in ${seconds.toFixed(1)} s` +
      `; ${num(controller.requests)} DO_CHECKPOINT, ${num(controller.checkpoints)} answered` +
      (mismatches ? ` (${mismatches})` : "") +
      (dropped ? `; program dropped ${num(dropped)}` : "") +
      (even ? "" : "; the generator could not write every frame"),
    pass: even && order.exact(sent),
  };
}

export const conservation: Trial = {
  id: 8,
  name: "conservation",
  title: "1M frames, identical and divergent streams: each released once, in order",
  limitSeconds: { short: 150, full: 300 },
  async run(profile, scope: Scope) {
    const frames = profile.short ? 50_000 : 1_000_000;
    return [await conserve(scope, frames, false), await conserve(scope, frames, true)];
  },
};
