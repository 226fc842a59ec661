/**
 * The capture part of the real-kernel bench, inside the QEMU guest (docs/vm.md,
 * vm/guest/capture.sh runs it):
 *
 *   `preserve` (boot 0): creates CAPTURE_SESSIONS through luokit's real backend on
 *       /dev/liveupdate (memfds of distinct sizes, 0 and non-page-multiple included, seals,
 *       file positions, dense and sparse content), writes what it preserved to
 *       $LUOKIT_OUT/capture-expected.json, then runs the kexec itself (vm/guest/kexec-next.sh),
 *       holding the sessions while the kernel goes away;
 *   `verify` (boot 1, after the host took its memory dump): retrieves every session and file
 *       and checks size, position, seals and content against the same list, so the bench
 *       knows the handover it inspected is the one the kernel restores.
 *
 * What is preserved is data (CAPTURE_SESSIONS), shared with the host's comparison
 * (test/vm/capture.ts), so neither side hard-codes the other's results.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openDevice } from '../../src/kernel/index.js';
import { lseek, pwriteAll, read, SEEK_SET } from '../../src/sys/file.js';
import { addSeals, getSeals, memfdCreate } from '../../src/sys/memfd.js';
import {
  CAPTURE_SESSIONS,
  type CaptureExpectation,
  contentOf,
  EXPECTED_FILE,
  type ExpectedFile,
  pagesOf,
} from './capture.js';

const ROOT = process.env.LUOKIT_ROOT ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function writeDurably(file: string, text: string): void {
  const fd = fs.openSync(`${file}.tmp`, 'w');
  fs.writeSync(fd, text);
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  fs.renameSync(`${file}.tmp`, file);
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

function preserve(out: string): number {
  const device = openDevice({ backend: 'real' });
  const held: unknown[] = [device];
  const sessions: CaptureExpectation['sessions'] = [];
  for (const spec of CAPTURE_SESSIONS) {
    const session = device.createSession(spec.name);
    held.push(session);
    const files: ExpectedFile[] = [];
    for (const file of spec.files) {
      const fd = memfdCreate(`capture-${spec.name}-${file.token}`);
      held.push(fd);
      const content = contentOf(file);
      for (const [offset, bytes] of content.writes) pwriteAll(fd, bytes, offset);
      lseek(fd, file.pos, SEEK_SET);
      if (file.seals !== 0) addSeals(fd, file.seals);
      session.preserveFd(fd, BigInt(file.token));
      files.push({
        token: file.token,
        size: file.size,
        pos: file.pos,
        seals: getSeals(fd),
        pages: pagesOf(file.size),
        sha256: sha256(content.image),
      });
    }
    sessions.push({ name: spec.name, files });
  }
  const expectation: CaptureExpectation = {
    schema: 'luokit-capture/1',
    release: fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
    sessions,
  };
  writeDurably(path.join(out, EXPECTED_FILE), `${JSON.stringify(expectation, null, 1)}\n`);
  const files = sessions.reduce((n, s) => n + s.files.length, 0);
  console.log(`LUOKIT-CAPTURE-PRESERVED boot=0 sessions=${sessions.length} files=${files}`);
  // Alive, holding every session, while kexec-next.sh replaces the kernel; it returns only
  // when the kexec failed (it printed LUOKIT-KEXEC-FAILED).
  spawnSync('sh', [path.join(ROOT, 'vm/guest/kexec-next.sh')], { stdio: 'inherit' });
  console.log(`LUOKIT-CAPTURE-PROBLEM boot=0 the kexec returned (${held.length} objects held)`);
  return 1;
}

function verify(out: string): number {
  const expected = JSON.parse(fs.readFileSync(path.join(out, EXPECTED_FILE), 'utf8')) as CaptureExpectation;
  const device = openDevice({ backend: 'real' });
  const problems: string[] = [];
  for (const spec of expected.sessions) {
    const session = device.retrieveSession(spec.name);
    for (const file of spec.files) {
      const fd = session.retrieveFd(BigInt(file.token));
      const where = `session ${spec.name} token ${file.token}`;
      const data = file.size === 0 ? new Uint8Array(0) : read(fd, file.size, 0);
      const pos = lseek(fd, 0, 1);
      const seals = getSeals(fd);
      if (data.length !== file.size) problems.push(`${where}: read ${data.length} bytes, size ${file.size}`);
      if (sha256(data) !== file.sha256) problems.push(`${where}: content differs after retrieve`);
      if (pos !== file.pos) problems.push(`${where}: position ${pos}, preserved ${file.pos}`);
      if (seals !== file.seals)
        problems.push(`${where}: seals 0x${seals.toString(16)}, preserved 0x${file.seals.toString(16)}`);
      fd.close();
    }
    session.finish();
    session.close();
  }
  device.close();
  for (const problem of problems) console.log(`LUOKIT-CAPTURE-PROBLEM boot=1 ${problem}`);
  console.log(
    `LUOKIT-CAPTURE-VERIFIED boot=1 sessions=${expected.sessions.length} problems=${problems.length}`,
  );
  return problems.length === 0 ? 0 : 1;
}

function main(): number {
  const out = process.env.LUOKIT_OUT;
  if (!out) throw new Error('LUOKIT_OUT is not set');
  const step = process.argv[2];
  if (step === 'preserve') return preserve(out);
  if (step === 'verify') return verify(out);
  throw new Error(`guest-capture: unknown step '${step}' (preserve or verify)`);
}

try {
  process.exitCode = main();
} catch (err) {
  console.log(
    `LUOKIT-CAPTURE-PROBLEM boot=${process.env.LUOKIT_BOOT} guest capture program failed: ${String(err).split('\n')[0]}`,
  );
  console.error(err);
  process.exitCode = 2;
}
