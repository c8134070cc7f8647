/**
 * A real outdev writer on a connection that keeps every byte written, and an
 * {@linkcode EngineSink} that releases into it, as the comparator's does: for engine tests of
 * what outdev gets when it copies released frames later.
 *
 * @module
 */

import type { EngineSink } from "../../src/compare/events.ts";
import { FrameWriter } from "../../src/output/writer.ts";
import type { BlockPool } from "../../src/pool.ts";

/** The writer (sharing `pool`'s blocks), the sink on it, and copies of every write. */
export function outdev(pool: BlockPool): {
  out: FrameWriter;
  sink: EngineSink;
  written: Uint8Array[];
} {
  const written: Uint8Array[] = [];
  const out = new FrameWriter({
    vnet: false,
    highWater: 1 << 30,
    lowWater: 0,
    maxBufferedDisconnected: 0,
    pool,
  });
  out.attach({
    peer: "test",
    read: () => new Promise(() => {}),
    write: (b: Uint8Array) => (written.push(b.slice()), Promise.resolve(b.length)),
    close() {},
  });
  const sink: EngineSink = {
    release: (bytes, at, size, vnetLen) => void out.writeAt(bytes, at, size, vnetLen),
    settle: () => out.copyPending(),
    discard() {},
    checkpoint() {},
  };
  return { out, sink, written };
}
