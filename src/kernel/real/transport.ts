/** The real kernel: ioctl(2) on `/dev/liveupdate` and on session fds. */
import { ioctl } from '../../sys/ioctl.js';
import type { IoctlTransport } from '../transport.js';

export const realTransport: IoctlTransport = {
  backend: 'real',
  ioctl,
};
