/**
 * The V8 flags the program runs with. compile.sh bakes the same into the binary (a test keeps
 * the two alike); from a checkout, `deno run` takes them before `main.ts`, with
 * {@linkcode PROGRAM_RUN_FLAGS}.
 *
 * - `--max-semi-space-size=2`, `--min-semi-space-size=2`: a 2 MiB young generation. V8 would
 *   size it up to 16 MiB per semi-space, 48 MiB of heap the hot path does not need: its garbage is
 *   small and short-lived. A scavenge costs a pair of a request-and-answer stream 0.1-0.25 ms,
 *   about QEMU's p99.9; a pair leaves about 0.5 KB since the inputs park instead of waiting in
 *   Deno's read op (src/input/pump.ts), so 2 MiB holds some 3,000 pairs' garbage: about six
 *   scavenges in the latency row's 20,000 pairs. With 1.2 KB a pair this was 3 MiB; each MiB
 *   more costs every peak about 2 MiB (both semi-spaces), and the TLS rows' peaks sit near 2x
 *   QEMU's (bench/README.md, "A young generation of 2 MiB again").
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

/**
 * What `deno run` takes before `main.ts` to run the program from a checkout as the binary runs
 * (the bench, the soak suite, the lab): {@linkcode PROGRAM_V8_FLAGS}, and `--no-code-cache`.
 * `deno run` otherwise maps its V8 code cache (`$DENO_DIR/v8_code_cache_v2`, an SQLite file
 * shared by every script the user runs) for the whole life of the process, and the pages read at
 * start stay counted: 4 MiB of every peak and of the idle RSS (bench/README.md, "The code cache
 * of `deno run`"). The binary reads its own code cache into memory and frees each entry once
 * used. Start-up takes as long without it (V8 compiles the modules' functions lazily, and the
 * warm-up runs the hot path either way).
 */
export const PROGRAM_RUN_FLAGS: readonly string[] = ["--no-code-cache", PROGRAM_V8_FLAGS];
