/**
 * Trial 2 (SPEC 8, symmetric back-pressure): outdev read at 200 KB/s while both inputs carry
 * the same TCP streams, each written as fast as its socket takes it. When outdev is congested
 * both inputs must pause together: no timeout checkpoint, the inputs do not drift apart (what
 * one side runs ahead of the other is what the program holds unmatched), and once the reader
 * speeds up every frame comes out, in order.
 *
 * @module
 */

import { RssSampler } from "../program.ts";
import { droppedInSummary } from "../format.ts";
import { atMost, cleanExit, mib, num, type Scope, type Trial } from "../trial.ts";
import { connectData, delay, FrameReader, OrderCheck, PairedPump, TcpStreams } from "../traffic.ts";

/** The slow client: bytes per second read from outdev. */
const SLOW_RATE = 200_000;
/** How far the inputs may drift apart, in frames: about one read (256 KiB) per side. */
const DRIFT_BOUND = 1024;
/** Growth of RSS while the client is slow. */
const RSS_GROWTH_BOUND = 64 * 2 ** 20;

export const slowOutdev: Trial = {
  id: 2,
  name: "slow-outdev",
  title: "outdev read at 200 KB/s, identical streams on both inputs",
  limitSeconds: { short: 40, full: 120 },
  async run(profile, scope: Scope) {
    const seconds = profile.short ? 4 : 30;
    const program = await scope.start({ noNotify: true });
    const peers = await connectData(program.ports);
    for (const c of Object.values(peers)) scope.conn(c);
    const timeouts = program.count(/event=checkpoint-request\b.*reason=timeout/);
    const streams = new TcpStreams(4, 1000);
    const order = new OrderCheck(streams);
    const out = new FrameReader(peers.outdev, (f) => order.add(f), SLOW_RATE);
    scope.defer(() => out.close());
    const rss0 = program.rss();
    const rss = new RssSampler(program);
    const pump = new PairedPump(streams, peers, { maxAheadFrames: 256 * 1024 });
    scope.defer(async () => void await pump.stop(0));
    await delay(seconds * 1000);
    const peak = rss.stop();
    const drift = pump.maxDrift;
    out.rate = null;
    const even = await pump.stop(20_000);
    const sent = pump.total;
    const allOut = await out.until(() => order.seen >= sent, 60_000, 3_000);
    const exit = await program.stop();
    const timeoutRequests = Math.max(timeouts(), Number(exit.summary.mismatch_timeout ?? 0));
    return [
      atMost(
        "timeout checkpoint requests on identical streams",
        timeoutRequests,
        0,
        num,
        `${seconds} s at ${SLOW_RATE / 1000} KB/s`,
      ),
      atMost(
        "drift between the inputs (frames one side ran ahead)",
        drift,
        DRIFT_BOUND,
        num,
        `${num(sent)} frames per side written`,
      ),
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
