// Scaled out, in the browser: two server nodes sharing one Redis
// (`--redis-url`; support/redis.js starts a throwaway redis-server), the
// host's page on node A and the viewers' pages on node B, so everything
// between them goes through Redis: a Chromium viewer over WebSocket, then a
// Firefox ESR viewer over WebTransport. On the demo page: reactions and chat
// (text stays text, the host's deletion, a late page's history), the room's
// start and the sync between the nodes on presented frames, a viewer who
// stops following listed by the host's node and back, and a media switch
// every page loads and starts together. Bounds asserted are generous; the
// skews go to e2e/results/scaleout-*.json.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  chatShown,
  eventId,
  launchBrowser,
  openFirefoxWatch,
  openWatch,
  probe,
  record,
  recordFrames,
  roomState,
  skewMs,
  startLockstep,
  summarize,
  waitFor,
  waitSteady,
  waitReactions,
  waitUntil,
} from './support/harness.js';
import { startRedis } from './support/redis.js';

const env = /** @type {{redis: Awaited<ReturnType<typeof startRedis>>, a: Awaited<ReturnType<typeof startLockstep>>, b: Awaited<ReturnType<typeof startLockstep>>, browser: import('playwright-core').Browser}} */ ({});

before(async () => {
  env.redis = await startRedis();
  env.a = await startLockstep(['--redis-url', env.redis.url]);
  env.b = await startLockstep(['--redis-url', env.redis.url]);
  env.browser = await launchBrowser();
});

after(async () => {
  await env.browser?.close();
  await env.a?.stop();
  await env.b?.stop();
  await env.redis?.stop();
});

/**
 * The skew of `viewer` against `host`, `n` samples 20 ms apart, on presented frames (`shown`) and playheads (`pos`).
 * @param {any} host @param {any} viewer @param {number} n
 */
async function sample(host, viewer, n) {
  /** @type {number[]} */
  const frames = [];
  /** @type {number[]} */
  const heads = [];
  while (heads.length < n) {
    const [h, v] = await Promise.all([probe(host), probe(viewer)]);
    assert.ok(!h.paused && !v.paused, `a page stopped playing while sampled: ${JSON.stringify({ h, v })}`);
    const f = skewMs(v, h, 'shown');
    if (f !== null) frames.push(f);
    heads.push(/** @type {number} */ (skewMs(v, h)));
    await new Promise((r) => setTimeout(r, 20));
  }
  return { frames: frames.length ? summarize(frames) : null, playhead: summarize(heads) };
}

for (const engine of /** @type {const} */ (['chromium', 'firefox'])) {
  const how = engine === 'firefox' ? 'a Firefox viewer over WebTransport' : 'a Chromium viewer over WebSocket';

  test(`scaled out through Redis: the host on node A, ${how} on node B: reactions, chat, sync, following and a media switch`, { timeout: 150_000 }, async (t) => {
    const ev = eventId(`scaleout-${engine}`);
    const host = await openWatch(env.browser, `${env.a.url}/watch/${ev}`);
    const onB = `${env.b.url}/watch/${ev}`;
    /** A page of the room on node B: Firefox over WebTransport, or Chromium over WebSocket. @returns {Promise<any>} */
    const openOnB = () =>
      engine === 'firefox' ? openFirefoxWatch(onB, { timeoutMs: 30_000 }) : openWatch(env.browser, onB, { noWebTransport: true });
    const viewer = await openOnB();
    /** @type {any} */
    let late = null;
    try {
      const [h0, v0] = await Promise.all([probe(host), probe(viewer)]);
      assert.deepEqual(
        { host: [h0.role, h0.transport], viewer: [v0.role, v0.transport] },
        { host: ['host', 'webtransport'], viewer: ['viewer', engine === 'firefox' ? 'webtransport' : 'websocket'] },
        'one room over both nodes: its first member hosts',
      );

      // Reactions, counted in windows on both nodes.
      await host.click('button.react[data-emoji="👏"]');
      await viewer.click('button.react[data-emoji="🔥"]');
      await viewer.click('button.react[data-emoji="🔥"]');
      for (const page of [host, viewer]) await waitReactions(page, 3, 'the three reactions on both nodes');

      // Chat: one order on both nodes, markup stays text, the host's deletion reaches node B, a late page on B
      // gets the history without the deleted message.
      const markup = '<img src=x onerror="window.pwned=1"> from B';
      await viewer.fill('#chat-text', markup);
      await viewer.click('#chat-send');
      await waitFor(host, () => lockstepDemo.chat.length === 1, null, { what: 'the viewer message on node A', timeoutMs: 10_000 });
      await host.fill('#chat-text', 'from A 👋');
      await host.press('#chat-text', 'Enter');
      for (const page of [host, viewer]) {
        await waitFor(page, () => lockstepDemo.chat.length === 2, null, { what: 'both messages on both nodes', timeoutMs: 10_000 });
      }
      const order = await Promise.all([host, viewer].map((p) => p.evaluate(() => lockstepDemo.chat.map((m) => [m.id, m.text]))));
      assert.deepEqual(order[0], order[1], 'one order on both nodes');
      assert.deepEqual(order[0].map((/** @type {any[]} */ m) => m[1]), [markup, 'from A 👋']);
      assert.deepEqual(await chatShown(host), { texts: [markup, 'from A 👋'], images: 0, pwned: null }, 'text is text');
      await host.click('#chat-log li:first-child button.delete');
      await waitFor(viewer, () => lockstepDemo.chat.length === 1 && document.querySelectorAll('#chat-log li').length === 1, null, {
        what: 'the deleted message gone on node B',
        timeoutMs: 10_000,
      });
      late = await openOnB();
      await waitFor(late, () => lockstepDemo.chat.length === 1, null, { what: 'the history on a late page', timeoutMs: 10_000 });
      const history = await late.evaluate(() => lockstepDemo.chat[0]);
      assert.deepEqual({ text: history.text, history: history.history }, { text: 'from A 👋', history: true });
      await (engine === 'firefox' ? late.context().close() : late.close());
      late = null;

      // The host plays on node A; the viewer on node B follows, in sync on presented frames.
      await recordFrames(host);
      await recordFrames(viewer);
      await host.click('#play');
      // Sampled once steady for 3 s, as the sync suite does (a start's frames lock wherever they fall first).
      await waitSteady([host, viewer], { forMs: 3000, timeoutMs: 30_000 });
      const synced = await sample(host, viewer, 150);
      // Either node's sync quality counts both pages (each node shares its members' drifts at its heartbeat).
      for (const n of [env.a, env.b]) {
        await waitUntil(async () => (await roomState(n.url, ev))?.sync?.reporting === 2, {
          what: `${n === env.a ? 'node A' : 'node B'}'s sync quality counting both pages`,
          timeoutMs: 10_000,
        });
      }

      // The viewer stops following: the host's node lists it (and does not wait); it follows again.
      await viewer.click('#follow');
      const alone = await waitUntil(async () => {
        const st = await roomState(env.a.url, ev);
        return st?.suspended?.length ? st : null;
      }, { what: "node A listing node B's viewer as not following", timeoutMs: 10_000 });
      assert.equal(alone.suspended[0].reason, 'notFollowing');
      assert.equal(alone.bufferingWait, false, 'watching alone never makes the room wait');
      // The host's page (node A) names who and why.
      await waitFor(host, () => /\(notFollowing\)$/.test(document.getElementById('waiting')?.textContent ?? ''), null, {
        what: "the host's page naming the viewer of node B as not following",
        timeoutMs: 10_000,
      });
      await viewer.click('#follow');
      await waitUntil(async () => {
        const st = await roomState(env.a.url, ev);
        return st && st.suspended.length === 0;
      }, { what: 'the viewer following again, on node A', timeoutMs: 10_000 });

      // What plays next: the host switches the room on node A; node B's page loads the item and starts it with
      // the host's.
      await waitSteady([host, viewer], { timeoutMs: 30_000 });
      await host.selectOption('#media-pick', 'demo-b');
      await host.click('#media-switch');
      for (const page of [host, viewer]) {
        await waitFor(page, () => document.getElementById('now-playing')?.textContent === 'Demo, part B', null, {
          what: 'the new item named on both nodes',
          timeoutMs: 10_000,
        });
        await waitFor(page, () => lockstepDemo.video.currentSrc.endsWith('item=b'), null, { what: 'the element loading the item', timeoutMs: 10_000 });
      }
      const [h, v] = await waitSteady([host, viewer], { timeoutMs: 30_000 });
      assert.ok(h.roomPos < 20 && v.pos < 20, `started the new item from its beginning: ${JSON.stringify({ h: h.roomPos, v: v.pos })}`);
      const switched = await sample(host, viewer, 100);

      record(t, `scaleout-${engine}`, { viewer: { engine, transport: v0.transport }, synced, switched });
      for (const [what, s] of /** @type {const} */ ([['in sync', synced], ['after the switch', switched]])) {
        const p95 = s.frames?.p95Ms ?? s.playhead.p95Ms;
        assert.ok(p95 < 100, `p95 skew ${what} between the nodes: ${p95} ms`);
      }
      assert.deepEqual([...host.pageErrors, ...viewer.pageErrors], []);
    } finally {
      if (engine === 'firefox') {
        for (const p of [viewer, late]) await p?.context().close().catch(() => {});
      }
    }
  });
}
