/** The kernel's LUO selftests as the bench runs them (vm/guest/selftests.sh) and reads their output. */

/** The kexec tests: stage 1 in one kernel, stage 2 in the next (all stage 1s share one kexec); `luoctl qualify` runs the same. */
export { KEXEC_SELFTESTS } from '../../src/qualify/real.js';

export interface TapResult {
  name: string;
  ok: boolean;
  skip: boolean;
}

/** kselftest TAP: `ok 3 name`, `not ok 3 name`, `ok 3 name # SKIP why`. */
export function tapResults(text: string): TapResult[] {
  const out: TapResult[] = [];
  for (const line of text.split('\n')) {
    const m = /^(not ok|ok) \d+ (.*?)(\s+#\s*(SKIP|skip).*)?$/.exec(line.trim());
    if (m) out.push({ name: m[2]!.trim(), ok: m[1] === 'ok', skip: m[3] !== undefined });
  }
  return out;
}
