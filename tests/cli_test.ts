import assert from "node:assert/strict";
import { configAddresses, parseCommandLine, UsageError } from "../src/cli.ts";
import { freePort } from "./support/net.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const BASE = [
  "--primary-in",
  "tcp-listen:127.0.0.1:9001",
  "--secondary-in",
  "tcp-listen:127.0.0.1:9002",
  "--outdev",
  "tcp-listen:127.0.0.1:9003",
];

function usageError(args: string[]): string {
  try {
    parseCommandLine(args);
  } catch (error) {
    assert.ok(error instanceof UsageError, String(error));
    return error.message;
  }
  assert.fail(`accepted: ${args.join(" ")}`);
}

Deno.test("cli: the four streams, QEMU's defaults, and every option", () => {
  const c = parseCommandLine(BASE);
  assert.equal(c.kind, "run");
  if (c.kind !== "run") return;
  assert.equal(c.config.compareTimeout, 3000);
  assert.equal(c.config.expiredScanCycle, 1000);
  assert.equal(c.config.maxQueueSize, 1024);
  assert.equal(c.config.vnetHdrSupport, false);
  assert.equal(c.config.notifyDev, null);
  const d = parseCommandLine([
    ...BASE,
    "--notify-dev=tcp:[::1]:9009",
    "--compare-timeout",
    "300",
    "--expired-scan-cycle=100",
    "--max-queue-size",
    "8",
    "--vnet-hdr-support",
    "--log-level",
    "trace",
  ]);
  assert.equal(d.kind, "run");
  if (d.kind !== "run") return;
  assert.deepEqual(d.config.notifyDev, {
    transport: "tcp",
    listen: false,
    host: "::1",
    port: 9009,
    tls: false,
    text: "tcp:[::1]:9009",
  });
  assert.equal(d.config.compareTimeout, 300);
  assert.equal(d.config.expiredScanCycle, 100);
  assert.equal(d.config.maxQueueSize, 8);
  assert.equal(d.config.vnetHdrSupport, true);
  assert.equal(d.config.logLevel, "trace");
});

Deno.test("cli: unix addresses and the demo command", () => {
  const c = parseCommandLine([
    "--primary-in=unix-listen:/tmp/p.sock",
    "--secondary-in=unix:/tmp/s.sock",
    "--outdev=unix-listen:/tmp/o.sock",
  ]);
  assert.equal(c.kind, "run");
  assert.deepEqual(parseCommandLine(["demo"]), {
    kind: "demo",
    logLevel: null,
    keepCaptures: null,
  });
  assert.deepEqual(parseCommandLine(["demo", "--keep-captures", "/tmp/c"]), {
    kind: "demo",
    logLevel: null,
    keepCaptures: "/tmp/c",
  });
  assert.throws(
    () => parseCommandLine(["--primary-in=tcp:a:1", "--keep-captures", "/tmp/c"]),
    /--keep-captures belongs to the demo/,
  );
  assert.deepEqual(parseCommandLine(["--help"]), { kind: "help" });
  assert.deepEqual(parseCommandLine(["-V"]), { kind: "version" });
});

Deno.test("cli: tls: and tls-listen: addresses with --tls-creds and repeated --tls-authz (SPEC 11)", () => {
  const c = parseCommandLine([
    ...["--primary-in", "tls-listen:[::1]:9001", "--secondary-in", "tls-listen:127.0.0.1:9002"],
    ...["--outdev", "tls:peer.example:9003", "--tls-creds", "/etc/pki/qemu"],
    ...["--tls-authz", "O=Example,CN=primary", "--tls-authz", "O=Example,CN=secondary"],
  ]);
  assert.equal(c.kind, "run");
  if (c.kind !== "run") return;
  assert.deepEqual(c.config.primaryIn, {
    transport: "tcp",
    listen: true,
    host: "::1",
    port: 9001,
    tls: true,
    text: "tls-listen:[::1]:9001",
  });
  assert.equal(c.config.outdev.transport === "tcp" && c.config.outdev.tls, true);
  assert.equal(c.config.tlsCreds, "/etc/pki/qemu");
  assert.deepEqual(c.config.tlsAuthz, ["O=Example,CN=primary", "O=Example,CN=secondary"]);
  assert.deepEqual(configAddresses(c.config).map((a) => a.text), [
    "tls-listen:[::1]:9001",
    "tls-listen:127.0.0.1:9002",
    "tls:peer.example:9003",
  ]);
  // Without a tls address, --tls-creds is not needed and not used.
  const plain = parseCommandLine([...BASE, "--tls-creds", "/etc/pki/qemu"]);
  assert.ok(plain.kind === "run" && plain.config.tlsCreds === null);
  assert.ok(plain.kind === "run" && plain.config.tlsAuthz === null);
});

Deno.test("cli: a tls address without --tls-creds, and --tls-authz without tls-listen:, are errors", () => {
  assert.match(
    usageError([...BASE.slice(0, 4), "--outdev", "tls:127.0.0.1:9003"]),
    /^--outdev tls:127\.0\.0\.1:9003 needs --tls-creds DIR: .*client certificate and key/,
  );
  assert.match(
    usageError(["--primary-in", "tls-listen:127.0.0.1:9001", ...BASE.slice(2)]),
    /^--primary-in tls-listen:127\.0\.0\.1:9001 needs --tls-creds DIR: .*server certificate/,
  );
  assert.match(
    usageError([...BASE, "--tls-creds", "/d", "--tls-authz", "O=Example,CN=client"]),
    /^--tls-authz checks clients of tls-listen: addresses, and none is given/,
  );
  assert.match(
    usageError([
      ...["--primary-in", "tls-listen:127.0.0.1:9001", ...BASE.slice(2), "--tls-creds", "/d"],
      ...["--tls-authz", "client"],
    ]),
    /^--tls-authz: "client" is not a distinguished name; .*O=Example,CN=client/,
  );
  assert.match(usageError([...BASE.slice(0, 4), "--outdev", "tls:9003"]), /no port/);
});

Deno.test("cli: the timer flags take QEMU's uint32 range, as qom-set does", () => {
  for (const flag of ["compare-timeout", "expired-scan-cycle"]) {
    const c = parseCommandLine([...BASE, `--${flag}`, String(2 ** 32 - 1)]);
    assert.ok(c.kind === "run");
    const config = c.config;
    assert.equal(
      flag === "compare-timeout" ? config.compareTimeout : config.expiredScanCycle,
      2 ** 32 - 1,
    );
    assert.match(
      usageError([...BASE, `--${flag}`, String(2 ** 32)]),
      new RegExp(`^--${flag}: 4294967296 is too large; the limit is 4294967295 milliseconds`),
    );
  }
});

Deno.test("cli: every user error names the flag and the fix", () => {
  const cases: [string[], RegExp][] = [
    [BASE.slice(2), /^--primary-in is required: .*e\.g\. --primary-in tcp-listen:/],
    [[...BASE, "--bogus"], /^unknown flag --bogus/],
    [[...BASE, "--compare-timeout", "0"], /^--compare-timeout: 0 is not allowed/],
    [[...BASE, "--compare-timeout", "-5"], /^--compare-timeout: "-5" is not a positive whole/],
    [[...BASE, "--max-held-bytes", "-1"], /^--max-held-bytes: "-1" is not a number of bytes/],
    [
      ["--primary-in", "--secondary-in", "tcp-listen:127.0.0.1:0"],
      /^--primary-in needs a value before --secondary-in; see --help$/,
    ],
    [[...BASE.slice(0, 4), "--outdev", "-x"], /^--outdev: /],
    [[...BASE, "--capture", ""], /^--capture needs a file path/],
    [
      [...BASE, "--capture-max-bytes", "1000000"],
      /^--capture-max-bytes bounds the file of --capture, which is not given/,
    ],
    [
      [...BASE, "--monitor", "unix-listen:/tmp/c.sock", "--metrics", "unix-listen:/tmp/c.sock"],
      /^--monitor: unix-listen:\/tmp\/c\.sock is the same socket as --metrics/,
    ],
    [
      [
        ...BASE.slice(0, 4),
        "--outdev",
        "tcp-listen:127.0.0.1:9464",
        "--metrics",
        "tcp-listen:127.0.0.1:9464",
      ],
      /^--metrics: tcp-listen:127\.0\.0\.1:9464 is the same socket as --outdev/,
    ],
    [[...BASE, "--compare-timeout=-5"], /^--compare-timeout: "-5" is not a positive whole number/],
    [[...BASE, "--expired-scan-cycle", "1.5"], /^--expired-scan-cycle: "1.5" is not a positive/],
    [[...BASE, "--max-queue-size", "lots"], /^--max-queue-size: "lots" is not a positive/],
    [[...BASE, "--max-queue-size", "99999999999"], /^--max-queue-size: .* too large/],
    [[...BASE, "--compare-timeout"], /^--compare-timeout needs a value/],
    [[...BASE, "--vnet-hdr-support=yes"], /^--vnet-hdr-support takes no value/],
    [[...BASE, "--log-level", "loud"], /^--log-level: "loud" is not a level/],
    [[...BASE, "--max-held-bytes", "lots"], /^--max-held-bytes: "lots" is not a number of bytes/],
    [[...BASE, "--max-held-bytes", "0"], /^--max-held-bytes: 0 is too small; give at least 1M/],
    [[...BASE, "--max-held-bytes", "12T"], /^--max-held-bytes: "12T" is not a number of bytes/],
    [[...BASE, "--socket-mode", "rw"], /^--socket-mode: "rw" is not an octal file mode/],
    [[...BASE, "--socket-mode", "0800"], /^--socket-mode: "0800" is not an octal file mode/],
    [
      [...BASE, "--notify-dev", "udp:1.2.3.4:5"],
      /^--notify-dev: "udp:1\.2\.3\.4:5" is not an address/,
    ],
    [["--primary-in", "tcp:1.2.3.4", ...BASE.slice(2)], /^--primary-in: .* has no port/],
    [["--primary-in", "tcp:host:70000", ...BASE.slice(2)], /^--primary-in: .* is not a port/],
    [["--primary-in", "tcp:host:0", ...BASE.slice(2)], /port 0 can only be used to listen/],
    [["--primary-in", "tcp-listen:::1:5", ...BASE.slice(2)], /IPv6 hosts in brackets/],
    [["--primary-in", "unix:", ...BASE.slice(2)], /no socket path/],
    [["--primary-in", `unix:/${"x".repeat(120)}`, ...BASE.slice(2)], /limited to 107 bytes/],
    [
      [...BASE.slice(0, 4), "--outdev", "tcp-listen:127.0.0.1:9001"],
      /^--outdev: .* same socket as --primary-in/,
    ],
    [[...BASE, "extra"], /^unexpected argument "extra"/],
    [
      [...BASE, "--compare-timeout", "3000", "--compare-timeout=500"],
      /^--compare-timeout is given twice \("3000" and "500"\); give it once$/,
    ],
    [[...BASE, "--outdev", "tcp-listen:127.0.0.1:9004"], /^--outdev is given twice/],
  ];
  for (const [args, re] of cases) assert.match(usageError(args), re, args.join(" "));
  // A switch given twice says the same thing twice: not an error.
  assert.doesNotThrow(() =>
    parseCommandLine([...BASE, "--vnet-hdr-support", "--vnet-hdr-support"])
  );
});

Deno.test("cli: --qmp is KVM COLO's checkpoint channel, exclusive with --notify-dev", () => {
  const c = parseCommandLine([...BASE, "--qmp", "unix:/run/colo/qmp-compare.sock"]);
  assert.equal(c.kind, "run");
  if (c.kind !== "run") return;
  assert.deepEqual(c.config.qmp, {
    transport: "unix",
    listen: false,
    path: "/run/colo/qmp-compare.sock",
    text: "unix:/run/colo/qmp-compare.sock",
  });
  assert.equal(c.config.notifyDev, null);
  const plain = parseCommandLine(BASE);
  assert.equal(plain.kind === "run" && plain.config.qmp, null, "no channel unless asked for");
  assert.match(
    usageError([...BASE, "--notify-dev", "tcp-listen:127.0.0.1:9004", "--qmp", "unix:/q.sock"]),
    /^--notify-dev and --qmp are two checkpoint channels; give one: --notify-dev for Xen COLO, --qmp for KVM COLO$/,
  );
  assert.match(usageError([...BASE, "--qmp", "qmp.sock"]), /^--qmp: "qmp\.sock" is not an address/);
  assert.match(
    usageError([...BASE, "--qmp", "tcp-listen:127.0.0.1:9002"]),
    /^--qmp: tcp-listen:127\.0\.0\.1:9002 is the same socket as --secondary-in/,
  );
});

Deno.test("cli: --monitor and --metrics refuse tls-listen:, with or without --tls-creds (they speak no TLS)", () => {
  for (const flag of ["--monitor", "--metrics"]) {
    for (const creds of [[], ["--tls-creds", "/d"]]) {
      assert.match(
        usageError([...BASE, flag, "tls-listen:127.0.0.1:9100", ...creds]),
        new RegExp(
          `^${flag}: tls-listen:127\\.0\\.0\\.1:9100: this server offers no TLS; .*unix-listen:`,
        ),
      );
    }
  }
});

Deno.test("cli: --qmp-secondary watches the secondary's monitor, only beside --qmp", () => {
  const qmp = ["--qmp", "unix:/run/colo/qmp-compare.sock"];
  const c = parseCommandLine([...BASE, ...qmp, "--qmp-secondary", "unix:/run/colo/qmp-sec.sock"]);
  assert.equal(c.kind === "run" && c.config.qmpSecondary?.text, "unix:/run/colo/qmp-sec.sock");
  const plain = parseCommandLine([...BASE, ...qmp]);
  assert.equal(plain.kind === "run" && plain.config.qmpSecondary, null, "off unless asked for");
  assert.match(
    usageError([...BASE, "--qmp-secondary", "unix:/q.sock"]),
    /^--qmp-secondary watches the secondary's monitor beside the primary's: give --qmp too$/,
  );
  assert.match(
    usageError([...BASE, ...qmp, "--qmp-secondary", "unix:/run/colo/qmp-compare.sock"]),
    /^--qmp-secondary: unix:\/run\/colo\/qmp-compare\.sock is the same socket as --qmp/,
  );
});

async function run(args: string[]): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    stdout: "null",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("cli: a user error exits 2 with one line on stderr", async () => {
  const r = await run([...BASE, "--compare-timeout", "abc"]);
  assert.equal(r.code, 2);
  assert.equal(r.stderr.trim().split("\n").length, 1);
  assert.match(r.stderr, /^colo-compare: --compare-timeout: "abc"/);
});

Deno.test("cli: --capture on a FIFO exits 2 at once with one line, instead of waiting for a reader", async () => {
  const dir = await Deno.makeTempDir({ prefix: "colo-fifo-" });
  try {
    const fifo = `${dir}/capture.fifo`;
    const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
    assert.equal(made.code, 0);
    const r = await run([...BASE, "--capture", fifo]);
    assert.equal(r.code, 2);
    const errors = r.stderr.split("\n").filter((l) => l.startsWith("colo-compare:"));
    assert.equal(errors.length, 1, r.stderr);
    assert.match(
      errors[0],
      /--capture .*capture\.fifo: a FIFO would hold the comparator .*regular file/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: --notify-dev with --qmp exits 2 with one line naming both and the fix", async () => {
  const r = await run([
    ...BASE,
    "--notify-dev",
    "tcp-listen:127.0.0.1:0",
    "--qmp",
    "unix:/nonexistent/qmp.sock",
  ]);
  assert.equal(r.code, 2);
  assert.equal(r.stderr.trim().split("\n").length, 1);
  assert.match(
    r.stderr,
    /^colo-compare: --notify-dev and --qmp .*--notify-dev for Xen COLO, --qmp for KVM COLO/,
  );
});

Deno.test("cli: a port in use exits 2, names the flag, and leaves nothing listening", async () => {
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const busyPort = (busy.addr as Deno.NetAddr).port;
  const firstPort = freePort();
  try {
    const r = await run([
      "--primary-in",
      `tcp-listen:127.0.0.1:${firstPort}`,
      "--secondary-in",
      "tcp-listen:127.0.0.1:0",
      "--outdev",
      `tcp-listen:127.0.0.1:${busyPort}`,
    ]);
    assert.equal(r.code, 2);
    const errors = r.stderr.split("\n").filter((l) => l.startsWith("colo-compare:"));
    assert.equal(errors.length, 1);
    assert.match(
      errors[0],
      /--outdev tcp-listen:127\.0\.0\.1:\d+: cannot listen: address already in use; pick a free port/,
    );
    // The primary-in listener it had opened is gone again.
    const again = Deno.listen({ hostname: "127.0.0.1", port: firstPort });
    again.close();
  } finally {
    busy.close();
  }
});

Deno.test("cli: --help and --version exit 0", async () => {
  const help = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", MAIN, "--help"] })
    .output();
  assert.equal(help.code, 0);
  assert.match(new TextDecoder().decode(help.stdout), /--primary-in ADDR/);
  const version = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "--version"],
  })
    .output();
  assert.equal(version.code, 0);
  assert.match(new TextDecoder().decode(version.stdout), /^colo-compare \d+\.\d+\.\d+/);
});

Deno.test("cli: --max-held-bytes takes bytes with binary suffixes; --socket-mode is octal", () => {
  const held = (text: string) => {
    const c = parseCommandLine([...BASE, "--max-held-bytes", text]);
    return c.kind === "run" ? c.config.maxHeldBytes : NaN;
  };
  assert.equal(held("256M"), 256 * 2 ** 20);
  assert.equal(held("1g"), 2 ** 30);
  assert.equal(held("2097152"), 2 * 2 ** 20);
  assert.equal(held("4MiB"), 4 * 2 ** 20);
  const mode = (text: string) => {
    const c = parseCommandLine([...BASE, "--socket-mode", text]);
    return c.kind === "run" ? c.config.socketMode : NaN;
  };
  assert.equal(mode("0660"), 0o660);
  assert.equal(mode("600"), 0o600);
  const c = parseCommandLine(BASE);
  assert.ok(c.kind === "run" && c.config.maxHeldBytes === 256 * 2 ** 20);
  assert.ok(c.kind === "run" && c.config.socketMode === 0o600);
});
