/**
 * KHO's debugfs view (/sys/kernel/debug/kho/out, and kho/in after a live update)
 * is how luokit inspects what will be, or was, handed over. It is optional for
 * updating but often hidden: debugfs may be unmounted or root-only.
 */
import { pathState, readHostText } from './host-files.js';

export const KHO_DEBUGFS_OUT = '/sys/kernel/debug/kho/out';
const DEBUGFS_MOUNTPOINT = '/sys/kernel/debug';

/**
 * 'absent': debugfs is mounted but has no kho/ (kernel built without
 * CONFIG_KEXEC_HANDOVER_DEBUGFS, or KHO disabled).
 */
export type KhoDebugfsState = 'present' | 'denied' | 'unmounted' | 'absent';

/** Whether /proc/mounts text lists a debugfs on /sys/kernel/debug. */
export function debugfsMounted(mounts: string): boolean {
  return mounts
    .split('\n')
    .map((line) => line.split(' '))
    .some(([, mountpoint, fstype]) => mountpoint === DEBUGFS_MOUNTPOINT && fstype === 'debugfs');
}

export function readKhoDebugfsState(root: string): KhoDebugfsState {
  const state = pathState(root, KHO_DEBUGFS_OUT);
  if (state !== 'missing') return state;
  const mounts = readHostText(root, '/proc/mounts');
  return mounts !== undefined && !debugfsMounted(mounts) ? 'unmounted' : 'absent';
}
