/**
 * `luoctl inspect`, the compiled CLI run as an operator runs it (`npm run build` first):
 * on the handover of a real emulated kexec (state directory, an ELF core and a raw dump
 * made from its memory), on corrupted copies of it, on a fake KHO debugfs tree, and on
 * this machine's (missing) KHO debugfs.
 */
import assert from 'node:assert/strict';
import { type SpawnSyncReturns, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { encodeFdt, fdtNode, fdtString } from '../src/abi/fdt.js';
import {
  encodeKexecMetadata,
  encodeKhoRoot,
  encodeMemblockFdt,
  KHO_KEXEC_METADATA_SIZE,
  khoU64,
} from '../src/abi/kho.js';
import { encodeLuoSer, LUO_SER_SIZE } from '../src/abi/luo.js';
import type { LiveUpdateDevice, Session } from '../src/kernel/device.js';
import { type Emulator, startEmulator } from '../src/kernel/emu/index.js';
import {
  addSeals,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  ftruncate,
  lseek,
  memfdCreate,
  type OwnedFd,
  pwriteAll,
} from '../src/sys/index.js';
import { elfCore } from './fixtures/abi/elf-core.js';

/** Parsed JSON output; the assertions check its shape (docs/inspect.md). */
// biome-ignore lint/suspicious/noExplicitAny: JSON from the CLI, checked field by field below
type Json = any;

const projectRoot = fileURLToPath(new URL('..', import.meta.url));
const LUOCTL = 'dist/cli/luoctl.js';
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-inspect-'));
const stateDir = path.join(work, 'state');

function luoctl(...args: string[]): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [LUOCTL, ...args], {
    cwd: projectRoot,
    encoding: 'utf8',
    env: { ...process.env, LUOKIT_DEBUG: '' },
  });
}

/** `luoctl --json inspect ARGS`, parsed. */
function inspectJson(...args: string[]): { status: number | null; report: Json } {
  const result = luoctl('--json', 'inspect', ...args);
  assertClean(result);
  assert.equal(result.stdout.trimEnd().split('\n').length, 1, 'one JSON line');
  return { status: result.status, report: JSON.parse(result.stdout) };
}

function assertClean(result: SpawnSyncReturns<string>): void {
  assert.doesNotMatch(`${result.stdout}${result.stderr}`, /^\s+at /m, 'no stack trace');
  assert.doesNotMatch(`${result.stdout}${result.stderr}`, /INTERNAL/, 'no uncoded error');
}

const TOKEN_A = 0x4c554f42454e4348n; // "LUOBENCH"
const SIZE_A = 3 * 1024 * 1024 + 5000; // a 2 MiB folio and 4 KiB ones
const SIZE_B = 10_000;

/** What was preserved, to compare with what inspect reports. */
const expected = [
  {
    name: 'vm-alpha',
    files: [
      {
        token: TOKEN_A.toString(),
        size: SIZE_A,
        pos: 777,
        seals: F_SEAL_SHRINK | F_SEAL_GROW,
        sealNames: ['SHRINK', 'GROW'],
      },
      {
        token: '7',
        size: SIZE_B,
        pos: 0,
        seals: F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE,
        sealNames: ['SEAL', 'SHRINK', 'GROW', 'WRITE'],
      },
    ],
  },
  { name: 'vm-beta', files: [{ token: '1', size: 0, pos: 0, seals: 0, sealNames: [] as string[] }] },
  {
    name: 'idle',
    files: [] as { token: string; size: number; pos: number; seals: number; sealNames: string[] }[],
  },
];

let emu: Emulator | undefined;
let report: Json;

before(async () => {
  assert.ok(
    fs.existsSync(path.join(projectRoot, LUOCTL)),
    `${LUOCTL} is missing: run \`npm run build\` first`,
  );
  fs.mkdirSync(stateDir);
  emu = await startEmulator({ stateDir });
  const keep: (OwnedFd | Session | LiveUpdateDevice)[] = [];
  const device = emu.openDevice();
  keep.push(device);
  const alpha = device.createSession('vm-alpha');
  const a = memfdCreate('guest-ram');
  ftruncate(a, SIZE_A);
  pwriteAll(a, Buffer.from('first page'), 0);
  pwriteAll(a, Buffer.from('last page'), SIZE_A - 9);
  lseek(a, 777);
  addSeals(a, F_SEAL_SHRINK | F_SEAL_GROW);
  alpha.preserveFd(a, TOKEN_A);
  const b = memfdCreate('sealed');
  ftruncate(b, SIZE_B);
  pwriteAll(b, Buffer.alloc(SIZE_B, 0x5a), 0);
  lseek(b, 0);
  addSeals(b, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
  alpha.preserveFd(b, 7n);
  const beta = device.createSession('vm-beta');
  const c = memfdCreate('empty');
  beta.preserveFd(c, 1n);
  const idle = device.createSession('idle');
  keep.push(alpha, a, b, beta, c, idle);
  const result = await emu.kexec();
  assert.equal(result.boot.outcome, 'restored', result.boot.detail);
  for (const held of keep) {
    try {
      held.close();
    } catch {
      // dead after the kexec
    }
  }
  const inspected = inspectJson('--state', stateDir);
  assert.equal(inspected.status, 0);
  report = inspected.report;
});

after(async () => {
  await emu?.stop().catch(() => {});
  fs.rmSync(work, { recursive: true, force: true });
});

/** A copy of the state's handover (kho-in.dtb and memory.img) to damage. */
function copyState(name: string): string {
  const dir = path.join(work, name);
  fs.mkdirSync(dir);
  for (const file of ['kho-in.dtb', 'memory.img'])
    fs.copyFileSync(path.join(stateDir, file), path.join(dir, file));
  return dir;
}

function poke(file: string, offset: bigint | number, bytes: ArrayLike<number>): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, Uint8Array.from(bytes), 0, bytes.length, Number(offset));
  } finally {
    fs.closeSync(fd);
  }
}

function fileOf(token: string): Json {
  const file = report.sessions.flatMap((s: Json) => s.files).find((f: Json) => f.token === token);
  assert.ok(file?.memfd, `file ${token} is a memfd`);
  return file;
}

describe('luoctl inspect --state on a real emulated kexec', () => {
  it('reports exactly the sessions, tokens, sizes, positions and seals preserved', () => {
    assert.equal(report.schema, 'luokit-inspect/1');
    assert.equal(report.verdict, 'ok');
    assert.equal(report.ok, true);
    assert.deepEqual(report.problems, []);
    assert.equal(report.source.kind, 'emulator');
    assert.equal(report.source.handover, 'incoming');
    assert.equal(report.source.fdt, path.join(stateDir, 'kho-in.dtb'));
    const seen = report.sessions.map((s: Json) => ({
      name: s.name,
      files: s.files.map((f: Json) => ({
        token: f.token,
        size: f.memfd.size,
        pos: f.memfd.pos,
        seals: f.memfd.seals,
        sealNames: f.memfd.sealNames,
      })),
    }));
    assert.deepEqual(seen, expected);
    for (const file of report.sessions.flatMap((s: Json) => s.files)) {
      assert.equal(file.compatible, 'memfd-v2');
      assert.match(file.data, /^0x[0-9a-f]+$/);
      const pages = Math.ceil(file.memfd.size / 4096);
      assert.equal(file.memfd.folios.pages, pages, 'folios cover the file');
      assert.equal(file.memfd.folios.missingPages, 0);
      assert.equal(file.memfd.nrFolios, file.memfd.folios.count);
      if (pages > 0)
        assert.deepEqual(file.memfd.folios.byFlags, [
          { flags: 3, names: ['DIRTY', 'UPTODATE'], count: file.memfd.folios.count },
        ]);
    }
    assert.deepEqual(fileOf(TOKEN_A.toString()).memfd.folios.byOrder, [
      { order: 0, count: 258 },
      { order: 9, count: 1 },
    ]);
  });

  it('reports the KHO root, preserved memory, kexec-metadata and LUO header', () => {
    assert.deepEqual(report.kho.compatible, ['kho-v4']);
    assert.deepEqual(
      report.kho.subtrees.map((s: Json) => [s.name, s.size]),
      [
        ['LUO', LUO_SER_SIZE],
        ['kexec-metadata', KHO_KEXEC_METADATA_SIZE],
      ],
    );
    assert.equal(report.kexecMetadata.kexecCount, 1);
    assert.match(report.kexecMetadata.previousRelease, /^7\.2/);
    assert.equal(report.luo.compatible, 'luo-v5');
    assert.equal(report.luo.liveupdateNum, 1);
    assert.equal(report.luo.pa, report.kho.subtrees.find((s: Json) => s.name === 'LUO').pa);
    const p = report.preserved;
    const folioBytes = report.sessions
      .flatMap((s: Json) => s.files)
      .reduce((n: number, f: Json) => n + f.memfd.folios.bytes, 0);
    assert.ok(p.bytes > folioBytes, 'folios plus metadata pages');
    assert.equal(p.pages * 4096, p.bytes);
    assert.equal(
      p.blocks,
      p.byOrder.reduce((n: number, o: Json) => n + o.blocks, 0),
    );
    assert.deepEqual(
      p.byOrder.map((o: Json) => o.order),
      [0, 9],
    );
    assert.equal(p.ranges.length + p.rangesOmitted, p.runs);
    assert.ok(p.radixPages >= 6);
  });

  it('prints a readable tree', () => {
    const result = luoctl('inspect', '--state', stateDir);
    assertClean(result);
    assert.equal(result.status, 0, result.stderr);
    const text = result.stdout;
    assert.match(text, /^verdict: ok: the successor kernel restores everything$/m);
    assert.match(text, /^KHO root FDT: kho-v4, \d+ bytes, preserved-memory-map at 0x[0-9a-f]+$/m);
    assert.match(text, /^kexec-metadata: previous release 7\.2\S*, kexec count 1$/m);
    assert.match(text, /^LUO: luo-v5 at 0x[0-9a-f]+, live update 1$/m);
    assert.match(text, /^ {4}session "vm-alpha": 2 files, file blocks 0x[0-9a-f]+$/m);
    assert.match(
      text,
      /^ {6}file token 5500389665952121672 \(0x4c554f42454e4348\): memfd-v2, data 0x[0-9a-f]+$/m,
    );
    assert.match(text, /^ {10}size 3150728 \(3\.0 MiB\), pos 777, seals SHRINK\|GROW \(0x6\)$/m);
    assert.match(text, /^ {10}size 10000 \(9\.8 KiB\), pos 0, seals SEAL\|SHRINK\|GROW\|WRITE \(0xf\)$/m);
    assert.match(
      text,
      /^ {10}folios: 259 \(770 pages: order 0 x258, order 9 x1\), flags DIRTY\|UPTODATE x259$/m,
    );
    assert.match(text, /^ {4}session "idle": 0 files$/m);
    assert.match(text, /^ {2}order 9 \(2 MiB\): \d+ blocks?, /m);
    assert.match(text, /^problems: none$/m);
  });

  it('--check passes on it (exit 0)', () => {
    const result = luoctl('inspect', '--state', stateDir, '--check');
    assertClean(result);
    assert.equal(result.status, 0, result.stdout);
    assert.match(
      result.stdout,
      /^checked: KHO root FDT, \d+ preserved blocks, kexec-metadata, LUO, 3 sessions, 3 files, 0 FLB\(s\)$/m,
    );
    assert.match(result.stdout, /^problems: none$/m);
  });

  it('--ranges limits the runs listed and counts the rest', () => {
    const { report: limited } = inspectJson('--state', stateDir, '--ranges', '1');
    assert.equal(limited.preserved.ranges.length, 1);
    assert.equal(limited.preserved.rangesOmitted, limited.preserved.runs - 1);
    assert.equal(inspectJson('--state', stateDir, '--ranges', 'all').report.preserved.rangesOmitted, 0);
  });
});

describe('luoctl inspect --check on corrupted copies', () => {
  it('a memfd record with an unknown seal: retrieve fails for that file, with its address', () => {
    const dir = copyState('bad-seals');
    const file = fileOf('7');
    poke(path.join(dir, 'memory.img'), BigInt(file.data) + 16n, [file.memfd.seals | 0x40]);
    const { status, report: bad } = inspectJson('--state', dir, '--check');
    assert.equal(status, 1);
    assert.equal(bad.verdict, 'retrieve-fails');
    assert.equal(bad.ok, false);
    assert.equal(bad.problems.length, 1);
    assert.deepEqual(
      {
        reaction: bad.problems[0].reaction,
        structure: bad.problems[0].structure,
        pa: bad.problems[0].pa,
        session: bad.problems[0].session,
        token: bad.problems[0].token,
      },
      {
        reaction: 'retrieve-fails',
        structure: 'memfd_luo_ser',
        pa: file.data,
        session: 'vm-alpha',
        token: '7',
      },
    );
    assert.match(bad.problems[0].reason, /seals 0x4f .*EOPNOTSUPP/);
    const text = luoctl('inspect', '--state', dir, '--check');
    assert.equal(text.status, 1);
    assert.match(
      text.stdout,
      new RegExp(
        `^ {2}\\[RETRIEVE-FAILS\\] memfd_luo_ser at pa ${file.data}: seals 0x4f include some memfd-v2 cannot restore \\(EOPNOTSUPP\\)$`,
        'm',
      ),
    );
    assert.match(
      text.stdout,
      /^ {6}kernel: retrieve fails: RETRIEVE_FD of this file .*; session "vm-alpha", file token 7$/m,
    );
    // The other files are still shown in full.
    assert.equal(bad.sessions[1].files[0].memfd.folios.count, 0);
  });

  it('a wrong LUO compatible: the successor panics', () => {
    const dir = copyState('bad-luo');
    poke(path.join(dir, 'memory.img'), BigInt(report.luo.pa), Buffer.from('luo-v9\0\0'));
    const result = luoctl('inspect', '--state', dir, '--check');
    assertClean(result);
    assert.equal(result.status, 1);
    assert.match(
      result.stdout,
      new RegExp(
        `^ {2}\\[PANIC\\] luo_ser at pa ${report.luo.pa}: compatible 'luo-v9' is not 'luo-v5'$`,
        'm',
      ),
    );
    assert.match(result.stdout, /kernel: panic: LUO early init fails/);
  });

  it('a file entry with an unknown handler: every open fails with EIO, and the entry is located', () => {
    const dir = copyState('bad-handler');
    const entry = fileOf('1').entryPa;
    poke(path.join(dir, 'memory.img'), BigInt(entry), Buffer.from('memfd-v9'));
    const { status, report: bad } = inspectJson('--state', dir, '--check');
    assert.equal(status, 1);
    assert.equal(bad.verdict, 'device-eio');
    const problem = bad.problems.find((p: Json) => p.reaction === 'device-eio');
    assert.equal(problem.pa, entry);
    assert.equal(problem.structure, 'luo_file_ser');
    assert.match(problem.reason, /no handler for compatible 'memfd-v9'/);
    assert.equal(problem.session, 'vm-beta');
  });

  it('a wrong KHO compatible: a cold boot, and exit 1 even without --check', () => {
    const dir = copyState('bad-kho');
    const dtb = fs.readFileSync(path.join(dir, 'kho-in.dtb'));
    poke(path.join(dir, 'kho-in.dtb'), dtb.indexOf('kho-v4'), Buffer.from('kho-v9'));
    const result = luoctl('inspect', '--state', dir);
    assertClean(result);
    assert.equal(result.status, 1);
    assert.match(result.stdout, /^verdict: the successor kernel boots cold: every preserved byte is lost$/m);
    assert.match(
      result.stdout,
      /\[COLD-BOOT\] kho-fdt at offset 0: root compatible is 'kho-v9', not 'kho-v4'/,
    );
  });

  it('a truncated memory image: the radix tree is unreadable, said plainly', () => {
    const dir = copyState('truncated');
    fs.truncateSync(path.join(dir, 'memory.img'), Number(BigInt(report.kho.memoryMap)));
    const { status, report: bad } = inspectJson('--state', dir, '--check');
    assert.equal(status, 1);
    assert.equal(bad.verdict, 'cold-boot');
    assert.equal(bad.preserved, null);
    assert.equal(bad.problems[0].structure, 'kho-radix-node');
    assert.equal(bad.problems[0].pa, report.kho.memoryMap);
    assert.match(bad.problems[0].reason, /run past the end of memory/);
  });
});

describe('luoctl inspect --fdt FILE --memory DUMP', () => {
  /** memory.img from 16 MiB (where the emulator allocates) to its end. */
  const imageTail = (): { base: bigint; bytes: Uint8Array } => {
    const image = fs.readFileSync(path.join(stateDir, 'memory.img'));
    const base = 16n << 20n;
    return { base, bytes: new Uint8Array(image.subarray(Number(base))) };
  };
  const sessionsOf = (r: Json) => JSON.stringify(r.sessions);

  it('an ELF core (as QEMU dump-guest-memory writes) gives the same report', () => {
    const { base, bytes } = imageTail();
    const split = 64 * 4096;
    const core = path.join(work, 'guest.core');
    fs.writeFileSync(
      core,
      elfCore([
        { type: 4, paddr: 0n, data: new Uint8Array(64) },
        { type: 1, paddr: base, data: bytes.subarray(0, split) },
        { type: 1, paddr: base + BigInt(split), data: bytes.subarray(split) },
      ]),
    );
    const fdt = path.join(stateDir, 'kho-in.dtb');
    const { status, report: fromCore } = inspectJson('--fdt', fdt, '--memory', core, '--check');
    assert.equal(status, 0);
    assert.equal(fromCore.source.kind, 'dump');
    assert.equal(fromCore.source.memoryFormat, 'elf-core');
    assert.equal(fromCore.source.memoryRanges.length, 2, 'the two PT_LOAD segments, not the note');
    assert.equal(sessionsOf(fromCore), sessionsOf(report));
    assert.deepEqual(fromCore.preserved, report.preserved);

    // Without --fdt, the root FDT page is found in the dump.
    const { status: scanned, report: found } = inspectJson('--memory', core);
    assert.equal(scanned, 0);
    assert.match(found.source.fdtPa, /^0x[0-9a-f]+$/);
    assert.equal(found.source.fdt, null);
    assert.equal(sessionsOf(found), sessionsOf(report));
    const { report: atPa } = inspectJson('--memory', core, '--fdt-pa', found.source.fdtPa);
    assert.equal(sessionsOf(atPa), sessionsOf(report));

    const withBase = luoctl('inspect', '--fdt', fdt, '--memory', core, '--memory-base', '0x1000000');
    assertClean(withBase);
    assert.equal(withBase.status, 1);
    assert.match(withBase.stderr, /is an ELF core.*--memory-base is for raw dumps/);
  });

  it('a dump whose luo_ser page was reused (as after the next kernel booted) says why, in a note', () => {
    const { base, bytes } = imageTail();
    const reused = new Uint8Array(bytes);
    // What the capture bench found there: the page reused for an ELF file's first page.
    const at = Number(BigInt(report.luo.pa) - base);
    reused.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 3, ...new Array(24).fill(0)], at);
    const core = path.join(work, 'after-boot.core');
    fs.writeFileSync(core, elfCore([{ type: 1, paddr: base, data: reused }]));
    const fdt = path.join(stateDir, 'kho-in.dtb');
    const { status, report: after } = inspectJson('--fdt', fdt, '--memory', core, '--check');
    assert.equal(status, 1);
    assert.equal(after.verdict, 'panic');
    assert.equal(after.notes.length, 1);
    assert.match(after.notes[0], /luo_ser and the radix tree are gone by design/);
    const human = luoctl('inspect', '--fdt', fdt, '--memory', core, '--check');
    assertClean(human);
    assert.match(human.stdout, /^note: if this dump was taken after the next kernel booted/m);
    // An intact dump, or an emulator state, has no note.
    const { report: intact } = inspectJson('--fdt', fdt, '--memory', path.join(work, 'guest.core'));
    assert.deepEqual(intact.notes, []);
    assert.deepEqual(report.notes, []);
  });

  it('a raw dump with --memory-base gives the same report; the wrong base says what is missing', () => {
    const { base, bytes } = imageTail();
    const raw = path.join(work, 'guest.raw');
    fs.writeFileSync(raw, bytes);
    const fdt = path.join(stateDir, 'kho-in.dtb');
    const { status, report: fromRaw } = inspectJson(
      '--fdt',
      fdt,
      '--memory',
      raw,
      '--memory-base',
      `0x${base.toString(16)}`,
    );
    assert.equal(status, 0);
    assert.equal(fromRaw.source.memoryFormat, 'raw');
    assert.deepEqual(fromRaw.source.memoryRanges, [
      { start: `0x${base.toString(16)}`, end: `0x${(base + BigInt(bytes.byteLength)).toString(16)}` },
    ]);
    assert.equal(sessionsOf(fromRaw), sessionsOf(report));

    const wrong = luoctl('inspect', '--fdt', fdt, '--memory', raw);
    assertClean(wrong);
    assert.equal(wrong.status, 1);
    assert.match(wrong.stdout, /\[COLD-BOOT\] kho-radix-node at pa 0x[0-9a-f]+: 4096 bytes not readable/);
  });

  it('bad paths, truncated files and garbage get one clear sentence', () => {
    const garbage = path.join(work, 'garbage.bin');
    fs.writeFileSync(garbage, Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 151 + 7) & 0xff)));
    const truncatedCore = path.join(work, 'truncated.core');
    fs.writeFileSync(truncatedCore, Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]));
    const empty = path.join(work, 'empty.bin');
    fs.writeFileSync(empty, '');
    const image = path.join(stateDir, 'memory.img');
    const cases: [string[], number, RegExp][] = [
      [
        ['--state', path.join(work, 'nope')],
        1,
        /ENOENT: cannot open the emulator state directory .*nope: no such file or directory/,
      ],
      [['--state', garbage], 1, /ENOTDIR: .* is not a directory/],
      [['--state', work], 1, /ENOENT: no handover in .*: neither kho\.dtb nor kho-in\.dtb exists/],
      [
        ['--fdt', path.join(work, 'nope.dtb'), '--memory', image],
        1,
        /ENOENT: cannot open the root FDT .*nope\.dtb/,
      ],
      [
        ['--fdt', image, '--memory', image],
        1,
        /EINVAL: the root FDT .* is \d+ bytes; a KHO root FDT is one page/,
      ],
      [
        ['--fdt', path.join(stateDir, 'kho-in.dtb'), '--memory', truncatedCore],
        1,
        /EBADMSG: the memory dump .*ELF header \(64 bytes\) runs past the end of the file/,
      ],
      [['--memory', empty], 1, /EINVAL: the memory dump .* is empty/],
      [['--memory', garbage], 1, /ENOENT: no KHO root FDT found in .*garbage\.bin/],
      [
        ['--fdt', path.join(stateDir, 'kho-in.dtb')],
        2,
        /EINVAL: --fdt, --fdt-pa and --memory-base need --memory DUMP/,
      ],
      [['--state', stateDir, '--memory', image], 2, /EINVAL: --state reads the emulator state directory/],
      [['--memory', image, '--fdt-pa', 'zz'], 2, /EINVAL: --fdt-pa zz: not an address/],
      [['--state', stateDir, '--ranges', 'some'], 2, /EINVAL: --ranges some: not a count or "all"/],
    ];
    for (const [args, status, message] of cases) {
      const result = luoctl('inspect', ...args);
      assertClean(result);
      assert.equal(result.status, status, args.join(' '));
      assert.match(result.stderr, message, args.join(' '));
      assert.equal(result.stdout, '');
    }
    // A garbage FDT is reported, not crashed on: the next kernel would boot cold.
    const result = luoctl('inspect', '--fdt', garbage, '--memory', image);
    assertClean(result);
    assert.equal(result.status, 1);
    assert.match(result.stdout, /\[COLD-BOOT\] fdt at offset 0: bad magic 0x/);
  });
});

describe('luoctl inspect on a live host (KHO debugfs)', () => {
  /** A debugfs tree as Linux 7.2 lays out kho/ after a KHO boot (no kho/out/fdt then). */
  function fakeDebugfs(name: string, outLuoCompatible = 'luo-v5'): string {
    const root = path.join(work, name);
    const kho = path.join(root, 'kho');
    for (const dir of ['out/sub_fdts', 'in/sub_fdts']) fs.mkdirSync(path.join(kho, dir), { recursive: true });
    fs.writeFileSync(path.join(kho, 'out/scratch_phys'), '0x100000000\n0x200000000\n');
    fs.writeFileSync(path.join(kho, 'out/scratch_len'), '0x8000000\n0x10000000\n');
    fs.writeFileSync(
      path.join(kho, 'out/sub_fdts/LUO'),
      encodeLuoSer({ compatible: outLuoCompatible, liveupdateNum: 3n, sessionsPa: 0n, flbsPa: 0x7000n }),
    );
    fs.writeFileSync(
      path.join(kho, 'out/sub_fdts/kexec-metadata'),
      encodeKexecMetadata({ version: 1, previousRelease: '7.2.13-amd64', kexecCount: 3 }),
    );
    fs.writeFileSync(
      path.join(kho, 'out/sub_fdts/memblock'),
      encodeMemblockFdt([{ name: 'trace', start: 0x4000_0000n, size: 0x10_0000n }]),
    );
    fs.writeFileSync(
      path.join(kho, 'in/fdt'),
      encodeKhoRoot({
        memoryMapPa: 0x1234_5000n,
        subtrees: [
          { name: 'kexec-metadata', pa: 0x2000n, size: BigInt(KHO_KEXEC_METADATA_SIZE) },
          { name: 'LUO', pa: 0x3000n, size: BigInt(LUO_SER_SIZE) },
        ],
      }),
    );
    fs.writeFileSync(
      path.join(kho, 'in/sub_fdts/LUO'),
      encodeLuoSer({ compatible: 'luo-v5', liveupdateNum: 2n, sessionsPa: 0x9000n, flbsPa: 0x8000n }),
    );
    fs.writeFileSync(
      path.join(kho, 'in/sub_fdts/kexec-metadata'),
      encodeKexecMetadata({ version: 1, previousRelease: '7.2.12-amd64', kexecCount: 2 }),
    );
    return root;
  }

  it('reads a fake debugfs tree: root FDT, sub-FDTs, LUO header, kexec-metadata, memblock', () => {
    const debugfs = fakeDebugfs('debugfs-good');
    const { status, report: live } = inspectJson('--debugfs', debugfs);
    assert.equal(status, 0);
    assert.equal(live.source.kind, 'debugfs');
    assert.equal(live.ok, true);
    assert.deepEqual(live.out.scratch, [
      { start: '0x100000000', size: '0x8000000' },
      { start: '0x200000000', size: '0x10000000' },
    ]);
    assert.equal(live.out.fdt, null);
    const out = Object.fromEntries(live.out.subtrees.map((b: Json) => [b.name, b]));
    assert.deepEqual(out.LUO.luo, {
      compatible: 'luo-v5',
      liveupdateNum: 3,
      sessionsPa: '0x0',
      flbsPa: '0x7000',
    });
    assert.deepEqual(out['kexec-metadata'].kexecMetadata, {
      version: 1,
      previousRelease: '7.2.13-amd64',
      kexecCount: 3,
    });
    assert.deepEqual(out.memblock.memblock.regions, [
      { name: 'trace', start: '0x40000000', size: 0x10_0000 },
    ]);
    assert.deepEqual(live.in.fdt.compatible, ['kho-v4']);
    assert.equal(live.in.fdt.memoryMap, '0x12345000');
    assert.deepEqual(
      live.in.fdt.subtrees.map((s: Json) => [s.name, s.pa, s.size]),
      [
        ['LUO', '0x3000', LUO_SER_SIZE],
        ['kexec-metadata', '0x2000', KHO_KEXEC_METADATA_SIZE],
      ],
    );
    const incoming = Object.fromEntries(live.in.subtrees.map((b: Json) => [b.name, b]));
    assert.equal(incoming.LUO.pa, '0x3000');
    assert.equal(incoming.LUO.luo.liveupdateNum, 2);
    assert.equal(incoming['kexec-metadata'].kexecMetadata.previousRelease, '7.2.12-amd64');
    assert.ok(live.notFollowed.some((t: string) => /preserved-memory-map at 0x12345000/.test(t)));
    assert.ok(live.notFollowed.some((t: string) => /sessions at 0x9000/.test(t)));
    assert.ok(live.notes.some((t: string) => /kho\/out\/fdt is absent/.test(t)));

    const text = luoctl('inspect', '--debugfs', debugfs);
    assertClean(text);
    assert.equal(text.status, 0);
    assert.match(text.stdout, /^ {2}scratch areas: 0x100000000 \+0x8000000, 0x200000000 \+0x10000000$/m);
    assert.match(
      text.stdout,
      /^ {4}LUO \(32 bytes\): luo-v5, live update 3, sessions at 0x0, FLBs at 0x7000$/m,
    );
    assert.match(
      text.stdout,
      /^ {4}kexec-metadata \(73 bytes at 0x2000\): release 7\.2\.12-amd64, kexec count 2$/m,
    );
    assert.match(text.stdout, /^not followed \(in physical memory, which debugfs does not expose\):$/m);
    assert.match(text.stdout, /luoctl inspect --fdt FDT --memory DUMP/);
  });

  it('--check fails on an outgoing LUO blob the next kernel would panic on', () => {
    const debugfs = fakeDebugfs('debugfs-bad', 'luo-v4');
    const result = luoctl('inspect', '--debugfs', debugfs, '--check');
    assertClean(result);
    assert.equal(result.status, 1);
    assert.match(
      result.stdout,
      /\[PANIC\] luo_ser: kho\/out\/sub_fdts\/LUO: compatible 'luo-v4' is not 'luo-v5'/,
    );
    assert.equal(luoctl('inspect', '--debugfs', fakeDebugfs('debugfs-ok'), '--check').status, 0);
  });

  it('an invalid incoming root FDT is shown as such', () => {
    const debugfs = fakeDebugfs('debugfs-bad-in');
    fs.writeFileSync(
      path.join(debugfs, 'kho/in/fdt'),
      encodeFdt(fdtNode('', { compatible: fdtString('kho-v1'), x: khoU64(1n) })),
    );
    const { status, report: live } = inspectJson('--debugfs', debugfs);
    assert.equal(status, 0);
    assert.match(live.in.fdt.error, /root compatible is 'kho-v1', not 'kho-v4'/);
  });

  const hasKhoDebugfs = fs.existsSync('/sys/kernel/debug/kho');
  it('on this machine: says there is no KHO debugfs and exits 1', {
    skip: hasKhoDebugfs && 'this host has KHO debugfs',
  }, () => {
    const result = luoctl('inspect');
    assertClean(result);
    assert.equal(result.status, 1);
    assert.equal(result.stdout, '');
    assert.match(
      result.stderr,
      /^luoctl: inspect: ENOENT: no KHO debugfs: \/sys\/kernel\/debug\/kho does not exist; /,
    );
    const json = luoctl('--json', 'inspect');
    assert.equal(json.status, 1);
    const error = JSON.parse(json.stdout);
    assert.equal(error.ok, false);
    assert.equal(error.error.code, 'ENOENT');
    assert.match(error.error.message, /no KHO debugfs/);
  });
});
