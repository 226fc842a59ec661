/** The /dev/liveupdate user-space ABI as data: ioctl numbers, struct codecs, name rules, errors. */

export { LuoError, type LuoOperation, luoError } from './errors.js';
export {
  isLuoIoctlName,
  LIVEUPDATE_CMD_BASE,
  LIVEUPDATE_CMD_SESSION_BASE,
  LIVEUPDATE_IOCTL_CREATE_SESSION,
  LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
  LIVEUPDATE_IOCTL_TYPE,
  LIVEUPDATE_SESSION_FINISH,
  LIVEUPDATE_SESSION_GET_NAME,
  LIVEUPDATE_SESSION_PRESERVE_FD,
  LIVEUPDATE_SESSION_RETRIEVE_FD,
  LUO_IOCTLS,
  type LuoFdKind,
  type LuoIoctl,
  type LuoIoctlName,
  liveupdateIoctlNumber,
  luoIoctl,
  luoIoctlByNumber,
  type SessionDirection,
} from './ioctl.js';
export { checkSessionName, SESSION_NAME_MAX_BYTES, sessionNameProblem, TOKEN_MAX, toToken } from './names.js';
export {
  decodeFdArg,
  decodeFinishArg,
  decodeGetNameArg,
  decodeSessionArg,
  encodeFdArg,
  encodeFinishArg,
  encodeGetNameArg,
  encodeSessionArg,
  FD_ARG_SIZE,
  type FdArg,
  FINISH_ARG_SIZE,
  type FinishArg,
  GET_NAME_ARG_SIZE,
  type GetNameArg,
  type NameInput,
  SESSION_ARG_SIZE,
  SESSION_NAME_FIELD_BYTES,
  type SessionArg,
} from './structs.js';
