/**
 * Parity of the emulated kernel with a real 7.2 kernel where they used to
 * differ (issue 12): session names are bytes across an emulated kexec.
 *
 * These drive the emulator with raw ioctls (the caller's exact bytes), as a
 * C program would, so nothing on the client side decodes a name.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { type Emulator, startEmulator } from '../src/kernel/emu/index.js';
import { OwnedFd } from '../src/sys/fd.js';

const CREATE_SESSION = 0xba00;
const RETRIEVE_SESSION = 0xba01;
const GET_NAME = 0xba43;

const emulators: { emu: Emulator; dir: string }[] = [];
after(async () => {
  for (const { emu, dir } of emulators) {
    await emu.stop().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

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
