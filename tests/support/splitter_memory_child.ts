/**
 * Run with `--v8-flags=--expose-gc`: a monitor client's unfinished JSON text of 500,000
 * characters handed to a {@linkcode JsonSplitter} one character at a time, and the JavaScript
 * heap it holds after a full collection. Prints `{ bytesPerChar, texts }`.
 *
 * @module
 */

import v8 from "node:v8";
import { JsonSplitter } from "../../src/monitor/json_splitter.ts";

const gc = (globalThis as { gc?: () => void }).gc!;
const CHARS = 500_000;
const used = () => v8.getHeapStatistics().used_heap_size;
const splitter = new JsonSplitter();
splitter.push('{"execute":"qmp_capabilities","id":"');
gc();
const before = used();
for (let i = 0; i < CHARS; i++) splitter.push("a");
gc();
const after = used();
// The splitter is used after the measurement: until then it is live.
const texts = splitter.push('"}');
console.log(JSON.stringify({ bytesPerChar: (after - before) / CHARS, texts: texts.length }));
