/**
 * `--metrics ADDR` (SPEC 12): an HTTP server with one resource, `GET /metrics`.
 *
 * @module
 */

import type { Logger } from "../log.ts";
import type { Address } from "../wire/address.ts";
import { StartupError } from "../wire/endpoint.ts";

/** The content type of the Prometheus text format. */
const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** A running metrics server. */
export interface MetricsServer {
  /** Where it listens (port 0 resolved). */
  readonly boundText: string;
  close(): Promise<void>;
}

/**
 * Serves `render()` at `GET /metrics` on a `tcp-listen:` or `unix-listen:` address. Throws a
 * `StartupError` naming `--metrics` when the address cannot be used.
 */
export async function serveMetrics(
  address: Address,
  render: () => string,
  log: Logger,
): Promise<MetricsServer> {
  const handler = (request: Request): Response => {
    const url = new URL(request.url);
    if (url.pathname !== "/metrics") {
      return new Response("colo-compare: the only resource is /metrics\n", { status: 404 });
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("GET only\n", { status: 405, headers: { allow: "GET, HEAD" } });
    }
    return new Response(request.method === "HEAD" ? null : render(), {
      headers: { "content-type": CONTENT_TYPE },
    });
  };
  const { promise: listening, resolve } = Promise.withResolvers<string>();
  const onError = (error: unknown) => {
    log.error("metrics-request-failed", { error: String(error) });
    return new Response("internal error\n", { status: 500 });
  };
  let server: Deno.HttpServer;
  try {
    server = address.transport === "tcp"
      ? Deno.serve({
        hostname: address.host,
        port: address.port,
        onListen: ({ hostname, port }) =>
          resolve(hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`),
        onError,
      }, handler)
      : Deno.serve({ path: address.path, onListen: () => resolve(address.path), onError }, handler);
  } catch (error) {
    throw new StartupError(
      `--metrics ${address.text}: cannot listen: ${(error as Error).message}; ` +
        "give a free port or a writable path",
    );
  }
  const boundText = await listening;
  log.info("listening", { endpoint: "metrics", address: boundText });
  return {
    boundText,
    async close() {
      await server.shutdown();
    },
  };
}
