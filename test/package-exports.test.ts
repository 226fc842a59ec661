/**
 * The library as another package sees it: `luokit/client`, `luokit/kernel`
 * and `luokit/protocol` resolve through package.json's "exports" (from a
 * directory whose node_modules/luokit links here, after the build), run, and
 * type-check; the daemon's insides do not resolve at all.
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { LineChannel } from '../src/protocol/lines.js';
import { UnixServer } from '../src/sys/unix-socket.js';

const ROOT = path.resolve(import.meta.dirname, '..');

/** A VMM author's first program: HELLO through luokit/client, a session check through luokit/kernel. */
const CONSUMER = `
import { LuoClient, LuoClientError } from 'luokit/client';
import { adoptSession, detectBackend } from 'luokit/kernel';
import { StartPreservationEvent } from 'luokit/protocol';

const client = await LuoClient.connect(process.argv[2]);
const hello = await client.hello({ client: 'outside/1' });
client.close();
let adopt = 'accepted';
try {
  adoptSession({ fd: 0, closed: false });
} catch (err) {
  adopt = err.code;
}
const missing = await LuoClient.connect('/nonexistent/luod.sock').catch((err) => err);
console.log(JSON.stringify({
  server: hello.server,
  backend: detectBackend('/nonexistent/liveupdate'),
  missing: missing instanceof LuoClientError ? missing.code : String(missing),
  event: StartPreservationEvent.safeParse({ event: 'START_PRESERVATION' }).success,
  adopt,
}));
`;

const TYPED = `
import { type HelloResult, LuoClient, type PreservationRequest } from 'luokit/client';
import { openDevice, type Session } from 'luokit/kernel';
import type { ClaimReply } from 'luokit/protocol';

export async function run(path: string): Promise<string> {
  const client = await LuoClient.connect(path);
  const hello: HelloResult = await client.hello();
  client.onPreserve((sessions: Session[], request: PreservationRequest) => {
    sessions[0]?.preserveFd(0, 1n);
    void request.deadline.getTime();
  });
  const reply: ClaimReply = { id: 'vm-1', update: 'u-1', sessions: ['vm-1'] };
  openDevice({ backend: 'emulated' }).close();
  return hello.server + reply.id;
}
`;

let dir: string;
let server: UnixServer;
const socketPath = () => path.join(dir, 'luod.sock');

before(() => {
  assert.ok(
    fs.existsSync(path.join(ROOT, 'dist/client/index.js')),
    'dist/ is not built: npm test builds it (npm run build)',
  );
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-outside-'));
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(ROOT, path.join(dir, 'node_modules/luokit'), 'dir');
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'outside', type: 'module' }));
  fs.writeFileSync(path.join(dir, 'consumer.mjs'), CONSUMER);
  fs.writeFileSync(path.join(dir, 'typed.ts'), TYPED);
  server = UnixServer.listen(socketPath());
  server.on('connection', (socket) => {
    const channel = new LineChannel(socket);
    channel.on('message', (value) => {
      const command = value as { seq?: number };
      void channel.send({
        seq: command.seq,
        ok: true,
        version: 1,
        server: 'luod/fake',
        backend: 'emulated',
        limits: { max_line: 65536, max_fds: 16, max_clients: 256, max_id: 48 },
      });
    });
  });
});

after(() => {
  server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('luokit/client, luokit/kernel and luokit/protocol resolve and work from another package', async () => {
  // Not spawnSync: the fake luod answering it runs on this process's event loop.
  const stdout = await new Promise<string>((resolve, reject) =>
    execFile(
      process.execPath,
      ['consumer.mjs', socketPath()],
      { cwd: dir, timeout: 60_000 },
      (err, out, errOut) => (err ? reject(new Error(`${err.message}\n${errOut}`)) : resolve(out)),
    ),
  );
  assert.deepEqual(JSON.parse(stdout), {
    server: 'luod/fake',
    backend: 'emulated',
    missing: 'ENOENT',
    event: false,
    adopt: 'EINVAL',
  });
});

test('what is not exported does not resolve (the daemon, the emulator, dist/ paths)', () => {
  for (const specifier of ['luokit', 'luokit/daemon', 'luokit/dist/daemon/luod.js', 'luokit/kernel/emu']) {
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', `await import('${specifier}')`], {
      cwd: dir,
      encoding: 'utf8',
    });
    assert.notEqual(run.status, 0, `${specifier} resolved`);
    assert.match(run.stderr, /ERR_PACKAGE_PATH_NOT_EXPORTED/, specifier);
  }
});

test('the exported types check in a TypeScript consumer (module nodenext)', () => {
  fs.writeFileSync(
    path.join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        module: 'nodenext',
        moduleResolution: 'nodenext',
        target: 'es2023',
        lib: ['es2023', 'esnext.disposable'],
        strict: true,
        noEmit: true,
        skipLibCheck: true,
        typeRoots: [path.join(ROOT, 'node_modules/@types')],
        types: ['node'],
      },
      files: ['typed.ts'],
    }),
  );
  const tsc = path.join(ROOT, 'node_modules/typescript/bin/tsc');
  const run = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: dir, encoding: 'utf8' });
  assert.equal(run.status, 0, `${run.stdout}${run.stderr}`);
});
