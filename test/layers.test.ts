/**
 * The layering of src/ (docs/architecture.md), read from the import lines
 * themselves, so that it cannot quietly regress: each folder imports only
 * folders on a lower floor, nothing imports luod's daemon, and the library's
 * users go through its front doors (kernel/index.ts, client/index.ts).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

const SRC = path.resolve(import.meta.dirname, '../src');

/** The floors, lowest first; a folder may import its own floor's folder only if it is itself. */
const FLOORS: readonly (readonly string[])[] = [
  ['sys'],
  ['uapi', 'abi', 'host'],
  ['kernel', 'image', 'vm'],
  ['protocol', 'record', 'qualify'],
  ['client', 'report', 'inspect'],
  ['daemon', 'example-vmm', 'qemu', 'fleet'],
  ['cli'],
];

interface Import {
  /** Importing file, relative to src/. */
  readonly from: string;
  /** Imported file, relative to src/. */
  readonly to: string;
}

/** Every import of another src/ file, static or dynamic, and every import of a package. */
function imports(): { local: Import[]; packages: { from: string; name: string }[] } {
  const local: Import[] = [];
  const packages: { from: string; name: string }[] = [];
  const walk = (dir: string): void => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const file = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(file);
      else if (file.endsWith('.ts')) {
        const from = path.relative(SRC, file);
        const text = fs.readFileSync(file, 'utf8');
        for (const m of text.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*|^import\s+)'([^']+)'/gm)) {
          const spec = m[1]!;
          if (spec.startsWith('.')) local.push({ from, to: path.relative(SRC, path.resolve(dir, spec)) });
          else packages.push({ from, name: spec });
        }
      }
    }
  };
  walk(SRC);
  return { local, packages };
}

const top = (file: string) => file.split(path.sep)[0]!;
const floorOf = (folder: string) => FLOORS.findIndex((floor) => floor.includes(folder));
const { local, packages } = imports();

test('the import reader sees the imports (a broken reader would pass every rule)', () => {
  assert.ok(local.length > 300, `only ${local.length} imports found`);
  assert.ok(local.some((i) => i.from === path.join('daemon', 'luod.ts') && top(i.to) === 'protocol'));
  assert.ok(packages.some((p) => p.name === 'koffi'));
});

test('every folder of src/ has a floor', () => {
  const folders = fs
    .readdirSync(SRC, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name);
  for (const folder of folders) assert.notEqual(floorOf(folder), -1, `src/${folder} has no floor in FLOORS`);
});

test('imports run down the floors only (no folder imports its own floor or one above)', () => {
  const wrong = local
    .filter((i) => top(i.from) !== top(i.to) && floorOf(top(i.to)) >= floorOf(top(i.from)))
    .map((i) => `${i.from} -> ${i.to}`);
  assert.deepEqual(wrong, []);
});

test('nothing outside the daemon imports it: below it, the client and the CLI alike', () => {
  const wrong = local.filter((i) => top(i.to) === 'daemon' && top(i.from) !== 'daemon');
  assert.deepEqual(
    wrong.map((i) => `${i.from} -> ${i.to}`),
    [],
  );
});

test('the client reaches the kernel through kernel/index.ts only, and the example VMM the client through client/index.ts', () => {
  const wrong = local.filter(
    (i) =>
      (top(i.from) === 'client' && top(i.to) === 'kernel' && i.to !== path.join('kernel', 'index.js')) ||
      (top(i.from) === 'example-vmm' && top(i.to) === 'client' && i.to !== path.join('client', 'index.js')),
  );
  assert.deepEqual(
    wrong.map((i) => `${i.from} -> ${i.to}`),
    [],
  );
});

test('outside the emulator, its internals are reached through kernel/emu/index.ts only', () => {
  const emu = path.join('kernel', 'emu');
  const wrong = local.filter(
    (i) =>
      !i.from.startsWith(`${emu}${path.sep}`) &&
      i.to.startsWith(`${emu}${path.sep}`) &&
      i.to !== path.join(emu, 'index.js'),
  );
  assert.deepEqual(
    wrong.map((i) => `${i.from} -> ${i.to}`),
    [],
  );
});

test('koffi is used by src/sys/libc.ts alone', () => {
  const users = packages.filter((p) => p.name === 'koffi').map((p) => p.from);
  assert.deepEqual(users, [path.join('sys', 'libc.ts')]);
});

test('etcd3 is used by src/fleet/etcd.ts alone (one place sets its deadlines)', () => {
  const users = [...new Set(packages.filter((p) => p.name === 'etcd3').map((p) => p.from))];
  assert.deepEqual(users, [path.join('fleet', 'etcd.ts')]);
});
