/**
 * luod's client limit against its open-file limit (protocol/capacity.ts says
 * what the limit needs): logged at start when short, and in STATUS for
 * `luoctl doctor`.
 */
import { type CapacityNeeds, capacityNeeds } from '../protocol/capacity.js';
import { openFilesLimit } from '../sys/limits.js';

export interface Capacity extends CapacityNeeds {
  /** luod's RLIMIT_NOFILE (null: unknown). */
  open_files: number | null;
}

export function capacity(maxClients: number): Capacity {
  return { ...capacityNeeds(maxClients), open_files: openFilesLimit() };
}
