/**
 * The cost of a datagram arriving on a connection whose replicas differ (every UDP flow of a
 * QUIC or otherwise encrypted service does, datagram after datagram), in one process and
 * without sockets: `--flows` UDP connections, each sent primary and secondary datagrams of the
 * same length and different bytes, in turn, until both queues are full (`--max-queue-size` + 1,
 * SPEC 5) and a further `--extra` frames per side are dropped; then a checkpoint flushes, and
 * the next round starts. Prints the median CPU time per arriving frame over the rounds, and the
 * frames queued, released and dropped per round. QEMU compares the oldest primary with the
 * whole secondary queue on every arrival (O(queue) each); this program only with secondaries it
 * has not met yet (src/compare/datagram.ts).
 *
 *   deno run -A bench/datagram_scan.ts [--flows 64] [--max-queue-size 1024] [--extra 256]
 *     [--payload 512] [--rounds 7]
 *     [--root DIR]   # the src/ of another checkout, for before/after runs
 *
 * @module
 */

import { cpuUsage } from "node:process";
import { parseArgs } from "node:util";
import type { CompareEngine } from "../src/compare/engine.ts";
import { frame, pseudoRandomBytes } from "../tests/support/packets.ts";

const { values } = parseArgs({
  options: {
    flows: { type: "string", default: "64" },
    "max-queue-size": { type: "string", default: "1024" },
    extra: { type: "string", default: "256" },
    payload: { type: "string", default: "512" },
    rounds: { type: "string", default: "7" },
    root: { type: "string" },
  },
});
const flows = Number(values.flows);
const maxQueueSize = Number(values["max-queue-size"]);
const perSide = maxQueueSize + 1 + Number(values.extra);
const payload = Number(values.payload);
const rounds = Number(values.rounds);
const root = values.root
  ? new URL(`file://${Deno.realPathSync(values.root)}/`)
  : new URL("../", import.meta.url);
const { CompareEngine: Engine } = await import(new URL("src/compare/engine.ts", root).href) as {
  CompareEngine: typeof CompareEngine;
};

/** Datagram `i` of flow `f` on one side: same length on both sides, bytes differ from byte 0. */
function datagram(side: number, f: number, i: number): Uint8Array {
  const body = pseudoRandomBytes(payload, 1 + side * 1_000_003 + f * 7919 + i);
  return frame({
    ip: { src: `10.1.${f >> 8}.${f & 255}`, dst: "10.0.0.2" },
    udp: { sport: 443, dport: 40000, payload: body },
  });
}

const frames = [0, 1].map((side) =>
  Array.from(
    { length: flows },
    (_, f) => Array.from({ length: perSide }, (_, i) => datagram(side, f, i)),
  )
);
const counts = { queued: 0, released: 0, dropped: 0, checkpoints: 0 };
const engine = new Engine({ compareTimeout: 3_600_000, maxQueueSize }, {
  release() {
    counts.released++;
  },
  discard(_side: string, reason: string) {
    if (reason === "queue-full") counts.dropped++;
  },
  checkpoint() {
    counts.checkpoints++;
  },
});

const microsPerFrame: number[] = [];
let now = 0;
for (let r = 0; r < rounds; r++) {
  counts.released = counts.dropped = 0;
  const before = cpuUsage();
  for (let i = 0; i < perSide; i++) {
    for (let f = 0; f < flows; f++) {
      engine.primary(frames[0][f][i], 0, now);
      engine.secondary(frames[1][f][i], 0, now);
    }
    now += 0.01;
  }
  const used = cpuUsage(before);
  counts.queued = engine.heldPrimary + engine.heldSecondary;
  microsPerFrame.push((used.user + used.system) / (2 * perSide * flows));
  engine.checkpoint(now);
}
microsPerFrame.sort((a, b) => a - b);
console.log(JSON.stringify({
  flows,
  maxQueueSize,
  framesPerRound: 2 * perSide * flows,
  queuedPerRound: counts.queued,
  releasedPerRound: counts.released,
  droppedPerRound: counts.dropped,
  microsPerFrame: Math.round(microsPerFrame[rounds >> 1] * 100) / 100,
}));
