/**
 * Reading the counter guest's serial output (native/counter-guest/counter.S):
 * whether it went on without a reboot, and how long it was paused by its own
 * clocks. Each line is `N=<counter> T=<tsc> R=<hhmmss> K=<sum>`; the TSC
 * stops while the VM is stopped, the CMOS clock (the host's time) does not.
 */
export interface GuestLine {
  n: number;
  tsc: bigint;
  /** Seconds since midnight, from the CMOS clock. */
  rtc: number;
  sum: string;
}

export const BANNER = 'luokit counter guest: booted';

const LINE = /^N=([0-9a-f]{8}) T=([0-9a-f]{16}) R=(\d{6}) K=([0-9a-f]{8})$/;

/** Every complete counter line of `text` (a line cut by the end of the file is not one). */
export function parseSerial(text: string): GuestLine[] {
  const out: GuestLine[] = [];
  const lines = text.split('\r\n');
  lines.pop(); // unfinished
  for (const line of lines) {
    const m = LINE.exec(line.replace(/^.*(?=N=)/, ''));
    if (!m) continue;
    const [h, mi, s] = [m[3]!.slice(0, 2), m[3]!.slice(2, 4), m[3]!.slice(4, 6)].map(Number);
    out.push({
      n: Number.parseInt(m[1]!, 16),
      tsc: BigInt(`0x${m[2]}`),
      rtc: h! * 3600 + mi! * 60 + s!,
      sum: m[4]!,
    });
  }
  return out;
}

/**
 * The guest went on across `before` -> `after` (the serial files of the two
 * QEMU processes): `after` has no banner, its lines continue the counter
 * one by one from where `before` stopped (the line the stop cut in two is
 * completed in `after`), and the RAM sum never changes. Returns why not, or
 * null.
 */
export function continuityProblem(before: string, after: string): string | null {
  if (after.includes(BANNER)) return 'the guest booted again (its banner is in the second output)';
  const lines = parseSerial(before + after);
  if (lines.length < 2) return `too few lines (${lines.length})`;
  for (let i = 1; i < lines.length; i++) {
    if (lines[i]!.n !== lines[i - 1]!.n + 1)
      return `the counter went from ${lines[i - 1]!.n} to ${lines[i]!.n} (line ${i})`;
    if (lines[i]!.sum !== lines[0]!.sum)
      return `the RAM sum changed from ${lines[0]!.sum} to ${lines[i]!.sum}`;
  }
  if (parseSerial(after).length === 0) return 'nothing after the update';
  return null;
}

/** How many times the CMOS clock's second changed between consecutive lines. */
export function secondEdges(lines: readonly GuestLine[]): number {
  let edges = 0;
  for (let i = 1; i < lines.length; i++) if (lines[i]!.rtc !== lines[i - 1]!.rtc) edges++;
  return edges;
}

/**
 * How long the guest was paused, by its own clocks, around line `join` (the
 * first line after the update). Between two second boundaries of the CMOS
 * clock a whole number of seconds passed; the TSC counted only the time the
 * guest ran. Over the interval from the last boundary before the join to the
 * first boundary after it, the pause is the wall time less the TSC time (the
 * TSC's rate is the median of the other intervals). The join line itself
 * does not bound it: its second changed at some moment of the pause, not
 * when it was printed, which would lose up to a second.
 *
 * Each boundary is seen at the first line after it, so the figure is good to
 * about one line on either side: `uncertaintyMs` is the longer of the two
 * lines' TSC gaps. Null without a boundary on each side and one whole
 * interval away from the join.
 */
export function guestPause(
  lines: readonly GuestLine[],
  join: number,
): { pauseMs: number; uncertaintyMs: number } | null {
  const edges: { i: number; rtc: number; tsc: bigint }[] = [];
  for (let i = 1; i < lines.length; i++)
    if (lines[i]!.rtc !== lines[i - 1]!.rtc && i !== join)
      edges.push({ i, rtc: lines[i]!.rtc, tsc: lines[i]!.tsc });
  const rates: number[] = [];
  let across: { wall: number; ticks: number; gaps: number[] } | null = null;
  for (let k = 1; k < edges.length; k++) {
    const a = edges[k - 1]!;
    const b = edges[k]!;
    const wall = b.rtc - a.rtc;
    const ticks = Number(b.tsc - a.tsc);
    if (a.i < join && join < b.i) {
      const gap = (i: number) => Number(lines[i]!.tsc - lines[i - 1]!.tsc);
      across = { wall, ticks, gaps: [gap(a.i), gap(b.i)] };
    } else rates.push(ticks / wall);
  }
  if (!across || rates.length === 0) return null;
  rates.sort((x, y) => x - y);
  const ticksPerSecond = rates[Math.floor(rates.length / 2)]!;
  return {
    pauseMs: Math.max(0, across.wall * 1000 - (across.ticks / ticksPerSecond) * 1000),
    uncertaintyMs: Math.round((Math.max(...across.gaps) / ticksPerSecond) * 1000),
  };
}

/** guestPause's figure alone. */
export function guestPauseMs(lines: readonly GuestLine[], join: number): number | null {
  return guestPause(lines, join)?.pauseMs ?? null;
}
