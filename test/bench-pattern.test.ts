/**
 * The benchmark's data pattern must make verification meaningful (every page
 * distinct, any misplaced page caught) and its ratios must be computed the
 * right way round.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { measurement, median, ratio } from '../bench/lib.js';
import { PATTERN_PAGE, Pattern } from '../bench/pattern.js';
import { ftruncate, memfdCreate, pread, pwriteAll } from '../src/sys/index.js';

const CHUNK = 16 * PATTERN_PAGE;
// Three whole chunks, a partial one and a partial page.
const SIZE = 3 * CHUNK + 5 * PATTERN_PAGE + 123;

function patterned(pattern: Pattern, size = SIZE) {
  const fd = memfdCreate('bench-pattern');
  pattern.writeTo(fd.fd, size);
  return fd;
}

test('every page of the pattern is distinct', () => {
  const pattern = new Pattern(CHUNK);
  using fd = patterned(pattern);
  const pages = new Set<string>();
  for (let offset = 0; offset + PATTERN_PAGE <= SIZE; offset += PATTERN_PAGE) {
    pages.add(pread(fd, PATTERN_PAGE, offset).toString('hex'));
  }
  assert.equal(pages.size, Math.floor(SIZE / PATTERN_PAGE));
});

test('the pattern verifies in full and by sample, and is the same on every run', () => {
  const pattern = new Pattern(CHUNK);
  using fd = patterned(pattern);
  pattern.verifyAll(fd.fd, SIZE);
  assert.ok(pattern.verifySample(fd.fd, SIZE, 8) >= 2);
  // A second Pattern (another process, another run) expects the same bytes.
  new Pattern(CHUNK).verifyAll(fd.fd, SIZE);
});

test('swapped pages, a flipped byte, a zeroed page and a wrong size all fail', () => {
  const pattern = new Pattern(CHUNK);
  const pages = Math.ceil(SIZE / PATTERN_PAGE);
  {
    using fd = patterned(pattern);
    const a = pread(fd, PATTERN_PAGE, PATTERN_PAGE);
    const b = pread(fd, PATTERN_PAGE, CHUNK + PATTERN_PAGE); // same place in the next chunk
    pwriteAll(fd, b, PATTERN_PAGE);
    pwriteAll(fd, a, CHUNK + PATTERN_PAGE);
    assert.throws(() => pattern.verifyAll(fd.fd, SIZE), /first difference at byte 4100 /);
    assert.throws(() => pattern.verifySample(fd.fd, SIZE, pages), /first difference/);
  }
  {
    using fd = patterned(pattern);
    const byte = pread(fd, 1, SIZE - 1);
    pwriteAll(fd, Buffer.from([byte[0]! ^ 1]), SIZE - 1);
    assert.throws(() => pattern.verifyAll(fd.fd, SIZE), new RegExp(`first difference at byte ${SIZE - 1} `));
    // The last page is always in the sample.
    assert.throws(() => pattern.verifySample(fd.fd, SIZE, 2), /first difference/);
  }
  {
    using fd = patterned(pattern);
    pwriteAll(fd, Buffer.alloc(PATTERN_PAGE), 2 * CHUNK);
    assert.throws(() => pattern.verifyAll(fd.fd, SIZE), /first difference/);
  }
  {
    using fd = patterned(pattern);
    ftruncate(fd, SIZE - 1);
    assert.throws(() => pattern.verifyAll(fd.fd, SIZE), /is \d+ bytes, expected/);
  }
});

test('one page of the pattern on its own (pageInto) is that page of the file, in any chunk', () => {
  const pattern = new Pattern(CHUNK);
  using fd = patterned(pattern);
  pattern.chunk(2); // another chunk stamped: pageInto must not depend on it
  const page = Buffer.alloc(PATTERN_PAGE);
  for (const offset of [0, PATTERN_PAGE, CHUNK - PATTERN_PAGE, CHUNK, 3 * CHUNK + 4 * PATTERN_PAGE]) {
    assert.ok(pattern.pageInto(offset, page).equals(pread(fd, PATTERN_PAGE, offset)), `page at ${offset}`);
  }
  assert.throws(() => pattern.pageInto(100, page), /not page-aligned/);
});

test('verifyAll from an offset checks only from there on, across chunk boundaries', () => {
  const pattern = new Pattern(CHUNK);
  using fd = patterned(pattern);
  pwriteAll(fd, Buffer.alloc(PATTERN_PAGE, 0xee), 0);
  assert.throws(() => pattern.verifyAll(fd.fd, SIZE), /first difference at byte 0 /);
  pattern.verifyAll(fd.fd, SIZE, PATTERN_PAGE);
  pattern.verifyAll(fd.fd, SIZE, CHUNK + 100); // mid-page, mid-file
  pwriteAll(fd, Buffer.from([0]), 2 * CHUNK + 7);
  const byte = pread(fd, 1, 2 * CHUNK + 7)[0]!;
  if (byte === pattern.expected(2 * CHUNK + 7, 1)[0]) pwriteAll(fd, Buffer.from([1]), 2 * CHUNK + 7);
  assert.throws(
    () => pattern.verifyAll(fd.fd, SIZE, PATTERN_PAGE),
    new RegExp(`first difference at byte ${2 * CHUNK + 7} `),
  );
});

test('ratios are subject throughput over baseline throughput, from medians', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  const baseline = measurement('cp', 'baseline', [2, 1, 3], 1e9);
  const subject = measurement('handover', 'subject', [4, 4, 8], 1e9);
  const r = ratio(subject, baseline);
  assert.equal(r.ratio, 0.5); // 2 s vs 4 s for the same bytes
  assert.deepEqual(r.perRun, [0.5, 0.25, 0.375]);
});
