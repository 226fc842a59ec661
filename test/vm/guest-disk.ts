/**
 * The guest's local disk (docs/vm.md, "luod-ready"): a read-only ext4 image on a virtio
 * block device with what the next kernel's userspace start reads: the node binary, the
 * project's dist/ (luokit's bins and their code-cached bundles) and koffi. The guest's
 * /init mounts it and binds each entry over the same path in the host's share, so every
 * program runs exactly as before, only its files come from a block device instead of 9p.
 *
 * Why: after a kexec the page cache is empty. Faulting a 99 MB binary in page by page over
 * 9p under TCG is a cost no host has (its node is on a local disk), and it lands in the
 * blackout. Both paths of the bench get the same disk; the floor's C program never reads it.
 *
 * The image is made at every bench run (`mke2fs -d`, no root needed, a second or two), so it
 * always holds the current build. Its root has `binds`: one `NAME TARGET` line per entry.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/** e2fsprogs' mke2fs (Debian: always installed; scripts/deps.sh checks it). */
export const MKE2FS = '/usr/sbin/mke2fs';

export interface GuestDiskContent {
  /** Entry name in the image -> the absolute path it stands in for in the guest. */
  binds: Record<string, string>;
}

/** What goes on the disk: node (as the guest resolves it), dist/, koffi. */
export function guestDiskContent(root: string, node = process.execPath): GuestDiskContent {
  // Real paths: /init binds before the chroot, where a symlink (a worktree's node_modules,
  // say) would resolve against the initramfs, not the host's /.
  return {
    binds: {
      node: fs.realpathSync(node),
      dist: fs.realpathSync(path.join(root, 'dist')),
      koffi: fs.realpathSync(path.join(root, 'node_modules/koffi')),
    },
  };
}

/** The `binds` manifest /init reads: `NAME TARGET` per line; no spaces in either. */
export function bindsManifest(content: GuestDiskContent): string {
  const lines: string[] = [];
  for (const [name, target] of Object.entries(content.binds)) {
    if (/\s/.test(name) || /\s/.test(target))
      throw new Error(`guest disk: no spaces allowed in ${name} -> ${target}`);
    if (!path.isAbsolute(target)) throw new Error(`guest disk: ${target} is not an absolute path`);
    lines.push(`${name} ${target}`);
  }
  return `${lines.join('\n')}\n`;
}

type Run = (
  command: string,
  args: readonly string[],
  options?: { quiet?: boolean },
) => Promise<{ status: number | null; stdout: string; stderr: string; error?: Error }>;

/**
 * Stage the content (copies: the image must not change while a guest reads it) and make
 * `image` from it. Returns the image's size in bytes.
 */
export async function buildGuestDisk(image: string, content: GuestDiskContent, run: Run): Promise<number> {
  const staging = `${image}.d`;
  fs.rmSync(staging, { recursive: true, force: true });
  fs.mkdirSync(staging, { recursive: true });
  let bytes = 0;
  for (const [name, source] of Object.entries(content.binds)) {
    fs.cpSync(source, path.join(staging, name), { recursive: true, dereference: true });
    bytes += du(path.join(staging, name));
  }
  fs.writeFileSync(path.join(staging, 'binds'), bindsManifest(content));
  // Room for ext4's own structures; no journal (mounted read-only, never written).
  const sizeMiB = Math.ceil((bytes * 1.15) / 2 ** 20) + 16;
  fs.rmSync(image, { force: true });
  const r = await run(
    MKE2FS,
    [
      '-q',
      '-F',
      '-t',
      'ext4',
      '-O',
      '^has_journal',
      '-L',
      'luokit-guest',
      '-d',
      staging,
      image,
      `${sizeMiB}M`,
    ],
    { quiet: true },
  );
  fs.rmSync(staging, { recursive: true, force: true });
  if (r.status !== 0) {
    throw new Error(`${MKE2FS} failed (exit ${r.status ?? r.error?.message}): ${r.stderr.trim()}`);
  }
  return fs.statSync(image).size;
}

function du(file: string): number {
  const st = fs.lstatSync(file);
  if (!st.isDirectory()) return st.size;
  let total = 0;
  for (const entry of fs.readdirSync(file)) total += du(path.join(file, entry));
  return total;
}
