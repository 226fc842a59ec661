/** Where an emulated kernel keeps its sockets and its "physical memory" (docs/emulator.md). */
import * as os from 'node:os';
import * as path from 'node:path';

export interface StatePaths {
  readonly dir: string;
  readonly deviceSocket: string;
  readonly querySocket: string;
  readonly controlSocket: string;
  readonly pidFile: string;
  readonly logFile: string;
  readonly kernelFile: string;
  readonly memoryImage: string;
  readonly handoverFdt: string;
}

/** The default state directory: $LUOKIT_EMU_STATE, else a per-user runtime directory. */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.LUOKIT_EMU_STATE) return path.resolve(env.LUOKIT_EMU_STATE);
  if (env.XDG_RUNTIME_DIR) return path.join(env.XDG_RUNTIME_DIR, 'luokit', 'emu');
  const uid = process.getuid?.() ?? 0;
  return uid === 0 ? '/run/luokit/emu' : path.join(os.tmpdir(), `luokit-emu-${uid}`);
}

export function statePaths(dir: string = defaultStateDir()): StatePaths {
  const abs = path.resolve(dir);
  return {
    dir: abs,
    deviceSocket: path.join(abs, 'device.sock'),
    querySocket: path.join(abs, 'query.sock'),
    controlSocket: path.join(abs, 'control.sock'),
    pidFile: path.join(abs, 'emu.pid'),
    logFile: path.join(abs, 'emu.log'),
    kernelFile: path.join(abs, 'kernel.json'),
    memoryImage: path.join(abs, 'memory.img'),
    handoverFdt: path.join(abs, 'kho.dtb'),
  };
}
