// Live rooms (SPEC 2.4) in the session, against the in-process fake server:
// the live state and its event, program time, a room switching its clock,
// reconnections, the live commands and what their positions mean, the reports.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Session } from '../src/index.js';
import { encodeServer } from '../src/codec.js';
import { TransportMemory } from '../src/connect.js';
import { FakeServer } from './support/fake-net.js';
import { FakeVideo } from './support/fake-video.js';

const WEEK_MS = 604_800_000;
const ORIGIN = Math.floor(Date.now() / WEEK_MS - 1) * WEEK_MS;
const LIVE = { originMs: ORIGIN, latencyMs: 3000, autoLatency: false, atLive: true };

async function until(cond, timeoutMs = 4000, what = 'condition') {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A fake server whose room is at the live point (3 s behind its clock) when `live`, else a media room. */
function liveServer(live = true) {
  const server = new FakeServer();
  if (live) {
    server.live = { ...LIVE };
    server.timeline = { epoch: 3, positionMs: 0, anchorUs: 0, rateMilli: 1000, paused: false };
    // The fake stamps its Welcome's anchor at the Hello: put the position there too.
    const handle = server.handle.bind(server);
    server.handle = (conn, bytes, via) => {
      server.timeline.positionMs = Math.round(server.nowUs() / 1000) - ORIGIN - LIVE.latencyMs;
      handle(conn, bytes, via);
    };
  }
  return server;
}

/** A session subscribed to 'live' before it joins (the LiveState follows the Welcome at once). */
async function join(server, extra = {}) {
  const s = new Session({
    url: 'http://127.0.0.1:8080',
    eventId: 'evt-live',
    deviceId: 'dev-1',
    transport: 'websocket',
    WebSocket: /** @type {any} */ (server.WebSocket),
    memory: new TransportMemory(null),
    backoff: { baseMs: 20, maxMs: 50 },
    ...extra,
  });
  const lives = [];
  const errors = [];
  s.on('live', (l) => lives.push(l));
  s.on('error', (e) => errors.push(e));
  await s.ready;
  return { s, lives, errors, conn: () => [...server.conns][0] };
}

/** Element time t (s) is program time BASE + t s: a stream whose element time 0 is a minute ago. */
function linearAdapter(base = Date.now() - 60_000, edge = () => Date.now() - 2000) {
  const known = { on: true };
  return {
    known,
    base,
    toProgramTime: (t) => (known.on ? base + t * 1000 : null),
    toMediaTime: (p) => (known.on ? (p - base) / 1000 : null),
    liveEdge: () => (known.on ? edge() : null),
  };
}

const commands = (server) => server.received.filter((r) => r.msg.type === 'command').map((r) => r.msg);
const ack = (requestId, outcome, epoch) => encodeServer({ type: 'ack', requestId, outcome, epoch });
const liveState = (fields) => encodeServer({ type: 'liveState', clock: 'live', ...LIVE, ...fields });

test("a live room: the LiveState after the Welcome gives s.live and one 'live' event; programTime() is origin + position", async () => {
  const server = liveServer();
  const { s, lives } = await join(server);
  try {
    assert.equal(server.received.find((r) => r.msg.type === 'hello').msg.caps & 8, 8, 'Hello announces LIVE');
    await until(() => s.live !== null, 2000, 'the live state');
    assert.deepEqual(s.live, { clock: 'live', ...LIVE });
    assert.deepEqual(lives, [s.live]);
    await until(() => Number.isFinite(s.stats.rttMs), 2000, 'a clock sample');
    const now = server.nowUs() / 1000;
    const pt = /** @type {number} */ (s.programTime());
    assert.ok(Math.abs(pt - (now - 3000)) < 50, `program time ${pt - now} ms from now, expected −3000`);
    assert.ok(Math.abs(ORIGIN + /** @type {number} */ (s.position) * 1000 - pt) < 50, 's.position is relative to the origin');
  } finally {
    s.close();
  }
});

test('a media room: s.live and programTime() are null, and no LiveState means no event', async () => {
  const server = liveServer(false);
  const { s, lives } = await join(server);
  try {
    // The fake's next message on the reliable channel (a viewer count) comes after any LiveState would have.
    [...server.conns][0].reliable(encodeServer({ type: 'viewerCount', count: 4 }));
    await until(() => s.viewers === 4, 2000, 'the viewer count');
    assert.equal(s.live, null);
    assert.equal(s.programTime(), null);
    assert.deepEqual(lives, []);
  } finally {
    s.close();
  }
});

test("a room switching its clock at runtime: 'live' fires with null, then with the new state; a repeat is no news", async () => {
  const server = liveServer();
  const { s, lives, conn } = await join(server);
  try {
    await until(() => lives.length === 1, 2000, 'the first live state');
    conn().reliable(encodeServer({ type: 'liveState', clock: 'media', originMs: 0, latencyMs: 0, autoLatency: false, atLive: false }));
    await until(() => lives.length === 2, 2000, 'the switch to media');
    assert.equal(lives[1], null);
    assert.equal(s.live, null);
    assert.equal(s.programTime(), null);
    conn().reliable(liveState({ atLive: false, latencyMs: 5000, autoLatency: true }));
    conn().reliable(liveState({ atLive: false, latencyMs: 5000, autoLatency: true }));
    conn().reliable(liveState({ atLive: true, latencyMs: 5000, autoLatency: true }));
    await until(() => lives.length >= 4, 2000, 'the switch back to live');
    conn().reliable(encodeServer({ type: 'viewerCount', count: 9 }));
    await until(() => s.viewers === 9, 2000, 'the message after them');
    assert.deepEqual(lives.slice(2), [
      { clock: 'live', originMs: ORIGIN, latencyMs: 5000, autoLatency: true, atLive: false },
      { clock: 'live', originMs: ORIGIN, latencyMs: 5000, autoLatency: true, atLive: true },
    ]);
    assert.deepEqual(s.live, lives[3]);
  } finally {
    s.close();
  }
});

test('reconnecting: the same live state is no news; a room no longer live is taken as media at its first reliable message', async () => {
  const server = liveServer();
  const { s, lives } = await join(server);
  let opens = 0;
  const liveAtOpen = [];
  s.on('status', (st) => {
    if (st !== 'open') return;
    opens++;
    liveAtOpen.push(s.live);
  });
  try {
    await until(() => lives.length === 1, 2000, 'the live state');
    // 1. Back into the same live room: the LiveState repeats what was known.
    server.killAll();
    await until(() => opens === 1, 2000, 'the reconnection');
    [...server.conns][0].reliable(encodeServer({ type: 'viewerCount', count: 3 }));
    await until(() => s.viewers === 3, 2000, 'a message after the LiveState');
    assert.equal(lives.length, 1, "no 'live' event for the same state");
    assert.equal(s.live?.atLive, true);
    // 2. The server came back with a media room: a Welcome, no LiveState, then (WebSocket) its pongs.
    server.live = null;
    server.killAll();
    await until(() => opens === 2, 2000, 'the second reconnection');
    assert.equal(liveAtOpen[1]?.atLive, true, 'the live state holds through the Welcome');
    await until(() => s.live === null, 2000, 'the media room taken as such');
    assert.deepEqual(lives.slice(1), [null]);
  } finally {
    s.close();
  }
});

test('over WebTransport (pongs and ticks are datagrams): no LiveState within a second of the Welcome means a media room', async () => {
  const server = liveServer();
  const { s, lives } = await join(server, {
    transport: 'webtransport',
    WebTransport: server.WebTransport,
    certificateHashes: [{ algorithm: 'sha-256', value: 'e5fbc5bf764e4147ac59d20c0834fd020b5307029857b04160c61cffe837b418' }],
  });
  let openedAt = 0;
  s.on('status', (st) => {
    if (st === 'open') openedAt = Date.now();
  });
  try {
    assert.equal(s.transport, 'webtransport');
    await until(() => lives.length === 1, 2000, 'the live state');
    server.live = null;
    server.killAll();
    await until(() => openedAt > 0, 3000, 'the reconnection');
    const pingsSinceHello = () => server.received.length - 1 - server.received.findLastIndex((r) => r.msg.type === 'hello');
    await until(() => pingsSinceHello() >= 3 && Number.isFinite(s.stats.rttMs), 2000, 'pongs on the new connection');
    assert.equal(s.live?.atLive, true, 'datagrams say nothing about the reliable channel');
    await until(() => s.live === null, 3000, 'the media room taken as such');
    assert.ok(Date.now() - openedAt >= 950, `decided ${Date.now() - openedAt} ms after the Welcome`);
    assert.deepEqual(lives.slice(1), [null]);
  } finally {
    s.close();
  }
});

test('live commands: goLive; seek, play and pause take element time through the adapter; seekProgramTime takes program time', async () => {
  const server = liveServer();
  const { s, errors, conn } = await join(server, { commandTimeoutMs: 2000 });
  const video = new FakeVideo();
  try {
    await until(() => s.live !== null, 2000, 'the live state');
    const adapter = linearAdapter();
    s.attach(/** @type {any} */ (video), { live: adapter });

    const go = s.goLive();
    await until(() => commands(server).length === 1, 1000, 'GoLive');
    assert.deepEqual(commands(server)[0].action, { kind: 'goLive' });
    conn().reliable(ack(commands(server)[0].requestId, 'unchanged', s.timeline.epoch));
    assert.equal((await go).outcome, 'unchanged');

    void s.seek(100);
    void s.play(50.5);
    void s.pause(20);
    void s.seekProgramTime(ORIGIN + 123_456);
    await until(() => commands(server).length === 5, 1000, 'four commands');
    const [, seek, play, pause, abs] = commands(server).map((c) => c.action);
    assert.deepEqual(seek, { kind: 'seek', positionMs: adapter.base + 100_000 - ORIGIN });
    assert.deepEqual(play, { kind: 'play', positionMs: adapter.base + 50_500 - ORIGIN });
    assert.deepEqual(pause, { kind: 'pause', positionMs: adapter.base + 20_000 - ORIGIN });
    assert.deepEqual(abs, { kind: 'seek', positionMs: 123_456 });

    // Positions the room cannot express are bad arguments: thrown, nothing sent.
    assert.throws(() => s.seekProgramTime(ORIGIN - 1), RangeError);
    assert.throws(() => s.seekProgramTime(NaN), RangeError);
    assert.throws(() => s.seek(Infinity), RangeError);
    assert.throws(() => s.seek(-1e9), RangeError, 'before the origin');
    // Not mapped yet: refused, as an 'error' of kind 'live' too.
    adapter.known.on = false;
    await assert.rejects(s.seek(5), (e) => e.kind === 'live' && /cannot be mapped/.test(e.message));
    assert.ok(errors.some((e) => e.kind === 'live'));
    assert.equal(commands(server).length, 5);

    // Without an adapter, seconds are the room's position (seconds since the origin), as s.position.
    s.attach(/** @type {any} */ (video));
    void s.seek(30);
    await until(() => commands(server).length === 6, 1000, 'the plain seek');
    assert.deepEqual(commands(server)[5].action, { kind: 'seek', positionMs: 30_000 });
  } finally {
    s.close();
    video.dispose();
  }
});

test('a media room: seekProgramTime is refused (4009) and seconds stay media time even with an adapter', async () => {
  const server = liveServer(false);
  const { s, errors } = await join(server, { commandTimeoutMs: 2000 });
  const video = new FakeVideo();
  try {
    s.attach(/** @type {any} */ (video), { live: linearAdapter() });
    await assert.rejects(s.seekProgramTime(Date.now()), (e) => e.code === 4009 && e.kind === 'invalid_argument');
    assert.ok(errors.some((e) => e.code === 4009));
    void s.seek(42);
    await until(() => commands(server).length === 1, 2000, 'the seek');
    assert.deepEqual(commands(server)[0].action, { kind: 'seek', positionMs: 42_000 });
  } finally {
    s.close();
    video.dispose();
  }
});

test('attach() refuses options that are not { live: adapter } with a TypeError naming what is missing', async () => {
  const server = liveServer(false);
  const { s } = await join(server);
  const video = new FakeVideo();
  try {
    assert.throws(() => s.attach(/** @type {any} */ (video), /** @type {any} */ (5)), TypeError);
    assert.throws(() => s.attach(/** @type {any} */ (video), /** @type {any} */ ({ live: {} })), /missing: toProgramTime, toMediaTime, liveEdge/);
    assert.throws(
      () => s.attach(/** @type {any} */ (video), /** @type {any} */ ({ live: { toProgramTime() {}, toMediaTime() {} } })),
      /missing: liveEdge/,
    );
    s.attach(/** @type {any} */ (video), {}); // no adapter: fine
    s.attach(/** @type {any} */ (video), { live: undefined });
  } finally {
    s.close();
    video.dispose();
  }
});

/** A FakeVideo with a buffered range from 0 to 8 s ahead of its position. */
class BufferedVideo extends FakeVideo {
  get buffered() {
    const end = this.currentTime + 8;
    return { length: 1, start: () => 0, end: () => end };
  }
}

test('reports in a live room: the position in room terms, and a LiveReport (live edge, buffer) with each one', async () => {
  const server = liveServer();
  const { s } = await join(server);
  const video = new BufferedVideo();
  try {
    await until(() => s.live !== null, 2000, 'the live state');
    const edge = Date.now() - 2500;
    const adapter = linearAdapter(Date.now() - 60_000, () => edge);
    adapter.known.on = false;
    s.attach(/** @type {any} */ (video), { live: adapter });
    const reports = () => server.received.filter((r) => r.msg.type === 'report').map((r) => r.msg);
    const liveReports = () => server.received.filter((r) => r.msg.type === 'liveReport').map((r) => r.msg);
    // The adapter does not know yet: position 0 (unknown), no LiveReport, the element is not driven.
    await until(() => reports().length >= 2, 2000, 'reports');
    assert.equal(liveReports().length, 0);
    assert.ok(reports().every((r) => r.positionUs === 0));
    assert.ok(!video.log.some((a) => a.type === 'seek'), 'not driven while the adapter does not know');
    // Now it knows: the element is driven to the room's program time, reports follow with LiveReports.
    adapter.known.on = true;
    const n = reports().length;
    await until(() => liveReports().length >= 2 && reports().length >= n + 2, 2000, 'live reports');
    for (const lr of liveReports()) assert.deepEqual(lr, { type: 'liveReport', liveEdgeMs: edge, bufferMs: 8000 });
    // The element plays at the room's program time; its reports say so in room terms.
    await until(() => Math.abs(adapter.toProgramTime(video.currentTime) - /** @type {number} */ (s.programTime())) < 30, 3000, 'the element on the room');
    const m = reports().length;
    await until(() => reports().length >= m + 1, 2000, 'a report after that');
    const r = reports().at(-1);
    const roomMs = /** @type {number} */ (s.programTime()) - ORIGIN;
    assert.ok(Math.abs(r.positionUs / 1000 - roomMs) < 300, `report ${r.positionUs / 1000} ms, room ${roomMs} ms`);
  } finally {
    s.close();
    video.dispose();
  }
});

test("a live room without an adapter: the element is not driven, one 'error' of kind 'live' says why", async () => {
  const server = liveServer();
  const { s, errors } = await join(server);
  const video = new FakeVideo();
  try {
    await until(() => s.live !== null, 2000, 'the live state');
    s.attach(/** @type {any} */ (video));
    const reports = () => server.received.filter((r) => r.msg.type === 'report').map((r) => r.msg);
    await until(() => reports().length >= 3, 2000, 'reports');
    assert.equal(errors.filter((e) => e.kind === 'live').length, 1);
    assert.match(errors.find((e) => e.kind === 'live').message, /attach\(video, \{ live: adapter \}\)/);
    assert.deepEqual(video.log, [], 'the element was left alone');
    assert.ok(reports().every((r) => r.positionUs === 0));
    assert.equal(server.received.filter((r) => r.msg.type === 'liveReport').length, 0);
  } finally {
    s.close();
    video.dispose();
  }
});
