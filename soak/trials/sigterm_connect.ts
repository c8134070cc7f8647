/**
 * Trial 6 (SPEC 8, "exit 0, promptly even while a connect is still pending"): primary-in and
 * outdev are `tcp:` addresses whose listener never accepts and whose accept queue is full, so
 * the kernel drops the program's SYNs and its connects stay pending (for about two minutes,
 * the SYN retries). SIGTERM must end the program at once.
 *
 * Everything stays on loopback: the listeners are this process's own.
 *
 * @module
 */

import net from "node:net";
import type { Scope, Trial } from "../trial.ts";
import { delay } from "../traffic.ts";
import { num } from "../format.ts";

const EXIT_BOUND_MS = 2000;

/**
 * A loopback listener that never accepts, with its accept queue filled by our own connects:
 * a further connect to it stays pending. Returns its port.
 */
async function blackhole(scope: Scope): Promise<number> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const fillers: net.Socket[] = [];
  scope.defer(() => {
    for (const s of fillers) s.destroy();
    listener.close();
  });
  for (let i = 0; i < 4096; i++) {
    const s = net.connect({ host: "127.0.0.1", port });
    s.on("error", () => {});
    fillers.push(s);
    const connected = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 300);
      s.once("connect", () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    if (!connected) return port;
  }
  throw new Error("the listener's accept queue did not fill");
}

export const sigtermConnect: Trial = {
  id: 6,
  name: "sigterm-connect",
  title: "SIGTERM while tcp: connects are pending",
  limitSeconds: { short: 40, full: 40 },
  async run(_profile, scope: Scope) {
    const primary = await blackhole(scope);
    const outdev = await blackhole(scope);
    const program = await scope.start({
      endpoints: [
        "--primary-in",
        `tcp:127.0.0.1:${primary}`,
        "--secondary-in",
        "tcp-listen:127.0.0.1:0",
        "--outdev",
        `tcp:127.0.0.1:${outdev}`,
      ],
    });
    // The connects start right after `ready`; give their SYNs time to be sent and dropped.
    await delay(500);
    const exit = await program.stop("SIGTERM", 10_000);
    return [{
      check: "exit on SIGTERM with two tcp: connects pending",
      bound: `exit 0 within ${num(EXIT_BOUND_MS)} ms`,
      measured: exit.killed
        ? `no exit in ${num(exit.ms)} ms (killed)`
        : `exit ${exit.code} after ${num(exit.ms)} ms`,
      pass: !exit.killed && exit.code === 0 && exit.ms <= EXIT_BOUND_MS,
    }];
  },
};
