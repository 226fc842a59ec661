/**
 * `luoctl doctor` over fake hosts: a temp directory standing in for / (proc,
 * sys, boot) plus fake probes for what is not a file (device, kexec, systemctl, uname).
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, it, mock } from 'node:test';
import { gzipSync } from 'node:zlib';
import { Command } from 'commander';
import { register, renderDoctorReport } from '../src/cli/doctor.js';
import { type DoctorReport, diagnose, type LoadedFacts } from '../src/cli/doctor-report.js';
import { gatherHostFacts, type HostProbes } from '../src/host/probe.js';
import { capacityNeeds } from '../src/protocol/capacity.js';
import type { KexecFileLoadAvailability } from '../src/sys/kexec.js';

const RELEASE = '7.2.13-amd64';

const CAPABLE_CONFIG = [
  '# Automatically generated file; DO NOT EDIT.',
  'CONFIG_KEXEC_FILE=y',
  'CONFIG_KEXEC_HANDOVER=y',
  'CONFIG_KEXEC_HANDOVER_DEBUGFS=y',
  '# CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT is not set',
  'CONFIG_LIVEUPDATE=y',
  'CONFIG_LIVEUPDATE_MEMFD=y',
  'CONFIG_LOCALVERSION="-amd64"',
].join('\n');

const DEBUGFS_MOUNT = 'debugfs /sys/kernel/debug debugfs rw,nosuid,nodev,noexec,relatime 0 0';

/** Every file of a fake host; a null value leaves the file out. */
interface FakeFiles {
  '/proc/cmdline'?: string | null;
  '/proc/config.gz'?: Buffer | null;
  [path: string]: string | Buffer | null | undefined;
}

const roots: string[] = [];
after(() => {
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});

function capableFiles(): FakeFiles {
  return {
    '/proc/cmdline': `BOOT_IMAGE=/vmlinuz-${RELEASE} root=/dev/vda1 ro liveupdate=on kho=on quiet\n`,
    '/proc/config.gz': gzipSync(CAPABLE_CONFIG),
    '/proc/sys/kernel/kexec_load_disabled': '0\n',
    '/proc/self/status': 'Name:\tnode\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n',
    '/proc/mounts': `proc /proc proc rw 0 0\n${DEBUGFS_MOUNT}\n`,
    '/proc/1/comm': 'systemd\n',
    '/sys/kernel/debug/kho/out/scratch_len': '0x10000000\n',
  };
}

function makeRoot(files: FakeFiles): string {
  const root = mkdtempSync(join(tmpdir(), 'luokit-doctor-'));
  roots.push(root);
  for (const [path, content] of Object.entries(files)) {
    if (content === null || content === undefined) continue;
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), content);
  }
  return root;
}

function errnoError(code: string): Error {
  return Object.assign(new Error(`open '/dev/liveupdate': ${code}`), { code });
}

function capableProbes(): HostProbes {
  return {
    openDevice: () => ({ close: () => {} }),
    probeKexecFileLoad: () => 'available',
    systemctlVersion: () => 'systemd 262 (262.1-1)\n+PAM +AUDIT\n',
    osRelease: () => RELEASE,
  };
}

function doctor(files: FakeFiles = {}, probes: Partial<HostProbes> = {}): DoctorReport {
  const root = makeRoot({ ...capableFiles(), ...files });
  return diagnose(gatherHostFacts({ ...capableProbes(), ...probes }, root));
}

function check(report: DoctorReport, id: string) {
  const found = report.checks.find((c) => c.id === id);
  assert.ok(found, `no check ${id}`);
  return found;
}

function failedIds(report: DoctorReport): string[] {
  return report.checks.filter((c) => c.status === 'fail').map((c) => c.id);
}

const deviceError = (code: string): Partial<HostProbes> => ({
  openDevice: () => {
    throw errnoError(code);
  },
});

describe('doctor on a fully capable host', () => {
  it('says a live update can run, on the real backend', () => {
    const report = doctor();
    assert.deepEqual(failedIds(report), []);
    assert.equal(report.ok, true);
    assert.equal(report.backend, 'real');
    assert.deepEqual(report.kernel, {
      release: RELEASE,
      version: '7.2',
      luoCapable: true,
      abi: { luo: 'luo-v5', kho: 'kho-v4', memfd: 'memfd-v2' },
      configSource: '/proc/config.gz',
    });
    for (const c of report.checks.filter((c) => c.status === 'ok')) assert.equal(c.fix, undefined, c.id);
  });

  it('exits 0 through the registered command', async (t) => {
    const written: string[] = [];
    t.mock.method(process.stdout, 'write', (chunk: string) => written.push(chunk) > 0);
    const program = new Command('luoctl').option('--json').exitOverride();
    register(program, {
      host: capableProbes(),
      hostRoot: makeRoot(capableFiles()),
      luodFacts: async () => ({ running: true, kexecMode: 'systemd', holder: 'systemd-fd-store' }),
    });
    const before = process.exitCode;
    try {
      await program.parseAsync(['doctor', '--json'], { from: 'user' });
      assert.equal(process.exitCode, 0);
    } finally {
      process.exitCode = before;
    }
    const printed = JSON.parse(written.join(''));
    assert.equal(printed.ok, true);
    assert.deepEqual(printed.kexecMode.mode, 'systemd');
    assert.equal(printed.kexecMode.source, 'luod');
  });

  it('closes the device right after opening it', () => {
    const close = mock.fn();
    doctor({}, { openDevice: () => ({ close }) });
    assert.equal(close.mock.callCount(), 1);
  });
});

describe('each missing piece flips the verdict', () => {
  const cases: Array<{
    name: string;
    files?: FakeFiles;
    probes?: Partial<HostProbes>;
    fails: string[];
    fix: RegExp;
  }> = [
    {
      name: 'no /dev/liveupdate on an otherwise capable host',
      probes: deviceError('ENOENT'),
      fails: ['device'],
      fix: /dmesg/,
    },
    {
      name: 'a kernel older than 6.19',
      probes: { ...deviceError('ENOENT'), osRelease: () => '6.18.44-fc-v595' },
      fails: ['device', 'kernel-version'],
      fix: /6\.19 or later/,
    },
    {
      name: 'CONFIG_LIVEUPDATE_MEMFD not set',
      files: {
        '/proc/config.gz': gzipSync(
          CAPABLE_CONFIG.replace('CONFIG_LIVEUPDATE_MEMFD=y', '# CONFIG_LIVEUPDATE_MEMFD is not set'),
        ),
      },
      fails: ['config-liveupdate-memfd'],
      fix: /CONFIG_LIVEUPDATE_MEMFD=y/,
    },
    {
      name: 'CONFIG_LIVEUPDATE absent from the config',
      files: { '/proc/config.gz': gzipSync(CAPABLE_CONFIG.replace('CONFIG_LIVEUPDATE=y', '')) },
      fails: ['config-liveupdate'],
      fix: /CONFIG_LIVEUPDATE=y/,
    },
    {
      name: 'CONFIG_KEXEC_FILE not set',
      files: {
        '/proc/config.gz': gzipSync(
          CAPABLE_CONFIG.replace('CONFIG_KEXEC_FILE=y', '# CONFIG_KEXEC_FILE is not set'),
        ),
      },
      fails: ['config-kexec-file'],
      fix: /CONFIG_KEXEC_FILE=y/,
    },
    {
      name: 'no liveupdate= on the command line',
      files: { '/proc/cmdline': 'root=/dev/vda1 kho=on\n' },
      fails: ['cmdline-liveupdate'],
      fix: /Add liveupdate=on/,
    },
    {
      name: 'liveupdate=off',
      files: { '/proc/cmdline': 'root=/dev/vda1 liveupdate=off kho=on\n' },
      fails: ['cmdline-liveupdate'],
      fix: /Replace liveupdate=off with liveupdate=on/,
    },
    {
      name: 'a malformed liveupdate= value',
      files: { '/proc/cmdline': 'liveupdate=maybe kho=on\n' },
      fails: ['cmdline-liveupdate'],
      fix: /Replace liveupdate=maybe/,
    },
    {
      name: 'liveupdate=on only after "--" (it belongs to init)',
      files: { '/proc/cmdline': 'root=/dev/vda1 kho=on -- liveupdate=on\n' },
      fails: ['cmdline-liveupdate'],
      fix: /Add liveupdate=on/,
    },
    {
      name: 'kho=off',
      files: { '/proc/cmdline': 'liveupdate=on kho=off\n' },
      fails: ['cmdline-kho'],
      fix: /Replace kho=off with kho=on/,
    },
    {
      name: 'no kho= while KHO is off by default',
      files: { '/proc/cmdline': 'liveupdate=on\n' },
      fails: ['cmdline-kho'],
      fix: /Add kho=on/,
    },
    {
      name: 'kexec_file_load missing',
      probes: { probeKexecFileLoad: () => 'missing' },
      fails: ['kexec-file-load'],
      fix: /CONFIG_KEXEC_FILE=y/,
    },
    {
      name: 'kexec switched off by sysctl',
      files: { '/proc/sys/kernel/kexec_load_disabled': '1\n' },
      probes: { probeKexecFileLoad: () => 'not-permitted' },
      fails: ['kexec-file-load'],
      fix: /kexec_load_disabled/,
    },
    {
      name: 'no CAP_SYS_BOOT',
      files: { '/proc/self/status': 'CapEff:\t0000000000000000\n' },
      probes: { probeKexecFileLoad: () => 'not-permitted' },
      fails: ['kexec-file-load'],
      fix: /Run as root/,
    },
    {
      name: 'kexec refused for another reason (lockdown)',
      probes: { probeKexecFileLoad: () => 'not-permitted' },
      fails: ['kexec-file-load'],
      fix: /lockdown/,
    },
  ];

  for (const { name, files, probes, fails, fix } of cases) {
    it(name, () => {
      const report = doctor(files, probes);
      assert.equal(report.ok, false);
      assert.deepEqual(failedIds(report), fails);
      assert.match(check(report, fails[0]!).fix ?? '', fix);
    });
  }

  it('KHO on by default needs no kho=', () => {
    const config = CAPABLE_CONFIG.replace(
      '# CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT is not set',
      'CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT=y',
    );
    const report = doctor({ '/proc/cmdline': 'liveupdate=1\n', '/proc/config.gz': gzipSync(config) });
    assert.equal(report.ok, true);
    assert.match(check(report, 'cmdline-kho').finding, /ENABLE_DEFAULT=y/);
  });

  it('accepts the kernel boolean spellings of liveupdate=', () => {
    for (const value of ['on', '1', 'y', 'yes', 'true', 'Y', 'enable']) {
      const report = doctor({ '/proc/cmdline': `"liveupdate=${value}" kho=on` });
      assert.equal(check(report, 'cmdline-liveupdate').status, 'ok', value);
    }
  });
});

describe('the device', () => {
  it('EBUSY: another agent holds it, backend still real', () => {
    const report = doctor({}, deviceError('EBUSY'));
    const device = check(report, 'device');
    assert.equal(device.status, 'fail');
    assert.match(device.finding, /another process/);
    assert.match(device.finding, /another agent/);
    assert.match(device.fix ?? '', /fuser/);
    assert.equal(report.backend, 'real');
    assert.equal(report.ok, false);
  });

  it('EACCES: needs root or group permissions', () => {
    const device = check(doctor({}, deviceError('EACCES')), 'device');
    assert.match(device.finding, /Permission denied/);
    assert.match(device.fix ?? '', /root/);
    assert.match(device.fix ?? '', /group/);
  });

  it('EIO: the incoming state could not be restored', () => {
    const device = check(doctor({}, deviceError('EIO')), 'device');
    assert.match(device.finding, /could not restore/);
    assert.match(device.fix ?? '', /dmesg/);
  });

  it('ENOENT: emulated backend, and the report says VMs would not be preserved', () => {
    const report = doctor({}, deviceError('ENOENT'));
    assert.equal(report.backend, 'emulated');
    assert.match(check(report, 'device').finding, /does not exist/);
    assert.match(check(report, 'backend').finding, /--emulate/);
    assert.match(check(report, 'backend').finding, /NOT preserve VMs/);
  });

  it('ENOENT on a kernel without liveupdate=on points at the command line', () => {
    const report = doctor({ '/proc/cmdline': 'kho=on' }, deviceError('ENOENT'));
    assert.match(check(report, 'device').fix ?? '', /Add liveupdate=on/);
  });

  it('an error without an errno code is still reported', () => {
    const device = check(
      doctor(
        {},
        {
          openDevice: () => {
            throw new Error('boom');
          },
        },
      ),
      'device',
    );
    assert.equal(device.status, 'fail');
    assert.match(device.finding, /boom/);
  });
});

describe('kernel config', () => {
  it('missing config is unknown, not a crash; a working device implies the core options', () => {
    const report = doctor({ '/proc/config.gz': null });
    assert.equal(report.kernel.configSource, null);
    assert.equal(check(report, 'kernel-config').status, 'warn');
    assert.match(check(report, 'kernel-config').finding, /No kernel config found/);
    assert.equal(check(report, 'config-liveupdate').status, 'ok');
    assert.equal(check(report, 'config-kexec-file').status, 'ok');
    assert.equal(check(report, 'config-liveupdate-memfd').status, 'warn');
    assert.equal(report.ok, true);
  });

  it('missing config and no device: options are unknown, the device fails', () => {
    const report = doctor({ '/proc/config.gz': null }, deviceError('ENOENT'));
    assert.equal(check(report, 'config-liveupdate').status, 'warn');
    assert.match(check(report, 'config-liveupdate').finding, /unknown/);
    assert.deepEqual(failedIds(report), ['device']);
  });

  it('falls back to /boot/config-<release>, also when config.gz is corrupt', () => {
    for (const gz of [null, Buffer.from('not gzip')]) {
      const report = doctor({ '/proc/config.gz': gz, [`/boot/config-${RELEASE}`]: CAPABLE_CONFIG });
      assert.equal(report.kernel.configSource, `/boot/config-${RELEASE}`);
      assert.match(check(report, 'kernel-config').finding, /\/boot\/config-7\.2\.13-amd64/);
      assert.equal(report.ok, true);
    }
  });
});

describe('kernel version', () => {
  it('names the ABI of 6.19 to 7.1 as luo-v1', () => {
    const report = doctor({}, { osRelease: () => '7.1.3' });
    assert.equal(report.kernel.abi?.luo, 'luo-v1');
    assert.equal(check(report, 'kernel-version').status, 'ok');
  });

  it('warns about a kernel newer than the ABI table', () => {
    const report = doctor({}, { osRelease: () => '7.4.0-rc1' });
    assert.equal(report.kernel.abi, null);
    assert.equal(check(report, 'kernel-version').status, 'warn');
    assert.equal(report.ok, true);
  });

  it('an old kernel with a working device is a backport: a warning, not a failure', () => {
    const report = doctor({}, { osRelease: () => '6.12.0-vendor' });
    assert.equal(check(report, 'kernel-version').status, 'warn');
    assert.equal(report.kernel.luoCapable, false);
  });
});

describe('kexec_file_load without a syscall probe', () => {
  const noProbe = { probeKexecFileLoad: undefined } as Partial<HostProbes>;

  it('infers it from config, sysctl and capabilities', () => {
    const kexec = check(doctor({}, noProbe), 'kexec-file-load');
    assert.equal(kexec.status, 'ok');
    assert.match(kexec.finding, /inferred/);
  });

  it('no kexec_load_disabled sysctl means no kexec at all', () => {
    const report = doctor(
      { '/proc/sys/kernel/kexec_load_disabled': null, '/proc/sys/kernel/ostype': 'Linux' },
      noProbe,
    );
    assert.match(check(report, 'kexec-file-load').finding, /no kexec at all/);
    assert.equal(report.ok, false);
  });

  it('is unknown (a warning) when nothing tells', () => {
    const report = doctor(
      { '/proc/config.gz': null, '/proc/self/status': null, '/proc/sys/kernel/kexec_load_disabled': null },
      { ...noProbe, ...deviceError('ENOENT') },
    );
    assert.equal(check(report, 'kexec-file-load').status, 'warn');
  });

  it('uses the probe when given', () => {
    const probes: Array<[KexecFileLoadAvailability, string]> = [
      ['available', 'ok'],
      ['missing', 'fail'],
      ['not-permitted', 'fail'],
    ];
    for (const [answer, status] of probes) {
      assert.equal(
        check(doctor({}, { probeKexecFileLoad: () => answer }), 'kexec-file-load').status,
        status,
        answer,
      );
    }
  });
});

describe('KHO debugfs', () => {
  it('debugfs unmounted', () => {
    const debugfs = check(
      doctor({ '/sys/kernel/debug/kho/out/scratch_len': null, '/proc/mounts': 'proc /proc proc rw 0 0\n' }),
      'kho-debugfs',
    );
    assert.equal(debugfs.status, 'info');
    assert.match(debugfs.finding, /not mounted/);
    assert.match(debugfs.fix ?? '', /mount -t debugfs/);
  });

  it('debugfs mounted without kho/', () => {
    const debugfs = check(doctor({ '/sys/kernel/debug/kho/out/scratch_len': null }), 'kho-debugfs');
    assert.match(debugfs.finding, /CONFIG_KEXEC_HANDOVER_DEBUGFS/);
  });
});

describe('systemd', () => {
  it('systemd 261+ as PID 1 keeps fd stores across kexec', () => {
    assert.equal(check(doctor(), 'systemd').status, 'ok');
  });

  it('an older systemd warns and says to upgrade', () => {
    const systemd = check(
      doctor({}, { systemctlVersion: () => 'systemd 252 (252.38-1~deb12u1)\n' }),
      'systemd',
    );
    assert.equal(systemd.status, 'warn');
    assert.match(systemd.fix ?? '', /261/);
  });

  it('another PID 1 is context only', () => {
    const report = doctor({ '/proc/1/comm': 'process_api\n' }, { systemctlVersion: () => undefined });
    const systemd = check(report, 'systemd');
    assert.equal(systemd.status, 'info');
    assert.match(systemd.finding, /process_api, not systemd/);
    assert.equal(report.ok, true);
  });
});

describe('kexec mode', () => {
  const facts = (files: FakeFiles = {}, probes: Partial<HostProbes> = {}) =>
    gatherHostFacts({ ...capableProbes(), ...probes }, makeRoot({ ...capableFiles(), ...files }));
  const notRunning = { running: false, reason: 'ENOENT' } as const;

  it('auto: systemd 261+ as PID 1 means the systemd mode', () => {
    const report = diagnose(facts(), notRunning);
    assert.deepEqual(
      { mode: report.kexecMode.mode, source: report.kexecMode.source },
      { mode: 'systemd', source: 'auto' },
    );
    assert.match(
      check(report, 'kexec-mode').finding,
      /would use the systemd mode.*luod is not running: ENOENT/,
    );
  });

  it('auto: an older systemd or another PID 1 means standalone', () => {
    const old = diagnose(facts({}, { systemctlVersion: () => 'systemd 252 (252.38)\n' }), notRunning);
    assert.equal(old.kexecMode.mode, 'standalone');
    assert.match(old.kexecMode.why, /systemd 252 does not carry fd stores/);
    const other = diagnose(facts({ '/proc/1/comm': 'init\n' }), notRunning);
    assert.equal(other.kexecMode.mode, 'standalone');
    assert.match(other.kexecMode.why, /PID 1 is not systemd/);
  });

  it("the running luod's mode wins, and a systemd mode without a capable systemd warns", () => {
    const running = { running: true, kexecMode: 'standalone', holder: 'holder-process' } as const;
    const report = diagnose(facts(), running);
    assert.deepEqual(report.kexecMode, {
      mode: 'standalone',
      source: 'luod',
      why: 'the running luod uses it; its sessions are also held by the holder-process',
    });
    const risky = diagnose(facts({}, { systemctlVersion: () => 'systemd 252\n' }), {
      running: true,
      kexecMode: 'systemd',
      holder: 'systemd-fd-store',
    });
    const mode = check(risky, 'kexec-mode');
    assert.equal(mode.status, 'warn');
    assert.match(mode.finding, /sessions would be lost/);
    assert.match(mode.fix ?? '', /--kexec-mode standalone/);
  });
});

describe('next kernel (the gate)', () => {
  const facts = (files: FakeFiles = {}) =>
    gatherHostFacts(capableProbes(), makeRoot({ ...capableFiles(), ...files }));
  it("reports the loaded image's verdict: works, forced past a mismatch, nothing loaded", () => {
    const gate = (ok: boolean, forced: boolean) => ({
      outcome: ok ? 'works' : 'panic',
      ok,
      sentence: ok
        ? 'the next kernel (7.3) reads what this kernel writes'
        : 'the next kernel (7.1.4) reads luo-v4; this kernel writes luo-v5: the next kernel would panic',
      forced,
    });
    const luod = (loaded: LoadedFacts | null) => ({
      running: true as const,
      kexecMode: 'standalone' as const,
      holder: null,
      loaded,
    });
    const works = check(
      diagnose(facts({}), luod({ kernel: '/boot/a', gate: gate(true, false) })),
      'next-kernel',
    );
    assert.equal(works.status, 'ok');
    assert.match(works.finding, /reads what this kernel writes/);
    const forced = check(
      diagnose(facts({}), luod({ kernel: '/boot/b', gate: gate(false, true) })),
      'next-kernel',
    );
    assert.equal(forced.status, 'fail');
    assert.match(
      forced.finding,
      /--force: the next kernel \(7\.1\.4\) reads luo-v4; this kernel writes luo-v5: the next kernel would panic/,
    );
    assert.equal(check(diagnose(facts({}), luod(null)), 'next-kernel').status, 'info');
    assert.match(check(diagnose(facts({})), 'next-kernel').finding, /luod is not running/);
  });
});

describe('client capacity (luod --max-clients)', () => {
  const facts = (files: FakeFiles = {}) =>
    gatherHostFacts(capableProbes(), makeRoot({ ...capableFiles(), ...files }));
  const running = (maxClients: number, openFiles: number) =>
    ({
      running: true,
      kexecMode: 'standalone',
      holder: 'holder-process',
      capacity: { ...capacityNeeds(maxClients), open_files: openFiles },
    }) as const;

  it('without luod: what the default limit needs, somaxconn read from the host', () => {
    const c = check(diagnose(facts({ '/proc/sys/net/core/somaxconn': '4096\n' })), 'client-capacity');
    assert.equal(c.status, 'info');
    assert.match(c.finding, /--max-clients 1024\) serves 1024 clients: 9280 open files/);
    assert.match(c.finding, /listen queue of 2048 \(somaxconn 4096\)/);
    assert.match(c.finding, /FileDescriptorStoreMax=8193/);
  });

  it("the running luod's figures: ok when they fit, a warning naming each shortfall", () => {
    const fits = check(
      diagnose(facts({ '/proc/sys/net/core/somaxconn': '4096\n' }), running(1024, 65536)),
      'client-capacity',
    );
    assert.equal(fits.status, 'ok', fits.finding);
    const short = check(
      diagnose(facts({ '/proc/sys/net/core/somaxconn': '128\n' }), running(1024, 1024)),
      'client-capacity',
    );
    assert.equal(short.status, 'warn');
    assert.match(short.finding, /may open 1024 files, 9280 needed/);
    assert.match(short.finding, /somaxconn is 128/);
    assert.match(short.fix ?? '', /LimitNOFILE=9280/);
    assert.match(short.fix ?? '', /net\.core\.somaxconn=2048/);
  });
});

describe('report output', () => {
  it('JSON has one stable shape', () => {
    const report = JSON.parse(JSON.stringify(doctor({}, deviceError('EBUSY'))));
    assert.deepEqual(Object.keys(report), ['ok', 'backend', 'kexecMode', 'kernel', 'checks']);
    assert.deepEqual(Object.keys(report.kexecMode), ['mode', 'source', 'why']);
    assert.deepEqual(Object.keys(report.kernel), ['release', 'version', 'luoCapable', 'abi', 'configSource']);
    const ids = report.checks.map((c: { id: string }) => c.id);
    assert.equal(new Set(ids).size, ids.length);
    assert.deepEqual(ids, [
      'device',
      'backend',
      'kernel-version',
      'kernel-config',
      'config-liveupdate',
      'config-kexec-handover',
      'config-liveupdate-memfd',
      'config-kexec-file',
      'cmdline-liveupdate',
      'cmdline-kho',
      'kexec-file-load',
      'kho-debugfs',
      'systemd',
      'kexec-mode',
      'shmem-thp',
      'next-kernel',
      'client-capacity',
    ]);
    for (const c of report.checks) {
      assert.ok(['ok', 'warn', 'fail', 'info'].includes(c.status));
      assert.ok(typeof c.title === 'string' && typeof c.finding === 'string');
      if (c.status === 'fail' || c.status === 'warn') assert.equal(typeof c.fix, 'string', c.id);
    }
  });

  it('plain text aligns findings and indents fixes under them', () => {
    const text = renderDoctorReport(doctor({ '/proc/cmdline': 'kho=on' }, deviceError('ENOENT')));
    const lines = text.split('\n');
    const checkLines = lines.filter((line) => /^(ok|warn|FAIL|info) /.test(line));
    assert.equal(checkLines.length, 17);
    const column = checkLines[0]!.indexOf('/dev/liveupdate does not exist');
    for (const line of checkLines) assert.match(line.slice(column - 2, column), /^ {2}$/);
    const fixLines = lines.filter((line) => line.trimStart().startsWith('fix: '));
    assert.ok(fixLines.length >= 2);
    for (const line of fixLines) assert.equal(line.indexOf('fix: '), column);
    assert.match(lines.at(-1)!, /cannot live update: 2 checks failed/);
  });
});

describe('guest RAM folios (shmem THP)', () => {
  const control = '/sys/kernel/mm/transparent_hugepage/shmem_enabled';

  it('huge pages within size: ok', () => {
    const report = doctor({ [control]: 'always [within_size] advise never deny force\n' });
    assert.equal(check(report, 'shmem-thp').status, 'ok');
    assert.match(check(report, 'shmem-thp').finding, /within_size.*2 MiB folios/);
  });

  it('never (the kernel default): a warning that says how to fix it, and the host can still update', () => {
    const report = doctor({ [control]: 'always within_size advise [never] deny force\n' });
    const c = check(report, 'shmem-thp');
    assert.equal(c.status, 'warn');
    assert.match(c.finding, /never.*4 KiB folios/);
    assert.match(c.fix ?? '', /echo within_size > \/sys\/kernel\/mm\/transparent_hugepage\/shmem_enabled/);
    assert.equal(report.ok, true);
  });

  it('advise: depends on the VMMs; no THP in the kernel: said plainly', () => {
    assert.equal(
      check(doctor({ [control]: 'always within_size [advise] never\n' }), 'shmem-thp').status,
      'info',
    );
    const absent = check(doctor({ [control]: null }), 'shmem-thp');
    assert.equal(absent.status, 'info');
    assert.match(absent.finding, /CONFIG_TRANSPARENT_HUGEPAGE/);
  });
});
