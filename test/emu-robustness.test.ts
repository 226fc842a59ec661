/**
 * The emulated kernel under bad input: malformed protocol messages, clients
 * that die mid-request, corrupt or foreign handovers in its state directory.
 * It must answer with the kernel's errors and keep serving; it never crashes
 * and never retrieves something wrong.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { writeHandover } from '../src/abi/handover.js';
import { PhysicalMemoryWriter } from '../src/abi/memory.js';
import { SparseFileMemory } from '../src/abi/memory-files.js';
import { type Emulator, startEmulator } from '../src/kernel/emu/index.js';
import { decodeReply, encodeRequest, KIND_IOCTL } from '../src/kernel/emu/protocol.js';
import {
  connect,
  fstat,
  memfdCreate,
  pread,
  pwriteAll,
  receiveWithFds,
  sendWithFds,
  socket,
  waitReadable,
} from '../src/sys/index.js';
import { waitUntil } from './support/wait.js';

const emulators: Emulator[] = [];
/** Every state directory made here: each holds a memory.img, removed once its emulator stopped. */
const stateDirs: string[] = [];
after(async () => {
  for (const emu of emulators) {
    await emu.stop().catch(() => {});
    // Its last writes (emu.log, kernel.json) land when the process ends: remove the directory after.
    if (emu.pid !== null)
      await waitUntil(() => !processAlive(emu.pid!), 'the emulator exits', 10_000).catch(() => {});
  }
  for (const dir of stateDirs) fs.rmSync(dir, { recursive: true, force: true });
});

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function stateDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-emu-robust-'));
  stateDirs.push(dir);
  return dir;
}

async function emulator(dir = stateDir(), kernel?: string): Promise<Emulator> {
  const emu = await startEmulator({ stateDir: dir, ...(kernel ? { kernel } : {}) });
  emulators.push(emu);
  return emu;
}

/** A raw connection to the device socket, past the handshake. */
function rawDevice(emu: Emulator) {
  const fd = socket('seqpacket');
  connect(fd, emu.paths.deviceSocket);
  assert.ok(waitReadable(fd, 5000));
  assert.equal(decodeReply(receiveWithFds(fd)!.data).result, 0);
  return {
    fd,
    ask(message: Buffer, fds: number[] = []): number {
      sendWithFds(fd, message, fds);
      assert.ok(waitReadable(fd, 5000), 'the emulator answers');
      const got = receiveWithFds(fd)!;
      for (const f of got.fds) f.close();
      return decodeReply(got.data).result;
    },
  };
}

const EPROTO = -71;

test('malformed messages get EPROTO and the emulator keeps serving', async () => {
  const emu = await emulator();
  const dev = rawDevice(emu);
  assert.equal(dev.ask(Buffer.from('not a request at all, just bytes')), EPROTO);
  assert.equal(dev.ask(Buffer.alloc(3)), EPROTO, 'shorter than a header');
  const bad = encodeRequest({ kind: KIND_IOCTL, request: 0xba00, flags: 0, arg: Buffer.alloc(72) });
  bad.writeUInt32LE(1000, 16);
  assert.equal(dev.ask(bad), EPROTO, 'arg_len disagrees with the message');
  const wrongKind = encodeRequest({ kind: 9, request: 0xba00, flags: 0, arg: Buffer.alloc(72) });
  assert.equal(dev.ask(wrongKind), EPROTO);
  using a = memfdCreate('a');
  using b = memfdCreate('b');
  const create = Buffer.alloc(72);
  create.writeUInt32LE(72, 0);
  create.write('fds', 8);
  const twoFds = encodeRequest({ kind: KIND_IOCTL, request: 0xba00, flags: 0, arg: create });
  assert.equal(dev.ask(twoFds, [a.fd, b.fd]), EPROTO, 'at most one fd per request');
  // Still a working kernel, on the same connection:
  assert.equal(dev.ask(encodeRequest({ kind: KIND_IOCTL, request: 0xba00, flags: 0, arg: create })), 0);
  dev.fd.close();
  using device = emu.openDevice();
  assert.equal(device.createSession('after-garbage').name, 'after-garbage');
});

test('a client killed in the middle of its work loses its sessions, nothing else', async () => {
  const emu = await emulator();
  const script = `
    import { openEmulatedDevice } from './src/kernel/emu/index.js';
    import { memfdCreate } from './src/sys/index.js';
    const dev = openEmulatedDevice({ stateDir: ${JSON.stringify(emu.paths.dir)}, start: false });
    const s = dev.createSession('doomed');
    const m = memfdCreate('m');
    s.preserveFd(m, 1n);
    process.stdout.write('ready\\n');
    setInterval(() => s.getName(), 1);
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
  using device = emu.openDevice();
  const again = device.createSession('doomed');
  assert.equal(again.name, 'doomed', 'the dead client released the device and its session name');
  const status = (await emu.status()) as { outgoing: { name: string }[] };
  assert.deepEqual(
    status.outgoing.map((s) => s.name),
    ['doomed'],
  );
});

/** Write a handover into a stopped emulator's state directory, as a previous kernel would have. */
function craftHandover(dir: string, options: { luoCompatible?: string; compatible?: string } = {}): Buffer {
  const content = Buffer.alloc(3 * 4096 + 100);
  for (let i = 0; i < content.length; i++) content[i] = (i * 7) & 0xff;
  const image = SparseFileMemory.open(path.join(dir, 'memory.img'), { writable: true });
  const writer = new PhysicalMemoryWriter(image);
  const folios = [0, 1, 2, 3].map((index) => {
    const pa = writer.allocPages(1);
    writer.write(pa, content.subarray(index * 4096, (index + 1) * 4096));
    return { index: BigInt(index), pa, order: 0, flags: 3 };
  });
  const { fdt } = writeHandover(
    writer,
    {
      liveupdateNum: 5n,
      previousRelease: '7.2.13',
      kexecCount: 5,
      sessions: [
        {
          name: 'crafted',
          files: [
            {
              token: 9n,
              compatible: options.compatible ?? 'memfd-v2',
              memfd: { pos: 10n, size: BigInt(content.length), seals: 0, folios },
            },
          ],
        },
      ],
    },
    options.luoCompatible ? { luoCompatible: options.luoCompatible } : {},
  );
  image.close();
  fs.writeFileSync(path.join(dir, 'kho.dtb'), fdt);
  return content;
}

test('a handover written by another process is restored from its bytes alone', async () => {
  const dir = stateDir();
  const content = craftHandover(dir);
  const emu = await emulator(dir);
  const status = (await emu.status()) as { boot: { outcome: string } };
  assert.equal(status.boot.outcome, 'restored');
  using device = emu.openDevice();
  using session = device.retrieveSession('crafted');
  using file = session.retrieveFd(9n);
  assert.equal(fstat(file).size, content.length);
  assert.ok(pread(file, content.length, 0).equals(content));
});

test('a LUO format this kernel does not speak is a panic: it serves nothing', async () => {
  const dir = stateDir();
  craftHandover(dir, { luoCompatible: 'luo-v9' });
  const emu = await emulator(dir);
  const status = (await emu.status()) as { boot: { outcome: string; detail: string } };
  assert.equal(status.boot.outcome, 'panic');
  assert.match(status.boot.detail, /luo-v9/);
  assert.throws(() => emu.openDevice(), { code: 'EIO', operation: 'OPEN' });
});

test('an unknown file handler makes every open of the device fail with EIO', async () => {
  const dir = stateDir();
  craftHandover(dir, { compatible: 'vfio-v1' });
  const emu = await emulator(dir);
  assert.throws(() => emu.openDevice(), { code: 'EIO' });
  assert.throws(() => emu.openDevice(), { code: 'EIO' }, 'the failure is remembered');
});

test('a truncated memory image is reported, never half-restored', async () => {
  const dir = stateDir();
  craftHandover(dir);
  fs.truncateSync(path.join(dir, 'memory.img'), 16 << 20);
  const emu = await emulator(dir);
  const status = (await emu.status()) as { boot: { outcome: string; detail: string } };
  assert.notEqual(status.boot.outcome, 'restored');
  assert.match(status.boot.detail, /0x[0-9a-f]+|memory/);
  let device: ReturnType<Emulator['openDevice']> | undefined;
  try {
    device = emu.openDevice();
  } catch (err) {
    assert.equal((err as { code: string }).code, 'EIO');
    return;
  }
  // A cold boot: the sessions are gone, not wrong.
  assert.throws(() => device!.retrieveSession('crafted'), { code: 'ENOENT' });
  device.close();
});

test('a garbage root FDT is reported and the kernel boots without a handover', async () => {
  const dir = stateDir();
  craftHandover(dir);
  fs.writeFileSync(path.join(dir, 'kho.dtb'), Buffer.from('garbage'));
  const emu = await emulator(dir);
  const status = (await emu.status()) as { boot: { outcome: string } };
  assert.ok(['handover-ignored', 'panic'].includes(status.boot.outcome), status.boot.outcome);
});

test('kexec into an older kernel with another KHO format loses the data, as a cold boot', async () => {
  const emu = await emulator();
  {
    using device = emu.openDevice();
    const session = device.createSession('vm');
    const m = memfdCreate('ram');
    pwriteAll(m, Buffer.from('guest'), 0);
    session.preserveFd(m, 1n);
    m.close();
  }
  const result = await emu.kexec({ to: '7.1' });
  assert.equal(result.boot.outcome, 'handover-ignored');
  assert.equal(result.kernel.version, '7.1');
  using device = emu.openDevice();
  assert.throws(() => device.retrieveSession('vm'), { code: 'ENOENT' });
  device.close();
  await assert.rejects(emu.kexec(), { code: 'EOPNOTSUPP' }, 'the emulator writes only 7.2/7.3 handovers');
});

test('a memfd resized behind the emulator makes the kexec fail with EPERM, and nothing is lost', async () => {
  const emu = await emulator();
  using device = emu.openDevice();
  using session = device.createSession('resized');
  using m = memfdCreate('ram');
  pwriteAll(m, Buffer.alloc(8192, 1), 0);
  session.preserveFd(m, 1n);
  fs.ftruncateSync(m.fd, 4096); // Node's own ftruncate: not through luokit, not through the shim
  await assert.rejects(emu.kexec(), { code: 'EPERM' });
  assert.equal(session.getName(), 'resized', 'the session is still alive and usable');
  fs.ftruncateSync(m.fd, 8192);
  const result = await emu.kexec();
  assert.equal(result.boot.outcome, 'restored');
});

test('kexec into a kernel the emulator does not know is refused with EINVAL before anything is serialized', async () => {
  const emu = await emulator();
  using device = emu.openDevice();
  using session = device.createSession('kept');
  using m = memfdCreate('ram');
  pwriteAll(m, Buffer.from('guest'), 0);
  session.preserveFd(m, 1n);
  // It used to drop every connection and shut the old kernel down, then fail to boot the
  // next one: no reply, and no kernel left.
  await assert.rejects(emu.kexec({ to: '0.0-bogus' }), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'EINVAL');
    assert.match(err.message, /unknown emulated kernel "0\.0-bogus"/);
    return true;
  });
  assert.equal(session.getName(), 'kept', 'the session is still alive and usable');
  const result = await emu.kexec();
  assert.equal(result.boot.outcome, 'restored');
  using after = emu.openDevice();
  using back = after.retrieveSession('kept');
  using restored = back.retrieveFd(1n);
  assert.equal(pread(restored, 5, 0).toString(), 'guest');
});
