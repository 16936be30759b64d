// What the browser tests share: headless Debian Chromium through
// playwright-core and headless Debian Firefox ESR through puppeteer-core
// (WebDriver BiDi; never a downloaded browser), the real server binary in dev
// mode, the demo watch page, probes of its state, waiting on conditions, and
// the skew measurement between pages (on presented frames where the browser
// reports them).

import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import dgram from 'node:dgram';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';
import { startServer } from '../../test/support/server.js';

const HERE = dirname(fileURLToPath(import.meta.url));
export const RESULTS_DIR = join(HERE, '..', 'results');
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const FIREFOX = process.env.FIREFOX_PATH ?? '/usr/bin/firefox-esr';
/** The oldest Firefox ESR the tests run on (the first Debian ESR measured here with WebTransport and working BiDi waits). */
const FIREFOX_MIN = 153;
export const VIDEO_PATH = join(HERE, '..', '..', 'demo', 'video.webm');
// `LOCKSTEP_E2E_CLIENT_SRC`: another client's src/ (e.g. an older commit's, for before/after figures).
const CLIENT_SRC = process.env.LOCKSTEP_E2E_CLIENT_SRC ?? join(HERE, '..', '..', 'src');

/**
 * The client module a request for `pathname` gets from the working tree (null: not one of them).
 * @param {string} pathname
 * @returns {string | null}
 */
function clientModule(pathname) {
  if (pathname === '/client/lockstep.js') return "export * from './src/index.js';\n";
  if (!pathname.startsWith('/client/src/')) return null;
  const file = join(CLIENT_SRC, ...pathname.slice('/client/src/'.length).split('/'));
  if (!file.startsWith(CLIENT_SRC) || !file.endsWith('.js') || !existsSync(file)) return null;
  return readFileSync(file, 'utf8');
}

/**
 * Serves the client's modules (`/client/lockstep.js`, `/client/src/*.js`) to
 * the pages of `context` from this working tree instead of the copy embedded
 * in the server binary, so the browser tests check the client as it is now
 * without rebuilding the server. `LOCKSTEP_E2E_EMBEDDED_CLIENT=1` tests the
 * embedded copy instead.
 * @param {import('playwright-core').BrowserContext} context
 */
export async function serveClientFromDisk(context) {
  if (process.env.LOCKSTEP_E2E_EMBEDDED_CLIENT === '1') return;
  await context.route(
    (url) => url.pathname === '/client/lockstep.js' || url.pathname.startsWith('/client/src/'),
    async (route) => {
      const body = clientModule(new URL(route.request().url()).pathname);
      if (body === null) return route.continue();
      await route.fulfill({ status: 200, contentType: 'text/javascript; charset=utf-8', headers: { 'cache-control': 'no-store' }, body });
    },
  );
}

/**
 * Debian's Chromium, headless. Autoplay is allowed (the page also plays muted).
 * @param {{args?: string[], env?: Record<string, string | undefined>}} [o] more flags; the browser's environment
 */
export async function launchBrowser(o = {}) {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (.ci/test does it); playwright never downloads a browser here`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    ...(o.env ? { env: o.env } : {}),
    args: [
      '--no-sandbox',
      '--headless=new',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--autoplay-policy=no-user-gesture-required',
      ...(o.args ?? []),
    ],
  });
}

/**
 * The real server (`--dev`, its own data dir, HTTP and QUIC on free ports).
 * @param {string[]} [args]
 */
export async function startLockstep(args = []) {
  const server = await startServer(args);
  // eslint-disable-next-line no-control-regex
  const text = server.log.join('').replace(/\x1b\[[0-9;]*m/g, '');
  const m = /listening http=\S+ quic=(\S+):(\d+)/.exec(text);
  assert.ok(m, `no QUIC address in the server log:\n${text}`);
  return { ...server, quicPort: Number(m[2]) };
}

/**
 * The fixture of a test file: registers hooks that start the real server
 * (with `args`) and Debian's Chromium before the file's tests and stop both
 * after them. Read `env.server` and `env.browser` inside tests.
 * @param {string[]} [args]
 */
export function useLockstep(args = []) {
  const env = /** @type {{server: Awaited<ReturnType<typeof startLockstep>>, browser: import('playwright-core').Browser}} */ ({});
  before(async () => {
    env.server = await startLockstep(args);
    env.browser = await launchBrowser();
  });
  after(async () => {
    await env.browser?.close();
    await env.server?.stop();
  });
  return env;
}

/**
 * The page's URL with `wtHeadStart=5000` unless it sets one: where the tests
 * expect WebTransport to win the race, it must win on a loaded CI machine too
 * (a debug build's first QUIC handshake can take longer than the client's
 * 200 ms default). A WebTransport attempt that fails starts WebSocket at
 * once, so pages that fall back are not slowed; one that hangs is, by 5 s.
 * @param {string} url
 */
function withHeadStart(url) {
  const u = new URL(url);
  if (!u.searchParams.has('wtHeadStart')) u.searchParams.set('wtHeadStart', '5000');
  return u.toString();
}

/**
 * Opens the watch page in a fresh browser context (its own storage: another
 * user and device) and waits until it has joined its room.
 * @param {import('playwright-core').Browser} browser
 * @param {string} url
 * @param {{noWebTransport?: boolean, setup?: (page: import('playwright-core').Page) => Promise<void>, timeoutMs?: number}} [o]
 */
export async function openWatch(browser, url, o = {}) {
  const context = await browser.newContext();
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
  await page.goto(withHeadStart(url));
  await waitFor(page, () => window.lockstepDemo?.session?.status === 'open' || Boolean(window.lockstepDemo?.fatal), null, {
    what: `the page ${url} to join`,
    timeoutMs: o.timeoutMs ?? 20_000,
  });
  const fatal = await page.evaluate(() => window.lockstepDemo.fatal);
  assert.equal(fatal, null, `the page failed: ${fatal}`);
  return Object.assign(page, { pageErrors });
}

/**
 * Debian's Firefox ESR, headless, through puppeteer-core over WebDriver BiDi:
 * one browser per page (a background page's timers and frames are
 * throttled). Autoplay is allowed (the page also plays muted).
 * @param {{prefs?: Record<string, unknown>}} [o] more Firefox preferences (a probe's, e.g. `layout.frame_rate`)
 */
export async function launchFirefox({ prefs = {} } = {}) {
  if (!existsSync(FIREFOX)) {
    throw new Error(`${FIREFOX} is missing: apt-get install -y firefox-esr (.ci/test does it); puppeteer never downloads a browser here`);
  }
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: FIREFOX,
    headless: true,
    extraPrefsFirefox: { 'media.autoplay.default': 0, 'media.autoplay.blocking_policy': 0, ...prefs },
  });
  // An older ESR (140, from stale package lists) opens the page but fails every wait on it ("Waiting failed").
  const version = await browser.version();
  const major = Number(/(\d+)\./.exec(version)?.[1]);
  if (!(major >= FIREFOX_MIN)) {
    await browser.close();
    throw new Error(`${FIREFOX} is ${version}; the tests need Firefox ESR ${FIREFOX_MIN} or later: apt-get update && apt-get install -y firefox-esr (.ci/test does it)`);
  }
  return browser;
}

/**
 * A puppeteer page behind the part of Playwright's `Page` the tests use
 * (evaluate, waitForFunction, click, fill, press, textContent, isVisible,
 * selectOption, context().close()), so every helper here drives either engine.
 * @param {import('puppeteer-core').Browser} browser its own browser (closed with the page)
 * @param {import('puppeteer-core').Page} page
 */
export function firefoxPage(browser, page) {
  return {
    engine: 'firefox',
    /** @template A @param {(arg: A) => any} fn @param {A} [arg] */
    evaluate: (fn, arg) => page.evaluate(/** @type {any} */ (fn), arg),
    /** @template A @param {(arg: A) => any} fn @param {A} arg @param {{polling?: number, timeout?: number}} [o] */
    waitForFunction: (fn, arg, o = {}) => page.waitForFunction(/** @type {any} */ (fn), { polling: o.polling ?? 50, timeout: o.timeout ?? 15_000 }, arg),
    /** @param {string} sel */
    click: (sel) => page.click(sel),
    mouse: {
      /** @param {number} x @param {number} y */
      move: (x, y) => page.mouse.move(x, y),
    },
    /** Replaces the field's text, typed as a user would. @param {string} sel @param {string} text */
    fill: async (sel, text) => {
      await page.$eval(sel, (e) => {
        /** @type {HTMLInputElement} */ (e).value = '';
      });
      await page.type(sel, text);
    },
    /** @param {string} sel @param {import('puppeteer-core').KeyInput} key */
    press: async (sel, key) => {
      await page.focus(sel);
      await page.keyboard.press(key);
    },
    /** @param {string} sel */
    textContent: (sel) => page.$eval(sel, (e) => e.textContent),
    /** @param {string} sel */
    isVisible: (sel) =>
      page.$eval(sel, (e) => {
        const st = getComputedStyle(e);
        return st.display !== 'none' && st.visibility !== 'hidden' && e.getClientRects().length > 0;
      }),
    /** @param {string} sel @param {string} value */
    selectOption: (sel, value) => page.select(sel, value),
    context: () => ({ close: () => browser.close() }),
    version: () => browser.version(),
  };
}

/**
 * Opens the watch page in its own headless Firefox (its own profile: another
 * user and device), the client's modules served from this working tree by
 * request interception, and waits until it has joined its room.
 * `intercept`: sees every request first and answers true when it took it
 * (continued, answered or held it). `ready`: for another page than the demo
 * (the `/live` page), `done` when it joined or failed, `fatal` its error.
 * @param {string} url
 * @param {{noWebTransport?: boolean, timeoutMs?: number, intercept?: (req: import('puppeteer-core').HTTPRequest) => boolean, ready?: {done: () => unknown, fatal: () => unknown}}} [o]
 */
export async function openFirefoxWatch(url, o = {}) {
  const browser = await launchFirefox();
  try {
    const page = await browser.newPage();
    /** @type {string[]} */
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e instanceof Error ? e.message : String(e)));
    const modules = process.env.LOCKSTEP_E2E_EMBEDDED_CLIENT !== '1';
    if (modules || o.intercept) {
      await page.setRequestInterception(true);
      page.on('request', (req) => {
        if (o.intercept?.(req)) return;
        const body = modules ? clientModule(new URL(req.url()).pathname) : null;
        if (body === null) return void req.continue();
        void req.respond({ status: 200, contentType: 'text/javascript; charset=utf-8', headers: { 'cache-control': 'no-store' }, body });
      });
    }
    if (o.noWebTransport) {
      await page.evaluateOnNewDocument(() => {
        // @ts-ignore
        delete window.WebTransport;
      });
    }
    const p = Object.assign(firefoxPage(browser, page), { pageErrors });
    await page.goto(withHeadStart(url));
    const ready = o.ready ?? {
      done: () => window.lockstepDemo?.session?.status === 'open' || Boolean(window.lockstepDemo?.fatal),
      fatal: () => window.lockstepDemo.fatal,
    };
    await waitFor(/** @type {any} */ (p), ready.done, null, { what: `the Firefox page ${url} to join`, timeoutMs: o.timeoutMs ?? 20_000 });
    const fatal = await p.evaluate(ready.fatal);
    assert.equal(fatal, null, `the page failed: ${fatal}`);
    return p;
  } catch (e) {
    await browser.close();
    throw e;
  }
}

/**
 * Records the frames the page's video presents (requestVideoFrameCallback:
 * when each is expected on screen, on the page's Unix-epoch clock, and its
 * media time), for `probe()`'s `shown`, and the element's rate changes (when,
 * the new rate), so a frame is carried to the sampling instant at the rates
 * the element played at since (a frame shown during a 10 % catch-up carried
 * at the rate that followed it would be tens of ms off). A page without
 * requestVideoFrameCallback keeps `shown` null. The element's events (play,
 * playing, pause, seeking, seeked, waiting, ratechange) are logged for
 * `elementEvents()`.
 * @param {{evaluate: Function}} page
 */
export async function recordFrames(page) {
  return page.evaluate(() => {
    const w = /** @type {any} */ (window);
    const v = w.lockstepDemo.video;
    if (typeof v.requestVideoFrameCallback !== 'function') return false;
    /** @type {[number, number][]} */
    const frames = [];
    w.__frames = frames;
    /** @type {[number, number][]} the element's rate from each time on (page's Unix-epoch clock, ms) */
    const rates = [[-Infinity, v.playbackRate]];
    w.__rates = rates;
    v.addEventListener('ratechange', () => {
      rates.push([performance.timeOrigin + performance.now(), v.playbackRate]);
      if (rates.length > 200) rates.splice(0, 100);
    });
    /** @type {[number, string, number][]} the element's events (page's Unix-epoch clock, ms; type; currentTime, ms) */
    const events = [];
    w.__events = events;
    for (const type of ['play', 'playing', 'pause', 'seeking', 'seeked', 'waiting', 'ratechange']) {
      v.addEventListener(type, () => {
        events.push([performance.timeOrigin + performance.now(), type, v.currentTime * 1000]);
        if (events.length > 400) events.splice(0, 200);
      });
    }
    const onFrame = (/** @type {number} */ now, /** @type {any} */ meta) => {
      const shown = performance.timeOrigin + (Number.isFinite(meta.expectedDisplayTime) ? meta.expectedDisplayTime : now);
      // A frame reported long after it was shown (the paused frame, once playing again) is not on the line.
      if (shown < performance.timeOrigin + performance.now() - 100) return void v.requestVideoFrameCallback(onFrame);
      const last = frames.at(-1);
      // A frame off the line of the one before (a seek, a jump) starts afresh.
      if (last && Math.abs(meta.mediaTime - (last[1] + ((shown - last[0]) / 1000) * v.playbackRate)) > 0.1) frames.length = 0;
      if (!v.paused && !v.seeking) frames.push([shown, meta.mediaTime]);
      else frames.length = 0;
      if (frames.length > 200) frames.splice(0, 100);
      v.requestVideoFrameCallback(onFrame);
    };
    for (const ev of ['seeking', 'pause', 'emptied']) v.addEventListener(ev, () => (frames.length = 0));
    v.requestVideoFrameCallback(onFrame);
    return true;
  });
}

/**
 * The element's events since `sinceMs` (Unix-epoch ms), as `recordFrames` logged them: `[ms after sinceMs, type,
 * currentTime in ms]` each (empty before `recordFrames`).
 * @param {{evaluate: Function}} page
 * @param {number} sinceMs
 * @returns {Promise<[number, string, number][]>}
 */
export function elementEvents(page, sinceMs) {
  return page.evaluate((since) => {
    /** @type {[number, string, number][]} */
    const events = /** @type {any} */ (window).__events ?? [];
    const r2 = (/** @type {number} */ x) => Math.round(x * 100) / 100;
    return events.filter((e) => e[0] >= since).map((e) => [r2(e[0] - since), e[1], r2(e[2])]);
  }, sinceMs);
}

/**
 * Waits until `fn(arg)` is truthy in the page, polling every 50 ms.
 * @template T
 * @param {import('playwright-core').Page} page
 * @param {(arg: T) => unknown} fn
 * @param {T} arg
 * @param {{what: string, timeoutMs?: number}} o
 */
export async function waitFor(page, fn, arg, o) {
  try {
    await page.waitForFunction(fn, arg, { polling: 50, timeout: o.timeoutMs ?? 15_000 });
  } catch (e) {
    const state = await probe(page).catch(() => null);
    throw new Error(`timed out waiting for ${o.what}; page state: ${JSON.stringify(state)}; ${e}`, { cause: e });
  }
}

/**
 * Waits until `fn()` (in node) resolves truthy, polling.
 * @template T
 * @param {() => Promise<T> | T} fn
 * @param {{what: string, timeoutMs?: number, intervalMs?: number}} o
 * @returns {Promise<T>}
 */
export async function waitUntil(fn, o) {
  const deadline = Date.now() + (o.timeoutMs ?? 15_000);
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${o.what}`);
    await new Promise((r) => setTimeout(r, o.intervalMs ?? 50));
  }
}

/**
 * @typedef {Object} Probe
 * @property {number} t the page's clock (performance.timeOrigin + now()), ms
 * @property {number} pos the element's currentTime, s
 * @property {number} rate the element's playbackRate
 * @property {boolean} paused
 * @property {boolean} seeking
 * @property {number} readyState
 * @property {string | null} transport
 * @property {string | null} status
 * @property {string | null} role
 * @property {string | null} room
 * @property {number} driftMs
 * @property {boolean} buffering
 * @property {number} seeks
 * @property {number} rateChanges
 * @property {number} offsetMs the page's estimate of the server clock minus its own (NaN before joining)
 * @property {number} rttMs the round trip that estimate rests on
 * @property {number} startLatencyMs the page's learned start-up latency (0 until measured)
 * @property {number} seekLatencyMs the page's learned seek latency
 * @property {number} reconnects
 * @property {number | null} roomPos the room position now, s
 * @property {number | null} roomRate
 * @property {boolean | null} roomPaused
 * @property {number | null} shown the presented frames' position now, s: each frame of the last second carried from
 *   when it was on screen to `t` at the rates the element played at since (its `ratechange` events), their mean (null: no frames recorded, see `recordFrames`)
 * @property {number | null} lastShown the same from the last frame presented only (quantized by frames and refreshes)
 */

/** @param {{evaluate: Function}} page @returns {Promise<Probe>} */
export function probe(page) {
  return page.evaluate(() => {
    const d = window.lockstepDemo;
    const v = d.video;
    const s = d.session;
    const st = s?.stats;
    const tl = s?.timeline;
    const t = performance.timeOrigin + performance.now();
    /** @type {[number, number][] | undefined} */
    const frames = /** @type {any} */ (window).__frames;
    let shown = null;
    let lastShown = null;
    /** @type {[number, number][]} */
    const rates = /** @type {any} */ (window).__rates ?? [[-Infinity, v.playbackRate]];
    /** Media time played from `from` to `t` (ms), at the rates in force between them, s. */
    const played = (/** @type {number} */ from) => {
      let s = 0;
      for (let i = 0; i < rates.length; i++) {
        const a = Math.max(from, rates[i][0]);
        const b = Math.min(t, i + 1 < rates.length ? rates[i + 1][0] : t);
        if (b > a) s += ((b - a) / 1000) * rates[i][1];
      }
      // A frame expected on screen after `t`: carried back at the rate now.
      return from > t ? ((t - from) / 1000) * v.playbackRate : s;
    };
    if (frames && !v.paused && !v.seeking) {
      const recent = frames.filter((f) => f[0] >= t - 1000 && f[0] <= t + 50);
      if (recent.length >= 3) {
        shown = recent.reduce((a, f) => a + f[1] + played(f[0]), 0) / recent.length;
        const last = recent.filter((f) => f[0] <= t).at(-1);
        if (last) lastShown = last[1] + played(last[0]);
      }
    }
    return {
      shown,
      lastShown,
      t,
      pos: v.currentTime,
      rate: v.playbackRate,
      paused: v.paused,
      seeking: v.seeking,
      readyState: v.readyState,
      transport: s?.transport ?? null,
      status: s?.status ?? null,
      role: s?.role ?? null,
      room: d.roomId,
      driftMs: st ? st.driftMs : NaN,
      offsetMs: st ? st.offsetMs : NaN,
      rttMs: st ? st.rttMs : NaN,
      buffering: st ? st.buffering : false,
      seeks: st ? st.corrections.seeks : 0,
      rateChanges: st ? st.corrections.rateChanges : 0,
      startLatencyMs: st ? st.startLatencyMs : 0,
      seekLatencyMs: st ? st.seekLatencyMs : 0,
      reconnects: st ? st.reconnects : 0,
      roomPos: s ? s.position : null,
      roomRate: tl ? tl.rate : null,
      roomPaused: tl ? tl.paused : null,
    };
  });
}

/**
 * Skew of page a against page b, ms: a's position minus b's, b's position
 * carried to a's sampling instant at b's rate (both pages read one clock).
 * `key`: the playhead (`pos`, currentTime) or the presented frames (`shown`,
 * `lastShown`; null when either page has none).
 * @param {Probe} a @param {Probe} b @param {'pos' | 'shown' | 'lastShown'} [key]
 */
export function skewMs(a, b, key = 'pos') {
  const pa = a[key];
  const pb = b[key];
  if (pa === null || pb === null) return null;
  const carried = b.paused ? pb : pb + ((a.t - b.t) / 1000) * b.rate;
  return (pa - carried) * 1000;
}

/** @param {Probe} p */
const settledProbe = (p, boundMs = 25) =>
  p.status === 'open' && !p.paused && !p.seeking && !p.buffering && p.readyState >= 3 && Math.abs(p.driftMs) < boundMs;

/**
 * A figure for the results: to 0.01 (null when it is none or not finite).
 * @param {number | null} x
 */
export function round2(x) {
  return x === null || !Number.isFinite(x) ? null : Math.round(x * 100) / 100;
}

/**
 * A page's playhead (`clockMs`) and presented frames (`shownMs`) against the room's position, ms to 0.01 (null where
 * it has none).
 * @param {Probe} p
 */
export function fromRoom(p) {
  return {
    clockMs: p.roomPos === null ? null : round2((p.pos - p.roomPos) * 1000),
    shownMs: p.shown === null || p.roomPos === null ? null : round2((p.shown - p.roomPos) * 1000),
  };
}

/**
 * Waits for a steady state: every page open, playing, not seeking or
 * buffering, within `boundMs` of the room by its own estimate, for `forMs`.
 * With `record`, each poll's pages go there (ms from the start; each page's own drift reading, rate, playhead and
 * frames against the room's position, clock offset estimate).
 * @param {import('playwright-core').Page[]} pages
 * @param {{boundMs?: number, forMs?: number, timeoutMs?: number, record?: {ms: number, pages: object[]}[]}} [o]
 */
export async function waitSteady(pages, { boundMs = 25, forMs = 1000, timeoutMs = 20_000, record } = {}) {
  let since = null;
  /** @type {Probe[]} */
  let last = [];
  const t0 = Date.now();
  const deadline = t0 + timeoutMs;
  for (;;) {
    last = await Promise.all(pages.map(probe));
    record?.push({
      ms: Date.now() - t0,
      pages: last.map((p) => ({
        drift: round2(p.driftMs),
        rate: p.rate,
        ...fromRoom(p),
        off: round2(p.offsetMs),
      })),
    });
    if (last.every((p) => settledProbe(p, boundMs))) {
      since ??= Date.now();
      if (Date.now() - since >= forMs) return last;
    } else {
      since = null;
    }
    if (Date.now() > deadline) throw new Error(`no steady state within ${timeoutMs} ms: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Samples the skew between two playing pages `n` times, `intervalMs` apart.
 * @param {import('playwright-core').Page} a
 * @param {import('playwright-core').Page} b
 */
export async function sampleSkew(a, b, { n = 250, intervalMs = 20 } = {}) {
  /** @type {number[]} */
  const skews = [];
  /** @type {{a: Probe, b: Probe}[]} */
  const bad = [];
  while (skews.length < n) {
    const [pa, pb] = await Promise.all([probe(a), probe(b)]);
    if (pa.paused || pb.paused) bad.push({ a: pa, b: pb });
    else skews.push(skewMs(pa, pb));
    assert.ok(bad.length < 5, `pages stopped playing while sampled: ${JSON.stringify(bad.at(-1))}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  return skews;
}

/** @param {number[]} sorted ascending @param {number} q 0..1 */
function quantile(sorted, q) {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

/** Percentiles of |skew| (and the signed mean), ms. @param {number[]} skews */
export function summarize(skews) {
  const abs = skews.map(Math.abs).sort((x, y) => x - y);
  const r = (/** @type {number} */ x) => Math.round(x * 100) / 100;
  return {
    samples: skews.length,
    p50Ms: r(quantile(abs, 0.5)),
    p95Ms: r(quantile(abs, 0.95)),
    p99Ms: r(quantile(abs, 0.99)),
    maxMs: r(abs.at(-1) ?? NaN),
    meanSignedMs: r(skews.reduce((s, x) => s + x, 0) / (skews.length || 1)),
  };
}

/**
 * Writes a result to e2e/results/{name}.json (git-ignored) and prints it.
 * @param {import('node:test').TestContext} t
 * @param {string} name
 * @param {Record<string, unknown>} result
 */
export function record(t, name, result) {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const body = { name, at: new Date().toISOString(), ...result };
  writeFileSync(join(RESULTS_DIR, `${name}.json`), `${JSON.stringify(body, null, 2)}\n`);
  const { skews: _skews, ...short } = body;
  t.diagnostic(`${name}: ${JSON.stringify(short)}`);
}

/**
 * A UDP relay on 127.0.0.1 to `port`: one upstream socket per client
 * address. `close()` shuts it all, so the client's next packets meet a
 * closed port.
 * @param {number} port
 */
export async function udpRelay(port) {
  const front = dgram.createSocket('udp4');
  /** @type {Map<string, dgram.Socket>} */
  const ups = new Map();
  let packets = 0;
  let closed = false;
  front.on('message', (msg, from) => {
    packets++;
    const key = `${from.address}:${from.port}`;
    let up = ups.get(key);
    if (!up) {
      up = dgram.createSocket('udp4');
      up.on('message', (m) => front.send(m, from.port, from.address));
      up.on('error', () => {});
      ups.set(key, up);
    }
    up.send(msg, port, '127.0.0.1');
  });
  front.on('error', () => {});
  await new Promise((resolve) => front.bind(0, '127.0.0.1', () => resolve(undefined)));
  return {
    port: front.address().port,
    get packets() {
      return packets;
    },
    close() {
      if (closed) return;
      closed = true;
      front.close();
      for (const u of ups.values()) u.close();
      ups.clear();
    },
  };
}

/**
 * The demo page's chat as shown: each message's text as the page shows it, how many images the log holds, and
 * whether a script in a message ran (`window.pwned`).
 * @param {{evaluate: Function}} page
 * @returns {Promise<{texts: (string | null)[], images: number, pwned: unknown}>}
 */
export function chatShown(page) {
  return page.evaluate(() => ({
    texts: [...document.querySelectorAll('#chat-log li .text')].map((e) => e.textContent),
    images: document.querySelectorAll('#chat-log img').length,
    pwned: /** @type {any} */ (window).pwned ?? null,
  }));
}

/**
 * Waits until the demo page has counted `n` reactions in all (over its `Reactions` windows).
 * @param {{evaluate: Function}} page @param {number} n @param {string} what
 */
export function waitReactions(page, n, what) {
  return waitFor(/** @type {any} */ (page), (k) => lockstepDemo.reactions.flat().reduce((s, c) => s + c.count, 0) === k, n, {
    what,
    timeoutMs: 10_000,
  });
}

/**
 * The room's REST state (404 → null).
 * @param {string} url @param {string} eventId
 */
export async function roomState(url, eventId) {
  const r = await fetch(`${url}/api/live-stream/${encodeURIComponent(eventId)}/state`);
  if (r.status === 404) return null;
  assert.equal(r.status, 200);
  return r.json();
}

/** A fresh event id per test (rooms persist in the server's data dir). @param {string} name */
export const eventId = (name) => `e2e-${name}-${Date.now().toString(36)}`;
