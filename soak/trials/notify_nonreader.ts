/**
 * Trial 5 (SPEC 8, "A notify-dev ... peer that does not read is disconnected once 1 MiB of
 * output waits for it. Unknown or repeated control messages are logged once per class, then
 * summarised"): a notify-dev peer that never reads sends messages that each call for output
 * or a log line — `COLO_USERSPACE_PROXY_INIT` (answered), `COLO_CHECKPOINT` (a new epoch, so
 * the next divergence sends a `DO_CHECKPOINT`; the primary diverges all along) and an unknown
 * message — millions of them. The program must drop the peer, stay small and keep its log
 * short.
 *
 * @module
 */

import { connectRetry } from "../../tests/support/net.ts";
import { notifyMessage } from "../../tests/support/packets.ts";
import { parseLogfmt, RssSampler } from "../program.ts";
import { atMost, cleanExit, mib, num, type Scope, type Trial } from "../trial.ts";
import { closeAll, delay, udpBatch, writeAll } from "../traffic.ts";

/** Output that may wait for the peer (1 MiB) plus what the kernel's socket buffers take. */
const OUTPUT_BOUND = 1 * 2 ** 20 + 16 * 2 ** 20;
const RSS_GROWTH_BOUND = 64 * 2 ** 20;
/** Log bytes for the whole flood: a few summary lines per class, not one per message. */
const LOG_BOUND = 256 * 1024;
/** Stop once the log alone is this big: the bound has failed, the machine is shared. */
const LOG_ABORT = 64 * 2 ** 20;
const REPLY = "COLO_COMPARE_GET_XEN_INIT".length + 4;
/** One round of messages: six answered, a checkpoint, an unknown one. */
const ROUND = [
  ...Array(6).fill("COLO_USERSPACE_PROXY_INIT"),
  "COLO_CHECKPOINT",
  "SOAK_UNKNOWN_MESSAGE",
];

export const notifyNonReader: Trial = {
  id: 5,
  name: "notify-nonreader",
  title: "a notify-dev peer that never reads, millions of control messages",
  limitSeconds: { short: 60, full: 120 },
  async run(profile, scope: Scope) {
    const messages = profile.short ? 1_000_000 : 8_000_000;
    // Long enough to pass the bound on a loaded machine (two busy cores: 19,000 messages a
    // second, 3.2 MiB of replies due after 8 s); a program that drops the peer ends it sooner.
    const seconds = profile.short ? 30 : 45;
    const program = await scope.start();
    const peers = await scope.data(program);
    scope.reader(peers.outdev); // outdev drained, so releases never push back
    const notify = scope.conn(await connectRetry(program.ports["notify-dev"]));
    const logBytes0 = program.bytes;
    const lines0 = program.lines;
    const rss0 = program.rss();
    const sampler = new RssSampler(program);
    // A primary that diverges all along (about 2000 datagrams a second with no secondary):
    // every epoch needs a checkpoint request.
    let diverging = true;
    const primaryDone = (async () => {
      for (let flow = 0; diverging; flow = (flow + 20) % 60_000) {
        await writeAll(peers.primary, udpBatch(flow, 20, "diverges"));
        await delay(10);
      }
    })().catch(() => {});
    scope.defer(async () => {
      diverging = false;
      closeAll(peers.primary);
      await primaryDone;
    });

    const round = new Uint8Array(ROUND.flatMap((m) => [...notifyMessage(m)]));
    const perWrite = 512;
    const chunk = new Uint8Array(round.length * perWrite);
    for (let i = 0; i < perWrite; i++) chunk.set(round, i * round.length);
    let sent = 0;
    let disconnectedAt: number | null = null;
    const t0 = performance.now();
    while (sent < messages && performance.now() - t0 < seconds * 1000) {
      try {
        await writeAll(notify, chunk);
      } catch {
        disconnectedAt = sent;
        break;
      }
      sent += ROUND.length * perWrite;
      if (program.bytes - logBytes0 > LOG_ABORT) break;
    }
    diverging = false;
    const peak = sampler.stop();
    const logBytes = program.bytes - logBytes0;
    const lines = program.lines - lines0;
    const exit = await program.stop();
    const replies = (n: number) => Math.round((n * 6) / ROUND.length) * REPLY;
    const notReading = program.found(/event=peer-not-reading\b/)[0];
    const waiting = notReading ? parseLogfmt(notReading).waiting_bytes : undefined;
    return [
      {
        check: "a notify-dev peer that never reads is disconnected",
        bound: `before ${mib(OUTPUT_BOUND)} of output is due (1 MiB + socket buffers)`,
        measured: disconnectedAt === null
          ? `still connected after ${num(sent)} messages (${mib(replies(sent))} of replies due)`
          : `after ${num(disconnectedAt)} messages (${
            mib(replies(disconnectedAt))
          } of replies due` +
            (waiting ? `; the program logged ${num(Number(waiting))} bytes waiting)` : ")"),
        pass: disconnectedAt !== null && replies(disconnectedAt) <= OUTPUT_BOUND,
      },
      atMost("RSS growth meanwhile", peak - rss0, RSS_GROWTH_BOUND, mib),
      atMost(
        "log volume meanwhile",
        logBytes,
        LOG_BOUND,
        (n) => `${num(n / 1024)} KiB`,
        `${num(lines)} lines; most: ${program.topEvents()}`,
      ),
      cleanExit(exit),
    ];
  },
};
