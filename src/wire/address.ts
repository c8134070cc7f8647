/**
 * Endpoint addresses (SPEC 2): `tcp:HOST:PORT`, `tcp-listen:HOST:PORT`, `unix:PATH`,
 * `unix-listen:PATH`; IPv6 hosts in brackets. `tls:HOST:PORT` and `tls-listen:HOST:PORT` are
 * the TCP forms with TLS (SPEC 11).
 *
 * @module
 */

/** A parsed endpoint address. */
export type Address =
  | { transport: "tcp"; listen: boolean; host: string; port: number; tls: boolean; text: string }
  | { transport: "unix"; listen: boolean; path: string; text: string };

/** True for the TLS forms, `tls:` and `tls-listen:`. */
export function usesTls(a: Address): boolean {
  return a.transport === "tcp" && a.tls;
}

/**
 * The port of a bound TCP address as `boundText` and `Comparator.addresses()` write it
 * (`127.0.0.1:40312`, `[::1]:40312`).
 */
export function boundPort(text: string): number {
  return Number(text.slice(text.lastIndexOf(":") + 1));
}

/** Longest unix socket path the kernel accepts (sun_path is 108 bytes with the NUL). */
const UNIX_PATH_MAX = 107;

/** Thrown with a message that says what is wrong and what a valid address looks like. */
export class AddressError extends Error {}

const EXAMPLES = "tcp:HOST:PORT, tcp-listen:HOST:PORT, tls:HOST:PORT, tls-listen:HOST:PORT, " +
  "unix:PATH or unix-listen:PATH " +
  "(e.g. tcp-listen:127.0.0.1:9001, tcp:[::1]:9001, unix-listen:/run/colo/primary.sock)";

/** Parses an address; throws {@linkcode AddressError}. */
export function parseAddress(text: string): Address {
  const colon = text.indexOf(":");
  const scheme = colon < 0 ? "" : text.slice(0, colon);
  const rest = colon < 0 ? "" : text.slice(colon + 1);
  switch (scheme) {
    case "tcp":
    case "tcp-listen":
      return parseTcp(text, rest, scheme === "tcp-listen", false);
    case "tls":
    case "tls-listen":
      return parseTcp(text, rest, scheme === "tls-listen", true);
    case "unix":
    case "unix-listen": {
      if (rest === "") throw new AddressError(`"${text}" has no socket path; expected ${EXAMPLES}`);
      if (new TextEncoder().encode(rest).length > UNIX_PATH_MAX) {
        throw new AddressError(
          `"${text}": unix socket paths are limited to ${UNIX_PATH_MAX} bytes; use a shorter path`,
        );
      }
      return { transport: "unix", listen: scheme === "unix-listen", path: rest, text };
    }
    default:
      throw new AddressError(`"${text}" is not an address; expected ${EXAMPLES}`);
  }
}

function parseTcp(text: string, rest: string, listen: boolean, tls: boolean): Address {
  let host: string;
  let portText: string;
  if (rest.startsWith("[")) {
    const close = rest.indexOf("]");
    if (close < 0 || rest[close + 1] !== ":") {
      throw new AddressError(
        `"${text}": write IPv6 hosts as [ADDR]:PORT, e.g. tcp-listen:[::1]:9001`,
      );
    }
    host = rest.slice(1, close);
    portText = rest.slice(close + 2);
    if (!/^[0-9a-fA-F:.]+(%[\w.-]+)?$/.test(host) || !host.includes(":")) {
      throw new AddressError(`"${text}": "${host}" is not an IPv6 address`);
    }
  } else {
    const last = rest.lastIndexOf(":");
    if (last < 0) throw new AddressError(`"${text}" has no port; expected ${EXAMPLES}`);
    host = rest.slice(0, last);
    portText = rest.slice(last + 1);
    if (host.includes(":")) {
      throw new AddressError(
        `"${text}": write IPv6 hosts in brackets, e.g. tcp:[${host}]:${portText}`,
      );
    }
    if (host === "" || !/^[A-Za-z0-9.-]+$/.test(host)) {
      throw new AddressError(`"${text}": "${host}" is not a host name or IP address`);
    }
  }
  if (!/^[0-9]{1,5}$/.test(portText) || Number(portText) > 65535) {
    throw new AddressError(`"${text}": "${portText}" is not a port (0-65535)`);
  }
  const port = Number(portText);
  if (port === 0 && !listen) {
    throw new AddressError(`"${text}": port 0 can only be used to listen; give the peer's port`);
  }
  return { transport: "tcp", listen, host, port, tls, text };
}

/** Two addresses name the same socket. */
export function sameAddress(a: Address, b: Address): boolean {
  if (a.transport === "unix" && b.transport === "unix") return a.path === b.path;
  if (a.transport === "tcp" && b.transport === "tcp") {
    return a.port !== 0 && a.port === b.port && a.listen === b.listen &&
      a.host.toLowerCase() === b.host.toLowerCase();
  }
  return false;
}
