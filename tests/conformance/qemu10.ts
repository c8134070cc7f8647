/**
 * `deno task qemu10`: QEMU 10.0.2, the second reference (SPEC 10), unpacked where the suite
 * can run it without installing anything: Debian's bookworm-backports `qemu-system-x86`
 * package, fetched from the Debian archive by its pinned name and SHA-256, unpacked with
 * `dpkg-deb -x` into `~/.cache/colo-compare/qemu-10.0.2/`. Prints the binary's path on stdout
 * (fetching only the first time), so that
 *
 * ```
 * COLO_QEMU=$(deno task -q qemu10) deno task conformance
 * deno task conformance --qemu "$(deno task -q qemu10)"
 * ```
 *
 * run the conformance suite against it, and `COLO_QEMU=... deno task test` every test that
 * runs QEMU (`tests/conformance/impl.ts` `qemuBinary`). It needs the shared libraries Debian's
 * QEMU 7.2 needs (install `qemu-system-x86` first). `COLO_DEBIAN_MIRROR` replaces
 * `https://deb.debian.org/debian` (a local mirror); the checksum is checked all the same.
 *
 * Exit status: 0 with the path printed; 1 with one line on stderr saying what failed.
 *
 * @module
 */

import { cacheRoot, sha256Hex } from "../support/cache.ts";
import { versionLine } from "./impl.ts";

/** The package: Debian's backport of QEMU 10.0.2 (the pool path under the archive's root). */
export const QEMU10 = {
  version: "10.0.2",
  pool: "pool/main/q/qemu/qemu-system-x86_10.0.2+ds-2+deb13u1~bpo12+1_amd64.deb",
  size: 10_176_912,
  sha256: "4a6b1856c8b0d7df4ff8e70249e12c473ccf8d516aadb4ae14d3d938faed0c65",
} as const;

const MIRROR = "https://deb.debian.org/debian";
const FETCH_TIMEOUT_MS = 300_000;

/** Where the package is unpacked: `$XDG_CACHE_HOME` or `~/.cache`, then `colo-compare/`. */
export function cacheDir(env: (name: string) => string | undefined = Deno.env.get): string {
  return `${cacheRoot(env)}/qemu-${QEMU10.version}`;
}

/** The binary inside the unpacked package. */
export function binaryIn(dir: string): string {
  return `${dir}/usr/bin/qemu-system-x86_64`;
}

/** Fetches, checks and unpacks the package into `dir`; returns an error message or null. */
async function install(dir: string, mirror: string): Promise<string | null> {
  const url = `${mirror.replace(/\/$/, "")}/${QEMU10.pool}`;
  let bytes: Uint8Array<ArrayBuffer>;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
    if (!res.ok) {
      await res.body?.cancel();
      return `${url}: HTTP ${res.status}`;
    }
    bytes = new Uint8Array(await res.arrayBuffer());
  } catch (e) {
    return `${url}: ${e instanceof Error ? e.message : e}`;
  }
  const sum = await sha256Hex(bytes);
  if (sum !== QEMU10.sha256) {
    return `${url}: SHA-256 ${sum}, expected ${QEMU10.sha256} (${bytes.length} bytes)`;
  }
  const parent = dir.slice(0, dir.lastIndexOf("/"));
  await Deno.mkdir(parent, { recursive: true });
  const work = await Deno.makeTempDir({ dir: parent, prefix: ".qemu-unpack-" });
  try {
    const deb = `${work}/qemu.deb`;
    await Deno.writeFile(deb, bytes);
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command("dpkg-deb", {
        args: ["-x", deb, `${work}/root`],
        stdout: "null",
        stderr: "piped",
      }).output();
    } catch {
      return "dpkg-deb not found: it unpacks the package (Debian's dpkg)";
    }
    if (!out.success) return `dpkg-deb -x: ${new TextDecoder().decode(out.stderr).trim()}`;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.rename(`${work}/root`, dir);
    return null;
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

/** Makes sure QEMU 10.0.2 is unpacked and runs; returns its path or an error message. */
export async function ensureQemu10(
  dir = cacheDir(),
  mirror = Deno.env.get("COLO_DEBIAN_MIRROR") || MIRROR,
): Promise<{ path: string } | { error: string }> {
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") {
    return { error: `Debian's amd64 package runs on x86_64 Linux, not ${Deno.build.target}` };
  }
  const bin = binaryIn(dir);
  if (await versionLine(bin) === null) {
    const failed = await install(dir, mirror);
    if (failed !== null) return { error: failed };
  }
  const version = await versionLine(bin);
  if (version === null) {
    return {
      error: `${bin} does not run: a shared library missing? (apt-get install qemu-system-x86)`,
    };
  }
  if (!version.includes(`version ${QEMU10.version}`)) {
    return { error: `${bin} says "${version}", not QEMU ${QEMU10.version}` };
  }
  return { path: bin };
}

if (import.meta.main) {
  const r = await ensureQemu10();
  if ("error" in r) {
    console.error(`qemu10: ${r.error}`);
    Deno.exit(1);
  }
  console.log(r.path);
}
