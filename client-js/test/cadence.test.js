import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hasCadence, latticeStep, RefreshGrid, shownUnlocked } from '../src/cadence.js';
import { ChromiumRenderer } from './support/chromium.js';

const HZ60 = 1000 / 60;

test('hasCadence: the frame rates Chromium paces by a cadence on a display (within ±0.25 %)', () => {
  assert.equal(hasCadence(40, HZ60), true, '25 fps on 60 Hz: 2, 3, 2, 3, 2');
  assert.equal(hasCadence(1000 / 30, HZ60), true, '30 fps: 2');
  assert.equal(hasCadence(1000 / 24, HZ60), true, '24 fps: 2, 3');
  assert.equal(hasCadence(40 / 1.002, HZ60), true, '0.2 % off: still');
  assert.equal(hasCadence(40 / 1.005, HZ60), false, '0.5 % off: none (the frames follow the clock)');
  assert.equal(hasCadence(40 / 0.995, HZ60), false);
  assert.equal(hasCadence(32, HZ60), false, '25 fps at 1.25×');
  assert.equal(hasCadence(40, 1000 / 50), true, '25 fps on 50 Hz');
  assert.equal(hasCadence(NaN, HZ60), false);
  assert.equal(hasCadence(40, 0), false);
});

test('latticeStep: where a lock can put the frames, against a timeline', () => {
  assert.ok(Math.abs(/** @type {number} */ (latticeStep(40, HZ60)) - HZ60 / 5) < 1e-9);
  assert.ok(Math.abs(/** @type {number} */ (latticeStep(1000 / 24, HZ60)) - HZ60 / 2) < 1e-9);
  assert.ok(Math.abs(/** @type {number} */ (latticeStep(1000 / 30, HZ60)) - HZ60) < 1e-9);
  assert.equal(latticeStep(32, HZ60), null, 'no lattice within 12 refreshes');
  assert.equal(latticeStep(0, HZ60), null);
});

/** Display times of 25 fps frames shown 2, 3, 2, 3, 2 refreshes from `phase`, `jitter` ms off at most. */
function shownTimes(n, { phase = 5.3, period = HZ60, jitter = 0.05, seed = 3 } = {}) {
  const pattern = [2, 3, 2, 3, 2];
  let s = seed;
  const out = [];
  let k = 0;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    out.push(1000 + phase + k * period + ((s >>> 8) / 2 ** 24 - 0.5) * 2 * jitter);
    k += pattern[i % 5];
  }
  return out;
}

test('RefreshGrid: fits the refreshes the frames came on (period and phase), leaving out a late estimate', () => {
  const g = new RefreshGrid();
  const times = shownTimes(60);
  for (const t of times.slice(0, 23)) g.add(t);
  assert.equal(g.fit, null, 'too few frames');
  for (const t of times.slice(23)) g.add(t);
  const fit = /** @type {{periodMs: number, phaseMs: number}} */ (g.fit);
  assert.ok(Math.abs(fit.periodMs - HZ60) < 0.002, `period ${fit.periodMs}`);
  // The next refresh after any time is on the grid the frames came on.
  for (const t of [2000, 2003.7, 2111.1]) {
    const r = g.after(t);
    assert.ok(r > t && r - t <= HZ60 + 0.01);
    const k = (r - 1005.3) / HZ60;
    assert.ok(Math.abs(k - Math.round(k)) * HZ60 < 0.1, `${r} is on the grid`);
  }
  // A frame reported 4 ms off its refresh is left out; the grid holds.
  const late = new RefreshGrid();
  times.forEach((t, i) => late.add(i === 40 ? t + 4 : t));
  assert.ok(late.fit && Math.abs(late.fit.periodMs - HZ60) < 0.002);
  // Times on no grid: none.
  const random = new RefreshGrid();
  let s = 9;
  let t = 0;
  for (let i = 0; i < 60; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    t += 30 + ((s >>> 8) / 2 ** 24) * 25;
    random.add(t);
  }
  assert.equal(random.fit, null);
  // A time not after the last (a frame replaced on one refresh) is left out.
  const again = new RefreshGrid();
  for (const x of times) {
    again.add(x);
    again.add(x);
  }
  assert.equal(again.size, times.length);
  assert.ok(again.fit && Math.abs(again.fit.periodMs - HZ60) < 0.002);
  // 1.25× at 25 fps (a frame every 32 ms, no cadence): frames two refreshes apart, now and then one (1 in 12); the
  // refresh is the period, not two of them (src/drift.js then sees that the rate has no cadence, rather than no grid).
  const fast = new RefreshGrid();
  let s2 = 5;
  for (let i = 0; i < 96; i++) {
    s2 = (s2 * 1103515245 + 12345) >>> 0;
    fast.add(shownUnlocked(g, 3000 + i * 32) + ((s2 >>> 8) / 2 ** 24 - 0.5) * 0.1);
  }
  assert.ok(fast.fit && Math.abs(fast.fit.periodMs - HZ60) < 0.005, `1.25×: period ${fast.fit?.periodMs}`);
  // Late callbacks (one in thirty, 4–8 ms off) do not halve it.
  const lateMany = new RefreshGrid();
  times.forEach((t, i) => lateMany.add(i % 30 === 7 ? t + 4 + (i % 4) * 1.3 : t));
  assert.ok(lateMany.fit && Math.abs(lateMany.fit.periodMs - HZ60) < 0.002, `late: period ${lateMany.fit?.periodMs}`);
  // A gap (a pause, a seek) starts afresh.
  const gap = new RefreshGrid();
  for (const x of times) gap.add(x);
  gap.add(times.at(-1) + 2000);
  assert.equal(gap.fit, null);
});

test('shownUnlocked: the first refresh a frame covers more than half of', () => {
  const g = new RefreshGrid();
  for (const t of shownTimes(40, { phase: 0, jitter: 0 })) g.add(t);
  for (const s of [1500, 1500 + HZ60 / 2 - 0.3, 1500 + HZ60 / 2 + 0.3, 1507.9, 1516.6]) {
    const r = shownUnlocked(g, s);
    assert.ok(r - s > -HZ60 / 2 + 0.25 - 1e-6 && r - s <= HZ60 / 2 + 0.25 + 1e-6, `start ${s}: shown ${r}`);
  }
});

test("the simulated Chromium renderer (test/support/chromium.js) locks 25 fps on 60 Hz, loses the lock at 5 % and takes it again on the frame on screen", () => {
  const R = new ChromiumRenderer({ frameMs: 40, refreshMs: HZ60 });
  let pos = 10;
  let rate = 1;
  /** @type {{at: number, m: number, off: number}[]} */
  const shown = [];
  let last = NaN;
  const grid = new RefreshGrid();
  for (let k = 1; k < 600; k++) {
    const at = k * HZ60;
    const was = rate;
    rate = at >= 3000 && at < 3150 ? 1.05 : 1;
    pos += ((HZ60 * was) / 1000) * (k > 1 ? 1 : 0);
    const m = R.render(at, at, pos, rate);
    if (m !== last) {
      // Its offset: when it came on screen less when the clock reached it.
      shown.push({ at, m, off: at - (at + ((m - pos) * 1000) / rate) });
      grid.add(at);
      last = m;
    }
  }
  const changes = R.log.map((x) => [Math.round(x.at), x.cadence.join(',')]);
  assert.equal(changes[0][1], '2,3,2,3,2', 'locked');
  assert.ok(changes[0][0] < 1000);
  const lost = changes.find((c) => c[0] >= 3000 && c[1] === '');
  assert.ok(lost && lost[0] < 3400, `lost in the pulse: ${JSON.stringify(changes)}`);
  const relock = R.log.find((x) => x.at > /** @type {number} */ (lost?.[0]) && x.cadence.length === 5);
  assert.ok(relock && relock.at > 4200 && relock.at < 4700, `locked again ~1.3 s after: ${JSON.stringify(changes)}`);
  // The new lock keeps the offset the frame on screen then had (unlocked): the mean of the next five.
  const front = /** @type {{at: number, m: number, off: number}} */ (shown.findLast((f) => f.at <= /** @type {any} */ (relock).at));
  const after = shown.filter((f) => f.at > /** @type {any} */ (relock).at + 400).slice(0, 5);
  const mean = after.reduce((a, f) => a + f.off, 0) / after.length;
  assert.ok(Math.abs(mean - front.off) < 0.05, `locked mean ${mean} against ${front.off}`);
});
