// Live rooms against the real server (`serve --room-clock live`) over real
// WebSockets: the live state, program time, a seek back and GoLive, an
// element following program time through an adapter, and live reports
// moving an automatic latency.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Session } from '../src/index.js';
import { startServer } from './support/server.js';
import { FakeVideo } from './support/fake-video.js';

const WEEK_MS = 604_800_000;

/** @type {Awaited<ReturnType<typeof startServer>>} */
let fixed;
/** @type {Awaited<ReturnType<typeof startServer>>} */
let auto;
const sessions = [];

before(async () => {
  [fixed, auto] = await Promise.all([
    startServer(['--room-clock', 'live', '--live-latency-ms', '4000']),
    startServer(['--room-clock', 'live', '--live-latency-ms', 'auto', '--live-latency-min-ms', '1000', '--live-latency-max-ms', '20000']),
  ]);
});

after(async () => {
  for (const s of sessions) s.close();
  await Promise.all([fixed?.stop(), auto?.stop()]);
});

/** Joins over WebSocket, with 'live' events recorded from before the Welcome. */
async function join(server, eventId, deviceId) {
  const s = new Session({ url: server.url, eventId, deviceId, transport: 'websocket' });
  sessions.push(s);
  const lives = [];
  s.on('live', (l) => lives.push(l));
  await s.ready;
  await until(() => s.live !== null, 5000, 'the live state');
  // Program times are read through clock sync: wait for a measured sample, not the Welcome's coarse one.
  await until(() => Number.isFinite(s.stats.rttMs), 5000, 'a clock sample');
  return { s, lives };
}

async function until(cond, timeoutMs = 5000, what = 'condition') {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The distance of the room's program time from `Date.now() − behindMs`, ms. */
const offLive = (s, behindMs) => /** @type {number} */ (s.programTime()) - (Date.now() - behindMs);

test("a client in a live room: s.live and 'live' from the server, programTime() ≈ the server's clock − latency", async () => {
  const { s, lives } = await join(fixed, `live-${process.pid}-a`, 'a');
  assert.deepEqual(Object.keys(/** @type {object} */ (s.live)), ['clock', 'originMs', 'latencyMs', 'autoLatency', 'atLive']);
  const live = /** @type {import('../src/index.js').LiveState} */ (s.live);
  assert.equal(live.clock, 'live');
  assert.equal(live.latencyMs, 4000);
  assert.equal(live.autoLatency, false);
  assert.equal(live.atLive, true);
  assert.equal(live.originMs % WEEK_MS, 0, 'a whole week (the server takes the one before the room)');
  assert.ok(Date.now() - live.originMs >= WEEK_MS && Date.now() - live.originMs < 2 * WEEK_MS);
  assert.deepEqual(lives, [s.live]);
  // The server's clock is Unix time (SPEC 7), and so is this machine's.
  await until(() => Math.abs(offLive(s, 4000)) < 100, 3000, `program time within 100 ms of now − 4 s (${offLive(s, 4000)} ms off)`);
  const r = await fetch(`${fixed.url}/api/live-stream/live-${process.pid}-a/state`);
  const state = await r.json();
  assert.equal(state.live.originMs, live.originMs);
  assert.ok(Math.abs(state.live.programTimeMs - /** @type {number} */ (s.programTime())) < 200);
});

test('a seek back leaves the live point; goLive() returns there, and s.live says so when it resolves', async () => {
  const eventId = `live-${process.pid}-b`;
  const { s: host, lives } = await join(fixed, eventId, 'host');
  const { s: viewer } = await join(fixed, eventId, 'viewer');
  const back = Date.now() - 60_000;
  const r = await host.seekProgramTime(back);
  assert.equal(r?.outcome, 'applied');
  assert.equal(host.live?.atLive, false, 'the LiveState of the change came before its Ack');
  assert.equal(lives.at(-1)?.atLive, false);
  // Read against this process's clock: a moment of load between the two
  // readings is not the server's error, so wait for a calm reading.
  await until(() => Math.abs(offLive(host, 60_000)) < 200, 3000, `program time within 200 ms of now − 60 s (${offLive(host, 60_000)} ms off)`);
  await until(() => viewer.live?.atLive === false, 3000, "the viewer's live state");

  const go = await host.goLive();
  assert.equal(go?.outcome, 'applied');
  assert.equal(go?.reason, 'play', 'a GoLive is a play (SPEC 2.4)');
  assert.equal(host.live?.atLive, true);
  assert.equal(lives.at(-1)?.atLive, true);
  // Scheduled with the lead like play: once in effect, both are at the live point.
  await until(() => Math.abs(offLive(host, 4000)) < 100 && Math.abs(offLive(viewer, 4000)) < 100, 3000, 'both at live');
  assert.equal(viewer.live?.atLive, true);
  assert.equal((await host.goLive())?.outcome, 'unchanged');
});

test("an element attached with an adapter plays the room's program time", async () => {
  const { s } = await join(fixed, `live-${process.pid}-c`, 'c');
  const video = new FakeVideo();
  const base = Date.now() - 3_600_000; // element time 0 is program time an hour ago
  const adapter = { toProgramTime: (t) => base + t * 1000, toMediaTime: (p) => (p - base) / 1000, liveEdge: () => Date.now() - 2000 };
  try {
    s.attach(/** @type {any} */ (video), { live: adapter });
    await until(() => !video.paused && Math.abs(adapter.toProgramTime(video.currentTime) - /** @type {number} */ (s.programTime())) < 30, 5000, 'the element on the room');
    assert.ok(Math.abs(adapter.toProgramTime(video.currentTime) - (Date.now() - 4000)) < 150);
    assert.ok(Math.abs(s.stats.driftMs) < 30, `drift ${s.stats.driftMs} ms`);
  } finally {
    s.detach();
    video.dispose();
  }
});

test('LiveReports of a far live edge move an automatic latency: the room goes to the new live point', async () => {
  const { s, lives } = await join(auto, `live-${process.pid}-d`, 'd');
  assert.equal(s.live?.autoLatency, true);
  assert.equal(s.live?.latencyMs, 3000, 'an auto room starts at 3 s');
  const video = new FakeVideo();
  const base = Date.now() - 3_600_000;
  // This viewer's playlist ends 8 s behind real time: it needs 8 s + the server's 750 ms margin.
  const adapter = { toProgramTime: (t) => base + t * 1000, toMediaTime: (p) => (p - base) / 1000, liveEdge: () => Date.now() - 8000 };
  try {
    s.attach(/** @type {any} */ (video), { live: adapter });
    await until(() => s.live?.latencyMs !== 3000, 10_000, 'the latency to move');
    // The need is measured on arrival (a few ms after the edge was read), rounded up to 10 ms.
    const latency = /** @type {number} */ (s.live?.latencyMs);
    assert.ok(latency >= 8750 && latency <= 8770, `latency ${latency} ms`);
    assert.equal(s.live?.atLive, true, 'a move at live keeps the room at live');
    assert.deepEqual(
      lives.map((l) => l?.latencyMs),
      [3000, latency],
    );
    await until(() => Math.abs(offLive(s, latency)) < 100, 3000, 'the room at the new live point');
    await until(() => Math.abs(adapter.toProgramTime(video.currentTime) - (Date.now() - latency)) < 50, 5000, 'the element there too');
  } finally {
    s.detach();
    video.dispose();
  }
});

test("a host switches the room's clock at run time (PUT …/clock): 'live' fires with null, then with the new live state", async () => {
  const eventId = `live-${process.pid}-e`;
  const { s, lives } = await join(fixed, eventId, 'e');
  const video = new FakeVideo();
  const base = Date.now() - 3_600_000;
  const adapter = { toProgramTime: (t) => base + t * 1000, toMediaTime: (p) => (p - base) / 1000, liveEdge: () => Date.now() - 2000 };
  const minted = await (await fetch(`${fixed.url}/api/dev/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ hostOf: [eventId] }) })).json();
  const putClock = async (body) => {
    const r = await fetch(`${fixed.url}/api/live-stream/${eventId}/clock`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${minted.token}` },
      body: JSON.stringify(body),
    });
    assert.equal(r.status, 200, await r.text());
  };
  try {
    s.attach(/** @type {any} */ (video), { live: adapter });
    await until(() => Math.abs(adapter.toProgramTime(video.currentTime) - (Date.now() - 4000)) < 50, 5000, 'the element at live');
    // To media time: the server restarts the room paused at 0; the element follows media time (the adapter is not used).
    await putClock({ clock: 'media' });
    await until(() => lives.length === 2, 3000, "the 'live' event");
    assert.equal(lives[1], null);
    assert.equal(s.live, null);
    assert.equal(s.programTime(), null);
    await until(() => video.paused && video.currentTime === 0, 3000, 'the element paused at 0');
    // Back to live, with another latency: at the live point again.
    await putClock({ clock: 'live', latencyMs: 6000 });
    await until(() => lives.length === 3, 3000, "the second 'live' event");
    assert.deepEqual({ ...lives[2], originMs: 0 }, { clock: 'live', originMs: 0, latencyMs: 6000, autoLatency: false, atLive: true });
    assert.equal(/** @type {any} */ (lives[2]).originMs % WEEK_MS, 0);
    await until(() => Math.abs(offLive(s, 6000)) < 100, 3000, 'the room at the live point');
    await until(() => !video.paused && Math.abs(adapter.toProgramTime(video.currentTime) - (Date.now() - 6000)) < 50, 5000, 'the element there');
  } finally {
    s.detach();
    video.dispose();
  }
});
