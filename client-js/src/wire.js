// The encoding primitives of the wire format (SPEC section 1): a reader and a
// writer of varints (shortest form only), bools, Option tags, strings and
// enums, and the range checks of encoded integers. The messages built from
// them are in codec.js.

/** @typedef {import('./codec.js').Timeline} Timeline */
/** @typedef {import('./codec.js').U64} U64 */
/** @typedef {import('./errors.js').DecodeErrorKind} DecodeErrorKind */

export const TWO_32 = 2 ** 32;
const U64_MAX = (1n << 64n) - 1n;
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
export const utf8Encoder = new TextEncoder();

/** Internal: decoding failed with this kind. */
export class Fail {
  /**
   * @param {DecodeErrorKind} kind
   * @param {string} message
   */
  constructor(kind, message) {
    this.kind = kind;
    this.message = message;
  }
}

export class Reader {
  /** @param {Uint8Array} bytes */
  constructor(bytes) {
    this.b = bytes;
    this.pos = 0;
    /** Set when a varint was not in its shortest form (reported after the trailing-bytes check, as the reference does). */
    this.nonCanonical = false;
  }

  /** @param {number} n */
  need(n) {
    if (this.pos + n > this.b.length) throw new Fail('Malformed', 'unexpected end of input');
  }

  byte() {
    this.need(1);
    return this.b[this.pos++];
  }

  /**
   * A varint no wider than `width` bytes of payload (2 = u16, 4 = u32, 8 = u64).
   * @param {2 | 4 | 8} width
   * @returns {U64}
   */
  varint(width) {
    const first = this.byte();
    if (first <= 250) return first;
    const b = this.b;
    if (first === 251) {
      this.need(2);
      const v = b[this.pos] | (b[this.pos + 1] << 8);
      this.pos += 2;
      if (v < 251) this.nonCanonical = true;
      return v;
    }
    if (first === 252 && width >= 4) {
      this.need(4);
      const v = this.u32le();
      if (v < 65536) this.nonCanonical = true;
      return v;
    }
    if (first === 253 && width === 8) {
      this.need(8);
      const lo = this.u32le();
      const hi = this.u32le();
      if (hi === 0) this.nonCanonical = true;
      if (hi < 0x200000) return hi * TWO_32 + lo;
      return (BigInt(hi) << 32n) | BigInt(lo);
    }
    if (first === 254 || first === 255) throw new Fail('Malformed', `invalid varint marker ${first}`);
    throw new Fail('Malformed', `varint marker ${first} is too wide for a ${width * 8}-bit integer`);
  }

  u32le() {
    const b = this.b;
    const p = this.pos;
    this.pos += 4;
    return (b[p] | (b[p + 1] << 8) | (b[p + 2] << 16)) + b[p + 3] * 0x1000000;
  }

  u16() {
    return /** @type {number} */ (this.varint(2));
  }

  u32() {
    return /** @type {number} */ (this.varint(4));
  }

  u64() {
    return this.varint(8);
  }

  /** A signed 32-bit integer: zigzag (0, -1, 1, -2, …), then a varint. */
  i32() {
    const z = /** @type {number} */ (this.varint(4));
    return z % 2 === 0 ? z / 2 : -(z + 1) / 2;
  }

  bool() {
    const v = this.byte();
    if (v > 1) throw new Fail('Malformed', `invalid bool byte ${v}`);
    return v === 1;
  }

  /** Option tag: true for Some. */
  some() {
    const v = this.byte();
    if (v > 1) throw new Fail('Malformed', `invalid Option byte ${v}`);
    return v === 1;
  }

  string() {
    const len = this.u64();
    if (typeof len === 'bigint' || this.pos + len > this.b.length) {
      throw new Fail('Malformed', `string of ${len} bytes runs past the end of the input`);
    }
    const bytes = this.b.subarray(this.pos, this.pos + len);
    this.pos += len;
    try {
      return utf8Decoder.decode(bytes);
    } catch {
      throw new Fail('Malformed', 'invalid UTF-8 in a string');
    }
  }

  /**
   * @template T
   * @param {readonly T[]} names
   * @param {string} what
   * @returns {T}
   */
  enumOf(names, what) {
    const i = this.u32();
    if (i >= names.length) throw new Fail('Malformed', `unknown ${what} ${i}`);
    return names[i];
  }

  /** @returns {Timeline} */
  timeline() {
    return {
      epoch: this.u32(),
      positionMs: this.u64(),
      anchorUs: this.u64(),
      rateMilli: this.u16(),
      paused: this.bool(),
    };
  }
}

/**
 * Normalises the input of a decoder to a Uint8Array, or fails.
 * @param {unknown} input
 * @returns {Uint8Array}
 */
export function asBytes(input) {
  if (input instanceof Uint8Array) return input;
  if (input instanceof ArrayBuffer) return new Uint8Array(input);
  if (ArrayBuffer.isView(input)) return new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  throw new Fail('Malformed', 'input is not bytes (Uint8Array, ArrayBuffer or ArrayBufferView)');
}

// ------------------------------------------------------------------ writing

export class Writer {
  constructor() {
    this.b = new Uint8Array(64);
    this.len = 0;
  }

  /** @param {number} n */
  room(n) {
    if (this.len + n <= this.b.length) return;
    let cap = this.b.length * 2;
    while (cap < this.len + n) cap *= 2;
    const nb = new Uint8Array(cap);
    nb.set(this.b.subarray(0, this.len));
    this.b = nb;
  }

  /** @param {number} v */
  byte(v) {
    this.room(1);
    this.b[this.len++] = v;
  }

  /** @param {number} v */
  u32le(v) {
    this.room(4);
    const b = this.b;
    b[this.len] = v & 0xff;
    b[this.len + 1] = (v >>> 8) & 0xff;
    b[this.len + 2] = (v >>> 16) & 0xff;
    b[this.len + 3] = (v >>> 24) & 0xff;
    this.len += 4;
  }

  /**
   * @param {U64} v a checked integer
   * @returns {void}
   */
  varint(v) {
    if (typeof v === 'bigint') {
      if (v < 0x100000000n) return this.varint(Number(v));
      this.byte(253);
      this.u32le(Number(v & 0xffffffffn));
      this.u32le(Number(v >> 32n));
      return;
    }
    if (v <= 250) {
      this.byte(v);
    } else if (v <= 0xffff) {
      this.room(3);
      this.b[this.len++] = 251;
      this.b[this.len++] = v & 0xff;
      this.b[this.len++] = v >>> 8;
    } else if (v < TWO_32) {
      this.byte(252);
      this.u32le(v);
    } else {
      this.byte(253);
      this.u32le(v % TWO_32);
      this.u32le(Math.floor(v / TWO_32));
    }
  }

  /**
   * @param {unknown} v
   * @param {string} what
   */
  u16(v, what) {
    this.varint(uint(v, 0xffff, what));
  }

  /**
   * @param {unknown} v
   * @param {string} what
   */
  u32(v, what) {
    this.varint(uint(v, 0xffffffff, what));
  }

  /**
   * A signed 32-bit integer (zigzag, then a varint).
   * @param {unknown} v
   * @param {string} what
   */
  i32(v, what) {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < -(2 ** 31) || v > 2 ** 31 - 1) {
      throw new RangeError(`${what} must be an integer in -2^31..=2^31-1, got ${String(v)}`);
    }
    this.varint(v >= 0 ? v * 2 : -v * 2 - 1);
  }

  /**
   * @param {unknown} v
   * @param {string} what
   */
  u64(v, what) {
    this.varint(u64(v, what));
  }

  /**
   * @param {unknown} v
   * @param {string} what
   */
  bool(v, what) {
    if (typeof v !== 'boolean') throw new TypeError(`${what} must be a boolean`);
    this.byte(v ? 1 : 0);
  }

  /**
   * @param {unknown} s
   * @param {string} what
   */
  string(s, what) {
    if (typeof s !== 'string') throw new TypeError(`${what} must be a string`);
    const bytes = utf8Encoder.encode(s);
    this.varint(bytes.length);
    this.room(bytes.length);
    this.b.set(bytes, this.len);
    this.len += bytes.length;
  }

  /**
   * @param {readonly string[]} names
   * @param {unknown} v
   * @param {string} what
   */
  enumOf(names, v, what) {
    const i = names.indexOf(/** @type {string} */ (v));
    if (i < 0) throw new TypeError(`${what} must be one of ${names.join(', ')}`);
    this.varint(i);
  }

  /** @param {Timeline} t */
  timeline(t) {
    if (!t || typeof t !== 'object') throw new TypeError('timeline must be an object');
    this.u32(t.epoch, 'timeline.epoch');
    this.u64(t.positionMs, 'timeline.positionMs');
    this.u64(t.anchorUs, 'timeline.anchorUs');
    this.u16(t.rateMilli, 'timeline.rateMilli');
    this.bool(t.paused, 'timeline.paused');
  }

  done() {
    return this.b.slice(0, this.len);
  }
}

/**
 * @param {unknown} v
 * @param {number} max
 * @param {string} what
 * @returns {number}
 */
export function uint(v, max, what) {
  if (typeof v === 'bigint') v = Number(v) <= max && v >= 0n ? Number(v) : -1;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) {
    throw new RangeError(`${what} must be an integer in 0..=${max}, got ${String(v)}`);
  }
  return v;
}

/**
 * @param {unknown} v
 * @param {string} what
 * @returns {U64}
 */
export function u64(v, what) {
  if (typeof v === 'bigint') {
    if (v < 0n || v > U64_MAX) throw new RangeError(`${what} must be in 0..=2^64-1, got ${v}`);
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= 2 ** 64) {
    throw new RangeError(`${what} must be an integer in 0..=2^64-1, got ${String(v)}`);
  }
  return Number.isSafeInteger(v) ? v : BigInt(v);
}
