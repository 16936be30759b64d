// Hand-written codec for the Lockstep wire protocol, version 1.
//
// The format is bincode 2.0.1 `standard()` as pinned by protocol/SPEC.md and
// protocol/vectors/: little-endian varints (0..=250 one byte; fb + u16;
// fc + u32; fd + u64), bools and Option tags as one byte 00/01, strings as a
// varint byte length then UTF-8, enums as a varint u32 index then fields.
// Lockstep adds one rule: every varint must be in its shortest form.
//
// Message objects have exactly the shape of the `value`s in the golden
// vectors (the serde JSON of the Rust types): `{type: 'tick', epoch, …}`,
// camelCase fields, roles as 'host' | 'co-host' | 'viewer', and so on.
//
// Integers and BigInt. u16/u32 fields are always `number`. A u64 field is a
// `number` when its value is at most Number.MAX_SAFE_INTEGER (2^53 − 1) and a
// `bigint` above that, so every value round-trips exactly and the common case
// stays a plain number. The u64 fields are:
//   Timeline.positionMs, Timeline.anchorUs, Welcome.serverTimeUs,
//   TimelineChanged.effectiveAtUs, Pong.clientTime, Pong.serverRecvUs,
//   Pong.serverSendUs, Ping.clientTime, Report.positionUs, and the
//   positionMs of the Play, Pause and Seek actions.
// With the reference server none of them exceeds 2^53 in practice (server
// times are Unix microseconds, below 2^53 until the year 2255; positions are
// at most MAX_POSITION_MS), so a `bigint` only appears for extreme or hostile
// input. Encoders accept either type for u64 fields.
//
// Decoding is total: any input gives a message or throws a
// LockstepDecodeError (`kind` + protocol `code`); the try* variants never
// throw. The order of checks mirrors the reference decoder so that `kind`
// matches protocol/vectors/invalid.json exactly.

/** Protocol version sent in Hello. */
export const PROTOCOL_VERSION = 1;

/** Hard limits of the protocol (SPEC section 8.1). */
export const LIMITS = Object.freeze({
  MAX_FRAME: 8192,
  MAX_DATAGRAM: 1200,
  MAX_EVENT_ID: 128,
  MAX_DEVICE_ID: 128,
  MAX_TOKEN: 4096,
  MAX_NAME: 64,
  MAX_ERROR_MESSAGE: 256,
  MIN_RATE_MILLI: 250,
  MAX_RATE_MILLI: 4000,
  MAX_POSITION_MS: 4294967295,
});

/** Capability bits of Hello.caps (SPEC section 8.2). */
export const CAPS = Object.freeze({ DATAGRAMS: 1, PRESENCE: 2, ACKS: 4 });

// The error codes live in codes.js (one table); re-exported here as before.
import { DECODE_CODES } from './codes.js';
export { CODES, DECODE_CODES, ERROR_CODES, codeCloses, codeFatal, codeName } from './codes.js';

// ------------------------------------------------------------------ types

/** @typedef {number | bigint} U64 A u64: a number up to 2^53 − 1, a bigint above. */
/** @typedef {'host' | 'co-host' | 'viewer'} Role */
/** @typedef {'host-only' | 'everyone'} ControlPolicy */
/** @typedef {'seek' | 'pause' | 'play' | 'rate' | 'buffering-wait' | 'resume'} ChangeReason */
/**
 * What became of a command (SPEC 6.3): 'applied' (it made the change of the
 * Ack's epoch, or a role/policy change was applied), 'unchanged' (it asked for
 * what already held), 'coalesced' (a later command of the same kind replaced
 * it before it ran; the epoch is that one's change).
 * @typedef {'applied' | 'unchanged' | 'coalesced'} AckOutcome
 */

/**
 * @typedef {Object} Timeline
 * @property {number} epoch
 * @property {U64} positionMs
 * @property {U64} anchorUs
 * @property {number} rateMilli
 * @property {boolean} paused
 */

/**
 * @typedef {Object} Limits
 * @property {number} maxFrame
 * @property {number} maxDatagram
 * @property {number} maxMsgsPerSec
 * @property {number} tickIntervalMs
 * @property {number} reportIntervalMs
 */

/**
 * @typedef {{type: 'welcome', memberId: number, role: Role, timeline: Timeline, serverTimeUs: U64, viewers: number, policy: ControlPolicy, limits: Limits}} WelcomeMsg
 * @typedef {{type: 'tick', epoch: number, positionMs: number, anchorLoUs: number, rateMilli: number, paused: boolean, viewers: number}} TickMsg
 * @typedef {{type: 'timelineChanged', timeline: Timeline, effectiveAtUs: U64, by: number, reason: ChangeReason}} TimelineChangedMsg
 * @typedef {{type: 'viewerCount', count: number}} ViewerCountMsg
 * @typedef {{type: 'pong', clientTime: U64, serverRecvUs: U64, serverSendUs: U64}} PongMsg
 * @typedef {{type: 'error', code: number, message: string, requestId: number}} ErrorMsg
 * @typedef {{type: 'memberJoined', memberId: number, role: Role, name: string}} MemberJoinedMsg
 * @typedef {{type: 'memberLeft', memberId: number}} MemberLeftMsg
 * @typedef {{type: 'roleChanged', memberId: number, role: Role}} RoleChangedMsg
 * @typedef {{type: 'policyChanged', policy: ControlPolicy, by: number}} PolicyChangedMsg
 * @typedef {{type: 'ack', requestId: number, outcome: AckOutcome, epoch: number}} AckMsg
 * @typedef {WelcomeMsg | TickMsg | TimelineChangedMsg | ViewerCountMsg | PongMsg | ErrorMsg | MemberJoinedMsg | MemberLeftMsg | RoleChangedMsg | PolicyChangedMsg | AckMsg} ServerMsg
 */

/**
 * @typedef {{kind: 'play', positionMs: U64 | null}
 *   | {kind: 'pause', positionMs: U64 | null}
 *   | {kind: 'seek', positionMs: U64}
 *   | {kind: 'setRate', rateMilli: number}
 *   | {kind: 'setRole', memberId: number, role: Role}
 *   | {kind: 'setPolicy', policy: ControlPolicy}} Action
 * @typedef {{type: 'hello', version: number, eventId: string, deviceId: string, token: string | null, caps: number}} HelloMsg
 * @typedef {{type: 'ping', clientTime: U64}} PingMsg
 * @typedef {{type: 'command', requestId: number, action: Action}} CommandMsg
 * @typedef {{type: 'report', epoch: number, positionUs: U64, rateMilli: number, buffering: boolean}} ReportMsg
 * @typedef {HelloMsg | PingMsg | CommandMsg | ReportMsg} ClientMsg
 */

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

const ROLES = /** @type {const} */ (['host', 'co-host', 'viewer']);
const POLICIES = /** @type {const} */ (['host-only', 'everyone']);
const REASONS = /** @type {const} */ (['seek', 'pause', 'play', 'rate', 'buffering-wait', 'resume']);
const ACK_OUTCOMES = /** @type {const} */ (['applied', 'unchanged', 'coalesced']);
const ACTIONS = /** @type {const} */ (['play', 'pause', 'seek', 'setRate', 'setRole', 'setPolicy']);
const SERVER_TYPES = /** @type {const} */ ([
  'welcome',
  'tick',
  'timelineChanged',
  'viewerCount',
  'pong',
  'error',
  'memberJoined',
  'memberLeft',
  'roleChanged',
  'policyChanged',
  'ack',
]);
const CLIENT_TYPES = /** @type {const} */ (['hello', 'ping', 'command', 'report']);

const TWO_32 = 2 ** 32;
const U64_MAX = (1n << 64n) - 1n;
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const utf8Encoder = new TextEncoder();

// ------------------------------------------------------------------ reading

/** Internal: decoding failed with this kind. */
class Fail {
  /**
   * @param {DecodeErrorKind} kind
   * @param {string} message
   */
  constructor(kind, message) {
    this.kind = kind;
    this.message = message;
  }
}

class Reader {
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
function asBytes(input) {
  if (input instanceof Uint8Array) return input;
  if (input instanceof ArrayBuffer) return new Uint8Array(input);
  if (ArrayBuffer.isView(input)) return new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  throw new Fail('Malformed', 'input is not bytes (Uint8Array, ArrayBuffer or ArrayBufferView)');
}

/**
 * @template M
 * @param {unknown} input
 * @param {number} tags
 * @param {(r: Reader, tag: number) => M} body
 * @param {(m: M) => void} limits
 * @returns {M}
 */
function decodeTagged(input, tags, body, limits) {
  try {
    const bytes = asBytes(input);
    if (bytes.length === 0) throw new Fail('Empty', 'empty message');
    if (bytes.length > LIMITS.MAX_FRAME) {
      throw new Fail('TooLarge', `message of ${bytes.length} bytes exceeds the limit of ${LIMITS.MAX_FRAME}`);
    }
    const r = new Reader(bytes);
    const tag = r.u32();
    if (tag >= tags) throw new Fail('UnknownTag', `unknown message tag ${tag}`);
    const msg = body(r, tag);
    if (r.pos !== bytes.length) {
      throw new Fail('TrailingBytes', `${bytes.length - r.pos} trailing bytes after the message`);
    }
    if (r.nonCanonical) throw new Fail('Malformed', 'non-canonical encoding (varint not in its shortest form)');
    limits(msg);
    return msg;
  } catch (e) {
    if (e instanceof Fail) throw new LockstepDecodeError(e.kind, e.message);
    // Defensive: nothing above should throw anything else.
    throw new LockstepDecodeError('Malformed', `decode failed: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/**
 * @param {string} s
 * @param {number} max
 * @param {string} what
 */
function checkLen(s, max, what) {
  // UTF-8 byte length without allocating for the common ASCII case.
  if (s.length * 3 <= max) return;
  if (utf8Encoder.encode(s).length > max) throw new Fail('Invalid', `${what} longer than ${max} bytes`);
}

/**
 * @param {Reader} r
 * @param {number} tag
 * @returns {ServerMsg}
 */
function serverBody(r, tag) {
  switch (tag) {
    case 0:
      return {
        type: 'welcome',
        memberId: r.u32(),
        role: r.enumOf(ROLES, 'Role'),
        timeline: r.timeline(),
        serverTimeUs: r.u64(),
        viewers: r.u32(),
        policy: r.enumOf(POLICIES, 'ControlPolicy'),
        limits: {
          maxFrame: r.u32(),
          maxDatagram: r.u32(),
          maxMsgsPerSec: r.u32(),
          tickIntervalMs: r.u32(),
          reportIntervalMs: r.u32(),
        },
      };
    case 1: {
      const epoch = r.u32();
      const positionMs = r.u32();
      const anchorLoUs = r.u32();
      const ratePaused = r.u16();
      const viewers = r.u32();
      return { type: 'tick', epoch, positionMs, anchorLoUs, rateMilli: ratePaused >> 1, paused: (ratePaused & 1) === 1, viewers };
    }
    case 2:
      return {
        type: 'timelineChanged',
        timeline: r.timeline(),
        effectiveAtUs: r.u64(),
        by: r.u32(),
        reason: r.enumOf(REASONS, 'ChangeReason'),
      };
    case 3:
      return { type: 'viewerCount', count: r.u32() };
    case 4:
      return { type: 'pong', clientTime: r.u64(), serverRecvUs: r.u64(), serverSendUs: r.u64() };
    case 5:
      return { type: 'error', code: r.u16(), message: r.string(), requestId: r.u32() };
    case 6:
      return { type: 'memberJoined', memberId: r.u32(), role: r.enumOf(ROLES, 'Role'), name: r.string() };
    case 7:
      return { type: 'memberLeft', memberId: r.u32() };
    case 8:
      return { type: 'roleChanged', memberId: r.u32(), role: r.enumOf(ROLES, 'Role') };
    case 9:
      return { type: 'policyChanged', policy: r.enumOf(POLICIES, 'ControlPolicy'), by: r.u32() };
    default:
      return { type: 'ack', requestId: r.u32(), outcome: r.enumOf(ACK_OUTCOMES, 'AckOutcome'), epoch: r.u32() };
  }
}

/**
 * @param {Reader} r
 * @returns {Action}
 */
function actionBody(r) {
  const kind = r.enumOf(ACTIONS, 'Action');
  switch (kind) {
    case 'play':
    case 'pause':
      return { kind, positionMs: r.some() ? r.u64() : null };
    case 'seek':
      return { kind, positionMs: r.u64() };
    case 'setRate':
      return { kind, rateMilli: r.u16() };
    case 'setRole':
      return { kind, memberId: r.u32(), role: r.enumOf(ROLES, 'Role') };
    default:
      return { kind, policy: r.enumOf(POLICIES, 'ControlPolicy') };
  }
}

/**
 * @param {Reader} r
 * @param {number} tag
 * @returns {ClientMsg}
 */
function clientBody(r, tag) {
  switch (tag) {
    case 0:
      return {
        type: 'hello',
        version: r.u16(),
        eventId: r.string(),
        deviceId: r.string(),
        token: r.some() ? r.string() : null,
        caps: r.u32(),
      };
    case 1:
      return { type: 'ping', clientTime: r.u64() };
    case 2:
      return { type: 'command', requestId: r.u32(), action: actionBody(r) };
    default:
      return { type: 'report', epoch: r.u32(), positionUs: r.u64(), rateMilli: r.u16(), buffering: r.bool() };
  }
}

/**
 * Decodes one server → client message.
 * @param {Uint8Array | ArrayBuffer | ArrayBufferView} bytes
 * @returns {ServerMsg}
 * @throws {LockstepDecodeError}
 */
export function decodeServer(bytes) {
  return decodeTagged(bytes, SERVER_TYPES.length, serverBody, (m) => {
    if (m.type === 'error') checkLen(m.message, LIMITS.MAX_ERROR_MESSAGE, 'error message');
    else if (m.type === 'memberJoined') checkLen(m.name, LIMITS.MAX_NAME, 'member name');
  });
}

/**
 * Decodes one client → server message.
 * @param {Uint8Array | ArrayBuffer | ArrayBufferView} bytes
 * @returns {ClientMsg}
 * @throws {LockstepDecodeError}
 */
export function decodeClient(bytes) {
  return decodeTagged(bytes, CLIENT_TYPES.length, clientBody, (m) => {
    if (m.type !== 'hello') return;
    checkLen(m.eventId, LIMITS.MAX_EVENT_ID, 'event id');
    checkLen(m.deviceId, LIMITS.MAX_DEVICE_ID, 'device id');
    if (m.token !== null) checkLen(m.token, LIMITS.MAX_TOKEN, 'token');
  });
}

/**
 * @template T
 * @typedef {{ok: true, msg: T} | {ok: false, error: LockstepDecodeError}} DecodeResult
 */

/**
 * Like decodeServer, but never throws.
 * @param {Uint8Array | ArrayBuffer | ArrayBufferView} bytes
 * @returns {DecodeResult<ServerMsg>}
 */
export function tryDecodeServer(bytes) {
  try {
    return { ok: true, msg: decodeServer(bytes) };
  } catch (e) {
    return { ok: false, error: /** @type {LockstepDecodeError} */ (e) };
  }
}

/**
 * Like decodeClient, but never throws.
 * @param {Uint8Array | ArrayBuffer | ArrayBufferView} bytes
 * @returns {DecodeResult<ClientMsg>}
 */
export function tryDecodeClient(bytes) {
  try {
    return { ok: true, msg: decodeClient(bytes) };
  } catch (e) {
    return { ok: false, error: /** @type {LockstepDecodeError} */ (e) };
  }
}

// ------------------------------------------------------------------ writing

class Writer {
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
function uint(v, max, what) {
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
function u64(v, what) {
  if (typeof v === 'bigint') {
    if (v < 0n || v > U64_MAX) throw new RangeError(`${what} must be in 0..=2^64-1, got ${v}`);
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= 2 ** 64) {
    throw new RangeError(`${what} must be an integer in 0..=2^64-1, got ${String(v)}`);
  }
  return Number.isSafeInteger(v) ? v : BigInt(v);
}

/**
 * Encodes a server → client message.
 * @param {ServerMsg} msg
 * @returns {Uint8Array}
 * @throws {TypeError | RangeError} on a message that is not well-typed
 */
export function encodeServer(msg) {
  const w = new Writer();
  const tag = SERVER_TYPES.indexOf(/** @type {any} */ (msg?.type));
  if (tag < 0) throw new TypeError(`unknown server message type ${String(msg?.type)}`);
  w.varint(tag);
  switch (msg.type) {
    case 'welcome':
      w.u32(msg.memberId, 'memberId');
      w.enumOf(ROLES, msg.role, 'role');
      w.timeline(msg.timeline);
      w.u64(msg.serverTimeUs, 'serverTimeUs');
      w.u32(msg.viewers, 'viewers');
      w.enumOf(POLICIES, msg.policy, 'policy');
      w.u32(msg.limits.maxFrame, 'limits.maxFrame');
      w.u32(msg.limits.maxDatagram, 'limits.maxDatagram');
      w.u32(msg.limits.maxMsgsPerSec, 'limits.maxMsgsPerSec');
      w.u32(msg.limits.tickIntervalMs, 'limits.tickIntervalMs');
      w.u32(msg.limits.reportIntervalMs, 'limits.reportIntervalMs');
      break;
    case 'tick': {
      w.u32(msg.epoch, 'epoch');
      w.u32(msg.positionMs, 'positionMs');
      w.u32(msg.anchorLoUs, 'anchorLoUs');
      const rate = Math.min(uint(msg.rateMilli, 0xffff, 'rateMilli'), 0x7fff);
      w.varint((rate << 1) | (msg.paused ? 1 : 0));
      w.u32(msg.viewers, 'viewers');
      break;
    }
    case 'timelineChanged':
      w.timeline(msg.timeline);
      w.u64(msg.effectiveAtUs, 'effectiveAtUs');
      w.u32(msg.by, 'by');
      w.enumOf(REASONS, msg.reason, 'reason');
      break;
    case 'viewerCount':
      w.u32(msg.count, 'count');
      break;
    case 'pong':
      w.u64(msg.clientTime, 'clientTime');
      w.u64(msg.serverRecvUs, 'serverRecvUs');
      w.u64(msg.serverSendUs, 'serverSendUs');
      break;
    case 'error':
      w.u16(msg.code, 'code');
      w.string(msg.message, 'message');
      w.u32(msg.requestId, 'requestId');
      break;
    case 'memberJoined':
      w.u32(msg.memberId, 'memberId');
      w.enumOf(ROLES, msg.role, 'role');
      w.string(msg.name, 'name');
      break;
    case 'memberLeft':
      w.u32(msg.memberId, 'memberId');
      break;
    case 'roleChanged':
      w.u32(msg.memberId, 'memberId');
      w.enumOf(ROLES, msg.role, 'role');
      break;
    case 'policyChanged':
      w.enumOf(POLICIES, msg.policy, 'policy');
      w.u32(msg.by, 'by');
      break;
    case 'ack':
      w.u32(msg.requestId, 'requestId');
      w.enumOf(ACK_OUTCOMES, msg.outcome, 'outcome');
      w.u32(msg.epoch, 'epoch');
      break;
  }
  return w.done();
}

/**
 * Encodes a client → server message. String limits are not enforced here
 * (the session checks them before connecting), so tests can build bytes
 * that a decoder must refuse.
 * @param {ClientMsg} msg
 * @returns {Uint8Array}
 * @throws {TypeError | RangeError} on a message that is not well-typed
 */
export function encodeClient(msg) {
  const w = new Writer();
  const tag = CLIENT_TYPES.indexOf(/** @type {any} */ (msg?.type));
  if (tag < 0) throw new TypeError(`unknown client message type ${String(msg?.type)}`);
  w.varint(tag);
  switch (msg.type) {
    case 'hello':
      w.u16(msg.version, 'version');
      w.string(msg.eventId, 'eventId');
      w.string(msg.deviceId, 'deviceId');
      if (msg.token === null || msg.token === undefined) {
        w.byte(0);
      } else {
        w.byte(1);
        w.string(msg.token, 'token');
      }
      w.u32(msg.caps, 'caps');
      break;
    case 'ping':
      w.u64(msg.clientTime, 'clientTime');
      break;
    case 'command': {
      w.u32(msg.requestId, 'requestId');
      const a = msg.action;
      w.enumOf(ACTIONS, a?.kind, 'action.kind');
      if (a.kind === 'play' || a.kind === 'pause') {
        if (a.positionMs === null || a.positionMs === undefined) {
          w.byte(0);
        } else {
          w.byte(1);
          w.u64(a.positionMs, 'action.positionMs');
        }
      } else if (a.kind === 'seek') {
        w.u64(a.positionMs, 'action.positionMs');
      } else if (a.kind === 'setRate') {
        w.u16(a.rateMilli, 'action.rateMilli');
      } else if (a.kind === 'setRole') {
        w.u32(a.memberId, 'action.memberId');
        w.enumOf(ROLES, a.role, 'action.role');
      } else {
        w.enumOf(POLICIES, a.policy, 'action.policy');
      }
      break;
    }
    case 'report':
      w.u32(msg.epoch, 'epoch');
      w.u64(msg.positionUs, 'positionUs');
      w.u16(msg.rateMilli, 'rateMilli');
      w.bool(msg.buffering, 'buffering');
      break;
  }
  return w.done();
}

// ------------------------------------------------------------------ framing

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

// ------------------------------------------------------------------ helpers

/**
 * Lowercase hex of bytes (handy in logs and tests).
 * @param {Uint8Array} bytes
 */
export function toHex(bytes) {
  let s = '';
  for (const x of bytes) s += x.toString(16).padStart(2, '0');
  return s;
}

/**
 * Bytes of a hex string; throws TypeError on invalid hex.
 * @param {string} hex
 * @returns {Uint8Array}
 */
export function fromHex(hex) {
  if (typeof hex !== 'string' || hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new TypeError('invalid hex string');
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}
