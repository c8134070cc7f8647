import assert from "node:assert/strict";
import { UsageError } from "../../src/cli.ts";
import { parseReplayCommand } from "../../src/replay/command.ts";
import { arraySource, type CapturedFrame } from "../../src/replay/pcap.ts";
import { formatReport, replay, type ReplayOptions } from "../../src/replay/replay.ts";
import { frame, TCP } from "../support/packets.ts";

const OPTIONS: ReplayOptions = {
  compareTimeout: 3000,
  expiredScanCycle: 1000,
  maxQueueSize: 1024,
  checkpointDelay: 0,
  divergencesShown: 10,
};

const run = (p: CapturedFrame[], s: CapturedFrame[], o: ReplayOptions) =>
  replay(arraySource(p), arraySource(s), o);
const at = (timeMs: number, data: Uint8Array): CapturedFrame => ({
  timeMs,
  data,
  truncated: false,
});
const udp = (payload: string, sport = 53) => frame({ udp: { sport, payload } });

Deno.test("replay: a lone frame times out at the first scan after compare-timeout in capture time", async () => {
  const r = await run([at(10_000, udp("alone"))], [], OPTIONS);
  assert.deepEqual(r.requests.map((q) => [q.atMs, q.reason]), [[4000, "timeout"]]);
  assert.deepEqual(r.released, { compared: 0, passthrough: 0, checkpoint: 1 });
  assert.deepEqual(r.heldAtEnd, { primary: 0, secondary: 0 });
});

Deno.test("replay: a capture clock that jumps by years costs no scan per second of the jump; what is held still times out on time", async () => {
  const jump = (2 ** 32 - 1) * 1000; // 136 years: 4.3 billion scans of a second each, before
  const started = performance.now();
  const r = await run(
    [at(0, udp("alone")), at(jump, udp("later"))],
    [at(jump + 1, udp("later"))],
    OPTIONS,
  );
  assert.deepEqual(r.requests.map((q) => [q.atMs, q.reason]), [[4000, "timeout"]]);
  assert.deepEqual(r.released, { compared: 1, passthrough: 0, checkpoint: 1 });
  // A damaged timestamp past 2^53 ms, where adding a cycle no longer moves the time (the scan
  // loop never ended): the frames are compared all the same.
  const far = 2 ** 60 * 1000;
  const damaged = await run([at(far, udp("x"))], [at(far, udp("x"))], OPTIONS);
  assert.deepEqual(damaged.released, { compared: 1, passthrough: 0, checkpoint: 0 });
  assert.ok(performance.now() - started < 5000, "the jumps took seconds of scans");
});

Deno.test("replay: with --checkpoint-delay, frames of the epoch wait for the checkpoint", async () => {
  const primary = [at(0, udp("a")), at(10, udp("b")), at(30, udp("c"))];
  const secondary = [at(1, udp("x")), at(11, udp("b")), at(31, udp("c"))];
  const r = await run(primary, secondary, { ...OPTIONS, checkpointDelay: 20 });
  // "a" diverges at 1 ms and "b" queues behind it; the checkpoint completes at 21 ms and
  // flushes both; "c" is compared in the new epoch.
  assert.equal(r.checkpoints.requested, 1);
  assert.deepEqual(r.released, { compared: 1, passthrough: 0, checkpoint: 2 });
  const at0 = await run(primary, secondary, OPTIONS);
  assert.deepEqual(at0.released, { compared: 2, passthrough: 0, checkpoint: 1 });
});

Deno.test("replay: a --checkpoint-delay longer than compare-timeout still completes the checkpoint; a repeated request does not postpone it", async () => {
  // Requested at 4000 ms (the first scan after the timeout), repeated at 7000 ms: the
  // checkpoint completes at 4000 + 5000 ms all the same. Before, each repeat moved the
  // completion on, so it never came, and a capture clock that jumped (here by 10^9 ms at a
  // scan cycle of 1 ms) cost a scan and a logged request per cycle: 23 s and 140 MB.
  const options = { ...OPTIONS, checkpointDelay: 5000 };
  const r = await run([at(0, udp("alone"))], [], options);
  assert.deepEqual(r.requests.map((q) => [q.atMs, q.reason]), [[4000, "timeout"], [
    7000,
    "timeout",
  ]]);
  assert.equal(r.checkpoints.done, 1);
  assert.deepEqual(r.released, { compared: 0, passthrough: 0, checkpoint: 1 });
  assert.deepEqual(r.heldAtEnd, { primary: 0, secondary: 0 });
  const jump = 1e9;
  const started = performance.now();
  const j = await run(
    [at(0, udp("alone")), at(jump, udp("later"))],
    [at(jump + 1, udp("later"))],
    { ...options, expiredScanCycle: 1 },
  );
  assert.equal(j.checkpoints.done, 1);
  assert.ok(j.checkpoints.requested <= 3, `${j.checkpoints.requested} requests`);
  assert.deepEqual(j.released, { compared: 1, passthrough: 0, checkpoint: 1 });
  assert.ok(performance.now() - started < 5000, "the jump took seconds of scans");
});

Deno.test("replay: one request per epoch; further divergences are counted, not requested", async () => {
  const primary = [at(0, udp("a")), at(10, udp("b", 54))];
  const secondary = [at(1, udp("x")), at(11, udp("y", 54))];
  const r = await run(primary, secondary, { ...OPTIONS, checkpointDelay: 100 });
  assert.equal(r.checkpoints.requested, 1);
  assert.deepEqual(r.divergences, { datagram: 2 });
});

Deno.test("replay: the report shows the first differing TCP byte and the bytes from there", async () => {
  const seg = (payload: string) => frame({ tcp: { seq: 100, ack: 1, flags: TCP.ACK, payload } });
  const r = await run([at(0, seg("abcdef"))], [at(1, seg("abcXef"))], OPTIONS);
  const d = r.firstDivergences[0];
  assert.equal(d.firstDiffSeq, 103);
  assert.deepEqual(d.frames.map((f) => f.bytes), ["646566", "586566"]);
  const text = formatReport(r);
  assert.match(text, /^checkpoints: 1 requested/m);
  assert.match(
    text,
    /divergence 1 at \+1\.000 ms: tcp-payload on tcp .*, first differing byte at seq 103/,
  );
});

Deno.test("replay: flags are checked like the comparator's", () => {
  assert.throws(() => parseReplayCommand(["--primary", "p.pcap"]), UsageError);
  assert.throws(
    () => parseReplayCommand(["--primary", "p", "--secondary", "s", "--compare-timeout", "0"]),
    /--compare-timeout: 0 is not allowed/,
  );
  assert.throws(() => parseReplayCommand(["--bogus"]), /unknown flag --bogus/);
  assert.throws(
    () => parseReplayCommand(["--primary", "p", "--secondary", "s", "--primary", "q"]),
    /--primary is given twice \("p" and "q"\); give it once/,
  );
  const c = parseReplayCommand(["--primary", "p", "--secondary", "s", "--checkpoint-delay", "0"]);
  assert.equal(c?.options.checkpointDelay, 0);
  assert.equal(parseReplayCommand(["--help"]), null);
  const shifted = parseReplayCommand(["--primary=p", "--secondary=s", "--secondary-offset=-1500"]);
  assert.equal(shifted?.secondaryOffsetMs, -1500);
  assert.throws(
    () => parseReplayCommand(["--primary=p", "--secondary=s", "--secondary-offset", "soon"]),
    /--secondary-offset: "soon" is not a number/,
  );
  // 400 digits are a number beyond a double: Infinity, on which the scan loop never ended.
  const huge = "9".repeat(400);
  assert.throws(
    () => parseReplayCommand(["--primary=p", "--secondary=s", `--secondary-offset=-${huge}`]),
    /--secondary-offset: "-9{400}" is not a number of milliseconds/,
  );
});
