// WebTransport with a certificate from a CA the browser trusts (issue 13):
// the server runs with `--cert/--key` = a 90-day ECDSA certificate from a
// throwaway CA; /api/certificate says its hashes do not apply
// (`hashesApply: false`), so connect() passes no serverCertificateHashes and
// Chromium validates the certificate against its trust store. The CA is
// trusted through an NSS database in a temporary HOME (support/pki.js).
//
// What Chromium needs, found here: a locally trusted root is honoured for
// HTTPS at once, but its QUIC proof verifier refuses certificates that chain
// to a root that is not publicly known ("certificate unknown") unless the
// origin is listed in --origin-to-force-quic-on; a publicly trusted CA needs
// neither. The same browser without the CA in its NSS database is refused
// (the control: the trust is what makes it work), and pinning the 90-day
// certificate by hash is refused even when the CA is trusted (what the client
// used to do).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { eventId, launchBrowser, serveClientFromDisk, startLockstep } from './support/harness.js';
import { browserHome, makeCa } from './support/pki.js';

/** @type {ReturnType<typeof makeCa>} */
let ca;
/** @type {Awaited<ReturnType<typeof startLockstep>>} */
let server;
/** @type {{trusted: ReturnType<typeof browserHome>, untrusted: ReturnType<typeof browserHome>}} */
let homes;

before(async () => {
  ca = makeCa({ days: 90 });
  server = await startLockstep(['--cert', ca.cert, '--key', ca.key]);
  homes = { trusted: browserHome(ca.caCert), untrusted: browserHome(null) };
});

after(async () => {
  await server?.stop();
  homes?.trusted.remove();
  homes?.untrusted.remove();
  ca?.remove();
});

/** Debian's Chromium with `home` as HOME (its NSS database), QUIC allowed to a non-public root for the server. */
function launch(/** @type {string} */ home) {
  return launchBrowser({ env: { ...process.env, HOME: home }, args: [`--origin-to-force-quic-on=127.0.0.1:${server.quicPort}`] });
}

/**
 * In a page of the server's origin: /api/certificate, direct WebTransport
 * probes without and with the hashes, then connect() with no WebTransport
 * option, a seek over the session, and the options every WebTransport was
 * constructed with.
 * @param {string} home
 */
async function session(home) {
  const browser = await launch(home);
  try {
    const context = await browser.newContext();
    await serveClientFromDisk(context);
    const page = await context.newPage();
    /** @type {string[]} */
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    await page.addInitScript(() => {
      const W = /** @type {any} */ (window).WebTransport;
      /** @type {{url: string, hashes: boolean}[]} */
      const opened = [];
      /** @type {any} */ (window).wtOpened = opened;
      /** @type {any} */ (window).WebTransport = class extends W {
        constructor(/** @type {string} */ url, /** @type {any} */ o) {
          super(url, o);
          opened.push({ url, hashes: Boolean(o && o.serverCertificateHashes) });
        }
      };
    });
    await page.goto(`${server.url}/api/certificate`);
    const r = await page.evaluate(async (ev) => {
      const certificate = await (await fetch('/api/certificate', { cache: 'no-store' })).json();
      const url = `${certificate.webtransport}/api/live-stream/${ev}-probe`;
      const probe = async (/** @type {any} */ o) => {
        try {
          const wt = new WebTransport(url, o);
          await wt.ready;
          wt.close();
          return 'ok';
        } catch (e) {
          return String(e);
        }
      };
      const hex = certificate.hashes[0].value;
      const value = new Uint8Array(hex.match(/../g).map((/** @type {string} */ h) => parseInt(h, 16)));
      const plain = await probe({});
      const pinned = await probe({ serverCertificateHashes: [{ algorithm: 'sha-256', value }] });
      /** @type {any} */ (window).wtOpened.length = 0;
      const { connect } = await import('/client/lockstep.js');
      const s = await connect({ url: location.origin, eventId: ev, webtransportHeadStartMs: 5000 });
      try {
        const seek = await s.seek(21);
        return {
          certificate,
          plain,
          pinned,
          transport: s.transport,
          statsTransport: s.stats.transport,
          seek: seek && { outcome: seek.outcome, positionMs: seek.positionMs },
          opened: /** @type {any} */ (window).wtOpened,
        };
      } finally {
        s.close();
      }
    }, eventId('ca-cert'));
    return { ...r, pageErrors };
  } finally {
    await browser.close();
  }
}

test('a 90-day certificate from a CA Chromium trusts: WebTransport with normal validation, no hashes', { timeout: 90_000 }, async () => {
  const r = await session(homes.trusted.home);
  assert.equal(r.certificate.hashesApply, false, `the server says its hashes do not apply: ${JSON.stringify(r.certificate)}`);
  const days = (r.certificate.notAfter - Date.now() / 1000) / 86_400;
  assert.ok(days > 89 && days <= 90, `valid 90 days (${days})`);
  assert.equal(r.plain, 'ok', 'WebTransport without hashes: the trusted CA validates the certificate');
  assert.match(r.pinned, /WebTransportError/, 'pinning a 90-day certificate by hash is refused');
  assert.equal(r.transport, 'webtransport', `not the WebSocket fallback: ${JSON.stringify(r)}`);
  assert.equal(r.statsTransport, 'webtransport');
  assert.deepEqual(r.seek, { outcome: 'applied', positionMs: 21_000 });
  assert.ok(r.opened.length >= 1, 'connect() opened WebTransport');
  for (const o of r.opened) {
    assert.equal(o.hashes, false, `no serverCertificateHashes: ${JSON.stringify(r.opened)}`);
    assert.equal(new URL(o.url).port, String(server.quicPort));
  }
  assert.deepEqual(r.pageErrors, []);
});

test('the control: the same browser without the CA in its NSS database cannot use WebTransport and falls back', { timeout: 90_000 }, async () => {
  const r = await session(homes.untrusted.home);
  assert.equal(r.certificate.hashesApply, false);
  assert.match(r.plain, /WebTransportError/, 'an unknown CA is refused');
  assert.equal(r.transport, 'websocket', 'connect() still works, over the WebSocket fallback');
  assert.deepEqual(r.seek, { outcome: 'applied', positionMs: 21_000 });
  assert.ok(r.opened.every((/** @type {{hashes: boolean}} */ o) => !o.hashes));
});
