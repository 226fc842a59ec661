/**
 * The scenario suite as an unmodified Node program under the emulated
 * kernel's preload shim: run by `luoctl emu exec -- node --import tsx
 * test/scenarios/shim-run.ts IDS...` (test/scenarios.test.ts does).
 *
 * The host is the real-kernel one: `/dev/liveupdate` opened with open(2),
 * ioctl(2), ftruncate, fallocate and close through the C library, all of
 * which the shim interposes, and pwrite through Node's own fs (libuv). So
 * the frozen size and close visibility are the shim's, as for any program.
 * Prints one JSON line: { results: ScenarioResult[] }.
 */
import { realKernelHost, runScenario, scenarios } from './index.js';
import type { ScenarioResult } from './types.js';

const ids = new Set(process.argv.slice(2));
const results: ScenarioResult[] = [];
const host = realKernelHost();
for (const scenario of scenarios.filter((s) => ids.has(s.id))) {
  results.push(await runScenario(host, scenario));
}
host.holder.release();
process.stdout.write(
  `${JSON.stringify({ results }, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))}\n`,
);
