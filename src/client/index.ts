/** src/client: luod's client library for VMMs (docs/protocol.md), published as `luokit/client`. */
export * from '../protocol/framing.js';
export * from './luo-client.js';
export * from './subscription.js';
