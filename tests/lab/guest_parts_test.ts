/**
 * The lab's small pure parts: the newc archive the guest boots from, the percentile, the
 * logfmt reading of the comparator's exit summary and checkpoint requests, and the bulk file.
 */

import assert from "node:assert/strict";
import { newcArchive } from "../../lab/cpio.ts";
import { BULK_MAX_BYTES, bulkBytes } from "../../lab/guest.ts";
import { percentile } from "../../lab/http.ts";
import { checkpointRequestsIn, logfmt } from "../../lab/pair.ts";
import { have } from "../../lab/run.ts";
import { byReason, firstDifference, isHttp } from "../../lab/story.ts";

const enc = new TextEncoder();

function sample(): Uint8Array {
  return newcArchive([
    { kind: "dir", path: "bin", mode: 0o755 },
    { kind: "char", path: "dev/console", mode: 0o600, major: 5, minor: 1 },
    { kind: "file", path: "init", mode: 0o755, data: enc.encode("#!/bin/sh\necho hi\n") },
    { kind: "file", path: "bin/odd", mode: 0o644, data: enc.encode("12345") },
  ]);
}

/** Reads a newc archive back: name, mode, size, rdev of each member, checking the alignment. */
function members(a: Uint8Array): { name: string; mode: number; data: string; rdev: string }[] {
  const dec = new TextDecoder();
  const out = [];
  let o = 0;
  for (;;) {
    assert.equal(o % 4, 0, "each header starts 4-byte aligned");
    const h = dec.decode(a.subarray(o, o + 110));
    assert.equal(h.slice(0, 6), "070701");
    const field = (i: number) => parseInt(h.slice(6 + i * 8, 14 + i * 8), 16);
    const nameLen = field(11);
    const size = field(6);
    const name = dec.decode(a.subarray(o + 110, o + 110 + nameLen - 1));
    assert.equal(a[o + 110 + nameLen - 1], 0, "names end in NUL");
    let d = o + 110 + nameLen;
    d += (4 - (d % 4)) % 4;
    if (name === "TRAILER!!!") return out;
    out.push({
      name,
      mode: field(1),
      data: dec.decode(a.subarray(d, d + size)),
      rdev: `${field(9)}:${field(10)}`,
    });
    o = d + size + ((4 - (size % 4)) % 4);
  }
}

Deno.test("cpio: newcArchive() writes each member with its mode, data and device, then the trailer", () => {
  assert.deepEqual(members(sample()), [
    { name: "bin", mode: 0o040755, data: "", rdev: "0:0" },
    { name: "dev/console", mode: 0o020600, data: "", rdev: "5:1" },
    { name: "init", mode: 0o100755, data: "#!/bin/sh\necho hi\n", rdev: "0:0" },
    { name: "bin/odd", mode: 0o100644, data: "12345", rdev: "0:0" },
  ]);
});

Deno.test("cpio: the system's cpio lists newcArchive()'s members (where cpio is installed)", async () => {
  if (!(await have("cpio"))) {
    console.warn("cpio not installed: skipped the cross-check");
    return;
  }
  const child = new Deno.Command("cpio", {
    args: ["-it", "--quiet"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  })
    .spawn();
  const w = child.stdin.getWriter();
  await w.write(sample());
  await w.close();
  const out = await child.output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.deepEqual(new TextDecoder().decode(out.stdout).trim().split("\n"), [
    "bin",
    "dev/console",
    "init",
    "bin/odd",
  ]);
});

Deno.test("lab: percentile() is the nearest rank", () => {
  const v = [5, 1, 4, 2, 3, 6, 7, 8, 9, 10];
  assert.equal(percentile(v, 50), 5);
  assert.equal(percentile(v, 99), 10);
  assert.equal(percentile([42], 1), 42);
  assert.ok(Number.isNaN(percentile([], 50)));
});

Deno.test("lab: logfmt() reads the comparator's summary keys, dashes and quoted values included", () => {
  const f = logfmt(
    'ts=2026-12-01T20:43:54Z level=info event=summary dropped_secondary_not-ip=6 note="never compared; not sent" held=-',
  );
  assert.equal(f.event, "summary");
  assert.equal(f["dropped_secondary_not-ip"], "6");
  assert.equal(f.note, "never compared; not sent");
  assert.equal(f.held, "-");
});

Deno.test("lab: bulkBytes() is the start of `seq 0 N`, the guest's bulk file, cut anywhere", async () => {
  const whole = bulkBytes(BULK_MAX_BYTES);
  assert.equal(whole.length, BULK_MAX_BYTES);
  assert.deepEqual(bulkBytes(5), enc.encode("0\n1\n2"));
  assert.deepEqual(bulkBytes(12_345), whole.subarray(0, 12_345));
  assert.throws(() => bulkBytes(BULK_MAX_BYTES + 1), RangeError);
  if (!(await have("seq"))) {
    console.warn("seq not installed: skipped the cross-check");
    return;
  }
  const out = await new Deno.Command("seq", { args: ["0", "620000"], stdout: "piped" }).output();
  assert.ok(out.stdout.length >= BULK_MAX_BYTES);
  assert.ok(firstDifference(whole, out.stdout.subarray(0, BULK_MAX_BYTES)) === -1);
});

Deno.test("lab: firstDifference() names the first wrong byte, or where the shorter one ends", () => {
  const a = enc.encode("0\n1\n2\n3\n");
  assert.equal(firstDifference(a, enc.encode("0\n1\n2\n3\n")), -1);
  assert.equal(firstDifference(enc.encode("0\n1\n9\n3\n"), a), 4);
  assert.equal(firstDifference(enc.encode("0\n1\n"), a), 4);
  assert.equal(firstDifference(a, enc.encode("0\n")), 2);
});

Deno.test("lab: checkpointRequestsIn() counts request lines with their reason, a count on one too, and no summary or undelivered line", () => {
  const conn = '"tcp 10.0.2.15:80 > 10.0.2.2:40000"';
  const lines = [
    `ts=1 level=info event=checkpoint-request reason=tcp-payload conn=${conn} channel=qmp`,
    `ts=2 level=debug event=checkpoint-request reason=timeout conn=${conn} channel=qmp`,
    'ts=3 level=info event=checkpoint-request suppressed=7 note="counted, not logged: at most 50 per 10s"',
    `ts=4 level=info event=checkpoint-request reason=datagram conn="icmpv6 fe80::1 > ff02::1" channel=qmp suppressed=2`,
    `ts=5 level=warn event=checkpoint-request-undelivered reason=timeout conn=${conn} note="qmp has no peer"`,
    `ts=6 level=info event=checkpoint-done epoch=3`,
  ];
  const requests = checkpointRequestsIn(lines);
  assert.deepEqual(requests.map((r) => r.reason), ["tcp-payload", "timeout", "datagram"]);
  assert.deepEqual(byReason(requests), {
    "tcp-payload": 1,
    timeout: 1,
    "datagram (icmpv6 fe80::1 > ff02::1)": 1,
  });
  assert.ok(isHttp("tcp 10.0.2.15:80 > 10.0.2.2:40000"));
  assert.ok(!isHttp("tcp 10.0.2.2:40000 > 10.0.2.15:80"));
});
