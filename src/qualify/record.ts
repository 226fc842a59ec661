/**
 * A qualification record (docs/qualify.md): what `luoctl qualify --from A --to B` proved
 * about one kernel pair on real kernels, kept as one versioned JSON file per run in a
 * directory, and what `luod --require-qualified DIR` reads before it lets a kernel be
 * loaded. The record names both images by release and sha256, their handover formats as
 * kernel-info read them, the gate's prediction, every check with its outcome, the
 * blackout, when, and which luokit ran it; the schema name carries its version, so a
 * later luokit can tell an old record from a new one.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from '../sys/atomic-file.js';
import { CodedError, fromNodeError } from '../sys/error.js';

export const QUALIFICATION_SCHEMA = 'luokit.qualification/1';

const Formats = z.object({
  kho: z.string().optional(),
  luo: z.string().optional(),
  files: z.array(z.string()),
});

export const QualifiedKernel = z.object({
  image: z.string(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  release: z.string(),
  liveupdate: z.boolean(),
  formats: Formats,
});
export type QualifiedKernel = z.infer<typeof QualifiedKernel>;

/** The parts of the workload (docs/qualify.md): which one a check belongs to. */
export const WorkloadPart = z.enum(['kernel', 'selftests', 'scenarios', 'luod', 'qemu']);
export type WorkloadPart = z.infer<typeof WorkloadPart>;

/**
 * What became of one check: `held`; `failed` (it did not, and the handover is not what was
 * lost: a bug or a behaviour to look at); `lost` (it did not because the pair lost the
 * handover: the record's outcome, cold-boot, panic or files-lost, says how); `not-run` (the
 * run ended before it, or the guest could not run).
 */
export const CheckOutcome = z.enum(['held', 'failed', 'lost', 'not-run']);
export type CheckOutcome = z.infer<typeof CheckOutcome>;

export const QualificationCheck = z.object({
  name: z.string(),
  ok: z.boolean(),
  detail: z.string().optional(),
  /** Absent in records of luokit before the full workload (only the luod part then). */
  part: WorkloadPart.optional(),
  /** Where it ran: `from` (kernel A, before the kexec) or `to` (kernel B, after it). */
  kernel: z.enum(['from', 'to']).optional(),
  outcome: CheckOutcome.optional(),
});
export type QualificationCheck = z.infer<typeof QualificationCheck>;

/**
 * What the pair did: the gate's outcomes as seen on the real kernels, `failed` when the
 * run went wrong otherwise, `cannot-boot` when the guest could not run at all (what is
 * missing is in `reason`): never a verdict on the pair.
 */
export const QualificationOutcome = z.enum([
  'works',
  'cold-boot',
  'panic',
  'files-lost',
  'failed',
  'cannot-boot',
]);
export type QualificationOutcome = z.infer<typeof QualificationOutcome>;

export const QualificationRecord = z.object({
  schema: z.literal(QUALIFICATION_SCHEMA),
  /** `FROM--TO--STARTED`, also the file's name without .json. */
  id: z.string(),
  /** pass: the pair live-updates, every check held. fail: it does not. not-run: the guest could not test. */
  result: z.enum(['pass', 'fail', 'not-run']),
  outcome: QualificationOutcome,
  /** Why it is not a pass (the first failed check, or what is missing). */
  reason: z.string().optional(),
  from: QualifiedKernel,
  to: QualifiedKernel,
  /** The gate's verdict on the pair from the images alone, before anything ran. */
  gate: z.object({ outcome: z.string(), sentence: z.string() }),
  /** The outcome is what the gate predicted (null when the guest could not test). */
  agrees_with_gate: z.boolean().nullable(),
  checks: z.array(QualificationCheck),
  workload: z.object({
    description: z.string(),
    memfds: z.array(z.string()),
    /** The parts that ran, and those left out on purpose with why (`--without`). */
    parts: z.array(WorkloadPart).optional(),
    omitted: z.array(z.object({ part: WorkloadPart, why: z.string() })).optional(),
    /** The kernel's kexec selftests run (stage 1 in A, stage 2 in B), and where their binaries were. */
    selftests: z.object({ dir: z.string(), kexec_tests: z.array(z.string()) }).optional(),
    /** The scenario program and how many two-stage scenarios it ran. */
    scenarios: z.object({ program: z.string(), count: z.number() }).optional(),
    /** The QEMU VM through luo-qemu: its RAM. */
    qemu: z.object({ vms: z.number(), ram: z.string() }).optional(),
  }),
  guest: z.object({
    qemu: z.array(z.string()),
    memory: z.string(),
    cpus: z.number(),
    initramfs_sha256: z.string().optional(),
  }),
  /** Host-clock figures of the live update, ms (absent when it did not get that far). */
  blackout: z.record(z.string(), z.number()),
  started: z.string(),
  finished: z.string(),
  luokit: z.string(),
  /** The run's console log and outputs, on the machine that ran it. */
  run_dir: z.string().optional(),
});
export type QualificationRecord = z.infer<typeof QualificationRecord>;

/** A file name for a release: what a release may hold, and nothing a path could misread. */
function safe(text: string): string {
  return text.replace(/[^A-Za-z0-9._+~-]/g, '_');
}

export function recordId(fromRelease: string, toRelease: string, started: Date): string {
  const time = started
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  return `${safe(fromRelease)}--${safe(toRelease)}--${time}`;
}

/** Write the record as DIR/ID.json (all or nothing); returns the file. */
export function writeQualification(dir: string, record: QualificationRecord): string {
  try {
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, `${record.id}.json`);
    writeFileAtomic(file, `${JSON.stringify(record, null, 2)}\n`);
    return file;
  } catch (err) {
    throw fromNodeError('write', err);
  }
}

export interface ReadRecords {
  records: { file: string; record: QualificationRecord }[];
  /** Files that look like records but are not (a sentence each): never silently a pass. */
  unreadable: string[];
}

/** Every record in DIR (a missing DIR is ENOENT: a policy on a directory that is not there is an error). */
export function readQualifications(dir: string): ReadRecords {
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((n) => n.endsWith('.json') && !n.startsWith('.'));
  } catch (err) {
    const code = fromNodeError('open', err).code;
    throw new CodedError(code, `cannot read the qualification records in ${dir} (${code})`);
  }
  const out: ReadRecords = { records: [], unreadable: [] };
  for (const name of names.sort()) {
    const file = path.join(dir, name);
    try {
      const parsed = QualificationRecord.safeParse(JSON.parse(fs.readFileSync(file, 'utf8')));
      if (parsed.success) out.records.push({ file, record: parsed.data });
      else out.unreadable.push(`${file}: not a ${QUALIFICATION_SCHEMA} record`);
    } catch (err) {
      out.unreadable.push(`${file}: ${(err as Error).message}`);
    }
  }
  return out;
}

/** One side of the pair as the gate knows it: the release, and the image's sha256 when there is an image. */
export interface PairSide {
  release: string;
  sha256?: string;
}

export interface QualificationLookup {
  qualified: boolean;
  /** The record that decided (the newest for the pair), when there is one. */
  file?: string;
  record?: QualificationRecord;
  /** One sentence: which record qualifies the pair, or why none does. */
  sentence: string;
}

/**
 * Is the pair qualified by DIR? The newest record of the same releases (and, for a side
 * whose image is known, the same sha256) decides: a later failed run withdraws an earlier
 * pass. A record of the same releases but another image is not this pair.
 */
export function lookupQualification(dir: string, from: PairSide, to: PairSide): QualificationLookup {
  const { records } = readQualifications(dir);
  const pair = `${from.release} -> ${to.release}`;
  const sameReleases = records.filter(
    (r) => r.record.from.release === from.release && r.record.to.release === to.release,
  );
  const sameImages = sameReleases.filter(
    (r) =>
      (from.sha256 === undefined || r.record.from.sha256 === from.sha256) &&
      (to.sha256 === undefined || r.record.to.sha256 === to.sha256),
  );
  const decided = sameImages.filter((r) => r.record.result !== 'not-run');
  const newest = decided.sort((a, b) => a.record.finished.localeCompare(b.record.finished)).at(-1);
  if (newest === undefined) {
    const other =
      sameReleases.length > sameImages.length
        ? ` (${dir} qualifies other images of these releases: a rebuilt kernel must be qualified again)`
        : '';
    return { qualified: false, sentence: `no qualification of ${pair} in ${dir}${other}` };
  }
  const at = `${newest.file}, ${newest.record.finished}`;
  if (newest.record.result === 'pass') {
    return {
      qualified: true,
      file: newest.file,
      record: newest.record,
      sentence: `${pair} qualified (${at})`,
    };
  }
  return {
    qualified: false,
    file: newest.file,
    record: newest.record,
    sentence: `${pair} failed its qualification (${at}: ${newest.record.outcome}${newest.record.reason ? `: ${newest.record.reason}` : ''})`,
  };
}

/** For the CLI and tests: a record read back, or a clear error. */
export function readQualification(file: string): QualificationRecord {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw fromNodeError('open', err);
  }
  const parsed = QualificationRecord.safeParse(JSON.parse(text));
  if (!parsed.success) throw new CodedError('EINVAL', `${file} is not a ${QUALIFICATION_SCHEMA} record`);
  return parsed.data;
}
