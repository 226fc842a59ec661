/**
 * The one place that opens an etcd client (the `etcd3` package, docs/fleet.md says why).
 *
 * Every unary call gets a deadline, so that an etcd that is gone (restarted, or cut off
 * during a kexec) turns into an error the caller retries, not a call that hangs. Watches
 * are streams and have none; the fleet uses them only to wake up early, never as the one
 * way to learn of a change (etcd3 re-opens a watch after a backoff of up to 30 s).
 */
import { Etcd3 } from 'etcd3';

export type { Etcd3 } from 'etcd3';

/** Deadline of one unary etcd call. */
export const CALL_DEADLINE_MS = 5000;

/** `endpoints`: comma-separated client URLs, as etcdctl's --endpoints takes them. */
export function parseEndpoints(endpoints: string): string[] {
  const hosts = endpoints
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e !== '')
    .map((e) => (/^https?:\/\//.test(e) ? e : `http://${e}`));
  if (hosts.length === 0) throw new Error('no etcd endpoint given');
  return hosts;
}

export function connectEtcd(endpoints: string | readonly string[]): Etcd3 {
  const hosts = typeof endpoints === 'string' ? parseEndpoints(endpoints) : [...endpoints];
  return new Etcd3({
    hosts,
    dialTimeout: 3000,
    defaultCallOptions: (context) =>
      context.isStream ? {} : { deadline: new Date(Date.now() + CALL_DEADLINE_MS) },
  });
}
