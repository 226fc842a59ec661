/**
 * `luoctl demo`: a whole live update on the emulated kernel, end to end.
 *
 * Starts an emulated kernel and luod (--emulate) in a private directory,
 * starts N example VMMs whose guest RAM is a memfd their vCPU keeps writing,
 * runs `update` into the next emulated kernel, lets every VMM claim its
 * memory back and verify every byte, then prints the timeline and a verdict.
 * luod writes the update's record into a report directory that outlives the
 * demo (--report-dir, default a new one under the temporary directory),
 * beside an HTML report of it; both paths are printed.
 * With --json the last line of stdout is one object with "verified".
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { statePaths, stopEmulator } from '../kernel/emu/index.js';
import { blackoutOf, vmBlackoutMs } from '../record/format.js';
import { Errno } from '../sys/errno.js';
import { SysError } from '../sys/error.js';
import { parseSize } from '../sys/size.js';
import { demoQemu } from './demo-qemu.js';
import {
  cleanupOnSignal,
  closedRecord,
  demoPlaces,
  entry,
  startDemoLuod,
  terminate,
  waitFor,
} from './demo-support.js';
import type { RegisterCommand } from './environment.js';
import { askLuod, checkReply } from './luod-connection.js';
import { commandAction, ExitCode } from './output.js';

/** One VMM's line in the demo's result: its verdict, and its blackout as luod's record has it. */
interface VmmResult {
  id: string;
  verified: boolean;
  bytes?: number;
  /** Pause to resume, from the update's record (the VMM reported it with RESUMED); null if not there. */
  blackout_ms: number | null;
  /** Checking every byte, after the resume: not part of the blackout. */
  verify_ms?: number;
  error?: string;
}

/** What the demo's `blackout_ms` figures mean, in its JSON and its lines. */
export const DEMO_BLACKOUT_MEANING =
  "pause to resume: from the VMM pausing its guest (before READY) to resuming it after CLAIM, as the VMM reported it to luod (RESUMED) and luod's update record holds it; verification of guest memory happens after the resume (verify_ms) and is not part of it";

function lastJsonLine(text: string): Record<string, unknown> | undefined {
  for (const line of text.trim().split('\n').reverse()) {
    try {
      const value = JSON.parse(line);
      if (value && typeof value === 'object') return value;
    } catch {
      // not JSON
    }
  }
  return undefined;
}

export const register: RegisterCommand = (program) => {
  program
    .command('demo')
    .description('a complete live update of example VMMs on the emulated kernel, verified byte for byte')
    .option('--vms <n>', 'how many example VMMs', '4')
    .option('--mem <size>', 'guest RAM per VMM', '256M')
    .option('--keep', 'keep the demo directory (logs, emulator state)')
    .option('--report-dir <dir>', "where the update's record and its HTML report go (kept after the demo)")
    .option('--qemu', 'real QEMU VMs under luo-qemu instead of example VMMs (default 3 VMs of 64M)')
    .action(
      commandAction(async (command, out) => {
        const opts = command.opts<{
          vms: string;
          mem: string;
          keep?: boolean;
          reportDir?: string;
          qemu?: boolean;
        }>();
        if (opts.qemu) {
          const given = (name: string) => command.getOptionValueSource(name) !== 'default';
          const vms = Number(given('vms') ? opts.vms : 3);
          if (!Number.isInteger(vms) || vms < 1 || vms > 16)
            throw new SysError('demo', Errno.EINVAL, '--vms must be 1 to 16 with --qemu');
          return demoQemu(
            {
              vms,
              mem: parseSize(given('mem') ? opts.mem : '64M'),
              keep: opts.keep === true,
              ...(opts.reportDir !== undefined && { reportDir: opts.reportDir }),
            },
            out,
          );
        }
        const vms = Number(opts.vms);
        if (!Number.isInteger(vms) || vms < 1 || vms > 64)
          throw new SysError('demo', Errno.EINVAL, '--vms must be 1 to 64');
        const mem = parseSize(opts.mem);
        const { dir, reportDir, recordsDir, socket, emuState } = demoPlaces('luokit-demo-', opts.reportDir);
        const say = (line: string) => {
          if (!out.json) process.stderr.write(`${line}\n`);
        };
        const children: ChildProcess[] = [];
        const started = Date.now();
        let cleaned: Promise<void> | undefined;
        const cleanup = (): Promise<void> =>
          (cleaned ??= (async () => {
            await Promise.all(children.map((child) => terminate(child)));
            await stopEmulator(statePaths(emuState)).catch(() => {});
            if (!opts.keep) fs.rmSync(dir, { recursive: true, force: true });
          })());
        const unhook = cleanupOnSignal(cleanup);
        try {
          say(`demo: ${vms} VMM(s) with ${opts.mem} of guest RAM each, in ${dir}`);
          children.push(await startDemoLuod({ dir, socket, emuState, recordsDir }));
          say('demo: emulated kernel and luod are up');
          const outputs = new Map<string, string>();
          const exits: Promise<void>[] = [];
          for (let i = 1; i <= vms; i++) {
            const id = `vm-${i}`;
            const vmm = spawn(
              process.execPath,
              [...entry('../example-vmm/main.js'), '--id', id, '--mem', String(mem), '--socket', socket],
              {
                stdio: ['ignore', 'pipe', fs.openSync(path.join(dir, `${id}.log`), 'a')],
              },
            );
            children.push(vmm);
            outputs.set(id, '');
            vmm.stdout!.on('data', (chunk: Buffer) => outputs.set(id, outputs.get(id) + chunk.toString()));
            exits.push(new Promise((resolve) => vmm.once('exit', () => resolve())));
          }
          await waitFor('every VMM to subscribe', 60_000, async () => {
            const reply = checkReply(await askLuod({ cmd: 'CLIENTS' }, { socket }));
            const ids = (reply.clients as { id: string | null }[]).filter((c) => c.id).length;
            return ids >= vms ? true : undefined;
          });
          say('demo: every VMM subscribed; updating');
          const update = checkReply(
            await askLuod(
              { cmd: 'UPDATE', timeout_ms: 60_000 },
              { socket, onEvent: (e) => say(`demo: update: ${String(e.phase)}`) },
            ),
          );
          say(`demo: update ${update.update}: ${update.outcome}`);
          // Each VMM prints its verdict once it has claimed and verified its memory.
          await Promise.race([
            waitFor('every VMM to verify its memory', 120_000, () =>
              [...outputs.values()].every((text) => typeof lastJsonLine(text)?.verified === 'boolean')
                ? true
                : undefined,
            ),
            Promise.all(exits),
          ]).catch(() => {});
          const verdicts = [...outputs].map(([id, text]) => ({ id, verdict: lastJsonLine(text) }));
          const status = checkReply(await askLuod({ cmd: 'STATUS' }, { socket }));
          const last = status.last_update as {
            timeline: { phase: string; at: number; client?: string }[];
          } | null;
          const timeline =
            last?.timeline ?? (update.timeline as { phase: string; at: number; client?: string }[]) ?? [];
          // luod closes the record once every VMM has claimed (or the update ended).
          // luod closes the record once every VMM has claimed (or the update ended).
          // Every VMM's RESUMED is in it by now: a VMM prints its verdict after luod answered it.
          const { record, recordFile, htmlFile } = await closedRecord(
            recordsDir,
            reportDir,
            String(update.update),
          );
          // Blackout comes from the record alone; the VMMs' lines give their verdicts.
          const results: VmmResult[] = verdicts.map(({ id, verdict }) => {
            const lane = record.clients.find((c) => c.id === id);
            const blackout_ms = lane ? vmBlackoutMs(lane) : null;
            if (!verdict || typeof verdict.verified !== 'boolean')
              return { id, verified: false, blackout_ms, error: 'no verdict from this VMM (see its log)' };
            return {
              id,
              verified: verdict.verified,
              ...(typeof verdict.bytes === 'number' && { bytes: verdict.bytes }),
              blackout_ms,
              ...(typeof verdict.verify_ms === 'number' && { verify_ms: verdict.verify_ms }),
              ...(typeof verdict.error === 'string' && { error: verdict.error }),
            };
          });
          const blackout = blackoutOf(record);
          const verified =
            update.outcome === 'rebooted' &&
            record.outcome === 'completed' &&
            results.length === vms &&
            results.every((r) => r.verified && r.blackout_ms !== null);
          const report = {
            verified,
            update: update.update,
            outcome: update.outcome,
            vms,
            mem_bytes: mem,
            /** The update's blackout: the longest of its VMs' (record/format.ts blackoutOf). */
            blackout_ms: blackout.maxMs,
            blackout: DEMO_BLACKOUT_MEANING,
            vmms: results,
            timeline,
            record: recordFile,
            html: htmlFile,
            duration_ms: Date.now() - started,
            ...(opts.keep && { dir }),
          };
          out.result(report, () => {
            const t0 = timeline[0]?.at ?? 0;
            return [
              'timeline:',
              ...timeline.map(
                (m) => `  ${`+${m.at - t0} ms`.padStart(10)}  ${m.phase}${m.client ? ` (${m.client})` : ''}`,
              ),
              'VMMs (blackout: pause to resume, as each VMM reported it to luod and the record holds it;',
              '       verification of every byte runs after the resume and is not part of it):',
              ...results.map(
                (r) =>
                  `  ${r.id.padEnd(8)} ${r.verified ? 'verified' : 'NOT VERIFIED'}${r.bytes !== undefined ? `  ${r.bytes} bytes` : ''}  blackout ${r.blackout_ms === null ? 'not recorded' : `${r.blackout_ms} ms`}${r.verify_ms !== undefined ? `  then verified in ${r.verify_ms} ms` : ''}${r.error ? `  ${r.error}` : ''}`,
              ),
              `blackout of the update (the longest VM's): ${blackout.maxMs === null ? 'not recorded' : `${blackout.maxMs} ms`}`,
              `record: ${recordFile} (${record.outcome})`,
              `html report: ${htmlFile}`,
              verified
                ? `verdict: live update verified: ${vms} VMM(s), every byte of guest memory intact`
                : 'verdict: live update NOT verified',
            ].join('\n');
          });
          return verified ? ExitCode.ok : ExitCode.failure;
        } finally {
          unhook();
          await cleanup();
        }
      }),
    );
};
