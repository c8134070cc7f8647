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
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_UDP } from "../packet/parse.ts";

function traceName(conn: Connection): string {
  const proto = conn.key[1];
  if (proto === IPPROTO_UDP) return "compare udp";
  if (proto === IPPROTO_ICMP || proto === IPPROTO_ICMPV6) return "compare icmp";
  return "compare other";
}

/** Compares what can be compared on `conn`, oldest primary first. */
export function compareDatagrams(ctx: CompareContext, conn: Connection, now: number): void {
  const pq = conn.primary;
  const sq = conn.secondary;
  const tracer = ctx.tracer;
  while (pq.length > 0 && sq.length > 0) {
    const p = pq.peek()!;
    tracer?.trace("colo_compare_main", { str: traceName(conn) });
    let found = -1;
    for (let i = 0; i < sq.length; i++) {
      const s = sq.at(i);
      if (s.len === p.len && bytesEqual(p.data, p.start, s.data, s.start, p.len)) {
        found = i;
        break;
      }
    }
    if (found < 0) {
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
