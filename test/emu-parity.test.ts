/**
 * Parity of the emulated kernel with a real 7.2 kernel where they used to
 * differ (issue 12):
 * - session names are bytes across an emulated kexec (raw ioctls, the
 *   caller's exact bytes, so nothing on the client side decodes a name);
 * - a release is seen when close() returns, or when wait() returns for a
 *   process that exited (test/emu-parity/parity.c, an unmodified C program
 *   under the preload shim).
 *
 * Needs a C compiler (scripts/build-native.sh builds the shim).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type Emulator, startEmulator } from '../src/kernel/emu/index.js';
import { OwnedFd } from '../src/sys/fd.js';

const CREATE_SESSION = 0xba00;
const RETRIEVE_SESSION = 0xba01;
const GET_NAME = 0xba43;

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SHIM = path.join(ROOT, 'build/native/libluoemu.so');

const emulators: { emu: Emulator; dir: string }[] = [];
let buildDir = '';
let program = '';
before(() => {
  execFileSync(path.join(ROOT, 'scripts/build-native.sh'), { stdio: ['ignore', 'ignore', 'inherit'] });
  buildDir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-emu-parity-bin-'));
  program = path.join(buildDir, 'emu-parity');
  execFileSync(
    'cc',
    ['-O2', '-Wall', '-Werror', '-o', program, path.join(ROOT, 'test/emu-parity/parity.c')],
    {
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  );
});
after(async () => {
  for (const { emu, dir } of emulators) {
    await emu.stop().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
  if (buildDir) fs.rmSync(buildDir, { recursive: true, force: true });
});

/** Run a parity.c scenario under the shim on `emu`; its "key value" lines as a map. */
function runC(emu: Emulator, scenario: string, timeoutMs = 120_000): Promise<Map<string, string>> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, [scenario], {
      env: { ...process.env, LD_PRELOAD: SHIM, LUOKIT_EMU_STATE: emu.paths.dir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      const lines = new Map<string, string>();
      for (const line of out.split('\n')) {
        const space = line.indexOf(' ');
        if (space > 0) lines.set(line.slice(0, space), line.slice(space + 1));
      }
      if (status !== 0 || lines.get('done') !== scenario) {
        reject(new Error(`emu-parity ${scenario} failed (${signal ?? status}):\n${out}`));
      } else {
        resolve(lines);
      }
    });
  });
}

async function emulator(): Promise<Emulator> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-emu-parity-'));
  const emu = await startEmulator({ stateDir: dir });
  emulators.push({ emu, dir });
  return emu;
}

/** struct liveupdate_ioctl_{create,retrieve}_session with `name` as raw bytes. */
function sessionArg(name: Uint8Array): Buffer {
  const arg = Buffer.alloc(72);
  arg.writeUInt32LE(72, 0);
  arg.writeInt32LE(-1, 4);
  Buffer.from(name).copy(arg, 8);
  return arg;
}

/** CREATE_SESSION or RETRIEVE_SESSION by raw name bytes: the new session fd, or the errno name. */
function openSession(emu: Emulator, device: number, request: number, name: Uint8Array): OwnedFd | string {
  const arg = sessionArg(name);
  try {
    emu.transport.ioctl(device, request, arg);
  } catch (err) {
    return (err as { code: string }).code;
  }
  return new OwnedFd(arg.readInt32LE(4));
}

/** SESSION_GET_NAME: the bytes before the NUL. */
function getName(emu: Emulator, session: OwnedFd): Buffer {
  const arg = Buffer.alloc(72);
  arg.writeUInt32LE(72, 0);
  emu.transport.ioctl(session.fd, GET_NAME, arg);
  const field = arg.subarray(8);
  return Buffer.from(field.subarray(0, field.indexOf(0)));
}

test('session names are bytes: names that are not UTF-8 cross an emulated kexec unchanged', async () => {
  const emu = await emulator();
  const names = [
    // Two names a UTF-8 decoder would make the same ('\ufffd\ufffd\ufffda'): the kernel keeps both.
    Buffer.from([0xff, 0xfe, 0x80, 0x61]),
    Buffer.from([0xff, 0xfd, 0x80, 0x61]),
    // 63 bytes that are not UTF-8: each would become 3 bytes of U+FFFD, too long for the field.
    Buffer.alloc(63, 0xc3),
    // Valid UTF-8 and plain ASCII stay as they are too.
    Buffer.from('caf\u00e9-\u{1f600}', 'utf8'),
    Buffer.from('plain'),
  ];
  const device = emu.openDevice();
  const held: OwnedFd[] = [];
  for (const name of names) {
    const session = openSession(emu, device.fd, CREATE_SESSION, name);
    assert.ok(session instanceof OwnedFd, `CREATE_SESSION ${name.toString('hex')}: ${session}`);
    assert.deepEqual(getName(emu, session), name, 'GET_NAME before the kexec');
    held.push(session);
  }
  device.close();
  await emu.kexec();
  for (const fd of held) fd.close();

  const next = emu.openDevice();
  try {
    const status = (await emu.status()) as { incoming: { nameHex: string }[] };
    assert.deepEqual(
      status.incoming.map((s) => s.nameHex),
      names.map((n) => n.toString('hex')),
      'status shows every name exactly, in hex',
    );
    for (const name of names) {
      const session = openSession(emu, next.fd, RETRIEVE_SESSION, name);
      assert.ok(session instanceof OwnedFd, `RETRIEVE_SESSION ${name.toString('hex')}: ${session}`);
      assert.deepEqual(getName(emu, session), name, `GET_NAME after the kexec (${name.toString('hex')})`);
      session.close();
    }
    // A name a UTF-8 round trip would have produced does not exist.
    const replaced = Buffer.from('\ufffd\ufffd\ufffda', 'utf8');
    assert.equal(openSession(emu, next.fd, RETRIEVE_SESSION, replaced), 'ENOENT');
  } finally {
    next.close();
  }
});

test('a session closed by close() is released before close() returns: its memfd is unpinned at once', async () => {
  const emu = await emulator();
  const out = await runC(emu, 'close-unpins');
  assert.equal(out.get('busy_while_preserved'), '200', 'F_SEAL_WRITE is EBUSY while preserved');
  assert.equal(out.get('busy_after_close'), '0', 'F_SEAL_WRITE works right after close()');
});

test('a process that exits releases its sessions before the wait() of its parent returns', async () => {
  const emu = await emulator();
  const out = await runC(emu, 'exit-unpins');
  assert.equal(out.get('busy_after_exit'), '0', 'F_SEAL_WRITE works right after wait()');
});

/**
 * Every write path into a preserved memfd (write, pwrite, writev, pwritev,
 * pwritev2, O_APPEND, lseek past the end, sendfile, copy_file_range, splice,
 * ftruncate, fallocate): the trace must be test/emu-parity/writes.expected,
 * what the 7.2 source says shmem does with a frozen mapping (to be checked
 * line by line on a real kernel: the same program, no shim).
 */
test('a preserved memfd keeps its size on every write path, as shmem with a frozen mapping does', async () => {
  const emu = await emulator();
  const expected = fs.readFileSync(path.join(ROOT, 'test/emu-parity/writes.expected'), 'utf8');
  const out = await runC(emu, 'writes');
  const text = [...out].map(([k, v]) => `${k} ${v}`).join('\n');
  assert.equal(`${text}\n`, expected);
});

test('close_range() and closefrom() over a session fd release it before they return', async () => {
  const emu = await emulator();
  const out = await runC(emu, 'close-range-unpins');
  assert.equal(out.get('busy_after_close_range'), '0', 'F_SEAL_WRITE works right after close_range()');
  assert.equal(out.get('busy_after_closefrom'), '0', 'F_SEAL_WRITE works right after closefrom()');
});

test('a child killed by SIGKILL has its sessions released before waitpid() returns', async () => {
  const emu = await emulator();
  const out = await runC(emu, 'kill-unpins');
  assert.equal(out.get('busy_after_kill'), '0', 'F_SEAL_WRITE works right after waitpid()');
});

/**
 * F_SEAL_FUTURE_WRITE on a preserved memfd: sealed before PRESERVE_FD (no writable mapping
 * can stand in for the pin) or after; F_SEAL_WRITE then meets the pinned pages (EBUSY) until
 * the session is closed. The lines are the real 7.2.13 kernel's (the bench compares them).
 */
test('F_SEAL_FUTURE_WRITE on a preserved memfd: F_SEAL_WRITE is EBUSY while pinned, as on the kernel', async () => {
  const emu = await emulator();
  const out = await runC(emu, 'future-write');
  const expected: Record<string, string> = {
    'before.future_write': 'ok 0',
    'before.preserve': 'ok 0',
    'before.write': 'EPERM',
    'before.mmap_shared_write': 'EPERM',
    'before.seal_write': 'EBUSY',
    'before.seals': 'ok 16',
    'after.preserve': 'ok 0',
    'after.future_write': 'ok 0',
    'after.write': 'EPERM',
    'after.seal_write': 'EBUSY',
    'after.seals': 'ok 16',
    'empty.future_write': 'ok 0',
    'empty.preserve': 'ok 0',
    'empty.seal_write': 'ok 0',
    'closed.before.seal_write': 'ok 0',
    'closed.after.seal_write': 'ok 0',
    'closed.before.seals': 'ok 24',
  };
  for (const [key, value] of Object.entries(expected)) assert.equal(out.get(key), value, key);
});

/**
 * What the differential fuzzer found, one deterministic case each: a preserved memfd has no
 * hole below its size (holes and fallocated pages), copy_file_range across superblocks is
 * EXDEV first, an F_SEAL_GROW memfd refuses growth in 2 MiB pieces. The lines are
 * test/emu-parity/fuzz-found.expected, the real 7.2.13 and 7.3 kernels' output (the bench checks it).
 */
test('what the differential fuzzer found stays fixed (fuzz-found.expected is the real kernel output)', async () => {
  const emu = await emulator();
  const expected = fs.readFileSync(path.join(ROOT, 'test/emu-parity/fuzz-found.expected'), 'utf8');
  const out = await runC(emu, 'fuzz-found');
  const text = [...out].map(([k, v]) => `${k} ${v}`).join('\n');
  assert.equal(`${text}\n`, expected);
});
