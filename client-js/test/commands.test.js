// The command tracker on its own: answers matched by request id only, in any
// order; Errors; coalesced commands; the timeout as a last resort.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CommandTracker } from '../src/commands.js';
import { FakeTimers } from './support/fake-timers.js';

/** A timeline event of `epoch` (the shape 'timeline' listeners get). */
function ev(epoch, reason = 'seek', extra = {}) {
  const timeline = { epoch, positionMs: epoch * 1000, anchorUs: 0, rateMilli: 1000, paused: false };
  return { epoch, positionMs: epoch * 1000, anchorUs: 0, rate: 1, rateMilli: 1000, paused: false, effectiveAtUs: 0, pending: false, reason, by: 1, timeline, ...extra };
}

function tracker(o = {}) {
  const timers = new FakeTimers();
  let current = ev(1, 'welcome');
  const t = new CommandTracker({ timers, timeoutMs: 1000, current: () => current, ...o });
  t.noteTimeline(current);
  return { t, timers, setCurrent: (e) => (current = e) };
}

/** Settles a promise into {value} or {error}, without waiting. */
function watch(p) {
  const box = { settled: false };
  p.then(
    (value) => Object.assign(box, { settled: true, value }),
    (error) => Object.assign(box, { settled: true, error }),
  );
  return box;
}

const flush = () => new Promise((r) => setImmediate(r));

test('request ids are distinct and non-zero', () => {
  const { t } = tracker();
  const ids = Array.from({ length: 100 }, () => t.add().requestId);
  assert.equal(new Set(ids).size, 100);
  assert.ok(ids.every((id) => id > 0 && id <= 0xffffffff));
  assert.equal(t.size, 100);
});

test('answers out of order each reach their own command', async () => {
  const { t } = tracker();
  const a = t.add();
  const b = t.add();
  const c = t.add();
  t.noteTimeline(ev(2));
  t.noteTimeline(ev(3));
  assert.equal(t.onAck({ requestId: c.requestId, outcome: 'applied', epoch: 3 }), true);
  assert.equal(t.onAck({ requestId: a.requestId, outcome: 'applied', epoch: 2 }), true);
  assert.equal(t.onError(b.requestId, new Error('forbidden')), true);
  const [ra, rb, rc] = await Promise.allSettled([a.promise, b.promise, c.promise]);
  assert.equal(ra.value.epoch, 2);
  assert.equal(ra.value.outcome, 'applied');
  assert.equal(ra.value.requestId, a.requestId);
  assert.equal(rb.reason.message, 'forbidden');
  assert.equal(rc.value.epoch, 3);
  assert.equal(rc.value.positionMs, 3000);
  assert.equal(t.size, 0);
  // Answered once: a second answer is not matched.
  assert.equal(t.onAck({ requestId: a.requestId, outcome: 'applied', epoch: 2 }), false);
  assert.equal(t.onError(b.requestId, new Error('again')), false);
  assert.equal(t.onAck({ requestId: 999, outcome: 'applied', epoch: 2 }), false);
});

test('unchanged resolves with the timeline of its epoch; the result is a copy with the outcome', async () => {
  const { t } = tracker();
  const e2 = ev(2, 'play');
  t.noteTimeline(e2);
  const a = t.add();
  t.onAck({ requestId: a.requestId, outcome: 'unchanged', epoch: 2 });
  const r = await a.promise;
  assert.equal(r.outcome, 'unchanged');
  assert.equal(r.reason, 'play');
  assert.equal(e2.outcome, undefined, 'the announced event is not modified');
});

test('the change of an epoch wins over a tick or a Welcome of the same epoch', async () => {
  const { t } = tracker();
  t.noteTimeline(ev(2, 'tick'));
  t.noteTimeline(ev(2, 'seek', { by: 5 }));
  t.noteTimeline(ev(2, 'tick'));
  t.noteTimeline(ev(2, 'seek', { by: 6, pending: true })); // a copy: the first stays
  const a = t.add();
  t.onAck({ requestId: a.requestId, outcome: 'applied', epoch: 2 });
  const r = await a.promise;
  assert.equal(r.reason, 'seek');
  assert.equal(r.by, 5);
});

test('coalesced: an Ack naming a change not seen yet waits for it', async () => {
  const { t, timers } = tracker();
  const a = t.add();
  t.onAck({ requestId: a.requestId, outcome: 'coalesced', epoch: 4 });
  const box = watch(a.promise);
  await flush();
  assert.equal(box.settled, false);
  t.noteTimeline(ev(3));
  await flush();
  assert.equal(box.settled, false, 'another epoch does not answer it');
  t.noteTimeline(ev(4, 'seek', { by: 9 }));
  await flush();
  assert.equal(box.value.outcome, 'coalesced');
  assert.equal(box.value.epoch, 4);
  assert.equal(box.value.by, 9);
  await timers.advance(5000);
  assert.equal(t.size, 0);
});

test('an acknowledged command whose timeline never comes resolves with the timeline in effect at the timeout', async () => {
  const { t, timers, setCurrent } = tracker();
  const a = t.add();
  t.onAck({ requestId: a.requestId, outcome: 'coalesced', epoch: 7 });
  setCurrent(ev(5));
  await timers.advance(999);
  const box = watch(a.promise);
  await flush();
  assert.equal(box.settled, false);
  await timers.advance(1);
  assert.equal(box.value.outcome, 'coalesced');
  assert.equal(box.value.epoch, 5);
});

test('an Ack of an epoch too old to remember resolves with the timeline in effect', async () => {
  const { t, setCurrent } = tracker();
  for (let e = 2; e <= 100; e++) t.noteTimeline(ev(e));
  setCurrent(ev(100));
  const a = t.add();
  t.onAck({ requestId: a.requestId, outcome: 'applied', epoch: 3 });
  assert.equal((await a.promise).epoch, 100);
  const b = t.add();
  t.onAck({ requestId: b.requestId, outcome: 'applied', epoch: 90 });
  assert.equal((await b.promise).epoch, 90, 'recent epochs are remembered');
});

test('no answer: the promise resolves null after the timeout, and a late answer is ignored', async () => {
  const { t, timers } = tracker();
  const a = t.add();
  const box = watch(a.promise);
  await timers.advance(999);
  assert.equal(box.settled, false);
  await timers.advance(1);
  assert.deepEqual(box, { settled: true, value: null });
  assert.equal(t.onAck({ requestId: a.requestId, outcome: 'applied', epoch: 1 }), false);
  assert.equal(t.size, 0);
});

test('rejectAll (connection lost) and resolveAll (closed) settle everything and clear the timers', async () => {
  const { t, timers } = tracker();
  const a = t.add();
  const b = t.add();
  t.rejectAll((id) => Object.assign(new Error('lost'), { requestId: id }));
  const [ra, rb] = await Promise.allSettled([a.promise, b.promise]);
  assert.equal(ra.reason.requestId, a.requestId);
  assert.equal(rb.reason.requestId, b.requestId);
  const c = t.add();
  t.resolveAll();
  assert.equal(await c.promise, null);
  assert.equal(timers.pending.size, 0);
});

test('a new connection forgets the epochs (a recreated room may count from 1 again)', async () => {
  const { t } = tracker();
  for (let e = 2; e <= 10; e++) t.noteTimeline(ev(e));
  t.resetTimelines();
  t.noteTimeline(ev(1, 'welcome'));
  const a = t.add();
  // Epoch 2 is newer than anything known after the reset: it waits for it.
  t.onAck({ requestId: a.requestId, outcome: 'applied', epoch: 2 });
  const box = watch(a.promise);
  await flush();
  assert.equal(box.settled, false);
  t.noteTimeline(ev(2, 'pause'));
  await flush();
  assert.equal(box.value.reason, 'pause');
});

test('a rejection nobody handles is not an unhandled rejection', async () => {
  const { t } = tracker();
  let unhandled = 0;
  const on = () => unhandled++;
  process.on('unhandledRejection', on);
  try {
    const a = t.add();
    t.onError(a.requestId, new Error('ignored'));
    await flush();
    await flush();
    assert.equal(unhandled, 0);
  } finally {
    process.off('unhandledRejection', on);
  }
});
