import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { AbiError } from '../src/abi/errors.js';
import {
  decodeFdt,
  encodeFdt,
  FDT_MAX_DEPTH,
  type FdtNode,
  fdtNode,
  fdtString,
  fdtStringList,
  fdtU32,
  fdtU64,
  findFdtChild,
  readFdtString,
  readFdtStringList,
  readFdtU32,
  readFdtU64,
} from '../src/abi/fdt.js';

/** `/ { compatible = "a"; n { x = <1>; }; };` laid out by hand from the DTB v17 spec. */
const TINY_FDT = Uint8Array.from([
  ...[0xd0, 0x0d, 0xfe, 0xed], //  0: magic
  ...[0x00, 0x00, 0x00, 0x81], //  4: totalsize = 129
  ...[0x00, 0x00, 0x00, 0x38], //  8: off_dt_struct = 56 (header 40 + one 16-byte rsvmap terminator)
  ...[0x00, 0x00, 0x00, 0x74], // 12: off_dt_strings = 116 (56 + 60)
  ...[0x00, 0x00, 0x00, 0x28], // 16: off_mem_rsvmap = 40
  ...[0x00, 0x00, 0x00, 0x11], // 20: version = 17
  ...[0x00, 0x00, 0x00, 0x10], // 24: last_comp_version = 16
  ...[0x00, 0x00, 0x00, 0x00], // 28: boot_cpuid_phys = 0
  ...[0x00, 0x00, 0x00, 0x0d], // 32: size_dt_strings = 13
  ...[0x00, 0x00, 0x00, 0x3c], // 36: size_dt_struct = 60
  ...new Array<number>(16).fill(0), // 40: reservation map: only the {0, 0} terminator
  ...[0x00, 0x00, 0x00, 0x01], // 56: FDT_BEGIN_NODE
  ...[0x00, 0x00, 0x00, 0x00], // 60: root name "" + padding
  ...[0x00, 0x00, 0x00, 0x03], // 64: FDT_PROP
  ...[0x00, 0x00, 0x00, 0x02], // 68:   len = 2
  ...[0x00, 0x00, 0x00, 0x00], // 72:   nameoff = 0 ("compatible")
  ...[0x61, 0x00, 0x00, 0x00], // 76:   "a\0" + padding
  ...[0x00, 0x00, 0x00, 0x01], // 80: FDT_BEGIN_NODE
  ...[0x6e, 0x00, 0x00, 0x00], // 84: "n\0" + padding
  ...[0x00, 0x00, 0x00, 0x03], // 88: FDT_PROP
  ...[0x00, 0x00, 0x00, 0x04], // 92:   len = 4
  ...[0x00, 0x00, 0x00, 0x0b], // 96:   nameoff = 11 ("x")
  ...[0x00, 0x00, 0x00, 0x01], // 100:  <1>
  ...[0x00, 0x00, 0x00, 0x02], // 104: FDT_END_NODE (n)
  ...[0x00, 0x00, 0x00, 0x02], // 108: FDT_END_NODE (/)
  ...[0x00, 0x00, 0x00, 0x09], // 112: FDT_END
  ...[0x63, 0x6f, 0x6d, 0x70, 0x61, 0x74, 0x69, 0x62, 0x6c, 0x65, 0x00], // 116: "compatible\0"
  ...[0x78, 0x00], // 127: "x\0"
]);

const tinyTree = (): FdtNode => fdtNode('', { compatible: fdtString('a') }, [fdtNode('n', { x: fdtU32(1) })]);

test('encodeFdt reproduces the hand-laid tiny FDT byte for byte', () => {
  assert.deepEqual([...encodeFdt(tinyTree())], [...TINY_FDT]);
});

test('decodeFdt reads the hand-laid tiny FDT', () => {
  const fdt = decodeFdt(TINY_FDT);
  assert.deepEqual(fdt.root, tinyTree());
  assert.deepEqual(fdt.reserveMap, []);
  assert.equal(fdt.version, 17);
  assert.equal(fdt.totalSize, 129);
});

test('decodeFdt accepts a blob padded out to a page, as KHO keeps it', () => {
  const page = new Uint8Array(4096);
  page.set(TINY_FDT);
  assert.deepEqual(decodeFdt(page).root, tinyTree());
});

test('property value helpers: big-endian cells and NUL-terminated strings', () => {
  assert.deepEqual([...fdtU32(0x12345678)], [0x12, 0x34, 0x56, 0x78]);
  assert.deepEqual([...fdtU64(0x0102030405060708n)], [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.deepEqual([...fdtString('kho-v4')], [0x6b, 0x68, 0x6f, 0x2d, 0x76, 0x34, 0x00]);
  assert.deepEqual([...fdtStringList(['a', 'bc'])], [0x61, 0x00, 0x62, 0x63, 0x00]);
  assert.equal(readFdtU32(fdtU32(7), 'x'), 7);
  assert.equal(readFdtU64(fdtU64(1n << 40n), 'x'), 1n << 40n);
  assert.equal(readFdtString(fdtString('memblock-v1'), 'x'), 'memblock-v1');
  assert.deepEqual(readFdtStringList(fdtStringList(['a', '', 'b']), 'x'), ['a', '', 'b']);
  assert.throws(() => readFdtU32(new Uint8Array(3), 'x'), AbiError);
  assert.throws(() => readFdtU64(new Uint8Array(4), 'x'), AbiError);
  assert.throws(() => readFdtString(Uint8Array.of(0x61), 'x'), AbiError);
  assert.throws(() => readFdtString(fdtStringList(['a', 'b']), 'x'), AbiError);
  assert.throws(() => fdtString('a\0b'), AbiError);
  assert.throws(() => fdtU32(2 ** 32), AbiError);
});

test('findFdtChild matches names as libfdt does, unit addresses included', () => {
  const root = fdtNode('', {}, [fdtNode('LUO@0'), fdtNode('LUO'), fdtNode('memory@1000')]);
  assert.equal(findFdtChild(root, 'LUO')?.name, 'LUO@0');
  assert.equal(findFdtChild(root, 'memory@1000')?.name, 'memory@1000');
  assert.equal(findFdtChild(root, 'memory@2000'), undefined);
  assert.equal(findFdtChild(root, 'mem'), undefined);
});

test('decodeFdt refuses malformed headers and structure with AbiError', () => {
  const cases: [string, (b: Uint8Array) => Uint8Array][] = [
    ['bad magic', (b) => patch(b, 0, [0, 0, 0, 0])],
    ['totalsize past the buffer', (b) => patch(b, 4, [0, 0, 0x10, 0])],
    ['version 16', (b) => patch(b, 20, [0, 0, 0, 0x10])],
    ['last_comp_version 18', (b) => patch(b, 24, [0, 0, 0, 0x12])],
    ['misaligned struct block', (b) => patch(b, 8, [0, 0, 0, 0x39])],
    ['struct block past totalsize', (b) => patch(b, 36, [0, 0, 0x01, 0])],
    ['strings block past totalsize', (b) => patch(b, 32, [0, 0, 0, 0x20])],
    ['rsvmap inside the header', (b) => patch(b, 16, [0, 0, 0, 0x20])],
    ['unknown token', (b) => patch(b, 56, [0, 0, 0, 0x07])],
    ['property name offset outside strings', (b) => patch(b, 72, [0, 0, 0, 0x40])],
    ['property value past the block', (b) => patch(b, 68, [0, 0, 0x10, 0])],
    ['END before the root closes', (b) => patch(b, 104, [0, 0, 0, 0x09])],
    ['END_NODE with nothing open', (b) => patch(b, 112, [0, 0, 0, 0x02])],
    ['property before any node', (b) => patch(b, 56, [0, 0, 0, 0x03])],
    ['strings not NUL-terminated', (b) => patch(b, 128, [0x78])],
  ];
  for (const [name, mutate] of cases) {
    assert.throws(() => decodeFdt(mutate(TINY_FDT)), AbiError, name);
  }
});

test('decodeFdt refuses a property after a subnode and duplicate properties', () => {
  // `/ { a = [00 00 00 00]; m { }; };`: the struct block holds BEGIN "" (8 bytes), the
  // property (16), then BEGIN "m" END_NODE (12). Swapping the last two puts the property
  // after the subnode, where libfdt would never find it.
  const tree = encodeFdt(fdtNode('', { a: new Uint8Array(4) }, [fdtNode('m')]));
  const struct = 56;
  const property = tree.slice(struct + 8, struct + 24);
  const subnode = tree.slice(struct + 24, struct + 36);
  const swapped = tree.slice();
  swapped.set(subnode, struct + 8);
  swapped.set(property, struct + 20);
  assert.throws(() => decodeFdt(swapped), /property after a subnode/);

  // `/ { a; b; }`: point the second property's nameoff (struct + 8 + 12 + 8) at "a".
  const twice = encodeFdt(fdtNode('', { a: new Uint8Array(0), b: new Uint8Array(0) }));
  const duplicate = patch(twice, struct + 28, [0, 0, 0, 0]);
  assert.throws(() => decodeFdt(duplicate), /duplicate property 'a'/);
});

test('decodeFdt bounds nesting, and every truncation fails cleanly', () => {
  let deep = fdtNode('leaf');
  for (let i = 0; i < FDT_MAX_DEPTH - 2; i++) deep = fdtNode(`n${i}`, {}, [deep]);
  const ok = encodeFdt(fdtNode('', {}, [deep]));
  assert.equal(decodeFdt(ok).root.children.length, 1);
  assert.throws(() => encodeFdt(fdtNode('', {}, [fdtNode('x', {}, [deep])])), AbiError);

  for (let length = 0; length < TINY_FDT.byteLength; length++) {
    assert.throws(() => decodeFdt(TINY_FDT.subarray(0, length)), AbiError, `length ${length}`);
  }
});

test('encodeFdt refuses what a DTB cannot hold', () => {
  assert.throws(() => encodeFdt(fdtNode('', {}, [fdtNode('')])), AbiError);
  assert.throws(() => encodeFdt(fdtNode('', { '': new Uint8Array(0) })), AbiError);
  assert.throws(() => encodeFdt(fdtNode('a\0b')), AbiError);
  assert.throws(() => encodeFdt(fdtNode(''), { reserveMap: [{ address: 0n, size: 0n }] }), AbiError);
  assert.throws(() => encodeFdt(fdtNode(''), { bootCpuid: -1 }), AbiError);
});

const nodeName = fc.stringMatching(/^[a-z][a-z0-9,._+-]{0,12}(@[0-9a-f]{1,4})?$/);
const propName = fc.stringMatching(/^#?[a-z][a-z0-9,._+?-]{0,15}$/);
const fdtTree: fc.Arbitrary<FdtNode> = fc
  .letrec<{ node: FdtNode }>((tie) => ({
    node: fc
      .record({
        name: nodeName,
        props: fc
          .uniqueArray(fc.tuple(propName, fc.uint8Array({ maxLength: 24 })), {
            maxLength: 5,
            selector: ([name]) => name,
          })
          .map((entries) => new Map(entries)),
        children: fc.oneof(
          { depthSize: 'small', withCrossShrink: true },
          fc.constant<FdtNode[]>([]),
          fc.uniqueArray(tie('node') as fc.Arbitrary<FdtNode>, { maxLength: 3, selector: (n) => n.name }),
        ),
      })
      .map(({ name, props, children }) => ({ name, props, children })),
  }))
  .node.map((root) => ({ ...root, name: '' }));

const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const reservations = fc.array(
  fc
    .tuple(
      u64.filter((a) => a !== 0n),
      u64,
    )
    .map(([address, size]) => ({ address, size })),
  { maxLength: 4 },
);

test('FDT trees survive encode/decode (property)', () => {
  fc.assert(
    fc.property(fdtTree, reservations, fc.nat({ max: 0xffff_ffff }), (root, reserveMap, bootCpuid) => {
      const decoded = decodeFdt(encodeFdt(root, { reserveMap, bootCpuid }));
      assert.deepEqual(decoded.root, root);
      assert.deepEqual(decoded.reserveMap, reserveMap);
      assert.equal(decoded.bootCpuid, bootCpuid);
    }),
    { numRuns: 300 },
  );
});

/** dtc and fdtdump come from Debian's device-tree-compiler; the cross-check must not be skipped. */
function deviceTreeTool(tool: 'dtc' | 'fdtdump', args: string[], input?: Uint8Array): Buffer {
  try {
    return execFileSync(tool, args, { input, stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      assert.fail(
        `${tool} not found: install the Debian package device-tree-compiler (apt-get install -y device-tree-compiler)`,
      );
    }
    throw error;
  }
}

const dtc = (args: string[], input?: Uint8Array): Buffer => deviceTreeTool('dtc', args, input);

test('dtc decompiles our FDT to the same names and values', () => {
  const root = fdtNode(
    '',
    {
      compatible: fdtString('kho-v4'),
      'preserved-memory-map': fdtU64(0x1000000n),
      '#address-cells': fdtU32(2),
      names: fdtStringList(['first', 'second']),
      empty: new Uint8Array(0),
      bytes: Uint8Array.of(0xde, 0xad, 0xbe),
    },
    [
      fdtNode('LUO', { 'preserved-data': fdtU64(0x1005000n), 'blob-size': fdtU64(32n) }),
      fdtNode('memory@1000', { reg: fdtU32(0x1000) }, [fdtNode('inner')]),
    ],
  );
  const blob = encodeFdt(root, { reserveMap: [{ address: 0x8000n, size: 0x1000n }], bootCpuid: 3 });
  const dts = dtc(['-q', '-I', 'dtb', '-O', 'dts', '-'], blob).toString('utf8');
  for (const line of [
    '/memreserve/\t0x0000000000008000 0x0000000000001000;',
    'compatible = "kho-v4";',
    'preserved-memory-map = <0x00 0x1000000>;',
    '#address-cells = <0x02>;',
    'empty;',
    'bytes = [de ad be];',
    'LUO {',
    'preserved-data = <0x00 0x1005000>;',
    'blob-size = <0x00 0x20>;',
    'memory@1000 {',
    'reg = <0x1000>;',
    'inner {',
  ]) {
    assert.ok(dts.includes(line), `dtc output lacks ${JSON.stringify(line)}:\n${dts}`);
  }
  // dtc 1.6 prints a string list as one string with \0; later versions as a list.
  assert.match(dts, /names = "first(", "|\\0)second";/);
  const dir = mkdtempSync(join(tmpdir(), 'luokit-fdt-'));
  try {
    const path = join(dir, 'our.dtb');
    writeFileSync(path, blob);
    const dump = deviceTreeTool('fdtdump', [path]).toString('utf8');
    assert.match(dump, /boot_cpuid_phys:\s+0x3/);
    assert.match(dump, /version:\s+17/);
    assert.match(dump, /size_dt_struct:\s+0x[0-9a-f]+/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('decodeFdt reads what dtc compiles', () => {
  const dts = `/dts-v1/;
/memreserve/ 0x10000 0x2000;
/ {
  compatible = "memblock-v1";
  bytes = [01 02 03];
  n1 {
    compatible = "reserve-mem-v1";
    start = <0xc06b 0x4000000>;
    size = <0x04 0x00>;
    list = "a", "b";
  };
};
`;
  const dir = mkdtempSync(join(tmpdir(), 'luokit-fdt-'));
  try {
    const source = join(dir, 'in.dts');
    const output = join(dir, 'out.dtb');
    writeFileSync(source, dts);
    dtc(['-q', '-I', 'dts', '-O', 'dtb', '-o', output, source]);
    const decoded = decodeFdt(readFileSync(output));
    assert.deepEqual(decoded.reserveMap, [{ address: 0x10000n, size: 0x2000n }]);
    assert.equal(readFdtString(decoded.root.props.get('compatible')!, 'compatible'), 'memblock-v1');
    assert.deepEqual([...decoded.root.props.get('bytes')!], [1, 2, 3]);
    const n1 = findFdtChild(decoded.root, 'n1')!;
    assert.equal(readFdtU64(n1.props.get('start')!, 'start'), 0xc06b04000000n);
    assert.equal(readFdtU64(n1.props.get('size')!, 'size'), 0x400000000n);
    assert.deepEqual(readFdtStringList(n1.props.get('list')!, 'list'), ['a', 'b']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('dtc agrees with random trees (property)', () => {
  fc.assert(
    fc.property(fdtTree, (root) => {
      const blob = encodeFdt(root);
      const dts = dtc(['-q', '-I', 'dtb', '-O', 'dts', '-'], blob);
      const back = dtc(['-q', '-I', 'dts', '-O', 'dtb', '-'], dts);
      assert.deepEqual(decodeFdt(back).root, root);
    }),
    { numRuns: 15 },
  );
});

function patch(bytes: Uint8Array, offset: number, values: number[]): Uint8Array {
  const copy = bytes.slice();
  copy.set(values, offset);
  return copy;
}
