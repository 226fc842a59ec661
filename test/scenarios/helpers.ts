/**
 * Building blocks for scenarios: raw ioctls with hand-made argument structs,
 * memfds with known contents, and the kinds of files LUO must refuse.
 * Everything is deterministic, so a stage that runs after a (real) kexec, in
 * another process, can recompute what the stage before it preserved.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { LiveUpdateDevice, Session } from '../../src/kernel/device.js';
import {
  type FdLike,
  fstat,
  ftruncate,
  lseek,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  memfdCreate,
  O_CREAT,
  O_EXCL,
  O_RDWR,
  OwnedFd,
  open,
  pread,
  pwriteAll,
  rawFd,
  SEEK_CUR,
} from '../../src/sys/index.js';
import {
  encodeFdArg,
  encodeFinishArg,
  encodeGetNameArg,
  encodeSessionArg,
  type NameInput,
} from '../../src/uapi/index.js';
import type { Expected, ScenarioContext } from './types.js';

/** The page size of x86_64 and arm64 as LUO's selftests use it (sysconf would say the same). */
export const PAGE = 4096;

export const FIONCLEX = 0x5450;
export const FIOCLEX = 0x5451;
/** O_TMPFILE as open(2) takes it (includes O_DIRECTORY). */
export const O_TMPFILE = 0o20200000;
export const TMPFS_MAGIC = 0x01021994;
export const HUGETLBFS_MAGIC = 0x958458f6;

/** `_IOC(dir, type, nr, size)`: dir 0 none, 1 write, 2 read, 3 both. */
export function ioc(dir: number, type: number, nr: number, size: number): number {
  return ((dir << 30) | (size << 16) | (type << 8) | nr) >>> 0;
}

/**
 * A copy of `struct` laid out in `length` bytes (zero-filled beyond it), with the u32 size
 * field set to `size` (default: `length`). The kernel reads `size` bytes from the pointer, so
 * the buffer is always at least that long.
 */
export function sized(struct: Buffer, size: number, length: number = Math.max(size, struct.length)): Buffer {
  const buf = Buffer.alloc(Math.max(length, size, 4));
  struct.copy(buf, 0, 0, Math.min(struct.length, buf.length));
  buf.writeUInt32LE(size, 0);
  return buf;
}

/** `buf` with byte `offset` set to `value`. */
export function poke(buf: Buffer, offset: number, value = 0x01): Buffer {
  buf[offset] = value;
  return buf;
}

export const sessionArg = (name: NameInput): Buffer => encodeSessionArg({ name });
export const fdArg = (fd: number, token: bigint): Buffer => encodeFdArg({ fd, token });
export const finishArg = (reserved = 0): Buffer => encodeFinishArg({ reserved });
export const getNameArg = (reserved = 0): Buffer => encodeGetNameArg({ reserved });

export interface RawCall {
  fd: number;
  request: number;
  arg: Buffer | null;
  /** The struct returns a new fd at offset 4 (CREATE/RETRIEVE_SESSION, RETRIEVE_FD): own it on success. */
  outFd?: boolean;
}

/**
 * One ioctl through the host's transport, exactly as given, recorded and checked. A new fd
 * the kernel returns (when `outFd`) is tracked even if the call was expected to fail.
 */
export function raw(
  ctx: ScenarioContext,
  step: string,
  call: RawCall,
  expected: Expected,
): OwnedFd | undefined {
  let created: OwnedFd | undefined;
  if (call.outFd && call.arg) call.arg.writeInt32LE(-1, 4);
  ctx.expect(
    step,
    () => {
      ctx.transport.ioctl(call.fd, call.request, call.arg);
      if (call.outFd && call.arg) {
        const fd = call.arg.readInt32LE(4);
        if (fd >= 0) created = ctx.track(new OwnedFd(fd));
      }
    },
    expected,
  );
  return created;
}

/** The session name the kernel reports for a session fd (raw GET_NAME, so it works on raw-created fds). */
export function getName(ctx: ScenarioContext, fd: number): string {
  const arg = getNameArg();
  ctx.transport.ioctl(fd, 0xba43, arg);
  const field = arg.subarray(8, 72);
  const nul = field.indexOf(0);
  return field.subarray(0, nul < 0 ? 64 : nul).toString('utf8');
}

/** Create an outgoing session through the device API, expecting success; tracked. */
export function create(ctx: ScenarioContext, device: LiveUpdateDevice, name: string, step?: string): Session {
  return ctx.expect(step ?? `CREATE_SESSION ${name}`, () => device.createSession(name), 'ok');
}

/** Retrieve an incoming session through the device API, expecting success; tracked. */
export function retrieve(
  ctx: ScenarioContext,
  device: LiveUpdateDevice,
  name: string,
  step?: string,
): Session {
  return ctx.expect(step ?? `RETRIEVE_SESSION ${name}`, () => device.retrieveSession(name), 'ok');
}

/** Deterministic pseudo-random bytes for `seed` (SHA-256 in counter mode). */
export function pattern(seed: string, length: number): Buffer {
  const out = Buffer.alloc(length);
  let block = 0;
  for (let at = 0; at < length; at += 32, block++) {
    createHash('sha256').update(`${seed}:${block}`).digest().copy(out, at);
  }
  return out;
}

/** One page holding `text` and a NUL, the rest zero: what the selftests' create_and_preserve_memfd writes. */
export function pageWithText(text: string): Buffer {
  const page = Buffer.alloc(PAGE);
  page.write(text, 0, 'utf8');
  return page;
}

/**
 * A memfd (close-on-exec, sealable unless `flags` says otherwise) holding `content`, or of
 * `content` bytes of size with no data written; tracked.
 */
export function memfd(
  ctx: ScenarioContext,
  label: string,
  content: Uint8Array | number = 0,
  flags: number = MFD_CLOEXEC | MFD_ALLOW_SEALING,
): OwnedFd {
  const fd = ctx.track(memfdCreate(label, flags));
  if (typeof content === 'number') {
    if (content > 0) ftruncate(fd, content);
  } else if (content.length > 0) {
    pwriteAll(fd, content, 0);
  }
  return fd;
}

/** All `length` bytes from offset 0 (pread, so the file position is untouched). */
export function readAll(fd: FdLike, length: number): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  while (at < length) {
    const chunk = pread(fd, Math.min(length - at, 1 << 20), at);
    if (chunk.length === 0) break;
    parts.push(chunk);
    at += chunk.length;
  }
  return Buffer.concat(parts);
}

/** The file position (lseek(fd, 0, SEEK_CUR)). */
export function position(fd: FdLike): number {
  return lseek(fd, 0, SEEK_CUR);
}

export function sizeOf(fd: FdLike): number {
  return fstat(fd).size;
}

/** statfs f_type of the filesystem holding the file behind `fd`. */
export function filesystemOf(fd: FdLike): number {
  return Number(fs.statfsSync(`/proc/self/fd/${rawFd(fd)}`).type) >>> 0;
}

/** The soft RLIMIT_NOFILE of this process. */
export function openFileLimit(): number {
  const line = fs
    .readFileSync('/proc/self/limits', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Max open files'));
  const soft = line?.split(/\s{2,}/)[1];
  return soft === undefined || soft === 'unlimited' ? Number.POSITIVE_INFINITY : Number(soft);
}

/** Stop as 'infra' unless this process may hold `count` more fds (the selftests raise RLIMIT_NOFILE). */
export function needOpenFiles(ctx: ScenarioContext, count: number): void {
  const limit = openFileLimit();
  const open = fs.readdirSync('/proc/self/fd').length;
  if (open + count + 64 > limit) {
    ctx.infra(`RLIMIT_NOFILE is ${limit} with ${open} fds open; this scenario needs ${count} more`);
  }
}

/** Stop as 'infra' unless `ctx.tmpfsDir` is on tmpfs. */
export function needTmpfs(ctx: ScenarioContext): string {
  const dir = ctx.tmpfsDir;
  let type: number;
  try {
    type = Number(fs.statfsSync(dir).type) >>> 0;
  } catch (err) {
    ctx.infra(`cannot statfs ${dir}: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (type !== TMPFS_MAGIC) ctx.infra(`${dir} is not tmpfs (f_type 0x${type.toString(16)})`);
  return dir;
}

/** An O_TMPFILE file on tmpfs (shmem, never linked); tracked. */
export function tmpfile(ctx: ScenarioContext, content: Uint8Array): OwnedFd {
  const dir = needTmpfs(ctx);
  let fd: OwnedFd;
  try {
    fd = ctx.track(open(dir, O_TMPFILE | O_RDWR, 0o600));
  } catch (err) {
    ctx.infra(`O_TMPFILE in ${dir} failed: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (content.length > 0) pwriteAll(fd, content, 0);
  return fd;
}

/** A tmpfs file with a name (unlinked when the scenario ends); tracked. */
export function linkedTmpfsFile(
  ctx: ScenarioContext,
  label: string,
  content: Uint8Array,
): { fd: OwnedFd; path: string } {
  const dir = needTmpfs(ctx);
  const file = path.join(dir, `luokit-scenario-${process.pid}-${label}`);
  fs.rmSync(file, { force: true });
  ctx.track({ close: () => fs.rmSync(file, { force: true }) });
  const fd = ctx.track(open(file, O_CREAT | O_EXCL | O_RDWR, 0o600));
  if (content.length > 0) pwriteAll(fd, content, 0);
  return { fd, path: file };
}
