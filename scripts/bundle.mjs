/**
 * `npm run build`'s last step: one CommonJS file per command in dist/bundle/
 * (luod, luoctl, the fd holder, luo-qemu, the example VMM), each with the V8 code cache of its start
 * (src/sys/bundle-runner.ts runs them). Made from dist/ after tsc, so the
 * bundle runs exactly the compiled modules.
 *
 * import.meta.url is the one thing a bundle changes: each module's own use of
 * it (files next to it: package.json, the emulator's entry, the native shim)
 * is rewritten to the URL that module has in dist/, so paths stay right.
 * koffi (a native addon), prom-client (loaded only with --metrics-*) and etcd3 (the
 * fleet commands; it reads its .proto files next to itself) stay ordinary packages,
 * loaded from node_modules when needed.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist');
const out = path.join(dist, 'bundle');
const require = createRequire(import.meta.url);

/** name -> [entry module in dist, its launcher in dist (run once to write the code cache), args]. */
const BUNDLES = {
  luod: ['daemon/main.js', 'daemon/luod-bin.cjs', ['--version']],
  luoctl: ['cli/luoctl.js', 'cli/luoctl-bin.cjs', ['--version']],
  holder: ['daemon/holder-main.js', 'daemon/holder-bin.cjs', []],
  'luo-qemu': ['cli/luo-qemu.js', 'cli/luo-qemu-bin.cjs', ['--help']],
  vmm: ['example-vmm/main.js', 'example-vmm/vmm-bin.cjs', ['--help']],
};

const metaUrl = {
  name: 'luokit-import-meta-url',
  setup(b) {
    b.onLoad({ filter: /\.js$/ }, async (args) => {
      if (!args.path.startsWith(`${dist}${path.sep}`)) return undefined;
      // No shebang: the bundle's first line is its id, and vm.Script takes no '#!'.
      const text = (await fs.promises.readFile(args.path, 'utf8')).replace(/^#!.*\n/, '');
      if (!text.includes('import.meta.url')) return { contents: text, loader: 'js' };
      const rel = path.relative(dist, args.path).split(path.sep).join('/');
      return {
        contents: text.replaceAll('import.meta.url', `__luokitUrl(${JSON.stringify(rel)})`),
        loader: 'js',
      };
    });
  },
};

/**
 * zod's translations of its error messages into 50 languages are 40% of a
 * bundle (265 kB of 670), read and parsed at every start. luokit's messages are
 * English (zod's default, set from locales/en.js directly): `z.locales` keeps `en` only.
 */
const zodEnglishOnly = {
  name: 'luokit-zod-english-only',
  setup(b) {
    b.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (args) =>
      args.importer.includes(`${path.sep}zod${path.sep}`)
        ? { path: path.resolve(args.resolveDir, args.path), namespace: 'zod-locales' }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'zod-locales' }, (args) => ({
      contents: `export { default as en } from ${JSON.stringify(path.join(path.dirname(args.path), 'en.js'))};`,
      resolveDir: path.dirname(args.path),
      loader: 'js',
    }));
  },
};

/**
 * luokit imports zod as a namespace (`import { z } from 'zod'`), which no
 * bundler can tree-shake: each bundle carried all of zod's schema kinds. In a
 * bundle, `zod` is a module exporting a `z` with only the members dist/ uses
 * (every `z.NAME` in the files that import zod, read at build time, so it
 * cannot go stale), taken from zod's own modules; esbuild drops the rest.
 * (The real-kernel bench's guest bundles do the same by hand: test/vm/zod-lean.ts.)
 *
 * And zod is initialised on first use, not at start: each member is a
 * function that loads zod's modules the first time it is called, which
 * happens when a schema is first built (src/sys/on-first-use.ts). A name zod
 * lacks, or one that is not a schema factory (a class, a value), is a build
 * error.
 */
/** Every `z.NAME` used in dist/'s modules that import zod, checked against zod's schema factories. */
function zodNamesUsed() {
  const names = new Set();
  const walk = (dir) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const file = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        if (file !== out) walk(file);
      } else if (file.endsWith('.js')) {
        const text = fs.readFileSync(file, 'utf8');
        if (!/^import \{ z \} from 'zod';$/m.test(text)) continue;
        for (const m of text.matchAll(/\bz\.([A-Za-z_$][\w$]*)/g)) names.add(m[1]);
      }
    }
  };
  walk(dist);
  const zod = require('zod').z;
  const wrong = [...names].filter((n) => typeof zod[n] !== 'function' || !/^[a-z]/.test(n));
  if (wrong.length > 0) throw new Error(`z.${wrong.join(', z.')}: not a zod schema factory (dist/ uses it)`);
  return [...names].sort();
}

const zodLean = {
  name: 'luokit-zod-lean',
  setup(b) {
    b.onResolve({ filter: /^zod$/ }, (args) =>
      args.importer.startsWith(`${dist}${path.sep}`) ? { path: 'zod', namespace: 'zod-lean' } : undefined,
    );
    // The real members, required by the module above on first use.
    b.onResolve({ filter: /^zod-lean-members$/ }, () => ({ path: 'zod', namespace: 'zod-lean-members' }));
    b.onLoad({ filter: /.*/, namespace: 'zod-lean' }, () => {
      const names = zodNamesUsed();
      return {
        contents: [
          `let real; const load = () => (real ??= require('zod-lean-members').z);`,
          `export const z = { ${names.map((n) => `${n}: (...args) => load().${n}(...args)`).join(', ')} };`,
        ].join('\n'),
        loader: 'js',
      };
    });
    b.onLoad({ filter: /.*/, namespace: 'zod-lean-members' }, () => {
      const list = zodNamesUsed();
      const external = path.join(path.dirname(require.resolve('zod/package.json')), 'v4/classic/external.js');
      return {
        contents: [
          `import { ${list.map((n) => `${n} as _${n}`).join(', ')} } from ${JSON.stringify(external)};`,
          `export const z = { ${list.map((n) => `${n}: _${n}`).join(', ')} };`,
        ].join('\n'),
        resolveDir: path.dirname(external),
        loader: 'js',
      };
    });
  },
};

/**
 * Node's own modules that a start rarely uses but that cost to load (some
 * 25 ms together at luod's start, in a ~100 ms Node start): node:child_process
 * (and the net and stream modules under it: commander requires it at its top,
 * for executable subcommands luokit has none of; luod spawns only the holder
 * and the emulator, after it listens), node:crypto (the state file's hash,
 * an update's id), node:net (the emulator's control socket). In a bundle each
 * becomes a module of wrappers that requires the real one on first call. Only
 * functions are wrapped: importing anything else from these is a build error
 * (esbuild: no matching export), never a silent undefined.
 *
 * node:worker_threads (and the stream modules under it) is required at the top
 * of pino for `isMainThread` and of its thread-stream for `Worker` (pino
 * transports, which luokit does not use). A bundle is always a command's main
 * script (bundle-runner.cts, from the bins), never a Worker's, so its
 * `isMainThread` is true; `Worker` is wrapped like any function.
 *
 * node:assert is a function itself, required at the top of pino's sonic-boom
 * and thread-stream for checks on paths luokit rarely takes; loading it
 * creates process.stderr (its colours) and loads the stream modules. In a
 * bundle it is a callable stand-in that requires the real one on first use.
 */
const LAZY_BUILTINS = ['child_process', 'crypto', 'net', 'worker_threads'];
/** Values (not functions) a wrapper exports, known without loading the module. */
const LAZY_BUILTIN_VALUES = { worker_threads: { isMainThread: 'true' } };
const LAZY_CALLABLE_BUILTINS = ['assert'];
const lazyBuiltins = {
  name: 'luokit-lazy-builtins',
  setup(b) {
    const filter = new RegExp(`^(node:)?(${[...LAZY_BUILTINS, ...LAZY_CALLABLE_BUILTINS].join('|')})$`);
    b.onResolve({ filter }, (args) =>
      args.namespace === 'lazy-builtin'
        ? { path: args.path, external: true } // the wrappers' own require: the real module
        : { path: args.path.replace(/^node:/, ''), namespace: 'lazy-builtin' },
    );
    b.onLoad({ filter: /.*/, namespace: 'lazy-builtin' }, (args) => {
      const load = `let real; const load = () => (real ??= require(${JSON.stringify(`node:${args.path}`)}));`;
      if (LAZY_CALLABLE_BUILTINS.includes(args.path)) {
        const contents = [
          load,
          `module.exports = new Proxy(function ${args.path}() {}, {`,
          '  apply: (_, self, args) => Reflect.apply(load(), self, args),',
          '  get: (_, key) => load()[key],',
          '});',
        ].join('\n');
        return { contents, loader: 'js' };
      }
      const real = require(`node:${args.path}`);
      const names = Object.keys(real).filter(
        (k) => typeof real[k] === 'function' && /^[A-Za-z_$][\w$]*$/.test(k),
      );
      const lines = [
        load,
        ...names.map(
          (k) =>
            `export function ${k}(...args) { return new.target ? Reflect.construct(load().${k}, args) : load().${k}(...args); }`,
        ),
        ...Object.entries(LAZY_BUILTIN_VALUES[args.path] ?? {}).map(([k, v]) => `export const ${k} = ${v};`),
        'export default new Proxy({}, { get: (_, key) => load()[key] });',
      ];
      return { contents: lines.join('\n'), loader: 'js' };
    });
  },
};

fs.rmSync(out, { recursive: true, force: true });
fs.mkdirSync(out, { recursive: true });
for (const [name, [entry, launcher, args]] of Object.entries(BUNDLES)) {
  const id = randomBytes(8).toString('hex');
  await build({
    entryPoints: [path.join(dist, entry)],
    outfile: path.join(out, `${name}.cjs`),
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    minify: process.env.LUOKIT_BUNDLE_MINIFY !== '0', // 0: readable bundles, for CPU profiles
    legalComments: 'none',
    charset: 'ascii', // bundle-runner.cts reads it as latin1
    external: ['koffi', 'prom-client', 'etcd3'],
    logLevel: 'warning',
    plugins: [metaUrl, zodLean, zodEnglishOnly, lazyBuiltins],
    banner: {
      js: [
        `// luokit-bundle ${id}`,
        // The dist/ URL a module had before bundling (this file is dist/bundle/NAME.cjs).
        'const __luokitUrl = (rel) => require("node:url").pathToFileURL(require("node:path").join(__dirname, "..", rel)).href;',
      ].join('\n'),
    },
  });
  // The holder runs until stopped: once it listens (its top level has run), SIGTERM makes it
  // exit, which writes the cache. The others print their version and exit.
  const env = { ...process.env, LUOKIT_WRITE_CODE_CACHE: '1' };
  let run;
  if (name === 'holder') {
    const holderDir = fs.mkdtempSync(path.join(out, '.h-'));
    const socket = path.join(holderDir, 's');
    const child = spawn(process.execPath, [path.join(dist, launcher), '--socket', socket], {
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    const deadline = Date.now() + 120_000;
    while (!fs.existsSync(socket) && child.exitCode === null && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    // Its SIGTERM handler is set in the same turn as the bind; leave it that turn.
    await new Promise((r) => setTimeout(r, 500));
    child.kill('SIGTERM');
    await exited;
    fs.rmSync(holderDir, { recursive: true, force: true });
    run = { stderr };
  } else {
    run = spawnSync(process.execPath, [path.join(dist, launcher), ...args], {
      env,
      encoding: 'utf8',
      timeout: 120_000,
    });
  }
  if (!fs.existsSync(path.join(out, `${name}.cache`))) {
    throw new Error(`bundle ${name}: no code cache written (${run.error?.message ?? run.stderr})`);
  }
}
process.stdout.write(`bundle: ${Object.keys(BUNDLES).join(', ')} in ${path.relative(root, out)}\n`);
