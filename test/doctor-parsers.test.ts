/** The small parsers behind `luoctl doctor`, checked against the kernel's own rules. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bootSwitch, parseKernelBool, parseKernelCmdline, splitKernelCmdline } from '../src/host/cmdline.js';
import { kconfigState, parseKernelConfig } from '../src/host/kconfig.js';
import { handoverAbiOf, parseKernelRelease } from '../src/host/kernel-release.js';
import { parseEffectiveCapabilities } from '../src/host/kexec.js';
import { debugfsMounted } from '../src/host/kho-debugfs.js';
import { parseShmemThp } from '../src/host/shmem-thp.js';
import { parseSystemctlVersion } from '../src/host/systemd.js';

describe('kernel command line', () => {
  it('splits like parse_args: quotes group, "--" ends the kernel part', () => {
    assert.deepEqual(splitKernelCmdline('root=/dev/vda1  dyndbg="file a.c +p" liveupdate=on -- init=x'), [
      'root=/dev/vda1',
      'dyndbg=file a.c +p',
      'liveupdate=on',
    ]);
    assert.deepEqual(splitKernelCmdline('"quiet" --'), ['quiet']);
    assert.deepEqual(splitKernelCmdline(''), []);
  });

  it('reads booleans like kstrtobool', () => {
    for (const value of ['on', 'ON', '1', 'y', 'Y', 'yes', 't', 'true', 'enable'])
      assert.equal(parseKernelBool(value), true, value);
    for (const value of ['off', 'Off', '0', 'n', 'no', 'f', 'false', 'disable'])
      assert.equal(parseKernelBool(value), false, value);
    for (const value of [undefined, '', 'o', 'maybe', '2'])
      assert.equal(parseKernelBool(value), undefined, String(value));
  });

  it('the last occurrence of a switch wins; a bare switch is malformed', () => {
    assert.deepEqual(bootSwitch(['kho=on', 'kho=off'], 'kho'), { value: 'off', enabled: false });
    assert.deepEqual(bootSwitch(['liveupdate'], 'liveupdate'), { value: '', enabled: undefined });
    assert.deepEqual(bootSwitch(['liveupdates=on'], 'liveupdate'), { value: undefined, enabled: undefined });
  });

  it('parses /proc/cmdline text', () => {
    const cmdline = parseKernelCmdline('console=ttyS0 liveupdate=1 kho=y\n');
    assert.equal(cmdline.raw, 'console=ttyS0 liveupdate=1 kho=y');
    assert.equal(cmdline.liveupdate.enabled, true);
    assert.equal(cmdline.kho.enabled, true);
  });
});

describe('kernel config', () => {
  const config = {
    source: '/boot/config-x',
    values: parseKernelConfig('CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D="text"\n# comment\n'),
  };

  it('tells enabled, disabled and absent options apart', () => {
    assert.equal(kconfigState(config, 'CONFIG_A'), 'enabled');
    assert.equal(kconfigState(config, 'CONFIG_B'), 'enabled');
    assert.equal(kconfigState(config, 'CONFIG_C'), 'disabled');
    assert.equal(kconfigState(config, 'CONFIG_E'), 'absent');
    assert.equal(config.values.get('CONFIG_D'), 'text');
  });
});

describe('kernel release', () => {
  it('parses uname -r forms', () => {
    assert.deepEqual(parseKernelRelease('6.18.44-fc-v595'), { major: 6, minor: 18 });
    assert.deepEqual(parseKernelRelease('7.3.0-rc7+'), { major: 7, minor: 3 });
    assert.equal(parseKernelRelease('vendor-kernel'), undefined);
  });

  it('maps versions to handover ABIs', () => {
    assert.equal(handoverAbiOf({ major: 6, minor: 18 }), undefined);
    assert.equal(handoverAbiOf({ major: 6, minor: 19 })?.luo, 'luo-v1');
    assert.equal(handoverAbiOf({ major: 7, minor: 1 })?.memfd, 'memfd-v2');
    assert.deepEqual(handoverAbiOf({ major: 7, minor: 3 }), {
      luo: 'luo-v5',
      kho: 'kho-v4',
      memfd: 'memfd-v2',
    });
    assert.equal(handoverAbiOf({ major: 7, minor: 4 }), undefined);
  });
});

describe('host details', () => {
  it('reads the effective capability set', () => {
    assert.equal(parseEffectiveCapabilities('CapPrm:\t0\nCapEff:\t000001ffffffffff\n'), 0x1ffffffffffn);
    assert.equal(parseEffectiveCapabilities('Name:\tx\n'), undefined);
  });

  it('finds debugfs in /proc/mounts only at /sys/kernel/debug', () => {
    assert.equal(debugfsMounted('debugfs /sys/kernel/debug debugfs rw 0 0\n'), true);
    assert.equal(
      debugfsMounted('debugfs /mnt/debug debugfs rw 0 0\ntmpfs /sys/kernel/debug tmpfs rw 0 0\n'),
      false,
    );
  });

  it('reads the systemd version', () => {
    assert.equal(parseSystemctlVersion('systemd 252 (252.38-1~deb12u1)\n+PAM +AUDIT\n'), 252);
    assert.equal(parseSystemctlVersion('garbage'), undefined);
  });
});

describe('shmem THP policy', () => {
  it('the bracketed word is the policy', () => {
    assert.equal(parseShmemThp('always within_size advise [never] deny force\n'), 'never');
    assert.equal(parseShmemThp('[always] within_size advise never'), 'always');
    assert.equal(parseShmemThp('always within_size'), undefined);
    assert.equal(parseShmemThp(''), undefined);
  });
});
