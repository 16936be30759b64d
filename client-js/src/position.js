// Where a playing element really is: a frame-accurate position estimate for
// the drift controller (src/drift.js).
//
// PURE: no DOM, no timers, no clock. `currentTime` alone is not good enough to
// steer to a few milliseconds:
// - Firefox advances it in steps, one per frame presented (40 ms at 25
//   fps): read at a random instant it is 0–40 ms behind, and a controller
//   fed with it hunts.
// - What a viewer sees are the frames presented, and when; and an engine
//   presents them some time after its clock reaches them (Firefox on a 60 Hz
//   display: ~14 ms; Chromium keeps its frames' cadence within a tolerance
//   of its clock, so its frames wander around it by several ms and follow a
//   rate change only once they are that far off).
// So the position is measured in two parts:
// 1. The element's clock, from `currentTime` readings: the upper envelope of
//    the readings of the last 1.5 s carried to now at the element's rate
//    (a reading of a stepped clock is never ahead of it, so the highest
//    carried reading is the closest). Readings come from every control step
//    and, where the browser has requestVideoFrameCallback, from every frame
//    callback, which runs right after Firefox's step: the envelope is then
//    within a millisecond or two of its clock. With a continuous
//    `currentTime` (Chromium) the envelope is the reading itself.
// 2. The presentation offset: where the frames presented are against that
//    clock. Each recent frame (rVFC: its media time and when it is expected on
//    screen, on the client clock), carried to now at the element's rate, is
//    an estimate of the presented position off only by where its display
//    refresh fell; their mean over the last second, minus the clock, averaged
//    slowly, is the offset, added to the clock: engines and pages then agree
//    on the frames on screen, while the controller steers the clock, which
//    answers a rate change at once. Where `currentTime` steps (Firefox: its
//    frames are 7–9 ms behind its clock on average; headless, they drift
//    through a whole frame against it, 0.5 % slow, and one is skipped every
//    4–6 s, whatever the rate: scripts/presentation-probe.mjs) the average
//    is quick (EWMA, 0.1 per step: 2.5 s). Where it is continuous (Chromium)
//    the frames are the position (the offset is each step's measurement):
//    Chromium paces its frames by a cadence locked to the display (at 25 fps
//    on 60 Hz, 2 and 3 refreshes a frame) while its clock is within ~0.25 %
//    of that cadence's rate, so its frames do not follow a small rate change
//    of the clock at all (at 1.001× the clock runs ahead of them 1 ms a
//    second) until they are half a frame off, and the offset is whatever the
//    cadence's phase was when it locked (−8 to +7 ms measured). The drift
//    controller steers such an element with rates that break the cadence
//    (src/drift.js, the paced fine band), so the frames then follow the
//    clock. Whether `currentTime` steps is seen from the readings: the mean gap
//    between a control step's reading and the envelope (0 for a continuous
//    clock, 10–20 ms for Firefox's). Measurements since the last start (a
//    seek, a pause, a stall) are averaged evenly (weight 1/n until it falls
//    to the EWMA's): Chromium picks its cadence's phase anew at each start.
// Rate changes rebase every stored point (carried to the instant of the
// change at the old rate), so a rate step is no error. Any discontinuity
// (paused, seeking, stalled, a frame or reading far off the line) starts
// afresh from `currentTime`; the learned offset is kept.

/**
 * @typedef {Object} PositionOptions
 * @property {number} [frameWindowMs] frames presented within this long are averaged (1000)
 * @property {number} [minFrames] fewer recent frames than this: readings instead (3)
 * @property {number} [frameFreshMs] frames count only while the last came this recently (250)
 * @property {number} [maxGapS] a frame or a reading this far off the line is a discontinuity (0.1)
 * @property {number} [readingWindowMs] readings within this long make the envelope (1500)
 * @property {number} [offsetAlpha] weight of a new presentation-offset measurement where currentTime steps (0.1)
 * @property {number} [continuousOffsetAlpha] the same where currentTime is continuous (1: each measurement)
 * @property {number} [maxOffsetS] a presentation offset beyond this is not believed (0.1)
 * @property {number} [steppedGapMs] `currentTime` steps when its readings are this far below the envelope on average (2)
 */

export const POSITION_DEFAULTS = Object.freeze({
  frameWindowMs: 1000,
  minFrames: 3,
  frameFreshMs: 250,
  maxGapS: 0.1,
  readingWindowMs: 1500,
  offsetAlpha: 0.1,
  continuousOffsetAlpha: 1,
  maxOffsetS: 0.1,
  steppedGapMs: 2,
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
    /** @type {number | null} the frames presented minus the element's clock, s (learned; kept across resets) */
    this.offsetS = null;
    /** How many offset measurements were averaged since the last start. */
    this.offsetN = 0;
    /** @type {number | null} mean gap between a control step's reading and the envelope, ms (learned; kept) */
    this.gapMs = null;
    /** @type {'frames' | 'readings' | 'currentTime'} what the last estimate came from */
    this.source = 'currentTime';
  }

  /**
   * Forgets the stored points (a seek, a pause, a stall, a new element). The offset is kept, but learned afresh
   * from the next measurement on (weight 1/n again): an engine picks its frames' cadence anew at every start.
   */
  reset() {
    this.frames = [];
    this.readings = [];
    this.rate = NaN;
    this.offsetN = 0;
  }

  /**
   * A presented frame, and optionally a `currentTime` reading taken with it.
   * @param {number} atMs when it is on screen, client clock, ms
   * @param {number} mediaTime its media time, s
   * @param {boolean} [playing] whether the element was playing (frames of a paused element are not kept)
   * @param {{nowMs: number, currentTime: number}} [reading] `currentTime` as read at `nowMs` (client clock)
   */
  frame(atMs, mediaTime, playing = true, reading) {
    if (!playing || !this.playing || !Number.isFinite(this.rate)) return;
    if (reading && Number.isFinite(reading.nowMs) && Number.isFinite(reading.currentTime)) this.#read(reading.nowMs, reading.currentTime);
    if (!Number.isFinite(atMs) || !Number.isFinite(mediaTime)) return;
    // A frame reported long after it was shown (the paused frame, once playing again) is not on the line.
    if (reading && atMs < reading.nowMs - 100) return;
    const line = this.#mean(this.frames, atMs);
    if (line !== null && Math.abs(mediaTime - line) > this.o.maxGapS) this.frames = [];
    this.frames.push({ shownAt: atMs, at: atMs, m: mediaTime });
    if (this.frames.length > 128) this.frames.shift();
  }

  /**
   * A `currentTime` reading into the envelope (a reading far off it starts the envelope afresh).
   * @param {number} nowMs @param {number} c
   * @returns {number} the envelope at `nowMs`
   */
  #read(nowMs, c) {
    const o = this.o;
    this.readings = this.readings.filter((f) => f.readAt >= nowMs - o.readingWindowMs);
    let env = this.#max(this.readings, nowMs);
    if (env !== null && Math.abs(c - env) > o.maxGapS) {
      this.readings = [];
      env = null;
    }
    this.readings.push({ readAt: nowMs, at: nowMs, m: c });
    if (this.readings.length > 128) this.readings.shift();
    return env === null ? c : Math.max(env, c);
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
    const env = this.#read(nowMs, c);
    const gap = (env - c) * 1000;
    this.gapMs = this.gapMs === null ? gap : this.gapMs + 0.1 * (gap - this.gapMs);
    this.frames = this.frames.filter((f) => f.shownAt >= nowMs - o.frameWindowMs);
    const last = this.frames.at(-1);
    if (last && this.frames.length >= o.minFrames && nowMs - last.shownAt <= o.frameFreshMs) {
      const shown = /** @type {number} */ (this.#mean(this.frames, nowMs));
      const off = shown - env;
      if (Math.abs(off) <= o.maxOffsetS) {
        this.offsetN++;
        const alpha = Math.max(this.gapMs > o.steppedGapMs ? o.offsetAlpha : o.continuousOffsetAlpha, 1 / this.offsetN);
        this.offsetS = this.offsetS === null ? off : this.offsetS + alpha * (off - this.offsetS);
      } else {
        this.frames = [];
      }
    }
    this.source = this.offsetS === null ? 'readings' : 'frames';
    return env + (this.offsetS ?? 0);
  }

  /**
   * The element's clock at `nowMs` (the envelope of its `currentTime` readings carried there), s; null without readings.
   * @param {number} nowMs
   */
  clockAt(nowMs) {
    return this.#max(this.readings, nowMs);
  }

  /** Whether the element's `currentTime` is continuous (not in whole frames, as Firefox's), as far as seen. */
  get continuous() {
    return this.gapMs !== null && this.gapMs <= this.o.steppedGapMs;
  }

  /** Whether the element's `currentTime` is seen to step (in whole frames, as Firefox's). */
  get stepped() {
    return this.gapMs !== null && !this.continuous;
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
