// Stream framing (SPEC 5.3): on a WebTransport stream each message is
// preceded by its length as a varint.

import { LIMITS } from './constants.js';
import { LockstepDecodeError } from './errors.js';
import { TWO_32, Writer, asBytes } from './wire.js';

/** @typedef {import('./errors.js').DecodeErrorKind} DecodeErrorKind */

/**
 * One stream frame: the payload's length as a varint, then the payload.
 * @param {Uint8Array} payload
 * @returns {Uint8Array}
 */
export function encodeFrame(payload) {
  const w = new Writer();
  w.varint(payload.length);
  w.room(payload.length);
  w.b.set(payload, w.len);
  w.len += payload.length;
  return w.done();
}

/**
 * Splits a reliable byte stream into frames (SPEC 5.3). Push bytes as they
 * arrive, then call next() until it returns null. An invalid length prefix
 * is an error after which the stream cannot be resynchronised: next() keeps
 * throwing the same LockstepDecodeError.
 */
export class FrameDecoder {
  constructor() {
    /** @type {Uint8Array} */
    this.buf = new Uint8Array(0);
    this.start = 0;
    this.end = 0;
    /** @type {LockstepDecodeError | null} */
    this.error = null;
  }

  /** Bytes received but not yet returned as frames. */
  get buffered() {
    return this.end - this.start;
  }

  /** @param {Uint8Array | ArrayBuffer | ArrayBufferView} input */
  push(input) {
    let bytes;
    try {
      bytes = asBytes(input);
    } catch {
      this.error ??= new LockstepDecodeError('Malformed', 'pushed data is not bytes');
      return;
    }
    if (bytes.length === 0) return;
    if (this.start === this.end) {
      this.start = 0;
      this.end = 0;
    }
    if (this.end + bytes.length > this.buf.length) {
      const live = this.end - this.start;
      let cap = Math.max(256, this.buf.length);
      while (cap < live + bytes.length) cap *= 2;
      if (cap === this.buf.length) {
        this.buf.copyWithin(0, this.start, this.end);
      } else {
        const nb = new Uint8Array(cap);
        nb.set(this.buf.subarray(this.start, this.end), 0);
        this.buf = nb;
      }
      this.start = 0;
      this.end = live;
    }
    this.buf.set(bytes, this.end);
    this.end += bytes.length;
  }

  /**
   * The next complete frame's payload (a copy), or null if more bytes are needed.
   * @returns {Uint8Array | null}
   * @throws {LockstepDecodeError} on an invalid or oversized length prefix
   */
  next() {
    if (this.error) throw this.error;
    const b = this.buf;
    const s = this.start;
    const avail = this.end - s;
    if (avail === 0) return null;
    const first = b[s];
    let len;
    let prefix;
    if (first <= 250) {
      len = first;
      prefix = 1;
    } else if (first === 251 || first === 252 || first === 253) {
      const width = first === 251 ? 2 : first === 252 ? 4 : 8;
      if (avail < 1 + width) return null;
      let v = 0;
      for (let i = width; i >= 1; i--) v = v * 256 + b[s + i];
      const min = first === 251 ? 251 : first === 252 ? 65536 : TWO_32;
      if (v < min) return this.fail('Malformed', 'frame length not in its shortest form');
      len = v;
      prefix = 1 + width;
    } else {
      return this.fail('Malformed', `invalid varint marker ${first} in frame length`);
    }
    if (len > LIMITS.MAX_FRAME) return this.fail('TooLarge', `frame of ${len} bytes exceeds the limit of ${LIMITS.MAX_FRAME}`);
    if (avail < prefix + len) return null;
    const frame = b.slice(s + prefix, s + prefix + len);
    this.start = s + prefix + len;
    return frame;
  }

  /**
   * @param {DecodeErrorKind} kind
   * @param {string} message
   * @returns {never}
   */
  fail(kind, message) {
    this.error = new LockstepDecodeError(kind, message);
    throw this.error;
  }
}
