/**
 * The command line (SPEC 2): flags to a validated {@linkcode Config}, or one clear error line
 * that names the flag and the fix.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type Address, AddressError, parseAddress, sameAddress } from "./wire/address.ts";
import { type Level, LEVELS } from "./log.ts";
import { VERSION } from "./version.ts";

/** Everything the comparator needs to run. */
export interface Config {
  primaryIn: Address;
  secondaryIn: Address;
  outdev: Address;
  notifyDev: Address | null;
  /** The primary QEMU's QMP monitor, as checkpoint channel (SPEC 7b); exclusive with notifyDev. */
  qmp: Address | null;
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
  logLevel: Level;
}

/** What the command line asks for. */
export type Command =
  | { kind: "run"; config: Config }
  | { kind: "demo"; logLevel: Level | null }
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

/** setTimeout's limit; a larger period would fire at once. */
const MAX_MS = 2 ** 31 - 1;

export const HELP =
  `colo-compare ${VERSION}: the COLO packet comparator (QEMU's colo-compare as one program)

Usage:
  colo-compare --primary-in ADDR --secondary-in ADDR --outdev ADDR
               [--notify-dev ADDR | --qmp ADDR] [options]
  colo-compare demo        run the comparator on a built-in demo (no VM needed)

Streams (each ADDR is tcp:HOST:PORT, tcp-listen:HOST:PORT, unix:PATH or unix-listen:PATH;
IPv6 hosts in brackets, e.g. tcp-listen:[::1]:9001; tcp-listen port 0 picks a free port):
  --primary-in ADDR          frames sent by the primary VM (QEMU primary_in)
  --secondary-in ADDR        frames sent by the secondary VM (secondary_in)
  --outdev ADDR              released primary frames (outdev)
  --notify-dev ADDR          Xen COLO checkpoint channel: DO_CHECKPOINT out, COLO_CHECKPOINT in
  --qmp ADDR                 KVM COLO checkpoint channel: the primary QEMU's own QMP monitor,
                             e.g. unix:/run/colo/qmp-compare.sock for
                             -qmp unix:/run/colo/qmp-compare.sock,server=on,wait=off

Options:
  --compare-timeout MS       a frame held longer requests a checkpoint (default 3000)
  --expired-scan-cycle MS    how often held frames are checked for age (default 1000)
  --max-queue-size N         frames held per connection and side (default 1024; N+1 fit, as in QEMU)
  --vnet-hdr-support         frames carry a vnet header length word (vnet_hdr_support=on)
  --max-held-bytes BYTES     frames held on both sides together (default 256M; K, M, G suffixes)
  --socket-mode MODE         mode of unix-listen sockets, octal (default 0600)
  --log-level LEVEL          error, warn, info (default), debug or trace (QEMU trace names)
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
  "compare-timeout": { type: "string" },
  "expired-scan-cycle": { type: "string" },
  "max-queue-size": { type: "string" },
  "vnet-hdr-support": { type: "boolean" },
  "max-held-bytes": { type: "string" },
  "socket-mode": { type: "string" },
  "log-level": { type: "string" },
  "help": { type: "boolean", short: "h" },
  "version": { type: "boolean", short: "V" },
} as const;

function positiveInteger(flag: string, text: string, unit: string, max: number): number {
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

function level(text: string | undefined): Level | null {
  if (text === undefined) return null;
  if ((LEVELS as readonly string[]).includes(text)) return text as Level;
  throw new UsageError(`--log-level: "${text}" is not a level; use one of ${LEVELS.join(", ")}`);
}

/** Parses `args` (without the program name). Throws {@linkcode UsageError}. */
export function parseCommandLine(args: string[]): Command {
  let parsed;
  try {
    parsed = parseArgs({ args, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    const msg = error instanceof Error ? error.message : String(error);
    const unknown = /Unknown option '([^']+)'/.exec(msg);
    if (unknown) throw new UsageError(`unknown flag ${unknown[1]}; see --help for the flags`);
    const missing = /Option '(?:-\w, )?(--[\w-]+) <value>' argument missing/.exec(msg);
    if (missing) throw new UsageError(`${missing[1]} needs a value; see --help`);
    const noValue = /Option '(?:-\w, )?(--[\w-]+)' does not take an argument/.exec(msg);
    if (noValue) throw new UsageError(`${noValue[1]} takes no value; see --help`);
    const dash = /Option '(?:-\w, )?(--[\w-]+)' argument is ambiguous/.exec(msg);
    if (dash) {
      throw new UsageError(
        `${dash[1]}: the value starts with "-"; give a positive whole number, e.g. ${dash[1]} 3000`,
      );
    }
    throw new UsageError(`${msg}; see --help`);
  }
  const v = parsed.values;
  if (v.help) return { kind: "help" };
  if (v.version) return { kind: "version" };
  const positionals = parsed.positionals;
  if (positionals.length > 0) {
    if (positionals[0] === "demo" && positionals.length === 1) {
      return { kind: "demo", logLevel: level(v["log-level"]) };
    }
    throw new UsageError(
      `unexpected argument "${
        positionals[0]
      }"; the only command is "demo", everything else is a --flag (see --help)`,
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
  const named: [string, Address][] = [
    ["primary-in", primaryIn],
    ["secondary-in", secondaryIn],
    ["outdev", outdev],
  ];
  if (notifyDev) named.push(["notify-dev", notifyDev]);
  if (qmp) named.push(["qmp", qmp]);
  for (let i = 0; i < named.length; i++) {
    for (let j = i + 1; j < named.length; j++) {
      if (sameAddress(named[i][1], named[j][1])) {
        throw new UsageError(
          `--${named[j][0]}: ${named[j][1].text} is the same socket as --${
            named[i][0]
          }; every stream needs its own address`,
        );
      }
    }
  }
  const config: Config = {
    primaryIn,
    secondaryIn,
    outdev,
    notifyDev,
    qmp,
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
    logLevel: level(v["log-level"]) ?? "info",
  };
  return { kind: "run", config };
}
