/**
 * KVM or TCG. KVM when `/dev/kvm` can be opened for reading and writing and is a hardware
 * KVM; TCG otherwise, with the lab's LD_PRELOAD work-around for QEMU 7.2's COLO deadlock under
 * TCG (`tcg_shim.c`, compiled with the machine's `cc` into the cache).
 *
 * @module
 */

import type { Accel } from "./pair.ts";
import { run } from "./run.ts";
import { sha256Hex } from "../tests/support/cache.ts";

/** What the lab runs the guests with, and why. */
export interface AccelChoice {
  accel: Accel;
  reason: string;
}

function kvmOpens(): string | null {
  try {
    Deno.openSync("/dev/kvm", { read: true, write: true }).close();
    return null;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

function isPvm(): boolean {
  try {
    Deno.statSync("/sys/module/kvm_pvm");
    return true;
  } catch {
    return false;
  }
}

/**
 * `auto`: KVM when usable. A `/dev/kvm` served by the `kvm_pvm` module (PVM, KVM in software
 * inside a VM without hardware nesting) counts as unusable: on such a machine a stock Debian
 * guest took minutes to boot under it, and faulted on `cmpxchg16b` with `-cpu host`.
 */
export function chooseAccel(requested: "auto" | Accel): AccelChoice {
  if (requested === "tcg") return { accel: "tcg", reason: "--accel tcg" };
  const closed = kvmOpens();
  if (requested === "kvm") {
    if (closed) {
      throw new Error(`--accel kvm: /dev/kvm cannot be opened (${closed}); use --accel tcg`);
    }
    return { accel: "kvm", reason: "--accel kvm" };
  }
  if (closed) return { accel: "tcg", reason: `/dev/kvm not usable (${closed})` };
  if (isPvm()) {
    return {
      accel: "tcg",
      reason:
        "/dev/kvm is PVM (kvm_pvm: software nested KVM, far slower than TCG for this guest); " +
        "--accel kvm forces it",
    };
  }
  return { accel: "kvm", reason: "/dev/kvm usable" };
}

/** Compiles `tcg_shim.c` into `cache` (once per source text); returns the library's path. */
export async function buildShim(cache: string): Promise<string> {
  const source = new URL("./tcg_shim.c", import.meta.url).pathname;
  const text = await Deno.readFile(source);
  const key = (await sha256Hex(text)).slice(0, 16);
  const lib = `${cache}/tcg-shim-${key}.so`;
  try {
    await Deno.stat(lib);
    return lib;
  } catch {
    // not built yet
  }
  await Deno.mkdir(cache, { recursive: true });
  const tmp = `${lib}.${Deno.pid}.tmp`;
  const r = await run("cc", ["-O2", "-shared", "-fPIC", "-o", tmp, source, "-ldl"]);
  if (r.code !== 0) throw new Error(`cc could not build the TCG work-around: ${r.stderr.trim()}`);
  await Deno.rename(tmp, lib);
  return lib;
}
