/**
 * `deno task lab` flags: a mistake ends it at once with exit 2 and one line naming the flag,
 * before anything is built or started.
 */

import assert from "node:assert/strict";

const LAB = new URL("../../lab/lab.ts", import.meta.url).pathname;

async function lab(...args: string[]): Promise<{ code: number; stderr: string; stdout: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", LAB, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return { code: out.code, stderr: d.decode(out.stderr), stdout: d.decode(out.stdout) };
}

for (
  const [args, names] of [
    [["--mode", "xen"], "--mode"],
    [["--requests", "0"], "--requests"],
    [["--checkpoint-delay", "soon"], "--checkpoint-delay"],
    [["--accel", "hvf"], "--accel"],
    [["--secondary-monitor", "yes"], "--secondary-monitor"],
    [["--guest-announce", "no"], "--guest-announce"],
    [["--sockets", "vsock"], "--sockets"],
    [["--colour"], "--colour"],
    [["--bulk", "5M"], "--bulk"],
    [["--bulk", "1x"], "--bulk"],
    [["--downloads", "3"], "--downloads"],
    [["--bulk", "1M", "--downloads", "0"], "--downloads"],
    [["--bulk", "1M", "--failover"], "--failover"],
  ] as const
) {
  Deno.test(`lab: ${args.join(" ")} exits 2 with one line naming ${names}`, async () => {
    const r = await lab(...args);
    assert.equal(r.code, 2);
    assert.equal(r.stdout, "");
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], new RegExp(`^lab: .*${names}`));
  });
}

Deno.test("lab: --help prints the flags and exits 0", async () => {
  const r = await lab("--help");
  assert.equal(r.code, 0);
  for (
    const flag of [
      "--mode",
      "--requests",
      "--failover",
      "--compare",
      "--only-same",
      "--accel",
      "--secondary-monitor",
      "--bulk",
      "--downloads",
      "--mixed",
      "--capture",
      "--guest-announce",
      "--sockets",
    ]
  ) {
    assert.ok(r.stdout.includes(flag), flag);
  }
});
