/**
 * Trial 9 (SPEC 11, "One peer per endpoint"): while primary-in has a peer, a second client
 * connects to it. The program must close the second connection at once, log it at warn with
 * its address, and never process what it sent — not even after the first peer leaves. The
 * same on outdev: a second reader is closed at once and the output stays with the first.
 *
 * @module
 */

import { connectRetry } from "../../tests/support/net.ts";
import { num } from "../format.ts";
import type { Check, Scope, Trial } from "../trial.ts";
import { arpFramed, closeAll, isArp, writeAll } from "../traffic.ts";

const CLOSE_BOUND_MS = 1000;
/** How long outdev is watched for the second client's frame after the first peer left. */
const WATCH_MS = 1000;

function closedAtOnce(endpoint: string, closedMs: number | null): Check {
  return {
    check: `second client on busy ${endpoint} closed at once`,
    bound: `closed within ${num(CLOSE_BOUND_MS)} ms`,
    measured: closedMs === null
      ? `still open after ${num(CLOSE_BOUND_MS)} ms`
      : `closed after ${num(closedMs)} ms`,
    pass: closedMs !== null && closedMs <= CLOSE_BOUND_MS,
  };
}

export const onePeer: Trial = {
  id: 9,
  name: "one-peer",
  title: "a second client on a busy listen endpoint",
  limitSeconds: { short: 20, full: 20 },
  async run(_profile, scope: Scope) {
    const program = await scope.start({ noNotify: true });
    const peers = await scope.data(program);
    const arps = new Set<number>();
    const out = scope.reader(peers.outdev, (f) => {
      if (isArp(f)) arps.add((f[39] << 16) | (f[40] << 8) | f[41]);
    });
    const first = 1;
    const intruder = 2;
    // The first peer is busy: its frame came out.
    await writeAll(peers.primary, arpFramed(first));
    await out.until(() => arps.has(first), 5000);

    const second = scope.conn(await connectRetry(program.ports["primary-in"]));
    const port = (second.localAddr as Deno.NetAddr).port;
    const t0 = performance.now();
    try {
      await writeAll(second, arpFramed(intruder));
    } catch {
      // closed already: nothing it sent can be processed
    }
    const secondReader = scope.reader(second);
    await secondReader.until(() => false, CLOSE_BOUND_MS);
    const closedMs = secondReader.closed ? performance.now() - t0 : null;

    // outdev too: a second reader is closed at once and gets none of the output.
    const secondOut = scope.conn(await connectRetry(program.ports.outdev));
    const t1 = performance.now();
    let stolen = 0;
    const secondOutReader = scope.reader(secondOut, () => stolen++);
    await secondOutReader.until(() => false, CLOSE_BOUND_MS);
    const outClosedMs = secondOutReader.closed ? performance.now() - t1 : null;
    const later = 3;
    await writeAll(peers.primary, arpFramed(later));
    const kept = await out.until(() => arps.has(later), 2000);

    closeAll(peers.primary);
    await out.until(() => arps.has(intruder), WATCH_MS);
    const processed = arps.has(intruder);
    const warn = program.found(new RegExp(`level=warn\\b.*:${port}\\b`))[0] ??
      program.tail(200).split("\n").find((l) => /level=warn/.test(l) && l.includes(`:${port}`));
    return [
      closedAtOnce("primary-in", closedMs),
      closedAtOnce("outdev", outClosedMs),
      {
        check: "output stays with the first outdev peer",
        bound: "a frame released later reaches it; none reaches the second",
        measured: `${
          kept ? "reached the first" : "did not reach the first in 2 s"
        }; ${stolen} frames to the second`,
        pass: kept && stolen === 0,
      },
      {
        check: "what the second client sent is never processed",
        bound: "its frame never on outdev",
        measured: processed ? "its frame came out after the first peer left" : "never came out",
        pass: !processed && arps.has(first),
      },
      {
        check: "the refused client is logged at warn with its address",
        bound: `a level=warn line naming :${port}`,
        measured: warn ? warn.replace(/^ts=\S+ /, "") : "no such line",
        pass: warn !== undefined,
      },
    ];
  },
};
