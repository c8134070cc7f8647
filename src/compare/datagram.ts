/**
 * Datagram comparison (SPEC 6) for UDP, ICMP, ICMPv6 and every other IP protocol: the oldest
 * primary datagram is matched against the first secondary datagram with the same IP payload.
 * IP header fields (ID, TTL, TOS, flags, checksum) and Ethernet padding are never compared.
 *
 * @module
 */

import { bytesEqual } from "./bytes.ts";
import type { Connection } from "./connection.ts";
import type { CompareContext } from "./context.ts";
import type { Packet } from "./packet.ts";
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_UDP } from "../packet/parse.ts";

/** QEMU's name for the comparison: "udp", "icmp" or "other". */
function kindOf(conn: Connection): "udp" | "icmp" | "other" {
  const proto = conn.protocol;
  if (proto === IPPROTO_UDP) return "udp";
  if (proto === IPPROTO_ICMP || proto === IPPROTO_ICMPV6) return "icmp";
  return "other";
}

/** QEMU's trace lines for a primary/secondary pair that does not match. */
function traceMiss(ctx: CompareContext, conn: Connection, p: Packet, s: Packet): void {
  const kind = kindOf(conn);
  const label = kind === "udp" ? "UDP" : kind === "icmp" ? "ICMP" : "Other";
  if (s.len !== p.len) {
    ctx.tracer!.trace("colo_compare_main", {
      str: `${label}: payload size of packets are different`,
    });
  } else if (kind !== "other") {
    const name = `colo_compare_${kind}_miscompare`;
    ctx.tracer!.trace(name, { sta: "primary pkt size", size: p.size });
    ctx.tracer!.trace(name, { sta: "Secondary pkt size", size: s.size });
  }
}

/**
 * True when an arriving datagram (`len` bytes of IP payload at `at` in `frame`) matches
 * `head`, the other side's oldest held one: what `compareDatagrams` finds first when the
 * arriving side holds nothing.
 */
export function sameDatagram(head: Packet, frame: Uint8Array, at: number, len: number): boolean {
  return head.len === len && bytesEqual(head.bytes, head.start, frame, at, len);
}

/**
 * Compares what can be compared on `conn`, oldest primary first.
 *
 * The oldest primary is compared only with the secondary datagrams it has not met yet: its
 * `offset` counts those at the head of the secondary queue it was compared with, none equal.
 * They stay there, in order, until it leaves: a secondary datagram leaves its queue only paired
 * with the oldest primary (which then leaves too) or in a checkpoint's flush (which releases
 * every primary). QEMU compares it with the whole secondary queue again on each frame that
 * arrives on the connection: with both queues long (a connection whose replicas differ, as
 * QUIC's encrypted datagrams always do, until the checkpoint), each arrival cost up to
 * max-queue-size comparisons (bench/README.md, "Datagrams compared once"). With trace lines on,
 * every comparison is made again, as QEMU's trace shows them.
 */
export function compareDatagrams(ctx: CompareContext, conn: Connection, now: number): void {
  const pq = conn.primary;
  const sq = conn.secondary;
  const tracer = ctx.tracer;
  while (pq.length > 0 && sq.length > 0) {
    const p = pq.peek()!;
    let found = -1;
    const from = tracer === null && p.offset <= sq.length ? p.offset : 0;
    for (let i = from; i < sq.length; i++) {
      const s = sq.at(i);
      tracer?.trace("colo_compare_main", { str: `compare ${kindOf(conn)}` });
      if (s.len === p.len && bytesEqual(p.bytes, p.start, s.bytes, s.start, p.len)) {
        found = i;
        break;
      }
      if (tracer) traceMiss(ctx, conn, p, s);
    }
    if (found < 0) {
      p.offset = sq.length;
      tracer?.trace("colo_compare_main", { str: "packet different" });
      ctx.mismatch("datagram", conn, now);
      return;
    }
    pq.shift();
    const s = sq.removeAt(found);
    ctx.sendPrimary(p);
    ctx.dropSecondary(s);
  }
}
