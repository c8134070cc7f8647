/**
 * The notify-dev protocol of Xen COLO (SPEC 7) and the rule of one checkpoint request per
 * epoch. Messages are bare ASCII in the usual framing, never with a vnet word.
 *
 * @module
 */

/** Sent to ask the COLO controller for a checkpoint. */
export const DO_CHECKPOINT = "DO_CHECKPOINT";
/** Received from the controller when a checkpoint is done: flush. */
export const COLO_CHECKPOINT = "COLO_CHECKPOINT";
/** Received from Xen's libxl when it sets up the proxy. */
export const COLO_USERSPACE_PROXY_INIT = "COLO_USERSPACE_PROXY_INIT";
/** Our reply to {@linkcode COLO_USERSPACE_PROXY_INIT} (Xen waits 500 ms for it). */
export const COLO_COMPARE_GET_XEN_INIT = "COLO_COMPARE_GET_XEN_INIT";

/** What an incoming notify message means. */
export type NotifyMessage = "proxy-init" | "checkpoint" | "unknown";

function matches(text: string, frame: Uint8Array): boolean {
  if (frame.length !== text.length) return false;
  for (let i = 0; i < frame.length; i++) if (frame[i] !== text.charCodeAt(i)) return false;
  return true;
}

/** Classifies an incoming message by exact length and bytes (no NUL, no prefix match). */
export function classifyNotify(frame: Uint8Array): NotifyMessage {
  if (matches(COLO_CHECKPOINT, frame)) return "checkpoint";
  if (matches(COLO_USERSPACE_PROXY_INIT, frame)) return "proxy-init";
  return "unknown";
}

/** A printable rendering of an unknown message for the log (first 64 bytes). */
export function describeMessage(frame: Uint8Array): string {
  let s = "";
  for (let i = 0; i < Math.min(frame.length, 64); i++) {
    const c = frame[i];
    s += c >= 0x20 && c < 0x7f ? String.fromCharCode(c) : `\\x${c.toString(16).padStart(2, "0")}`;
  }
  return frame.length > 64 ? `${s}...` : s;
}

/**
 * One checkpoint request per epoch: after a request, stay silent until a checkpoint is done,
 * and ask again only if none came within `compare-timeout`. Xen reads one `DO_CHECKPOINT`
 * per checkpoint, so every surplus request would become a needless checkpoint later.
 */
export class CheckpointRequests {
  #retryAfter: number;
  #outstanding = false;
  /**
   * When the last request went out (ms) (-0: a double from the start; see src/comparator.ts,
   * #trimCheckedAt).
   */
  #sentAt = -0;

  /** `retryAfterMs`: the compare timeout. */
  constructor(retryAfterMs: number) {
    this.#retryAfter = retryAfterMs;
  }

  /** The compare timeout changed at runtime (the monitor's `qom-set`). */
  set retryAfterMs(ms: number) {
    this.#retryAfter = ms;
  }

  /** True while a request is waiting for its checkpoint. */
  get outstanding(): boolean {
    return this.#outstanding;
  }

  /** Asks to request a checkpoint at `now`; true if the request should go out. */
  request(now: number): boolean {
    if (this.#outstanding && now - this.#sentAt < this.#retryAfter) return false;
    this.#outstanding = true;
    this.#sentAt = now;
    return true;
  }

  /** A checkpoint is done: a new epoch starts. */
  done(): void {
    this.#outstanding = false;
  }
}
