/**
 * The guest's serial console carries two writers on one wire: userspace
 * (the job's `LUOKIT-` marks, written to /dev/console) and the kernel's
 * printk. A printk that comes while a mark is half written splits it:
 *
 *   LUOKIT-BOOT boot[    1.873468] input: ImExPS/2 Generic Explorer Mouse ...
 *   =1 release=7.2.13 uptime=1.90
 *
 * and the mark is lost to whoever reads lines (a real-kernel bench run once
 * failed for a missing `init@1` this way). ConsoleJoiner gives such a mark
 * back whole, at the time its first part arrived, and the kernel's message
 * as a line of its own. Used by the live reader (qemu.ts) and by the reader
 * of the saved console (test/vm/blackout.ts).
 */

/** A printk line's start: `[    1.873468] ` (seconds since boot, six decimals). */
const PRINTK = /\[\s*\d+\.\d{6}\] /;
const PRINTK_AT_START = /^\s*\[\s*\d+\.\d{6}\] /;

export interface TimedLine {
  readonly text: string;
  readonly atMs: number;
}

export class ConsoleJoiner {
  /** The first part of a mark a printk broke, waiting for the rest. */
  #head: TimedLine | null = null;

  /** One line as received; the lines to read now (none while a mark's head waits for its tail). */
  push(text: string, atMs: number): TimedLine[] {
    const out: TimedLine[] = [];
    if (this.#head) {
      const head = this.#head;
      this.#head = null;
      if (!PRINTK_AT_START.test(text) && !text.includes('LUOKIT-')) {
        out.push({ text: head.text + text, atMs: head.atMs });
        return out;
      }
      out.push(head); // no tail came: the head as it is
    }
    const mark = text.indexOf('LUOKIT-');
    if (mark >= 0) {
      const printk = text.slice(mark).search(PRINTK);
      if (printk > 0) {
        this.#head = { text: text.slice(0, mark + printk), atMs };
        out.push({ text: text.slice(mark + printk), atMs });
        return out;
      }
    }
    out.push({ text, atMs });
    return out;
  }

  /** The end of the console: a head still waiting, as it is. */
  flush(): TimedLine[] {
    const head = this.#head;
    this.#head = null;
    return head ? [head] : [];
  }
}

/** Every line of a saved console, marks split by a printk joined again. */
export function joinConsoleLines(lines: readonly TimedLine[]): TimedLine[] {
  const joiner = new ConsoleJoiner();
  return [...lines.flatMap((l) => joiner.push(l.text, l.atMs)), ...joiner.flush()];
}
