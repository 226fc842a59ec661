/**
 * A small in-process model of the 7.2 LUO uAPI, written from the kernel
 * source (luo_core.c, luo_session.c, luo_file.c, memfd_luo.c) and the facts
 * observed on a real 7.2.13 kernel. It exists to test the scenario suite
 * itself: the suite must pass on a faithful model, and each deliberate
 * deviation (a "quirk") must make the scenarios about that rule fail.
 *
 * It is not the emulator: no handover format, no separate process. Device and
 * session fds are socketpair ends (so they can be dup'ed and closed like real
 * ones; the model notices a close when it next looks at that object), and the
 * kexec copies preserved memfds into memory and back into new memfds.
 * Known gaps (scenarios that fail here by construction): pages are not pinned,
 * so F_SEAL_WRITE on a preserved memfd is not EBUSY; sizes are not frozen
 * (like the emulator, the kexec fails with EPERM instead).
 */
import * as fs from 'node:fs';
import type { LiveUpdateDevice } from '../../src/kernel/device.js';
import { LuoDevice } from '../../src/kernel/luo-device.js';
import type { IoctlTransport } from '../../src/kernel/transport.js';
import {
  addSeals,
  dup,
  Errno,
  fstat,
  ftruncate,
  getSeals,
  isOpen,
  lseek,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  memfdCreate,
  type OwnedFd,
  pwriteAll,
  receiveWithFds,
  SEEK_CUR,
  SysError,
  setCloseOnExec,
  socketpair,
} from '../../src/sys/index.js';
import { luoError } from '../../src/uapi/index.js';
import { FIOCLEX, FIONCLEX, readAll, TMPFS_MAGIC } from './helpers.js';

/** Deliberate deviations from the kernel, to prove that scenarios can fail. */
export type Quirk =
  | 'no-exclusive-open'
  | 'enotty-out-of-range'
  | 'ignore-nonzero-tail'
  | 'create-accepts-empty-name'
  | 'retrieve-validates-name'
  | 'no-double-preserve-check'
  | 'close-keeps-files'
  | 'position-not-carried'
  | 'retry-failed-retrieve'
  | 'carry-unretrieved'
  | 'second-finish-fails'
  | 'retrieve-after-close-einval'
  | 'late-seals-carried'
  | 'tail-check-before-direction';

const ALL_SEALS = 0x3f;

interface Endpoint {
  /** The model's end of the socketpair; EOF on it means the caller closed every copy of theirs. */
  peer: OwnedFd;
  gen: number;
  dead: boolean;
}

interface DeviceObject extends Endpoint {
  kind: 'device';
}

interface OutgoingFile {
  token: bigint;
  inode: string;
  file: OwnedFd;
  size: number;
  seals: number;
}

interface SerializedFile {
  token: bigint;
  size: number;
  pos: number;
  seals: number;
  data: Buffer;
}

interface IncomingFile {
  ser: SerializedFile;
  /** 0 never tried, 1 retrieved, negative: the errno of the failed retrieve. */
  status: number;
  file?: OwnedFd;
  inode?: string;
}

interface SessionObject extends Endpoint {
  kind: 'session';
  name: Buffer;
  direction: 'outgoing' | 'incoming';
  outgoing: OutgoingFile[];
  incoming: IncomingFile[];
}

interface IncomingSession {
  name: Buffer;
  files: SerializedFile[];
  retrieved: SessionObject | null;
}

function fail(errno: number): never {
  throw new SysError('ioctl', errno);
}

function inodeOf(fd: number): string {
  const st = fstat(fd);
  return `${st.dev}:${st.ino}`;
}

/** Bytes of a 64-byte name field up to the first NUL (strnlen). */
function nameField(arg: Buffer): Buffer {
  const field = arg.subarray(8, 72);
  const nul = field.indexOf(0);
  return Buffer.from(field.subarray(0, nul < 0 ? 64 : nul));
}

export class ModelKernel {
  readonly quirks: ReadonlySet<Quirk>;
  readonly transport: IoctlTransport;
  #gen = 0;
  #endpoints = new Map<string, DeviceObject | SessionObject>();
  #device: DeviceObject | null = null;
  #outgoing: SessionObject[] = [];
  #incoming: IncomingSession[] = [];
  /** luo_preserved_files: inode -> the session holding it. */
  #preserved = new Map<string, SessionObject>();
  #failNextRetrieve: number | null = null;

  constructor(quirks: Iterable<Quirk> = []) {
    this.quirks = new Set(quirks);
    this.transport = { backend: 'emulated', ioctl: (fd, request, arg) => this.#ioctl(fd, request, arg) };
  }

  openDevice(): LiveUpdateDevice {
    if (this.#device && !this.#isDead(this.#device) && !this.quirks.has('no-exclusive-open')) {
      throw luoError('OPEN', Errno.EBUSY);
    }
    const { caller, endpoint } = this.#endpoint();
    const device: DeviceObject = { ...endpoint, kind: 'device' };
    this.#endpoints.set(inodeOf(caller.fd), device);
    this.#device = device;
    return new LuoDevice(this.transport, caller);
  }

  injectFault(fault: { op: 'retrieve-fd'; errno: `E${string}` }): void {
    this.#failNextRetrieve = (Errno as Record<string, number>)[fault.errno] ?? Errno.EIO;
  }

  /** reboot(KEXEC): serialize open outgoing sessions, then become the next kernel. */
  async kexec(): Promise<void> {
    const next: IncomingSession[] = [];
    for (const session of this.#outgoing) {
      if (this.#isDead(session)) continue;
      const files: SerializedFile[] = [];
      for (const f of session.outgoing) {
        const size = fstat(f.file).size;
        if (size !== f.size)
          throw new SysError('reboot', Errno.EPERM, 'kexec: a preserved memfd changed size');
        files.push({
          token: f.token,
          size,
          pos: this.quirks.has('position-not-carried') ? 0 : lseek(f.file, 0, SEEK_CUR),
          seals: this.quirks.has('late-seals-carried') ? getSeals(f.file) : f.seals,
          data: readAll(f.file, size),
        });
      }
      next.push({ name: session.name, files, retrieved: null });
    }
    if (this.quirks.has('carry-unretrieved')) {
      for (const s of this.#incoming) if (s.retrieved === null) next.push({ ...s });
    }
    this.#teardown();
    this.#gen++;
    this.#incoming = next;
  }

  /** Close everything the model holds. */
  close(): void {
    this.#teardown();
    for (const endpoint of this.#endpoints.values()) endpoint.peer.close();
    this.#endpoints.clear();
    this.#incoming = [];
  }

  async stop(): Promise<void> {
    this.close();
  }

  #teardown(): void {
    for (const session of this.#outgoing) for (const f of session.outgoing) f.file.close();
    for (const endpoint of this.#endpoints.values()) {
      endpoint.dead = true;
      if (endpoint.kind === 'session') for (const f of endpoint.incoming) f.file?.close();
    }
    // Old fds stay known (ioctls on them give EIO) until their caller closes them.
    this.#outgoing = [];
    this.#preserved.clear();
    this.#device = null;
  }

  #endpoint(): { caller: OwnedFd; endpoint: Endpoint } {
    const [caller, peer] = socketpair('seqpacket', { nonBlocking: true });
    return { caller, endpoint: { peer, gen: this.#gen, dead: false } };
  }

  /** Has the caller closed every fd of this object? If so, run its release now. */
  #isDead(endpoint: DeviceObject | SessionObject): boolean {
    if (endpoint.dead) return true;
    const got = receiveWithFds(endpoint.peer, 1);
    if (got === null || !got.eof) return false;
    this.#release(endpoint);
    return true;
  }

  #release(endpoint: DeviceObject | SessionObject): void {
    endpoint.dead = true;
    if (endpoint.kind === 'device') {
      if (this.#device === endpoint) this.#device = null;
      return;
    }
    if (endpoint.direction === 'outgoing') {
      if (!this.quirks.has('close-keeps-files')) {
        for (const f of endpoint.outgoing) {
          this.#preserved.delete(f.inode);
          f.file.close();
        }
        endpoint.outgoing = [];
      }
      this.#outgoing = this.#outgoing.filter((s) => s !== endpoint);
    } else {
      this.#finish(endpoint);
      if (this.quirks.has('retrieve-after-close-einval')) return;
      this.#incoming = this.#incoming.filter((s) => s.retrieved !== endpoint);
    }
  }

  #ioctl(fd: number, request: number, arg: Buffer | null): number {
    if (request === FIOCLEX || request === FIONCLEX) {
      setCloseOnExec(fd, request === FIOCLEX);
      return 0;
    }
    if (!isOpen(fd)) fail(Errno.EBADF);
    const target = this.#endpoints.get(inodeOf(fd));
    if (target === undefined) fail(Errno.ENOTTY);
    if (target.gen !== this.#gen) fail(Errno.EIO);
    return target.kind === 'device'
      ? this.#deviceIoctl(request, arg)
      : this.#sessionIoctl(target, request, arg);
  }

  /** get_user of the size, exact command match, size rules, copy_struct_from_user. */
  #struct(request: number, nr: number, arg: Buffer | null, size: number, check?: () => void): Buffer {
    if (arg === null || arg.length < 4) fail(Errno.EFAULT);
    const userSize = arg.readUInt32LE(0);
    if (request >>> 0 !== (0xba00 | nr)) fail(Errno.ENOTTY);
    const tail = (): void => {
      if (userSize > arg.length) fail(Errno.EFAULT);
      if (userSize > size && !this.quirks.has('ignore-nonzero-tail')) {
        if (arg.subarray(size, userSize).some((b) => b !== 0)) fail(Errno.E2BIG);
      }
    };
    if (this.quirks.has('tail-check-before-direction')) tail();
    check?.();
    if (userSize < size) fail(Errno.EINVAL);
    tail();
    return Buffer.from(arg.subarray(0, size));
  }

  #respond(arg: Buffer, kernel: Buffer): void {
    kernel.copy(arg, 0, 0, Math.min(arg.readUInt32LE(0), kernel.length));
  }

  #deviceIoctl(request: number, arg: Buffer | null): number {
    const nr = request & 0xff;
    if (nr >= 2) fail(this.quirks.has('enotty-out-of-range') ? Errno.ENOTTY : Errno.EINVAL);
    const buf = this.#struct(request, nr, arg, 72);
    const name = nameField(buf);
    if (nr === 0) {
      const empty = name.length === 0 && !this.quirks.has('create-accepts-empty-name');
      if (empty || name.length > 63) fail(Errno.EINVAL);
      const existing = this.#outgoing.find((s) => s.name.equals(name));
      if (existing && !this.#isDead(existing)) fail(Errno.EEXIST);
      const { caller, session } = this.#newSession(name, 'outgoing');
      this.#outgoing.push(session);
      buf.writeInt32LE(caller.release(), 4);
    } else {
      if (name.length === 0 && this.quirks.has('retrieve-validates-name')) fail(Errno.EINVAL);
      const incoming = this.#incoming.find((s) => s.name.equals(name));
      if (incoming === undefined) fail(Errno.ENOENT);
      if (incoming.retrieved) {
        // Retrieved and still open: EINVAL. Closed: released (implicit FINISH) and gone: ENOENT.
        if (this.#isDead(incoming.retrieved) && !this.#incoming.includes(incoming)) fail(Errno.ENOENT);
        fail(Errno.EINVAL);
      }
      const { caller, session } = this.#newSession(name, 'incoming');
      session.incoming = incoming.files.map((ser) => ({ ser, status: 0 }));
      incoming.retrieved = session;
      buf.writeInt32LE(caller.release(), 4);
    }
    this.#respond(arg!, buf);
    return 0;
  }

  #newSession(name: Buffer, direction: 'outgoing' | 'incoming'): { caller: OwnedFd; session: SessionObject } {
    const { caller, endpoint } = this.#endpoint();
    const session: SessionObject = {
      ...endpoint,
      kind: 'session',
      name,
      direction,
      outgoing: [],
      incoming: [],
    };
    this.#endpoints.set(inodeOf(caller.fd), session);
    return { caller, session };
  }

  #sessionIoctl(session: SessionObject, request: number, arg: Buffer | null): number {
    const nr = request & 0xff;
    if (nr < 0x40 || nr - 0x40 >= 4)
      fail(this.quirks.has('enotty-out-of-range') ? Errno.ENOTTY : Errno.EINVAL);
    const wants: 'outgoing' | 'incoming' | null = nr === 0x40 ? 'outgoing' : nr === 0x43 ? null : 'incoming';
    const size = nr === 0x42 ? 8 : nr === 0x43 ? 72 : 16;
    const buf = this.#struct(request, nr, arg, size, () => {
      if (wants !== null && session.direction !== wants) fail(Errno.EINVAL);
    });
    switch (nr) {
      case 0x40:
        this.#preserve(session, buf.readBigUInt64LE(8), buf.readInt32LE(4));
        break;
      case 0x41:
        buf.writeInt32LE(this.#retrieveFd(session, buf.readBigUInt64LE(8)), 4);
        break;
      case 0x42:
        if (buf.readUInt32LE(4) !== 0) fail(Errno.EINVAL);
        if (this.quirks.has('second-finish-fails') && session.incoming.length === 0) fail(Errno.EINVAL);
        this.#finish(session);
        break;
      default:
        if (buf.readUInt32LE(4) !== 0) fail(Errno.EINVAL);
        buf.fill(0, 8);
        session.name.copy(buf, 8, 0, 63);
    }
    this.#respond(arg!, buf);
    return 0;
  }

  #preserve(session: SessionObject, token: bigint, fd: number): void {
    if (session.outgoing.some((f) => f.token === token)) fail(Errno.EEXIST);
    if (fd < 0 || !isOpen(fd)) fail(Errno.EBADF);
    const st = fstat(fd);
    const type = Number(fs.statfsSync(`/proc/self/fd/${fd}`).type) >>> 0;
    if (type !== TMPFS_MAGIC || !st.isFile || st.nlink !== 0) fail(Errno.ENOENT);
    const inode = inodeOf(fd);
    const owner = this.#preserved.get(inode);
    if (owner && !this.quirks.has('no-double-preserve-check')) {
      // A closed owner is released first (as the kernel's release ran at close time).
      if (!this.#isDead(owner) || this.#preserved.has(inode)) fail(Errno.EBUSY);
    }
    const seals = getSeals(fd);
    if (seals & ~ALL_SEALS) fail(Errno.EOPNOTSUPP);
    this.#preserved.set(inode, session);
    session.outgoing.push({ token, inode, file: dup(fd), size: st.size, seals });
  }

  #retrieveFd(session: SessionObject, token: bigint): number {
    const entry = session.incoming.find((f) => f.ser.token === token);
    if (entry === undefined) fail(Errno.ENOENT);
    if (entry.status < 0 && !this.quirks.has('retry-failed-retrieve')) fail(-entry.status);
    if (entry.status > 0 && entry.file) return dup(entry.file).release();
    if (this.#failNextRetrieve !== null) {
      entry.status = -this.#failNextRetrieve;
      this.#failNextRetrieve = null;
      fail(-entry.status);
    }
    const { ser } = entry;
    const file = memfdCreate('', MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (ser.data.length > 0) pwriteAll(file, ser.data, 0);
    ftruncate(file, ser.size);
    if (ser.seals) addSeals(file, ser.seals);
    lseek(file, ser.pos);
    entry.status = 1;
    entry.file = file;
    entry.inode = inodeOf(file.fd);
    this.#preserved.set(entry.inode, session);
    return dup(file).release();
  }

  #finish(session: SessionObject): void {
    for (const f of session.incoming) {
      if (f.inode) this.#preserved.delete(f.inode);
      f.file?.close();
    }
    session.incoming = [];
  }
}
