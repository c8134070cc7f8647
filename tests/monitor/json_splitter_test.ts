import assert from "node:assert/strict";
import { JsonSplitter, TextTooLong } from "../../src/monitor/json_splitter.ts";

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
  const out: string[] = [];
  for (const c of STREAM) out.push(...s.push(c));
  assert.deepEqual(out, TEXTS, "one character at a time");
});

Deno.test("json splitter: a text longer than the bound throws, and the next one is read", () => {
  const s = new JsonSplitter();
  assert.throws(() => s.push("[" + "1,".repeat(600_000)), TextTooLong);
  assert.deepEqual(s.push('{"ok": 1}'), ['{"ok": 1}']);
});
