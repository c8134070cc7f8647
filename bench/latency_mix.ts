/**
 * The latency workload of several targets side by side: all are started at once and served
 * one tcp-1000 pair at a time, in turn (pair i of every target, then pair i + 1), so each
 * target's pairs meet the same machine at the same moments. On two cores shared with other
 * jobs, `deno task bench --only latency` measures each target minutes apart, and its tail
 * rows then compare the machine's load more than the comparators (bench/README.md, issue 11,
 * "The latency tail").
 *
 * ```
 * deno run -A bench/latency_mix.ts                      # ours (bench command) and QEMU
 * deno run -A bench/latency_mix.ts --targets qemu,forwarder --repeat 3 \
 *   --ours "main=deno run -A --v8-flags=... /path/main/main.ts" --ours "new=deno run -A ..."
 * deno run -A bench/latency_mix.ts --pin 0:1   # generator on CPU 0, every target on CPU 1
 * deno run -A bench/latency_mix.ts --dump DIR   # also DIR/LABEL.txt: every pair's us, in order
 * deno run -A bench/latency_mix.ts --ours none --targets qemu --repeat 4  # QEMU alone
 * ```
 *
 * Where the scheduler runs each target decides much of its p50 on an otherwise idle virtual
 * machine: a target woken on the generator's CPU answers in ~30 µs, one woken on the other,
 * halted, CPU in ~80 µs (bench/README.md, "Where a target runs"). `--pin G:T` (`taskset` CPU
 * lists) puts the generator on G and all threads of every target on T after they start, so
 * every target pays the same wake-ups.
 *
 * Each pair is timed as in the latency workload: from the return of the secondary write until
 * the frame is read from outdev; the first `--cold` pairs after start are the cold row.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  connect,
  type Latency,
  latencyOf,
  type Peers,
  probe,
  warmGenerator,
  writeAll,
} from "./loadgen.ts";
import { defaultOursCommand, type Running, start } from "./targets.ts";
import { buildPattern, SHAPES } from "./workloads.ts";

/** One target under test and its peers. */
interface Side {
  label: string;
  running: Running;
  peers: Peers;
  lat: Float64Array;
}

/** Sets the CPUs (a `taskset` list) of every thread of process `pid`. */
async function pin(pid: number, cpus: string): Promise<void> {
  const out = await new Deno.Command("taskset", {
    args: ["--all-tasks", "--cpu-list", "--pid", cpus, String(pid)],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`taskset ${cpus} ${pid}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}

/**
 * Sends `total` pairs, pair i to every side in turn, timing each into the side's `lat`.
 * `done`: the pairs every side served before.
 */
async function roundRobin(
  sides: Pick<Side, "label" | "peers" | "lat">[],
  total: number,
  done = 0,
): Promise<void> {
  const pattern = buildPattern(SHAPES.latency, total);
  const wire = pattern.bytes.length / pattern.frames;
  for (let i = 0; i < total; i++) {
    const f = pattern.bytes.subarray(pattern.frameOffsets[i], pattern.frameOffsets[i] + wire);
    for (let k = 0; k < sides.length; k++) {
      // Who goes first rotates, so no target always follows the same one.
      const s = sides[(i + k) % sides.length];
      await writeAll(s.peers.primary, f);
      await writeAll(s.peers.secondary, f);
      const t0 = performance.now();
      await s.peers.counter.until(done + i + 1);
      if (s.peers.counter.closed) throw new Error(`${s.label}: outdev closed`);
      s.lat[i] = (performance.now() - t0) * 1000;
    }
  }
}

/**
 * Starts every target, pins them and the generator when `cpus` says where, then runs
 * `cold + warmup + pairs` pairs round-robin.
 */
async function mix(
  specs: { label: string; start: () => Promise<Running> }[],
  cold: number,
  warmup: number,
  pairs: number,
  cpus: { generator: string; targets: string } | null,
  dump?: string,
): Promise<{ label: string; latency: Latency; over1ms: number }[]> {
  const total = cold + warmup + pairs;
  // The generator's own loop compiled first (bench/loadgen.ts): each target's cold row is then
  // its own cold start.
  await warmGenerator((peers, n, done) =>
    roundRobin([{ label: "generator", peers, lat: new Float64Array(n) }], n, done)
  );
  const sides: Side[] = [];
  try {
    for (const s of specs) {
      const running = await s.start();
      sides.push({
        label: s.label,
        running,
        peers: await connect(running),
        lat: new Float64Array(total),
      });
    }
    if (cpus !== null) {
      await pin(Deno.pid, cpus.generator);
      for (const s of sides) await pin(s.running.pid, cpus.targets);
    }
    for (const s of sides) await probe(s.peers);
    await roundRobin(sides, total);
    if (dump !== undefined) {
      Deno.mkdirSync(dump, { recursive: true });
      for (const s of sides) {
        Deno.writeTextFileSync(`${dump}/${s.label}.txt`, Array.from(s.lat).join("\n") + "\n");
      }
    }
    return sides.map((s) => {
      const warm = Array.from(s.lat.subarray(cold + warmup));
      return {
        label: s.label,
        latency: latencyOf(warm, Array.from(s.lat.subarray(0, cold))),
        over1ms: warm.filter((x) => x > 1000).length,
      };
    });
  } finally {
    for (const s of sides) await s.peers.close();
    await Promise.all(sides.map((s) => s.running.stop()));
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      targets: { type: "string", default: "qemu" },
      ours: { type: "string", multiple: true },
      pairs: { type: "string", default: "20000" },
      warmup: { type: "string", default: "500" },
      cold: { type: "string", default: "2000" },
      repeat: { type: "string", default: "1" },
      pin: { type: "string" },
      dump: { type: "string" },
    },
  });
  const [generator, targets] = values.pin?.split(":") ?? [];
  if (values.pin !== undefined && (!generator || !targets)) {
    console.error("latency_mix: --pin takes GENERATOR_CPUS:TARGET_CPUS, e.g. --pin 0:1");
    Deno.exit(2);
  }
  const cpus = values.pin === undefined ? null : { generator, targets };
  // `--ours none`: only the --targets (QEMU's cold row with a warm generator, for one).
  const ours = (values.ours ?? [`ours=${defaultOursCommand().join(" ")}`])
    .filter((o) => o !== "none");
  const specs = [
    ...ours.map((o) => {
      const eq = o.indexOf("=");
      const cmd = o.slice(eq + 1).split(/\s+/).filter(Boolean);
      return { label: o.slice(0, eq), start: () => start("ours", { oursCommand: cmd }) };
    }),
    ...values.targets.split(",").filter(Boolean).map((t) => ({
      label: t,
      start: () => start(t as "qemu" | "forwarder", { oursCommand: [] }),
    })),
  ];
  const us = (x: number) => `${Math.round(x)} µs`;
  for (let r = 0; r < Number(values.repeat); r++) {
    const rows = await mix(
      specs,
      Number(values.cold),
      Number(values.warmup),
      Number(values.pairs),
      cpus,
      values.dump,
    );
    for (const { label, latency: l, over1ms } of rows) {
      console.log(
        `${label.padEnd(10)} warm p50 ${us(l.p50)} p99 ${us(l.p99)} p99.9 ${us(l.p999)} worst ` +
          `${us(l.max)}, ${over1ms} pairs over 1 ms; cold p99 ${us(l.coldP99)} worst ${
            us(l.coldMax)
          }`,
      );
    }
    console.log(`load average ${Deno.readTextFileSync("/proc/loadavg").split(" ")[0]}`);
  }
}
