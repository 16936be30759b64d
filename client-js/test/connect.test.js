import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff, race, TransportMemory } from '../src/connect.js';
import { FakeTimers, after, flush } from './support/fake-timers.js';

test('backoff: full jitter from 250 ms doubling to a 10 s cap, reset after success', () => {
  const top = new Backoff({ random: () => 1 });
  assert.deepEqual(Array.from({ length: 8 }, () => top.next()), [250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
  top.reset();
  assert.equal(top.next(), 250);
  const mid = new Backoff({ random: () => 0.5 });
  assert.deepEqual([mid.next(), mid.next(), mid.next()], [125, 250, 500]);
  const low = new Backoff({ random: () => 0 });
  assert.equal(low.next(), 0);
  // Never overflows, however many attempts.
  const many = new Backoff({ random: () => 1 });
  for (let i = 0; i < 1000; i++) assert.ok(many.next() <= 10_000);
});

/** A WebTransport-like and a WebSocket-like candidate on the fake clock. */
function candidates(timers, { wt, ws, headStart = 200 }) {
  const log = [];
  const mk = (name, spec, delayMs) => ({
    name,
    delayMs,
    open: (signal) => {
      log.push(`${name} start @${timers.now}`);
      return after(timers, spec.ms, { value: { name }, error: spec.fail ? new Error(`${name} failed`) : undefined, signal, onAbort: () => log.push(`${name} aborted @${timers.now}`) });
    },
    dispose: () => log.push(`${name} disposed`),
  });
  return { log, list: [mk('webtransport', wt, 0), mk('websocket', ws, headStart)] };
}

test('race: WebTransport that opens within its head start wins; WebSocket never starts', async () => {
  const timers = new FakeTimers();
  const { log, list } = candidates(timers, { wt: { ms: 80 }, ws: { ms: 10 } });
  const p = race(list, { timers });
  await timers.advance(1000);
  assert.equal((await p).name, 'webtransport');
  assert.deepEqual(log, ['webtransport start @0']);
  assert.equal(timers.pending.size, 0, 'no timer left behind');
});

test('race: a slow WebTransport loses to WebSocket after the head start, and is cancelled', async () => {
  const timers = new FakeTimers();
  const { log, list } = candidates(timers, { wt: { ms: 3000 }, ws: { ms: 40 } });
  const p = race(list, { timers });
  await timers.advance(5000);
  assert.equal((await p).name, 'websocket');
  assert.deepEqual(log, ['webtransport start @0', 'websocket start @200', 'webtransport aborted @240']);
});

test('race: a loser that opens anyway (ignoring the abort) is disposed', async () => {
  const timers = new FakeTimers();
  const list = [
    { name: 'webtransport', delayMs: 0, open: () => after(timers, 500, { value: 'wt' }), dispose: (v) => disposed.push(v) },
    { name: 'websocket', delayMs: 200, open: () => after(timers, 10, { value: 'ws' }) },
  ];
  const disposed = [];
  const p = race(list, { timers });
  await timers.advance(1000);
  assert.equal((await p).value, 'ws');
  assert.deepEqual(disposed, ['wt']);
});

test('race: a WebTransport failure starts WebSocket at once, without waiting out the head start', async () => {
  const timers = new FakeTimers();
  const { log, list } = candidates(timers, { wt: { ms: 30, fail: true }, ws: { ms: 20 } });
  const p = race(list, { timers });
  await timers.advance(1000);
  assert.equal((await p).name, 'websocket');
  assert.deepEqual(log, ['webtransport start @0', 'websocket start @30']);
});

test('race: all failing rejects with every error; a deadline and an abort reject too', async () => {
  const timers = new FakeTimers();
  const { list } = candidates(timers, { wt: { ms: 30, fail: true }, ws: { ms: 20, fail: true } });
  const p = race(list, { timers });
  p.catch(() => {});
  await timers.advance(1000);
  await assert.rejects(p, (e) => e instanceof AggregateError && e.errors.length === 2);

  const t2 = new FakeTimers();
  const slow = candidates(t2, { wt: { ms: 60_000 }, ws: { ms: 60_000 } });
  const p2 = race(slow.list, { timers: t2, timeoutMs: 5000 });
  p2.catch(() => {});
  await t2.advance(6000);
  await assert.rejects(p2, /within 5000 ms/);
  assert.ok(slow.log.includes('webtransport aborted @5000') && slow.log.includes('websocket aborted @5000'));

  const t3 = new FakeTimers();
  const ctl = new AbortController();
  const c3 = candidates(t3, { wt: { ms: 60_000 }, ws: { ms: 60_000 } });
  const p3 = race(c3.list, { timers: t3, signal: ctl.signal });
  p3.catch(() => {});
  await t3.advance(100);
  ctl.abort();
  await flush();
  await assert.rejects(p3, /cancelled/);
  assert.deepEqual(c3.log, ['webtransport start @0', 'webtransport aborted @100']);
  assert.equal(t3.pending.size, 0);
});

test('race: with no head start (WebSocket won last time) both start at once', async () => {
  const timers = new FakeTimers();
  const { log, list } = candidates(timers, { wt: { ms: 50 }, ws: { ms: 60 }, headStart: 0 });
  const p = race(list, { timers });
  await timers.advance(1000);
  assert.equal((await p).name, 'webtransport');
  assert.deepEqual(log, ['webtransport start @0', 'websocket start @0', 'websocket aborted @50']);
});

test('transport memory: per server, in storage when there is one, in memory otherwise', () => {
  const store = new Map();
  const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v) };
  const m = new TransportMemory(/** @type {any} */ (storage));
  assert.equal(m.get('http://a'), null);
  m.set('http://a', 'websocket');
  assert.equal(m.get('http://a'), 'websocket');
  assert.equal(m.get('http://b'), null);
  assert.equal(store.get('lockstep.transport:http://a'), 'websocket');
  const broken = new TransportMemory(/** @type {any} */ ({ getItem() { throw new Error('denied'); }, setItem() { throw new Error('denied'); } }));
  broken.set('http://a', 'webtransport');
  assert.equal(broken.get('http://a'), 'webtransport');
  const none = new TransportMemory(null);
  none.set('x', 'websocket');
  assert.equal(none.get('x'), 'websocket');
});
