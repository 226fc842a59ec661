/**
 * Every etcd key the fleet layer reads or writes, named here and nowhere else, so that the
 * layout in docs/fleet.md is this file and an operator can find any state with
 * `etcdctl get --prefix /luokit/fleet/`.
 *
 *   PREFIX/semaphore/GROUP/guard          bumped by every slot taken (the semaphore's CAS point)
 *   PREFIX/semaphore/GROUP/holders/ID     one per slot held; leased when an agent holds it
 *   PREFIX/hosts/ID                       a live agent's registration, leased
 *   PREFIX/rollout/spec                   the rollout: target kernel, limits, hosts (JSON)
 *   PREFIX/rollout/state                  running | paused | aborted | stopped | done
 *   PREFIX/rollout/failures               how many hosts failed (bumped with each failure, CAS point)
 *   PREFIX/rollout/hosts/ID               one host's progress in the rollout (JSON)
 *   PREFIX/election/controller            the elected controller's token, leased
 *
 * IDs are percent-encoded (a FleetLock client id is any case-sensitive label, `/` included);
 * groups follow FleetLock's `^[a-zA-Z0-9.-]+$`.
 */
import { CodedError } from '../sys/error.js';

export const DEFAULT_PREFIX = '/luokit/fleet';

/** FleetLock's rule for a group name (docs/fleet.md). */
export const GROUP_PATTERN = /^[a-zA-Z0-9.-]+$/;

export function checkGroup(group: string): string {
  if (!GROUP_PATTERN.test(group))
    throw new CodedError('EINVAL', `group ${JSON.stringify(group)} is not of the form [a-zA-Z0-9.-]+`);
  return group;
}

export function checkId(id: string): string {
  if (id === '' || id.length > 253)
    throw new CodedError('EINVAL', `host id ${JSON.stringify(id)} is empty or longer than 253 characters`);
  return id;
}

/** The key names under one prefix (a site may run several fleets on one etcd). */
export class FleetKeys {
  readonly prefix: string;

  constructor(prefix: string = DEFAULT_PREFIX) {
    if (!prefix.startsWith('/') || prefix.endsWith('/'))
      throw new CodedError(
        'EINVAL',
        `key prefix ${JSON.stringify(prefix)} must start with / and not end with /`,
      );
    this.prefix = prefix;
  }

  semaphoreGuard(group: string): string {
    return `${this.prefix}/semaphore/${checkGroup(group)}/guard`;
  }

  /** The prefix of a group's holder keys (with its trailing /). */
  semaphoreHolders(group: string): string {
    return `${this.prefix}/semaphore/${checkGroup(group)}/holders/`;
  }

  semaphoreHolder(group: string, id: string): string {
    return this.semaphoreHolders(group) + encodeURIComponent(checkId(id));
  }

  /** The prefix of one group's semaphore, guard and holders together (read in one range). */
  semaphore(group: string): string {
    return `${this.prefix}/semaphore/${checkGroup(group)}/`;
  }

  hosts(): string {
    return `${this.prefix}/hosts/`;
  }

  host(id: string): string {
    return this.hosts() + encodeURIComponent(checkId(id));
  }

  rolloutSpec(): string {
    return `${this.prefix}/rollout/spec`;
  }

  rolloutState(): string {
    return `${this.prefix}/rollout/state`;
  }

  rolloutFailures(): string {
    return `${this.prefix}/rollout/failures`;
  }

  rolloutHosts(): string {
    return `${this.prefix}/rollout/hosts/`;
  }

  rolloutHost(id: string): string {
    return this.rolloutHosts() + encodeURIComponent(checkId(id));
  }

  /** The prefix of the rollout's keys, spec, state and hosts (read in one range). */
  rollout(): string {
    return `${this.prefix}/rollout/`;
  }

  election(): string {
    return `${this.prefix}/election/controller`;
  }

  /** The ID in the last component of `key` under `prefix`. */
  idOf(prefix: string, key: string): string {
    if (!key.startsWith(prefix)) throw new CodedError('EINVAL', `key ${key} is not under ${prefix}`);
    return decodeURIComponent(key.slice(prefix.length));
  }
}
