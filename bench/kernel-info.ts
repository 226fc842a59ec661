/**
 * Reading a kernel image (`luoctl kernel-info`, the gate at every `luoctl load`): Debian's
 * stock amd64 kernel (a ~14 MB bzImage with a zstd payload, ~60 MB inside; fetched with
 * scripts/fetch-debian-kernel.sh) read in process (unwrap, WebAssembly zstd, scan) against
 * the zstd tool decompressing the same payload to /dev/null: the C floor for the same work,
 * measured in the same run. The goal (#16): "well under a second" for a 12 MB image, on a
 * quiet machine; the ratio says how far from the native floor the reader is.
 *
 * Environment: LUOKIT_BENCH_RUNS timed runs of each side, interleaved (default 7).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readKernelInfo } from '../src/image/kernel-info.js';
import {
  type BenchContext,
  type Benchmark,
  type BenchmarkResult,
  envNumber,
  measurement,
  now,
  ratio,
} from './lib.js';

const FETCH = fileURLToPath(new URL('../scripts/fetch-debian-kernel.sh', import.meta.url));

export const kernelInfo: Benchmark = {
  name: 'kernel-info',
  description: "read Debian's stock amd64 bzImage (zstd): luokit's reader vs the zstd tool on its payload",
  async run(ctx: BenchContext): Promise<BenchmarkResult> {
    const runs = Math.round(envNumber('LUOKIT_BENCH_RUNS', 7));
    const fetched = spawnSync('sh', [FETCH, 'amd64'], { encoding: 'utf8' });
    if (fetched.status !== 0)
      throw new Error(`scripts/fetch-debian-kernel.sh amd64 failed: ${fetched.stderr}`);
    const image = fetched.stdout.trim().split('\n').at(-1)!;
    const bytes = fs.statSync(image).size;
    const data = fs.readFileSync(image);
    const start = ((data[0x1f1] || 4) + 1) * 512 + data.readUInt32LE(0x248);
    const length = data.readUInt32LE(0x24c);
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-bench-kinfo-'));
    try {
      const payload = path.join(work, 'payload.zst');
      fs.writeFileSync(payload, data.subarray(start, start + length - 4));
      const release = (await readKernelInfo(image)).release; // warm-up: JIT, WebAssembly, page cache
      const reader: number[] = [];
      const tool: number[] = [];
      for (let run = 1; run <= runs; run++) {
        let t = now();
        const z = spawnSync('zstd', ['-q', '-d', '-c', '--memory=2048MB', payload], {
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        tool.push(now() - t);
        if (z.status !== 0) throw new Error(`zstd failed: ${z.stderr}`);
        t = now();
        const info = await readKernelInfo(image);
        reader.push(now() - t);
        if (info.release !== release) throw new Error('the reader changed its answer');
        ctx.log(
          `run ${run}: zstd tool ${(tool.at(-1)! * 1000).toFixed(0)} ms, kernel-info ${(reader.at(-1)! * 1000).toFixed(0)} ms`,
        );
      }
      const baseline = measurement('zstd -d (C) on the payload', 'baseline', tool, bytes);
      const subject = measurement('readKernelInfo (whole image)', 'subject', reader, bytes);
      return {
        name: 'kernel-info',
        description: this.description,
        params: { image, bytes, release, runs },
        measurements: [baseline, subject],
        ratios: [ratio(subject, baseline)],
        notes: [
          `${path.basename(image)}: ${bytes} bytes; median ${(subject.seconds * 1000).toFixed(0)} ms per read`,
        ],
      };
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  },
};
