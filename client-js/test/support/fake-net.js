// In-process fakes of WebSocket and WebTransport with a tiny fake Lockstep
// server behind them, for session tests that need no sockets: it answers
// Hello with Welcome, Ping with Pong, and records what arrives and how.

import { decodeClient, encodeServer, encodeFrame, FrameDecoder } from '../../src/codec.js';

export class FakeServer {
  constructor() {
    /** @type {{msg: any, via: 'ws' | 'stream' | 'datagram'}[]} */
    this.received = [];
    /** @type {Map<string, number>} device → member id */
    this.members = new Map();
    this.nextId = 1;
    /** @type {Set<any>} open connections */
    this.conns = new Set();
    this.timeline = { epoch: 3, positionMs: 5000, anchorUs: 0, rateMilli: 1000, paused: true };
    /** @type {{originMs: number, latencyMs: number, autoLatency: boolean, atLive: boolean} | null} a live room's state: a LiveState follows the Welcome (to LIVE clients) */
    this.live = null;
    /** @type {Uint8Array | null} a datagram that overtakes the Welcome (sent first; the Welcome 20 ms later) */
    this.beforeWelcome = null;
    this.wtFail = false;
    this.wsFail = false;
    this.wtDelayMs = 0;
    this.wsDelayMs = 0;
    /** @type {any[]} WebTransport constructions: {url, opts} */
    this.wtOpened = [];
    this.WebSocket = makeWebSocket(this);
    this.WebTransport = makeWebTransport(this);
  }

  nowUs() {
    return Math.round((performance.timeOrigin + performance.now()) * 1000);
  }

  /** @param {any} conn @param {Uint8Array} bytes @param {'ws' | 'stream' | 'datagram'} via */
  handle(conn, bytes, via) {
    const msg = decodeClient(bytes);
    this.received.push({ msg, via });
    if (msg.type === 'hello') {
      let id = this.members.get(msg.deviceId);
      if (!id) this.members.set(msg.deviceId, (id = this.nextId++));
      conn.caps = msg.caps;
      this.conns.add(conn);
      const early = this.beforeWelcome;
      if (early && msg.caps & 1) {
        conn.datagram(early);
        setTimeout(() => this.welcome(conn, id, msg.caps), 20);
      } else {
        this.welcome(conn, id, msg.caps);
      }
    } else if (msg.type === 'ping') {
      const t = this.nowUs();
      const pong = encodeServer({ type: 'pong', clientTime: msg.clientTime, serverRecvUs: t, serverSendUs: t });
      if (conn.caps & 1) conn.datagram(pong);
      else conn.reliable(pong);
    }
  }

  /** @param {any} conn @param {number} id @param {number} caps */
  welcome(conn, id, caps) {
    const anchorUs = this.nowUs();
    this.timeline.anchorUs = anchorUs;
    conn.reliable(
      encodeServer({
        type: 'welcome',
        memberId: id,
        role: id === 1 ? 'host' : 'viewer',
        timeline: { ...this.timeline },
        serverTimeUs: anchorUs,
        viewers: this.conns.size,
        policy: 'host-only',
        limits: { maxFrame: 8192, maxDatagram: 1200, maxMsgsPerSec: 50, tickIntervalMs: 250, reportIntervalMs: 100 },
      }),
    );
    if (this.live && caps & 8) conn.reliable(encodeServer({ type: 'liveState', clock: 'live', ...this.live }));
  }

  /** Sends to every connection, reliably and (if it has datagrams) as a datagram copy. */
  broadcast(bytes, { datagram = false, reliable = true } = {}) {
    for (const c of this.conns) {
      if (reliable) c.reliable(bytes);
      if (datagram && c.caps & 1) c.datagram(bytes);
    }
  }

  /** Breaks every connection (as a network failure would). */
  killAll(code = 0) {
    for (const c of [...this.conns]) c.kill(code);
    this.conns.clear();
  }
}

/** @param {FakeServer} server */
function makeWebSocket(server) {
  return class FakeWebSocket {
    /** @param {string} url @param {string[]} protocols */
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.protocol = '';
      this.readyState = 0;
      this.binaryType = 'blob';
      /** @type {any} */ this.onopen = null;
      /** @type {any} */ this.onclose = null;
      /** @type {any} */ this.onmessage = null;
      /** @type {any} */ this.onerror = null;
      this.conn = {
        caps: 0,
        reliable: (/** @type {Uint8Array} */ b) => {
          if (this.readyState === 1) setTimeout(() => this.onmessage?.({ data: b.slice().buffer }), 0);
        },
        datagram: () => {},
        kill: (/** @type {number} */ code) => this.serverClose(code || 1006),
      };
      setTimeout(() => {
        if (server.wsFail) {
          this.readyState = 3;
          this.onclose?.({ code: 1006, reason: '' });
          return;
        }
        this.readyState = 1;
        this.protocol = protocols.includes('lockstep.v1') ? 'lockstep.v1' : '';
        this.onopen?.({});
      }, server.wsDelayMs);
    }

    /** @param {Uint8Array} bytes */
    send(bytes) {
      if (this.readyState !== 1) return;
      server.handle(this.conn, bytes, 'ws');
    }

    close(code = 1000, reason = '') {
      if (this.readyState === 3) return;
      this.readyState = 3;
      server.conns.delete(this.conn);
      setTimeout(() => this.onclose?.({ code, reason }), 0);
    }

    /** @param {number} code */
    serverClose(code) {
      if (this.readyState === 3) return;
      this.readyState = 3;
      setTimeout(() => this.onclose?.({ code, reason: 'gone' }), 0);
    }
  };
}

/** @param {FakeServer} server */
function makeWebTransport(server) {
  class FakeWebTransport {
    /** @param {string} url @param {any} opts */
    constructor(url, opts) {
      server.wtOpened.push({ url, opts });
      this.url = url;
      /** @type {(v: any) => void} */ let resolveClosed = () => {};
      /** @type {(e: any) => void} */ let rejectClosed = () => {};
      this.closed = new Promise((res, rej) => {
        resolveClosed = res;
        rejectClosed = rej;
      });
      this.resolveClosed = resolveClosed;
      this.rejectClosed = rejectClosed;
      this.ready = new Promise((res, rej) =>
        setTimeout(() => {
          if (server.wtFail) {
            const e = new Error('QUIC handshake failed');
            rej(e);
            rejectClosed(e);
          } else res(undefined);
        }, server.wtDelayMs),
      );
      this.ready.catch(() => {});
      /** @type {ReadableStreamDefaultController<Uint8Array> | null} */
      let dgCtl = null;
      this.datagrams = {
        maxDatagramSize: 1200,
        readable: new ReadableStream({ start: (c) => void (dgCtl = c) }),
        writable: new WritableStream({
          write: (chunk) => {
            if (chunk.length > 1200) throw new Error('datagram too large');
            server.handle(this.conn, chunk, 'datagram');
          },
        }),
      };
      this.ended = false;
      this.conn = {
        caps: 0,
        reliable: (/** @type {Uint8Array} */ b) => {
          if (this.ended || !this.streamCtl) return;
          // Split frames across chunks to exercise the decoder.
          const f = encodeFrame(b);
          const cut = Math.max(1, f.length >> 1);
          this.streamCtl.enqueue(f.slice(0, cut));
          this.streamCtl.enqueue(f.slice(cut));
        },
        datagram: (/** @type {Uint8Array} */ b) => {
          if (!this.ended) dgCtl?.enqueue(b.slice());
        },
        kill: (/** @type {number} */ code) => this.serverClose(code),
      };
      /** @type {ReadableStreamDefaultController<Uint8Array> | null} */
      this.streamCtl = null;
      this.dgCtl = () => dgCtl;
    }

    async createBidirectionalStream() {
      const frames = new FrameDecoder();
      return {
        readable: new ReadableStream({ start: (c) => void (this.streamCtl = c) }),
        writable: new WritableStream({
          write: (chunk) => {
            frames.push(chunk);
            for (let f = frames.next(); f; f = frames.next()) server.handle(this.conn, f, 'stream');
          },
        }),
      };
    }

    /** @param {{closeCode?: number, reason?: string}} [info] */
    close(info = {}) {
      if (this.ended) return;
      this.ended = true;
      server.conns.delete(this.conn);
      this.resolveClosed({ closeCode: info.closeCode ?? 0, reason: info.reason ?? '' });
    }

    /** @param {number} code */
    serverClose(code) {
      if (this.ended) return;
      this.ended = true;
      try {
        this.streamCtl?.error(new Error('session closed'));
      } catch {}
      this.resolveClosed({ closeCode: code, reason: 'server closed' });
    }

    get congestionControl() {
      return 'default';
    }
  }
  return FakeWebTransport;
}
