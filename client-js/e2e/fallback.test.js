// WebTransport cut mid-session: the page reaches the server's QUIC port
// through a UDP relay (`?wt=https://127.0.0.1:{relay}`), the relay is closed,
// and the page falls back to WebSocket without user action, keeps its role and
// room, and stays in lockstep with a page that kept WebTransport.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  eventId,
  openWatch,
  probe,
  record,
  sampleSkew,
  summarize,
  udpRelay,
  waitFor,
  waitSteady,
  useLockstep,
} from './support/harness.js';

const env = useLockstep();

test('WebTransport cut mid-session: the page falls back to WebSocket and keeps playing in lockstep', { timeout: 120_000 }, async (t) => {
  const relay = await udpRelay(env.server.quicPort);
  try {
    const ev = eventId('cut');
    const host = await openWatch(env.browser, `${env.server.url}/watch/${ev}`);
    // openWatch gives WebTransport a 5 s head start (wtHeadStart), so it wins
    // the first race through the relay even on a loaded CI machine.
    const cut = await openWatch(env.browser, `${env.server.url}/watch/${ev}?wt=https://127.0.0.1:${relay.port}`);
    const before = await probe(cut);
    assert.equal(before.transport, 'webtransport');
    assert.equal(before.role, 'viewer');
    assert.ok(relay.packets > 0, 'the page reached the server through the relay');

    await host.click('#play');
    await waitSteady([host, cut]);

    // Cut: the relay's port closes; the page's QUIC packets now meet a closed port.
    const cutAt = Date.now();
    relay.close();
    await waitFor(cut, () => lockstepDemo.session.transport === 'websocket' && lockstepDemo.session.status === 'open', null, {
      what: 'the page to fall back to WebSocket',
      timeoutMs: 45_000, // QUIC's idle timeout (30 s), should the closed port go unnoticed
    });
    const fallbackMs = Date.now() - cutAt;
    const after = await probe(cut);
    assert.equal(after.role, 'viewer', 'the role is kept');
    assert.equal(after.room, before.room, 'the same room');
    assert.ok(after.reconnects >= 1);
    assert.equal(await cut.textContent('#transport'), 'WebSocket');
    // Playback never stopped: the room kept playing, so did the page.
    assert.equal(after.roomPaused, false);
    assert.equal(after.paused, false);

    // The new connection carries the room's changes: the host seeks, the page follows.
    await host.click('#fwd10');
    await waitFor(cut, () => lockstepDemo.session.position > 10 && lockstepDemo.video.currentTime > 10, null, { what: 'the page to follow a seek over WebSocket' });

    await waitSteady([host, cut]);
    const skews = await sampleSkew(host, cut, { n: 200 });
    const s = summarize(skews);
    const [h, c] = await Promise.all([probe(host), probe(cut)]);
    record(t, 'skew-fallback', {
      transport: 'webtransport/websocket after a WebTransport cut',
      chromium: env.browser.version(),
      fallbackMs,
      ...s,
      corrections: { host: { seeks: h.seeks, rateChanges: h.rateChanges }, cut: { seeks: c.seeks, rateChanges: c.rateChanges } },
      skews,
    });
    assert.equal(c.transport, 'websocket');
    assert.equal(h.transport, 'webtransport', 'the other page kept WebTransport');
    assert.ok(s.p95Ms < 100, `p95 skew ${s.p95Ms} ms`);
    assert.deepEqual([...host.pageErrors, ...cut.pageErrors], []);
  } finally {
    relay.close();
  }
});
