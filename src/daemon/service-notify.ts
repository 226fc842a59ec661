/**
 * luod as a Type=notify systemd service: READY=1 once it listens, STATUS=
 * whenever its phase changes (idle, preserving, kexec, claiming), WATCHDOG=1
 * at half of $WATCHDOG_USEC when WatchdogSec= is set, STOPPING=1 at the end.
 *
 * The phase is sampled rather than pushed by luod, so that the daemon's
 * update logic stays free of systemd; a quarter second is far below any
 * phase's length and any sensible WatchdogSec=.
 */
import type { Logger } from 'pino';
import type { Luod } from './luod.js';
import type { SdNotify } from './sd-notify.js';

const STATUS_POLL_MS = 250;

/** One line for `systemctl status luod`. */
export function statusLine(status: Record<string, unknown>): string {
  const phase = String(status.phase);
  const update = status.update ? ` update ${String(status.update)}` : '';
  const pending = Array.isArray(status.pending_claims) ? status.pending_claims : [];
  const subscribers = Array.isArray(status.subscribers) ? status.subscribers.length : 0;
  if (phase === 'claiming')
    return `claiming: ${pending.length} client(s) still to claim (${pending.join(', ')})`;
  if (phase === 'preserving') return `preserving:${update}, barrier in progress`;
  if (phase === 'kexec') return `kexec:${update}, rebooting into the next kernel`;
  return `idle: ${subscribers} subscriber(s)`;
}

/** The watchdog interval systemd asked for, in ms, or null (WatchdogSec= unset, or meant for another pid). */
export function watchdogIntervalMs(env: NodeJS.ProcessEnv = process.env, pid = process.pid): number | null {
  const usec = env.WATCHDOG_USEC;
  if (!usec || !/^\d+$/.test(usec) || Number(usec) === 0) return null;
  if (env.WATCHDOG_PID && Number(env.WATCHDOG_PID) !== pid) return null;
  return Number(usec) / 1000;
}

export class ServiceNotifier {
  readonly #notify: SdNotify;
  readonly #luod: Luod;
  readonly #log: Logger;
  readonly #timers: NodeJS.Timeout[] = [];
  #last = '';

  constructor(notify: SdNotify, luod: Luod, log: Logger) {
    this.#notify = notify;
    this.#luod = luod;
    this.#log = log;
  }

  /** luod listens: READY=1, then status updates and watchdog pings. */
  ready(env: NodeJS.ProcessEnv = process.env): void {
    this.#last = statusLine(this.#luod.status());
    this.#send(() => this.#notify.ready(this.#last));
    this.#timers.push(setInterval(() => this.#poll(), STATUS_POLL_MS).unref());
    const interval = watchdogIntervalMs(env);
    if (interval !== null) {
      this.#timers.push(setInterval(() => this.#send(() => this.#notify.watchdog()), interval / 2).unref());
      this.#send(() => this.#notify.watchdog());
    }
  }

  stopping(why: string): void {
    for (const timer of this.#timers) clearInterval(timer);
    this.#send(() => this.#notify.stopping(why));
  }

  #poll(): void {
    const line = statusLine(this.#luod.status());
    if (line === this.#last) return;
    this.#last = line;
    this.#send(() => this.#notify.status(line));
  }

  #send(action: () => void): void {
    try {
      action();
    } catch (err) {
      this.#log.warn({ err }, 'cannot notify systemd');
    }
  }
}
