/**
 * Waiting between two looks at etcd: a timer, cut short by a watch on the keys that
 * matter. The watch only makes the fleet react sooner; the timer alone is enough for it to
 * be correct (etcd3 re-opens a watch broken by an etcd restart after a backoff of up to
 * 30 s, and a watch that cannot be opened is simply tried again at the next wait).
 */
import type { Etcd3 } from './etcd.js';

type Watcher = Awaited<ReturnType<ReturnType<ReturnType<Etcd3['watch']>['prefix']>['create']>>;

export class Waker {
  private watcher: Watcher | undefined;
  private opening = false;
  private closed = false;
  private wake: (() => void) | undefined;

  constructor(
    private readonly etcd: Etcd3,
    private readonly prefix: string,
  ) {}

  /** Resolve after `ms`, or sooner when a watched key changes or `signal` aborts. */
  async wait(ms: number, signal?: AbortSignal): Promise<void> {
    this.open();
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal?.addEventListener('abort', done, { once: true });
      this.wake = done;
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.wake?.();
    await this.watcher?.cancel().catch(() => {});
  }

  private open(): void {
    if (this.watcher || this.opening || this.closed) return;
    this.opening = true;
    this.etcd
      .watch()
      .prefix(this.prefix)
      .create()
      .then((watcher) => {
        if (this.closed) {
          void watcher.cancel();
          return;
        }
        this.watcher = watcher;
        watcher.on('data', () => this.wake?.());
        watcher.on('error', () => {});
      })
      .catch(() => {})
      .finally(() => {
        this.opening = false;
      });
  }
}
