// connect() with no WebTransport option reaches a node whose QUIC port is not
// the default: the port comes from GET /api/certificate (`webtransport`, the
// URL the server actually bound), and WebTransport is the transport used.
// The same session's commands are answered by request id over WebTransport.
// The generated certificate is accepted by hash: /api/certificate says
// `hashesApply: true` and the client passes serverCertificateHashes
// (certificate.test.js covers a CA's certificate, without hashes).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventId, serveClientFromDisk, useLockstep } from './support/harness.js';

const env = useLockstep(); // QUIC on 127.0.0.1:0: a random port

test("connect() finds the node's WebTransport URL in /api/certificate and uses WebTransport", { timeout: 60_000 }, async () => {
  assert.notEqual(env.server.quicPort, 4433, 'the test needs a non-default QUIC port');
  const context = await env.browser.newContext();
  try {
    await serveClientFromDisk(context);
    const page = await context.newPage();
    /** @type {string[]} */
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    // A page of the server's origin (http://127.0.0.1 is a secure context). Not a routed (fulfilled)
    // document: Chromium then fails the page's WebSockets, which would hide a WebTransport failure.
    const page0 = `${env.server.url}/api/certificate`;
    // Record the URLs WebTransport sessions are opened with.
    await page.addInitScript(() => {
      const W = /** @type {any} */ (window).WebTransport;
      /** @type {string[]} */
      const urls = [];
      /** @type {boolean[]} */
      const pinned = [];
      /** @type {any} */ (window).wtUrls = urls;
      /** @type {any} */ (window).wtPinned = pinned;
      /** @type {any} */ (window).WebTransport = class extends W {
        constructor(/** @type {string} */ url, /** @type {any} */ o) {
          super(url, o);
          urls.push(url);
          pinned.push(Boolean(o && o.serverCertificateHashes && o.serverCertificateHashes.length));
        }
      };
    });
    await page.goto(page0);
    const r = await page.evaluate(async (ev) => {
      const { connect } = await import('/client/lockstep.js');
      const certificate = await (await fetch('/api/certificate', { cache: 'no-store' })).json();
      const s = await connect({ url: location.origin, eventId: ev, webtransportHeadStartMs: 5000 });
      try {
        const seek = await s.seek(12);
        const again = await s.pause();
        return {
          certificate,
          transport: s.transport,
          statsTransport: s.stats.transport,
          wtUrls: /** @type {any} */ (window).wtUrls,
          wtPinned: /** @type {any} */ (window).wtPinned,
          seek: seek && { outcome: seek.outcome, positionMs: seek.positionMs, epoch: seek.epoch, reason: seek.reason },
          again: again && { outcome: again.outcome, epoch: again.epoch },
          epoch: s.timeline?.epoch,
        };
      } finally {
        s.close();
      }
    }, eventId('wt-url'));
    assert.equal(typeof r.certificate.webtransport, 'string', `no webtransport in /api/certificate: ${JSON.stringify(r.certificate)}`);
    assert.equal(new URL(r.certificate.webtransport).port, String(env.server.quicPort));
    assert.ok(r.wtUrls.length >= 1, 'WebTransport was tried');
    const wt = new URL(r.wtUrls[0]);
    assert.equal(wt.port, String(env.server.quicPort), `opened ${r.wtUrls[0]}`);
    assert.match(wt.pathname, /\/api\/live-stream\/e2e-wt-url-/);
    assert.equal(r.transport, 'webtransport');
    assert.equal(r.statsTransport, 'webtransport');
    // The generated certificate (ECDSA P-256, 13 days): accepted by hash, and the hashes were passed.
    assert.equal(r.certificate.hashesApply, true);
    assert.ok(r.wtPinned.length >= 1 && r.wtPinned.every(Boolean), `serverCertificateHashes passed: ${JSON.stringify(r.wtPinned)}`);
    // Commands over WebTransport: answered by their Acks.
    assert.deepEqual(r.seek, { outcome: 'applied', positionMs: 12_000, epoch: r.seek.epoch, reason: 'seek' });
    assert.equal(r.again.outcome, 'unchanged', 'the room was paused already');
    assert.equal(r.again.epoch, r.seek.epoch);
    assert.deepEqual(pageErrors, []);
  } finally {
    await context.close();
  }
});
