// The library against the real server over real WebSockets (Node 20 needs
// --experimental-websocket for the global WebSocket; `npm test` passes it).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../src/index.js';
import { startServer } from './support/server.js';
import { FakeVideo } from './support/fake-video.js';

/** @type {Awaited<ReturnType<typeof startServer>>} */
let server;
const sessions = [];

before(async () => {
  server = await startServer();
});

after(async () => {
  for (const s of sessions) s.close();
  await server?.stop();
});

/** @param {Parameters<typeof connect>[0]} o */
async function join(o) {
  const s = await connect({ url: server.url, ...o });
  sessions.push(s);
  return s;
}

/**
 * Resolves with the first event `name` of `s` that satisfies `pred`.
 * @param {any} s @param {string} name @param {(v: any) => boolean} pred
 */
function next(s, name, pred = () => true, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no matching '${name}' event within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = s.on(name, (v) => {
      if (!pred(v)) return;
      clearTimeout(timer);
      off();
      resolve(v);
    });
  });
}

/** Waits until `cond()` holds, polling. */
async function until(cond, timeoutMs = 5000, what = 'condition') {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('two sessions follow each other over WebSocket', async () => {
  const eventId = `evt-${process.pid}-a`;
  const host = await join({ eventId, deviceId: 'host-device', transport: 'websocket' });
  assert.equal(host.transport, 'websocket');
  assert.equal(host.status, 'open');
  assert.equal(host.role, 'host');
  assert.ok(host.memberId > 0);

  const hostSawTwo = next(host, 'viewers', (n) => n === 2);
  const viewer = await join({ eventId, deviceId: 'viewer-device' }); // 'auto': no WebTransport in Node
  assert.equal(viewer.transport, 'websocket');
  assert.equal(viewer.role, 'viewer');
  await hostSawTwo;
  assert.equal(viewer.viewers, 2);
  assert.equal(viewer.timeline.paused, true);

  // Seek: takes effect at once, the viewer follows.
  const seen = next(viewer, 'timeline', (t) => t.reason === 'seek');
  const mine = await host.seek(42);
  assert.equal(mine.positionMs, 42_000);
  assert.equal(mine.outcome, 'applied');
  const t = await seen;
  assert.equal(t.positionMs, 42_000);
  assert.equal(t.paused, true);
  assert.equal(t.by, host.memberId);

  // Play: scheduled a lead ahead; the viewer's room position advances.
  const played = next(viewer, 'timeline', (x) => x.reason === 'play');
  await host.play();
  const p = await played;
  assert.equal(p.paused, false);
  await until(() => viewer.position > 42.2, 3000, 'the position to advance');

  // Rate 1.25.
  const rated = next(viewer, 'timeline', (x) => x.reason === 'rate');
  await host.setRate(1.25);
  assert.equal((await rated).rate, 1.25);
  const a = viewer.position;
  await new Promise((r) => setTimeout(r, 400));
  const advanced = viewer.position - a;
  assert.ok(advanced > 0.4 && advanced < 0.6, `advanced ${advanced} s in 0.4 s at 1.25x`);

  // Pause.
  const paused = next(viewer, 'timeline', (x) => x.reason === 'pause');
  await host.pause();
  const q = await paused;
  assert.equal(q.paused, true);
  await until(() => viewer.timeline.paused, 2000, 'the pause to take effect');
  const frozen = viewer.position;
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(viewer.position, frozen);

  // Both sides agree on the position to the millisecond.
  assert.equal(Math.round(host.position * 1000), Math.round(viewer.position * 1000));

  // A viewer may not control playback: the promise rejects and 'error' fires.
  const err = next(viewer, 'error', (e) => e.code === 4008);
  await assert.rejects(viewer.seek(1), (e) => e.code === 4008 && e.kind === 'forbidden');
  await err;

  // Clock sync on loopback: offset near 0, small RTT.
  await until(() => Number.isFinite(viewer.stats.rttMs), 3000, 'a pong');
  await new Promise((r) => setTimeout(r, 600)); // the rest of the ping burst
  const st = viewer.stats;
  assert.ok(Math.abs(st.offsetMs) < 20, `offset ${st.offsetMs} ms`);
  assert.ok(st.rttMs >= 0 && st.rttMs < 50, `rtt ${st.rttMs} ms`);
  assert.equal(st.transport, 'websocket');

  // The viewer leaves: the host's count drops.
  const one = next(host, 'viewers', (n) => n === 1);
  viewer.close();
  assert.equal(viewer.status, 'closed');
  await one;
});

test('an attached element follows the room: plays, locks, pauses, and reports', async () => {
  const eventId = `evt-${process.pid}-b`;
  const host = await join({ eventId, deviceId: 'h2', transport: 'websocket' });
  const viewer = await join({ eventId, deviceId: 'v2', transport: 'websocket' });
  const video = new FakeVideo();
  video.pos = 3; // somewhere else entirely
  viewer.attach(video);
  try {
    await host.seek(100);
    await host.play();
    // The element seeks to the room, plays, and locks: back in the fine band (rate within ±0.5 %,
    // drift under the ±5 % band's exit), not merely passing through zero on a 5 % catch-up, which a
    // late timer on a busy machine can carry past the room.
    // (The seek may be the paused snap, which corrections.seeks does not count.)
    const locked = () => {
      const st = viewer.stats;
      return Math.abs(st.driftMs) < 5 && Math.abs(st.rate - 1) <= 0.005;
    };
    await until(() => !video.paused && locked() && video.log.some((x) => x.type === 'seek'), 6000, 'lock');
    const seeksAtLock = video.log.filter((x) => x.type === 'seek').length;
    assert.ok(seeksAtLock <= 2, `${seeksAtLock} seeks to reach the room`);
    const drifts = [];
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 50));
      drifts.push(Math.abs((video.currentTime - viewer.position) * 1000));
    }
    assert.ok(Math.max(...drifts) < 30, `drift ${Math.max(...drifts)} ms`);
    assert.equal(video.log.filter((x) => x.type === 'seek').length, seeksAtLock, 'no seek once locked');

    await host.pause();
    await until(() => video.paused, 2000, 'the element to pause');
    await until(() => Math.abs(video.currentTime - viewer.position) < 0.045, 2000, 'the paused position');

    // Reports reached the server.
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    const m = /lockstep_messages_in_total\{type="report"\} (\d+)/.exec(metrics);
    assert.ok(m && Number(m[1]) > 0, 'no reports counted by the server');
    // ... and its measured drift: the room's sync quality counts the viewer, in step.
    /** @type {any} */
    let sync = null;
    await until(
      () => {
        void fetch(`${server.url}/api/live-stream/${eventId}/state`)
          .then((r) => r.json())
          .then((st) => (sync = st.sync));
        return sync !== null && sync.reporting >= 1;
      },
      5000,
      'a SyncReport in the room state',
    );
    assert.equal(sync.outOfSync, 0, JSON.stringify(sync));
    assert.ok(sync.maxMs < 40, JSON.stringify(sync));
  } finally {
    viewer.detach();
    video.dispose();
  }
});

test('a broken connection reconnects and resumes the room and the role', async () => {
  const eventId = `evt-${process.pid}-c`;
  /** @type {WebSocket[]} */
  const sockets = [];
  const Spy = class extends WebSocket {
    constructor(/** @type {string} */ url, /** @type {string[]} */ protocols) {
      super(url, protocols);
      sockets.push(this);
    }
  };
  const host = await join({ eventId, deviceId: 'h3', transport: 'websocket', backoff: { baseMs: 50, maxMs: 200 }, WebSocket: Spy });
  const viewer = await join({ eventId, deviceId: 'v3', transport: 'websocket' });
  await host.seek(7);
  const statuses = [];
  host.on('status', (s) => statuses.push(s));
  const transports = [];
  host.on('transport', (n) => transports.push(n));
  const errors = [];
  host.on('error', (e) => errors.push(e));
  // Ten undecodable frames: the server closes the connection with 4022.
  for (let i = 0; i < 10; i++) sockets.at(-1).send(new Uint8Array([0xff]));
  await until(() => statuses.includes('reconnecting'), 3000, 'reconnecting');
  await until(() => host.status === 'open', 5000, 'reopen');
  assert.deepEqual(statuses, ['reconnecting', 'open']);
  assert.deepEqual(transports, ['websocket']);
  assert.ok(errors.some((e) => e.code === 4000), 'the server reported the bad frames');
  assert.equal(host.role, 'host', 'the same device id keeps the host role');
  assert.equal(host.stats.reconnects, 1);
  assert.equal(host.timeline.positionMs, 7000, 'the room was resumed');
  // And it still controls the room.
  const seen = next(viewer, 'timeline', (t) => t.reason === 'seek' && t.positionMs === 9000);
  await host.seek(9);
  await seen;
});

test('commands are answered by request id: a no-op play and a setRole resolve their own promises, a seek its own timeline', async () => {
  const eventId = `evt-${process.pid}-d`;
  const host = await join({ eventId, deviceId: 'h4', transport: 'websocket' });
  const viewer = await join({ eventId, deviceId: 'v4', transport: 'websocket' });
  const before = host.timeline.epoch;

  const played = await host.play();
  assert.equal(played.outcome, 'applied');
  assert.equal(played.reason, 'play');
  assert.equal(played.by, host.memberId);
  assert.ok(played.epoch > before);

  // Already playing: answered at once, nothing changed.
  const again = await host.play();
  assert.equal(again.outcome, 'unchanged');
  assert.equal(again.epoch, played.epoch);
  assert.notEqual(again.requestId, played.requestId);

  // A role change changes no timeline, yet is answered.
  const promoted = next(viewer, 'role', (r) => r === 'co-host');
  const role = await host.setRole(viewer.memberId, 'co-host');
  assert.equal(role.outcome, 'applied');
  await promoted;

  // The next seek resolves with its own change, not with an older answer's.
  const seen = next(viewer, 'timeline', (t) => t.reason === 'seek' && t.positionMs === 20_000);
  const seek = await host.seek(20);
  assert.equal(seek.outcome, 'applied');
  assert.equal(seek.reason, 'seek');
  assert.equal(seek.positionMs, 20_000);
  assert.ok(seek.epoch > played.epoch);
  assert.equal((await seen).epoch, seek.epoch);

  // The same, sent back to back without waiting.
  const [p2, r2, s2, pol] = await Promise.all([host.play(), host.setRole(viewer.memberId, 'viewer'), host.seek(33), host.setPolicy('everyone')]);
  assert.equal(p2.outcome, 'unchanged');
  assert.equal(r2.outcome, 'applied');
  assert.equal(pol.outcome, 'applied');
  assert.equal(s2.outcome, 'applied');
  assert.equal(s2.positionMs, 33_000);
  assert.equal(s2.epoch, seek.epoch + 1);
  assert.equal(new Set([p2.requestId, r2.requestId, s2.requestId, pol.requestId]).size, 4);
  await until(() => viewer.policy === 'everyone' && viewer.role === 'viewer', 3000, 'the policy and role to reach the viewer');

  // A refused command rejects its own promise only.
  await host.setPolicy('host-only');
  const refused = viewer.seek(1);
  const fine = host.seek(44);
  await assert.rejects(refused, (e) => e.kind === 'forbidden');
  assert.equal((await fine).positionMs, 44_000);
});

test('a media room: s.live is null, and goLive() is refused by the server (4009, not a live room)', async () => {
  const s = await join({ eventId: `evt-${process.pid}-live`, deviceId: 'm1', transport: 'websocket' });
  const errors = [];
  s.on('error', (e) => errors.push(e));
  await assert.rejects(s.goLive(), (e) => e.code === 4009 && e.kind === 'invalid_argument' && e.message === 'not a live room' && e.requestId > 0);
  assert.equal(errors.filter((e) => e.code === 4009).length, 1, 'also emitted');
  assert.equal(s.live, null);
  assert.equal(s.programTime(), null);
  // The session goes on: the next command is answered.
  assert.equal((await s.seek(5)).positionMs, 5000);
});

test('connect() rejects on a fatal error and a bad option is a TypeError', async () => {
  await assert.rejects(connect({ url: server.url, eventId: 'bad id with spaces' }), TypeError);
  await assert.rejects(connect({ url: 'ws://x', eventId: 'e' }), TypeError);
  // Drift options are checked at connect(), not when an element is attached.
  await assert.rejects(connect({ url: server.url, eventId: 'e', drift: /** @type {any} */ ({ deadBandMs: 10 }) }), { name: 'TypeError', message: /unknown drift option 'deadBandMs'/ });
  await assert.rejects(connect({ url: server.url, eventId: 'e', drift: { relockStartMs: -1 } }), { name: 'RangeError', message: /relockStartMs must be a number ≥ 0/ });
  // No server there: connect() gives up after openTimeoutMs.
  await assert.rejects(
    connect({ url: 'http://127.0.0.1:9', eventId: 'e', transport: 'websocket', openTimeoutMs: 800, backoff: { baseMs: 50, maxMs: 100 } }),
    (e) => e.kind === 'timeout',
  );
});

test('chat against the real server: send resolves with the room\'s copy, others get it, refusals reject, moderation, history on rejoin', async () => {
  const eventId = `evt-${process.pid}-chat`;
  const host = await join({ eventId, deviceId: 'ch-host', transport: 'websocket', chat: true });
  const ana = await join({ eventId, deviceId: 'ch-ana', transport: 'websocket', chat: true });
  const plain = await join({ eventId, deviceId: 'ch-plain', transport: 'websocket' });
  const plainGot = [];
  plain.on('chat', (m) => plainGot.push(m));

  const seenByHost = next(host, 'chat', (m) => m.text === 'hello 👋');
  const sent = await ana.chat.send('hello 👋');
  assert.equal(sent.text, 'hello 👋');
  assert.equal(sent.mine, true);
  assert.equal(sent.memberId, ana.memberId);
  assert.ok(sent.id > 0 && sent.atMs > 1.7e12);
  const theirs = await seenByHost;
  assert.equal(theirs.id, sent.id);
  assert.equal(theirs.mine, false);
  assert.equal(theirs.name, sent.name);
  assert.deepEqual(host.chat.messages.map((m) => m.id), [sent.id]);

  // Bad input: a TypeError before sending, the server's refusal as a rejection.
  assert.throws(() => ana.chat.send('   '), TypeError);
  assert.throws(() => ana.chat.send('bell\u0007'), TypeError);
  await assert.rejects(ana.chat.send('x'.repeat(600)), (e) => e.kind === 'invalid_argument' && e.code === 4009, 'over --chat-max-bytes (500)');
  await assert.rejects(plain.chat.send('hi'), (e) => e.kind === 'chat_disabled');
  // Bursts of 5 a member: the sixth back to back is refused (one already sent, one refused above).
  const burst = await Promise.allSettled([1, 2, 3, 4, 5].map((i) => ana.chat.send(`m${i}`)));
  const refused = burst.filter((r) => r.status === 'rejected');
  assert.ok(refused.length >= 1 && refused.every((r) => r.reason.kind === 'rate_limited'), JSON.stringify(burst.map((r) => r.status)));

  // A viewer does not moderate; the host deletes and mutes.
  await assert.rejects(ana.chat.delete(sent.id), (e) => e.kind === 'forbidden');
  const deleted = next(ana, 'chatDeleted', (d) => d.id === sent.id);
  assert.equal((await host.chat.delete(sent.id)).outcome, 'applied');
  assert.equal((await deleted).by, host.memberId);
  assert.ok(!ana.chat.messages.some((m) => m.id === sent.id), 'gone from the list');
  const muted = next(ana, 'chatMuted', (m) => m.muted);
  await host.chat.mute(ana.memberId);
  await muted;
  assert.equal(ana.chat.muted, true);
  await new Promise((r) => setTimeout(r, 1100)); // the member's allowance refills (1 a second)
  await assert.rejects(ana.chat.send('let me talk'), (e) => e.kind === 'forbidden');
  await host.chat.unmute(ana.memberId);
  await until(() => !ana.chat.muted, 3000, 'the unmute');

  // A new session of another user gets the history, oldest first, without the deleted one.
  const kept = host.chat.messages.map((m) => m.id);
  const late = await join({ eventId, deviceId: 'ch-late', transport: 'websocket', chat: true });
  await until(() => late.chat.messages.length === kept.length, 3000, 'the history');
  assert.deepEqual(late.chat.messages.map((m) => m.id), kept);
  assert.ok(late.chat.messages.every((m) => m.history && !m.mine));
  assert.equal(plainGot.length, 0, 'no chat without the option');
});

test('media against the real server: setMedia switches every session, the attached element loads the item, the playlist and its refusals', async () => {
  const eventId = `evt-${process.pid}-media`;
  const resolved = [];
  const host = await join({ eventId, deviceId: 'md-host', transport: 'websocket', mediaItems: true });
  const viewer = await join({
    eventId,
    deviceId: 'md-viewer',
    transport: 'websocket',
    resolveMedia: async (mediaId) => {
      resolved.push(mediaId);
      return `/media/${mediaId}.mp4`;
    },
  });
  const video = new FakeVideo();
  viewer.attach(/** @type {any} */ (video));
  assert.throws(() => host.setMedia({ mediaId: '' }), TypeError);
  assert.throws(() => host.setMedia({ mediaId: 'x', url: 'javascript:alert(1)' }), TypeError);

  await host.play();
  const seen = next(viewer, 'media', (m) => m.item?.mediaId === 'ep2');
  const queued = next(viewer, 'queue', (q) => q.items.length === 2);
  await host.queue.add({ mediaId: 'ep1', title: 'Episode 1', durationMs: 60_000 });
  const switched = await host.setMedia({ mediaId: 'ep2', title: 'Episode 2', durationMs: 60_000 });
  assert.equal(switched.outcome, 'applied');
  const m = await seen;
  assert.equal(m.index, 1);
  assert.equal(m.by, host.memberId);
  assert.equal(viewer.media.item.title, 'Episode 2');
  const q = await queued;
  assert.deepEqual(q.items.map((i) => i.mediaId), ['ep1', 'ep2']);
  assert.deepEqual(viewer.queue.items.map((i) => i.mediaId), ['ep1', 'ep2']);
  assert.equal(viewer.queue.current, 1);
  await until(() => video.src === '/media/ep2.mp4', 3000, 'the element to load the item');
  assert.deepEqual(resolved, ['ep2']);
  // Held at 0, then started by the room from 0.
  const started = await next(viewer, 'timeline', (t) => t.reason === 'play' && t.positionMs === 0 && !t.paused, 5000);
  assert.ok(started.epoch > m.epoch);

  // Refusals: a viewer may not switch; nothing after the last item.
  await assert.rejects(viewer.queue.previous(), (e) => e.kind === 'forbidden');
  await assert.rejects(host.queue.next(), (e) => e.kind === 'invalid_argument');
  await host.queue.previous();
  await until(() => viewer.media?.item?.mediaId === 'ep1' && video.src === '/media/ep1.mp4', 3000, 'the previous item');
  await host.queue.setAutoAdvance(false);
  await until(() => viewer.queue.autoAdvance === false, 3000, 'auto-advance off');
});
