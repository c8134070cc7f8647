/**
 * `deno task qemu10` (the second reference QEMU): where it unpacks, what it accepts from the
 * archive, and that an unpacked copy is used as it is. Offline: a local HTTP server plays the
 * mirror, and fake binaries play an unpacked QEMU.
 */

import assert from "node:assert/strict";
import { sha256Hex } from "../support/cache.ts";
import { binaryIn, cacheDir, ensureQemu10, QEMU10 } from "./qemu10.ts";

const x86Linux = Deno.build.os === "linux" && Deno.build.arch === "x86_64";

/** A mirror on loopback that answers every request with `body`; counts the requests. */
function mirror(body: Uint8Array<ArrayBuffer>) {
  const seen: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    seen.push(new URL(req.url).pathname);
    return new Response(body);
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/debian`,
    seen,
    close: () => server.shutdown(),
  };
}

/** A fake unpacked QEMU in `dir` whose `--version` prints `line`. */
async function fakeQemu(dir: string, line: string): Promise<void> {
  const bin = binaryIn(dir);
  await Deno.mkdir(bin.slice(0, bin.lastIndexOf("/")), { recursive: true });
  await Deno.writeTextFile(bin, `#!/bin/sh\necho '${line}'\n`);
  await Deno.chmod(bin, 0o755);
}

Deno.test("qemu10: unpacks under XDG_CACHE_HOME, else ~/.cache", () => {
  const env = (vars: Record<string, string>) => (name: string) => vars[name];
  assert.equal(
    cacheDir(env({ XDG_CACHE_HOME: "/c", HOME: "/h" })),
    `/c/colo-compare/qemu-${QEMU10.version}`,
  );
  assert.equal(cacheDir(env({ HOME: "/h" })), `/h/.cache/colo-compare/qemu-${QEMU10.version}`);
});

Deno.test("cache: SHA-256 as lowercase hex", async () => {
  assert.equal(
    await sha256Hex(new TextEncoder().encode("abc")),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
});

Deno.test({
  name: "qemu10: a package whose checksum differs is refused and leaves nothing unpacked",
  ignore: !x86Linux,
  async fn() {
    const dir = await Deno.makeTempDir();
    const m = mirror(new TextEncoder().encode("not a package"));
    try {
      const r = await ensureQemu10(`${dir}/qemu`, m.url);
      assert.ok("error" in r);
      assert.match(r.error, /SHA-256 [0-9a-f]{64}, expected 4a6b1856/);
      assert.deepEqual(m.seen, [`/debian/${QEMU10.pool}`]);
      assert.deepEqual(Array.from(Deno.readDirSync(dir)), []);
    } finally {
      await m.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "qemu10: an unpacked QEMU 10.0.2 is used without fetching; another version is not",
  ignore: !x86Linux,
  async fn() {
    const dir = await Deno.makeTempDir();
    const m = mirror(new Uint8Array(0));
    try {
      await fakeQemu(`${dir}/ok`, "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)");
      assert.deepEqual(await ensureQemu10(`${dir}/ok`, m.url), { path: binaryIn(`${dir}/ok`) });
      assert.deepEqual(m.seen, []);

      // A copy that runs but is another QEMU is not replaced behind the user's back.
      await fakeQemu(`${dir}/old`, "QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7)");
      const r = await ensureQemu10(`${dir}/old`, m.url);
      assert.ok("error" in r);
      assert.match(r.error, /not QEMU 10\.0\.2/);
      assert.deepEqual(m.seen, []);
    } finally {
      await m.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
