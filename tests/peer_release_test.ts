/**
 * The executable's pages go back shortly after a TLS peer connects (the code of its
 * handshake is not run again until the next): once for a burst of connects, at once when
 * every TLS endpoint has its peer, and at most once per interval however often a peer
 * reconnects. A plain peer's connect gives nothing back: the release would take the hot path's
 * pages just as the first frames need them.
 */

import assert from "node:assert/strict";
import { type Config, configAddresses, parseCommandLine } from "../src/cli.ts";
import { Comparator } from "../src/comparator.ts";
import type { ExecutablePages } from "../src/exec_pages.ts";
import { Logger } from "../src/log.ts";
import { boundPort } from "../src/wire/address.ts";
import { TlsTransport } from "../src/wire/tls.ts";
import { credentialsFor } from "../src/wire/tls_creds.ts";
import { makeCreds, rawClient, removeCreds, type TestCreds } from "./support/tls_creds.ts";

/** Counts releases; `next()` resolves at the next one. */
class CountingPages {
  releases = 0;
  #waiters: (() => void)[] = [];
  release(): { bytes: number; refused: number } {
    this.releases++;
    for (const w of this.#waiters.splice(0)) w();
    return { bytes: 0, refused: 0 };
  }
  anonymousRss(): number {
    return 0; // never grows: no malloc trim, whose release would count too
  }
  next(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}

/** The comparator's configuration, parsed from its flags as `main.ts` does. */
function config(primary: string, tlsCreds?: string): Config {
  const listen = "tcp-listen:127.0.0.1:0";
  const command = parseCommandLine([
    "--primary-in",
    primary,
    "--secondary-in",
    listen,
    "--outdev",
    listen,
    "--expired-scan-cycle",
    "100",
    ...(tlsCreds === undefined ? [] : ["--tls-creds", tlsCreds]),
  ]);
  assert.equal(command.kind, "run");
  return (command as { config: Config }).config;
}

/** Starts a comparator with counting pages (and a TLS transport when `config` needs one). */
async function started(config: Config, log = new Logger("error")) {
  const pages = new CountingPages();
  const creds = credentialsFor(config.tlsCreds, configAddresses(config));
  const tls = creds && new TlsTransport({ creds, authz: null, log, tuner: null });
  const comparator = new Comparator(config, log, {
    tls,
    pages: pages as unknown as ExecutablePages,
  });
  await comparator.start();
  const ports = comparator.addresses();
  const port = (name: string) => boundPort(ports[name]);
  return { pages, comparator, port };
}

let creds: TestCreds;

Deno.test.beforeAll(async () => {
  creds = await makeCreds();
});

Deno.test.afterAll(async () => {
  await removeCreds(creds);
});

Deno.test("peer release: plain peers' connects give no pages back", async () => {
  const { pages, comparator, port } = await started(config("tcp-listen:127.0.0.1:0"));
  const conns: Deno.Conn[] = [];
  try {
    for (const name of ["primary-in", "secondary-in", "outdev"]) {
      conns.push(await Deno.connect({ hostname: "127.0.0.1", port: port(name) }));
    }
    // Past the 100 ms a release waits after a connect.
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(pages.releases, 0, "a plain peer's connect released the executable's pages");
  } finally {
    for (const c of conns) c.close();
    await comparator.stop();
  }
});

Deno.test("peer release: after a TLS peer, once for a burst of connects; a reconnect within the interval waits", async () => {
  const { pages, comparator, port } = await started(
    config("tls-listen:127.0.0.1:0", creds.dir),
  );
  const conns: Deno.Conn[] = [];
  try {
    const released = pages.next();
    const tlsPeer = await rawClient(port("primary-in"), creds.dir);
    await tlsPeer.handshake();
    conns.push(tlsPeer);
    for (const name of ["secondary-in", "outdev"]) {
      conns.push(await Deno.connect({ hostname: "127.0.0.1", port: port(name) }));
    }
    await released;
    assert.equal(pages.releases, 1, "three connects in a burst, one release");

    // The TLS peer comes again at once: its release waits for the interval (10 s), past the
    // 100 ms that a first connect waits.
    tlsPeer.close();
    conns.splice(conns.indexOf(tlsPeer), 1);
    const again = await rawClient(port("primary-in"), creds.dir);
    await again.handshake();
    conns.push(again);
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(pages.releases, 1, "a reconnect within the interval released again");
  } finally {
    for (const c of conns) c.close();
    await comparator.stop(); // clears the waiting release (the sanitizers would see it)
  }
});

Deno.test("peer release: at once when every TLS endpoint has its peer, not the burst's 100 ms later", async () => {
  const { pages, comparator, port } = await started(
    config("tls-listen:127.0.0.1:0", creds.dir),
  );
  const conns: Deno.Conn[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const released = pages.next().then(() => "released" as const);
    const tlsPeer = await rawClient(port("primary-in"), creds.dir);
    await tlsPeer.handshake();
    conns.push(tlsPeer);
    // The only TLS endpoint has its peer: the release is due now. Waiting for the burst, it
    // would come 100 ms after the comparator saw the peer, which is after this handshake ended.
    const late = new Promise<"late">((r) => timer = setTimeout(() => r("late"), 80));
    assert.equal(await Promise.race([released, late]), "released");
    assert.equal(pages.releases, 1);
  } finally {
    clearTimeout(timer);
    for (const c of conns) c.close();
    await comparator.stop();
  }
});
