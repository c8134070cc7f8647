/**
 * Running a short host command to completion (apt-get, dpkg, cc), with its output kept for the
 * error message when it fails.
 *
 * @module
 */

/** What a finished command printed. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `cmd args...` and waits for it; never throws for a non-zero exit. */
export async function run(
  cmd: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<RunResult> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd: options.cwd,
    env: options.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

/** Runs a command and throws, with its stderr, when it fails. */
export async function runOk(
  cmd: string,
  args: string[],
  options: { cwd?: string } = {},
): Promise<string> {
  const r = await run(cmd, args, options);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(" ")} failed (exit ${r.code}): ${r.stderr.trim()}`);
  }
  return r.stdout;
}

/** True when `cmd` can be started at all (installed and on PATH). */
export async function have(cmd: string, versionFlag = "--version"): Promise<boolean> {
  try {
    return (await run(cmd, [versionFlag])).code === 0;
  } catch {
    return false;
  }
}
