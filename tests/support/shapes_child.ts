/**
 * Child of tests/shapes_test.ts, run with `--allow-natives-syntax`: for each class whose time
 * fields get their first fractional value only after start (at a scan, a checkpoint, outdev
 * congestion), makes two objects, gives one a fractional time, and prints, as one JSON line,
 * whether V8 still gives both the same map (`%HaveSameMap`). A field that started as the integer
 * 0 takes a new map there, and V8 drops the code compiled for the old one.
 *
 * @module
 */

import { CheckpointRequests } from "../../src/checkpoint/notify.ts";
import { CompareClock } from "../../src/flow/clock.ts";
import { Pool } from "../../src/pool.ts";

const sameMap = new Function("a", "b", "return %HaveSameMap(a, b)") as (
  a: unknown,
  b: unknown,
) => boolean;

let real = 1000.25;
const clock = () => new CompareClock(() => real);
const [c1, c2] = [clock(), clock()];
c2.hold(true);
real += 0.5;
c2.hold(false);

const [p1, p2] = [new Pool(() => ({})), new Pool(() => ({}))];
p2.trim(123_456.75);

const [r1, r2] = [new CheckpointRequests(1000), new CheckpointRequests(1000)];
r2.request(4_321.5);

console.log(JSON.stringify({
  CompareClock: sameMap(c1, c2),
  Pool: sameMap(p1, p2),
  CheckpointRequests: sameMap(r1, r2),
}));
