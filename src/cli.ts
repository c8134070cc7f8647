/**
 * The command line (SPEC 2): flags to a validated {@linkcode Config}, or one clear error line
 * that names the flag and the fix.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import { type Address, AddressError, parseAddress, sameAddress, usesTls } from "./wire/address.ts";
import { type Level, LEVELS } from "./log.ts";
import { VERSION } from "./version.ts";
import { DEFAULT_CAPTURE_MAX_BYTES } from "./capture/capture.ts";

/** Everything the comparator needs to run. */
export interface Config {
  primaryIn: Address;
  secondaryIn: Address;
  outdev: Address;
  notifyDev: Address | null;
  /** The primary QEMU's QMP monitor, as checkpoint channel (SPEC 7b); exclusive with notifyDev. */
  qmp: Address | null;
  /**
   * The secondary QEMU's QMP monitor, watched for its `RESUME` (needs qmp): secondary frames
   * newer than it survive the flush. Optional so configs built before it still type-check.
   */
  qmpSecondary?: Address | null;
  /** ms; a held frame older than this requests a checkpoint. */
  compareTimeout: number;
  /** ms between expiry scans. */
  expiredScanCycle: number;
  /** Per connection and side (QEMU admits one more). */
  maxQueueSize: number;
  vnetHdrSupport: boolean;
  /** Bytes of frames held on both sides together (SPEC 8). */
  maxHeldBytes: number;
  /** Mode of the sockets `unix-listen:` creates (SPEC 11). */
  socketMode: number;
  /** `--tls-creds DIR` (SPEC 11): QEMU's tls-creds-x509 layout; set whenever a tls address is. */
  tlsCreds: string | null;
  /** `--tls-authz DN`, repeatable: accepted client subject DNs; null accepts any the CA signed. */
  tlsAuthz: string[] | null;
  logLevel: Level;
  /**
   * Frame pairs through a throwaway comparator before listening (src/warmup.ts); on unless
   * `--no-warmup`. Optional so configs built before it still type-check (absent: on).
   */
  warmup?: boolean;
  /** Seeing inside (SPEC 12), all off when absent: pcapng of divergences and its bound. */
  capture?: string | null;
  captureMaxBytes?: number;
  /** Prometheus `/metrics` and the QMP-compatible monitor. */
  metrics?: Address | null;
  monitor?: Address | null;
  /** The object id the monitor answers for (`/objects/ID`, default `colo-compare0`). */
  id?: string;
}

/**
 * Every socket address the configuration names, whichever flag adds it: the permissions kept
 * after start (SPEC 11) and the TLS credentials read depend on all of them.
 */
export function configAddresses(config: Config): Address[] {
  return Object.values(config).filter((v): v is Address =>
    typeof v === "object" && v !== null && "transport" in v && "text" in v
  );
}

/** What the command line asks for. */
export type Command =
  | { kind: "run"; config: Config }
  /** `keepCaptures`: where the demo keeps the two VMs' captures (SPEC 12), or null. */
  | { kind: "demo"; logLevel: Level | null; keepCaptures: string | null }
  /** `replay`: its own flags, parsed by `src/replay/command.ts`. */
  | { kind: "replay"; args: string[] }
  | { kind: "help" }
  | { kind: "version" };

/** A mistake on the command line; `message` is the one line to print. */
export class UsageError extends Error {}

/** Defaults, as in QEMU. */
export const DEFAULTS = {
  compareTimeout: 3000,
  expiredScanCycle: 1000,
  maxQueueSize: 1024,
  maxHeldBytes: 256 * 2 ** 20,
  socketMode: 0o600,
} as const;

/**
 * The timer flags take QEMU's uint32 range, as `qom-set` does; the comparator clamps the
 * scan's timer to {@linkcode MAX_TIMER_MS}.
 */
const MAX_MS = 2 ** 32 - 1;
/** setTimeout's limit: a longer delay fires at once, and so would every 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export const HELP =
  `colo-compare ${VERSION}: the COLO packet comparator (QEMU's colo-compare as one program)

Usage:
  colo-compare --primary-in ADDR --secondary-in ADDR --outdev ADDR
               [--notify-dev ADDR | --qmp ADDR] [options]
  colo-compare demo [--keep-captures DIR]
                           run the comparator on a built-in demo (no VM needed); keep the two
                           VMs' captures in DIR for colo-compare replay
  colo-compare replay --primary FILE --secondary FILE [--json] [--capture FILE] ...
                           run the comparator over two captures (replay --help)

Streams (each ADDR is tcp:HOST:PORT, tcp-listen:HOST:PORT, tls:HOST:PORT, tls-listen:HOST:PORT,
unix:PATH or unix-listen:PATH; IPv6 hosts in brackets, e.g. tcp-listen:[::1]:9001; port 0 to
listen picks a free port):
  --primary-in ADDR          frames sent by the primary VM (QEMU primary_in)
  --secondary-in ADDR        frames sent by the secondary VM (secondary_in)
  --outdev ADDR              released primary frames (outdev)
  --notify-dev ADDR          Xen COLO checkpoint channel: DO_CHECKPOINT out, COLO_CHECKPOINT in
  --qmp ADDR                 KVM COLO checkpoint channel: the primary QEMU's own QMP monitor,
                             e.g. unix:/run/colo/qmp-compare.sock for
                             -qmp unix:/run/colo/qmp-compare.sock,server=on,wait=off
  --qmp-secondary ADDR       with --qmp: the secondary QEMU's own QMP monitor, only watched;
                             its frames sent after it resumed survive the checkpoint flush

Options:
  --compare-timeout MS       a frame held longer requests a checkpoint (default 3000)
  --expired-scan-cycle MS    how often held frames are checked for age (default 1000)
  --max-queue-size N         frames held per connection and side (default 1024; N+1 fit, as in QEMU)
  --vnet-hdr-support         frames carry a vnet header length word (vnet_hdr_support=on)
  --max-held-bytes BYTES     frames held on both sides together (default 256M; K, M, G suffixes)
  --socket-mode MODE         mode of unix-listen sockets, octal (default 0600)
  --tls-creds DIR            certificates for tls:/tls-listen: in QEMU's tls-creds-x509 layout
                             (ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem,
                             client-key.pem); tls-listen: requires client certificates
  --tls-authz DN             accept only this client certificate subject, as QEMU's authz-simple
                             writes it (e.g. O=Example,CN=client); repeatable
  --log-level LEVEL          error, warn, info (default), debug or trace (QEMU trace names)
  --no-warmup                listen at once: no frame pairs through a throwaway comparator on
                             loopback first (about 0.3 s and 2 MiB less; the first frames wait
                             for V8 to compile what they run)

Seeing inside:
  --capture FILE             pcapng of every divergence (the frames compared, with comments)
  --capture-max-bytes N      bound of that file (default 64 MiB; then capturing stops)
  --metrics ADDR             Prometheus GET /metrics (tcp-listen:HOST:PORT)
  --monitor ADDR             QMP-compatible control socket (tcp-listen:... or unix-listen:...)
  --id ID                    the object the monitor answers for (default colo-compare0)
  -h, --help                 this text
  -V, --version              the version

Logs are logfmt lines on stderr. SIGINT/SIGTERM: stop reading, send what was released, exit 0.
`;

const STREAMS: Record<string, string> = {
  "primary-in": "the primary VM's frames",
  "secondary-in": "the secondary VM's frames",
  "outdev": "released frames",
};

const OPTIONS = {
  "primary-in": { type: "string" },
  "secondary-in": { type: "string" },
  "outdev": { type: "string" },
  "notify-dev": { type: "string" },
  "qmp": { type: "string" },
  "qmp-secondary": { type: "string" },
  "compare-timeout": { type: "string" },
  "expired-scan-cycle": { type: "string" },
  "max-queue-size": { type: "string" },
  "vnet-hdr-support": { type: "boolean" },
  "max-held-bytes": { type: "string" },
  "socket-mode": { type: "string" },
  "tls-creds": { type: "string" },
  "tls-authz": { type: "string", multiple: true },
  "log-level": { type: "string" },
  "no-warmup": { type: "boolean" },
  "capture": { type: "string" },
  "capture-max-bytes": { type: "string" },
  "metrics": { type: "string" },
  "monitor": { type: "string" },
  "id": { type: "string" },
  "keep-captures": { type: "string" },
  "help": { type: "boolean", short: "h" },
  "version": { type: "boolean", short: "V" },
} as const;

export function positiveInteger(flag: string, text: string, unit: string, max: number): number {
  if (!/^[0-9]+$/.test(text.trim())) {
    throw new UsageError(
      `--${flag}: "${text}" is not a positive whole number of ${unit}; e.g. --${flag} ${
        flag === "max-queue-size" ? 1024 : 3000
      }`,
    );
  }
  const n = Number(text.trim());
  if (n === 0) throw new UsageError(`--${flag}: 0 is not allowed; give at least 1 (${unit})`);
  if (n > max) throw new UsageError(`--${flag}: ${text} is too large; the limit is ${max} ${unit}`);
  return n;
}

const SUFFIX: Record<string, number> = { "": 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30 };
/** The least `--max-held-bytes`: a few of the largest frames must fit. */
const MIN_HELD_BYTES = 2 ** 20;

/** `--max-held-bytes`: bytes, optionally with a binary K, M or G suffix (SPEC 2). */
function byteCount(flag: string, text: string): number {
  const m = /^([0-9]+)([KMG]?)(?:i?B)?$/i.exec(text.trim());
  if (!m) {
    throw new UsageError(
      `--${flag}: "${text}" is not a number of bytes; e.g. --${flag} 256M (K, M, G: binary units)`,
    );
  }
  const n = Number(m[1]) * SUFFIX[m[2].toUpperCase()];
  if (n < MIN_HELD_BYTES) {
    throw new UsageError(`--${flag}: ${text} is too small; give at least 1M`);
  }
  if (n > Number.MAX_SAFE_INTEGER) throw new UsageError(`--${flag}: ${text} is too large`);
  return n;
}

/** `--socket-mode`: an octal file mode such as 0600 or 660 (SPEC 11). */
function fileMode(flag: string, text: string): number {
  const m = /^(?:0o?)?([0-7]{1,3})$/.exec(text.trim());
  if (!m) {
    throw new UsageError(
      `--${flag}: "${text}" is not an octal file mode; e.g. --${flag} 0600 (owner only) or 0660`,
    );
  }
  return parseInt(m[1], 8);
}

function address(flag: string, text: string | undefined, required: boolean): Address | null {
  if (text === undefined) {
    if (!required) return null;
    throw new UsageError(
      `--${flag} is required: give the address of the stream of ${
        STREAMS[flag]
      }, e.g. --${flag} tcp-listen:127.0.0.1:9001 (see --help)`,
    );
  }
  try {
    return parseAddress(text);
  } catch (error) {
    if (error instanceof AddressError) throw new UsageError(`--${flag}: ${error.message}`);
    throw error;
  }
}

/**
 * An address the program listens on (metrics, monitor): only the plain listen forms. A
 * `tls-listen:` one is refused: these servers speak no TLS, and a control socket the operator
 * believes behind mutual TLS must not answer anyone in plain text (SPEC 11).
 */
function listenAddress(flag: string, text: string | undefined, example: string): Address | null {
  const a = address(flag, text, false);
  if (a !== null && !a.listen) {
    throw new UsageError(`--${flag}: ${a.text} is not a listen address; e.g. --${flag} ${example}`);
  }
  if (a !== null && usesTls(a)) {
    throw new UsageError(
      `--${flag}: ${a.text}: this server offers no TLS; listen on unix-listen: (its mode is ` +
        `--socket-mode) or tcp-listen: on a trusted address, e.g. --${flag} ${example}`,
    );
  }
  return a;
}

/** QOM ids: a letter, then letters, digits, '-', '.', '_' (QEMU's id_wellformed). */
function objectId(text: string | undefined): string {
  if (text === undefined) return "colo-compare0";
  if (/^[A-Za-z][A-Za-z0-9._-]*$/.test(text)) return text;
  throw new UsageError(
    `--id: "${text}" is not a valid object id; start with a letter, then letters, digits, -, . or _`,
  );
}

function level(text: string | undefined): Level | null {
  if (text === undefined) return null;
  if ((LEVELS as readonly string[]).includes(text)) return text as Level;
  throw new UsageError(`--log-level: "${text}" is not a level; use one of ${LEVELS.join(", ")}`);
}

/** `parseArgs`' words for a flag followed by something that starts with "-". */
const AMBIGUOUS = /Option '(?:-\w, )?(--[\w-]+)' argument is ambiguous/;

/**
 * `parseArgs`, strict, its errors turned into one-line {@linkcode UsageError}s. A flag's value
 * that starts with one "-" (`--compare-timeout -5`), which `parseArgs` refuses as ambiguous, is
 * taken as `--compare-timeout=-5`, so that the flag's own rule judges it; a flag followed by
 * another flag has had its value forgotten. A flag that takes one value may be given once.
 */
export function parseFlags<T extends ParseArgsConfig & { args: string[] }>(
  config: T,
): ReturnType<typeof parseArgs<T>> {
  let parsed;
  try {
    parsed = parseArgs({ ...config, tokens: true });
  } catch (error) {
    const dash = AMBIGUOUS.exec(error instanceof Error ? error.message : String(error));
    const at = dash ? config.args.indexOf(dash[1]) : -1;
    const value = config.args[at + 1];
    if (at >= 0 && value !== undefined && !value.startsWith("--")) {
      const joined = [...config.args.slice(0, at), `${dash![1]}=${value}`];
      return parseFlags({ ...config, args: [...joined, ...config.args.slice(at + 2)] });
    }
    throw usageErrorOf(error, config.args);
  }
  refuseRepeats(parsed.tokens ?? [], config.options ?? {});
  return parsed as ReturnType<typeof parseArgs<T>>;
}

/**
 * A flag given twice that takes one value: `parseArgs` keeps the last silently, so a command
 * line edited by appending a flag would run with whichever came later. Refused, naming both.
 */
function refuseRepeats(
  tokens: readonly ({ kind: string } & { name?: string; value?: string })[],
  options: NonNullable<ParseArgsConfig["options"]>,
): void {
  const seen = new Map<string, string | undefined>();
  for (const t of tokens) {
    if (t.kind !== "option" || t.name === undefined) continue;
    const option = options[t.name];
    if (option?.type !== "string" || option.multiple) continue;
    if (seen.has(t.name)) {
      throw new UsageError(
        `--${t.name} is given twice ("${seen.get(t.name)}" and "${t.value}"); give it once`,
      );
    }
    seen.set(t.name, t.value);
  }
}

/**
 * The {@linkcode UsageError} for an error thrown by `parseArgs` (one line naming the flag);
 * `args`, the command line it parsed, to name what followed a flag whose value is missing.
 */
function usageErrorOf(error: unknown, args: readonly string[]): UsageError {
  const msg = error instanceof Error ? error.message : String(error);
  const unknown = /Unknown option '([^']+)'/.exec(msg);
  if (unknown) return new UsageError(`unknown flag ${unknown[1]}; see --help for the flags`);
  const missing = /Option '(?:-\w, )?(--[\w-]+) <value>' argument missing/.exec(msg);
  if (missing) return new UsageError(`${missing[1]} needs a value; see --help`);
  const noValue = /Option '(?:-\w, )?(--[\w-]+)' does not take an argument/.exec(msg);
  if (noValue) return new UsageError(`${noValue[1]} takes no value; see --help`);
  const dash = AMBIGUOUS.exec(msg);
  if (dash) {
    const next = args[args.indexOf(dash[1]) + 1];
    return new UsageError(`${dash[1]} needs a value${next ? ` before ${next}` : ""}; see --help`);
  }
  return new UsageError(`${msg}; see --help`);
}

/** `--tls-creds` and `--tls-authz` against the addresses that use them (SPEC 11). */
function tlsOptions(
  named: [string, Address][],
  creds: string | undefined,
  authz: string[] | undefined,
): Pick<Config, "tlsCreds" | "tlsAuthz"> {
  const tls = named.filter(([, a]) => usesTls(a));
  if (tls.length > 0 && (creds === undefined || creds === "")) {
    const [flag, a] = tls[0];
    throw new UsageError(
      `--${flag} ${a.text} needs --tls-creds DIR: a directory with ca-cert.pem and the ${
        a.listen ? "server" : "client"
      } certificate and key (QEMU's tls-creds-x509 layout)`,
    );
  }
  if (authz !== undefined) {
    if (!tls.some(([, a]) => a.listen)) {
      throw new UsageError(
        "--tls-authz checks clients of tls-listen: addresses, and none is given; use tls-listen: or drop --tls-authz",
      );
    }
    const empty = authz.find((dn) => !/^[^=,]+=/.test(dn));
    if (empty !== undefined) {
      throw new UsageError(
        `--tls-authz: "${empty}" is not a distinguished name; write it as QEMU does, e.g. O=Example,CN=client`,
      );
    }
  }
  return { tlsCreds: tls.length > 0 ? creds! : null, tlsAuthz: authz ?? null };
}

/** Parses `args` (without the program name). Throws {@linkcode UsageError}. */
export function parseCommandLine(args: string[]): Command {
  if (args[0] === "replay") return { kind: "replay", args: args.slice(1) };
  const parsed = parseFlags({ args, options: OPTIONS, allowPositionals: true, strict: true });
  const v = parsed.values;
  if (v.help) return { kind: "help" };
  if (v.version) return { kind: "version" };
  const positionals = parsed.positionals;
  if (positionals.length > 0) {
    if (positionals[0] === "demo" && positionals.length === 1) {
      return {
        kind: "demo",
        logLevel: level(v["log-level"]),
        keepCaptures: v["keep-captures"] ?? null,
      };
    }
    throw new UsageError(
      `unexpected argument "${
        positionals[0]
      }"; the commands are "demo" and "replay", everything else is a --flag (see --help)`,
    );
  }
  if (v["keep-captures"] !== undefined) {
    throw new UsageError(
      "--keep-captures belongs to the demo: colo-compare demo --keep-captures DIR",
    );
  }
  const primaryIn = address("primary-in", v["primary-in"], true)!;
  const secondaryIn = address("secondary-in", v["secondary-in"], true)!;
  const outdev = address("outdev", v["outdev"], true)!;
  const notifyDev = address("notify-dev", v["notify-dev"], false);
  const qmp = address("qmp", v["qmp"], false);
  if (notifyDev && qmp) {
    throw new UsageError(
      "--notify-dev and --qmp are two checkpoint channels; give one: --notify-dev for Xen COLO, --qmp for KVM COLO",
    );
  }
  const qmpSecondary = address("qmp-secondary", v["qmp-secondary"], false);
  if (qmpSecondary && !qmp) {
    throw new UsageError(
      "--qmp-secondary watches the secondary's monitor beside the primary's: give --qmp too",
    );
  }
  const named: [string, Address][] = [
    ["primary-in", primaryIn],
    ["secondary-in", secondaryIn],
    ["outdev", outdev],
  ];
  if (notifyDev) named.push(["notify-dev", notifyDev]);
  if (qmp) named.push(["qmp", qmp]);
  if (qmpSecondary) named.push(["qmp-secondary", qmpSecondary]);
  const metrics = listenAddress("metrics", v.metrics, "tcp-listen:127.0.0.1:9464");
  const monitor = listenAddress("monitor", v.monitor, "unix-listen:/run/colo-compare.qmp");
  if (metrics) named.push(["metrics", metrics]);
  if (monitor) named.push(["monitor", monitor]);
  if (v.capture === "") {
    throw new UsageError("--capture needs a file path; e.g. --capture /var/log/colo/div.pcapng");
  }
  if (v["capture-max-bytes"] !== undefined && v.capture === undefined) {
    throw new UsageError(
      "--capture-max-bytes bounds the file of --capture, which is not given; give --capture FILE or drop it",
    );
  }
  for (let i = 0; i < named.length; i++) {
    for (let j = i + 1; j < named.length; j++) {
      if (sameAddress(named[i][1], named[j][1])) {
        throw new UsageError(
          `--${named[j][0]}: ${named[j][1].text} is the same socket as --${
            named[i][0]
          }; every stream and server needs its own address`,
        );
      }
    }
  }
  const tls = tlsOptions(named, v["tls-creds"], v["tls-authz"]);
  const config: Config = {
    primaryIn,
    secondaryIn,
    outdev,
    notifyDev,
    qmp,
    qmpSecondary,
    compareTimeout: v["compare-timeout"] === undefined
      ? DEFAULTS.compareTimeout
      : positiveInteger("compare-timeout", v["compare-timeout"], "milliseconds", MAX_MS),
    expiredScanCycle: v["expired-scan-cycle"] === undefined
      ? DEFAULTS.expiredScanCycle
      : positiveInteger("expired-scan-cycle", v["expired-scan-cycle"], "milliseconds", MAX_MS),
    maxQueueSize: v["max-queue-size"] === undefined
      ? DEFAULTS.maxQueueSize
      : positiveInteger("max-queue-size", v["max-queue-size"], "frames", 2 ** 32 - 1),
    vnetHdrSupport: v["vnet-hdr-support"] ?? false,
    maxHeldBytes: v["max-held-bytes"] === undefined
      ? DEFAULTS.maxHeldBytes
      : byteCount("max-held-bytes", v["max-held-bytes"]),
    socketMode: v["socket-mode"] === undefined
      ? DEFAULTS.socketMode
      : fileMode("socket-mode", v["socket-mode"]),
    ...tls,
    logLevel: level(v["log-level"]) ?? "info",
    warmup: !(v["no-warmup"] ?? false),
    capture: v.capture ?? null,
    captureMaxBytes: v["capture-max-bytes"] === undefined
      ? DEFAULT_CAPTURE_MAX_BYTES
      : positiveInteger("capture-max-bytes", v["capture-max-bytes"], "bytes", 2 ** 53),
    metrics,
    monitor,
    id: objectId(v.id),
  };
  return { kind: "run", config };
}
