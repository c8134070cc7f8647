/**
 * The V8 flags the program runs with. compile.sh bakes the same into the binary (a test keeps
 * the two alike); from a checkout, `deno run` takes them before `main.ts`, as the bench, the
 * soak suite and the lab do.
 *
 * - `--max-semi-space-size=2`, `--min-semi-space-size=2`: a 2 MiB young generation. V8 would
 *   size it up to 16 MiB per semi-space, 48 MiB of heap the hot path does not need: its garbage is
 *   small and short-lived. 1 MiB (with `--optimize-for-size`, which implies it) cost a scavenge
 *   every ~450 pairs of a request-and-answer stream, 0.05-0.13 ms each inside a pair: twice
 *   QEMU's rate of pairs over 130 us, and the cold-start row's p99 (bench/README.md, "A young
 *   generation of 2 MiB"). Peaks grow by 2-4 MiB.
 * - `--single-threaded-gc`: the collector works on the main thread only; V8's worker threads
 *   only compile. They keep the priority the program started with: lowered (nice 19,
 *   `SCHED_IDLE`), they stalled the main thread for seconds on a busy host (bench/README.md,
 *   "V8's compiler threads back at the program's priority").
 * - `--invocation-count-for-maglev=100`, `--invocation-count-for-turbofan=300` (V8: 400 and
 *   3,000): the hot path reaches V8's optimising compilers within the warm-up before listening
 *   (src/warmup.ts). V8 scales these counts by a function's bytecode size, and the engine's
 *   large functions, at the defaults, reached TurboFan only after some 10,000-20,000 frames of
 *   traffic: compilations of 5-50 ms on a worker thread all through the first seconds, each one
 *   a CPU the traffic of a two-core host did not have (bench/README.md, "Compiled before
 *   listening").
 *
 * Peak RSS and the latency tail with each: bench/README.md, issue 11.
 *
 * @module
 */

/** As `deno run` takes them. */
export const PROGRAM_V8_FLAGS =
  "--v8-flags=--max-semi-space-size=2,--min-semi-space-size=2,--single-threaded-gc," +
  "--invocation-count-for-maglev=100,--invocation-count-for-turbofan=300";
