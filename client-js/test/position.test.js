import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PositionEstimator } from '../src/position.js';

const playing = (currentTime, playbackRate = 1) => ({ currentTime, playbackRate, paused: false, seeking: false });

test('presented frames: the mean of the recent frames carried to now, not the last frame', () => {
  const p = new PositionEstimator();
  p.position(0, playing(10));
  // 25 fps on a 60 Hz display: frame k (10 + 0.04k s) shown at the first refresh at or after its time (true: pos = 10 + t).
  const refresh = 1000 / 60;
  for (let k = 1; k <= 30; k++) p.frame(Math.ceil((k * 40) / refresh) * refresh, 10 + k * 0.04);
  const est = p.position(1220, playing(10 + 1.2));
  assert.equal(p.source, 'frames');
  // Each frame lags the truth by 0–16.7 ms at its refresh; the mean lags about half of that.
  const lagMs = (10 + 1.22 - est) * 1000;
  assert.ok(lagMs >= 4 && lagMs <= 12, `lag ${lagMs}`);
});

test('stepped currentTime: the upper envelope of the readings carried to now', () => {
  const p = new PositionEstimator();
  // True position 10 + t/1000; currentTime is the 40 ms frame reached; read every 250 ms plus a bit.
  let worst = 0;
  for (let i = 0; i < 40; i++) {
    const t = i * 253;
    const truth = 10 + t / 1000;
    const c = Math.floor(truth / 0.04 + 1e-9) * 0.04;
    const est = p.position(t, playing(c));
    if (i >= 6) worst = Math.max(worst, Math.abs(truth - est) * 1000);
    assert.ok(est <= truth + 1e-9, 'never ahead of the truth');
  }
  assert.equal(p.source, 'readings');
  assert.ok(worst <= 15, `worst ${worst} ms (a raw reading is up to 40 ms behind)`);
  // The clock alone (no frames): the same envelope, carried to any time.
  const at = 39 * 253;
  const clock = /** @type {number} */ (p.clockAt(at + 100));
  assert.ok(clock <= 10 + (at + 100) / 1000 + 1e-9 && clock > 10 + (at + 100) / 1000 - 0.015, `clock ${clock}`);
  assert.equal(new PositionEstimator().clockAt(0), null);
});

test('a rate change rebases the stored points: no error from the old rate', () => {
  const p = new PositionEstimator();
  p.position(0, playing(10));
  for (let k = 1; k <= 20; k++) p.frame(k * 40, 10 + k * 0.04);
  p.position(800, playing(10.8));
  p.rebase(800, 1.25);
  for (let k = 1; k <= 5; k++) p.frame(800 + k * 40, 10.8 + k * 0.05);
  const est = p.position(1000, playing(11.05, 1.25));
  assert.ok(Math.abs(est - 11.05) < 0.001, `est ${est}`);
});

test('discontinuities start afresh: a seek, a pause, a frame far off the line, a stall', () => {
  const p = new PositionEstimator();
  p.position(0, playing(10));
  for (let k = 1; k <= 10; k++) p.frame(k * 40, 10 + k * 0.04);
  assert.ok(Math.abs(p.position(400, playing(10.4)) - 10.4) < 0.001);
  // A jump of the element (not told): the next frames are on another line.
  for (let k = 1; k <= 5; k++) p.frame(400 + k * 40, 50 + k * 0.04);
  assert.ok(Math.abs(p.position(600, playing(50.2)) - 50.2) < 0.001);
  // Paused: currentTime as it is, and frames shown while paused are not kept.
  assert.equal(p.position(700, { ...playing(50.25), paused: true }), 50.25);
  p.frame(710, 50.25, false);
  assert.equal(p.position(2000, playing(50.25)), 50.25);
  // Stalled: currentTime.
  assert.equal(p.position(2100, { ...playing(50.3), stalled: true }), 50.3);
});

test('the presentation offset: learned quickly where currentTime steps (Firefox), measured at each step where it is continuous (Chromium)', () => {
  // Frames presented 14 ms after their time (27 ms behind the clock: their times are 13 ms off the grid).
  const feed = (stepped, ms) => {
    const p = new PositionEstimator();
    let est = 0;
    let at = 0;
    for (let t = 0; t <= ms; t += 40) {
      const truth = 10.013 + t / 1000;
      if (t % 240 === 0) {
        est = p.position(t, playing(stepped ? Math.floor(truth / 0.04 + 1e-9) * 0.04 : truth));
        at = t;
      }
      p.frame(t + 14, Math.floor(truth / 0.04 + 1e-9) * 0.04, true, { nowMs: t + 1, currentTime: truth });
    }
    return { p, lagMs: (10.013 + at / 1000 - est) * 1000 };
  };
  for (const stepped of [true, false]) {
    const { p, lagMs } = feed(stepped, 40_000);
    assert.equal(p.source, 'frames');
    assert.ok(Math.abs(lagMs - 27) < 2, `stepped ${stepped}: lag ${lagMs}`);
  }
  // The offset moves: 10 ms more lag from 40 s on. Stepped follows within seconds; continuous (the frames are the
  // position: Chromium's follow a display-locked cadence, not its clock) as soon as the last second of frames has it.
  const move = (stepped) => {
    const p = new PositionEstimator();
    const lags = [];
    for (let t = 0; t <= 50_000; t += 40) {
      const truth = 10.013 + t / 1000;
      const extra = t >= 40_000 ? 0.01 : 0;
      if (t % 240 === 0) lags.push({ t, lag: (truth - p.position(t, playing(stepped ? Math.floor(truth / 0.04 + 1e-9) * 0.04 : truth))) * 1000 });
      p.frame(t + 14, Math.floor(truth / 0.04 + 1e-9) * 0.04 - extra, true, { nowMs: t + 1, currentTime: truth });
    }
    return (/** @type {number} */ at) => /** @type {{lag: number}} */ (lags.find((x) => x.t >= at)).lag;
  };
  const firefox = move(true);
  const chromium = move(false);
  assert.ok(Math.abs(firefox(45_000) - 37) < 2, `stepped after 5 s: ${firefox(45_000)}`);
  assert.ok(chromium(40_300) > 28 && chromium(40_300) < 36, `continuous, 0.3 s in: ${chromium(40_300)}`);
  assert.ok(Math.abs(chromium(41_100) - 37) < 1, `continuous after 1 s: ${chromium(41_100)}`);
  assert.ok(Math.abs(firefox(41_100) - 37) > 3, `stepped after 1 s: ${firefox(41_100)}`);
});

test('a frame reported long after it was shown (the paused frame, once playing again) is not kept', () => {
  const p = new PositionEstimator();
  p.position(0, playing(10));
  p.frame(-900, 10, true, { nowMs: 5, currentTime: 10.005 });
  assert.equal(p.frames.length, 0);
});

test('after a start (seek, pause, stall) the presentation offset is learned afresh: a new cadence phase is not averaged with the old', () => {
  const p = new PositionEstimator();
  const run = (from, to, offMs) => {
    for (let t = from; t <= to; t += 40) {
      const truth = 10 + t / 1000;
      if (t % 240 === 0) p.position(t, playing(truth));
      p.frame(t, truth + offMs / 1000, true, { nowMs: t, currentTime: truth });
    }
  };
  p.position(0, playing(10));
  run(0, 30_000, -2);
  assert.ok(Math.abs(p.offsetS * 1000 + 2) < 0.5, `learned ${p.offsetS * 1000}`);
  p.position(30_100, { ...playing(40.1), paused: true });
  run(30_200, 33_200, -10);
  assert.ok(Math.abs(p.offsetS * 1000 + 10) < 0.5, `after the restart: ${p.offsetS * 1000}`);
});
