/**
 * The FleetLock wire protocol (Zincati's docs/development/fleetlock/protocol.md), shared by
 * luokit's client and server so that both read it from one place:
 *
 *  - `POST BASE/v1/pre-reboot` takes (locks) a reboot slot, `POST BASE/v1/steady-state`
 *    gives it back; both are recursive and owned by the client id;
 *  - the request carries the header `fleet-lock-protocol: true` and the JSON body
 *    `{"client_params": {"id": ID, "group": GROUP}}`, both non-empty, GROUP matching
 *    `^[a-zA-Z0-9.-]+$`;
 *  - 200 is success and every other status a failure; a failure's body is
 *    `{"kind": KIND, "value": SENTENCE}`, KIND from a small fixed set.
 *
 * The status codes of failures are not fixed by the protocol: luokit's are those of the
 * Kubernetes FleetLock server (poseidon/fleetlock): 400 for a bad request, 405 for a method
 * other than POST, 423 (Locked) when every slot is taken, 500 for the server's own errors;
 * and 503 when etcd cannot be reached, which a client retries like any failure.
 */
import { z } from 'zod';
import { GROUP_PATTERN } from './keys.js';

export const PRE_REBOOT = '/v1/pre-reboot';
export const STEADY_STATE = '/v1/steady-state';
export const HEADER = 'fleet-lock-protocol';

export const ClientParams = z.object({
  client_params: z.object({
    id: z.string().min(1),
    group: z.string().regex(GROUP_PATTERN),
  }),
});
export type ClientParams = z.infer<typeof ClientParams>;

/** The kinds of failure luokit's server answers, with their status codes. */
export const FAILURES = {
  not_found: 404,
  method_not_allowed: 405,
  missing_header: 400,
  decode_error: 400,
  unknown_group: 400,
  body_too_large: 413,
  failed_lock_semaphore_full: 423,
  etcd_unavailable: 503,
  internal_error: 500,
} as const;
export type FailureKind = keyof typeof FAILURES;

export const ErrorBody = z.object({ kind: z.string().min(1), value: z.string().min(1) });
export type ErrorBody = z.infer<typeof ErrorBody>;

/** The largest request body read; the real one is well under 1 KiB. */
export const MAX_BODY = 64 * 1024;
