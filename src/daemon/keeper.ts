/**
 * SessionKeeper: makes sure luod is never the only holder of a session fd,
 * and lets a restarted luod pick up where the killed one stopped.
 *
 * Lifecycle, per phase of an update (docs/operations.md):
 *  - preserving / barrier: every outgoing session is held (role `out`) before
 *    START_PRESERVATION goes out; the state file says `preserving`.
 *  - kexec: `luod-internal` is held too (role `state`); the file says `kexec`.
 *  - after the kexec: every retrieved session is held (role `in`) until its
 *    client has it (CLAIM delivered) or the claim deadline releases it; the
 *    file says `claiming`, and its claims log (restart-state.ts) who claimed.
 *  - abort, or the last claim: everything is released and the file removed.
 *
 * start() is a restarted luod's first step: it takes the holder's fds back
 * and sorts them by name (held-names.ts):
 *  - `out` of this boot: an update interrupted before its kexec. It is
 *    aborted: the copies are closed, so with the clients' own copies gone
 *    (their connection to the dead luod dropped) the kernel unpreserves the
 *    sessions; the clients learn it with ABORTED when they subscribe again.
 *  - `in` of this boot, or `out`/`state` of an earlier boot (systemd carried
 *    them through the kexec): incoming sessions, served to CLAIMs again.
 *  - anything else is closed and released, loudly.
 */
import type { Logger } from 'pino';
import type { Session } from '../kernel/device.js';
import { adoptSession } from '../kernel/index.js';
import { INTERNAL_SESSION } from '../protocol/messages.js';
import { Errno, errnoNumber } from '../sys/errno.js';
import { errorCode, SysError } from '../sys/error.js';
import { type FdHolder, type HeldFd, settleAll } from './fd-holder.js';
import {
  type CarriedState,
  type CarriedStateV1,
  type PhaseMark,
  readCarriedState,
} from './handover-state.js';
import { bootPart, type HeldName, type HeldRole, heldName, parseHeldName } from './held-names.js';
import {
  ClaimsLog,
  claimsLogPath,
  clearStateFile,
  readClaimsLog,
  readStateFile,
  type StateBody,
  type StateFileError,
  warmDigest,
  withLoggedClaims,
  writeStateFile,
} from './restart-state.js';

/** Holds sent to the holder before their replies are awaited (#holdAll). */
const HOLDS_IN_FLIGHT = 64;

/** One client's incoming sessions, as a restarted luod rebuilds them. */
export interface RecoveredClient {
  readonly id: string;
  readonly uid: number;
  readonly update: string;
  readonly sessions: Session[];
}

export interface Recovered {
  /** Incoming sessions of an update whose kexec happened, still to be claimed. */
  readonly incoming: {
    readonly update: string;
    readonly from?: string;
    readonly to?: string;
    readonly timeline: PhaseMark[];
    readonly clients: RecoveredClient[];
    readonly claimed: string[];
    readonly claimDeadline?: number;
  } | null;
  /** An update that luod's death interrupted before its kexec: aborted. */
  readonly aborted: {
    readonly update: string;
    readonly clients: string[];
    readonly sessions: number;
    /** Each client's uid and sessions, from the held fds' names. */
    readonly lanes: { id: string; uid: number; sessions: string[] }[];
    /** What the state file knew of the update, when it was this one. */
    readonly from?: string;
    readonly to?: string;
    readonly timeline: PhaseMark[];
  } | null;
  /** The state file could not be trusted (reported, ignored). */
  readonly stateFileError: StateFileError | null;
}

export interface KeeperOptions {
  holder: FdHolder;
  stateFile: string;
  /** The running kernel's boot id (changes at every kexec, the emulated one included). */
  bootId: () => Promise<string>;
  log: Logger;
}

export class SessionKeeper {
  readonly holder: FdHolder;
  readonly stateFile: string;
  #boot = '';
  readonly #bootId: () => Promise<string>;
  readonly #log: Logger;
  readonly #names = new Map<Session, string>();
  #body: StateBody | null = null;
  /**
   * #body's clients by id, and how many have not claimed: done() runs once
   * per claim, and looking through every client each time made a thousand
   * claims quadratic. Kept by #setBody, and by done() for `claimed`.
   */
  #clientsById = new Map<string, StateBody['clients'][number]>();
  #unclaimed = 0;

  /** The claims since the state file was last written (restart-state.ts). */
  readonly #claimsLog: ClaimsLog;

  constructor(options: KeeperOptions) {
    this.holder = options.holder;
    this.stateFile = options.stateFile;
    this.#claimsLog = new ClaimsLog(options.stateFile);
    this.#bootId = options.bootId;
    this.#log = options.log;
  }

  /** The boot the names are made with: read at start, and again after a kexec. */
  get boot(): string {
    return this.#boot;
  }

  async #refreshBoot(): Promise<void> {
    this.#boot = bootPart(await this.#bootId());
  }

  /** How many session fds the holder has a copy of, from this luod. */
  get heldCount(): number {
    return this.#names.size;
  }

  // ---- an update -------------------------------------------------------

  /** Before START_PRESERVATION: hold every outgoing session; record the update. */
  async preserving(
    update: string,
    clients: { id: string; uid: number; sessions: Session[] }[],
    timeline: PhaseMark[],
  ): Promise<void> {
    await this.#holdAll(
      'out',
      clients.flatMap((c) => c.sessions.map((session) => ({ update, uid: c.uid, session }))),
    );
    this.#mustRecord({
      boot: this.boot,
      phase: 'preserving',
      update,
      clients: clients.map((c) => ({
        id: c.id,
        uid: c.uid,
        sessions: c.sessions.map((s) => s.name),
        claimed: false,
      })),
      timeline,
    });
  }

  /** Before the kexec: hold `luod-internal` too (systemd carries it through the kexec). */
  async kexec(state: CarriedState, internal: Session): Promise<void> {
    await this.#hold('state', state.update, 0, internal);
    if (this.#body)
      this.#mustRecord({
        ...this.#body,
        phase: 'kexec',
        from: state.from,
        to: state.to,
        timeline: state.timeline,
      });
  }

  /** After the kexec: hold every retrieved session until its client claims it. */
  async claiming(
    incoming: { update: string; from?: string; to?: string; timeline: PhaseMark[]; claimDeadline: number },
    clients: RecoveredClient[],
    options: { claimed?: string[]; alreadyHeld?: boolean } = {},
  ): Promise<void> {
    const claimed = options.claimed ?? [];
    if (!options.alreadyHeld) {
      await this.#refreshBoot(); // after a kexec: the new kernel's boot
      const holding = this.#holdAll(
        'in',
        clients.flatMap((c) => c.sessions.map((session) => ({ update: c.update, uid: c.uid, session }))),
      );
      // The holds go out when this turn ends (holder-process.ts); the state file's hash
      // gets ready after them, while the holder process takes them.
      setImmediate(warmDigest);
      await holding;
    }
    this.#record({
      boot: this.boot,
      phase: 'claiming',
      update: incoming.update,
      ...(incoming.from !== undefined && { from: incoming.from }),
      ...(incoming.to !== undefined && { to: incoming.to }),
      claimDeadline: incoming.claimDeadline,
      clients: [
        ...clients.map((c) => ({
          id: c.id,
          uid: c.uid,
          sessions: c.sessions.map((s) => s.name),
          claimed: false,
        })),
        ...claimed.map((id) => ({ id, uid: 0, sessions: [], claimed: true })),
      ],
      timeline: incoming.timeline,
    });
  }

  /** A client has its sessions (CLAIM delivered) or lost them (claim deadline): let go. */
  async done(clientId: string, sessions: Session[], timeline?: PhaseMark[]): Promise<void> {
    // Order for a kill at any point: first the claims log says "claimed" (a
    // restarted luod then drops the holder's copies instead of offering
    // them again), then the holder lets go, and only then the file goes.
    if (this.#body) {
      // In place: a copy of every client per claim was a thousand VMMs' claims squared.
      const client = this.#clientsById.get(clientId);
      if (client && !client.claimed) {
        client.claimed = true;
        this.#unclaimed--;
      }
      if (timeline) this.#body.timeline = timeline;
      this.#recordClaim(clientId, timeline);
    }
    // Together, not one round trip after another: the holder process takes the
    // releases of a turn of luod's event loop in one line (holder-process.ts).
    await Promise.all(sessions.map((s) => this.#release(s)));
    if (this.#body && this.#unclaimed === 0) this.#clear();
  }

  /**
   * This claim, on disk before its copies are released: a line in the
   * claims log (restart-state.ts), not the whole file again (a thousand
   * clients per claim was quadratic; paced, still a quarter of luod's time
   * during a thousand claims). When the log cannot be written, the whole
   * file is; when neither can, a restarted luod offers the sessions again
   * until the claim deadline (nothing is lost: the client has its copies,
   * the holder its own).
   */
  #recordClaim(clientId: string, timeline: PhaseMark[] | undefined): void {
    const body = this.#body!;
    const mark = timeline?.findLast((m) => m.phase === 'claim' && m.client === clientId);
    try {
      this.#claimsLog.append({
        update: body.update,
        boot: body.boot,
        client: clientId,
        at: mark?.at ?? Date.now(),
      });
    } catch (err) {
      this.#log.warn(
        { err, file: this.#claimsLog.path },
        'cannot append to the claims log; writing the state file',
      );
      this.#record(body);
    }
  }

  /** Abort, or the old kernel's fds died in a kexec: release everything. */
  async releaseAll(): Promise<void> {
    this.#clear();
    for (const session of [...this.#names.keys()]) await this.#release(session);
  }

  // ---- restart ---------------------------------------------------------

  /** A restarted luod: take the holder's fds back and sort them (see the top of this file). */
  async start(): Promise<Recovered> {
    await this.#refreshBoot();
    let held: HeldFd[];
    try {
      held = await this.holder.takeBack();
    } catch (err) {
      throw new SysError(
        'luod',
        (err as SysError).errno ?? Errno.EIO,
        `cannot take back the session fds from the ${this.holder.kind}: ${(err as Error).message}`,
      );
    }
    let file: StateBody | null = null;
    let stateFileError: StateFileError | null = null;
    try {
      file = readStateFile(this.stateFile);
      if (file) {
        const logged = readClaimsLog(this.stateFile, file);
        if (logged.skipped > 0)
          this.#log.warn(
            { file: claimsLogPath(this.stateFile), skipped: logged.skipped },
            'the claims log has lines that are torn, damaged or of another update; their clients are offered their sessions again',
          );
        file = withLoggedClaims(file, logged.claims);
      }
    } catch (err) {
      stateFileError = err as StateFileError;
      this.#log.error({ code: stateFileError.code, file: this.stateFile }, stateFileError.message);
    }
    let carried: CarriedState | CarriedStateV1 | null = null;
    const aborted = {
      update: '',
      clients: new Set<string>(),
      sessions: 0,
      lanes: new Map<string, { id: string; uid: number; sessions: string[] }>(),
    };
    const incoming = new Map<string, { name: HeldName; session: Session; heldAs: string }>();
    for (const { name, fd } of held) {
      const parsed = parseHeldName(name);
      const crossed = parsed !== null && parsed.boot !== this.boot;
      if (parsed === null || (parsed.role === 'in' && crossed)) {
        this.#log.error(
          { name },
          'the holder had an fd luod cannot use (unknown name, or an unclaimed session of an earlier update); dropping it',
        );
        fd.close();
        await this.holder.release(name);
        continue;
      }
      if (parsed.role === 'state' || (parsed.role === 'out' && !crossed)) {
        if (parsed.role === 'state' && crossed) carried = this.#readCarried(fd, name);
        else if (parsed.role === 'out') {
          aborted.update = parsed.update;
          aborted.clients.add(parsed.client);
          aborted.sessions++;
          const lane = aborted.lanes.get(parsed.client) ?? {
            id: parsed.client,
            uid: parsed.uid,
            sessions: [],
          };
          lane.sessions.push(parsed.session);
          aborted.lanes.set(parsed.client, lane);
        }
        fd.close(); // a no-op when #readCarried took it
        await this.holder.release(name);
        continue;
      }
      let session: Session;
      try {
        // The name is luod's own (held-names.ts): no GET_NAME per session before luod listens.
        session = adoptSession(fd, { name: parsed.session, trustName: true });
      } catch (err) {
        this.#log.error({ err, name }, 'a held fd is not a session; dropping it');
        fd.close();
        await this.holder.release(name);
        continue;
      }
      incoming.set(name, { name: parsed, session, heldAs: name });
    }
    if (aborted.sessions > 0) {
      this.#log.warn(
        { update: aborted.update, clients: [...aborted.clients], sessions: aborted.sessions },
        'luod was restarted during an update, before its kexec: the update is aborted and its sessions closed',
      );
    }
    if (aborted.sessions > 0 || incoming.size === 0) this.#clear();
    const recoveredIncoming = await this.#rebuildIncoming([...incoming.values()], carried, file);
    return {
      incoming: recoveredIncoming,
      aborted:
        aborted.sessions > 0
          ? {
              update: aborted.update,
              clients: [...aborted.clients],
              sessions: aborted.sessions,
              lanes: [...aborted.lanes.values()],
              ...(file?.update === aborted.update && {
                ...(file.from !== undefined && { from: file.from }),
                ...(file.to !== undefined && { to: file.to }),
              }),
              timeline: file?.update === aborted.update ? file.timeline : [],
            }
          : null,
      stateFileError,
    };
  }

  async #rebuildIncoming(
    entries: { name: HeldName; session: Session; heldAs: string }[],
    carried: CarriedState | CarriedStateV1 | null,
    file: StateBody | null,
  ): Promise<Recovered['incoming']> {
    if (entries.length === 0) return null;
    const update = entries[0]!.name.update;
    const sameUpdate = entries.filter((e) => e.name.update === update);
    for (const e of entries) {
      if (e.name.update === update) continue;
      this.#log.error({ name: e.heldAs }, 'a held session of another update; dropping it');
      e.session.close();
      await this.holder.release(e.heldAs);
    }
    const fileFits =
      file !== null && file.update === update && file.boot === this.boot && file.phase === 'claiming';
    const claimed = fileFits ? file.clients.filter((c) => c.claimed).map((c) => c.id) : [];
    const byClient = new Map<string, RecoveredClient>();
    for (const { name, session, heldAs } of sameUpdate) {
      if (claimed.includes(name.client)) {
        // Delivered before luod died, released too late: the client has it.
        session.close();
        await this.holder.release(heldAs);
        continue;
      }
      const client = byClient.get(name.client) ?? { id: name.client, uid: name.uid, update, sessions: [] };
      client.sessions.push(session);
      byClient.set(name.client, client);
      if (name.role === 'out') {
        // Carried through the kexec by systemd: now an incoming session of this boot.
        await this.#hold('in', update, name.uid, session);
        await this.holder.release(heldAs);
      } else {
        this.#names.set(session, heldAs);
      }
    }
    const order = (s: Session) => Number(s.name.split('.')[1] ?? 0);
    for (const c of byClient.values()) c.sessions.sort((a, b) => order(a) - order(b));
    const clients = [...byClient.values()];
    if (clients.length === 0) {
      this.#clear(); // every client had claimed: the update is over
      return null;
    }
    const timeline = fileFits ? file.timeline : carried?.update === update ? carried.timeline : [];
    const recovered = {
      update,
      ...((fileFits ? file.from : carried?.from) !== undefined && {
        from: (fileFits ? file.from : carried?.from)!,
      }),
      ...((fileFits ? file.to : carried?.to) !== undefined && { to: (fileFits ? file.to : carried?.to)! }),
      timeline: [...timeline, { phase: 'luod-restarted', at: Date.now() }],
      clients,
      claimed,
      ...(fileFits && file.claimDeadline !== undefined && { claimDeadline: file.claimDeadline }),
    };
    return recovered;
  }

  /** The state luod-internal carried through a kexec (systemd mode): read, then finished. */
  #readCarried(fd: HeldFd['fd'], name: string): CarriedState | CarriedStateV1 | null {
    let session: Session | null = null;
    try {
      session = adoptSession(fd, { name: INTERNAL_SESSION });
      return readCarriedState(session);
    } catch (err) {
      this.#log.error(
        { err, name },
        'the luod state carried through the kexec cannot be read; the held names stand alone',
      );
      return null;
    } finally {
      if (session) session.close();
      else fd.close();
    }
  }

  // ---- holding ---------------------------------------------------------

  /**
   * Hold many sessions, HOLDS_IN_FLIGHT at a time: one round trip to the
   * holder per window instead of per session, and never more fds in flight
   * on the holder's socket than the kernel allows a sender (ETOOMANYREFS
   * past its RLIMIT_NOFILE). Resolves once every one is held; throws the
   * first failure after the rest have settled.
   */
  async #holdAll(role: HeldRole, items: { update: string; uid: number; session: Session }[]): Promise<void> {
    for (let i = 0; i < items.length; i += HOLDS_IN_FLIGHT) {
      await settleAll(
        items.slice(i, i + HOLDS_IN_FLIGHT).map((h) => this.#hold(role, h.update, h.uid, h.session)),
      );
    }
  }

  async #hold(role: HeldRole, update: string, uid: number, session: Session): Promise<void> {
    const name = heldName({ role, boot: this.boot, update, uid, session: session.name });
    await this.holder.hold(name, session);
    this.#names.set(session, name);
  }

  async #release(session: Session): Promise<void> {
    const name = this.#names.get(session);
    if (name === undefined) return;
    try {
      await this.holder.release(name);
    } catch (err) {
      this.#log.warn({ err, name }, 'the holder could not release an fd');
    } finally {
      this.#names.delete(session); // heldCount drops once the holder has let go
    }
  }

  /**
   * Before the kexec the update can still be called off, and must be when
   * the state file cannot be written (a full disk): a luod that died after
   * it would find nothing to recover from. Throws, with the errno.
   */
  #mustRecord(body: StateBody): void {
    this.#setBody(body);
    try {
      writeStateFile(this.stateFile, body);
    } catch (err) {
      const code = errorCode(err);
      throw new SysError(
        'luod',
        errnoNumber(code) ?? Errno.EIO,
        `the state file ${this.stateFile} cannot be written (${code}): a luod restarted after a crash could not recover this update, so it does not go ahead`,
      );
    }
    this.#resetClaimsLog(); // the file holds every claim it had
  }

  /** After the kexec there is no going back: a failed write is logged, and the update goes on. */
  #record(body: StateBody): void {
    this.#setBody(body);
    try {
      writeStateFile(this.stateFile, body);
    } catch (err) {
      this.#log.error({ err, file: this.stateFile }, 'cannot write the state file');
      return; // the log keeps the claims the file does not have
    }
    this.#resetClaimsLog(); // the file holds every claim it had
  }

  /** What the state file says from now on (written by the caller). */
  #setBody(body: StateBody | null): void {
    if (body === this.#body) return; // the same, written again with its latest claims
    this.#body = body;
    this.#clientsById = new Map();
    this.#unclaimed = 0;
    for (const c of body?.clients ?? []) {
      // The first of an id, as a search through the list would find.
      if (!this.#clientsById.has(c.id)) this.#clientsById.set(c.id, c);
      if (!c.claimed) this.#unclaimed++;
    }
  }

  #clear(): void {
    this.#setBody(null);
    clearStateFile(this.stateFile);
    this.#resetClaimsLog();
  }

  #resetClaimsLog(): void {
    try {
      this.#claimsLog.reset();
    } catch (err) {
      // Harmless left behind: its lines name this update, which no later file does.
      this.#log.warn({ err, file: this.#claimsLog.path }, 'cannot empty the claims log');
    }
  }
}
