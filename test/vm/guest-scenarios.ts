/**
 * The LUO scenario suite on the real kernel, inside the QEMU guest (docs/vm.md).
 * Started once per boot by the guest's job (test/vm/run.ts writes it):
 *
 *   boot 0: the 'single' and 'before-kexec' stages; what those stages hold stays open in this
 *           process, which then runs the kexec itself (vm/guest/kexec-next.sh) and so is
 *           alive, holding the sessions, when the kernel goes away;
 *   boot 1: the 'after-kexec' stages (with boot 0's results as `previous`), then kexec again;
 *   boot 2: the 'after-second-kexec' stages.
 *
 * Each boot's results go to $LUOKIT_OUT/scenarios.boot<N>.json (the host reads them) and one
 * LUOKIT-RESULT marker per scenario goes to the console.
 *
 * Environment: LUOKIT_BOOT, LUOKIT_OUT, LUOKIT_KERNELS (for the kexec), optional
 * LUOKIT_SCENARIO_IDS (comma-separated ids or groups: run only those).
 *
 * LUOKIT_SCENARIO_MODE=qualify (`luoctl qualify`'s workload, vm/guest/qualify.sh): only the
 * two-stage scenarios (every group with a before-kexec and an after-kexec stage and nothing
 * after a second kexec); boot 0 runs their before-kexec stages and then keeps holding what
 * they hold until the kernel goes away, without kexecing itself (luod does, for everything
 * at once); boot 1 runs their after-kexec stages and exits.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  realKernelHost,
  runScenarios,
  type ScenarioFilter,
  STAGE_BOOT,
  STAGES,
  selectScenarios,
} from '../scenarios/index.js';
import type { FaultInjector, ScenarioResult, Stage } from '../scenarios/types.js';

/** The project (the guest runs this bundled under build/vm/guest/, or as TypeScript from test/vm/). */
const ROOT = process.env.LUOKIT_ROOT ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface BootResults {
  boot: number;
  release: string;
  results: ScenarioResult[];
}

export function resultsFile(out: string, boot: number): string {
  return path.join(out, `scenarios.boot${boot}.json`);
}

function writeDurably(file: string, text: string): void {
  const fd = fs.openSync(`${file}.tmp`, 'w');
  fs.writeSync(fd, text);
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  fs.renameSync(`${file}.tmp`, file);
}

/**
 * Real retrieve failures for the "a failed retrieve fails forever" rule: memfd_luo's retrieve
 * charges every restored folio to the caller's memory cgroup (mm/memfd_luo.c,
 * mem_cgroup_charge), so this process runs the one RETRIEVE_FD inside a cgroup whose
 * memory.max is smaller than the memfd. With oom_score_adj -1000 the cgroup's OOM killer finds
 * no victim and the charge fails with ENOMEM instead of killing Node. The limit leaves Node
 * room for the few pages it may touch meanwhile. Undefined when cgroup v2's memory controller
 * is not there (the scenario is then reported 'infra').
 */
export function memcgRetrieveFaults(
  root = '/sys/fs/cgroup',
  limitBytes = 128 * 1024,
): FaultInjector | undefined {
  let controllers: string;
  try {
    controllers = fs.readFileSync(path.join(root, 'cgroup.controllers'), 'utf8');
  } catch {
    return undefined;
  }
  if (!controllers.split(/\s+/).includes('memory')) return undefined;
  return {
    async withFailingRetrieve<T>(fn: () => T): Promise<T> {
      const dir = path.join(root, 'luokit-retrieve-fault');
      fs.writeFileSync(path.join(root, 'cgroup.subtree_control'), '+memory');
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, 'memory.max'), String(limitBytes));
      const adj = fs.readFileSync('/proc/self/oom_score_adj', 'utf8').trim();
      fs.writeFileSync('/proc/self/oom_score_adj', '-1000');
      fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(process.pid));
      try {
        return fn();
      } finally {
        fs.writeFileSync(path.join(root, 'cgroup.procs'), String(process.pid));
        fs.writeFileSync('/proc/self/oom_score_adj', adj);
        try {
          fs.rmdirSync(dir);
        } catch {
          // still charged: it goes away with its last page
        }
      }
    },
  };
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').slice(0, 300);
}

/** The groups of exactly two stages (before-kexec, after-kexec): what one kexec proves. */
export function twoStageGroups(): Set<string> {
  const stagesOf = new Map<string, Set<Stage>>();
  for (const s of selectScenarios()) {
    const group = s.group ?? s.id;
    if (!stagesOf.has(group)) stagesOf.set(group, new Set());
    stagesOf.get(group)!.add(s.stage ?? 'single');
  }
  return new Set(
    [...stagesOf]
      .filter(([, st]) => st.size === 2 && st.has('before-kexec') && st.has('after-kexec'))
      .map(([group]) => group),
  );
}

async function main(): Promise<number> {
  const boot = Number(process.env.LUOKIT_BOOT ?? '0');
  const out = process.env.LUOKIT_OUT;
  if (!out) throw new Error('LUOKIT_OUT is not set');
  const qualify = process.env.LUOKIT_SCENARIO_MODE === 'qualify';
  const ids = process.env.LUOKIT_SCENARIO_IDS?.split(',').filter((s) => s !== '');
  const groups = qualify ? twoStageGroups() : undefined;
  const filter: ScenarioFilter = groups
    ? { ids: (s) => groups.has(s.group ?? s.id) }
    : ids && ids.length > 0
      ? { ids }
      : {};

  const stages: Stage[] = STAGES.filter((stage) => STAGE_BOOT[stage] === boot);
  const lastBoot = Math.max(0, ...selectScenarios(filter).map((s) => STAGE_BOOT[s.stage ?? 'single']));
  const previous: ScenarioResult[] = [];
  for (let b = 0; b < boot; b++) {
    const file = resultsFile(out, b);
    if (fs.existsSync(file))
      previous.push(...(JSON.parse(fs.readFileSync(file, 'utf8')) as BootResults).results);
  }

  const faults = memcgRetrieveFaults();
  const host = realKernelHost({ tmpfsDir: '/dev/shm', ...(faults ? { faults } : {}) });
  const started = performance.now();
  const results = await runScenarios(host, { ...filter, stages, previous });
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  for (const r of results) {
    const why = r.status === 'pass' ? '' : ` error=${oneLine(r.error ?? '')}`;
    console.log(`LUOKIT-RESULT kind=scenario boot=${boot} id=${r.id} status=${r.status}${why}`);
  }
  const release = fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  const record: BootResults = { boot, release, results };
  writeDurably(resultsFile(out, boot), `${JSON.stringify(record, null, 1)}\n`);
  console.log(
    `LUOKIT-SCENARIOS boot=${boot} count=${results.length} held=${host.holder.count} seconds=${seconds}`,
  );

  if (boot >= lastBoot) {
    host.holder.release();
    return 0;
  }
  if (qualify) {
    // Hold until the kernel goes away under luod's kexec (or the job stops this process).
    console.log(`LUOKIT-SCENARIOS-HOLDING boot=${boot} held=${host.holder.count}`);
    await new Promise(() => setInterval(() => {}, 1 << 30));
  }
  // This process keeps holding the sessions while kexec-next.sh replaces the kernel under it.
  // It returns only when the kexec failed (it printed LUOKIT-KEXEC-FAILED): a test failure.
  spawnSync('sh', [path.join(ROOT, 'vm/guest/kexec-next.sh')], { stdio: 'inherit' });
  return 1;
}

main().then(
  (status) => {
    process.exitCode = status;
  },
  (err: unknown) => {
    console.log(`LUOKIT-INFRA boot=${process.env.LUOKIT_BOOT} reason=guest scenario runner crashed`);
    console.error(err);
    process.exitCode = 2;
  },
);
