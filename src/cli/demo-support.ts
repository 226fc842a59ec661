/** What both demos (example VMMs, QEMU VMs) need: this package's entries, and bounded waits. */
import { fileURLToPath } from 'node:url';
import { Errno } from '../sys/errno.js';
import { SysError } from '../sys/error.js';

/** A compiled entry of this package, or its TypeScript source when running under tsx. */
export function entry(relative: string): string[] {
  const self = fileURLToPath(import.meta.url);
  const file = fileURLToPath(
    new URL(relative.replace(/\.js$/, self.endsWith('.ts') ? '.ts' : '.js'), import.meta.url),
  );
  return self.endsWith('.ts') ? ['--import', 'tsx', file] : [file];
}

export async function waitFor<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined> | T | undefined,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new SysError('demo', Errno.ETIMEDOUT, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
