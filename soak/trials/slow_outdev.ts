/**
 * Trial 2 (SPEC 8, symmetric back-pressure): outdev read at 200 KB/s while both inputs carry
 * the same 32 TCP streams, each input written on its own as fast as its socket takes it (as
 * two VMs would), each flow within a 1000-segment window. When outdev is congested both inputs
 * must pause together: no timeout checkpoint, nothing dropped, and once the reader speeds up
 * every frame comes out, in order.
 *
 * @module
 */

import { parseLogfmt, RssSampler } from "../program.ts";
import { droppedInSummary, summaryField } from "../format.ts";
import { atMost, cleanExit, mib, num, type Scope, type Trial } from "../trial.ts";
import { delay, OrderCheck, PairedPump, TcpStreams, windowGate } from "../traffic.ts";

/** The slow client: bytes per second read from outdev. */
const SLOW_RATE = 200_000;
/**
 * Segments per flow in flight (see {@linkcode windowGate}). Within it, a program that reads one
 * input and not the other still fills its queues; one that pauses both together holds little.
 */
const WINDOW = 1000;
const FLOWS = 32;
/** Growth of RSS: what the window lets one side run ahead (32 MiB), the outdev buffer, slack. */
const RSS_GROWTH_BOUND = 96 * 2 ** 20;
/**
 * Frames held on both sides together: with both inputs paused together, a few reads (256 KiB
 * each) per side and what one side may run ahead — far below what the window lets the peers
 * send (32 MiB).
 */
const HELD_BOUND = 8 * 2 ** 20;

export const slowOutdev: Trial = {
  id: 2,
  name: "slow-outdev",
  title: "outdev read at 200 KB/s, identical streams on both inputs",
  limitSeconds: { short: 40, full: 120 },
  async run(profile, scope: Scope) {
    const seconds = profile.short ? 4 : 30;
    const program = await scope.start({ noNotify: true });
    const peers = await scope.data(program);
    const timeouts = program.count(/event=checkpoint-request\b.*reason=timeout/);
    const streams = new TcpStreams(FLOWS, 1000);
    const order = new OrderCheck(streams);
    const out = scope.reader(peers.outdev, (f) => order.add(f), SLOW_RATE);
    const rss0 = program.rss();
    const rss = new RssSampler(program);
    const pump = new PairedPump(streams, peers, {
      gate: windowGate(out, order, FLOWS, WINDOW, 60_000),
    });
    scope.defer(async () => void await pump.stop(0));
    await delay(seconds * 1000);
    const peak = rss.stop();
    const drift = pump.maxDrift;
    out.rate = null;
    const even = await pump.stop(20_000);
    const sent = pump.total;
    const allOut = await out.until(() => order.seen >= sent, 60_000, 3_000);
    const exit = await program.stop();
    const heldPeak = summaryField(exit.summary, "held_bytes_peak");
    const heldAtPause = () =>
      program.found(/event=input-paused\b/).slice(0, 2).map((l) => {
        const f = parseLogfmt(l);
        return `${f.side} ${mib(Number(f.held_bytes ?? NaN))}`;
      }).join(", ") || "no input-paused line";
    const timeoutRequests = Math.max(timeouts(), Number(exit.summary.mismatch_timeout ?? 0));
    return [
      atMost(
        "timeout checkpoint requests on identical streams",
        timeoutRequests,
        0,
        num,
        `${seconds} s at ${SLOW_RATE / 1000} KB/s; held at the first pause: ${heldAtPause()}`,
      ),
      atMost(
        "frames dropped by the program",
        droppedInSummary(exit.summary),
        0,
        num,
        `inputs drifted apart by up to ${num(drift)} frames written`,
      ),
      heldPeak === undefined
        ? {
          check: "held bytes (peak, both sides)",
          bound: `<= ${mib(HELD_BOUND)}`,
          measured: "not reported (no held_bytes_peak in the exit summary)",
          pass: false,
        }
        : atMost("held bytes (peak, both sides)", heldPeak, HELD_BOUND, mib, "exit summary"),
      atMost("RSS growth while the client is slow", peak - rss0, RSS_GROWTH_BOUND, mib),
      {
        check: "every frame out once, in order",
        bound: `${num(sent)} in order, 0 duplicated, 0 gaps`,
        measured: order.describe(sent) + (even ? "" : "; the inputs could not be ended evenly") +
          (allOut ? "" : `; outdev went quiet; ${num(droppedInSummary(exit.summary))} dropped`),
        pass: even && allOut && order.exact(sent),
      },
      cleanExit(exit),
    ];
  },
};
