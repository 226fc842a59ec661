/** How luoctl commands report results and errors (src/cli/output.ts). */
import assert from 'node:assert/strict';
import { openSync } from 'node:fs';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { Command } from 'commander';
import { commandAction, commandPath, describeError, ExitCode, Output } from '../src/cli/output.js';
import { Errno } from '../src/sys/errno.js';
import { SysError } from '../src/sys/error.js';

function capture(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
}

function nodeFsError(): unknown {
  try {
    openSync('/nonexistent/luokit', 'r');
  } catch (err) {
    return err;
  }
  assert.fail('open should have failed');
}

describe('describeError', () => {
  it('keeps the errno name of a SysError', () => {
    assert.deepEqual(describeError(new SysError('open', Errno.EBUSY, 'device is held by another agent')), {
      code: 'EBUSY',
      message: 'device is held by another agent',
    });
  });

  it('does not repeat the code Node puts in front of fs messages', () => {
    const { code, message } = describeError(nodeFsError());
    assert.equal(code, 'ENOENT');
    assert.match(message, /^no such file or directory, open/);
  });

  it('calls an error without a code INTERNAL and keeps it on one line', () => {
    assert.deepEqual(describeError(new Error('first\n  second')), {
      code: 'INTERNAL',
      message: 'first second',
    });
    assert.deepEqual(describeError('plain string'), { code: 'INTERNAL', message: 'plain string' });
  });
});

describe('Output', () => {
  it('prints an error as one line on stderr', () => {
    const stdout = capture();
    const stderr = capture();
    new Output(false, stdout.stream, stderr.stream).error(
      'doctor',
      new SysError('open', Errno.EACCES, 'permission denied'),
    );
    assert.equal(stderr.text(), 'luoctl: doctor: EACCES: permission denied\n');
    assert.equal(stdout.text(), '');
  });

  it('with --json prints the error as one JSON object on stdout', () => {
    const stdout = capture();
    const stderr = capture();
    new Output(true, stdout.stream, stderr.stream).error('doctor', new SysError('open', Errno.EBUSY, 'held'));
    assert.deepEqual(JSON.parse(stdout.text()), { ok: false, error: { code: 'EBUSY', message: 'held' } });
    assert.equal(stderr.text(), '');
  });

  it('shows the stack only with LUOKIT_DEBUG=1', (t) => {
    t.after(() => {
      delete process.env['LUOKIT_DEBUG'];
    });
    const stderr = capture();
    process.env['LUOKIT_DEBUG'] = '1';
    new Output(false, capture().stream, stderr.stream).error('doctor', new Error('boom'));
    assert.match(stderr.text(), /^luoctl: doctor: INTERNAL: boom\n/);
    assert.match(stderr.text(), /^\s+at /m);
  });

  it('prints results as text or as one JSON line', () => {
    const text = capture();
    new Output(false, text.stream).result({ a: 1 }, () => 'hello');
    assert.equal(text.text(), 'hello\n');
    const json = capture();
    new Output(true, json.stream).result({ a: 1 }, () => 'hello');
    assert.equal(json.text(), '{"a":1}\n');
  });
});

describe('commandAction', () => {
  it('turns a thrown error into the error line and exit code 1', async (t) => {
    const written: string[] = [];
    t.mock.method(process.stderr, 'write', (chunk: string) => written.push(chunk) > 0);
    const program = new Command('luoctl').exitOverride();
    const emu = program.command('emu');
    emu.command('start').action(
      commandAction(() => {
        throw new SysError('open', Errno.EBUSY, 'held by another agent');
      }),
    );
    const before = process.exitCode;
    try {
      await program.parseAsync(['emu', 'start'], { from: 'user' });
      assert.equal(process.exitCode, ExitCode.failure);
    } finally {
      process.exitCode = before;
    }
    assert.deepEqual(written, ['luoctl: emu start: EBUSY: held by another agent\n']);
  });

  it('names nested commands by their path below the program', () => {
    const program = new Command('luoctl');
    const start = program.command('emu').command('start');
    assert.equal(commandPath(start), 'emu start');
  });
});
