/**
 * Counts the `Deno.dlopen` calls `fn` makes (it stands in for Deno's own while `fn` runs).
 *
 * @module
 */

export function dlopenCalls(fn: () => void): number {
  const real = Deno.dlopen;
  let calls = 0;
  const counting = ((path, symbols) => {
    calls++;
    return real(path, symbols);
  }) as typeof Deno.dlopen;
  Object.defineProperty(Deno, "dlopen", { value: counting, configurable: true, writable: true });
  try {
    fn();
  } finally {
    Object.defineProperty(Deno, "dlopen", { value: real, configurable: true, writable: true });
  }
  return calls;
}
