// Where the connection goes: the URLs of both transports and what it reads
// from GET /api/certificate (the session-level behaviour is in session.test.js).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseCertificate, webSocketUrl, webTransportUrl } from '../src/connection.js';

const base = new URL('http://127.0.0.1:8080/');

test('the WebSocket URL carries the token as access_token, as the server reads it', () => {
  assert.equal(webSocketUrl(base, 'evt-1', undefined), 'ws://127.0.0.1:8080/api/live-stream/evt-1');
  assert.equal(webSocketUrl(base, 'evt-1', 't&k n'), 'ws://127.0.0.1:8080/api/live-stream/evt-1?access_token=t%26k+n');
  assert.equal(webSocketUrl(new URL('https://h.example/app/'), 'a/b', 'x'), 'wss://h.example/app/api/live-stream/a%2Fb?access_token=x');
});

test('the WebTransport URL: option or the node\'s webtransport base, else the default port on the page host', () => {
  assert.equal(webTransportUrl(base, 'evt-1', undefined, undefined), 'https://127.0.0.1:4433/api/live-stream/evt-1');
  assert.equal(webTransportUrl(base, 'evt-1', undefined, undefined, 5555), 'https://127.0.0.1:5555/api/live-stream/evt-1');
  assert.equal(webTransportUrl(base, 'evt-1', 'tok', 'https://127.0.0.1:40123'), 'https://127.0.0.1:40123/api/live-stream/evt-1?access_token=tok');
  assert.equal(webTransportUrl(base, 'evt-1', null, 'https://q.example:7443/'), 'https://q.example:7443/api/live-stream/evt-1');
  // A full endpoint URL (the session API's) is used as is.
  assert.equal(webTransportUrl(base, 'evt-1', null, 'https://q:1/api/live-stream/evt-1'), 'https://q:1/api/live-stream/evt-1');
  // A node bound to every interface: its port, the page's host.
  assert.equal(webTransportUrl(new URL('http://192.0.2.7:8080/'), 'e', null, 'https://0.0.0.0:4500'), 'https://192.0.2.7:4500/api/live-stream/e');
  assert.equal(webTransportUrl(new URL('http://localhost:8080/'), 'e', null, 'https://[::]:4500'), 'https://localhost:4500/api/live-stream/e');
  // IPv6 page hosts keep their brackets.
  assert.equal(webTransportUrl(new URL('http://[::1]:8080/'), 'e', null, undefined), 'https://[::1]:4433/api/live-stream/e');
});

test('/api/certificate: hashes, notAfter in Unix seconds, and the webtransport base when it is an https URL', () => {
  const c = parseCertificate({ hashes: [{ algorithm: 'sha-256', value: 'ab' }, { nope: 1 }, null], notAfter: 2_000_000_000, webtransport: 'https://127.0.0.1:40123' });
  assert.deepEqual(c, { hashes: [{ algorithm: 'sha-256', value: 'ab' }], hashesApply: true, url: 'https://127.0.0.1:40123', notAfter: 2_000_000_000_000 });
  assert.equal(parseCertificate({ notAfter: 2_000_000_000_000 }).notAfter, 2_000_000_000_000, 'milliseconds are accepted');
  assert.equal(parseCertificate({ notAfter: '2033-05-18T03:33:20Z' }).notAfter, 2_000_000_000_000, 'ISO strings too');
  assert.equal(parseCertificate({ notAfter: 'soon' }).notAfter, undefined);
  assert.equal(parseCertificate({ webtransport: 'not a url' }).url, undefined);
  assert.equal(parseCertificate({ webtransport: 'http://h:1' }).url, undefined, 'WebTransport is https only');
  assert.equal(parseCertificate({ webtransport: 7 }).url, undefined);
  assert.deepEqual(parseCertificate(null), { hashes: [], hashesApply: true, url: undefined, notAfter: undefined });
});

test('/api/certificate: hashes apply unless the server says they do not (an older server says nothing)', () => {
  const h = [{ algorithm: 'sha-256', value: 'ab' }];
  assert.equal(parseCertificate({ hashes: h, hashesApply: false }).hashesApply, false);
  assert.deepEqual(parseCertificate({ hashes: h, hashesApply: false }).hashes, h, 'still read, for information');
  assert.equal(parseCertificate({ hashes: h, hashesApply: true }).hashesApply, true);
  assert.equal(parseCertificate({ hashes: h }).hashesApply, true);
  assert.equal(parseCertificate({ hashes: h, hashesApply: 'no' }).hashesApply, true, 'only false turns them off');
});
