/**
 * Turns host facts into the doctor's verdict: one check per thing an operator
 * can fix, each saying what was found and, when it is not fine, what to do.
 * Pure: it reads only the facts, so every verdict can be tested without a LUO kernel.
 */
import { type KconfigState, kconfigState, kernelConfigSources } from '../host/kconfig.js';
import {
  compareKernelVersions,
  FIRST_LUO_KERNEL,
  formatKernelVersion,
  type HandoverAbi,
  handoverAbiOf,
  type KernelVersion,
  NEWEST_KNOWN_KERNEL,
  parseKernelRelease,
} from '../host/kernel-release.js';
import { KHO_DEBUGFS_OUT } from '../host/kho-debugfs.js';
import { type HostFacts, LIVEUPDATE_DEVICE } from '../host/probe.js';
import { HUGE_SHMEM_POLICIES, SHMEM_THP_CONTROL } from '../host/shmem-thp.js';
import { FD_STORE_PRESERVE_SYSTEMD } from '../host/systemd.js';
import type { Backend } from '../kernel/device.js';
import { type CapacityNeeds, capacityNeeds } from '../protocol/capacity.js';
import { DEFAULT_MAX_CLIENTS } from '../protocol/messages.js';
import type { KexecFileLoadAvailability } from '../sys/kexec.js';

/** 'fail' blocks a live update; 'warn' works but needs a look; 'info' is context. */
export type CheckStatus = 'ok' | 'warn' | 'fail' | 'info';

export interface DoctorCheck {
  readonly id: string;
  readonly title: string;
  readonly status: CheckStatus;
  readonly finding: string;
  /** What to do; present only when there is something to do. */
  readonly fix?: string;
}

/**
 * The doctor's verdict; `luoctl doctor --json` prints exactly this object.
 *  - ok: true only when a live update can really run on this host (no check failed).
 *  - backend: 'real' when /dev/liveupdate exists; else 'emulated', which luokit
 *    uses only when run with --emulate and which preserves nothing across a real reboot.
 *  - kernel.release: as `uname -r` prints it.
 *  - kernel.version: 'major.minor', or null when the release does not start with one.
 *  - kernel.luoCapable: whether the version is 6.19 (the first with LUO) or later; null when unknown.
 *  - kernel.abi: { luo, kho, memfd } compatible strings the version speaks; null before 6.19
 *    or after the newest kernel luokit knows.
 *  - kernel.configSource: the file the kernel config was read from, or null when none was found.
 *  - kexecMode: how luod reboots (docs/operations.md): { mode: 'standalone' |
 *    'systemd', source: 'luod' (asked the running luod) | 'auto' (what
 *    `luod --kexec-mode auto` would choose on this host), why }.
 *  - checks: in display order, each { id, title, status, finding, fix? }.
 */
export interface KexecModeReport {
  readonly mode: 'standalone' | 'systemd';
  readonly source: 'luod' | 'auto';
  readonly why: string;
}

/** What the running luod says about itself (STATUS), or why it could not be asked. */
/** The loaded kernel and the gate's verdict on it, as luod's STATUS says. */
export interface LoadedFacts {
  readonly kernel: string;
  readonly gate?: {
    readonly outcome: string;
    readonly ok: boolean;
    readonly sentence: string;
    readonly forced: boolean;
  };
}

export type LuodFacts =
  | {
      readonly running: true;
      readonly kexecMode: 'standalone' | 'systemd';
      readonly holder: string | null;
      /** undefined when luod did not say (an older luod); null when nothing is loaded. */
      readonly loaded?: LoadedFacts | null;
      /** Its client limit and open files (STATUS `capacity`; absent from an older luod). */
      readonly capacity?: CapacityNeeds & { readonly open_files: number | null };
    }
  | { readonly running: false; readonly reason: string };
export interface DoctorReport {
  readonly ok: boolean;
  readonly backend: Backend;
  readonly kexecMode: KexecModeReport;
  readonly kernel: {
    readonly release: string;
    readonly version: string | null;
    readonly luoCapable: boolean | null;
    readonly abi: HandoverAbi | null;
    readonly configSource: string | null;
  };
  readonly checks: readonly DoctorCheck[];
}

type Outcome = Omit<DoctorCheck, 'id' | 'title'>;

/** The facts plus what several checks derive from them. */
interface Host {
  readonly facts: HostFacts;
  readonly luod: LuodFacts | undefined;
  readonly version: KernelVersion | undefined;
  /** /dev/liveupdate opened: proof that LUO and KHO are built in and enabled. */
  readonly deviceWorks: boolean;
  readonly deviceExists: boolean;
}

const ok = (finding: string): Outcome => ({ status: 'ok', finding });
const info = (finding: string, fix?: string): Outcome =>
  fix ? { status: 'info', finding, fix } : { status: 'info', finding };
const warn = (finding: string, fix: string): Outcome => ({ status: 'warn', finding, fix });
const fail = (finding: string, fix: string): Outcome => ({ status: 'fail', finding, fix });

/** Errno names meaning no LUO driver stands behind /dev/liveupdate. */
const NO_DEVICE_CODES = new Set(['ENOENT', 'ENODEV', 'ENXIO']);

function configState(host: Host, option: string): KconfigState | undefined {
  const config = host.facts.kernelConfig;
  return config ? kconfigState(config, option) : undefined;
}

/** Known to be off; an unknown option (no config) is not. */
function configLacks(host: Host, option: string): boolean {
  const state = configState(host, option);
  return state === 'disabled' || state === 'absent';
}

function predatesLuo(version: KernelVersion): boolean {
  return compareKernelVersions(version, FIRST_LUO_KERNEL) < 0;
}

/** Whether KHO is on for this boot (LUO turns itself off without it); undefined when the facts cannot tell. */
function khoEnabled(host: Host): boolean | undefined {
  const cmdline = host.facts.cmdline;
  if (!cmdline) return undefined;
  if (cmdline.kho.enabled !== undefined) return cmdline.kho.enabled;
  const byDefault = configState(host, 'CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT');
  return byDefault === undefined ? undefined : byDefault === 'enabled';
}

/** The first missing piece on the way to /dev/liveupdate, as an instruction. */
function deviceMissingFix(host: Host): string {
  if (host.version && predatesLuo(host.version)) {
    return 'Boot a kernel 6.19 or later built with CONFIG_LIVEUPDATE=y, CONFIG_KEXEC_HANDOVER=y and CONFIG_LIVEUPDATE_MEMFD=y, with liveupdate=on on its command line.';
  }
  if (configLacks(host, 'CONFIG_LIVEUPDATE') || configLacks(host, 'CONFIG_KEXEC_HANDOVER')) {
    return 'Boot a kernel built with CONFIG_LIVEUPDATE=y and CONFIG_KEXEC_HANDOVER=y, with liveupdate=on on its command line.';
  }
  if (host.facts.cmdline && host.facts.cmdline.liveupdate.enabled !== true) {
    return 'Add liveupdate=on to the kernel command line and reboot.';
  }
  if (khoEnabled(host) === false) return 'Add kho=on to the kernel command line and reboot.';
  return 'Look in `dmesg | grep -i -e luo -e kho` for why LUO turned itself off; in a container, pass /dev/liveupdate in.';
}

function checkDevice(host: Host): Outcome {
  const device = host.facts.device;
  if (device.opened) return ok(`${LIVEUPDATE_DEVICE} opens read-write (it was closed again at once).`);
  switch (device.code) {
    case 'ENOENT':
      return fail(
        `${LIVEUPDATE_DEVICE} does not exist: the kernel creates it only when built with CONFIG_LIVEUPDATE and booted with liveupdate=on and KHO enabled.`,
        deviceMissingFix(host),
      );
    case 'ENODEV':
    case 'ENXIO':
      return fail(
        `${LIVEUPDATE_DEVICE} exists but no driver answers it (${device.code}): LUO is not active in this kernel.`,
        deviceMissingFix(host),
      );
    case 'EBUSY':
      return fail(
        `${LIVEUPDATE_DEVICE} is held open by another process (EBUSY): the device admits one agent at a time, and another agent (luod, systemd-shutdown, a test) holds it.`,
        'If that agent is luod, run the update through it; otherwise find the holder with `fuser -v /dev/liveupdate` and stop it.',
      );
    case 'EACCES':
    case 'EPERM':
      return fail(
        `Permission denied opening ${LIVEUPDATE_DEVICE} read-write (${device.code}): the kernel checks only the file's mode.`,
        'Run as root, or give the agent\'s group read-write access with a udev rule (KERNEL=="liveupdate", GROUP="<group>", MODE="0660").',
      );
    case 'EIO':
      return fail(
        `Opening ${LIVEUPDATE_DEVICE} fails with EIO: this kernel could not restore the state the previous kernel handed over, and every open fails until the next reboot.`,
        'Find the failing file handler with `dmesg | grep -i -e luo -e kho`; a cold reboot clears the error and loses the preserved state.',
      );
    default:
      return fail(
        `Opening ${LIVEUPDATE_DEVICE} failed: ${device.code} (${device.message}).`,
        "Check the device's permissions and `dmesg | grep -i luo`.",
      );
  }
}

function checkBackend(host: Host): Outcome {
  if (host.deviceExists) return ok(`luokit will drive the real kernel through ${LIVEUPDATE_DEVICE}.`);
  return info(
    `No ${LIVEUPDATE_DEVICE}: luokit can only use its emulated kernel, and only when run with --emulate; a live update on this host would NOT preserve VMs.`,
  );
}

function checkHostKernelVersion(host: Host): Outcome {
  const release = host.facts.release;
  const version = host.version;
  if (!version) {
    return warn(
      `Kernel release "${release}" does not start with a version number, so its LUO support is unknown.`,
      'Check that the kernel is 6.19 or later and which LUO ABI it speaks.',
    );
  }
  if (predatesLuo(version)) {
    if (host.deviceWorks) {
      return warn(
        `Kernel ${release} is older than 6.19, the first with LUO, yet ${LIVEUPDATE_DEVICE} works: a backport whose handover ABI luokit cannot name.`,
        'Confirm its LUO and KHO ABI with the kernel vendor, and update only to kernels qualified against it.',
      );
    }
    return fail(
      `Kernel ${release} predates LUO, which first shipped in 6.19.`,
      'Install and boot a kernel 6.19 or later with LUO enabled.',
    );
  }
  const abi = handoverAbiOf(version);
  if (!abi) {
    return warn(
      `Kernel ${release} is newer than ${formatKernelVersion(NEWEST_KNOWN_KERNEL)}, the last whose handover ABI luokit knows.`,
      'Compare its LUO and KHO compatible strings with those of the kernel you will update to before updating.',
    );
  }
  return ok(
    `Kernel ${release} speaks ${abi.luo}, ${abi.kho} and ${abi.memfd}; the next kernel must speak the same (a LUO mismatch panics it, a KHO mismatch cold-boots it and loses the preserved state).`,
  );
}

function checkKernelConfig(host: Host): Outcome {
  const config = host.facts.kernelConfig;
  if (config) return ok(`Kernel config read from ${config.source}.`);
  const tried = kernelConfigSources(host.facts.release).join(', ');
  return warn(
    `No kernel config found (tried ${tried}), so the options below are unknown.`,
    `Load the configs module (\`modprobe configs\`) for /proc/config.gz, or install /boot/config-${host.facts.release}.`,
  );
}

interface RequiredOption {
  readonly name: string;
  /** Noun phrase: what the option gives a live update. */
  readonly provides: string;
  /** Whether a working /dev/liveupdate proves the option is set (directly or by Kconfig `select`). */
  readonly impliedByDevice: boolean;
  readonly fix: string;
}

const REQUIRED_OPTIONS: readonly RequiredOption[] = [
  {
    name: 'CONFIG_LIVEUPDATE',
    provides: 'the /dev/liveupdate interface',
    impliedByDevice: true,
    fix: 'Boot a kernel built with CONFIG_LIVEUPDATE=y.',
  },
  {
    name: 'CONFIG_KEXEC_HANDOVER',
    provides: 'KHO, which carries preserved memory to the next kernel',
    impliedByDevice: true,
    fix: 'Boot a kernel built with CONFIG_KEXEC_HANDOVER=y.',
  },
  {
    name: 'CONFIG_LIVEUPDATE_MEMFD',
    provides: 'memfd preservation, which keeps VM guest memory',
    impliedByDevice: false,
    fix: 'Boot a kernel built with CONFIG_LIVEUPDATE_MEMFD=y (it needs CONFIG_MEMFD_CREATE and CONFIG_SHMEM).',
  },
  {
    name: 'CONFIG_KEXEC_FILE',
    provides: 'kexec_file_load, the only kexec that passes KHO data on',
    impliedByDevice: true,
    fix: 'Boot a kernel built with CONFIG_KEXEC_FILE=y (CONFIG_KEXEC_HANDOVER selects it).',
  },
];

function checkOption(host: Host, option: RequiredOption): Outcome {
  const { name, provides } = option;
  switch (configState(host, name)) {
    case 'enabled':
      return ok(`${name}=${host.facts.kernelConfig?.values.get(name)}: this kernel has ${provides}.`);
    case 'disabled':
      return fail(`${name} is not set, so this kernel lacks ${provides}.`, option.fix);
    case 'absent':
      return fail(
        `${name} is not in this kernel's config (the kernel predates it, or an option it depends on is off), so it lacks ${provides}.`,
        option.fix,
      );
    case undefined:
      if (option.impliedByDevice && host.deviceWorks) {
        return ok(`${name} is implied by the working ${LIVEUPDATE_DEVICE} (no kernel config to confirm it).`);
      }
      return warn(`${name} is unknown (no kernel config found).`, `Confirm that ${name}=y.`);
  }
}

/** How a boot switch appears on the command line; a bare switch has no '='. */
function showSwitch(name: string, value: string): string {
  return value === '' ? name : `${name}=${value}`;
}

function checkLiveupdateSwitch(host: Host): Outcome {
  const cmdline = host.facts.cmdline;
  const addIt =
    'Add liveupdate=on to the kernel command line (e.g. GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) and reboot.';
  if (!cmdline) {
    if (host.deviceWorks)
      return ok(`/proc/cmdline is unreadable, but the working ${LIVEUPDATE_DEVICE} shows LUO is on.`);
    return warn('/proc/cmdline could not be read, so whether liveupdate=on was given is unknown.', addIt);
  }
  const { value, enabled } = cmdline.liveupdate;
  if (value === undefined)
    return fail('liveupdate= is not on the kernel command line, and LUO is off by default.', addIt);
  const shown = showSwitch('liveupdate', value);
  if (enabled) return ok(`${shown} is on the kernel command line (the next kernel needs it too).`);
  const replace = `Replace ${shown} with liveupdate=on on the kernel command line and reboot.`;
  if (enabled === false) return fail(`${shown} on the kernel command line turns LUO off.`, replace);
  return fail(`${shown} is not a boolean the kernel accepts, so LUO stays off.`, replace);
}

function checkKhoSwitch(host: Host): Outcome {
  const cmdline = host.facts.cmdline;
  const addIt = 'Add kho=on to the kernel command line and reboot.';
  if (!cmdline) {
    if (host.deviceWorks)
      return ok(`/proc/cmdline is unreadable, but the working ${LIVEUPDATE_DEVICE} shows KHO is on.`);
    return warn('/proc/cmdline could not be read, so whether KHO is on is unknown.', addIt);
  }
  const { value, enabled } = cmdline.kho;
  if (value !== undefined && enabled !== undefined) {
    const shown = showSwitch('kho', value);
    if (enabled) return ok(`${shown} is on the kernel command line.`);
    return fail(
      `${shown} turns KHO off, and LUO turns itself off without KHO.`,
      `Replace ${shown} with kho=on and reboot.`,
    );
  }
  const given =
    value === undefined
      ? 'No kho= on the kernel command line'
      : `${showSwitch('kho', value)} is malformed and ignored`;
  switch (configState(host, 'CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT')) {
    case 'enabled':
      return ok(`${given}; CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT=y turns KHO on by default.`);
    case undefined:
      if (host.deviceWorks)
        return ok(`${given}; the working ${LIVEUPDATE_DEVICE} shows KHO is on by default.`);
      return warn(
        `${given}, and whether this kernel turns KHO on by default is unknown.`,
        'Add kho=on to the kernel command line to be sure.',
      );
    default:
      return fail(`${given}, and this kernel leaves KHO off by default, so LUO turns itself off.`, addIt);
  }
}

/** The probe's answer, or else what the kernel config, sysctl and capabilities imply. */
function kexecFileLoadState(host: Host): KexecFileLoadAvailability | 'unknown' {
  const kexec = host.facts.kexec;
  if (kexec.probe) return kexec.probe;
  const built = configState(host, 'CONFIG_KEXEC_FILE');
  if (configLacks(host, 'CONFIG_KEXEC_FILE') || kexec.loadSysctl === 'missing') return 'missing';
  if (kexec.loadSysctl === 'disabled' || kexec.capSysBoot === false) return 'not-permitted';
  const builtIn = built === 'enabled' || (built === undefined && host.deviceWorks);
  return builtIn && kexec.loadSysctl === 'allowed' && kexec.capSysBoot ? 'available' : 'unknown';
}

function checkKexecFileLoad(host: Host): Outcome {
  const kexec = host.facts.kexec;
  const how = kexec.probe ? '' : ' (inferred from the kernel config, sysctl and capabilities; not probed)';
  switch (kexecFileLoadState(host)) {
    case 'available':
      return ok(`kexec_file_load is available to this process${how}.`);
    case 'missing':
      return fail(
        kexec.loadSysctl === 'missing'
          ? 'This kernel has no kexec at all (no kernel.kexec_load_disabled sysctl), so it cannot load the next kernel.'
          : `This kernel has no kexec_file_load, the only kexec that passes KHO data on${how}.`,
        'Boot a kernel built with CONFIG_KEXEC_FILE=y (CONFIG_KEXEC_HANDOVER selects it).',
      );
    case 'not-permitted':
      if (kexec.loadSysctl === 'disabled') {
        return fail(
          'kexec is switched off (kernel.kexec_load_disabled=1), and it stays off until the next reboot.',
          'Reboot without setting kernel.kexec_load_disabled (look in /etc/sysctl.conf and /etc/sysctl.d).',
        );
      }
      if (kexec.capSysBoot === false) {
        return fail(
          'This process lacks CAP_SYS_BOOT, which kexec_file_load requires.',
          'Run as root (or with CAP_SYS_BOOT).',
        );
      }
      return fail(
        'kexec_file_load is refused (EPERM) although kexec is not switched off: kernel lockdown or kernel.kexec_load_limit_reboot may forbid it.',
        'Check /sys/kernel/security/lockdown and the kernel.kexec_load_limit_reboot sysctl.',
      );
    case 'unknown':
      return warn(
        'Whether kexec_file_load is available is unknown: it was not probed, and the kernel config or permissions are unknown.',
        'Run as root on a host whose kernel config is readable.',
      );
  }
}

function checkKhoDebugfs(host: Host): Outcome {
  switch (host.facts.khoDebugfs) {
    case 'present':
      return ok(`KHO state can be inspected at ${KHO_DEBUGFS_OUT}.`);
    case 'denied':
      return info(
        'debugfs is root-only here, so this user cannot inspect KHO state.',
        'Run as root to inspect KHO state.',
      );
    case 'unmounted':
      return info(
        'debugfs is not mounted, so KHO state cannot be inspected.',
        'Mount it: `mount -t debugfs none /sys/kernel/debug`.',
      );
    case 'absent':
      return info(
        'debugfs has no kho/ directory: the kernel was built without CONFIG_KEXEC_HANDOVER_DEBUGFS, or KHO is off.',
        'To inspect KHO state, use a kernel built with CONFIG_KEXEC_HANDOVER_DEBUGFS=y.',
      );
  }
}

function checkSystemd(host: Host): Outcome {
  const { version, pid1 } = host.facts.systemd;
  const withoutFdStore = 'a session lives only while its agent holds it open (an agent restart aborts it)';
  if (pid1 === 'systemd') {
    if (version === undefined) {
      return warn(
        'PID 1 is systemd, but its version is unknown (systemctl --version failed).',
        `Check that systemd is ${FD_STORE_PRESERVE_SYSTEMD} or later.`,
      );
    }
    if (version >= FD_STORE_PRESERVE_SYSTEMD) {
      return ok(
        `PID 1 is systemd ${version}: services can keep fds, LUO sessions included, across kexec (FileDescriptorStorePreserve=yes).`,
      );
    }
    return warn(
      `PID 1 is systemd ${version}, older than ${FD_STORE_PRESERVE_SYSTEMD}: its fd store is not carried across kexec, so ${withoutFdStore}.`,
      `Upgrade systemd to ${FD_STORE_PRESERVE_SYSTEMD} or later so its fd store can hold sessions.`,
    );
  }
  const installed = version === undefined ? '' : ` (systemd ${version} is installed)`;
  const who = pid1 === undefined ? 'PID 1 could not be identified' : `PID 1 is ${pid1}, not systemd`;
  return info(`${who}${installed}: no fd store preservation, so ${withoutFdStore}.`);
}

/** The mode luod uses (when it runs) or would choose with --kexec-mode auto. */
function kexecModeOf(host: Host): KexecModeReport {
  const luod = host.luod;
  if (luod?.running) {
    return {
      mode: luod.kexecMode,
      source: 'luod',
      why: `the running luod uses it${luod.holder ? `; its sessions are also held by the ${luod.holder}` : ''}`,
    };
  }
  const { version, pid1 } = host.facts.systemd;
  if (pid1 === 'systemd' && version !== undefined && version >= FD_STORE_PRESERVE_SYSTEMD) {
    return {
      mode: 'systemd',
      source: 'auto',
      why: `luod.service under systemd ${version} (${FD_STORE_PRESERVE_SYSTEMD}+) leaves its sessions in the fd store and runs systemctl kexec`,
    };
  }
  const because =
    pid1 !== 'systemd'
      ? 'PID 1 is not systemd'
      : `systemd ${version ?? '(unknown version)'} does not carry fd stores through kexec`;
  return {
    mode: 'standalone',
    source: 'auto',
    why: `${because}: luod calls reboot(LINUX_REBOOT_CMD_KEXEC) itself, its sessions held by the holder process`,
  };
}

function checkKexecMode(host: Host): Outcome {
  const mode = kexecModeOf(host);
  const { version, pid1 } = host.facts.systemd;
  const notRunning = host.luod && !host.luod.running ? ` (luod is not running: ${host.luod.reason})` : '';
  if (
    mode.source === 'luod' &&
    mode.mode === 'systemd' &&
    (pid1 !== 'systemd' || version === undefined || version < FD_STORE_PRESERVE_SYSTEMD)
  ) {
    return warn(
      `luod runs in the systemd kexec mode, but ${pid1 === 'systemd' ? `systemd ${version ?? '(unknown version)'}` : `PID 1 (${pid1 ?? 'unknown'})`} does not carry its fd store through kexec: the sessions would be lost.`,
      `Run luod with --kexec-mode standalone, or upgrade systemd to ${FD_STORE_PRESERVE_SYSTEMD} or later.`,
    );
  }
  const chosen = mode.source === 'luod' ? 'luod uses' : 'luod --kexec-mode auto would use';
  return info(`${chosen} the ${mode.mode} mode: ${mode.why}${notRunning}.`);
}

/**
 * Not needed for a live update, but it decides part of its blackout: memfd guest RAM in
 * 4 KiB folios makes the next kernel's KHO restore reserve every one of them in early
 * boot, at a cost that grows with how scattered they are (docs/vm.md, the kexec phase).
 */
function checkShmemThp(host: Host): Outcome {
  const thp = host.facts.shmemThp;
  const setIt = `echo within_size > ${SHMEM_THP_CONTROL} (before the VMs allocate their RAM; transparent_hugepage_shmem=within_size on the kernel command line makes it last)`;
  if (!thp.available) {
    return info(
      `${SHMEM_THP_CONTROL} is absent (no CONFIG_TRANSPARENT_HUGEPAGE): memfd guest RAM is preserved in 4 KiB folios, which the next kernel reserves one by one during boot.`,
      'For large guests, boot kernels built with CONFIG_TRANSPARENT_HUGEPAGE=y and give shmem huge pages.',
    );
  }
  const policy = thp.policy ?? 'unknown';
  if (HUGE_SHMEM_POLICIES.has(policy)) {
    return ok(`shmem huge pages: ${policy}; memfd guest RAM is preserved in 2 MiB folios where it can be.`);
  }
  if (policy === 'advise') {
    return info(
      'shmem huge pages: advise; only guest RAM its VMM madvise()s with MADV_HUGEPAGE is preserved in 2 MiB folios, the rest in 4 KiB ones.',
      `Make sure the VMMs madvise their RAM, or ${setIt}.`,
    );
  }
  return warn(
    `shmem huge pages: ${policy}; memfd guest RAM is preserved in 4 KiB folios: 262144 per GiB, each reserved by the next kernel during boot, the longer the more scattered they are.`,
    setIt,
  );
}

/** The gate's verdict on the kernel luod has loaded: a live update into it would do this. */
function checkNextKernel(host: Host): Outcome {
  const luod = host.luod;
  if (!luod?.running) return info('luod is not running: no next kernel is loaded');
  if (luod.loaded === undefined) return info('luod does not report the gate (an older luod)');
  if (luod.loaded === null) return info('no next kernel is loaded', 'luoctl load IMAGE (the gate checks it)');
  const gate = luod.loaded.gate;
  if (!gate) return info(`${luod.loaded.kernel} is loaded; the gate did not judge it`);
  if (gate.ok) return ok(`${luod.loaded.kernel}: ${gate.sentence}`);
  return fail(
    `${luod.loaded.kernel} was loaded with --force: ${gate.sentence}`,
    'load a kernel that reads what this kernel writes (luoctl kernel-info IMAGE shows its formats)',
  );
}

/**
 * Can luod serve every VMM at once? Its client limit (--max-clients) needs
 * open files, a listen queue (capped by net.core.somaxconn) and, under
 * systemd, fd store entries (protocol/capacity.ts). Checked against the
 * running luod's own figures, or the default limit when none runs.
 */
function checkClientCapacity(host: Host): Outcome {
  const luod = host.luod?.running ? host.luod : undefined;
  const limits = luod?.capacity ?? { ...capacityNeeds(DEFAULT_MAX_CLIENTS), open_files: null };
  const who = luod?.capacity ? 'the running luod' : `luod's default (--max-clients ${DEFAULT_MAX_CLIENTS})`;
  const somaxconn = host.facts.somaxconn;
  const queue = somaxconn === undefined ? limits.listen_backlog : Math.min(somaxconn, limits.listen_backlog);
  const problems: string[] = [];
  const fixes: string[] = [];
  if (limits.open_files !== null && limits.open_files < limits.open_files_needed) {
    problems.push(`it may open ${limits.open_files} files, ${limits.open_files_needed} needed`);
    fixes.push(`LimitNOFILE=${limits.open_files_needed} or more in luod.service (or ulimit -n)`);
  }
  if (somaxconn !== undefined && somaxconn < limits.max_clients) {
    problems.push(
      `net.core.somaxconn is ${somaxconn}: VMMs reconnecting at once after a kexec beyond that are refused (EAGAIN) and retry`,
    );
    fixes.push(`sysctl -w net.core.somaxconn=${limits.listen_backlog}`);
  }
  const store = `the systemd fd store needs FileDescriptorStoreMax=${limits.fd_store_needed} or more`;
  const summary = `${who} serves ${limits.max_clients} clients: ${limits.open_files_needed} open files${
    limits.open_files === null ? '' : ` (has ${limits.open_files})`
  }, a listen queue of ${queue}${somaxconn === undefined ? '' : ` (somaxconn ${somaxconn})`}; ${store}.`;
  if (problems.length > 0) {
    return warn(`${summary} But ${problems.join('; ')}.`, `${fixes.join('; ')}; or lower --max-clients.`);
  }
  return luod?.capacity ? ok(summary) : info(summary);
}

const CHECKS: ReadonlyArray<{ id: string; title: string; run: (host: Host) => Outcome }> = [
  { id: 'device', title: LIVEUPDATE_DEVICE, run: checkDevice },
  { id: 'backend', title: 'backend', run: checkBackend },
  { id: 'kernel-version', title: 'kernel version', run: checkHostKernelVersion },
  { id: 'kernel-config', title: 'kernel config', run: checkKernelConfig },
  ...REQUIRED_OPTIONS.map((option) => ({
    id: `config-${option.name
      .replace(/^CONFIG_/, '')
      .toLowerCase()
      .replaceAll('_', '-')}`,
    title: option.name,
    run: (host: Host) => checkOption(host, option),
  })),
  { id: 'cmdline-liveupdate', title: 'liveupdate= boot option', run: checkLiveupdateSwitch },
  { id: 'cmdline-kho', title: 'kho= boot option', run: checkKhoSwitch },
  { id: 'kexec-file-load', title: 'kexec_file_load', run: checkKexecFileLoad },
  { id: 'kho-debugfs', title: 'KHO debugfs', run: checkKhoDebugfs },
  { id: 'systemd', title: 'systemd fd store', run: checkSystemd },
  { id: 'kexec-mode', title: 'kexec mode', run: checkKexecMode },
  { id: 'shmem-thp', title: 'guest RAM folios', run: checkShmemThp },
  { id: 'next-kernel', title: 'next kernel', run: checkNextKernel },
  { id: 'client-capacity', title: 'clients and open files', run: checkClientCapacity },
];

export function diagnose(facts: HostFacts, luod?: LuodFacts): DoctorReport {
  const version = parseKernelRelease(facts.release);
  const device = facts.device;
  const host: Host = {
    facts,
    luod,
    version,
    deviceWorks: device.opened,
    deviceExists: device.opened || !NO_DEVICE_CODES.has(device.code),
  };
  const checks = CHECKS.map(({ id, title, run }) => ({ id, title, ...run(host) }));
  return {
    ok: checks.every((check) => check.status !== 'fail'),
    backend: host.deviceExists ? 'real' : 'emulated',
    kexecMode: kexecModeOf(host),
    kernel: {
      release: facts.release,
      version: version ? formatKernelVersion(version) : null,
      luoCapable: version ? !predatesLuo(version) : null,
      abi: (version && handoverAbiOf(version)) ?? null,
      configSource: facts.kernelConfig?.source ?? null,
    },
    checks,
  };
}
