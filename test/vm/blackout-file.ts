/**
 * build/vm/blackout.{json,txt}: the live update part (luod and the floor, per kernel pair)
 * and the QEMU part (a real QEMU VM, per kernel pair) each write their own section; a part
 * run alone (`--only qemu`) keeps the other's section from the last run that wrote it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type BlackoutFile, type BlackoutReport, CLOCK, formatBlackouts } from './blackout.js';
import { formatQemuBlackout, type QemuBlackout } from './qemu-blackout.js';

export function mergeBlackoutFile(
  before: Partial<BlackoutFile> | undefined,
  part: { pairs: BlackoutReport[] } | { qemu: QemuBlackout[] },
): BlackoutFile {
  const qemu = 'qemu' in part ? part.qemu : before?.qemu;
  return {
    clock: CLOCK,
    pairs: 'pairs' in part ? part.pairs : (before?.pairs ?? []),
    ...(qemu !== undefined && { qemu }),
  };
}

export function formatBlackoutFile(file: BlackoutFile): string {
  return [formatBlackouts(file.pairs), ...(file.qemu ?? []).map(formatQemuBlackout)]
    .filter((t) => t !== '')
    .join('\n');
}

/** Write this part's section into OUT/blackout.{json,txt}; returns the text. */
export function writeBlackoutFiles(
  out: string,
  part: { pairs: BlackoutReport[] } | { qemu: QemuBlackout[] },
): string {
  const json = path.join(out, 'blackout.json');
  let before: Partial<BlackoutFile> | undefined;
  try {
    before = JSON.parse(fs.readFileSync(json, 'utf8')) as Partial<BlackoutFile>;
  } catch {
    before = undefined; // none yet, or unreadable: this part's section alone
  }
  const file = mergeBlackoutFile(before, part);
  fs.writeFileSync(json, `${JSON.stringify(file, null, 2)}\n`);
  const text = formatBlackoutFile(file);
  fs.writeFileSync(path.join(out, 'blackout.txt'), text);
  return text;
}
