// The session against in-process fake transports: transport choice, the
// WebTransport stream/datagram split, fallback, reconnect, and hostile input.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../src/index.js';
import { encodeServer } from '../src/codec.js';
import { TransportMemory } from '../src/connect.js';
import { FakeServer } from './support/fake-net.js';
import { FakeVideo } from './support/fake-video.js';

// `notAfter` in Unix seconds, as the server sends it.
const CERT = { hashes: [{ algorithm: 'sha-256', value: 'e5fbc5bf764e4147ac59d20c0834fd020b5307029857b04160c61cffe837b418' }], notAfter: Math.floor(Date.now() / 1000) + 86_400 };

/** A fetch that serves /api/certificate (or fails it). */
function fakeFetch(body = CERT, status = 200) {
  const calls = [];
  const f = async (/** @type {string} */ url) => {
    calls.push(url);
    return { ok: status === 200, status, json: async () => body };
  };
  return Object.assign(f, { calls });
}

async function until(cond, timeoutMs = 4000, what = 'condition') {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function opts(server, extra = {}) {
  return {
    url: 'http://127.0.0.1:8080',
    eventId: 'evt-1',
    deviceId: 'dev-1',
    WebSocket: /** @type {any} */ (server.WebSocket),
    WebTransport: server.WebTransport,
    memory: new TransportMemory(null),
    backoff: { baseMs: 20, maxMs: 50 },
    ...extra,
  };
}

test('auto: WebTransport with certificate hashes; Hello on the stream with DATAGRAMS and DATAGRAM_CHANGES; pings and reports as datagrams', async () => {
  const server = new FakeServer();
  const fetch = fakeFetch();
  const s = await connect(opts(server, { fetch }));
  try {
    assert.equal(s.transport, 'webtransport');
    assert.deepEqual(fetch.calls, ['http://127.0.0.1:8080/api/certificate']);
    const { url, opts: wtOpts } = server.wtOpened[0];
    assert.equal(url, 'https://127.0.0.1:4433/api/live-stream/evt-1');
    assert.equal(wtOpts.congestionControl, 'low-latency');
    assert.equal(wtOpts.requireUnreliable, true);
    assert.equal(wtOpts.serverCertificateHashes[0].algorithm, 'sha-256');
    assert.ok(wtOpts.serverCertificateHashes[0].value instanceof ArrayBuffer);
    assert.equal(new Uint8Array(wtOpts.serverCertificateHashes[0].value)[0], 0xe5);
    const hello = server.received.find((r) => r.msg.type === 'hello');
    assert.equal(hello.via, 'stream');
    assert.equal(hello.msg.caps, 1 | 4 | 8 | 16, 'DATAGRAMS, ACKS, LIVE and DATAGRAM_CHANGES');
    await until(() => server.received.filter((r) => r.msg.type === 'ping').length >= 3, 2000, 'pings');
    assert.ok(server.received.filter((r) => r.msg.type === 'ping').every((r) => r.via === 'datagram'));
    await until(() => Number.isFinite(s.stats.rttMs), 2000, 'a pong over datagrams');
    const video = new FakeVideo();
    s.attach(video);
    await until(() => server.received.some((r) => r.msg.type === 'report'), 2000, 'a report');
    assert.ok(server.received.filter((r) => r.msg.type === 'report').every((r) => r.via === 'datagram'));
    s.detach();
    video.dispose();
  } finally {
    s.close();
  }
});

test('the WebTransport URL can come from /api/certificate or the options', async () => {
  const server = new FakeServer();
  const s = await connect(opts(server, { fetch: fakeFetch({ ...CERT, webtransport: 'https://quic.example:7443' }), token: 'tok en' }));
  assert.equal(s.transport, 'webtransport');
  assert.equal(server.wtOpened[0].url, 'https://quic.example:7443/api/live-stream/evt-1?access_token=tok+en', 'the node\'s URL, not :4433');
  s.close();
  const s2 = await connect(opts(server, { certificateHashes: CERT.hashes, webtransportUrl: 'https://h:1/', fetch: () => assert.fail('no fetch') }));
  assert.equal(server.wtOpened[1].url, 'https://h:1/api/live-stream/evt-1');
  s2.close();
  // The session API's full URL is used as is.
  const s3 = await connect(opts(server, { certificateHashes: CERT.hashes, webtransportUrl: 'https://h:2/api/live-stream/evt-1' }));
  assert.equal(server.wtOpened[2].url, 'https://h:2/api/live-stream/evt-1');
  s3.close();
});

test('hashesApply: false (a CA certificate): WebTransport without serverCertificateHashes; true or absent: with them', async () => {
  const server = new FakeServer();
  const sessions = [];
  try {
    const s = await connect(opts(server, { fetch: fakeFetch({ ...CERT, hashesApply: false, webtransport: 'https://sync.example:8443' }) }));
    sessions.push(s);
    assert.equal(s.transport, 'webtransport');
    assert.equal(server.wtOpened[0].url, 'https://sync.example:8443/api/live-stream/evt-1');
    assert.equal('serverCertificateHashes' in server.wtOpened[0].opts, false, 'normal certificate validation');
    sessions.push(await connect(opts(server, { fetch: fakeFetch({ ...CERT, hashesApply: true }) })));
    assert.equal(server.wtOpened[1].opts.serverCertificateHashes.length, 1);
    // Explicit hashes are the caller's choice, whatever the server says.
    sessions.push(await connect(opts(server, { certificateHashes: CERT.hashes, fetch: fakeFetch({ ...CERT, hashesApply: false }) })));
    assert.equal(server.wtOpened[2].opts.serverCertificateHashes.length, 1);
  } finally {
    for (const s of sessions) s.close();
  }
});

test('no /api/certificate: WebSocket at once, without waiting out the head start', async () => {
  const server = new FakeServer();
  const t0 = performance.now();
  const s = await connect(opts(server, { fetch: fakeFetch({}, 404) }));
  assert.equal(s.transport, 'websocket');
  assert.ok(performance.now() - t0 < 150, `took ${performance.now() - t0} ms`);
  const hello = server.received.find((r) => r.msg.type === 'hello');
  assert.equal(hello.via, 'ws');
  assert.equal(hello.msg.caps, 4 | 8, 'ACKS and LIVE, no DATAGRAMS or DATAGRAM_CHANGES bit on WebSocket');
  s.close();
});

test('a slow WebTransport loses the race to WebSocket, which is remembered for next time', async () => {
  const server = new FakeServer();
  server.wtDelayMs = 1000;
  const memory = new TransportMemory(null);
  const s = await connect(opts(server, { fetch: fakeFetch(), memory }));
  assert.equal(s.transport, 'websocket');
  assert.equal(memory.get('http://127.0.0.1:8080'), 'websocket');
  s.close();
  // Next time WebSocket starts with no head start (both race from 0).
  server.wtDelayMs = 0;
  server.wsDelayMs = 0;
  const s2 = await connect(opts(server, { fetch: fakeFetch(), memory }));
  assert.ok(['websocket', 'webtransport'].includes(s2.transport));
  s2.close();
});

test("transport: 'websocket' never touches WebTransport; 'webtransport' never falls back", async () => {
  const server = new FakeServer();
  const s = await connect(opts(server, { transport: 'websocket', fetch: () => assert.fail('no fetch') }));
  assert.equal(s.transport, 'websocket');
  assert.equal(server.wtOpened.length, 0);
  s.close();
  server.wtFail = true;
  await assert.rejects(connect(opts(server, { transport: 'webtransport', fetch: fakeFetch(), openTimeoutMs: 300 })), (e) => e.kind === 'timeout');
});

test('a broken WebTransport session reconnects; repeated failures fall back to WebSocket', async () => {
  const server = new FakeServer();
  const memory = new TransportMemory(null);
  const fetch = fakeFetch();
  const s = await connect(opts(server, { fetch, memory }));
  const statuses = [];
  const transports = [];
  s.on('status', (x) => statuses.push(x));
  s.on('transport', (x) => transports.push(x));
  try {
    assert.equal(s.transport, 'webtransport');
    assert.equal(s.role, 'host');
    // 1. The session breaks, QUIC still works: back on WebTransport, same role.
    server.killAll();
    await until(() => statuses.at(-1) === 'open', 3000, 'reopen');
    assert.deepEqual(statuses, ['reconnecting', 'open']);
    assert.equal(s.transport, 'webtransport');
    assert.equal(fetch.calls.length, 2, 'after a WebTransport failure the certificate is fetched again (it may have rotated)');
    assert.equal(s.role, 'host');
    // 2. Now QUIC is gone: the next attempts fail, and WebSocket takes over.
    server.wtFail = true;
    server.killAll();
    await until(() => s.status === 'open' && s.transport === 'websocket', 4000, 'the WebSocket fallback');
    assert.deepEqual(transports, ['webtransport', 'websocket']);
    assert.equal(s.role, 'host', 'the same device id resumes the role');
    assert.equal(memory.get('http://127.0.0.1:8080'), 'websocket');
    // 3. Once fallen back, later reconnects do not try WebTransport (for webtransportRetryMs).
    const before = server.wtOpened.length;
    server.killAll();
    await until(() => s.status === 'open' && s.stats.reconnects === 3, 3000, 'the third reconnect');
    assert.equal(server.wtOpened.length, before);
    assert.equal(s.transport, 'websocket');
  } finally {
    s.close();
  }
  assert.equal(s.status, 'closed');
});

test('hostile server input emits errors, never throws; unknown tags are ignored; duplicates are dropped', async () => {
  const server = new FakeServer();
  const s = await connect(opts(server, { fetch: fakeFetch() }));
  const errors = [];
  const timelines = [];
  s.on('error', (e) => errors.push(e));
  s.on('timeline', (t) => timelines.push(t));
  try {
    const conn = [...server.conns][0];
    conn.reliable(new Uint8Array([0x01, 0xff])); // malformed tick
    conn.datagram(new Uint8Array([0x02])); // truncated change
    conn.reliable(new Uint8Array([0x3f, 1, 2])); // a newer server's message
    conn.reliable(new Uint8Array(0)); // empty
    await until(() => errors.length >= 3, 1000, 'errors');
    assert.ok(errors.every((e) => e.name === 'LockstepDecodeError' && e.code === 4000));
    assert.equal(errors.length, 3, 'the unknown tag is not an error');
    // A change on the stream and its datagram copy: one 'timeline' event.
    const now = server.nowUs();
    const change = encodeServer({
      type: 'timelineChanged',
      timeline: { epoch: 9, positionMs: 60_000, anchorUs: now, rateMilli: 1000, paused: false },
      effectiveAtUs: now,
      by: 1,
      reason: 'seek',
    });
    server.broadcast(change, { datagram: true });
    await until(() => timelines.length >= 1, 1000, 'the change');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(timelines.length, 1);
    assert.equal(timelines[0].positionMs, 60_000);
    assert.equal(s.status, 'open');
  } finally {
    s.close();
  }
});

/** The commands the fake server received, in order. */
const commands = (server) => server.received.filter((r) => r.msg.type === 'command').map((r) => r.msg);

/** A TimelineChanged of `epoch` by `by`, in effect now. */
function change(server, epoch, by, fields = {}, reason = 'seek') {
  const now = server.nowUs();
  return encodeServer({ type: 'timelineChanged', timeline: { epoch, positionMs: 0, anchorUs: now, rateMilli: 1000, paused: true, ...fields }, effectiveAtUs: now, by, reason });
}

const ack = (requestId, outcome, epoch) => encodeServer({ type: 'ack', requestId, outcome, epoch });

test('commands resolve on their own Ack, reject on their Error, and are refused when offline', async () => {
  const server = new FakeServer();
  const s = await connect(opts(server, { transport: 'websocket', commandTimeoutMs: 200 }));
  try {
    const conn = [...server.conns][0];
    const p = s.seek(12.3456);
    await until(() => commands(server).length === 1, 1000, 'the command');
    const cmd = commands(server)[0];
    assert.deepEqual(cmd.action, { kind: 'seek', positionMs: 12346 });
    assert.ok(cmd.requestId > 0);
    conn.reliable(change(server, 4, s.memberId, { positionMs: 12346 }));
    conn.reliable(ack(cmd.requestId, 'applied', 4));
    const r = await p;
    assert.equal(r.positionMs, 12346);
    assert.equal(r.epoch, 4);
    assert.equal(r.reason, 'seek');
    assert.equal(r.outcome, 'applied');
    assert.equal(r.requestId, cmd.requestId);

    const q = s.setRate(2);
    await until(() => commands(server).length === 2, 1000, 'the second command');
    const id = commands(server)[1].requestId;
    conn.reliable(encodeServer({ type: 'error', code: 4008, message: 'no', requestId: id }));
    await assert.rejects(q, (e) => e.code === 4008 && e.kind === 'forbidden' && e.requestId === id);

    // No answer at all: resolves null after commandTimeoutMs.
    assert.equal(await s.pause(), null);
    await assert.rejects(s.setRate(9), (e) => e.code === 4009 && e.kind === 'invalid_argument');
    assert.throws(() => s.seek(-1), RangeError);
  } finally {
    s.close();
  }
  await assert.rejects(s.play(), (e) => e.kind === 'not_connected');
});

test('a no-op play and a setRole resolve their own promises; the next seek gets its own timeline', async () => {
  const server = new FakeServer();
  const s = await connect(opts(server, { transport: 'websocket', commandTimeoutMs: 2000 }));
  try {
    const conn = [...server.conns][0];
    const welcomeEpoch = s.timeline.epoch;
    const play = s.play();
    const role = s.setRole(7, 'co-host');
    const seek = s.seek(30);
    await until(() => commands(server).length === 3, 1000, 'three commands');
    const [c1, c2, c3] = commands(server);
    assert.equal(new Set([c1.requestId, c2.requestId, c3.requestId]).size, 3, 'distinct request ids');
    // The seek's change first (a change by this member, as before Acks), then the answers out of order.
    conn.reliable(change(server, welcomeEpoch + 1, s.memberId, { positionMs: 30_000 }));
    conn.reliable(ack(c3.requestId, 'applied', welcomeEpoch + 1));
    conn.reliable(encodeServer({ type: 'roleChanged', memberId: 7, role: 'co-host' }));
    conn.reliable(ack(c2.requestId, 'applied', welcomeEpoch + 1));
    conn.reliable(ack(c1.requestId, 'unchanged', welcomeEpoch));
    const [rp, rr, rs] = await Promise.all([play, role, seek]);
    assert.equal(rs.epoch, welcomeEpoch + 1);
    assert.equal(rs.positionMs, 30_000);
    assert.equal(rs.outcome, 'applied');
    assert.equal(rs.requestId, c3.requestId);
    assert.equal(rp.outcome, 'unchanged');
    assert.equal(rp.epoch, welcomeEpoch, 'the timeline in effect when it was answered');
    assert.equal(rp.reason, 'welcome');
    assert.equal(rr.outcome, 'applied');
    assert.equal(rr.requestId, c2.requestId);
  } finally {
    s.close();
  }
});

test('a coalesced command resolves with the change that replaced it, even when its Ack comes first', async () => {
  const server = new FakeServer();
  const s = await connect(opts(server, { transport: 'websocket', commandTimeoutMs: 2000 }));
  const timelines = [];
  s.on('timeline', (t) => timelines.push(t));
  try {
    const conn = [...server.conns][0];
    const e = s.timeline.epoch;
    const first = s.seek(10);
    await until(() => commands(server).length === 1, 1000, 'the command');
    const id = commands(server)[0].requestId;
    // Another member's seek replaced it; the Ack names a change not seen yet.
    conn.reliable(ack(id, 'coalesced', e + 1));
    await new Promise((r) => setTimeout(r, 30));
    let settled = false;
    first.then(() => (settled = true));
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(settled, false, 'waits for the timeline it names');
    conn.reliable(change(server, e + 1, 99, { positionMs: 50_000 }));
    const r = await first;
    assert.equal(r.outcome, 'coalesced');
    assert.equal(r.epoch, e + 1);
    assert.equal(r.positionMs, 50_000);
    assert.equal(r.by, 99);
    assert.equal(timelines.at(-1).epoch, e + 1);
    // An Ack for an unknown request id (or one already answered) is ignored.
    conn.reliable(ack(id, 'applied', e + 1));
    conn.reliable(ack(12345, 'applied', e + 1));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(s.status, 'open');
  } finally {
    s.close();
  }
});

/** The Nacks the fake server received, with the channel they came on. */
const nacks = (server) => server.received.filter((r) => r.msg.type === 'nack');

/** A tick of `epoch`, paused at 0. */
const tick = (epoch) => encodeServer({ type: 'tick', epoch, positionMs: 0, anchorLoUs: 0, rateMilli: 1000, paused: true, viewers: 1 });

test('changes as datagrams only: a tick of an epoch never seen asks for the change with one Nack on the stream', async () => {
  const server = new FakeServer();
  const s = await connect(opts(server, { fetch: fakeFetch() }));
  const timelines = [];
  s.on('timeline', (t) => timelines.push(t));
  try {
    const conn = [...server.conns][0];
    const held = s.timeline.epoch;
    // The change of held + 1 went as a datagram and was lost; ticks show its epoch.
    conn.datagram(tick(held + 1));
    await until(() => nacks(server).length === 1, 1000, 'a Nack');
    assert.deepEqual(nacks(server)[0], { msg: { type: 'nack', epoch: held }, via: 'stream' });
    assert.equal(s.timeline.epoch, held + 1, 'the tick is adopted at once, as before');
    // More ticks of that epoch (or older ones) ask nothing more: no storm.
    conn.datagram(tick(held + 1));
    conn.reliable(tick(held + 1));
    conn.datagram(tick(held));
    // The repair: the change itself on the stream, adopted for what a tick lacks.
    conn.reliable(change(server, held + 1, 1, { positionMs: 0 }, 'pause'));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(nacks(server).length, 1);
    // A later gap asks again, with the newest epoch held.
    conn.datagram(tick(held + 3));
    await until(() => nacks(server).length === 2, 1000, 'a second Nack');
    assert.deepEqual(nacks(server)[1].msg, { type: 'nack', epoch: held + 1 });
    // A change that arrives as its datagram asks nothing.
    conn.datagram(change(server, held + 4, 1, { positionMs: 7000 }));
    conn.datagram(tick(held + 4));
    await until(() => s.timeline.epoch === held + 4, 1000, 'the change');
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(nacks(server).length, 2);
  } finally {
    s.close();
  }
});

test('changes as datagrams only: an Ack naming a change not held asks for it, and the command resolves with the repair', async () => {
  const server = new FakeServer();
  const s = await connect(opts(server, { fetch: fakeFetch(), commandTimeoutMs: 2000 }));
  try {
    assert.equal(s.transport, 'webtransport');
    const conn = [...server.conns][0];
    const e = s.timeline.epoch;
    const p = s.seek(30);
    await until(() => commands(server).length === 1, 1000, 'the command');
    const id = commands(server)[0].requestId;
    // Its change's datagram was lost; the Ack (on the stream) names it.
    conn.reliable(ack(id, 'applied', e + 1));
    await until(() => nacks(server).length === 1, 1000, 'a Nack');
    assert.deepEqual(nacks(server)[0].msg, { type: 'nack', epoch: e });
    conn.reliable(change(server, e + 1, s.memberId, { positionMs: 30_000 }));
    const r = await p;
    assert.equal(r.epoch, e + 1);
    assert.equal(r.positionMs, 30_000);
    assert.equal(r.reason, 'seek', 'the change itself, not a tick of its epoch');
  } finally {
    s.close();
  }
});

test('over WebSocket a tick of a newer epoch is adopted without a Nack (every change comes on the stream)', async () => {
  const server = new FakeServer();
  const s = await connect(opts(server, { transport: 'websocket' }));
  try {
    const conn = [...server.conns][0];
    const held = s.timeline.epoch;
    conn.reliable(tick(held + 1));
    await until(() => s.timeline.epoch === held + 1, 1000, 'the tick');
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(nacks(server).length, 0);
  } finally {
    s.close();
  }
});

test('a change datagram that overtakes the Welcome is applied after it', async () => {
  const server = new FakeServer();
  const now = server.nowUs();
  server.beforeWelcome = encodeServer({
    type: 'timelineChanged',
    timeline: { epoch: server.timeline.epoch + 1, positionMs: 90_000, anchorUs: now, rateMilli: 1000, paused: false },
    effectiveAtUs: now,
    by: 1,
    reason: 'play',
  });
  const s = await connect(opts(server, { fetch: fakeFetch() }));
  try {
    await until(() => s.timeline.epoch === server.timeline.epoch + 1, 1000, 'the early change');
    assert.equal(s.timeline.positionMs, 90_000);
    assert.equal(s.timeline.reason, 'play');
    assert.equal(nacks(server).length, 0);
  } finally {
    s.close();
  }
  // One that is not newer than the Welcome's timeline is dropped.
  const server2 = new FakeServer();
  server2.beforeWelcome = encodeServer({
    type: 'timelineChanged',
    timeline: { epoch: server2.timeline.epoch, positionMs: 1, anchorUs: now, rateMilli: 1000, paused: false },
    effectiveAtUs: now,
    by: 1,
    reason: 'play',
  });
  const s2 = await connect(opts(server2, { fetch: fakeFetch() }));
  try {
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(s2.timeline.reason, 'welcome');
    assert.equal(s2.timeline.positionMs, 5000);
  } finally {
    s2.close();
  }
});

test('a lost connection rejects the commands in flight; close resolves them null', async () => {
  const server = new FakeServer();
  const s = await connect(opts(server, { transport: 'websocket', commandTimeoutMs: 5000 }));
  try {
    const p = s.seek(1);
    await until(() => commands(server).length === 1, 1000, 'the command');
    server.killAll();
    await assert.rejects(p, (e) => e.kind === 'transport' && e.requestId === commands(server)[0].requestId);
    await until(() => s.status === 'open', 3000, 'reopen');
    const q = s.seek(2);
    await until(() => commands(server).length === 2, 1000, 'the second command');
    s.close();
    assert.equal(await q, null);
  } finally {
    s.close();
  }
});

test('the token travels as access_token on both transports', async () => {
  const server = new FakeServer();
  const urls = [];
  const WS = class extends server.WebSocket {
    constructor(url, p) {
      super(url, p);
      urls.push(url);
    }
  };
  const s = await connect(opts(server, { transport: 'websocket', token: 'a b&c', WebSocket: WS }));
  assert.equal(urls[0], 'ws://127.0.0.1:8080/api/live-stream/evt-1?access_token=a+b%26c');
  s.close();
  const s2 = await connect(opts(server, { fetch: fakeFetch(), token: 'a b&c' }));
  assert.equal(server.wtOpened.at(-1).url, 'https://127.0.0.1:4433/api/live-stream/evt-1?access_token=a+b%26c');
  s2.close();
});

test('the public surface of a session: no internals on the instance', async () => {
  const server = new FakeServer();
  const s = await connect(opts(server, { transport: 'websocket' }));
  try {
    assert.deepEqual(Object.keys(s), ['ready']);
    const proto = Object.getOwnPropertyNames(Object.getPrototypeOf(s)).sort();
    assert.deepEqual(proto, [
      'attach', 'chat', 'close', 'constructor', 'detach', 'deviceId', 'follow', 'following', 'goLive', 'hold', 'live', 'media', 'memberId', 'off', 'on',
      'pause', 'play', 'policy', 'position', 'programTime', 'queue', 'react', 'resume', 'role', 'seek', 'seekProgramTime', 'setMedia', 'setPolicy', 'setRate', 'setRole',
      'stats', 'status', 'suspend', 'suspension', 'timeline', 'transport', 'unfollow', 'viewers',
    ]);
    assert.equal(s.deviceId, 'dev-1');
    assert.equal(s.role, 'host');
    assert.equal(s.viewers, 1);
    assert.equal(s.policy, 'host-only');
    assert.equal(s.stats.status, 'open');
  } finally {
    s.close();
  }
});

test('a fatal close (unauthorized) ends the session instead of reconnecting', async () => {
  const server = new FakeServer();
  const s = await connect(opts(server, { transport: 'websocket' }));
  const errors = [];
  s.on('error', (e) => errors.push(e));
  const conn = [...server.conns][0];
  conn.reliable(encodeServer({ type: 'error', code: 4012, message: 'bad token', requestId: 0 }));
  await new Promise((r) => setTimeout(r, 20));
  conn.kill(4012);
  await until(() => s.status === 'closed', 1000, 'closed');
  assert.equal(errors.filter((e) => e.code === 4012).length, 1, 'reported once');
});

test('sync quality: reports come with the measured drift as a SyncReport; a server that answers 4001 gets no more of them', async () => {
  const server = new FakeServer();
  const s = await connect(opts(server, { fetch: fakeFetch({}, 404) }));
  const video = new FakeVideo();
  try {
    s.attach(video);
    // The fake room is paused at 5 s: once the element is there, its drift is measured.
    await until(() => server.received.some((r) => r.msg.type === 'syncReport'), 3000, 'a SyncReport');
    const sr = server.received.find((r) => r.msg.type === 'syncReport').msg;
    assert.equal(sr.epoch, 3, 'measured against the timeline in effect');
    assert.ok(Number.isInteger(sr.driftUs) && Math.abs(sr.driftUs) < 1_000_000, `driftUs ${sr.driftUs}`);
    // Each comes right after a Report.
    const kinds = server.received.map((r) => r.msg.type).filter((t) => t === 'report' || t === 'syncReport');
    assert.equal(kinds[kinds.indexOf('syncReport') - 1], 'report');
    // An older server: 4001 (request 0) for the SyncReport; the session stops sending them.
    const errors = [];
    s.on('error', (e) => errors.push(e));
    server.broadcast(encodeServer({ type: 'error', code: 4001, message: 'unknown message tag 6', requestId: 0 }));
    await until(() => errors.length === 1, 2000, 'the error');
    const before = server.received.filter((r) => r.msg.type === 'syncReport').length;
    const reports = server.received.filter((r) => r.msg.type === 'report').length;
    await until(() => server.received.filter((r) => r.msg.type === 'report').length >= reports + 3, 3000, 'three more reports');
    assert.equal(server.received.filter((r) => r.msg.type === 'syncReport').length, before, 'no SyncReport since');
    assert.equal(s.status, 'open', 'the connection stays');
  } finally {
    s.detach();
    video.dispose();
    s.close();
  }
});

test('suspend/resume/unfollow/follow: told to the server reliably, the element left alone meanwhile, announced again after a reconnection', async () => {
  const server = new FakeServer();
  const s = await connect(opts(server, { fetch: fakeFetch() }));
  const video = new FakeVideo();
  try {
    assert.equal(s.following, true);
    assert.throws(() => s.suspend('napping'), TypeError);
    assert.throws(() => s.suspend('custom:'), TypeError);
    assert.throws(() => s.suspend(/** @type {any} */ (42)), TypeError);
    s.attach(video);
    // Drift control takes the element to the room (paused at 5 s).
    await until(() => Math.abs(video.currentTime - 5) < 0.05, 3000, 'the element at the room');
    s.suspend('interstitial');
    assert.equal(s.suspension, 'interstitial');
    assert.equal(s.following, false);
    await until(() => server.received.some((r) => r.msg.type === 'suspend'), 2000, 'the Suspend');
    const sus = server.received.find((r) => r.msg.type === 'suspend');
    assert.deepEqual(sus.msg, { type: 'suspend', reason: 'interstitial' });
    assert.equal(sus.via, 'stream', 'reliable only');
    // The page plays its ad in the element: drift control leaves it alone.
    video.currentTime = 100;
    const seeks = video.log.filter((x) => x.type === 'seek').length;
    await new Promise((r) => setTimeout(r, 600)); // over two control intervals: nothing may happen
    assert.equal(video.log.filter((x) => x.type === 'seek').length, seeks, 'no seek while suspended');

    // A reconnection announces the suspension again.
    const before = server.received.filter((r) => r.msg.type === 'suspend').length;
    server.killAll();
    await until(() => server.received.filter((r) => r.msg.type === 'suspend').length > before, 4000, 'the Suspend again');

    s.resume();
    assert.equal(s.suspension, null);
    await until(() => server.received.some((r) => r.msg.type === 'resume'), 2000, 'the Resume');
    // Back to the room's position.
    await until(() => Math.abs(video.currentTime - 5) < 0.05, 3000, 'the element back at the room');
    s.resume(); // not suspended: nothing
    assert.equal(server.received.filter((r) => r.msg.type === 'resume').length, 1);

    s.unfollow();
    assert.equal(s.suspension, 'notFollowing');
    s.follow();
    await until(() => server.received.filter((r) => r.msg.type === 'resume').length === 2, 2000, 'the second Resume');
    assert.deepEqual(
      server.received.filter((r) => r.msg.type === 'suspend').map((r) => r.msg.reason).slice(-1),
      ['notFollowing'],
    );
  } finally {
    s.detach();
    video.dispose();
    s.close();
  }
});

test('reactions: react() sends one React reliably; with the reactions option Hello has REACTIONS and Reactions become events', async () => {
  const server = new FakeServer();
  const plain = await connect(opts(server, { fetch: fakeFetch() }));
  const s = await connect(opts(server, { fetch: fakeFetch(), deviceId: 'dev-2', reactions: true }));
  try {
    const hellos = server.received.filter((r) => r.msg.type === 'hello').map((r) => r.msg.caps);
    assert.equal(hellos[0] & 32, 0, 'no REACTIONS bit without the option');
    assert.equal(hellos[1] & 32, 32);
    assert.throws(() => s.react('ok'), TypeError, 'ASCII is text, not a reaction');
    assert.throws(() => s.react(''), TypeError);
    assert.throws(() => s.react('👏 '), TypeError);
    assert.throws(() => s.react('👏'.repeat(9)), TypeError, 'over 32 bytes');
    assert.equal(s.react('👏'), true);
    await until(() => server.received.some((r) => r.msg.type === 'react'), 2000, 'the React');
    const r = server.received.find((x) => x.msg.type === 'react');
    assert.deepEqual(r.msg, { type: 'react', emoji: '👏' });
    assert.equal(r.via, 'stream', 'reliable only');
    /** @type {any[]} */
    const got = [];
    s.on('reactions', (c) => got.push(c));
    server.broadcast(encodeServer({ type: 'reactions', counts: [{ emoji: '👏', count: 3 }] }));
    await until(() => got.length === 1, 2000, 'the reactions event');
    assert.deepEqual(got[0], [{ emoji: '👏', count: 3 }]);
  } finally {
    plain.close();
    s.close();
  }
});
