/**
 * The /dev/liveupdate ioctl numbers (include/uapi/linux/liveupdate.h).
 *
 * All of them are `_IO(0xBA, nr)`: no direction or size bits, because each struct
 * carries its own size in its first u32. So the number is just `(0xBA << 8) | nr`.
 * Device commands live at nr 0x00.., session commands at 0x40..; the kernel answers a
 * number outside its table with EINVAL (not ENOTTY), also when a device command is sent
 * to a session fd or the other way round.
 */

import { FD_ARG_SIZE, FINISH_ARG_SIZE, GET_NAME_ARG_SIZE, SESSION_ARG_SIZE } from './structs.js';

export const LIVEUPDATE_IOCTL_TYPE = 0xba;
/** First command number on /dev/liveupdate itself. */
export const LIVEUPDATE_CMD_BASE = 0x00;
/** First command number on a session fd. */
export const LIVEUPDATE_CMD_SESSION_BASE = 0x40;

/** `_IO(LIVEUPDATE_IOCTL_TYPE, nr)`. */
export function liveupdateIoctlNumber(nr: number): number {
  return (LIVEUPDATE_IOCTL_TYPE << 8) | nr;
}

export const LIVEUPDATE_IOCTL_CREATE_SESSION = 0xba00;
export const LIVEUPDATE_IOCTL_RETRIEVE_SESSION = 0xba01;
export const LIVEUPDATE_SESSION_PRESERVE_FD = 0xba40;
export const LIVEUPDATE_SESSION_RETRIEVE_FD = 0xba41;
export const LIVEUPDATE_SESSION_FINISH = 0xba42;
export const LIVEUPDATE_SESSION_GET_NAME = 0xba43;

/** Short command names, used as the `operation` of errors and in logs. */
export type LuoIoctlName =
  | 'CREATE_SESSION'
  | 'RETRIEVE_SESSION'
  | 'PRESERVE_FD'
  | 'RETRIEVE_FD'
  | 'FINISH'
  | 'GET_NAME';

/** Which fd takes the ioctl: /dev/liveupdate itself, or a session fd it handed out. */
export type LuoFdKind = 'device' | 'session';

/**
 * Which sessions accept a session ioctl: created in this kernel (outgoing), retrieved
 * from the previous one (incoming), or both. Any other combination is EINVAL.
 */
export type SessionDirection = 'outgoing' | 'incoming' | 'both';

export interface LuoIoctl {
  name: LuoIoctlName;
  /** The header's macro name, for grepping the kernel. */
  macro: string;
  nr: number;
  number: number;
  /** Size of the argument struct; the kernel also requires at least this much (EINVAL). */
  structSize: number;
  fd: LuoFdKind;
  /** Only for session ioctls. */
  direction?: SessionDirection;
  /** First mainline kernel with this command. */
  since: string;
}

export const LUO_IOCTLS: readonly LuoIoctl[] = [
  {
    name: 'CREATE_SESSION',
    macro: 'LIVEUPDATE_IOCTL_CREATE_SESSION',
    nr: 0x00,
    number: LIVEUPDATE_IOCTL_CREATE_SESSION,
    structSize: SESSION_ARG_SIZE,
    fd: 'device',
    since: '6.19',
  },
  {
    name: 'RETRIEVE_SESSION',
    macro: 'LIVEUPDATE_IOCTL_RETRIEVE_SESSION',
    nr: 0x01,
    number: LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
    structSize: SESSION_ARG_SIZE,
    fd: 'device',
    since: '6.19',
  },
  {
    name: 'PRESERVE_FD',
    macro: 'LIVEUPDATE_SESSION_PRESERVE_FD',
    nr: 0x40,
    number: LIVEUPDATE_SESSION_PRESERVE_FD,
    structSize: FD_ARG_SIZE,
    fd: 'session',
    direction: 'outgoing',
    since: '6.19',
  },
  {
    name: 'RETRIEVE_FD',
    macro: 'LIVEUPDATE_SESSION_RETRIEVE_FD',
    nr: 0x41,
    number: LIVEUPDATE_SESSION_RETRIEVE_FD,
    structSize: FD_ARG_SIZE,
    fd: 'session',
    direction: 'incoming',
    since: '6.19',
  },
  {
    name: 'FINISH',
    macro: 'LIVEUPDATE_SESSION_FINISH',
    nr: 0x42,
    number: LIVEUPDATE_SESSION_FINISH,
    structSize: FINISH_ARG_SIZE,
    fd: 'session',
    direction: 'incoming',
    since: '6.19',
  },
  {
    name: 'GET_NAME',
    macro: 'LIVEUPDATE_SESSION_GET_NAME',
    nr: 0x43,
    number: LIVEUPDATE_SESSION_GET_NAME,
    structSize: GET_NAME_ARG_SIZE,
    fd: 'session',
    direction: 'both',
    since: '7.2',
  },
];

const byName = new Map(LUO_IOCTLS.map((ioctl) => [ioctl.name, ioctl]));
const byNumber = new Map(LUO_IOCTLS.map((ioctl) => [ioctl.number, ioctl]));

export function luoIoctl(name: LuoIoctlName): LuoIoctl {
  return byName.get(name)!;
}

/** The command an ioctl number stands for, or undefined if LUO has none by that number. */
export function luoIoctlByNumber(number: number): LuoIoctl | undefined {
  return byNumber.get(number);
}

export function isLuoIoctlName(name: string): name is LuoIoctlName {
  return byName.has(name as LuoIoctlName);
}
