/** Placeholder until the demo lands. */
export function runDemo(_o: { logLevel: string | null }): Promise<number> {
  return Promise.resolve(1);
}
