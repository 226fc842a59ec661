/**
 * The bench's QEMU statistics sampler (test/vm/jit-stats.ts) against a real QEMU (paused,
 * no kernel): `info jit` over QMP, parsed into `[qemu jit]` lines.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { jitLine, jitSampler } from './jit-stats.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-jit-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('a line per sample, every counter parsed from the text QEMU prints', () => {
  const text = [
    'Translation buffer state:',
    'gen code size       5123/1073736704',
    'TB count            13',
    'Statistics:',
    'TB flush count      2',
    'TB invalidate count 159',
    'TLB full flushes    7',
  ].join('\n');
  assert.equal(
    jitLine(text),
    '[qemu jit] tbs=13 flushes=2 invalidations=159 tlb_full_flushes=7 code_bytes=5123',
  );
  assert.equal(
    jitLine('nothing'),
    '[qemu jit] tbs=? flushes=? invalidations=? tlb_full_flushes=? code_bytes=?',
  );
});

test('samples a real QEMU until told to stop', async () => {
  const socket = path.join(dir, 'qmp.sock');
  const qemu = spawn(
    'qemu-system-x86_64',
    [
      '-M',
      'pc',
      '-accel',
      'tcg',
      '-S',
      '-nodefaults',
      '-display',
      'none',
      '-qmp',
      `unix:${socket},server=on,wait=off`,
    ],
    { stdio: 'ignore' },
  );
  try {
    const lines: string[] = [];
    let going = true;
    const sampling = jitSampler(socket, 50)(
      (text) => lines.push(text),
      () => going,
    );
    const deadline = Date.now() + 60_000;
    while (lines.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    going = false;
    await sampling;
    assert.ok(lines.length >= 3, `got ${lines.length} samples: ${lines.join(' | ')}`);
    for (const line of lines) assert.match(line, /^\[qemu jit\] tbs=\d+ flushes=\d+ invalidations=\d+ /);
  } finally {
    qemu.kill('SIGKILL');
  }
});
