import assert from "node:assert/strict";
import { parseCommandLine } from "../src/cli.ts";
import type { Config } from "../src/cli.ts";
import { warmUp } from "../src/warmup.ts";
import { freePorts } from "./support/net.ts";
import { listenEndpoints, startProgram } from "./support/program.ts";

function config(...flags: string[]): Config {
  const command = parseCommandLine([...listenEndpoints(true), ...flags]);
  assert.equal(command.kind, "run");
  return (command as { config: Config }).config;
}

Deno.test("warm-up: every pair comes back through the throwaway comparator, nothing left open", async () => {
  const report = await warmUp(config(), 300);
  assert.equal(report.error, undefined);
  assert.equal(report.pairs, 300);
  assert.equal(report.collected, true);
});

Deno.test("warm-up: with vnet headers, as --vnet-hdr-support frames them", async () => {
  const report = await warmUp(config("--vnet-hdr-support"), 200);
  assert.equal(report.error, undefined);
  assert.equal(report.pairs, 200);
});

Deno.test("warm-up: its deadline ends it early, and says so", async () => {
  const report = await warmUp(config(), 10_000_000, 30);
  assert.equal(report.error, "over 30 ms");
  assert.ok(report.pairs < 10_000_000);
});

Deno.test("warm-up: the program runs it before listening; --no-warmup leaves it out", async () => {
  const warm = await startProgram({ flags: ["--log-level", "debug"], noNotify: true });
  const lines = (await warm.stop()).stderr.split("\n");
  const at = lines.findIndex((l) => l.includes("event=warmup"));
  assert.match(lines[at], /event=warmup pairs=1500 ms=\d+ collected=true$/);
  assert.ok(at < lines.findIndex((l) => l.includes("event=listening")));

  const cold = await startProgram({
    flags: ["--log-level", "debug", "--no-warmup"],
    noNotify: true,
  });
  const { stderr } = await cold.stop();
  assert.match(stderr, /event=listening/);
  assert.doesNotMatch(stderr, /event=warmup/);
});

Deno.test("warm-up: without loopback granted whole it is skipped, never prompted for", async () => {
  const [p, s, o] = freePorts(3);
  const program = await startProgram({
    permissions: [
      `--allow-net=127.0.0.1:${p},127.0.0.1:${s},127.0.0.1:${o}`,
      "--allow-read",
      "--allow-ffi",
    ],
    endpoints: [
      "--primary-in",
      `tcp-listen:127.0.0.1:${p}`,
      "--secondary-in",
      `tcp-listen:127.0.0.1:${s}`,
      "--outdev",
      `tcp-listen:127.0.0.1:${o}`,
    ],
    flags: ["--log-level", "debug"],
  });
  const { stderr } = await program.stop();
  assert.match(stderr, /event=warmup pairs=0 ms=0 error="net permission for 127.0.0.1 is prompt"/);
});
