// getToken against the real server (real WebSockets, real HS256 tokens the
// server checks): called before each connection attempt, and on an expired
// token (4013) the client fetches a fresh one and joins instead of stopping.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { Session } from '../src/index.js';
import { startServer } from './support/server.js';

const SECRET = 'lockstep-js-token-test-secret-0123456789';

/** @type {Awaited<ReturnType<typeof startServer>>} */
let server;
/** @type {any[]} */
const sessions = [];

before(async () => {
  // Not --dev-only anonymous: a token is checked whenever one is given.
  server = await startServer(['--jwt-secret', SECRET]);
});

after(async () => {
  for (const s of sessions) s.close();
  await server?.stop();
});

/** @param {string | object} v */
const b64 = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/**
 * An HS256 token for `sub` expiring `ttlSec` from now (negative: already
 * expired, beyond the server's 5 s leeway).
 * @param {string} sub @param {number} ttlSec
 */
function token(sub, ttlSec) {
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, plan: 'premium', exp: Math.floor(Date.now() / 1000) + ttlSec })}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

/**
 * A WebSocket class that keeps its sockets, so a test can break them as the
 * network would.
 */
function trackedWebSocket() {
  /** @type {WebSocket[]} */
  const sockets = [];
  const Base = globalThis.WebSocket;
  class Tracked extends Base {
    /** @param {ConstructorParameters<typeof WebSocket>} args */
    constructor(...args) {
      super(...args);
      sockets.push(this);
    }
  }
  return { WebSocket: /** @type {typeof WebSocket} */ (/** @type {unknown} */ (Tracked)), sockets };
}

/**
 * A session (not yet joined: `s.ready` tells).
 * @param {Omit<import('../src/types.js').ConnectOptions, 'url'>} o
 */
function open(o) {
  const s = new Session({ url: server.url, transport: 'websocket', backoff: { baseMs: 20, maxMs: 100 }, ...o });
  sessions.push(s);
  return s;
}

/** Waits until `cond()` holds, polling. */
async function until(cond, timeoutMs = 5000, what = 'condition') {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('an expired token (4013): getToken gives a fresh one and the session joins', async () => {
  const given = [token('ana', -60), token('ana', 600)];
  const calls = [];
  const s = open({
    eventId: `tok-${process.pid}-a`,
    deviceId: 'ana-phone',
    getToken: async () => {
      calls.push(Date.now());
      return given.shift() ?? token('ana', 600);
    },
  });
  const errors = [];
  s.on('error', (e) => errors.push(e));
  await s.ready;
  assert.equal(calls.length, 2, 'one call before the first attempt, one after the 4013');
  assert.equal(s.status, 'open');
  assert.deepEqual(errors.map((e) => e.code), [], 'a renewed expiry is no error for the app');

  s.close();
});

test('the token option serves the first attempt; getToken every reconnect and the 4013 after it', async () => {
  const { WebSocket, sockets } = trackedWebSocket();
  let calls = 0;
  // The platform's cache hands out its expired token once before renewing it.
  const s = open({
    eventId: `tok-${process.pid}-b`,
    deviceId: 'ben-tv',
    token: token('ben', 600),
    getToken: () => (++calls === 1 ? token('ben', -60) : token('ben', 600)),
    WebSocket,
  });
  await s.ready;
  assert.equal(calls, 0, 'the token option was used for the first connection');
  const reconnected = new Promise((resolve) => {
    const off = s.on('status', (st) => {
      if (st === 'open') {
        off();
        resolve(undefined);
      }
    });
  });
  sockets.at(-1)?.close(4999, 'network gone');
  await reconnected;
  assert.equal(calls, 2, 'getToken before the reconnect (an expired token: 4013), and again after the 4013');
  assert.equal(s.status, 'open');
  assert.equal(s.stats.reconnects, 1);
  assert.equal(sockets.length, 3, 'the first connection, the refused one, the renewed one');
  const exp = (/** @type {WebSocket} */ ws) => {
    const t = new URL(ws.url).searchParams.get('access_token') ?? '';
    return JSON.parse(Buffer.from(t.split('.')[1], 'base64url').toString()).exp * 1000;
  };
  assert.ok(exp(sockets[1]) < Date.now(), 'the reconnect used the token getToken gave (expired)');
  assert.ok(exp(sockets[2]) > Date.now(), 'and after the 4013, the fresh one');
  s.close();
});

test('getToken that throws or gives no token ends the session with a clear error', async () => {
  for (const [getToken, message] of [
    [async () => Promise.reject(new Error('IdP down')), /getToken\(\) failed: IdP down/],
    [async () => '', /getToken\(\) gave no token/],
  ]) {
    const s = open({ eventId: `tok-${process.pid}-c`, getToken: /** @type {any} */ (getToken) });
    const errors = [];
    s.on('error', (e) => errors.push(e));
    await assert.rejects(s.ready, (e) => e.kind === 'token' && message.test(e.message));
    await until(() => s.status === 'closed', 2000, 'closed');
    assert.equal(errors.length, 1);
    assert.equal(errors[0].kind, 'token');
  }
});

test('without getToken, or when getToken keeps giving expired tokens, 4013 ends the session', async () => {
  const plain = open({ eventId: `tok-${process.pid}-d`, token: token('cy', -60) });
  await assert.rejects(plain.ready, (e) => e.code === 4013);

  let calls = 0;
  const stale = open({
    eventId: `tok-${process.pid}-d`,
    getToken: () => {
      calls++;
      return token('cy', -60);
    },
  });
  await assert.rejects(stale.ready, (e) => e.code === 4013);
  assert.equal(calls, 4, 'the first attempt and three renewals, then it gives up');
  await until(() => stale.status === 'closed', 2000, 'closed');
});
