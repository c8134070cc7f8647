/**
 * The lab's guest, built from Debian packages only: the bookworm cloud kernel and
 * busybox-static, fetched with `apt-get download` and unpacked with `dpkg -x` (nothing is
 * installed on the host), and an initramfs with the virtio-net and fw_cfg modules, a static IP
 * and `httpd -p 80` serving a static page, a CGI whose answer names the VM it ran on, and a CGI
 * that serves a few MiB both VMs hold alike (written at boot, so the initramfs stays small).
 *
 * Downloads and builds are cached outside the repository (`$XDG_CACHE_HOME/colo-compare/lab`
 * or `~/.cache/colo-compare/lab`), a build keyed by a hash of everything it was made from.
 *
 * @module
 */

import { type CpioEntry, gzip, newcArchive } from "./cpio.ts";
import { run, runOk } from "./run.ts";
import { cacheRoot, sha256Hex } from "../tests/support/cache.ts";

/** The kernel the lab was verified with; the newest in apt is taken, with a warning, if gone. */
export const KERNEL_PIN = "6.1.0-57";

/**
 * Where the guest reads which VM it runs on: a QEMU fw_cfg file. Its contents come from each
 * QEMU's command line and are read from the device on every access (the kernel keeps only the
 * directory), so a checkpoint, which copies RAM and device state, does not carry it over.
 */
export const ROLE_FW_CFG = "opt/colo/role";

/**
 * The fw_cfg value for a role. Both have the same length on purpose: the guest's driver learned
 * the file's size on the primary at boot and keeps it in RAM, which the secondary inherits.
 */
export function roleValue(role: "primary" | "secondary"): string {
  return role.padEnd(9, " ");
}

/** The guest's address on slirp's default network, and the port httpd listens on. */
export const GUEST_IP = "10.0.2.15";
export const GUEST_HTTP_PORT = 80;
/** The static page, `/`. busybox httpd dates a file's reply (`Date:`, to the second), so the
 * two VMs' replies differ whenever their clocks straddle a second: under load, most of them. */
export const STATIC_BODY = "hello from the COLO guest\n";
/**
 * Paths the story asks for: the same page from a CGI (httpd sends no `Date:` for a CGI, so both
 * VMs answer byte for byte alike), and the CGI whose answer differs on each VM (its role).
 */
export const SAME_PATH = "/cgi-bin/same";
export const ROLE_PATH = "/cgi-bin/role";
/** Printed on the serial console once httpd runs. */
export const READY_MARK = "GUEST-READY";

/**
 * The bulk story's download: `/cgi-bin/bulk?N` answers the first N bytes of a file the guest
 * writes at boot, the decimal numbers 0 to {@linkcode BULK_LAST} one a line (`seq`). A CGI, as
 * SAME_PATH, so that no `Date:` makes the two VMs' replies differ; a file made before COLO
 * starts, so both VMs hold it byte for byte (the secondary starts from the primary's RAM). Lines
 * of numbers, not a repeated pattern: bytes compared at the wrong position differ.
 */
export const BULK_PATH = "/cgi-bin/bulk";
const BULK_LAST = 620_000;
/** What `/cgi-bin/bulk` can serve: the file is a little longer (4,228,897 bytes). */
export const BULK_MAX_BYTES = 4 * 1024 * 1024;

/** The first `size` bytes (at most {@linkcode BULK_MAX_BYTES}) of the guest's bulk file. */
export function bulkBytes(size: number): Uint8Array {
  if (size > BULK_MAX_BYTES) throw new RangeError(`bulk: at most ${BULK_MAX_BYTES} bytes`);
  const out = new Uint8Array(size);
  const enc = new TextEncoder();
  let at = 0;
  for (let n = 0; at < size; n++) at += enc.encodeInto(`${n}\n`, out.subarray(at)).written;
  return out;
}

/** Modules virtio-net and fw_cfg need; their load order changes between kernel builds. */
const MODULES = [
  "drivers/virtio/virtio.ko",
  "drivers/virtio/virtio_ring.ko",
  "drivers/virtio/virtio_pci_legacy_dev.ko",
  "drivers/virtio/virtio_pci_modern_dev.ko",
  "drivers/virtio/virtio_pci.ko",
  "net/core/failover.ko",
  "drivers/net/net_failover.ko",
  "drivers/net/virtio_net.ko",
  "drivers/firmware/qemu_fw_cfg.ko",
];

const moduleNames = MODULES.map((m) => m.slice(m.lastIndexOf("/") + 1, -3));

const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
# load in passes until every module is in: their order of dependence differs between builds
for pass in 1 2 3 4 5; do
  for m in ${moduleNames.join(" ")}; do
    grep -q "^$m " /proc/modules || insmod /lib/modules/$m.ko 2>/dev/null
  done
done
ip link set lo up
ip addr add ${GUEST_IP}/24 dev eth0 || echo GUEST-NO-ETH0
ip link set eth0 up
ip route add default via 10.0.2.2
seq 0 ${BULK_LAST} > /bulk
httpd -p ${GUEST_HTTP_PORT} -h /www
echo "${READY_MARK} role=$(cat /sys/firmware/qemu_fw_cfg/by_name/${ROLE_FW_CFG}/raw)"
while true; do sleep 3600; done
`;

// The role is read from the fw_cfg device at each request, and also written to the VM's own
// serial console, so a run can check that the secondary really answered "secondary".
const ROLE_CGI = `#!/bin/sh
read -r role < /sys/firmware/qemu_fw_cfg/by_name/${ROLE_FW_CFG}/raw
echo "cgi-role $role" > /dev/ttyS0
printf 'Content-Type: text/plain\\r\\n\\r\\nrole %s\\n' "$role"
`;

const SAME_CGI = `#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n%s' "${STATIC_BODY}"
`;

// The first N bytes of /bulk (N from the query string, at most BULK_MAX_BYTES). A length, so
// that the client can tell a cut reply from a whole one.
const BULK_CGI = `#!/bin/sh
n=\${QUERY_STRING:-0}
case $n in ''|*[!0-9]*) n=0 ;; esac
[ "$n" -gt ${BULK_MAX_BYTES} ] && n=${BULK_MAX_BYTES}
printf 'Content-Type: application/octet-stream\\r\\nContent-Length: %s\\r\\n\\r\\n' "$n"
exec head -c "$n" /bulk
`;

/** A built guest. */
export interface Guest {
  kernel: string;
  initramfs: string;
  /** e.g. `6.1.0-57-cloud-amd64` */
  kernelRelease: string;
  /** False when this call built it. */
  cached: boolean;
  /** Something the user should know (a fallback kernel). */
  warning?: string;
}

/** `$XDG_CACHE_HOME/colo-compare/lab`, else `~/.cache/colo-compare/lab`. */
export function cacheDir(): string {
  return `${cacheRoot()}/lab`;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function debIn(dir: string, pkg: string): Promise<string | null> {
  const found: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.name.startsWith(`${pkg}_`) && e.name.endsWith(".deb")) found.push(e.name);
  }
  return found.sort().at(-1) ?? null;
}

/** `apt-get download`, running `apt-get update` once if apt does not know the package. */
async function aptDownload(dir: string, pkg: string): Promise<boolean> {
  if ((await run("apt-get", ["download", pkg], { cwd: dir })).code === 0) return true;
  await run("apt-get", ["update", "-qq"]);
  return (await run("apt-get", ["download", pkg], { cwd: dir })).code === 0;
}

async function newestKernelPackage(): Promise<string | null> {
  const out = await runOk("apt-cache", [
    "search",
    "--names-only",
    "^linux-image-[0-9.-]*-cloud-amd64-unsigned$",
  ]);
  const names = out.split("\n").map((l) => l.split(" ")[0]).filter((n) => n);
  const abi = (n: string) => Number(/^linux-image-\d+\.\d+\.\d+-(\d+)-/.exec(n)?.[1] ?? 0);
  return names.sort((a, b) => abi(a) - abi(b)).at(-1) ?? null;
}

/** The .deb files (in `dl`), downloading what is missing. */
async function fetchPackages(
  dl: string,
): Promise<{ kernel: string; busybox: string; warning?: string }> {
  await Deno.mkdir(dl, { recursive: true });
  let warning: string | undefined;
  let kernelPkg = `linux-image-${KERNEL_PIN}-cloud-amd64-unsigned`;
  let kernel = await debIn(dl, kernelPkg);
  if (kernel === null && !(await aptDownload(dl, kernelPkg))) {
    const newest = await newestKernelPackage();
    if (newest === null || !(await aptDownload(dl, newest))) {
      throw new Error(`apt-get download ${kernelPkg} failed, and apt knows no other cloud kernel`);
    }
    warning = `${kernelPkg} is not in apt any more; using ${newest} (not verified with the lab)`;
    kernelPkg = newest;
  }
  kernel ??= await debIn(dl, kernelPkg);
  let busybox = await debIn(dl, "busybox-static");
  if (busybox === null && (await aptDownload(dl, "busybox-static"))) {
    busybox = await debIn(dl, "busybox-static");
  }
  if (kernel === null || busybox === null) {
    throw new Error("apt-get download busybox-static failed");
  }
  return { kernel, busybox, warning };
}

function sha256(text: string): Promise<string> {
  return sha256Hex(new TextEncoder().encode(text));
}

/** Builds the guest (or finds it in the cache). Throws when apt cannot supply the packages. */
export async function buildGuest(cache = cacheDir()): Promise<Guest> {
  const dl = `${cache}/dl`;
  const debs = await fetchPackages(dl);
  const key = (await sha256(JSON.stringify({
    debs: [debs.kernel, debs.busybox],
    MODULES,
    INIT,
    ROLE_CGI,
    SAME_CGI,
    BULK_CGI,
    STATIC_BODY,
    format: 1,
  }))).slice(0, 16);
  const dir = `${cache}/guest-${key}`;
  const kernel = `${dir}/vmlinuz`;
  const initramfs = `${dir}/initramfs.gz`;
  const releaseFile = `${dir}/release`;
  if (await exists(releaseFile)) {
    const kernelRelease = (await Deno.readTextFile(releaseFile)).trim();
    return { kernel, initramfs, kernelRelease, cached: true, warning: debs.warning };
  }
  const work = await Deno.makeTempDir({ dir: cache, prefix: "build-" });
  try {
    await runOk("dpkg", ["-x", `${dl}/${debs.kernel}`, `${work}/k`]);
    await runOk("dpkg", ["-x", `${dl}/${debs.busybox}`, `${work}/bb`]);
    const kernelRelease = [...Deno.readDirSync(`${work}/k/lib/modules`)][0].name;
    const modDir = `${work}/k/lib/modules/${kernelRelease}/kernel`;
    const enc = new TextEncoder();
    const entries: CpioEntry[] = [
      "bin",
      "sbin",
      "proc",
      "sys",
      "dev",
      "tmp",
      "etc",
      "lib",
      "lib/modules",
      "www",
      "www/cgi-bin",
    ].map((path) => ({ kind: "dir", path, mode: 0o755 }));
    entries.push(
      { kind: "char", path: "dev/console", mode: 0o600, major: 5, minor: 1 },
      { kind: "file", path: "init", mode: 0o755, data: enc.encode(INIT) },
      {
        kind: "file",
        path: "bin/busybox",
        mode: 0o755,
        data: await Deno.readFile(`${work}/bb/bin/busybox`),
      },
      { kind: "file", path: "www/index.html", mode: 0o644, data: enc.encode(STATIC_BODY) },
      { kind: "file", path: "www/cgi-bin/role", mode: 0o755, data: enc.encode(ROLE_CGI) },
      { kind: "file", path: "www/cgi-bin/same", mode: 0o755, data: enc.encode(SAME_CGI) },
      { kind: "file", path: "www/cgi-bin/bulk", mode: 0o755, data: enc.encode(BULK_CGI) },
    );
    for (const m of MODULES) {
      const name = m.slice(m.lastIndexOf("/") + 1);
      entries.push({
        kind: "file",
        path: `lib/modules/${name}`,
        mode: 0o644,
        data: await Deno.readFile(`${modDir}/${m}`),
      });
    }
    const out = `${work}/out`;
    await Deno.mkdir(out);
    await Deno.copyFile(`${work}/k/boot/vmlinuz-${kernelRelease}`, `${out}/vmlinuz`);
    await Deno.writeFile(`${out}/initramfs.gz`, await gzip(newcArchive(entries)));
    await Deno.writeTextFile(`${out}/release`, kernelRelease + "\n");
    // Appears complete or not at all, even when two runs build at once.
    try {
      await Deno.rename(out, dir);
    } catch (error) {
      if (!(await exists(releaseFile))) throw error;
    }
    return { kernel, initramfs, kernelRelease, cached: false, warning: debs.warning };
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}
