/**
 * A child process for `tests/exec_pages_test.ts`: opens the executable's pages, gives up
 * `read` and `ffi` as the program does once started (src/permissions.ts), then gives the
 * pages back as a malloc trim does, reads the anonymous RSS as the trimmer does, and prints
 * what happened as one JSON line.
 *
 * @module
 */

import { ExecutablePages } from "../../src/exec_pages.ts";

const pages = ExecutablePages.open();
if (typeof pages === "string") throw new Error(pages);
Deno.permissions.revokeSync({ name: "read" });
Deno.permissions.revokeSync({ name: "ffi" });
const before = Deno.memoryUsage().rss;
const { bytes, refused } = pages.release();
const after = Deno.memoryUsage().rss;
const anon = pages.anonymousRss();
pages.close();
console.log(JSON.stringify({
  read: Deno.permissions.querySync({ name: "read" }).state,
  ffi: Deno.permissions.querySync({ name: "ffi" }).state,
  bytes,
  refused,
  released: before - after,
  anon,
  rss: after,
}));
