/**
 * The bench's part `qualify` (#16 part 3; docs/qualify.md): the real `luoctl qualify --from
 * A --to B --dir DIR --html FILE --json` on each pair of the bench's kernels, one pair
 * after the other (by default 7.2 -> 7.2, 7.2 -> 7.3 and the downgrade 7.3 -> 7.2), and
 * then on its records:
 *  - the command's exit status agrees with the record (0 pass, 1 fail, 3 not run);
 *  - the record is a valid `luokit.qualification/1` (read back with the schema), names both
 *    kernels as kernel-info reads them, and its outcome is what the gate predicted;
 *  - the standard workload ran (`--selftests`: the kernel's kexec selftests of the first
 *    kernel's source; `--scenarios`: the scenario suite's guest program; luod with VMMs; a
 *    QEMU VM through luo-qemu), every part with checks in both kernels, nothing omitted;
 *  - the pair passes (every check held: each selftest's two stages, each scenario's two
 *    stages, luod, the memfd sessions, the QEMU VM, the one kexec, the restore, every
 *    byte), and the HTML page shows the same verdict;
 *  - `luod --require-qualified DIR` would let the pair through (qualify/policy.ts on DIR).
 * The next kernel's KHO and LUO lines (handover.boot1.txt) go into the check's detail: the
 * evidence of what the real kernels did with the handover.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readKernelInfo } from '../../src/image/kernel-info.js';
import { qualificationVerdict } from '../../src/qualify/policy.js';
import { type QualificationRecord, readQualification } from '../../src/qualify/record.js';
import { type BenchContext, guestPrograms, type UpdatePair } from './update.js';

/** The pairs the issue asks for: same version, upgrade, downgrade. */
export const QUALIFY_PAIRS = '7.2,7.2;7.2,7.3;7.3,7.2';

/** A pair, and the kernel's selftests of its first kernel's source (static: `luoctl qualify --selftests`). */
export interface QualifyPair extends UpdatePair {
  selftests: string;
}

/** `scenarios`: the scenario suite's guest program, bundled (`luoctl qualify --scenarios`). */
export async function qualifications(
  ctx: BenchContext,
  pairs: readonly QualifyPair[],
  scenarios: string,
): Promise<void> {
  // The guest runs the installed luokit (dist/): the bench's own build, rebuilt only if stale.
  await guestPrograms(ctx);
  const dir = path.join(ctx.out, 'qualified');
  fs.rmSync(dir, { recursive: true, force: true });
  for (const pair of pairs) await qualifyOne(ctx, pair, dir, scenarios);
}

async function qualifyOne(
  ctx: BenchContext,
  pair: QualifyPair,
  dir: string,
  scenarios: string,
): Promise<void> {
  const [from, to] = [pair.kernels[0]!, pair.kernels[1] ?? pair.kernels[0]!];
  const html = path.join(dir, `${pair.runLabel}.html`);
  fs.mkdirSync(dir, { recursive: true });
  ctx.log(
    `qualify ${pair.label}: luoctl qualify (one QEMU run, console under ${path.relative(ctx.root, dir)}/runs)`,
  );
  const started = performance.now();
  const r = await ctx.run(
    process.execPath,
    [
      'dist/cli/luoctl.js',
      'qualify',
      '--from',
      from,
      '--to',
      to,
      '--dir',
      dir,
      '--html',
      html,
      '--selftests',
      pair.selftests,
      '--scenarios',
      scenarios,
      '--json',
      '--timeout-scale',
      String(ctx.timeoutScale),
    ],
    { prefix: `[qualify ${pair.label}] ` },
  );
  ctx.timings[`qualify ${pair.label}, s`] = Math.round((performance.now() - started) / 100) / 10;
  const name = (what: string) => `qualify ${pair.label}: ${what}`;
  let reply: (QualificationRecord & { file: string; html?: string }) | undefined;
  try {
    reply = JSON.parse(r.stdout);
  } catch {
    // below
  }
  if (reply?.file === undefined) {
    ctx.check(
      name('luoctl qualify --json writes a record'),
      'fail',
      `exit ${r.status}: ${r.stdout}${r.stderr}`.slice(0, 600),
    );
    return;
  }
  if (reply.result === 'not-run') {
    ctx.check(name('the guest could test'), 'infra', reply.reason);
    return;
  }
  const expectedExit = reply.result === 'pass' ? 0 : 1;
  ctx.check(
    name(`exit status ${expectedExit} for a ${reply.result}`),
    r.status === expectedExit ? 'pass' : 'fail',
    `exit ${r.status}`,
  );
  let record: QualificationRecord | undefined;
  try {
    record = readQualification(reply.file);
  } catch (err) {
    ctx.check(name('the record reads back with its schema'), 'fail', (err as Error).message);
    return;
  }
  ctx.check(name('the record reads back with its schema'), 'pass');
  const [fromInfo, toInfo] = [await readKernelInfo(from), await readKernelInfo(to)];
  const same = (a: { kho?: string; luo?: string; files: string[] }, b: typeof a) =>
    a.kho === b.kho && a.luo === b.luo && a.files.join(' ') === b.files.join(' ');
  const named =
    record.from.release === fromInfo.release &&
    record.to.release === toInfo.release &&
    same(record.from.formats, fromInfo.formats) &&
    same(record.to.formats, toInfo.formats);
  ctx.check(
    name('the record names both kernels and their formats as kernel-info reads them'),
    named ? 'pass' : 'fail',
    `${record.from.release} ${JSON.stringify(record.from.formats)} -> ${record.to.release} ${JSON.stringify(record.to.formats)}`,
  );
  const evidence = fs.existsSync(path.join(record.run_dir ?? '', 'handover.boot1.txt'))
    ? fs.readFileSync(path.join(record.run_dir!, 'handover.boot1.txt'), 'utf8').trim().split('\n').join(' | ')
    : 'no kernel log of boot 1';
  ctx.log(`qualify ${pair.label}: ${record.result} (${record.outcome}); the next kernel said: ${evidence}`);
  ctx.check(
    name(`the real kernels did what the gate predicted (${record.gate.outcome})`),
    record.agrees_with_gate ? 'pass' : 'fail',
    `outcome ${record.outcome}; ${evidence}`,
  );
  // The whole standard workload ran, every part in both kernels, and every check held.
  const perPart = (['kernel', 'selftests', 'scenarios', 'luod', 'qemu'] as const).map((part) => {
    const of = record.checks.filter((c) => c.part === part);
    const inA = of.filter((c) => c.kernel === 'from').length;
    const inB = of.filter((c) => c.kernel === 'to').length;
    ctx.timings[`qualify ${pair.label}: ${part} checks (A + B)`] = `${inA} + ${inB}`;
    return { part, inA, inB };
  });
  const missing = perPart.filter((p) => p.inA === 0 || p.inB === 0).map((p) => p.part);
  ctx.check(
    name('the standard workload: every part has checks in both kernels, nothing omitted'),
    missing.length === 0 && (record.workload.omitted ?? []).length === 0 ? 'pass' : 'fail',
    missing.length ? `no checks in one kernel for ${missing.join(', ')}` : undefined,
  );
  const failed = record.checks.filter((c) => !c.ok);
  ctx.check(
    name(
      `qualified: ${record.checks.length} checks held (selftests, scenarios, luod and memfds, QEMU VM; one kexec)`,
    ),
    record.result === 'pass' &&
      failed.length === 0 &&
      record.checks.length > 0 &&
      record.checks.every((c) => c.outcome === 'held')
      ? 'pass'
      : 'fail',
    failed.map((c) => `${c.name} [${c.outcome}]: ${c.detail ?? ''}`).join('; ') || record.reason,
  );
  const page = fs.existsSync(html) ? fs.readFileSync(html, 'utf8') : '';
  ctx.check(
    name('--html writes the page with the same verdict and every check'),
    page.includes(`data-result="${record.result}"`) &&
      (page.match(/data-check=/g) ?? []).length === record.checks.length
      ? 'pass'
      : 'fail',
    page ? undefined : `no ${html}`,
  );
  const policy = qualificationVerdict(
    dir,
    { release: record.from.release },
    { release: record.to.release },
    to,
  );
  ctx.check(
    name('luod --require-qualified on this directory lets the pair through'),
    policy.qualified === (record.result === 'pass') ? 'pass' : 'fail',
    policy.sentence,
  );
  for (const [k, v] of Object.entries(record.blackout)) ctx.timings[`qualify ${pair.label}: ${k}`] = v;
}
