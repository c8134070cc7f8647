/**
 * The two facts about an X.509 certificate that node:crypto does not give in the form we need
 * (SPEC 11): its version (rustls refuses v1 certificates, so we say so at start) and its
 * subject distinguished name written as QEMU 7.2 writes it for `authz-simple`.
 *
 * QEMU takes the name from GnuTLS's `gnutls_x509_crt_get_dn`, which keeps the attributes in
 * the certificate's own order (`O=Example,CN=client`), joins the attributes of one RDN with
 * `+`, and escapes RFC 4514's special characters with a backslash.
 *
 * @module
 */

/** One DER element: its tag and where its content lies in the buffer. */
interface Element {
  tag: number;
  start: number;
  end: number;
}

/** Thrown when the bytes are not the DER certificate they claim to be. */
export class DerError extends Error {}

function element(der: Uint8Array, at: number, limit = der.length): Element {
  if (at + 2 > limit) throw new DerError("truncated DER");
  const tag = der[at];
  let len = der[at + 1];
  let start = at + 2;
  if (len & 0x80) {
    const bytes = len & 0x7f;
    if (bytes === 0 || bytes > 4 || start + bytes > limit) throw new DerError("bad DER length");
    len = 0;
    for (let i = 0; i < bytes; i++) len = len * 256 + der[start + i];
    start += bytes;
  }
  if (start + len > limit) throw new DerError("DER element runs past its container");
  return { tag, start, end: start + len };
}

/** The elements inside a constructed element. */
function children(der: Uint8Array, parent: Element): Element[] {
  const out: Element[] = [];
  for (let at = parent.start; at < parent.end;) {
    const e = element(der, at, parent.end);
    out.push(e);
    at = e.end;
  }
  return out;
}

const SEQUENCE = 0x30;
const SET = 0x31;
const OID = 0x06;
const VERSION = 0xa0;

/** The fields of `tbsCertificate`, in order. */
function tbsFields(der: Uint8Array): Element[] {
  const cert = element(der, 0);
  if (cert.tag !== SEQUENCE) throw new DerError("not a certificate");
  const tbs = element(der, cert.start, cert.end);
  if (tbs.tag !== SEQUENCE) throw new DerError("not a certificate");
  return children(der, tbs);
}

/** The certificate's X.509 version: 1, 2 or 3. */
export function certificateVersion(der: Uint8Array): number {
  const first = tbsFields(der)[0];
  if (first?.tag !== VERSION) return 1;
  const v = element(der, first.start, first.end);
  return der[v.end - 1] + 1;
}

/** Short names GnuTLS prints for these attribute types; others appear as the dotted OID. */
const NAMES: Record<string, string> = {
  "2.5.4.3": "CN",
  "2.5.4.4": "SN",
  "2.5.4.5": "serialNumber",
  "2.5.4.6": "C",
  "2.5.4.7": "L",
  "2.5.4.8": "ST",
  "2.5.4.9": "street",
  "2.5.4.10": "O",
  "2.5.4.11": "OU",
  "2.5.4.12": "title",
  "2.5.4.42": "GN",
  "0.9.2342.19200300.100.1.1": "UID",
  "0.9.2342.19200300.100.1.25": "DC",
  "1.2.840.113549.1.9.1": "EMAIL",
};

function oidText(der: Uint8Array, e: Element): string {
  const parts: number[] = [];
  let value = 0;
  for (let i = e.start; i < e.end; i++) {
    value = value * 128 + (der[i] & 0x7f);
    if ((der[i] & 0x80) === 0) {
      if (parts.length === 0) {
        // The first subidentifier packs the first two arcs as 40 * X + Y.
        const x = value < 40 ? 0 : value < 80 ? 1 : 2;
        parts.push(x, value - 40 * x);
      } else {
        parts.push(value);
      }
      value = 0;
    }
  }
  return parts.join(".");
}

/** String types GnuTLS prints as text; anything else is printed as `#` and the DER in hex. */
const UTF8 = 0x0c;
const TEXT_TAGS = new Set([UTF8, 0x13, /* Printable */ 0x14, /* Teletex */ 0x16 /* IA5 */]);
const BMP = 0x1e;

function escapeValue(s: string): string {
  let out = s.replace(/[,+"\\<>;]/g, (c) => "\\" + c);
  if (out.startsWith("#") || out.startsWith(" ")) out = "\\" + out;
  if (out.endsWith(" ") && !out.endsWith("\\ ")) out = out.slice(0, -1) + "\\ ";
  return out;
}

function valueText(der: Uint8Array, at: number, e: Element): string {
  const bytes = der.subarray(e.start, e.end);
  if (TEXT_TAGS.has(e.tag)) {
    const text = e.tag === UTF8 ? new TextDecoder().decode(bytes) : String.fromCharCode(...bytes);
    return escapeValue(text);
  }
  if (e.tag === BMP) return escapeValue(new TextDecoder("utf-16be").decode(bytes));
  let hex = "#";
  for (let i = at; i < e.end; i++) hex += der[i].toString(16).padStart(2, "0");
  return hex;
}

/**
 * The subject DN of a DER certificate as QEMU 7.2 compares it with `authz-simple` identities
 * (SPEC 11): `O=Example,CN=client`.
 */
export function subjectDn(der: Uint8Array): string {
  const fields = tbsFields(der);
  // version? serialNumber signature issuer validity subject
  const subject = fields[fields[0]?.tag === VERSION ? 5 : 4];
  if (subject?.tag !== SEQUENCE) throw new DerError("certificate has no subject");
  const rdns: string[] = [];
  for (const rdn of children(der, subject)) {
    if (rdn.tag !== SET) throw new DerError("bad RDN");
    const atvs: string[] = [];
    for (const atv of children(der, rdn)) {
      const [type, value] = children(der, atv);
      if (type?.tag !== OID || value === undefined) throw new DerError("bad attribute");
      const oid = oidText(der, type);
      const valueAt = type.end;
      atvs.push(`${NAMES[oid] ?? oid}=${valueText(der, valueAt, value)}`);
    }
    rdns.push(atvs.join("+"));
  }
  return rdns.join(",");
}
