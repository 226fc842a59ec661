import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  isLuoIoctlName,
  LIVEUPDATE_IOCTL_CREATE_SESSION,
  LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
  LIVEUPDATE_SESSION_FINISH,
  LIVEUPDATE_SESSION_GET_NAME,
  LIVEUPDATE_SESSION_PRESERVE_FD,
  LIVEUPDATE_SESSION_RETRIEVE_FD,
  LUO_IOCTLS,
  liveupdateIoctlNumber,
  luoIoctl,
  luoIoctlByNumber,
} from '../src/uapi/ioctl.js';

/**
 * Linux's generic _IOC(dir, type, nr, size) = dir<<30 | size<<16 | type<<8 | nr; _IO has
 * dir 0 and size 0. Written out here so the module's shortcut is checked against it.
 */
const IOC = (dir: number, type: number, nr: number, size: number): number =>
  ((dir << 30) | (size << 16) | (type << 8) | nr) >>> 0;

test('numbers are _IO(0xBA, nr) with no direction or size bits', () => {
  assert.equal(LIVEUPDATE_IOCTL_CREATE_SESSION, IOC(0, 0xba, 0x00, 0));
  assert.equal(LIVEUPDATE_IOCTL_RETRIEVE_SESSION, IOC(0, 0xba, 0x01, 0));
  assert.equal(LIVEUPDATE_SESSION_PRESERVE_FD, IOC(0, 0xba, 0x40, 0));
  assert.equal(LIVEUPDATE_SESSION_RETRIEVE_FD, IOC(0, 0xba, 0x41, 0));
  assert.equal(LIVEUPDATE_SESSION_FINISH, IOC(0, 0xba, 0x42, 0));
  assert.equal(LIVEUPDATE_SESSION_GET_NAME, IOC(0, 0xba, 0x43, 0));
  assert.equal(liveupdateIoctlNumber(0x43), 0xba43);
});

test('the table agrees with the constants and the struct sizes', () => {
  assert.deepEqual(
    LUO_IOCTLS.map((i) => [i.name, i.number, i.structSize, i.fd, i.direction, i.since]),
    [
      ['CREATE_SESSION', 0xba00, 72, 'device', undefined, '6.19'],
      ['RETRIEVE_SESSION', 0xba01, 72, 'device', undefined, '6.19'],
      ['PRESERVE_FD', 0xba40, 16, 'session', 'outgoing', '6.19'],
      ['RETRIEVE_FD', 0xba41, 16, 'session', 'incoming', '6.19'],
      ['FINISH', 0xba42, 8, 'session', 'incoming', '6.19'],
      ['GET_NAME', 0xba43, 72, 'session', 'both', '7.2'],
    ],
  );
  for (const ioctl of LUO_IOCTLS) {
    assert.equal(ioctl.number, liveupdateIoctlNumber(ioctl.nr), ioctl.name);
    assert.ok(ioctl.macro.endsWith(ioctl.name), ioctl.macro);
  }
});

test('lookups by name and number', () => {
  assert.equal(luoIoctl('FINISH').number, 0xba42);
  assert.equal(luoIoctlByNumber(0xba41)?.name, 'RETRIEVE_FD');
  assert.equal(luoIoctlByNumber(0xba02), undefined);
  assert.equal(luoIoctlByNumber(0xbb00), undefined);
  assert.ok(isLuoIoctlName('GET_NAME'));
  assert.ok(!isLuoIoctlName('OPEN'));
  assert.ok(!isLuoIoctlName('get_name'));
});
