/**
 * Seeded mutations of a valid handover image: bit flips, rewritten pointers and counts,
 * dropped pages, a damaged or truncated root FDT. Whatever the damage, the decoders may
 * only succeed or throw AbiError (decodeHandover and friends, which turn AbiErrors into
 * problems, may not throw at all), and every run must finish quickly: all loops over
 * handover data are bounded.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { AbiError } from '../src/abi/errors.js';
import {
  checkHandover,
  decodeHandover,
  handoverCompatibles,
  readHandover,
  writeHandover,
} from '../src/abi/handover.js';
import { scanForKhoRoots } from '../src/abi/kho.js';
import { readMemfdContents, writeMemfdContents } from '../src/abi/memfd.js';
import { PAGE_SIZE, PagedMemory, PhysicalMemoryWriter } from '../src/abi/memory.js';

const HANDLERS = { fileHandlers: ['memfd-v2', 'test-handler-v1'] };
const SEED = 0x5eed_1ab1;
const RUNS = 4000;

function baseImage(): { memory: PagedMemory; fdt: Uint8Array; pages: bigint[] } {
  const memory = new PagedMemory();
  const writer = new PhysicalMemoryWriter(memory);
  const text = (s: string) => new TextEncoder().encode(s.repeat(300));
  const memfd = (content: Uint8Array, order: number, seals = 0) => ({
    pos: 1n,
    size: BigInt(content.byteLength),
    seals,
    folios: writeMemfdContents(writer, content, { order }),
  });
  const { fdt } = writeHandover(writer, {
    liveupdateNum: 4n,
    previousRelease: '7.2.13-amd64',
    kexecCount: 4,
    sessions: [
      {
        name: 'vm-1',
        files: [
          { token: 1n, compatible: 'memfd-v2', memfd: memfd(text('guest memory '), 1, 0x8) },
          { token: 2n, compatible: 'memfd-v2', memfd: memfd(new Uint8Array(0), 0) },
          { token: 3n, compatible: 'test-handler-v1', data: 0xdead_beefn },
        ],
      },
      { name: 'vm-2', files: [{ token: 9n, compatible: 'memfd-v2', memfd: memfd(text('state '), 0) }] },
      { name: 'empty', files: [] },
    ],
    flbs: [{ name: 'liveupdate-test-flb-v0', data: 0xfeed_f00d_cafe_bee0n, count: 1n }],
    reserveMem: [{ name: 'trace', start: 0x4000_0000n, size: 0x20_0000n }],
  });
  return { memory, fdt, pages: memory.pageAddresses() };
}

const base = baseImage();
const u64Choices = (pages: bigint[]) =>
  fc.oneof(
    fc.constantFrom(...pages),
    fc
      .tuple(fc.constantFrom(...pages), fc.integer({ min: 1, max: PAGE_SIZE - 1 }))
      .map(([pa, off]) => pa + BigInt(off)),
    fc.constantFrom(0n, 1n, 51n, 52n, 63n, 64n, 511n, 0xffffn, 1n << 52n, 1n << 63n, (1n << 64n) - 1n),
    fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  );

type Mutation =
  | { kind: 'flip'; page: number; bit: number }
  | { kind: 'word'; page: number; slot: number; value: bigint }
  | { kind: 'drop'; page: number }
  | { kind: 'fdt-flip'; bit: number }
  | { kind: 'fdt-word'; offset: number; value: number }
  | { kind: 'fdt-truncate'; length: number };

const pageIndex = fc.nat({ max: base.pages.length - 1 });
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  {
    arbitrary: fc.record({
      kind: fc.constant('flip' as const),
      page: pageIndex,
      bit: headerBiased(PAGE_SIZE * 8),
    }),
    weight: 4,
  },
  {
    arbitrary: fc.record({
      kind: fc.constant('word' as const),
      page: pageIndex,
      slot: fc.oneof(fc.nat({ max: 15 }), fc.nat({ max: PAGE_SIZE / 8 - 1 })),
      value: u64Choices(base.pages),
    }),
    weight: 5,
  },
  { arbitrary: fc.record({ kind: fc.constant('drop' as const), page: pageIndex }), weight: 1 },
  {
    arbitrary: fc.record({
      kind: fc.constant('fdt-flip' as const),
      bit: fc.nat({ max: base.fdt.byteLength * 8 - 1 }),
    }),
    weight: 2,
  },
  {
    arbitrary: fc.record({
      kind: fc.constant('fdt-word' as const),
      offset: fc.nat({ max: base.fdt.byteLength - 4 }),
      value: fc.oneof(
        fc.constantFrom(0, 1, 2, 3, 4, 9, 0xffff_ffff, base.fdt.byteLength),
        fc.nat({ max: 0xffff_ffff }),
      ),
    }),
    weight: 2,
  },
  {
    arbitrary: fc.record({
      kind: fc.constant('fdt-truncate' as const),
      length: fc.nat({ max: base.fdt.byteLength - 1 }),
    }),
    weight: 1,
  },
);

/** Bit positions, half of them in the first 128 bytes where headers and descriptors live. */
function headerBiased(bits: number): fc.Arbitrary<number> {
  return fc.oneof(fc.nat({ max: 128 * 8 - 1 }), fc.nat({ max: bits - 1 }));
}

function apply(mutations: Mutation[]): { memory: PagedMemory; fdt: Uint8Array } {
  const memory = base.memory.clone();
  let fdt = base.fdt.slice();
  for (const m of mutations) {
    switch (m.kind) {
      case 'flip': {
        const pa = base.pages[m.page]! + BigInt(m.bit >> 3);
        try {
          memory.write(pa, Uint8Array.of(memory.read(pa, 1)[0]! ^ (1 << (m.bit & 7))));
        } catch {
          // the page was dropped by an earlier mutation
        }
        break;
      }
      case 'word': {
        const bytes = new Uint8Array(8);
        new DataView(bytes.buffer).setBigUint64(0, m.value, true);
        memory.write(base.pages[m.page]! + BigInt(m.slot * 8), bytes);
        break;
      }
      case 'drop':
        memory.dropPage(base.pages[m.page]!);
        break;
      case 'fdt-flip':
        if (m.bit >> 3 < fdt.byteLength) fdt[m.bit >> 3]! ^= 1 << (m.bit & 7);
        break;
      case 'fdt-word':
        if (m.offset + 4 <= fdt.byteLength) new DataView(fdt.buffer).setUint32(m.offset, m.value);
        break;
      case 'fdt-truncate':
        fdt = fdt.slice(0, m.length);
        break;
    }
  }
  return { memory, fdt };
}

/** Runs `work`; anything thrown must be an AbiError. */
function onlyAbiErrors(what: string, work: () => unknown): void {
  try {
    work();
  } catch (error) {
    if (!(error instanceof AbiError)) {
      assert.fail(
        `${what} threw ${(error as Error)?.constructor?.name}: ${(error as Error)?.stack ?? String(error)}`,
      );
    }
  }
}

test('the base image is clean', () => {
  assert.deepEqual(checkHandover(base.fdt, base.memory, HANDLERS), []);
  assert.equal(readHandover(base.fdt, base.memory, HANDLERS).sessions.length, 3);
});

test(`${RUNS} seeded mutations: decoders succeed or throw AbiError, never anything else, never slowly`, () => {
  let slowest = 0;
  const reactions = new Map<string, number>();
  fc.assert(
    fc.property(fc.array(mutation, { minLength: 1, maxLength: 4 }), (mutations) => {
      const started = performance.now();
      const { memory, fdt } = apply(mutations);
      const decoding = decodeHandover(fdt, memory, HANDLERS);
      for (const problem of decoding.problems) {
        assert.ok(problem.error instanceof AbiError);
        reactions.set(problem.reaction, (reactions.get(problem.reaction) ?? 0) + 1);
      }
      onlyAbiErrors('readHandover', () => readHandover(fdt, memory, HANDLERS));
      handoverCompatibles(fdt, memory);
      for (const session of decoding.model?.sessions ?? []) {
        for (const file of session.files) {
          if (file.memfd)
            onlyAbiErrors('readMemfdContents', () => readMemfdContents(memory, file.memfd!, 1 << 20));
        }
      }
      slowest = Math.max(slowest, performance.now() - started);
    }),
    { seed: SEED, numRuns: RUNS },
  );
  assert.ok(slowest < 1000, `one decode took ${slowest.toFixed(0)} ms`);
  for (const reaction of ['cold-boot', 'panic', 'device-eio', 'retrieve-fails', 'warning']) {
    assert.ok(
      (reactions.get(reaction) ?? 0) > 0,
      `no mutation led to '${reaction}': the fuzzer misses a layer`,
    );
  }
});

test('scanning a damaged dump for KHO roots never throws', () => {
  fc.assert(
    fc.property(fc.array(mutation, { minLength: 1, maxLength: 6 }), (mutations) => {
      const { memory, fdt } = apply(mutations);
      memory.write(0x10_0000n, fdt);
      scanForKhoRoots(memory);
    }),
    { seed: SEED, numRuns: 200 },
  );
});
