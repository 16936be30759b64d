// The live demo page, served by the Lockstep server at /live (event
// `live-demo`) and /live/{eventId}.
//
// It plays an HLS live stream with hls.js (by default the server's own dev
// live source, /dev/live-source/stream.m3u8) and lets lockstep-client keep it
// in lockstep with the room: a live room, whose positions are program time
// (the wall-clock time at which a frame was captured, from the playlist's
// EXT-X-PROGRAM-DATE-TIME). It shows the room's latency behind the live edge
// (fixed or auto), the room's program time, the program time of the frame on
// screen (requestVideoFrameCallback), the distance to live and a Go live
// button; hosts get pause/play, −10 s and the rate.
//
// Sign-in and the session API are as on the watch page (watch.js): a dev
// token in --dev mode, else a pasted one; a device id per tab. Everything the
// page knows is in `window.lockstepLive` (also `window.lockstepDemo`, the name
// the browser tests' helpers read).
//
// Query parameters: ?src=URL another HLS stream (with program date-times);
// ?transport=websocket|webtransport forces one transport; ?wt=URL overrides
// the WebTransport base URL; ?wtHeadStart=ms sets how long WebSocket waits
// for WebTransport in the race (200); ?sync=off plays the stream with hls.js alone
// (its default settings; with &catchup=1 its catch-up on, up to 1.5×): the
// anchor the browser tests measure Lockstep against.

import { connect } from '/client/lockstep.js';

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

const params = new URLSearchParams(location.search);
const pathMatch = /^\/live\/([^/]+)\/?$/.exec(location.pathname);
const roomId = pathMatch ? decodeURIComponent(pathMatch[1]) : 'live-demo';
const streamSrc = params.get('src') || '/dev/live-source/stream.m3u8';
const transportParam = params.get('transport');
const transport = transportParam === 'webtransport' || transportParam === 'websocket' ? transportParam : 'auto';
const wtOverride = params.get('wt') || undefined;
/** ?wtHeadStart=ms: how long WebSocket waits for WebTransport (the client's default when absent). */
const wtHeadStart = Number.parseInt(params.get('wtHeadStart') ?? '', 10);
/** hls.js alone, no Lockstep (the anchor): its own settings, optionally its catch-up. */
const plain = params.get('sync') === 'off';
const PLAIN_CONFIG = params.get('catchup') === '1' ? { maxLiveSyncPlaybackRate: 1.5 } : {};

const HLS_CDN = 'https://cdn.jsdelivr.net/npm/hls.js@1/dist/hls.min.js';
const SUB_KEY = 'lockstep.demo.sub'; // localStorage: the dev user (shared with the watch page)
const TOKEN_KEY = 'lockstep.demo.token'; // localStorage: a pasted token
const DEVICE_KEY = 'lockstep.demo.deviceId'; // sessionStorage: each tab is a device

const video = /** @type {HTMLVideoElement} */ ($('video'));

/** What the page knows; read by the browser tests. */
const live = {
  /** @type {any} the lockstep-client session */
  session: null,
  video,
  /** @type {any} the hls.js instance */
  hls: null,
  /** @type {any} the live adapter (hlsJsAdapter(hls)) */
  adapter: null,
  roomId,
  streamSrc,
  /** @type {'server' | 'cdn' | null} where hls.js came from */
  hlsFrom: null,
  /** @type {string | null} */
  user: null,
  deviceId: '',
  /** @type {number | null} program time of the frame on screen, Unix ms */
  onScreenMs: null,
  /** @type {number | null} when (page clock, Date.now()) that frame was presented */
  onScreenAt: null,
  /** @type {any[]} the live states as they came */
  liveStates: [],
  /** @type {{code: number, kind: string, message: string}[]} */
  errors: [],
  /** @type {string[]} hls.js errors (type: details) */
  hlsErrors: [],
  /** @type {string | null} why the page gave up */
  fatal: null,
  /** @type {Promise<void> | null} */
  ready: null,
};
/** @type {any} */ (window).lockstepLive = live;
/** @type {any} */ (window).lockstepDemo = live;

let token = '';

// ------------------------------------------------------------------ helpers

/** @param {Storage} s */
const storage = (s) => ({
  /** @param {string} k */
  get: (k) => {
    try {
      return s.getItem(k);
    } catch {
      return null;
    }
  },
  /** @param {string} k @param {string} v */
  set: (k, v) => {
    try {
      s.setItem(k, v);
    } catch {}
  },
  /** @param {string} k */
  del: (k) => {
    try {
      s.removeItem(k);
    } catch {}
  },
});
const local = storage(window.localStorage);
const perTab = storage(window.sessionStorage);

function tabDeviceId() {
  let id = perTab.get(DEVICE_KEY);
  if (!id) {
    id = `web-${crypto.randomUUID ? crypto.randomUUID() : Math.random().toString(36).slice(2)}`;
    perTab.set(DEVICE_KEY, id);
  }
  return id;
}

/** A Unix time in ms as the time of day (local), with ms. @param {number | null} ms */
function fmtClock(ms) {
  if (ms === null || !Number.isFinite(ms)) return '--:--:--.---';
  const d = new Date(ms);
  const pad = (/** @type {number} */ n, w = 2) => String(n).padStart(w, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** @param {number | null} ms */
const fmtSecs = (ms) => (ms === null || !Number.isFinite(ms) ? '–' : `${(ms / 1000).toFixed(2)} s`);
/** @param {number} ms */
const fmtMs = (ms) => (Number.isFinite(ms) ? `${ms >= 0 ? '+' : ''}${ms.toFixed(1)} ms` : '–');

/** @param {string} text */
function log(text) {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  const list = $('log');
  list.prepend(li);
  while (list.childElementCount > 60) list.lastElementChild?.remove();
}

/** @param {string} text @param {boolean} [error] */
function say(text, error = false) {
  const m = $('message');
  m.textContent = text;
  m.classList.toggle('error', error);
}

/** @param {string} t */
function claims(t) {
  try {
    const p = t.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(p.padEnd(Math.ceil(p.length / 4) * 4, '='));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
  } catch {
    return {};
  }
}

class ApiError extends Error {
  /** @param {number} status @param {any} body */
  constructor(status, body) {
    super(body?.message || body?.error || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error;
  }
}

/** @param {number} ms */
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ signing in (as on the watch page)

/** @returns {Promise<string>} */
async function signIn() {
  const sub = local.get(SUB_KEY);
  const r = await fetch('/api/dev/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(sub ? { sub } : {}),
  });
  if (r.ok) {
    const body = await r.json();
    local.set(SUB_KEY, body.sub);
    return body.token;
  }
  if (r.status !== 404) throw new ApiError(r.status, await r.json().catch(() => null));
  const saved = local.get(TOKEN_KEY);
  const exp = saved ? claims(saved).exp : null;
  if (saved && !(typeof exp === 'number' && exp * 1000 < Date.now() + 30_000)) return saved;
  const form = /** @type {HTMLFormElement} */ ($('token-form'));
  form.hidden = false;
  return new Promise((resolve) => {
    form.onsubmit = (e) => {
      e.preventDefault();
      const t = /** @type {HTMLInputElement} */ ($('token-input')).value.trim();
      if (!t) return;
      local.set(TOKEN_KEY, t);
      form.hidden = true;
      resolve(t);
    };
  });
}

async function startSession() {
  const r = await fetch('/api/live-stream/session', {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ eventId: roomId, deviceId: live.deviceId }),
  });
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new ApiError(r.status, body);
  return body;
}

// ------------------------------------------------------------------ hls.js

/** hls.js: the server's copy (a classic script in the page), else the CDN's. */
async function loadHls() {
  const w = /** @type {any} */ (window);
  if (w.Hls) {
    live.hlsFrom = 'server';
    return w.Hls;
  }
  log('hls.js is not on the server (client-js/node_modules): loading it from the CDN');
  await new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.src = HLS_CDN;
    s.onload = resolve;
    s.onerror = () => reject(new Error(`hls.js could not be loaded from the server nor from ${HLS_CDN}`));
    document.head.append(s);
  });
  live.hlsFrom = 'cdn';
  return w.Hls;
}

/**
 * Waits until the stream's playlist answers (the dev source answers 503 with
 * Retry-After while its loop is being made, and says why when it cannot be).
 */
async function waitForStream() {
  for (let announced = false; ; ) {
    const r = await fetch(streamSrc, { cache: 'no-store' });
    if (r.ok) return;
    const body = await r.json().catch(() => null);
    if (r.status !== 503 || !r.headers.get('retry-after')) {
      throw new Error(`the live stream ${streamSrc} is unavailable: ${body?.message ?? `HTTP ${r.status}`}`);
    }
    if (!announced) {
      say(`waiting for the live stream: ${body?.message ?? 'starting'}`);
      announced = true;
    }
    await sleep(Math.min(5, Number(r.headers.get('retry-after')) || 1) * 1000);
  }
}

/** @param {any} Hls @param {any} config */
function startHls(Hls, config) {
  if (!Hls.isSupported()) throw new Error('this browser has no Media Source Extensions: hls.js cannot play here');
  const hls = new Hls(config);
  live.hls = hls;
  let mediaRecoveries = 0;
  hls.on(Hls.Events.ERROR, (/** @type {any} */ _e, /** @type {any} */ data) => {
    live.hlsErrors.push(`${data.type}: ${data.details}${data.fatal ? ' (fatal)' : ''}`);
    if (live.hlsErrors.length > 100) live.hlsErrors.splice(0, live.hlsErrors.length - 100);
    if (!data.fatal) return;
    log(`hls.js: ${data.type} ${data.details}: recovering`);
    if (data.type === Hls.ErrorTypes.NETWORK_ERROR) hls.startLoad();
    else if (data.type === Hls.ErrorTypes.MEDIA_ERROR && mediaRecoveries++ < 3) hls.recoverMediaError();
    else fail(new Error(`hls.js: ${data.type} ${data.details}`));
  });
  hls.loadSource(streamSrc);
  hls.attachMedia(video);
  return hls;
}

// ------------------------------------------------------------------ the session

/** @param {any} view the session API's answer @param {any} adapter the live adapter */
async function join(view, adapter) {
  $('room').textContent = view.eventId;
  document.title = `Lockstep live · ${view.eventId}`;
  const s = await connect({
    url: location.origin,
    eventId: view.eventId,
    token,
    deviceId: live.deviceId,
    transport,
    webtransportUrl: wtOverride ?? view.transports?.webtransport?.url,
    ...(Number.isFinite(wtHeadStart) && wtHeadStart >= 0 ? { webtransportHeadStartMs: wtHeadStart } : {}),
  });
  live.session = s;
  s.on('viewers', (/** @type {number} */ n) => ($('viewers').textContent = String(n)));
  s.on('transport', (/** @type {string} */ name) => showTransport(name));
  s.on('status', (/** @type {string} */ st) => onStatus(s, st));
  s.on('role', () => showRole(s));
  s.on('policy', () => showRole(s));
  s.on('live', (/** @type {any} */ l) => onLive(l));
  s.on('timeline', (/** @type {any} */ t) => onTimeline(s, t));
  s.on('error', (/** @type {any} */ e) => onError(e));
  s.attach(video, { live: adapter });
  showTransport(s.transport);
  $('status').textContent = s.status;
  $('viewers').textContent = String(s.viewers);
  showRole(s);
  if (s.live) onLive(s.live);
  log(`joined ${view.eventId} as ${s.role} over ${s.transport}`);
  return s;
}

/** @param {any} l the room's live state (null: a media room) */
function onLive(l) {
  live.liveStates.push(l === null ? null : { ...l, at: Date.now() });
  if (live.liveStates.length > 200) live.liveStates.splice(0, live.liveStates.length - 200);
  if (l === null) {
    say('this room is not a live room (start the server with --room-clock live): the stream is not synchronised', true);
    return;
  }
  log(`live: latency ${fmtSecs(l.latencyMs)} (${l.autoLatency ? 'auto' : 'fixed'}), ${l.atLive ? 'at live' : 'behind live'}`);
}

/** @param {any} s @param {any} t */
function onTimeline(s, t) {
  const rate = /** @type {HTMLSelectElement} */ ($('rate'));
  if (!t.pending && [...rate.options].some((o) => Number(o.value) === t.rate)) rate.value = String(t.rate);
  const who = t.by === 0 ? 'server' : t.by === s.memberId ? 'you' : `member ${t.by}`;
  log(`${t.reason}: ${t.paused ? 'paused' : 'playing'} ×${t.rate}${t.pending ? ' (scheduled)' : ''} by ${who}`);
}

/** @param {string | null} name */
function showTransport(name) {
  const b = $('transport');
  b.dataset.transport = name ?? '';
  b.textContent = name === 'webtransport' ? 'WebTransport' : name === 'websocket' ? 'WebSocket' : 'connecting…';
}

/** @param {any} s */
function showRole(s) {
  $('role').textContent = s.role ?? '–';
  const controls = s.role === 'host' || s.role === 'co-host' || s.policy === 'everyone';
  $('controls').hidden = !controls;
  $('viewer-note').hidden = controls;
  /** @type {HTMLButtonElement} */ ($('go-live')).disabled = !controls;
}

/** @param {any} s @param {string} st */
function onStatus(s, st) {
  $('status').textContent = st;
  if (st === 'reconnecting') log('connection lost: reconnecting');
  if (st === 'closed' && !s.leaving) {
    const last = live.errors.at(-1);
    fail(new Error(`disconnected${last ? `: ${last.message}` : ''} (reload to join again)`));
  }
}

/** @param {any} e */
function onError(e) {
  live.errors.push({ code: e.code ?? 0, kind: e.kind ?? '', message: e.message });
  if (live.errors.length > 200) live.errors.splice(0, live.errors.length - 200);
  if (e.kind === 'autoplay') {
    $('start').hidden = false;
    say('The browser blocked autoplay: click “Click to start playback”.');
    return;
  }
  log(`error: ${e.message}`);
}

/** @param {any} e */
function fail(e) {
  const msg = e instanceof ApiError && e.code === 'device_limit' ? 'device limit reached: close another tab or device' : e instanceof Error ? e.message : String(e);
  live.fatal = msg;
  say(msg, true);
  log(`failed: ${msg}`);
}

// ------------------------------------------------------------------ controls

/** @param {(s: any) => Promise<unknown>} fn */
const command = (fn) => () => {
  const s = live.session;
  if (s) fn(s).catch(() => {}); // refusals are shown through 'error'
};

$('play').addEventListener('click', command((s) => s.play()));
$('pause').addEventListener('click', command((s) => s.pause()));
$('go-live').addEventListener('click', command((s) => s.goLive()));
$('back10').addEventListener(
  'click',
  command(async (s) => {
    // Element time of the room's program time 10 s ago (seek() takes element time in a live room).
    const now = s.programTime();
    const to = now === null ? null : live.adapter?.toMediaTime(now - 10_000);
    if (to === null || to === undefined) throw new Error('the room has no program time yet');
    return s.seek(to);
  }),
);
$('rate').addEventListener('change', (e) => {
  const r = Number(/** @type {HTMLSelectElement} */ (e.target).value);
  command((s) => s.setRate(r))();
});
$('unmute').addEventListener('click', () => {
  video.muted = !video.muted;
  $('unmute').textContent = video.muted ? 'Unmute' : 'Mute';
});
$('start').addEventListener('click', () => {
  $('start').hidden = true;
  say('');
  video.play().catch(() => {});
});

// ------------------------------------------------------------------ readout

/** The program time of each frame presented, from its media time. */
function watchFrames() {
  if (!('requestVideoFrameCallback' in video)) return false;
  const onFrame = (/** @type {number} */ _now, /** @type {any} */ meta) => {
    const p = live.adapter?.toProgramTime(meta.mediaTime);
    if (typeof p === 'number' && Number.isFinite(p)) {
      live.onScreenMs = p;
      live.onScreenAt = Date.now();
    }
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  return true;
}

let framesWatched = false;

function render() {
  if (!framesWatched && live.adapter) {
    // Without requestVideoFrameCallback: currentTime (less exact, the same clock).
    const p = live.adapter.toProgramTime(video.currentTime);
    if (typeof p === 'number' && Number.isFinite(p) && video.readyState >= 2) {
      live.onScreenMs = p;
      live.onScreenAt = Date.now();
    }
  }
  $('on-screen').textContent = fmtClock(live.onScreenMs);
  $('on-screen-2').textContent = fmtClock(live.onScreenMs);
  const s = live.session;
  if (!s) return;
  const l = s.live;
  // (A page with ?sync=off stops above: it has no session.)
  const program = s.programTime();
  const edge = live.adapter?.liveEdge() ?? null;
  $('latency').textContent = l ? `${fmtSecs(l.latencyMs)} (${l.autoLatency ? 'auto' : 'fixed'})` : 'not a live room';
  $('program').textContent = fmtClock(program);
  $('edge').textContent = fmtClock(edge);
  // How far the room plays behind the newest media of the stream.
  $('distance').textContent =
    program !== null && edge !== null ? `${fmtSecs(edge - program)} behind the live edge${l?.atLive ? ' (at live)' : ''}` : '–';
  const badge = $('at-live');
  badge.dataset.live = l ? String(l.atLive) : '';
  badge.textContent = !l ? '–' : l.atLive ? 'LIVE' : 'behind live';
  const st = s.stats;
  $('drift').textContent = fmtMs(st.driftMs);
  $('rtt').textContent = Number.isFinite(st.rttMs) ? `${st.rttMs.toFixed(1)} ms` : '–';
  $('el-rate').textContent = `${video.playbackRate.toFixed(3)}×`;
  $('buffering').textContent = st.buffering ? 'yes' : 'no';
  $('corrections').textContent = `${st.corrections.seeks} seeks, ${st.corrections.rateChanges} rate changes`;
}
setInterval(render, 100);

// ------------------------------------------------------------------ start

async function main() {
  video.muted = true;
  live.deviceId = tabDeviceId();
  const Hls = await loadHls();
  let client;
  try {
    client = await import('/client/src/hls.js');
  } catch (e) {
    throw new Error(`this server's client has no live support (/client/src/hls.js): ${e instanceof Error ? e.message : e}`);
  }
  if (plain) {
    // hls.js alone: the adapter only reads program times for the display.
    await waitForStream();
    say('hls.js alone (no Lockstep): each viewer at its own distance from live');
    live.adapter = client.hlsJsAdapter(startHls(Hls, PLAIN_CONFIG));
    framesWatched = watchFrames();
    video.play().catch(() => ($('start').hidden = false));
    return;
  }
  token = await signIn();
  const c = claims(token);
  live.user = c.sub ?? null;
  $('user').textContent = `${c.sub ?? '?'} (${c.plan ?? 'free'})`;
  await waitForStream();
  say('');
  const hls = startHls(Hls, client.hlsJsConfig);
  live.adapter = client.hlsJsAdapter(hls);
  framesWatched = watchFrames();
  await join(await startSession(), live.adapter);
}

live.ready = main().catch(fail);
