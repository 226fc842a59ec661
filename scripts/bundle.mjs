/**
 * `npm run build`'s last step: one CommonJS file per command in dist/bundle/
 * (luod, luoctl, the fd holder, luo-qemu, the example VMM), each with the V8 code cache of its start
 * (src/sys/bundle-runner.ts runs them). Made from dist/ after tsc, so the
 * bundle runs exactly the compiled modules.
 *
 * import.meta.url is the one thing a bundle changes: each module's own use of
 * it (files next to it: package.json, the emulator's entry, the native shim)
 * is rewritten to the URL that module has in dist/, so paths stay right.
 * koffi's addon is copied next to the bundles and loaded directly (koffiDirect).
 * prom-client (loaded only with --metrics-*) and etcd3 (the fleet commands; it
 * reads its .proto files next to itself) stay ordinary packages, loaded from
 * node_modules when needed.
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
const packageJson = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));

/** name -> [entry module in dist, its launcher in dist (run once to write the code cache)]. */
const BUNDLES = {
  luod: ['daemon/main.js', 'daemon/luod-bin.cjs'],
  luoctl: ['cli/luoctl.js', 'cli/luoctl-bin.cjs'],
  holder: ['daemon/holder-main.js', 'daemon/holder-bin.cjs'],
  'luo-qemu': ['cli/luo-qemu.js', 'cli/luo-qemu-bin.cjs'],
  vmm: ['example-vmm/main.js', 'example-vmm/vmm-bin.cjs'],
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

/**
 * koffi's own loader, at every start, reads the ELF header of the node binary
 * to tell glibc from musl, then resolves `@koromix/koffi-linux-x64` (or its
 * sibling) through node_modules before it dlopens the addon: some 10 ms of a
 * ~140 ms start on a host, and 0.6 s of luod's start in the real-kernel bench
 * (module resolution over 9p under TCG), on every VM's blackout. That answer
 * cannot change between the build and the run of the same dist/: the build
 * asks koffi once which addon it loaded, copies that file next to the
 * bundles (dist/bundle/koffi.node), and a bundle dlopens it directly. koffi's
 * wrapper adds only deprecated aliases luokit does not use.
 *
 * The addon's version is checked against the koffi package the bundle was
 * built with; a copy that cannot be loaded (another architecture) or does not
 * match makes the bundle load koffi the ordinary way, with its own errors.
 */
const KOFFI_NODE = 'koffi.node';
function koffiAddon() {
  const koffi = require('koffi');
  const pkg = path.join(path.dirname(require.resolve('koffi')), 'package.json');
  const { version } = JSON.parse(fs.readFileSync(pkg, 'utf8'));
  const loaded = Object.keys(require.cache).filter((f) => f.endsWith(`${path.sep}koffi.node`));
  if (loaded.length !== 1) throw new Error(`koffi loaded ${loaded.length} native addons, expected one`);
  if (koffi.version !== version) throw new Error(`koffi's addon is ${koffi.version}, its package ${version}`);
  return { file: loaded[0], version };
}
const koffiDirect = {
  name: 'luokit-koffi-direct',
  setup(b) {
    b.onResolve({ filter: /^koffi$/ }, (args) =>
      args.namespace === 'koffi-direct'
        ? { path: 'koffi', external: true } // the ordinary load, when the copy cannot serve
        : { path: 'koffi', namespace: 'koffi-direct' },
    );
    b.onLoad({ filter: /.*/, namespace: 'koffi-direct' }, () => {
      const { version } = koffiAddon();
      const contents = [
        'let native = null;',
        'try {',
        '  const m = { exports: {} };',
        `  process.dlopen(m, require('node:path').join(__dirname, ${JSON.stringify(KOFFI_NODE)}));`,
        `  if (m.exports.version === ${JSON.stringify(version)}) native = m.exports;`,
        '} catch {}',
        "module.exports = native ?? require('koffi');",
      ].join('\n');
      return { contents, loader: 'js' };
    });
  },
};

fs.rmSync(out, { recursive: true, force: true });
fs.mkdirSync(out, { recursive: true });
fs.copyFileSync(koffiAddon().file, path.join(out, KOFFI_NODE));
for (const [name, [entry]] of Object.entries(BUNDLES)) {
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
    external: ['prom-client', 'etcd3'],
    // src/sys/package-version.ts: the version without reading package.json at start.
    define: { LUOKIT_PACKAGE_VERSION: JSON.stringify(packageJson.version) },
    logLevel: 'warning',
    plugins: [metaUrl, zodLean, zodEnglishOnly, lazyBuiltins, koffiDirect],
    banner: {
      js: [
        `// luokit-bundle ${id}`,
        // The dist/ URL a module had before bundling (this file is dist/bundle/NAME.cjs).
        'const __luokitUrl = (rel) => require("node:url").pathToFileURL(require("node:path").join(__dirname, "..", rel)).href;',
      ].join('\n'),
    },
  });
}

/**
 * The code cache holds what V8 compiled by the time the process exits, so each
 * cache is written by a run that takes the command's usual path, not just its
 * top level. luo-qemu prints its help. Then a whole live update, on the
 * emulated kernel in a scratch directory: luod starts and listens, an example
 * VMM subscribes, `luoctl update` runs the barrier and the emulated kexec,
 * luod restores as after a reboot (the carried state, the sessions back, its
 * holder's copies) and the VMM claims; `luoctl status` asks luod last (zod's
 * reply schemas, the socket code), and luod is stopped. So the caches of
 * luod, its holder and the VMM hold the restore's and the claims' code too:
 * after a real kexec that code runs cold on every VM's blackout, and under
 * TCG its lazy compiles were a visible part of luod's restore and claims
 * (docs/vm.md). A path the run missed is compiled at run time, as without a
 * cache; nothing else changes. The emulator is stopped at the end: a build
 * leaves no process behind.
 */
const scratch = fs.mkdtempSync(path.join(out, '.cache-run-'));
const env = { ...process.env, LUOKIT_WRITE_CODE_CACHE: '1', LUOKIT_LOG_LEVEL: 'warn' };
const launcherOf = (name) => path.join(dist, BUNDLES[name][1]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Start a long-running bin, wait for `socket`, run `during`, SIGTERM it (it writes its cache at exit). */
async function runUntilListening(name, args, socket, during = async () => {}) {
  const child = spawn(process.execPath, [launcherOf(name), ...args], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const deadline = Date.now() + 120_000;
  while (!fs.existsSync(socket) && child.exitCode === null && Date.now() < deadline) await sleep(20);
  if (child.exitCode === null && fs.existsSync(socket)) {
    // Its SIGTERM handler is set in the same turn as the bind; leave it that turn.
    await sleep(500);
    await during();
  }
  child.kill('SIGTERM');
  await exited;
  return { stderr };
}

/** A short command of the project's, its cache written at its exit. */
const runBin = (name, args, extraEnv = {}) =>
  spawnSync(process.execPath, [launcherOf(name), ...args], {
    env: { ...env, ...extraEnv },
    encoding: 'utf8',
    timeout: 120_000,
  });

/** Poll `probe` until it is true (false after `ms`). */
async function waitFor(probe, ms) {
  for (const deadline = Date.now() + ms; Date.now() < deadline; await sleep(50)) if (probe()) return true;
  return false;
}

const runs = {};
const emuState = path.join(scratch, 'emu');
try {
  // First the runs whose bins the update below runs again: the last cache written wins.
  const holderSocket = path.join(scratch, 'holder.sock');
  runs.holder = await runUntilListening('holder', ['--socket', holderSocket], holderSocket);
  runs['luo-qemu'] = runBin('luo-qemu', ['--help']);
  runs.vmm = runBin('vmm', ['--help']);
  const luodSocket = path.join(scratch, 'luod.sock');
  const socketEnv = { LUOD_SOCKET: luodSocket };
  runs.luod = await runUntilListening(
    'luod',
    ['--emulate', '--state', emuState, '--socket', luodSocket],
    luodSocket,
    async () => {
      const vmm = spawn(
        process.execPath,
        [launcherOf('vmm'), '--id', 'cache-run', '--mem', '1M', '--updates', '1', '--quiet'],
        { env: { ...env, ...socketEnv }, stdio: 'ignore' },
      );
      const vmmExited = new Promise((resolve) => vmm.once('exit', resolve));
      const subscribed = await waitFor(() => {
        const status = runBin('luoctl', ['status', '--json'], socketEnv);
        return status.status === 0 && status.stdout.includes('"cache-run"');
      }, 60_000);
      if (subscribed) {
        runs.update = runBin('luoctl', ['update', '--json'], socketEnv);
        // A VMM that never ends must not hold the build: an unref'd minute at most.
        await Promise.race([vmmExited, new Promise((r) => setTimeout(r, 60_000).unref())]);
      } else {
        process.stderr.write("bundle: the cache run's VMM did not subscribe; the caches hold less\n");
      }
      vmm.kill('SIGKILL');
      runs.luoctl = runBin('luoctl', ['status'], socketEnv);
    },
  );
  // luod's holder (started with the same environment) exits once luod is gone and it
  // holds nothing, writing its cache: wait for it.
  await waitFor(() => !fs.existsSync(`${luodSocket}.holder`), 30_000);
} finally {
  // luod --emulate started the emulated kernel: stop it, or every build leaves one running.
  spawnSync(process.execPath, [launcherOf('luoctl'), 'emu', 'stop', '--state', emuState], {
    env: { ...process.env, LUOKIT_LOG_LEVEL: 'warn' },
    stdio: 'ignore',
    timeout: 30_000,
  });
  fs.rmSync(scratch, { recursive: true, force: true });
}
for (const name of Object.keys(BUNDLES)) {
  if (!fs.existsSync(path.join(out, `${name}.cache`))) {
    const run = runs[name];
    throw new Error(
      `bundle ${name}: no code cache written (${run?.error?.message ?? run?.stderr ?? 'not run'})`,
    );
  }
}
process.stdout.write(`bundle: ${Object.keys(BUNDLES).join(', ')} in ${path.relative(root, out)}\n`);
