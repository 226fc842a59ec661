/**
 * luokit's version, as its package.json says. In a bundle (scripts/bundle.mjs)
 * it is written in at build time, from the package the bundle is part of:
 * reading package.json at start is a file read on luod's start after a kexec
 * (0.1 to 0.4 s over the real-kernel bench's 9p share under TCG). Without a
 * bundle (a plain `tsc` build, `LUOKIT_NO_BUNDLE=1`), it is read at run time.
 */
import { readFileSync } from 'node:fs';

/** Defined by scripts/bundle.mjs (esbuild `define`); absent outside a bundle. */
declare const LUOKIT_PACKAGE_VERSION: string | undefined;

export function packageVersion(): string {
  if (typeof LUOKIT_PACKAGE_VERSION === 'string') return LUOKIT_PACKAGE_VERSION;
  // dist/sys/ and src/sys/ are both two levels below the package root.
  const manifest = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
  return String(manifest.version);
}
