/**
 * Starting and stopping the processes under test: our comparator, QEMU's colo-compare (no
 * guest) and the pass-through forwarder, each listening on 127.0.0.1.
 *
 * @module
 */

import { PROGRAM_RUN_FLAGS } from "../src/v8_flags.ts";
import { qemuBinary } from "../tests/conformance/impl.ts";
import { freePorts } from "../tests/support/net.ts";

/** Kinds of process the benchmark can measure. `sink` is the forwarder forwarding nothing. */
export const TARGETS = ["ours", "qemu", "forwarder", "sink"] as const;

/** One kind of target. */
export type TargetName = typeof TARGETS[number];

/** Where a running target's four endpoints listen: a TCP port, or a unix socket's path. */
export interface Ports {
  primary: number | string;
  secondary: number | string;
  outdev: number | string;
  notify?: number;
}

/** A running target. */
export interface Running {
  name: TargetName;
  pid: number;
  ports: Ports;
  /** The last lines the target wrote on stderr (for error reports). */
  stderrTail(): string;
  /** SIGTERM, then SIGKILL after 5 s; resolves with the exit code. */
  stop(): Promise<number>;
}

/** How to start each target. */
export interface TargetOptions {
  /** Command that runs our comparator (its flags follow). */
  oursCommand: string[];
  /** Extra comparator settings for this run (applied to ours and QEMU alike). */
  expiredScanCycleMs?: number;
  /** Directory for a V8 CPU profile of ours (`--cpu-prof`), if profiling. */
  cpuProfileDir?: string;
  /**
   * Credentials (QEMU's tls-creds-x509 file names) for a `-tls` workload: primary-in,
   * secondary-in and outdev are then TLS servers that require a client certificate signed
   * by its CA (ours: `tls-listen:` and `--tls-creds`; QEMU: `tls-creds=` on the chardevs,
   * `verify-peer=on`). notify-dev stays plain TCP.
   */
  tlsDir?: string;
  /**
   * A directory for the unix sockets of a `-unix` workload: primary-in, secondary-in and
   * outdev listen there (ours: `unix-listen:`; QEMU: chardevs with `path=`). notify-dev stays
   * on TCP.
   */
  unixDir?: string;
}

/** The unix socket paths of a `-unix` workload's endpoints in `dir`. */
function unixPaths(dir: string): Record<"primary-in" | "secondary-in" | "outdev", string> {
  return {
    "primary-in": `${dir}/pri.sock`,
    "secondary-in": `${dir}/sec.sock`,
    "outdev": `${dir}/out.sock`,
  };
}

const repoRoot = new URL("..", import.meta.url).pathname;

/** The default command for ours: `deno run -A` of main.ts, with the program's run flags. */
export function defaultOursCommand(): string[] {
  return [Deno.execPath(), "run", "-A", ...PROGRAM_RUN_FLAGS, `${repoRoot}main.ts`];
}

/** The `.ts` file a command for ours runs, if it names one. */
function entryPoint(command: string[]): string | undefined {
  return command.find((a) => a.endsWith(".ts"));
}

/**
 * Fills Deno's cache of transpiled modules (`deno cache`) for the `.ts` entry point of
 * `oursCommand`, before any measurement: a compiled binary carries its modules transpiled, but
 * the first `deno run` of a checkout, or of a module changed since, transpiles the TypeScript
 * as it loads it, and that start's high-water mark (66-71 MiB against 51-54 once cached) would
 * be the first row's peak RSS instead of the comparator's (bench/README.md, "The first start
 * of a checkout"). What it did, for the progress line; undefined for a command without a `.ts`
 * entry point. A failure is said, and the measurements go on.
 */
export async function cacheModules(oursCommand: string[]): Promise<string | undefined> {
  const main = entryPoint(oursCommand);
  if (main === undefined) return undefined;
  // The command's own deno where it names one: its version keeps a cache of its own.
  const deno = oursCommand[0].endsWith("/deno") || oursCommand[0] === "deno"
    ? oursCommand[0]
    : Deno.execPath();
  try {
    const out = await new Deno.Command(deno, {
      args: ["cache", "--quiet", main],
      stdout: "null",
      stderr: "piped",
    }).output();
    return out.success
      ? `${main} transpiled into Deno's cache first`
      : `deno cache ${main} failed, the first row may count its transpiling: ${
        new TextDecoder().decode(out.stderr).trim()
      }`;
  } catch (error) {
    return `deno cache ${main}: ${error instanceof Error ? error.message : error}`;
  }
}

/** Why `name` cannot run on this machine, or undefined when it can. */
export async function unavailable(
  name: TargetName,
  opts: TargetOptions,
): Promise<string | undefined> {
  if (name === "qemu") {
    try {
      const out = await new Deno.Command(qemuBinary(), {
        args: ["--version"],
        stdout: "null",
        stderr: "null",
      }).output();
      return out.success ? undefined : `${qemuBinary()} --version failed`;
    } catch {
      return `${qemuBinary()} not installed (apt-get install qemu-system-x86)`;
    }
  }
  if (name === "ours") {
    const main = entryPoint(opts.oursCommand);
    if (main) {
      try {
        await Deno.stat(main);
      } catch {
        return `${main} does not exist yet`;
      }
    }
  }
  return undefined;
}

/** Starts `name` and resolves once it listens on every endpoint. */
export async function start(name: TargetName, opts: TargetOptions): Promise<Running> {
  switch (name) {
    case "qemu":
      return await startQemu(opts);
    case "ours": {
      const [cmd, ...pre] = opts.oursCommand;
      const args = [...pre];
      if (opts.cpuProfileDir) {
        const run = args.indexOf("run");
        args.splice(run + 1, 0, "--cpu-prof", `--cpu-prof-dir=${opts.cpuProfileDir}`);
      }
      const paths = opts.unixDir ? unixPaths(opts.unixDir) : {};
      args.push(...listenFlags(opts.tlsDir, paths));
      if (opts.tlsDir) args.push("--tls-creds", opts.tlsDir);
      if (opts.expiredScanCycleMs) {
        args.push("--expired-scan-cycle", String(opts.expiredScanCycleMs));
      }
      return await startLogfmt(name, cmd, args, paths);
    }
    case "forwarder":
    case "sink": {
      const args = ["run", "--allow-net", `${repoRoot}bench/forwarder.ts`, ...listenFlags()];
      if (name === "sink") args.push("--discard");
      return await startLogfmt(name, Deno.execPath(), args);
    }
  }
}

/** The endpoints' flags: TLS where `tlsDir` is given, a unix socket where `paths` has one. */
function listenFlags(tlsDir?: string, paths: Record<string, string> = {}): string[] {
  return ["primary-in", "secondary-in", "outdev", "notify-dev"].flatMap((e) => [
    `--${e}`,
    paths[e] !== undefined
      ? `unix-listen:${paths[e]}`
      : tlsDir && e !== "notify-dev"
      ? "tls-listen:127.0.0.1:0"
      : "tcp-listen:127.0.0.1:0",
  ]);
}

/** Keeps reading a child's stderr (so it never blocks on a full pipe) and remembers the tail. */
class StderrTail {
  lines: string[] = [];
  #unread: string[] = [];
  #ended = false;
  #waiter: (() => void) | undefined;
  readonly done: Promise<void>;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = this.#loop(stream);
  }

  async #loop(stream: ReadableStream<Uint8Array>): Promise<void> {
    let rest = "";
    try {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        rest += chunk;
        let nl: number;
        while ((nl = rest.indexOf("\n")) >= 0) {
          this.#push(rest.slice(0, nl));
          rest = rest.slice(nl + 1);
        }
      }
    } catch {
      // the child went away
    }
    if (rest) this.#push(rest);
    this.#ended = true;
    this.#waiter?.();
  }

  #push(line: string): void {
    this.lines.push(line);
    if (this.lines.length > 200) this.lines.splice(0, this.lines.length - 100);
    // Only startup lines are consumed with next(); stop queueing once nobody asks.
    if (this.#unread.length < 1000) this.#unread.push(line);
    this.#waiter?.();
  }

  /** Resolves with the next line not yet returned, or null at the end. */
  async next(): Promise<string | null> {
    while (this.#unread.length === 0) {
      if (this.#ended) return null;
      await new Promise<void>((r) => this.#waiter = r);
      this.#waiter = undefined;
    }
    return this.#unread.shift()!;
  }

  tail(): string {
    return this.lines.slice(-20).join("\n");
  }
}

function wrap(
  name: TargetName,
  child: Deno.ChildProcess,
  stderr: StderrTail,
  ports: Ports,
): Running {
  let stopping: Promise<number> | undefined;
  return {
    name,
    pid: child.pid,
    ports,
    stderrTail: () => stderr.tail(),
    stop() {
      stopping ??= (async () => {
        try {
          child.kill("SIGTERM");
        } catch { /* already gone */ }
        const timer = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch { /* already gone */ }
        }, 5000);
        const status = await child.status;
        clearTimeout(timer);
        await stderr.done;
        return status.code;
      })();
      return stopping;
    },
  };
}

/**
 * Starts a program that prints `event=listening endpoint=E address=H:P` lines and
 * `event=ready`; `paths`: the endpoints on unix sockets, and where.
 */
async function startLogfmt(
  name: TargetName,
  cmd: string,
  args: string[],
  paths: Record<string, string> = {},
): Promise<Running> {
  const child = new Deno.Command(cmd, { args, stdin: "null", stdout: "null", stderr: "piped" })
    .spawn();
  const stderr = new StderrTail(child.stderr);
  const found = new Map<string, number>();
  const deadline = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, 30_000);
  try {
    while (true) {
      const line = await stderr.next();
      if (line === null) {
        throw new Error(`${name} closed its stderr before it was ready:\n${stderr.tail()}`);
      }
      const listening = line.match(/event=listening\b.*endpoint=(\S+).*address=\S*:(\d+)/);
      if (listening) found.set(listening[1], Number(listening[2]));
      if (/event=ready\b/.test(line)) break;
    }
  } catch (error) {
    // Its stderr may have closed while it runs on (a wrapper that redirects it): not left behind.
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
    throw error;
  } finally {
    clearTimeout(deadline);
  }
  const port = (e: string) => {
    const p = paths[e] ?? found.get(e);
    if (p === undefined) throw new Error(`${name} did not say where ${e} listens`);
    return p;
  };
  return wrap(name, child, stderr, {
    primary: port("primary-in"),
    secondary: port("secondary-in"),
    outdev: port("outdev"),
    notify: found.get("notify-dev"),
  });
}

/**
 * QEMU's colo-compare with no guest, the command line of the shared
 * `qemu-colo-compare.sh` on ports of our own. Readiness is the load generator's business
 * (it connects with retries and probes the release path).
 */
function startQemu(opts: TargetOptions): Running {
  const ports = freePorts(4);
  const paths = opts.unixDir ? unixPaths(opts.unixDir) : null;
  const [primary, secondary, outdev] = paths
    ? [paths["primary-in"], paths["secondary-in"], paths["outdev"]]
    : ports;
  const notify = ports[3];
  const tls = opts.tlsDir ? ",tls-creds=tls0" : "";
  const chardev = (id: string, at: number | string, overTls = false) => [
    "-chardev",
    `socket,id=${id},${typeof at === "string" ? `path=${at}` : `host=127.0.0.1,port=${at}`}` +
    `,server=on,wait=off${overTls ? tls : ""}`,
  ];
  let compare =
    "colo-compare,id=cmp,primary_in=pri,secondary_in=sec,outdev=out,iothread=io1,notify_dev=ntf";
  if (opts.expiredScanCycleMs) compare += `,expired_scan_cycle=${opts.expiredScanCycleMs}`;
  const args = [
    ...["-machine", "none", "-nodefaults", "-display", "none", "-monitor", "none"],
    ...["-serial", "none", "-object", "iothread,id=io1"],
    ...(opts.tlsDir
      ? ["-object", `tls-creds-x509,id=tls0,dir=${opts.tlsDir},endpoint=server,verify-peer=on`]
      : []),
    ...chardev("pri", primary, true),
    ...chardev("sec", secondary, true),
    ...chardev("out", outdev, true),
    ...chardev("ntf", notify),
    ...["-object", compare],
  ];
  const child = new Deno.Command(qemuBinary(), {
    args,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  return wrap("qemu", child, new StderrTail(child.stderr), { primary, secondary, outdev, notify });
}
