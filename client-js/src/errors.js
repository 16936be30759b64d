// The error a session reports: from the server (an `Error` message or a
// closing code) or local (a transport, media or timeout failure).

import { codeName } from './codes.js';

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
