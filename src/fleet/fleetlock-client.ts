/**
 * A FleetLock client (src/fleet/fleetlock-protocol.ts): what luokit's agent uses instead of
 * etcd at a site that runs airlock or a Kubernetes FleetLock server, and what a test uses
 * against luokit's own server. One call is one request: the caller decides when to retry.
 */
import { CodedError } from '../sys/error.js';
import { type ClientParams, ErrorBody, HEADER, PRE_REBOOT, STEADY_STATE } from './fleetlock-protocol.js';
import { checkGroup, checkId } from './keys.js';

export type FleetLockResult =
  | { readonly ok: true }
  /** The server answered no: its status and its error body (kind and sentence). */
  | { readonly ok: false; readonly status: number; readonly kind: string; readonly value: string };

export class FleetLockClient {
  private readonly base: string;

  /** `baseUrl`: the deployment's base URL; the /v1/... endpoints are relative to it. */
  constructor(
    baseUrl: string,
    readonly id: string,
    readonly group = 'default',
    private readonly timeoutMs = 10_000,
  ) {
    let url: URL;
    try {
      url = new URL(baseUrl);
    } catch {
      throw new CodedError('EINVAL', `FleetLock URL ${JSON.stringify(baseUrl)} is not a URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      throw new CodedError('EINVAL', `FleetLock URL ${baseUrl} is not http(s)`);
    this.base = url.href.replace(/\/+$/, '');
    checkId(id);
    checkGroup(group);
  }

  /** Take (lock) a reboot slot; recursive: a slot already held is taken again. */
  preReboot(): Promise<FleetLockResult> {
    return this.call(PRE_REBOOT);
  }

  /** Give the slot back (unlock if held). */
  steadyState(): Promise<FleetLockResult> {
    return this.call(STEADY_STATE);
  }

  /** A network failure throws (ECONNREFUSED, ETIMEDOUT); an answer, yes or no, resolves. */
  private async call(endpoint: string): Promise<FleetLockResult> {
    const body: ClientParams = { client_params: { id: this.id, group: this.group } };
    let res: Response;
    try {
      res = await fetch(this.base + endpoint, {
        method: 'POST',
        headers: { [HEADER]: 'true', 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
        redirect: 'error', // the header exists to refuse redirections; so do we
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code;
      if ((err as Error).name === 'TimeoutError')
        throw new CodedError(
          'ETIMEDOUT',
          `FleetLock server ${this.base} did not answer within ${this.timeoutMs} ms`,
        );
      throw new CodedError(
        cause === 'ECONNREFUSED' ? 'ECONNREFUSED' : 'EHOSTUNREACH',
        `FleetLock server ${this.base} cannot be reached (${cause ?? (err as Error).message})`,
      );
    }
    const text = await res.text();
    if (res.status === 200) return { ok: true };
    let parsed: ReturnType<typeof ErrorBody.safeParse> | undefined;
    try {
      parsed = ErrorBody.safeParse(JSON.parse(text));
    } catch {
      parsed = undefined;
    }
    if (parsed?.success) return { ok: false, status: res.status, ...parsed.data };
    // A server that does not follow the error schema (older airlock answers plain text).
    return {
      ok: false,
      status: res.status,
      kind: 'unknown',
      value: text.trim().slice(0, 200) || res.statusText,
    };
  }
}
