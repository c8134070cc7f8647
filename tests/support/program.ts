/**
 * Runs the real program (`main.ts`) as a subprocess for end-to-end tests: starts it with
 * listen endpoints on port 0, learns the ports from its `event=listening` lines, and stops it
 * with a signal.
 *
 * @module
 */

import { connectRetry } from "./net.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** A running comparator process. */
export interface Program {
  /** The process id. */
  pid: number;
  /** Ports of the tcp-listen endpoints, by endpoint name. */
  ports: Record<string, number>;
  /** Every stderr line so far. */
  stderr: string[];
  /** Resolves when a stderr line matches. */
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Sends a signal and waits for exit; returns the status and all stderr. */
  stop(signal?: Deno.Signal): Promise<{ code: number; stderr: string }>;
  /** The exit status, once it has exited on its own. */
  status: Promise<Deno.CommandStatus>;
}

/** Options for {@linkcode startProgram}. */
export interface StartOptions {
  /** Extra flags after the four endpoint flags. */
  flags?: string[];
  /** Replace the endpoint flags entirely (then `ports` holds what the log reports). */
  endpoints?: string[];
  /** Omit --notify-dev. */
  noNotify?: boolean;
  /** Flags for `deno run` itself (`--v8-flags=...`). */
  denoFlags?: string[];
  /** The permission flags of `deno run` (default `-A`). */
  permissions?: string[];
  /** The stderr line `startProgram` waits for (default `event=ready`). */
  readyLine?: RegExp;
}

/** `--primary-in` and `--secondary-in` as unix sockets the program makes in `dir`. */
export function unixInputEndpoints(dir: string): string[] {
  return [
    "--primary-in",
    `unix-listen:${dir}/pri.sock`,
    "--secondary-in",
    `unix-listen:${dir}/sec.sock`,
  ];
}

/**
 * Connects to `program`'s primary-in and secondary-in: on the unix sockets
 * {@linkcode unixInputEndpoints} made in `dir`, or on TCP where `dir` is null.
 */
export async function connectInputStreams(
  program: Program,
  dir: string | null,
): Promise<{ pri: Deno.Conn; sec: Deno.Conn }> {
  const input = (name: string, endpoint: string) =>
    dir === null
      ? connectRetry(program.ports[endpoint])
      : Deno.connect({ transport: "unix", path: `${dir}/${name}.sock` });
  const pri = await input("pri", "primary-in");
  const sec = await input("sec", "secondary-in");
  return { pri, sec };
}

/** The endpoint flags of a test run: every stream on tcp-listen:127.0.0.1:0. */
export function listenEndpoints(noNotify = false): string[] {
  return [
    "--primary-in",
    "tcp-listen:127.0.0.1:0",
    "--secondary-in",
    "tcp-listen:127.0.0.1:0",
    "--outdev",
    "tcp-listen:127.0.0.1:0",
    ...(noNotify ? [] : ["--notify-dev", "tcp-listen:127.0.0.1:0"]),
  ];
}

/**
 * Starts `deno run main.ts` with tcp-listen:127.0.0.1:0 endpoints and waits for `ready` (or
 * `options.readyLine`).
 */
export async function startProgram(options: StartOptions = {}): Promise<Program> {
  const endpoints = options.endpoints ?? listenEndpoints(options.noNotify);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...(options.permissions ?? ["-A"]),
      ...(options.denoFlags ?? []),
      MAIN,
      ...endpoints,
      ...(options.flags ?? []),
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  let waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  const reading = (async () => {
    const decoder = new TextDecoder();
    let rest = "";
    for await (const chunk of child.stderr) {
      rest += decoder.decode(chunk, { stream: true });
      let nl;
      while ((nl = rest.indexOf("\n")) >= 0) {
        const line = rest.slice(0, nl);
        rest = rest.slice(nl + 1);
        lines.push(line);
        waiters = waiters.filter((w) => {
          if (!w.re.test(line)) return true;
          w.resolve(line);
          return false;
        });
      }
    }
    if (rest) lines.push(rest);
  })();
  const status = child.status;
  const waitForLine = (re: RegExp, timeoutMs = 10_000): Promise<string> => {
    const found = lines.find((l) => re.test(l));
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        waiters = waiters.filter((w) => w.re !== re);
        reject(new Error(`no stderr line matching ${re} in ${timeoutMs} ms:\n${lines.join("\n")}`));
      }, timeoutMs);
      const done = (l: string) => {
        clearTimeout(timer);
        resolve(l);
      };
      waiters.push({ re, resolve: done });
      status.then(() => {
        if (waiters.some((w) => w.resolve === done)) {
          waiters = waiters.filter((w) => w.resolve !== done);
          clearTimeout(timer);
          reading.then(() => {
            const late = lines.find((l) => re.test(l));
            if (late) resolve(late);
            else reject(new Error(`program exited before printing ${re}:\n${lines.join("\n")}`));
          });
        }
      });
    });
  };
  const stop = async (signal: Deno.Signal = "SIGTERM") => {
    try {
      child.kill(signal);
    } catch {
      // already exited
    }
    const s = await status;
    await reading;
    return { code: s.code, stderr: lines.join("\n") };
  };
  try {
    await waitForLine(options.readyLine ?? /event=ready/);
  } catch (error) {
    await stop("SIGKILL");
    throw error;
  }
  const ports: Record<string, number> = {};
  for (const l of lines) {
    const m = /event=listening endpoint=(\S+) address=\S*:(\d+)$/.exec(l);
    if (m) ports[m[1]] = Number(m[2]);
  }
  return { pid: child.pid, ports, stderr: lines, waitForLine, stop, status };
}
