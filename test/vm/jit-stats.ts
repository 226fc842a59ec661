/**
 * QEMU's translation-block statistics over time (LUOKIT_VM_JIT_STATS=MS; docs/vm.md, "The
 * 7.3 stall, measured"): HMP `info jit` over QMP every MS ms, each sample a
 * `[qemu jit] tbs=... invalidations=...` line in the run's console log, on the console's
 * own clock. Each sample walks QEMU's TB table, so it perturbs what it measures a little.
 */
import { QmpClient } from '../../src/qemu/qmp.js';
import type { ConsoleSampler } from '../../src/vm/qemu.js';

/** The counters of `info jit` that say what TCG spent its time on. */
const JIT_FIELDS: [string, RegExp][] = [
  ['tbs', /^TB count\s+(\d+)/m],
  ['flushes', /^TB flush count\s+(\d+)/m],
  ['invalidations', /^TB invalidate count\s+(\d+)/m],
  ['tlb_full_flushes', /^TLB full flushes\s+(\d+)/m],
  ['code_bytes', /^gen code size\s+(\d+)/m],
];

/** One `[qemu jit]` line from the text of `info jit`; '?' for a counter it lacks. */
export function jitLine(text: string): string {
  return `[qemu jit] ${JIT_FIELDS.map(([name, re]) => `${name}=${re.exec(text)?.[1] ?? '?'}`).join(' ')}`;
}

/** A sampler for QemuOptions.sampler, talking to QEMU's QMP socket `socket`. */
export function jitSampler(socket: string, everyMs: number): ConsoleSampler {
  return async (write, going) => {
    let qmp: QmpClient | undefined;
    try {
      qmp = await QmpClient.connect(socket, { timeoutMs: 20_000 });
      while (going()) {
        write(jitLine(String(await qmp.execute('human-monitor-command', { 'command-line': 'info jit' }))));
        await new Promise((resolve) => setTimeout(resolve, everyMs));
      }
    } catch (err) {
      if (going()) write(`[qemu jit] sampling stopped: ${(err as Error).message}`);
    } finally {
      qmp?.close();
    }
  };
}
