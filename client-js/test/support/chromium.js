// Chromium's frame selection, for the drift controller tests: which frame a
// video shows at each display refresh, as media/filters/
// video_renderer_algorithm.cc and video_cadence_estimator.cc choose it (the
// parts that decide it: frame durations on the wall clock averaged over 32
// frames, the cadence estimate with its 100 ms hysteresis and 8 s glitch
// rule, frames shown by the cadence while it holds and by coverage or drift
// otherwise, the cadence restarted on the frame on screen when it changes).
// The decoder keeps `queueFrames` frames queued (refilled at each refresh, as
// frames are taken). Units: ms, media time in s.

const AVERAGE_FRAMES = 32;
const HYSTERESIS_MS = 100;
const MIN_GLITCH_MS = 8000;

/** Chromium's ConstructCadence: `k` refreshes over `n` frames, spread. */
function constructCadence(k, n) {
  const q = Math.floor(k / n);
  const out = [];
  let ta = 0;
  let aa = 0;
  for (let i = 0; i < n; i++) {
    ta += k;
    const tc = ta - aa;
    out.push((i === 0 && k < n) || tc * 2 >= n * (q * 2 + 1) ? q + 1 : q);
    aa += out[i] * n;
  }
  return out;
}

/** The cadence for frames of `frameMs` on refreshes of `refreshMs` ([]: none). */
function calculateCadence(refreshMs, frameMs, driftMs) {
  const p = frameMs / refreshMs;
  const simple = () => {
    const c = Math.max(1, Math.round(p));
    const err = Math.abs(1 - p / c);
    return err === 0 || driftMs / err >= MIN_GLITCH_MS ? [c] : [];
  };
  const ratio = driftMs / MIN_GLITCH_MS;
  const lo = p / (1 + ratio);
  const hi = p / (1 - ratio);
  /** @type {{err: number, k: number, n: number} | null} */
  let best = null;
  for (let n = 1; n <= 5; n++) {
    if (Math.floor(lo * n) < Math.floor(hi * n)) {
      const k = Math.round(p * n);
      const err = Math.abs(1 - (p * n) / k);
      if (!best || err < best.err * 0.99) best = { err, k, n };
    }
  }
  return best ? constructCadence(best.k, best.n) : simple();
}

const same = (/** @type {number[]} */ a, /** @type {number[]} */ b) => a.length === b.length && a.every((x, i) => x === b[i]);

export class ChromiumRenderer {
  /**
   * @param {{frameMs: number, refreshMs: number, queueFrames?: number, lockJitterMs?: number}} o `lockJitterMs`: a new
   *   cadence is taken up to this much later than Chromium takes it (at random: a renderer that does not lock as
   *   predicted)
   */
  constructor(o) {
    this.frameS = o.frameMs / 1000;
    this.refreshMs = o.refreshMs;
    this.queueFrames = o.queueFrames ?? 4;
    this.lockJitterMs = o.lockJitterMs ?? 0;
    this.seed = 5;
    this.hysteresisMs = HYSTERESIS_MS;
    this.reset();
  }

  reset() {
    /** @type {{ts: number, start: number, end: number, est: boolean, ideal: number, rc: number}[]} */
    this.queue = [];
    /** @type {number[]} */
    this.samples = [];
    this.next = NaN;
    /** @type {number[]} */
    this.cadence = [];
    /** @type {number[]} */
    this.pending = [];
    this.held = 0;
    this.counter = 0;
    /** How many times the cadence changed (locked, or was lost). */
    this.changes = 0;
    /** @type {{at: number, cadence: number[], ts: number}[]} each change: when, the new cadence, the frame on screen */
    this.log = this.log ?? [];
  }

  #ideal() {
    for (const [i, f] of this.queue.entries()) f.ideal = this.cadence.length ? this.cadence[(this.counter + i) % this.cadence.length] : 0;
  }

  /** Hysteresis: a new estimate must hold for 100 ms of refreshes. */
  #update(avgMs, driftMs) {
    const next = calculateCadence(this.refreshMs, avgMs, driftMs);
    if (same(next, this.cadence)) {
      this.held = 0;
      return false;
    }
    if (same(next, this.pending) || this.hysteresisMs <= this.refreshMs) {
      this.held++;
      if (this.held * this.refreshMs >= this.hysteresisMs - 1e-9) {
        this.cadence = next;
        return true;
      }
      return false;
    }
    this.pending = next;
    this.held = 1;
    this.seed = (this.seed * 1103515245 + 12345) >>> 0;
    this.hysteresisMs = HYSTERESIS_MS + ((this.seed >>> 8) / 2 ** 24) * this.lockJitterMs;
    return false;
  }

  /**
   * The render for the refresh at `atMs` (deadline_min), the element's clock at `position` (s) at `nowMs`, moving at
   * `rate`: the media time of the frame shown.
   * @param {number} atMs @param {number} nowMs @param {number} position @param {number} rate
   */
  render(atMs, nowMs, position, rate) {
    const F = this.frameS;
    const wall = (/** @type {number} */ ts) => nowMs + ((ts - position) * 1000) / rate;
    if (Number.isNaN(this.next)) this.next = Math.floor(position / F + 1e-9);
    // The decoder: the queue refilled.
    while (this.queue.length < this.queueFrames) {
      this.queue.push({ ts: this.next * F, start: 0, end: 0, est: true, ideal: 0, rc: 0 });
      this.next++;
      this.#ideal();
    }
    const q = this.queue;
    for (const f of q) f.start = wall(f.ts);
    for (let i = 0; i + 1 < q.length; i++) {
      q[i].end = q[i + 1].start;
      if (q[i].est) {
        this.samples.push(q[i].end - q[i].start);
        if (this.samples.length > AVERAGE_FRAMES) this.samples.shift();
      }
      q[i].est = false;
    }
    let maxDrift = 15;
    if (this.samples.length) {
      const avg = this.samples.reduce((a, b) => a + b, 0) / this.samples.length;
      q[q.length - 1].end = q[q.length - 1].start + avg;
      maxDrift = Math.max(avg / 2, 1000 / 60);
      if (this.#update(avg, maxDrift)) {
        this.counter = 0;
        this.#ideal();
        this.changes++;
        this.log.push({ at: atMs, cadence: this.cadence, ts: q[0].ts });
      }
    }
    const dmin = atMs;
    const dmax = atMs + this.refreshMs;
    const drift = (/** @type {number} */ i) => (q[i].end < dmin ? dmin - q[i].end : q[i].start > dmin ? q[i].start - dmin : 0);
    let cf = -1;
    if (this.cadence.length) {
      if (q[0].rc < q[0].ideal) cf = 0;
      else cf = q.findIndex((f, i) => i > 0 && f.ideal > 0);
    }
    let pick = cf;
    let pickDrift = pick >= 0 ? drift(pick) : Infinity;
    if (pick < 0 || pickDrift > maxDrift) {
      // Coverage: the frame covering most of the refresh (a tie within 0.5 ms to the earlier one).
      const cov = q.map((f) => (f.start > dmax || Math.min(dmax, f.end) < dmin ? 0 : Math.min(dmax, f.end) - Math.max(dmin, f.start)));
      let best = -1;
      for (let i = 0; i < cov.length; i++) if (cov[i] > (best < 0 ? 0 : cov[best])) best = i;
      let second = -1;
      for (let i = 0; i < cov.length; i++) if (i !== best && cov[i] > 0 && (second < 0 || cov[i] > cov[second])) second = i;
      if (second >= 0 && best > second && Math.abs(cov[best] - cov[second]) <= 0.5) [best, second] = [second, best];
      pick = pick === best && second >= 0 && drift(second) <= pickDrift ? second : best;
      if (pick >= 0) pickDrift = drift(pick);
    }
    if (pick < 0 || pickDrift > maxDrift) {
      let bd = Infinity;
      for (let i = 0; i < q.length; i++) {
        const d = drift(i);
        if (d <= bd) {
          bd = d;
          pick = i;
        }
      }
    }
    const ignored = cf >= 0 && pick !== cf;
    if (pick > 0) {
      this.counter += pick;
      q.splice(0, pick);
    }
    q[0].rc++;
    if (ignored) {
      this.counter = 0;
      this.#ideal();
    }
    return q[0].ts;
  }
}
