/**
 * The throttled warning that refused connections use (SPEC 8: a peer cannot make a log line
 * each): the first at once, then at most one per interval, counting what was not logged.
 */

import assert from "node:assert/strict";
import { Logger, ThrottledWarning } from "../src/log.ts";

Deno.test("log: a throttled warning logs the first at once, then one per interval with how many were not logged", () => {
  const lines: string[] = [];
  let now = 0;
  const w = new ThrottledWarning(
    new Logger("info", (l) => lines.push(l)),
    "x-refused",
    1000,
    () => now,
  );
  w.note({ peer: "a" });
  assert.equal(lines.length, 1);
  assert.match(lines[0], /level=warn event=x-refused peer=a$/);
  for (let i = 0; i < 5; i++) {
    now += 100;
    w.note({ peer: "b" });
  }
  assert.equal(lines.length, 1, "none within the interval");
  now = 1000;
  w.note({ peer: "c" });
  assert.equal(lines.length, 2);
  assert.match(lines[1], /event=x-refused peer=c suppressed=5$/);
  now = 2500;
  w.note({ peer: "d" });
  assert.match(lines[2], /event=x-refused peer=d$/, "no count when none was held back");
});
