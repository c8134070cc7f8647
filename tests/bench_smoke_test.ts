/**
 * `deno task bench` keeps working: a short run against the pass-through forwarder prints the
 * table. (Speed itself is measured by the benchmark, never asserted by a test.)
 */

import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;

/** Runs `deno ARGS` in the repository; asserts exit 0 and returns stdout and stderr. */
async function deno(args: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, text);
  return text;
}

/** A `--quick` run of `deno task bench` with `targets` on workload `only`; its output. */
function quickBench(targets: string, only: string): Promise<string> {
  return deno(["task", "bench", "--quick", "--targets", targets, "--only", only]);
}

Deno.test("bench: a quick run against the forwarder prints the table", async () => {
  const text = await quickBench("forwarder", "tcp-1000");
  assert.match(text, /\| tcp-1000 +\| forwarder +\| [\d,]+/);
});

Deno.test("bench: the diverged workload's frames all come out of ours through the checkpoints it asks for", async () => {
  const text = await quickBench("ours", "diverged");
  // The lost column is 0: every primary frame sent was released by a checkpoint's flush.
  assert.match(text, /\| diverged +\| ours +\| [\d,]+ .*\| 0 +\| +\|$/m);
  const line = text.match(/diverged\/ours: (\d+) DO_CHECKPOINT, (\d+) COLO_CHECKPOINT answered/);
  assert.ok(line, text);
  assert.ok(Number(line[2]) > 0, "checkpoints were asked for and answered");
  assert.equal(line[1], line[2], "one request per epoch, each answered");
});

Deno.test("bench: the latency-unix workload runs ours over unix sockets and prints its row", async () => {
  const text = await quickBench("ours", "latency-unix");
  assert.match(text, /\| latency-unix +\| ours +\| .*\| \d+ µs \| \d+ µs \|/);
  assert.match(text, /latency-unix\/ours: warm 300 pairs p50 \d+ µs/);
});

Deno.test("bench: latency_mix serves ours and the forwarder in turn and prints a row for each", async () => {
  const text = await deno([
    "run",
    "-A",
    "bench/latency_mix.ts",
    ...["--targets", "forwarder", "--ours", `ours=${Deno.execPath()} run -A ${ROOT}main.ts`],
    ...["--pairs", "300", "--warmup", "10", "--cold", "50"],
  ]);
  for (const target of ["ours", "forwarder"]) {
    assert.match(text, new RegExp(`^${target} +warm p50 \\d+ µs .* cold p99 \\d+ µs`, "m"));
  }
});
