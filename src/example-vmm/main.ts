/**
 * Entry point of the example VMM (compiled: `node dist/example-vmm/main.js
 * --id vm-1 --mem 64M`), as `luoctl demo` spawns it. See vmm.ts.
 */
import { vmmMain } from './vmm.js';

const code = await vmmMain(process.argv.slice(2));
// The vCPU timer and luod's socket are closed by now; exit without waiting for stray handles.
process.exit(code);
