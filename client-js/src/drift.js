// The drift controller: keeps a media element on the room's timeline.
//
// PURE: no DOM, no timers, no clock. Each call to update() gets the target
// (the room timeline evaluated at the estimated server time), the element's
// state and the local time, and returns the actions to apply
// ({setRate}, {seek}, {play}, {pause}). The session feeds it on a timer and on
// the element's events, and hands it every presented frame (frame(), from
// requestVideoFrameCallback); the tests feed it a simulated element.
//
// The position measured is frame-accurate (src/position.js): the element's
// clock from `currentTime` readings (their upper envelope: Firefox's advances
// in whole frames), plus where the frames it presents are against that clock
// (averaged from requestVideoFrameCallback, where the browser has it).
// Drift = that position − target position.
//
// Bands:
//
//   |drift| ≤ 15 ms (locked)        fine, continuous rate steps: rate =
//                                   room · (1 − drift / horizon), horizon 1 s,
//                                   bounded to ±0.5 % (far below what a viewer
//                                   hears; pitch is preserved anyway), in steps
//                                   of 0.1 %, on the mean of the last 6
//                                   measurements (1.5 s: the measurement's noise
//                                   is averaged out, not chased). A step is
//                                   made only when the wanted rate is 3/4 of a
//                                   step away from the one in force
//                                   (hysteresis), so noise does not toggle it.
//                                   The offset goes to the measurement's noise
//                                   instead of staying wherever it settled.
//   paced (Chromium)                where the frames are paced by a cadence
//                                   locked to the display (a continuous
//                                   `currentTime` and presented frames: see
//                                   src/position.js), a rate within ~0.25 %
//                                   of the room's moves the clock but not the
//                                   frames, so the fine band uses no such
//                                   rate: the room's, or room · (1 ∓ 0.5 %)
//                                   (which breaks the cadence, so the frames
//                                   follow the clock) from a drift of the
//                                   frames above 2 ms until it is within
//                                   0.3 ms of zero (or past it), then the
//                                   room's again (the cadence locks there).
//                                   Measured in one Chromium page against a
//                                   room 12 ms off (scripts/cadence-probe.mjs):
//                                   frames p95 2.3 ms (median of 11 runs)
//                                   against 3.6–4.5 with 0.1 % steps, which
//                                   left the frames where the cadence held them.
//   relock (Chromium, a known       where the frames are locked on a known
//   lattice)                        lattice (src/cadence.js: a refresh grid
//                                   fitted to the frames, a frame rate the
//                                   browser paces by a cadence), instead of
//                                   the paced band: the room's rate while the
//                                   frames are on the lattice point nearest
//                                   the room (within 2.5 ms), else a pulse at
//                                   ±5 % that breaks the cadence, started and
//                                   ended on frames chosen so that it locks
//                                   again on that point, then the room's rate
//                                   while it does (~1.4 s), and the frame that
//                                   begins a lock learned from where it did;
//                                   relocks that keep missing back off (2 s,
//                                   doubling, to a minute).
//   15 ms < |drift| ≤ seek (1 s)    the same law, bounded to ±5 %, on the mean
//                                   of the last 2 measurements; once
//                                   correcting, it keeps going until |drift| <
//                                   5 ms (hysteresis), where the law is at the
//                                   fine band's bound (5 ms / 1 s = 0.5 %), so
//                                   the hand-over is seamless.
//   |drift| > seek threshold        seek to target + room rate · (learned seek
//                                   latency (EWMA of measured seek durations)
//                                   + 50 ms), the element paused meanwhile
//                                   (parked), and play() it when the room
//                                   reaches that position, one learned
//                                   start-up latency early (as a scheduled
//                                   play): a mispredicted seek latency then
//                                   costs nothing unless the seek takes longer
//                                   than the lead. The session is asked to
//                                   step at that time (`wakeAtMs`). Then a
//                                   cooldown: no new seek until the last
//                                   one has completed, settled, and 1.5 s have
//                                   passed. Three corrective seeks within 30 s
//                                   double the threshold (up to 4×): a stream
//                                   whose seeks keep missing is left to the
//                                   rate band instead of being fought.
//
// Paused: the element is paused and put on the room's position exactly
// (a seek when it is more than 1 ms off: a scheduled pause lands a timer's
// jitter late), so paused viewers show the same frame. Such a snap is not
// counted in `corrections.seeks` (those are seeks of a playing element).
//
// Starts on time (pre-roll): an element does not move the instant play() is
// called (35–65 ms in Chromium). The controller learns that start-up
// latency the way it learns seek latency (EWMA of measurements, each timed
// on the first new frames it presents: start = shown − moved / rate, the
// mean of three; from a `currentTime` reading where there are no frames:
// an element's clock may start at once while its first new frame comes
// tens of ms later, and the frames are what the viewer sees), and
// when the target announces a scheduled play (`next`) it calls play() that
// much early, holding the target at the start position until the play's
// time, so the first frame moves at the scheduled time instead of one
// start-up latency later (and no rate correction has to catch it up). While
// a change is scheduled the controller asks for a step (`wakeAtMs`) at its
// pre-roll (or, with no latency learned yet, at its time), and begins a
// pre-roll up to 1 ms early: the session's timers may fire a fraction of a
// millisecond early on this clock, and a step that found the change not yet
// due would leave it to the next control tick. A change whose time has come
// on the step's clock is followed even when the target (read an instant
// earlier) still shows the room before it: the pre-rolled element is not
// paused and put back.
//
// The first start can be on time too (start-up probe, `startProbe`, off by
// default): while the room is paused, an element whose start-up latency is
// not known yet is played (muted) until it has presented a few new frames,
// then paused and put back on the room's position: a few frames on a
// paused page, once, instead of the first shared start landing one start-up
// latency late. Off by default: a played element loses its poster, and
// players mark it started (video.js hides its big play button).
//
// A start that would be late (parked start): when the room plays and the
// element, paused, would start more than `lateStartMs` behind it (the play
// arrived after its time, through a slow or lossy path, or with less time
// left than the start-up latency), it seeks ahead instead and starts when
// the room gets there, as a parked seek does: a moment later on screen, but
// on the room's frame, not 50–200 ms behind and catching up for seconds.
//
// A start that came up early (held start): a start is timed on its first
// frames (the first start too, where the session hands frames over:
// `expectFrames()`); if they show the element more than `earlyStartMs`
// (12 ms) ahead of the room (its start-up latency was overestimated: an
// element's first play() is often much slower than its later ones, and the
// next pre-roll goes by it), it is paused on the frame it shows and played
// again when the room gets there, once per timeline: a frame held a few
// tens of ms longer instead of a rate correction that takes a second or more
// (±5 % sheds 12 ms in 250 ms).
//
// A start that came up late (rushed start): if a start's first frames show
// the element more than `lateLandingMs` (12 ms) behind the room (its
// start-up latency was not known yet, as at an element's first start, or
// was underestimated, or the play reached it late), it plays at
// room · (1 + `landingRateAdjust`, 10 %) for as long as that lateness takes
// (at most 500 ms; a stall or a seek ends it), once per timeline, then the
// bands take over: 40 ms caught up in 400 ms, where the ±5 % band's law
// (drift / 1 s) still leaves 60 % of it half a second later. A lateness of
// more than 30 ms is caught up faster, within 300 ms, at up to
// `maxLandingRateAdjust` (25 %: dash.js's live catch-up goes to 1.5×): a
// headless Firefox's first start came up 50–90 ms late, of which 500 ms at
// 10 % left up to 40 ms. Open loop, on the start's own frames (the
// position estimator's presentation offset may still be an earlier
// start's); not on a `currentTime` reading, which can be a frame off.
//
// A start that came up a little off, where `currentTime` steps (fine
// landing): Firefox's frames follow its clock (no display cadence holds
// them, as Chromium's), and below the ±5 % band only the fine band corrects
// (±0.5 %: 5 ms a second), so a start that came up 5–12 ms off stayed so
// through the half second after a play or a seek, and two such pages ended
// up to 24 ms apart. There, a start more than `fineLandingMs` (4 ms) off
// either way, early ones below `earlyStartMs` (not held), is corrected as a
// rushed start is: at room · (1 ± `landingRateAdjust`) for as long as it
// takes (10 ms in 100 ms), once per timeline. Not where `currentTime` is
// continuous (Chromium): its frames keep their cadence's phase through a
// small correction, and its relocks place them (below).
//
// While the element is buffering (waiting/stalled, or readyState below
// HAVE_FUTURE_DATA while it should play) or seeking, no correction is made:
// the session reports buffering to the server instead, whose buffering
// policy decides whether the room waits. When the stall ends, the normal
// bands apply to whatever drift is left: a seek if large, else the rate.
// The only exception is a new timeline epoch (the host jumped): a large jump
// is followed at once, even mid-stall, since buffering the old position is
// useless.
//
// Why this beats the anchors (shared/reference/anchors.md):
// - Jellyfin: rate = 1 + diff / 1 s, held for 1 s (speedToSyncDuration),
//   with a 0.2× floor and no ceiling, from 60 ms on, checked at most every
//   1.5 s, and off by default. Same gain as ours, but open-loop and unbounded:
//   at 300 ms of drift it plays 1.3× (audible even with pitch correction), and
//   a correction sized for 1 s but re-checked only every 1.5 s overshoots.
//   Ours is closed-loop every 250 ms (and on every media event), bounded to
//   ±5 % (±0.5 % within 15 ms), which pitch-preserving playback makes
//   inaudible, and has no dead band.
// - OpenWatchParty: rate = 1 ± 0.5·sqrt(|drift|) clamped to 0.85–2×, 40 ms
//   dead zone, 500 ms loop. sqrt has unbounded gain near zero, so small
//   drifts get large rate swings (41 ms → 10 %, held 500 ms = 50 ms of
//   correction: it overshoots past zero), and 300 ms gets 27 %. Ours is
//   linear near zero (40 ms → 4 %) and bounded; test/drift.test.js runs both
//   laws on the same simulated element and checks overshoot and rate swing.
// - MediaSync (timingsrc): graded gains (k 0.07…1.3, limits ±2 %…±100 %),
//   jumps above 1 s, learns seek latency, measures on currentTime only. We keep what works (the 1 s jump,
//   latency learning, seek-storm back-off) with one linear gain, a much
//   tighter bound, a cooldown that waits for the seek to complete, and
//   buffering awareness, which MediaSync lacks.
// - Syncplay (0.95× only, seeks at 4–5 s) and CyTube (seek at 2 s, no rate):
//   far coarser bands.
// Rates other than 1 are honoured: every nudge is relative to the room rate.

import { GRID_MIN_FRAMES, latticeStep, hasCadence, RefreshGrid, shownUnlocked } from './cadence.js';
import { PositionEstimator } from './position.js';

/** A start is timed on this many presented frames (their mean). */
const START_FRAMES = 3;
/** A rushed start (a start that came up late, or a fine landing) lasts at most this long; the bands do the rest. */
const RUSH_MAX_MS = 500;
/** A rushed start faster than `landingRateAdjust` (up to `maxLandingRateAdjust`) catches its lateness up within this. */
const RUSH_WITHIN_MS = 300;
/** Without them this long after play(), it is timed on a `currentTime` reading. */
const START_FRAMES_WAIT_MS = 600;
/**
 * A pre-roll this close to being due is begun now: a timer set for it may fire a little early on the controller's
 * clock (Firefox rounds `performance.now()` to 1 ms; a new clock sample moves the change's local time).
 */
const DUE_SLACK_MS = 1;
/**
 * Relocks (see `#relockStep`):
 * - `backMs`: a pulse ends this long after a frame came on screen (mid-frame: which frame begins the new lock is then
 *   sure);
 * - `lead`: the frame that begins the new lock, counted from the one on screen when the pulse ended (learned from
 *   there);
 * - `spanMs`: during a relock the ±5 % band starts this much further out (the pulse moves the clock, and the unlocked
 *   frames with it);
 * - `frames`: the cadence locks again about this many frames after the pulse (its frames' durations leave Chromium's
 *   32-frame average), and `measureMs` later the frames measured are all of the new lock (the position's 1 s window);
 * - `samples`, `quietMs`: a relock is judged on the mean of this many measurements (each the mean of a second of
 *   frames; the lattice's points are 3.33 ms apart at 25 fps on 60 Hz), taken this long after the last start, seek,
 *   stall or rate change (the frames measured are then all of the lock that followed it);
 * - `maxBackoffMs`: relocks that keep missing are retried ever later, at most this far apart.
 */
const RELOCK = Object.freeze({ backMs: 8, lead: 3, spanMs: 30, frames: 34, measureMs: 1300, samples: 2, quietMs: 1300, maxBackoffMs: 60000 });

/** readyState values of HTMLMediaElement. */
export const HAVE_NOTHING = 0;
export const HAVE_METADATA = 1;
export const HAVE_CURRENT_DATA = 2;
export const HAVE_FUTURE_DATA = 3;

/**
 * @typedef {Object} DriftOptions
 * @property {number} [deadbandMs] the ±5 % band starts above this drift; below it the fine band (15)
 * @property {number} [exitMs] once in the ±5 % band, back to the fine band below this drift (5)
 * @property {number} [fineRateAdjust] fine band: rate bound, fraction of the room rate (0.005; 0: no correction
 *   below `deadbandMs`, as before)
 * @property {number} [fineRateStep] fine band: rate step, fraction of the room rate (0.001)
 * @property {number} [fineFilterSamples] fine band: drift = mean of the last N measurements (6)
 * @property {number} [pacedStartMs] paced fine band (frames paced by a display-locked cadence, as Chromium's): the
 *   rate is set to room · (1 ∓ `fineRateAdjust`) when the frames' drift exceeds this (2; 0: the stepped law everywhere)
 * @property {number} [pacedStopMs] paced fine band: back to the room's rate once the drift is within this of zero or
 *   past it (0.3)
 * @property {number} [relockRateAdjust] paced frames whose cadence locks at a known lattice (a display refresh grid
 *   fitted to the frames, a frame rate the browser paces by a cadence on it): instead of the paced fine band, a pulse
 *   at room · (1 ± this) that breaks the cadence, ended so that it locks again on the lattice point nearest the room
 *   (src/cadence.js; 0: the paced fine band) (0.05)
 * @property {number} [relockStartMs] relock: made when the frames' drift (the mean of two measurements, 1.3 s or more
 *   after the last start, seek, stall or rate change) exceeds this and the lattice has a point at least 1 ms nearer the
 *   room (2.5)
 * @property {boolean} [frameAware] measure the position on presented frames and interpolated readings
 *   (src/position.js) rather than raw `currentTime` (true)
 * @property {number} [horizonMs] proportional gain: rate offset = drift / horizon (1000)
 * @property {number} [maxRateAdjust] rate bound, fraction of the room rate (0.05)
 * @property {number} [minRateStep] smallest playbackRate change worth making (0.002)
 * @property {number} [seekThresholdMs] seek above this drift (1000)
 * @property {number} [seekCooldownMs] no new seek this soon after one completed (1500)
 * @property {number} [settleMs] no correction this soon after a seek completed (300)
 * @property {number} [seekLatencyMs] initial seek-latency estimate (150)
 * @property {boolean} [parkedSeeks] a playing element is paused while it seeks ahead, and played when the room gets
 *   there (true)
 * @property {number} [seekSlackMs] parked seeks: lead beyond the learned seek latency (50)
 * @property {number} [seekLatencyAlpha] EWMA weight of a new measurement (0.3)
 * @property {number} [maxSeekLatencyMs] cap of the estimate (3000)
 * @property {number} [seekTimeoutMs] a seek still running after this is given up (8000)
 * @property {number} [pausedSnapMs] paused: seek when off by more than this (1)
 * @property {number} [stormWindowMs] seek-storm window (30000)
 * @property {number} [stormSeeks] seeks within the window that double the threshold (3)
 * @property {number} [maxStormLevel] largest threshold multiplier (4)
 * @property {number} [filterSamples] drift = mean of the last N measurements (2)
 * @property {number} [playRetryMs] retry a refused play() no more often than this (1000)
 * @property {number} [startLatencyMs] initial start-up latency estimate: how long after play() the element moves (0:
 *   learned from the first start)
 * @property {number} [startLatencySamples] the start-up estimate is the median of the last N starts (the lower of the
 *   middle two for an even count): an element's first start is often much slower than its later ones (a cold
 *   decoder: 40–55 ms against 10–15 in Firefox), and an average would pre-roll the next few starts that much early
 *   (5; 0: an EWMA with `startLatencyAlpha`)
 * @property {number} [startLatencyAlpha] EWMA weight of a new start-up measurement, with `startLatencySamples: 0` (0.3)
 * @property {number} [maxStartLatencyMs] cap of the start-up estimate, and of the pre-roll (300)
 * @property {boolean} [startProbe] while the room is paused and the start-up latency is not known, play the element
 *   (muted) until it moves, then pause it and put it back: the first shared start is then on time too. Off by default:
 *   a played element loses its poster, and players mark it started (video.js hides its big play button) (false)
 * @property {number} [probeTimeoutMs] a probe whose element has not moved after this is given up (1500)
 * @property {number} [earlyStartMs] a start whose first frames show the element more than this ahead of the room is
 *   paused there and played again when the room gets there, once per timeline (held start; 0: corrected by rate) (12)
 * @property {number} [lateLandingMs] a start whose first frames show the element more than this behind the room is
 *   caught up at room · (1 + `landingRateAdjust`) for as long as that takes (at most 500 ms), once per timeline (rushed
 *   start; 0: by the bands) (12)
 * @property {number} [fineLandingMs] where `currentTime` steps (Firefox), a start whose first frames show the element
 *   more than this off the room either way (and not held) is corrected as a rushed start is: faster or slower by
 *   `landingRateAdjust` for as long as that takes, once per timeline (0: only `lateLandingMs` and `earlyStartMs`) (4)
 * @property {number} [landingRateAdjust] rushed start: the rate's offset, fraction of the room rate (0.1)
 * @property {number} [maxLandingRateAdjust] rushed start: a lateness that would take longer than 300 ms at
 *   `landingRateAdjust` is caught up within 300 ms at a rate up to this offset (0.25; `landingRateAdjust` or less: never
 *   faster than `landingRateAdjust`)
 * @property {number} [lateStartMs] a paused element that would start more than this behind the room seeks ahead
 *   and starts when the room gets there (parked start; 0: it starts at once and catches up by rate) (20)
 */

/** Defaults of the drift controller. */
export const DRIFT_DEFAULTS = Object.freeze({
  deadbandMs: 15,
  exitMs: 5,
  fineRateAdjust: 0.005,
  fineRateStep: 0.001,
  fineFilterSamples: 6,
  pacedStartMs: 2,
  pacedStopMs: 0.3,
  relockRateAdjust: 0.05,
  relockStartMs: 2.5,
  frameAware: true,
  horizonMs: 1000,
  maxRateAdjust: 0.05,
  minRateStep: 0.002,
  seekThresholdMs: 1000,
  seekCooldownMs: 1500,
  settleMs: 300,
  seekLatencyMs: 150,
  parkedSeeks: true,
  seekSlackMs: 50,
  seekLatencyAlpha: 0.3,
  maxSeekLatencyMs: 3000,
  seekTimeoutMs: 8000,
  pausedSnapMs: 1,
  stormWindowMs: 30000,
  stormSeeks: 3,
  maxStormLevel: 4,
  filterSamples: 2,
  playRetryMs: 1000,
  startLatencyMs: 0,
  startLatencySamples: 5,
  startLatencyAlpha: 0.3,
  maxStartLatencyMs: 300,
  startProbe: false,
  probeTimeoutMs: 1500,
  lateStartMs: 20,
  earlyStartMs: 12,
  lateLandingMs: 12,
  fineLandingMs: 4,
  landingRateAdjust: 0.1,
  maxLandingRateAdjust: 0.25,
});

/** Options counted in whole measurements or seeks. */
const WHOLE = new Set(['fineFilterSamples', 'filterSamples', 'startLatencySamples', 'stormSeeks']);

/**
 * The drift options with their defaults, checked: a TypeError for an unknown name or a value of the wrong type, a
 * RangeError for a number out of range (every number is ≥ 0, Infinity allowed where a bound is; fractions of a rate
 * below 1; EWMA weights in (0, 1]; counts whole, ≥ 1 but `startLatencySamples`, which may be 0). An option given as
 * `undefined` keeps its default.
 * @param {DriftOptions | undefined | null} opts
 * @returns {Required<DriftOptions>}
 */
export function driftOptions(opts) {
  /** @type {Record<string, number | boolean>} */
  const o = { ...DRIFT_DEFAULTS };
  if (opts === undefined || opts === null) return /** @type {Required<DriftOptions>} */ (o);
  if (typeof opts !== 'object' || Array.isArray(opts)) throw new TypeError(`drift options must be an object, got ${Array.isArray(opts) ? 'an array' : typeof opts}`);
  for (const [name, v] of Object.entries(opts)) {
    if (!Object.hasOwn(DRIFT_DEFAULTS, name)) throw new TypeError(`unknown drift option '${name}'`);
    if (v === undefined) continue;
    const kind = typeof o[name];
    if (kind === 'boolean') {
      if (typeof v !== 'boolean') throw new TypeError(`drift option ${name} must be true or false, got ${typeof v}`);
    } else {
      if (typeof v !== 'number') throw new TypeError(`drift option ${name} must be a number, got ${typeof v}`);
      const bad = Number.isNaN(v) || v < 0 ? 'a number ≥ 0'
        : /RateAdjust$/.test(name) && !(v < 1) ? 'a fraction of the rate below 1'
        : /Alpha$/.test(name) && !(v > 0 && v <= 1) ? 'a weight in (0, 1]'
        : WHOLE.has(name) && !(Number.isInteger(v) && (v >= 1 || name === 'startLatencySamples')) ? `a whole number ≥ ${name === 'startLatencySamples' ? 0 : 1}`
        : null;
      if (bad) throw new RangeError(`drift option ${name} must be ${bad}, got ${v}`);
    }
    o[name] = v;
  }
  return /** @type {Required<DriftOptions>} */ (o);
}

/**
 * Where the element should be.
 * @typedef {Object} DriftTarget
 * @property {number} position media position now, seconds
 * @property {number} rate room rate (1 = normal)
 * @property {boolean} paused
 * @property {number} epoch timeline epoch (a change is a discontinuity)
 * @property {{atMs: number, position: number, rate: number, paused: boolean, epoch: number}} [next] a change
 *   scheduled at local time `atMs` (the element starts a scheduled play that much early: pre-roll)
 */

/**
 * The element's state (the fields of HTMLMediaElement plus the buffering
 * flag the session keeps from waiting/stalled/playing events).
 * @typedef {Object} MediaState
 * @property {number} currentTime
 * @property {number} playbackRate
 * @property {boolean} paused
 * @property {number} readyState
 * @property {boolean} seeking
 * @property {boolean} [buffering]
 * @property {number} [duration]
 */

/**
 * `play` with `probe`: the start-up probe's play (the element muted for it); `probeEnd`: the probe is over (the
 * element's muted state restored).
 * @typedef {{type: 'setRate', rate: number} | {type: 'seek', position: number} | {type: 'play', probe?: boolean} | {type: 'pause'} | {type: 'probeEnd'}} DriftAction
 */

/**
 * @typedef {'idle' | 'locked' | 'correcting' | 'seeking' | 'settling' | 'buffering' | 'paused' | 'starting' | 'probing'} DriftMode
 */

/**
 * @typedef {Object} DriftResult
 * @property {DriftAction[]} actions
 * @property {number} driftMs measured drift (element − target), ms; NaN without a target
 * @property {DriftMode} mode
 * @property {boolean} buffering
 * @property {number} [wakeAtMs] step again at this time (a parked seek's start, a scheduled change's pre-roll or
 *   time), on `nowMs`'s clock
 */

export class DriftController {
  #pos = new PositionEstimator();
  /** @type {{at: number} | null} a start-up probe in progress */
  #probe = null;
  /** Start-up probes made (kept across resets: an element that cannot be probed is not probed forever). */
  #probes = 0;
  /** Starts measured. */
  #startsMeasured = 0;
  /** @type {number[]} the last `startLatencySamples` start-up measurements, ms (oldest first) */
  #starts = [];
  /** @type {number | null} epoch of the last parked start (one per timeline) */
  #lateEpoch = null;
  /** @type {number | null} epoch of the last held start (one per timeline) */
  #holdEpoch = null;
  /** @type {number | null} epoch of the last rushed start (one per timeline) */
  #rushEpoch = null;
  /** @type {{untilMs: number, epoch: number} | null} a rushed start: the element played faster until `untilMs` */
  #rush = null;
  /**
   * @type {{frames: {at: number, m: number}[], lead: number} | null} a start just measured: the next step checks where
   *   it came up (on its first frames, when it was timed on frames: the estimator's offset may still be an earlier
   *   start's then), and that it was pre-rolled `lead` ms (it cannot have come up earlier than that)
   */
  #landed = null;
  /** Whether the element has presented frames (requestVideoFrameCallback): starts are then timed on them. */
  #framesSeen = false;
  /** Whether its frames will be handed over (`expectFrames()`): its first start is then timed on them too. */
  #framesExpected = false;
  /** @type {number | null} epoch of the scheduled play being pre-rolled (held until it takes effect) */
  #prerollEpoch = null;
  /** @type {string} what the last measurement came from */
  #source = 'currentTime';
  /** The display's refreshes, from the frames presented (for relocks). */
  #grid = new RefreshGrid();
  /** @type {number[]} the media time between recent frames, s (the frame duration: their median) */
  #frameGaps = [];
  #lastFrameM = NaN;
  /** @type {{at: number, pos: number, rate: number} | null} the room's line at the last step (its position at `at`) */
  #line = null;
  /**
   * The frame that begins a lock after a relock pulse, counted from the one on screen when it ended, after a pulse
   * that slowed the element and after one that sped it up (learned: it depends on how the browser queues frames).
   * @type {{slow: number, fast: number}}
   */
  #lead = { slow: RELOCK.lead, fast: RELOCK.lead };
  /**
   * @type {{phase: 'wanted', until: number, frameS: number, frames: number, accept: number}
   *   | {phase: 'start', rate: number, mBack: number, frameS: number}
   *   | {phase: 'pulse', rate: number, roomRate: number, clockAt: number, clockPos: number, backAt: number | null,
   *     mBack: number, frameS: number}
   *   | {phase: 'wait', until: number, check: {backAt: number, mBack: number, rate: number, roomRate: number,
   *     clockAt: number, clockPos: number, frameS: number} | null}
   *   | null}
   *   a relock: wanted (a frame to start on awaited), started, its pulse (ending at `backAt`, once its last frame came),
   *   then the wait for the cadence to lock again
   */
  #relock = null;
  /** Whether the frames were last seen locked on a known lattice (the relock band applies). */
  #relockable = false;
  /** Relocks in a row that left the frames off the room, and when the next may be made (backing off). */
  #relockMisses = 0;
  #relockAfter = -Infinity;
  /** When the element's rate was last set, or it last stalled or seeked (its frames since are of one lock, or none). */
  #disturbedAt = -Infinity;

  /** @param {DriftOptions} [opts] */
  constructor(opts = {}) {
    /** @type {Required<DriftOptions>} */
    this.o = driftOptions(opts);
    this.seekLatencyMs = this.o.seekLatencyMs;
    /** Learned start-up latency: how long after play() the element moves, ms. */
    this.startLatencyMs = this.o.startLatencyMs;
    /** @type {{issuedAt: number, from: number, rate: number, frames: {at: number, m: number}[], lead: number} | null} a
     *  start being measured (`frames`: the new frames presented since, when on screen and their media time; `lead`: how
     *  long before the room moves from there the play() was issued, ms: its pre-roll) */
    this.start = null;
    this.corrections = { seeks: 0, rateChanges: 0, holds: 0, relocks: 0 };
    /** @type {number[]} recent drift measurements, ms */
    this.samples = [];
    this.correcting = false;
    /** @type {{issuedAt: number, position: number, playing: boolean} | null} */
    this.seek = null;
    this.lastSeekDoneAt = -Infinity;
    /** @type {number[]} times of recent corrective seeks */
    this.seekTimes = [];
    /** @type {number | null} */
    this.epoch = null;
    this.epochChanged = false;
    this.lastPlayAt = -Infinity;
    /** @type {{position: number, residualMs: number | null} | null} the last paused snap and the drift it left */
    this.snap = null;
    /** @type {number | null} epoch a paused element was last aligned to */
    this.alignedEpoch = null;
    this.wasBuffering = false;
    this.driftMs = NaN;
    /** @type {DriftMode} */
    this.mode = 'idle';
    this.buffering = false;
    /** @type {{position: number | null} | null} a parked seek: the element paused at `position` (null: where it paused,
     *  a held start), to be played when the room gets there */
    this.parked = null;
    /** @type {number | null} */
    this.wakeAtMs = null;
  }

  /**
   * Forgets all transient state (a new element, or a detach), a relock back-off too. What is learned of the browser
   * is kept (seek and start-up latency, the frame that begins a relock's lock).
   */
  reset() {
    this.#pos.reset();
    this.samples = [];
    this.correcting = false;
    this.seek = null;
    this.lastSeekDoneAt = -Infinity;
    this.seekTimes = [];
    this.epoch = null;
    this.epochChanged = false;
    this.lastPlayAt = -Infinity;
    this.snap = null;
    this.alignedEpoch = null;
    this.wasBuffering = false;
    this.driftMs = NaN;
    this.mode = 'idle';
    this.buffering = false;
    this.start = null;
    this.#probe = null;
    this.#lateEpoch = null;
    this.#holdEpoch = null;
    this.#rushEpoch = null;
    this.#rush = null;
    this.#landed = null;
    this.#prerollEpoch = null;
    this.parked = null;
    this.wakeAtMs = null;
    this.#grid.reset();
    this.#frameGaps = [];
    this.#lastFrameM = NaN;
    this.#relock = null;
    this.#relockable = false;
    this.#relockMisses = 0;
    this.#relockAfter = -Infinity;
    this.#disturbedAt = -Infinity;
  }

  /**
   * A frame the element presented (from requestVideoFrameCallback): the position is measured on them.
   * @param {number} atMs when it is (expected to be) on screen, on the clock of `update()`'s `nowMs`, ms
   * @param {number} mediaTime the frame's media time, s
   * @param {boolean} [playing] whether the element was playing then (false: ignored)
   * @param {{nowMs: number, currentTime: number}} [reading] the element's `currentTime` read in the callback, at
   *   `nowMs` (same clock)
   * @returns {boolean} whether this frame completed the timing of a start: the caller steps the controller now, so a
   *   start that came up early is held from its first frames, not at the next control tick
   */
  frame(atMs, mediaTime, playing = true, reading) {
    if (!this.o.frameAware) return false;
    this.#pos.frame(atMs, mediaTime, playing, reading);
    if (playing && Number.isFinite(atMs) && Number.isFinite(mediaTime)) {
      this.#grid.add(atMs);
      const gap = mediaTime - this.#lastFrameM;
      if (gap > 0 && gap < 0.2) {
        this.#frameGaps.push(gap);
        if (this.#frameGaps.length > 15) this.#frameGaps.shift();
      }
      this.#lastFrameM = mediaTime;
      if (this.#relockFrame(atMs, mediaTime, reading?.nowMs ?? atMs)) return true;
    }
    // A start is timed on the frames it presents: what the viewer sees, and what the position is measured on
    // (the element's clock may start at once while its first new frame comes tens of ms later).
    this.#framesSeen = true;
    const st = this.start;
    if (!st) return false;
    const moved = mediaTime - st.from;
    if (!playing || !(moved > 0.002) || !Number.isFinite(moved)) return false;
    // A frame shown before the play() (a stale display time), or reported long after it was shown, does not time it: a
    // third of its age would be taken for the start's lateness.
    if (atMs < st.issuedAt || (reading && atMs < reading.nowMs - 100)) return false;
    st.frames.push({ at: atMs, m: mediaTime });
    return st.frames.length >= START_FRAMES && this.learnStart();
  }

  /**
   * The element's frames will be handed to `frame()` (the session has requestVideoFrameCallback): its first start is
   * then timed on its first frames as later ones are (what the viewer sees, and what a start that came up late is
   * caught up on), not on the first `currentTime` reading after it moved (Firefox's is a frame behind at worst).
   */
  expectFrames() {
    if (this.o.frameAware) this.#framesExpected = true;
  }

  /** Whether a start-up probe is in progress (the element playing muted while the room is paused). */
  get probing() {
    return this.#probe !== null;
  }

  /** What the last position measurement came from: presented frames, interpolated readings, or `currentTime`. */
  get positionSource() {
    return this.o.frameAware ? this.#pos.source : 'currentTime';
  }

  /**
   * Whether the element's frames are measured on a continuous clock (Chromium): their pacing then follows only rates
   * well off the room's (the paced fine band).
   */
  get paced() {
    return this.o.frameAware && this.#pos.source === 'frames' && this.#pos.continuous;
  }

  /** The current seek threshold, ms (raised during a seek storm). */
  get seekThresholdMs() {
    return this.o.seekThresholdMs * this.stormLevel();
  }

  /** Threshold multiplier: 1, doubled once `stormSeeks` seeks fall within the window, and per seek after. */
  stormLevel() {
    const extra = this.seekTimes.length - this.o.stormSeeks + 1;
    return extra <= 0 ? 1 : Math.min(2 ** extra, this.o.maxStormLevel);
  }

  /**
   * One control step.
   * @param {{nowMs: number, target: DriftTarget | null, media: MediaState}} input
   * @returns {DriftResult}
   */
  update({ nowMs: now, target, media }) {
    /** @type {DriftAction[]} */
    const actions = [];
    this.wakeAtMs = null;
    /** @type {number | null} */
    let dueAt = null;
    const done = (/** @type {DriftMode} */ mode) => {
      this.mode = mode;
      if (dueAt !== null && (this.wakeAtMs === null || dueAt < this.wakeAtMs)) this.wakeAtMs = dueAt;
      /** @type {DriftResult} */
      const r = { actions, driftMs: this.driftMs, mode, buffering: this.buffering };
      if (this.wakeAtMs !== null) r.wakeAtMs = this.wakeAtMs;
      return r;
    };
    if (!target) {
      this.driftMs = NaN;
      this.buffering = false;
      return done('idle');
    }
    const o = this.o;
    this.seekTimes = this.seekTimes.filter((t) => now - t < o.stormWindowMs);
    // Pre-roll: a scheduled play that is one start-up latency away is followed
    // now, at its start position (held there until its time).
    let next = target.next;
    // A change whose time has come on this step's clock is in effect, whatever the target says: the target is read
    // an instant before `nowMs` (Firefox rounds both to 1 ms), and a step right at a scheduled play's time could
    // otherwise find the room still paused, pause the pre-rolled element and put it back (its play() then held
    // back by `playRetryMs`: a start up to a second late).
    if (next && now >= next.atMs) {
      const position = next.paused ? next.position : next.position + (next.rate * (now - next.atMs)) / 1000;
      target = { position, rate: next.rate, paused: next.paused, epoch: next.epoch };
      next = undefined;
    }
    /** When the room moves from `target.position` on, ms (later than now while a pre-roll holds it). */
    let movesAt = now;
    // Once begun, a pre-roll holds until the play's time even if that time moves later (a new clock sample): the
    // element is not paused again, which would hold its next play() back by `playRetryMs`.
    const due = next && (this.#prerollEpoch === next.epoch || (this.startLatencyMs > 0 && now >= next.atMs - this.startLatencyMs - DUE_SLACK_MS));
    // The controller asks for a step when a scheduled change is due (its pre-roll, or its time), whatever else
    // steps it: the session's timer for it may fire early on this clock (see DUE_SLACK_MS), and a step that finds
    // it not yet due would otherwise leave it to the next control tick (up to 250 ms late).
    if (next) dueAt = target.paused && !next.paused && !due && this.startLatencyMs > 0 ? next.atMs - this.startLatencyMs : next.atMs;
    if (target.paused && next && !next.paused && due) {
      this.#prerollEpoch = next.epoch;
      target = { position: next.position, rate: next.rate, paused: false, epoch: next.epoch };
      movesAt = next.atMs;
    }
    if (this.start && (media.seeking || now - this.start.issuedAt > 2000)) this.start = null;
    else if (this.start && !media.paused && (!(this.#framesSeen || this.#framesExpected) || now - this.start.issuedAt > START_FRAMES_WAIT_MS)) {
      this.learnStart(now, media.currentTime);
    }
    if (this.epoch !== target.epoch) {
      this.epochChanged = this.epoch !== null;
      this.epoch = target.epoch;
      this.samples = [];
      this.correcting = false;
      this.snap = null;
      this.parked = null;
      this.#rush = null;
      this.#relock = null;
    }
    const roomRate = target.rate > 0 ? target.rate : 1;
    this.#line = target.paused ? null : { at: movesAt, pos: target.position, rate: roomRate };
    // A stall starts only while the element plays, and only data ends it:
    // pausing a stalled element does not. The room's buffering wait pauses
    // everyone, the member it waits for too; were that pause taken for a
    // recovery, the wait would end at once and the next stall would start
    // another (the room would stutter pause/resume, never reaching the
    // wait's time limit).
    const lacking = Boolean(media.buffering) || media.readyState < HAVE_FUTURE_DATA;
    this.buffering = lacking && (!media.paused || this.buffering);
    // Without presented frames, a started element that has not moved yet (its start-up latency) is not measured as
    // playing: a reading then, carried on at its rate, would put the element ahead by the rest of that latency for as
    // long as the reading stays in the estimator's envelope (1.5 s): a late start not seen, a pre-rolled one slowed.
    // (Where frames are presented they measure the start; the readings' envelope then only carries them between
    // frames, and Firefox's `currentTime` starts tens of ms behind its first frames.)
    const unmoved = !this.#framesSeen && this.start !== null && !media.paused && media.currentTime === this.start.from;
    const position = o.frameAware ? this.#pos.position(now, { ...media, stalled: lacking || unmoved }) : media.currentTime;
    const driftMs = (position - target.position) * 1000;
    this.driftMs = driftMs;
    // Measurements on another basis (`currentTime` before the first frames) are not averaged with these.
    const source = this.positionSource;
    if (source !== this.#source) this.samples = [];
    this.#source = source;

    // A seek in flight: wait for it, and learn how long it took.
    if (this.seek) {
      const s = this.seek;
      const waiting = media.seeking || (s.playing && !media.paused && media.readyState < HAVE_FUTURE_DATA);
      if (!waiting || now - s.issuedAt > o.seekTimeoutMs) {
        if (!waiting && s.playing) {
          // One slow seek (a stall right after it) moves the estimate only
          // a bounded step; a consistently slow element still gets there.
          const took = Math.min(now - s.issuedAt, 2 * this.seekLatencyMs + 250, o.maxSeekLatencyMs);
          this.seekLatencyMs += o.seekLatencyAlpha * (took - this.seekLatencyMs);
        }
        this.seek = null;
        this.lastSeekDoneAt = now;
        this.samples = [];
      }
    }

    // Paused timeline: pause, restore the room rate, snap the position.
    if (target.paused) {
      if (this.#probe) {
        // The start-up probe: played until it moves (or given up), then paused and put back.
        if (this.start && !media.paused && !media.seeking && now - this.#probe.at < o.probeTimeoutMs) {
          this.wakeAtMs = now + 20;
          return done('probing');
        }
        this.#probe = null;
        this.start = null;
        actions.push({ type: 'probeEnd' });
      }
      this.parked = null;
      this.#landed = null;
      this.#rush = null;
      this.#relock = null;
      this.correcting = false;
      this.epochChanged = false;
      if (!media.paused) actions.push({ type: 'pause' });
      if (media.playbackRate !== roomRate) this.setRate(actions, roomRate, now);
      // A snap is not repeated while the element stays where the snap left
      // it (a stream that cannot seek exactly is not fought); it is redone
      // if the element moved since, or the target did.
      const snap = this.snap;
      if (snap && snap.residualMs === null && !this.seek && !media.seeking) snap.residualMs = driftMs;
      const moved =
        !snap || snap.position !== target.position || (snap.residualMs !== null && Math.abs(driftMs - snap.residualMs) > o.pausedSnapMs);
      // A stalled element is not snapped: a seek would only restart its
      // download elsewhere; it is aligned once its data is there.
      const snapNow = moved && !this.seek && !media.seeking && !this.buffering && media.readyState >= HAVE_METADATA;
      if (Math.abs(driftMs) > o.pausedSnapMs && snapNow) {
        this.issueSeek(actions, now, clampToDuration(target.position, media), false);
        this.snap = { position: target.position, residualMs: null };
      }
      const soon = next && !next.paused && next.atMs - now < 1000;
      const probe =
        o.startProbe && this.#startsMeasured === 0 && this.#probes < 2 && !soon && !this.seek && !media.seeking && !this.buffering && media.paused && media.readyState >= HAVE_FUTURE_DATA;
      if (probe) {
        this.#probes++;
        this.#probe = { at: now };
        actions.push({ type: 'play', probe: true });
        this.start = startOf(now, media, roomRate, 0);
        this.wakeAtMs = now + 20;
        return done('probing');
      }
      return done(this.seek ? 'seeking' : 'paused');
    }
    if (this.#probe) {
      // The room started during a probe: the element plays on (its start still measured), heard again.
      this.#probe = null;
      actions.push({ type: 'probeEnd' });
    }

    // Playing timeline.
    const elementRate = media.playbackRate > 0 ? media.playbackRate : roomRate;
    const jump = this.epochChanged && Math.abs(driftMs) > this.seekThresholdMs;
    this.epochChanged = false;
    if (this.parked && !jump) {
      // A parked seek: once it is done, play when the room reaches its position, one start-up latency early.
      if (this.seek || media.seeking) return done('seeking');
      if (media.paused) {
        const held = this.parked.position === null;
        const from = this.parked.position ?? media.currentTime;
        const dueInMs = movesAt + ((from - target.position) / roomRate) * 1000 - this.startLatencyMs - now;
        if (dueInMs > 0.5) {
          this.wakeAtMs = now + dueInMs;
          return done(held ? 'starting' : 'seeking');
        }
        this.parked = null;
        actions.push({ type: 'play' });
        this.lastPlayAt = now;
        this.start = startOf(now, media, elementRate, dueInMs + this.startLatencyMs);
        return done('starting');
      }
      this.parked = null; // played by someone else meanwhile
    }
    // A start that would be late (the play came after its time, or with less
    // time left than the start-up latency): seek ahead, start when the room
    // gets there (parked), once per timeline.
    const retryDue = now - this.lastPlayAt >= o.playRetryMs;
    if (media.paused && retryDue && o.lateStartMs > 0 && o.parkedSeeks && this.#lateEpoch !== target.epoch && !this.seek && !media.seeking && !this.buffering && media.readyState >= HAVE_METADATA) {
      const roomAt = (/** @type {number} */ t) => target.position + (roomRate * Math.max(0, t - movesAt)) / 1000;
      const lateMs = ((roomAt(now + this.startLatencyMs) - position) / roomRate) * 1000;
      if (lateMs > o.lateStartMs) {
        this.#lateEpoch = target.epoch;
        this.alignedEpoch = target.epoch;
        const ahead = clampToDuration(roomAt(now) + (roomRate * (this.seekLatencyMs + o.seekSlackMs)) / 1000, media);
        this.issueSeek(actions, now, ahead, true);
        this.parked = { position: ahead };
        this.correcting = false;
        if (media.playbackRate !== roomRate) this.setRate(actions, roomRate, now);
        return done('seeking');
      }
    }
    if (media.paused && retryDue) {
      actions.push({ type: 'play' });
      this.lastPlayAt = now;
      this.start = media.seeking ? null : startOf(now, media, elementRate, Math.max(0, movesAt - now));
    }
    if (this.seek && !jump) return done('seeking');
    if ((media.seeking || this.buffering) && !jump) {
      this.wasBuffering = this.wasBuffering || this.buffering;
      this.samples = [];
      this.#relock = null;
      this.#disturbedAt = now;
      if (this.#rush) {
        // A rushed start that stalls or seeks: its lateness is no longer what it was measured to be.
        this.#rush = null;
        if (media.playbackRate !== roomRate) this.setRate(actions, roomRate, now);
      }
      return done(media.seeking ? 'seeking' : 'buffering');
    }
    if (this.wasBuffering) {
      // The stall is over: measure afresh, then catch up by the normal bands.
      this.wasBuffering = false;
      this.samples = [];
    }
    // A start that came up early (its first frames ahead of the room): held where it is until the room gets there.
    if (this.#landed && !media.paused) {
      const { frames: shown, lead } = this.#landed;
      this.#landed = null;
      // On its frames: each against the room's line (extrapolated back over a pre-roll: the line is what it follows).
      const landedMs = shown.length
        ? shown.reduce((a, f) => a + (f.m - target.position - (roomRate * (f.at - movesAt)) / 1000) * 1000, 0) / shown.length
        : driftMs;
      // A start can come up early only by as much as it was pre-rolled (a first start, not pre-rolled, cannot): a landing
      // further ahead is a misreading of its first frames (headless Firefox's first start read ~120 ms ahead and was
      // held that long), left to the bands.
      const plausible = landedMs <= lead + o.earlyStartMs;
      if (o.earlyStartMs > 0 && plausible && this.#holdEpoch !== target.epoch && landedMs > o.earlyStartMs && landedMs < this.seekThresholdMs) {
        this.#holdEpoch = target.epoch;
        this.corrections.holds++;
        actions.push({ type: 'pause' });
        this.parked = { position: null };
        this.samples = [];
        this.correcting = false;
        if (media.playbackRate !== roomRate) this.setRate(actions, roomRate, now);
        this.wakeAtMs = now + Math.max(0, landedMs / roomRate - this.startLatencyMs);
        return done('starting');
      }
      // A start that came up late (behind the room on its first frames): played faster for as long as that takes;
      // where `currentTime` steps, one a little off either way too (fine landing). Only on frames: a `currentTime`
      // reading (in whole frames in Firefox) can misjudge it by a frame, and this is open loop.
      const fine = o.fineLandingMs > 0 && this.#pos.stepped;
      const lateBar = fine && o.lateLandingMs > 0 ? Math.min(o.lateLandingMs, o.fineLandingMs) : o.lateLandingMs;
      const late = -landedMs;
      const off = late > 0 ? (lateBar > 0 && late > lateBar ? late : 0) : fine && plausible && landedMs > o.fineLandingMs ? landedMs : 0;
      if (shown.length && off > 0 && o.landingRateAdjust > 0 && this.#rushEpoch !== target.epoch && off < this.seekThresholdMs) {
        this.#rushEpoch = target.epoch;
        const adjust = Math.max(o.landingRateAdjust, Math.min(off / RUSH_WITHIN_MS, o.maxLandingRateAdjust));
        this.#rush = { untilMs: now + Math.min(off / (roomRate * adjust), RUSH_MAX_MS), epoch: target.epoch };
        this.samples = [];
        this.correcting = false;
        this.setRate(actions, roomRate * (late > 0 ? 1 + adjust : 1 - adjust), now);
      }
    }
    if (this.#rush) {
      const going = this.#rush.epoch === target.epoch && !media.paused && Math.abs(driftMs) < this.seekThresholdMs;
      if (going && now < this.#rush.untilMs - 0.5) {
        this.wakeAtMs = this.#rush.untilMs;
        return done('correcting');
      }
      // Over (or overtaken: a pause, a jump): the room's rate, and the bands measure afresh from the next step.
      this.#rush = null;
      this.samples = [];
      if (media.playbackRate !== roomRate) this.setRate(actions, roomRate, now);
      if (going) return done('locked');
    }
    if (now - this.lastSeekDoneAt < o.settleMs && !jump) return done('settling');

    // Large drift: seek, compensating for the time the seek itself takes.
    // A paused element (its play() pending or refused by autoplay rules) is
    // aligned once per timeline, not chased while it stands still.
    const mayAlign = !media.paused || this.alignedEpoch !== target.epoch;
    if (Math.abs(driftMs) > this.seekThresholdMs && media.readyState >= HAVE_METADATA && mayAlign) {
      if (jump || now - this.lastSeekDoneAt >= o.seekCooldownMs) {
        if (media.paused) this.alignedEpoch = target.epoch;
        // A playing element is parked: paused while it seeks ahead, played when the room gets there.
        const park = o.parkedSeeks && !media.paused;
        const lead = media.paused ? 0 : (roomRate * (this.seekLatencyMs + (park ? o.seekSlackMs : 0))) / 1000;
        if (park) actions.push({ type: 'pause' });
        const position = clampToDuration(target.position + lead, media);
        this.issueSeek(actions, now, position, true);
        this.parked = park ? { position } : null;
        // Following the host's jump is not a sign of trouble; repeated
        // corrective seeks are.
        if (!jump) this.seekTimes.push(now);
        this.correcting = false;
        if (media.playbackRate !== roomRate) this.setRate(actions, roomRate, now);
        return done('seeking');
      }
    }

    // A paused element (play() pending or refused) cannot be nudged.
    if (media.paused) return done('starting');

    // Nudge the rate, proportionally, bounded, with hysteresis: ±5 % above
    // the dead band, fine steps within ±0.5 % below it.
    this.samples.push(driftMs);
    const keep = Math.max(o.filterSamples, o.fineFilterSamples, 1);
    if (this.samples.length > keep) this.samples.shift();
    const mean = (/** @type {number} */ n) => {
      const xs = this.samples.slice(-Math.max(1, n));
      return xs.reduce((a, b) => a + b, 0) / xs.length;
    };
    // A relock moves the clock (and the unlocked frames with it) up to ~20 ms for a second or two: its own doing, not
    // a drift to correct, unless far larger.
    const deadband = this.#relock ? o.deadbandMs + RELOCK.spanMs : o.deadbandMs;
    if (!this.correcting && Math.abs(mean(o.filterSamples)) > deadband) this.correcting = true;
    else if (this.correcting && Math.abs(mean(o.filterSamples)) < o.exitMs) this.correcting = false;
    const have = media.playbackRate;
    if (this.correcting) this.#relock = null;
    if (this.correcting) {
      const adjust = clamp(mean(o.filterSamples) / o.horizonMs, o.maxRateAdjust);
      const want = roomRate * (1 - adjust);
      if (Math.abs(want - have) >= o.minRateStep * roomRate) this.setRate(actions, want, now);
    } else if (o.pacedStartMs > 0 && o.fineRateAdjust > 0 && this.paced && this.#relockStep(actions, now, roomRate, have, mean(RELOCK.samples), driftMs)) {
      // The relock band (`#relockStep`) applied.
    } else if (o.pacedStartMs > 0 && o.fineRateAdjust > 0 && this.paced) {
      // Paced frames: the room's rate, or one that breaks the cadence (so the frames follow the clock), started on
      // the fine band's mean (noise does not start it) and stopped on the latest measurement (while the cadence is
      // broken the frames follow the clock, so the cadence locks again about where they are).
      const haveAdjust = 1 - have / roomRate;
      const on = Math.abs(haveAdjust - o.fineRateAdjust) < 1e-9 ? 1 : Math.abs(haveAdjust + o.fineRateAdjust) < 1e-9 ? -1 : 0;
      let dir = on;
      const steady = mean(o.fineFilterSamples);
      if (on === 0 && Math.abs(steady) > o.pacedStartMs) dir = Math.sign(steady);
      else if (on !== 0 && driftMs * on < o.pacedStopMs) dir = 0;
      const want = dir === 0 ? roomRate : roomRate * (1 - dir * o.fineRateAdjust);
      if (Math.abs(want - have) > 1e-9) this.setRate(actions, want, now);
    } else {
      const step = o.fineRateStep;
      const raw = clamp(mean(o.fineFilterSamples) / o.horizonMs, o.fineRateAdjust);
      const haveAdjust = 1 - have / roomRate;
      // A rate off the fine grid (the room's, an old band's) is replaced at once; on the grid, a step is made only
      // when the law is 3/4 of a step away from it (noise does not toggle it).
      const onGrid = step > 0 && Math.abs(haveAdjust) <= o.fineRateAdjust + 1e-9 && Math.abs(haveAdjust / step - Math.round(haveAdjust / step)) < 1e-6;
      if (!onGrid || Math.abs(raw - haveAdjust) >= 0.75 * step) {
        const q = step > 0 ? Math.round(raw / step) * step : 0;
        const want = q === 0 ? roomRate : roomRate * (1 - q);
        if (Math.abs(want - have) > 1e-9) this.setRate(actions, want, now);
      }
    }
    return done(this.correcting ? 'correcting' : 'locked');
  }

  /** The frame duration (media time between frames), s; NaN until frames came. */
  #frameS() {
    if (this.#frameGaps.length < 5) return NaN;
    const g = [...this.#frameGaps].sort((a, b) => a - b);
    return g[g.length >> 1];
  }

  /**
   * Where a relock would put the frames: the drift (ms) of the frame `lead` after `mBack` (the one on screen when the
   * pulse ends at `backAt`) as shown unlocked (the clock at the room's rate from there), against the room's line.
   * @param {number} backAt @param {number} mBack @param {number} lead
   * @param {{rate: number, clockAt: number, clockPos: number, frameS: number}} p the pulse: its rate, the clock at its
   *   start
   */
  #relockDrift(backAt, mBack, lead, p) {
    const line = this.#line;
    if (!line) return NaN;
    const clock = p.clockPos + (p.rate * (backAt - p.clockAt)) / 1000;
    const m = mBack + lead * p.frameS;
    const shown = shownUnlocked(this.#grid, backAt + ((m - clock) * 1000) / line.rate);
    return (m - this.#roomAt(shown)) * 1000;
  }

  /**
   * The room's position at `t` on its line as of the last step, s (NaN before one).
   * @param {number} t
   */
  #roomAt(t) {
    const line = this.#line;
    return line ? line.pos + (line.rate * (t - line.at)) / 1000 : NaN;
  }

  /**
   * A frame on screen while a relock is wanted or under way. Wanted: a pulse started now (up or down, ending after
   * the `n`th or `n + 1`th frame from this one), if one puts the frames on the lattice point nearest the room.
   * Under way: the pulse ends 8 ms after its last frame came on screen (at once if its callback came later).
   * @param {number} atMs @param {number} mediaTime @param {number} nowMs
   * @returns {boolean} whether the controller has something to do now (the caller steps it)
   */
  #relockFrame(atMs, mediaTime, nowMs) {
    const r = this.#relock;
    if (r?.phase === 'pulse' && r.backAt === null && mediaTime >= r.mBack - r.frameS / 2) {
      r.backAt = Math.max(atMs + RELOCK.backMs, nowMs);
      r.mBack = mediaTime;
      return true;
    }
    if (r?.phase !== 'wanted' || !this.#line) return false;
    const clockPos = this.#pos.clockAt(nowMs);
    const grid = this.#grid.fit;
    if (clockPos === null || !grid) return false;
    const roomRate = this.#line.rate;
    // Of the pulses that put them on the point nearest the room, the one that leaves the clock nearest it (the frames
    // follow the clock until the cadence locks again).
    /** @type {{drift: number, clockMs: number, rate: number, mBack: number} | null} */
    let best = null;
    for (const dir of [1, -1]) {
      const rate = roomRate * (1 + dir * this.o.relockRateAdjust);
      const frameMs = (r.frameS * 1000) / rate;
      for (const n of [r.frames, r.frames + 1]) {
        const mBack = mediaTime + n * r.frameS;
        const pulse = { rate, clockAt: nowMs, clockPos, frameS: r.frameS };
        const lead = this.#lead[dir < 0 ? 'slow' : 'fast'];
        const back = atMs + n * frameMs + RELOCK.backMs;
        const drift = this.#relockDrift(back, mBack, lead, pulse);
        // The pulse ends on its last frame's actual display, which may come a refresh off the one foreseen here: taken
        // only where that lands the same.
        const sure = [-1, 1].every((e) => Math.abs(this.#relockDrift(back + e * grid.periodMs, mBack, lead, pulse) - drift) < 0.5);
        if (!sure || !(Math.abs(drift) <= r.accept)) continue;
        const clockMs = (clockPos + (rate * (back - nowMs)) / 1000 - this.#roomAt(back)) * 1000;
        if (!best || Math.abs(clockMs) < Math.abs(best.clockMs)) best = { drift, clockMs, rate, mBack };
      }
    }
    if (!best) return false;
    this.#relock = { phase: 'start', rate: best.rate, mBack: best.mBack, frameS: r.frameS };
    return true;
  }

  /**
   * The relock band (paced frames whose cadence locks on a known lattice): holds the room's rate while the frames are
   * on the lattice point nearest the room; otherwise, once a frame shows where to start it (`#relockFrame`), a pulse
   * at room · (1 ± `relockRateAdjust`) that breaks the cadence and ends so that it locks again there, then a wait for
   * it to lock, and the lead learned from where it did.
   * @param {DriftAction[]} actions
   * @param {number} now
   * @param {number} roomRate
   * @param {number} have the element's rate
   * @param {number} steady the drift, mean of the last `RELOCK.samples` measurements
   * @param {number} driftMs the latest measurement
   * @returns {boolean} whether the band applies (false: the paced fine band does)
   */
  #relockStep(actions, now, roomRate, have, steady, driftMs) {
    const o = this.o;
    const r = this.#relock;
    const settle = (/** @type {number} */ frameS) => (RELOCK.frames * frameS * 1000) / roomRate + RELOCK.measureMs;
    if (r?.phase === 'start') {
      const clockPos = this.#pos.clockAt(now);
      this.#relock = { phase: 'pulse', rate: r.rate, roomRate, clockAt: now, clockPos: clockPos ?? NaN, backAt: null, mBack: r.mBack, frameS: r.frameS };
      this.setRate(actions, r.rate, now);
      this.corrections.relocks++;
      return true;
    }
    if (r?.phase === 'pulse') {
      if (r.backAt !== null && now >= r.backAt - 0.5) {
        this.setRate(actions, roomRate, now);
        this.#relock = { phase: 'wait', until: r.backAt + settle(r.frameS), check: { ...r, backAt: r.backAt } };
        this.samples = [];
      } else if (r.backAt === null && now - r.clockAt > 1000) {
        // Its last frame did not come: given up.
        this.setRate(actions, roomRate, now);
        this.#relock = { phase: 'wait', until: now + settle(r.frameS), check: null };
        this.samples = [];
      } else if (r.backAt !== null) {
        this.wakeAtMs = r.backAt;
      }
      return true;
    }
    if (r?.phase === 'wait') {
      if (have !== roomRate) {
        // Set meanwhile by another band (a step on which the frames did not measure as paced) or the page: the room's,
        // and the lock this relock awaited is not the one it predicted (no lead learned from it).
        this.setRate(actions, roomRate, now);
        r.check = null;
      }
      if (now < r.until) return true;
      this.#relock = null;
      this.samples = [];
      const c = r.check;
      if (c && Number.isFinite(driftMs) && Number.isFinite(c.clockPos)) {
        // Which frame began the lock: the lead whose prediction the frames came to (within 1 ms).
        const way = c.rate < c.roomRate ? 'slow' : 'fast';
        const was = this.#lead[way];
        let best = { lead: was, err: Infinity };
        for (const lead of [was - 1, was, was + 1]) {
          if (lead < 1) continue;
          const err = Math.abs(this.#relockDrift(c.backAt, c.mBack, lead, c) - driftMs);
          if (err < best.err) best = { lead, err };
        }
        if (best.err <= 1) this.#lead[way] = best.lead;
      }
      // A relock that left the frames off the room (where the browser does not lock as predicted) is not retried at
      // once: after 2 s, then 4, 8 … up to a minute while they keep missing.
      this.#relockMisses = Math.abs(driftMs) <= o.relockStartMs ? 0 : this.#relockMisses + 1;
      this.#relockAfter = this.#relockMisses ? now + Math.min(RELOCK.maxBackoffMs, 1000 * 2 ** this.#relockMisses) : -Infinity;
      return true;
    }
    const frameS = this.#frameS();
    const grid = this.#grid.fit;
    if (!(o.relockRateAdjust > 0)) return false;
    if (!grid || !Number.isFinite(frameS) || !this.#line) {
      // Locked frames seen, or too few frames yet to tell (the first second of a start), and the grid not fitted (yet,
      // or again): the room's rate (the paced band would move them, and break the lock a start took).
      const hold = this.#relockable || this.#grid.size < GRID_MIN_FRAMES;
      if (hold && have !== roomRate) this.setRate(actions, roomRate, now);
      return hold;
    }
    const frameMs = (frameS * 1000) / roomRate;
    const step = latticeStep(frameMs, grid.periodMs);
    if (step === null || !hasCadence(frameMs, grid.periodMs)) return (this.#relockable = false);
    this.#relockable = true;
    if (have !== roomRate) this.setRate(actions, roomRate, now);
    if (r?.phase === 'wanted' && now < r.until) return true;
    this.#relock = null;
    const quiet = now - Math.max(this.#disturbedAt, this.lastPlayAt, this.lastSeekDoneAt) >= RELOCK.quietMs && now >= this.#relockAfter;
    if (!quiet || this.samples.length < RELOCK.samples || Math.abs(steady) <= o.relockStartMs) return true;
    // The lattice point nearest the room (the frames are on the lattice): worth a relock only if 1 ms nearer.
    const nearest = Math.abs(steady - Math.round(steady / step) * step);
    if (Math.abs(steady) - nearest < 1) return true;
    // Wanted: the next frames say when to start (a pulse long enough to break the cadence: 2.4 frames' worth of clock).
    const frames = Math.max(1, Math.ceil(Math.max(100, (0.12 * frameMs) / o.relockRateAdjust) / frameMs));
    this.#relock = { phase: 'wanted', until: now + 1000, frameS, frames, accept: step / 2 + 0.3 };
    return true;
  }

  /**
   * @param {DriftAction[]} actions
   * @param {number} rate
   * @param {number} now
   */
  setRate(actions, rate, now) {
    actions.push({ type: 'setRate', rate });
    this.#disturbedAt = now;
    this.#pos.rebase(now, rate);
    this.corrections.rateChanges++;
  }

  /**
   * Measures a start: once the playing element has moved after play(), when
   * it started (back-computed from how far it got), into the start-up
   * latency estimate. Timed on its first presented frames (the mean of the
   * first `START_FRAMES`, each back-computed from its media time and when it
   * was on screen); without frames (no requestVideoFrameCallback, or none
   * came), on a `currentTime` reading.
   * @param {number} [now]
   * @param {number} [currentTime] the element's, read at `now`
   * @returns {boolean} whether the start was measured
   */
  learnStart(now, currentTime) {
    const st = this.start;
    if (!st) return false;
    let took;
    if (st.frames.length) {
      // Each frame's start: when it was on screen less how far it had moved.
      took = st.frames.reduce((a, f) => a + f.at - ((f.m - st.from) * 1000) / st.rate - st.issuedAt, 0) / st.frames.length;
    } else {
      if (now === undefined || currentTime === undefined) return false;
      const moved = currentTime - st.from;
      if (!(moved > 0.002)) return false;
      took = now - (moved * 1000) / st.rate - st.issuedAt;
    }
    this.start = null;
    took = Math.max(0, took);
    if (!Number.isFinite(took)) return false;
    this.#landed = st;
    const o = this.o;
    const first = this.#startsMeasured++ === 0;
    const m = Math.min(took, o.maxStartLatencyMs);
    if (o.startLatencySamples > 0) {
      this.#starts.push(m);
      if (this.#starts.length > o.startLatencySamples) this.#starts.shift();
      const sorted = [...this.#starts].sort((a, b) => a - b);
      this.startLatencyMs = sorted[(sorted.length - 1) >> 1];
    } else {
      this.startLatencyMs = first ? m : this.startLatencyMs + o.startLatencyAlpha * (m - this.startLatencyMs);
    }
    return true;
  }

  /**
   * @param {DriftAction[]} actions
   * @param {number} now
   * @param {number} position
   * @param {boolean} playing
   */
  issueSeek(actions, now, position, playing) {
    actions.push({ type: 'seek', position });
    this.#pos.reset();
    this.seek = { issuedAt: now, position, playing };
    this.samples = [];
    this.#relock = null;
    // A paused element put on the room's position is aligned, not corrected: not counted.
    if (playing) this.corrections.seeks++;
  }
}

/**
 * A start to be measured: play() issued at `now` from the element's position, at `rate`, pre-rolled `lead` ms.
 * @param {number} now @param {MediaState} media @param {number} rate @param {number} lead
 */
function startOf(now, media, rate, lead) {
  return { issuedAt: now, from: media.currentTime, rate, frames: [], lead };
}

/** @param {number} x @param {number} bound */
function clamp(x, bound) {
  return Math.max(-bound, Math.min(bound, x));
}

/**
 * @param {number} position
 * @param {MediaState} media
 */
function clampToDuration(position, media) {
  let p = Math.max(0, position);
  if (media.duration !== undefined && Number.isFinite(media.duration) && media.duration > 0) {
    p = Math.min(p, media.duration);
  }
  return p;
}
