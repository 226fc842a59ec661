/**
 * Entry point of the example VMM (compiled: `node dist/example-vmm/main.js
 * --id vm-1 --mem 64M`, or its bundle through vmm-bin.cjs), as `luoctl demo`
 * and the real-kernel bench spawn it. See vmm.ts.
 *
 * No top-level await: the bundle (scripts/bundle.mjs) is CommonJS.
 */
import { vmmMain } from './vmm.js';

void vmmMain(process.argv.slice(2)).then((code) => {
  // The vCPU timer and luod's socket are closed by now; exit without waiting for stray handles.
  process.exit(code);
});
