/**
 * A toy VMM that lives through live updates with LuoClient: what a real VMM
 * does with luod, minus the virtualisation.
 *
 * - Guest RAM is a memfd of the given size. The "vCPU" is a timer that keeps
 *   writing into it: each tick fills a few random pages with random bytes
 *   and stamps a generation counter into page 0. For every page it keeps
 *   the SHA-256 of what it last wrote there (its running checksum), so the
 *   digest of all of RAM costs one hash over the page table, at any moment.
 * - START_PRESERVATION: preserve the RAM memfd (token 1) while the vCPU still
 *   runs, then pause it, compute the digest, and preserve a small sealed
 *   "device state" memfd (token 2) holding {digest, generation, size, ...}.
 *   Returning sends READY.
 * - ABORTED: resume the vCPU on the same RAM.
 * - KEXEC, then the connection drops (emulated kernel: this process
 *   survives): reconnect until luod answers, CLAIM the id, retrieve tokens 1
 *   and 2, finish, and resume the vCPU on the retrieved memfd at once; then
 *   tell luod the VM's blackout (RESUMED: pause to resume, the one definition
 *   luokit reports), and verify every byte of RAM against the recorded digest
 *   while the guest runs. Verification is the test's check, after the
 *   blackout, not part of it: until the sweep has reached a page, the vCPU
 *   hashes a page's content before its first write to it, so what the guest
 *   writes after the resume never hides (or fakes) a difference. Print one
 *   JSON line {"id", "verified", "bytes", "blackout_ms", "verify_ms", ...}.
 * - Real kernel: the kexec ends this process with every other. The VMM is
 *   started again in the next kernel with the same id and `claim: true`
 *   (--claim): it begins with the CLAIM, verification and resume above.
 * - `fill: true` (--fill) writes the whole of RAM with luokit's data pattern
 *   (pattern.ts) before the vCPU starts, as a booted guest's RAM would be
 *   populated: every page is then real memory the kernel must carry.
 * - `verify: 'pattern'` (--verify pattern, needs --fill) checks RAM after the
 *   reboot the way the real-kernel bench's C floor does: every byte compared
 *   with the pattern, a whole 64 MiB chunk per comparison, instead of hashing
 *   every page. Its vCPU then rewrites random pages with their own pattern
 *   bytes (real writes, known content) and stamps the generation counter into
 *   page 0 as usual, which the check expects exactly: page 0 is checked before
 *   the resume (one page), the rest after it; until the check has built its
 *   pattern, the vCPU stamps only page 0. The mode is recorded in
 *   the device state, so the VMM that claims verifies as the one that
 *   preserved. SHA-256 stays the default: it checks whatever the guest wrote.
 *
 * `runVmm()` is the whole VMM (used by `example-vmm-main.ts`, by
 * `examples/vmm.ts`, and by `luoctl demo` as child processes).
 */
import { createHash, randomFillSync } from 'node:crypto';
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { type DisconnectInfo, LuoClient, LuoClientError, type PreservationRequest } from '../client/index.js';
import type { Session } from '../kernel/index.js';
import { socketPath } from '../protocol/messages.js';
import { errorCode } from '../sys/error.js';
import type { OwnedFd } from '../sys/fd.js';
import { fstat, ftruncate, pread, pwriteAll } from '../sys/file.js';
import {
  addSeals,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  memfdCreate,
} from '../sys/memfd.js';
import { parseSize } from '../sys/size.js';
import { Pattern } from './pattern.js';

export const PAGE_SIZE = 4096;
export const RAM_TOKEN = 1n;
export const DEVICE_STATE_TOKEN = 2n;
const STATE_FORMAT = 'luokit-example-vmm/1';
const HEADER_MAGIC = 'LUOVMM01';
const VERIFY_CHUNK = 4 << 20;

export type Misbehaviour = 'none' | 'never-ready' | 'fail';
/** How RAM is checked after the reboot: per-page SHA-256 digest, or byte comparison with the pattern. */
export type VerifyMode = 'sha256' | 'pattern';

export interface VmmOptions {
  id: string;
  /** Guest RAM in bytes (rounded up to whole pages). */
  memBytes: number;
  /** luod's socket (default $LUOD_SOCKET or /run/luod/liveupdate.sock). */
  socket?: string;
  /** vCPU tick interval (default 2 ms). */
  tickMs?: number;
  /** Random pages written per tick (default 16). */
  pagesPerTick?: number;
  /** Live updates to go through before returning (default 1). */
  updates?: number;
  /** How long to keep trying to reach luod after the reboot (default 120 s). */
  reconnectTimeoutMs?: number;
  /** Fill all of RAM with the data pattern (pattern.ts) before the vCPU starts. */
  fill?: boolean;
  /** How RAM is verified after the reboot (default sha256; pattern needs fill). */
  verify?: VerifyMode;
  /** Start by claiming this id's sessions from the last update (restarted after a real kexec). */
  claim?: boolean;
  /** Test knobs: never say READY (stay paused until ABORTED), or answer FAILED. */
  misbehave?: Misbehaviour;
  /** One JSON line per update (default: stdout). */
  output?: (line: string) => void;
  /** Progress messages (default: stderr, as JSON lines). */
  log?: (message: string, fields?: Record<string, unknown>) => void;
  /**
   * The moments the blackout is made of, as they happen: `paused` (vCPU stopped, before
   * READY) and `resumed` (vCPU running again after the reboot or the abort). --timeline
   * FILE writes each as a JSON line, as luod --timeline does (the real-kernel bench puts
   * both on the serial console, where the host stamps them with its own clock).
   */
  timeline?: (phase: 'paused' | 'resumed', fields: { update: string }) => void;
  /** Stop early (the VMM then returns what it has). */
  signal?: AbortSignal;
}

export interface VmmUpdateResult {
  id: string;
  verified: boolean;
  bytes: number;
  /**
   * The VM's blackout: from pausing the guest (before READY) to resuming it in the next
   * kernel, this VMM's clock; what it sent luod in RESUMED. 0 when it never resumed.
   */
  blackout_ms: number;
  /** luod's record of it (RESUMED's reply); absent when luod did not record it (an older luod). */
  recorded_blackout_ms?: number;
  update: string;
  generation: number;
  /** Time spent checking the retrieved RAM, after the resume (not part of the blackout). */
  verify_ms?: number;
  /** How it was checked (the preserving VMM's choice, from its device state). */
  verify?: VerifyMode;
  error?: string;
}

interface DeviceState {
  format: string;
  id: string;
  update: string;
  size: number;
  page_size: number;
  generation: number;
  /** Absent in states written before pattern verification existed: sha256. */
  verify?: VerifyMode;
  /** The SHA-256 digest of RAM (sha256 mode). */
  digest?: string;
  paused_at: number;
}

const sha256 = (data: Uint8Array): Buffer => createHash('sha256').update(data).digest();

/** The digest of a whole RAM image from its per-page hashes. */
function rootDigest(pageHashes: Buffer): string {
  return sha256(pageHashes).toString('hex');
}

/** Read a memfd and compute the digest of its content, page by page. */
export function digestOf(fd: OwnedFd, size: number): string {
  return rootDigest(pageHashesOf(fd, size));
}

/** Each page's SHA-256, read from a memfd (pages past a short file's end hash as zeros). */
function pageHashesOf(fd: OwnedFd, size: number): Buffer {
  const pages = Math.ceil(size / PAGE_SIZE);
  const hashes = Buffer.alloc(pages * 32);
  for (let offset = 0; offset < size; offset += VERIFY_CHUNK) {
    const want = Math.min(VERIFY_CHUNK, size - offset);
    const chunk = Buffer.alloc(want);
    let got = 0;
    while (got < want) {
      const part = pread(fd, want - got, offset + got);
      if (part.length === 0) break; // short file: the rest stays zero, and the digest differs
      part.copy(chunk, got);
      got += part.length;
    }
    for (let p = 0; p < want; p += PAGE_SIZE) {
      sha256(chunk.subarray(p, p + PAGE_SIZE)).copy(hashes, ((offset + p) / PAGE_SIZE) * 32);
    }
  }
  return hashes;
}

/** Page 0 as the vCPU last wrote it: magic, generation counter, id. */
function headerPage(id: string, generation: number): Buffer {
  const page = Buffer.alloc(PAGE_SIZE);
  page.write(HEADER_MAGIC, 0, 'latin1');
  page.writeBigUInt64LE(BigInt(generation), 8);
  page.write(id.slice(0, 48), 16, 'utf8');
  return page;
}

/**
 * Pattern mode (`verify: 'pattern'`), before the resume: page 0 is the header of the recorded
 * generation (still the pattern if the vCPU never ticked). Returns what differs, or undefined.
 */
export function page0Mismatch(fd: OwnedFd, id: string, generation: number): string | undefined {
  const page0 = pread(fd, PAGE_SIZE, 0);
  // A one-page pattern is the full pattern's page 0 (same seed, same header).
  const expected =
    generation === 0
      ? new Pattern(PAGE_SIZE).pageInto(0, Buffer.alloc(PAGE_SIZE))
      : headerPage(id, generation);
  return page0.equals(expected)
    ? undefined
    : `page 0 is not the vCPU's last write (generation ${generation})`;
}

/**
 * Pattern mode, after the resume: pages 1.. against the pattern, VERIFY_CHUNK at a time
 * with the event loop free between (the vCPU runs; it rewrites pages with the same bytes).
 */
export async function patternSweep(fd: OwnedFd, size: number, pattern: Pattern): Promise<string | undefined> {
  try {
    for (let from = PAGE_SIZE; from < size; from += VERIFY_CHUNK) {
      pattern.verifyAll(fd.fd, size, from, Math.min(size, from + VERIFY_CHUNK));
      await new Promise((resolve) => setImmediate(resolve));
    }
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** Guest RAM and the vCPU that writes into it. */
class Guest {
  readonly size: number;
  readonly pages: number;
  #ram: OwnedFd;
  /** sha256 mode: each page's hash; pattern mode: the pattern the vCPU rewrites pages with. */
  #hashes: Buffer;
  #pattern: Pattern | null = null;
  #mode: VerifyMode;
  /** sha256 mode, RAM being checked while the vCPU runs (sweep()): see #firstWrite. */
  #sweep: { original: Buffer; seen: Uint8Array; written: Uint8Array } | null = null;
  readonly #header: Buffer;
  readonly #page = Buffer.alloc(PAGE_SIZE);
  readonly #tickMs: number;
  readonly #pagesPerTick: number;
  #timer: NodeJS.Timeout | null = null;
  generation = 0;

  constructor(id: string, size: number, tickMs: number, pagesPerTick: number, mode: VerifyMode) {
    this.pages = Math.max(1, Math.ceil(size / PAGE_SIZE));
    this.size = this.pages * PAGE_SIZE;
    this.#tickMs = tickMs;
    this.#pagesPerTick = pagesPerTick;
    this.#mode = mode;
    this.#ram = memfdCreate(`guest-ram:${id}`);
    ftruncate(this.#ram, this.size);
    this.#hashes = Buffer.alloc(mode === 'sha256' ? this.pages * 32 : 0);
    if (mode === 'sha256') {
      const zero = sha256(Buffer.alloc(PAGE_SIZE));
      for (let p = 0; p < this.pages; p++) zero.copy(this.#hashes, p * 32);
    }
    this.#header = headerPage(id, 0);
  }

  get mode(): VerifyMode {
    return this.#mode;
  }

  get ram(): OwnedFd {
    return this.#ram;
  }

  get running(): boolean {
    return this.#timer !== null;
  }

  /** Digest of everything the vCPU wrote (meaningful while paused). */
  digest(): string {
    return rootDigest(this.#hashes);
  }

  /**
   * Write the pattern over all of RAM (before the vCPU runs). sha256 mode records every
   * page's hash; pattern mode keeps the pattern, so the vCPU writes pattern pages from now on.
   */
  fill(pattern: Pattern): void {
    const hashing = this.#mode === 'sha256';
    for (let offset = 0, index = 0; offset < this.size; offset += pattern.chunkBytes, index++) {
      const bytes = pattern.chunk(index).subarray(0, Math.min(pattern.chunkBytes, this.size - offset));
      pwriteAll(this.#ram, bytes, offset);
      if (!hashing) continue;
      for (let p = 0; p < bytes.length; p += PAGE_SIZE) {
        sha256(bytes.subarray(p, p + PAGE_SIZE)).copy(this.#hashes, ((offset + p) / PAGE_SIZE) * 32);
      }
    }
    if (!hashing) this.#pattern = pattern;
  }

  /** Pattern mode after the reboot: the vCPU writes pattern pages again once the check has built the pattern. */
  usePattern(pattern: Pattern | null): void {
    this.#mode = 'pattern';
    this.#pattern = pattern;
  }

  /**
   * sha256 mode, before the vCPU first writes page `page` after the resume: hash what the
   * kernel handed back there, so the sweep checks the preserved content, not the vCPU's.
   */
  #firstWrite(page: number): void {
    const sweep = this.#sweep;
    if (!sweep) return;
    if (!sweep.seen[page]) {
      sha256(pread(this.#ram, PAGE_SIZE, page * PAGE_SIZE)).copy(sweep.original, page * 32);
      sweep.seen[page] = 1;
    }
    sweep.written[page] = 1;
  }

  /**
   * After the resume, sha256 mode: every page's hash as the kernel handed it back (pages
   * the vCPU has written since were hashed just before), read a chunk at a time with the
   * event loop free between chunks, so the vCPU runs meanwhile. Returns those hashes; the
   * vCPU's own hashes then hold the original for every page it has not written.
   */
  async sweep(): Promise<Buffer> {
    const pages = this.pages;
    const sweep = {
      original: Buffer.alloc(pages * 32),
      seen: new Uint8Array(pages),
      written: new Uint8Array(pages),
    };
    this.#sweep = sweep;
    try {
      for (let offset = 0; offset < this.size; offset += VERIFY_CHUNK) {
        const want = Math.min(VERIFY_CHUNK, this.size - offset);
        const chunk = Buffer.alloc(want);
        let got = 0;
        while (got < want) {
          const part = pread(this.#ram, want - got, offset + got);
          if (part.length === 0) break;
          part.copy(chunk, got);
          got += part.length;
        }
        for (let p = 0; p < want; p += PAGE_SIZE) {
          const page = (offset + p) / PAGE_SIZE;
          if (sweep.seen[page]) continue;
          sha256(chunk.subarray(p, p + PAGE_SIZE)).copy(sweep.original, page * 32);
          sweep.seen[page] = 1;
        }
        await new Promise((resolve) => setImmediate(resolve));
      }
      for (let page = 0; page < pages; page++)
        if (!sweep.written[page]) sweep.original.copy(this.#hashes, page * 32, page * 32, page * 32 + 32);
      return sweep.original;
    } finally {
      this.#sweep = null;
    }
  }

  /**
   * One vCPU step: random pages (sha256 mode: random bytes, hashed; pattern mode: the
   * page's own pattern bytes), then the generation counter in page 0.
   */
  tick(): void {
    const pattern = this.#pattern;
    const hashing = this.#mode === 'sha256';
    // Pattern mode without its pattern yet (just resumed): page 0 only.
    const pages = hashing || pattern ? this.#pagesPerTick : 0;
    for (let i = 0; i < pages && this.pages > 1; i++) {
      const page = 1 + Math.floor(Math.random() * (this.pages - 1));
      if (pattern) pattern.pageInto(page * PAGE_SIZE, this.#page);
      else randomFillSync(this.#page);
      if (hashing) this.#firstWrite(page);
      pwriteAll(this.#ram, this.#page, page * PAGE_SIZE);
      if (hashing) sha256(this.#page).copy(this.#hashes, page * 32);
    }
    this.generation++;
    this.#header.writeBigUInt64LE(BigInt(this.generation), 8);
    if (hashing) this.#firstWrite(0);
    pwriteAll(this.#ram, this.#header, 0);
    if (hashing) sha256(this.#header).copy(this.#hashes, 0);
  }

  resume(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => this.tick(), this.#tickMs);
  }

  /** Stop the vCPU. Ticks are synchronous, so no write is in flight after this. */
  pause(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /**
   * Run on the RAM the kernel handed back (of this guest's size), in `mode`. In sha256
   * mode its page hashes are unknown until sweep() has read them: a VMM started again
   * after the reboot knows nothing of what its predecessor wrote, and the next update's
   * digest must describe this RAM, not a fresh one.
   */
  replaceRam(fd: OwnedFd, mode: VerifyMode): void {
    this.#mode = mode;
    if (mode === 'sha256' && this.#hashes.length !== this.pages * 32)
      this.#hashes = Buffer.alloc(this.pages * 32);
    const old = this.#ram;
    this.#ram = fd;
    old.close();
  }

  close(): void {
    this.pause();
    this.#ram.close();
  }
}

function readAll(fd: OwnedFd): Buffer {
  const size = fstat(fd).size;
  const parts: Buffer[] = [];
  for (let offset = 0; offset < size; ) {
    const part = pread(fd, size - offset, offset);
    if (part.length === 0) break;
    parts.push(part);
    offset += part.length;
  }
  return Buffer.concat(parts);
}

function defaultLog(id: string): (message: string, fields?: Record<string, unknown>) => void {
  return (message, fields = {}) => {
    process.stderr.write(
      `${JSON.stringify({ vmm: id, t: new Date().toISOString(), msg: message, ...fields })}\n`,
    );
  };
}

/** Run the VMM through `updates` live updates; resolves with one result per update. */
export async function runVmm(options: VmmOptions): Promise<VmmUpdateResult[]> {
  const { id } = options;
  const path = options.socket ?? socketPath();
  const log = options.log ?? defaultLog(id);
  const output = options.output ?? ((line: string) => process.stdout.write(`${line}\n`));
  const updates = options.updates ?? 1;
  const misbehave = options.misbehave ?? 'none';
  const reconnectTimeoutMs = options.reconnectTimeoutMs ?? 120_000;
  const verify = options.verify ?? 'sha256';
  if (verify === 'pattern' && !options.fill && !options.claim)
    throw new LuoClientError(
      'EINVAL',
      'verify pattern needs fill: RAM must hold the pattern to be checked against it',
    );
  const guest = new Guest(id, options.memBytes, options.tickMs ?? 2, options.pagesPerTick ?? 16, verify);
  const results: VmmUpdateResult[] = [];
  let client: LuoClient | null = null;
  const stopped = new Promise<void>((resolve) => {
    if (options.signal?.aborted) resolve();
    options.signal?.addEventListener('abort', () => resolve(), { once: true });
  });

  /** The update that paused the guest, and when; null while it runs. */
  let paused: { update: string; at: number } | null = null;

  const preserve = async (sessions: Session[], request: PreservationRequest): Promise<void> => {
    const session = sessions[0];
    if (!session) throw new Error('luod gave no session');
    log('preserving', { update: request.update, session: session.name, deadline_ms: request.deadlineMs });
    if (misbehave === 'fail') throw new Error(`${id} refuses to preserve (--misbehave fail)`);
    // Guest memory first, while the guest still runs (the kernel keeps the
    // pages; what the vCPU writes until it is paused goes with them).
    session.preserveFd(guest.ram, RAM_TOKEN);
    guest.pause();
    paused = { update: request.update, at: Date.now() };
    options.timeline?.('paused', { update: request.update });
    const state: DeviceState = {
      format: STATE_FORMAT,
      id,
      update: request.update,
      size: guest.size,
      page_size: PAGE_SIZE,
      generation: guest.generation,
      verify: guest.mode,
      ...(guest.mode === 'sha256' && { digest: guest.digest() }),
      paused_at: paused.at,
    };
    const device = memfdCreate(`device-state:${id}`);
    try {
      pwriteAll(device, Buffer.from(JSON.stringify(state)), 0);
      addSeals(device, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
      session.preserveFd(device, DEVICE_STATE_TOKEN);
    } finally {
      device.close(); // the kernel holds its own reference now
    }
    log('paused and preserved', { generation: state.generation, bytes: guest.size });
    if (misbehave === 'never-ready') {
      log('not saying READY (--misbehave never-ready)');
      await new Promise<void>((resolve) =>
        request.signal.addEventListener('abort', () => resolve(), { once: true }),
      );
      throw new Error('aborted');
    }
  };

  /** Connect, HELLO, SUBSCRIBE; resolves with the connection's end. */
  const attach = async (connection: LuoClient): Promise<DisconnectInfo> => {
    connection.on('warning', (err) =>
      log('warning', { code: (err as LuoClientError).code, error: err.message }),
    );
    connection.onPreserve(preserve);
    connection.onAborted(async (event) => {
      log('update aborted: resuming the guest', { update: event.update, reason: event.reason });
      const was = paused;
      paused = null;
      guest.resume();
      if (!was) return;
      const resumedAt = Date.now();
      options.timeline?.('resumed', { update: was.update });
      // The aborted update paused the VM too: its blackout goes into that update's record.
      await connection
        .resumed({ id, update: was.update, pausedAt: was.at, resumedAt })
        .catch((err: unknown) =>
          log('warning', { code: errorCode(err), error: `RESUMED: ${(err as Error).message}` }),
        );
    });
    connection.onKexec((event) => log('kexec: the host reboots', { update: event.update }));
    const subscribed = await connection.subscribe(id);
    log('subscribed', { sessions: subscribed.sessions });
    return connection.closed;
  };

  /**
   * After the reboot: claim, retrieve, finish, resume (the blackout ends), RESUMED to
   * luod, then verify every byte while the guest runs.
   */
  const restore = async (): Promise<VmmUpdateResult> => {
    client = await LuoClient.connectWithRetry(path, {
      hello: true,
      client: `example-vmm/${id}`,
      timeoutMs: reconnectTimeoutMs,
      ...(options.signal && { signal: options.signal }),
    });
    let sessions: Session[] = [];
    for (let attempt = 0; ; attempt++) {
      try {
        sessions = await client.claim(id);
        break;
      } catch (err) {
        // luod may still be restoring the handover right after its restart.
        if ((err as LuoClientError).code !== 'ENOENT' || attempt >= 20) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    let state: DeviceState;
    let ram: OwnedFd | null = null;
    try {
      const [session] = sessions;
      if (!session) throw new LuoClientError('EPROTO', 'CLAIM returned no session');
      const stateFd = session.retrieveFd(DEVICE_STATE_TOKEN);
      try {
        state = JSON.parse(readAll(stateFd).toString('utf8')) as DeviceState;
      } finally {
        stateFd.close();
      }
      if (state.format !== STATE_FORMAT || state.id !== id) {
        throw new LuoClientError('EPROTO', `device state is not this VMM's: ${state.format} ${state.id}`);
      }
      ram = session.retrieveFd(RAM_TOKEN);
      for (const s of sessions) s.finish();
    } catch (err) {
      ram?.close();
      throw err;
    } finally {
      for (const s of sessions) s.close();
    }
    const size = fstat(ram).size;
    const mode = state.verify ?? 'sha256';
    const outcome = (verified: boolean, fields: Partial<VmmUpdateResult> = {}): VmmUpdateResult => ({
      id,
      verified,
      bytes: size,
      blackout_ms: 0,
      update: state.update,
      generation: state.generation,
      verify: mode,
      ...fields,
    });
    // What cannot be run at all is refused before the resume (the guest stays paused).
    const unfit =
      size !== state.size
        ? `RAM is ${size} bytes, expected ${state.size}`
        : size !== guest.size
          ? `RAM of ${size} bytes, this VMM has ${guest.size} (--mem)`
          : mode === 'pattern'
            ? page0Mismatch(ram, id, state.generation)
            : undefined;
    if (unfit !== undefined) {
      ram.close();
      return outcome(false, { error: unfit });
    }
    guest.replaceRam(ram, mode);
    if (mode === 'pattern') guest.usePattern(null);
    guest.generation = state.generation;
    guest.resume();
    paused = null;
    const resumedAt = Date.now();
    options.timeline?.('resumed', { update: state.update });
    const blackout_ms = resumedAt - state.paused_at;
    log('resumed', { update: state.update, blackout_ms });
    const reported = client
      .resumed({ id, update: state.update, pausedAt: state.paused_at, resumedAt })
      .catch((err: unknown) => {
        log('warning', { code: errorCode(err), error: `RESUMED: ${(err as Error).message}` });
        return null;
      });
    // The test's check, after the blackout: every byte as it was preserved.
    const verifyStart = Date.now();
    let error: string | undefined;
    if (mode === 'pattern') {
      // The expected bytes are part of checking them (the floor, too, makes its pattern here).
      const pattern = new Pattern();
      error = await patternSweep(guest.ram, size, pattern);
      guest.usePattern(pattern);
    } else if (rootDigest(await guest.sweep()) !== state.digest)
      error = 'RAM content differs from the recorded digest';
    const verify_ms = Date.now() - verifyStart;
    const recorded = await reported;
    if (error !== undefined) guest.pause(); // nothing to run on
    return outcome(error === undefined, {
      blackout_ms,
      ...(recorded !== null && { recorded_blackout_ms: recorded }),
      verify_ms,
      ...(error !== undefined && { error }),
    });
  };

  /** restore(), with any failure turned into an unverified result. */
  const restoreOrReport = async (): Promise<VmmUpdateResult> => {
    try {
      return await restore();
    } catch (err) {
      return {
        id,
        verified: false,
        bytes: 0,
        blackout_ms: 0,
        update: '',
        generation: guest.generation,
        error: `${errorCode(err)}: ${(err as Error).message}`,
      };
    }
  };

  try {
    if (options.claim) {
      // Restarted after a real kexec: this process's first act is the CLAIM.
      const result = await restoreOrReport();
      results.push(result);
      output(JSON.stringify(result));
      if (!result.verified || results.length >= updates) return results;
    } else {
      if (options.fill) guest.fill(new Pattern());
      guest.resume();
      client = await LuoClient.connectWithRetry(path, {
        hello: true,
        client: `example-vmm/${id}`,
        timeoutMs: reconnectTimeoutMs,
        ...(options.signal && { signal: options.signal }),
      });
    }
    let closed = attach(client!);
    while (results.length < updates) {
      const outcome = await Promise.race([closed, stopped.then(() => null)]);
      if (outcome === null) break;
      if (!outcome.afterKexec) {
        // luod went away without a reboot: the update (if any) is void.
        log('luod disconnected; reconnecting', outcome.error ? { error: outcome.error.message } : {});
        guest.resume();
        try {
          client = await LuoClient.connectWithRetry(path, {
            hello: true,
            timeoutMs: reconnectTimeoutMs,
            ...(options.signal && { signal: options.signal }),
          });
        } catch (err) {
          // Stopped (SIGTERM) while waiting for the next luod: not a failure.
          if (options.signal?.aborted) break;
          throw err;
        }
        closed = attach(client);
        continue;
      }
      log('connection to luod dropped after KEXEC: reconnecting to claim');
      const result = await restoreOrReport();
      results.push(result);
      output(JSON.stringify(result));
      if (!result.verified || results.length >= updates) break;
      closed = attach(client!);
    }
    return results;
  } finally {
    guest.close();
    (client as LuoClient | null)?.close();
  }
}

export const VMM_USAGE = `usage: vmm --id ID [--mem 64M] [--socket PATH] [--updates N] [--tick-ms MS]
           [--pages-per-tick N] [--reconnect-timeout S] [--misbehave none|never-ready|fail] [--quiet]
           [--fill [--verify sha256|pattern]] [--claim] [--timeline FILE]`;

const VMM_ARGS = {
  id: { type: 'string' },
  mem: { type: 'string', default: '64M' },
  socket: { type: 'string' },
  updates: { type: 'string', default: '1' },
  'tick-ms': { type: 'string', default: '2' },
  'pages-per-tick': { type: 'string', default: '16' },
  'reconnect-timeout': { type: 'string', default: '120' },
  misbehave: { type: 'string', default: 'none' },
  quiet: { type: 'boolean', default: false },
  timeline: { type: 'string' },
  fill: { type: 'boolean', default: false },
  verify: { type: 'string', default: 'sha256' },
  claim: { type: 'boolean', default: false },
  help: { type: 'boolean', default: false },
} as const;

/** Parse the example VMM's command line into runVmm() options (throws EINVAL on a bad one). */
export function parseVmmArgs(argv: string[]): VmmOptions | 'help' {
  let values: ReturnType<
    typeof parseArgs<{ args: string[]; options: typeof VMM_ARGS; strict: true }>
  >['values'];
  try {
    values = parseArgs({ args: argv, options: VMM_ARGS, strict: true }).values;
  } catch (err) {
    throw new LuoClientError('EINVAL', (err as Error).message);
  }
  if (values.help) return 'help';
  if (!values.id) throw new LuoClientError('EINVAL', '--id is required');
  if (!['none', 'never-ready', 'fail'].includes(values.misbehave)) {
    throw new LuoClientError('EINVAL', '--misbehave must be none, never-ready or fail');
  }
  if (values.verify !== 'sha256' && values.verify !== 'pattern')
    throw new LuoClientError('EINVAL', '--verify must be sha256 or pattern');
  if (values.verify === 'pattern' && !values.fill && !values.claim)
    throw new LuoClientError('EINVAL', '--verify pattern needs --fill (RAM must hold the pattern)');
  const positive = (name: string, text: string) => {
    const n = Number(text);
    if (!Number.isFinite(n) || n <= 0)
      throw new LuoClientError('EINVAL', `--${name} must be a positive number`);
    return n;
  };
  return {
    id: values.id,
    memBytes: parseSize(values.mem),
    ...(values.socket !== undefined && { socket: values.socket }),
    updates: Math.floor(positive('updates', values.updates)),
    tickMs: positive('tick-ms', values['tick-ms']),
    pagesPerTick: Math.floor(positive('pages-per-tick', values['pages-per-tick'])),
    reconnectTimeoutMs: positive('reconnect-timeout', values['reconnect-timeout']) * 1000,
    misbehave: values.misbehave as Misbehaviour,
    ...(values.quiet && { log: () => {} }),
    ...(values.fill && { fill: true }),
    ...(values.verify === 'pattern' && { verify: 'pattern' as const }),
    ...(values.claim && { claim: true }),
    ...(values.timeline !== undefined && { timeline: timelineWriter(values.id, values.timeline) }),
  };
}

/**
 * --timeline FILE: one synchronous write per moment (`{"vmm_phase":...,"id":...,"update":...,"at":...}`),
 * out of the process before the VMM takes its next step, as luod's --timeline.
 */
function timelineWriter(id: string, file: string): NonNullable<VmmOptions['timeline']> {
  let fd: number;
  try {
    fd = fs.openSync(file, 'a');
  } catch (err) {
    throw new LuoClientError(errorCode(err, 'EIO'), `cannot open --timeline ${file}: ${errorCode(err)}`);
  }
  return (phase, { update }) => {
    fs.writeSync(fd, `${JSON.stringify({ vmm_phase: phase, id, update, at: Date.now() })}\n`);
  };
}

/**
 * The command line of the example VMM. Returns the exit code: 0 when every
 * update was verified, 1 when one was not (or luod could not be reached), 2
 * for a bad command line.
 */
export async function vmmMain(argv: string[]): Promise<number> {
  let options: VmmOptions | 'help';
  try {
    options = parseVmmArgs(argv);
  } catch (err) {
    process.stderr.write(`vmm: ${(err as Error).message}\n${VMM_USAGE}\n`);
    return 2;
  }
  if (options === 'help') {
    process.stdout.write(`${VMM_USAGE}\n`);
    return 0;
  }
  const controller = new AbortController();
  const stop = () => controller.abort();
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  try {
    const results = await runVmm({ ...options, signal: controller.signal });
    // Stopped by a signal before its updates came: not a failure.
    const complete = results.length > 0 || controller.signal.aborted;
    return complete && results.every((r) => r.verified) ? 0 : 1;
  } catch (err) {
    process.stderr.write(`vmm ${options.id}: ${errorCode(err)}: ${(err as Error).message}\n`);
    return 1;
  } finally {
    process.off('SIGTERM', stop);
    process.off('SIGINT', stop);
  }
}
