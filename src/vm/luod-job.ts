/**
 * What the guest job running luod across a kexec (vm/guest/luod-update.sh) leaves in its
 * output directory, judged on the host: luod's own errors, and whether luod in the next
 * kernel restored the update and handed every session back. Shared by the bench's live
 * update part (test/vm/update.ts) and `luoctl qualify` (src/qualify/real.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export function readIf(file: string): string {
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
}

/** Lines of a pino log (luod's, luo-qemu's) at level error (50) or fatal (60): any is a failure of the run. */
export function luodErrors(log: string): string[] {
  const errors: string[] = [];
  for (const line of log.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const entry = JSON.parse(line) as { level?: number; msg?: string; err?: { message?: string } };
      if ((entry.level ?? 0) >= 50)
        errors.push(`${entry.msg}${entry.err?.message ? `: ${entry.err.message}` : ''}`);
    } catch {
      // not a log line
    }
  }
  return errors;
}

/**
 * What is wrong with luod's status in boot 1 (`luod-status.boot1.json`, written by the
 * guest job): no update restored, or sessions nobody claimed. Empty when all is well.
 */
export function restoredProblems(dir: string): string[] {
  try {
    const s = JSON.parse(readIf(path.join(dir, 'luod-status.boot1.json'))) as {
      pending_claims?: string[];
      last_update?: { outcome?: string } | null;
    };
    const problems: string[] = [];
    if (s.last_update?.outcome !== 'rebooted')
      problems.push(
        `luod in boot 1 reports no update restored (last_update ${JSON.stringify(s.last_update)})`,
      );
    if ((s.pending_claims ?? []).length > 0)
      problems.push(`sessions never claimed: ${s.pending_claims!.join(', ')}`);
    return problems;
  } catch {
    return ['luoctl status --json in boot 1 gave no JSON (luod-status.boot1.json)'];
  }
}

/** The entries of a JSON-lines log (luo-qemu's) with this `event`. */
export function logEvents(log: string, event: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of log.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const entry = JSON.parse(line) as Record<string, unknown>;
      if (entry.event === event) out.push(entry);
    } catch {
      // not a log line
    }
  }
  return out;
}
