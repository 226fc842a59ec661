/**
 * The emulated kernel's handover of one large memfd, against `cp` of the same
 * bytes on the same tmpfs in the same run.
 *
 * Handover (timed): the emulated kexec (freeze, copy the memfd's pages into
 * `memory.img` as folios, write the KHO/LUO structures, boot the next kernel
 * and decode them), then opening the device again, RETRIEVE_SESSION and
 * RETRIEVE_FD (which copies the folios into a new memfd). Verification of the
 * retrieved bytes is timed separately.
 *
 * Baseline: `cp src dst` of a tmpfs file holding the same bytes.
 *
 * Environment:
 *   LUOKIT_BENCH_MEMFD_GB  memfd size in GiB (default 4; fractions allowed, rounded to pages)
 *   LUOKIT_BENCH_RUNS      runs of each side, interleaved cp/handover (default 1); medians reported
 *   LUOKIT_BENCH_VERIFY    'full' (every byte, default) or 'sample' (4096 pages)
 *   LUOKIT_BENCH_DIR       a tmpfs directory for the state dir and the cp files (default /dev/shm)
 *   LUOKIT_BENCH_PREWARM   1 to pre-warm memory before each timed phase (default 0, below)
 *   LUOKIT_BENCH_PROFILE   a directory: the emulator runs with --cpu-prof writing there
 *
 * Pre-warming (opt-in): on a VM with free page reporting (virtio-balloon, as
 * on these Firecracker machines), memory freed a few seconds ago goes back
 * to the host and its first touch costs a fault in the host. With
 * LUOKIT_BENCH_PREWARM=1 a tmpfs file as large as what the next timed phase
 * allocates is written and deleted right before it. Measured here at 4 GiB
 * it made every phase slower and noisier (cp 4.5-5.6 s with it, 2.2-2.5 s
 * without: the host reclaiming the just-freed pages competes with the timed
 * phase), so it is off by default; the same-run baseline absorbs the rest.
 *
 * Memory: at most two copies of the data exist at once (memfd + memory.img
 * during kexec, memory.img + retrieved memfd after, src + dst for cp); each is
 * freed before the next phase.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Emulator, startEmulator } from '../src/kernel/emu/index.js';
import { ftruncate, memfdCreate, O_CREAT, O_TRUNC, O_WRONLY, open, TMPFS_MAGIC } from '../src/sys/index.js';
import {
  availableBytes,
  type BenchContext,
  type Benchmark,
  type BenchmarkResult,
  envNumber,
  formatBytes,
  GIB,
  MIB,
  measurement,
  ratio,
  shmemBytes,
} from './lib.js';
import { PATTERN_PAGE, Pattern } from './pattern.js';

const SESSION = 'bench-memfd';
const TOKEN = 0x4c554f42454e4348n; // "LUOBENCH"

interface Params {
  size: number;
  runs: number;
  verify: 'full' | 'sample';
  prewarm: boolean;
  dir: string;
  profileDir: string | null;
}

function params(): Params {
  const gib = envNumber('LUOKIT_BENCH_MEMFD_GB', 4);
  const size = Math.max(PATTERN_PAGE, Math.round((gib * GIB) / PATTERN_PAGE) * PATTERN_PAGE);
  const runs = Math.round(envNumber('LUOKIT_BENCH_RUNS', 1));
  const verify = process.env.LUOKIT_BENCH_VERIFY ?? 'full';
  if (verify !== 'full' && verify !== 'sample') {
    throw new Error(`LUOKIT_BENCH_VERIFY must be 'full' or 'sample', got ${verify}`);
  }
  const dir = path.resolve(process.env.LUOKIT_BENCH_DIR ?? '/dev/shm');
  const profile = process.env.LUOKIT_BENCH_PROFILE;
  const prewarm = process.env.LUOKIT_BENCH_PREWARM === '1';
  return { size, runs, verify, prewarm, dir, profileDir: profile ? path.resolve(profile) : null };
}

/** Refuse to start what cannot finish: the directory must be tmpfs and two copies must fit. */
function preflight(p: Params, ctx: BenchContext): void {
  const type = fs.statfsSync(p.dir).type;
  if (type !== TMPFS_MAGIC) {
    ctx.log(
      `warning: ${p.dir} is not tmpfs (f_type 0x${type.toString(16)}); cp and memory.img will hit a disk`,
    );
  }
  const needed = 2 * p.size + 512 * MIB;
  const available = availableBytes();
  if (available !== null && available < needed) {
    throw new Error(
      `${formatBytes(p.size)} needs about ${formatBytes(needed)} of free memory, ` +
        `${(available / GIB).toFixed(1)} GiB available: set LUOKIT_BENCH_MEMFD_GB lower`,
    );
  }
  const { bavail, bsize } = fs.statfsSync(p.dir);
  if (bavail * bsize < needed) {
    throw new Error(
      `${p.dir} has ${((bavail * bsize) / GIB).toFixed(1)} GiB free; ${formatBytes(needed)} needed`,
    );
  }
}

/** Write and delete `bytes` of tmpfs data, so the next phase gets memory the host has backed (see the top). */
async function prewarm(ctx: BenchContext, p: Params, pattern: Pattern, work: string, before: string) {
  if (!p.prewarm) return;
  const file = path.join(work, 'prewarm');
  try {
    await ctx.phase(`pre-warm ${formatBytes(p.size)} of memory before ${before}`, () => {
      using fd = open(file, O_CREAT | O_WRONLY | O_TRUNC);
      pattern.writeTo(fd.fd, p.size);
    });
  } finally {
    fs.rmSync(file, { force: true });
  }
}

/** One cp run: write the source (untimed for the ratio), time `cp`, spot-check, delete both. */
async function cpRun(ctx: BenchContext, p: Params, pattern: Pattern, work: string, run: number) {
  const src = path.join(work, `cp-src-${run}`);
  const dst = path.join(work, `cp-dst-${run}`);
  try {
    const write = await ctx.phase(
      `cp #${run}: write ${formatBytes(p.size)} source file`,
      () => {
        using fd = open(src, O_CREAT | O_WRONLY | O_TRUNC);
        pattern.writeTo(fd.fd, p.size);
      },
      p.size,
    );
    await prewarm(ctx, p, pattern, work, 'cp');
    const copy = await ctx.phase(
      `cp #${run}: cp src dst`,
      () => {
        const result = spawnSync('cp', [src, dst], { stdio: ['ignore', 'inherit', 'inherit'] });
        if (result.error) throw result.error;
        if (result.status !== 0) throw new Error(`cp exited with ${result.status ?? result.signal}`);
      },
      p.size,
    );
    await ctx.phase(`cp #${run}: spot-check the copy`, () => {
      using fd = open(dst);
      pattern.verifySample(fd.fd, p.size, 256);
    });
    return { write: write.seconds, copy: copy.seconds };
  } finally {
    fs.rmSync(src, { force: true });
    fs.rmSync(dst, { force: true });
  }
}

/**
 * Start the emulator. With a profile directory, start its process here with
 * --cpu-prof (not allowed in NODE_OPTIONS), then let startEmulator find it.
 */
async function emulator(stateDir: string, p: Params): Promise<Emulator> {
  if (p.profileDir) {
    fs.mkdirSync(p.profileDir, { recursive: true });
    fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const main = fileURLToPath(new URL('../src/kernel/emu/server/main.ts', import.meta.url));
    const log = fs.openSync(path.join(stateDir, 'emu.log'), 'a');
    const child = spawn(
      process.execPath,
      ['--cpu-prof', `--cpu-prof-dir=${p.profileDir}`, '--import', 'tsx', main, '--state', stateDir],
      { detached: true, stdio: ['ignore', log, log] },
    );
    fs.closeSync(log);
    child.unref();
    const pidFile = path.join(stateDir, 'emu.pid');
    for (let waited = 0; !fs.existsSync(pidFile); waited += 20) {
      if (child.exitCode !== null || waited > 15_000) throw new Error('the profiled emulator did not start');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  return startEmulator({ stateDir });
}

/** One handover run, everything it made freed on the way out. */
async function handoverRun(ctx: BenchContext, p: Params, pattern: Pattern, work: string, run: number) {
  const stateDir = path.join(work, `emu-${run}`);
  const label = (what: string) => `handover #${run}: ${what}`;
  const closers: Array<() => void> = [];
  let emu: Emulator | null = null;
  try {
    emu = (await ctx.phase(label(`start the emulated kernel in ${stateDir}`), () => emulator(stateDir, p)))
      .value;
    const started = emu;

    const memfd = memfdCreate('luokit-bench');
    closers.push(() => memfd.close());
    const fill = await ctx.phase(
      label(`fill a ${formatBytes(p.size)} memfd`),
      () => {
        ftruncate(memfd, p.size);
        pattern.writeTo(memfd.fd, p.size);
      },
      p.size,
    );

    const outgoing = (
      await ctx.phase(label('CREATE_SESSION + PRESERVE_FD'), () => {
        using device = started.openDevice();
        const session = device.createSession(SESSION);
        session.preserveFd(memfd, TOKEN);
        return session;
      })
    ).value;
    closers.push(() => outgoing.close());
    // The emulated kernel holds its own reference, as LUO holds the struct file.
    memfd.close();

    await prewarm(ctx, p, pattern, work, 'kexec');
    const kexec = await ctx.phase(
      label('kexec (freeze, write memory.img + handover, boot, decode)'),
      async () => {
        const result = await started.kexec();
        if (result.boot.outcome !== 'restored' || result.boot.sessions !== 1) {
          throw new Error(`the next kernel did not restore the session: ${JSON.stringify(result.boot)}`);
        }
        return result;
      },
      p.size,
    );
    // The old kernel's session fd is dead now; closing it is all that is left.
    outgoing.close();

    await prewarm(ctx, p, pattern, work, 'retrieve');
    const retrieve = await ctx.phase(
      label('open + RETRIEVE_SESSION + RETRIEVE_FD'),
      () => {
        const device = started.openDevice();
        closers.push(() => device.close());
        const session = device.retrieveSession(SESSION);
        closers.push(() => session.close());
        const fd = session.retrieveFd(TOKEN);
        closers.push(() => fd.close());
        return { session, fd };
      },
      p.size,
    );
    const imageBytes = fs.statSync(emu.paths.memoryImage).size;

    const { fd } = retrieve.value;
    const verify =
      p.verify === 'full'
        ? await ctx.phase(
            label('verify every retrieved byte'),
            () => {
              pattern.verifyAll(fd.fd, p.size);
              return p.size;
            },
            p.size,
          )
        : await ctx.phase(
            label('verify sampled pages of the retrieved memfd'),
            () => pattern.verifySample(fd.fd, p.size) * PATTERN_PAGE,
          );
    retrieve.value.session.finish();

    return {
      fill: fill.seconds,
      kexec: kexec.seconds,
      retrieve: retrieve.seconds,
      handover: kexec.seconds + retrieve.seconds,
      verify: verify.seconds,
      verifiedBytes: verify.value,
      imageBytes,
    };
  } finally {
    for (const close of closers.reverse()) {
      try {
        close();
      } catch {
        // already closed or dead after the kexec
      }
    }
    if (emu) {
      const stopping = emu;
      await ctx.phase(label('stop the emulator, delete its state'), () => stopping.stop());
    }
    fs.rmSync(stateDir, { recursive: true, force: true });
  }
}

export const memfdHandover: Benchmark = {
  name: 'memfd-handover',
  description: 'emulated kexec handover of one memfd (kexec through RETRIEVE_FD) vs cp on tmpfs',
  async run(ctx): Promise<BenchmarkResult> {
    const p = params();
    preflight(p, ctx);
    ctx.log(
      `size ${formatBytes(p.size)}, ${p.runs} run(s), verify ${p.verify}, in ${p.dir}` +
        (p.profileDir ? `, emulator profiles in ${p.profileDir}` : ''),
    );
    const work = fs.mkdtempSync(path.join(p.dir, 'luokit-bench-'));
    const shmemBefore = shmemBytes();
    const cp: Array<Awaited<ReturnType<typeof cpRun>>> = [];
    const ho: Array<Awaited<ReturnType<typeof handoverRun>>> = [];
    try {
      const pattern = (await ctx.phase('make the 64 MiB pattern', () => new Pattern())).value;
      for (let run = 1; run <= p.runs; run++) {
        cp.push(await cpRun(ctx, p, pattern, work, run));
        ho.push(await handoverRun(ctx, p, pattern, work, run));
      }
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
    const shmemAfter = shmemBytes();
    const leaked = shmemBefore !== null && shmemAfter !== null ? shmemAfter - shmemBefore : null;
    if (leaked !== null && leaked > 64 * MIB) {
      ctx.log(
        `warning: Shmem grew by ${formatBytes(leaked)} over the benchmark (a memfd or tmpfs file leaked?)`,
      );
    }

    const baseline = measurement(
      'cp src dst (tmpfs)',
      'baseline',
      cp.map((r) => r.copy),
      p.size,
    );
    const handover = measurement(
      'handover: kexec -> retrieved fd',
      'subject',
      ho.map((r) => r.handover),
      p.size,
    );
    const kexec = measurement(
      '  kexec (freeze..boot)',
      'subject',
      ho.map((r) => r.kexec),
      p.size,
    );
    const retrieve = measurement(
      '  retrieve (RETRIEVE_FD)',
      'subject',
      ho.map((r) => r.retrieve),
      p.size,
    );
    const measurements = [
      baseline,
      handover,
      kexec,
      retrieve,
      measurement(
        'verify retrieved bytes',
        'info',
        ho.map((r) => r.verify),
        ho[0]?.verifiedBytes ?? null,
      ),
      measurement(
        'fill memfd (pwrite 64 MiB)',
        'info',
        ho.map((r) => r.fill),
        p.size,
      ),
      measurement(
        'write cp source (pwrite 64 MiB)',
        'info',
        cp.map((r) => r.write),
        p.size,
      ),
    ];
    return {
      name: this.name,
      description: this.description,
      params: {
        bytes: p.size,
        runs: p.runs,
        verify: p.verify,
        prewarm: p.prewarm,
        dir: p.dir,
        memoryImageBytes: ho[0]?.imageBytes ?? null,
        shmemGrowthBytes: leaked,
      },
      measurements,
      ratios: [ratio(handover, baseline), ratio(kexec, baseline), ratio(retrieve, baseline)],
      notes: [
        'the handover copies every byte twice (memfd -> memory.img at kexec, memory.img -> new memfd at RETRIEVE_FD); cp copies once, so 0.5x is parity per copy',
      ],
    };
  },
};
