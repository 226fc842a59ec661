/**
 * native/include/luokit/liveupdate.h (the LUO uAPI of luokit's C programs) and src/uapi
 * (its TypeScript twin) say the same: every command's number, every struct's size, the
 * session name's field. A C program built against the header prints what it holds.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { LUO_IOCTLS, type LuoIoctlName } from '../src/uapi/ioctl.js';
import {
  FD_ARG_SIZE,
  FINISH_ARG_SIZE,
  GET_NAME_ARG_SIZE,
  SESSION_ARG_SIZE,
  SESSION_NAME_FIELD_BYTES,
} from '../src/uapi/structs.js';
import { ROOT } from './support/luod.js';

const HEADER = path.join(ROOT, 'native/include/luokit/liveupdate.h');

test('the C header and src/uapi agree on every command number, struct size and the name field', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-uapi-h-'));
  try {
    const source = path.join(dir, 'print.c');
    const commands: LuoIoctlName[] = [
      'CREATE_SESSION',
      'RETRIEVE_SESSION',
      'PRESERVE_FD',
      'RETRIEVE_FD',
      'FINISH',
      'GET_NAME',
    ];
    fs.writeFileSync(
      source,
      [
        '#include <stdio.h>',
        `#include "${HEADER}"`,
        'int main(void) {',
        ...commands.map((name) => `  printf("${name} %u\\n", (unsigned)LUO_${name});`),
        '  printf("session %zu\\nfd %zu\\nfinish %zu\\nget_name %zu\\nname %d\\n",',
        '         sizeof(struct luo_session_arg), sizeof(struct luo_fd_arg),',
        '         sizeof(struct luo_finish_arg), sizeof(struct luo_get_name_arg), LUO_NAME_LEN);',
        '  return 0;',
        '}',
      ].join('\n'),
    );
    const binary = path.join(dir, 'print');
    execFileSync('cc', ['-std=c11', '-Wall', '-Wextra', '-Werror', '-o', binary, source]);
    const printed = new Map(
      execFileSync(binary, { encoding: 'utf8' })
        .trim()
        .split('\n')
        .map((line) => line.split(' ') as [string, string]),
    );
    assert.equal(LUO_IOCTLS.length, commands.length, 'every uAPI command is in the header');
    for (const ioctl of LUO_IOCTLS) assert.equal(Number(printed.get(ioctl.name)), ioctl.number, ioctl.name);
    assert.equal(Number(printed.get('session')), SESSION_ARG_SIZE);
    assert.equal(Number(printed.get('fd')), FD_ARG_SIZE);
    assert.equal(Number(printed.get('finish')), FINISH_ARG_SIZE);
    assert.equal(Number(printed.get('get_name')), GET_NAME_ARG_SIZE);
    assert.equal(Number(printed.get('name')), SESSION_NAME_FIELD_BYTES);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("no C program of luokit's restates the uAPI: each includes the header", () => {
  const programs = [
    'native/emu-shim/luoemu.c',
    'native/emu-shim/test/probe.c',
    'test/differential/luofuzz.c',
    'test/emu-parity/parity.c',
    'test/c-client/luo_client.c',
    'test/vm/floor/luo_floor.c',
    'test/vm/vmm/luo_vmm.c',
  ];
  for (const program of programs) {
    const text = fs.readFileSync(path.join(ROOT, program), 'utf8');
    assert.match(text, /#include "[./]*(native\/)?include\/luokit\/liveupdate\.h"/, program);
    assert.doesNotMatch(
      text,
      /#define \w+ 0xba[0-9a-f]{2}u?\b/i,
      `${program} defines an ioctl number itself`,
    );
    assert.doesNotMatch(
      text,
      /^struct \w*(session|fd|finish|name)_arg \{/m,
      `${program} defines a uAPI struct itself`,
    );
  }
});
