import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClockSync, defaultNowUs } from '../src/clock.js';

/**
 * A simulated network: the server clock is the client clock + `offset` µs;
 * each direction has a base delay plus jitter, and some exchanges suffer a
 * large queueing delay (outliers). Deterministic (seeded).
 */
function network({ offset, fwdUs, backUs, jitterUs, outlierEvery = 0, outlierUs = 0, holdUs = 50, seed = 1 }) {
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
  let n = 0;
  return (/** @type {number} */ t0) => {
    n++;
    let d1 = fwdUs + rnd() * jitterUs;
    let d2 = backUs + rnd() * jitterUs;
    if (outlierEvery && n % outlierEvery === 0) {
      if (n % (2 * outlierEvery) === 0) d1 += outlierUs;
      else d2 += outlierUs;
    }
    const t1 = Math.round(t0 + d1 + offset);
    const t2 = t1 + holdUs;
    const t3 = Math.round(t0 + d1 + holdUs + d2);
    return { pong: { clientTime: t0, serverRecvUs: t1, serverSendUs: t2 }, t3 };
  };
}

function run(clock, net, { pings, startUs = 1_000_000, stepUs = 200_000 }) {
  let now = startUs;
  const errors = [];
  for (let i = 0; i < pings; i++) {
    const { pong, t3 } = net(now);
    clock.onPong(pong, t3);
    now += stepUs;
    errors.push(clock.offsetUs);
  }
  return errors;
}

test('symmetric path with jitter: the estimate is within a fraction of a millisecond', () => {
  let now = 0;
  const clock = new ClockSync({ now: () => now });
  const offset = 1_795_500_000_000_000 - 12_345_678;
  const net = network({ offset, fwdUs: 5000, backUs: 5000, jitterUs: 3000 });
  for (let i = 0; i < 30; i++) {
    const { pong, t3 } = net(now);
    now = t3;
    clock.onPong(pong, t3);
    now += 200_000;
  }
  assert.ok(Math.abs(clock.offsetUs - offset) < 600, `error ${clock.offsetUs - offset} µs`);
  assert.ok(clock.rttUs >= 10_000 && clock.rttUs < 11_000, `rtt ${clock.rttUs}`);
});

test('asymmetric path: error bounded by the asymmetry (rtt / 2), unaffected by outliers', () => {
  let now = 0;
  const clock = new ClockSync({ now: () => now });
  const offset = -40_000_000;
  // 12 ms out, 4 ms back: no estimator can see asymmetry; the error must be ≈ (12 − 4) / 2.
  const net = network({ offset, fwdUs: 12_000, backUs: 4_000, jitterUs: 2_000, outlierEvery: 3, outlierUs: 250_000 });
  for (let i = 0; i < 40; i++) {
    const { pong, t3 } = net(now);
    now = t3;
    clock.onPong(pong, t3);
    const err = clock.offsetUs - offset;
    if (i >= 5) assert.ok(Math.abs(err - 4_000) < 1_500, `ping ${i}: error ${err} µs`);
    assert.ok(Math.abs(err) <= clock.rttUs / 2 + 1, 'error within rtt/2');
    now += 200_000;
  }
});

test('outliers in both directions do not move the estimate (unlike an EMA)', () => {
  let now = 0;
  const clock = new ClockSync({ now: () => now });
  const offset = 777_000;
  const net = network({ offset, fwdUs: 2_000, backUs: 2_000, jitterUs: 500, outlierEvery: 2, outlierUs: 400_000 });
  let ema = null;
  let worstEma = 0;
  for (let i = 0; i < 30; i++) {
    const { pong, t3 } = net(now);
    now = t3;
    const s = clock.onPong(pong, t3);
    if (s) {
      ema = ema === null ? s.offset : 0.6 * ema + 0.4 * s.offset; // OpenWatchParty's smoothing
      if (i > 5) worstEma = Math.max(worstEma, Math.abs(ema - offset));
    }
    if (i > 2) assert.ok(Math.abs(clock.offsetUs - offset) < 400, `error ${clock.offsetUs - offset}`);
    now += 100_000;
  }
  assert.ok(worstEma > 50_000, 'the EMA baseline is hurt by outliers');
});

test('jitter each way (50 ± 20 ms): the least delay per direction is steadier than the fastest exchange', () => {
  // 200 viewers, each its own path; the steady error of each (the mean over 20–60 s) is what it keeps as an
  // offset from the others.
  const steady = (/** @type {'directions' | 'fastest'} */ estimator, /** @type {number} */ seed) => {
    let now = 0;
    const clock = new ClockSync({ now: () => now, estimator });
    const net = network({ offset: 3_000_000, fwdUs: 30_000, backUs: 30_000, jitterUs: 40_000, seed });
    let sum = 0;
    let n = 0;
    while (now < 60_000_000) {
      const wait = clock.nextPingInMs();
      if (wait > 0) now += wait * 1000;
      const { pong, t3 } = net(clock.ping());
      now = t3;
      clock.onPong(pong, t3);
      if (now >= 20_000_000) {
        sum += clock.offsetUs - 3_000_000;
        n++;
      }
    }
    return Math.abs(sum / n) / 1000;
  };
  const q = (/** @type {number[]} */ xs, /** @type {number} */ p) => [...xs].sort((a, b) => a - b)[Math.floor(p * (xs.length - 1))];
  const seeds = Array.from({ length: 200 }, (_, i) => i + 1);
  const directions = seeds.map((s) => steady('directions', s));
  const fastest = seeds.map((s) => steady('fastest', s));
  assert.ok(q(directions, 0.95) < 3, `directions p95 ${q(directions, 0.95)} ms`);
  assert.ok(q(directions, 0.5) < 1.2, `directions p50 ${q(directions, 0.5)} ms`);
  assert.ok(q(fastest, 0.95) > 1.5 * q(directions, 0.95), `fastest p95 ${q(fastest, 0.95)} vs ${q(directions, 0.95)} ms`);
});

test('samples age out of the 30 s window, at most 16 are kept, and the newest always stays', () => {
  let now = 0;
  const clock = new ClockSync({ now: () => now });
  const mk = (t0, rtt, off) => ({ clientTime: t0, serverRecvUs: t0 + rtt / 2 + off, serverSendUs: t0 + rtt / 2 + off });
  clock.onPong(mk(0, 1_000, 5_000), 1_000); // very fast, offset 5 ms
  now = 1_000;
  assert.equal(clock.offsetUs, 5_000);
  for (let i = 1; i <= 20; i++) {
    now = i * 1_000_000;
    clock.onPong(mk(now - 20_000, 20_000, 9_000), now);
  }
  assert.ok(clock.samples.length <= 16);
  // The fast sample is still in the window? No: 16 newer ones pushed it out.
  assert.equal(clock.offsetUs, 9_000);
  now = 100_000_000;
  assert.equal(clock.samples.length > 0, true);
  clock.estimate();
  assert.equal(clock.samples.length, 1, 'only the newest survives a long silence');
});

test('implausible pongs are refused', () => {
  let now = 20_000_000;
  const clock = new ClockSync({ now: () => now });
  assert.equal(clock.onPong({ clientTime: now + 5, serverRecvUs: 1, serverSendUs: 2 }, now), null, 'from the future');
  assert.equal(clock.onPong({ clientTime: now - 5, serverRecvUs: 10, serverSendUs: 2 }, now), null, 'send before receive');
  assert.equal(clock.onPong({ clientTime: now - 100, serverRecvUs: 0, serverSendUs: 1000 }, now), null, 'hold longer than the round trip');
  assert.equal(clock.onPong({ clientTime: 0, serverRecvUs: 0, serverSendUs: 0 }, now), null, 'older than maxRtt');
  assert.equal(clock.onPong({ clientTime: 2n ** 64n - 1n, serverRecvUs: 0, serverSendUs: 0 }, now), null, 'bigint junk');
  assert.equal(clock.synced, false);
});

test('a Welcome seeds a coarse offset until the first pong', () => {
  let now = 5_000_000;
  const clock = new ClockSync({ now: () => now });
  assert.equal(clock.hasEstimate, false);
  clock.seed(1_000_005_000_000, now - 2_000);
  assert.equal(clock.hasEstimate, true);
  assert.equal(clock.offsetUs, 1_000_005_000_000 - 4_998_000 + 0);
  clock.onPong({ clientTime: now - 1000, serverRecvUs: 1_000_004_999_500 + 10, serverSendUs: 1_000_004_999_500 + 10 }, now);
  assert.equal(clock.synced, true);
  assert.equal(clock.offsetUs, 1_000_004_999_510 - (now - 500));
  assert.equal(clock.serverNowUs(now), Math.round(now + clock.offsetUs));
  assert.equal(clock.toClientUs(clock.serverNowUs(now)), now);
});

test('ping schedule: a burst of 5 at 100 ms, then every 2 s; reset re-bursts', () => {
  let now = 0;
  const clock = new ClockSync({ now: () => now });
  const sent = [];
  for (now = 0; now <= 12_000_000; now += 10_000) {
    if (clock.nextPingInMs() === 0) sent.push((clock.ping(), now / 1000));
  }
  assert.deepEqual(sent.slice(0, 6), [0, 100, 200, 300, 400, 2400]);
  assert.deepEqual(sent.slice(6), [4400, 6400, 8400, 10400]);
  clock.reset();
  assert.equal(clock.nextPingInMs(), 0);
  assert.equal(clock.synced, false);
  clock.ping();
  assert.equal(clock.nextPingInMs(), 100);
});

test('the default clock is Unix-epoch microseconds and monotonic', () => {
  const a = defaultNowUs();
  const b = defaultNowUs();
  assert.ok(b >= a);
  assert.ok(Math.abs(a / 1000 - Date.now()) < 1000);
});
