import assert from "node:assert/strict";
import { CompareClock } from "../../src/flow/clock.ts";
import { PauseLog } from "../../src/flow/pause_log.ts";
import { Logger } from "../../src/log.ts";
import { Stats } from "../../src/stats.ts";

Deno.test("clock: stands still while held, then runs on from where it stopped", () => {
  let real = 1000;
  const c = new CompareClock(() => real);
  assert.equal(c.now(), 1000);
  c.hold(true);
  real = 9000;
  assert.equal(c.now(), 1000, "a frame held through a congestion pause does not age");
  c.hold(true);
  c.hold(false);
  real = 9500;
  assert.equal(c.now(), 1500);
});

Deno.test("clock: at a speed, engine time runs that many times faster, and still stands still while held", () => {
  let real = 1000;
  const c = new CompareClock(() => real, 100);
  assert.equal(c.now(), 100_000);
  real = 1010;
  assert.equal(c.now(), 101_000);
  c.hold(true);
  real = 2000;
  assert.equal(c.now(), 101_000);
  c.hold(false);
  real = 2010;
  assert.equal(c.now(), 102_000);
});

Deno.test("pause log: a pause and its end at info; frequent ones summarised, all counted", () => {
  const lines: string[] = [];
  let now = 0;
  const stats = new Stats();
  const p = new PauseLog(new Logger("info", (l) => lines.push(l)), stats, 10_000, () => now);
  p.change("primary", true, "outdev-congested", { held_bytes: 5 });
  now = 40;
  p.change("primary", false, "outdev-congested");
  assert.equal(lines.length, 2);
  assert.match(
    lines[0],
    /level=info event=input-paused side=primary reason=outdev-congested held_bytes=5/,
  );
  assert.match(
    lines[1],
    /level=info event=input-resumed side=primary reason=outdev-congested paused_ms=40/,
  );
  for (let i = 0; i < 100; i++) {
    p.change("primary", true, "outdev-congested");
    now += 10;
    p.change("primary", false, "outdev-congested");
  }
  assert.equal(lines.length, 2, "a line per pause");
  now = 10_000;
  p.flush();
  assert.match(lines[2], /event=input-pauses side=primary count=100 paused_ms=1000/);
  assert.equal(stats.pauses.get("primary:outdev-congested"), 101);
});

Deno.test("pause log: at debug, the pauses summarised at info are logged each", () => {
  const lines: string[] = [];
  let now = 0;
  const p = new PauseLog(new Logger("debug", (l) => lines.push(l)), new Stats(), 10_000, () => now);
  p.change("secondary", true, "ahead");
  now = 5;
  p.change("secondary", false, "ahead");
  p.change("secondary", true, "ahead", { held_bytes: 7 });
  now = 25;
  p.change("secondary", false, "ahead");
  assert.equal(lines.length, 4);
  assert.match(lines[2], /level=debug event=input-paused side=secondary reason=ahead held_bytes=7/);
  assert.match(
    lines[3],
    /level=debug event=input-resumed side=secondary reason=ahead paused_ms=20/,
  );
});

Deno.test("pause log: a new reason ends one pause and starts another, each logged", () => {
  const lines: string[] = [];
  let now = 0;
  const stats = new Stats();
  const p = new PauseLog(new Logger("info", (l) => lines.push(l)), stats, 10_000, () => now);
  p.change("primary", true, "ahead");
  now = 50;
  p.change("primary", true, "outdev-congested");
  now = 80;
  p.change("primary", false, "outdev-congested");
  assert.deepEqual(
    lines.map((l) => /event=(\S+) side=\w+ reason=(\S+)/.exec(l)!.slice(1).join(" ")),
    [
      "input-paused ahead",
      "input-resumed ahead",
      "input-paused outdev-congested",
      "input-resumed outdev-congested",
    ],
  );
  assert.equal(stats.pausedMs.get("primary:ahead"), 50);
  assert.equal(stats.pausedMs.get("primary:outdev-congested"), 30);
});
