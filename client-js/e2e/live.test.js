// Live rooms in Chromium, measured against plain hls.js in the same run:
// three pages on the server's dev live stream (HLS, 1 s VP9 segments with
// EXT-X-PROGRAM-DATE-TIME), one direct and two through the impairment proxy
// (50 ± 20 ms each way, 2 % loss: TCP for the page, its media and WebSocket;
// UDP for QUIC), over WebSocket and over WebTransport; then the same three
// pages with hls.js alone (its defaults, then with its catch-up on). What is
// compared is the program time on screen: each page's frames as presented
// (requestVideoFrameCallback: presentation time and media time), mapped to
// program time with the stream's date-times, carried to the sampling instant
// at the element's rate. The skew of a sample is the largest difference
// between the pages' distances behind the wall clock (one machine clock).
// The bounds asserted are generous; the figures go to BENCHMARKS.md.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, openFirefoxWatch, record, serveClientFromDisk, startLockstep, summarize, waitUntil } from './support/harness.js';
import { IMPAIRED, tcpProxy, udpProxy } from './support/impair.js';
import { after, before } from 'node:test';

/** @type {{server: Awaited<ReturnType<typeof startLockstep>>, browser: import('playwright-core').Browser}} */
const env = /** @type {any} */ ({});
before(async () => {
  // A live event: a stalled viewer catches up alone (the room does not wait).
  env.server = await startLockstep(['--buffering-policy', 'ignore']);
  env.browser = await launchBrowser();
});
after(async () => {
  await env.browser?.close();
  await env.server?.stop();
});

const eventId = (/** @type {string} */ name) => `e2e-live-${name}-${Date.now().toString(36)}`;

/** Makes `ev` a live room with an auto latency (as its host, with a dev token). @param {string} ev */
async function makeLive(ev) {
  const base = env.server.url;
  const mint = await fetch(`${base}/api/dev/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ sub: `host-${ev}`, hostOf: [ev] }),
  });
  assert.equal(mint.status, 200);
  const { token } = await mint.json();
  const r = await fetch(`${base}/api/live-stream/${ev}/clock`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ clock: 'live', latencyMs: 'auto', dvrWindowMs: 120_000 }),
  });
  assert.equal(r.status, 200, await r.text());
}

/** Waits for the dev live source (it answers 503 while ffmpeg makes its loop). */
async function waitForSource() {
  await waitUntil(async () => (await fetch(`${env.server.url}/dev/live-source/stream.m3u8`)).status === 200, {
    what: 'the dev live source',
    timeoutMs: 120_000,
  });
}

/**
 * Opens a `/live` page in its own context (`firefox`: in its own Firefox ESR)
 * and starts recording its frames.
 * @param {string} url
 * @param {{noWebTransport?: boolean, plain?: boolean, firefox?: boolean, setup?: (page: import('playwright-core').Page) => Promise<void>}} o
 */
async function openLive(url, o = {}) {
  const page = o.firefox ? await openFirefoxLive(url, o) : await openChromiumLive(url, o);
  await page.evaluate(recordShown);
  return page;
}

/** A Firefox `/live` page, joined. @param {string} url @param {{noWebTransport?: boolean}} o */
async function openFirefoxLive(url, o) {
  const ready = {
    done: () => {
      const l = /** @type {any} */ (window).lockstepLive;
      return Boolean(l?.fatal) || Boolean(l?.adapter && l.session?.status === 'open');
    },
    fatal: () => /** @type {any} */ (window).lockstepLive.fatal,
  };
  return /** @type {any} */ (await openFirefoxWatch(url, { noWebTransport: o.noWebTransport, ready, timeoutMs: 60_000 }));
}

/** A Chromium `/live` page, joined (`plain`: hls.js alone, no session). @param {string} url @param {{noWebTransport?: boolean, plain?: boolean, setup?: (page: import('playwright-core').Page) => Promise<void>}} o */
async function openChromiumLive(url, o) {
  const context = await env.browser.newContext();
  await serveClientFromDisk(context);
  const page = await context.newPage();
  /** @type {string[]} */
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  if (o.noWebTransport) {
    await page.addInitScript(() => {
      // @ts-ignore
      delete window.WebTransport;
    });
  }
  if (o.setup) await o.setup(page);
  await page.goto(url);
  await page.waitForFunction(
    (plain) => {
      const l = /** @type {any} */ (window).lockstepLive;
      return Boolean(l?.fatal) || (l?.adapter && (plain || l.session?.status === 'open'));
    },
    Boolean(o.plain),
    { timeout: 60_000, polling: 50 },
  );
  assert.equal(await page.evaluate(() => /** @type {any} */ (window).lockstepLive.fatal), null);
  return Object.assign(page, { pageErrors });
}

/** In the page: records the frames presented and defines `__shown()`, the program time on screen now. */
function recordShown() {
  const w = /** @type {any} */ (window);
  const v = w.lockstepLive.video;
  /** @type {[number, number][]} presentation time (Unix ms), media time (s) */
  const frames = [];
  const onFrame = (/** @type {number} */ _now, /** @type {any} */ meta) => {
    frames.push([performance.timeOrigin + meta.expectedDisplayTime, meta.mediaTime]);
    if (frames.length > 240) frames.splice(0, 120);
    v.requestVideoFrameCallback(onFrame);
  };
  v.requestVideoFrameCallback(onFrame);
  // The program time on screen now, carried from the last frame presented.
  w.__shown = () => {
    const t = performance.timeOrigin + performance.now();
    let f = null;
    for (let i = frames.length - 1; i >= 0; i--) {
      if (frames[i][0] <= t) {
        f = frames[i];
        break;
      }
    }
    const p = f ? w.lockstepLive.adapter.toProgramTime(f[1]) : null;
    const playing = !v.paused && v.readyState >= 3;
    return {
      t,
      // The playhead (currentTime), sub-frame: where the element is.
      head: w.lockstepLive.adapter.toProgramTime(v.currentTime),
      program: p === null ? null : p + (playing ? (t - f[0]) * v.playbackRate : 0),
      frameProgram: p,
      playing,
      room: w.lockstepLive.session?.programTime() ?? null,
      live: w.lockstepLive.session?.live ?? null,
      stats: w.lockstepLive.session?.stats ?? null,
    };
  };
}

/** @typedef {Awaited<ReturnType<typeof openLive>>} LivePage */

/** One simultaneous look at every page. @param {LivePage[]} pages */
const look = (pages) => Promise.all(pages.map((p) => p.evaluate(() => /** @type {any} */ (window).__shown())));

/** How far each page is behind the wall clock, ms (null while unknown). @param {any[]} shown */
const behind = (shown) => shown.map((s) => (s.program === null ? null : s.t - s.program));

/** The largest difference between the pages' distances behind the wall clock. @param {any[]} shown */
function spread(shown) {
  const b = behind(shown);
  if (b.some((x) => x === null)) return null;
  const n = /** @type {number[]} */ (b);
  return Math.max(...n) - Math.min(...n);
}

/** The same for the playheads (sub-frame: not quantized by frames and refreshes). @param {any[]} shown */
function headSpread(shown) {
  if (shown.some((x) => x.head === null)) return null;
  const h = shown.map((x) => x.t - x.head);
  return Math.max(...h) - Math.min(...h);
}

/**
 * Waits until every page plays and they are within `boundMs` of each other
 * for `forMs`; returns how long that took. `frames`: of the frames on screen,
 * not the playheads (Firefox's `currentTime` moves in whole frames, so its
 * playhead is off its frame's line by up to a frame).
 * @param {LivePage[]} pages
 */
async function steady(pages, { boundMs = 30, forMs = 1000, timeoutMs = 60_000, frames = false } = {}) {
  const start = Date.now();
  let since = null;
  let last = null;
  for (;;) {
    last = await look(pages);
    const s = frames ? spread(last) : headSpread(last);
    if (last.every((x) => x.playing) && s !== null && s < boundMs) {
      since ??= Date.now();
      if (Date.now() - since >= forMs) return { ms: since - start, last };
    } else {
      since = null;
    }
    if (Date.now() - start > timeoutMs) throw new Error(`no steady state in ${timeoutMs} ms: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Samples the pages' skew `n` times: of the frames on screen (quantized by
 * the stream's frames and the display's refresh) and of the playheads
 * (`currentTime`, sub-frame).
 * @param {LivePage[]} pages
 */
async function sample(pages, { n = 200, intervalMs = 50 } = {}) {
  /** @type {number[]} */
  const skews = [];
  /** @type {number[]} */
  const heads = [];
  /** @type {number[]} */
  const latencies = [];
  for (let i = 0; i < n; i++) {
    const shown = await look(pages);
    const s = spread(shown);
    if (s !== null && shown.every((x) => x.playing && x.head !== null)) {
      skews.push(s);
      const h = shown.map((x) => x.t - x.head);
      heads.push(Math.max(...h) - Math.min(...h));
      latencies.push(.../** @type {number[]} */ (behind(shown)));
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  return { skews, playheadMs: summarize(heads), latencyMs: summarize(latencies) };
}

/** The three pages of a run: one direct, two through the proxies. */
async function threePages(/** @type {string} */ path, /** @type {{noWebTransport?: boolean, plain?: boolean}} */ o, proxies) {
  const sep = path.includes('?') ? '&' : '?';
  const wt = o.noWebTransport || o.plain ? '' : `${sep}wt=https://127.0.0.1:${proxies.udp.port}`;
  const direct = await openLive(`${env.server.url}${path}`, o);
  const a = await openLive(`http://127.0.0.1:${proxies.tcp.port}${path}${wt}`, o);
  const b = await openLive(`http://127.0.0.1:${proxies.tcp.port}${path}${wt}`, o);
  return [direct, a, b];
}

/** @param {LivePage[]} pages */
async function closeAll(pages) {
  for (const p of pages) await p.context().close();
}

test('three pages on a live stream hold one frame over WebSocket and WebTransport, against plain hls.js', { timeout: 600_000 }, async (t) => {
  await waitForSource();
  const proxies = { tcp: await tcpProxy(Number(new URL(env.server.url).port), IMPAIRED), udp: await udpProxy(env.server.quicPort, IMPAIRED) };
  try {
    /** @type {Record<string, any>} */
    const results = {};
    for (const transport of ['websocket', 'webtransport']) {
      const ev = eventId(transport);
      await makeLive(ev);
      const joinedAt = Date.now();
      const o = { noWebTransport: transport === 'websocket' };
      const pages = await threePages(`/live/${ev}?transport=${transport}`, o, proxies);
      const settled = await steady(pages);
      const transports = await Promise.all(pages.map((p) => p.evaluate(() => /** @type {any} */ (window).lockstepLive.session.transport)));
      assert.deepEqual(transports, [transport, transport, transport]);
      const { skews, playheadMs, latencyMs } = await sample(pages);
      const s = summarize(skews);
      const state = await (await fetch(`${env.server.url}/api/live-stream/${ev}/state`)).json();
      const moves = (await Promise.all(pages.map((p) => p.evaluate(() => /** @type {any} */ (window).lockstepLive.liveStates.map((l) => [l.latencyMs, l.atLive])))))[0];
      results[transport] = { ...s, playheadMs, settledMs: Date.now() - joinedAt, steadyAfterMs: settled.ms, latencyMs, roomLatencyMs: state.live.latencyMs, needs: state.live.needs, liveStates: moves };
      record(t, `live-${transport}`, { chromium: env.browser.version(), proxy: { tcp: proxies.tcp.stats, udp: proxies.udp.stats }, ...results[transport], skews });
      assert.equal(skews.length > 150, true, `too few samples with every page playing: ${skews.length}`);
      assert.ok(s.p95Ms < 100, `${transport}: p95 skew ${s.p95Ms} ms`);
      assert.deepEqual(pages.flatMap((p) => p.pageErrors), []);
      await closeAll(pages);
    }

    // The anchor: the same three pages with hls.js alone, its defaults, then with its catch-up.
    for (const [name, query] of [
      ['hlsjs-defaults', 'sync=off'],
      ['hlsjs-catchup', 'sync=off&catchup=1'],
    ]) {
      const pages = await threePages(`/live?${query}`, { plain: true }, proxies);
      await waitUntil(async () => (await look(pages)).every((x) => x.playing && x.program !== null), { what: `${name} pages playing`, timeoutMs: 60_000 });
      // As long as the Lockstep pages had from joining to sampling.
      await new Promise((r) => setTimeout(r, results.webtransport.settledMs));
      const { skews, playheadMs, latencyMs } = await sample(pages);
      results[name] = { ...summarize(skews), playheadMs, latencyMs };
      record(t, `live-${name}`, { chromium: env.browser.version(), ...results[name], skews });
      await closeAll(pages);
    }
    t.diagnostic(`live skew summary: ${JSON.stringify(Object.fromEntries(Object.entries(results).map(([k, v]) => [k, { p50: v.p50Ms, p95: v.p95Ms, max: v.maxMs, headP50: v.playheadMs.p50Ms, headP95: v.playheadMs.p95Ms, latencyP50: v.latencyMs.p50Ms }])))}`);
  } finally {
    proxies.tcp.close();
    proxies.udp.close();
  }
});

test('a Chromium host and two Firefox viewers on a live stream hold one frame over WebTransport and WebSocket', { timeout: 600_000 }, async (t) => {
  await waitForSource();
  const proxies = { tcp: await tcpProxy(Number(new URL(env.server.url).port), IMPAIRED), udp: await udpProxy(env.server.quicPort, IMPAIRED) };
  /** @type {LivePage[]} */
  let pages = [];
  try {
    /** @type {Record<string, any>} */
    const results = {};
    for (const transport of ['webtransport', 'websocket']) {
      const ev = eventId(`firefox-${transport}`);
      await makeLive(ev);
      const joinedAt = Date.now();
      const noWebTransport = transport === 'websocket';
      const path = `/live/${ev}?transport=${transport}`;
      const wt = noWebTransport ? '' : `&wt=https://127.0.0.1:${proxies.udp.port}`;
      // The host in Chromium, direct; one Firefox viewer direct, one through the proxies.
      pages = [await openLive(`${env.server.url}${path}`, { noWebTransport })];
      pages.push(await openLive(`${env.server.url}${path}`, { noWebTransport, firefox: true }));
      pages.push(await openLive(`http://127.0.0.1:${proxies.tcp.port}${path}${wt}`, { noWebTransport, firefox: true }));
      // Within two frames (30 fps) on screen.
      const settled = await steady(pages, { frames: true, boundMs: 70 });
      const transports = await Promise.all(pages.map((p) => p.evaluate(() => /** @type {any} */ (window).lockstepLive.session.transport)));
      assert.deepEqual(transports, [transport, transport, transport]);
      const { skews, playheadMs, latencyMs } = await sample(pages);
      const s = summarize(skews);
      const key = `firefox-${transport}`;
      results[key] = { ...s, playheadMs, settledMs: Date.now() - joinedAt, steadyAfterMs: settled.ms, latencyMs };
      record(t, `live-${key}`, { chromium: env.browser.version(), firefox: await pages[1].evaluate(() => navigator.userAgent), proxy: { tcp: proxies.tcp.stats, udp: proxies.udp.stats }, ...results[key], skews });
      assert.equal(skews.length > 150, true, `too few samples with every page playing: ${skews.length}`);
      assert.ok(s.p95Ms < 100, `${key}: p95 skew ${s.p95Ms} ms`);
      assert.deepEqual(pages.flatMap((p) => p.pageErrors), []);
      await closeAll(pages.splice(0));
    }
    t.diagnostic(`live skew with Firefox viewers: ${JSON.stringify(Object.fromEntries(Object.entries(results).map(([k, v]) => [k, { p50: v.p50Ms, p95: v.p95Ms, max: v.maxMs, headP50: v.playheadMs.p50Ms, headP95: v.playheadMs.p95Ms, latencyP50: v.latencyMs.p50Ms }])))}`);
  } finally {
    await closeAll(pages);
    proxies.tcp.close();
    proxies.udp.close();
  }
});

test('a stalled page catches up, Go live after a rewind brings every page back, and the auto latency settles', { timeout: 300_000 }, async (t) => {
  await waitForSource();
  const ev = eventId('events');
  await makeLive(ev);
  const joinedAt = Date.now();
  // The third page's segment requests can be held (its network stalls).
  let holding = false;
  /** @type {import('playwright-core').Route[]} */
  const held = [];
  const hold = async (/** @type {import('playwright-core').Page} */ page) => {
    await page.route('**/dev/live-source/*.m4s', (route) => (holding ? held.push(route) : route.continue()));
  };
  const url = `${env.server.url}/live/${ev}`;
  const pages = [await openLive(url), await openLive(url), await openLive(url, { setup: hold })];
  try {
    assert.equal(await pages[0].evaluate(() => /** @type {any} */ (window).lockstepLive.session.role), 'host');
    await steady(pages);

    // A stall: the third page gets no media until it has been stalled for 2 s.
    holding = true;
    const stalledAt = await waitUntil(async () => ((await look([pages[2]]))[0].playing ? null : Date.now()), { what: 'the held page to stall', timeoutMs: 30_000 });
    await waitUntil(() => Date.now() - stalledAt >= 2000, { what: '2 s of stall', intervalMs: 10 });
    holding = false;
    const releasedAt = Date.now();
    for (const r of held.splice(0)) await r.continue().catch(() => {});
    const backAt = await waitUntil(
      async () => {
        const shown = await look([pages[0], pages[2]]);
        const s = headSpread(shown);
        return shown.every((x) => x.playing) && s !== null && s < 30 ? Date.now() : null;
      },
      { what: 'the stalled page to be back within 30 ms', timeoutMs: 30_000 },
    );
    const stallRecoveryMs = backAt - releasedAt;
    await steady(pages);

    // The host rewinds 10 s (everyone follows), then goes back to live.
    const latency = () => pages[0].evaluate(() => /** @type {any} */ (window).lockstepLive.session.live.latencyMs);
    const before = await latency();
    await pages[0].click('#back10');
    await waitUntil(
      async () => {
        const shown = await look(pages);
        const b = behind(shown);
        return shown.every((x) => x.playing) && b.every((x) => x !== null && x > before + 9_000) && /** @type {number} */ (headSpread(shown)) < 30;
      },
      { what: 'every page 10 s behind live, together', timeoutMs: 30_000 },
    );
    const clickedAt = Date.now();
    await pages[0].click('#go-live');
    /** @type {(number | null)[]} when each page was first within 30 ms of the live point */
    const pageAt = pages.map(() => null);
    /** @type {any[]} */
    const trace = [];
    const liveAt = await waitUntil(
      async () => {
        const shown = await look(pages);
        const l = await latency();
        // Playheads (sub-frame) against the live point.
        const b = shown.map((x) => (x.head === null ? null : x.t - x.head));
        trace.push({ ms: Date.now() - clickedAt, off: b.map((x) => (x === null ? null : Math.round(x - l))) });
        b.forEach((x, i) => {
          if (x !== null && Math.abs(x - l) < 30 && shown[i].playing) pageAt[i] ??= Date.now() - clickedAt;
        });
        const ok = shown.every((x) => x.playing && x.live?.atLive) && b.every((x) => x !== null && Math.abs(x - l) < 30) && /** @type {number} */ (headSpread(shown)) < 30;
        return ok ? Date.now() : null;
      },
      { what: 'every page at the live point', timeoutMs: 30_000 },
    );
    const goLiveMs = liveAt - clickedAt;
    // The auto latency: its moves, as the host's page heard them, from the first join (a move is a change of
    // latency; the Go live above is not one).
    const states = (await pages[0].evaluate(() => /** @type {any} */ (window).lockstepLive.liveStates)).filter(Boolean);
    const moves = states.filter((/** @type {any} */ l, /** @type {number} */ i) => l.latencyMs !== (i > 0 ? states[i - 1].latencyMs : 3000));
    const settledMs = moves.length ? moves[0].at - joinedAt : null;
    const state = await (await fetch(`${env.server.url}/api/live-stream/${ev}/state`)).json();
    record(t, 'live-events', {
      chromium: env.browser.version(),
      autoLatency: { settledMs, moves: moves.map((/** @type {any} */ m) => ({ afterMs: m.at - joinedAt, latencyMs: m.latencyMs })), final: state.live.latencyMs, needs: state.live.needs },
      stall: { stalledForMs: releasedAt - stalledAt, backWithin30MsAfterMs: stallRecoveryMs },
      goLive: { everyPageAtLiveAfterMs: goLiveMs, eachPageAfterMs: pageAt, trace: trace.filter((_, i) => i % 2 === 0).slice(0, 40) },
    });
    // Generous bounds (the targets, 10 s, 3 s and 1 s, are reported in BENCHMARKS.md). Go live: a seek
    // that lands off by less than the drift controller's seek threshold (1 s) is corrected by rate, at most
    // 5 % (50 ms/s), so a page whose seek overshoots takes seconds more by design (seen: 275 ms → 5.7 s); the
    // bound is the controller's worst case, the speed is the recorded figure.
    assert.ok(settledMs !== null && settledMs < 20_000, `the auto latency settled after ${settledMs} ms: ${JSON.stringify(states)}`);
    assert.ok(stallRecoveryMs < 20_000, `the stalled page was back after ${stallRecoveryMs} ms`);
    assert.ok(goLiveMs < 22_000, `Go live took ${goLiveMs} ms`);
    assert.deepEqual(pages.flatMap((p) => p.pageErrors), []);
  } finally {
    holding = false;
    for (const r of held.splice(0)) await r.continue().catch(() => {});
    await closeAll(pages);
  }
});
