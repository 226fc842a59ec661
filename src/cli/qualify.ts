/**
 * `luoctl qualify` (#16 part 3; docs/qualify.md). `--from A --to B`: one pair of real
 * kernel images qualified under QEMU (src/qualify/real.ts), its record written into
 * `--dir` (and as a page with `--html`); exit 0 pass, 1 fail, 3 the guest could not test.
 *
 * `--emulated`: every pair of the emulated
 * kernel's versions through the same small live update workload (a session holding a 1 MiB
 * memfd of a known pattern, an emulated kexec, then retrieve and compare every byte), its
 * outcome as a matrix (works, cold boot, panic, files lost), and each outcome checked
 * against the gate's verdict for the pair. The emulator writes handovers as 7.2/7.3 only,
 * so pairs from older versions are reported as not run. Exit 1 if any pair disagrees.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gateVerdict } from '../image/gate.js';
import { emulatedFormats, KERNEL_FORMATS, startEmulator, WRITABLE_VERSIONS } from '../kernel/emu/index.js';
import type { QualificationRecord } from '../qualify/record.js';
import { CodedError, errorCode } from '../sys/error.js';
import { pwriteAll, read } from '../sys/file.js';
import { memfdCreate } from '../sys/memfd.js';
import { packageVersion } from '../sys/package-version.js';
import type { RegisterCommand } from './environment.js';
import { commandAction, ExitCode, type Output } from './output.js';

const BYTES = 1 << 20;
const TOKEN = 1n;

export type PairOutcome = 'works' | 'cold-boot' | 'panic' | 'files-lost' | 'not-run';

export interface QualifiedPair {
  from: string;
  to: string;
  outcome: PairOutcome;
  detail: string;
  gate: string;
  agrees: boolean | null;
}

function pattern(): Buffer {
  const data = Buffer.alloc(BYTES);
  for (let i = 0; i < BYTES; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i);
  return data;
}

/** The workload on one pair, in a state directory of its own. */
export async function qualifyEmulatedPair(from: string, to: string, dir: string): Promise<QualifiedPair> {
  const gate = gateVerdict(emulatedFormats(from), emulatedFormats(to));
  const result = (outcome: PairOutcome, detail: string): QualifiedPair => ({
    from,
    to,
    outcome,
    detail,
    gate: gate.outcome,
    agrees: outcome === 'not-run' ? null : outcome === gate.outcome,
  });
  if (!WRITABLE_VERSIONS.has(from)) {
    return result('not-run', `the emulator writes handovers as ${[...WRITABLE_VERSIONS].join('/')} only`);
  }
  const emulator = await startEmulator({ stateDir: path.join(dir, `${from}-${to}`), kernel: from });
  try {
    const data = pattern();
    {
      const device = emulator.openDevice();
      const session = device.createSession('qualify');
      const memfd = memfdCreate('qualify');
      pwriteAll(memfd, data, 0);
      session.preserveFd(memfd, TOKEN);
      memfd.close();
      device.close();
      // The session stays preserved while an fd refers to it: this one, until the kexec.
    }
    const boot = (await emulator.kexec({ to })).boot;
    if (boot.outcome === 'panic') return result('panic', boot.detail);
    if (boot.outcome !== 'restored') return result('cold-boot', boot.detail);
    try {
      const device = emulator.openDevice();
      const session = device.retrieveSession('qualify');
      const fd = session.retrieveFd(TOKEN);
      const back = read(fd, BYTES, 0);
      fd.close();
      session.close();
      device.close();
      if (!back.equals(data)) return result('files-lost', 'the memfd came back with other bytes');
      return result('works', `${BYTES} bytes came back identical`);
    } catch (err) {
      return result('files-lost', `${errorCode(err)}: ${(err as Error).message}`);
    }
  } finally {
    await emulator.stop().catch(() => {});
  }
}

export async function qualifyEmulated(): Promise<QualifiedPair[]> {
  const versions = Object.keys(KERNEL_FORMATS);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-qualify-'));
  try {
    const pairs: QualifiedPair[] = [];
    for (const from of versions)
      for (const to of versions) pairs.push(await qualifyEmulatedPair(from, to, dir));
    return pairs;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function matrix(pairs: QualifiedPair[]): string {
  const versions = [...new Set(pairs.map((p) => p.from))];
  const cell = (p: QualifiedPair) =>
    p.outcome === 'not-run' ? '-' : `${p.outcome}${p.agrees ? '' : ` (gate: ${p.gate})`}`;
  const rows = [['from \\ to', ...versions]];
  for (const from of versions)
    rows.push([from, ...versions.map((to) => cell(pairs.find((p) => p.from === from && p.to === to)!))]);
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** Where records go, and where `luod --require-qualified` is pointed, unless told otherwise. */
export const DEFAULT_QUALIFIED_DIR = '/var/lib/luokit/qualified';
export function renderQualification(record: QualificationRecord, file: string): string {
  const lines = [
    `${record.from.release} -> ${record.to.release}: ${record.result.toUpperCase()} (${record.outcome}; the gate predicted ${record.gate.outcome}${record.agrees_with_gate === false ? ': DISAGREES' : ''})`,
  ];
  if (record.reason) lines.push(`  ${record.reason}`);
  if (record.workload.omitted?.length)
    lines.push(
      `  PARTIAL workload: ${record.workload.omitted.map((o) => `${o.part} (${o.why})`).join(', ')}`,
    );
  const label: Record<string, string> = { held: 'ok  ', failed: 'FAIL', lost: 'LOST', 'not-run': 'NRUN' };
  for (const c of record.checks)
    lines.push(
      `  ${label[c.outcome ?? (c.ok ? 'held' : 'failed')]} ${c.name}${c.detail && !c.ok ? ` (${c.detail})` : ''}`,
    );
  const b = record.blackout;
  if (b.total_ms !== undefined)
    lines.push(
      `  blackout ${b.total_ms} ms (update start -> every byte verified; kexec -> /init ${b.kexec_to_init_ms ?? '?'} ms), host clock under QEMU TCG`,
    );
  if (b.qemu_guest_pause_ms !== undefined)
    lines.push(`  the QEMU VM's pause by its own clocks: ${b.qemu_guest_pause_ms} ms`);
  lines.push(`record: ${file}`);
  if (record.run_dir) lines.push(`console and outputs: ${record.run_dir}`);
  return lines.join('\n');
}

export const register: RegisterCommand = (program) => {
  program
    .command('qualify')
    .description(
      'qualify a kernel pair for live update on the real kernels under QEMU (--from, --to), or every emulated pair (--emulated)',
    )
    .option('--from <image>', 'the kernel updated from (bzImage)')
    .option('--to <image>', 'the kernel updated into (bzImage)')
    .option(
      '--dir <dir>',
      'where the qualification record goes (luod --require-qualified reads it)',
      DEFAULT_QUALIFIED_DIR,
    )
    .option('--html <file>', 'also write the record as an HTML page')
    .option(
      '--selftests <dir>',
      "the kernel's LUO selftests, statically linked (tools/testing/selftests/liveupdate: liveupdate and the kexec tests)",
    )
    .option(
      '--scenarios <file>',
      "the scenario suite's guest program (one JavaScript file; the bench bundles test/vm/guest-scenarios.ts)",
    )
    .option(
      '--without <parts>',
      'leave parts of the workload out, comma-separated: selftests, scenarios, qemu (recorded in the record)',
    )
    .option('--timeout-scale <n>', 'multiply the guest timeout (10 minutes) on slow machines', '1')
    .option('--emulated', "every pair of the emulated kernel's versions, checked against the gate")
    .action(
      commandAction(async (command, out) => {
        const opts = command.opts<{
          emulated?: boolean;
          from?: string;
          to?: string;
          dir: string;
          html?: string;
          timeoutScale: string;
          selftests?: string;
          scenarios?: string;
          without?: string;
        }>();
        if (opts.emulated) return emulatedCommand(out);
        if (!opts.from || !opts.to) {
          throw new CodedError(
            'EINVAL',
            'give --from IMAGE and --to IMAGE (real kernels, under QEMU), or --emulated',
          );
        }
        const scale = Number(opts.timeoutScale);
        if (!(scale > 0))
          throw new CodedError('EINVAL', `--timeout-scale ${opts.timeoutScale}: a positive number`);
        const parts = workloadParts(opts);
        const { qualifyPair } = await import('../qualify/real.js');
        const { record, file } = await qualifyPair({
          ...parts,
          from: opts.from,
          to: opts.to,
          dir: path.resolve(opts.dir),
          luokitVersion: packageVersion(),
          timeoutScale: scale,
          log: (text) => process.stderr.write(`luoctl qualify: ${text}\n`),
        });
        if (opts.html) {
          const { qualificationHtml } = await import('../report/qualification.js');
          fs.writeFileSync(opts.html, qualificationHtml(record));
        }
        out.result({ ...record, file, ...(opts.html && { html: path.resolve(opts.html) }) }, () =>
          renderQualification(record, file),
        );
        return record.result === 'pass'
          ? ExitCode.ok
          : record.result === 'fail'
            ? ExitCode.failure
            : ExitCode.notRun;
      }),
    );
};

const OPTIONAL_PARTS = ['selftests', 'scenarios', 'qemu'] as const;

/**
 * The standard workload has every part; a part whose input is not given is an error, unless
 * it is left out by name (--without), which the record then says: a qualification never
 * runs less than the standard workload silently.
 */
export function workloadParts(opts: { selftests?: string; scenarios?: string; without?: string }): {
  selftests?: string;
  scenarios?: string;
  qemu: boolean;
  omitted: { part: (typeof OPTIONAL_PARTS)[number]; why: string }[];
} {
  const without = new Set((opts.without ?? '').split(',').filter((p) => p !== ''));
  for (const p of without)
    if (!(OPTIONAL_PARTS as readonly string[]).includes(p))
      throw new CodedError(
        'EINVAL',
        `--without ${p}: the parts that can be left out are ${OPTIONAL_PARTS.join(', ')}`,
      );
  for (const [part, given] of [
    ['selftests', opts.selftests],
    ['scenarios', opts.scenarios],
  ] as const) {
    if (given !== undefined && without.has(part))
      throw new CodedError('EINVAL', `--${part} and --without ${part} contradict each other`);
    if (given === undefined && !without.has(part))
      throw new CodedError(
        'EINVAL',
        `the standard workload runs the ${part === 'selftests' ? "kernel's kexec selftests: give --selftests DIR" : "scenario suite's two-stage scenarios: give --scenarios FILE"} (or leave them out: --without ${part})`,
      );
  }
  return {
    ...(opts.selftests !== undefined && { selftests: opts.selftests }),
    ...(opts.scenarios !== undefined && { scenarios: opts.scenarios }),
    qemu: !without.has('qemu'),
    omitted: OPTIONAL_PARTS.filter((p) => without.has(p)).map((part) => ({
      part,
      why: `left out by --without ${part}`,
    })),
  };
}

async function emulatedCommand(out: Output): Promise<ExitCode> {
  const pairs = await qualifyEmulated();
  const disagree = pairs.filter((p) => p.agrees === false);
  out.result({ pairs, agrees: disagree.length === 0 }, () =>
    [
      matrix(pairs),
      '',
      '-: not run (the emulator writes 7.2/7.3 handovers only)',
      disagree.length === 0
        ? 'every pair run agrees with the gate'
        : `DISAGREE with the gate: ${disagree.map((p) => `${p.from} -> ${p.to}`).join(', ')}`,
    ].join('\n'),
  );
  return disagree.length === 0 ? ExitCode.ok : ExitCode.failure;
}
