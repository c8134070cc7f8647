/**
 * The demo's replay (SPEC 12): both simulated VMs' frames, stamped with the time the demo sent
 * them, written as pcapng and run through `colo-compare replay`'s engine, so the demo shows the
 * workload's checkpoint rate as replay measures it from captures alone.
 *
 * @module
 */

import { enhancedPacket, interfaceDescription, sectionHeader } from "../capture/pcapng.ts";
import { CaptureReader } from "../replay/pcap.ts";
import { replay, type ReplayOptions, type ReplayReport } from "../replay/replay.ts";

/** A frame as one VM sent it; `epochMs` is wall-clock time, as a capture stamps it. */
export interface SentFrame {
  epochMs: number;
  bytes: Uint8Array;
}

/** The two capture files in `dir`, by side. */
export function capturePaths(dir: string): { primary: string; secondary: string } {
  return { primary: `${dir}/primary.pcapng`, secondary: `${dir}/secondary.pcapng` };
}

/** Writes one VM's frames to `path` as pcapng, in the order the VM sent them. */
async function writeCapture(path: string, side: string, frames: SentFrame[]): Promise<void> {
  const blocks = [sectionHeader("colo-compare demo"), interfaceDescription(side)];
  for (const f of frames) blocks.push(enhancedPacket(0, f.epochMs, f.bytes));
  const out = new Uint8Array(blocks.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const b of blocks) out.set(b, at), at += b.length;
  await Deno.writeFile(path, out);
}

/** Writes both sides' captures into `dir` and replays them, reading the files back. */
export async function captureAndReplay(
  dir: string,
  frames: { primary: SentFrame[]; secondary: SentFrame[] },
  options: ReplayOptions,
): Promise<ReplayReport> {
  const paths = capturePaths(dir);
  await writeCapture(paths.primary, "primary", frames.primary);
  await writeCapture(paths.secondary, "secondary", frames.secondary);
  using primary = await Deno.open(paths.primary);
  using secondary = await Deno.open(paths.secondary);
  return await replay(
    new CaptureReader((buf) => primary.read(buf)),
    new CaptureReader((buf) => secondary.read(buf)),
    options,
  );
}

/** The `colo-compare replay` command line that replays the captures kept in `dir` the same way. */
export function replayCommand(dir: string, options: ReplayOptions): string {
  const paths = capturePaths(dir);
  return `colo-compare replay --primary ${paths.primary} --secondary ${paths.secondary} ` +
    `--compare-timeout ${options.compareTimeout} --expired-scan-cycle ${options.expiredScanCycle}` +
    ` --checkpoint-delay ${options.checkpointDelay}`;
}

/** The replay's checkpoints as one summary line: count, rate, by reason and by connection. */
export function replaySummary(r: ReplayReport): string {
  const seconds = r.durationMs / 1000;
  const rate = seconds > 0 ? r.checkpoints.requested / seconds : 0;
  const by = (rec: Record<string, number>) =>
    Object.entries(rec).map(([k, n]) => `${n} ${k}`).join(", ") || "-";
  const n = r.checkpoints.requested;
  return `${r.frames.primary} primary / ${r.frames.secondary} secondary frames over ` +
    `${seconds.toFixed(1)} s of capture time: ${n} checkpoint${n === 1 ? "" : "s"} requested ` +
    `(${rate.toFixed(2)}/s); by reason: ${by(r.checkpoints.byReason)}; by connection: ` +
    by(r.checkpoints.byConnection);
}
