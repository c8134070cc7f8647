/**
 * A "newc" cpio archive (the initramfs format the Linux kernel unpacks), written in memory.
 * Directories, regular files and character devices are all the guest needs; every entry gets
 * uid 0 and mtime 0, so the same inputs always give the same bytes.
 *
 * @module
 */

/** One archive member; `path` without a leading slash. */
export type CpioEntry =
  | { kind: "dir"; path: string; mode: number }
  | { kind: "file"; path: string; mode: number; data: Uint8Array }
  | { kind: "char"; path: string; mode: number; major: number; minor: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFCHR = 0o020000;
const MAGIC = "070701";
const HEADER_LEN = 110;
const encoder = new TextEncoder();

function hex8(n: number): string {
  return n.toString(16).padStart(8, "0");
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/** The archive as bytes (uncompressed); ends with the `TRAILER!!!` entry. */
export function newcArchive(entries: CpioEntry[]): Uint8Array {
  const parts: Uint8Array[] = [];
  let ino = 1;
  const member = (
    path: string,
    mode: number,
    data: Uint8Array,
    rdev: [number, number] = [0, 0],
  ) => {
    const name = encoder.encode(path + "\0");
    const fields = [
      ino++,
      mode,
      0, // uid
      0, // gid
      mode & S_IFDIR ? 2 : 1, // nlink
      0, // mtime
      data.length,
      0, // devmajor
      0, // devminor
      rdev[0],
      rdev[1],
      name.length,
      0, // check
    ];
    parts.push(encoder.encode(MAGIC + fields.map(hex8).join("")), name);
    parts.push(new Uint8Array(pad4(HEADER_LEN + name.length)));
    parts.push(data, new Uint8Array(pad4(data.length)));
  };
  const none = new Uint8Array(0);
  for (const e of entries) {
    if (e.kind === "dir") member(e.path, S_IFDIR | e.mode, none);
    else if (e.kind === "file") member(e.path, S_IFREG | e.mode, e.data);
    else member(e.path, S_IFCHR | e.mode, none, [e.major, e.minor]);
  }
  member("TRAILER!!!", 0, none);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** gzip-compresses bytes (the kernel takes a gzip initramfs). */
export async function gzip(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new CompressionStream("gzip"),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
