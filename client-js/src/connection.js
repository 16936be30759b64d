// The connection of a session: where the server is (the WebSocket URL, and
// the WebTransport URL and certificate hashes from `GET /api/certificate`),
// the race between the two transports, Hello, and reconnecting with backoff
// when the connection breaks, falling back to WebSocket after repeated
// WebTransport failures. Decoded server messages go to the session; what they
// mean is the session's business.

import { CAPS, CODES, LIMITS, PROTOCOL_VERSION, codeFatal, encodeClient, tryDecodeServer } from './codec.js';
import { Backoff, race, sharedMemory } from './connect.js';
import { LockstepError } from './errors.js';
import { Timers } from './timers.js';
import { openWebSocket } from './transport/websocket.js';
import { openWebTransport } from './transport/webtransport.js';

/** @typedef {import('./codec.js').ServerMsg} ServerMsg */
/** @typedef {import('./codec.js').ClientMsg} ClientMsg */
/** @typedef {import('./codec.js').Limits} Limits */
/** @typedef {import('./transport/types.js').Transport} Transport */
/** @typedef {import('./transport/types.js').TransportClose} TransportClose */
/** @typedef {import('./types.js').ConnectOptions} ConnectOptions */
/** @typedef {import('./types.js').CertificateHash} CertificateHash */
/** @typedef {import('./types.js').TransportName} TransportName */

/**
 * What the connection tells the session.
 * @typedef {Object} ConnectionHandlers
 * @property {(msg: ServerMsg, datagram: boolean) => void} message a decoded message of the active transport
 * @property {(e: Error) => void} error a message that did not decode, a transport problem, a failed attempt
 * @property {(status: 'connecting' | 'reconnecting') => void} status a new attempt is scheduled
 * @property {(info: TransportClose) => void} lost the active transport ended (a reconnect follows unless `fatal`)
 * @property {(info: TransportClose) => void} fatal it ended with a code that reconnecting cannot fix: no reconnect
 * @property {(e: LockstepError) => void} stop `getToken` failed or gave no token: no reconnect
 */

/** Token expiries (4013) in a row, each answered with a fresh token from `getToken`, before giving up. */
const MAX_TOKEN_RENEWALS = 3;
const utf8 = new TextEncoder();

/**
 * @typedef {Object} CertificateInfo what `GET /api/certificate` said
 * @property {CertificateHash[]} hashes
 * @property {boolean} hashesApply whether the browser accepts the certificate by these hashes
 *   (`serverCertificateHashes`: ECDSA P-256, valid at most 14 days); when false it is a CA's
 *   certificate, validated as usual. A server without the field: true.
 * @property {string} [url] the node's WebTransport base (`webtransport`)
 * @property {number} [notAfter] when the hashes expire, ms since the Unix epoch
 */

/** Hosts that mean "every interface" rather than an address to dial. */
const UNSPECIFIED = new Set(['0.0.0.0', '[::]']);

/**
 * The WebSocket URL of a room: `ws(s)://host/api/live-stream/{eventId}?access_token=…`.
 * @param {URL} base the server's HTTP base (ending in '/')
 * @param {string} eventId
 * @param {string | null | undefined} token
 */
export function webSocketUrl(base, eventId, token) {
  const u = new URL(`api/live-stream/${encodeURIComponent(eventId)}`, base);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  if (token) u.searchParams.set('access_token', token);
  return u.toString();
}

/**
 * The WebTransport URL of a room. `wtBase` is the `webtransportUrl` option or
 * the certificate's `webtransport` field: a base (`https://host:port`) that
 * gets the path, or a full endpoint URL (`…/api/live-stream/{id}`, as the
 * session API gives it) used as is. Without one: `https://{host}:{port}`.
 * @param {URL} base the server's HTTP base
 * @param {string} eventId
 * @param {string | null | undefined} token
 * @param {string | undefined} wtBase
 * @param {number} [port] of the fallback URL (4433)
 */
export function webTransportUrl(base, eventId, token, wtBase, port = 4433) {
  const host = base.hostname.includes(':') && !base.hostname.startsWith('[') ? `[${base.hostname}]` : base.hostname;
  const b = new URL(wtBase ?? `https://${host}:${port}`);
  // A server bound to every interface may name its bind address: dial the page's host there.
  if (UNSPECIFIED.has(b.hostname)) b.hostname = base.hostname;
  const u = /\/api\/live-stream\/[^/]+\/?$/.test(b.pathname)
    ? b
    : new URL(`api/live-stream/${encodeURIComponent(eventId)}`, b.href.endsWith('/') ? b.href : `${b.href}/`);
  if (token) u.searchParams.set('access_token', token);
  return u.toString();
}

/**
 * Reads a `GET /api/certificate` body: `{hashes: [{algorithm, value}], notAfter, hashesApply?, webtransport?}`.
 * `notAfter` is Unix seconds (the server's contract); milliseconds and ISO
 * strings are accepted too. `hashesApply` is false only when the server says
 * so (older servers do not send it: their hashes apply). `webtransport` is
 * kept only if it is an https URL.
 * @param {any} body
 * @returns {CertificateInfo}
 */
export function parseCertificate(body) {
  const hashes = Array.isArray(body?.hashes)
    ? body.hashes.filter((/** @type {any} */ h) => h && typeof h.algorithm === 'string' && typeof h.value === 'string')
    : [];
  const raw = body?.notAfter;
  const notAfter = typeof raw === 'number' ? (raw < 1e11 ? raw * 1000 : raw) : typeof raw === 'string' ? Date.parse(raw) : undefined;
  /** @type {string | undefined} */
  let url;
  if (typeof body?.webtransport === 'string') {
    try {
      if (new URL(body.webtransport).protocol === 'https:') url = body.webtransport;
    } catch {}
  }
  const hashesApply = body?.hashesApply !== false;
  return { hashes, hashesApply, url, notAfter: notAfter !== undefined && Number.isFinite(notAfter) ? notAfter : undefined };
}

export class Connection {
  #o;
  #base;
  #deviceId;
  #h;
  #backoff;
  #memory;
  #timers = new Timers();
  /** @type {Transport | null} */
  #active = null;
  /** @type {TransportName | null} */
  #transport = null;
  #joined = false;
  /** Whether the current connection's Hello asked for changes as datagrams only (DATAGRAM_CHANGES). */
  #datagramChanges = false;
  #everJoined = false;
  #reconnects = 0;
  #closed = false;
  #wtFailures = 0;
  #wtDisabledUntil = 0;
  /** @type {CertificateInfo | null} */
  #cert = null;
  /** @type {AbortController | null} */
  #abort = null;
  /** @type {number} */
  #maxDatagram = LIMITS.MAX_DATAGRAM;
  /** @type {string | null} the token of the current (or last) attempt */
  #token = null;
  /** Whether the next attempt may use the `token` option rather than call `getToken`. */
  #initialToken = true;
  /** The server said the token expired (Error 4013): the coming close is renewed, not fatal. */
  #renewPending = false;
  /** Renewals since the last Welcome. */
  #renewals = 0;

  /**
   * @param {ConnectOptions} o
   * @param {URL} base the server's HTTP base (ending in '/')
   * @param {string} deviceId
   * @param {ConnectionHandlers} handlers
   */
  constructor(o, base, deviceId, handlers) {
    this.#o = o;
    this.#base = base;
    this.#deviceId = deviceId;
    this.#h = handlers;
    this.#backoff = new Backoff(o.backoff);
    this.#memory = o.memory ?? sharedMemory;
  }

  /** The transport of the current (or last) connection. */
  get transport() {
    return this.#transport;
  }

  /** Whether the current connection has joined (Welcome received). */
  get joined() {
    return this.#joined;
  }

  /**
   * Whether the current connection takes each change once, as a datagram
   * (its Hello set DATAGRAM_CHANGES): a missed one is asked for with a Nack.
   */
  get datagramChanges() {
    return this.#datagramChanges;
  }

  /** Connections lost after joining. */
  get reconnects() {
    return this.#reconnects;
  }

  /** Starts connecting. */
  start() {
    this.#attemptSoon(0);
  }

  /**
   * Sends a message; as a datagram when asked and the transport has them
   * (never larger than the transport's and the server's datagram limits).
   * @param {ClientMsg} msg
   * @param {boolean} [datagram]
   * @returns {boolean} false when not connected
   */
  send(msg, datagram = false) {
    const t = this.#active;
    if (!t) return false;
    const bytes = encodeClient(msg);
    if (datagram && t.datagrams && bytes.length <= Math.min(t.maxDatagramSize, this.#maxDatagram)) {
      if (t.sendDatagram(bytes)) return true;
    }
    t.send(bytes);
    return true;
  }

  /**
   * The Welcome of the current connection arrived: it is joined.
   * @param {Limits} limits the server's, from the Welcome
   */
  joinedWith(limits) {
    this.#timers.clear('welcome-timeout');
    this.#joined = true;
    this.#everJoined = true;
    this.#maxDatagram = limits.maxDatagram || LIMITS.MAX_DATAGRAM;
    this.#backoff.reset();
    if (this.#transport === 'webtransport') this.#wtFailures = 0;
    if (this.#transport) this.#memory.set(this.#base.origin, this.#transport);
    this.#renewals = 0;
  }

  /**
   * The server refused the token as expired (Error 4013). With `getToken`,
   * the coming close is answered by a new attempt with a fresh token (up to
   * a few times in a row); returns whether it will be.
   */
  tokenExpired() {
    if (!this.#o.getToken || this.#renewals >= MAX_TOKEN_RENEWALS) return false;
    this.#renewPending = true;
    return true;
  }

  /** The network changed: when disconnected, try again now rather than after the backoff. */
  retryNow() {
    if (this.#closed || this.#active) return;
    this.#backoff.reset();
    this.#attemptSoon(0);
  }

  /** Closes the connection for good. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#timers.stop();
    this.#abort?.abort();
    const t = this.#active;
    this.#active = null;
    this.#joined = false;
    t?.close(t.name === 'websocket' ? 1000 : 0, 'bye');
  }

  /** @param {number} ms */
  #attemptSoon(ms) {
    this.#timers.set('attempt', ms, () => {
      this.#attempt().catch((e) => this.#attemptFailed(e));
    });
  }

  async #attempt() {
    if (this.#closed) return;
    this.#abort?.abort();
    const ctl = new AbortController();
    this.#abort = ctl;
    if (!(await this.#nextToken()) || this.#closed || ctl.signal.aborted) return;
    const timeoutMs = this.#o.connectTimeoutMs ?? 10_000;
    const { name, value: t } = await race(this.#candidates(), { signal: ctl.signal, timeoutMs });
    if (this.#closed || ctl.signal.aborted) {
      t.close(t.name === 'websocket' ? 1000 : 0, 'cancelled');
      return;
    }
    this.#active = t;
    this.#transport = /** @type {TransportName} */ (name);
    this.#joined = false;
    let caps = CAPS.ACKS | CAPS.LIVE;
    // With datagrams (WebTransport), each change comes once, as a datagram;
    // the session asks for a lost one (SPEC 5.2).
    if (t.datagrams) caps |= CAPS.DATAGRAMS | CAPS.DATAGRAM_CHANGES;
    this.#datagramChanges = t.datagrams;
    if (this.#o.presence) caps |= CAPS.PRESENCE;
    if (this.#o.reactions) caps |= CAPS.REACTIONS;
    if (this.#o.chat) caps |= CAPS.CHAT;
    if (this.#o.mediaItems || this.#o.resolveMedia) caps |= CAPS.MEDIA;
    t.send(encodeClient({ type: 'hello', version: PROTOCOL_VERSION, eventId: this.#o.eventId, deviceId: this.#deviceId, token: this.#token, caps }));
    this.#timers.set('welcome-timeout', timeoutMs, () => {
      if (this.#active === t && !this.#joined) {
        t.close(t.name === 'websocket' ? 1000 : 0, 'no Welcome');
        this.#lost(t, { code: 0, reason: 'no Welcome in time' });
      }
    });
  }

  /**
   * The token of the coming attempt: the `token` option, or with `getToken`
   * a fresh one from it (the `token` option, when given, serves the first
   * attempt). False when `getToken` failed: the connection has stopped.
   */
  async #nextToken() {
    const o = this.#o;
    const first = this.#initialToken;
    this.#initialToken = false;
    if (!o.getToken || (first && o.token)) {
      this.#token = o.token ?? null;
      return true;
    }
    /** @type {unknown} */
    let t;
    try {
      t = await o.getToken();
    } catch (e) {
      this.#stop(`getToken() failed: ${e instanceof Error ? e.message : String(e)}`, e);
      return false;
    }
    if (typeof t !== 'string' || t.length === 0) {
      this.#stop('getToken() gave no token');
      return false;
    }
    if (utf8.encode(t).length > LIMITS.MAX_TOKEN) {
      this.#stop(`getToken() gave a token over ${LIMITS.MAX_TOKEN} bytes`);
      return false;
    }
    this.#token = t;
    return true;
  }

  /**
   * @param {string} message
   * @param {unknown} [cause]
   */
  #stop(message, cause) {
    if (this.#closed) return;
    this.#h.stop(new LockstepError(0, message, { kind: 'token', cause }));
  }

  /** @param {unknown} e */
  #attemptFailed(e) {
    if (this.#closed) return;
    const errors = e instanceof AggregateError ? e.errors : [e];
    const why = errors.map((x) => (x instanceof Error ? x.message : String(x))).join('; ');
    this.#h.error(new LockstepError(0, `could not connect: ${why}`, { kind: 'transport', cause: e }));
    this.#scheduleReconnect();
  }

  /** @returns {import('./connect.js').Candidate<Transport>[]} */
  #candidates() {
    const o = this.#o;
    const mode = o.transport ?? 'auto';
    /** @type {import('./connect.js').Candidate<Transport>[]} */
    const list = [];
    const WT = o.WebTransport ?? /** @type {any} */ (globalThis).WebTransport;
    const wtAllowed = mode === 'webtransport' || (mode === 'auto' && WT && Date.now() >= this.#wtDisabledUntil);
    // Each transport reports only while it is the active one.
    const handlers = (/** @type {() => Transport | null} */ self) => ({
      onMessage: (/** @type {Uint8Array} */ b, /** @type {boolean} */ dg) => {
        const t = self();
        if (t && t === this.#active) this.#onBytes(b, dg);
      },
      onClose: (/** @type {TransportClose} */ info) => {
        const t = self();
        if (t && t === this.#active) this.#lost(t, info);
      },
      onError: (/** @type {Error} */ err) => {
        const t = self();
        if (t && t === this.#active) this.#h.error(err);
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
            const info = await this.#webTransportInfo(signal);
            wt = await openWebTransport({ url: info.url, certificateHashes: info.hashes, signal, WebTransport: WT, ...handlers(() => wt) });
            return wt;
          } catch (e) {
            // Losing the race is not a failure; anything else counts towards the fallback.
            if (!signal.aborted) this.#noteWebTransportFailure();
            throw e;
          }
        },
        dispose: (t) => t.close(0, 'lost the race'),
      });
    }
    if (mode !== 'webtransport') {
      /** @type {Transport | null} */
      let ws = null;
      const preferWs = this.#memory.get(this.#base.origin) === 'websocket';
      list.push({
        name: 'websocket',
        delayMs: list.length && !preferWs ? o.webtransportHeadStartMs ?? 200 : 0,
        open: async (signal) => {
          const url = webSocketUrl(this.#base, o.eventId, this.#token);
          ws = await openWebSocket({ url, signal, WebSocket: o.WebSocket, ...handlers(() => ws) });
          return ws;
        },
        dispose: (t) => t.close(1000, 'lost the race'),
      });
    }
    return list;
  }

  /**
   * Where and how to reach the server over WebTransport: the certificate
   * hashes and the node's URL from `GET /api/certificate` (cached until the
   * hashes expire), or the options. The server's hashes are passed only when
   * it says they apply (`hashesApply`); otherwise none are, and the browser
   * validates a CA's certificate as for any https URL.
   * @param {AbortSignal} signal
   * @returns {Promise<{url: string, hashes?: CertificateHash[]}>}
   */
  async #webTransportInfo(signal) {
    const o = this.#o;
    if (!o.certificateHashes && (!this.#cert || (this.#cert.notAfter !== undefined && this.#cert.notAfter <= Date.now()))) {
      const f = o.fetch ?? globalThis.fetch;
      if (!f) throw new Error('fetch is not available for /api/certificate');
      const res = await f(new URL('api/certificate', this.#base).toString(), { signal, cache: 'no-store' });
      if (!res.ok) throw new Error(`GET /api/certificate: HTTP ${res.status}`);
      this.#cert = parseCertificate(await res.json());
    }
    // The option wins, then the node's own URL, then the default port on the page's host.
    const url = webTransportUrl(this.#base, o.eventId, this.#token, o.webtransportUrl ?? this.#cert?.url, o.webtransportPort);
    const served = this.#cert?.hashesApply === false ? undefined : this.#cert?.hashes;
    return { url, hashes: o.certificateHashes ?? served };
  }

  #noteWebTransportFailure() {
    this.#cert = null; // the certificate may have rotated
    this.#wtFailures++;
    const max = this.#o.webtransportMaxFailures ?? 2;
    if ((this.#o.transport ?? 'auto') === 'auto' && this.#wtFailures >= max) {
      this.#wtDisabledUntil = Date.now() + (this.#o.webtransportRetryMs ?? 300_000);
      this.#wtFailures = 0;
      this.#memory.set(this.#base.origin, 'websocket');
    }
  }

  /**
   * @param {Transport} t the active transport, which ended
   * @param {TransportClose} info
   */
  #lost(t, info) {
    if (this.#active !== t) return;
    this.#active = null;
    this.#timers.clear('welcome-timeout');
    if (this.#closed) return;
    const wasJoined = this.#joined;
    this.#joined = false;
    this.#h.lost(info);
    const renew = this.#renewPending || (info.code === CODES.token_expired && this.tokenExpired());
    this.#renewPending = false;
    if (renew) {
      // A fresh token from getToken, at once: the expiry is no network trouble.
      this.#renewals++;
      if (wasJoined) this.#reconnects++;
      this.#h.status(this.#everJoined ? 'reconnecting' : 'connecting');
      this.#attemptSoon(0);
      return;
    }
    if (codeFatal(info.code)) {
      this.#h.fatal(info);
      return;
    }
    if (t.name === 'webtransport') this.#noteWebTransportFailure();
    if (wasJoined) this.#reconnects++;
    this.#scheduleReconnect();
  }

  #scheduleReconnect() {
    if (this.#closed) return;
    this.#h.status(this.#reconnects > 0 || this.#everJoined ? 'reconnecting' : 'connecting');
    this.#attemptSoon(this.#backoff.next());
  }

  /**
   * @param {Uint8Array} bytes
   * @param {boolean} datagram
   */
  #onBytes(bytes, datagram) {
    const r = tryDecodeServer(bytes);
    if (!r.ok) {
      // An unknown tag is a newer server's message: ignore it (SPEC 11).
      if (r.error.kind !== 'UnknownTag') this.#h.error(r.error);
      return;
    }
    try {
      this.#h.message(r.msg, datagram);
    } catch (e) {
      this.#h.error(new LockstepError(0, `handling ${r.msg.type} failed: ${e instanceof Error ? e.message : String(e)}`, { kind: 'internal', cause: e }));
    }
  }
}
