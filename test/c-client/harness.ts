/**
 * Moved to test/support/ (luod.ts, wait.ts, child.ts), where every test finds
 * them. This re-export only keeps branches begun before the move working:
 * import from test/support/, and delete this file once they have landed.
 */
export { type Child, spawnChild } from '../support/child.js';
export { type LuodInstance, ROOT, type StartLuodOptions, startLuod, waitIdleWith } from '../support/luod.js';
export { waitUntil } from '../support/wait.js';
