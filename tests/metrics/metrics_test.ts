/**
 * `--metrics`: the exposition passes `promtool check metrics`, and a real Prometheus server
 * scrapes the running program.
 */

import assert from "node:assert/strict";
import { renderMetrics } from "../../src/metrics/exposition.ts";
import { Histogram } from "../../src/metrics/histogram.ts";
import { Stats } from "../../src/stats.ts";
import { startRig } from "../support/fixture.ts";
import { freePort } from "../support/net.ts";
import { frame } from "../support/packets.ts";

async function which(binary: string): Promise<boolean> {
  const out = await new Deno.Command("sh", {
    args: ["-c", `command -v ${binary}`],
    stdout: "null",
    stderr: "null",
  }).output();
  return out.success;
}

/** Runs `promtool check metrics` on `text`; returns its exit code and output. */
async function promtool(text: string): Promise<{ code: number; output: string }> {
  const child = new Deno.Command("promtool", {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const out = await child.output();
  const d = new TextDecoder();
  return { code: out.code, output: d.decode(out.stdout) + d.decode(out.stderr) };
}

/** The value of one sample line, or undefined. */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith(series + " ")) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

const HAVE_PROMTOOL = await which("promtool");
const HAVE_PROMETHEUS = await which("prometheus");

Deno.test("metrics: the exposition has HELP and TYPE for every family and cumulative buckets", () => {
  const stats = new Stats();
  stats.primaryIn = 3;
  stats.drop("secondary", "not-ip");
  stats.need("timeout");
  stats.paused("primary", "outdev-congested", 1500);
  const hold = new Histogram([0.001, 0.01]);
  hold.observe(0.0005);
  hold.observe(0.005);
  hold.observe(5);
  const text = renderMetrics({
    stats,
    heldFrames: { primary: 1, secondary: 2 },
    heldBytes: { primary: 60, secondary: 120 },
    connections: 4,
    paused: { primary: false, secondary: true },
    peers: { "primary-in": true, outdev: false },
    epoch: 7,
    checkpointOutstanding: false,
  }, { holdTime: hold, checkpointRoundTrip: new Histogram() });
  assert.equal(sample(text, 'colo_compare_frames_received_total{side="primary"}'), 3);
  assert.equal(
    sample(text, 'colo_compare_frames_dropped_total{side="secondary",reason="not-ip"}'),
    1,
  );
  assert.equal(sample(text, 'colo_compare_checkpoint_requests_total{reason="timeout"}'), 1);
  assert.equal(sample(text, "colo_compare_checkpoints_total"), 7);
  assert.equal(
    sample(
      text,
      'colo_compare_input_paused_seconds_total{side="primary",reason="outdev-congested"}',
    ),
    1.5,
  );
  assert.equal(sample(text, 'colo_compare_input_paused{side="secondary"}'), 1);
  assert.equal(sample(text, 'colo_compare_peer_connected{endpoint="outdev"}'), 0);
  assert.equal(sample(text, 'colo_compare_hold_time_seconds_bucket{le="0.001"}'), 1);
  assert.equal(sample(text, 'colo_compare_hold_time_seconds_bucket{le="0.01"}'), 2);
  assert.equal(sample(text, 'colo_compare_hold_time_seconds_bucket{le="+Inf"}'), 3);
  assert.equal(sample(text, "colo_compare_hold_time_seconds_count"), 3);
  const families = [...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]);
  const helps = [...text.matchAll(/^# HELP (\S+) /gm)].map((m) => m[1]);
  assert.deepEqual(helps, families);
  assert.ok(families.every((f) => f.startsWith("colo_compare_")));
});

Deno.test({
  name: "metrics: the running program's /metrics passes promtool and a real Prometheus scrapes it",
  ignore: !HAVE_PROMTOOL || !HAVE_PROMETHEUS,
  async fn() {
    const rig = await startRig({ flags: ["--metrics", "tcp-listen:127.0.0.1:0"] });
    const dir = await Deno.makeTempDir();
    let prometheus: Deno.ChildProcess | null = null;
    try {
      const port = rig.program.ports["metrics"];
      assert.ok(port > 0, "the program logs where /metrics listens");
      const udp = (payload: string) => frame({ udp: { payload } });
      await rig.sendPrimary(udp("same"));
      await rig.sendSecondary(udp("same"));
      await rig.sendPrimary(udp("primary"));
      await rig.sendSecondary(udp("secondary"));
      await rig.notify.waitFor(1);
      await rig.sendNotify("COLO_CHECKPOINT");
      await rig.outdev.waitFor(2);
      await rig.program.waitForLine(/event=checkpoint-done/);

      const url = `http://127.0.0.1:${port}/metrics`;
      const response = await fetch(url);
      assert.equal(response.status, 200);
      assert.match(response.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
      const text = await response.text();
      const check = await promtool(text);
      assert.equal(check.code, 0, check.output);
      assert.equal(sample(text, 'colo_compare_frames_received_total{side="primary"}'), 2);
      assert.equal(sample(text, 'colo_compare_frames_released_total{reason="compared"}'), 1);
      assert.equal(sample(text, 'colo_compare_frames_released_total{reason="checkpoint"}'), 1);
      assert.equal(sample(text, 'colo_compare_checkpoint_requests_total{reason="datagram"}'), 1);
      assert.equal(sample(text, "colo_compare_checkpoints_total"), 1);
      assert.equal(sample(text, "colo_compare_hold_time_seconds_count"), 2);
      assert.equal(sample(text, "colo_compare_checkpoint_round_trip_seconds_count"), 1);
      assert.equal(sample(text, 'colo_compare_peer_connected{endpoint="notify-dev"}'), 1);
      assert.equal(
        await fetch(`http://127.0.0.1:${port}/other`).then(async (r) => {
          await r.body?.cancel();
          return r.status;
        }),
        404,
      );

      // A real Prometheus server scrapes it.
      const webPort = freePort();
      await Deno.writeTextFile(
        `${dir}/prometheus.yml`,
        `global:\n  scrape_interval: 200ms\n  scrape_timeout: 150ms\n` +
          `scrape_configs:\n  - job_name: colo\n    static_configs:\n` +
          `      - targets: ["127.0.0.1:${port}"]\n`,
      );
      prometheus = new Deno.Command("prometheus", {
        args: [
          `--config.file=${dir}/prometheus.yml`,
          `--storage.tsdb.path=${dir}/data`,
          `--web.listen-address=127.0.0.1:${webPort}`,
        ],
        stdout: "null",
        stderr: "null",
      }).spawn();
      const query = `http://127.0.0.1:${webPort}/api/v1/query?query=` +
        encodeURIComponent('colo_compare_frames_received_total{side="secondary"}');
      const deadline = Date.now() + 30_000;
      let value: string | undefined;
      while (value === undefined) {
        assert.ok(Date.now() < deadline, "Prometheus did not scrape the counter within 30 s");
        try {
          const r = await fetch(query);
          const body = await r.json();
          value = body?.data?.result?.[0]?.value?.[1];
        } catch {
          // not listening yet
        }
        // Polling an external server that has no event to await.
        if (value === undefined) await new Promise((r) => setTimeout(r, 200));
      }
      assert.equal(value, "2");
      const up = await fetch(
        `http://127.0.0.1:${webPort}/api/v1/query?query=${encodeURIComponent('up{job="colo"}')}`,
      ).then((r) => r.json());
      assert.equal(up.data.result[0].value[1], "1", "the scrape succeeded");
    } finally {
      if (prometheus !== null) {
        prometheus.kill("SIGTERM");
        await prometheus.status;
      }
      await rig.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

if (!HAVE_PROMTOOL || !HAVE_PROMETHEUS) {
  console.warn("metrics_test: promtool or prometheus not installed; the scrape test is skipped");
}
