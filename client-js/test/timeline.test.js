import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { positionUsAt, wholeMsPoint, reanchored, unwrapAnchor, tickNew, tickTimeline, epochCmp } from '../src/timeline.js';
import { encodeServer, toHex } from '../src/codec.js';
import { TimelineTracker } from '../src/tracker.js';
import { VECTORS } from './support/vectors.js';

// SPEC 13: every number in timeline.json is below 2^53, so plain JSON.parse is exact.
const v = JSON.parse(readFileSync(join(VECTORS, 'timeline.json'), 'utf8'));

for (const c of v.positionUsAt) {
  test(`positionUsAt: ${c.name}`, () => assert.equal(positionUsAt(c.timeline, c.tUs), c.positionUs));
}
for (const c of v.wholeMsPoint) {
  test(`wholeMsPoint: ${c.name}`, () => {
    assert.deepStrictEqual(wholeMsPoint(c.timeline, c.tUs), { positionMs: c.positionMs, anchorUs: c.anchorUs });
    assert.deepStrictEqual(reanchored(c.timeline, c.tUs), c.reanchored);
  });
}
for (const c of v.unwrapAnchor) {
  test(`unwrapAnchor: ${c.name}`, () => assert.equal(unwrapAnchor(c.anchorLo, c.serverNowEstimateUs), c.anchorUs));
}
for (const c of v.tickNew) {
  test(`tickNew: ${c.name}`, () => {
    const tick = tickNew(c.timeline, c.nowUs, c.viewers);
    assert.deepStrictEqual(tick, { type: 'tick', ...c.tick });
    assert.equal(toHex(encodeServer(tick)), c.hex);
  });
}
for (const c of v.tickTimeline) {
  test(`tickTimeline: ${c.name}`, () => assert.deepStrictEqual(tickTimeline(c.tick, c.serverNowEstimateUs), c.timeline));
}

test('huge values saturate and come back as bigints', () => {
  const t = { epoch: 1, positionMs: 2n ** 64n - 1n, anchorUs: 0, rateMilli: 1000, paused: false };
  assert.equal(positionUsAt(t, 5), 2n ** 64n - 1n);
  assert.equal(positionUsAt({ ...t, paused: true }, 5), 2n ** 64n - 1n);
  assert.equal(wholeMsPoint(t, 1_000_000).positionMs, 2n ** 64n - 1n);
  // Truncation toward zero before the anchor (SPEC 4.1's example).
  assert.equal(positionUsAt({ epoch: 1, positionMs: 1, anchorUs: 10, rateMilli: 1500, paused: false }, 7), 996);
});

test('epochs compare as serial numbers across the u32 wrap', () => {
  assert.ok(epochCmp(5, 4) > 0);
  assert.ok(epochCmp(4, 5) < 0);
  assert.ok(epochCmp(0, 0xffffffff) > 0);
  assert.equal(epochCmp(7, 7), 0);
});

// ------------------------------------------------------------------ tracker (SPEC 6.2)

const T0 = 1_795_500_000_000_000;
const tl = (epoch, positionMs, anchorUs, paused = false, rateMilli = 1000) => ({ epoch, positionMs, anchorUs, rateMilli, paused });

test('tracker: a scheduled change takes effect at its time, not before', () => {
  const tr = new TimelineTracker();
  tr.reset(tl(3, 10_000, T0, true), T0);
  const play = { timeline: tl(4, 10_000, T0 + 100_000), effectiveAtUs: T0 + 100_000, by: 1, reason: 'play' };
  assert.equal(tr.onChanged(play, T0), 'pending');
  assert.equal(tr.at(T0 + 99_999).state.timeline.epoch, 3);
  assert.equal(tr.at(T0 + 99_999).positionUs, 10_000_000);
  const at = tr.at(T0 + 600_000);
  assert.equal(at.state.timeline.epoch, 4);
  assert.equal(at.positionUs, 10_500_000);
  assert.equal(at.state.reason, 'play');
});

test('tracker: duplicates and stale changes are ignored; a newer pending replaces an older', () => {
  const tr = new TimelineTracker();
  tr.reset(tl(3, 0, T0), T0);
  const c4 = { timeline: tl(4, 5000, T0 + 100_000, true), effectiveAtUs: T0 + 100_000, by: 1, reason: 'pause' };
  assert.equal(tr.onChanged(c4, T0), 'pending');
  assert.equal(tr.onChanged(c4, T0), 'duplicate');
  const c5 = { timeline: tl(5, 5000, T0 + 100_000), effectiveAtUs: T0 + 100_000, by: 1, reason: 'play' };
  assert.equal(tr.onChanged(c5, T0 + 1), 'pending');
  assert.equal(tr.pending.timeline.epoch, 5);
  assert.equal(tr.onChanged({ ...c4, timeline: tl(2, 1, T0) }, T0 + 2), 'stale');
  assert.equal(tr.onChanged({ timeline: tl(6, 9000, T0 + 3), effectiveAtUs: T0 + 3, by: 2, reason: 'seek' }, T0 + 3), 'applied');
  assert.equal(tr.current.timeline.epoch, 6);
  assert.equal(tr.pending, null);
});

test('tracker: ticks refresh, promote a due pending change, adopt newer epochs, and drop stale ones', () => {
  const tr = new TimelineTracker();
  const cur = tl(7, 754_250, T0);
  tr.reset(cur, T0);
  const tick1 = tickNew(cur, T0 + 250_000, 3);
  assert.equal(tr.onTick(tick1, T0 + 250_000), 'duplicate');
  assert.deepEqual(tr.current.timeline, cur, 'the exact timeline is kept');
  const older = tickNew(cur, T0 + 100_000, 3);
  assert.equal(tr.onTick(older, T0 + 260_000), 'stale', 'an older anchor of the same epoch');
  assert.equal(tr.onTick({ ...tick1, epoch: 6 }, T0 + 260_000), 'stale', 'an older epoch');
  // A pending change whose tick arrives before our clock says it is due.
  const c8 = { timeline: tl(8, 0, T0 + 300_000), effectiveAtUs: T0 + 300_000, by: 1, reason: 'seek' };
  assert.equal(tr.onChanged(c8, T0 + 270_000), 'pending');
  assert.equal(tr.onTick(tickNew(c8.timeline, T0 + 300_000, 3), T0 + 290_000), 'applied');
  assert.equal(tr.current.reason, 'seek');
  assert.equal(tr.pending, null);
  // A missed change: a tick of a newer epoch is adopted as is.
  const t10 = tl(10, 42_000, T0 + 1_000_000, false, 1250);
  assert.equal(tr.onTick(tickNew(t10, T0 + 1_000_000, 3), T0 + 1_000_000), 'applied');
  assert.equal(tr.current.timeline.rateMilli, 1250);
  assert.equal(tr.current.timeline.positionMs, 42_000);
});

test('tracker: a Welcome resets everything (the room may have restarted at epoch 0)', () => {
  const tr = new TimelineTracker();
  tr.reset(tl(50, 1, T0), T0);
  tr.reset(tl(0, 0, T0 + 5, true), T0 + 5);
  assert.equal(tr.epoch, 0);
  assert.equal(tr.onTick(tickNew(tl(0, 0, T0 + 5, true), T0 + 250_000, 1), T0 + 250_000), 'duplicate');
});
