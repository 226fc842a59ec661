/**
 * luod's Prometheus metrics (prom-client), opt-in: an HTTP endpoint bound to
 * 127.0.0.1 only (`luod --metrics-port`), and/or a file for node_exporter's
 * textfile collector (`luod --metrics-textfile`), replaced atomically.
 *
 * Counters and histograms are fed from finished update records (src/record/format.ts),
 * so a real kexec's phases, measured by the luod before it, are counted by
 * the luod after it; gauges are read from luod when scraped. Metrics start at
 * zero with each luod process, as Prometheus expects of counters.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { OUTCOMES, readyToClaimOf, type UpdateRecord } from '../record/format.js';
import { writeFileAtomic } from '../sys/atomic-file.js';
import { Errno, errnoNumber } from '../sys/errno.js';
import { errorCode, SysError } from '../sys/error.js';

/** What luod holds right now, read at each scrape. */
export interface LuodGauges {
  clients: number;
  subscribers: number;
  /** Session fds luod holds: outgoing during an update, incoming until claimed. */
  sessionsHeld: number;
  /** Incoming sessions not claimed yet. */
  unclaimedSessions: number;
}

export type ProtocolErrorKind =
  | 'malformed-line'
  | 'invalid-command'
  | 'unknown-command'
  | 'refused-connection';

/** From a millisecond (a claim on the emulator) to ten minutes (a slow barrier). */
const DURATION_BUCKETS = [
  0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
];

export class LuodMetrics {
  readonly registry = new Registry();
  #gauges: () => LuodGauges = () => ({ clients: 0, subscribers: 0, sessionsHeld: 0, unclaimedSessions: 0 });
  readonly #updates: Counter<'outcome'>;
  readonly #phases: Histogram<'phase'>;
  readonly #readyToClaim: Histogram;
  readonly #vmBlackout: Histogram;
  readonly #protocolErrors: Counter<'kind'>;
  readonly #released: Counter;
  #textfile: { file: string; onError: (err: Error) => void; pending: boolean } | null = null;

  constructor() {
    const registers = [this.registry];
    this.#updates = new Counter({
      name: 'luod_updates_total',
      help: 'Live updates that ended, by outcome (completed, aborted, refused, failed)',
      labelNames: ['outcome'],
      registers,
    });
    for (const outcome of OUTCOMES) if (outcome !== 'in-progress') this.#updates.inc({ outcome }, 0);
    this.#phases = new Histogram({
      name: 'luod_update_phase_duration_seconds',
      help: 'How long each phase of a live update took (see docs/observability.md)',
      labelNames: ['phase'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.#vmBlackout = new Histogram({
      name: 'luod_vm_blackout_seconds',
      help: 'Blackout of each VM: from its VMM pausing it to its VMM resuming it, as the VMM reported (RESUMED)',
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.#readyToClaim = new Histogram({
      name: 'luod_update_ready_to_claim_seconds',
      help: "luod's own view of an update, not the blackout: from the first READY to the last CLAIM (or the abort)",
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.#protocolErrors = new Counter({
      name: 'luod_protocol_errors_total',
      help: 'Lines and connections luod refused: not a JSON line, an invalid or an unknown command, a connection over a limit',
      labelNames: ['kind'],
      registers,
    });
    for (const kind of [
      'malformed-line',
      'invalid-command',
      'unknown-command',
      'refused-connection',
    ] as const)
      this.#protocolErrors.inc({ kind }, 0);
    this.#released = new Counter({
      name: 'luod_unclaimed_sessions_released_total',
      help: 'Incoming sessions finished at the claim deadline because nobody claimed them (their memory is lost)',
      registers,
    });
    const read = () => this.#gauges();
    new Gauge({
      name: 'luod_clients_connected',
      help: 'Connections to luod (VMMs and operators)',
      registers,
      collect() {
        this.set(read().clients);
      },
    });
    new Gauge({
      name: 'luod_clients_subscribed',
      help: 'Connections subscribed to live updates',
      registers,
      collect() {
        this.set(read().subscribers);
      },
    });
    new Gauge({
      name: 'luod_sessions_held',
      help: 'Live update sessions luod holds an fd of (outgoing during an update, incoming until claimed)',
      registers,
      collect() {
        this.set(read().sessionsHeld);
      },
    });
    new Gauge({
      name: 'luod_unclaimed_sessions',
      help: 'Sessions carried across the last kexec that no client has claimed yet',
      registers,
      collect() {
        this.set(read().unclaimedSessions);
      },
    });
  }

  /** Where the gauges come from (luod, once it exists). */
  watch(gauges: () => LuodGauges): void {
    this.#gauges = gauges;
  }

  /** Count a finished update and observe its phases. */
  updateFinished(record: UpdateRecord): void {
    if (record.outcome === 'in-progress') return;
    this.#updates.inc({ outcome: record.outcome });
    for (const span of record.phases) {
      if (span.end !== null) this.#phases.observe({ phase: span.phase }, (span.end - span.start) / 1000);
    }
    const held = readyToClaimOf(record);
    if (held) this.#readyToClaim.observe((held.end - held.start) / 1000);
    this.#changed();
  }

  /** A VM's blackout, as its VMM reported it (RESUMED), in ms. */
  vmBlackout(ms: number): void {
    this.#vmBlackout.observe(ms / 1000);
    this.#changed();
  }

  protocolError(kind: ProtocolErrorKind): void {
    this.#protocolErrors.inc({ kind });
  }

  unclaimedReleased(sessions: number): void {
    this.#released.inc(sessions);
    this.#changed();
  }

  /**
   * Keep `file` current: written now, after every finished update, and every
   * `intervalMs` (for the gauges). Stop with the returned function.
   */
  startTextfile(file: string, options: { intervalMs?: number; onError: (err: Error) => void }): () => void {
    this.#textfile = { file, onError: options.onError, pending: false };
    this.#changed();
    const timer = setInterval(() => this.#changed(), options.intervalMs ?? 15_000);
    timer.unref();
    return () => {
      clearInterval(timer);
      this.#textfile = null;
    };
  }

  /** Rewrite the textfile soon (once, however many changes come meanwhile). */
  #changed(): void {
    const target = this.#textfile;
    if (!target || target.pending) return;
    target.pending = true;
    setImmediate(() => {
      target.pending = false;
      if (this.#textfile !== target) return;
      this.writeTextfile(target.file).catch((err: Error) => target.onError(err));
    });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** Serve GET /metrics on 127.0.0.1:port (0: any free port); resolves with the port. */
  serve(port: number): Promise<{ server: http.Server; port: number }> {
    const server = http.createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '/').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('luod serves only GET /metrics\n');
        return;
      }
      this.text().then(
        (body) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(body),
        (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err.message}\n`),
      );
    });
    return new Promise((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          new SysError(
            'metrics',
            errnoNumber(errorCode(err)) ?? Errno.EIO,
            `cannot serve metrics on 127.0.0.1:${port}: ${errorCode(err, err.message)}`,
          ),
        ),
      );
      server.listen(port, '127.0.0.1', () => {
        server.unref();
        resolve({ server, port: (server.address() as AddressInfo).port });
      });
    });
  }

  /** Replace `file` with the current metrics (node_exporter's textfile collector reads *.prom). */
  async writeTextfile(file: string): Promise<void> {
    writeFileAtomic(file, await this.text());
  }
}
