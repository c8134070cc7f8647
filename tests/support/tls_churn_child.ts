/**
 * Run with `--v8-flags=--expose-gc` and a credentials directory: a `tls-listen:` listener in
 * this process, connections to it opened and closed at once in a loop (silent, or after a few
 * bytes that are no TLS), and the JavaScript heap after a full collection at two points.
 * Prints `{ bytesPerConnection }`: what each of the later connections left behind.
 *
 * @module
 */

import { Logger } from "../../src/log.ts";
import { parseAddress } from "../../src/wire/address.ts";
import { TlsTransport } from "../../src/wire/tls.ts";
import { loadCredentials } from "../../src/wire/tls_creds.ts";

const gc = (globalThis as { gc?: () => void }).gc!;
const t = new TlsTransport({
  creds: loadCredentials(Deno.args[0], { server: true, client: true }),
  authz: null,
  log: new Logger("error", () => {}),
});
const listener = await t.listen(parseAddress("tls-listen:127.0.0.1:0"));
const port = Number(listener.boundText.split(":").at(-1));
const garbage = new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n");

/** `count` connections, eight at a time, each closed once it is up (half after garbage). */
async function churn(count: number): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < count) {
      const i = next++;
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      if (i % 2 === 1) await c.write(garbage).catch(() => 0);
      c.close();
    }
  }));
  // The server side sees each close a little later: wait for its sockets to go.
  await new Promise((r) => setTimeout(r, 300));
}

function heap(): number {
  for (let i = 0; i < 4; i++) gc();
  return Deno.memoryUsage().heapUsed;
}

await churn(500);
const before = heap();
await churn(2000);
const after = heap();
listener.close();
console.log(JSON.stringify({ bytesPerConnection: (after - before) / 2000 }));
Deno.exit(0);
