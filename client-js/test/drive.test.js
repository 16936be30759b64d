// The session's hooks for player adapters: the 'drive' event (announcing each
// write of the session's to the element, right before it) and hold() (no
// drift control while a promise is pending). Against in-process fake
// transports, with the real session.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../src/index.js';
import { TransportMemory } from '../src/connect.js';
import { FakeServer } from './support/fake-net.js';
import { FakeVideo } from './support/fake-video.js';

async function until(cond, timeoutMs = 4000, what = 'condition') {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function opts(server) {
  return {
    url: 'http://127.0.0.1:8080',
    eventId: 'evt-1',
    deviceId: 'dev-1',
    transport: /** @type {const} */ ('websocket'),
    WebSocket: /** @type {any} */ (server.WebSocket),
    memory: new TransportMemory(null),
    backoff: { baseMs: 20, maxMs: 50 },
  };
}

test("'drive' comes right before each of the session's writes to the element, and only then", async () => {
  const server = new FakeServer(); // the room is paused at 5 s
  const s = await connect(opts(server));
  const video = new FakeVideo();
  video.playbackRate = 1.5; // the room's rate is 1: the session sets it back
  video.log.length = 0;
  /** @type {any[]} */
  const seen = [];
  s.on('drive', (a) => seen.push({ a, at: video.log.length }));
  try {
    s.attach(video);
    await until(() => video.log.some((l) => l.type === 'seek') && !video.seeking, 3000, 'the seek to the room');
    await sleep(300);
    assert.ok(seen.length >= 2, `drives: ${JSON.stringify(seen)}`);
    assert.equal(seen.length, video.log.length, 'one drive per write');
    for (const { a, at } of seen) {
      const w = video.log[at];
      if (a.type === 'seek') assert.deepEqual(w, { type: 'seek', to: a.position });
      else if (a.type === 'setRate') assert.deepEqual(w, { type: 'rate', rate: a.rate });
      else assert.deepEqual(w, { type: a.type });
    }
    assert.ok(Math.abs(seen.find((x) => x.a.type === 'seek').a.position - 5) < 0.5);
  } finally {
    s.detach();
    video.dispose();
    s.close();
  }
});

test("the start-up probe: a paused room's element is played muted until it moves, paused, put back on the room's position, its muted state restored", async () => {
  const server = new FakeServer(); // the room is paused at 5 s
  const s = await connect({ ...opts(server), drift: { startProbe: true } });
  const video = new FakeVideo({ startLatencyMs: 60 });
  try {
    s.attach(video);
    await until(() => video.mutes.length >= 2 && video.paused && !video.seeking, 3000, 'the probe to end');
    assert.deepEqual(video.mutes, [true, false]);
    const kinds = video.log.map((l) => l.type);
    assert.ok(kinds.indexOf('play') < kinds.lastIndexOf('pause'), `writes: ${kinds}`);
    assert.equal(kinds.filter((k) => k === 'play').length, 1, `writes: ${kinds}`);
    await until(() => Math.abs(video.currentTime - 5) < 0.001 && !video.seeking, 3000, 'the element back on the room position');
    const learned = s.stats.startLatencyMs;
    assert.ok(learned >= 40 && learned <= 120, `learned ${learned} ms`);
    // Once measured, never again: no second probe.
    await sleep(600);
    assert.equal(video.log.filter((l) => l.type === 'play').length, 1);
  } finally {
    s.detach();
    video.dispose();
    s.close();
  }
});

test('hold(): no drift control until the promise settles; a rejection releases too; bad input is a TypeError', async () => {
  const server = new FakeServer();
  const s = await connect(opts(server));
  const video = new FakeVideo();
  try {
    /** @type {(v: unknown) => void} */
    let resolve = () => {};
    const p = new Promise((r) => (resolve = r));
    assert.equal(s.hold(p), p);
    s.attach(video);
    await sleep(600);
    assert.deepEqual(video.log, [], 'left alone while held');
    resolve(null);
    await until(() => video.log.some((l) => l.type === 'seek'), 2000, 'drift control again');
    await until(() => !video.seeking && Math.abs(video.currentTime - 5) < 0.1, 2000, 'at the room');
    await sleep(300);

    // Held by a rejected promise: released as well.
    video.log.length = 0;
    /** @type {(e: unknown) => void} */
    let reject = () => {};
    const q = new Promise((_, r) => (reject = r));
    q.catch(() => {});
    s.hold(q);
    video.currentTime = 40; // far from the room
    video.log.length = 0;
    await sleep(400);
    assert.deepEqual(video.log, []);
    reject(new Error('refused'));
    await until(() => video.log.some((l) => l.type === 'seek' && Math.abs(l.to - 5) < 0.5), 2000, 'back to the room');

    assert.throws(() => s.hold(/** @type {any} */ (42)), { name: 'TypeError', message: /needs a promise/ });
  } finally {
    s.detach();
    video.dispose();
    s.close();
  }
});
