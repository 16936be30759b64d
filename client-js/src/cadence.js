// Display-locked cadences (Chromium): where the frames go when the cadence
// locks again, and so where a short rate pulse puts them.
//
// PURE: no DOM, no timers. Fed with the frames an element presents
// (requestVideoFrameCallback: when each is on screen, its media time).
//
// Chromium shows a video's frames on the display's refreshes by a cadence
// when the frame rate (at the playback rate) fits the refresh rate within
// ±0.25 % (25 fps on 60 Hz: frames shown 2, 3, 2, 3, 2 refreshes): the
// frames are then locked to the display, not to the element's clock, and a
// rate near the room's moves the clock but not the frames. The lock is lost
// when the mean duration of the last 32 frames leaves that band (a rate 5 %
// off for two frames or more) and taken again 100 ms after it is back in
// the band (32 frames after the off-rate ones came in). Unlocked, each frame
// is shown from the first refresh that it covers more than half of (the
// frames follow the clock). At the relock, the frame on screen begins the
// pattern, and the frames keep the offset that frame had: where a relock
// puts them is one frame's offset under that rule, chosen by which frame is
// on screen then. Measured (scripts/cadence-probe.mjs relock): with the rate
// put back 4–21 ms after a frame came on screen, the frame three later was
// the one (47 of 47 trials); 257 of 257 frames shown unlocked came on the
// refresh the rule names (media/filters/video_renderer_algorithm.cc and
// video_cadence_estimator.cc say the same).
//
// So the frames can be put on the lattice point nearest the room (25 fps on
// 60 Hz: points 3.33 ms apart, the same for every page on one display and
// timeline) instead of wherever a lock fell: a pulse of ±5 % (breaks the
// lock; the frames follow the clock), ended 8 ms after a frame chosen so
// that the one three on (which begins the new lock) comes, unlocked, nearest
// the room (src/drift.js: the relock band).

/** A refresh grid is fitted to at least this many frames (a second at 25 fps). */
export const GRID_MIN_FRAMES = 24;

/** Chromium's minimum time between cadence glitches, ms. */
const MIN_GLITCH_MS = 8000;

/**
 * Whether Chromium paces frames of this duration by a cadence on this display (its VideoCadenceEstimator's rule).
 * @param {number} frameMs a frame's duration on the wall clock (at the playback rate), ms
 * @param {number} refreshMs the display's refresh interval, ms
 */
export function hasCadence(frameMs, refreshMs) {
  if (!(frameMs > 0) || !(refreshMs > 0)) return false;
  const drift = Math.max(frameMs / 2, 1000 / 60);
  const p = frameMs / refreshMs;
  const ratio = drift / MIN_GLITCH_MS;
  const lo = p / (1 + ratio);
  const hi = p / (1 - ratio);
  for (let n = 1; n <= 5; n++) if (Math.floor(lo * n) < Math.floor(hi * n)) return true;
  const c = Math.max(1, Math.round(p));
  const err = Math.abs(1 - p / c);
  return err === 0 || drift / err >= MIN_GLITCH_MS;
}

/**
 * The display's refreshes, from when frames came on screen (each on a refresh): period and phase, fitted.
 */
export class RefreshGrid {
  /** @type {number[]} when recent frames came on screen, ms */
  #at = [];
  /** @type {{periodMs: number, phaseMs: number} | null} */
  #fit = null;
  #dirty = false;

  /** @param {number} atMs when a frame came on screen */
  add(atMs) {
    if (!Number.isFinite(atMs)) return;
    const last = this.#at.at(-1);
    // Not after the last (a frame replaced on the same refresh): left out; half a second since it (a pause, a stall,
    // a hidden page): afresh.
    if (last !== undefined && atMs <= last) return;
    if (last !== undefined && atMs - last > 500) this.#at = [];
    this.#at.push(atMs);
    if (this.#at.length > 96) this.#at.shift();
    this.#dirty = true;
  }

  /** How many frames' display times it holds (a fit needs `GRID_MIN_FRAMES`). */
  get size() {
    return this.#at.length;
  }

  reset() {
    this.#at = [];
    this.#fit = null;
    this.#dirty = false;
  }

  /** The refresh grid (null: too few frames, or they are not on one: a display that does not refresh evenly). */
  get fit() {
    if (this.#dirty) {
      this.#dirty = false;
      this.#fit = fitGrid(this.#at);
    }
    return this.#fit;
  }

  /**
   * The first refresh after `t`.
   * @param {number} t
   */
  after(t) {
    const g = this.fit;
    if (!g) return NaN;
    return g.phaseMs + (Math.floor((t - g.phaseMs) / g.periodMs) + 1) * g.periodMs;
  }
}

/**
 * Period and phase of the refreshes `at` fall on: the largest period of which the gaps are whole multiples (within
 * 0.5 ms; nine in ten of them; its half where that explains nearly all the gaps it leaves off: frames mostly two
 * refreshes apart), refined by least squares; times more than 1 ms off it are left out (a late callback's
 * estimate); null when fewer than `GRID_MIN_FRAMES` or more than one in ten are off.
 * @param {number[]} at
 * @returns {{periodMs: number, phaseMs: number} | null}
 */
function fitGrid(at) {
  if (at.length < GRID_MIN_FRAMES) return null;
  /** @type {number[]} */
  const gaps = [];
  for (let i = 1; i < at.length; i++) gaps.push(at[i] - at[i - 1]);
  const least = [...gaps].sort((a, b) => a - b)[Math.floor(gaps.length / 10)];
  if (!(least > 2)) return null;
  const offOf = (/** @type {number} */ p) => gaps.filter((g) => Math.abs(g / p - Math.round(g / p)) * p >= 0.5).length;
  let period = NaN;
  for (let k = 1; k <= 8 && Number.isNaN(period); k++) {
    const p = least / k;
    if (p < 2) break;
    const off = offOf(p);
    // Half the period explaining nearly all the gaps it leaves off: frames mostly two refreshes apart and now and
    // then one (1.25× at 25 fps on 60 Hz: one in twelve), not late callbacks (half the period explains few of those).
    if (off <= gaps.length / 10) period = off >= 3 && p / 2 >= 2 && offOf(p / 2) <= off / 4 ? p / 2 : p;
  }
  if (Number.isNaN(period)) return null;
  const n = at.map((t) => Math.round((t - at[0]) / period));
  const N = at.length;
  const sx = n.reduce((a, b) => a + b, 0);
  const sy = at.reduce((a, b) => a + b, 0);
  const sxx = n.reduce((a, b) => a + b * b, 0);
  const sxy = n.reduce((a, b, i) => a + b * at[i], 0);
  const den = N * sxx - sx * sx;
  if (!(den > 0)) return null;
  const periodMs = (N * sxy - sx * sy) / den;
  const phaseMs = (sy - periodMs * sx) / N;
  // A frame reported off its refresh (a late callback's estimate) is left out; more than one in ten: no grid.
  const on = at.filter((t, i) => Math.abs(t - (phaseMs + periodMs * n[i])) <= 1);
  if (on.length === at.length) return { periodMs, phaseMs };
  return on.length >= 0.9 * at.length ? fitGrid(on) : null;
}

/**
 * When a frame comes on screen unlocked: the first refresh it covers more than half of (a tie within 0.5 ms goes to
 * the frame before it, hence the 0.25 ms).
 * @param {RefreshGrid} grid
 * @param {number} startMs when the element's clock reaches the frame's time
 */
export function shownUnlocked(grid, startMs) {
  const g = grid.fit;
  if (!g) return NaN;
  return grid.after(startMs - g.periodMs / 2 + 0.25);
}

/**
 * The spacing of the points a locked cadence can put the frames on (against a timeline moving with the frames): the
 * largest interval both the refresh and the frame are whole multiples of (25 fps on 60 Hz: 3.33 ms); null when there
 * is none within 12 refreshes.
 * @param {number} frameMs a frame's duration on the wall clock, ms
 * @param {number} refreshMs
 */
export function latticeStep(frameMs, refreshMs) {
  if (!(frameMs > 0) || !(refreshMs > 0)) return null;
  for (let n = 1; n <= 12; n++) {
    const x = (n * frameMs) / refreshMs;
    if (Math.abs(x - Math.round(x)) * refreshMs < 0.3) return refreshMs / n;
  }
  return null;
}
