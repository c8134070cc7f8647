import assert from "node:assert/strict";
import {
  JsonSplitter,
  MAX_NESTING,
  SplitError,
  TextTooLong,
} from "../../src/monitor/json_splitter.ts";

const STREAM = '{"execute": "qom-get", "arguments": {"path": "/a{b}[c]", "property": "x\\"}"}}' +
  '\r\n  [1, [2]] garbage {"id": {"nested": ["}"]}}\n42\n';
const TEXTS = [
  '{"execute": "qom-get", "arguments": {"path": "/a{b}[c]", "property": "x\\"}"}}',
  "[1, [2]]",
  "garbage",
  '{"id": {"nested": ["}"]}}',
  "42",
];

Deno.test("json splitter: texts come out whole however the stream is split", () => {
  for (let cut = 0; cut <= STREAM.length; cut++) {
    const s = new JsonSplitter();
    const out = [...s.push(STREAM.slice(0, cut)), ...s.push(STREAM.slice(cut))];
    assert.deepEqual(out, TEXTS, `split at ${cut}`);
  }
  const s = new JsonSplitter();
  const out: (string | SplitError)[] = [];
  for (const c of STREAM) out.push(...s.push(c));
  assert.deepEqual(out, TEXTS, "one character at a time");
});

Deno.test("json splitter: a text longer than the bound throws, and the next one is read", () => {
  const s = new JsonSplitter();
  assert.throws(() => s.push("[" + "1,".repeat(600_000)), TextTooLong);
  assert.deepEqual(s.push('{"ok": 1}'), ['{"ok": 1}']);
});

Deno.test("json splitter: nesting up to QEMU's limit passes; one level more is one error, the rest skipped", () => {
  // The outer object counts, as in QEMU's json-streamer (brace + bracket count > 1024).
  const at = (depth: number) => `{"id":${"[".repeat(depth - 1)}"[{\\"}"${"]".repeat(depth - 1)}}`;
  const s = new JsonSplitter();
  assert.deepEqual(s.push(at(MAX_NESTING)), [at(MAX_NESTING)]);
  const deep = at(MAX_NESTING + 1) + at(400_000) + '\n{"execute":"after"}';
  for (const cut of [0, 1, MAX_NESTING + 3, deep.length >> 1, deep.length - 5]) {
    const t = new JsonSplitter();
    const out = [...t.push(deep.slice(0, cut)), ...t.push(deep.slice(cut))];
    assert.deepEqual(out, [
      new SplitError("JSON nesting depth limit exceeded"),
      new SplitError("JSON nesting depth limit exceeded"),
      '{"execute":"after"}',
    ], `split at ${cut}`);
  }
});

Deno.test("json splitter: a skipped text keeps no characters however long it runs", () => {
  const s = new JsonSplitter();
  const open = "[".repeat(MAX_NESTING + 1);
  assert.equal(s.push(open).length, 1);
  // Far beyond MAX_TEXT_CHARS: nothing is kept while skipping, so it never throws.
  for (let i = 0; i < 4; i++) assert.deepEqual(s.push("[1,2]".repeat(300_000)), []);
  assert.deepEqual(s.push("]".repeat(MAX_NESTING + 1) + "[2]"), ["[2]"]);
});

Deno.test("json splitter: an unfinished text sent a character at a time costs about a byte per character", async () => {
  const child = new URL("../support/splitter_memory_child.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--v8-flags=--expose-gc", child],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assert.equal(out.code, 0);
  const { bytesPerChar, texts } = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.equal(texts, 1, "the text came out whole");
  // Appended a character at a time with `+=`: 30.6 bytes per character.
  assert.ok(bytesPerChar < 4, `${bytesPerChar.toFixed(1)} bytes per character held`);
});
