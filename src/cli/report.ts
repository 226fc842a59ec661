/**
 * `luoctl report [UPDATE] [--html FILE]`: an update's record (the latest
 * without UPDATE) as a summary, as JSON, or as a self-contained HTML page
 * with its timeline.
 *
 * Records are read from luod's records directory: --records DIR, or the
 * emulator's (--state DIR), or the one the running luod reports in STATUS,
 * or the default /var/lib/luod/updates. A damaged record is named, never
 * shown in part.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import type { UpdateRecord } from '../record/format.js';
import {
  DEFAULT_RECORDS_DIR,
  emulatedRecordsDir,
  latestRecord,
  readRecordFile,
  recordPath,
} from '../record/store.js';
import { reportHtml } from '../report/html.js';
import { reportText } from '../report/text.js';
import { writeFileAtomic } from '../sys/atomic-file.js';
import { Errno } from '../sys/errno.js';
import { CodedError, errorCode, SysError } from '../sys/error.js';
import type { RegisterCommand } from './environment.js';
import { askLuod } from './luod-connection.js';
import { commandAction, ExitCode } from './output.js';

interface ReportOptions {
  html?: string;
  records?: string;
  state?: string;
}

/** Which records directory to read, and how it was chosen. */
async function recordsDir(options: ReportOptions, socket: string | undefined): Promise<string> {
  if (options.records && options.state)
    throw new SysError('report', Errno.EINVAL, '--records and --state exclude each other');
  if (options.records) return path.resolve(options.records);
  if (options.state) return emulatedRecordsDir(options.state);
  let why: string;
  try {
    const status = await askLuod({ cmd: 'STATUS' }, { socket });
    if (status.ok && typeof status.records_dir === 'string') return status.records_dir;
    why = 'luod did not say where its records are';
  } catch (err) {
    why = (err as Error).message;
  }
  if (fs.existsSync(DEFAULT_RECORDS_DIR)) return DEFAULT_RECORDS_DIR;
  throw new SysError(
    'report',
    Errno.ENOENT,
    `no records directory: ${why}, and ${DEFAULT_RECORDS_DIR} does not exist (use --records DIR, or --state DIR for the emulator)`,
  );
}

/** Write the page atomically, so a half-written report is never left behind. */
function writeHtml(file: string, record: UpdateRecord): string {
  const target = path.resolve(file);
  try {
    writeFileAtomic(target, reportHtml(record));
  } catch (err) {
    const code = errorCode(err);
    throw new CodedError(code, `cannot write ${target}: ${code}`);
  }
  return target;
}

export const register: RegisterCommand = (program) => {
  program
    .command('report')
    .description("an update's record: phases, clients, where the blackout went (the latest without UPDATE)")
    .argument('[update]', 'update id (e.g. u-20260101T120000-1a2b)')
    .option('--html <file>', 'also write a self-contained HTML page with the SVG timeline')
    .option('--records <dir>', `luod's records directory (default: luod's, else ${DEFAULT_RECORDS_DIR})`)
    .option('--state <dir>', "the emulated kernel's state directory (its records are in DIR/updates)")
    .action(
      commandAction(async (command: Command, out) => {
        const options = command.opts<ReportOptions>();
        const update = command.args[0];
        const socket = command.optsWithGlobals<{ socket?: string }>().socket;
        const dir = await recordsDir(options, socket);
        let record: UpdateRecord;
        let file: string;
        let skipped: { path: string; reason: string }[] = [];
        if (update !== undefined) {
          file = recordPath(dir, update);
          if (!fs.existsSync(file))
            throw new SysError('report', Errno.ENOENT, `no record of update ${update} in ${dir}`);
          record = readRecordFile(file);
        } else {
          ({ record, path: file, skipped } = latestRecord(dir));
        }
        const html = options.html ? writeHtml(options.html, record) : null;
        if (!out.json)
          for (const s of skipped) process.stderr.write(`luoctl: report: skipped: ${s.reason}\n`);
        out.result({ ok: true, path: file, html, skipped, record }, () =>
          [reportText(record), '', `record: ${file}`, ...(html ? [`html report: ${html}`] : [])].join('\n'),
        );
        return ExitCode.ok;
      }),
    );
};
