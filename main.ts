/**
 * colo-compare: parse flags, start, wait for SIGINT/SIGTERM, stop.
 *
 * @module
 */

import { type Config, configAddresses, HELP, parseCommandLine, UsageError } from "./src/cli.ts";
import { Comparator } from "./src/comparator.ts";
import { Logger } from "./src/log.ts";
import { ExecutablePages } from "./src/exec_pages.ts";
import { fixMmapThreshold } from "./src/malloc.ts";
import { BLOCK_SIZE } from "./src/pool.ts";
import { dropPermissions } from "./src/permissions.ts";
import { VERSION } from "./src/version.ts";
import { StartupError } from "./src/wire/endpoint.ts";
import { TcpTuner } from "./src/wire/keepalive.ts";
import type { Transport } from "./src/wire/transport.ts";

function fail(message: string): never {
  console.error(`colo-compare: ${message}`);
  Deno.exit(2);
}

function waitForSignal(): Promise<Deno.Signal> {
  return new Promise((resolve) => {
    const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
    const handlers = signals.map((s) => {
      const h = () => {
        signals.forEach((t, i) => Deno.removeSignalListener(t, handlers[i]));
        resolve(s);
      };
      Deno.addSignalListener(s, h);
      return h;
    });
  });
}

/**
 * The TLS transport over `--tls-creds`, or null without TLS addresses. Its modules are loaded
 * only then: node:tls and node:crypto cost about 4 MiB of RSS (bench/README.md, issue 11).
 */
async function tlsTransport(config: Config, log: Logger): Promise<Transport | null> {
  if (config.tlsCreds === null) return null;
  const { CredentialsError, credentialsFor } = await import("./src/wire/tls_creds.ts");
  const { TlsTransport } = await import("./src/wire/tls.ts");
  let creds;
  try {
    creds = credentialsFor(config.tlsCreds, configAddresses(config));
  } catch (error) {
    if (error instanceof CredentialsError) fail(`--tls-creds: ${error.message}`);
    throw error;
  }
  // The comparator's TCP tuner (SPEC 11 keepalive): one shared instance, opened while ffi is granted.
  const tuner = TcpTuner.shared();
  return creds && new TlsTransport({ creds, authz: config.tlsAuthz, log, tuner });
}

/** Gives the executable's read-only pages back: what it did, for the log. */
function release(pages: ExecutablePages): Record<string, number | string> {
  const before = Deno.memoryUsage().rss;
  try {
    const { bytes, refused } = pages.release();
    const rss = Deno.memoryUsage().rss;
    return { mapped: bytes, released: before - rss, rss, refused };
  } catch (error) {
    return { unchanged: String(error) };
  }
}

async function main(args: string[]): Promise<number> {
  let command;
  try {
    command = parseCommandLine(args);
  } catch (error) {
    if (error instanceof UsageError) fail(error.message);
    throw error;
  }
  switch (command.kind) {
    case "help":
      console.log(HELP);
      return 0;
    case "version":
      console.log(`colo-compare ${VERSION}`);
      return 0;
    // The demo and replay commands are loaded only when run: the comparator does not carry them.
    case "demo":
      try {
        const { runDemo } = await import("./src/demo/demo.ts");
        return await runDemo({ logLevel: command.logLevel, keepCaptures: command.keepCaptures });
      } catch (error) {
        if (error instanceof UsageError) fail(error.message);
        throw error;
      }
    case "replay":
      try {
        const { parseReplayCommand, REPLAY_HELP, runReplay } = await import(
          "./src/replay/command.ts"
        );
        const replay = parseReplayCommand(command.args);
        if (replay === null) console.log(REPLAY_HELP);
        return replay === null ? 0 : await runReplay(replay);
      } catch (error) {
        if (error instanceof UsageError) fail(error.message);
        throw error;
      }
  }
  const config = command.config;
  const log = new Logger(config.logLevel);
  // Before the warm-up makes the first blocks (issue 11).
  const mmapThreshold = fixMmapThreshold(BLOCK_SIZE);
  log.debug("malloc", { mmap_threshold: mmapThreshold ? BLOCK_SIZE : "glibc's" });
  // Opened while read and ffi are granted; given back once serving, and with malloc trims.
  const pages = ExecutablePages.open();
  const comparator = new Comparator(config, log, {
    tls: await tlsTransport(config, log),
    pages: typeof pages === "string" ? null : pages,
  });
  const stopSignal = waitForSignal();
  // Bound first: a bad address ends the program at once, and a peer that connects during the
  // warm-up (QEMU started right after the comparator) waits in the kernel's queue instead of
  // being refused.
  try {
    await comparator.bind();
  } catch (error) {
    if (error instanceof StartupError) fail(error.message);
    throw error;
  }
  const releasePages = (at: string) =>
    log.debug("executable-pages", {
      ...(typeof pages === "string" ? { unchanged: pages } : release(pages)),
      at,
    });
  // A stop signal ends the warm-up at once, and the program stops without serving.
  const stopping = new AbortController();
  stopSignal.then(() => stopping.abort());
  // The hot path compiled before the first guest frame, on throwaway comparators (issue 11).
  // Its module is loaded first (the loader's pages go with the start's), then the pages only
  // the start needed go, and again as the warm-up goes on, so that what it runs (both
  // compilers, the collector) is never resident all at once: the warm-up adds about 3 MiB to
  // the start's peak RSS (bench/README.md, "The warm-up's own high-water mark").
  if (config.warmup !== false) {
    const { warmUp } = await import("./src/warmup.ts");
    releasePages("warmup");
    // release() catches what fails; the release once serving logs it.
    const giveBack = typeof pages === "string" ? undefined : () => void release(pages);
    const { clockMs, aheadPauses, ...report } = await warmUp(config, {
      release: giveBack,
      signal: stopping.signal,
    });
    log.debug("warmup", { ...report, clock_ms: clockMs, ahead_pauses: aheadPauses });
  }
  if (!stopping.signal.aborted) {
    await comparator.start();
    // Serving: the pages only the start needed go back (issue 11).
    releasePages("listening");
  }
  // SPEC 11: everything is bound and read; give back what the running program does not need.
  log.info("permissions", dropPermissions(configAddresses(config)));
  const signal = await stopSignal;
  log.info("stopping", { signal });
  await comparator.stop();
  if (typeof pages !== "string") pages.close();
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
