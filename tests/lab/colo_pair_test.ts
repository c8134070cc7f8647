/**
 * A real QEMU COLO pair (the lab's, `deno task lab`) with this comparator between the VMs and
 * its QMP checkpoint channel: HTTP from the host through the primary, replies that differ
 * between the VMs, checkpoints the comparator asks QEMU for, a failover, and downloads both VMs
 * send alike (their TCP stacks cutting the stream into segments as they please).
 *
 * Skips, saying why, where QEMU or the guest's Debian packages cannot be had.
 */

import assert from "node:assert/strict";
import { buildShim, chooseAccel } from "../../lab/accel.ts";
import { buildGuest, cacheDir, type Guest, ROLE_PATH } from "../../lab/guest.ts";
import { Pair } from "../../lab/pair.ts";
import { have } from "../../lab/run.ts";
import { answered, drive, driveBulk, isHttp } from "../../lab/story.ts";

/** x-checkpoint-delay: 10 minutes, so that QEMU's periodic checkpoints cannot explain any. */
const NO_PERIODIC_CHECKPOINTS_MS = 600_000;

async function prepare(): Promise<{ guest: Guest; preload?: string } | string> {
  if (!(await have("qemu-system-x86_64"))) return "qemu-system-x86_64 is not installed";
  try {
    const guest = await buildGuest();
    const accel = chooseAccel("auto");
    return { guest, preload: accel.accel === "tcg" ? await buildShim(cacheDir()) : undefined };
  } catch (error) {
    return `the lab guest cannot be built here: ${error instanceof Error ? error.message : error}`;
  }
}

const ready = await prepare();
if (typeof ready === "string") console.warn(`tests/lab skipped: ${ready}`);

async function withPair(fn: (pair: Pair) => Promise<void>): Promise<void> {
  if (typeof ready === "string") return;
  const runDir = await Deno.makeTempDir({ prefix: "colo-lab-test-" });
  let pair: Pair | null = null;
  try {
    pair = new Pair({
      mode: "ours",
      accel: chooseAccel("auto").accel,
      guest: ready.guest,
      preload: ready.preload,
      checkpointDelayMs: NO_PERIODIC_CHECKPOINTS_MS,
      runDir,
      comparatorQmp: true,
    });
    await pair.start();
    await fn(pair);
  } finally {
    await pair?.stop();
    await Deno.remove(runDir, { recursive: true });
  }
}

Deno.test({
  name: "lab: every request through a real COLO pair gets the primary's reply, each divergence " +
    "released by a checkpoint the comparator asked QEMU for, nothing held at exit",
  ignore: typeof ready === "string",
  async fn() {
    await withPair(async (pair) => {
      const story = await drive(pair, 100);
      const roles = story.results.filter((r) => r.path === ROLE_PATH).length;
      assert.equal(story.results.length, 100);
      assert.deepEqual(answered(story), { ok: 100, fromPrimary: 100 });
      // The secondary really answered differently: its CGI read "secondary" from its own
      // fw_cfg (a checkpoint may overtake one it had not run yet), never the primary's role.
      assert.ok(story.secondaryRoleReads > roles / 2, `${story.secondaryRoleReads} of ${roles}`);
      assert.equal(pair.roleReads("secondary", "primary"), 0);
      // Each divergent reply needed a checkpoint: QEMU did at least one per role request, and
      // did none that the comparator had not asked for (none periodic in 10 minutes).
      assert.ok(story.done >= roles, `${story.done} checkpoints for ${roles} divergent replies`);
      assert.ok(story.done <= story.requested, `${story.done} done, ${story.requested} requested`);
      const summary = await pair.stop();
      assert.ok(summary, "the comparator printed its exit summary");
      assert.equal(summary.heldPrimary, 0);
      assert.equal(Number(summary.fields.checkpoints_requested), summary.requestLines);
    });
  },
});

Deno.test({
  name: "lab: after the secondary is killed and the primary told (x-colo-lost-heartbeat), " +
    "requests are still answered through the comparator, passed through",
  ignore: typeof ready === "string",
  async fn() {
    await withPair(async (pair) => {
      const story = await drive(pair, 40, { failoverAt: 20 });
      // "request" (x-colo-lost-heartbeat), or "error" when a checkpoint found the secondary gone.
      assert.ok(["request", "error"].includes(story.coloExit!), `COLO_EXIT ${story.coloExit}`);
      const after = story.results.filter((r) => r.afterFailover);
      assert.equal(after.length, 20);
      assert.ok(
        after.every((r) => r.ok && r.fromPrimary),
        JSON.stringify(after.find((r) => !r.ok)),
      );
      assert.equal(pair.secondary?.running, false);
      const summary = await pair.stop();
      assert.ok(summary);
      assert.ok(Number(summary.fields.passed_through) > 0, "frames passed through after COLO_EXIT");
      assert.equal(summary.heldPrimary, 0);
    });
  },
});

Deno.test({
  name: "lab: downloads both VMs send alike come through a real COLO pair byte for byte, and " +
    "the comparator asks for no checkpoint for them",
  ignore: typeof ready === "string",
  async fn() {
    await withPair(async (pair) => {
      const story = await driveBulk(pair, 1024 * 1024, 3);
      for (const d of story.downloads) assert.ok(d.ok, d.error);
      assert.equal(story.downloads.length, 3);
      // Identical output on the HTTP connections needs no checkpoint (SPEC 6: the same bytes at
      // the same sequence positions, however each VM segments them). Other traffic (IPv6
      // neighbour solicitations) may really differ between the VMs.
      const http = story.requests.filter((r) => isHttp(r.conn));
      assert.deepEqual(http, []);
      const summary = await pair.stop();
      assert.ok(summary);
      assert.equal(summary.heldPrimary, 0);
    });
  },
});
