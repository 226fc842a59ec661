/**
 * The kernel command line as the kernel itself reads it: LUO is off unless
 * `liveupdate=` says otherwise, and it turns itself off when KHO (`kho=`) is off.
 */

/** A boolean boot switch: `value` is the raw text after '=' (undefined when the switch is absent). */
export interface BootSwitch {
  readonly value: string | undefined;
  /** What the kernel made of `value`; undefined when absent or malformed (the kernel then keeps its default). */
  readonly enabled: boolean | undefined;
}

export interface KernelCmdline {
  readonly raw: string;
  readonly liveupdate: BootSwitch;
  readonly kho: BootSwitch;
}

/**
 * Split like the kernel's parse_args(): whitespace separates parameters except
 * inside double quotes, quotes are dropped, and `--` ends the kernel's part (the
 * rest belongs to init, so a `liveupdate=on` after it does nothing).
 */
export function splitKernelCmdline(raw: string): string[] {
  const params: string[] = [];
  let current = '';
  let inQuote = false;
  let inParam = false;
  for (const ch of raw) {
    if (ch === '"') {
      inQuote = !inQuote;
      inParam = true;
    } else if (/\s/.test(ch) && !inQuote) {
      if (inParam) {
        if (current === '--') return params;
        params.push(current);
      }
      current = '';
      inParam = false;
    } else {
      current += ch;
      inParam = true;
    }
  }
  if (inParam && current !== '--') params.push(current);
  return params;
}

/**
 * The kernel's kstrtobool(), used for `liveupdate=` and `kho=`: only the first
 * character counts (two for on/off), so `yes`, `true`, `1`, `y`, `enable` are all true.
 */
export function parseKernelBool(value: string | undefined): boolean | undefined {
  if (!value) return undefined;
  const first = value.charAt(0).toLowerCase();
  if ('eyt1'.includes(first)) return true;
  if ('dnf0'.includes(first)) return false;
  if (first === 'o') {
    const second = value.charAt(1).toLowerCase();
    if (second === 'n') return true;
    if (second === 'f') return false;
  }
  return undefined;
}

/** The switch `name`; when it is given more than once the last one wins, as in the kernel. */
export function bootSwitch(params: readonly string[], name: string): BootSwitch {
  let value: string | undefined;
  for (const param of params) {
    if (param === name) value = '';
    else if (param.startsWith(`${name}=`)) value = param.slice(name.length + 1);
  }
  return { value, enabled: parseKernelBool(value) };
}

export function parseKernelCmdline(raw: string): KernelCmdline {
  const params = splitKernelCmdline(raw.trim());
  return { raw: raw.trim(), liveupdate: bootSwitch(params, 'liveupdate'), kho: bootSwitch(params, 'kho') };
}
