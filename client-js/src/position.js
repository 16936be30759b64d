// Where a playing element really is: a frame-accurate position estimate for
// the drift controller (src/drift.js).
//
// PURE: no DOM, no timers, no clock. `currentTime` alone is not good enough to
// steer to a few milliseconds:
// - Firefox advances it in whole frames (40 ms steps at 25 fps): read at a
//   random instant it is 0–40 ms behind, and a controller fed with it hunts.
// - What a viewer sees are the frames presented, and when. Where the browser
//   has `requestVideoFrameCallback` (Chromium, Firefox ≥ 132, Safari) the
//   element controller hands every presented frame to `frame(atMs,
//   mediaTime)`: its media time and when it is (expected to be) on screen, on
//   the client clock. Each recent frame, carried to now at the element's rate
//   (mediaTime + rate · (now − shownAt)), is an estimate of the position now
//   that is off only by where its display refresh fell; their mean over the
//   last half second is the presentation line, with that quantization
//   averaged out (a 25 fps stream on a 60 Hz display: ±8 ms per frame, about
//   ±1.5 ms for the mean of 12 frames).
// - Without frames (no rVFC, an audio element, frames stopped), `currentTime`
//   readings are interpolated: the position is the upper envelope of the
//   readings of the last 1.5 s carried to now at the element's rate (a
//   reading of a stepped clock is never ahead of the true position, so the
//   highest carried reading is the closest: within 10 ms after four readings
//   250 ms apart at 25 fps). With a continuous `currentTime` (Chromium) the
//   envelope is the reading itself. A reading too high (a rate applied late)
//   ages out with its window.
// Rate changes rebase both (every stored point carried to the instant of the
// change at the old rate), so a rate step is no error. Any discontinuity
// (paused, seeking, stalled, a frame or reading far off the line) starts
// afresh from `currentTime`.

/**
 * @typedef {Object} PositionOptions
 * @property {number} [frameWindowMs] frames presented within this long are averaged (500)
 * @property {number} [minFrames] fewer recent frames than this: readings instead (3)
 * @property {number} [frameFreshMs] frames count only while the last came this recently (250)
 * @property {number} [maxGapS] a frame or a reading this far off the line is a discontinuity (0.1)
 * @property {number} [readingWindowMs] readings within this long make the envelope (1500)
 */

export const POSITION_DEFAULTS = Object.freeze({
  frameWindowMs: 1000,
  minFrames: 3,
  frameFreshMs: 250,
  maxGapS: 0.1,
  readingWindowMs: 1500,
});

/**
 * What the estimate needs of the element at a step.
 * @typedef {{currentTime: number, playbackRate: number, paused: boolean, seeking: boolean, stalled?: boolean}} PositionInput
 */

export class PositionEstimator {
  /** @param {PositionOptions} [o] */
  constructor(o = {}) {
    this.o = { ...POSITION_DEFAULTS, ...o };
    /** @type {{shownAt: number, at: number, m: number}[]} recent frames: when shown; the point (at, m) on their line */
    this.frames = [];
    /** @type {{readAt: number, at: number, m: number}[]} recent readings: when read; the point (at, m) on their line */
    this.readings = [];
    /** The element's rate the stored points are carried at (NaN: none yet). */
    this.rate = NaN;
    this.playing = false;
    /** @type {'frames' | 'readings' | 'currentTime'} what the last estimate came from */
    this.source = 'currentTime';
  }

  /** Forgets everything (a seek, a pause, a new element). */
  reset() {
    this.frames = [];
    this.readings = [];
    this.rate = NaN;
  }

  /**
   * A presented frame.
   * @param {number} atMs when it is on screen, client clock, ms
   * @param {number} mediaTime its media time, s
   * @param {boolean} [playing] whether the element was playing (frames of a paused element are not kept)
   */
  frame(atMs, mediaTime, playing = true) {
    if (!playing || !this.playing || !Number.isFinite(atMs) || !Number.isFinite(mediaTime)) return;
    const line = this.#mean(this.frames, atMs);
    if (line !== null && Math.abs(mediaTime - line) > this.o.maxGapS) this.frames = [];
    this.frames.push({ shownAt: atMs, at: atMs, m: mediaTime });
    if (this.frames.length > 64) this.frames.shift();
  }

  /**
   * The element's rate from `nowMs` on: carries every stored point to `nowMs` at the old rate.
   * @param {number} nowMs
   * @param {number} rate
   */
  rebase(nowMs, rate) {
    const old = this.rate;
    if (Number.isFinite(old) && old !== rate) {
      for (const f of [...this.frames, ...this.readings]) {
        f.m += (old * (nowMs - f.at)) / 1000;
        f.at = nowMs;
      }
    }
    this.rate = rate;
  }

  /**
   * The position now, s.
   * @param {number} nowMs
   * @param {PositionInput} media
   */
  position(nowMs, media) {
    const c = media.currentTime;
    const rate = media.playbackRate;
    if (media.paused || media.seeking || media.stalled || !(rate > 0) || !Number.isFinite(c)) {
      this.reset();
      this.playing = false;
      this.source = 'currentTime';
      return c;
    }
    if (!this.playing) {
      // Frames shown while it was paused (a seek's frame) are not on the playing line.
      this.reset();
      this.playing = true;
    }
    if (rate !== this.rate) this.rebase(nowMs, rate);
    const o = this.o;
    this.frames = this.frames.filter((f) => f.shownAt >= nowMs - o.frameWindowMs);
    this.readings = this.readings.filter((f) => f.readAt >= nowMs - o.readingWindowMs);
    // The readings' envelope is kept up in any case, for when frames stop.
    let env = this.#max(this.readings, nowMs);
    if (env !== null && Math.abs(c - env) > o.maxGapS) {
      this.readings = [];
      env = null;
    }
    this.readings.push({ readAt: nowMs, at: nowMs, m: c });
    if (this.readings.length > 64) this.readings.shift();
    env = env === null ? c : Math.max(env, c);
    const last = this.frames.at(-1);
    if (last && this.frames.length >= o.minFrames && nowMs - last.shownAt <= o.frameFreshMs) {
      const p = /** @type {number} */ (this.#mean(this.frames, nowMs));
      if (Math.abs(p - c) <= o.maxGapS + 0.05) {
        this.source = 'frames';
        return p;
      }
      this.frames = [];
    }
    this.source = 'readings';
    return env;
  }

  /**
   * The mean of `points` carried to `nowMs` (null without points).
   * @param {{at: number, m: number}[]} points
   * @param {number} nowMs
   */
  #mean(points, nowMs) {
    if (!points.length || !Number.isFinite(this.rate)) return null;
    let sum = 0;
    for (const x of points) sum += x.m + (this.rate * (nowMs - x.at)) / 1000;
    return sum / points.length;
  }

  /**
   * The highest of `points` carried to `nowMs` (null without points).
   * @param {{at: number, m: number}[]} points
   * @param {number} nowMs
   */
  #max(points, nowMs) {
    if (!points.length || !Number.isFinite(this.rate)) return null;
    let max = -Infinity;
    for (const x of points) max = Math.max(max, x.m + (this.rate * (nowMs - x.at)) / 1000);
    return max;
  }
}
