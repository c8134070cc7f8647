/**
 * Trial 10 (SPEC 8, "Every resource has a bound, whatever the peers do"; SPEC 11, 12):
 * thousands of connections that never say anything, to `/metrics`, to the monitor and to a
 * `tls-listen:` input, at once. The program must keep its descriptors and memory bounded, log
 * the refusals a few lines in all, and serve a real scraper, a QMP client and a TLS peer with
 * its certificate once the crowd has gone.
 *
 * @module
 */

import { connectRetry } from "../../tests/support/net.ts";
import { makeCreds, removeCreds } from "../../tests/support/tls_creds.ts";
import { RssSampler } from "../program.ts";
import { atMost, cleanExit, mib, num, type Scope, type Trial } from "../trial.ts";

/** Each control server and the TLS listener serve at most 16 (src/monitor, src/metrics, tls). */
const SERVED = 16;
/** Descriptors beyond the start: the three bounds, and a few of the program's own. */
const FD_BOUND = 3 * SERVED + 16;
const RSS_GROWTH_BOUND = 64 * 2 ** 20;
/** Refusal lines for the whole crowd: a few per listener and 10 s, not one per connection. */
const LOG_LINES_BOUND = 12;

/** Opens `n` connections to `port` and leaves them silent; those refused at once count too. */
async function crowd(port: number, n: number, scope: Scope): Promise<number> {
  let opened = 0;
  for (let i = 0; i < n; i++) {
    try {
      scope.conn(await Deno.connect({ hostname: "127.0.0.1", port }));
      opened++;
    } catch {
      // the backlog is full: a refusal all the same
    }
  }
  return opened;
}

/**
 * The program's descriptors once refused connections have been closed: sampled every 50 ms
 * until three samples agree (at most 3 s). Right after a burst some accepted sockets are
 * still on their way to being closed.
 */
async function settledFds(fds: () => number): Promise<number> {
  let last = fds();
  let same = 0;
  for (let i = 0; i < 60 && same < 2; i++) {
    await new Promise((r) => setTimeout(r, 50));
    const now = fds();
    same = now === last ? same + 1 : 0;
    last = now;
  }
  return last;
}

/** The status line of a `GET /metrics`, or why there was none. */
async function scrape(port: number): Promise<string> {
  try {
    const r = await fetch(`http://127.0.0.1:${port}/metrics`, {
      signal: AbortSignal.timeout(3000),
    });
    await r.body?.cancel();
    return `HTTP ${r.status}`;
  } catch (error) {
    return `no answer (${(error as Error).name})`;
  }
}

/** The first bytes the monitor sends a new client: its QMP greeting. */
async function greeting(port: number): Promise<string> {
  const conn = await connectRetry(port);
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const buf = new Uint8Array(256);
    const n = await Promise.race([
      // Closed below when the greeting is late: that read's end is no answer either.
      conn.read(buf).catch(() => null),
      new Promise<null>((r) => timer = setTimeout(() => r(null), 3000)),
    ]);
    return n === null ? "" : new TextDecoder().decode(buf.subarray(0, n));
  } finally {
    clearTimeout(timer);
    conn.close();
  }
}

export const idleClients: Trial = {
  id: 10,
  name: "idle-clients",
  title: "thousands of silent connections to /metrics, the monitor and a tls-listen: input",
  limitSeconds: { short: 60, full: 90 },
  async run(profile, scope: Scope) {
    const perListener = profile.short ? 1000 : 4000;
    const creds = await makeCreds();
    scope.defer(() => removeCreds(creds));
    const program = await scope.start({
      endpoints: [
        "--primary-in",
        "tls-listen:127.0.0.1:0",
        "--secondary-in",
        "tcp-listen:127.0.0.1:0",
        "--outdev",
        "tcp-listen:127.0.0.1:0",
      ],
      flags: [
        "--tls-creds",
        creds.dir,
        "--metrics",
        "tcp-listen:127.0.0.1:0",
        "--monitor",
        "tcp-listen:127.0.0.1:0",
      ],
    });
    const fds0 = program.fds();
    const rss0 = program.rss();
    const sampler = new RssSampler(program);
    scope.defer(() => void sampler.stop());
    let fdsPeak = fds0;
    const fdTimer = setInterval(() => fdsPeak = Math.max(fdsPeak, program.fds()), 50);
    scope.defer(() => clearInterval(fdTimer));

    const opened = [
      await crowd(program.ports.metrics, perListener, scope),
      await crowd(program.ports.monitor, perListener, scope),
      await crowd(program.ports["primary-in"], perListener, scope),
    ];
    fdsPeak = Math.max(fdsPeak, program.fds());
    const fdsHeld = await settledFds(program.fds.bind(program)) - fds0;
    const duringCrowd = await scrape(program.ports.metrics);

    // The crowd goes; the real clients come.
    const crowdConns = opened.reduce((a, b) => a + b, 0);
    scope.closeConns();
    const afterScrape = await scrape(program.ports.metrics);
    const hello = await greeting(program.ports.monitor);
    let tlsPeer = "refused";
    try {
      const conn = await Deno.connectTls({
        hostname: "127.0.0.1",
        port: program.ports["primary-in"],
        caCerts: [await Deno.readTextFile(`${creds.dir}/ca-cert.pem`)],
        cert: await Deno.readTextFile(`${creds.dir}/client-cert.pem`),
        key: await Deno.readTextFile(`${creds.dir}/client-key.pem`),
      });
      scope.conn(conn);
      await conn.handshake();
      await program.waitForLine(/event=peer-connected endpoint=primary-in/, 5000);
      tlsPeer = "connected";
    } catch (error) {
      tlsPeer = `not connected (${(error as Error).message})`;
    }
    clearInterval(fdTimer);
    const rssPeak = sampler.stop();
    const refusals = [
      "metrics-client-refused",
      "metrics-client-evicted",
      "monitor-client-refused",
      "monitor-client-evicted",
      "tls-refused",
    ]
      .reduce((n, e) => n + (program.events.get(e) ?? 0), 0);
    const exit = await program.stop();
    return [
      atMost(
        "open descriptors while the crowd waits",
        fdsHeld,
        FD_BOUND,
        num,
        `${num(crowdConns)} silent connections, ${num(perListener)} per listener; ` +
          `${num(fdsPeak - fds0)} at most while refused ones were being closed`,
      ),
      atMost("RSS growth meanwhile", rssPeak - rss0, RSS_GROWTH_BOUND, mib),
      atMost(
        "refusal log lines (summarised, not one per connection)",
        refusals,
        LOG_LINES_BOUND,
        num,
        `scrape during the crowd: ${duringCrowd}`,
      ),
      {
        check: "after the crowd: /metrics, the monitor and a TLS peer are served",
        bound: "HTTP 200; a QMP greeting; the peer connected",
        measured: `${afterScrape}; ${hello.includes('"QMP"') ? "greeting" : "no greeting"}; ` +
          tlsPeer,
        pass: afterScrape === "HTTP 200" && hello.includes('"QMP"') && tlsPeer === "connected",
      },
      cleanExit(exit),
    ];
  },
};
