// Checks of connect()'s options and of command arguments.

import { LIMITS } from './codec.js';
import { driftOptions } from './drift.js';

/** @typedef {import('./types.js').ConnectOptions} ConnectOptions */

const EVENT_ID = /^[\x21-\x7e]{1,128}$/;
const utf8 = new TextEncoder();

/**
 * Throws a TypeError on options that cannot work.
 * @param {ConnectOptions} o
 * @returns {ConnectOptions}
 */
export function validate(o) {
  if (!o || typeof o !== 'object') throw new TypeError('connect() needs an options object');
  if (typeof o.url !== 'string' || !/^https?:\/\//i.test(o.url)) throw new TypeError('url must be the http(s) base of the server');
  if (typeof o.eventId !== 'string' || !EVENT_ID.test(o.eventId)) throw new TypeError('eventId must be 1-128 printable ASCII characters');
  if (o.deviceId !== undefined && (typeof o.deviceId !== 'string' || o.deviceId.length === 0 || utf8.encode(o.deviceId).length > LIMITS.MAX_DEVICE_ID)) {
    throw new TypeError('deviceId must be a non-empty string of at most 128 bytes');
  }
  if (o.token !== undefined && o.token !== null && (typeof o.token !== 'string' || utf8.encode(o.token).length > LIMITS.MAX_TOKEN)) {
    throw new TypeError('token must be a string of at most 4096 bytes');
  }
  if (o.getToken !== undefined && o.getToken !== null && typeof o.getToken !== 'function') {
    throw new TypeError('getToken must be a function returning (a promise of) a token string');
  }
  const t = o.transport ?? 'auto';
  if (t !== 'auto' && t !== 'webtransport' && t !== 'websocket') throw new TypeError("transport must be 'auto', 'webtransport' or 'websocket'");
  if (o.drift !== undefined) driftOptions(o.drift);
  return o;
}

/**
 * A position in seconds as whole milliseconds, checked against the protocol's range.
 * @param {number} seconds
 */
export function toMs(seconds) {
  const ms = Math.round(Number(seconds) * 1000);
  if (!Number.isFinite(ms) || ms < 0 || ms > LIMITS.MAX_POSITION_MS) {
    throw new RangeError(`position must be between 0 and ${LIMITS.MAX_POSITION_MS / 1000} seconds, got ${seconds}`);
  }
  return ms;
}
