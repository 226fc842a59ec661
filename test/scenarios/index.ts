/**
 * The LUO scenario suite: every rule of the live update device, written once
 * against the device API and run on any kernel a ScenarioHost stands for.
 *
 * - `npm test` runs it on luokit's emulated kernel (test/scenarios.test.ts).
 * - The real-kernel bench runs the same scenarios in a QEMU guest and diffs
 *   the JSON results with the emulator's, step by step (the parity report).
 *   A real kexec ends the process, so the bench calls `runScenarios` once per
 *   boot with `stages` (and `previous`, the earlier boots' results, so that a
 *   stage whose earlier stage failed is reported 'infra' instead of failing
 *   for the wrong reason):
 *
 *     boot 1: runScenarios(host, { stages: ['single', 'before-kexec'] })   // then keep the process (its held fds) alive and kexec
 *     boot 2: runScenarios(host, { stages: ['after-kexec'], previous })    // then kexec again, holding again
 *     boot 3: runScenarios(host, { stages: ['after-second-kexec'], previous })
 *
 *   A host with `kexec()` (the emulator) gets all of that from one call.
 */
import { Context, errnoCodeOf, InfraError } from './context.js';
import { deviceScenarios } from './device.js';
import { kexecScenarios } from './kexec.js';
import { limitScenarios } from './limits.js';
import { nameScenarios } from './names.js';
import { preserveScenarios } from './preserve.js';
import { sessionScenarios } from './sessions.js';
import { type Scenario, type ScenarioHost, type ScenarioResult, STAGE_BOOT, type Stage } from './types.js';

export { emulatorHost, realKernelHost } from './hosts.js';
export type * from './types.js';
export { STAGE_BOOT } from './types.js';

export const scenarios: readonly Scenario[] = [
  ...deviceScenarios,
  ...nameScenarios,
  ...sessionScenarios,
  ...preserveScenarios,
  ...limitScenarios,
  ...kexecScenarios,
];

export const STAGES: readonly Stage[] = ['single', 'before-kexec', 'after-kexec', 'after-second-kexec'];

export function stageOf(scenario: Scenario): Stage {
  return scenario.stage ?? 'single';
}

export function groupOf(scenario: Scenario): string {
  return scenario.group ?? scenario.id;
}

export interface ScenarioFilter {
  /** An id or group (a group selects all its stages), a list of them, a pattern, or a predicate. */
  ids?: string | readonly string[] | RegExp | ((scenario: Scenario) => boolean);
  /** Only these stages (default: all). */
  stages?: readonly Stage[];
  /** Results of earlier runs (earlier boots), consulted for stage dependencies only. */
  previous?: readonly ScenarioResult[];
}

function matches(scenario: Scenario, ids: ScenarioFilter['ids']): boolean {
  if (ids === undefined) return true;
  if (typeof ids === 'function') return ids(scenario);
  if (ids instanceof RegExp) return ids.test(scenario.id);
  const list = typeof ids === 'string' ? [ids] : ids;
  return list.some(
    (id) => scenario.id === id || groupOf(scenario) === id || scenario.id.startsWith(`${id}/`),
  );
}

/** The scenarios a filter selects, in running order: by stage, then as listed. */
export function selectScenarios(
  filter: ScenarioFilter = {},
  from: readonly Scenario[] = scenarios,
): Scenario[] {
  const stages = filter.stages ?? STAGES;
  return STAGES.filter((stage) => stages.includes(stage)).flatMap((stage) =>
    from.filter((s) => stageOf(s) === stage && matches(s, filter.ids)),
  );
}

/** The stage of the same group that must have passed before `scenario` can mean anything. */
function prerequisiteStage(scenario: Scenario): Stage | undefined {
  switch (stageOf(scenario)) {
    case 'after-kexec':
      return 'before-kexec';
    case 'after-second-kexec':
      return 'after-kexec';
    default:
      return undefined;
  }
}

function infraResult(scenario: Scenario, error: string): ScenarioResult {
  return {
    id: scenario.id,
    group: groupOf(scenario),
    stage: stageOf(scenario),
    rule: scenario.rule,
    status: 'infra',
    steps: [],
    error,
    durationMs: 0,
  };
}

/**
 * Run one scenario (or stage) on `host`: a fresh context, the scenario, then everything it
 * left open closed (except what it held for the kexec). `known` are results so far, used to
 * refuse a stage whose earlier stage did not pass.
 */
export async function runScenario(
  host: ScenarioHost,
  scenario: Scenario,
  known: readonly ScenarioResult[] = [],
): Promise<ScenarioResult> {
  const missing = (scenario.requires ?? []).filter((capability) => !host.capabilities[capability]);
  if (missing.length > 0) {
    return infraResult(
      scenario,
      `needs ${missing.join(', ')}, which the ${host.backend} kernel host does not provide`,
    );
  }
  const needed = prerequisiteStage(scenario);
  if (needed !== undefined) {
    const earlier = known.filter((r) => r.group === groupOf(scenario) && r.stage === needed).at(-1);
    if (earlier !== undefined && earlier.status !== 'pass') {
      return infraResult(scenario, `its ${needed} stage (${earlier.id}) did not pass: ${earlier.status}`);
    }
  }

  const ctx = new Context(host, scenario, groupOf(scenario));
  const started = performance.now();
  let status: ScenarioResult['status'] = 'pass';
  let error: string | undefined;
  try {
    await scenario.run(ctx);
  } catch (err) {
    status = err instanceof InfraError ? 'infra' : 'fail';
    error = describeError(err);
  }
  const problems = ctx.cleanup();
  const notes = [...ctx.notes, ...problems];
  return {
    id: scenario.id,
    group: groupOf(scenario),
    stage: stageOf(scenario),
    rule: scenario.rule,
    status,
    steps: ctx.steps,
    ...(error !== undefined ? { error } : {}),
    ...(notes.length > 0 ? { notes } : {}),
    durationMs: Math.round(performance.now() - started),
  };
}

function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = errnoCodeOf(err);
  // An errno escaping a scenario outside ctx.expect is an unexpected kernel answer: say where.
  const where = code !== undefined ? `\n${err.stack?.split('\n').slice(1, 4).join('\n') ?? ''}` : '';
  return `${err.name}: ${err.message}${where}`;
}

/**
 * Run the selected scenarios on `host` and return their results as plain JSON, in running
 * order. Stages of later boots need `host.kexec()`; the kexec happens once per boot boundary
 * between the first and the last selected boot. Without `kexec` the selection must lie in one
 * boot (the real-kernel bench calls once per boot).
 */
export async function runScenarios(
  host: ScenarioHost,
  filter: ScenarioFilter = {},
): Promise<ScenarioResult[]> {
  const selected = selectScenarios(filter);
  const results: ScenarioResult[] = [];
  const known = (): ScenarioResult[] => [...(filter.previous ?? []), ...results];
  if (selected.length === 0) return results;
  const boots = selected.map((s) => STAGE_BOOT[stageOf(s)]);
  const first = Math.min(...boots);
  const last = Math.max(...boots);
  if (first !== last && host.kexec === undefined) {
    throw new Error(
      `the selection spans boots ${first}..${last} but this host cannot kexec; run one boot's stages per call`,
    );
  }
  let kexecFailure: string | undefined;
  for (let boot = first; boot <= last; boot++) {
    if (boot > first && kexecFailure === undefined) {
      try {
        await host.kexec!();
      } catch (err) {
        kexecFailure = `the kexec into boot ${boot} failed: ${describeError(err)}`;
      }
    }
    for (const scenario of selected.filter((s) => STAGE_BOOT[stageOf(s)] === boot)) {
      if (kexecFailure !== undefined) {
        results.push({ ...infraResult(scenario, kexecFailure), status: 'fail' });
        continue;
      }
      results.push(await runScenario(host, scenario, known()));
    }
  }
  return results;
}
