/**
 * The comparator's state in the Prometheus text exposition format (SPEC 12): names prefixed
 * `colo_compare_`, units in the names, HELP and TYPE for every family.
 *
 * @module
 */

import type { Snapshot } from "../inside/view.ts";
import type { Histogram } from "./histogram.ts";

/** The histograms the comparator fills as frames are released and checkpoints complete. */
export interface Histograms {
  /** Seconds a primary frame was held before its release (compared or flushed). */
  holdTime: Histogram;
  /** Seconds from a checkpoint request to the checkpoint's completion. */
  checkpointRoundTrip: Histogram;
}

type Labels = Record<string, string>;

function escape(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function labelText(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escape(v)}"`);
  return parts.length === 0 ? "" : `{${parts.join(",")}}`;
}

function number(n: number): string {
  if (n === Infinity) return "+Inf";
  return String(n);
}

/** Builds one exposition: families in order, each with HELP and TYPE once. */
class Exposition {
  #lines: string[] = [];

  family(
    name: string,
    type: "counter" | "gauge",
    help: string,
    samples: [Labels, number][],
  ): void {
    const full = `colo_compare_${name}`;
    this.#lines.push(`# HELP ${full} ${help}`, `# TYPE ${full} ${type}`);
    for (const [labels, value] of samples) {
      this.#lines.push(`${full}${labelText(labels)} ${number(value)}`);
    }
  }

  histogram(name: string, help: string, h: Histogram): void {
    const full = `colo_compare_${name}`;
    this.#lines.push(`# HELP ${full} ${help}`, `# TYPE ${full} histogram`);
    const counts = h.cumulative();
    const bounds = [...h.bounds, Infinity];
    for (let i = 0; i < bounds.length; i++) {
      this.#lines.push(`${full}_bucket{le="${number(bounds[i])}"} ${counts[i]}`);
    }
    this.#lines.push(`${full}_sum ${h.sum}`, `${full}_count ${h.count}`);
  }

  text(): string {
    return this.#lines.join("\n") + "\n";
  }
}

const SIDES = ["primary", "secondary"] as const;

/** Samples of a `side:reason` keyed map, scaled (ms to seconds). */
function bySideAndReason(map: Map<string, number>, scale: number): [Labels, number][] {
  return [...map].sort().map(([k, v]) => {
    const [side, reason] = k.split(":");
    return [{ side, reason }, v * scale];
  });
}

/** Renders `/metrics`. */
export function renderMetrics(s: Snapshot, h: Histograms): string {
  const st = s.stats;
  const e = new Exposition();
  e.family("frames_received_total", "counter", "Frames read from each input.", [
    [{ side: "primary" }, st.primaryIn],
    [{ side: "secondary" }, st.secondaryIn],
  ]);
  e.family("frames_released_total", "counter", "Primary frames sent to outdev, by reason.", [
    [{ reason: "compared" }, st.releasedCompared],
    [{ reason: "passthrough" }, st.passedThrough],
    [{ reason: "checkpoint" }, st.releasedByCheckpoint],
  ]);
  e.family(
    "secondary_frames_consumed_total",
    "counter",
    "Secondary frames matched by a comparison or flushed by a checkpoint.",
    [[{ reason: "compared" }, st.secondaryCompared], [
      { reason: "checkpoint" },
      st.secondaryFlushed,
    ]],
  );
  const dropped = bySideAndReason(st.dropped, 1);
  dropped.push([{ side: "outdev", reason: "disconnected-overflow" }, st.outdevOverflow]);
  dropped.push([{ side: "outdev", reason: "too-old" }, st.outdevExpired]);
  e.family("frames_dropped_total", "counter", "Frames lost, by side and reason.", dropped);
  e.family(
    "frames_passed_through_total",
    "counter",
    "Primary frames sent to outdev uncompared, by why they could not be compared.",
    [...st.passedThroughBy].sort().map(([reason, v]) => [{ reason }, v]),
  );
  e.family(
    "checkpoint_requests_total",
    "counter",
    "Checkpoints the comparison asked for, by reason (including those folded into an outstanding request).",
    [...st.checkpointNeeds].sort().map(([reason, v]) => [{ reason }, v]),
  );
  e.family(
    "checkpoint_requests_sent_total",
    "counter",
    "Checkpoint requests sent to the controller (one per epoch).",
    [[{}, st.checkpointsRequested]],
  );
  e.family(
    "checkpoint_requests_undelivered_total",
    "counter",
    "Checkpoint requests that found no controller peer.",
    [[{}, st.checkpointsUndelivered]],
  );
  e.family("checkpoints_total", "counter", "Checkpoints completed (flushes).", [[{}, s.epoch]]);
  e.family(
    "input_pauses_total",
    "counter",
    "Pauses of an input (back-pressure), by side and reason.",
    bySideAndReason(st.pauses, 1),
  );
  e.family(
    "input_paused_seconds_total",
    "counter",
    "Time an input spent paused, by side and reason.",
    bySideAndReason(st.pausedMs, 1 / 1000),
  );
  e.family(
    "internal_errors_total",
    "counter",
    "Exceptions caught from the engine (bugs, not peer problems).",
    [[{}, st.internalErrors]],
  );
  e.family(
    "control_peers_dropped_total",
    "counter",
    "Control peers disconnected because their unread output reached its bound.",
    [[{}, st.controlPeersDropped]],
  );
  e.family(
    "stream_resets_total",
    "counter",
    "Input connections reset for an oversize frame length.",
    [[{}, st.oversizeResets]],
  );
  e.family(
    "held_frames",
    "gauge",
    "Frames held, waiting for comparison or a checkpoint.",
    SIDES.map((side) => [{ side }, s.heldFrames[side]]),
  );
  e.family(
    "held_bytes",
    "gauge",
    "Bytes of frames held.",
    SIDES.map((side) => [{ side }, s.heldBytes[side]]),
  );
  e.family("connections", "gauge", "Connections in the table.", [[{}, s.connections]]);
  e.family(
    "peer_connected",
    "gauge",
    "1 while a peer is attached to the endpoint.",
    Object.entries(s.peers).map(([endpoint, up]) => [{ endpoint }, up ? 1 : 0]),
  );
  e.family(
    "input_paused",
    "gauge",
    "1 while reading of the input is paused (back-pressure).",
    SIDES.map((side) => [{ side }, s.paused[side] ? 1 : 0]),
  );
  e.family(
    "checkpoint_outstanding",
    "gauge",
    "1 while a checkpoint request waits for its checkpoint.",
    [[{}, s.checkpointOutstanding ? 1 : 0]],
  );
  e.histogram(
    "hold_time_seconds",
    "Time a released primary frame was held (compared or flushed).",
    h.holdTime,
  );
  e.histogram(
    "checkpoint_round_trip_seconds",
    "Time from a checkpoint request to the checkpoint's completion.",
    h.checkpointRoundTrip,
  );
  return e.text();
}
