/**
 * The flags of SPEC 12 on the command line: parsed into the Config, and every mistake a user
 * can make ends the program at start with exit 2 and one line naming the flag.
 */

import assert from "node:assert/strict";
import { parseCommandLine, UsageError } from "../../src/cli.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const BASE = [
  "--primary-in",
  "tcp-listen:127.0.0.1:0",
  "--secondary-in",
  "tcp-listen:127.0.0.1:0",
  "--outdev",
  "tcp-listen:127.0.0.1:0",
];

Deno.test("cli: --capture, --capture-max-bytes, --metrics, --monitor and --id", () => {
  const c = parseCommandLine([
    ...BASE,
    "--capture",
    "/tmp/d.pcapng",
    "--capture-max-bytes",
    "1000",
    "--metrics",
    "tcp-listen:127.0.0.1:9464",
    "--monitor",
    "unix-listen:/run/cc.qmp",
    "--id",
    "cc1",
  ]);
  assert.equal(c.kind, "run");
  if (c.kind !== "run") return;
  assert.equal(c.config.capture, "/tmp/d.pcapng");
  assert.equal(c.config.captureMaxBytes, 1000);
  assert.equal(c.config.metrics?.text, "tcp-listen:127.0.0.1:9464");
  assert.equal(c.config.monitor?.text, "unix-listen:/run/cc.qmp");
  assert.equal(c.config.id, "cc1");
  const d = parseCommandLine(BASE);
  if (d.kind !== "run") return;
  assert.equal(d.config.capture, null);
  assert.equal(d.config.captureMaxBytes, 64 * 1024 * 1024);
  assert.equal(d.config.metrics, null);
  assert.equal(d.config.monitor, null);
  assert.equal(d.config.id, "colo-compare0");
});

Deno.test("cli: mistakes in the SPEC 12 flags name the flag and the fix", () => {
  const cases: [string[], RegExp][] = [
    [
      ["--metrics", "tcp:127.0.0.1:9464"],
      /^--metrics: tcp:127\.0\.0\.1:9464 is not a listen address; e\.g\./,
    ],
    [["--monitor", "unix:/run/x"], /^--monitor: unix:\/run\/x is not a listen address/],
    [["--metrics", "127.0.0.1:9464"], /^--metrics: /],
    [["--id", "9lives"], /^--id: "9lives" is not a valid object id/],
    [["--capture", "/tmp/d.pcapng", "--capture-max-bytes", "0"], /^--capture-max-bytes: 0 is not/],
    [["--capture"], /^--capture needs a value/],
  ];
  for (const [flags, re] of cases) {
    assert.throws(() => parseCommandLine([...BASE, ...flags]), (e: unknown) => {
      assert.ok(e instanceof UsageError);
      assert.match(e.message, re);
      return true;
    });
  }
});

async function runToExit(flags: string[]): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...BASE, ...flags],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("cli: an unwritable --capture, or a busy --metrics/--monitor port, is exit 2 at start", async () => {
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (busy.addr as Deno.NetAddr).port;
  try {
    for (
      const [flags, re] of [
        [
          ["--capture", "/nonexistent-dir/d.pcapng"],
          /^colo-compare: --capture \/nonexistent-dir\/d\.pcapng: cannot create it/,
        ],
        [
          ["--metrics", `tcp-listen:127.0.0.1:${port}`],
          /^colo-compare: --metrics tcp-listen:127\.0\.0\.1:\d+: cannot listen/,
        ],
        [
          ["--monitor", `tcp-listen:127.0.0.1:${port}`],
          /^colo-compare: --monitor tcp-listen:127\.0\.0\.1:\d+: cannot listen/,
        ],
      ] as [string[], RegExp][]
    ) {
      const { code, stderr } = await runToExit(flags);
      assert.equal(code, 2, stderr);
      const lines = stderr.trim().split("\n").filter((l) => l.startsWith("colo-compare:"));
      assert.equal(lines.length, 1, stderr);
      assert.match(lines[0], re);
      assert.doesNotMatch(stderr, /event=ready/, "nothing half-started");
    }
  } finally {
    busy.close();
  }
});
