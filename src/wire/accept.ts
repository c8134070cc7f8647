/**
 * What a listener does when `accept()` fails (SPEC 8: no peer stalls an endpoint, no log line
 * per connection). Two kinds of failure:
 *
 * - One connection was gone before it was taken: reset or aborted by its peer while it waited
 *   in the listen queue (Deno accepts it, fails to read its address and reports
 *   `NotConnected`). The listener is sound: the next accept goes on at once.
 * - The listener cannot take any connection now (out of descriptors or memory): a pause before
 *   the next try, 100 ms doubling up to 1 s, so that a queued connection the kernel keeps
 *   offering does not spin the loop.
 *
 * Both are logged at warn, at most once per interval per listener with a count of the rest:
 * neither is a bug of the program's (SPEC 8 keeps error for those).
 *
 * @module
 */

import { type Fields, type Logger, ThrottledWarning } from "../log.ts";

const PAUSE_MIN_MS = 100;
const PAUSE_MAX_MS = 1000;

/** True when `error` is about one connection that was gone before `accept()` took it. */
export function lostBeforeAccept(error: unknown): boolean {
  return error instanceof Deno.errors.NotConnected ||
    error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.ConnectionAborted;
}

/** One listener's failed accepts: their log lines and the pause after each. */
export class AcceptFailures {
  readonly #fields: Fields;
  readonly #lost: ThrottledWarning;
  readonly #failed: ThrottledWarning;
  #pause = 0;

  /** `fields` name the listener in its lines (`{ endpoint: "primary-in" }`). */
  constructor(log: Logger, fields: Fields, intervalMs?: number) {
    this.#fields = fields;
    this.#lost = new ThrottledWarning(log, "peer-lost-before-accept", intervalMs);
    this.#failed = new ThrottledWarning(log, "accept-failed", intervalMs);
  }

  /** Notes a failed accept; the milliseconds to wait before the next one (0: at once). */
  failed(error: unknown): number {
    const reason = error instanceof Error ? error.message : String(error);
    if (lostBeforeAccept(error)) {
      this.#lost.note({ ...this.#fields, error: reason });
      return 0;
    }
    this.#pause = Math.min(Math.max(this.#pause * 2, PAUSE_MIN_MS), PAUSE_MAX_MS);
    this.#failed.note({ ...this.#fields, error: reason, retry_ms: this.#pause });
    return this.#pause;
  }

  /** An accept succeeded: the next failure pauses the shortest time again. */
  accepted(): void {
    this.#pause = 0;
  }
}
