// The demo watch page, served by the Lockstep server at / and /watch/{eventId}.
//
// It signs in (a dev token in --dev mode, else a token pasted by the viewer),
// starts a viewing session with the session API (or accepts the invitation of
// ?invite=ID), connects with lockstep-client over the transports the session
// API names, and lets the client drive the <video>. Hosts get the controls;
// premium users an Invite button. Everything the page knows is also in
// `window.lockstepDemo` (the browser tests read it).
//
// Query parameters: ?invite=ID accepts an invitation; ?src=URL plays other
// media; ?transport=websocket|webtransport forces one transport; ?wt=URL
// overrides the WebTransport base URL (https://host:port); ?wtHeadStart=ms
// sets how long WebSocket waits for WebTransport in the race (200).

import { connect } from '/client/lockstep.js';

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

const params = new URLSearchParams(location.search);
const pathMatch = /^\/watch\/([^/]+)\/?$/.exec(location.pathname);
const startRoom = pathMatch ? decodeURIComponent(pathMatch[1]) : 'demo';
const inviteId = params.get('invite');
const mediaSrc = params.get('src') || '/demo/video.webm';
const transportParam = params.get('transport');
const transport = transportParam === 'webtransport' || transportParam === 'websocket' ? transportParam : 'auto';
const wtOverride = params.get('wt') || undefined;
/** ?wtHeadStart=ms: how long WebSocket waits for WebTransport (the client's default when absent). */
const wtHeadStart = Number.parseInt(params.get('wtHeadStart') ?? '', 10);

const SUB_KEY = 'lockstep.demo.sub'; // localStorage: the dev user survives reloads
const TOKEN_KEY = 'lockstep.demo.token'; // localStorage: a pasted token (not in dev mode)
const DEVICE_KEY = 'lockstep.demo.deviceId'; // sessionStorage: each tab is a device
const PARTY_SEP = '~'; // watch-party rooms are `{eventId}~{party}`
const FATAL_AUTH = new Set([4012, 4013]); // unauthorized, token expired: sign in again

const video = /** @type {HTMLVideoElement} */ ($('video'));

/** What the page knows; read by the browser tests. */
const demo = {
  /** @type {any} the lockstep-client session */
  session: null,
  video,
  /** @type {string | null} the room joined: the event id or a watch party's room id */
  roomId: null,
  /** @type {string | null} */
  user: null,
  /** @type {string | null} */
  plan: null,
  devMode: false,
  deviceId: '',
  /** @type {any[]} timeline events as they came */
  events: [],
  /** @type {{emoji: string, count: number}[][]} the room's reaction windows as they came */
  reactions: [],
  /** @type {{mediaId: string | null, epoch: number}[]} the room's media switches as they came */
  media: [],
  /** @type {{id: number, name: string, text: string, mine: boolean, history: boolean}[]} chat messages shown, oldest first */
  chat: [],
  /** @type {{code: number, kind: string, message: string}[]} */
  errors: [],
  /** @type {any} the last invitation created here (set once the host is in the party's room) */
  invite: null,
  /** @type {string | null} why the page gave up */
  fatal: null,
  /** @type {Promise<void> | null} resolves once joined the first time */
  ready: null,
};
/** @type {any} */ (window).lockstepDemo = demo;

let token = '';
/** The last timeline announced (possibly still pending), and when. @type {any} */
let announced = null;

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

function randomId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Math.random().toString(36).slice(2) + Date.now().toString(36);
}

/** This tab's device id: kept across reloads of the tab, different in another tab. */
function tabDeviceId() {
  let id = perTab.get(DEVICE_KEY);
  if (!id) {
    id = `web-${randomId()}`;
    perTab.set(DEVICE_KEY, id);
  }
  return id;
}

/** @param {number} s seconds */
function fmtTime(s) {
  if (s === null || !Number.isFinite(s)) return '--:--.---';
  const ms = Math.max(0, Math.round(s * 1000));
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor(ms / 60_000) % 60;
  const sec = Math.floor(ms / 1000) % 60;
  const pad = (/** @type {number} */ n, w = 2) => String(n).padStart(w, '0');
  return `${h ? `${h}:` : ''}${pad(m)}:${pad(sec)}.${pad(ms % 1000, 3)}`;
}

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

/** The payload of a JWT (not verified: only to show the user and plan). @param {string} t */
function claims(t) {
  try {
    const p = t.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(p.padEnd(Math.ceil(p.length / 4) * 4, '='));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
  } catch {
    return {};
  }
}

/** @param {string} t */
const expired = (t) => {
  const exp = claims(t).exp;
  return typeof exp === 'number' && exp * 1000 < Date.now() + 30_000;
};

/** The page URL of a room, keeping ?src and the like (but not ?invite). @param {string} roomId */
function urlFor(roomId) {
  const q = new URLSearchParams(params);
  q.delete('invite');
  const s = q.toString();
  return `/watch/${encodeURIComponent(roomId)}${s ? `?${s}` : ''}`;
}

class ApiError extends Error {
  /** @param {number} status @param {any} body */
  constructor(status, body) {
    super(body?.message || body?.error || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error;
    this.body = body;
  }
}

// ------------------------------------------------------------------ signing in

/**
 * A token: in dev mode a fresh one for the demo user of this browser (the
 * server mints premium users), else the pasted one while it is valid.
 * @returns {Promise<string>}
 */
async function signIn() {
  const sub = local.get(SUB_KEY);
  const r = await fetch('/api/dev/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(sub ? { sub } : {}),
  });
  if (r.ok) {
    const body = await r.json();
    demo.devMode = true;
    local.set(SUB_KEY, body.sub);
    return body.token;
  }
  if (r.status !== 404) throw new ApiError(r.status, await r.json().catch(() => null));
  demo.devMode = false;
  const saved = local.get(TOKEN_KEY);
  if (saved && !expired(saved)) return saved;
  return askForToken();
}

/** @param {string} [why] @returns {Promise<string>} */
function askForToken(why) {
  const form = /** @type {HTMLFormElement} */ ($('token-form'));
  const input = /** @type {HTMLInputElement} */ ($('token-input'));
  form.hidden = false;
  if (why) say(why, true);
  input.focus();
  return new Promise((resolve) => {
    form.onsubmit = (e) => {
      e.preventDefault();
      const t = input.value.trim();
      if (!t) return;
      local.set(TOKEN_KEY, t);
      form.hidden = true;
      say('');
      resolve(t);
    };
  });
}

function showUser() {
  const c = claims(token);
  demo.user = c.sub ?? null;
  demo.plan = c.plan ?? 'free';
  $('user').textContent = `${c.sub ?? '?'} (${demo.plan})`;
  $('invite-box').hidden = demo.plan !== 'premium';
}

/**
 * A REST call with the token; a refused token (401) asks for another one
 * (dev mode: mints one) and tries again.
 * @param {string} method @param {string} path @param {unknown} [body]
 */
async function api(method, path, body) {
  for (let attempt = 0; ; attempt++) {
    /** @type {Record<string, string>} */
    const headers = { authorization: `Bearer ${token}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const data = r.status === 204 ? null : await r.json().catch(() => null);
    if (r.status === 401 && attempt < 2) {
      local.del(TOKEN_KEY);
      token = demo.devMode ? await signIn() : await askForToken(`the token was refused: ${data?.message ?? data?.error}`);
      showUser();
      continue;
    }
    if (!r.ok) throw new ApiError(r.status, data);
    return data;
  }
}

/** @param {string} roomId */
const startSession = (roomId) => api('POST', '/api/live-stream/session', { eventId: roomId, deviceId: demo.deviceId });

// ------------------------------------------------------------------ the session

/**
 * Connects to the room of a session view (what the session API and an
 * accepted invitation answer) and drives the video.
 * @param {any} view
 */
async function join(view) {
  demo.roomId = view.eventId;
  $('room').textContent = view.eventId;
  document.title = `Lockstep · ${view.eventId}`;
  const s = await connect({
    url: location.origin,
    eventId: view.eventId,
    token,
    deviceId: demo.deviceId,
    transport,
    reactions: true,
    chat: true,
    // What plays next (SPEC 6.7): the room's items are the demo video under
    // two ids; a page loads an item from its url.
    resolveMedia: (/** @type {string} */ _id, /** @type {any} */ item) => item.url ?? undefined,
    // The session API's endpoint; the certificate hashes come from
    // /api/certificate, which the client fetches again after a failure, so a
    // rotated certificate never strands the page.
    webtransportUrl: wtOverride ?? view.transports?.webtransport?.url,
    ...(Number.isFinite(wtHeadStart) && wtHeadStart >= 0 ? { webtransportHeadStartMs: wtHeadStart } : {}),
  });
  demo.session = s;
  s.on('timeline', (/** @type {any} */ t) => onTimeline(s, t));
  s.on('viewers', (/** @type {number} */ n) => ($('viewers').textContent = String(n)));
  s.on('transport', (/** @type {string} */ name) => showTransport(name));
  s.on('status', (/** @type {string} */ st) => onStatus(s, st));
  s.on('role', () => showRole(s));
  s.on('policy', () => showRole(s));
  s.on('error', (/** @type {any} */ e) => onError(e));
  s.on('reactions', (/** @type {{emoji: string, count: number}[]} */ counts) => showReactions(counts));
  s.on('chat', (/** @type {any} */ m) => showChat(s, m));
  s.on('media', (/** @type {any} */ m) => showMedia(m));
  s.on('chatDeleted', (/** @type {{id: number}} */ d) => unshowChat(d.id));
  s.on('chatMuted', (/** @type {{muted: boolean}} */ m) => {
    $('chat-note').textContent = m.muted ? 'A host muted you in this chat.' : '';
  });
  s.attach(video);
  // The events of the join itself came before these listeners.
  for (const m of s.chat.messages) showChat(s, m);
  if (s.media) showMedia(s.media);
  if (s.chat.muted) $('chat-note').textContent = 'A host muted you in this chat.';
  showTransport(s.transport);
  $('status').textContent = s.status;
  $('viewers').textContent = String(s.viewers);
  showRole(s);
  if (s.timeline) onTimeline(s, { ...s.timeline, reason: 'welcome' });
  log(`joined ${view.eventId} as ${s.role} over ${s.transport}`);
  say('');
  return s;
}

/** @param {any} s */
function leave(s) {
  if (!s) return;
  s.leaving = true;
  s.close();
}

/** @param {any} s @param {any} t */
function onTimeline(s, t) {
  if (s !== demo.session) return;
  announced = { ...t, receivedAt: performance.now() };
  demo.events.push({
    at: Date.now(),
    room: demo.roomId,
    reason: t.reason,
    by: t.by,
    epoch: t.epoch,
    paused: t.paused,
    positionMs: t.positionMs,
    rate: t.rate,
    effectiveAtUs: t.effectiveAtUs,
    pending: t.pending,
  });
  if (demo.events.length > 1000) demo.events.splice(0, demo.events.length - 1000);
  const rate = /** @type {HTMLSelectElement} */ ($('rate'));
  if (!t.pending && [...rate.options].some((o) => Number(o.value) === t.rate)) rate.value = String(t.rate);
  const who = t.by === 0 ? 'server' : t.by === s.memberId ? 'you' : `member ${t.by}`;
  log(`${t.reason}: ${t.paused ? 'paused' : 'playing'} at ${fmtTime(t.positionMs / 1000)} ×${t.rate}${t.pending ? ' (scheduled)' : ''} by ${who}`);
}

/** @param {string | null} name */
function showTransport(name) {
  const b = $('transport');
  b.dataset.transport = name ?? '';
  b.textContent = name === 'webtransport' ? 'WebTransport' : name === 'websocket' ? 'WebSocket' : 'connecting…';
}

/** @param {any} s */
function showRole(s) {
  if (s !== demo.session) return;
  $('role').textContent = s.role ?? '–';
  const controls = s.role === 'host' || s.role === 'co-host' || s.policy === 'everyone';
  $('controls').hidden = !controls;
  $('media-controls').hidden = !controls;
  $('viewer-note').hidden = controls;
}

let recovering = false;

/** @param {any} s @param {string} st */
function onStatus(s, st) {
  if (s !== demo.session) return;
  $('status').textContent = st;
  if (st === 'reconnecting') log('connection lost: reconnecting');
  if (st !== 'closed' || s.leaving) return;
  const last = demo.errors.at(-1);
  if (last && FATAL_AUTH.has(last.code) && !recovering) {
    // The token expired or the server restarted with another dev secret: sign in again.
    recovering = true;
    log('signed out by the server: signing in again');
    local.del(TOKEN_KEY);
    (async () => {
      token = await signIn();
      showUser();
      await join(await startSession(/** @type {string} */ (demo.roomId)));
    })()
      .catch(fail)
      .finally(() => (recovering = false));
    return;
  }
  fail(new Error(`disconnected${last ? `: ${last.message}` : ''} (reload to join again)`));
}

/** @param {any} e */
function onError(e) {
  demo.errors.push({ code: e.code ?? 0, kind: e.kind ?? '', message: e.message });
  if (demo.errors.length > 200) demo.errors.splice(0, demo.errors.length - 200);
  if (e.kind === 'autoplay') {
    $('start').hidden = false;
    say('The browser blocked autoplay: click “Click to start playback”.');
    return;
  }
  log(`error: ${e.message}`);
}

/** @param {any} e */
function fail(e) {
  const msg =
    e instanceof ApiError && e.code === 'device_limit'
      ? `device limit reached (${e.body?.maxDevices} devices): close another tab or device`
      : e instanceof Error
        ? e.message
        : String(e);
  demo.fatal = msg;
  say(msg, true);
  log(`failed: ${msg}`);
}

// ------------------------------------------------------------------ controls

/** @param {(s: any) => Promise<unknown>} fn */
const command = (fn) => () => {
  const s = demo.session;
  if (s) fn(s).catch(() => {}); // refusals are shown through 'error'
};

/** @param {number} delta seconds */
function seekBy(delta) {
  return command(async (s) => {
    // From a change still pending (a click right after another) rather than
    // the timeline in effect, so that quick clicks add up.
    const pending = announced?.pending && performance.now() - announced.receivedAt < 1000;
    const now = pending ? announced.positionMs / 1000 : s.position ?? video.currentTime;
    let to = Math.max(0, now + delta);
    if (Number.isFinite(video.duration) && video.duration > 1) to = Math.min(to, video.duration - 0.5);
    return s.seek(to);
  });
}

$('play').addEventListener('click', command((s) => s.play()));
$('pause').addEventListener('click', command((s) => s.pause()));
$('back10').addEventListener('click', seekBy(-10));
$('fwd10').addEventListener('click', seekBy(10));
$('rate').addEventListener('change', (e) => {
  const r = Number(/** @type {HTMLSelectElement} */ (e.target).value);
  command((s) => s.setRate(r))();
});
// Reactions: sent one by one, shown as the room's counts per window (text only).
for (const b of document.querySelectorAll('button.react')) {
  b.addEventListener('click', () => {
    const emoji = /** @type {HTMLElement} */ (b).dataset.emoji ?? '';
    try {
      demo.session?.react(emoji);
    } catch (e) {
      onError(e);
    }
  });
}
let reactionsShownAt = 0;
/** @param {{emoji: string, count: number}[]} counts */
function showReactions(counts) {
  $('reactions').textContent = counts.map((c) => `${c.emoji} ${c.count}`).join('  ');
  reactionsShownAt = performance.now();
  demo.reactions.push(counts);
  setTimeout(() => {
    if (performance.now() - reactionsShownAt >= 1900) $('reactions').textContent = '';
  }, 2000);
}

// What plays next (SPEC 6.7): the host switches the room to another item; every
// page loads it (resolveMedia) while the room holds at 0, then the room starts
// it on the same frame everywhere.
/** @type {Record<string, {mediaId: string, url: string, title: string}>} */
const DEMO_ITEMS = {
  'demo-a': { mediaId: 'demo-a', url: `${mediaSrc}${mediaSrc.includes('?') ? '&' : '?'}item=a`, title: 'Demo, part A' },
  'demo-b': { mediaId: 'demo-b', url: `${mediaSrc}${mediaSrc.includes('?') ? '&' : '?'}item=b`, title: 'Demo, part B' },
};
$('media-switch').addEventListener('click', () => {
  const id = /** @type {HTMLSelectElement} */ ($('media-pick')).value;
  const s = demo.session;
  if (!s) return;
  const item = DEMO_ITEMS[id];
  // The playlist holds both, so Next works after a switch.
  const other = Object.values(DEMO_ITEMS).filter((i) => !s.queue.items.some((q) => q.mediaId === i.mediaId));
  Promise.all(other.map((i) => s.queue.add(i)))
    .then(() => s.setMedia(item))
    .catch(onError);
});
$('media-next').addEventListener('click', () => demo.session?.queue.next().catch(onError));
/** @param {{item: any, epoch: number}} m */
function showMedia(m) {
  $('now-playing').textContent = m.item ? (m.item.title ?? m.item.mediaId) : '–';
  demo.media.push({ mediaId: m.item?.mediaId ?? null, epoch: m.epoch });
}

// Chat (SPEC 6.6): text only, ever — every part of a message goes in with
// textContent, never as HTML. Hosts and co-hosts get delete and mute buttons.
$('chat-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const s = demo.session;
  const input = /** @type {HTMLInputElement} */ ($('chat-text'));
  if (!s || input.value.trim() === '') return;
  const text = input.value;
  try {
    s.chat.send(text).then(
      () => {
        if (input.value === text) input.value = '';
      },
      (/** @type {any} */ err) => {
        $('chat-note').textContent = err.kind === 'rate_limited' ? 'Slow down a little.' : err.message;
      },
    );
  } catch (err) {
    onError(err);
  }
});
/** @param {any} s @param {any} m */
function showChat(s, m) {
  const li = document.createElement('li');
  li.dataset.id = String(m.id);
  const who = document.createElement('b');
  who.textContent = m.mine ? 'you' : m.name;
  const when = document.createElement('time');
  when.textContent = new Date(m.atMs).toLocaleTimeString();
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = m.text;
  li.append(when, ' ', who, ' ', text);
  if ((s.role === 'host' || s.role === 'co-host') && !m.mine) {
    const del = document.createElement('button');
    del.type = 'button';
    del.className = 'delete';
    del.textContent = 'delete';
    del.addEventListener('click', () => s.chat.delete(m.id).catch(onError));
    const mute = document.createElement('button');
    mute.type = 'button';
    mute.className = 'mute';
    mute.textContent = 'mute';
    mute.addEventListener('click', () => s.chat.mute(m.memberId).catch(onError));
    li.append(' ', del, ' ', mute);
  }
  const log = $('chat-log');
  log.append(li);
  while (log.children.length > 200) log.firstElementChild?.remove();
  log.scrollTop = log.scrollHeight;
  demo.chat.push({ id: m.id, name: m.name, text: m.text, mine: m.mine, history: m.history });
}
/** @param {number} id */
function unshowChat(id) {
  document.querySelector(`#chat-log li[data-id="${id}"]`)?.remove();
  demo.chat = demo.chat.filter((m) => m.id !== id);
}

// Watch alone for a while (a suspension for notFollowing, SPEC 6.4), then
// come back to the room's position.
$('follow').addEventListener('click', () => {
  const s = demo.session;
  if (!s) return;
  if (s.following) s.unfollow();
  else s.follow();
  $('follow').textContent = s.following ? 'Watch alone' : 'Follow the room';
  log(s.following ? 'following the room again' : 'watching alone');
});
$('unmute').addEventListener('click', () => {
  video.muted = !video.muted;
  $('unmute').textContent = video.muted ? 'Unmute' : 'Mute';
});
$('start').addEventListener('click', () => {
  $('start').hidden = true;
  say('');
  // The click is the user gesture the browser wanted; the client plays or pauses as the room says.
  video.play().catch(() => {});
});

$('invite').addEventListener('click', async () => {
  const btn = /** @type {HTMLButtonElement} */ ($('invite'));
  btn.disabled = true;
  try {
    const eventId = /** @type {string} */ (demo.roomId).split(PARTY_SEP)[0];
    const inv = await api('POST', `/api/live-stream/${encodeURIComponent(eventId)}/invitations`, {});
    const link = new URL(`/watch/${encodeURIComponent(eventId)}`, location.origin);
    link.searchParams.set('invite', inv.invitationId);
    if (params.get('src')) link.searchParams.set('src', /** @type {string} */ (params.get('src')));
    const a = /** @type {HTMLAnchorElement} */ ($('invite-link'));
    a.href = link.href;
    a.textContent = link.href;
    $('invite-result').hidden = false;
    log(`invitation ${inv.invitationId} to room ${inv.roomId}`);
    // The inviter hosts the watch party's own room: move there, bringing the position along.
    if (inv.roomId !== demo.roomId) await moveTo(inv.roomId);
    demo.invite = { ...inv, link: link.href };
  } catch (e) {
    say(`could not invite: ${e instanceof Error ? e.message : String(e)}`, true);
  } finally {
    btn.disabled = false;
  }
});

$('copy').addEventListener('click', () => {
  const link = /** @type {HTMLAnchorElement} */ ($('invite-link')).href;
  if (link) navigator.clipboard?.writeText(link).then(() => say('link copied'), () => {});
});

/**
 * The host moves into its watch party's room and sets it to where it was.
 * @param {string} roomId
 */
async function moveTo(roomId) {
  const old = demo.session;
  const t = old?.timeline;
  const pos = old?.position ?? video.currentTime;
  const at = performance.now();
  const view = await startSession(roomId);
  leave(old);
  const s = await join(view);
  history.replaceState(null, '', urlFor(roomId));
  if (!t || (s.role !== 'host' && s.role !== 'co-host')) return;
  const here = t.paused ? pos : pos + ((performance.now() - at) / 1000) * t.rate;
  if (s.timeline?.rate !== t.rate) await s.setRate(t.rate).catch(() => {});
  await s.seek(here).catch(() => {});
  if (!t.paused && s.timeline?.paused) await s.play().catch(() => {});
  if (t.paused && s.timeline && !s.timeline.paused) await s.pause().catch(() => {});
}

// ------------------------------------------------------------------ readout

let lastLoopAt = -Infinity;

function render() {
  $('clock').textContent = fmtTime(video.currentTime);
  const s = demo.session;
  if (!s) return;
  const st = s.stats;
  $('position').textContent = fmtTime(s.position);
  $('drift').textContent = fmtMs(st.driftMs);
  $('offset').textContent = fmtMs(st.offsetMs);
  $('rtt').textContent = Number.isFinite(st.rttMs) ? `${st.rttMs.toFixed(1)} ms` : '–';
  $('el-rate').textContent = `${video.playbackRate.toFixed(3)}×`;
  $('buffering').textContent = st.buffering ? 'yes' : 'no';
  $('corrections').textContent = `${st.corrections.seeks} seeks, ${st.corrections.rateChanges} rate changes`;
  // The demo video is short: the host starts it over at the end.
  const t = s.timeline;
  const d = video.duration;
  if (s.role === 'host' && t && !t.paused && Number.isFinite(d) && d > 5 && s.position >= d && performance.now() - lastLoopAt > 3000) {
    lastLoopAt = performance.now();
    log('the end: starting over');
    s.seek(0).catch(() => {});
  }
}
setInterval(render, 200);

/**
 * The room as the server sees it (`GET …/state`, when this node serves it
 * publicly): its sync quality, and who does not follow and why. Text only.
 */
async function pollRoom() {
  const id = demo.roomId;
  if (!id) return;
  const res = await fetch(`/api/live-stream/${encodeURIComponent(id)}/state`).catch(() => null);
  if (!res?.ok) return;
  const st = await res.json().catch(() => null);
  if (!st) return;
  const q = st.sync;
  $('room-sync').textContent = q?.reporting
    ? `p95 ${q.p95Ms.toFixed(1)} ms, ${q.reporting - q.outOfSync} of ${q.reporting} in sync`
    : '–';
  const who = (st.suspended ?? []).map((/** @type {any} */ m) => `${m.name || `member ${m.memberId}`} (${m.reason})`);
  $('waiting').textContent = who.length ? `${st.bufferingWait ? '' : 'not waiting: '}${who.join(', ')}` : '–';
}
setInterval(() => void pollRoom(), 1000);

// ------------------------------------------------------------------ start

async function main() {
  video.muted = true;
  video.src = mediaSrc;
  demo.deviceId = tabDeviceId();
  token = await signIn();
  showUser();
  let view;
  if (inviteId) {
    view = await api('POST', `/api/invitations/${encodeURIComponent(inviteId)}/accept`, { deviceId: demo.deviceId });
    log(`accepted invitation ${inviteId}`);
    // A reload joins the party's room again without spending another use.
    history.replaceState(null, '', urlFor(view.eventId));
  } else {
    view = await startSession(startRoom);
  }
  await join(view);
}

demo.ready = main().catch(fail);
