// The session: connects (WebTransport or WebSocket), joins the room, keeps
// the clock in sync, follows the timeline with the drift controller, reports,
// and reconnects. This is the only module that touches timers, the network
// and the DOM; the logic it drives (codec, timeline, tracker, clock, drift,
// connect policies) is pure and tested on its own.

import {
  CAPS,
  LIMITS,
  PROTOCOL_VERSION,
  codeName,
  encodeClient,
  tryDecodeServer,
} from './codec.js';
import { ClockSync, defaultNowUs } from './clock.js';
import { Backoff, race, sharedMemory, TransportMemory } from './connect.js';
import { DriftController, HAVE_FUTURE_DATA } from './drift.js';
import { TimelineTracker } from './tracker.js';
import { openWebSocket } from './transport/websocket.js';
import { openWebTransport } from './transport/webtransport.js';

/** @typedef {import('./codec.js').ServerMsg} ServerMsg */
/** @typedef {import('./codec.js').ClientMsg} ClientMsg */
/** @typedef {import('./codec.js').Action} Action */
/** @typedef {import('./codec.js').Role} Role */
/** @typedef {import('./codec.js').ControlPolicy} ControlPolicy */
/** @typedef {import('./codec.js').Limits} Limits */
/** @typedef {import('./codec.js').Timeline} Timeline */
/** @typedef {import('./codec.js').TimelineChangedMsg} TimelineChangedMsg */
/** @typedef {import('./codec.js').ChangeReason} ChangeReason */
/** @typedef {import('./codec.js').U64} U64 */
/** @typedef {import('./transport/types.js').Transport} Transport */
/** @typedef {import('./transport/webtransport.js').CertificateHash} CertificateHash */
/** @typedef {import('./drift.js').DriftOptions} DriftOptions */
/** @typedef {import('./clock.js').ClockOptions} ClockOptions */

/** @typedef {'webtransport' | 'websocket'} TransportName */
/** @typedef {'connecting' | 'open' | 'reconnecting' | 'closed'} Status */

/**
 * @typedef {Object} ConnectOptions
 * @property {string} url HTTP base of the server, e.g. `http://127.0.0.1:8080`
 * @property {string} eventId the event (room) to join: 1–128 printable ASCII bytes
 * @property {string} [token] access token, sent in Hello and in the URL (`accessToken` on WebSocket, `access_token` on WebTransport, as the server reads them)
 * @property {string} [deviceId] stable id of this device (≤ 128 bytes); default: one generated and kept in localStorage
 * @property {'auto' | 'webtransport' | 'websocket'} [transport] default 'auto'
 * @property {string} [webtransportUrl] WebTransport base (`https://host:port`) or full endpoint URL (`…/api/live-stream/{eventId}`,
 *   as the session API's `transports.webtransport.url` gives it); default: from `GET /api/certificate`
 *   (`webtransport` field), else `https://{host}:{webtransportPort}`
 * @property {number} [webtransportPort] default 4433
 * @property {CertificateHash[]} [certificateHashes] skip `GET /api/certificate` and use these
 * @property {number} [webtransportHeadStartMs] WebSocket starts this long after WebTransport (200)
 * @property {number} [webtransportMaxFailures] consecutive WebTransport failures before falling back to WebSocket (2)
 * @property {number} [webtransportRetryMs] after the fallback, try WebTransport again this much later (300000)
 * @property {number} [connectTimeoutMs] one connection attempt, open to Welcome (10000)
 * @property {number} [openTimeoutMs] connect() rejects if not joined within this (20000)
 * @property {boolean} [presence] ask for member joined/left events (false)
 * @property {{baseMs?: number, maxMs?: number, random?: () => number}} [backoff] reconnect backoff (250 ms → 10 s, full jitter)
 * @property {DriftOptions} [drift] drift controller bands and gains
 * @property {ClockOptions} [clock] clock sync options
 * @property {number} [controlIntervalMs] drift control period (250)
 * @property {number} [bufferingReportDelayMs] a stall is reported once it lasts this long (250): a quick seek is not a stall
 * @property {number} [commandTimeoutMs] a command's promise resolves null after this without an answer (5000)
 * @property {typeof fetch} [fetch] fetch implementation (for /api/certificate)
 * @property {typeof WebSocket} [WebSocket] WebSocket implementation
 * @property {any} [WebTransport] WebTransport implementation (default globalThis.WebTransport)
 * @property {TransportMemory} [memory] where the winning transport is remembered
 */

/**
 * What 'timeline' listeners get: the room's timeline as announced (on join,
 * on every accepted change, possibly before it takes effect, and when a tick
 * reveals a missed change).
 * @typedef {Object} TimelineEvent
 * @property {number} epoch
 * @property {number} positionMs position at the anchor, ms
 * @property {number} anchorUs server time of the anchor, µs
 * @property {number} rate playback rate (1 = normal)
 * @property {number} rateMilli
 * @property {boolean} paused
 * @property {number} effectiveAtUs server time from which it applies
 * @property {boolean} pending whether it is scheduled for later
 * @property {ChangeReason | 'welcome' | 'tick'} reason
 * @property {number} by member id that caused it (0 = the server)
 * @property {Timeline} timeline the exact wire timeline
 */

/**
 * @typedef {Object} SessionStats
 * @property {number} offsetMs estimated server − client clock offset, ms
 * @property {number} rttMs smallest recent round-trip time, ms (NaN before the first pong)
 * @property {number} driftMs element − room position, ms (NaN when not attached)
 * @property {number} rate the element's playbackRate (the room rate when not attached)
 * @property {boolean} buffering whether the element is stalled now (the server hears of it after `bufferingReportDelayMs`)
 * @property {{seeks: number, rateChanges: number}} corrections
 * @property {number} seekLatencyMs learned seek latency
 * @property {TransportName | null} transport
 * @property {Status} status
 * @property {number} reconnects
 */

// Closing codes after which reconnecting cannot help: the session ends.
/**
 * The events of a session and what their listeners get.
 * @typedef {Object} SessionEvents
 * @property {TimelineEvent} timeline the room's timeline was announced or changed
 * @property {number} viewers the room's viewer count
 * @property {TransportName} transport the transport of a new connection
 * @property {Status} status 'connecting' | 'open' | 'reconnecting' | 'closed'
 * @property {Error} error a LockstepError or LockstepDecodeError; never thrown into the page
 * @property {Role} role this member's role (on join and when it changes)
 * @property {ControlPolicy} policy the room's control policy changed
 * @property {import('./codec.js').MemberJoinedMsg | import('./codec.js').MemberLeftMsg | import('./codec.js').RoleChangedMsg} member presence events
 */

const FATAL = new Set([4006, 4012, 4013, 4016, 4017, 4023, 4024]);
const EVENT_ID = /^[\x21-\x7e]{1,128}$/;
const utf8 = new TextEncoder();

/** An error the server reported, or a session-level failure. */
export class LockstepError extends Error {
  /**
   * @param {number} code protocol code (4000–4099), or 0 for a local failure
   * @param {string} message
   * @param {{requestId?: number, kind?: string, cause?: unknown}} [o]
   */
  constructor(code, message, o = {}) {
    super(message);
    this.name = 'LockstepError';
    this.code = code;
    /** Stable name of the code ('forbidden', …) or the local kind ('autoplay', 'transport', …). */
    this.kind = o.kind ?? codeName(code);
    this.requestId = o.requestId ?? 0;
    if (o.cause !== undefined) this.cause = o.cause;
  }
}

/**
 * Connects to a room. Resolves with the session once joined (Welcome
 * received); rejects on a fatal error (bad token, version, event) or if not
 * joined within `openTimeoutMs`, closing the session.
 * @param {ConnectOptions} opts
 * @returns {Promise<Session>}
 */
export async function connect(opts) {
  const s = new Session(opts);
  try {
    await s.ready;
  } catch (e) {
    s.close();
    throw e;
  }
  return s;
}

export class Session {
  /** @param {ConnectOptions} opts */
  constructor(opts) {
    const o = validate(opts);
    this.o = o;
    this.base = new URL(o.url.endsWith('/') ? o.url : `${o.url}/`);
    /** @type {string} */
    this.deviceId = o.deviceId ?? defaultDeviceId();
    /** @type {Map<string, Set<(arg: any) => void>>} */
    this.listeners = new Map();
    this.nowUs = o.clock?.now ?? defaultNowUs;
    this.clock = new ClockSync({ ...o.clock, now: this.nowUs });
    this.tracker = new TimelineTracker();
    this.drift = new DriftController(o.drift);
    this.backoff = new Backoff(o.backoff);
    this.memory = o.memory ?? sharedMemory;
    /** @type {Status} */
    this.status = 'connecting';
    /** @type {TransportName | null} */
    this.transport = null;
    /** @type {Transport | null} */
    this.active = null;
    this.joined = false;
    this.memberId = 0;
    /** @type {Role | null} */
    this.role = null;
    /** @type {ControlPolicy | null} */
    this.policy = null;
    this.viewers = 0;
    /** @type {Limits} */
    this.limits = { maxFrame: LIMITS.MAX_FRAME, maxDatagram: LIMITS.MAX_DATAGRAM, maxMsgsPerSec: 50, tickIntervalMs: 250, reportIntervalMs: 1000 };
    this.reconnects = 0;
    this.closed = false;
    this.wtFailures = 0;
    this.wtDisabledUntil = 0;
    /** @type {{hashes?: CertificateHash[], url?: string, notAfter?: number} | null} */
    this.cert = null;
    this.nextRequestId = 1;
    /** @type {{id: number, resolve: (v: TimelineEvent | null) => void, reject: (e: Error) => void, timer: any}[]} */
    this.commands = [];
    /** @type {HTMLMediaElement | null} */
    this.el = null;
    this.elBuffering = false;
    this.reportedBuffering = false;
    /** @type {any} */ this.bufferingTimer = null;
    /** @type {Map<string, any>} */
    this.timers = new Map();
    /** @type {(() => void)[]} */
    this.cleanups = [];
    this.lastAutoplayErrorAt = -Infinity;
    this.lastPlayRejected = false;
    this.everJoined = false;
    /** @type {number} code of the last Error the server sent */
    this.lastServerError = 0;
    /** @type {AbortController | null} */
    this.abortAttempt = null;
    /** @type {(() => void)[]} */
    this.envCleanups = [];
    /** @type {(s: Session) => void} */
    this.resolveReady = () => {};
    /** @type {(e: Error) => void} */
    this.rejectReady = () => {};
    /** Resolves once joined the first time. @type {Promise<Session>} */
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => {});
    this.listenToEnvironment();
    this.timer('open-timeout', o.openTimeoutMs ?? 20_000, () => {
      if (!this.joined) this.rejectReady(new LockstepError(0, 'could not join the room in time', { kind: 'timeout' }));
    });
    this.emitStatus('connecting');
    this.attemptSoon(0);
  }

  // ---------------------------------------------------------------- public API

  /**
   * Subscribes to an event: 'timeline', 'viewers', 'transport', 'status',
   * 'error', 'role', 'policy', 'member'. Returns a function that unsubscribes.
   * @template {keyof SessionEvents} K
   * @param {K} event
   * @param {(arg: SessionEvents[K]) => void} fn
   * @returns {() => void}
   */
  on(event, fn) {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => this.off(event, fn);
  }

  /**
   * @template {keyof SessionEvents} K
   * @param {K} event
   * @param {(arg: SessionEvents[K]) => void} fn
   */
  off(event, fn) {
    this.listeners.get(event)?.delete(fn);
  }

  /** The timeline in effect (null before joining). */
  get timeline() {
    return this.tracker.current ? toEvent(this.tracker.current, false) : null;
  }

  /**
   * The room's media position now, in seconds (null before joining).
   */
  get position() {
    const at = this.tracker.at(this.clock.serverNowUs());
    return at ? Number(at.positionUs) / 1e6 : null;
  }

  /** @returns {SessionStats} */
  get stats() {
    const cur = this.tracker.current;
    const el = this.el;
    return {
      offsetMs: this.clock.offsetUs / 1000,
      rttMs: this.clock.rttUs / 1000,
      driftMs: el ? this.drift.driftMs : NaN,
      rate: el ? el.playbackRate : cur ? cur.timeline.rateMilli / 1000 : 1,
      buffering: el ? this.drift.buffering : false,
      corrections: { ...this.drift.corrections },
      seekLatencyMs: this.drift.seekLatencyMs,
      transport: this.transport,
      status: this.status,
      reconnects: this.reconnects,
    };
  }

  /**
   * Drives this media element: it follows the room from now on.
   * @param {HTMLMediaElement} el
   */
  attach(el) {
    this.detach();
    this.el = el;
    this.drift.reset();
    this.elBuffering = false;
    const on = (/** @type {string} */ type, /** @type {() => void} */ fn) => {
      el.addEventListener(type, fn);
      this.cleanups.push(() => el.removeEventListener(type, fn));
    };
    const step = () => this.step();
    on('waiting', () => this.setElementBuffering(true));
    on('stalled', () => {
      if (el.readyState < HAVE_FUTURE_DATA && !el.paused) this.setElementBuffering(true);
    });
    for (const t of ['playing', 'canplay', 'canplaythrough']) {
      on(t, () => {
        if (el.readyState >= HAVE_FUTURE_DATA) this.setElementBuffering(false);
      });
    }
    on('pause', () => this.setElementBuffering(false));
    for (const t of ['seeking', 'seeked', 'loadedmetadata', 'play']) on(t, step);
    on('emptied', () => this.drift.reset());
    this.timer('control', 0, () => this.controlLoop());
    this.timer('report', 0, () => this.reportLoop());
  }

  /** Stops driving the element (it is left as it is). */
  detach() {
    for (const c of this.cleanups.splice(0)) c();
    this.clearTimer('control');
    this.clearTimer('report');
    this.clearTimer('buffering');
    this.el = null;
    if (this.reportedBuffering) {
      this.reportedBuffering = false;
      this.sendReport(null);
    }
  }

  /**
   * Asks the room to play (subject to this member's role). Resolves with the
   * resulting timeline, or null if nothing changed; rejects with a
   * LockstepError if the server refuses (also emitted as 'error').
   * @param {number} [fromSeconds] start from this position instead of the paused one
   */
  play(fromSeconds) {
    return this.command({ kind: 'play', positionMs: fromSeconds === undefined ? null : toMs(fromSeconds) });
  }

  /**
   * Asks the room to pause.
   * @param {number} [atSeconds] pause at this position instead of the timeline's
   */
  pause(atSeconds) {
    return this.command({ kind: 'pause', positionMs: atSeconds === undefined ? null : toMs(atSeconds) });
  }

  /**
   * Asks the room to jump to a position.
   * @param {number} seconds
   */
  seek(seconds) {
    return this.command({ kind: 'seek', positionMs: toMs(seconds) });
  }

  /**
   * Asks the room to change its rate (0.25–4).
   * @param {number} rate
   */
  setRate(rate) {
    const rateMilli = Math.round(Number(rate) * 1000);
    if (!(rateMilli >= LIMITS.MIN_RATE_MILLI && rateMilli <= LIMITS.MAX_RATE_MILLI)) {
      return this.failCommand(new LockstepError(4009, `rate must be between 0.25 and 4, got ${rate}`, { kind: 'invalid_argument' }));
    }
    return this.command({ kind: 'setRate', rateMilli });
  }

  /**
   * Host only: makes a member a co-host or a viewer.
   * @param {number} memberId
   * @param {'co-host' | 'viewer'} role
   */
  setRole(memberId, role) {
    return this.command({ kind: 'setRole', memberId, role });
  }

  /**
   * Host only: switches who may control playback.
   * @param {ControlPolicy} policy
   */
  setPolicy(policy) {
    return this.command({ kind: 'setPolicy', policy });
  }

  /** Leaves the room and stops everything. */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.detach();
    for (const id of [...this.timers.keys()]) this.clearTimer(id);
    for (const c of this.commands.splice(0)) {
      clearTimeout(c.timer);
      c.resolve(null);
    }
    this.abortAttempt?.abort();
    const t = this.active;
    this.active = null;
    t?.close(t.name === 'websocket' ? 1000 : 0, 'bye');
    for (const c of this.envCleanups.splice(0)) c();
    this.rejectReady(new LockstepError(0, 'the session was closed', { kind: 'closed' }));
    this.setStatus('closed');
  }

  // ---------------------------------------------------------------- events

  /**
   * @param {string} event
   * @param {unknown} arg
   */
  emit(event, arg) {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(arg);
      } catch (e) {
        // A listener's bug is the page's, not ours: surface it without breaking the session.
        const report = /** @type {any} */ (globalThis).reportError;
        if (typeof report === 'function') report(e);
        else setTimeout(() => { throw e; });
      }
    }
  }

  /** @param {Error} e */
  emitError(e) {
    this.emit('error', e);
  }

  /** @param {Status} st */
  setStatus(st) {
    if (this.status === st) return;
    this.emitStatus(st);
  }

  /** @param {Status} st */
  emitStatus(st) {
    this.status = st;
    this.emit('status', st);
  }

  // ---------------------------------------------------------------- timers

  /**
   * @param {string} id
   * @param {number} ms
   * @param {() => void} fn
   */
  timer(id, ms, fn) {
    this.clearTimer(id);
    if (this.closed) return;
    this.timers.set(
      id,
      setTimeout(() => {
        this.timers.delete(id);
        fn();
      }, Math.max(0, ms)),
    );
  }

  /** @param {string} id */
  clearTimer(id) {
    const t = this.timers.get(id);
    if (t !== undefined) clearTimeout(t);
    this.timers.delete(id);
  }

  // ---------------------------------------------------------------- connecting

  /** @param {number} ms */
  attemptSoon(ms) {
    this.timer('attempt', ms, () => {
      this.attempt().catch((e) => this.attemptFailed(e));
    });
  }

  async attempt() {
    if (this.closed) return;
    this.abortAttempt?.abort();
    const ctl = new AbortController();
    this.abortAttempt = ctl;
    const candidates = this.candidates();
    const { name, value: t } = await race(candidates, { signal: ctl.signal, timeoutMs: this.o.connectTimeoutMs ?? 10_000 });
    if (this.closed || ctl.signal.aborted) {
      t.close(t.name === 'websocket' ? 1000 : 0, 'cancelled');
      return;
    }
    this.active = t;
    this.transport = /** @type {TransportName} */ (name);
    this.joined = false;
    let caps = 0;
    if (t.datagrams) caps |= CAPS.DATAGRAMS;
    if (this.o.presence) caps |= CAPS.PRESENCE;
    t.send(
      encodeClient({
        type: 'hello',
        version: PROTOCOL_VERSION,
        eventId: this.o.eventId,
        deviceId: this.deviceId,
        token: this.o.token ?? null,
        caps,
      }),
    );
    this.timer('welcome-timeout', this.o.connectTimeoutMs ?? 10_000, () => {
      if (this.active === t && !this.joined) {
        t.close(t.name === 'websocket' ? 1000 : 0, 'no Welcome');
        this.connectionLost(t, { code: 0, reason: 'no Welcome in time' });
      }
    });
  }

  /** @param {unknown} e */
  attemptFailed(e) {
    if (this.closed) return;
    const errors = e instanceof AggregateError ? e.errors : [e];
    this.emitError(new LockstepError(0, `could not connect: ${errors.map((x) => (x instanceof Error ? x.message : String(x))).join('; ')}`, { kind: 'transport', cause: e }));
    this.scheduleReconnect();
  }

  /** @returns {import('./connect.js').Candidate<Transport>[]} */
  candidates() {
    const mode = this.o.transport ?? 'auto';
    const server = this.base.origin;
    /** @type {import('./connect.js').Candidate<Transport>[]} */
    const list = [];
    const WT = this.o.WebTransport ?? /** @type {any} */ (globalThis).WebTransport;
    const wtAllowed = mode === 'webtransport' || (mode === 'auto' && WT && Date.now() >= this.wtDisabledUntil);
    const handlers = (/** @type {() => Transport | null} */ self) => ({
      onMessage: (/** @type {Uint8Array} */ b, /** @type {boolean} */ dg) => {
        const t = self();
        if (t && t === this.active) this.onBytes(b, dg);
      },
      onClose: (/** @type {import('./transport/types.js').TransportClose} */ info) => {
        const t = self();
        if (t && t === this.active) this.connectionLost(t, info);
      },
      onError: (/** @type {Error} */ err) => {
        const t = self();
        if (t && t === this.active) this.emitError(err);
      },
    });
    if (wtAllowed) {
      /** @type {Transport | null} */
      let wt = null;
      list.push({
        name: 'webtransport',
        delayMs: 0,
        open: async (signal) => {
          try {
            const info = await this.webTransportInfo(signal);
            wt = await openWebTransport({ url: info.url, certificateHashes: info.hashes, signal, WebTransport: WT, ...handlers(() => wt) });
            return wt;
          } catch (e) {
            // Losing the race is not a failure; anything else counts towards the fallback.
            if (!signal.aborted) this.noteWebTransportFailure();
            throw e;
          }
        },
        dispose: (t) => t.close(0, 'lost the race'),
      });
    }
    if (mode !== 'webtransport') {
      /** @type {Transport | null} */
      let ws = null;
      const preferWs = this.memory.get(server) === 'websocket';
      list.push({
        name: 'websocket',
        delayMs: list.length && !preferWs ? this.o.webtransportHeadStartMs ?? 200 : 0,
        open: async (signal) => {
          ws = await openWebSocket({ url: this.webSocketUrl(), signal, WebSocket: this.o.WebSocket, ...handlers(() => ws) });
          return ws;
        },
        dispose: (t) => t.close(1000, 'lost the race'),
      });
    }
    return list;
  }

  webSocketUrl() {
    const u = new URL(`api/live-stream/${encodeURIComponent(this.o.eventId)}`, this.base);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    if (this.o.token) u.searchParams.set('accessToken', this.o.token);
    return u.toString();
  }

  /**
   * Where and how to reach the server over WebTransport: the certificate
   * hashes and URL from `GET /api/certificate` (cached until they expire),
   * or the options.
   * @param {AbortSignal} signal
   * @returns {Promise<{url: string, hashes?: CertificateHash[]}>}
   */
  async webTransportInfo(signal) {
    const o = this.o;
    const now = Date.now();
    if (!o.certificateHashes && (!this.cert || (this.cert.notAfter !== undefined && this.cert.notAfter <= now))) {
      const f = o.fetch ?? globalThis.fetch;
      if (!f) throw new Error('fetch is not available for /api/certificate');
      const res = await f(new URL('api/certificate', this.base).toString(), { signal, cache: 'no-store' });
      if (!res.ok) throw new Error(`GET /api/certificate: HTTP ${res.status}`);
      const body = await res.json();
      const hashes = Array.isArray(body?.hashes)
        ? body.hashes.filter((/** @type {any} */ h) => h && typeof h.algorithm === 'string' && typeof h.value === 'string')
        : [];
      // `notAfter` is Unix seconds (the server's contract); milliseconds and ISO strings are accepted too.
      const raw = body?.notAfter;
      const notAfter = typeof raw === 'number' ? (raw < 1e11 ? raw * 1000 : raw) : typeof raw === 'string' ? Date.parse(raw) : undefined;
      this.cert = { hashes, url: typeof body?.webtransport === 'string' ? body.webtransport : undefined, notAfter: Number.isFinite(notAfter) ? notAfter : undefined };
    }
    const wtBase =
      o.webtransportUrl ?? this.cert?.url ?? `https://${this.base.hostname.includes(':') ? `[${this.base.hostname}]` : this.base.hostname}:${o.webtransportPort ?? 4433}`;
    // A full endpoint URL (as the session API gives it) is used as is; a base gets the path.
    const u = /\/api\/live-stream\/[^/]+\/?$/.test(new URL(wtBase).pathname)
      ? new URL(wtBase)
      : new URL(`api/live-stream/${encodeURIComponent(o.eventId)}`, wtBase.endsWith('/') ? wtBase : `${wtBase}/`);
    // The WebTransport endpoint reads `access_token` (the WebSocket one `accessToken`).
    if (o.token) u.searchParams.set('access_token', o.token);
    return { url: u.toString(), hashes: o.certificateHashes ?? this.cert?.hashes };
  }

  noteWebTransportFailure() {
    this.cert = null; // the certificate may have rotated
    this.wtFailures++;
    const max = this.o.webtransportMaxFailures ?? 2;
    if ((this.o.transport ?? 'auto') === 'auto' && this.wtFailures >= max) {
      this.wtDisabledUntil = Date.now() + (this.o.webtransportRetryMs ?? 300_000);
      this.wtFailures = 0;
      this.memory.set(this.base.origin, 'websocket');
    }
  }

  /**
   * The active transport ended.
   * @param {Transport} t
   * @param {import('./transport/types.js').TransportClose} info
   */
  connectionLost(t, info) {
    if (this.active !== t) return;
    this.active = null;
    this.clearTimer('welcome-timeout');
    this.clearTimer('ping');
    if (this.closed) return;
    const wasJoined = this.joined;
    this.joined = false;
    for (const c of this.commands.splice(0)) {
      clearTimeout(c.timer);
      c.reject(new LockstepError(0, 'the connection was lost', { kind: 'transport', requestId: c.id }));
    }
    if (FATAL.has(info.code)) {
      const e = new LockstepError(info.code, info.reason || `closed: ${codeName(info.code)}`);
      if (this.lastServerError !== info.code) this.emitError(e);
      this.rejectReady(e);
      this.close();
      return;
    }
    if (t.name === 'webtransport') this.noteWebTransportFailure();
    if (wasJoined) this.reconnects++;
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    if (this.closed) return;
    this.setStatus(this.reconnects > 0 || this.everJoined ? 'reconnecting' : 'connecting');
    this.attemptSoon(this.backoff.next());
  }

  // ---------------------------------------------------------------- inbound

  /**
   * @param {Uint8Array} bytes
   * @param {boolean} datagram
   */
  onBytes(bytes, datagram) {
    const r = tryDecodeServer(bytes);
    if (!r.ok) {
      // An unknown tag is a newer server's message: ignore it (SPEC 11).
      if (r.error.kind !== 'UnknownTag') this.emitError(r.error);
      return;
    }
    try {
      this.onMessage(r.msg, datagram);
    } catch (e) {
      this.emitError(new LockstepError(0, `handling ${r.msg.type} failed: ${e instanceof Error ? e.message : String(e)}`, { kind: 'internal', cause: e }));
    }
  }

  /**
   * @param {ServerMsg} m
   * @param {boolean} datagram
   */
  onMessage(m, datagram) {
    const recvUs = this.nowUs();
    switch (m.type) {
      case 'welcome':
        return this.onWelcome(m, recvUs);
      case 'pong':
        this.clock.onPong(m, recvUs);
        return;
      case 'error': {
        const e = new LockstepError(m.code, m.message, { requestId: m.requestId });
        this.lastServerError = m.code;
        if (m.requestId !== 0) {
          const i = this.commands.findIndex((c) => c.id === m.requestId);
          if (i >= 0) {
            const [c] = this.commands.splice(i, 1);
            clearTimeout(c.timer);
            c.reject(e);
          }
        }
        this.emitError(e);
        if (FATAL.has(m.code)) {
          // A fatal closing Error is the close: browsers do not surface a
          // WebTransport close code (SPEC 5.2), so never reconnect after it.
          this.rejectReady(e);
          this.close();
        }
        return;
      }
      default:
    }
    if (!this.joined) return; // Only Welcome, Pong and Error mean anything before joining.
    switch (m.type) {
      case 'tick': {
        const r = this.tracker.onTick(m, this.clock.serverNowUs(recvUs));
        this.setViewers(m.viewers);
        if (r === 'applied' && this.tracker.current) {
          this.emit('timeline', toEvent(this.tracker.current, false));
          this.step();
        }
        return;
      }
      case 'timelineChanged': {
        const serverNow = this.clock.serverNowUs(recvUs);
        const r = this.tracker.onChanged(m, serverNow);
        if (r === 'applied' || r === 'pending') {
          const state = { timeline: m.timeline, effectiveAtUs: m.effectiveAtUs, reason: m.reason, by: m.by };
          const ev = toEvent(state, r === 'pending');
          if (m.by === this.memberId && m.by !== 0) this.resolveCommand(ev);
          this.emit('timeline', ev);
          if (r === 'pending') {
            // Step exactly when it takes effect, so play and pause start on time.
            const inMs = (this.clock.toClientUs(m.effectiveAtUs) - this.nowUs()) / 1000;
            this.timer('effective', inMs, () => this.step());
          } else {
            this.step();
          }
        }
        return;
      }
      case 'viewerCount':
        this.setViewers(m.count);
        return;
      case 'memberJoined':
      case 'memberLeft':
        this.emit('member', m);
        return;
      case 'roleChanged':
        if (m.memberId === this.memberId) {
          this.role = m.role;
          this.emit('role', m.role);
        }
        this.emit('member', m);
        return;
      case 'policyChanged':
        this.policy = m.policy;
        this.emit('policy', m.policy);
        return;
      default:
    }
  }

  /**
   * @param {import('./codec.js').WelcomeMsg} m
   * @param {number} recvUs
   */
  onWelcome(m, recvUs) {
    if (this.joined) return;
    this.clearTimer('welcome-timeout');
    this.joined = true;
    this.everJoined = true;
    this.memberId = m.memberId;
    this.policy = m.policy;
    this.limits = { ...m.limits };
    this.backoff.reset();
    if (this.transport === 'webtransport') this.wtFailures = 0;
    if (this.transport) this.memory.set(this.base.origin, this.transport);
    // A new path: forget old clock samples, seed from the Welcome, burst.
    this.clock.reset();
    this.clock.seed(m.serverTimeUs, recvUs);
    this.tracker.reset(m.timeline, m.serverTimeUs);
    this.drift.reset();
    this.pingLoop();
    const roleChanged = this.role !== m.role;
    this.role = m.role;
    this.emit('transport', this.transport);
    this.setStatus('open');
    if (roleChanged) this.emit('role', m.role);
    this.setViewers(m.viewers, true);
    if (this.tracker.current) this.emit('timeline', toEvent(this.tracker.current, false));
    this.resolveReady(this);
    this.clearTimer('open-timeout');
    if (this.reportedBuffering) this.sendReport(null);
    this.step();
  }

  /**
   * @param {number} n
   * @param {boolean} [force]
   */
  setViewers(n, force = false) {
    if (n === this.viewers && !force) return;
    this.viewers = n;
    this.emit('viewers', n);
  }

  // ---------------------------------------------------------------- outbound

  /**
   * @param {ClientMsg} msg
   * @param {boolean} [datagram] send as a datagram when the transport has them
   */
  send(msg, datagram = false) {
    const t = this.active;
    if (!t) return false;
    const bytes = encodeClient(msg);
    if (datagram && t.datagrams && bytes.length <= Math.min(t.maxDatagramSize, this.limits.maxDatagram || LIMITS.MAX_DATAGRAM)) {
      if (t.sendDatagram(bytes)) return true;
    }
    t.send(bytes);
    return true;
  }

  pingLoop() {
    if (!this.joined || this.closed) return;
    if (this.clock.nextPingInMs() <= 0) this.send({ type: 'ping', clientTime: this.clock.ping() }, true);
    this.timer('ping', Math.max(10, this.clock.nextPingInMs()), () => this.pingLoop());
  }

  /**
   * @param {Action} action
   * @returns {Promise<TimelineEvent | null>}
   */
  command(action) {
    if (!this.joined || !this.active) {
      return this.failCommand(new LockstepError(0, 'not connected to the room', { kind: 'not_connected' }));
    }
    const id = this.nextRequestId;
    this.nextRequestId = this.nextRequestId >= 0xffffffff ? 1 : this.nextRequestId + 1;
    const p = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.commands.findIndex((c) => c.id === id);
        if (i >= 0) this.commands.splice(i, 1);
        resolve(null);
      }, this.o.commandTimeoutMs ?? 5000);
      this.commands.push({ id, resolve, reject, timer });
    });
    // The page may ignore the promise: errors also go to 'error' listeners,
    // so a rejection must not become an unhandled one.
    p.catch(() => {});
    this.send({ type: 'command', requestId: id, action });
    return /** @type {Promise<TimelineEvent | null>} */ (p);
  }

  /** @param {LockstepError} e */
  failCommand(e) {
    this.emitError(e);
    const p = Promise.reject(e);
    p.catch(() => {});
    return p;
  }

  /** @param {TimelineEvent} ev */
  resolveCommand(ev) {
    const c = this.commands.shift();
    if (!c) return;
    clearTimeout(c.timer);
    c.resolve(ev);
  }

  // ---------------------------------------------------------------- the element

  controlLoop() {
    this.step();
    this.timer('control', this.o.controlIntervalMs ?? 250, () => this.controlLoop());
  }

  reportLoop() {
    if (this.el && this.joined) this.sendReport(this.el);
    this.timer('report', this.limits.reportIntervalMs || 1000, () => this.reportLoop());
  }

  /**
   * @param {HTMLMediaElement | null} el
   */
  sendReport(el) {
    if (!this.joined) return;
    const pos = el ? el.currentTime : 0;
    const rate = el ? el.playbackRate : 1;
    this.send(
      {
        type: 'report',
        epoch: this.tracker.epoch,
        positionUs: Number.isFinite(pos) && pos > 0 ? Math.round(pos * 1e6) : 0,
        rateMilli: Number.isFinite(rate) ? Math.max(0, Math.min(0xffff, Math.round(rate * 1000))) : 0,
        buffering: this.reportedBuffering,
      },
      true,
    );
  }

  /**
   * The element's waiting/playing events. A stall is reported once it lasts
   * `bufferingReportDelayMs` (a quick seek is not worth a room-wide wait);
   * its end is reported at once.
   * @param {boolean} on
   */
  setElementBuffering(on) {
    if (this.elBuffering === on) return;
    this.elBuffering = on;
    this.step();
  }

  /** @param {boolean} buffering */
  updateReportedBuffering(buffering) {
    if (buffering === this.reportedBuffering) {
      this.clearTimer('buffering');
      return;
    }
    if (!buffering) {
      this.clearTimer('buffering');
      this.reportedBuffering = false;
      if (this.el) this.sendReport(this.el);
      return;
    }
    if (this.timers.has('buffering')) return;
    this.timer('buffering', this.o.bufferingReportDelayMs ?? 250, () => {
      this.reportedBuffering = true;
      if (this.el) this.sendReport(this.el);
    });
  }

  /** One drift-control step: target from the timeline at the estimated server time, actions onto the element. */
  step() {
    const el = this.el;
    if (!el || this.closed) return;
    const serverNow = this.clock.hasEstimate ? this.clock.serverNowUs() : null;
    const at = serverNow !== null && this.joined ? this.tracker.at(serverNow) : null;
    const target = at
      ? {
          position: Number(at.positionUs) / 1e6,
          rate: at.state.timeline.rateMilli / 1000,
          paused: at.state.timeline.paused,
          epoch: at.state.timeline.epoch,
        }
      : null;
    const res = this.drift.update({
      nowMs: this.nowUs() / 1000,
      target,
      media: {
        currentTime: el.currentTime,
        playbackRate: el.playbackRate,
        paused: el.paused,
        readyState: el.readyState,
        seeking: el.seeking,
        buffering: this.elBuffering,
        duration: el.duration,
      },
    });
    this.updateReportedBuffering(res.buffering);
    for (const a of res.actions) {
      try {
        if (a.type === 'setRate') el.playbackRate = a.rate;
        else if (a.type === 'seek') el.currentTime = a.position;
        else if (a.type === 'pause') el.pause();
        else if (a.type === 'play') {
          const p = el.play();
          if (p && typeof p.catch === 'function') {
            p.then(
              () => {
                this.lastPlayRejected = false;
              },
              (/** @type {unknown} */ err) => this.playRejected(err),
            );
          }
        }
      } catch (err) {
        this.emitError(new LockstepError(0, `could not ${a.type} the element: ${err instanceof Error ? err.message : String(err)}`, { kind: 'media', cause: err }));
      }
    }
  }

  /** @param {unknown} err */
  playRejected(err) {
    const name = err instanceof Error ? err.name : '';
    if (name === 'AbortError') return; // a pause() or seek interrupted it: not a failure
    this.lastPlayRejected = true;
    const now = this.nowUs() / 1000;
    if (now - this.lastAutoplayErrorAt < 10_000) return;
    this.lastAutoplayErrorAt = now;
    this.emitError(
      new LockstepError(0, name === 'NotAllowedError' ? 'the browser blocked autoplay: call play() on the element from a user gesture' : `play() failed: ${err instanceof Error ? err.message : String(err)}`, {
        kind: name === 'NotAllowedError' ? 'autoplay' : 'media',
        cause: err,
      }),
    );
  }

  // ---------------------------------------------------------------- environment

  listenToEnvironment() {
    const g = /** @type {any} */ (globalThis);
    /**
     * @param {any} target
     * @param {string} type
     * @param {() => void} fn
     */
    const on = (target, type, fn) => {
      if (!target || typeof target.addEventListener !== 'function') return;
      target.addEventListener(type, fn);
      this.envCleanups.push(() => target.removeEventListener(type, fn));
    };
    // A new network: the path changed, so the clock samples are stale, and a
    // broken connection should be retried now rather than after the backoff.
    const networkChanged = () => {
      this.clock.reset();
      if (this.joined) this.pingLoop();
      else if (!this.closed && !this.active) {
        this.backoff.reset();
        this.attemptSoon(0);
      }
    };
    on(g.window ?? g, 'online', networkChanged);
    on(g.navigator?.connection, 'change', networkChanged);
    // A tab coming back to the foreground had its timers throttled: re-sync and step.
    on(g.document, 'visibilitychange', () => {
      if (g.document?.visibilityState !== 'visible') return;
      this.clock.burst();
      if (this.joined) this.pingLoop();
      this.step();
    });
  }
}

/**
 * @param {import('./tracker.js').TimelineState} s
 * @param {boolean} pending
 * @returns {TimelineEvent}
 */
function toEvent(s, pending) {
  const t = s.timeline;
  return {
    epoch: t.epoch,
    positionMs: Number(t.positionMs),
    anchorUs: Number(t.anchorUs),
    rate: t.rateMilli / 1000,
    rateMilli: t.rateMilli,
    paused: t.paused,
    effectiveAtUs: Number(s.effectiveAtUs),
    pending,
    reason: s.reason,
    by: s.by,
    timeline: t,
  };
}

/** @param {number} seconds */
function toMs(seconds) {
  const ms = Math.round(Number(seconds) * 1000);
  if (!Number.isFinite(ms) || ms < 0 || ms > LIMITS.MAX_POSITION_MS) {
    throw new RangeError(`position must be between 0 and ${LIMITS.MAX_POSITION_MS / 1000} seconds, got ${seconds}`);
  }
  return ms;
}

/**
 * @param {ConnectOptions} o
 * @returns {ConnectOptions}
 */
function validate(o) {
  if (!o || typeof o !== 'object') throw new TypeError('connect() needs an options object');
  if (typeof o.url !== 'string' || !/^https?:\/\//i.test(o.url)) throw new TypeError('url must be the http(s) base of the server');
  if (typeof o.eventId !== 'string' || !EVENT_ID.test(o.eventId)) throw new TypeError('eventId must be 1-128 printable ASCII characters');
  if (o.deviceId !== undefined && (typeof o.deviceId !== 'string' || o.deviceId.length === 0 || utf8.encode(o.deviceId).length > LIMITS.MAX_DEVICE_ID)) {
    throw new TypeError('deviceId must be a non-empty string of at most 128 bytes');
  }
  if (o.token !== undefined && o.token !== null && (typeof o.token !== 'string' || utf8.encode(o.token).length > LIMITS.MAX_TOKEN)) {
    throw new TypeError('token must be a string of at most 4096 bytes');
  }
  const t = o.transport ?? 'auto';
  if (t !== 'auto' && t !== 'webtransport' && t !== 'websocket') throw new TypeError("transport must be 'auto', 'webtransport' or 'websocket'");
  return o;
}

/** A device id kept in localStorage (a fresh one per page load without it). */
function defaultDeviceId() {
  const key = 'lockstep.deviceId';
  const g = /** @type {any} */ (globalThis);
  try {
    const v = g.localStorage?.getItem(key);
    if (v) return v;
  } catch {}
  const id = `d-${g.crypto?.randomUUID ? g.crypto.randomUUID() : Math.random().toString(36).slice(2) + Date.now().toString(36)}`;
  try {
    g.localStorage?.setItem(key, id);
  } catch {}
  return id;
}

