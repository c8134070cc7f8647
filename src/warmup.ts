/**
 * A warm-up before the comparator listens (issue 11, the cold-start and warm latency rows):
 * two throwaway comparators on loopback ports of their own, one after the other, are sent
 * 3,000 matching frame pairs in all, one pair at a time, over real TCP sockets, and each is
 * read back from its outdev; with two bursts among them (a bulk transfer's run of segments, and
 * a segment on each of 320 new connections). The hot path (the socket reads and writes, the
 * frame decoder, the engine, the sink, the outdev writer) is then compiled by V8, up to its
 * optimising compiler, before the first guest frame arrives, instead of while the first frames
 * wait for it and on a CPU the traffic needs. The code is shared by every comparator of the
 * process: the real one, made after, runs it already optimized. Nothing of the throwaway ones is
 * kept: their statistics, tables, sockets and log lines go with them.
 *
 * Bounded: at most `deadlineMs` of traffic, and over at once when the program is stopped; a
 * warm-up that fails or takes longer (no loopback, a `--allow-net` that does not grant it, a
 * local process connecting to its ports first) is given up and reported, never fatal.
 * `--no-warmup` leaves it out. Plain TCP only: with TLS endpoints the decryption path still
 * compiles on the first frames.
 *
 * @module
 */

import type { Config } from "./cli.ts";
import { Comparator } from "./comparator.ts";
import { longMark } from "./compare/engine.ts";
import { CompareClock } from "./flow/clock.ts";
import v8 from "node:v8";
import vm from "node:vm";
import { Logger } from "./log.ts";
import { MallocTrimmer } from "./malloc.ts";
import { BLOCK_SIZE } from "./pool.ts";
import { arp, concat, frame, framed, pseudoRandomBytes, TCP, withVnet } from "./packet/build.ts";
import { boundPort, parseAddress } from "./wire/address.ts";
import { teachSettledAtOnce } from "./wire/read_op.ts";
import { writeAll } from "./wire/transport.ts";

/**
 * Pairs sent by default: enough for the hot path to reach V8's optimising compiler, at the
 * thresholds of src/v8_flags.ts, on both throwaway comparators (bench/README.md, issue 11).
 */
export const WARMUP_PAIRS = 3000;

/**
 * The most a warm-up may delay listening (ms). 3,000 pairs take about 0.8 s on an idle machine;
 * the margin is for a loaded host, where a warm-up cut short leaves the rest to compile under
 * traffic.
 */
export const WARMUP_DEADLINE_MS = 3000;

/**
 * The throwaway comparators' clock runs this much faster, and their expiry scan every
 * {@linkcode WARMUP_SCAN_CYCLE_MS}: the scan's periodic work (pool and table trims every ten
 * seconds, the malloc trim check every two) runs many times in the warm-up. Run first in the
 * real comparator, ten seconds into its traffic, the first trim wrote fields that had kept
 * their first value until then, and V8 threw away the code compiled on that (the engine's
 * `#input` among it, in the middle of a throughput row: bench/README.md, "Where the rest goes").
 */
export const WARMUP_CLOCK_SPEED = 100;
export const WARMUP_SCAN_CYCLE_MS = 10;

/**
 * The throwaway comparators' input pumps make sure the event loop turns after this many bytes
 * instead of every MiB (src/input/pump.ts, `BYTES_PER_TURN`). Each pump reads about 1.3 MiB in
 * the warm-up; with the MiB, the loop first took its turn check near each throwaway's end, where
 * V8 threw away the loop's optimized code (no type feedback there) and had compiled it again
 * only as far as Maglev when the warm-up ended: the real comparator's first traffic then waited
 * for 15-18 ms of TurboFan on a two-core host, one to three pairs of 1.5-4.9 ms around the
 * latency row's 200th (bench/README.md, "The read loop's turn check taken in the warm-up").
 * This often, the check runs within the first pairs, with reads that waited (pairs one at a
 * time) and with reads that found data waiting (the burst).
 */
export const WARMUP_BYTES_PER_TURN = 16 * 1024;

/** {@linkcode burstFrames}: frames past the long-queue mark, the most, the smaller burst. */
const BURST_PAST_MARK = 64;
const BURST_MAX = 4096;
const BURST_SMALL = 512;

/**
 * Connections each throwaway comparator is sent a segment pair on at once, a quarter of the way
 * through its pairs ({@linkcode connectionFrames}): past the idle connections that keep their
 * handle (`AWAKE_IDLE_MAX`, 256) and the table's first buckets (64), so that its growth,
 * hibernation and wake-up run in the warm-up.
 */
export const WARMUP_CONNECTIONS = 320;
/** Of those, connections sent a second segment pair after all of them (the first hibernated). */
const WARMUP_CONNECTIONS_AGAIN = 32;

/** How a warm-up runs. */
export interface WarmupOptions {
  /** Pairs sent in all (default {@linkcode WARMUP_PAIRS}). */
  pairs?: number;
  /** Given up after this long (ms; default {@linkcode WARMUP_DEADLINE_MS}). */
  deadlineMs?: number;
  /** Called every {@linkcode RELEASE_EVERY} pairs and after each throwaway comparator. */
  release?: () => void;
  /** Ends the warm-up at once when aborted (a stop signal). */
  signal?: AbortSignal;
}

/** What a warm-up did, for the start-up log. */
export interface WarmupReport {
  pairs: number;
  ms: number;
  /** Why it stopped early, when it did. */
  error?: string;
  /** Times the executable's pages and malloc's free memory were given back along the way. */
  releases: number;
  /**
   * Whether the first throwaway comparator's garbage was collected before the second started
   * (else at the first collection under traffic, as the second's is).
   */
  collected: boolean;
  /**
   * Engine milliseconds the throwaway comparators' clocks covered, in all: their expiry scans'
   * periodic work (trims every ten seconds) ran over that much time (see
   * {@linkcode WARMUP_CLOCK_SPEED}).
   */
  clockMs: number;
  /** Times a throwaway comparator paused a side for running ahead (the bursts). */
  aheadPauses: number;
}

/** `f` as an input stream carries it: framed, with a vnet header word and header when `vnet`. */
function asInput(f: Uint8Array, vnet: boolean): Uint8Array {
  return vnet ? framed(withVnet(f, 12), 12) : framed(f);
}

/**
 * The frames sent: TCP segments of a few connections and sizes (the byte stream's path), a
 * UDP datagram and an ICMP echo now and then (the per-packet path), as a guest's output mixes
 * them; every other run of 32 pairs one connection alone (a busy flow: the connection table's
 * paths for the same connection again); an ARP frame now and then (passed through uncompared).
 * `vnet`: with a virtio-net header word and header, as `--vnet-hdr-support` reads.
 */
function* warmupFrames(pairs: number, vnet: boolean): Generator<Uint8Array> {
  const payload = pseudoRandomBytes(1448, 11);
  const seq = [0x10000000, 0x20000000, 0x30000000, 0x40000000];
  for (let i = 0; i < pairs; i++) {
    const alone = (i >> 5) % 2 === 1;
    let f;
    if (i % 97 === 50) {
      f = arp();
    } else if (!alone && i % 16 === 7) {
      f = frame({ udp: { sport: 5353, dport: 5353, payload: payload.subarray(0, 200 + i % 300) } });
    } else if (!alone && i % 16 === 15) {
      f = frame({ icmp: { type: 8, id: 1, seq: i, payload: payload.subarray(0, 56) } });
    } else {
      const c = alone ? 0 : i % seq.length;
      const size = [1000, 64, 1448, 512][(i >> (alone ? 6 : 2)) % 4];
      f = frame({
        tcp: {
          sport: 40000 + c,
          dport: 5201,
          seq: seq[c],
          // The guest acknowledges what its client sends: the acknowledgement numbers move on,
          // across the 32-bit wrap, on both sides (the engine tracks each side's latest).
          ack: (0xfffff000 + (i >> 3) * 100) >>> 0,
          flags: TCP.ACK | TCP.PSH,
          payload: payload.subarray(0, size),
        },
      });
      seq[c] = (seq[c] + size) >>> 0;
    }
    yield asInput(f, vnet);
  }
}

/**
 * Frames sent at once on both inputs, an eighth of the way through each throwaway comparator's
 * pairs (early: what it makes V8 compile again has the rest of the pairs to be compiled in): TCP
 * segments of one connection, their sequence numbers across the 32-bit wrap. A throughput
 * workload's paths that pairs sent one at a time never take (many frames per read, the held
 * frames of a read kept together, and a queue that grows long enough for the side to be
 * paused for running ahead, SPEC 8) then run in the warm-up, not first under traffic, where
 * V8 threw away the engine's compiled code for them two to six seconds into a throughput
 * row (bench/README.md, "Where the rest goes").
 */
function burstFrames(maxQueueSize: number, vnet: boolean, sport = 40100): Uint8Array {
  const long = longMark(maxQueueSize);
  // Past the mark at which the side pauses, short of the queue's limit (drops); a smaller
  // burst where the mark is out of reach or would take too long to reach.
  const count = long + BURST_PAST_MARK <= Math.min(maxQueueSize, BURST_MAX)
    ? long + BURST_PAST_MARK
    : Math.min(maxQueueSize, BURST_SMALL);
  const payload = pseudoRandomBytes(64, 12);
  const parts: Uint8Array[] = [];
  let seq = 0xffffff00;
  for (let i = 0; i < count; i++) {
    const f = frame({
      tcp: { sport, dport: 5201, seq, ack: 1, flags: TCP.ACK | TCP.PSH, payload },
    });
    parts.push(asInput(f, vnet));
    seq = (seq + payload.length) >>> 0;
  }
  return concat(...parts);
}

/**
 * One TCP segment on each of {@linkcode WARMUP_CONNECTIONS} new connections (a guest's server
 * answering that many clients), then another on the first {@linkcode WARMUP_CONNECTIONS_AGAIN}
 * of them. Paths a few connections never take run in the warm-up: the connection table's
 * rehash as it grows, a lookup that misses the cache and walks a bucket, idle connections
 * hibernated and woken. Taken first under traffic (the bench's scale row), V8 threw away the
 * compiled hot path there (`find`, `add`, `markIdle`, `takeRun`, the engine's `#place` and
 * `#holdAtOnce`) and compiled it again, as the first new connections arrived.
 */
function connectionFrames(vnet: boolean): Uint8Array {
  const payload = pseudoRandomBytes(64, 13);
  const parts: Uint8Array[] = [];
  const segment = (c: number, seq: number) => {
    const f = frame({
      ip: { src: `10.1.${c >> 8}.${c & 255}`, dst: "10.0.0.2" },
      tcp: { sport: 80, dport: 40000, seq, ack: 1, flags: TCP.ACK | TCP.PSH, payload },
    });
    parts.push(asInput(f, vnet));
  };
  for (let c = 0; c < WARMUP_CONNECTIONS; c++) segment(c, 1);
  for (let c = 0; c < WARMUP_CONNECTIONS_AGAIN; c++) segment(c, 1 + payload.length);
  return concat(...parts);
}

/**
 * Runs `pairs` matching pairs through throwaway comparators configured as `config` is (the
 * same vnet framing and bounds; a faster clock, a shorter scan cycle and a compare timeout no
 * pair reaches), on loopback: half through one, the rest through a second, each with a burst
 * early ({@linkcode burstFrames}). The second is there for what V8 specialised on the first
 * instance: code that took its closures as the only call targets, or its objects' field types
 * as the only ones, is thrown away at another instance's first frames and compiled again. That
 * now happens here, on the second, instead of in the real comparator's first seconds, where it
 * was most of the tail of the warm latency row (bench/README.md, "Compiled before listening").
 * The first stays reachable until the warm-up ends: a call site that has seen two live
 * closures made at one place in the code is compiled for any closure made there, and the real
 * comparator's then run the same code (bench/README.md, "Cold start: the compiled code kept").
 *
 * Every {@linkcode RELEASE_EVERY} pairs, and after each comparator, `options.release` is
 * called (main.ts gives the executable's pages back there) and malloc trimmed: the parser's,
 * the compilers' and the collector's pages and memory would otherwise all be resident at once,
 * and the warm-up would set the process's high-water mark.
 */
export async function warmUp(config: Config, options: WarmupOptions = {}): Promise<WarmupReport> {
  const { pairs = WARMUP_PAIRS, deadlineMs = WARMUP_DEADLINE_MS, release, signal } = options;
  const started = performance.now();
  // Never a permission prompt: without loopback granted whole, there is no warm-up.
  const net = Deno.permissions.querySync({ name: "net", host: "127.0.0.1" }).state;
  if (net !== "granted") {
    return {
      pairs: 0,
      ms: 0,
      clockMs: 0,
      aheadPauses: 0,
      error: `net permission for 127.0.0.1 is ${net}`,
      releases: 0,
      collected: false,
    };
  }
  const abort = new AbortController();
  const deadline = setTimeout(() => abort.abort("deadline"), deadlineMs);
  const stop = () => abort.abort("stopped");
  if (signal?.aborted) stop();
  signal?.addEventListener("abort", stop);
  const frames = warmupFrames(pairs, config.vnetHdrSupport);
  const trimmer = MallocTrimmer.open();
  let releases = 0;
  const giveBack = async () => {
    release?.();
    await trimmer?.trimNow();
    releases++;
  };
  const second = Math.floor(pairs * SECOND_SHARE);
  let done = 0;
  let clockMs = 0;
  let aheadPauses = 0;
  let failure: unknown;
  let collected: boolean | undefined;
  // The throwaway comparators, reachable until the warm-up ends (see above).
  const kept: Comparator[] = [];
  // The second reads pool blocks (128 KiB, as a TLS input does), not 1 MiB ones: the first has
  // taught the code the path of the real comparator's plain inputs, and the second's blocks are
  // garbage until V8's next full collection. Of 1 MiB, they set one off during the second (an
  // incremental mark-compact at 10 MB of heap), and V8 then let the heap grow to 36 MB before
  // the next: the soak's crowd of silent TLS clients (soak/trials/idle_clients.ts) grew the RSS
  // 64-75 MiB instead of 50-55.
  for (const [n, readSize] of [[pairs - second, null], [second, BLOCK_SIZE]] as const) {
    if (n === 0 || failure !== undefined) continue;
    const round = await throughThrowaway(config, frames, n, abort.signal, giveBack, readSize);
    kept.push(round.comparator);
    done += round.done;
    clockMs += round.clockMs;
    aheadPauses += round.aheadPauses;
    failure = round.error;
    // The first comparator's garbage goes before the second starts (one macrotask later: its
    // blocks are referenced until then); the comparator itself stays (`kept`). Not after the
    // second: a full collection then threw away nearly all the compiled hot path (the code that
    // took the second instance's closures and objects as constants), and the real comparator
    // compiled it again under its first traffic.
    if (collected === undefined) {
      await new Promise((r) => setTimeout(r, 0));
      collected = collectGarbage();
      teachSettledAtOnce();
    }
    await giveBack();
  }
  // Unreachable from here on: collected with the next full collection's other garbage.
  kept.length = 0;
  clearTimeout(deadline);
  signal?.removeEventListener("abort", stop);
  return {
    pairs: done,
    ms: Math.round(performance.now() - started),
    ...(failure === undefined
      ? {}
      : { error: abort.signal.aborted ? why(abort.signal.reason, deadlineMs) : String(failure) }),
    releases,
    collected: collected ?? false,
    clockMs: Math.round(clockMs),
    aheadPauses,
  };
}

function why(reason: unknown, deadlineMs: number): string {
  return reason === "deadline" ? `over ${deadlineMs} ms` : "the program is stopping";
}

/**
 * Pairs between two releases of the warm-up's pages (about 25 ms of it): the pages the last
 * pairs ran are back within that time, so a release every 250 pairs let them stack up with the
 * compilers' memory (bench/README.md, "The warm-up's own high-water mark").
 */
export const RELEASE_EVERY = 100;

/**
 * Every this many pairs, each side's frame is written in two parts, 1 ms apart, so that the
 * comparator reads it in two: the decoder's path for a frame cut across reads (a bulk
 * transfer's), first taken under traffic otherwise, where V8 threw away the decoder's and the
 * engine's compiled code for it (tests/warm_code_test.ts).
 */
const SPLIT_EVERY = 100;

/**
 * Resolves once the comparator's pending reads have completed with what was written: a timer
 * of 1 ms (a turn of the event loop through `setImmediate` was not enough: the read saw both
 * parts at once).
 */
function readsComplete(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 1));
}

/** The share of the pairs that goes through the second throwaway comparator. */
const SECOND_SHARE = 1 / 2;

/**
 * Sends the next `n` frames of `frames`, one pair at a time, through a throwaway comparator and
 * reads each back from its outdev, until the first failure (`signal` aborted: the deadline),
 * with `giveBack` every {@linkcode RELEASE_EVERY} pairs. Resolves with the pairs done and the
 * failure; the comparator and its sockets are gone.
 */
async function throughThrowaway(
  config: Config,
  frames: Iterator<Uint8Array>,
  n: number,
  signal: AbortSignal,
  giveBack: () => Promise<void>,
  readSize: number | null,
): Promise<
  { comparator: Comparator; done: number; clockMs: number; aheadPauses: number; error?: unknown }
> {
  const loopback = () => parseAddress("tcp-listen:127.0.0.1:0");
  const clock = new CompareClock(undefined, WARMUP_CLOCK_SPEED);
  const started = clock.now();
  const comparator = new Comparator(
    {
      ...config,
      primaryIn: loopback(),
      secondaryIn: loopback(),
      outdev: loopback(),
      notifyDev: null,
      qmp: null,
      qmpSecondary: null,
      tlsCreds: null,
      tlsAuthz: null,
      capture: null,
      metrics: null,
      monitor: null,
      logLevel: "error",
      warmup: false,
      expiredScanCycle: WARMUP_SCAN_CYCLE_MS,
      // With the clock's speed, no pair may wait long enough to time out (there is no
      // checkpoint controller to end it).
      compareTimeout: 3_600_000,
    },
    new Logger("error", () => {}),
    { clock, bytesPerTurn: WARMUP_BYTES_PER_TURN, readSize, trims: false },
  );
  const conns: Deno.Conn[] = [];
  const closeAll = () => {
    for (const c of conns.splice(0)) {
      try {
        c.close();
      } catch { /* closed already */ }
    }
  };
  signal.addEventListener("abort", closeAll);
  let done = 0;
  // A split pair takes the next pair with it: the count may step over a multiple.
  let releaseAt = RELEASE_EVERY;
  // The bursts, each written on both inputs once the pairs sent reach its mark, in this order.
  // The third is written on secondary-in first, and read before the primary's copy is sent: the
  // secondary's queue grows long too (the engine's `#longSecondary`), in each throwaway.
  const bursts: [number, () => Uint8Array, boolean][] = [
    [n >> 3, () => burstFrames(config.maxQueueSize, config.vnetHdrSupport), false],
    [n >> 2, () => connectionFrames(config.vnetHdrSupport), false],
    [
      (n >> 2) + (n >> 3),
      () => burstFrames(config.maxQueueSize, config.vnetHdrSupport, 40101),
      true,
    ],
  ];
  let nextBurst = 0;
  let error: unknown;
  try {
    await comparator.start();
    const ports = comparator.addresses();
    const connect = async (name: string) => {
      const conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: boundPort(ports[name]),
        signal,
      });
      conns.push(conn);
      if (signal.aborted) throw new Error("deadline");
      conn.setNoDelay(true);
      return conn;
    };
    const primary = await connect("primary-in");
    const secondary = await connect("secondary-in");
    const outdev = await connect("outdev");
    const buf = new Uint8Array(64 * 1024);
    let sent = 0;
    let received = 0;
    for (; done < n; done++) {
      if (done >= releaseAt) {
        releaseAt += RELEASE_EVERY;
        await giveBack();
      }
      const next = frames.next();
      if (next.done) break;
      if (done % SPLIT_EVERY === SPLIT_EVERY - 1 && done + 1 < n) {
        // A frame split across two reads on each side, as a bulk transfer's reads cut them,
        // its end read with the next pair's frame: a held frame in a buffer of its own, then
        // one in the read buffer.
        const half = next.value.length >> 1;
        await writeAll(primary, next.value.subarray(0, half));
        await writeAll(secondary, next.value.subarray(0, half));
        await readsComplete();
        const follow = frames.next();
        const rest = follow.done
          ? next.value.subarray(half)
          : concat(next.value.subarray(half), follow.value);
        // Every other time the secondary's copy is whole first: held, in a buffer that is no
        // read buffer, and copied into the secondary's slab (the store's `#slabFor`), which
        // pairs written primary first never take (thrown away at the real comparator's first
        // secondary copies that came first, tests/warm_code_test.ts).
        if (done % (2 * SPLIT_EVERY) === SPLIT_EVERY - 1) {
          await writeAll(primary, rest);
          await writeAll(secondary, rest);
        } else {
          await writeAll(secondary, rest);
          await readsComplete();
          await writeAll(primary, rest);
        }
        if (!follow.done) {
          sent += follow.value.length;
          done++;
        }
      } else {
        await writeAll(primary, next.value);
        await writeAll(secondary, next.value);
      }
      sent += next.value.length;
      while (nextBurst < bursts.length && done >= bursts[nextBurst][0]) {
        const [, make, secondaryFirst] = bursts[nextBurst++];
        const bulk = make();
        if (secondaryFirst) {
          await writeAll(secondary, bulk);
          await readsComplete();
          await writeAll(primary, bulk);
        } else {
          await writeAll(primary, bulk);
          await writeAll(secondary, bulk);
        }
        sent += bulk.length;
      }
      while (received < sent) {
        const got = await outdev.read(buf);
        if (got === null) throw new Error("outdev closed");
        received += got;
      }
    }
  } catch (e) {
    error = e;
  } finally {
    signal.removeEventListener("abort", closeAll);
    await comparator.stop();
    closeAll();
  }
  const { stats } = comparator;
  return {
    comparator,
    done,
    clockMs: clock.now() - started,
    aheadPauses: stats.pausesOf("primary", "ahead") + stats.pausesOf("secondary", "ahead"),
    ...(error === undefined ? {} : { error }),
  };
}

/**
 * A full garbage collection, through a context made after `--expose-gc` was set: the program's
 * own global scope has no `gc`. False where that cannot be done.
 */
function collectGarbage(): boolean {
  try {
    v8.setFlagsFromString("--expose-gc");
    const gc = vm.runInNewContext("gc");
    if (typeof gc !== "function") return false;
    gc();
    return true;
  } catch {
    return false;
  }
}
