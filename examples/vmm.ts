/**
 * A toy VMM that survives live updates through luod:
 *
 *   node --import tsx examples/vmm.ts --id vm-1 --mem 64M [--socket PATH] [--updates N]
 *
 * Guest RAM is a memfd the "vCPU" keeps writing into; on START_PRESERVATION
 * it is preserved (token 1) with a sealed device-state record (token 2);
 * after the reboot the VMM claims its session, resumes its guest, reports
 * its blackout (pause to resume) to luod with RESUMED, verifies every byte
 * and prints {"id", "verified", "bytes", "blackout_ms", "verify_ms", ...}. The logic lives in
 * src/example-vmm/vmm.ts (runVmm), so that it is compiled with luokit.
 */
import { vmmMain } from '../src/example-vmm/vmm.js';

process.exit(await vmmMain(process.argv.slice(2)));
