/**
 * Trial 7 (SPEC 8 and SPEC 9 "fresh parser per connection"): peers come and go a thousand
 * times on each input and on outdev. Open file descriptors and RSS must not grow, and every
 * frame must come out exactly once.
 *
 * Inputs: each session connects, sends one complete datagram of its own flow (every tenth
 * session also the first bytes of another frame, lost when it closes) and closes; the primary's
 * and the secondary's copy arrive in separate sessions. Outdev: each session connects, a pair
 * is sent on the inputs, the session reads its one frame and closes. The next session starts
 * once the program logged that the last peer left, so one-peer-per-endpoint never refuses it.
 *
 * @module
 */

import { connectRetry } from "../../tests/support/net.ts";
import type { Program } from "../program.ts";
import { atMost, mib, num, type Scope, type Trial } from "../trial.ts";
import { closeAll, flowOf, FrameReader, udpFramed, writeAll } from "../traffic.ts";

const FD_GROWTH_BOUND = 2;
const RSS_GROWTH_BOUND = 16 * 2 ** 20;

/** Connects to `endpoint`, runs `session`, closes, and waits until the program saw it go. */
async function visit(
  program: Program,
  endpoint: string,
  left: () => number,
  session: (conn: Deno.TcpConn) => Promise<void>,
): Promise<void> {
  const before = left();
  const conn = await connectRetry(program.ports[endpoint]);
  try {
    await session(conn);
  } finally {
    closeAll(conn);
  }
  const deadline = performance.now() + 2000;
  while (left() === before && performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 1));
  }
}

export const churn: Trial = {
  id: 7,
  name: "churn",
  title: "1000 connects and disconnects on each input and on outdev",
  limitSeconds: { short: 60, full: 240 },
  async run(profile, scope: Scope) {
    const sessions = profile.short ? 100 : 1000;
    // Growth is measured over the second half: the first half lets the runtime's heap and
    // buffer pools settle (a garbage-collected heap grows until the collector runs).
    const warmup = sessions / 2;
    // At debug level every peer's going is a line (at info, 20 per 10 s, then a count).
    const program = await scope.start({ noNotify: true, flags: ["--log-level", "debug"] });
    const gone = (endpoint: string) =>
      program.count(new RegExp(`event=peer-disconnected\\b.*endpoint=${endpoint}\\b`));
    const left = {
      "primary-in": gone("primary-in"),
      "secondary-in": gone("secondary-in"),
      outdev: gone("outdev"),
    };
    const seen = new Map<number, number>();
    const note = (f: Uint8Array) => seen.set(flowOf(f), (seen.get(flowOf(f)) ?? 0) + 1);

    // Inputs come and go; one outdev reader stays.
    const outdev = scope.conn(await connectRetry(program.ports.outdev));
    const out = scope.reader(outdev, note);
    let fds0 = 0;
    let rss0 = 0;
    for (let i = 0; i < sessions; i++) {
      if (i === warmup) [fds0, rss0] = [program.fds(), program.rss()];
      const frame = udpFramed(i, `churn ${i}`);
      const partial = i % 10 === 9 ? udpFramed(i + 1, "never complete").subarray(0, 30) : null;
      for (const endpoint of ["primary-in", "secondary-in"] as const) {
        await visit(program, endpoint, left[endpoint], async (c) => {
          await writeAll(c, frame);
          if (partial) await writeAll(c, partial);
        });
      }
    }
    await out.until(() => out.frames >= sessions, 10_000, 2_000);
    const inputFds = program.fds() - fds0;
    const inputRss = program.rss() - rss0;
    await out.close();
    await new Promise((r) => setTimeout(r, 50));

    // outdev comes and goes; the inputs stay.
    const primary = scope.conn(await connectRetry(program.ports["primary-in"]));
    const secondary = scope.conn(await connectRetry(program.ports["secondary-in"]));
    let outFds0 = 0;
    let outRss0 = 0;
    let extra = 0;
    for (let i = 0; i < sessions; i++) {
      if (i === warmup) [outFds0, outRss0] = [program.fds(), program.rss()];
      const flow = sessions + i;
      await visit(program, "outdev", left.outdev, async (c) => {
        let mine = 0;
        const reader = new FrameReader(c, (f) => {
          note(f);
          if (flowOf(f) === flow) mine++;
          else extra++;
        });
        const frame = udpFramed(flow, `outdev churn ${i}`);
        await writeAll(primary, frame);
        await writeAll(secondary, frame);
        await reader.until(() => mine > 0, 2000);
        await reader.close();
      });
    }
    const outFds = program.fds() - outFds0;
    const outRss = program.rss() - outRss0;

    const half = "growth over the second half";
    let once = 0;
    let twice = 0;
    for (let flow = 0; flow < 2 * sessions; flow++) {
      const n = seen.get(flow) ?? 0;
      if (n === 1) once++;
      else if (n > 1) twice++;
    }
    return [
      atMost(`open fds, ${num(sessions)} sessions per input`, inputFds, FD_GROWTH_BOUND, num, half),
      atMost(`RSS, ${num(sessions)} sessions per input`, inputRss, RSS_GROWTH_BOUND, mib, half),
      atMost(`open fds, ${num(sessions)} outdev sessions`, outFds, FD_GROWTH_BOUND, num, half),
      atMost(`RSS, ${num(sessions)} outdev sessions`, outRss, RSS_GROWTH_BOUND, mib, half),
      {
        check: "every frame out exactly once",
        bound: `${num(2 * sessions)} once, 0 twice, 0 missing`,
        measured:
          `${num(once)} once, ${num(twice)} more than once, ${
            num(2 * sessions - once - twice)
          } missing` + (extra ? `, ${num(extra)} to the wrong outdev session` : ""),
        pass: once === 2 * sessions && twice === 0 && extra === 0,
      },
    ];
  },
};
