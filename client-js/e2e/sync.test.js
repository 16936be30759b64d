// Two Chromium pages on the demo watch page stay in lockstep: over
// WebTransport both, and with one page on WebSocket. The host drives the room
// with the page's own controls; the skew between the pages is sampled against
// one clock and its percentiles recorded in e2e/results/.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  eventId,
  openWatch,
  probe,
  record,
  sampleSkew,
  summarize,
  waitFor,
  waitSteady,
  useLockstep,
} from './support/harness.js';

const env = useLockstep();

const SKEW_BOUND_MS = 100;

test('two pages over WebTransport: the viewer follows seek, pause, play and rate 1.25, in lockstep', { timeout: 120_000 }, async (t) => {
  const ev = eventId('wt');
  const host = await openWatch(env.browser, `${env.server.url}/watch/${ev}`);
  const viewer = await openWatch(env.browser, `${env.server.url}/watch/${ev}`);
  for (const [page, role] of /** @type {const} */ ([[host, 'host'], [viewer, 'viewer']])) {
    const p = await probe(page);
    assert.equal(p.transport, 'webtransport');
    assert.equal(p.role, role);
    assert.equal(await page.textContent('#transport'), 'WebTransport');
    assert.equal(await page.textContent('#role'), role);
    await waitFor(page, () => document.getElementById('viewers')?.textContent === '2', null, { what: 'the viewer count 2' });
  }
  assert.equal(await host.isVisible('#play'), true, 'the host has the controls');
  assert.equal(await viewer.isVisible('#play'), false, 'a viewer has none');
  assert.equal(await viewer.isVisible('#invite'), true, 'dev users are premium: they may invite');

  // Play.
  await host.click('#play');
  await waitFor(viewer, () => !lockstepDemo.video.paused && lockstepDemo.video.currentTime > 0.5, null, { what: 'the viewer to play' });

  // Seek forward 10 s.
  const before = /** @type {number} */ ((await probe(host)).roomPos);
  await host.click('#fwd10');
  await waitFor(
    viewer,
    (b) => lockstepDemo.session.position > b + 9 && Math.abs(lockstepDemo.video.currentTime - lockstepDemo.session.position) < 0.1,
    before,
    { what: 'the viewer to follow the seek' },
  );

  // Pause: both stop on the same frame.
  await host.click('#pause');
  await waitFor(viewer, () => lockstepDemo.video.paused && lockstepDemo.session.timeline.paused, null, { what: 'the viewer to pause' });
  await waitFor(host, () => lockstepDemo.video.paused, null, { what: 'the host to pause' });
  await waitFor(viewer, () => Math.abs(lockstepDemo.session.stats.driftMs) <= 40, null, { what: 'the paused viewer on the room position' });
  const [hp, vp] = await Promise.all([probe(host), probe(viewer)]);
  assert.ok(Math.abs(hp.pos - vp.pos) <= 0.08, `paused ${hp.pos} vs ${vp.pos}`);
  assert.ok(hp.pos > 10, 'after the seek');

  // Play again.
  await host.click('#play');
  await waitFor(viewer, () => !lockstepDemo.video.paused && !lockstepDemo.session.timeline.paused, null, { what: 'the viewer to play again' });

  // Rate 1.25.
  await host.selectOption('#rate', '1.25');
  await waitFor(
    viewer,
    () => lockstepDemo.session.timeline.rate === 1.25 && Math.abs(lockstepDemo.video.playbackRate - 1.25) <= 0.07,
    null,
    { what: 'the viewer at rate 1.25' },
  );

  await waitSteady([host, viewer]);
  const skews = await sampleSkew(host, viewer, { n: 250 });
  const s = summarize(skews);
  const [h, v] = await Promise.all([probe(host), probe(viewer)]);
  record(t, 'skew-webtransport', {
    transport: 'webtransport/webtransport',
    rate: 1.25,
    chromium: env.browser.version(),
    ...s,
    corrections: { host: { seeks: h.seeks, rateChanges: h.rateChanges }, viewer: { seeks: v.seeks, rateChanges: v.rateChanges } },
    skews,
  });
  assert.equal(h.transport, 'webtransport');
  assert.equal(v.transport, 'webtransport');
  assert.ok(s.p95Ms < SKEW_BOUND_MS, `p95 skew ${s.p95Ms} ms`);
  assert.deepEqual([...host.pageErrors, ...viewer.pageErrors], []);
});

test('a page without WebTransport uses WebSocket and stays in lockstep with a WebTransport page', { timeout: 120_000 }, async (t) => {
  const ev = eventId('ws');
  const host = await openWatch(env.browser, `${env.server.url}/watch/${ev}`);
  const viewer = await openWatch(env.browser, `${env.server.url}/watch/${ev}`, { noWebTransport: true });
  assert.equal((await probe(host)).transport, 'webtransport');
  assert.equal((await probe(viewer)).transport, 'websocket');
  assert.equal(await viewer.evaluate(() => 'WebTransport' in window), false);
  assert.equal(await viewer.textContent('#transport'), 'WebSocket');

  await host.click('#play');
  await waitFor(viewer, () => !lockstepDemo.video.paused && lockstepDemo.video.currentTime > 0.5, null, { what: 'the viewer to play' });
  await host.click('#fwd10');
  await waitFor(viewer, () => lockstepDemo.video.currentTime > 10, null, { what: 'the viewer to follow the seek' });

  await waitSteady([host, viewer]);
  const skews = await sampleSkew(host, viewer, { n: 250 });
  const s = summarize(skews);
  const [h, v] = await Promise.all([probe(host), probe(viewer)]);
  record(t, 'skew-websocket', {
    transport: 'webtransport/websocket',
    rate: 1,
    chromium: env.browser.version(),
    ...s,
    corrections: { host: { seeks: h.seeks, rateChanges: h.rateChanges }, viewer: { seeks: v.seeks, rateChanges: v.rateChanges } },
    skews,
  });
  assert.equal(v.transport, 'websocket');
  assert.ok(s.p95Ms < SKEW_BOUND_MS, `p95 skew ${s.p95Ms} ms`);
  assert.deepEqual([...host.pageErrors, ...viewer.pageErrors], []);
});
