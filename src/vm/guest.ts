/**
 * A job in a QEMU guest that sees the host's `/` (docs/vm.md, "The guest"): the job is a
 * shell script written into its own output directory, which /init (vm/guest/init) runs
 * chrooted into the host's `/` at every boot, the first one and every one a kexec
 * starts. Shared by the real-kernel bench (test/vm/run.ts) and `luoctl qualify`
 * (src/qualify/real.ts), so both boot their guests the same way.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CodedError } from '../sys/error.js';
import { type QemuOptions, type QemuResult, runQemu } from './qemu.js';

/** The package's root: vm/build-initramfs.sh and vm/guest/ are shipped next to dist/. */
export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export function shellQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

export interface GuestJob {
  /** The run's output directory (emptied first): job.sh, console.log, whatever the job writes. */
  dir: string;
  /** The bzImage of each boot: boot N runs the Nth, the last repeats (LUOKIT_KERNELS). */
  kernels: readonly string[];
  /** The job's shell command, run in `cwd` (the guest sees it at the same path). */
  command: string;
  env: Record<string, string>;
  cwd: string;
  initramfs: string;
  timeoutMs: number;
  /** Appended to the kernel command line of the first boot (the next boots inherit it). */
  append?: string;
  memory?: QemuOptions['memory'];
  tbSizeMb?: QemuOptions['tbSizeMb'];
  qmpSocket?: QemuOptions['qmpSocket'];
  onLine?: QemuOptions['onLine'];
  /** Watches QEMU while it runs, writing into the console log (QemuOptions.sampler). */
  sampler?: QemuOptions['sampler'];
  /** A local disk for the guest (luokit.disk=1: /init binds its entries; test/vm/guest-disk.ts). */
  disk?: QemuOptions['disk'];
}

/** Write the job, boot the first kernel on it, follow it to the end (runQemu). */
export async function runGuestJob(job: GuestJob): Promise<QemuResult> {
  fs.rmSync(job.dir, { recursive: true, force: true });
  fs.mkdirSync(job.dir, { recursive: true });
  const script = path.join(job.dir, 'job.sh');
  const exports = Object.entries({ ...job.env, LUOKIT_KERNELS: job.kernels.join(' ') })
    .map(([k, v]) => `export ${k}=${shellQuote(v)}`)
    .join('\n');
  fs.writeFileSync(
    script,
    `#!/bin/sh\n# Written by luokit (src/vm/guest.ts); run in the guest by /init.\n${exports}\ncd ${shellQuote(job.cwd)}\n${job.command}\n`,
  );
  return runQemu({
    kernel: job.kernels[0]!,
    initramfs: job.initramfs,
    append:
      `${job.append ?? ''} luokit.boot=0 luokit.job=${script} luokit.out=${job.dir}${job.disk !== undefined ? ' luokit.disk=1' : ''}`.trim(),
    shares: [
      { tag: 'host', path: '/', readonly: true },
      { tag: 'out', path: job.dir, readonly: false },
    ],
    timeoutMs: job.timeoutMs,
    consoleLog: path.join(job.dir, 'console.log'),
    ...(job.memory !== undefined && { memory: job.memory }),
    ...(job.tbSizeMb !== undefined && { tbSizeMb: job.tbSizeMb }),
    ...(job.qmpSocket !== undefined && { qmpSocket: job.qmpSocket }),
    ...(job.onLine !== undefined && { onLine: job.onLine }),
    ...(job.sampler !== undefined && { sampler: job.sampler }),
    ...(job.disk !== undefined && { disk: job.disk }),
  });
}

/**
 * vm/build-initramfs.sh OUT: a static busybox and vm/guest/init. Its exit status 3 (no
 * busybox-static, no cpio) is ENOENT with the package to install.
 */
export function buildInitramfs(out: string): string {
  const r = spawnSync('sh', [path.join(PACKAGE_ROOT, 'vm/build-initramfs.sh'), out], { encoding: 'utf8' });
  if (r.status !== 0 || !fs.existsSync(out)) {
    const why = (r.stderr || r.error?.message || '').trim().split('\n').at(-1) ?? '';
    throw new CodedError(r.status === 3 ? 'ENOENT' : 'EIO', `cannot build the guest's initramfs: ${why}`);
  }
  return out;
}
