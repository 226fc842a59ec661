/**
 * Decoding KHO's preserved-memory radix tree: src/abi's walkRadixTreeRuns (what
 * `luoctl inspect` and the handover reader use) against a C program of ours
 * (bench/native/radix-walk.c, built here with `cc -O2`) walking the same tree bytes
 * from the same file with the same checks, in the same run.
 *
 * The tree describes 1 TiB of preserved memory (2^28 pages of 4 KiB):
 *   512 GiB of contiguous 4 KiB pages          (full bitmap words)
 *   256 GiB of 4 KiB pages in runs of 1..64 pages with gaps of 1..64 (fragmented)
 *   192 GiB of 2 MiB blocks, every other one   (isolated bits)
 *    48 GiB of 1 GiB blocks, every other one
 *    16 GiB of blocks of orders 1..8, every third one
 * It is built straight into a sparse memory image (byte pa = address pa): bitmaps are
 * filled a run at a time, not one call per page, then the tables above them are written.
 * Building is not timed; decoding is (opening the image, walking every node, merging
 * blocks into runs, and per run the same accumulation on both sides: blocks and runs
 * per order and a checksum, which must agree between the two and with the builder).
 *
 * Environment:
 *   LUOKIT_BENCH_RADIX_GB  preserved GiB, scaled from the mix above (default 1024)
 *   LUOKIT_BENCH_RUNS      timed runs of each side, interleaved (default 11); medians reported
 *   LUOKIT_BENCH_DIR       where the image goes (default /dev/shm, else the temp dir)
 *   CC                     the C compiler (default cc)
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { walkRadixTreeRuns } from '../src/abi/kho-radix-walk.js';
import { SparseFileMemory } from '../src/abi/memory-files.js';
import { PreservedMemoryMap } from '../src/abi/preserved-map.js';
import {
  type BenchContext,
  type Benchmark,
  type BenchmarkResult,
  envNumber,
  GIB,
  type Measurement,
  measurement,
  ratio,
} from './lib.js';

const PAGE = 4096;
const LEAF_BITS = 32768;
const TABLE_ENTRIES = 512;
/** Node pages are allocated from here up, below every preserved range. */
const NODE_BASE = 16 * 1024 * 1024;
const ORDER0_LOG2 = 52;
/** Decodes before timing, so src/abi is measured compiled, as in a long-running process. */
const WARMUP_DECODES = 3;
const C_SOURCE = fileURLToPath(new URL('./native/radix-walk.c', import.meta.url));

/** Per order: blocks and runs; plus the checksum both walkers compute. */
export interface RadixTally {
  orders: [order: number, blocks: number, runs: number][];
  checksum: number;
}

/** Where the decoder starts and what it must find. */
export interface RadixImage {
  path: string;
  rootPa: bigint;
  preservedBytes: number;
  preservedPages: number;
  nodePages: number;
  expected: RadixTally;
}

/**
 * Builds a tree for `gib` GiB of preserved memory (the module comment's mix, scaled) in
 * a sparse image at `file`.
 */
export function buildRadixImage(file: string, gib: number): RadixImage {
  const scale = gib / 1024;
  const leaves = new Map<number, Uint8Array>();
  const gibPages = GIB / PAGE;
  /** The runs written, as [order, first, blocks]; none touch another of their order. */
  const written: [number, number, number][] = [];

  /** Marks `count` blocks of `order` from block index `first`: a bitmap run, bytes at a time. */
  const setRun = (order: number, first: number, count: number): void => {
    written.push([order, first, count]);
    let key = 2 ** (ORDER0_LOG2 - order) + first;
    let left = count;
    while (left > 0) {
      const leafKey = Math.floor(key / LEAF_BITS);
      let leaf = leaves.get(leafKey);
      if (!leaf) {
        leaf = new Uint8Array(PAGE);
        leaves.set(leafKey, leaf);
      }
      const bit = key - leafKey * LEAF_BITS;
      const n = Math.min(left, LEAF_BITS - bit);
      setBits(leaf, bit, n);
      key += n;
      left -= n;
    }
  };

  // 4 KiB pages, contiguous: 512 GiB from 4 GiB.
  const contiguous = Math.round(512 * scale * gibPages);
  setRun(0, 4 * gibPages, contiguous);
  // 4 KiB pages, fragmented: 256 GiB in runs of 1..64 with gaps of 1..64, from 520 GiB.
  let fragmented = Math.round(256 * scale * gibPages);
  let pfn = 520 * gibPages;
  let seed = 0x2545f491;
  const next = (): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % 64;
  };
  while (fragmented > 0) {
    const length = Math.min(fragmented, 1 + next());
    setRun(0, pfn, length);
    fragmented -= length;
    pfn += length + 1 + next();
  }
  // 2 MiB blocks, every other one, from 1040 GiB.
  const huge = Math.round(192 * scale * 512);
  for (let i = 0; i < huge; i++) setRun(9, (1040 * gibPages) / 512 + 2 * i, 1);
  // 1 GiB blocks, every other one, from 1536 GiB.
  const giant = Math.round(48 * scale);
  for (let i = 0; i < giant; i++) setRun(18, 1536 + 2 * i, 1);
  // Orders 1..8: 2 GiB each, every third block, from 1664 GiB + 8 GiB * order.
  for (let order = 1; order <= 8; order++) {
    const blocks = Math.round((2 * scale * gibPages) / 2 ** order);
    const first = ((1664 + 8 * order) * gibPages) / 2 ** order;
    for (let i = 0; i < blocks; i++) setRun(order, first + 3 * i, 1);
  }

  const nodes = writeTree(file, leaves);
  // The walkers see runs in key order: larger orders first, then by address.
  written.sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  startTally();
  for (const [order, first, blocks] of written) countRun(order, first, blocks);
  const expected = finishTally();
  const preservedPages = expected.orders.reduce((n, [order, blocks]) => n + blocks * 2 ** order, 0);
  return {
    path: file,
    rootPa: nodes.rootPa,
    preservedBytes: preservedPages * PAGE,
    preservedPages,
    nodePages: nodes.count,
    expected,
  };
}

/** Decodes the image with src/abi and tallies the runs as radix-walk.c does. */
export function decodeWithAbi(image: RadixImage): RadixTally {
  const memory = SparseFileMemory.open(image.path);
  try {
    startTally();
    walkRadixTreeRuns(memory, image.rootPa, countRun);
    return finishTally();
  } finally {
    memory.close();
  }
}

/**
 * Decodes the image as the handover reader does for `luoctl inspect`: the walk's runs
 * collected into a PreservedMemoryMap (every run kept, for lookups), then its overlap
 * check.
 */
export function decodeToMap(image: RadixImage): PreservedMemoryMap {
  const memory = SparseFileMemory.open(image.path);
  try {
    const collector = PreservedMemoryMap.collect();
    walkRadixTreeRuns(memory, image.rootPa, collector.visit);
    const map = collector.finish();
    const overlaps = map.overlaps();
    if (overlaps.length > 0)
      throw new Error(`the map has ${overlaps.length} overlaps; the builder wrote none`);
    return map;
  } finally {
    memory.close();
  }
}

/** The tally of everything a map holds, visited in a walk's order (larger orders first). */
export function tallyOfMap(map: PreservedMemoryMap): RadixTally {
  const byOrder = new Map<number, [number, number][]>();
  map.forEachRun((run) => {
    const first = Number(run.pa >> BigInt(12 + run.order));
    const list = byOrder.get(run.order) ?? [];
    list.push([first, run.blocks]);
    byOrder.set(run.order, list);
    return true;
  });
  startTally();
  for (const order of [...byOrder.keys()].sort((a, b) => b - a)) {
    for (const [first, blocks] of byOrder.get(order)!) countRun(order, first, blocks);
  }
  return finishTally();
}

/** Compiles radix-walk.c into `dir`; returns the binary's path. */
export function buildRadixWalker(dir: string): string {
  const binary = path.join(dir, 'radix-walk');
  const cc = process.env.CC || 'cc';
  const built = spawnSync(cc, ['-O2', '-o', binary, C_SOURCE], { encoding: 'utf8' });
  if (built.error || built.status !== 0) {
    throw new Error(`${cc} -O2 ${C_SOURCE} failed: ${built.error?.message ?? built.stderr.trim()}`);
  }
  return binary;
}

/** Wall-clock and CPU seconds of one decode. */
export interface DecodeTime {
  wall: number;
  cpu: number;
}

/** One run of the C walker: its own timing of open + walk, and its tally. */
export function decodeWithC(binary: string, image: RadixImage): { time: DecodeTime; tally: RadixTally } {
  const ran = spawnSync(binary, [image.path, `0x${image.rootPa.toString(16)}`], { encoding: 'utf8' });
  if (ran.status !== 0) throw new Error(`radix-walk failed: ${ran.stderr.trim() || ran.error?.message}`);
  const out = JSON.parse(ran.stdout) as {
    ns: number[];
    cpu_ns: number[];
    orders: [number, number, number][];
    checksum: number;
  };
  return {
    time: { wall: out.ns[0]! / 1e9, cpu: out.cpu_ns[0]! / 1e9 },
    tally: { orders: out.orders, checksum: out.checksum },
  };
}

/** One call of `decode`, timed as radix-walk.c times its own decode. */
export function timed<T>(decode: () => T): { time: DecodeTime; value: T } {
  const cpu0 = process.cpuUsage();
  const wall0 = process.hrtime.bigint();
  const value = decode();
  const wall = Number(process.hrtime.bigint() - wall0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  return { time: { wall, cpu: (cpu.user + cpu.system) / 1e6 }, value };
}

export const radixDecode: Benchmark = {
  name: 'radix-decode',
  description: 'decode a KHO radix tree of 1 TiB preserved (4 KiB pages + mixed orders): src/abi vs C',
  async run(ctx: BenchContext): Promise<BenchmarkResult> {
    const gib = envNumber('LUOKIT_BENCH_RADIX_GB', 1024);
    const runs = Math.round(envNumber('LUOKIT_BENCH_RUNS', 11));
    const base = process.env.LUOKIT_BENCH_DIR ?? (fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir());
    const work = fs.mkdtempSync(path.join(base, 'luokit-bench-radix-'));
    try {
      const binary = (await ctx.phase('cc -O2 bench/native/radix-walk.c', () => buildRadixWalker(work)))
        .value;
      const image = (
        await ctx.phase(`build a radix tree for ${gib} GiB preserved`, () =>
          buildRadixImage(path.join(work, 'memory.img'), gib),
        )
      ).value;
      const totalRuns = image.expected.orders.reduce((n, o) => n + o[2], 0);
      ctx.log(`${image.preservedPages} preserved pages, ${image.nodePages} tree pages, ${totalRuns} runs`);
      // Untimed warm-up of both (the JIT for src/abi, the page cache for both), checked.
      check('radix-walk.c', decodeWithC(binary, image).tally, image.expected);
      for (let i = 0; i < WARMUP_DECODES; i++)
        check('walkRadixTreeRuns', decodeWithAbi(image), image.expected);
      const c: DecodeTime[] = [];
      const abi: DecodeTime[] = [];
      for (let run = 1; run <= runs; run++) {
        const fromC = decodeWithC(binary, image);
        check('radix-walk.c', fromC.tally, image.expected);
        c.push(fromC.time);
        const fromAbi = timed(() => decodeWithAbi(image));
        check('walkRadixTreeRuns', fromAbi.value, image.expected);
        abi.push(fromAbi.time);
        ctx.log(
          `run ${run}: CPU C ${ms(fromC.time.cpu)}, src/abi ${ms(fromAbi.time.cpu)}; wall C ${ms(fromC.time.wall)}, src/abi ${ms(fromAbi.time.wall)}`,
        );
      }
      // Then inspect's path, after the walker's runs: a second visitor makes the walk's
      // call site polymorphic, which must not colour the walker's figures above (a
      // luoctl process only ever has this one). C runs again beside it.
      // Checked once, on the last timed run: listing every run of the map is slow.
      for (let i = 0; i < WARMUP_DECODES; i++) decodeToMap(image);
      const cBesideMap: DecodeTime[] = [];
      const map: DecodeTime[] = [];
      for (let run = 1; run <= runs; run++) {
        const fromC = decodeWithC(binary, image);
        check('radix-walk.c', fromC.tally, image.expected);
        cBesideMap.push(fromC.time);
        const toMap = timed(() => decodeToMap(image));
        map.push(toMap.time);
        if (run === runs) check('PreservedMemoryMap', tallyOfMap(toMap.value), image.expected);
        ctx.log(`run ${run}: CPU C ${ms(fromC.time.cpu)}, src/abi to a map ${ms(toMap.time.cpu)}`);
      }
      const bytes = image.preservedBytes;
      const measure = (name: string, role: Measurement['role'], times: DecodeTime[], of: keyof DecodeTime) =>
        measurement(
          name,
          role,
          times.map((t) => t[of]),
          bytes,
        );
      const baseline = measure('C radix-walk (cc -O2), CPU', 'baseline', c, 'cpu');
      const subject = measure('src/abi walkRadixTreeRuns, CPU', 'subject', abi, 'cpu');
      const wallC = measure('C radix-walk, wall clock', 'info', c, 'wall');
      const wallAbi = measure('src/abi, wall clock', 'info', abi, 'wall');
      const baselineBesideMap = measure(
        'C radix-walk (cc -O2), CPU, beside the map',
        'info',
        cBesideMap,
        'cpu',
      );
      const toMap = measure('src/abi to PreservedMemoryMap (luoctl inspect), CPU', 'info', map, 'cpu');
      const nsPerPage = (seconds: number) => (seconds * 1e9) / image.preservedPages;
      return {
        name: this.name,
        description: this.description,
        params: {
          preservedGiB: gib,
          preservedPages: image.preservedPages,
          treePages: image.nodePages,
          runs,
          warmupDecodes: WARMUP_DECODES,
          orders: image.expected.orders.map(([order, blocks, count]) => ({ order, blocks, runs: count })),
          nsPerPage: {
            cCpu: nsPerPage(baseline.seconds),
            abiCpu: nsPerPage(subject.seconds),
            cWall: nsPerPage(wallC.seconds),
            abiWall: nsPerPage(wallAbi.seconds),
            mapCpu: nsPerPage(toMap.seconds),
          },
        },
        measurements: [baseline, subject, wallC, wallAbi, baselineBesideMap, toMap],
        ratios: [ratio(subject, baseline), ratio(wallAbi, wallC), ratio(toMap, baselineBesideMap)],
        notes: [
          `ns per preserved page (CPU): C ${nsPerPage(baseline.seconds).toFixed(4)}, src/abi ${nsPerPage(subject.seconds).toFixed(4)}; GB/s columns count preserved bytes decoded`,
          'CPU time (the C process; the Node process, JIT and GC threads included) is the measure, as these machines are shared; wall clock is shown for reference',
          "both read the same image with pread (tables one page at a time, consecutive leaves together), apply the same checks, find runs from each bitmap word's transitions and do the same integer accumulation per run; the target is at least 0.5x C",
          `"to PreservedMemoryMap" is what luoctl inspect does with the same walk: it also keeps every run (${totalRuns} here) in memory for lookups and checks them for overlaps, which the C walker does not do`,
        ],
      };
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  },
};

function ms(seconds: number): string {
  return `${(seconds * 1e3).toFixed(1)} ms`;
}

/**
 * Blocks and runs per order, and the checksum radix-walk.c computes the same way: its
 * uint32_t arithmetic is done here in int32 (Math.imul, `first | 0` for (uint32_t)first,
 * kept in an Int32Array so it is never boxed), which gives the same bits mod 2^32.
 * Each addition wraps on its own (`| 0`), as each uint32_t addition in C does: a sum of
 * several int32s left unwrapped can leave the int32 range, and V8 then adds in doubles
 * and converts back, a chain of float latencies on every run (a third of the JS time)
 * that C does not pay.
 *
 * The counters are module-level, as radix-walk.c's are static: one tally at a time,
 * started by startTally(). A fresh object and closure per decode would make the walk's
 * visitor call site see a new target every time and load the counters through them.
 */
const tallyBlocks = new Float64Array(53);
const tallyRuns = new Float64Array(53);
const tallyChecksum = new Int32Array(1);

function startTally(): void {
  tallyBlocks.fill(0);
  tallyRuns.fill(0);
  tallyChecksum[0] = 0;
}

function countRun(order: number, first: number, blocks: number): void {
  tallyBlocks[order]! += blocks;
  tallyRuns[order]!++;
  const sum = (Math.imul(tallyChecksum[0]!, 31) + (first | 0)) | 0;
  tallyChecksum[0] = (((sum + Math.imul(blocks, 7)) | 0) + order) | 0;
}

function finishTally(): RadixTally {
  const orders: RadixTally['orders'] = [];
  tallyRuns.forEach((runs, order) => {
    if (runs > 0) orders.push([order, tallyBlocks[order]!, runs]);
  });
  return { orders, checksum: tallyChecksum[0]! >>> 0 };
}

function check(who: string, got: RadixTally, expected: RadixTally): void {
  if (JSON.stringify(got) !== JSON.stringify(expected)) {
    throw new Error(`${who} decoded ${JSON.stringify(got)}, the builder wrote ${JSON.stringify(expected)}`);
  }
}

function setBits(leaf: Uint8Array, bit: number, count: number): void {
  let at = bit;
  const end = bit + count;
  while (at < end && at % 8 !== 0) {
    leaf[at >> 3]! |= 1 << (at & 7);
    at++;
  }
  const wholeBytes = Math.floor((end - at) / 8);
  if (wholeBytes > 0) {
    leaf.fill(0xff, at >> 3, (at >> 3) + wholeBytes);
    at += wholeBytes * 8;
  }
  while (at < end) {
    leaf[at >> 3]! |= 1 << (at & 7);
    at++;
  }
}

/** Writes the leaves and the five table levels above them; returns the root's address. */
function writeTree(file: string, leaves: Map<number, Uint8Array>): { rootPa: bigint; count: number } {
  const fd = fs.openSync(file, 'w');
  let nextPa = NODE_BASE;
  const write = (page: Uint8Array): number => {
    const pa = nextPa;
    nextPa += PAGE;
    fs.writeSync(fd, page, 0, PAGE, pa);
    return pa;
  };
  try {
    // Level by level: a node at level L is keyed by key >> (15 + 9 (L - 1)).
    let level = new Map<number, number>();
    for (const [leafKey, leaf] of [...leaves].sort(([a], [b]) => a - b)) level.set(leafKey, write(leaf));
    for (let table = 1; table <= 5; table++) {
      const parents = new Map<number, Uint8Array>();
      for (const [childKey, childPa] of level) {
        const parentKey = Math.floor(childKey / TABLE_ENTRIES);
        let page = parents.get(parentKey);
        if (!page) {
          page = new Uint8Array(PAGE);
          parents.set(parentKey, page);
        }
        new DataView(page.buffer).setBigUint64((childKey % TABLE_ENTRIES) * 8, BigInt(childPa), true);
      }
      level = new Map([...parents].sort(([a], [b]) => a - b).map(([key, page]) => [key, write(page)]));
    }
    if (level.size !== 1) throw new Error(`the tree has ${level.size} roots`);
    return { rootPa: BigInt([...level.values()][0]!), count: (nextPa - NODE_BASE) / PAGE };
  } finally {
    fs.closeSync(fd);
  }
}
