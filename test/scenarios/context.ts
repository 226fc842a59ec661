/**
 * The ScenarioContext the runner hands each scenario: recording, assertions
 * that record, and cleanup of everything the scenario opened.
 */
import { createHash } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import type { LiveUpdateDevice } from '../../src/kernel/device.js';
import type {
  Closable,
  ErrnoName,
  Expected,
  Json,
  Outcome,
  Scenario,
  ScenarioContext,
  ScenarioHost,
  StepRecord,
} from './types.js';

/** A failed expectation: the kernel did something other than the rule says. */
export class ScenarioAssertion extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ScenarioAssertion';
  }
}

/** The precondition could not be set up on this host: neither a pass nor a kernel failure. */
export class InfraError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InfraError';
  }
}

/** The errno name carried by a SysError/LuoError (or a Node errno exception), if any. */
export function errnoCodeOf(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && /^E[A-Z0-9]+$/.test(code) ? code : undefined;
}

/** A value as plain JSON: bigints as decimal strings, buffers as hex, undefined as null. */
export function toJson(value: unknown): Json {
  if (value === undefined || value === null) return null;
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'number' || typeof value === 'string' || typeof value === 'boolean') return value;
  if (value instanceof Uint8Array) return Buffer.from(value).toString('hex');
  if (Array.isArray(value)) return value.map(toJson);
  if (typeof value === 'object') {
    const out: { [key: string]: Json } = {};
    for (const [key, v] of Object.entries(value)) out[key] = toJson(v);
    return out;
  }
  return String(value);
}

export function outcomeText(outcome: Outcome): string {
  return outcome.ok ? 'ok' : outcome.code;
}

function isClosable(value: unknown): value is Closable {
  return (
    typeof value === 'object' && value !== null && typeof (value as { close?: unknown }).close === 'function'
  );
}

/** `<group with '/' as '.'>-<suffix>`; the kernel's limit is 63 bytes. */
export function sessionName(group: string, suffix: string): string {
  const name = `${group.replaceAll('/', '.')}-${suffix}`;
  if (Buffer.byteLength(name) > 63) throw new Error(`session name ${name} is longer than 63 bytes`);
  return name;
}

export class Context implements ScenarioContext {
  readonly scenario: Scenario;
  readonly steps: StepRecord[] = [];
  readonly notes: string[] = [];
  readonly #host: ScenarioHost;
  readonly #group: string;
  #tracked: Closable[] = [];

  constructor(host: ScenarioHost, scenario: Scenario, group: string) {
    this.#host = host;
    this.scenario = scenario;
    this.#group = group;
  }

  get backend() {
    return this.#host.backend;
  }

  get capabilities() {
    return this.#host.capabilities;
  }

  get transport() {
    return this.#host.transport;
  }

  get faults() {
    return this.#host.faults;
  }

  get tmpfsDir() {
    return this.#host.tmpfsDir ?? '/dev/shm';
  }

  openDevice(): LiveUpdateDevice {
    return this.track(this.#host.openDevice());
  }

  name(suffix: string): string {
    return sessionName(this.#group, suffix);
  }

  track<T extends Closable>(resource: T): T {
    if (!this.#tracked.includes(resource)) this.#tracked.push(resource);
    return resource;
  }

  hold<T extends Closable>(resource: T): T {
    this.#tracked = this.#tracked.filter((r) => r !== resource);
    this.#host.hold(resource);
    return resource;
  }

  record(step: string, outcome: Outcome): void {
    this.steps.push({ step, outcome });
  }

  expect<T>(step: string, fn: () => T, expected: 'ok'): T;
  expect(step: string, fn: () => unknown, expected: ErrnoName): void;
  expect<T>(step: string, fn: () => T, expected: Expected): T | undefined;
  expect<T>(step: string, fn: () => T, expected: Expected): T | undefined {
    const { outcome, value } = this.#attempt(step, fn);
    if (outcomeText(outcome) !== expected) {
      throw new ScenarioAssertion(`${step}: expected ${expected}, got ${outcomeText(outcome)}`);
    }
    return value;
  }

  expectOneOf(step: string, fn: () => unknown, expected: readonly Expected[]): Outcome {
    const { outcome } = this.#attempt(step, fn);
    if (!expected.includes(outcomeText(outcome) as Expected)) {
      throw new ScenarioAssertion(
        `${step}: expected one of ${expected.join(', ')}, got ${outcomeText(outcome)}`,
      );
    }
    return outcome;
  }

  #attempt<T>(step: string, fn: () => T): { outcome: Outcome; value?: T } {
    let value: T;
    try {
      value = fn();
    } catch (err) {
      const code = errnoCodeOf(err);
      if (code === undefined) throw err;
      const outcome: Outcome = { ok: false, code };
      this.record(step, outcome);
      return { outcome };
    }
    if (isClosable(value)) this.track(value);
    const outcome: Outcome = { ok: true };
    this.record(step, outcome);
    return { outcome, value };
  }

  equal(step: string, actual: unknown, expected: unknown): void {
    const observed = toJson(actual);
    this.record(step, { ok: true, value: observed });
    if (!isDeepStrictEqual(observed, toJson(expected))) {
      throw new ScenarioAssertion(
        `${step}: expected ${JSON.stringify(toJson(expected))}, got ${JSON.stringify(observed)}`,
      );
    }
  }

  sameBytes(step: string, actual: Uint8Array, expected: Uint8Array): void {
    const a = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength);
    const e = Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength);
    this.record(step, {
      ok: true,
      value: { length: a.length, sha256: createHash('sha256').update(a).digest('hex') },
    });
    if (a.equals(e)) return;
    let at = 0;
    while (at < Math.min(a.length, e.length) && a[at] === e[at]) at++;
    throw new ScenarioAssertion(
      `${step}: bytes differ (got ${a.length} bytes, expected ${e.length}; first difference at offset ${at})`,
    );
  }

  infra(reason: string): never {
    throw new InfraError(reason);
  }

  note(text: string): void {
    this.notes.push(text);
  }

  /** Close what the scenario left open, newest first; returns the errors (they do not change the status). */
  cleanup(): string[] {
    const problems: string[] = [];
    const tracked = this.#tracked.reverse();
    this.#tracked = [];
    for (const resource of tracked) {
      try {
        resource.close();
      } catch (err) {
        problems.push(`cleanup: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    return problems;
  }
}
