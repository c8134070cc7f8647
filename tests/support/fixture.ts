/**
 * End-to-end fixture: the real program plus a client on each of its four sockets.
 *
 * @module
 */

import { connectRetry, FrameCollector } from "./net.ts";
import { type Program, type StartOptions, startProgram } from "./program.ts";
import { framed, notifyMessage } from "./packets.ts";
import { writeAll } from "../../src/wire/transport.ts";

/** The program and a peer on each stream. */
export interface Rig {
  program: Program;
  primary: Deno.TcpConn;
  secondary: Deno.TcpConn;
  outdev: FrameCollector;
  notifyConn: Deno.TcpConn;
  notify: FrameCollector;
  /** Writes one framed frame to primary-in (or secondary-in). */
  sendPrimary(frame: Uint8Array, vnetLen?: number): Promise<void>;
  sendSecondary(frame: Uint8Array, vnetLen?: number): Promise<void>;
  /** Writes a notify message. */
  sendNotify(text: string): Promise<void>;
  /** Notify messages received so far, as text. */
  notifyTexts(): string[];
  /** Closes the peers and stops the program; returns its exit status and stderr. */
  close(): Promise<{ code: number; stderr: string }>;
}

/** Starts the program with tcp-listen:127.0.0.1:0 endpoints and connects to all four. */
export async function startRig(options: StartOptions & { vnet?: boolean } = {}): Promise<Rig> {
  const flags = [...(options.flags ?? []), ...(options.vnet ? ["--vnet-hdr-support"] : [])];
  const program = await startProgram({ ...options, flags });
  const p = program.ports;
  const primary = await connectRetry(p["primary-in"]);
  const secondary = await connectRetry(p["secondary-in"]);
  const outdev = new FrameCollector(await connectRetry(p["outdev"]), options.vnet ?? false);
  const notifyConn = await connectRetry(p["notify-dev"]);
  const notify = new FrameCollector(notifyConn);
  // Wait until the program has accepted all four peers.
  for (const name of ["primary-in", "secondary-in", "outdev", "notify-dev"]) {
    await program.waitForLine(new RegExp(`event=peer-connected endpoint=${name} `));
  }
  const decoder = new TextDecoder();
  return {
    program,
    primary,
    secondary,
    outdev,
    notifyConn,
    notify,
    sendPrimary: (f, v) => writeAll(primary, framed(f, options.vnet ? (v ?? 0) : undefined)),
    sendSecondary: (f, v) => writeAll(secondary, framed(f, options.vnet ? (v ?? 0) : undefined)),
    sendNotify: (text) => writeAll(notifyConn, notifyMessage(text)),
    notifyTexts: () => notify.frames.map((f) => decoder.decode(f.data)),
    async close() {
      for (const c of [primary, secondary]) {
        try {
          c.close();
        } catch {
          // already closed
        }
      }
      await outdev.close();
      await notify.close();
      return await program.stop();
    },
  };
}
