/**
 * `npm run bench [-- NAME...]`: run every benchmark (or the named ones), print
 * a table of ratios against each benchmark's own baseline measured in the
 * same run, and write the full results as JSON to build/bench/latest.json
 * (or $LUOKIT_BENCH_OUT). Progress goes to stderr, the table to stdout.
 *
 * No absolute thresholds: these machines are noisy, so only ratios to a
 * baseline taken minutes apart on the same machine mean anything.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { kernelInfo } from './kernel-info.js';
import { type Benchmark, type BenchmarkResult, context, gbPerSecond, now } from './lib.js';
import { memfdHandover } from './memfd-handover.js';
import { qemuBlackout } from './qemu-blackout.js';
import { radixDecode } from './radix.js';
import { scale } from './scale.js';
import { startup } from './startup.js';

const BENCHMARKS: readonly Benchmark[] = [
  memfdHandover,
  radixDecode,
  qemuBlackout,
  kernelInfo,
  startup,
  scale,
];

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outFile = path.resolve(
  process.env.LUOKIT_BENCH_OUT ?? path.join(root, 'build', 'bench', 'latest.json'),
);

function selected(args: string[]): readonly Benchmark[] {
  if (args.length === 0) return BENCHMARKS;
  const unknown = args.filter((name) => !BENCHMARKS.some((b) => b.name === name));
  if (unknown.length > 0) {
    throw new Error(
      `unknown benchmark(s): ${unknown.join(', ')}; known: ${BENCHMARKS.map((b) => b.name).join(', ')}`,
    );
  }
  return BENCHMARKS.filter((b) => args.includes(b.name));
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const numeric = (c: number) => c >= 2;
  const line = (r: string[]) =>
    r.map((cell, c) => (numeric(c) ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join('  ');
  return [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

function report(results: BenchmarkResult[]): string {
  const rows: string[][] = [['benchmark', 'measurement', 'runs', 'median s', 'GB/s', 'vs baseline']];
  for (const result of results) {
    const baseline = result.measurements.find((m) => m.role === 'baseline');
    for (const m of result.measurements) {
      const rate = m.bytes === null ? Number.NaN : gbPerSecond(m.bytes, m.seconds);
      // A time ratio (timeRatio) has no bytes: its own line in result.ratios says it.
      const timed = m.bytes === null ? result.ratios.find((r) => r.subject === m.name) : undefined;
      const versus =
        m.role === 'baseline'
          ? 'baseline'
          : m.role === 'subject' && baseline?.bytes && m.bytes
            ? `${(rate / gbPerSecond(baseline.bytes, baseline.seconds)).toFixed(2)}x`
            : timed
              ? `${timed.ratio.toFixed(2)}x time`
              : '';
      rows.push([
        result.name,
        m.name,
        String(m.runs.length),
        m.seconds.toFixed(3),
        Number.isNaN(rate) ? '' : rate.toFixed(2),
        versus,
      ]);
    }
  }
  const lines = [table(rows), ''];
  for (const result of results) {
    for (const r of result.ratios) {
      const perRun = r.perRun.length > 1 ? ` (per run: ${r.perRun.map((x) => x.toFixed(2)).join(', ')})` : '';
      lines.push(`${result.name}: ${r.subject.trim()} / ${r.baseline} = ${r.ratio.toFixed(2)}x${perRun}`);
    }
    for (const note of result.notes) lines.push(`${result.name}: note: ${note}`);
  }
  return lines.join('\n');
}

async function main(): Promise<number> {
  const benchmarks = selected(process.argv.slice(2));
  const results: BenchmarkResult[] = [];
  const failures: Array<{ name: string; error: string }> = [];
  for (const benchmark of benchmarks) {
    const ctx = context(benchmark.name);
    ctx.log(`start: ${benchmark.description}`);
    try {
      results.push(await benchmark.run(ctx));
      ctx.log('finished');
    } catch (err) {
      const error = err instanceof Error ? (err.stack ?? err.message) : String(err);
      ctx.log(`FAILED: ${error}`);
      failures.push({ name: benchmark.name, error });
    }
  }
  if (results.length > 0) process.stdout.write(`${report(results)}\n`);
  const cpus = os.cpus();
  const json = {
    date: new Date().toISOString(),
    elapsedSeconds: now(),
    environment: {
      node: process.version,
      platform: `${os.type()} ${os.release()} ${os.arch()}`,
      cpu: `${cpus[0]?.model ?? 'unknown'} x${cpus.length}`,
      memoryBytes: os.totalmem(),
    },
    results,
    failures,
  };
  fs.mkdirSync(path.dirname(outFile), { recursive: true });
  fs.writeFileSync(outFile, `${JSON.stringify(json, null, 2)}\n`);
  process.stderr.write(`results written to ${path.relative(process.cwd(), outFile) || outFile}\n`);
  return failures.length > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(2);
  },
);
