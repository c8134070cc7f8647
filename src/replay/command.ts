/**
 * The `replay` subcommand: its flags, reading the two captures, printing the report.
 *
 * @module
 */

import {
  BackgroundFile,
  DEFAULT_CAPTURE_MAX_BYTES,
  DivergenceCapture,
} from "../capture/capture.ts";
import { DEFAULTS, parseFlags, positiveInteger, UsageError } from "../cli.ts";
import { CaptureFormatError, CaptureReader, type FrameSource } from "./pcap.ts";
import { formatReport, replay, type ReplayOptions } from "./replay.ts";

/** What `colo-compare replay ...` asks for. */
export interface ReplayCommand {
  primary: string;
  secondary: string;
  capture: string | null;
  captureMaxBytes: number;
  json: boolean;
  /** Added to every secondary timestamp (ms, may be negative): captures from shifted clocks. */
  secondaryOffsetMs: number;
  options: ReplayOptions;
}

export const REPLAY_HELP = `Usage: colo-compare replay --primary FILE --secondary FILE [options]

Runs the compare engine over two captures (pcap or pcapng, e.g. from QEMU's filter-dump) and
reports what the comparator would have done: frames released, checkpoints by reason and by
connection, the first divergences with their bytes. The capture timestamps are the clock.

  --primary FILE             the primary VM's output frames
  --secondary FILE           the secondary VM's output frames
  --capture FILE             write every divergence to FILE (pcapng, as --capture does live)
  --capture-max-bytes N      bound of that file (default ${DEFAULT_CAPTURE_MAX_BYTES})
  --json                     the report as one JSON object
  --compare-timeout MS       as for the comparator (default ${DEFAULTS.compareTimeout})
  --expired-scan-cycle MS    as for the comparator (default ${DEFAULTS.expiredScanCycle})
  --max-queue-size N         as for the comparator (default ${DEFAULTS.maxQueueSize})
  --checkpoint-delay MS      a requested checkpoint completes this long after (default 0)
  --secondary-offset=MS      added to the secondary's timestamps (may be negative; default 0):
                             QEMU's filter-dump stamps frames with the VM's virtual clock plus
                             the time the dump started, so two VMs' captures can be shifted
  --divergences N            divergences shown with their bytes (default 10)
`;

const OPTIONS = {
  "primary": { type: "string" },
  "secondary": { type: "string" },
  "capture": { type: "string" },
  "capture-max-bytes": { type: "string" },
  "json": { type: "boolean" },
  "compare-timeout": { type: "string" },
  "expired-scan-cycle": { type: "string" },
  "max-queue-size": { type: "string" },
  "checkpoint-delay": { type: "string" },
  "divergences": { type: "string" },
  "secondary-offset": { type: "string" },
  "help": { type: "boolean", short: "h" },
} as const;

const MAX_MS = 2 ** 31 - 1;

/** Parses the flags after `replay`; null for --help. Throws {@linkcode UsageError}. */
export function parseReplayCommand(args: string[]): ReplayCommand | null {
  const parsed = parseFlags({ args, options: OPTIONS, allowPositionals: false, strict: true });
  const v = parsed.values;
  if (v.help) return null;
  for (const side of ["primary", "secondary"] as const) {
    if (v[side] === undefined) {
      throw new UsageError(`replay: --${side} is required: give the ${side} VM's capture file`);
    }
  }
  const int = (flag: keyof typeof v & string, fallback: number, unit: string, max = MAX_MS) => {
    const text = v[flag];
    return typeof text === "string" ? positiveInteger(flag, text, unit, max) : fallback;
  };
  const delay = v["checkpoint-delay"];
  const offset = v["secondary-offset"] ?? "0";
  // Digits beyond a double's range read as Infinity, a time the scans would never reach.
  if (!/^-?[0-9]+(\.[0-9]+)?$/.test(offset.trim()) || !Number.isFinite(Number(offset.trim()))) {
    throw new UsageError(
      `--secondary-offset: "${offset}" is not a number of milliseconds; e.g. --secondary-offset=-1500`,
    );
  }
  return {
    primary: v.primary!,
    secondary: v.secondary!,
    capture: v.capture ?? null,
    captureMaxBytes: int("capture-max-bytes", DEFAULT_CAPTURE_MAX_BYTES, "bytes", 2 ** 53),
    json: v.json ?? false,
    secondaryOffsetMs: Number(offset.trim()),
    options: {
      compareTimeout: int("compare-timeout", DEFAULTS.compareTimeout, "milliseconds"),
      expiredScanCycle: int("expired-scan-cycle", DEFAULTS.expiredScanCycle, "milliseconds"),
      maxQueueSize: int("max-queue-size", DEFAULTS.maxQueueSize, "frames", 2 ** 32 - 1),
      // 0 is allowed here: "at once".
      checkpointDelay: delay === "0" ? 0 : int("checkpoint-delay", 0, "milliseconds"),
      divergencesShown: int("divergences", 10, "divergences", 1_000_000),
    },
  };
}

/** Opens a capture and reads its header; a usage error names the flag when it cannot. */
async function open(
  flag: string,
  path: string,
): Promise<{ source: FrameSource; file: Deno.FsFile }> {
  const cannot = (error: unknown) =>
    new UsageError(`replay: --${flag} ${path}: cannot read it (${(error as Error).message})`);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (error) {
    throw cannot(error);
  }
  // A directory opens, and fails at the first read: so do other files that cannot be read.
  const reader = new CaptureReader((buf) =>
    file.read(buf).catch((error) => {
      throw cannot(error);
    })
  );
  const source: FrameSource = {
    next: async () => {
      try {
        return await reader.next();
      } catch (error) {
        if (!(error instanceof CaptureFormatError)) throw error;
        throw new UsageError(
          `replay: --${flag} ${path}: ${error.message}; give a pcap or pcapng file`,
        );
      }
    },
  };
  return { source, file };
}

/** Runs `replay`; returns the exit status. Usage errors are thrown before anything runs. */
export async function runReplay(command: ReplayCommand): Promise<number> {
  const primary = await open("primary", command.primary);
  const secondary = await open("secondary", command.secondary);
  const offset = command.secondaryOffsetMs;
  const shifted: FrameSource = offset === 0 ? secondary.source : {
    next: async () => {
      const f = await secondary.source.next();
      if (f !== null) f.timeMs += offset;
      return f;
    },
  };
  let capture: DivergenceCapture | null = null;
  if (command.capture !== null) {
    // Created afresh (emptied) before the captures are read: never one of them.
    for (const [flag, path] of [["primary", command.primary], ["secondary", command.secondary]]) {
      if (sameFile(command.capture, path)) {
        primary.file.close();
        secondary.file.close();
        throw new UsageError(
          `replay: --capture ${command.capture} is the --${flag} capture; write it elsewhere`,
        );
      }
    }
    let file;
    try {
      file = BackgroundFile.create(command.capture);
    } catch (error) {
      throw new UsageError(
        `replay: --capture ${command.capture}: cannot create it (${(error as Error).message})`,
      );
    }
    capture = new DivergenceCapture(file, {
      maxBytes: command.captureMaxBytes,
      epochMs: (now) => now,
    });
  }
  let report;
  let captureFailed: unknown = null;
  try {
    report = await replay(
      primary.source,
      shifted,
      command.options,
      capture?.divergence.bind(capture),
    );
  } finally {
    primary.file.close();
    secondary.file.close();
    try {
      await capture?.close();
    } catch (error) {
      // A full disk: the report is still whole (and a failed replay's own error comes first).
      captureFailed = error;
    }
  }
  if (capture !== null) {
    if (capture.skipped > 0) {
      console.error(
        `colo-compare: --capture ${command.capture} reached --capture-max-bytes; ` +
          `${capture.skipped} divergences left out`,
      );
    }
  }
  console.log(command.json ? JSON.stringify(report, null, 2) : formatReport(report));
  if (captureFailed !== null) {
    console.error(
      `colo-compare: --capture ${command.capture}: cannot write it ` +
        `(${(captureFailed as Error).message}); the report is whole, the capture is not`,
    );
    return 1;
  }
  return 0;
}

/** True when `a` and `b` name one file (the same device and inode), both existing. */
function sameFile(a: string, b: string): boolean {
  try {
    const [x, y] = [Deno.statSync(a), Deno.statSync(b)];
    return x.ino !== null && x.dev === y.dev && x.ino === y.ino;
  } catch {
    return false;
  }
}
