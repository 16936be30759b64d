// The player adapters with the real players from npm (video.js, shaka-player,
// dash.js) and the React hook (with the real React) in Debian's Chromium and
// Firefox ESR, against the real server: the example pages
// (examples/*.html) are served with node_modules from a local HTTP server on
// 127.0.0.1, two pages per player join one room. The host's player controls
// become room commands the viewer follows; the session's own changes to the
// element (joining, drift control, a command sent through the API) are never
// echoed as commands; a viewer's pause is refused and undone.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createReadStream, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildExamples } from '../scripts/examples.mjs';
import { eventId, firefoxPage, launchBrowser, launchFirefox, startLockstep, VIDEO_PATH } from './support/harness.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.map': 'application/json',
  '.webm': 'video/webm',
  '.mpd': 'application/dash+xml',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
  '.svg': 'image/svg+xml',
};

/**
 * A static HTTP server on 127.0.0.1: `/media/*` from `mediaDir`, the rest
 * from client-js (examples, src, demo, node_modules), with byte ranges.
 * @param {string} mediaDir
 */
async function serveStatic(mediaDir) {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const [base, rel] = path.startsWith('/media/') ? [mediaDir, path.slice('/media/'.length)] : [ROOT, path.slice(1)];
    const file = normalize(join(base, rel));
    if (!file.startsWith(base + sep) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end('not found');
      return;
    }
    const size = statSync(file).size;
    const headers = { 'content-type': TYPES[/** @type {keyof TYPES} */ (extname(file))] ?? 'application/octet-stream', 'accept-ranges': 'bytes', 'cache-control': 'no-store' };
    const m = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range ?? '');
    if (m && (m[1] || m[2])) {
      const start = m[1] ? Number(m[1]) : size - Number(m[2]);
      const end = m[1] && m[2] ? Math.min(Number(m[2]), size - 1) : size - 1;
      res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${end}/${size}`, 'content-length': end - start + 1 });
      createReadStream(file, { start, end }).pipe(res);
      return;
    }
    res.writeHead(200, { ...headers, 'content-length': size });
    createReadStream(file).pipe(res);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', () => r(undefined)));
  const addr = /** @type {import('node:net').AddressInfo} */ (server.address());
  return { url: `http://127.0.0.1:${addr.port}`, close: () => new Promise((r) => server.close(() => r(undefined))) };
}

/** @type {{lockstep: Awaited<ReturnType<typeof startLockstep>>, browser: import('playwright-core').Browser, web: Awaited<ReturnType<typeof serveStatic>>, mediaDir: string}} */
const env = /** @type {any} */ ({});

before(async () => {
  // The demo video as DASH (WebM segments), for shaka-player and dash.js.
  env.mediaDir = mkdtempSync(join(tmpdir(), 'lockstep-dash-'));
  const r = spawnSync('ffmpeg', ['-v', 'error', '-i', VIDEO_PATH, '-c', 'copy', '-f', 'dash', '-seg_duration', '4', '-use_template', '1', '-use_timeline', '1', '-dash_segment_type', 'webm', join(env.mediaDir, 'manifest.mpd')], { encoding: 'utf8' });
  assert.equal(r.status, 0, `ffmpeg could not make the DASH copy: ${r.stderr ?? r.error}`);
  // The React example, bundled (examples/dist/react.js).
  await buildExamples();
  env.web = await serveStatic(env.mediaDir);
  env.lockstep = await startLockstep();
  env.browser = await launchBrowser({ args: ['--disable-features=LocalNetworkAccessChecks'] });
});

after(async () => {
  await env.browser?.close();
  await env.lockstep?.stop();
  await env.web?.close();
  if (env.mediaDir) rmSync(env.mediaDir, { recursive: true, force: true });
});

/**
 * Opens an example page in its own browser context (another device) and waits until it joined.
 * @param {string} name videojs | shaka | dashjs
 * @param {string} ev
 * @param {string} [src]
 */
async function openExample(name, ev, src) {
  const context = await env.browser.newContext();
  const page = await context.newPage();
  /** @type {string[]} */
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  const q = new URLSearchParams({ server: env.lockstep.url, event: ev, transport: 'websocket' });
  if (src) q.set('src', src);
  await page.goto(`${env.web.url}/examples/${name}.html?${q}`);
  await page.waitForFunction(() => window.lockstepExample?.session?.status === 'open' || Boolean(window.lockstepExample?.fatal), null, { timeout: 30_000 });
  const fatal = await page.evaluate(() => window.lockstepExample.fatal);
  assert.equal(fatal, null, `the ${name} page failed: ${fatal}`);
  return Object.assign(page, { pageErrors, context });
}

/**
 * @param {import('playwright-core').Page} page
 * @param {() => unknown} fn
 * @param {string} what
 */
/**
 * The same example page in its own headless Firefox (puppeteer-core over WebDriver BiDi, one browser per page),
 * behind the part of Playwright's page the scenario uses.
 */
async function openExampleFirefox(name, ev, src) {
  const browser = await launchFirefox();
  try {
    const page = await browser.newPage();
    /** @type {string[]} */
    const pageErrors = [];
    page.on('pageerror', (e) => {
      const m = e instanceof Error ? e.message : String(e);
      // Firefox reports failed resource loads here too: shaka's controls.css loads its font from fonts.gstatic.com,
      // which a machine without the internet cannot reach (Chromium fails it quietly).
      if (!/https:\/\/fonts\.gstatic\.com\//.test(m)) pageErrors.push(m);
    });
    const q = new URLSearchParams({ server: env.lockstep.url, event: ev, transport: 'websocket' });
    if (src) q.set('src', src);
    await page.goto(`${env.web.url}/examples/${name}.html?${q}`);
    await page.waitForFunction(() => window.lockstepExample?.session?.status === 'open' || Boolean(window.lockstepExample?.fatal), { timeout: 30_000, polling: 50 });
    const fatal = await page.evaluate(() => window.lockstepExample.fatal);
    assert.equal(fatal, null, `the ${name} page failed in Firefox: ${fatal}`);
    return Object.assign(firefoxPage(browser, page), { pageErrors, context: { close: () => browser.close() } });
  } catch (e) {
    await browser.close();
    throw e;
  }
}

async function until(page, fn, what, timeoutMs = 15_000) {
  try {
    await page.waitForFunction(fn, null, { polling: 50, timeout: timeoutMs });
  } catch (e) {
    const state = await page.evaluate(() => {
      const x = window.lockstepExample;
      return { pos: x.video.currentTime, paused: x.video.paused, room: x.session?.timeline, roomPos: x.session?.position, commands: x.commands, errors: x.errors, drives: x.drives };
    });
    throw new Error(`timed out waiting for ${what}: ${JSON.stringify(state)}`, { cause: e });
  }
}

/** @param {import('playwright-core').Page} page */
const commandsOf = (page) => page.evaluate(() => window.lockstepExample.commands.map((/** @type {any} */ c) => `${c.kind}:${c.outcome}`));

/**
 * The scenario, for one player: `ui` does the host's actions the player's way.
 * @param {string} name
 * @param {{play: (p: import('playwright-core').Page) => Promise<void>, pause: (p: import('playwright-core').Page) => Promise<void>, seek: (p: import('playwright-core').Page, t: number) => Promise<void>}} ui
 * @param {string} [src]
 */
async function scenario(name, ui, src, open = openExample) {
  const ev = eventId(name);
  const host = await open(name, ev, src);
  const viewer = await open(name, ev, src);
  try {
    assert.equal(await host.evaluate(() => window.lockstepExample.session.role), 'host');
    assert.equal(await viewer.evaluate(() => window.lockstepExample.session.role), 'viewer');

    // The host presses play in the player: the room plays, and so does the viewer.
    await ui.play(host);
    await until(viewer, () => !window.lockstepExample.session.timeline.paused && !window.lockstepExample.video.paused && window.lockstepExample.video.currentTime > 0.5, 'the viewer to play');
    assert.deepEqual(await commandsOf(host), ['play:sent', 'play:done']);

    // The host seeks with the player: the room moves there, the viewer follows.
    await ui.seek(host, 60);
    await until(viewer, () => window.lockstepExample.session.position > 59 && Math.abs(window.lockstepExample.video.currentTime - window.lockstepExample.session.position) < 0.5, 'the viewer to follow the seek');
    await until(host, () => !window.lockstepExample.video.seeking && window.lockstepExample.video.currentTime > 59, 'the host to stay at the seek');

    // The host pauses in the player: the room pauses there, the viewer too; the host is not resumed.
    await ui.pause(host);
    await until(viewer, () => window.lockstepExample.session.timeline.paused && window.lockstepExample.video.paused, 'the viewer to pause');
    await until(host, () => window.lockstepExample.video.paused && window.lockstepExample.session.timeline.paused, 'the host to stay paused');
    // Each element is put on the room's paused position by its next control step (a drift-control seek of the
    // host's may still have been landing when its user paused: Firefox then reports the pause before the seek ends).
    for (const p of [host, viewer]) {
      await until(p, () => window.lockstepExample.video.paused && !window.lockstepExample.video.seeking && Math.abs(window.lockstepExample.video.currentTime - window.lockstepExample.session.position) < 0.01, 'the element on the paused room position');
    }
    const [hp, vp] = await Promise.all([host, viewer].map((p) => p.evaluate(() => window.lockstepExample.video.currentTime)));
    assert.ok(Math.abs(hp - vp) < 0.1, `paused on the same frame: host ${hp}, viewer ${vp}`);
    assert.deepEqual(await commandsOf(host), ['play:sent', 'play:done', 'seek:sent', 'seek:done', 'pause:sent', 'pause:done']);

    // A command through the API: the session seeks and plays the host's
    // element itself, which is never echoed as a command.
    const drivesBefore = await host.evaluate(() => window.lockstepExample.drives);
    await host.evaluate(() => window.lockstepExample.session.seek(20).then(() => window.lockstepExample.session.play()));
    await until(host, () => !window.lockstepExample.video.paused && window.lockstepExample.video.currentTime > 20 && window.lockstepExample.video.currentTime < 30, 'the host to play from 20 s');
    await until(viewer, () => !window.lockstepExample.video.paused && window.lockstepExample.video.currentTime > 20 && window.lockstepExample.video.currentTime < 30, 'the viewer to play from 20 s');
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok((await host.evaluate(() => window.lockstepExample.drives)) > drivesBefore, 'the session drove the host element');
    assert.ok((await host.evaluate(() => window.lockstepExample.driveTypes.seek ?? 0)) >= 1, 'drift control seeked the host element');
    assert.equal((await commandsOf(host)).length, 6, 'no command echoed from the session\'s own changes');

    // The viewer may not control: its pause is refused and undone.
    await ui.pause(viewer);
    await until(viewer, () => window.lockstepExample.errors.some((/** @type {any} */ e) => e.kind === 'forbidden'), 'the viewer to be refused');
    await until(viewer, () => !window.lockstepExample.video.paused, 'the viewer to be played again');
    assert.equal(await host.evaluate(() => window.lockstepExample.session.timeline.paused), false, 'the room still plays');
    assert.deepEqual(await commandsOf(viewer), ['pause:sent', 'pause:refused']);

    // Drift control and joining made the viewer's element move, none of it a command.
    const drives = await viewer.evaluate(() => window.lockstepExample.driveTypes);
    assert.ok(drives.seek >= 2 && drives.play >= 2 && drives.pause >= 1, `the viewer's element was driven: ${JSON.stringify(drives)}`);
    assert.deepEqual([...host.pageErrors, ...viewer.pageErrors], []);
  } catch (e) {
    const state = await host.evaluate(() => {
      const x = window.lockstepExample;
      return { pos: x.video.currentTime, paused: x.video.paused, room: x.session?.timeline?.paused, commands: x.commands, errors: x.errors, drives: x.drives };
    });
    throw new Error(`${e instanceof Error ? e.message : e}\nthe host: ${JSON.stringify(state)}\nhost page errors: ${host.pageErrors.join('; ')}`, { cause: e });
  } finally {
    await host.context.close();
    await viewer.context.close();
  }
}

/**
 * A click on the first element `sel` matches, dispatched as the user's click arrives (in either engine).
 * @param {{evaluate: Function}} p
 * @param {string} sel
 */
const dispatchClick = (p, sel) =>
  p.evaluate((/** @type {string} */ sel) => {
    const e = document.querySelector(sel);
    if (!e) throw new Error(`no ${sel} on the page`);
    e.dispatchEvent(new MouseEvent('click', { bubbles: true, cancelable: true, composed: true }));
  }, sel);

// The control bar's play/pause button (hidden until the player is hovered: clicked as the user's click arrives);
// the big play button clicked by the mouse.
const VIDEOJS_UI = {
  play: (p) => p.click('.vjs-big-play-button'),
  pause: (p) => dispatchClick(p, '.vjs-control-bar .vjs-play-control'),
  seek: (p, t) => p.evaluate((t) => void window.lockstepExample.player.currentTime(t), t),
};

// Shaka's play/pause button: it acts only while the controls show (after the mouse moved over the video).
const shakaButton = async (p) => {
  const box = await p.evaluate(() => {
    const r = /** @type {HTMLElement} */ (document.querySelector('#container')).getBoundingClientRect();
    return { x: r.x, y: r.y, width: r.width, height: r.height };
  });
  await p.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await p.mouse.move(box.x + box.width / 2 + 5, box.y + box.height / 2 + 5);
  await p.waitForFunction(() => window.lockstepExample.ui.getControls().isOpaque(), null, { timeout: 5000 });
  await dispatchClick(p, '#container .shaka-play-button');
};
const SHAKA_UI = {
  play: shakaButton,
  pause: shakaButton,
  // Shaka has no seek API: its seek bar, like any page, sets the element's currentTime.
  seek: (p, t) => p.evaluate((t) => void (window.lockstepExample.video.currentTime = t), t),
};

test('video.js: the control bar drives the room', { timeout: 120_000 }, async () => {
  await scenario('videojs', VIDEOJS_UI);
});

test('shaka-player: its UI drives the room', { timeout: 120_000 }, async () => {
  await scenario('shaka', SHAKA_UI, '/media/manifest.mpd');
});

const DASHJS_API = {
  play: (p) => p.evaluate(() => void window.lockstepExample.player.play()),
  pause: (p) => p.evaluate(() => void window.lockstepExample.player.pause()),
  seek: (p, t) => p.evaluate((t) => void window.lockstepExample.player.seek(t), t),
};

// What the element's native controls do.
const NATIVE_CONTROLS = {
  play: (p) => p.evaluate(() => void window.lockstepExample.video.play()),
  pause: (p) => p.evaluate(() => window.lockstepExample.video.pause()),
  seek: (p, t) => p.evaluate((t) => void (window.lockstepExample.video.currentTime = t), t),
};

test('dash.js: the player API drives the room', { timeout: 120_000 }, async () => {
  await scenario('dashjs', DASHJS_API, '/media/manifest.mpd');
});

test('React: useLockstep with a <video controls>, its controls driving the room', { timeout: 120_000 }, async () => {
  await scenario('react', NATIVE_CONTROLS);
});

// The same in Firefox ESR.
test('video.js in Firefox: the control bar drives the room', { timeout: 120_000 }, async () => {
  await scenario('videojs', VIDEOJS_UI, undefined, openExampleFirefox);
});

test('shaka-player in Firefox: its UI drives the room', { timeout: 120_000 }, async () => {
  await scenario('shaka', SHAKA_UI, '/media/manifest.mpd', openExampleFirefox);
});

test('dash.js in Firefox: the player API drives the room', { timeout: 120_000 }, async () => {
  await scenario('dashjs', DASHJS_API, '/media/manifest.mpd', openExampleFirefox);
});

test('React in Firefox: useLockstep with a <video controls>, its controls driving the room', { timeout: 120_000 }, async () => {
  await scenario('react', NATIVE_CONTROLS, undefined, openExampleFirefox);
});
