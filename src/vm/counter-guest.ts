/**
 * The counter guest (native/counter-guest/counter.S), built from source when
 * first needed, by GNU as and ld from binutils: a 512-byte boot sector image,
 * cached per source content. `luoctl demo --qemu` and the tests boot it.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Errno } from '../sys/errno.js';
import { SysError } from '../sys/error.js';

/** From src/qemu or dist/qemu alike: two levels below the package root. */
const SOURCE = new URL('../../native/counter-guest/counter.S', import.meta.url).pathname;

/** The boot sector image's path (built once per source version). */
export function counterGuest(): string {
  const text = fs.readFileSync(SOURCE);
  const tag = createHash('sha256').update(text).digest('hex').slice(0, 12);
  const dir = path.join(os.tmpdir(), `luokit-counter-guest-${tag}`);
  const image = path.join(dir, 'counter.img');
  if (fs.existsSync(image)) return image;
  fs.mkdirSync(dir, { recursive: true });
  const object = path.join(dir, `counter.o.${process.pid}`);
  const built = `${image}.${process.pid}`;
  const ldArgs = [
    '-m',
    'elf_i386',
    '-Ttext',
    '0x7c00',
    '-Tbss',
    '0x600',
    '--oformat',
    'binary',
    '-o',
    built,
    object,
  ];
  try {
    execFileSync('as', ['--32', '-o', object, SOURCE], { stdio: 'pipe' });
    execFileSync('ld', ldArgs, { stdio: 'pipe' });
  } catch (err) {
    const e = err as { code?: string; stderr?: Buffer };
    throw new SysError(
      'counter-guest',
      Errno.ENOENT,
      e.code === 'ENOENT'
        ? 'building the counter guest needs GNU as and ld (Debian: apt-get install binutils)'
        : `the counter guest did not build: ${e.stderr?.toString().trim() ?? String(err)}`,
    );
  } finally {
    fs.rmSync(object, { force: true });
  }
  const size = fs.statSync(built).size;
  if (size !== 512)
    throw new SysError(
      'counter-guest',
      Errno.EIO,
      `the counter guest is ${size} bytes, not a 512-byte boot sector`,
    );
  fs.renameSync(built, image);
  return image;
}

/** The QEMU arguments that boot the counter guest from `image` (a copy of its own per VM), its serial port into `serial`. */
export function counterGuestArgs(image: string, serial: string): string[] {
  return [
    '-nodefaults',
    '-nographic',
    '-display',
    'none',
    '-drive',
    `file=${image},format=raw,if=floppy`,
    '-serial',
    `file:${serial}`,
  ];
}
