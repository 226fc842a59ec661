/** src/protocol: luod's wire protocol as data (`luokit/protocol`): commands, events, replies. */
export * from './events.js';
export * from './messages.js';
export * from './replies.js';
