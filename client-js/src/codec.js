// Hand-written codec for the Lockstep wire protocol, version 1: every message
// in both directions. The primitives are in wire.js, stream framing in
// framing.js, the constants in constants.js, the error codes in codes.js.
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
//   Pong.serverSendUs, Ping.clientTime, Report.positionUs,
//   LiveState.originMs, LiveReport.liveEdgeMs, and the positionMs of the
//   Play, Pause and Seek actions.
// With the reference server none of them exceeds 2^53 in practice (server
// times are Unix microseconds, below 2^53 until the year 2255; positions are
// at most MAX_POSITION_MS), so a `bigint` only appears for extreme or hostile
// input. Encoders accept either type for u64 fields.
//
// Decoding is total: any input gives a message or throws a
// LockstepDecodeError (`kind` + protocol `code`); the try* variants never
// throw. The order of checks mirrors the reference decoder so that `kind`
// matches protocol/vectors/invalid.json exactly.

import { LIMITS } from './constants.js';
import { LockstepDecodeError } from './errors.js';
import { Fail, Reader, Writer, asBytes, uint, utf8Encoder } from './wire.js';

// The constants, error codes (one table), decode errors and framing live in
// their own modules; re-exported here as before.
export { CAPS, LIMITS, PROTOCOL_VERSION } from './constants.js';
export { CODES, DECODE_CODES, ERROR_CODES, codeCloses, codeFatal, codeName } from './codes.js';
export { LockstepDecodeError } from './errors.js';
export { FrameDecoder, encodeFrame } from './framing.js';

// ------------------------------------------------------------------ types

/** @typedef {import('./errors.js').DecodeErrorKind} DecodeErrorKind */

/** @typedef {number | bigint} U64 A u64: a number up to 2^53 − 1, a bigint above. */
/** @typedef {'host' | 'co-host' | 'viewer'} Role */
/** @typedef {'host-only' | 'everyone'} ControlPolicy */
/** @typedef {'seek' | 'pause' | 'play' | 'rate' | 'buffering-wait' | 'resume'} ChangeReason */
/** @typedef {'media' | 'live'} ClockKind What a room's positions measure (SPEC 2.4). */
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
 * @typedef {{type: 'liveState', clock: ClockKind, originMs: U64, latencyMs: number, autoLatency: boolean, atLive: boolean}} LiveStateMsg
 * @typedef {{emoji: string, count: number}} ReactionCount
 * @typedef {{type: 'reactions', counts: ReactionCount[]}} ReactionsMsg The room's reactions of one window, most frequent first (SPEC 6.5; REACTIONS clients only).
 * @typedef {{type: 'chatMessage', id: U64, atMs: U64, memberId: number, name: string, role: Role, text: string, requestId: number, history: boolean}} ChatMessageMsg A chat message in the room's order; the sender's copy carries its request id; `history` after Welcome (SPEC 6.6; CHAT clients only).
 * @typedef {{type: 'chatDeleted', id: U64, by: number}} ChatDeletedMsg A host or co-host deleted a chat message (SPEC 6.6).
 * @typedef {{type: 'chatMuted', muted: boolean, by: number}} ChatMutedMsg This member was muted or unmuted in the room's chat (SPEC 6.6).
 * @typedef {{mediaId: string, url: string | null, title: string | null, durationMs: U64 | null}} MediaItem A media item (SPEC 6.7): the page resolves `mediaId` to a source, or plays `url`.
 * @typedef {{type: 'mediaChanged', item: MediaItem | null, index: number | null, epoch: number, by: number}} MediaChangedMsg The room switched to another item (the timeline change of `epoch`); SPEC 6.7, MEDIA clients only.
 * @typedef {{type: 'queueChanged', items: MediaItem[], current: number | null, autoAdvance: boolean, by: number}} QueueChangedMsg The room's playlist (SPEC 6.7; MEDIA clients only).
 * @typedef {WelcomeMsg | TickMsg | TimelineChangedMsg | ViewerCountMsg | PongMsg | ErrorMsg | MemberJoinedMsg | MemberLeftMsg | RoleChangedMsg | PolicyChangedMsg | AckMsg | LiveStateMsg | ReactionsMsg | ChatMessageMsg | ChatDeletedMsg | ChatMutedMsg | MediaChangedMsg | QueueChangedMsg} ServerMsg
 */

/**
 * @typedef {{kind: 'play', positionMs: U64 | null}
 *   | {kind: 'pause', positionMs: U64 | null}
 *   | {kind: 'seek', positionMs: U64}
 *   | {kind: 'setRate', rateMilli: number}
 *   | {kind: 'setRole', memberId: number, role: Role}
 *   | {kind: 'setPolicy', policy: ControlPolicy}
 *   | {kind: 'goLive'}
 *   | {kind: 'deleteChat', id: U64}
 *   | {kind: 'muteChat', memberId: number, muted: boolean}} Action
 * @typedef {{type: 'hello', version: number, eventId: string, deviceId: string, token: string | null, caps: number}} HelloMsg
 * @typedef {{type: 'ping', clientTime: U64}} PingMsg
 * @typedef {{type: 'command', requestId: number, action: Action}} CommandMsg
 * @typedef {{type: 'report', epoch: number, positionUs: U64, rateMilli: number, buffering: boolean}} ReportMsg
 * @typedef {{type: 'liveReport', liveEdgeMs: U64, bufferMs: number}} LiveReportMsg
 * @typedef {{type: 'nack', epoch: number}} NackMsg A missed datagram-only change: asks for the newest change after `epoch` on the stream (SPEC 5.2).
 * @typedef {{type: 'syncReport', epoch: number, driftUs: number}} SyncReportMsg The client's measured drift (element − room position, µs, positive: ahead) for the room's sync quality (SPEC 6.1).
 * @typedef {{type: 'suspend', reason: string}} SuspendMsg The member stops following the room for `reason` (SPEC 6.4).
 * @typedef {{type: 'resume'}} ResumeMsg The member follows the room again (SPEC 6.4).
 * @typedef {{type: 'react', emoji: string}} ReactMsg An emoji reaction (SPEC 6.5).
 * @typedef {{type: 'chat', requestId: number, text: string}} ChatMsg A chat message (SPEC 6.6), answered by the room's `chatMessage` with the same request id, or an error.
 * @typedef {{kind: 'set', item: MediaItem}
 *   | {kind: 'add', item: MediaItem}
 *   | {kind: 'remove', mediaId: string}
 *   | {kind: 'move', mediaId: string, index: number}
 *   | {kind: 'next'}
 *   | {kind: 'previous'}
 *   | {kind: 'autoAdvance', on: boolean}} MediaOp
 * @typedef {{type: 'media', requestId: number, op: MediaOp}} MediaMsg A media command (SPEC 6.7), answered like a command.
 * @typedef {HelloMsg | PingMsg | CommandMsg | ReportMsg | LiveReportMsg | NackMsg | SyncReportMsg | SuspendMsg | ResumeMsg | ReactMsg | ChatMsg | MediaMsg} ClientMsg
 */

const ROLES = /** @type {const} */ (['host', 'co-host', 'viewer']);
const POLICIES = /** @type {const} */ (['host-only', 'everyone']);
const REASONS = /** @type {const} */ (['seek', 'pause', 'play', 'rate', 'buffering-wait', 'resume']);
const ACK_OUTCOMES = /** @type {const} */ (['applied', 'unchanged', 'coalesced']);
const ACTIONS = /** @type {const} */ (['play', 'pause', 'seek', 'setRate', 'setRole', 'setPolicy', 'goLive', 'deleteChat', 'muteChat']);
const CLOCKS = /** @type {const} */ (['media', 'live']);
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
  'liveState',
  'reactions',
  'chatMessage',
  'chatDeleted',
  'chatMuted',
  'mediaChanged',
  'queueChanged',
]);
const MEDIA_OPS = /** @type {const} */ (['set', 'add', 'remove', 'move', 'next', 'previous', 'autoAdvance']);
const CLIENT_TYPES = /** @type {const} */ (['hello', 'ping', 'command', 'report', 'liveReport', 'nack', 'syncReport', 'suspend', 'resume', 'react', 'chat', 'media']);

// ------------------------------------------------------------------ reading

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
    case 10:
      return { type: 'ack', requestId: r.u32(), outcome: r.enumOf(ACK_OUTCOMES, 'AckOutcome'), epoch: r.u32() };
    case 11:
      return {
        type: 'liveState',
        clock: r.enumOf(CLOCKS, 'ClockKind'),
        originMs: r.u64(),
        latencyMs: r.u32(),
        autoLatency: r.bool(),
        atLive: r.bool(),
      };
    case 13:
      return {
        type: 'chatMessage',
        id: r.u64(),
        atMs: r.u64(),
        memberId: r.u32(),
        name: r.string(),
        role: r.enumOf(ROLES, 'Role'),
        text: r.string(),
        requestId: r.u32(),
        history: r.bool(),
      };
    case 14:
      return { type: 'chatDeleted', id: r.u64(), by: r.u32() };
    case 16:
      return { type: 'mediaChanged', item: r.some() ? mediaItem(r) : null, index: r.some() ? r.u32() : null, epoch: r.u32(), by: r.u32() };
    case 17: {
      const n = r.u64();
      if (typeof n !== 'number' || n > LIMITS.MAX_QUEUE) throw new Fail('Invalid', `more than ${LIMITS.MAX_QUEUE} playlist items`);
      /** @type {MediaItem[]} */
      const items = [];
      for (let i = 0; i < n; i++) items.push(mediaItem(r));
      return { type: 'queueChanged', items, current: r.some() ? r.u32() : null, autoAdvance: r.bool(), by: r.u32() };
    }
    case 15:
      return { type: 'chatMuted', muted: r.bool(), by: r.u32() };
    default: {
      const n = r.u64();
      if (typeof n !== 'number' || n > LIMITS.MAX_REACTION_KINDS) throw new Fail('Invalid', `more than ${LIMITS.MAX_REACTION_KINDS} reaction kinds`);
      /** @type {ReactionCount[]} */
      const counts = [];
      for (let i = 0; i < n; i++) counts.push({ emoji: r.string(), count: r.u32() });
      return { type: 'reactions', counts };
    }
  }
}

/**
 * @param {Reader} r
 * @returns {MediaItem}
 */
function mediaItem(r) {
  return {
    mediaId: r.string(),
    url: r.some() ? r.string() : null,
    title: r.some() ? r.string() : null,
    durationMs: r.some() ? r.u64() : null,
  };
}

/**
 * @param {Reader} r
 * @returns {MediaOp}
 */
function mediaOp(r) {
  const kind = r.enumOf(MEDIA_OPS, 'MediaOp');
  switch (kind) {
    case 'set':
    case 'add':
      return { kind, item: mediaItem(r) };
    case 'remove':
      return { kind, mediaId: r.string() };
    case 'move':
      return { kind, mediaId: r.string(), index: r.u32() };
    case 'autoAdvance':
      return { kind, on: r.bool() };
    default:
      return { kind };
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
    case 'setPolicy':
      return { kind, policy: r.enumOf(POLICIES, 'ControlPolicy') };
    case 'deleteChat':
      return { kind, id: r.u64() };
    case 'muteChat':
      return { kind, memberId: r.u32(), muted: r.bool() };
    default:
      return { kind: 'goLive' };
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
    case 3:
      return { type: 'report', epoch: r.u32(), positionUs: r.u64(), rateMilli: r.u16(), buffering: r.bool() };
    case 4:
      return { type: 'liveReport', liveEdgeMs: r.u64(), bufferMs: r.u32() };
    case 5:
      return { type: 'nack', epoch: r.u32() };
    case 6:
      return { type: 'syncReport', epoch: r.u32(), driftUs: r.i32() };
    case 7:
      return { type: 'suspend', reason: r.string() };
    case 8:
      return { type: 'resume' };
    case 9:
      return { type: 'react', emoji: r.string() };
    case 10:
      return { type: 'chat', requestId: r.u32(), text: r.string() };
    default:
      return { type: 'media', requestId: r.u32(), op: mediaOp(r) };
  }
}

/** @param {MediaItem} i */
function checkItem(i) {
  checkLen(i.mediaId, LIMITS.MAX_MEDIA_ID, 'media id');
  if (i.url !== null) checkLen(i.url, LIMITS.MAX_MEDIA_URL, 'media url');
  if (i.title !== null) checkLen(i.title, LIMITS.MAX_MEDIA_TITLE, 'media title');
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
    else if (m.type === 'reactions') for (const c of m.counts) checkLen(c.emoji, LIMITS.MAX_EMOJI, 'reaction');
    else if (m.type === 'mediaChanged' && m.item) checkItem(m.item);
    else if (m.type === 'queueChanged') for (const i of m.items) checkItem(i);
    else if (m.type === 'chatMessage') {
      checkLen(m.name, LIMITS.MAX_NAME, 'member name');
      checkLen(m.text, LIMITS.MAX_CHAT_TEXT, 'chat message');
    }
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
    if (m.type === 'suspend') checkLen(m.reason, LIMITS.MAX_REASON, 'suspension reason');
    if (m.type === 'react') checkLen(m.emoji, LIMITS.MAX_EMOJI, 'reaction');
    if (m.type === 'chat') checkLen(m.text, LIMITS.MAX_CHAT_TEXT, 'chat message');
    if (m.type === 'media' && (m.op.kind === 'set' || m.op.kind === 'add')) checkItem(m.op.item);
    if (m.type === 'media' && (m.op.kind === 'remove' || m.op.kind === 'move')) checkLen(m.op.mediaId, LIMITS.MAX_MEDIA_ID, 'media id');
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
    case 'liveState':
      w.enumOf(CLOCKS, msg.clock, 'clock');
      w.u64(msg.originMs, 'originMs');
      w.u32(msg.latencyMs, 'latencyMs');
      w.bool(msg.autoLatency, 'autoLatency');
      w.bool(msg.atLive, 'atLive');
      break;
    case 'reactions':
      if (!Array.isArray(msg.counts) || msg.counts.length > LIMITS.MAX_REACTION_KINDS) throw new RangeError(`counts must be an array of at most ${LIMITS.MAX_REACTION_KINDS}`);
      w.varint(msg.counts.length);
      for (const c of msg.counts) {
        w.string(c.emoji, 'emoji');
        w.u32(c.count, 'count');
      }
      break;
    case 'chatMessage':
      w.u64(msg.id, 'id');
      w.u64(msg.atMs, 'atMs');
      w.u32(msg.memberId, 'memberId');
      w.string(msg.name, 'name');
      w.enumOf(ROLES, msg.role, 'role');
      w.string(msg.text, 'text');
      w.u32(msg.requestId, 'requestId');
      w.bool(msg.history, 'history');
      break;
    case 'chatDeleted':
      w.u64(msg.id, 'id');
      w.u32(msg.by, 'by');
      break;
    case 'chatMuted':
      w.bool(msg.muted, 'muted');
      w.u32(msg.by, 'by');
      break;
    case 'mediaChanged':
      option(w, msg.item, (i) => writeItem(w, i));
      option(w, msg.index, (i) => w.u32(i, 'index'));
      w.u32(msg.epoch, 'epoch');
      w.u32(msg.by, 'by');
      break;
    case 'queueChanged':
      if (!Array.isArray(msg.items) || msg.items.length > LIMITS.MAX_QUEUE) throw new RangeError(`items must be an array of at most ${LIMITS.MAX_QUEUE}`);
      w.varint(msg.items.length);
      for (const i of msg.items) writeItem(w, i);
      option(w, msg.current, (c) => w.u32(c, 'current'));
      w.bool(msg.autoAdvance, 'autoAdvance');
      w.u32(msg.by, 'by');
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
      option(w, msg.token, (t) => w.string(t, 'token'));
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
        option(w, a.positionMs, (p) => w.u64(p, 'action.positionMs'));
      } else if (a.kind === 'seek') {
        w.u64(a.positionMs, 'action.positionMs');
      } else if (a.kind === 'setRate') {
        w.u16(a.rateMilli, 'action.rateMilli');
      } else if (a.kind === 'setRole') {
        w.u32(a.memberId, 'action.memberId');
        w.enumOf(ROLES, a.role, 'action.role');
      } else if (a.kind === 'setPolicy') {
        w.enumOf(POLICIES, a.policy, 'action.policy');
      } else if (a.kind === 'deleteChat') {
        w.u64(a.id, 'action.id');
      } else if (a.kind === 'muteChat') {
        w.u32(a.memberId, 'action.memberId');
        w.bool(a.muted, 'action.muted');
      }
      break;
    }
    case 'report':
      w.u32(msg.epoch, 'epoch');
      w.u64(msg.positionUs, 'positionUs');
      w.u16(msg.rateMilli, 'rateMilli');
      w.bool(msg.buffering, 'buffering');
      break;
    case 'liveReport':
      w.u64(msg.liveEdgeMs, 'liveEdgeMs');
      w.u32(msg.bufferMs, 'bufferMs');
      break;
    case 'nack':
      w.u32(msg.epoch, 'epoch');
      break;
    case 'syncReport':
      w.u32(msg.epoch, 'epoch');
      w.i32(msg.driftUs, 'driftUs');
      break;
    case 'suspend':
      w.string(msg.reason, 'reason');
      break;
    case 'resume':
      break;
    case 'react':
      w.string(msg.emoji, 'emoji');
      break;
    case 'chat':
      w.u32(msg.requestId, 'requestId');
      w.string(msg.text, 'text');
      break;
    case 'media': {
      w.u32(msg.requestId, 'requestId');
      const op = msg.op;
      w.enumOf(MEDIA_OPS, op?.kind, 'op.kind');
      if (op.kind === 'set' || op.kind === 'add') writeItem(w, op.item);
      else if (op.kind === 'remove') w.string(op.mediaId, 'op.mediaId');
      else if (op.kind === 'move') {
        w.string(op.mediaId, 'op.mediaId');
        w.u32(op.index, 'op.index');
      } else if (op.kind === 'autoAdvance') w.bool(op.on, 'op.on');
      break;
    }
  }
  return w.done();
}

/**
 * @param {Writer} w
 * @param {MediaItem} i
 */
function writeItem(w, i) {
  if (typeof i !== 'object' || i === null) throw new TypeError('a media item is an object');
  w.string(i.mediaId, 'item.mediaId');
  option(w, i.url, (u) => w.string(u, 'item.url'));
  option(w, i.title, (t) => w.string(t, 'item.title'));
  option(w, i.durationMs, (d) => w.u64(d, 'item.durationMs'));
}

/**
 * An `Option<T>`: a 0 byte for none, else a 1 byte and the value.
 * @template T
 * @param {Writer} w
 * @param {T | null | undefined} v
 * @param {(v: T) => void} write
 */
function option(w, v, write) {
  if (v === null || v === undefined) {
    w.byte(0);
  } else {
    w.byte(1);
    write(v);
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
