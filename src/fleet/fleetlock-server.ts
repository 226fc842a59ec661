/**
 * A FleetLock server (src/fleet/fleetlock-protocol.ts) on luokit's etcd semaphore, so that
 * Zincati, or any FleetLock client, can take its reboot slots from the same etcd as luokit's
 * agents. Each group has a number of slots (`groups`, or `defaultSlots` for any group);
 * a group with neither is refused (unknown_group), as airlock does.
 *
 * FleetLock slots are written without a lease: the protocol has no heartbeat, and a client
 * holds its slot across its own reboot, until it reports steady state.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { CodedError } from '../sys/error.js';
import { type Etcd3, etcdError, isUnavailable } from './etcd.js';
import {
  ClientParams,
  type ErrorBody,
  FAILURES,
  type FailureKind,
  HEADER,
  MAX_BODY,
  PRE_REBOOT,
  STEADY_STATE,
} from './fleetlock-protocol.js';
import type { FleetKeys } from './keys.js';
import { Semaphore } from './semaphore.js';

export interface FleetLockServerOptions {
  readonly etcd: Etcd3;
  readonly keys: FleetKeys;
  /** Slots of named groups. */
  readonly groups?: Readonly<Record<string, number>>;
  /** Slots of any other group; without it, other groups are refused. */
  readonly defaultSlots?: number;
  readonly log: Logger;
}

class Failure extends Error {
  constructor(
    readonly kind: FailureKind,
    message: string,
  ) {
    super(message);
  }
}

export class FleetLockServer {
  private readonly server: http.Server;

  constructor(private readonly options: FleetLockServerOptions) {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        options.log.error({ err: String(err) }, 'fleetlock: request failed');
        if (!res.headersSent) reply(res, 500, { kind: 'internal_error', value: 'the server failed' });
      });
    });
  }

  /** Listen on `host:port` (port 0: any free port); resolves with the address. */
  async listen(port: number, host = '127.0.0.1'): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    return this.server.address() as AddressInfo;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private slotsOf(group: string): number | undefined {
    return this.options.groups?.[group] ?? this.options.defaultSlots;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://fleetlock').pathname;
    const log = this.options.log;
    try {
      if (path !== PRE_REBOOT && path !== STEADY_STATE)
        throw new Failure(
          'not_found',
          `no FleetLock endpoint at ${path}: use ${PRE_REBOOT} or ${STEADY_STATE}`,
        );
      if (req.method !== 'POST')
        throw new Failure('method_not_allowed', `${path} takes POST, not ${req.method}`);
      if (req.headers[HEADER] !== 'true')
        throw new Failure('missing_header', `the request lacks the header "${HEADER}: true"`);
      const { id, group } = await readParams(req);
      const slots = this.slotsOf(group);
      if (slots === undefined)
        throw new Failure('unknown_group', `group ${JSON.stringify(group)} is not served here`);
      const semaphore = new Semaphore(this.options.etcd, this.options.keys, group);
      if (path === PRE_REBOOT) {
        const result = await semaphore.acquire(id, { slots });
        if (!result.ok)
          throw new Failure(
            'failed_lock_semaphore_full',
            `all ${slots} slots of group ${group} are taken (by ${result.holders.map((h) => h.id).join(', ')})`,
          );
        log.info({ id, group, already: result.already }, 'fleetlock: slot locked');
      } else {
        const held = await semaphore.release(id);
        log.info({ id, group, held }, 'fleetlock: slot released');
      }
      reply(res, 200, undefined);
    } catch (err) {
      if (err instanceof Failure) {
        log.warn({ kind: err.kind, path }, `fleetlock: ${err.message}`);
        reply(res, FAILURES[err.kind], { kind: err.kind, value: err.message });
      } else if (err instanceof CodedError && err.code === 'EINVAL') {
        // an id the key layout cannot hold (src/fleet/keys.ts)
        reply(res, FAILURES.decode_error, { kind: 'decode_error', value: err.message });
      } else if (isUnavailable(err)) {
        const { message } = etcdError(err, 'the semaphore');
        log.warn({ path }, `fleetlock: ${message}`);
        reply(res, FAILURES.etcd_unavailable, { kind: 'etcd_unavailable', value: message });
      } else throw err;
    }
  }
}

async function readParams(req: http.IncomingMessage): Promise<{ id: string; group: string }> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new Failure('body_too_large', `the body is larger than ${MAX_BODY} bytes`);
    chunks.push(chunk);
  }
  let json: unknown;
  try {
    json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new Failure('decode_error', 'the body is not JSON');
  }
  const parsed = ClientParams.safeParse(json);
  if (!parsed.success)
    throw new Failure(
      'decode_error',
      'the body must be {"client_params": {"id": a non-empty string, "group": [a-zA-Z0-9.-]+}}',
    );
  return parsed.data.client_params;
}

function reply(res: http.ServerResponse, status: number, body: ErrorBody | undefined): void {
  const text = body ? JSON.stringify(body) : '';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
