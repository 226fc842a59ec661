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
  const object = path.join(dir, 'counter.o');
  execFileSync('as', ['--32', '-o', object, SOURCE]);
  const built = `${image}.${process.pid}`;
  execFileSync('ld', [
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
  ]);
  const size = fs.statSync(built).size;
  if (size !== 512) throw new Error(`the counter guest is ${size} bytes, not a 512-byte boot sector`);
  fs.renameSync(built, image);
  return image;
}
