/**
 * The one place that opens an etcd client (the `etcd3` package, docs/fleet.md says why).
 *
 * Every unary call gets a deadline, so that an etcd that is gone (restarted, or cut off
 * during a kexec) turns into an error the caller retries, not a call that hangs. Watches
 * are streams and have none; the fleet uses them only to wake up early, never as the one
 * way to learn of a change (etcd3 re-opens a watch after a backoff of up to 30 s).
 */
import { Etcd3, GRPCDeadlineExceededError, isRecoverableError } from 'etcd3';
import { CodedError } from '../sys/error.js';

export type { Etcd3, Lease } from 'etcd3';

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

/**
 * An etcd3 error as luokit's error shape: ETIMEDOUT for a call past its deadline,
 * ECONNREFUSED for an etcd that cannot be reached (including the client's circuit breaker,
 * open for 5 s after three failed calls), EIO for anything else etcd answered.
 */
export function etcdError(err: unknown, what: string): CodedError {
  if (err instanceof CodedError) return err;
  const text = err instanceof Error ? err.message : String(err);
  if (err instanceof GRPCDeadlineExceededError)
    return new CodedError('ETIMEDOUT', `${what}: etcd did not answer within ${CALL_DEADLINE_MS} ms`);
  if (isUnavailable(err)) return new CodedError('ECONNREFUSED', `${what}: etcd cannot be reached (${text})`);
  return new CodedError('EIO', `${what}: etcd: ${text}`);
}

/** Whether `err` says etcd is out of reach for now (worth trying again), not that it refused. */
export function isUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (err instanceof CodedError) return err.code === 'ECONNREFUSED' || err.code === 'ETIMEDOUT';
  return isRecoverableError(err) || err instanceof GRPCDeadlineExceededError || 'isBrokenCircuitError' in err;
}
