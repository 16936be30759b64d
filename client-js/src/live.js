// Live rooms (SPEC 2.4), the client's side: the room's live state as the
// session shows it, the checks of a live adapter and of program times, and
// what the element controller reads from the element in a live room (the DVR
// window it may seek in, the media buffered ahead for `LiveReport`).
//
// In a live room positions are program time (the wall-clock time at which a
// frame was captured, Unix ms) relative to the room's origin:
// `programTime = originMs + position`. An adapter (`attach(video, {live})`)
// maps the element's own time to program time and back.

import { LIMITS } from './constants.js';

/** @typedef {import('./codec.js').LiveStateMsg} LiveStateMsg */
/** @typedef {import('./types.js').LiveState} LiveState */
/** @typedef {import('./types.js').LiveAdapter} LiveAdapter */

/**
 * The session's view of a `LiveState` message: null when it says the room's
 * clock is media time.
 * @param {LiveStateMsg} m
 * @returns {LiveState | null}
 */
export function liveStateOf(m) {
  if (m.clock !== 'live') return null;
  return Object.freeze({
    clock: /** @type {'live'} */ ('live'),
    originMs: Number(m.originMs),
    latencyMs: m.latencyMs,
    autoLatency: m.autoLatency,
    atLive: m.atLive,
  });
}

/**
 * Whether two live states say the same.
 * @param {LiveState | null} a
 * @param {LiveState | null} b
 */
export function sameLive(a, b) {
  if (a === null || b === null) return a === b;
  return a.originMs === b.originMs && a.latencyMs === b.latencyMs && a.autoLatency === b.autoLatency && a.atLive === b.atLive;
}

/**
 * The options of `attach()`, checked: throws a TypeError on an adapter that
 * lacks one of its three functions.
 * @param {unknown} opts
 * @returns {LiveAdapter | null}
 */
export function adapterOf(opts) {
  if (opts === undefined || opts === null) return null;
  if (typeof opts !== 'object') throw new TypeError('attach(video, options): options must be an object such as { live: adapter }');
  const live = /** @type {{live?: unknown}} */ (opts).live;
  if (live === undefined || live === null) return null;
  const a = /** @type {Record<string, unknown>} */ (live);
  const missing = ['toProgramTime', 'toMediaTime', 'liveEdge'].filter((k) => typeof a[k] !== 'function');
  if (typeof live !== 'object' || missing.length) {
    throw new TypeError(
      `attach(video, { live }): live must be an adapter with toProgramTime(), toMediaTime() and liveEdge()${missing.length ? ` (missing: ${missing.join(', ')})` : ''}, e.g. hlsJsAdapter(hls) from 'lockstep-client/hls'`,
    );
  }
  return /** @type {LiveAdapter} */ (live);
}

/**
 * A program time (Unix ms) as a room position in whole ms; throws a
 * RangeError for one the room cannot express (before its origin, beyond the
 * protocol's largest position, not a finite number).
 * @param {number} programMs
 * @param {number} originMs
 */
export function positionMsOf(programMs, originMs) {
  const ms = Math.round(Number(programMs) - originMs);
  if (!Number.isFinite(ms) || ms < 0 || ms > LIMITS.MAX_POSITION_MS) {
    throw new RangeError(
      `program time must be a Unix time in ms between the room's origin (${originMs}) and ${originMs + LIMITS.MAX_POSITION_MS}, got ${programMs}`,
    );
  }
  return ms;
}

/**
 * A finite number, or null (an adapter's answer, read defensively).
 * @param {unknown} v
 * @returns {number | null}
 */
export function finiteOrNull(v) {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

/**
 * The element's seekable range (the DVR window of a live stream), if it has one.
 * @param {{seekable?: TimeRanges}} el
 * @returns {{start: number, end: number} | null}
 */
export function seekableRange(el) {
  const r = el.seekable;
  if (!r || typeof r.length !== 'number' || r.length === 0) return null;
  const start = r.start(0);
  const end = r.end(r.length - 1);
  return start <= end ? { start, end } : null;
}

/**
 * `position` (element seconds) within the element's seekable range, if it has one.
 * @param {number} position
 * @param {{seekable?: TimeRanges}} el
 */
export function clampToSeekable(position, el) {
  const r = seekableRange(el);
  return r ? Math.min(Math.max(position, r.start), r.end) : position;
}

/** How much of its oldest media an element may play while the room is before the window, s. */
const OLDEST_S = 1;

/**
 * Where an element should be for a live room at `position` (element
 * seconds), given its DVR window (SPEC 2.4: unless it is configured with the
 * window, the server does not know it; the client clamps to what it holds). Past the window's end: the
 * end (seeking beyond the newest segment would only make hls.js jump back
 * to its own live point). Before its start: the oldest second of it, where
 * an element already playing is left alone, since the window's start moves
 * on at 1× and nudging the element toward it would push it out.
 * @param {number} position
 * @param {{seekable?: TimeRanges, currentTime: number}} el
 */
export function liveTargetIn(position, el) {
  const r = seekableRange(el);
  if (!r) return position;
  if (position > r.end) return r.end;
  if (position >= r.start) return position;
  const oldest = Math.min(r.start + OLDEST_S, r.end);
  const t = el.currentTime;
  return Number.isFinite(t) ? Math.min(Math.max(t, r.start), oldest) : r.start;
}

/**
 * Media buffered ahead of the element's position, ms (0 when its position
 * is in no buffered range). A range starting within 100 ms after the
 * position counts (a gap that small is skipped by players).
 * @param {{buffered?: TimeRanges, currentTime: number}} el
 */
export function bufferedAheadMs(el) {
  const b = el.buffered;
  const t = el.currentTime;
  if (!b || typeof b.length !== 'number' || !Number.isFinite(t)) return 0;
  for (let i = 0; i < b.length; i++) {
    const start = b.start(i);
    const end = b.end(i);
    if (t >= start - 0.1 && t < end) return Math.min(0xffffffff, Math.round((end - Math.max(t, start)) * 1000));
  }
  return 0;
}
