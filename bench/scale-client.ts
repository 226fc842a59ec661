/**
 * Many VMMs in one process, for bench/scale.ts: `COUNT` connections to luod,
 * each a VMM with `MEMFDS` small memfds (its guest RAM and device state).
 * Each subscribes, preserves its memfds on START_PRESERVATION (READY), and
 * after the kexec reconnects, CLAIMs, retrieves every memfd and finishes its
 * session, as a VMM does (client library, the emulated kernel). A thousand
 * VMM processes are more than this machine holds; luod cannot tell the
 * difference: one connection, one client id, one session each.
 *
 * argv: SOCKET PREFIX COUNT MEMFDS GATE. After the kexec each VMM waits for
 * the file GATE to exist before it reconnects (the bench restarts luod
 * first, to time a luod that starts with every session to hand back).
 * stdout: `subscribed N`, then `claimed N`.
 */
import * as fs from 'node:fs';
import { LuoClient } from '../src/client/index.js';
import type { Session } from '../src/kernel/index.js';
import { ftruncate, memfdCreate, type OwnedFd } from '../src/sys/index.js';

const [socket, prefix, countText, memfdsText, gate] = process.argv.slice(2);
const count = Number(countText);
const memfds = Number(memfdsText);

async function vmm(id: string): Promise<() => Promise<void>> {
  const ram: OwnedFd[] = [];
  for (let i = 0; i < memfds; i++) {
    const fd = memfdCreate(`${id}-${i}`);
    ftruncate(fd, 64 * 1024);
    ram.push(fd);
  }
  const luo = await LuoClient.connect(socket);
  let kexec!: () => void;
  const gone = new Promise<void>((resolve) => {
    kexec = resolve;
  });
  luo.onPreserve((sessions: Session[]) => {
    for (let i = 0; i < memfds; i++) sessions[0]!.preserveFd(ram[i]!, BigInt(i + 1));
  });
  luo.on('close', () => kexec());
  await luo.subscribe(id);
  return async () => {
    await gone;
    for (const fd of ram) fd.close();
    while (!fs.existsSync(gate!)) await new Promise((r) => setTimeout(r, 20));
    const again = await LuoClient.connectWithRetry(socket, { timeoutMs: 300_000 });
    const [session] = await again.claim(id);
    for (let i = 0; i < memfds; i++) session!.retrieveFd(BigInt(i + 1)).close();
    session!.finish();
    session!.close();
    again.close();
  };
}

const afterKexec: Array<() => Promise<void>> = [];
for (let i = 0; i < count; i++) afterKexec.push(await vmm(`${prefix}${i}`));
process.stdout.write(`subscribed ${count}\n`);
await Promise.all(afterKexec.map((claim) => claim()));
process.stdout.write(`claimed ${count}\n`);
process.exit(0);
