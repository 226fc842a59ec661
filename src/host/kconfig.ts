/**
 * The running kernel's build configuration (Kconfig), read the way operators do:
 * /proc/config.gz when the kernel embeds it (CONFIG_IKCONFIG_PROC), else the
 * distribution's /boot/config-<release>.
 */
import { gunzipSync } from 'node:zlib';
import { readHostFile } from './host-files.js';

/**
 * One option's state. 'absent' differs from 'disabled': the option is not in the
 * config at all, which usually means the kernel predates it (CONFIG_LIVEUPDATE on 6.18).
 */
export type KconfigState = 'enabled' | 'disabled' | 'absent';

export interface KernelConfig {
  /** The file the config was read from, e.g. '/proc/config.gz'. */
  readonly source: string;
  /** Option name (with the CONFIG_ prefix) to its value: 'y', 'm', 'n' for "is not set", or a literal. */
  readonly values: ReadonlyMap<string, string>;
}

/** The places a kernel config is looked for, in order of trust (the embedded one cannot be stale). */
export function kernelConfigSources(release: string): string[] {
  return ['/proc/config.gz', `/boot/config-${release}`];
}

/** Parse `CONFIG_X=y` and `# CONFIG_X is not set` lines; other lines are comments. */
export function parseKernelConfig(text: string): Map<string, string> {
  const values = new Map<string, string>();
  for (const line of text.split('\n')) {
    const set = /^(CONFIG_\w+)=(.*)$/.exec(line);
    if (set) {
      values.set(set[1]!, set[2]!.replace(/^"(.*)"$/, '$1'));
      continue;
    }
    const unset = /^# (CONFIG_\w+) is not set$/.exec(line);
    if (unset) values.set(unset[1]!, 'n');
  }
  return values;
}

/** The first readable config among `kernelConfigSources`, or undefined when there is none. */
export function readKernelConfig(root: string, release: string): KernelConfig | undefined {
  for (const source of kernelConfigSources(release)) {
    const bytes = readHostFile(root, source);
    if (!bytes) continue;
    try {
      const text = source.endsWith('.gz') ? gunzipSync(bytes).toString('utf8') : bytes.toString('utf8');
      return { source, values: parseKernelConfig(text) };
    } catch {
      // A corrupt config.gz is as good as none: fall through to the next source.
    }
  }
  return undefined;
}

/** `name` is the option with its prefix, e.g. 'CONFIG_LIVEUPDATE'. Built-in and module both count as enabled. */
export function kconfigState(config: KernelConfig, name: string): KconfigState {
  const value = config.values.get(name);
  if (value === undefined) return 'absent';
  return value === 'y' || value === 'm' ? 'enabled' : 'disabled';
}
