/**
 * The demo's verdict: what a correct comparator must have produced from the demo's traffic.
 *
 * @module
 */

import type { Conversation } from "./traffic.ts";

/** What the demo saw. */
export interface Observed {
  /** Every conversation, the divergent one included. */
  conversations: Conversation[];
  divergent: Conversation;
  /** Frames that reached outdev, in order, as {@linkcode frameKey}s. */
  received: string[];
  /** The reply to COLO_USERSPACE_PROXY_INIT. */
  initReply: string;
  /** DO_CHECKPOINT messages the controller got. */
  doCheckpoints: number;
  /** The comparator's `checkpoint-request` log lines. */
  checkpointRequests: string[];
  releasedByCheckpoint: number;
  /** Frames lost by the comparator, for any reason. */
  dropped: number;
  /** Frames still held when it stopped. */
  heldAtEnd: number;
  /** Checkpoints `colo-compare replay` requested over the same frames, from captures. */
  replayCheckpoints: number;
}

/** A frame's bytes as a string key (frames are compared whole). */
export function frameKey(f: Uint8Array): string {
  let s = "";
  for (let i = 0; i < f.length; i += 4096) {
    s += String.fromCharCode(...f.subarray(i, Math.min(i + 4096, f.length)));
  }
  return s;
}

/** Everything that is wrong with what the demo saw; empty when the comparator was correct. */
export function judge(o: Observed): string[] {
  const problems: string[] = [];
  if (o.initReply !== "COLO_COMPARE_GET_XEN_INIT") {
    problems.push(`the Xen init handshake got "${o.initReply}"`);
  }
  const count = new Map<string, number>();
  const first = new Map<string, number>();
  o.received.forEach((k, i) => {
    count.set(k, (count.get(k) ?? 0) + 1);
    if (!first.has(k)) first.set(k, i);
  });
  const primaries = o.conversations.flatMap((c) => c.primary.map((p) => frameKey(p.bytes)));
  const expected = new Set(primaries);
  const missing = primaries.filter((k) => !count.has(k)).length;
  const duplicated = [...count.values()].filter((n) => n > 1).length;
  const unexpected = o.received.filter((k) => !expected.has(k)).length;
  if (missing) problems.push(`${missing} primary frames never reached outdev`);
  if (duplicated) problems.push(`${duplicated} primary frames reached outdev more than once`);
  if (unexpected) problems.push(`${unexpected} frames on outdev were never sent by the primary`);
  const reordered = o.conversations.filter((c) => {
    const at = c.primary.map((p) => first.get(frameKey(p.bytes)) ?? -1);
    return at.some((v, i) => i > 0 && v < at[i - 1]);
  });
  if (reordered.length) problems.push(`${reordered.length} conversations were reordered`);
  if (o.doCheckpoints !== 1) {
    problems.push(`the controller got ${o.doCheckpoints} DO_CHECKPOINT, expected 1`);
  }
  const request = o.checkpointRequests[0] ?? "";
  if (o.checkpointRequests.length !== 1 || !request.includes(`conn="${o.divergent.label}"`)) {
    problems.push(
      `checkpoint requests: ${
        o.checkpointRequests.join(" | ") || "none"
      }; expected one, for ${o.divergent.label}`,
    );
  }
  if (o.releasedByCheckpoint !== o.divergent.primary.length) {
    problems.push(
      `${o.releasedByCheckpoint} frames were released by the checkpoint, expected ${o.divergent.primary.length} (the NTP reply)`,
    );
  }
  if (o.replayCheckpoints !== o.checkpointRequests.length) {
    problems.push(
      `replay of the captures requested ${o.replayCheckpoints} checkpoints, the live run ${o.checkpointRequests.length}`,
    );
  }
  if (o.dropped) problems.push(`${o.dropped} frames were dropped`);
  if (o.heldAtEnd) problems.push(`${o.heldAtEnd} frames were still held at the end`);
  return problems;
}
