/**
 * The scenario suite's vocabulary: a Scenario proves one LUO rule against
 * whichever kernel a ScenarioHost stands for (luokit's emulated kernel in
 * `npm test`, the real kernel in a QEMU guest for the parity report), and
 * records the outcome of every operation it makes so that two runs can be
 * compared step by step.
 *
 * Nothing here depends on a particular kernel: a host supplies the device,
 * the raw ioctl transport, the kexec and the capabilities, and scenarios use
 * only those.
 */
import type { Backend, LiveUpdateDevice } from '../../src/kernel/device.js';
import type { IoctlTransport } from '../../src/kernel/transport.js';

/**
 * When a scenario (or one stage of it) runs:
 * - `single`: in one kernel, no kexec involved;
 * - `before-kexec`: in the first kernel; what it holds must stay open until the kexec;
 * - `after-kexec`: in the kernel that the first kexec started;
 * - `after-second-kexec`: in the kernel after that (rules about what a second kexec drops).
 * Stages of one multi-stage scenario share an id prefix, their `group`.
 */
export type Stage = 'single' | 'before-kexec' | 'after-kexec' | 'after-second-kexec';

/** Boot index of a stage: 0 = the first kernel, 1 = after one kexec, 2 = after two. */
export const STAGE_BOOT: Readonly<Record<Stage, number>> = {
  single: 0,
  'before-kexec': 0,
  'after-kexec': 1,
  'after-second-kexec': 2,
};

/** An errno by name, as the kernel's headers spell it ('EBUSY'). */
export type ErrnoName = `E${string}`;

/** What a step is expected to do: succeed, or fail with this errno. */
export type Expected = 'ok' | ErrnoName;

/** Plain JSON, so that results can be written out and diffed. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** The outcome of one operation: success (with an optional observed value) or an errno name. */
export type Outcome = { ok: true; value?: Json } | { ok: false; code: string };

export interface StepRecord {
  step: string;
  outcome: Outcome;
}

/** Things a kernel (or its stand-in) can or cannot do; a scenario that needs one is skipped as 'infra' without it. */
export interface Capabilities {
  /**
   * ftruncate/fallocate/writes past EOF on a preserved memfd fail with EPERM when they are issued.
   * True on the real kernel. False on the emulated kernel for TypeScript code: luokit's sys layer
   * calls the C library directly, so only processes under the LD_PRELOAD shim get EPERM; the
   * emulator detects the change later, at the freeze of the emulated kexec (docs/emulator.md).
   */
  sizeFreezeEnforced: boolean;
  /**
   * Closing the last fd of a session unpreserves its files before close() returns, as seen even
   * by system calls that do not go through LUO (fcntl F_ADD_SEALS). True on the real kernel
   * (release runs before the close returns). False on the emulated kernel: it learns of the
   * close from EOF on its socket, a moment later (LUO ioctls are ordered after it; fcntl is not).
   */
  closeReleasesSynchronously: boolean;
  /** `host.faults` can make a memfd retrieve fail (to prove that a failed retrieve fails forever). */
  retrieveFaults: boolean;
}

export type CapabilityName = keyof Capabilities;

/** Anything a scenario opens and must close: OwnedFd, Session, LiveUpdateDevice. */
export interface Closable {
  close(): void;
}

/** A way to make the kernel's memfd retrieve fail, for the "a failed retrieve fails forever" rule. */
export interface FaultInjector {
  /**
   * Run `fn`, which issues exactly one RETRIEVE_FD of a memfd, under conditions where that
   * retrieve fails (emulator: an injected fault; real kernel: e.g. a memory cgroup too small for
   * the folios), then restore normal conditions. Whatever errno the kernel gives is the
   * outcome; the scenario checks that later retrieves give the same one.
   */
  withFailingRetrieve<T>(fn: () => T): Promise<T>;
}

/**
 * What a kernel under test offers the suite. One host serves every scenario of a run; the
 * runner builds a fresh ScenarioContext around it for each scenario.
 */
export interface ScenarioHost {
  readonly backend: Backend;
  readonly capabilities: Capabilities;
  /** Raw ioctls (in-place argument, NULL allowed) on the device and session fds this host's devices hand out. */
  readonly transport: IoctlTransport;
  /** Open `/dev/liveupdate` (exclusive: a second open fails EBUSY). Throws a SysError/LuoError with the errno. */
  openDevice(): LiveUpdateDevice;
  /**
   * Live-update into the next kernel, preserving every outgoing session that is still open.
   * Present when this process survives the kexec (the emulator); a real-kernel bench leaves it
   * out and runs the stages of each boot with a separate `runScenarios` call.
   */
  kexec?(): Promise<void>;
  /**
   * Keep `resource` open across the next kexec (the selftests' forked holder). The emulator
   * host keeps it in memory and closes it after the emulated kexec; a real bench keeps it open
   * until the kernel goes away.
   */
  hold(resource: Closable): void;
  /** Required by scenarios needing `capabilities.retrieveFaults`. */
  readonly faults?: FaultInjector;
  /** A tmpfs directory for the tmpfs/O_TMPFILE rules; default /dev/shm. */
  readonly tmpfsDir?: string;
}

/** What a scenario gets: the host's kernel, plus recording, assertions and cleanup. */
export interface ScenarioContext {
  readonly scenario: Scenario;
  readonly backend: Backend;
  readonly capabilities: Capabilities;
  readonly transport: IoctlTransport;
  readonly faults: FaultInjector | undefined;
  readonly tmpfsDir: string;
  /** Open the device; it is closed when the scenario (stage) ends, so the next one can open it. */
  openDevice(): LiveUpdateDevice;
  /**
   * A session name unique to this scenario's group, the same in every stage and every run:
   * `<group with '/' as '.'>-<suffix>`, at most 63 bytes.
   */
  name(suffix: string): string;
  /** Close `resource` when the scenario (stage) ends, whatever happens. Returns it. */
  track<T extends Closable>(resource: T): T;
  /** Keep `resource` open across the next kexec instead of closing it at the end of the stage. */
  hold<T extends Closable>(resource: T): T;
  /** Log an operation's outcome (what a parity report diffs). */
  record(step: string, outcome: Outcome): void;
  /**
   * Run `fn`, record its outcome and assert it: 'ok', or a throw whose errno name is `expected`.
   * A thrown error without an errno is a bug in the scenario and propagates. A closable result
   * is tracked. Returns fn's result when it succeeded.
   */
  expect<T>(step: string, fn: () => T, expected: 'ok'): T;
  expect(step: string, fn: () => unknown, expected: ErrnoName): void;
  expect<T>(step: string, fn: () => T, expected: Expected): T | undefined;
  /** Like expect, for the few steps where the kernel may legitimately do either of several things. */
  expectOneOf(step: string, fn: () => unknown, expected: readonly Expected[]): Outcome;
  /** Record an observed value and assert it deep-equals `expected` (bigints are compared as decimal strings). */
  equal(step: string, actual: unknown, expected: unknown): void;
  /** Record a byte comparison (length and digest) and assert the bytes are identical. */
  sameBytes(step: string, actual: Uint8Array, expected: Uint8Array): void;
  /** Stop: the precondition could not be set up here (not a pass, not a kernel failure). */
  infra(reason: string): never;
  /** Attach a remark to the result (e.g. which of several allowed outcomes happened). */
  note(text: string): void;
}

export interface Scenario {
  /** Unique; stages of one flow are `<group>/<stage tag>`. */
  id: string;
  /** The rule this scenario proves, in one sentence. */
  rule: string;
  /** Default 'single'. */
  stage?: Stage;
  /** Shared by the stages of one flow (their ids' prefix); default: the id. */
  group?: string;
  /** Capabilities without which the scenario cannot prove its rule (it is reported 'infra'). */
  requires?: readonly CapabilityName[];
  run(ctx: ScenarioContext): Promise<void> | void;
}

export type ScenarioStatus = 'pass' | 'fail' | 'infra';

/** One scenario's result as plain JSON: what the parity report compares. */
export interface ScenarioResult {
  id: string;
  group: string;
  stage: Stage;
  rule: string;
  status: ScenarioStatus;
  steps: StepRecord[];
  /** Why it failed, or which precondition was missing ('infra'). */
  error?: string;
  notes?: string[];
  durationMs: number;
}

/**
 * The emulator's API as the suite uses it (`src/kernel/emu/index.ts`, written separately).
 * Kept here so that the suite type-checks on its own; `test/scenarios.test.ts` is the only
 * place that imports the real module.
 */
export interface EmulatorLike {
  openDevice(): LiveUpdateDevice;
  readonly transport: IoctlTransport;
  kexec(options?: { to?: string }): Promise<unknown>;
  stop(): Promise<void>;
  /** Optional: make the next memfd retrieve fail with `errno` (for the permanent-failure rule). */
  injectFault?(fault: { op: 'retrieve-fd'; errno: ErrnoName }): void | Promise<void>;
}

export interface EmulatorModule {
  startEmulator(options: { stateDir: string }): Promise<EmulatorLike>;
}
