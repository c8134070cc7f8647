/**
 * The two implementations the suite drives: QEMU 7.2's own colo-compare (no guest, as in
 * `../shared/tools/qemu-colo-compare.sh`, but on UNIX sockets) and our program (`main.ts`, on
 * loopback TCP ports). Each is started fresh for every scenario. colo-compare treats both
 * kinds of socket alike; UNIX sockets spare QEMU port races and show readiness as files.
 *
 * The reference QEMU is `qemu-system-x86_64` from PATH (Debian's 7.2), or the binary
 * `COLO_QEMU` names: QEMU 10.0.2 from `deno task qemu10`, the second reference (SPEC 10). The
 * other tests and the bench that run QEMU take it from {@linkcode qemuBinary} too.
 *
 * @module
 */

import type { ScenarioOptions } from "./scenario.ts";

/** Which implementation. */
export type ImplKind = "qemu" | "ours";

/** Where one of the four streams listens. */
export type Endpoint = { port: number } | { path: string };

/** A running implementation. */
export interface Impl {
  kind: ImplKind;
  endpoints: { pri: Endpoint; sec: Endpoint; out: Endpoint; notify: Endpoint };
  /** QEMU reads a vnet word on notify-dev when vnet is on (SPEC 9); ours never does. */
  notifyVnet: boolean;
  /** Resolves when the process ends. */
  exited: Promise<Deno.CommandStatus>;
  /** True once the process ended. */
  hasExited(): boolean;
  /** Everything the process wrote to stderr so far. */
  log(): string;
  /** Stops the process (SIGTERM, then SIGKILL); returns its exit status. */
  stop(): Promise<Deno.CommandStatus>;
}

/** The reference QEMU: `COLO_QEMU` when set (a path), else `qemu-system-x86_64` from PATH. */
export function qemuBinary(): string {
  return Deno.env.get("COLO_QEMU") || "qemu-system-x86_64";
}

/** The repository root (two levels above this file). */
export const REPO_ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");

/**
 * The first line `bin --version` prints, or null when it does not run (absent, a shared
 * library missing, a failure).
 */
export async function versionLine(bin = qemuBinary()): Promise<string | null> {
  try {
    const out = await new Deno.Command(bin, {
      args: ["--version"],
      stdout: "piped",
      stderr: "null",
    }).output();
    return out.success ? new TextDecoder().decode(out.stdout).split("\n")[0] : null;
  } catch {
    return null;
  }
}

/** True when the reference QEMU ({@linkcode qemuBinary}) can be run. */
export async function qemuAvailable(): Promise<boolean> {
  return await versionLine() !== null;
}

/** The QEMU version line, for the report. */
export async function qemuVersion(): Promise<string> {
  const line = await versionLine();
  if (line === null) throw new Error(`${qemuBinary()} --version failed`);
  return line;
}

/** True when our program's entry point exists. */
export function oursAvailable(): boolean {
  try {
    return Deno.statSync(`${REPO_ROOT}/main.ts`).isFile;
  } catch {
    return false;
  }
}

class Process {
  #child: Deno.ChildProcess;
  #log = "";
  #lineWaiters: ((line: string) => void)[] = [];
  #exited = false;
  readonly exited: Promise<Deno.CommandStatus>;
  readonly #stderrDone: Promise<void>;

  constructor(cmd: string, args: string[], cwd?: string) {
    this.#child = new Deno.Command(cmd, {
      args,
      cwd,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    this.exited = this.#child.status.then((s) => {
      this.#exited = true;
      return s;
    });
    this.#stderrDone = this.#readStderr();
  }

  async #readStderr(): Promise<void> {
    let partial = "";
    for await (const chunk of this.#child.stderr.pipeThrough(new TextDecoderStream())) {
      this.#log += chunk;
      partial += chunk;
      const lines = partial.split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) for (const w of this.#lineWaiters) w(line);
    }
  }

  hasExited(): boolean {
    return this.#exited;
  }

  log(): string {
    return this.#log;
  }

  onLine(f: (line: string) => void): () => void {
    this.#lineWaiters.push(f);
    for (const line of this.#log.split("\n")) f(line);
    return () => {
      this.#lineWaiters = this.#lineWaiters.filter((w) => w !== f);
    };
  }

  async stop(): Promise<Deno.CommandStatus> {
    if (!this.#exited) {
      try {
        this.#child.kill("SIGTERM");
      } catch {
        // already gone
      }
      const timer = setTimeout(() => {
        try {
          this.#child.kill("SIGKILL");
        } catch {
          // already gone
        }
      }, 5000);
      await this.exited;
      clearTimeout(timer);
    }
    const status = await this.exited;
    await this.#stderrDone;
    return status;
  }
}

function qemuProperties(o: ScenarioOptions): string {
  const props: string[] = [];
  if (o.compareTimeout !== undefined) props.push(`compare_timeout=${o.compareTimeout}`);
  if (o.expiredScanCycle !== undefined) props.push(`expired_scan_cycle=${o.expiredScanCycle}`);
  if (o.maxQueueSize !== undefined) props.push(`max_queue_size=${o.maxQueueSize}`);
  if (o.vnet) props.push("vnet_hdr_support=on");
  return props.map((p) => "," + p).join("");
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Starts QEMU's colo-compare with the scenario's options on four UNIX sockets. */
export async function startQemu(o: ScenarioOptions): Promise<Impl> {
  const dir = await Deno.makeTempDir({ prefix: "colo-conformance-" });
  const path = { pri: `${dir}/pri`, sec: `${dir}/sec`, out: `${dir}/out`, notify: `${dir}/ntf` };
  const chardev = (id: string, p: string) => `socket,id=${id},path=${p},server=on,wait=off`;
  const proc = new Process(qemuBinary(), [
    ...["-machine", "none", "-nodefaults", "-display", "none", "-monitor", "none"],
    ...["-serial", "none", "-object", "iothread,id=io1"],
    ...["-chardev", chardev("pri", path.pri), "-chardev", chardev("sec", path.sec)],
    ...["-chardev", chardev("out", path.out), "-chardev", chardev("ntf", path.notify)],
    "-object",
    "colo-compare,id=cmp,primary_in=pri,secondary_in=sec,outdev=out,iothread=io1," +
    "notify_dev=ntf" + qemuProperties(o),
  ]);
  const cleanup = () => Deno.remove(dir, { recursive: true }).catch(() => {});
  const deadline = performance.now() + 10_000;
  for (const p of Object.values(path)) {
    while (!(await exists(p))) {
      if (proc.hasExited() || performance.now() > deadline) {
        await proc.stop();
        await cleanup();
        throw new Error(`QEMU did not start:\n${proc.log()}`);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  return {
    kind: "qemu",
    endpoints: {
      pri: { path: path.pri },
      sec: { path: path.sec },
      out: { path: path.out },
      notify: { path: path.notify },
    },
    notifyVnet: o.vnet === true,
    exited: proc.exited,
    hasExited: () => proc.hasExited(),
    log: () => proc.log(),
    stop: async () => {
      const status = await proc.stop();
      await cleanup();
      return status;
    },
  };
}

const ENDPOINTS = {
  "primary-in": "pri",
  "secondary-in": "sec",
  "outdev": "out",
  "notify-dev": "notify",
} as const;

/**
 * Starts our program (`deno run -A main.ts ...`) on port 0 and reads its ports from stderr;
 * `sockets` "unix": on four unix sockets in a directory of its own instead, as QEMU's.
 */
export async function startOurs(
  o: ScenarioOptions,
  sockets: "tcp" | "unix" = "tcp",
): Promise<Impl> {
  const unix = sockets === "unix";
  const dir = unix ? await Deno.makeTempDir({ prefix: "colo-conformance-" }) : "";
  const at = (name: string) => unix ? `unix-listen:${dir}/${name}` : "tcp-listen:127.0.0.1:0";
  const args = [
    "run",
    "-A",
    `${REPO_ROOT}/main.ts`,
    ...["--primary-in", at("pri"), "--secondary-in", at("sec")],
    ...["--outdev", at("out"), "--notify-dev", at("ntf")],
  ];
  if (o.compareTimeout !== undefined) args.push("--compare-timeout", String(o.compareTimeout));
  if (o.expiredScanCycle !== undefined) {
    args.push("--expired-scan-cycle", String(o.expiredScanCycle));
  }
  if (o.maxQueueSize !== undefined) args.push("--max-queue-size", String(o.maxQueueSize));
  if (o.vnet) args.push("--vnet-hdr-support");
  const proc = new Process(Deno.execPath(), args, REPO_ROOT);
  const cleanup = () =>
    unix ? Deno.remove(dir, { recursive: true }).catch(() => {}) : Promise.resolve();
  const ports: Partial<Record<keyof Impl["endpoints"], number>> = {};
  let ready = false;
  let wake = () => {};
  const off = proc.onLine((line) => {
    const m = /event=listening\b.*\bendpoint=([a-z-]+)\b.*\baddress=\S*:(\d+)/.exec(line);
    if (m && m[1] in ENDPOINTS) ports[ENDPOINTS[m[1] as keyof typeof ENDPOINTS]] = Number(m[2]);
    if (/\bevent=ready\b/.test(line)) ready = true;
    wake();
  });
  const timeout = setTimeout(() => wake(), 30_000);
  const started = performance.now();
  try {
    while (!ready) {
      if (proc.hasExited()) throw new Error(`our program exited at start:\n${proc.log()}`);
      if (performance.now() - started > 30_000) {
        await proc.stop();
        throw new Error(`our program did not print event=ready within 30 s:\n${proc.log()}`);
      }
      await Promise.race([new Promise<void>((r) => (wake = r)), proc.exited]);
    }
  } catch (error) {
    await cleanup();
    throw error;
  } finally {
    clearTimeout(timeout);
    off();
  }
  if (!unix && (!ports.pri || !ports.sec || !ports.out || !ports.notify)) {
    await proc.stop();
    throw new Error(`our program did not log all four listening ports:\n${proc.log()}`);
  }
  const endpoint = (k: keyof Impl["endpoints"], name: string): Endpoint =>
    unix ? { path: `${dir}/${name}` } : { port: ports[k]! };
  return {
    kind: "ours",
    endpoints: {
      pri: endpoint("pri", "pri"),
      sec: endpoint("sec", "sec"),
      out: endpoint("out", "out"),
      notify: endpoint("notify", "ntf"),
    },
    notifyVnet: false,
    exited: proc.exited,
    hasExited: () => proc.hasExited(),
    log: () => proc.log(),
    stop: async () => {
      const status = await proc.stop();
      await cleanup();
      return status;
    },
  };
}

/**
 * Starts an implementation of the given kind; `sockets`: ours' (QEMU's are unix sockets
 * always).
 */
export function startImpl(
  kind: ImplKind,
  o: ScenarioOptions,
  sockets: "tcp" | "unix" = "tcp",
): Promise<Impl> {
  return kind === "qemu" ? startQemu(o) : startOurs(o, sockets);
}
