// The errors of the package: LockstepError, what a session reports (from the
// server, an `Error` message or a closing code, or local: a transport, media
// or timeout failure), and LockstepDecodeError, bytes that did not decode.

import { DECODE_CODES, codeName } from './codes.js';

/** An error the server reported, or a session-level failure. */
export class LockstepError extends Error {
  /**
   * @param {number} code protocol code (4000–4099, see `CODES`), or 0 for a local failure
   * @param {string} message
   * @param {{requestId?: number, kind?: string, cause?: unknown}} [o]
   */
  constructor(code, message, o = {}) {
    super(message);
    this.name = 'LockstepError';
    this.code = code;
    /** Stable name of the code ('forbidden', …) or the local kind ('autoplay', 'transport', …). */
    this.kind = o.kind ?? codeName(code);
    this.requestId = o.requestId ?? 0;
    if (o.cause !== undefined) this.cause = o.cause;
  }
}

/** @typedef {'Empty' | 'TooLarge' | 'UnknownTag' | 'Malformed' | 'TrailingBytes' | 'Invalid'} DecodeErrorKind */

/** Why bytes did not decode. `kind` names the reference decoder's error; `code` is the protocol code. */
export class LockstepDecodeError extends Error {
  /**
   * @param {DecodeErrorKind} kind
   * @param {string} message
   */
  constructor(kind, message) {
    super(message);
    this.name = 'LockstepDecodeError';
    /** @type {DecodeErrorKind} */
    this.kind = kind;
    /** @type {number} 4002 for TooLarge, 4001 for UnknownTag, else 4000. */
    this.code =
      kind === 'TooLarge' ? DECODE_CODES.FRAME_TOO_LARGE : kind === 'UnknownTag' ? DECODE_CODES.UNKNOWN_MESSAGE : DECODE_CODES.MALFORMED;
  }
}
