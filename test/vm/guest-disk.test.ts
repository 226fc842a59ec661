/**
 * The guest's local disk (test/vm/guest-disk.ts), without QEMU: the manifest /init reads,
 * and a real image made by mke2fs, read back with e2fsprogs' debugfs.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { qemuCommand } from '../../src/vm/qemu.js';
import { bindsManifest, buildGuestDisk, guestDiskContent } from './guest-disk.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-guest-disk-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const DEBUGFS = '/usr/sbin/debugfs';

function run(command: string, args: readonly string[]) {
  return new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => {
      stdout += c;
    });
    child.stderr.on('data', (c) => {
      stderr += c;
    });
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

test('the content: node as the guest resolves it, the project build and koffi, at their real paths', () => {
  const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
  const content = guestDiskContent(root);
  assert.equal(content.binds.node, fs.realpathSync(process.execPath));
  assert.equal(content.binds.dist, fs.realpathSync(path.join(root, 'dist')));
  assert.equal(content.binds.koffi, fs.realpathSync(path.join(root, 'node_modules/koffi')));
  assert.equal(
    bindsManifest(content),
    `node ${content.binds.node}\ndist ${content.binds.dist}\nkoffi ${content.binds.koffi}\n`,
  );
});

test('the manifest refuses what /init could not read back', () => {
  assert.throws(() => bindsManifest({ binds: { dist: '/a b/dist' } }), /no spaces/);
  assert.throws(() => bindsManifest({ binds: { dist: 'relative/dist' } }), /not an absolute path/);
});

test('QEMU gets the image read-only on virtio-blk', () => {
  const args = qemuCommand({
    kernel: '/k',
    initramfs: '/i',
    append: '',
    shares: [],
    timeoutMs: 1,
    consoleLog: '/dev/null',
    disk: '/tmp/d.img',
  });
  assert.ok(args.includes('file=/tmp/d.img,format=raw,if=virtio,readonly=on'), args.join(' '));
});

test('mke2fs makes an ext4 image holding every entry byte for byte, and the manifest', async () => {
  const src = path.join(dir, 'src');
  fs.mkdirSync(path.join(src, 'tree/sub'), { recursive: true });
  fs.writeFileSync(path.join(src, 'tree/sub/file.txt'), 'hello from the disk\n');
  const blob = Buffer.alloc(300_000);
  for (let i = 0; i < blob.length; i++) blob[i] = (i * 7) & 0xff;
  fs.writeFileSync(path.join(src, 'blob.bin'), blob);
  const image = path.join(dir, 'disk.img');
  const content = { binds: { tree: path.join(src, 'tree'), blob: path.join(src, 'blob.bin') } };
  const size = await buildGuestDisk(image, content, run);
  assert.equal(size, fs.statSync(image).size);
  assert.ok(!fs.existsSync(`${image}.d`), 'the staging directory is removed');
  const cat = (file: string): Buffer => {
    const r = spawnSync(DEBUGFS, ['-R', `cat ${file}`, image], { maxBuffer: 1 << 24 });
    assert.equal(r.status, 0, String(r.stderr));
    // debugfs exits 0 for a file it cannot find; it says so on stderr.
    assert.doesNotMatch(String(r.stderr), /not found/i, `${file} is not in the image`);
    return r.stdout;
  };
  assert.equal(cat('/binds').toString(), bindsManifest(content));
  assert.equal(cat('/tree/sub/file.txt').toString(), 'hello from the disk\n');
  assert.ok(cat('/blob').equals(blob), 'the entry is named blob in the image');
  const fsType = spawnSync('/usr/sbin/dumpe2fs', ['-h', image], { encoding: 'utf8' });
  assert.match(fsType.stdout, /Filesystem volume name:\s+luokit-guest/);
  assert.doesNotMatch(fsType.stdout, /has_journal/);
});
