// Every error and close code of the protocol (SPEC section 9), in one table.
// The same number is an `Error` message's code, a WebSocket close code and a
// WebTransport application close code.
//
// `name` and `closes` mirror `protocol/src/code.rs` (`codes!`); a test parses
// that file and fails when the two differ. `fatal` is the client's own policy:
// a code after which reconnecting cannot help (bad token, wrong version, …), so
// the session ends instead of reconnecting.

/**
 * @typedef {Object} ErrorCodeInfo
 * @property {string} name stable name ('forbidden', …), as `ErrorCode::as_str()` on the server
 * @property {boolean} closes whether the server closes the connection after reporting it
 * @property {boolean} fatal whether the client gives up instead of reconnecting after it
 */

/**
 * The stable names of the codes (tsc checks that the table has exactly these).
 * @typedef {'malformed' | 'unknown_message' | 'frame_too_large' | 'invalid_json' | 'unexpected_message' | 'not_joined'
 *   | 'version_mismatch' | 'rate_limited' | 'forbidden' | 'invalid_argument' | 'slow_consumer' | 'already_joined'
 *   | 'unauthorized' | 'token_expired' | 'shutting_down' | 'server_full' | 'device_revoked' | 'event_mismatch'
 *   | 'hello_timeout' | 'internal' | 'idle_timeout' | 'flood' | 'too_many_errors' | 'device_limit' | 'not_invited'} ErrorCodeName
 */

/** @type {Record<ErrorCodeName, {code: number, closes: boolean, fatal: boolean}>} */
const TABLE = {
  malformed: { code: 4000, closes: false, fatal: false },
  unknown_message: { code: 4001, closes: false, fatal: false },
  frame_too_large: { code: 4002, closes: true, fatal: false },
  invalid_json: { code: 4003, closes: false, fatal: false },
  unexpected_message: { code: 4004, closes: false, fatal: false },
  not_joined: { code: 4005, closes: false, fatal: false },
  version_mismatch: { code: 4006, closes: true, fatal: true },
  rate_limited: { code: 4007, closes: false, fatal: false },
  forbidden: { code: 4008, closes: false, fatal: false },
  invalid_argument: { code: 4009, closes: false, fatal: false },
  slow_consumer: { code: 4010, closes: true, fatal: false },
  already_joined: { code: 4011, closes: false, fatal: false },
  unauthorized: { code: 4012, closes: true, fatal: true },
  token_expired: { code: 4013, closes: true, fatal: true },
  shutting_down: { code: 4014, closes: true, fatal: false },
  server_full: { code: 4015, closes: true, fatal: false },
  device_revoked: { code: 4016, closes: true, fatal: true },
  event_mismatch: { code: 4017, closes: true, fatal: true },
  hello_timeout: { code: 4018, closes: true, fatal: false },
  internal: { code: 4019, closes: true, fatal: false },
  idle_timeout: { code: 4020, closes: true, fatal: false },
  flood: { code: 4021, closes: true, fatal: false },
  too_many_errors: { code: 4022, closes: true, fatal: false },
  device_limit: { code: 4023, closes: true, fatal: true },
  not_invited: { code: 4024, closes: true, fatal: true },
};

/**
 * Every code by name: `CODES.forbidden === 4008`.
 * @type {Readonly<Record<ErrorCodeName, number>>}
 */
export const CODES = Object.freeze(
  /** @type {Record<ErrorCodeName, number>} */ (Object.fromEntries(Object.entries(TABLE).map(([name, e]) => [name, e.code]))),
);

/**
 * Every code by number: `ERROR_CODES[4008]` is `{name: 'forbidden', closes: false, fatal: false}`.
 * @type {Readonly<Record<number, Readonly<ErrorCodeInfo>>>}
 */
export const ERROR_CODES = Object.freeze(
  Object.fromEntries(Object.entries(TABLE).map(([name, e]) => [e.code, Object.freeze({ name, closes: e.closes, fatal: e.fatal })])),
);

/** Codes a decode failure maps to. */
export const DECODE_CODES = Object.freeze({ MALFORMED: CODES.malformed, UNKNOWN_MESSAGE: CODES.unknown_message, FRAME_TOO_LARGE: CODES.frame_too_large });

/**
 * Whether a code closes the connection (unknown codes in 4000–4099: only if
 * the connection is then closed, which the caller knows; here: false).
 * @param {number} code
 */
export function codeCloses(code) {
  return ERROR_CODES[code]?.closes ?? false;
}

/**
 * Whether the session ends after this code instead of reconnecting (unknown codes: false).
 * @param {number} code
 */
export function codeFatal(code) {
  return ERROR_CODES[code]?.fatal ?? false;
}

/**
 * The stable name of a code ('forbidden', …), or 'unknown'.
 * @param {number} code
 */
export function codeName(code) {
  return ERROR_CODES[code]?.name ?? 'unknown';
}
