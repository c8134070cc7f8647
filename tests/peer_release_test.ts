/**
 * The executable's pages go back shortly after peers connect (the code that connected them,
 * a TLS handshake's above all, is not run again until the next): once for a burst of
 * connects, and at most once per interval however often a peer reconnects.
 */

import assert from "node:assert/strict";
import { type Config, parseCommandLine } from "../src/cli.ts";
import { Comparator } from "../src/comparator.ts";
import type { ExecutablePages } from "../src/exec_pages.ts";
import { Logger } from "../src/log.ts";

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
function config(): Config {
  const listen = "tcp-listen:127.0.0.1:0";
  const command = parseCommandLine([
    "--primary-in",
    listen,
    "--secondary-in",
    listen,
    "--outdev",
    listen,
    "--expired-scan-cycle",
    "100",
  ]);
  assert.equal(command.kind, "run");
  return (command as { config: Config }).config;
}

Deno.test("peer release: the executable's pages go back once after a burst of connects, and a reconnect within the interval waits", async () => {
  const pages = new CountingPages();
  const comparator = new Comparator(
    config(),
    new Logger("error"),
    null,
    pages as unknown as ExecutablePages,
  );
  await comparator.start();
  const conns: Deno.TcpConn[] = [];
  try {
    const ports = comparator.addresses();
    const connect = async (name: string) => {
      const text = ports[name];
      const conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: Number(text.slice(text.lastIndexOf(":") + 1)),
      });
      conns.push(conn);
      return conn;
    };
    const released = pages.next();
    await connect("primary-in");
    await connect("secondary-in");
    const outdev = await connect("outdev");
    await released;
    assert.equal(pages.releases, 1, "three connects in a burst, one release");

    // outdev's peer comes again at once: its release waits for the interval (10 s), past
    // the 100 ms that a first connect waits.
    outdev.close();
    conns.splice(conns.indexOf(outdev), 1);
    await connect("outdev");
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(pages.releases, 1, "a reconnect within the interval released again");
  } finally {
    for (const c of conns) c.close();
    await comparator.stop(); // clears the waiting release (the sanitizers would see it)
  }
});
