/**
 * ScenarioHosts for the two kernels the suite runs on.
 *
 * - emulatorHost: luokit's emulated kernel. The test process survives the
 *   emulated kexec, so "holding" a session is keeping its fd open; after the
 *   kexec those fds belong to the old kernel and are closed.
 *   `sizeFreezeEnforced` is false: this process is not under the preload
 *   shim, so it can resize a preserved memfd, and the emulator only notices at
 *   the freeze of its kexec (docs/emulator.md, "Known differences").
 *   `closeReleasesSynchronously` is false: without the shim the emulator sees
 *   a session's close as EOF on its socket, after close() has returned.
 *   (test/scenarios/shim-run.ts runs those scenarios under the shim, with
 *   realKernelHost, as any program under `luoctl emu exec` would.)
 * - realKernelHost: `/dev/liveupdate` through ioctl(2). The bench that boots
 *   the QEMU guest drives the kexec itself and keeps the process holding the
 *   fds alive until the kernel goes away.
 */
import type { LiveUpdateDevice } from '../../src/kernel/device.js';
import { openRealDevice } from '../../src/kernel/real/index.js';
import { realTransport } from '../../src/kernel/real/transport.js';
import type { Closable, EmulatorLike, FaultInjector, ScenarioHost } from './types.js';

/** Keeps resources open until released (the selftests' forked holder, in-process). */
export class Holder {
  #held: Closable[] = [];

  get count(): number {
    return this.#held.length;
  }

  hold(resource: Closable): void {
    this.#held.push(resource);
  }

  /** Close everything held (newest first); errors are ignored, the fds may belong to a kernel that is gone. */
  release(): void {
    const held = this.#held.reverse();
    this.#held = [];
    for (const resource of held) {
      try {
        resource.close();
      } catch {
        // already dead
      }
    }
  }
}

export interface EmulatorHost extends ScenarioHost {
  readonly holder: Holder;
  kexec(): Promise<void>;
}

/** A host on a running emulator; `kexec()` is the emulated kexec, after which held fds are closed. */
export function emulatorHost(emu: EmulatorLike, options: { tmpfsDir?: string } = {}): EmulatorHost {
  const holder = new Holder();
  const inject = emu.injectFault?.bind(emu);
  const faults: FaultInjector | undefined = inject
    ? {
        async withFailingRetrieve<T>(fn: () => T): Promise<T> {
          await inject({ op: 'retrieve-fd', errno: 'ENOMEM' });
          return fn();
        },
      }
    : undefined;
  return {
    backend: 'emulated',
    capabilities: {
      sizeFreezeEnforced: false,
      closeReleasesSynchronously: false,
      retrieveFaults: faults !== undefined,
    },
    transport: emu.transport,
    holder,
    openDevice: (): LiveUpdateDevice => emu.openDevice(),
    hold: (resource) => holder.hold(resource),
    async kexec() {
      await emu.kexec();
      holder.release();
    },
    ...(faults ? { faults } : {}),
    ...(options.tmpfsDir ? { tmpfsDir: options.tmpfsDir } : {}),
  };
}

export interface RealKernelHostOptions {
  devicePath?: string;
  /** Only where this process survives (it never does on a real kexec; leave it out). */
  kexec?: () => Promise<void>;
  /** How this bench makes a memfd retrieve fail (e.g. a memory cgroup), if it can. */
  faults?: FaultInjector;
  tmpfsDir?: string;
}

/** A host on the real `/dev/liveupdate`; `holder` keeps what before-kexec stages hold. */
export function realKernelHost(
  options: RealKernelHostOptions = {},
): ScenarioHost & { readonly holder: Holder } {
  const holder = new Holder();
  return {
    backend: 'real',
    capabilities: {
      sizeFreezeEnforced: true,
      closeReleasesSynchronously: true,
      retrieveFaults: options.faults !== undefined,
    },
    transport: realTransport,
    holder,
    openDevice: () => openRealDevice(options.devicePath),
    hold: (resource) => holder.hold(resource),
    ...(options.kexec ? { kexec: options.kexec } : {}),
    ...(options.faults ? { faults: options.faults } : {}),
    ...(options.tmpfsDir ? { tmpfsDir: options.tmpfsDir } : {}),
  };
}
