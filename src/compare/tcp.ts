/**
 * TCP comparison (SPEC 6): the primary and secondary byte streams of one connection are
 * compared across different segmentation, following QEMU's `colo_compare_tcp` and
 * `colo_mark_tcp_pkt` (seed lines 352-501) with wrap-safe arithmetic throughout, except that
 * bytes are compared at the same sequence position (primary byte N with secondary byte N),
 * not by offset within whichever segments are queued.
 *
 * @module
 */

import { bytesEqual } from "./bytes.ts";
import type { Connection } from "./connection.ts";
import type { CompareContext } from "./context.ts";
import type { Packet } from "./packet.ts";
import { type Seq32, seqAfter, seqDiff } from "../packet/seq.ts";
import type { FrameInfo } from "../packet/parse.ts";

function traceSegment(ctx: CompareContext, side: string, p: Packet): void {
  ctx.tracer!.trace("colo_compare_tcp_info", {
    pkt: side,
    seq: p.seq,
    ack: p.ack,
    hdlen: p.start - p.at,
    pdlen: p.len,
    offset: p.offset,
    flags: p.flags,
  });
}

/**
 * True when a primary segment may be released: its ACK must not be ahead of what the
 * secondary has acknowledged, min(highest primary ACK, highest secondary ACK), or the
 * secondary would miss data the client then stops retransmitting. QEMU reads the ACK field
 * whatever the flags, so here: a segment without the ACK flag is judged by its field too.
 */
function ackSettled(conn: Connection, p: Packet): boolean {
  if (!conn.secondaryAckSet || seqAfter(p.ack, conn.secondaryAck)) return false;
  return !seqAfter(p.ack, conn.primaryAck);
}

/**
 * True when the whole of `p`'s payload lies in the stream compared already on `conn` (it ends
 * at or before `compare_seq`): a retransmission of bytes both sides sent, nothing to compare.
 */
export function comparedAlready(conn: Connection, p: Packet): boolean {
  return conn.compareSeqSet && !seqAfter(p.seqEnd, conn.compareSeq);
}

/**
 * Where the comparison of `p` goes on: its first byte not yet compared, i.e. `compare_seq`
 * when that falls inside the segment (earlier bytes were compared and are not compared
 * again), otherwise its first byte.
 */
function nextPosition(conn: Connection, p: Packet): Seq32 {
  return conn.compareSeqSet && seqAfter(conn.compareSeq, p.seq) ? conn.compareSeq : p.seq;
}

/** True when `p` and `s` carry the same `n` bytes from sequence position `pos` on. */
function equalAt(p: Packet, s: Packet, pos: Seq32, n: number): boolean {
  return bytesEqual(
    p.bytes,
    p.start + seqDiff(pos, p.seq),
    s.bytes,
    s.start + seqDiff(pos, s.seq),
    n,
  );
}

/**
 * Drops a secondary segment whose payload has been fully matched once no primary is left to
 * pair with it: QEMU keeps it queued until it times out into a needless checkpoint (SPEC 9).
 * What it would still do there, let the next primary segment pass when that has nothing to
 * compare, is noted on the connection ({@linkcode passAfterMatchedSecondary}).
 */
export function dropIfFullyMatched(ctx: CompareContext, conn: Connection): void {
  const s = conn.secondary.peek();
  if (s !== undefined && s.len > 0 && s.offset >= s.len) {
    conn.secondary.shift();
    ctx.dropSecondary(s);
    conn.noteMatchedSecondaryDropped(ctx.epoch);
  }
}

/**
 * A primary segment `p`, the only one held on `conn`, arrived after a fully matched secondary
 * segment was dropped here in this epoch. QEMU still holds that segment at the head of the
 * secondary queue: its comparison pops both, releases `p` if it has nothing to compare (no
 * payload, or bytes compared already: a retransmission) and destroys the matched segment,
 * leaving any secondary queued behind it for the next primary. `p` with new bytes stays held,
 * for the secondaries behind it. So here; the caller compares what is left.
 */
export function passAfterMatchedSecondary(ctx: CompareContext, conn: Connection, p: Packet): void {
  if (conn.primary.peek() === p) releaseIfUncompared(ctx, conn, p);
}

/**
 * Releases `p`, the head of `conn`'s primary queue, when it needs no comparison: no payload,
 * or wholly inside the already-compared stream (a retransmission of data both sides sent).
 * True when released.
 */
function releaseIfUncompared(ctx: CompareContext, conn: Connection, p: Packet): boolean {
  if (p.len !== 0) {
    if (!comparedAlready(conn, p)) return false;
    ctx.tracer?.trace("colo_compare_main", { str: "pri: this packet has compared" });
  }
  conn.primary.shift();
  ctx.sendPrimary(p);
  return true;
}

/**
 * True when an arriving segment (`info`'s, parsed from `frame`) is the same segment as `head`,
 * the other side's oldest held one, with the same bytes where they are not compared yet: what
 * `compareTcp` decides first when the arriving side holds nothing. `compare_seq` then moves to
 * its end, as there. False, changing nothing, whenever `compareTcp` would do anything else (no
 * payload, already compared, other bytes). `equal`: the arriving frame is known to be `head`
 * byte for byte, so its bytes are not compared again. The segment's fields are read from
 * `info` here, not passed: a sequence number of 2^31 or more, passed to a call V8 does not
 * inline, is a heap number allocated per frame (issue 11).
 */
export function sameSegment(
  conn: Connection,
  head: Packet,
  info: FrameInfo,
  frame: Uint8Array,
  equal = false,
): boolean {
  const seq = info.seq;
  const len = info.payloadLen;
  if (len === 0 || head.len !== len || head.seq !== seq) return false;
  if (comparedAlready(conn, head)) return false;
  const payloadAt = info.payload;
  // 0 <= skip < len here: what is left to compare lies inside both payloads.
  const skip = seqDiff(nextPosition(conn, head), seq);
  if (
    !equal && !bytesEqual(head.bytes, head.start + skip, frame, payloadAt + skip, len - skip)
  ) return false;
  conn.compareSeq = head.seqEnd;
  conn.compareSeqSet = true;
  return true;
}

/** Compares what can be compared on `conn`; releases, drops or reports a mismatch. */
export function compareTcp(ctx: CompareContext, conn: Connection, now: number): void {
  const pq = conn.primary;
  const sq = conn.secondary;
  const tracer = ctx.tracer;
  while (true) {
    const p = pq.peek();
    if (p === undefined) {
      dropIfFullyMatched(ctx, conn);
      return;
    }
    const s = sq.peek();
    if (s === undefined) return;

    const primaryDone = releaseIfUncompared(ctx, conn, p);
    if (s.len === 0) {
      sq.shift();
      ctx.dropSecondary(s);
      continue;
    }
    if (comparedAlready(conn, s)) {
      tracer?.trace("colo_compare_main", { str: "sec: this packet has compared" });
      sq.shift();
      ctx.dropSecondary(s);
      continue;
    }
    if (primaryDone) continue;

    // Both have bytes not compared yet: compare them at the same sequence position (SPEC 6,
    // last paragraph). If the two heads do not go on from the same position, one side's
    // bytes there have not arrived (or were dropped): wait for them, never bridge the gap;
    // the expiry scan asks for a checkpoint if they never come.
    const pos = nextPosition(conn, p);
    const sPos = nextPosition(conn, s);
    if (pos !== sPos) {
      // Except where this comparator dropped the primary's bytes itself (queue full) and the
      // primary went on past them: the secondary's bytes there have nothing to be compared
      // with, as QEMU finds at once (it compares them with the next primary segment). Waiting
      // would hold both queues full until the timeout.
      if (seqAfter(pos, sPos)) {
        const dropped = ctx.primaryDroppedUntil(conn);
        if (dropped !== undefined && seqAfter(dropped, sPos)) ctx.mismatch("tcp-gap", conn, now);
      }
      return;
    }
    const pEndsFirst = !seqAfter(p.seqEnd, s.seqEnd);
    const n = seqDiff(pEndsFirst ? p.seqEnd : s.seqEnd, pos);
    if (!equalAt(p, s, pos, n)) {
      ctx.mismatch("tcp-payload", conn, now);
      return;
    }
    if (p.seq === s.seq && p.seqEnd === s.seqEnd) {
      // The same segment on both sides (QEMU releases it without the ACK rule).
      if (tracer) traceSegment(ctx, "pri", p), traceSegment(ctx, "sec", s);
      conn.compareSeq = p.seqEnd;
      conn.compareSeqSet = true;
      pq.shift();
      sq.shift();
      ctx.sendPrimary(p);
      ctx.dropSecondary(s);
      continue;
    }
    if (pEndsFirst) {
      // The primary ends inside the secondary.
      if (!ackSettled(conn, p)) {
        // "secondary guest hasn't ack the data, don't send out this packet"
        ctx.mismatch("tcp-ack", conn, now);
        return;
      }
      s.offset = seqDiff(p.seqEnd, s.seq);
      if (tracer) traceSegment(ctx, "pri", p), traceSegment(ctx, "sec", s);
      conn.compareSeq = p.seqEnd;
      conn.compareSeqSet = true;
      pq.shift();
      ctx.sendPrimary(p);
      // A fully matched secondary stays at the head for the next primary, as in QEMU (it
      // lets one payload-less primary through); with no primary left it is dropped then.
      continue;
    }
    // The primary is longer: the secondary is compared up to its end.
    p.offset = seqDiff(s.seqEnd, p.seq);
    if (tracer) traceSegment(ctx, "pri", p), traceSegment(ctx, "sec", s);
    conn.compareSeq = s.seqEnd;
    conn.compareSeqSet = true;
    sq.shift();
    ctx.dropSecondary(s);
  }
}

/**
 * A checkpoint flush released primary segment `p` uncompared. After the checkpoint the
 * secondary goes on from the primary's state, so its bytes up to `p`'s end are settled:
 * `compare_seq` moves past them (QEMU leaves it behind), and a late secondary segment from
 * before the checkpoint is dropped as compared instead of waiting at a gap that never fills.
 */
export function flushedTcp(conn: Connection, p: Packet): void {
  if (p.len > 0) settledUpTo(conn, p.seqEnd);
}

/**
 * The bytes of `conn` up to `seqEnd` are settled without a comparison (a checkpoint flushed
 * them, or its epoch's tail went out): `compare_seq` moves past them, if it is not there yet.
 */
export function settledUpTo(conn: Connection, seqEnd: Seq32): void {
  if (!conn.compareSeqSet || seqAfter(seqEnd, conn.compareSeq)) {
    conn.compareSeq = seqEnd;
    conn.compareSeqSet = true;
  }
}
