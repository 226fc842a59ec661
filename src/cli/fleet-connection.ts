/**
 * What every fleet command shares: the etcd endpoints (--etcd, or LUOKIT_ETCD), the key
 * prefix (--prefix), a logger for the long-running ones (pino on stderr), and a signal that
 * SIGTERM or SIGINT aborts.
 */
import type { Command } from 'commander';
import pino, { type Logger } from 'pino';
import { connectEtcd, type Etcd3 } from '../fleet/etcd.js';
import { DEFAULT_PREFIX, FleetKeys } from '../fleet/keys.js';
import { CodedError } from '../sys/error.js';

export interface FleetOptions {
  etcd?: string;
  prefix?: string;
}

/** Add --etcd and --prefix to a fleet command. */
export function withFleetOptions(command: Command): Command {
  return command
    .option('--etcd <endpoints>', 'etcd client URLs, comma-separated (default: $LUOKIT_ETCD)')
    .option('--prefix <prefix>', "the fleet's etcd key prefix", DEFAULT_PREFIX);
}

export function openFleet(options: FleetOptions): { etcd: Etcd3; keys: FleetKeys } {
  const endpoints = options.etcd ?? process.env['LUOKIT_ETCD'];
  if (!endpoints) throw new CodedError('EINVAL', 'no etcd endpoints: give --etcd or set LUOKIT_ETCD');
  const keys = new FleetKeys(options.prefix);
  return { etcd: connectEtcd(endpoints), keys };
}

export function fleetLog(name: string): Logger {
  return pino(
    { base: { service: name }, level: process.env['LUOKIT_LOG_LEVEL'] ?? 'info' },
    pino.destination(2),
  );
}

/** An AbortSignal for SIGTERM/SIGINT, and the function that stops listening. */
export function stopSignal(): { signal: AbortSignal; done: () => void } {
  const controller = new AbortController();
  const stop = () => controller.abort();
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  return {
    signal: controller.signal,
    done: () => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
    },
  };
}

/** A positive number (fractions allowed, e.g. seconds between retries). */
export function positiveNumber(name: string, text: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0)
    throw new CodedError('EINVAL', `${name} must be a positive number, not ${text}`);
  return n;
}

export function positiveInt(name: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1)
    throw new CodedError('EINVAL', `${name} must be a positive integer, not ${text}`);
  return n;
}
