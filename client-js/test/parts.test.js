// The session's small parts: the emitter and the named timers.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Emitter } from '../src/emitter.js';
import { Timers } from '../src/timers.js';

test('emitter: listeners in order, unsubscribe, and a throwing listener neither stops the others nor throws', () => {
  const e = new Emitter();
  const got = [];
  const reported = [];
  const saved = globalThis.reportError;
  globalThis.reportError = (x) => reported.push(x.message);
  try {
    const off = e.on('x', (v) => got.push(['a', v]));
    e.on('x', () => {
      throw new Error('page bug');
    });
    const b = (v) => got.push(['b', v]);
    e.on('x', b);
    e.emit('x', 1);
    off();
    e.off('x', b);
    e.emit('x', 2);
    e.emit('nobody', 3);
    assert.deepEqual(got, [['a', 1], ['b', 1]]);
    assert.deepEqual(reported, ['page bug', 'page bug']);
  } finally {
    globalThis.reportError = saved;
  }
});

test('timers: a name set again replaces its timer; stop clears all and refuses new ones', async () => {
  const t = new Timers();
  const fired = [];
  t.set('a', 30, () => fired.push('a1'));
  t.set('a', 0, () => fired.push('a2'));
  t.set('b', 0, () => fired.push('b'));
  assert.equal(t.has('a'), true);
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(fired, ['a2', 'b']);
  assert.equal(t.has('a'), false);
  t.set('c', 0, () => fired.push('c'));
  t.stop();
  t.set('d', 0, () => fired.push('d'));
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(fired, ['a2', 'b']);
});
