/**
 * replay against the live comparator: the same frames, sent to the real program and written
 * to capture files by the test, give the same checkpoint requests and the same capture.
 */

import assert from "node:assert/strict";
import { startRig } from "../support/fixture.ts";
import { arp, frame, TCP } from "../support/packets.ts";
import { pcapFile, pcapngFile, type TimedFrame } from "../support/pcap.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

const udp = (payload: string, sport = 53) =>
  frame({ ip: { src: "10.0.0.1", dst: "10.0.0.2" }, udp: { sport, dport: 5353, payload } });
const tcp = (seq: number, payload: string) =>
  frame({
    ip: { src: "10.0.0.1", dst: "10.0.0.3" },
    tcp: { sport: 80, dport: 40000, seq, ack: 7, flags: TCP.ACK | TCP.PSH, payload },
  });
const icmp = (payload: string) =>
  frame({ ip: { src: "10.0.0.1", dst: "10.0.0.4" }, icmp: { type: 0, payload } });

/** One step: frames sent to each side; the step is over once outdev has every primary. */
interface Step {
  primary: Uint8Array[];
  secondary: Uint8Array[];
  /** Nothing reaches outdev: the step is over at the next checkpoint request. */
  awaitRequest?: boolean;
  /**
   * Traffic shape, not synchronisation: the client stays quiet this long after the step. The
   * live expiry scan runs in its own phase, replay's in the capture's, so a timeout may fire
   * up to one scan cycle later in replay; a quiet cycle after it keeps the next frames after
   * both.
   */
  quietMs?: number;
}

const STEPS: Step[] = [
  { primary: [udp("same")], secondary: [udp("same")] },
  { primary: [udp("primary A")], secondary: [udp("secondary B")] },
  { primary: [tcp(1000, "hello")], secondary: [tcp(1000, "hello")] },
  { primary: [tcp(1005, "world")], secondary: [tcp(1005, "wOrld")] },
  { primary: [tcp(1010, "again!")], secondary: [tcp(1010, "again"), tcp(1015, "?")] },
  { primary: [icmp("ping")], secondary: [icmp("ping")] },
  { primary: [arp()], secondary: [arp()] },
  { primary: [udp("no secondary ever", 54)], secondary: [], quietMs: 60 },
  { primary: [udp("after the timeout")], secondary: [udp("after the timeout")] },
  { primary: [], secondary: [udp("no primary ever", 55)], awaitRequest: true },
];

interface Request {
  reason: string;
  conn: string;
}

function requestsFromLog(stderr: string): Request[] {
  const re = /event=checkpoint-request reason=(\S+) conn=("(?:[^"\\]|\\.)*"|\S+)/g;
  return [...stderr.matchAll(re)].map((m) => ({
    reason: m[1],
    conn: m[2].startsWith('"') ? JSON.parse(m[2]) : m[2],
  }));
}

async function tsharkComments(path: string): Promise<string[]> {
  const out = await new Deno.Command("tshark", {
    args: ["-r", path, "-T", "fields", "-e", "frame.interface_name", "-e", "frame.comment"],
    stdout: "piped",
    stderr: "null",
  }).output();
  assert.equal(out.code, 0);
  // The age of a timed-out frame depends on when the scan ran: not part of the comparison.
  return new TextDecoder().decode(out.stdout).trimEnd().split("\n").map((l) =>
    l.replace(/ age_ms=\d+/, "")
  );
}

Deno.test("replay: captures of the frames sent to the live comparator give its checkpoints", async () => {
  const dir = await Deno.makeTempDir();
  const flags = ["--compare-timeout", "200", "--expired-scan-cycle", "50"];
  const rig = await startRig({ flags: [...flags, "--capture", `${dir}/live.pcapng`] });
  const primaryLog: TimedFrame[] = [];
  const secondaryLog: TimedFrame[] = [];
  const clock = () => performance.timeOrigin + performance.now();
  let requests = 0;
  let stopped = false;
  // The COLO controller: every DO_CHECKPOINT is answered at once with COLO_CHECKPOINT.
  const controller = (async () => {
    while (!stopped) {
      try {
        await rig.notify.waitFor(requests + 1, 60_000);
      } catch {
        return;
      }
      requests++;
      if (!stopped) await rig.sendNotify("COLO_CHECKPOINT");
    }
  })();
  let live;
  try {
    let released = 0;
    for (const step of STEPS) {
      const before = requests;
      for (const f of step.primary) {
        primaryLog.push({ timeMs: clock(), data: f });
        await rig.sendPrimary(f);
      }
      for (const f of step.secondary) {
        secondaryLog.push({ timeMs: clock(), data: f });
        await rig.sendSecondary(f);
      }
      released += step.primary.length;
      if (step.awaitRequest) await rig.notify.waitFor(before + 1);
      else await rig.outdev.waitFor(released);
      if (step.quietMs) await new Promise((r) => setTimeout(r, step.quietMs));
    }
  } finally {
    stopped = true;
    live = await rig.close();
    await controller;
  }
  const liveRequests = requestsFromLog(live.stderr);
  assert.deepEqual(
    liveRequests.map((r) => r.reason),
    ["datagram", "tcp-payload", "tcp-payload", "timeout", "timeout"],
    live.stderr,
  );

  try {
    // Primary as classic pcap (as filter-dump writes it), secondary as big-endian pcapng.
    await Deno.writeFile(`${dir}/primary.pcap`, pcapFile(primaryLog));
    await Deno.writeFile(`${dir}/secondary.pcapng`, pcapngFile(secondaryLog, { bigEndian: true }));
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        MAIN,
        "replay",
        "--primary",
        `${dir}/primary.pcap`,
        "--secondary",
        `${dir}/secondary.pcapng`,
        "--json",
        "--capture",
        `${dir}/replay.pcapng`,
        ...flags,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const report = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.deepEqual(
      report.requests.map((r: { reason: string; connection: string }) => ({
        reason: r.reason,
        conn: r.connection,
      })),
      liveRequests,
      JSON.stringify(report, null, 1),
    );
    assert.equal(report.checkpoints.requested, liveRequests.length);
    assert.deepEqual(report.frames, { primary: 9, secondary: 10, truncated: 0 });
    assert.deepEqual(report.released, { compared: 4, passthrough: 1, checkpoint: 4 });
    assert.equal(report.firstDivergences[1].firstDiffSeq, 1006);
    assert.deepEqual(
      await tsharkComments(`${dir}/replay.pcapng`),
      await tsharkComments(`${dir}/live.pcapng`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("replay: a directory as a capture, a capture path that is an input, a full disk under --capture: one line each, and the input left whole", async () => {
  const dir = await Deno.makeTempDir({ prefix: "colo-replay-bad-" });
  try {
    const input = pcapFile([{ timeMs: 0, data: frame({ udp: { payload: "a" } }) }]);
    await Deno.writeFile(`${dir}/p.pcap`, input);
    const run = async (...args: string[]) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", MAIN, "replay", ...args],
        stdout: "piped",
        stderr: "piped",
      }).output();
      return {
        code: out.code,
        stdout: new TextDecoder().decode(out.stdout),
        stderr: new TextDecoder().decode(out.stderr),
      };
    };
    const directory = await run("--primary", dir, "--secondary", `${dir}/p.pcap`);
    assert.equal(directory.code, 2);
    assert.match(
      directory.stderr,
      /^colo-compare: replay: --primary .*: cannot read it \(Is a directory/,
    );
    assert.equal(directory.stderr.trim().split("\n").length, 1, directory.stderr);
    const same = await run(
      "--primary",
      `${dir}/p.pcap`,
      "--secondary",
      `${dir}/p.pcap`,
      "--capture",
      `${dir}/p.pcap`,
    );
    assert.equal(same.code, 2);
    assert.match(same.stderr, /--capture .* is the --primary capture; write it elsewhere/);
    assert.deepEqual(await Deno.readFile(`${dir}/p.pcap`), input);
    const full = await run(
      "--primary",
      `${dir}/p.pcap`,
      "--secondary",
      `${dir}/p.pcap`,
      "--capture",
      "/dev/full",
    );
    assert.equal(full.code, 1);
    assert.match(full.stdout, /frames: primary 1, secondary 1/);
    assert.match(
      full.stderr,
      /^colo-compare: --capture \/dev\/full: cannot write it .*the report is whole/,
    );
    assert.doesNotMatch(full.stderr, /Uncaught|^ +at /m);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
