/**
 * bench/report.ts: a scale run in which the target gave memory back during its steps (a malloc
 * trim), or in its priming, has no figure per idle connection; the checks say so instead of passing on it. The
 * peak-RSS check covers every workload both targets were measured in, the TLS ones too.
 */

import assert from "node:assert/strict";
import type { LoadResult } from "../bench/loadgen.ts";
import { checks, details, type Measurement } from "../bench/report.ts";

const MiB = 2 ** 20;

function scaleRun(anon: number[], rss: number[], primed?: number): LoadResult {
  const at = (i: number) => i * 2000;
  const bytes = (xs: number[]) => Math.round(((xs[xs.length - 1] - xs[0]) * MiB) / 10_000);
  return {
    workload: "scale",
    frameBytes: 1054,
    checkpointRequests: 0,
    notes: [],
    scale: {
      connections: 10_000,
      ...(primed === undefined ? {} : { primed, rssUnprimed: (rss[0] - 1.9) * MiB }),
      rssBefore: rss[0] * MiB,
      rssAfter: rss[rss.length - 1] * MiB,
      bytesPerConnection: bytes(rss),
      marginalBytesPerConnection: bytes(rss),
      steps: rss.map((r, i) => [at(i), r * MiB]),
      anonBytesPerConnection: bytes(anon),
      anonSteps: anon.map((r, i) => [at(i), r * MiB]),
      busyWithoutIdle: 100,
      busyWithIdle: 100,
      ratio: 1,
    },
  } as LoadResult;
}

function scale(...runs: LoadResult[]): Measurement[] {
  return [{
    workload: "scale",
    target: "ours",
    runs,
    peakRss: runs.map(() => 50 * MiB),
    errors: [],
  }];
}

const perConnection = (m: Measurement[]) =>
  checks(m).find((c) => c.name === "scale: idle connection <= 200 B (anonymous memory)")!;

// A trim between the first and second step: anonymous RSS 28.7 -> 24.8 MiB, RSS 53.5 -> 38.1.
const trimmed = scaleRun([28.7, 29.9, 24.8, 23.4, 23.7, 26.1], [
  52.0,
  53.5,
  38.1,
  43.8,
  44.6,
  47.9,
]);
const clean = scaleRun([26.0, 26.5, 26.5, 27.1, 27.2, 28.5], [47.2, 48.6, 48.6, 49.1, 49.3, 49.6]);

Deno.test("bench report: a scale run with memory given back between steps is no measurement per connection", () => {
  const only = perConnection(scale(trimmed));
  assert.equal(only.pass, undefined);
  assert.match(
    only.detail,
    /not measured: memory was given back during the priming or the steps of the run/,
  );
  assert.match(details(scale(trimmed))[0], /memory given back during the steps/);

  const both = perConnection(scale(trimmed, clean));
  assert.equal(both.pass, false); // the clean run's 262 B of anonymous memory
  assert.match(
    both.detail,
    /^262 B\/connection of anonymous memory \(RSS 252 B.*1 run\(s\) left out/,
  );
  assert.doesNotMatch(details(scale(clean))[0], /given back/);
});

Deno.test("bench report: a release in the priming, grown back by the first step, leaves the run out", () => {
  // The steps' readings rise steadily (262 B per connection), but the RSS was seen to fall by
  // 15 MiB between two of them: the executable's pages given back, then mapped again as code ran.
  const regrown = scaleRun([31.1, 31.4, 31.7, 31.9, 32.0, 32.3], [
    56.4,
    57.4,
    57.9,
    58.0,
    58.3,
    58.9,
  ], 2000);
  regrown.scale!.givenBack = 15 * MiB;
  const check = perConnection(scale(regrown));
  assert.equal(check.pass, undefined);
  assert.match(check.detail, /not measured: memory was given back/);
  assert.match(
    details(scale(regrown))[0],
    /memory given back during the steps \(15\.0 MiB at most/,
  );
  // A fall within the readings' noise is no release.
  regrown.scale!.givenBack = 0.3 * MiB;
  assert.equal(perConnection(scale(regrown)).pass, true); // 126 B of anonymous memory
});

Deno.test("bench report: a primed scale run says what it counted from", () => {
  const primed = scaleRun([26.0, 26.1, 26.3, 26.4, 26.6, 26.7], [
    49.0,
    49.1,
    49.4,
    49.6,
    49.9,
    50.1,
  ], 2000);
  assert.match(
    details(scale(primed))[0],
    /^scale\/ours: 10000 idle connections \(after 2000 primed: RSS 47\.1 MiB -> 49\.0 MiB\)/,
  );
  const check = perConnection(scale(primed));
  assert.equal(check.pass, true);
  assert.match(
    check.detail,
    /^73 B\/connection of anonymous memory \(RSS 115 B.*counted after 2000 primed connections/,
  );
});

Deno.test("bench report: the idle-connection target counts the anonymous memory, not the executable's pages mapped back", () => {
  // 250 B per connection of RSS, 113 B of it anonymous: the rest is the executable's code
  // coming back as it runs after a release (the forty-fourth full run).
  const run = scaleRun([32.3, 32.4, 32.5, 32.7, 33.2, 33.38], [
    52.5,
    52.7,
    53.1,
    53.2,
    54.2,
    54.88,
  ]);
  const check = perConnection(scale(run));
  assert.equal(check.pass, true);
  assert.match(check.detail, /^113 B\/connection of anonymous memory \(RSS 250 B/);
  const heavy = scaleRun([32.3, 32.6, 32.9, 33.3, 33.7, 34.3], [
    52.5,
    52.8,
    53.1,
    53.5,
    53.9,
    54.5,
  ]);
  assert.equal(perConnection(scale(heavy)).pass, false);
});

Deno.test("bench report: the TLS workloads' peaks are held to 2x QEMU's as the plain ones are", () => {
  const peak = (workload: string, target: "ours" | "qemu", mib: number): Measurement => ({
    workload,
    target,
    runs: [
      { workload, frameBytes: 1054, checkpointRequests: 0, notes: [] } as unknown as LoadResult,
    ],
    peakRss: [mib * MiB],
    errors: [],
  } as unknown as Measurement);
  const rows = checks([
    peak("tcp-1000-tls", "ours", 66),
    peak("tcp-1000-tls", "qemu", 34),
    peak("tcp-1000x100-tls", "ours", 70),
    peak("tcp-1000x100-tls", "qemu", 34),
  ]);
  const row = (w: string) => rows.find((c) => c.name === `${w}: peak RSS <= 2x QEMU`)!;
  assert.equal(row("tcp-1000-tls").pass, true);
  assert.match(row("tcp-1000-tls").detail, /1\.94x$/);
  assert.equal(row("tcp-1000x100-tls").pass, false);
  assert.equal(rows.find((c) => c.name === "tcp-64-tls: peak RSS <= 2x QEMU"), undefined);
});
