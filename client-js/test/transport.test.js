import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openWebTransport, webTransportOptions, hexToArrayBuffer } from '../src/transport/webtransport.js';
import { openWebSocket } from '../src/transport/websocket.js';
import { encodeClient, encodeFrame, decodeClient, FrameDecoder, toHex } from '../src/codec.js';

/** A minimal WebTransport double whose server side the test drives by hand. */
function fakeWebTransport({ maxDatagramSize = 1200, withCongestion = true } = {}) {
  const state = { streamOut: new FrameDecoder(), datagramsOut: [], opts: null, closedWith: null };
  class WT {
    constructor(url, opts) {
      state.opts = opts;
      this.ready = Promise.resolve();
      this.closed = new Promise((r) => (state.resolveClosed = r));
      this.datagrams = {
        maxDatagramSize,
        readable: new ReadableStream({ start: (c) => (state.dgIn = c) }),
        writable: new WritableStream({ write: (b) => void state.datagramsOut.push(b) }),
      };
    }
    async createBidirectionalStream() {
      return {
        readable: new ReadableStream({ start: (c) => (state.streamIn = c) }),
        writable: new WritableStream({ write: (b) => state.streamOut.push(b) }),
      };
    }
    close(info) {
      state.closedWith = info;
      state.resolveClosed(info);
    }
  }
  if (withCongestion) Object.defineProperty(WT.prototype, 'congestionControl', { get: () => 'default' });
  return { WT, state };
}

const tick = (ms) => new Promise((r) => setTimeout(r, ms));

test('WebTransport: frames on the stream (split and joined), datagrams both ways, size limit', async () => {
  const { WT, state } = fakeWebTransport({ maxDatagramSize: 60 });
  const got = [];
  const closes = [];
  const t = await openWebTransport({ url: 'https://h:4433/x', WebTransport: WT, onMessage: (b, dg) => got.push([toHex(b), dg]), onClose: (i) => closes.push(i), onError: () => {} });
  assert.equal(t.name, 'webtransport');
  assert.equal(t.datagrams, true);
  assert.equal(t.maxDatagramSize, 60);
  const hello = encodeClient({ type: 'hello', version: 1, eventId: 'e', deviceId: 'd', token: null, caps: 1 });
  t.send(hello);
  await tick(5);
  assert.deepEqual(decodeClient(/** @type {Uint8Array} */ (state.streamOut.next())), decodeClient(hello));
  // Two frames in three chunks, cut mid-prefix and mid-payload.
  const wire = new Uint8Array([...encodeFrame(new Uint8Array([3, 7])), ...encodeFrame(new Uint8Array(300).fill(1))]);
  state.streamIn.enqueue(wire.slice(0, 4));
  state.streamIn.enqueue(wire.slice(4, 5));
  state.streamIn.enqueue(wire.slice(5));
  state.dgIn.enqueue(new Uint8Array([4, 0, 0, 0]));
  await tick(5);
  const stream = got.filter(([, dg]) => !dg).map(([h]) => h);
  assert.equal(stream.length, 2);
  assert.equal(stream[0], '0307');
  assert.equal(stream[1], '01'.repeat(300));
  assert.deepEqual(got.filter(([, dg]) => dg), [['04000000', true]]);
  assert.equal(t.sendDatagram(new Uint8Array(60)), true);
  assert.equal(t.sendDatagram(new Uint8Array(61)), false, 'never larger than maxDatagramSize');
  await tick(5);
  assert.equal(state.datagramsOut.length, 1);
  // The server ends the session: onClose once, with its code.
  state.resolveClosed({ closeCode: 4014, reason: 'bye' });
  await tick(5);
  assert.deepEqual(closes, [{ code: 4014, reason: 'bye' }]);
});

test('WebTransport: a bad frame prefix is an error that closes with its code', async () => {
  const { WT, state } = fakeWebTransport();
  const errors = [];
  const closes = [];
  await openWebTransport({ url: 'https://h/x', WebTransport: WT, onMessage: () => {}, onClose: (i) => closes.push(i), onError: (e) => errors.push(e) });
  state.streamIn.enqueue(new Uint8Array([0xfb, 0x01, 0x20])); // 8193 bytes announced
  await tick(5);
  assert.equal(errors[0].code, 4002);
  assert.equal(closes.length, 1);
  assert.equal(closes[0].code, 4002);
  assert.equal(state.closedWith.closeCode, 4002);
});

test('WebTransport: constructor options and hash conversion', () => {
  const { WT } = fakeWebTransport();
  const o = webTransportOptions([{ algorithm: 'sha-256', value: 'AB:cd:01' }], WT);
  assert.deepEqual([...new Uint8Array(/** @type {any} */ (o.serverCertificateHashes)[0].value)], [0xab, 0xcd, 0x01]);
  assert.equal(o.congestionControl, 'low-latency');
  assert.equal(o.requireUnreliable, true);
  const { WT: Old } = fakeWebTransport({ withCongestion: false });
  assert.equal('congestionControl' in webTransportOptions(undefined, Old), false);
  assert.equal('serverCertificateHashes' in webTransportOptions([], Old), false);
  assert.throws(() => hexToArrayBuffer('abc'), TypeError);
  assert.throws(() => hexToArrayBuffer('zz'), TypeError);
});

test('WebTransport: an abort before ready rejects and closes the session', async () => {
  let closed = null;
  class Slow {
    constructor() {
      this.ready = new Promise(() => {});
      this.closed = new Promise(() => {});
    }
    close(i) {
      closed = i;
    }
  }
  const ctl = new AbortController();
  const p = openWebTransport({ url: 'https://h/x', WebTransport: Slow, signal: ctl.signal, onMessage() {}, onClose() {}, onError() {} });
  ctl.abort();
  // ready never settles, but the abort closes the session; the caller's race has moved on.
  assert.deepEqual(closed, { closeCode: 0, reason: 'cancelled' });
  p.catch(() => {});
});

test('WebSocket: asks for lockstep.v1, refuses a server that does not grant it', async () => {
  class NoProto {
    constructor(url, protocols) {
      NoProto.seen = protocols;
      this.readyState = 0;
      setTimeout(() => {
        this.readyState = 1;
        this.protocol = '';
        this.onopen?.();
      }, 0);
    }
    close() {
      this.closedByClient = true;
    }
  }
  await assert.rejects(
    openWebSocket({ url: 'ws://h/x', WebSocket: /** @type {any} */ (NoProto), onMessage() {}, onClose() {}, onError() {} }),
    /did not grant/,
  );
  assert.deepEqual(NoProto.seen, ['lockstep.v1']);
});
