/**
 * TCP comparison (SPEC 6): the primary and secondary byte streams of one connection are
 * compared across different segmentation, following QEMU's `colo_compare_tcp` and
 * `colo_mark_tcp_pkt` (seed lines 352-501) with wrap-safe arithmetic throughout.
 *
 * @module
 */

import { bytesEqual } from "./bytes.ts";
import type { Connection } from "./connection.ts";
import type { CompareContext } from "./context.ts";
import type { Packet } from "./packet.ts";
import { seqAfter } from "../packet/seq.ts";
import { TH_ACK } from "../packet/parse.ts";

function traceSegment(ctx: CompareContext, side: string, p: Packet): void {
  ctx.tracer!.trace("colo_compare_tcp_info", {
    pkt: side,
    seq: p.seq,
    ack: p.ack,
    hdlen: p.start,
    pdlen: p.len,
    offset: p.offset,
    flags: p.flags,
  });
}

/**
 * True when a primary segment may be released: its ACK must not be ahead of what the
 * secondary has acknowledged, min(highest primary ACK, highest secondary ACK), or the
 * secondary would miss data the client then stops retransmitting. A segment without the ACK
 * flag acknowledges nothing.
 */
function ackSettled(conn: Connection, p: Packet): boolean {
  if ((p.flags & TH_ACK) === 0) return true;
  if (!conn.secondaryAckSet || seqAfter(p.ack, conn.secondaryAck)) return false;
  return !seqAfter(p.ack, conn.primaryAck);
}

/**
 * True when the next `n` not yet matched payload bytes of `p` and `s` are equal. Neither side
 * is read past its payload (segments may be misaligned after retransmissions).
 */
function nextBytesEqual(p: Packet, s: Packet, n: number): boolean {
  return n <= p.len - p.offset && n <= s.len - s.offset &&
    bytesEqual(p.data, p.start + p.offset, s.data, s.start + s.offset, n);
}

/**
 * Drops a secondary segment whose payload has been fully matched once no primary is left to
 * pair with it: QEMU keeps it queued until it times out into a needless checkpoint (SPEC 9).
 */
function dropIfFullyMatched(ctx: CompareContext, conn: Connection): void {
  const s = conn.secondary.peek();
  if (s !== undefined && s.len > 0 && s.offset >= s.len) {
    conn.secondary.shift();
    ctx.dropSecondary(s);
  }
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

    // Segments without payload, and segments wholly inside the already-compared stream,
    // need no comparison (retransmissions of data both sides sent).
    let primaryDone = false;
    if (p.len === 0) {
      primaryDone = true;
    } else if (conn.compareSeqSet && !seqAfter(p.seqEnd, conn.compareSeq)) {
      tracer?.trace("colo_compare_main", { str: "pri: this packet has compared" });
      primaryDone = true;
    }
    if (primaryDone) {
      pq.shift();
      ctx.sendPrimary(p);
    }
    if (s.len === 0) {
      sq.shift();
      ctx.dropSecondary(s);
      continue;
    }
    if (conn.compareSeqSet && !seqAfter(s.seqEnd, conn.compareSeq)) {
      tracer?.trace("colo_compare_main", { str: "sec: this packet has compared" });
      sq.shift();
      ctx.dropSecondary(s);
      continue;
    }
    if (primaryDone) continue;

    if (
      p.seq === s.seq && p.seqEnd === s.seqEnd &&
      bytesEqual(p.data, p.start, s.data, s.start, p.len)
    ) {
      // The same segment on both sides.
      if (tracer) traceSegment(ctx, "pri", p), traceSegment(ctx, "sec", s);
      conn.compareSeq = p.seqEnd;
      conn.compareSeqSet = true;
      pq.shift();
      sq.shift();
      ctx.sendPrimary(p);
      ctx.dropSecondary(s);
      continue;
    }
    if (!seqAfter(p.seqEnd, s.seqEnd)) {
      // The primary ends inside the secondary: compare the primary's remaining bytes.
      const n = p.len - p.offset;
      if (!nextBytesEqual(p, s, n)) {
        ctx.mismatch("tcp-payload", conn, now);
        return;
      }
      if (!ackSettled(conn, p)) {
        // "secondary guest hasn't ack the data, don't send out this packet"
        ctx.mismatch("tcp-ack", conn, now);
        return;
      }
      s.offset += n;
      if (tracer) traceSegment(ctx, "pri", p), traceSegment(ctx, "sec", s);
      conn.compareSeq = p.seqEnd;
      conn.compareSeqSet = true;
      pq.shift();
      ctx.sendPrimary(p);
      // A fully matched secondary stays at the head for the next primary, as in QEMU (it
      // lets one payload-less primary through); with no primary left it is dropped then.
      continue;
    }
    // The primary is longer: compare the secondary's remaining bytes.
    const n = s.len - s.offset;
    if (!nextBytesEqual(p, s, n)) {
      ctx.mismatch("tcp-payload", conn, now);
      return;
    }
    p.offset += n;
    if (tracer) traceSegment(ctx, "pri", p), traceSegment(ctx, "sec", s);
    conn.compareSeq = s.seqEnd;
    conn.compareSeqSet = true;
    sq.shift();
    ctx.dropSecondary(s);
  }
}
