/**
 * The emulated kernel's process entry: `node main.js --state DIR [--kernel 7.2]`.
 * Started by `luoctl emu start` or on demand by the library; one per state directory.
 */
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { emulatorRunning } from '../emulator-process.js';
import { statePaths } from '../paths.js';
import { handoverHooks } from './kexec.js';
import { EmulatorServer } from './server.js';
import { checkEmulatedVersion } from './versions.js';

const { values } = parseArgs({
  options: { state: { type: 'string' }, kernel: { type: 'string', default: '7.2' } },
  strict: true,
});
if (!values.state) {
  process.stderr.write('luokit-emu: --state DIR is required\n');
  process.exit(2);
}
const version = checkEmulatedVersion(values.kernel!);
const paths = statePaths(values.state);
fs.mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
const log = pino({ base: { emu: paths.dir }, level: process.env.LUOKIT_LOG_LEVEL ?? 'info' });

if (emulatorRunning(paths)) {
  log.info('an emulated kernel already runs in this state directory');
  process.exit(0);
}

process.title = 'luokit-emu';
const server = new EmulatorServer(paths, handoverHooks(paths, log), version, log);
fs.writeFileSync(paths.pidFile, `${process.pid}\n`);
await server.listen();

let stopping = false;
async function stop(reason: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info({ reason }, 'emulated kernel stopping');
  await server.close();
  fs.rmSync(paths.pidFile, { force: true });
  process.exit(0);
}
server.onStop(() => void stop('stop requested'));
process.on('SIGTERM', () => void stop('SIGTERM'));
process.on('SIGINT', () => void stop('SIGINT'));
process.on('uncaughtException', (err) =>
  log.fatal({ err }, 'uncaught exception (the emulator keeps running)'),
);
