/**
 * The packet builder, for tests: it lives in `src/packet/build.ts` because the demo uses it
 * too. It shares no code with the parser it tests (`src/packet/parse.ts`).
 *
 * @module
 */

export * from "../../src/packet/build.ts";
