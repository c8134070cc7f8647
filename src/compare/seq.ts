/**
 * Serial-number arithmetic now lives with the packet layer (`src/packet/seq.ts`), which must
 * not import from `compare/`; this module re-exports it for code written against the old path.
 *
 * @module
 */

export * from "../packet/seq.ts";
