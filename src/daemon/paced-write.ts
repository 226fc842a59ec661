/**
 * A file luod rewrites whole at every change (the state file, the id
 * owners), paced so that many changes do not make it quadratic.
 *
 * Each write holds every client, so a thousand VMMs each causing one write
 * cost a thousand writes of a thousand entries. PacedWrite writes at once
 * when the file has been quiet (the leading edge: one change, one write,
 * before the caller goes on, as without pacing), and otherwise gathers the
 * changes that come while the last write "cools down" into one write at its
 * end. The cool-down is COOL_DOWN times as long as the last write took, so
 * writing takes at most a quarter of luod's time however many changes come,
 * and a change waits at most about four writes' time to be on disk.
 */
const COOL_DOWN = 3;

export class PacedWrite {
  readonly #write: () => void;
  /** Not before this (performance.now()): the last write's end plus its length. */
  #quietAt = 0;
  #pending: Promise<void> | null = null;

  /** `write`: writes the file as it stands now (and deals with its own errors). */
  constructor(write: () => void) {
    this.#write = write;
  }

  /**
   * The file must show the current state: written now when it has been
   * quiet, else with the next write. Resolves once a write that includes
   * this change is done.
   */
  request(): Promise<void> {
    if (this.#pending) return this.#pending;
    const now = performance.now();
    if (now >= this.#quietAt) {
      this.#run();
      return Promise.resolve();
    }
    this.#pending = new Promise((resolve) => {
      setTimeout(() => {
        this.#pending = null;
        this.#run();
        resolve();
      }, this.#quietAt - now);
    });
    return this.#pending;
  }

  /** A write is waiting for its turn. */
  get pending(): boolean {
    return this.#pending !== null;
  }

  #run(): void {
    const start = performance.now();
    this.#write();
    const end = performance.now();
    this.#quietAt = end + COOL_DOWN * (end - start);
  }
}
