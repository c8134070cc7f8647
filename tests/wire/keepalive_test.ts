/**
 * SPEC 11: a dead peer (no FIN, no RST) frees its endpoint through TCP keepalive. Deno cannot
 * set the probe timing per socket, so the kernel's settings apply; this test sets them in a
 * network namespace of its own (root and `unshare` needed, else it is skipped) and checks the
 * endpoint notices within their sum.
 */

import assert from "node:assert/strict";

const SCRIPT = new URL("../support/dead_peer.ts", import.meta.url).pathname;
const canNamespace = Deno.uid() === 0 &&
  (await new Deno.Command("unshare", { args: ["-n", "true"], stderr: "null" }).output()).success;

Deno.test({
  name: canNamespace
    ? "keepalive: a dead TCP peer frees its endpoint once the kernel's probes go unanswered"
    : "keepalive: SKIPPED (needs root and unshare for a network namespace)",
  ignore: !canNamespace,
  async fn() {
    // 2 s idle, then 3 probes 1 s apart: the peer is given up after about 5 s.
    const out = await new Deno.Command("unshare", {
      args: [
        "-n",
        "sh",
        "-c",
        "ip link set lo up && sysctl -qw net.ipv4.tcp_keepalive_time=2 " +
        "net.ipv4.tcp_keepalive_intvl=1 net.ipv4.tcp_keepalive_probes=3 && " +
        `exec "${Deno.execPath()}" run -A "${SCRIPT}"`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    const r = JSON.parse(text.trim().split("\n").pop()!);
    assert.equal(r.connected, false);
    assert.ok(r.noticedMs >= 4000 && r.noticedMs < 8000, `noticed after ${r.noticedMs} ms`);
  },
});
