import assert from "node:assert/strict";
import { POLL_MAX_US, POLL_START_US, PollWait } from "../../src/wire/poll_wait.ts";
import { socketFd } from "../../src/wire/read_op.ts";
import { dlopenCalls } from "../support/dlopen_count.ts";
import { plainPair } from "../support/net.ts";

/**
 * A poller over a fake clock (ms) and a fake poll: an input is readable from `inputAt` on, or
 * from the poll's `readyAt`-th call.
 */
function fake(readyAt = Infinity) {
  const state = { now: 0, calls: 0, fds: [] as number[], readyAt, inputAt: Infinity };
  const poller = new PollWait((fds, n) => {
    state.calls++;
    const view = new DataView(fds.buffer);
    state.fds = Array.from({ length: n }, (_, i) => view.getInt32(8 * i, true));
    state.now += 0.001; // a poll takes a microsecond
    return state.calls >= state.readyAt || state.now >= state.inputAt ? 1 : 0;
  }, () => state.now);
  return { state, poller };
}

/** One idle moment: the writer settles, and input comes `afterUs` later. */
function idle(f: ReturnType<typeof fake>, afterUs: number): void {
  f.state.inputAt = f.state.now + afterUs / 1000;
  f.poller.settle();
  f.state.now = Math.max(f.state.now, f.state.inputAt);
  f.poller.arrived();
}

Deno.test("poll wait: no polling at first; input soon after an idle moment grows the window", () => {
  const f = fake();
  f.poller.watch(7);
  idle(f, 30);
  assert.equal(f.state.calls, 0, "a window of 0 polls nothing");
  assert.equal(f.poller.windowUs, POLL_START_US);
  const seen: number[] = [];
  for (let i = 0; i < 6; i++) {
    idle(f, 30);
    seen.push(f.poller.windowUs);
  }
  assert.deepEqual(seen, [8, 16, 32, 32, 32, 32], "doubles until input comes within it");
  assert.ok(f.poller.caught >= 3, "then input is caught while polling");
  for (let i = 0; i < 3; i++) idle(f, 100);
  assert.equal(f.poller.windowUs, POLL_MAX_US, "no longer than POLL_MAX_US");
  assert.ok(f.poller.missed > 0);
});

Deno.test("poll wait: input much later than the longest poll stops polling", () => {
  const f = fake();
  f.poller.watch(7);
  for (let i = 0; i < 6; i++) idle(f, 50);
  assert.equal(f.poller.windowUs, POLL_MAX_US);
  idle(f, 2 * POLL_MAX_US + 1);
  assert.equal(f.poller.windowUs, 0);
  const calls = f.state.calls;
  f.poller.settle();
  assert.equal(f.state.calls, calls, "sparse input: no polling");
});

Deno.test("poll wait: returns as soon as an input is readable, and polls for no longer than the window", () => {
  const f = fake();
  f.poller.watch(7);
  for (let i = 0; i < 6; i++) idle(f, 50);
  const caught = f.poller.caught;
  f.state.calls = 0;
  f.state.readyAt = 3;
  f.state.inputAt = Infinity;
  f.poller.settle();
  assert.equal(f.state.calls, 3, "back at the first readable poll");
  assert.equal(f.poller.caught, caught + 1);
  const never = fake();
  never.poller.watch(7);
  for (let i = 0; i < 6; i++) idle(never, 50);
  never.state.inputAt = Infinity;
  const start = never.state.now;
  never.state.calls = 0;
  never.poller.settle();
  const spentUs = (never.state.now - start) * 1000;
  assert.ok(spentUs >= POLL_MAX_US && spentUs < POLL_MAX_US + 2, `polled ${spentUs} us`);
});

Deno.test("poll wait: watches the inputs it is given, and forgets the ones that went", () => {
  const f = fake(1);
  const none = fake(1);
  idle(none, 30);
  none.poller.settle();
  assert.equal(none.state.calls, 0, "nothing watched: nothing polled");
  for (const fd of [5, 6, 7]) assert.ok(f.poller.watch(fd));
  idle(f, 30);
  f.poller.settle();
  assert.deepEqual(f.state.fds, [5, 6, 7]);
  f.poller.unwatch(5);
  f.poller.settle();
  assert.deepEqual(f.state.fds, [7, 6]);
  for (let fd = 10; fd < 16; fd++) assert.ok(f.poller.watch(fd));
  assert.equal(f.poller.watch(99), false, "at most eight");
});

Deno.test("poll wait: no poll while an input holds bytes it read already (a TLS layer's), and the window stays as it was", () => {
  const f = fake();
  let held = false;
  f.poller.watch(7, () => held);
  for (let i = 0; i < 6; i++) idle(f, 50);
  const window = f.poller.windowUs;
  assert.ok(window > 0);
  held = true;
  f.state.calls = 0;
  f.poller.settle();
  assert.equal(f.state.calls, 0, "its next read returns at once: nothing to wait for");
  f.poller.arrived();
  assert.equal(f.poller.windowUs, window);
  held = false;
  f.poller.unwatch(7);
  f.poller.watch(8);
  f.poller.settle();
  assert.ok(f.state.calls > 0, "the check went with the input it was given for");
});

Deno.test({
  name: "poll wait: libc's poll(2) sees a real socket become readable",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const poller = PollWait.open();
    assert.ok(poller, "libc's poll is reachable here");
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const [ours, peer] = await Promise.all([
      listener.accept(),
      Deno.connect({ hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port }),
    ]);
    try {
      poller.watch(socketFd(ours)!);
      poller.settle();
      poller.arrived(); // input at once: the window opens
      assert.ok(poller.windowUs > 0);
      poller.settle();
      assert.deepEqual([poller.caught, poller.missed], [0, 1], "nothing to read yet");
      await peer.write(new Uint8Array([1]));
      poller.settle();
      assert.deepEqual([poller.caught, poller.missed], [1, 1], "readable");
    } finally {
      ours.close();
      peer.close();
      listener.close();
    }
  },
});

/**
 * A poller over a fake clock and a fake poll that marks the descriptors in `readable` (by
 * value) as readable in their `revents`, from the poll's `readyAt`-th call on.
 */
function fakeRevents(readable: number[], readyAt = 1) {
  const state = { now: 0, calls: 0, readable, readyAt };
  const poller = new PollWait((fds, n) => {
    state.calls++;
    state.now += 0.001;
    const view = new DataView(fds.buffer);
    let ready = 0;
    for (let i = 0; i < n; i++) {
      const on = state.calls >= state.readyAt &&
        state.readable.includes(view.getInt32(8 * i, true));
      view.setInt16(8 * i + 6, on ? 1 : 0, true);
      ready += on ? 1 : 0;
    }
    return ready;
  }, () => state.now);
  return { state, poller };
}

Deno.test("poll wait: catching inputs tells which came, by their bits; none within the window, 0; no window or bytes held, -1", () => {
  const f = fakeRevents([6], 3);
  assert.equal(f.poller.catchInputs(), -1, "nothing watched");
  assert.ok(f.poller.watch(5));
  assert.ok(f.poller.watch(6));
  assert.deepEqual([f.poller.bitOf(5), f.poller.bitOf(6), f.poller.bitOf(7)], [1, 2, 0]);
  assert.equal(f.poller.catchInputs(), -1, "no window yet: no poll");
  assert.equal(f.state.calls, 0);
  f.poller.settle();
  f.state.now += 0.01;
  f.poller.arrived(); // input 10 us after an idle moment: the window opens
  assert.ok(f.poller.windowUs > 0);
  assert.equal(f.poller.catchInputs(), 2, "the second watched came, at the third poll");
  assert.equal(f.state.calls, 3);
  f.state.readable = [5, 6];
  assert.equal(f.poller.catchInputs(), 3, "both came");
  f.state.readable = [];
  const caught = f.poller.caught;
  assert.equal(f.poller.catchInputs(), 0, "none within the window");
  assert.deepEqual([f.poller.caught, f.poller.missed], [caught, 1]);
  // Unwatching the first moves the second into its place: bits follow the descriptors.
  f.poller.unwatch(5);
  assert.deepEqual([f.poller.bitOf(5), f.poller.bitOf(6)], [0, 1]);
  const held = fakeRevents([5]);
  let holding = false;
  held.poller.watch(5, () => holding);
  held.poller.settle();
  held.state.now += 0.01;
  held.poller.arrived();
  assert.ok(held.poller.windowUs > 0);
  holding = true;
  assert.equal(held.poller.catchInputs(), -1, "an input holds bytes it read: no poll");
  assert.equal(held.state.calls, 0);
});

Deno.test({
  name: "poll wait: catching inputs over real sockets names the one that became readable",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const poller = PollWait.open();
    assert.ok(poller, "libc's poll is reachable here");
    const pairs = [await plainPair(), await plainPair()];
    try {
      for (const { ours } of pairs) poller.watch(ours.fd!);
      poller.settle();
      poller.arrived(); // the window opens
      assert.equal(poller.catchInputs(), 0, "nothing to read yet");
      await pairs[1].peer.write(new Uint8Array([1]));
      assert.equal(poller.catchInputs(), poller.bitOf(pairs[1].ours.fd!));
    } finally {
      for (const pair of pairs) pair.close();
    }
  },
});

Deno.test({
  name: "poll wait: libc is opened once per process; every poller after the first shares it",
  ignore: Deno.build.os !== "linux",
  fn() {
    // The first may have been opened by another test of this process already.
    assert.ok(PollWait.open() !== null);
    assert.equal(
      dlopenCalls(() => {
        const [a, b] = [PollWait.open(), PollWait.open()];
        assert.ok(a !== null && b !== null && a !== b, "a poller of its own each");
      }),
      0,
    );
  },
});
