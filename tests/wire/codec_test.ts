import assert from "node:assert/strict";
import { encodeFrame, FrameDecoder, NET_BUFSIZE } from "../../src/wire/codec.ts";
import { concat, framed, pseudoRandomBytes } from "../support/packets.ts";

interface Got {
  frame: number[];
  vnetLen: number;
}

function decoder(vnet: boolean): { d: FrameDecoder; got: Got[] } {
  const got: Got[] = [];
  const d = new FrameDecoder({
    onFrame: (bytes, at, size, vnetLen) => {
      got.push({ frame: [...bytes.subarray(at, at + size)], vnetLen });
    },
  }, vnet);
  return { d, got };
}

const A = pseudoRandomBytes(70, 1);
const B = pseudoRandomBytes(3, 2);
const C = pseudoRandomBytes(1500, 3);

Deno.test("codec: a stream split at every single point decodes to the same frames", () => {
  const stream = concat(framed(A), framed(B), framed(C));
  for (let cut = 0; cut <= stream.length; cut++) {
    const { d, got } = decoder(false);
    assert.equal(d.push(stream.subarray(0, cut)), null);
    assert.equal(d.push(stream.subarray(cut)), null);
    assert.deepEqual(got.map((g) => g.frame), [[...A], [...B], [...C]], `cut at ${cut}`);
  }
});

Deno.test("codec: a vnet stream split at every pair of points keeps each frame's vnet_len", () => {
  const stream = concat(framed(A, 12), framed(B, 0), framed(C, 20));
  for (let i = 0; i <= stream.length; i += 7) {
    for (let j = i; j <= stream.length; j += 13) {
      const { d, got } = decoder(true);
      d.push(stream.subarray(0, i));
      d.push(stream.subarray(i, j));
      d.push(stream.subarray(j));
      assert.deepEqual(got.map((g) => g.vnetLen), [12, 0, 20], `cuts at ${i}, ${j}`);
      assert.deepEqual(got[2].frame, [...C]);
    }
  }
});

Deno.test("codec: push(buffer, end) reads only buffer[0, end), as a reused read buffer holds it", () => {
  const stream = concat(framed(A), framed(B), framed(C));
  for (let cut = 0; cut <= stream.length; cut += 5) {
    const { d, got } = decoder(false);
    // Bytes past `end` are left over from an earlier read: a broken frame if they were read.
    const buf = new Uint8Array(stream.length + 8).fill(0xff);
    buf.set(stream.subarray(0, cut));
    assert.equal(d.push(buf, cut), null);
    buf.fill(0xff).set(stream.subarray(cut));
    assert.equal(d.push(buf, stream.length - cut), null);
    assert.deepEqual(got.map((g) => g.frame), [[...A], [...B], [...C]], `cut at ${cut}`);
  }
});

Deno.test("codec: byte-at-a-time delivery decodes every frame", () => {
  const stream = concat(framed(C), framed(A));
  const { d, got } = decoder(false);
  for (let i = 0; i < stream.length; i++) d.push(stream.subarray(i, i + 1));
  assert.deepEqual(got.map((g) => g.frame.length), [C.length, A.length]);
  assert.deepEqual(got[0].frame, [...C]);
});

/** Where each frame was handed out: the array, the offset and the size. */
function places(vnet: boolean): {
  d: FrameDecoder;
  seen: { bytes: Uint8Array; at: number; size: number }[];
} {
  const seen: { bytes: Uint8Array; at: number; size: number }[] = [];
  const d = new FrameDecoder(
    {
      onFrame: (bytes, at, size) => {
        seen.push({ bytes, at, size });
      },
    },
    vnet,
  );
  return { d, seen };
}

Deno.test("codec: a frame inside one chunk is handed out where it lies in the chunk, not copied", () => {
  const chunk = concat(framed(A, 0), framed(B, 12));
  const { d, seen } = places(true);
  d.push(chunk);
  assert.equal(seen.length, 2);
  assert.equal(seen[0].bytes, chunk);
  assert.deepEqual([seen[0].at, seen[0].size], [8, A.length]);
  assert.equal(seen[1].bytes, chunk);
  assert.deepEqual([seen[1].at, seen[1].size], [8 + A.length + 8, B.length]);
});

Deno.test("codec: a frame split across reads is handed out in an array of its own, never reused", () => {
  const stream = concat(framed(A), framed(C), framed(B));
  const cut = 4 + A.length + 4 + 100; // inside C
  const { d, seen } = places(false);
  const first = stream.slice(0, cut);
  const second = stream.slice(cut);
  d.push(first);
  d.push(second);
  assert.deepEqual(seen.map((s) => s.size), [A.length, C.length, B.length]);
  assert.equal(seen[0].bytes, first);
  // C was assembled: neither read holds it whole.
  assert.notEqual(seen[1].bytes, first);
  assert.notEqual(seen[1].bytes, second);
  assert.equal(seen[1].at, 0);
  assert.deepEqual(seen[1].bytes, C);
  // A second split frame does not touch the first one's array (the engine may hold it there).
  const more = concat(framed(A), framed(B));
  d.push(more.subarray(0, 10));
  d.push(more.subarray(10));
  assert.deepEqual(seen.map((s) => s.size), [A.length, C.length, B.length, A.length, B.length]);
  assert.notEqual(seen[3].bytes, seen[1].bytes);
  assert.deepEqual(seen[1].bytes, C);
  // B lies whole in the second read, after the end of C.
  assert.equal(seen[2].bytes, second);
  assert.equal(seen[2].at, C.length - 100 + 4);
  assert.deepEqual(second.subarray(seen[2].at, seen[2].at + B.length), B);
});

Deno.test("codec: zero-length frames are delivered as empty and the stream goes on", () => {
  const plain = decoder(false);
  plain.d.push(concat(framed(new Uint8Array(0)), framed(B)));
  assert.deepEqual(plain.got.map((g) => g.frame.length), [0, 3]);
  const vnet = decoder(true);
  vnet.d.push(concat(framed(new Uint8Array(0), 0), framed(B, 0), framed(new Uint8Array(0), 5)));
  assert.deepEqual(vnet.got.map((g) => [g.frame.length, g.vnetLen]), [[0, 0], [3, 0], [0, 5]]);
});

Deno.test("codec: len of exactly 69632 is accepted", () => {
  const big = pseudoRandomBytes(NET_BUFSIZE, 9);
  const { d, got } = decoder(false);
  const s = framed(big);
  assert.equal(d.push(s.subarray(0, 1000)), null);
  assert.equal(d.push(s.subarray(1000)), null);
  assert.equal(got.length, 1);
  assert.equal(got[0].frame.length, NET_BUFSIZE);
});

Deno.test("codec: len above 69632 breaks the stream at once, before its bytes arrive", () => {
  const head = new Uint8Array([0, 1, 0x10, 0x01]); // 69633
  const { d, got } = decoder(false);
  const r = d.push(concat(framed(A), head));
  assert.deepEqual(r, { len: NET_BUFSIZE + 1 });
  assert.equal(got.length, 1, "frames before the bad length are delivered");
  assert.equal(d.midFrame, false, "the decoder is reset");
});

Deno.test("codec: midFrame reports a partial frame and reset() forgets it", () => {
  const { d, got } = decoder(false);
  const s = framed(A);
  d.push(s.subarray(0, 10));
  assert.equal(d.midFrame, true);
  d.reset();
  assert.equal(d.midFrame, false);
  d.push(framed(B));
  assert.deepEqual(got.map((g) => g.frame), [[...B]]);
});

Deno.test("codec: encodeFrame writes len (and vnet_len) big-endian", () => {
  assert.deepEqual([...encodeFrame(new Uint8Array([7, 8]))], [0, 0, 0, 2, 7, 8]);
  assert.deepEqual(
    [...encodeFrame(new Uint8Array([7]), true, 0x0102)],
    [0, 0, 0, 1, 0, 0, 1, 2, 7],
  );
});

/** A decoder whose sink records each frame's size and stops after a frame of `stopAfter` bytes. */
function stoppingAfter(stopAfter: number): { d: FrameDecoder; sizes: number[] } {
  const sizes: number[] = [];
  const d = new FrameDecoder({
    onFrame: (_bytes, _at, size) => {
      sizes.push(size);
      return size === stopAfter;
    },
  }, false);
  return { d, sizes };
}

Deno.test("codec: a sink returning true stops the chunk after that frame; the rest decodes on its own", () => {
  const chunk = concat(framed(A), framed(B), framed(C));
  const { d, sizes } = stoppingAfter(A.length);
  d.push(chunk);
  assert.deepEqual(sizes, [A.length], "stopped after the first frame");
  assert.equal(d.stoppedAt, 4 + A.length);
  assert.equal(d.midFrame, false, "the rest starts with a len word");
  d.push(chunk, chunk.length, d.stoppedAt); // where it lies, as the read loop resumes it
  assert.deepEqual(sizes, [A.length, B.length, C.length]);
  assert.equal(d.stoppedAt, -1);
  // A stop asked for by the chunk's last frame leaves nothing to resume.
  d.push(framed(A));
  assert.equal(d.stoppedAt, -1);
});

Deno.test("codec: a stop after a frame split across chunks leaves the rest of the later chunk", () => {
  const stream = concat(framed(A), framed(C));
  const cut = 4 + A.length + 50; // inside C
  const { d, sizes } = stoppingAfter(C.length);
  d.push(stream.subarray(0, cut));
  const second = concat(stream.subarray(cut), framed(B));
  d.push(second);
  assert.deepEqual(sizes, [A.length, C.length]);
  assert.equal(d.stoppedAt, stream.length - cut);
  d.push(second.subarray(d.stoppedAt));
  assert.deepEqual(sizes, [A.length, C.length, B.length]);
});
