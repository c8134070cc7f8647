import assert from "node:assert/strict";
import { parseCommandLine } from "../src/cli.ts";
import type { Config } from "../src/cli.ts";
import { PROGRAM_V8_FLAGS } from "../src/v8_flags.ts";
import { RELEASE_EVERY, warmUp } from "../src/warmup.ts";
import type { WarmupChildResult } from "./support/warmup_child.ts";
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

Deno.test("warm-up: pages and malloc's memory go back every RELEASE_EVERY pairs and after each comparator", async () => {
  let released = 0;
  const pairs = 3 * RELEASE_EVERY; // two thirds through the first comparator, the rest the second
  const report = await warmUp(config(), pairs, 10_000, () => released++);
  assert.equal(report.error, undefined);
  assert.equal(report.pairs, pairs);
  // The first: after its 250th pair and after it; the second (250 pairs): after it.
  assert.equal(released, 3);
  assert.equal(report.releases, 3);
});

const CHILD = new URL("./support/warmup_child.ts", import.meta.url).pathname;

Deno.test("warm-up: with the program's V8 flags the hot path is left compiled by TurboFan, ready for the real comparator", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${PROGRAM_V8_FLAGS},--allow-natives-syntax`, CHILD],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const result: WarmupChildResult = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.equal(result.pairs, 3000);
  // A full collection after the last throwaway comparator left these with no code at all;
  // V8's default thresholds, at baseline code.
  assert.deepEqual(result.tiers, { parseFrameAt: "turbofan", push: "turbofan" });
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
  assert.match(lines[at], /event=warmup pairs=3000 ms=\d+ releases=\d+ collected=true$/);
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
