/**
 * Runs one of luokit's single-file bundles (dist/bundle/NAME.cjs, made by
 * scripts/bundle.mjs at `npm run build`) with V8's code cache, so that a
 * command starts without resolving, reading and compiling some 200 modules
 * one by one (docs/performance.md: luod ready, luoctl --version). Node 20 has
 * no compile cache of its own (module.enableCompileCache is Node 22); a
 * vm.Script given the cached data of its last compile skips the compile.
 *
 * The cache is written at build time, never at run time (dist/ may be
 * read-only), and only used for the very bundle it was made from: both carry
 * the build's id on their first line. A cache V8 rejects (another Node) or a
 * missing one costs the compile, nothing else; a missing bundle (a plain
 * `tsc` build) makes the caller import its modules as before.
 *
 * CommonJS, as are the bins that use it: an ES module entry costs Node's ESM
 * loader, some 15 ms of a start that is itself ~100 ms.
 */
import fs = require('node:fs');
import vm = require('node:vm');
import nodeModule = require('node:module');

/** The bundle's first line: `// luokit-bundle ID`. The cache file starts with `ID\n`. */
const ID_LINE = /^\/\/ luokit-bundle (\S+)\n/;

/** Off switch, for comparing start-up with and without the bundles (bench/startup.ts). */
const NO_BUNDLE_ENV = 'LUOKIT_NO_BUNDLE';
/** Say on stderr which bundle runs and whether V8 took its code cache (tests, bench). */
const DEBUG_ENV = 'LUOKIT_BUNDLE_DEBUG';
/** Set by scripts/bundle.mjs: write the code cache when the process exits. */
const WRITE_CACHE_ENV = 'LUOKIT_WRITE_CODE_CACHE';

/**
 * Run dist/bundle/NAME.cjs if it is there; false when it is not (or when
 * $LUOKIT_NO_BUNDLE=1), and the caller then imports its entry module.
 */
function runBundle(name: string): boolean {
  if (process.env[NO_BUNDLE_ENV] === '1') return false;
  const file = `${__dirname}/../bundle/${name}.cjs`;
  let source: string;
  try {
    // ASCII (scripts/bundle.mjs: charset ascii), so latin1: no UTF-8 decoding.
    source = fs.readFileSync(file, 'latin1');
  } catch {
    return false;
  }
  const id = ID_LINE.exec(source)?.[1];
  const cacheFile = file.replace(/\.cjs$/, '.cache');
  let cachedData: Buffer | undefined;
  if (id) {
    try {
      const cache = fs.readFileSync(cacheFile);
      const header = Buffer.from(`${id}\n`);
      if (cache.subarray(0, header.length).equals(header)) cachedData = cache.subarray(header.length);
    } catch {}
  }
  // The CommonJS wrapper, as Node's own loader makes it.
  const script = new vm.Script(`(function (exports, require, module, __filename, __dirname) {${source}\n})`, {
    filename: file,
    ...(cachedData && { cachedData }),
  });
  if (id && process.env[WRITE_CACHE_ENV] === '1') {
    process.once('exit', () => {
      fs.writeFileSync(cacheFile, Buffer.concat([Buffer.from(`${id}\n`), script.createCachedData()]));
    });
  }
  if (process.env[DEBUG_ENV] === '1') {
    const cache = cachedData ? (script.cachedDataRejected ? 'rejected' : 'accepted') : 'none';
    process.stderr.write(`luokit: bundle ${name}, code cache ${cache}\n`);
  }
  const module = { exports: {} };
  const run = script.runInThisContext() as (...args: unknown[]) => void;
  run(module.exports, nodeModule.createRequire(file), module, file, file.slice(0, file.lastIndexOf('/')));
  return true;
}

export = { runBundle, NO_BUNDLE_ENV, WRITE_CACHE_ENV, DEBUG_ENV };
