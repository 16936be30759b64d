// lockstep-client/hls: live adapters for HLS streams, and the hls.js options
// that leave the live latency to the room.
//
//   import Hls from 'hls.js';
//   import { connect } from 'lockstep-client';
//   import { hlsJsAdapter, hlsJsConfig } from 'lockstep-client/hls';
//
//   const hls = new Hls(hlsJsConfig);
//   hls.loadSource(url);
//   hls.attachMedia(video);
//   const s = await connect({ url: server, eventId });
//   s.attach(video, { live: hlsJsAdapter(hls) });
//
// An adapter maps the element's time (seconds, `currentTime`) to program time
// (Unix ms: the stream's EXT-X-PROGRAM-DATE-TIME) and back, and reads the
// live edge. This module never imports hls.js: it takes the instance, so the
// core keeps no dependency and hls.js stays the page's choice (an optional
// peer dependency).

/** @typedef {import('./types.js').LiveAdapter} LiveAdapter */

/**
 * What the adapter reads of an hls.js fragment (`Fragment` in hls.js): its
 * media start and duration (seconds) and its program date time (Unix ms of
 * its first frame, null without EXT-X-PROGRAM-DATE-TIME).
 * @typedef {Object} HlsFragment
 * @property {number} start
 * @property {number} duration
 * @property {number | null} programDateTime
 */

/**
 * What the adapter reads of an hls.js playlist (`LevelDetails` in hls.js).
 * @typedef {Object} HlsLevelDetails
 * @property {HlsFragment[]} fragments the playlist's segments, oldest first
 */

/**
 * What the adapter reads of an hls.js instance: the newest playlist it
 * loaded (`latestLevelDetails`, hls.js 1.6+; else the current or loading
 * level's `details`).
 * @typedef {Object} HlsLike
 * @property {HlsLevelDetails | null} [latestLevelDetails]
 * @property {{details?: HlsLevelDetails | null}[]} [levels]
 * @property {number} [currentLevel]
 * @property {number} [loadLevel]
 */

/**
 * The hls.js options with which hls.js's own live latency control does not
 * fight the room's: the room decides where every viewer plays (its latency,
 * pauses, seeks into the DVR window), the session's drift control moves the
 * element there, and hls.js only loads and buffers. Spread it into your own
 * options: `new Hls({ ...hlsJsConfig, ...yours })` (do not add
 * `liveSyncDuration` or `liveMaxLatencyDuration`: hls.js refuses to mix them
 * with the `…Count` options used here).
 *
 * - `liveSyncDurationCount: 1` — hls.js's own live point ("sync position") is
 *   only where it starts loading before the room's position is known, and
 *   where it jumps when the playhead left the playlist's window; one target
 *   duration behind the newest segment is about where a room with the
 *   server's default latency (3 s) plays, so the first segment it loads is
 *   usually one the room needs. (It also overrides the playlist's HOLD-BACK,
 *   which would otherwise set that point.)
 * - `liveMaxLatencyDurationCount: Infinity` — hls.js never seeks forward to
 *   its live point because the playhead is "too far" behind: a room that is
 *   paused, or seeked back into the DVR window, stays where it is. (This is
 *   hls.js's default; it is set so that another default cannot creep in.)
 * - `maxLiveSyncPlaybackRate: 1` — hls.js never changes `playbackRate` to
 *   catch up with its own target latency (its latency controller does that
 *   only above 1); the drift controller owns the rate.
 * - `liveSyncOnStallIncrease: 0` — a stall does not push hls.js's own live
 *   point further back (the room's latency is the server's: with
 *   `--live-latency-ms auto` it follows the viewers' live reports).
 * - `liveDurationInfinity: true` — the element's `duration` is Infinity and
 *   its `seekable` range is the playlist's window (`setLiveSeekableRange`),
 *   which the session clamps its seeks to: it never seeks before the oldest
 *   segment or past the newest, where hls.js would jump to its live point.
 * - `lowLatencyMode: false` — no LL-HLS parts: at a room latency of seconds
 *   they are not needed, and the newest playable media is then the newest
 *   whole segment, which is what `hlsJsAdapter` reports as the live edge (so
 *   an auto latency measures what this viewer can really play). For LL-HLS
 *   at a room latency under about two segments, set it back to true: the
 *   reported edge then lags what the element can play by up to a segment,
 *   which only makes an auto latency err on the safe side.
 * - `backBufferLength: 60` — played media is kept for a minute (bounded
 *   memory over hours of live; hls.js keeps everything by default), so a room
 *   that seeks back a little finds it buffered.
 *
 * `startPosition` is left at -1 (the live point above): the room's position is
 * not known when the Hls instance is made; the first drift-control step seeks
 * there, and a seek made before hls.js buffered anything becomes its start.
 */
export const hlsJsConfig = Object.freeze({
  liveSyncDurationCount: 1,
  liveMaxLatencyDurationCount: Infinity,
  maxLiveSyncPlaybackRate: 1,
  liveSyncOnStallIncrease: 0,
  liveDurationInfinity: true,
  lowLatencyMode: false,
  backBufferLength: 60,
});

/**
 * A live adapter for an hls.js instance. The mapping comes from the newest
 * playlist hls.js holds (read afresh at every call, so playlist reloads and a
 * sliding window are followed): element time `t` in fragment `f` is program
 * time `f.programDateTime + (t − f.start) × 1000`, as hls.js's own
 * `playingDate`. Times before the window or after its end are extrapolated
 * from its first or last fragment; a program time in a gap between two
 * fragments (a discontinuity) maps to the start of the later one. The live
 * edge is the end of the newest fragment. Everything is null until a
 * playlist with EXT-X-PROGRAM-DATE-TIME is loaded.
 * @param {HlsLike} hls an hls.js instance (`new Hls(hlsJsConfig)`)
 * @returns {LiveAdapter}
 */
export function hlsJsAdapter(hls) {
  if (!hls || typeof hls !== 'object') throw new TypeError('hlsJsAdapter(hls) needs an hls.js instance (new Hls(hlsJsConfig))');

  /** The fragments of the newest playlist, if they carry program date times. */
  const fragments = () => {
    let details = hls.latestLevelDetails;
    if (details === undefined) {
      // hls.js before 1.6: the playing (or loading) level's playlist.
      const levels = Array.isArray(hls.levels) ? hls.levels : [];
      const i = typeof hls.currentLevel === 'number' && hls.currentLevel >= 0 ? hls.currentLevel : hls.loadLevel;
      details = typeof i === 'number' && i >= 0 ? levels[i]?.details : null;
    }
    const frags = details?.fragments;
    if (!Array.isArray(frags) || frags.length === 0) return null;
    return frags.every(timed) ? frags : null;
  };

  return {
    toProgramTime(mediaSeconds) {
      const frags = fragments();
      if (!frags || !Number.isFinite(mediaSeconds)) return null;
      // The last fragment starting at or before t (or the first, extrapolated back).
      const f = frags[Math.max(0, lastAtOrBefore(frags, mediaSeconds, (x) => x.start))];
      return /** @type {number} */ (f.programDateTime) + (mediaSeconds - f.start) * 1000;
    },
    toMediaTime(programMs) {
      const frags = fragments();
      if (!frags || !Number.isFinite(programMs)) return null;
      const i = lastAtOrBefore(frags, programMs, (x) => /** @type {number} */ (x.programDateTime));
      const f = frags[Math.max(0, i)];
      const offset = (programMs - /** @type {number} */ (f.programDateTime)) / 1000;
      // In a gap of program time before the next fragment: its first frame.
      if (i >= 0 && i + 1 < frags.length && offset > f.duration) return frags[i + 1].start;
      return f.start + offset;
    },
    liveEdge() {
      const frags = fragments();
      if (!frags) return null;
      const last = frags[frags.length - 1];
      return /** @type {number} */ (last.programDateTime) + last.duration * 1000;
    },
  };
}

/**
 * A live adapter for an element that plays HLS natively (Safari, iOS):
 * `video.getStartDate()` is the program time of element time 0, and the live
 * edge is the end of the element's seekable range (which Safari already
 * places its own hold-back behind the playlist's end, so the edge reported is
 * on the safe side). Null where `getStartDate()` is missing or gives no date
 * (no EXT-X-PROGRAM-DATE-TIME, or before the playlist loaded).
 * @param {HTMLMediaElement & {getStartDate?: () => Date}} video
 * @returns {LiveAdapter}
 */
export function nativeHlsAdapter(video) {
  if (!video || typeof video !== 'object') throw new TypeError('nativeHlsAdapter(video) needs the media element that plays the stream');
  const startMs = () => {
    if (typeof video.getStartDate !== 'function') return null;
    const d = video.getStartDate();
    const ms = d instanceof Date ? d.getTime() : NaN;
    return Number.isFinite(ms) ? ms : null;
  };
  return {
    toProgramTime(mediaSeconds) {
      const s = startMs();
      return s === null || !Number.isFinite(mediaSeconds) ? null : s + mediaSeconds * 1000;
    },
    toMediaTime(programMs) {
      const s = startMs();
      return s === null || !Number.isFinite(programMs) ? null : (programMs - s) / 1000;
    },
    liveEdge() {
      const s = startMs();
      const r = video.seekable;
      if (s === null || !r || r.length === 0) return null;
      const end = r.end(r.length - 1);
      return Number.isFinite(end) ? s + end * 1000 : null;
    },
  };
}

/** @param {HlsFragment} f */
function timed(f) {
  return Number.isFinite(f?.start) && Number.isFinite(f.duration) && typeof f.programDateTime === 'number' && Number.isFinite(f.programDateTime);
}

/**
 * Index of the last item whose key is at most `v` (items ordered by key), -1 if none.
 * @template T
 * @param {T[]} items
 * @param {number} v
 * @param {(x: T) => number} key
 */
function lastAtOrBefore(items, v, key) {
  let lo = 0;
  let hi = items.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (key(items[mid]) <= v) {
      found = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return found;
}
