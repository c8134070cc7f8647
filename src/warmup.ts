/**
 * A warm-up before the comparator listens (issue 11, the cold-start row): a throwaway
 * comparator on loopback ports of its own is sent 1,500 matching frame pairs, one pair at a
 * time, over real TCP sockets, and each is read back from its outdev. The hot path (the
 * socket reads and writes, the frame decoder, the engine, the sink, the outdev writer) is then
 * compiled by V8 before the first guest frame arrives, instead of while the first frames wait
 * for it. The code is shared by every comparator of the process: the real one, made after,
 * runs it already optimized. Nothing of the throwaway one is kept: its statistics, tables,
 * sockets and log lines go with it.
 *
 * Bounded: at most `deadlineMs` of traffic; a warm-up that fails or takes longer (no loopback, a
 * `--allow-net` that does not grant it, a local process connecting to its ports first) is given
 * up and reported, never fatal. `--no-warmup` leaves it out. Plain TCP only: with TLS endpoints
 * the decryption path still compiles on the first frames.
 *
 * @module
 */

import type { Config } from "./cli.ts";
import { Comparator } from "./comparator.ts";
import v8 from "node:v8";
import vm from "node:vm";
import { Logger } from "./log.ts";
import { MallocTrimmer } from "./malloc.ts";
import { frame, framed, pseudoRandomBytes, TCP, withVnet } from "./packet/build.ts";
import { boundPort, parseAddress } from "./wire/address.ts";
import { writeAll } from "./wire/transport.ts";

/** Pairs sent by default: what the cold-start row needed (bench/README.md, issue 11). */
export const WARMUP_PAIRS = 1500;

/** The most a warm-up may delay listening (ms); about 0.3 s is what 1,500 pairs take. */
export const WARMUP_DEADLINE_MS = 1000;

/** What a warm-up did, for the start-up log. */
export interface WarmupReport {
  pairs: number;
  ms: number;
  /** Why it stopped early, when it did. */
  error?: string;
  /** Whether its garbage was collected at once (else at the first collection under traffic). */
  collected: boolean;
}

/**
 * The frames sent: TCP segments of a few connections and sizes (the byte stream's path), a
 * UDP datagram and an ICMP echo now and then (the per-packet path), as a guest's output mixes
 * them. `vnet`: with a virtio-net header word and header, as `--vnet-hdr-support` reads.
 */
function* warmupFrames(pairs: number, vnet: boolean): Generator<Uint8Array> {
  const payload = pseudoRandomBytes(1448, 11);
  const seq = [0x10000000, 0x20000000, 0x30000000, 0x40000000];
  for (let i = 0; i < pairs; i++) {
    let f;
    if (i % 16 === 7) {
      f = frame({ udp: { sport: 5353, dport: 5353, payload: payload.subarray(0, 200 + i % 300) } });
    } else if (i % 16 === 15) {
      f = frame({ icmp: { type: 8, id: 1, seq: i, payload: payload.subarray(0, 56) } });
    } else {
      const c = i % seq.length;
      const size = [1000, 64, 1448, 512][(i >> 2) % 4];
      f = frame({
        tcp: {
          sport: 40000 + c,
          dport: 5201,
          seq: seq[c],
          ack: 1,
          flags: TCP.ACK | TCP.PSH,
          payload: payload.subarray(0, size),
        },
      });
      seq[c] = (seq[c] + size) >>> 0;
    }
    yield vnet ? framed(withVnet(f, 12), 12) : framed(f);
  }
}

/**
 * Runs `pairs` matching pairs through a throwaway comparator configured as `config` is
 * (the same vnet framing and bounds), on loopback.
 */
export async function warmUp(
  config: Config,
  pairs = WARMUP_PAIRS,
  deadlineMs = WARMUP_DEADLINE_MS,
): Promise<WarmupReport> {
  const started = performance.now();
  // Never a permission prompt: without loopback granted whole, there is no warm-up.
  const net = Deno.permissions.querySync({ name: "net", host: "127.0.0.1" }).state;
  if (net !== "granted") {
    return { pairs: 0, ms: 0, error: `net permission for 127.0.0.1 is ${net}`, collected: false };
  }
  const loopback = () => parseAddress("tcp-listen:127.0.0.1:0");
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
    },
    new Logger("error", () => {}),
  );
  const conns: Deno.Conn[] = [];
  let done = 0;
  let failure: unknown;
  const abort = new AbortController();
  const report = (error?: unknown) => ({
    pairs: done,
    ms: Math.round(performance.now() - started),
    ...(error === undefined
      ? {}
      : { error: abort.signal.aborted ? `over ${deadlineMs} ms` : String(error) }),
  });
  const deadline = setTimeout(() => {
    abort.abort();
    for (const c of conns) c.close();
  }, deadlineMs);
  try {
    await comparator.start();
    const ports = comparator.addresses();
    const connect = async (name: string) => {
      const conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: boundPort(ports[name]),
        signal: abort.signal,
      });
      conns.push(conn);
      if (abort.signal.aborted) throw new Error("deadline");
      conn.setNoDelay(true);
      return conn;
    };
    const primary = await connect("primary-in");
    const secondary = await connect("secondary-in");
    const outdev = await connect("outdev");
    const buf = new Uint8Array(64 * 1024);
    let sent = 0;
    let received = 0;
    for (const f of warmupFrames(pairs, config.vnetHdrSupport)) {
      await writeAll(primary, f);
      await writeAll(secondary, f);
      sent += f.length;
      while (received < sent) {
        const n = await outdev.read(buf);
        if (n === null) throw new Error("outdev closed");
        received += n;
      }
      done++;
    }
  } catch (error) {
    failure = error;
  } finally {
    clearTimeout(deadline);
    await comparator.stop();
    for (const c of conns) {
      try {
        c.close();
      } catch { /* closed by the deadline */ }
    }
  }
  // What the throwaway comparator left (its blocks, tables, the garbage of its pairs) goes now,
  // not at the first collection under traffic, and malloc gives back what it freed.
  await new Promise((r) => setTimeout(r, 0));
  const collected = collectGarbage();
  await MallocTrimmer.open()?.trimNow();
  return { ...report(failure), collected };
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
