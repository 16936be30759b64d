// A media stall: the page's video requests are answered (by the real server,
// through Playwright routing in Chromium, puppeteer's request interception in
// Firefox) only up to about 10 s of media; the requests
// beyond are held. The page must report buffering, the room must wait for it
// and give up after --buffering-wait-max-ms, nobody may fight with seeks, and
// once the media flows again the page catches up.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import {
  VIDEO_PATH,
  chatShown,
  eventId,
  openFirefoxWatch,
  openWatch,
  probe,
  record,
  roomState,
  sampleSkew,
  summarize,
  waitFor,
  waitReactions,
  waitSteady,
  waitUntil,
  useLockstep,
} from './support/harness.js';

const WAIT_MAX_MS = 1500;

const env = useLockstep(['--buffering-wait-max-ms', String(WAIT_MAX_MS)]);

/**
 * Routes the page's video requests: while `held`, ranges are cut at `cap`
 * bytes and requests starting at or past it wait; `release()` lets them (and
 * every later one) through.
 * @param {number} cap
 */
function mediaGate(cap) {
  let holding = true;
  /** @type {(() => Promise<unknown>)[]} the held requests' continuations */
  const held = [];
  /** @type {string[]} */
  const ranges = [];
  /**
   * What a video request with `range` gets: through as it is (null), held, or its range cut at `cap` (the real
   * server answers the shortened range, 206).
   * @param {string} range
   * @returns {null | 'hold' | string}
   */
  const decide = (range) => {
    ranges.push(range);
    if (!holding) return null;
    const m = /^bytes=(\d+)-(\d*)$/.exec(range);
    const first = m ? Number(m[1]) : 0;
    if (first >= cap) return 'hold';
    return `bytes=${first}-${Math.min(m && m[2] ? Number(m[2]) : Infinity, cap - 1)}`;
  };
  return {
    ranges,
    get held() {
      return held.length;
    },
    /** @param {import('playwright-core').Page} page */
    async install(page) {
      await page.route('**/demo/video.webm', async (route) => {
        const range = decide(route.request().headers().range ?? '');
        if (range === null) return route.fallback();
        if (range === 'hold') return void held.push(() => route.fallback());
        const response = await route.fetch({ headers: { ...route.request().headers(), range } });
        await route.fulfill({ response });
      });
    },
    /**
     * The same for a Firefox page (puppeteer's request interception, `openFirefoxWatch`'s `intercept`): true
     * when it took the request.
     * @param {import('puppeteer-core').HTTPRequest} req
     */
    intercept(req) {
      if (!new URL(req.url()).pathname.endsWith('/demo/video.webm')) return false;
      const range = decide(req.headers().range ?? '');
      if (range === null) return false;
      if (range === 'hold') held.push(() => req.continue());
      else void req.continue({ headers: { ...req.headers(), range } }).catch(() => {});
      return true;
    },
    async release() {
      holding = false;
      for (const go of held.splice(0)) await go().catch(() => {}); // the browser may have given up on it
    },
  };
}

for (const engine of /** @type {const} */ (['chromium', 'firefox'])) {
  const which = engine === 'firefox' ? ' (a Firefox page stalls, the host in Chromium)' : '';
  test(`a stalled page reports buffering; the room waits, gives up as configured, nobody fights; the page catches up${which}`, { timeout: 120_000 }, async (t) => {
    const ev = eventId(`stall-${engine}`);
    const size = statSync(VIDEO_PATH).size;
    const gate = mediaGate(Math.round((size * 10) / 120)); // ~10 s of a 120 s video at a nearly constant bitrate
    const host = await openWatch(env.browser, `${env.server.url}/watch/${ev}`);
    const url = `${env.server.url}/watch/${ev}`;
    /** @type {any} */
    const stalled =
      engine === 'firefox'
        ? await openFirefoxWatch(url, { intercept: (req) => gate.intercept(req), timeoutMs: 30_000 })
        : await openWatch(env.browser, url, { setup: (p) => gate.install(p) });
    try {

      await host.click('#play');
      // The page plays its ~10 s, then runs dry and reports it; the room waits.
      const waiting = await waitUntil(async () => {
        const st = await roomState(env.server.url, ev);
        return st?.bufferingWait ? st : null;
      }, { what: 'the room to wait for the stalled page', timeoutMs: 40_000 });
      assert.equal((waiting.pending?.timeline ?? waiting.timeline).paused, true, 'the room pauses while it waits');
      assert.equal((waiting.pending ?? {}).reason ?? 'buffering-wait', 'buffering-wait');
      const atWait = await probe(stalled);
      assert.equal(atWait.buffering, true, 'the page says it is buffering');
      assert.ok(atWait.pos > 5 && atWait.pos < 15, `stalled at ${atWait.pos}`);
      assert.ok(gate.held >= 1, 'a media request is held');
      // The state names who the room waits for and why; the host page shows it (text from the state API).
      assert.deepEqual(waiting.suspended.map((/** @type {any} */ m) => m.reason), ['buffering'], JSON.stringify(waiting.suspended));
      await waitFor(host, () => /\(buffering\)$/.test(document.getElementById('waiting')?.textContent ?? ''), null, {
        what: 'the host page to show whom the room waits for',
      });

      // The wait gives up after WAIT_MAX_MS: the room plays again without the page.
      await waitUntil(async () => {
        const st = await roomState(env.server.url, ev);
        return st && !st.bufferingWait && !st.timeline.paused;
      }, { what: 'the room to give up waiting', timeoutMs: WAIT_MAX_MS + 5000 });
      await waitFor(host, () => !lockstepDemo.video.paused, null, { what: 'the host to play again' });
      const events = await host.evaluate(() => lockstepDemo.events.filter((e) => e.reason === 'buffering-wait' || e.reason === 'resume'));
      const wait = events.find((e) => e.reason === 'buffering-wait');
      const resume = events.find((e) => e.reason === 'resume');
      assert.ok(wait && resume, `wait and resume seen by the host: ${JSON.stringify(events)}`);
      assert.equal(resume.by, 0, 'the server resumed the room');
      const waitedMs = (resume.effectiveAtUs - wait.effectiveAtUs) / 1000;
      assert.ok(waitedMs >= WAIT_MAX_MS - 50 && waitedMs <= WAIT_MAX_MS + 600, `the room waited ${waitedMs} ms`);
      // The page is still stalled: it was not a recovery that ended the wait.
      const stillStalled = await probe(stalled);
      assert.equal(stillStalled.buffering, true);

      // Two seconds of the room playing on without it: one wait only, no stutter.
      const hostPos = (await probe(host)).pos;
      await waitFor(host, (p) => lockstepDemo.video.currentTime > p + 2, hostPos, { what: 'the host to play 2 s more' });
      const waits = await host.evaluate(() => new Set(lockstepDemo.events.filter((e) => e.reason === 'buffering-wait').map((e) => e.epoch)).size);
      assert.equal(waits, 1, 'the room waited once (the page is in its cool-down)');
      assert.equal((await probe(stalled)).buffering, true);

      // The media flows again: the page catches up and stays.
      const releasedAt = Date.now();
      await gate.release();
      await waitSteady([host, stalled], { timeoutMs: 20_000 });
      const catchUpMs = Date.now() - releasedAt;
      const skews = await sampleSkew(host, stalled, { n: 100 });
      const s = summarize(skews);
      const [h, p] = await Promise.all([probe(host), probe(stalled)]);
      record(t, engine === 'firefox' ? 'stall-firefox' : 'stall', {
        waitedMs,
        catchUpMs,
        seeks: { host: h.seeks, stalled: p.seeks },
        rateChanges: { host: h.rateChanges, stalled: p.rateChanges },
        ranges: gate.ranges,
        afterCatchUp: s,
      });
      // No seek fights: the host never seeks, the stalled page once to catch up (and at most one more).
      assert.equal(h.seeks, 0, 'the host never corrected by seeking');
      assert.ok(p.seeks <= 2, `the stalled page seeked ${p.seeks} times`);
      assert.ok(s.p95Ms < 100, `p95 skew after catching up ${s.p95Ms} ms`);
      assert.deepEqual([...host.pageErrors, ...stalled.pageErrors], []);
    } finally {
      await closeFirefox([stalled]);
    }
  });
}

/**
 * A viewer page of the given engine (its own headless Firefox, or a page of the shared Chromium).
 * @param {'chromium' | 'firefox'} engine
 * @param {string} url
 * @returns {Promise<any>}
 */
const openViewer = (engine, url) => (engine === 'firefox' ? openFirefoxWatch(url, { timeoutMs: 30_000 }) : openWatch(env.browser, url));

/** Closes the Firefox pages (each its own browser; Chromium's close with the file's browser). @param {any[]} pages */
async function closeFirefox(pages) {
  for (const p of pages) if (p?.engine === 'firefox') await p.context().close().catch(() => {});
}

for (const engine of /** @type {const} */ (['chromium', 'firefox'])) {
  const viewers = engine === 'firefox' ? ' (Chromium host, Firefox viewers)' : '';

  test(`watch-party features on the demo page${viewers}: reactions reach every page in windows; chat; watching alone never makes the room wait`, { timeout: 90_000 }, async () => {
    const ev = eventId('party');
    const host = await openWatch(env.browser, `${env.server.url}/watch/${ev}`);
    const viewer = await openViewer(engine, `${env.server.url}/watch/${ev}`);
    /** @type {any} */
    let late = null;
    try {
      await host.click('button.react[data-emoji="👏"]');
      await host.click('button.react[data-emoji="👏"]');
      await viewer.click('button.react[data-emoji="🔥"]');
      for (const page of [host, viewer]) {
        await waitReactions(page, 3, 'the three reactions on every page');
        const windows = await page.evaluate(() => lockstepDemo.reactions.length);
        assert.ok(windows <= 3, `${windows} windows for 3 reactions`);
      }
      assert.match(await host.evaluate(() => document.getElementById('reactions')?.textContent ?? ''), /👏|🔥/);

      // Chat: typed on one page, shown on the other as text (markup stays text);
      // the host deletes a viewer's message with its button; a late page gets the history.
      const markup = '<img src=x onerror="window.pwned=1"> hi';
      await viewer.fill('#chat-text', markup);
      await viewer.click('#chat-send');
      await host.fill('#chat-text', 'welcome 👋');
      await host.press('#chat-text', 'Enter');
      for (const page of [host, viewer]) {
        await waitFor(page, () => lockstepDemo.chat.length === 2, null, { what: 'both chat messages on every page', timeoutMs: 10_000 });
      }
      assert.deepEqual(await chatShown(host), { texts: [markup, 'welcome 👋'], images: 0, pwned: null }, 'text is text');
      await host.click('#chat-log li:first-child button.delete');
      await waitFor(viewer, () => lockstepDemo.chat.length === 1 && document.querySelectorAll('#chat-log li').length === 1, null, {
        what: 'the deleted message gone from the viewer page',
        timeoutMs: 10_000,
      });
      late = await openViewer(engine, `${env.server.url}/watch/${ev}`);
      await waitFor(late, () => lockstepDemo.chat.length === 1, null, { what: 'the history on a late page', timeoutMs: 10_000 });
      const history = await late.evaluate(() => lockstepDemo.chat[0]);
      assert.deepEqual({ text: history.text, history: history.history }, { text: 'welcome 👋', history: true });

      await host.click('#play');
      await viewer.click('#follow');
      const alone = await waitUntil(async () => {
        const st = await roomState(env.server.url, ev);
        return st?.suspended?.length ? st : null;
      }, { what: 'the viewer listed as not following', timeoutMs: 10_000 });
      assert.equal(alone.suspended[0].reason, 'notFollowing');
      assert.equal(alone.bufferingWait, false, 'watching alone never makes the room wait');
      await viewer.click('#follow');
      await waitUntil(async () => {
        const st = await roomState(env.server.url, ev);
        return st && st.suspended.length === 0;
      }, { what: 'the viewer following again', timeoutMs: 10_000 });
      assert.deepEqual([...host.pageErrors, ...viewer.pageErrors, ...late.pageErrors], []);
    } finally {
      await closeFirefox([viewer, late]);
    }
  });

  test(`what plays next on the demo page${viewers}: the host switches the room to another item; every page loads it and starts it with the others`, { timeout: 90_000 }, async (t) => {
    const ev = eventId('media');
    const host = await openWatch(env.browser, `${env.server.url}/watch/${ev}`);
    const viewer = await openViewer(engine, `${env.server.url}/watch/${ev}`);
    try {
      await host.click('#play');
      await waitSteady([host, viewer]);
      await host.selectOption('#media-pick', 'demo-b');
      await host.click('#media-switch');
      for (const page of [host, viewer]) {
        await waitFor(page, () => document.getElementById('now-playing')?.textContent === 'Demo, part B', null, {
          what: 'the new item named on every page',
          timeoutMs: 10_000,
        });
        await waitFor(page, () => lockstepDemo.video.currentSrc.endsWith('item=b'), null, { what: 'the element loading the item', timeoutMs: 10_000 });
      }
      // The room holds at 0 while the pages load, then starts the item from 0.
      const [h, v] = await waitSteady([host, viewer]);
      assert.ok(h.roomPos < 20 && v.pos < 20, `started the new item from its beginning: ${JSON.stringify({ h: h.roomPos, v: v.pos })}`);
      const skews = await sampleSkew(host, viewer, { n: 100 });
      const s = summarize(skews);
      record(t, `media-switch${engine === 'firefox' ? '-firefox' : ''}`, { ...s, host: h, viewer: v });
      assert.ok(s.p95Ms < 100, `p95 skew after the switch ${s.p95Ms} ms`);
      // Back to part A, the playlist's previous item (the page put both in it).
      const before = await viewer.evaluate(() => lockstepDemo.media.length);
      await host.evaluate(() => lockstepDemo.session.queue.previous());
      await waitFor(viewer, (n) => lockstepDemo.media.length > n && lockstepDemo.media.at(-1).mediaId === 'demo-a', before, {
        what: 'the previous item on the viewer page',
        timeoutMs: 10_000,
      });
      assert.deepEqual([...host.pageErrors, ...viewer.pageErrors], []);
    } finally {
      await closeFirefox([viewer]);
    }
  });
}
