/**
 * A rollout as it lives in etcd (src/fleet/keys.ts): its spec, its state, its failure count
 * and one progress entry per host, with the operator's transitions (start, pause, resume,
 * abort) as transactions on them. No process keeps any of it: a controller or an agent that
 * is restarted reads it back and goes on.
 */
import { z } from 'zod';
import { CodedError } from '../sys/error.js';
import type { Etcd3 } from './etcd.js';
import type { FleetKeys } from './keys.js';

export const RolloutSpec = z.object({
  id: z.string().min(1),
  /** `emu:VERSION` (an emulated kernel version) or the absolute path of an image on every host. */
  kernel: z.string().min(1),
  initrd: z.string().optional(),
  max_parallel: z.number().int().min(1),
  max_failures: z.number().int().min(1),
  /** The hosts, in the order they are updated. */
  hosts: z.array(z.string().min(1)),
  /** Qualified (from, to) release pairs; when given, an agent refuses any other pair. */
  qualified: z.array(z.tuple([z.string(), z.string()])).optional(),
  created: z.string(),
});
export type RolloutSpec = z.infer<typeof RolloutSpec>;

export const ROLLOUT_STATES = ['running', 'paused', 'aborted', 'stopped', 'done'] as const;
export type RolloutState = (typeof ROLLOUT_STATES)[number];
/** States in which nothing new starts and nothing will. */
export const FINAL_STATES: readonly RolloutState[] = ['aborted', 'stopped', 'done'];

export const HOST_STATES = ['pending', 'assigned', 'updating', 'done', 'skipped', 'failed'] as const;
export type HostState = (typeof HOST_STATES)[number];
export const IN_FLIGHT: readonly HostState[] = ['assigned', 'updating'];
export const TERMINAL: readonly HostState[] = ['done', 'skipped', 'failed'];

/** What a host's update record says, copied by its agent (only the host can read the file). */
export const RecordSummary = z.object({
  update: z.string(),
  outcome: z.string(),
  from: z.string(),
  to: z.string(),
  /** The host's blackout: its longest VM pause to resume, as the VMMs reported it (record/format.ts blackoutOf), ms. */
  blackout_ms: z.number().nullable(),
  /** Each phase's duration, ms. */
  phases: z.record(z.string(), z.number()),
  /** Wall-clock start and end of the update (ms since the epoch), and of its blackout (first pause to last resume). */
  started: z.number(),
  finished: z.number().nullable(),
  blackout: z.object({ start: z.number(), end: z.number() }).nullable(),
});
export type RecordSummary = z.infer<typeof RecordSummary>;

export const HostProgress = z.object({
  id: z.string(),
  state: z.enum(HOST_STATES),
  reason: z.string().optional(),
  /** ms since the epoch. */
  assigned_at: z.number().optional(),
  started_at: z.number().optional(),
  finished_at: z.number().optional(),
  from: z.string().optional(),
  to: z.string().optional(),
  record: RecordSummary.optional(),
});
export type HostProgress = z.infer<typeof HostProgress>;

/** The whole rollout, read at one revision. */
export interface RolloutView {
  readonly spec: RolloutSpec | null;
  readonly state: RolloutState | null;
  readonly failures: number;
  /** The failure counter's mod revision (CAS point for whoever counts a failure). */
  readonly failuresMod: string;
  readonly hosts: Map<string, { progress: HostProgress; mod: string }>;
  readonly revision: string;
}

export async function readRollout(etcd: Etcd3, keys: FleetKeys): Promise<RolloutView> {
  const range = await etcd.getAll().prefix(keys.rollout()).exec();
  let spec: RolloutSpec | null = null;
  let state: RolloutState | null = null;
  let failures = 0;
  let failuresMod = '0';
  const hosts = new Map<string, { progress: HostProgress; mod: string }>();
  for (const kv of range.kvs) {
    const key = kv.key.toString();
    const text = kv.value.toString();
    if (key === keys.rolloutSpec()) spec = parseJson(RolloutSpec, text, key);
    else if (key === keys.rolloutState()) state = z.enum(ROLLOUT_STATES).parse(text);
    else if (key === keys.rolloutFailures()) {
      failures = Number(text) || 0;
      failuresMod = kv.mod_revision;
    } else if (key.startsWith(keys.rolloutHosts())) {
      const progress = parseJson(HostProgress, text, key);
      hosts.set(progress.id, { progress, mod: kv.mod_revision });
    }
  }
  return { spec, state, failures, failuresMod, hosts, revision: range.header.revision };
}

function parseJson<T>(schema: z.ZodType<T>, text: string, key: string): T {
  try {
    return schema.parse(JSON.parse(text));
  } catch {
    throw new CodedError('EBADMSG', `etcd key ${key} does not hold what luokit wrote there`);
  }
}

/**
 * Create a rollout, unless one is under way (EBUSY). The previous, finished rollout's
 * keys are replaced in the same transaction.
 */
export async function createRollout(etcd: Etcd3, keys: FleetKeys, spec: RolloutSpec): Promise<void> {
  RolloutSpec.parse(spec);
  if (new Set(spec.hosts).size !== spec.hosts.length)
    throw new CodedError('EINVAL', 'a host is listed twice in the rollout');
  if (spec.hosts.length === 0) throw new CodedError('EINVAL', 'the rollout has no host');
  const view = await readRollout(etcd, keys);
  if (view.state !== null && !FINAL_STATES.includes(view.state))
    throw new CodedError('EBUSY', `rollout ${view.spec?.id ?? '?'} is ${view.state}: abort it first`);
  const stateKey = keys.rolloutState();
  const txn =
    view.state === null
      ? etcd.if(stateKey, 'Create', '==', 0)
      : etcd
          .if(stateKey, 'Value', '==', view.state)
          .and(keys.rolloutFailures(), 'Mod', '==', view.failuresMod);
  const result = await txn
    .then(
      // etcd refuses a put inside a range deleted in the same transaction: delete only
      // the previous rollout's hosts that this one does not list; the others are overwritten.
      ...[...view.hosts.keys()]
        .filter((id) => !spec.hosts.includes(id))
        .map((id) => etcd.delete().key(keys.rolloutHost(id))),
      etcd.put(keys.rolloutSpec()).value(JSON.stringify(spec)),
      etcd.put(stateKey).value('running'),
      etcd.put(keys.rolloutFailures()).value('0'),
      ...spec.hosts.map((id) =>
        etcd.put(keys.rolloutHost(id)).value(JSON.stringify({ id, state: 'pending' } satisfies HostProgress)),
      ),
    )
    .commit();
  if (!result.succeeded) throw new CodedError('EBUSY', 'another rollout was started at the same time');
}

/** pause: running → paused; resume: paused → running; abort: running or paused → aborted. */
export async function setRolloutState(
  etcd: Etcd3,
  keys: FleetKeys,
  action: 'pause' | 'resume' | 'abort',
): Promise<RolloutState> {
  const from: Record<typeof action, RolloutState[]> = {
    pause: ['running'],
    resume: ['paused'],
    abort: ['running', 'paused'],
  };
  const to: Record<typeof action, RolloutState> = { pause: 'paused', resume: 'running', abort: 'aborted' };
  for (let attempt = 0; attempt < 10; attempt++) {
    const state = (await readRollout(etcd, keys)).state;
    if (state === null) throw new CodedError('ENOENT', 'there is no rollout');
    if (state === to[action]) return state;
    if (!from[action].includes(state))
      throw new CodedError('EINVAL', `cannot ${action} a rollout that is ${state}`);
    const key = keys.rolloutState();
    const result = await etcd.if(key, 'Value', '==', state).then(etcd.put(key).value(to[action])).commit();
    if (result.succeeded) return to[action];
  }
  throw new CodedError('EAGAIN', `the rollout's state kept changing under ${action}`);
}

/**
 * Write a host's new progress if its entry is still at `mod`; with `failed`, count the
 * failure in the same transaction (the controller compares the counter before it assigns).
 * False when someone else changed the entry or the counter first: read and decide again.
 */
export async function writeHost(
  etcd: Etcd3,
  keys: FleetKeys,
  view: Pick<RolloutView, 'failures' | 'failuresMod'>,
  mod: string,
  progress: HostProgress,
  extra: { key: string; column: 'Value' | 'Mod'; cmp: '=='; value: string }[] = [],
): Promise<boolean> {
  const hostKey = keys.rolloutHost(progress.id);
  let txn = etcd.if(hostKey, 'Mod', '==', mod);
  for (const c of extra) txn = txn.and(c.key, c.column, c.cmp, c.value);
  const ops = [etcd.put(hostKey).value(JSON.stringify(HostProgress.parse(progress)))];
  if (progress.state === 'failed') {
    txn = txn.and(keys.rolloutFailures(), 'Mod', '==', view.failuresMod);
    ops.push(etcd.put(keys.rolloutFailures()).value(String(view.failures + 1)));
  }
  return (await txn.then(...ops).commit()).succeeded;
}
