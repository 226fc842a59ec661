/**
 * `luoctl kernel-info` on real images (#16 part 1): Debian's stock kernels, fetched at test
 * time (scripts/fetch-debian-kernel.sh; built without KHO, which the tool must say), an x86
 * bzImage rebuilt with every compression the kernel offers around Debian's real vmlinux (made
 * with the real compressors, checked byte for byte against that vmlinux), arm64 Image,
 * Image.gz and EFI zboot around Debian's arm64 Image, and files that are not kernels. The
 * bench's own LUO kernels are read in the test:vm part `kernel-info` (test/vm/kernel-info.ts).
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';
import { type KernelInfo, readKernelInfo } from '../src/image/kernel-info.js';
import { unwrap } from '../src/image/layout.js';
import { LVUP_MAGIC } from '../src/image/scan.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const run = promisify(execFile);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-kimage-'));
let amd64: string;
let arm64: string;
/** Debian's amd64 vmlinux, decompressed by the zstd tool (not by luokit). */
let vmlinux: Buffer;

function fetchDebian(arch: string): string {
  const r = spawnSync('sh', [path.join(ROOT, 'scripts/fetch-debian-kernel.sh'), arch], { encoding: 'utf8' });
  assert.equal(r.status, 0, `scripts/fetch-debian-kernel.sh ${arch} (needs Debian's archive): ${r.stderr}`);
  return r.stdout.trim().split('\n').at(-1)!;
}

/** The payload of a bzImage and where it sits (setup header, boot protocol 2.08+). */
function payloadOf(image: Buffer): { start: number; length: number } {
  const start = ((image[0x1f1] || 4) + 1) * 512 + image.readUInt32LE(0x248);
  return { start, length: image.readUInt32LE(0x24c) };
}

before(async () => {
  amd64 = fetchDebian('amd64');
  arm64 = fetchDebian('arm64');
  const image = fs.readFileSync(amd64);
  const { start, length } = payloadOf(image);
  // The build appends the size to a zstd payload; the zstd tool wants the frame alone.
  fs.writeFileSync(path.join(dir, 'payload.zst'), image.subarray(start, start + length - 4));
  await run('zstd', [
    '-q',
    '-d',
    '-f',
    '--memory=2048MB',
    path.join(dir, 'payload.zst'),
    '-o',
    path.join(dir, 'vmlinux'),
  ]);
  vmlinux = fs.readFileSync(path.join(dir, 'vmlinux'));
});

after(() => fs.rmSync(dir, { recursive: true, force: true }));

function luoctl(...args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/cli/luoctl.ts'), ...args], {
    encoding: 'utf8',
    cwd: ROOT,
  });
  assert.equal(r.stderr.includes('    at '), false, `no stack trace:\n${r.stderr}`);
  return r;
}

function assertStock(info: KernelInfo, arch: string): void {
  assert.match(info.release, new RegExp(`^\\d+\\.\\d+\\.\\d+\\S*-${arch}$`));
  assert.equal(info.liveupdate, false);
  assert.equal(info.kho, false);
  assert.deepEqual(info.formats, { files: [] });
}

test("Debian's stock amd64 kernel: a zstd bzImage, read, and said to have no KHO", async () => {
  const info = await readKernelInfo(amd64);
  assertStock(info, 'amd64');
  assert.deepEqual(info.container, ['bzImage', 'elf']);
  assert.deepEqual(info.compression, ['zstd']);
  assert.equal(info.arch, 'x86');
  const text = luoctl('kernel-info', amd64);
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /live update: no \(built without KHO/);
  const json = luoctl('--json', 'kernel-info', amd64);
  assert.equal(json.status, 0);
  const parsed = JSON.parse(json.stdout);
  assert.equal(parsed.liveupdate, false);
  assert.equal(parsed.release, info.release);
});

test("Debian's stock arm64 kernel: Image, Image.gz and EFI zboot (gzip and zstd) read alike", async () => {
  const image = await readKernelInfo(arm64);
  assertStock(image, 'arm64');
  assert.deepEqual(image.container, ['arm64-image']);
  const raw = fs.readFileSync(arm64);
  const gz = path.join(dir, 'Image.gz');
  fs.writeFileSync(gz, zlib.gzipSync(raw, { level: 1 }));
  const fromGz = await readKernelInfo(gz);
  assert.equal(fromGz.release, image.release);
  assert.deepEqual(fromGz.container, ['compressed', 'arm64-image']);
  for (const [kind, payload] of [
    ['gzip', zlib.gzipSync(raw, { level: 1 })],
    [
      'zstd',
      (await run('zstd', ['-q', '-1', '-c', arm64], { encoding: 'buffer', maxBuffer: 1 << 30 })).stdout,
    ],
  ] as const) {
    // EFI zboot's header (drivers/firmware/efi/libstub/zboot-header.S): "MZ", "zimg", the
    // payload's offset and size, the compression's name at 24.
    const header = Buffer.alloc(512);
    header.write('MZ', 0, 'latin1');
    header.write('zimg', 4, 'latin1');
    header.writeUInt32LE(512, 8);
    header.writeUInt32LE(payload.length, 12);
    header.write(kind, 24, 'latin1');
    const file = path.join(dir, `vmlinuz.efi.${kind}`);
    fs.writeFileSync(file, Buffer.concat([header, payload]));
    const zboot = await readKernelInfo(file);
    assert.equal(zboot.release, image.release, kind);
    assert.deepEqual(zboot.container, ['zboot', 'arm64-image'], kind);
    assert.deepEqual(zboot.compression, [kind]);
  }
});

/** Each compression as the kernel's build makes it (scripts/Makefile.lib): tool, and whether the size is appended. */
const COMPRESSORS: Record<string, { tool: string[]; sized: boolean }> = {
  gzip: { tool: ['gzip', '-1', '-c'], sized: false },
  bzip2: { tool: ['bzip2', '-1', '-c'], sized: true },
  lzma: { tool: ['lzma', '-1', '-c'], sized: true },
  xz: { tool: ['xz', '--check=crc32', '--x86', '--lzma2=preset=1,dict=8MiB', '-c'], sized: true },
  lzo: { tool: ['lzop', '-1', '-c'], sized: true },
  lz4: { tool: ['lz4', '-l', '-1', '-c'], sized: true },
  zstd: { tool: ['zstd', '-1', '-c'], sized: true },
};

for (const [kind, { tool, sized }] of Object.entries(COMPRESSORS)) {
  test(`a bzImage with a ${kind} payload (Debian's vmlinux, compressed by ${tool[0]}): the same kernel, byte for byte`, async () => {
    const input = path.join(dir, 'vmlinux');
    const { stdout } = await run(tool[0]!, [...tool.slice(1), input], {
      encoding: 'buffer',
      maxBuffer: 1 << 30,
    });
    const size = Buffer.alloc(4);
    size.writeUInt32LE(vmlinux.length);
    const payload = sized ? Buffer.concat([stdout, size]) : stdout;
    const original = fs.readFileSync(amd64);
    const { start } = payloadOf(original);
    const image = Buffer.concat([original.subarray(0, start), payload]);
    image.writeUInt32LE(payload.length, 0x24c);
    const file = path.join(dir, `bzImage.${kind}`);
    fs.writeFileSync(file, image);
    const unwrapped = await unwrap(image, file);
    assert.deepEqual(unwrapped.compression, [kind]);
    assert.ok(unwrapped.kernel.equals(vmlinux), `${kind}: the decompressed kernel differs from the vmlinux`);
    const info = await readKernelInfo(file);
    assertStock(info, 'amd64');
    fs.rmSync(file);
  });
}

test('a corrupt payload is EBADMSG, not a wrong answer', async () => {
  const original = fs.readFileSync(amd64);
  const { start } = payloadOf(original);
  const broken = Buffer.from(original);
  broken.fill(0x55, start + 4096, start + 8192);
  const file = path.join(dir, 'bzImage.broken');
  fs.writeFileSync(file, broken);
  await assert.rejects(readKernelInfo(file), (err: { code?: string }) => err.code === 'EBADMSG');
});

test('the RFC .liveupdate_versions section is read when present', async () => {
  // A synthesised section (no kernel carries one yet): magic, format version 1, 48-byte strings.
  const section = Buffer.alloc(8 + 2 * 48);
  section.writeUInt32LE(LVUP_MAGIC, 0);
  section.writeUInt32LE(1, 4);
  section.write('memfd-v2', 8, 'latin1');
  section.write('vfiofd-v1', 8 + 48, 'latin1');
  const file = path.join(dir, 'Image.lvup');
  fs.writeFileSync(file, Buffer.concat([fs.readFileSync(arm64), section]));
  const info = await readKernelInfo(file);
  assert.deepEqual(info.liveupdate_versions, { version: 1, entries: ['memfd-v2', 'vfiofd-v1'] });
});

test('what is not a kernel: ENOEXEC, one line, exit 1 (text, JSON, a gzip of text, an empty file)', () => {
  const text = path.join(dir, 'notes.txt');
  fs.writeFileSync(text, 'not a kernel\n'.repeat(200));
  const gz = path.join(dir, 'notes.txt.gz');
  fs.writeFileSync(gz, zlib.gzipSync(fs.readFileSync(text)));
  const empty = path.join(dir, 'empty');
  fs.writeFileSync(empty, '');
  for (const file of [text, gz, empty]) {
    const r = luoctl('kernel-info', file);
    assert.equal(r.status, 1, file);
    assert.match(r.stderr, /^luoctl: kernel-info: ENOEXEC: .*(not a kernel image|holds no kernel)/, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  }
  const json = luoctl('--json', 'kernel-info', path.join(dir, 'missing'));
  assert.equal(json.status, 1);
  const error = JSON.parse(json.stdout).error;
  assert.equal(error.code, 'ENOENT');
  assert.match(error.message, /cannot read the kernel image .*missing: ENOENT/, 'the message names the file');
});
