/**
 * The capture part's host-side logic without QEMU (docs/vm.md): the QMP client against a
 * fake QMP server on a unix socket, and the comparison of an inspect report with what the
 * guest preserved (test/vm/capture.ts), on a real report: the emulated kernel's handover of
 * the same sessions, read by inspectHandover.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { writeHandover } from '../../src/abi/handover.js';
import { writeMemfdContents } from '../../src/abi/memfd.js';
import { PagedMemory, PhysicalMemoryWriter } from '../../src/abi/memory.js';
import { type HandoverReport, inspectHandover } from '../../src/inspect/report.js';
import { QmpClient, QmpError } from '../../src/qemu/qmp.js';
import {
  CAPTURE_SESSIONS,
  type CaptureExpectation,
  compareCapture,
  contentOf,
  describeDebugfsLuo,
  pagesOf,
} from './capture.js';

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-capture-test-'));
}

/** A QMP server that greets, answers each command with `answer(command)`, and records them. */
function fakeQmp(
  socketPath: string,
  answer: (message: { execute: string; arguments?: unknown; id?: unknown }) => object | undefined,
): { server: net.Server; received: { execute: string; arguments?: unknown }[] } {
  const received: { execute: string; arguments?: unknown }[] = [];
  const server = net.createServer((socket) => {
    socket.write(`${JSON.stringify({ QMP: { version: { qemu: { major: 9 } }, capabilities: [] } })}\r\n`);
    let buffered = '';
    socket.on('data', (chunk) => {
      buffered += chunk.toString();
      for (let end = buffered.indexOf('\n'); end >= 0; end = buffered.indexOf('\n')) {
        const message = JSON.parse(buffered.slice(0, end));
        buffered = buffered.slice(end + 1);
        received.push(message);
        const reply = answer(message);
        if (reply !== undefined) socket.write(`${JSON.stringify({ ...reply, id: message.id })}\r\n`);
      }
    });
  });
  server.listen(socketPath);
  return { server, received };
}

test('QMP: greeting, capabilities, a command and its return, events kept aside', async () => {
  const dir = tempDir();
  const socketPath = path.join(dir, 'qmp.sock');
  const { server, received } = fakeQmp(socketPath, (m) => {
    if (m.execute === 'dump-guest-memory') {
      return { return: {} };
    }
    return { return: {} };
  });
  try {
    const qmp = await QmpClient.connect(socketPath, { timeoutMs: 5_000 });
    const result = await qmp.execute('dump-guest-memory', { paging: false, protocol: 'file:/tmp/x' });
    assert.deepEqual(result, {});
    assert.deepEqual(
      received.map((m) => m.execute),
      ['qmp_capabilities', 'dump-guest-memory'],
    );
    assert.deepEqual(received[1]!.arguments, { paging: false, protocol: 'file:/tmp/x' });
    qmp.close();
  } finally {
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('QMP: an error answer rejects with its class and description; events are not answers', async () => {
  const dir = tempDir();
  const socketPath = path.join(dir, 'qmp.sock');
  let sockets: net.Socket[] = [];
  const server = net.createServer((socket) => {
    sockets.push(socket);
    socket.write('{"QMP": {"version": {}, "capabilities": []}}\r\n');
    socket.on('data', (chunk) => {
      for (const line of chunk
        .toString()
        .split('\n')
        .filter((l) => l.trim() !== '')) {
        const m = JSON.parse(line);
        if (m.execute === 'qmp_capabilities') socket.write(`{"return": {}, "id": ${m.id}}\r\n`);
        else {
          // An event first, with no id: it must not settle the command.
          socket.write('{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}\r\n');
          socket.write(
            `{"error": {"class": "GenericError", "desc": "dump: failed to save memory"}, "id": ${m.id}}\r\n`,
          );
        }
      }
    });
  });
  server.listen(socketPath);
  try {
    const qmp = await QmpClient.connect(socketPath, { timeoutMs: 5_000 });
    await assert.rejects(
      qmp.execute('dump-guest-memory', { paging: false, protocol: 'file:/nope' }),
      (e: unknown) =>
        e instanceof QmpError && e.errorClass === 'GenericError' && /failed to save memory/.test(e.desc),
    );
    assert.deepEqual(
      qmp.events.map((e) => e.event),
      ['STOP'],
    );
    qmp.close();
  } finally {
    for (const s of sockets) s.destroy();
    sockets = [];
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('QMP: waits for a socket that appears late; gives up with a clear error on none', async () => {
  const dir = tempDir();
  const socketPath = path.join(dir, 'qmp.sock');
  let server: net.Server | undefined;
  const late = setTimeout(() => {
    server = fakeQmp(socketPath, () => ({ return: {} })).server;
  }, 300);
  try {
    const qmp = await QmpClient.connect(socketPath, { timeoutMs: 10_000, retryMs: 50 });
    qmp.close();
    await assert.rejects(
      QmpClient.connect(path.join(dir, 'absent.sock'), { timeoutMs: 300, retryMs: 50 }),
      /cannot connect to QMP at .*absent\.sock within 300 ms/,
    );
  } finally {
    clearTimeout(late);
    server?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('QMP: QEMU going away fails the pending command instead of hanging', async () => {
  const dir = tempDir();
  const socketPath = path.join(dir, 'qmp.sock');
  const { server } = fakeQmp(socketPath, (m) =>
    m.execute === 'qmp_capabilities' ? { return: {} } : undefined,
  );
  const sockets: net.Socket[] = [];
  server.on('connection', (s) => sockets.push(s));
  try {
    const qmp = await QmpClient.connect(socketPath, { timeoutMs: 5_000 });
    const pending = qmp.execute('dump-guest-memory', { paging: false, protocol: 'file:/x' }, 30_000);
    setTimeout(() => {
      for (const s of sockets) s.destroy();
    }, 100);
    await assert.rejects(pending, /QMP dump-guest-memory: QEMU closed the QMP connection/);
  } finally {
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------

/** What the guest would write for CAPTURE_SESSIONS (content digests are not compared by inspect). */
function expectation(): CaptureExpectation {
  return {
    schema: 'luokit-capture/1',
    release: '7.2.13-test',
    sessions: CAPTURE_SESSIONS.map((s) => ({
      name: s.name,
      files: s.files.map((f) => ({
        token: f.token,
        size: f.size,
        pos: f.pos,
        seals: f.seals,
        pages: pagesOf(f.size),
        sha256: 'not compared',
      })),
    })),
  };
}

/** A real inspect report: CAPTURE_SESSIONS handed over by src/abi's writer, read back by inspect. */
function reportOfCaptureSessions(): HandoverReport {
  const memory = new PagedMemory();
  const writer = new PhysicalMemoryWriter(memory);
  const written = writeHandover(writer, {
    liveupdateNum: 1n,
    previousRelease: '7.2.13-test',
    kexecCount: 1,
    sessions: CAPTURE_SESSIONS.map((s) => ({
      name: s.name,
      files: s.files.map((f) => ({
        token: BigInt(f.token),
        compatible: 'memfd-v2',
        memfd: {
          pos: BigInt(f.pos),
          size: BigInt(f.size),
          seals: f.seals,
          folios: writeMemfdContents(writer, contentOf(f).image, { size: BigInt(f.size) }),
        },
      })),
    })),
  });
  return inspectHandover(written.fdt, memory, {
    kind: 'dump',
    stateDir: null,
    handover: null,
    fdt: 'test',
    fdtPa: null,
    memory: 'test',
    memoryFormat: 'raw',
    memoryRanges: [],
  });
}

test('compareCapture: a faithful report of the preserved sessions has no differences', () => {
  const report = reportOfCaptureSessions();
  assert.equal(report.verdict, 'ok');
  assert.equal(report.sessions.length, CAPTURE_SESSIONS.length);
  assert.deepEqual(compareCapture(expectation(), report), []);
});

test('compareCapture: names each difference (session, token, size, position, seals, folios, verdict)', () => {
  const report = reportOfCaptureSessions();
  const damaged = structuredClone(report);
  const alpha = damaged.sessions[0]!;
  alpha.files[0]!.memfd!.pos = 778;
  alpha.files[0]!.memfd!.seals = 0;
  alpha.files[2]!.memfd!.folios!.count -= 1;
  damaged.sessions[1]!.files[0]!.memfd!.size = 4096;
  damaged.sessions[1]!.files[1]!.token = '44';
  damaged.sessions.pop();
  damaged.ok = false;
  damaged.verdict = 'retrieve-fails';
  damaged.kexecMetadata!.previousRelease = '7.1.0';
  const problems = compareCapture(expectation(), damaged);
  const expected = [
    /^verdict retrieve-fails/,
    /^kexec-metadata previous release '7\.1\.0', preserved on '7\.2\.13-test'/,
    /^sessions \["capture-alpha","capture-beta"\], preserved \["capture-alpha","capture-beta","capture-empty"\]/,
    /^session capture-alpha token 5500389665952121672: position 778, preserved 777/,
    /^session capture-alpha token 5500389665952121672: seals 0, preserved 6/,
    /^session capture-alpha token 18446744073709551557: folio count 63, preserved 64/,
    /^session capture-beta: tokens 42,44, preserved 42,43/,
    /^session capture-beta token 42: size 4096, preserved 1048577/,
  ];
  for (const pattern of expected) {
    assert.ok(
      problems.some((p) => pattern.test(p)),
      `missing ${pattern}; got:\n${problems.join('\n')}`,
    );
  }
  assert.equal(problems.length, expected.length, problems.join('\n'));
});

test('capture content: dense files are all written, sparse ones three bytes, sizes exact', () => {
  for (const session of CAPTURE_SESSIONS) {
    for (const file of session.files) {
      const { writes, image } = contentOf(file);
      assert.equal(image.length, file.size);
      const end = Math.max(0, ...writes.map(([offset, bytes]) => offset + bytes.length));
      assert.equal(end, file.size, `writes of token ${file.token} end at the size`);
      if (file.content === 'sparse') assert.equal(writes.length, 3);
      // The same token gives the same bytes in both boots.
      assert.deepEqual(contentOf(file).image, image);
    }
  }
  const tokens = CAPTURE_SESSIONS.flatMap((s) => s.files.map((f) => f.token));
  assert.equal(new Set(tokens).size, tokens.length, 'tokens are distinct');
});

test('describeDebugfsLuo: tells the handed-over luo_ser from a reused page', () => {
  const luo = {
    pa: '0x7e7000',
    compatible: 'luo-v5',
    liveupdateNum: 1,
    sessionsPa: '0xa56000',
    flbsPa: '0x7e6000',
    sessionBlocks: ['0xa56000'],
  };
  const blob = new Uint8Array(32);
  blob.set(new TextEncoder().encode('luo-v5'));
  const view = new DataView(blob.buffer);
  view.setBigUint64(8, 1n, true);
  view.setBigUint64(16, 0xa56000n, true);
  assert.match(
    describeDebugfsLuo(blob, luo),
    /^still the handed-over luo_ser \(luo-v5, sessions at 0xa56000\)/,
  );
  const elf = Uint8Array.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 3, ...new Array(24).fill(0)]);
  assert.match(describeDebugfsLuo(elf, luo), /^not the handed-over luo_ser any more: compatible "\u007fELF/);
  assert.equal(describeDebugfsLuo(blob, null), 'no luo_ser in the dump to compare with');
});
