import assert from "node:assert/strict";
import { runDemo } from "../../src/demo/demo.ts";
import { conversations, divergentConversation, Guests, Rng } from "../../src/demo/traffic.ts";
import { frameKey, judge, type Observed } from "../../src/demo/verdict.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

Deno.test("demo: a short run over real sockets passes and prints the summary", async () => {
  const lines: string[] = [];
  const code = await runDemo({
    logLevel: "error",
    before: 30,
    after: 10,
    progress: false,
    print: (l) => lines.push(l),
  });
  const text = lines.join("\n");
  assert.equal(code, 0, text);
  assert.match(text, /frames released +(\d+) of \1: \d+ after comparison, 1 by the checkpoint/);
  assert.match(text, /checkpoints +1 requested \(datagram: udp 10\.0\.0\.10:123 > /);
  assert.match(text, /added latency +median \d+\.\d+ ms, p99 \d+\.\d+ ms/);
  // The replay of the same frames from captures finds the live run's one checkpoint.
  const live = /checkpoints +(\d+) requested/.exec(text)![1];
  const replay =
    /replay +\d+ primary \/ \d+ secondary frames over \d+\.\d s of capture time: (\d+) checkpoints? requested \(\d+\.\d\d\/s\); by reason: 1 datagram; by connection: 1 udp 10\.0\.0\.10:123 > /
      .exec(text);
  assert.equal(replay?.[1], live, text);
  assert.match(
    text,
    /captures +deleted; keep them with colo-compare demo --keep-captures DIR, then: colo-compare replay --primary DIR\/primary.pcapng /,
  );
  assert.match(text, /result +PASS/);
});

const run = (args: string[]) =>
  new Deno.Command(Deno.execPath(), { args: ["run", "-A", MAIN, ...args], stdout: "piped" })
    .output();

Deno.test("demo: `colo-compare demo --keep-captures` exits 0 and its replay command gives the same checkpoints", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const out = await run(["demo", "--keep-captures", `${dir}/caps`]);
    const stdout = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, stdout);
    assert.match(stdout, /result +PASS/);
    assert.ok(!stdout.includes("\x1b["), "no progress line when stdout is not a terminal");
    const command = new RegExp(`captures +kept in ${dir}/caps: colo-compare replay (.*)`)
      .exec(stdout);
    assert.ok(command, stdout);
    const replayed = await run(["replay", ...command[1].split(" ")]);
    const report = new TextDecoder().decode(replayed.stdout);
    assert.equal(replayed.code, 0, report);
    assert.match(report, /^checkpoints: 1 requested \(\d+\.\d+\/s\), 1 done$/m);
    assert.match(report, /by reason:\n +1\tdatagram\n/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("demo: the simulated secondary really segments TCP differently", () => {
  const list = conversations(1, 40, new Rng(5), new Guests());
  const tcp = list.filter((c) => c.kind === "tcp");
  assert.ok(tcp.length > 5);
  assert.ok(tcp.some((c) => c.primary.length !== c.secondary.length));
  for (const c of tcp) {
    const bytes = (side: "primary" | "secondary") => c[side].reduce((n, f) => n + (f.len ?? 0), 0);
    assert.equal(bytes("primary"), bytes("secondary"), "the same stream on both sides");
  }
});

function observed(): Observed {
  const ids = new Guests();
  const rng = new Rng(9);
  const list = conversations(1, 12, rng, ids);
  const divergent = divergentConversation(13, rng, ids);
  const all = [...list, divergent];
  return {
    conversations: all,
    divergent,
    received: all.flatMap((c) => c.primary.map((p) => frameKey(p.bytes))),
    initReply: "COLO_COMPARE_GET_XEN_INIT",
    doCheckpoints: 1,
    checkpointRequests: [`event=checkpoint-request reason=datagram conn="${divergent.label}"`],
    releasedByCheckpoint: 1,
    dropped: 0,
    heldAtEnd: 0,
    replayCheckpoints: 1,
  };
}

Deno.test("demo: the verdict accepts exactly what a correct comparator produces", () => {
  assert.deepEqual(judge(observed()), []);
});

Deno.test("demo: the verdict catches loss, duplicates, reordering and wrong checkpoints", () => {
  const cases: [string, (o: Observed) => void, RegExp][] = [
    ["loss", (o) => o.received.splice(3, 1), /1 primary frames never reached outdev/],
    ["duplicate", (o) => o.received.push(o.received[0]), /more than once/],
    ["stranger", (o) => o.received.push("xyz"), /never sent by the primary/],
    ["reorder", (o) => {
      const tcp = o.conversations.find((c) => c.primary.length > 2)!;
      const a = o.received.indexOf(frameKey(tcp.primary[0].bytes));
      const b = o.received.indexOf(frameKey(tcp.primary[1].bytes));
      [o.received[a], o.received[b]] = [o.received[b], o.received[a]];
    }, /1 conversations were reordered/],
    ["storm", (o) => o.doCheckpoints = 3, /got 3 DO_CHECKPOINT/],
    [
      "wrong connection",
      (o) => o.checkpointRequests = ['conn="tcp 1.2.3.4:1 > 5.6.7.8:9"'],
      /expected one, for udp/,
    ],
    ["init", (o) => o.initReply = "", /handshake/],
    ["held", (o) => o.heldAtEnd = 2, /still held/],
    ["dropped", (o) => o.dropped = 1, /dropped/],
    [
      "replay",
      (o) => o.replayCheckpoints = 0,
      /replay of the captures requested 0 checkpoints, the live run 1/,
    ],
  ];
  for (const [name, spoil, re] of cases) {
    const o = observed();
    spoil(o);
    const problems = judge(o);
    assert.ok(problems.some((p) => re.test(p)), `${name}: ${problems.join("; ")}`);
  }
});
