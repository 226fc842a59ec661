/**
 * luoctl's connection to luod: one command, its progress events, its reply.
 */
import { LineChannel } from '../protocol/lines.js';
import { checkMessage, socketPath } from '../protocol/messages.js';
import { REPLIES, type ReplyOf } from '../protocol/replies.js';
import { Errno } from '../sys/errno.js';
import { CodedError, errorCode, SysError } from '../sys/error.js';

export interface LuodReply {
  ok: boolean;
  error?: { code: string; message: string };
  [key: string]: unknown;
}

/** Send `command` to luod and resolve with its reply; `onEvent` sees PROGRESS and other events. */
export function askLuod(
  command: object,
  options: { socket?: string; onEvent?: (event: Record<string, unknown>) => void } = {},
): Promise<LuodReply> {
  const path = socketPath(options.socket);
  let channel: LineChannel;
  try {
    channel = LineChannel.connect(path);
  } catch (err) {
    const code = (err as SysError).code;
    return Promise.reject(
      new SysError(
        'luod',
        (err as SysError).errno ?? Errno.ENOENT,
        `cannot reach luod at ${path} (${code}): is it running? (LUOD_SOCKET or --socket)`,
      ),
    );
  }
  return new Promise((resolve, reject) => {
    channel.on('message', (value, fds) => {
      for (const fd of fds) fd.close();
      const message = value as Record<string, unknown>;
      if ('ok' in message) {
        resolve(message as LuodReply);
        channel.close();
      } else {
        options.onEvent?.(message);
      }
    });
    channel.on('close', () =>
      reject(new SysError('luod', Errno.ECONNRESET, `luod closed the connection before answering`)),
    );
    channel.send(command).catch(reject);
  });
}

/** The reply's error as a thrown error carrying luod's errno name. */
export function checkReply(reply: LuodReply): LuodReply {
  if (reply.ok) return reply;
  throw new CodedError(errorCode(reply.error), reply.error?.message ?? 'luod reported an error');
}

type Commanded = keyof typeof REPLIES;

/**
 * askLuod, then checkReply, then the reply checked against its command's
 * schema (protocol/replies.ts): what luoctl prints is what luod promised,
 * or a clear EPROTO.
 */
export async function askFor<C extends Commanded>(
  command: { cmd: C } & Record<string, unknown>,
  options: { socket?: string; onEvent?: (event: Record<string, unknown>) => void } = {},
): Promise<LuodReply & ReplyOf<C>> {
  const reply = checkReply(await askLuod(command, options));
  const checked = checkMessage<unknown>(REPLIES[command.cmd], reply);
  if (!checked.ok)
    throw new SysError('luod', Errno.EPROTO, `luod's ${command.cmd} reply is malformed: ${checked.problem}`);
  return reply as LuodReply & ReplyOf<C>;
}
