/**
 * Adaptive polling of the inputs before the event loop sleeps (issue 11), as QEMU's iothreads
 * poll before they block (`poll-max-ns`). Once outdev has taken everything released, the next
 * frames usually arrive within tens of microseconds (the other side's copy, the next request).
 * A thread that sleeps in `epoll_wait` meanwhile leaves its CPU idle, and on a virtual machine
 * an idle vCPU halts: waking it costs the next frame 30-50 us at the median, and more in the
 * tail (bench/README.md, "Polling the inputs before the event loop sleeps"). So for a short
 * while the input sockets are polled (`poll(2)`, timeout 0) on the main thread, and it returns
 * to the event loop as soon as one is readable or the while is over.
 *
 * How long adapts as in QEMU (`aio_poll`): no polling at first; when the next frames came later
 * than the polling lasted but within twice {@linkcode POLL_MAX_US} (what is measured includes
 * the wake-up), it doubles (from {@linkcode POLL_START_US}, up to {@linkcode POLL_MAX_US}); when
 * they came later than that, polling stops until they come sooner again. Sparse traffic therefore
 * costs no polling, and a steady request-and-answer stream is answered without a wake-up. The
 * cost is CPU: at most {@linkcode POLL_MAX_US} per idle moment, so input that keeps coming just
 * too late (64-128 us apart, one frame at a time) can keep up to about half a core polling.
 *
 * Between two polls that find nothing the thread yields the CPU (`sched_yield(2)`): a thread
 * of another process, or one of V8's, that waits for this CPU runs first, and the polling then
 * takes only what the CPU would otherwise leave idle.
 *
 * libc is opened at start, while the `ffi` permission is granted; without it (or not on
 * Linux) nothing is polled. Only sockets whose file descriptor is known take part: plain TCP
 * and unix inputs (a unix socket's found by its addresses, src/wire/socket_fd.ts), and TLS
 * inputs (the TCP socket under them).
 * A TLS input may hold plaintext it decrypted already while its socket is not readable; no poll
 * waits then (`watch`'s `pending`).
 *
 * @module
 */

import { openLibc } from "../libc.ts";

/** The longest poll, and the first, in microseconds. */
export const POLL_MAX_US = 64;
export const POLL_START_US = 4;

/** `struct pollfd`: int fd, short events, short revents. */
const POLLFD_SIZE = 8;
const POLLIN = 1;
/** Inputs watched at most (the primary and the secondary input). */
const MAX_FDS = 8;

/** `nfds` as the BigInts FFI takes for it, made once: not one per poll in the polling loop. */
const NFDS = Array.from({ length: MAX_FDS + 1 }, (_, n) => BigInt(n));

const SYMBOLS = {
  poll: { parameters: ["buffer", "usize", "i32"], result: "i32" },
  sched_yield: { parameters: [], result: "i32" },
} as const;

/** libc's `poll(2)` without waiting, once opened: shared by every poller of the process. */
let libcPoll: ((fds: Uint8Array, n: number) => number) | null = null;

const monotonic = (): number => performance.now();

/** Polls before it would be time to sleep: `settle` decides, `arrived` teaches it. */
export class PollWait {
  readonly #poll: (fds: Uint8Array, n: number) => number;
  readonly #now: () => number;
  readonly #fds = new Uint8Array(POLLFD_SIZE * MAX_FDS);
  readonly #view = new DataView(this.#fds.buffer);
  /** Per watched input: whether bytes it read already wait (a TLS layer's), or null. */
  readonly #pending: ((() => boolean) | null)[] = [];
  #count = 0;
  /** How long the next poll may last (us); 0: no polling. */
  #windowUs = 0;
  /** When the last poll began, while no input has arrived since (ms); -1: none. */
  #idleSince = -1;
  /** Polls that ended with an input readable, and with none. */
  caught = 0;
  missed = 0;

  /**
   * `poll` checks `fds[0, n)` for readability without waiting and returns how many are ready;
   * `now` is in milliseconds. Tests give their own.
   */
  constructor(
    poll: (fds: Uint8Array, n: number) => number,
    now: () => number = monotonic,
  ) {
    this.#poll = poll;
    this.#now = now;
  }

  /**
   * A poller over libc's `poll(2)`, or null where it cannot be reached. libc is opened once,
   * at the first call that can (before the `ffi` permission goes), and shared by every poller
   * after it: the warm-up's comparators have one each, as the real one does.
   */
  static open(): PollWait | null {
    if (libcPoll === null) {
      const libc = openLibc(SYMBOLS, "input polling");
      if (typeof libc === "string") return null;
      // A poll that finds nothing yields the CPU to whatever else waits for it before the next
      // one: on a host with every CPU busy (two vCPUs, the peers' threads, V8's compilers and
      // collectors), spinning took the CPU from them and the first 2,000 pairs after start
      // waited for it (bench/README.md, "The generator warmed before the cold row").
      libcPoll = (fds, n) => {
        const ready = libc.poll(fds, NFDS[n], 0);
        if (ready === 0) libc.sched_yield();
        return ready;
      };
    }
    return new PollWait(libcPoll);
  }

  /** The current poll window (us). */
  get windowUs(): number {
    return this.#windowUs;
  }

  /**
   * Watches `fd` for readability; false when {@linkcode MAX_FDS} are watched already.
   * `pending`: true while its input holds bytes read already (no poll waits then).
   */
  watch(fd: number, pending: (() => boolean) | null = null): boolean {
    if (this.#count === MAX_FDS) return false;
    this.#pending[this.#count] = pending;
    const at = POLLFD_SIZE * this.#count++;
    this.#view.setInt32(at, fd, true);
    this.#view.setInt16(at + 4, POLLIN, true);
    this.#view.setInt16(at + 6, 0, true);
    return true;
  }

  /** Stops watching `fd`. */
  unwatch(fd: number): void {
    for (let i = 0; i < this.#count; i++) {
      if (this.#view.getInt32(POLLFD_SIZE * i, true) !== fd) continue;
      const last = POLLFD_SIZE * --this.#count;
      this.#fds.copyWithin(POLLFD_SIZE * i, last, last + POLLFD_SIZE);
      this.#pending[i] = this.#pending[this.#count];
      this.#pending[this.#count] = null;
      return;
    }
  }

  /**
   * Called when there is nothing left to do but wait for input: polls the watched inputs for
   * up to the current window, returning once one is readable.
   */
  settle(): void {
    this.catchInputs();
  }

  /**
   * Bit `i` of the result: the `i`-th watched descriptor ({@linkcode bitOf}). Polls like
   * {@linkcode settle} and tells which inputs became readable within the window: 0 when none
   * did, -1 when no poll was made (no window now, or an input holds bytes read already).
   */
  catchInputs(): number {
    if (this.#count === 0) return -1;
    for (let i = 0; i < this.#count; i++) if (this.#pending[i]?.() === true) return -1;
    const start = this.#now();
    this.#idleSince = start;
    if (this.#windowUs === 0) return -1;
    const until = start + this.#windowUs / 1000;
    let ready: boolean;
    do ready = this.#poll(this.#fds, this.#count) > 0; while (!ready && this.#now() < until);
    // Both counts are written, and the mask read, every time. Nothing is ever caught in the
    // warm-up (its peers wait for the comparator's thread): a store or a branch first run under
    // traffic would make V8 throw away the code compiled there (bench/README.md, "Cold start").
    this.caught += ready ? 1 : 0;
    this.missed += ready ? 0 : 1;
    let mask = 0;
    for (let i = 0; i < this.#count; i++) {
      mask |= (this.#view.getInt16(POLLFD_SIZE * i + 6, true) !== 0 ? 1 : 0) << i;
    }
    return mask;
  }

  /** The bit of watched descriptor `fd` in {@linkcode catchInputs}'s result (0: not watched). */
  bitOf(fd: number): number {
    for (let i = 0; i < this.#count; i++) {
      if (this.#view.getInt32(POLLFD_SIZE * i, true) === fd) return 1 << i;
    }
    return 0;
  }

  /** Called when input has been read: adapts the window to how long it took to come. */
  arrived(): void {
    if (this.#idleSince < 0) return;
    const waitedUs = (this.#now() - this.#idleSince) * 1000;
    this.#idleSince = -1;
    if (waitedUs <= this.#windowUs) return;
    // What was measured includes the wake-up itself when the thread slept (30-100 us on an
    // idle vCPU): frames that came within twice the longest poll would mostly have been caught.
    if (waitedUs > 2 * POLL_MAX_US) this.#windowUs = 0;
    else this.#windowUs = Math.min(POLL_MAX_US, Math.max(POLL_START_US, 2 * this.#windowUs));
  }
}
