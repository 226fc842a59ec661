/**
 * A test double for systemctl (luod --systemctl): `--version` answers like
 * systemd 262; any other command is forwarded to the test's fake systemd
 * ($FAKE_SYSTEMCTL_SOCKET), which answers with the exit status to use.
 */
import * as net from 'node:net';

const args = process.argv.slice(2);
if (args[0] === '--version') {
  process.stdout.write('systemd 262 (262-fake)\n+PAM +AUDIT\n');
  process.exit(0);
}
const socket = net.createConnection(process.env.FAKE_SYSTEMCTL_SOCKET ?? '');
socket.on('error', (err) => {
  process.stderr.write(`fake systemctl: ${err.message}\n`);
  process.exit(1);
});
socket.on('close', () => process.exit(1));
socket.on('connect', () => socket.write(`${JSON.stringify(args)}\n`));
let reply = '';
socket.setEncoding('utf8').on('data', (d) => {
  reply += d;
  if (!reply.includes('\n')) return;
  const { code, message } = JSON.parse(reply);
  if (message) process.stderr.write(`${message}\n`);
  process.exit(code);
});
