// When an engine puts a playing element's frames on screen, against its media
// time and against the page's clock (a measurement for BENCHMARKS.md, not a
// test).
//
//   node scripts/presentation-probe.mjs [firefox|chromium] [seconds] [layout.frame_rate|default] [playbackRate]
//
// One headless page (Debian's firefox-esr through puppeteer-core, or Debian's
// Chromium) plays demo/video.webm (25 fps, muted) from a local HTTP server for
// `seconds` (8); every frame is recorded with requestVideoFrameCallback (its
// media time, when it is expected on screen, when the callback ran, the
// presented-frame count), and the script prints:
// - frameMs: the mean interval between the frames' expected display times
//   (40 at 25 fps if the frames keep to the page's clock);
// - lagMs: each frame's display time minus where a clock that ran at exactly
//   1× from the first frame on would show it (the frame's media time, from
//   the first frame's display time): min / max and the first 60 values;
//   a slope here is frames presented slower or faster than real time;
// - lagCbMs: the same on the times the callbacks ran (when the engine handed
//   each frame to the page), in case the expected display times mislead;
// - clockAheadMs: the element's `currentTime`, read in each callback, minus
//   the frame's media time (how far the element's clock is ahead of the frame
//   it has just presented);
// - skips: frames whose media time is more than one frame past the last one
//   presented (a frame left out), and the lag jump at each;
// - clockPpm: the page's `performance.now()` against this process's clock
//   over the run (both advance at the same rate on a sound machine);
// - cbMs: the callback's time minus the frame's expected display time (when
//   the engine hands the frame to the page: before or after it is shown).
// `layout.frame_rate` (Firefox only) sets the software refresh rate of the
// headless compositor (its default −1: 60 Hz), to see whether the pattern
// follows the refresh rate. `LOCKSTEP_PROBE_PREFS` (JSON) adds Firefox
// preferences; `LOCKSTEP_PROBE_VIDEO` plays another file (another frame rate
// or codec) in place of the demo video.
//
// Measured on 2026-12-06 (Debian firefox-esr 153, headless): frames 40.2–40.4
// ms apart (0.5–0.9 % slower than real time; the callbacks too) with one
// skipped every 4–6 s, while `currentTime` keeps real time: the frame on
// screen drifts through a whole frame against the element's clock (from 17 ms
// ahead of it to 23 ms behind) and snaps back at the skip, a 40 ms sawtooth,
// the same at layout.frame_rate 50, 60 (default) and 120 Hz and at
// playbackRate 0.995, 1.005 and 1.01 (a rate moves the clock, and the frames
// with it, but not the sawtooth), with `performance.now()` within 70 ppm of
// the system clock. Chromium's frames keep the clock (frameMs 39.95–40.03, no
// slope, no skip).
//
// Measured on 2026-12-07: the period is Firefox's, not the video's: a 50 fps
// file is presented every other frame at the same 40.3 ms (a 30 fps one at
// 47 ms on average, frames skipped throughout), VP8 as VP9; neither the
// window size nor the preferences media.video-queue.send-to-compositor-size
// (1, 30), gfx.webrender.software, layers.gpu-process.enabled,
// layers.offmainthreadcomposition.frame-rate or gfx.webrender.swgl.skip-present
// change it, while requestAnimationFrame runs at 60 Hz (120 with
// layout.frame_rate 120) and the browser uses ~6 % of a core: the software
// compositor presents the video about 24.8 times a second. Not headless, on
// Xvfb, the same (40.25 ms), and with WebRender asked to use OpenGL (Mesa's
// llvmpipe: gfx.webrender.software false, gfx.webrender.all and
// layers.acceleration.force-enabled true) too (40.83 ms).

import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchBrowser, launchFirefox } from '../e2e/support/harness.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const [engine = 'firefox', secondsArg = '8', frameRateArg = 'default', rateArg = '1'] = process.argv.slice(2);
if (engine !== 'firefox' && engine !== 'chromium') throw new Error(`engine ${engine}: firefox or chromium`);

const PAGE = `<!doctype html><video id="v" src="/demo/video.webm" muted playsinline width="320"></video>
<script>
const v = document.getElementById('v');
let frames = [];
v.requestVideoFrameCallback(function onFrame(at, m) {
  frames.push({ shown: m.expectedDisplayTime, media: m.mediaTime, cb: performance.now(), presented: m.presentedFrames, clock: v.currentTime });
  v.requestVideoFrameCallback(onFrame);
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
window.record = async (ms, rate) => {
  v.playbackRate = rate;
  await v.play();
  await sleep(500);
  frames = [];
  await sleep(ms);
  v.pause();
  return frames;
};
</script>`;

const server = createServer(async (req, res) => {
  const path = new URL(req.url ?? '/', 'http://x').pathname;
  if (path === '/') return void res.writeHead(200, { 'content-type': 'text/html' }).end(PAGE);
  if (path !== '/demo/video.webm') return void res.writeHead(404).end();
  const data = await readFile(process.env.LOCKSTEP_PROBE_VIDEO ?? join(root, path));
  const range = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? '');
  if (!range) return void res.writeHead(200, { 'content-type': 'video/webm', 'accept-ranges': 'bytes' }).end(data);
  const from = Number(range[1]);
  const to = range[2] ? Number(range[2]) : data.length - 1;
  res.writeHead(206, { 'content-type': 'video/webm', 'content-range': `bytes ${from}-${to}/${data.length}`, 'content-length': to - from + 1 });
  res.end(data.subarray(from, to + 1));
});
await new Promise((r) => server.listen(0, '127.0.0.1', () => r(undefined)));
const address = /** @type {import('node:net').AddressInfo} */ (server.address());

const prefs = { ...(frameRateArg === 'default' ? {} : { 'layout.frame_rate': Number(frameRateArg) }), ...JSON.parse(process.env.LOCKSTEP_PROBE_PREFS ?? '{}') };
const browser = engine === 'firefox' ? await launchFirefox({ prefs }) : await launchBrowser();
const r1 = (/** @type {number} */ x) => Math.round(x * 10) / 10;
try {
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${address.port}/`);
  // The page's clock against ours: the reading with the shortest round trip of 9.
  const clock = async () => {
    let best = { rtt: Infinity, node: 0, page: 0 };
    for (let i = 0; i < 9; i++) {
      const t0 = performance.now();
      const p = await page.evaluate(() => performance.now());
      const t1 = performance.now();
      if (t1 - t0 < best.rtt) best = { rtt: t1 - t0, node: (t0 + t1) / 2, page: p };
    }
    return best;
  };
  const c0 = await clock();
  /** @type {{shown: number, media: number, cb: number, presented: number, clock: number}[]} */
  const frames = await page.evaluate((a) => /** @type {any} */ (window).record(...a), [Number(secondsArg) * 1000, Number(rateArg)]);
  const c1 = await clock();
  if (frames.length < 10) throw new Error(`only ${frames.length} frames presented`);
  const f0 = frames[0];
  const frameS = (frames[1].media - f0.media) || 0.04;
  const rate = Number(rateArg);
  const lag = frames.map((f) => f.shown - f0.shown - ((f.media - f0.media) * 1000) / rate);
  const lagCb = frames.map((f) => f.cb - f0.cb - ((f.media - f0.media) * 1000) / rate);
  const clockAhead = frames.map((f) => (f.clock - f.media) * 1000);
  const skips = [];
  for (let i = 1; i < frames.length; i++) {
    if (frames[i].media - frames[i - 1].media > frameS * 1.5) skips.push({ atS: Math.round((frames[i].shown - f0.shown) / 10) / 100, lagJumpMs: r1(lag[i] - lag[i - 1]) });
  }
  const cb = frames.map((f) => f.cb - f.shown).sort((a, b) => a - b);
  const out = {
    engine,
    version: await browser.version(),
    layoutFrameRate: frameRateArg,
    playbackRate: rate,
    frames: frames.length,
    presented: frames.at(-1).presented - f0.presented + 1,
    frameMs: Math.round(((frames.at(-1).shown - f0.shown) / (frames.length - 1)) * 100) / 100,
    lagMs: { min: r1(Math.min(...lag)), max: r1(Math.max(...lag)), first60: lag.slice(0, 60).map(r1) },
    lagCbMs: { min: r1(Math.min(...lagCb)), max: r1(Math.max(...lagCb)), first60: lagCb.slice(0, 60).map(r1) },
    clockAheadMs: { min: r1(Math.min(...clockAhead)), max: r1(Math.max(...clockAhead)), first60: clockAhead.slice(0, 60).map(r1) },
    skips,
    clockPpm: Math.round(((c1.page - c0.page) / (c1.node - c0.node) - 1) * 1e6),
    cbMs: { p5: r1(cb[Math.floor(cb.length * 0.05)]), p50: r1(cb[Math.floor(cb.length / 2)]), p95: r1(cb[Math.floor(cb.length * 0.95)]) },
  };
  for (const [k, v] of Object.entries(out)) console.log(`${k}: ${JSON.stringify(v)}`);
} finally {
  await browser.close();
  server.close();
}
