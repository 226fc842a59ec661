/**
 * What every benchmark shares: the result shape, progress on stderr, timing,
 * and a few environment readings.
 *
 * These machines are noisy, so no benchmark reports an absolute threshold:
 * each measures its own baseline in the same run, and what counts is the
 * ratio to it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The project's root (bench/ is one level below it). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** A command of package.json's `bin`, as users run it: its path under ROOT. */
export function packageBin(name: string): string {
  const bins = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).bin as Record<
    string,
    string
  >;
  const bin = bins[name];
  if (!bin) throw new Error(`package.json has no bin ${name}`);
  return path.join(ROOT, bin);
}

/** One timed thing. `bytes` makes it a throughput (GB/s = 1e9 bytes per second). */
export interface Measurement {
  name: string;
  /** The median over `runs`. */
  seconds: number;
  bytes: number | null;
  /** Every run's seconds, in order. */
  runs: number[];
  /** 'baseline' is what ratios are taken against; 'info' is shown but not compared. */
  role: 'baseline' | 'subject' | 'info';
}

export interface Ratio {
  subject: string;
  baseline: string;
  /**
   * subject throughput / baseline throughput (> 1: the subject is faster), from the medians;
   * for measurements of time alone (timeRatio), subject time / baseline time (> 1: slower).
   */
  ratio: number;
  /** The same ratio for each run, the subject and the baseline of run i paired. */
  perRun: number[];
}

export interface BenchmarkResult {
  name: string;
  description: string;
  params: Record<string, unknown>;
  measurements: Measurement[];
  ratios: Ratio[];
  notes: string[];
}

export interface BenchContext {
  /** One line of progress on stderr. */
  log(message: string): void;
  /** Run `fn` as a named phase: its start and end (with duration) go to stderr. Returns its value and seconds. */
  phase<T>(label: string, fn: () => T | Promise<T>, bytes?: number): Promise<{ value: T; seconds: number }>;
}

export interface Benchmark {
  name: string;
  description: string;
  run(ctx: BenchContext): Promise<BenchmarkResult>;
}

export const GIB = 1 << 30;
export const MIB = 1 << 20;

const started = process.hrtime.bigint();

export function now(): number {
  return Number(process.hrtime.bigint() - started) / 1e9;
}

export function gbPerSecond(bytes: number, seconds: number): number {
  return bytes / seconds / 1e9;
}

export function formatBytes(bytes: number): string {
  if (bytes >= GIB && bytes % (GIB / 4) === 0) return `${bytes / GIB} GiB`;
  if (bytes >= MIB) return `${(bytes / MIB).toFixed(bytes % MIB === 0 ? 0 : 1)} MiB`;
  return `${bytes} B`;
}

export function context(prefix: string): BenchContext {
  const log = (message: string) =>
    process.stderr.write(`[bench ${now().toFixed(1).padStart(6)}s] ${prefix}: ${message}\n`);
  return {
    log,
    async phase(label, fn, bytes) {
      log(`${label} ...`);
      const t0 = now();
      const value = await fn();
      const seconds = now() - t0;
      const rate = bytes ? ` (${gbPerSecond(bytes, seconds).toFixed(2)} GB/s)` : '';
      log(`${label} done in ${seconds.toFixed(3)} s${rate}`);
      return { value, seconds };
    },
  };
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function measurement(
  name: string,
  role: Measurement['role'],
  runs: number[],
  bytes: number | null,
): Measurement {
  return { name, role, runs, bytes, seconds: median(runs) };
}

/** Throughput ratio of `subject` to `baseline`; both must move bytes. */
export function ratio(subject: Measurement, baseline: Measurement): Ratio {
  const rate = (bytes: number | null, seconds: number) => (bytes ?? Number.NaN) / seconds;
  return {
    subject: subject.name,
    baseline: baseline.name,
    ratio: rate(subject.bytes, subject.seconds) / rate(baseline.bytes, baseline.seconds),
    perRun: subject.runs.map(
      (s, i) => rate(subject.bytes, s) / rate(baseline.bytes, baseline.runs[i] ?? Number.NaN),
    ),
  };
}

/** Time ratio of `subject` to `baseline` (> 1: the subject takes longer), for measurements without bytes. */
export function timeRatio(subject: Measurement, baseline: Measurement): Ratio {
  return {
    subject: subject.name,
    baseline: baseline.name,
    ratio: subject.seconds / baseline.seconds,
    perRun: subject.runs.map((s, i) => s / (baseline.runs[i] ?? Number.NaN)),
  };
}

/** A positive number from the environment, or `fallback`. */
export function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number, got ${raw}`);
  return value;
}

/** Shmem from /proc/meminfo in bytes (tmpfs files and memfds live there), or null off Linux. */
export function shmemBytes(): number | null {
  try {
    const match = /^Shmem:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
    return match ? Number(match[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** MemAvailable from /proc/meminfo in bytes, or null. */
export function availableBytes(): number | null {
  try {
    const match = /^MemAvailable:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
    return match ? Number(match[1]) * 1024 : null;
  } catch {
    return null;
  }
}
