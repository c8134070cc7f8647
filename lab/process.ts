/**
 * A long-running child of the lab (a QEMU, the comparator): its stdout and stderr go line by
 * line into a log file in the run directory, a caller can await a line, and stopping it always
 * ends with the process reaped (SIGTERM, then SIGKILL after a grace period).
 *
 * @module
 */

/** A started child process. */
export class Child {
  readonly name: string;
  readonly pid: number;
  readonly status: Promise<Deno.CommandStatus>;
  /** Every output line so far (stdout and stderr interleaved as read). */
  readonly lines: string[] = [];
  #exited = false;
  #waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  #listeners: ((line: string) => void)[] = [];
  readonly #child: Deno.ChildProcess;
  readonly #done: Promise<void>;
  readonly #log: Deno.FsFile;

  constructor(
    name: string,
    cmd: string,
    args: string[],
    logPath: string,
    env?: Record<string, string>,
  ) {
    this.name = name;
    this.#log = Deno.openSync(logPath, { write: true, create: true, append: true });
    this.#child = new Deno.Command(cmd, {
      args,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.pid = this.#child.pid;
    this.status = this.#child.status.then((s) => {
      this.#exited = true;
      return s;
    });
    this.#done = Promise.all([this.#pump(this.#child.stdout), this.#pump(this.#child.stderr)])
      .then(() => this.#log.close());
  }

  /** True until the process has exited. */
  get running(): boolean {
    return !this.#exited;
  }

  /** Calls `fn` on every line from now on. */
  onLine(fn: (line: string) => void): void {
    this.#listeners.push(fn);
  }

  /** The first line (already read or still to come) matching `re`. */
  waitForLine(re: RegExp, timeoutMs: number): Promise<string> {
    const found = this.lines.find((l) => re.test(l));
    if (found !== undefined) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const entry = { re, resolve: (l: string) => settle(() => resolve(l)) };
      const settle = (f: () => void) => {
        clearTimeout(timer);
        this.#waiters = this.#waiters.filter((w) => w !== entry);
        f();
      };
      const timer = setTimeout(
        () =>
          settle(() =>
            reject(new Error(`${this.name}: no line matching ${re} in ${timeoutMs} ms`))
          ),
        timeoutMs,
      );
      this.#waiters.push(entry);
      this.#done.then(() => {
        if (this.#waiters.includes(entry)) {
          settle(() =>
            reject(new Error(`${this.name} exited before printing ${re}: ${this.tail()}`))
          );
        }
      });
    });
  }

  /** The last few output lines, for an error message. */
  tail(n = 5): string {
    return this.lines.slice(-n).join(" | ");
  }

  /** Sends `signal` (default SIGKILL) unless it has already exited. */
  kill(signal: Deno.Signal = "SIGKILL"): void {
    if (!this.#exited) {
      try {
        this.#child.kill(signal);
      } catch {
        // exited meanwhile
      }
    }
  }

  /** SIGTERM, SIGKILL after `graceMs`; resolves once it is reaped and its output read. */
  async stop(graceMs = 5_000): Promise<Deno.CommandStatus> {
    this.kill("SIGTERM");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const killer = new Promise<void>((r) => timer = setTimeout(r, graceMs)).then(() => this.kill());
    const s = await Promise.race([this.status, killer.then(() => this.status)]);
    clearTimeout(timer);
    await this.#done;
    return s;
  }

  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    const encoder = new TextEncoder();
    let rest = "";
    const emit = (line: string) => {
      this.lines.push(line);
      this.#log.writeSync(encoder.encode(line + "\n"));
      for (const f of this.#listeners) f(line);
      for (const w of [...this.#waiters]) if (w.re.test(line)) w.resolve(line);
    };
    for await (const chunk of stream) {
      rest += decoder.decode(chunk, { stream: true }).replaceAll("\r", "");
      let nl;
      while ((nl = rest.indexOf("\n")) >= 0) {
        emit(rest.slice(0, nl));
        rest = rest.slice(nl + 1);
      }
    }
    if (rest) emit(rest);
  }
}
