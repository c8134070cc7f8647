import assert from "node:assert/strict";
import { ExecutablePages, readOnlyMappings } from "../src/exec_pages.ts";
import { readMemory } from "../bench/proc.ts";
import { startProgram } from "./support/program.ts";

const EXE = "/opt/deno/deno";

/** One mapping of a smaps text, with its anonymous kilobytes. */
function mapping(range: string, perms: string, path: string, anonymousKb = 0): string {
  return [
    `${range} ${perms} 00000000 fe:00 1442214                    ${path}`,
    "Size:               1024 kB",
    "Rss:                 512 kB",
    `Anonymous:          ${anonymousKb} kB`,
    "VmFlags: rd mr mw me",
  ].join("\n");
}

Deno.test("executable pages: only the executable's private mappings it cannot have written", () => {
  const smaps = [
    mapping("55a9a45ff000-55a9a618d000", "r--p", EXE),
    mapping("55a9a6403000-55a9aa0f7000", "r-xp", EXE),
    mapping("55a9aa0f7000-55a9aa369000", "rw-p", EXE, 8), // .data: written
    mapping("55a9aa379000-55a9aa37a000", "r--p", EXE, 4), // relocated, then made read-only
    mapping("7f6a2bdc0000-7f6a2bfe6000", "r-xp", EXE),
    mapping("7f6a30000000-7f6a30001000", "r--s", EXE), // shared: not ours to drop
    mapping("7f6a31000000-7f6a31100000", "r-xp", "/usr/lib/x86_64-linux-gnu/libc.so.6"),
    mapping("7f6a32000000-7f6a32100000", "r-xp", `${EXE} (deleted)`),
    mapping("7f6a33000000-7f6a33100000", "rw-p", ""), // anonymous
    mapping("7ffd5a000000-7ffd5a002000", "r-xp", "[vdso]"),
  ].join("\n");
  assert.deepEqual(readOnlyMappings(smaps, EXE), [
    { start: 0x55a9a45ff000n, length: 0x55a9a618d000 - 0x55a9a45ff000 },
    { start: 0x55a9a6403000n, length: 0x55a9aa0f7000 - 0x55a9a6403000 },
    { start: 0x7f6a2bdc0000n, length: 0x7f6a2bfe6000 - 0x7f6a2bdc0000 },
  ]);
  assert.deepEqual(readOnlyMappings("", EXE), []);
});

Deno.test("executable pages: the mappings are read again at each release", () => {
  const advised: [bigint, bigint, number][] = [];
  let written = 0;
  const smaps = () =>
    [
      mapping("55a9a45ff000-55a9a4600000", "r--p", EXE),
      mapping("55a9a6403000-55a9a6405000", "r-xp", EXE, written),
    ].join("\n");
  const pages = new ExecutablePages(smaps, EXE, (at, length, advice) => {
    advised.push([at, length, advice]);
    return 0;
  });
  assert.deepEqual(pages.release(), { bytes: 0x3000, refused: 0 });
  written = 4; // a breakpoint since: that mapping stays
  assert.deepEqual(pages.release(), { bytes: 0x1000, refused: 0 });
  const MADV_DONTNEED = 4;
  assert.deepEqual(advised, [
    [0x55a9a45ff000n, 0x1000n, MADV_DONTNEED],
    [0x55a9a6403000n, 0x2000n, MADV_DONTNEED],
    [0x55a9a45ff000n, 0x1000n, MADV_DONTNEED],
  ]);
  assert.equal(pages.releases, 2);
  const refusing = new ExecutablePages(smaps, EXE, () => -1);
  assert.deepEqual(refusing.release(), { bytes: 0x1000, refused: 1 });
});

Deno.test("executable pages: the malloc trimmer watches the anonymous part of the RSS", () => {
  const status = "Name:\tdeno\nVmRSS:\t   51200 kB\nRssAnon:\t   12345 kB\nRssFile:\t   38855 kB\n";
  const pages = new ExecutablePages(() => "", EXE, () => 0, () => {}, () => status);
  assert.equal(pages.anonymousRss(), 12345 * 1024);
  // Unreadable: the whole RSS, as the trimmer watches without the release.
  const blind = new ExecutablePages(() => "", EXE, () => 0);
  assert.ok(blind.anonymousRss() >= Deno.memoryUsage().rss / 2);
});

/** This process's resident pages of mapped files, bytes. */
function rssFile(): number {
  const memory = readMemory(Deno.pid);
  assert.ok(memory?.file, "no RssFile in /proc/self/status");
  return memory.file;
}

Deno.test({
  name: "executable pages: given back, this process keeps running on them",
  ignore: Deno.build.os !== "linux",
  fn() {
    const pages = ExecutablePages.open();
    assert.ok(typeof pages !== "string", `not opened: ${pages}`);
    try {
      const before = rssFile();
      const { bytes, refused } = pages.release();
      const after = rssFile();
      assert.ok(bytes > 1 << 20, `${bytes} bytes of read-only mappings`);
      assert.equal(refused, 0, "the kernel refused a range");
      assert.ok(before - after > 1 << 20, `RssFile ${before} -> ${after} bytes`);
      // The code and data come back as they are used: this runs on them.
      assert.equal(JSON.stringify({ a: [1, 2] }), '{"a":[1,2]}');
      // And again, with the smaps file read afresh from its start.
      assert.ok(pages.release().bytes === bytes);
      // The anonymous part is read afresh too, and does not move with the release.
      const anon = pages.anonymousRss();
      assert.ok(anon > 1 << 20 && anon < Deno.memoryUsage().rss, `RssAnon ${anon}`);
    } finally {
      pages.close();
    }
  },
});

Deno.test({
  name: "executable pages: the program gives them back once it listens",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const program = await startProgram({ flags: ["--log-level", "debug"] });
    try {
      const line = await program.waitForLine(/event=executable-pages/);
      const number = (name: string) => Number(new RegExp(`\\b${name}=(-?\\d+)`).exec(line)?.[1]);
      assert.ok(number("mapped") > 4 << 20, line);
      assert.ok(number("released") > 4 << 20, line);
      assert.equal(number("refused"), 0, line);
    } finally {
      await program.stop();
    }
  },
});

Deno.test({
  name: "executable pages: given back after read and ffi are revoked, as at a malloc trim",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const child = new URL("./support/exec_pages_child.ts", import.meta.url);
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-prompt", child.pathname],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(stdout);
    assert.equal(code, 0, new TextDecoder().decode(stderr));
    const done = JSON.parse(text);
    assert.equal(done.read, "prompt", text);
    assert.equal(done.ffi, "prompt", text);
    assert.ok(done.bytes > 1 << 20, text);
    assert.equal(done.refused, 0, text);
    assert.ok(done.released > 1 << 20, text);
    // Read through the file opened at start: RssAnon, not the whole RSS.
    assert.ok(done.anon > 1 << 20 && done.anon < done.rss, text);
  },
});
