// The server's dev live source in Chromium: a page with plain hls.js (no
// Lockstep) plays /dev/live-source/stream.m3u8 (VP9 in fragmented MP4 through
// MSE); the program time of the frame shown follows the wall clock; it plays
// on across the loop's boundary without a gap. Then the /live demo page: it
// plays the stream in a live room, shows the latency and program times, and
// Go live returns the room to the live point.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { openWatch, useLockstep, waitFor, waitUntil } from './support/harness.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const HLS_JS = join(HERE, '..', 'node_modules', 'hls.js', 'dist', 'hls.min.js');
/** The loop's length, s (src/http/live_source/generate.rs: 20 segments of 1 s). */
const LOOP_S = 20;

// In --dev the /live page's room (`live-demo`) is a live room with an auto
// latency. Its floor is raised to 3 s here: with 1 s segments the newest
// segment a player holds is up to ~2 s old, and an auto latency decided from
// once-a-second reports (in phase with the segments) can settle below that.
const env = useLockstep(['--live-latency-min-ms', '3000']);

/** Waits until the source serves its playlist (the first run makes the loop with ffmpeg). */
async function sourceReady() {
  let last = null;
  await waitUntil(
    async () => {
      const r = await fetch(`${env.server.url}/dev/live-source/stream.m3u8`);
      last = r.status === 200 ? null : await r.text();
      // 503 with Retry-After while the loop is made; anything else is a failure.
      if (r.status !== 200) assert.ok(r.status === 503 && r.headers.get('retry-after'), `the live source answered ${r.status}: ${last}`);
      return r.status === 200;
    },
    { what: 'the live source to serve its playlist', timeoutMs: 180_000, intervalMs: 250 },
  );
}

/** A page of the server's origin with plain hls.js playing the live source. */
const PLAIN_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>plain hls.js</title></head>
<body>
<video id="v" muted playsinline></video>
<script src="/demo/vendor/hls.min.js"></script>
<script>
  const v = document.getElementById('v');
  const hls = new Hls();
  const t = { hls, v, errors: [], frags: [], frames: [] };
  window.t = t;
  hls.on(Hls.Events.ERROR, (_e, d) => t.errors.push(d.type + ': ' + d.details + (d.fatal ? ' (fatal)' : '')));
  hls.on(Hls.Events.BUFFER_CODECS, (_e, d) => { t.codecs = d; });
  hls.on(Hls.Events.FRAG_CHANGED, (_e, d) => t.frags.push({ sn: d.frag.sn, start: d.frag.start, pdt: d.frag.programDateTime }));
  // Media time of every frame presented.
  const onFrame = (_now, meta) => { t.frames.push(meta.mediaTime); if (t.frames.length > 5000) t.frames.splice(0, 1000); v.requestVideoFrameCallback(onFrame); };
  v.requestVideoFrameCallback(onFrame);
  hls.loadSource('/dev/live-source/stream.m3u8');
  hls.attachMedia(v);
  v.play().catch((e) => t.errors.push('play: ' + e.message));
</script>
</body></html>`;

test('plain hls.js plays the live source: the frame shown is a few seconds behind the wall clock, across the loop boundary', { timeout: 300_000 }, async () => {
  assert.ok(existsSync(HLS_JS), `${HLS_JS} is missing: cd client-js && npm ci (hls.js is a dev dependency)`);
  await sourceReady();
  const context = await env.browser.newContext();
  const pageUrl = `${env.server.url}/__e2e/plain-hls.html`;
  await context.route(pageUrl, (route) => route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: PLAIN_PAGE }));
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(pageUrl);
  const state = () =>
    page.evaluate(() => {
      const { hls, v, errors, frags } = /** @type {any} */ (window).t;
      const b = [];
      for (let i = 0; i < v.buffered.length; i++) b.push([v.buffered.start(i), v.buffered.end(i)]);
      return {
        now: Date.now(),
        currentTime: v.currentTime,
        paused: v.paused,
        readyState: v.readyState,
        playingDate: hls.playingDate ? hls.playingDate.getTime() : null,
        buffered: b,
        errors,
        frags: frags.slice(-5),
      };
    });
  const what = (/** @type {string} */ w) => ({ what: w, timeoutMs: 30_000 });
  await waitFor(page, () => { const v = /** @type {any} */ (window).t.v; return !v.paused && v.readyState >= 3 && v.currentTime > 0; }, null, what('playback to start'));

  // currentTime advances.
  const s0 = await state();
  await waitFor(page, (t0) => /** @type {any} */ (window).t.v.currentTime > t0 + 2, s0.currentTime, what('currentTime to advance 2 s'));

  // The frame shown was captured a few seconds ago (hls.js's default live
  // point is three segments behind the newest), never in the future.
  const s1 = await state();
  assert.ok(s1.playingDate !== null, `hls.js has no playingDate: ${JSON.stringify(s1)}`);
  const behindMs = s1.now - s1.playingDate;
  assert.ok(behindMs > 0 && behindMs < 8_000, `the frame shown is ${behindMs} ms behind the wall clock: ${JSON.stringify(s1)}`);
  // Program time is the origin plus media time: the same origin, a whole second, for every fragment.
  const origins = new Set(s1.frags.map((f) => Math.round(f.pdt - f.start * 1000)));
  assert.equal(origins.size, 1, `fragments disagree on the origin: ${JSON.stringify(s1.frags)}`);
  assert.equal([...origins][0] % 1000, 0, `the origin is a whole second: ${JSON.stringify(s1.frags)}`);

  // The next loop boundary (media time a multiple of the loop) plays through.
  const boundary = (Math.floor(s1.currentTime / LOOP_S) + 1) * LOOP_S;
  await waitFor(page, (b) => /** @type {any} */ (window).t.v.currentTime > b + 1.5, boundary, {
    what: `playback past the loop boundary at ${boundary} s`,
    timeoutMs: (boundary - s1.currentTime + 20) * 1000,
  });
  const s2 = await state();
  assert.equal(s2.paused, false);
  assert.ok(
    s2.buffered.some(([a, b]) => a <= boundary - 1 && b >= boundary + 1),
    `no gap in the buffer at the boundary ${boundary}: ${JSON.stringify(s2.buffered)}`,
  );
  const around = await page.evaluate((b) => /** @type {any} */ (window).t.frames.filter((m) => m > b - 0.5 && m < b + 0.5).length, boundary);
  assert.ok(around >= 15, `only ${around} frames presented within 0.5 s of the boundary (30 fps)`);
  const behind2 = s2.now - /** @type {number} */ (s2.playingDate);
  assert.ok(behind2 > 0 && behind2 < 8_000, `after the boundary the frame shown is ${behind2} ms behind: ${JSON.stringify(s2)}`);
  assert.deepEqual(s2.errors.filter((e) => e.includes('fatal')), [], 'no fatal hls.js error');

  // hls.js would play over a jump in the segments' timestamps (it moves the
  // buffer's offset); Chromium's MSE places a segment where its tfdt says.
  // The raw segments across the boundary, appended in order, are one range.
  const mse = await page.evaluate(
    async ({ first, last }) => {
      const { codecs } = /** @type {any} */ (window).t;
      const mime = `${codecs.video.container};codecs="${codecs.video.codec}"`;
      const ms = new MediaSource();
      const v = document.createElement('video');
      v.src = URL.createObjectURL(ms);
      await new Promise((r) => ms.addEventListener('sourceopen', r, { once: true }));
      const sb = ms.addSourceBuffer(mime);
      /** @param {ArrayBuffer} buf */
      const append = (buf) =>
        new Promise((resolve, reject) => {
          sb.addEventListener('updateend', resolve, { once: true });
          sb.addEventListener('error', () => reject(new Error('append failed')), { once: true });
          sb.appendBuffer(buf);
        });
      /** @param {string} p */
      const get = async (p) => {
        const r = await fetch(p);
        if (!r.ok) throw new Error(`${p}: ${r.status}`);
        return r.arrayBuffer();
      };
      await append(await get('/dev/live-source/init.mp4'));
      for (let n = first; n <= last; n++) await append(await get(`/dev/live-source/${n}.m4s`));
      const ranges = [];
      for (let i = 0; i < sb.buffered.length; i++) ranges.push([sb.buffered.start(i), sb.buffered.end(i)]);
      return { mime, ranges };
    },
    { first: boundary - 2, last: boundary + 1 },
  );
  assert.equal(mse.ranges.length, 1, `segments ${boundary - 2}–${boundary + 1} are not one range in MSE: ${JSON.stringify(mse)}`);
  const [[from, to]] = mse.ranges;
  assert.ok(Math.abs(from - (boundary - 2)) < 0.05 && Math.abs(to - (boundary + 2)) < 0.05, `media time n·d: ${JSON.stringify(mse)}`);
  assert.deepEqual(pageErrors, []);
  await context.close();
});

test('the /live page plays the live source in a live room; Go live returns to the live point', { timeout: 180_000 }, async () => {
  assert.ok(existsSync(HLS_JS), `${HLS_JS} is missing: cd client-js && npm ci`);
  await sourceReady();
  const page = await openWatch(env.browser, `${env.server.url}/live`, { timeoutMs: 30_000 });
  const what = (/** @type {string} */ w, timeoutMs = 30_000) => ({ what: w, timeoutMs });
  // Playing, in a live room, the frame on screen known.
  await waitFor(
    page,
    () => {
      const d = /** @type {any} */ (window).lockstepLive;
      return d.session.live !== null && !d.video.paused && d.video.readyState >= 3 && d.onScreenMs !== null;
    },
    null,
    what('the page to play the live stream'),
  );
  const live = () =>
    page.evaluate(() => {
      const d = /** @type {any} */ (window).lockstepLive;
      const s = d.session;
      return {
        now: Date.now(),
        live: s.live,
        role: s.role,
        program: s.programTime(),
        onScreen: d.adapter.toProgramTime(d.video.currentTime),
        edge: d.adapter.liveEdge(),
        latencyText: document.getElementById('latency')?.textContent,
        programText: document.getElementById('program')?.textContent,
        onScreenText: document.getElementById('on-screen')?.textContent,
        distanceText: document.getElementById('distance')?.textContent,
        badge: document.getElementById('at-live')?.textContent,
        currentTime: d.video.currentTime,
        rate: d.video.playbackRate,
        buffered: Array.from({ length: d.video.buffered.length }, (_, i) => [d.video.buffered.start(i), d.video.buffered.end(i)]),
        stats: { driftMs: s.stats.driftMs, buffering: s.stats.buffering, corrections: s.stats.corrections },
        hlsFrom: d.hlsFrom,
        errors: d.errors,
        hlsErrors: d.hlsErrors.filter((/** @type {string} */ e) => e.includes('fatal')),
      };
    });
  /** waitFor, with the live page's state in the failure. @type {typeof waitFor} */
  const waitLive = async (p, fn, arg, o) => {
    try {
      await waitFor(p, fn, arg, o);
    } catch (e) {
      throw new Error(`${/** @type {Error} */ (e).message}; live page: ${JSON.stringify(await live())}`, { cause: e });
    }
  };
  let l = await live();
  assert.equal(l.hlsFrom, 'server', 'hls.js came from the server');
  assert.equal(l.role, 'host', 'the first viewer hosts');
  assert.equal(l.live.clock, 'live');
  // The element follows the room: the frame on screen is the room's program time.
  await waitLive(
    page,
    () => {
      const d = /** @type {any} */ (window).lockstepLive;
      return Math.abs(d.adapter.toProgramTime(d.video.currentTime) - d.session.programTime()) < 150;
    },
    null,
    what('the frame on screen to reach the room'),
  );
  // The page shows the latency, both program times and the distance to live (it renders every 100 ms).
  await waitLive(
    page,
    () => {
      const text = (/** @type {string} */ id) => document.getElementById(id)?.textContent ?? '';
      const clock = /^\d\d:\d\d:\d\d\.\d{3}$/;
      return (
        /^\d+\.\d\d s \((fixed|auto)\)$/.test(text('latency')) &&
        clock.test(text('program')) &&
        clock.test(text('on-screen')) &&
        /^-?\d+\.\d\d s behind the live edge/.test(text('distance'))
      );
    },
    null,
    what('the page to show the latency, program times and distance to live', 2_000),
  );
  l = await live();
  // Behind the live point by this much (0 at live; a buffering wait while
  // the page started resumes behind it). Server and page share this clock.
  const behindLive = (/** @type {typeof l} */ x) => x.now - x.program - x.live.latencyMs;
  if (l.live.atLive) {
    assert.ok(Math.abs(behindLive(l)) < 1000, `at live the room plays ${l.now - l.program} ms behind, its latency is ${l.live.latencyMs} ms`);
  }

  // Back 10 s: the room leaves the live point, 10 s further behind.
  const before = behindLive(l);
  await page.click('#back10');
  await waitLive(page, () => /** @type {any} */ (window).lockstepLive.session.live?.atLive === false, null, what('the room to leave the live point'));
  await waitLive(
    page,
    (from) => {
      const d = /** @type {any} */ (window).lockstepLive;
      const behind = Date.now() - d.session.programTime() - d.session.live.latencyMs - from;
      return behind > 8_500 && behind < 11_500 && Math.abs(d.adapter.toProgramTime(d.video.currentTime) - d.session.programTime()) < 150;
    },
    before,
    what('the room and the frame on screen to be 10 s further behind live'),
  );
  // The page says so (it renders every 100 ms).
  await waitLive(
    page,
    () => document.getElementById('at-live')?.textContent === 'behind live' && /behind the live edge$/.test(document.getElementById('distance')?.textContent ?? ''),
    null,
    what('the page to show the room behind live', 2_000),
  );

  // Go live: back at the live point, and the frame on screen with it.
  await page.click('#go-live');
  await waitLive(page, () => /** @type {any} */ (window).lockstepLive.session.live?.atLive === true, null, what('the room to be at live again'));
  await waitLive(
    page,
    () => {
      const d = /** @type {any} */ (window).lockstepLive;
      const behind = Date.now() - d.session.programTime() - d.session.live.latencyMs;
      return Math.abs(behind) < 1000 && Math.abs(d.adapter.toProgramTime(d.video.currentTime) - d.session.programTime()) < 150;
    },
    null,
    what('the frame on screen to return to the live point'),
  );
  await waitLive(
    page,
    () => document.getElementById('at-live')?.textContent === 'LIVE' && /\(at live\)$/.test(document.getElementById('distance')?.textContent ?? ''),
    null,
    what('the page to show the room at live', 2_000),
  );
  l = await live();
  assert.deepEqual(l.hlsErrors, [], 'no fatal hls.js error');
  assert.deepEqual(page.pageErrors, []);
  await page.context().close();
});
