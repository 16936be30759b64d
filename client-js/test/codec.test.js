import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  decodeClient,
  decodeServer,
  encodeClient,
  encodeServer,
  encodeFrame,
  FrameDecoder,
  LockstepDecodeError,
  tryDecodeServer,
  tryDecodeClient,
  toHex,
  fromHex,
  LIMITS,
  CAPS,
} from '../src/codec.js';
import { load, messageVectors } from './support/vectors.js';

const vectors = messageVectors();

test('there are vectors for every message type', () => {
  const types = new Set(vectors.map((v) => v.value.type));
  for (const t of ['hello', 'ping', 'command', 'report', 'welcome', 'tick', 'timelineChanged', 'viewerCount', 'pong', 'error', 'memberJoined', 'memberLeft', 'roleChanged', 'policyChanged', 'ack', 'liveState', 'liveReport', 'nack']) {
    assert.ok(types.has(t), `no vector for ${t}`);
  }
  assert.ok(vectors.length >= 40, `only ${vectors.length} vectors`);
});

for (const v of vectors) {
  test(`${v.dir}/${v.file}: ${v.name} decodes to its value`, () => {
    const decode = v.dir === 'client' ? decodeClient : decodeServer;
    assert.deepStrictEqual(decode(fromHex(v.hex)), v.value);
  });
  test(`${v.dir}/${v.file}: ${v.name} encodes to its bytes`, () => {
    const encode = v.dir === 'client' ? encodeClient : encodeServer;
    assert.equal(toHex(encode(v.value)), v.hex);
  });
}

test('u64 values decode as numbers up to 2^53 - 1 and bigints above', () => {
  const small = decodeClient(encodeClient({ type: 'ping', clientTime: Number.MAX_SAFE_INTEGER }));
  assert.equal(small.clientTime, Number.MAX_SAFE_INTEGER);
  const big = decodeClient(encodeClient({ type: 'ping', clientTime: 2n ** 53n }));
  assert.equal(big.clientTime, 2n ** 53n);
  // A bigint that fits a number encodes the same as the number.
  assert.equal(toHex(encodeClient({ type: 'ping', clientTime: 5n })), '0105');
  assert.equal(toHex(encodeClient({ type: 'ping', clientTime: 2 ** 32 })), '01fd0000000001000000');
});

for (const v of load('invalid.json')) {
  test(`invalid (${v.decoder}): ${v.name} → ${v.error} ${v.code}`, () => {
    const decode = v.decoder === 'client' ? decodeClient : decodeServer;
    assert.throws(
      () => decode(fromHex(v.hex)),
      (e) => e instanceof LockstepDecodeError && e.kind === v.error && e.code === v.code,
    );
    const r = (v.decoder === 'client' ? tryDecodeClient : tryDecodeServer)(fromHex(v.hex));
    assert.equal(r.ok, false);
  });
}

test('decoders are total on junk input types', () => {
  for (const junk of [null, undefined, 42, 'abc', {}, [1, 2]]) {
    const r = tryDecodeServer(/** @type {any} */ (junk));
    assert.equal(r.ok, false);
    assert.equal(r.error.code, 4000);
  }
  // ArrayBuffer and other views are accepted.
  assert.deepStrictEqual(decodeServer(fromHex('0307').buffer), { type: 'viewerCount', count: 7 });
  assert.deepStrictEqual(decodeServer(new DataView(fromHex('0307').buffer)), { type: 'viewerCount', count: 7 });
});

test('decoders never throw anything but LockstepDecodeError on random bytes', () => {
  let seed = 12345;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
  const seeds = vectors.map((v) => fromHex(v.hex));
  for (let i = 0; i < 20000; i++) {
    let bytes;
    if (i % 2 === 0) {
      bytes = new Uint8Array(1 + (rnd() % 40)).map(() => rnd());
    } else {
      // Mutate a valid message: flip, cut or extend.
      bytes = seeds[i % seeds.length].slice();
      const k = rnd() % 3;
      if (k === 0 && bytes.length) bytes[rnd() % bytes.length] ^= 1 << (rnd() % 8);
      else if (k === 1) bytes = bytes.slice(0, rnd() % (bytes.length + 1));
      else bytes = Uint8Array.from([...bytes, rnd()]);
    }
    for (const decode of [decodeClient, decodeServer]) {
      try {
        const msg = decode(bytes);
        // Whatever decodes re-encodes to the same bytes (one encoding per message).
        const again = decode === decodeClient ? encodeClient(/** @type {any} */ (msg)) : encodeServer(/** @type {any} */ (msg));
        assert.equal(toHex(again), toHex(bytes));
      } catch (e) {
        assert.ok(e instanceof LockstepDecodeError, `threw ${e}`);
        assert.ok([4000, 4001, 4002].includes(e.code));
      }
    }
  }
});

test('encoders refuse ill-typed messages', () => {
  assert.throws(() => encodeClient(/** @type {any} */ ({ type: 'nope' })), TypeError);
  assert.throws(() => encodeClient({ type: 'ping', clientTime: -1 }), RangeError);
  assert.throws(() => encodeClient({ type: 'ping', clientTime: 1.5 }), RangeError);
  assert.throws(() => encodeClient({ type: 'ping', clientTime: 2n ** 64n }), RangeError);
  assert.throws(() => encodeClient({ type: 'command', requestId: 1, action: { kind: 'setRate', rateMilli: 70000 } }), RangeError);
  assert.throws(() => encodeClient(/** @type {any} */ ({ type: 'command', requestId: 1, action: { kind: 'jump' } })), TypeError);
  assert.throws(() => encodeServer(/** @type {any} */ ({ type: 'roleChanged', memberId: 1, role: 'admin' })), TypeError);
});

test('Ack: tag 10, request id, outcome, epoch (SPEC 2.2)', () => {
  const cases = [
    [{ type: 'ack', requestId: 5, outcome: 'applied', epoch: 13 }, '0a05000d'],
    [{ type: 'ack', requestId: 6, outcome: 'unchanged', epoch: 13 }, '0a06010d'],
    [{ type: 'ack', requestId: 300, outcome: 'coalesced', epoch: 70000 }, '0afb2c0102fc70110100'],
  ];
  for (const [msg, hex] of cases) {
    assert.equal(toHex(encodeServer(/** @type {any} */ (msg))), hex);
    assert.deepStrictEqual(decodeServer(fromHex(hex)), msg);
  }
  assert.throws(() => decodeServer(fromHex('0a05030d')), (e) => e instanceof LockstepDecodeError && e.kind === 'Malformed' && e.code === 4000);
  assert.throws(() => decodeServer(fromHex('0a0500')), (e) => e.kind === 'Malformed');
  assert.throws(() => decodeServer(fromHex('0a05000d00')), (e) => e.kind === 'TrailingBytes');
  assert.throws(() => decodeServer(fromHex('12')), (e) => e.kind === 'UnknownTag' && e.code === 4001);
  assert.throws(() => encodeServer(/** @type {any} */ ({ type: 'ack', requestId: 1, outcome: 'done', epoch: 1 })), TypeError);
});

test('live mode: LiveState (tag 11), LiveReport (tag 4), GoLive (action 6) and the LIVE cap (SPEC 2.4)', () => {
  const state = { type: 'liveState', clock: 'live', originMs: 1794441600000, latencyMs: 3000, autoLatency: false, atLive: true };
  const hex = toHex(encodeServer(/** @type {any} */ (state)));
  assert.equal(hex.slice(0, 4), '0b01');
  assert.deepStrictEqual(decodeServer(fromHex(hex)), state);
  assert.throws(() => decodeServer(fromHex('0b02' + hex.slice(4))), (e) => e.kind === 'Malformed' && e.code === 4000);
  assert.throws(() => encodeServer(/** @type {any} */ ({ ...state, clock: 'dvr' })), TypeError);
  const report = { type: 'liveReport', liveEdgeMs: 1795500000123, bufferMs: 6000 };
  assert.equal(toHex(encodeClient(/** @type {any} */ (report))), '04fd7bc3230ca2010000fb7017');
  assert.deepStrictEqual(decodeClient(fromHex('04fd7bc3230ca2010000fb7017')), report);
  assert.equal(toHex(encodeClient({ type: 'command', requestId: 13, action: { kind: 'goLive' } })), '020d06');
  assert.deepStrictEqual(decodeClient(fromHex('020d06')), { type: 'command', requestId: 13, action: { kind: 'goLive' } });
  assert.equal(CAPS.LIVE, 8);
});

test('changes as datagrams only: Nack (client tag 5) and the DATAGRAM_CHANGES cap (SPEC 5.2)', () => {
  assert.equal(toHex(encodeClient({ type: 'nack', epoch: 12 })), '050c');
  assert.deepStrictEqual(decodeClient(fromHex('050c')), { type: 'nack', epoch: 12 });
  assert.throws(() => decodeClient(fromHex('05')), (e) => e.kind === 'Malformed' && e.code === 4000);
  assert.throws(() => decodeClient(fromHex('0c')), (e) => e.kind === 'UnknownTag' && e.code === 4001);
  assert.throws(() => encodeClient(/** @type {any} */ ({ type: 'nack', epoch: -1 })), RangeError);
  assert.equal(CAPS.DATAGRAM_CHANGES, 16);
});

test('sync quality: SyncReport (client tag 6), its drift a zigzag i32 (SPEC 2.3, 6.1)', () => {
  const msg = { type: 'syncReport', epoch: 12, driftUs: -40000 };
  assert.equal(toHex(encodeClient(msg)), '060cfc7f380100');
  assert.deepStrictEqual(decodeClient(fromHex('060cfc7f380100')), msg);
  for (const driftUs of [0, -1, 1, 3200, -(2 ** 31), 2 ** 31 - 1]) {
    assert.deepStrictEqual(decodeClient(encodeClient({ type: 'syncReport', epoch: 1, driftUs })), { type: 'syncReport', epoch: 1, driftUs });
  }
  assert.throws(() => decodeClient(fromHex('060c')), (e) => e.kind === 'Malformed' && e.code === 4000);
  for (const driftUs of [2 ** 31, -(2 ** 31) - 1, 1.5, NaN]) {
    assert.throws(() => encodeClient(/** @type {any} */ ({ type: 'syncReport', epoch: 1, driftUs })), RangeError);
  }
});

test('suspensions: Suspend (client tag 7) and Resume (tag 8) (SPEC 6.4)', () => {
  assert.equal(toHex(encodeClient({ type: 'suspend', reason: 'interstitial' })), '070c696e7465727374697469616c');
  assert.deepStrictEqual(decodeClient(fromHex('070c696e7465727374697469616c')), { type: 'suspend', reason: 'interstitial' });
  assert.equal(toHex(encodeClient({ type: 'resume' })), '08');
  assert.deepStrictEqual(decodeClient(fromHex('08')), { type: 'resume' });
  assert.throws(() => decodeClient(fromHex('0800')), (e) => e.code === 4000, 'trailing byte');
  assert.throws(() => decodeClient(Uint8Array.from([7, 56, ...new Array(56).fill(120)])), (e) => e.code === 4000, 'reason over 55 bytes');
});

test('reactions: React (client tag 9), Reactions (server tag 12), the REACTIONS cap (SPEC 6.5)', () => {
  assert.equal(toHex(encodeClient({ type: 'react', emoji: '👏' })), '0904f09f918f');
  assert.deepStrictEqual(decodeClient(fromHex('0904f09f918f')), { type: 'react', emoji: '👏' });
  const msg = { type: 'reactions', counts: [{ emoji: '👏', count: 412 }, { emoji: '😂', count: 3 }] };
  assert.equal(toHex(encodeServer(msg)), '0c0204f09f918ffb9c0104f09f988203');
  assert.deepStrictEqual(decodeServer(fromHex('0c0204f09f918ffb9c0104f09f988203')), msg);
  assert.throws(() => decodeServer(Uint8Array.from([12, 17])), (e) => e.code === 4000, 'more than 16 kinds');
  assert.throws(() => decodeServer(fromHex('0c01')), (e) => e.code === 4000, 'truncated');
  assert.throws(() => encodeServer(/** @type {any} */ ({ type: 'reactions', counts: new Array(17).fill({ emoji: 'x', count: 1 }) })), RangeError);
  assert.equal(CAPS.REACTIONS, 32);
});

test('a tick rate above 0x7fff is clamped, as the reference encoder does', () => {
  const bytes = encodeServer({ type: 'tick', epoch: 0, positionMs: 0, anchorLoUs: 0, rateMilli: 40000, paused: true, viewers: 0 });
  assert.equal(/** @type {any} */ (decodeServer(bytes)).rateMilli, 0x7fff);
});

test('strings: a BOM and non-ASCII survive, and limits count UTF-8 bytes', () => {
  const m = { type: 'memberJoined', memberId: 1, role: 'viewer', name: '\uFEFFZoë' };
  assert.deepStrictEqual(decodeServer(encodeServer(/** @type {any} */ (m))), m);
  const long = { type: 'memberJoined', memberId: 1, role: 'viewer', name: 'é'.repeat(33) }; // 66 bytes
  assert.throws(() => decodeServer(encodeServer(/** @type {any} */ (long))), (e) => e.kind === 'Invalid' && e.code === 4000);
  const ok = { type: 'memberJoined', memberId: 1, role: 'viewer', name: 'é'.repeat(32) }; // 64 bytes
  assert.deepStrictEqual(decodeServer(encodeServer(/** @type {any} */ (ok))), ok);
});

// ------------------------------------------------------------------ framing

const frames = load('frames.json');

for (const f of frames.frames) {
  test(`frame: ${f.name}`, () => {
    assert.equal(toHex(encodeFrame(fromHex(f.payload))), f.framed);
    const d = new FrameDecoder();
    d.push(fromHex(f.framed));
    assert.equal(toHex(/** @type {Uint8Array} */ (d.next())), f.payload);
    assert.equal(d.next(), null);
    assert.equal(d.buffered, 0);
  });
}

for (const s of frames.streams) {
  test(`stream: ${s.name}, split at every chunk size`, () => {
    const wire = fromHex(s.stream);
    for (const chunk of [1, 2, 3, 7, 64, wire.length]) {
      const d = new FrameDecoder();
      const got = [];
      for (let i = 0; i < wire.length; i += chunk) {
        d.push(wire.subarray(i, i + chunk));
        for (let f; (f = d.next()) !== null; ) got.push(toHex(f));
      }
      assert.deepStrictEqual(got, s.payloads, `chunk ${chunk}`);
      assert.equal(d.buffered, 0);
    }
  });
}

for (const s of frames.incomplete) {
  test(`incomplete stream: ${s.name}`, () => {
    const d = new FrameDecoder();
    d.push(fromHex(s.stream));
    assert.equal(d.next(), null);
    assert.equal(d.buffered, s.stream.length / 2);
  });
}

for (const s of frames.invalid) {
  test(`invalid stream: ${s.name} → ${s.error} ${s.code}`, () => {
    const d = new FrameDecoder();
    d.push(fromHex(s.stream));
    const check = (e) => e instanceof LockstepDecodeError && e.kind === s.error && e.code === s.code;
    assert.throws(() => d.next(), check);
    // The stream cannot be resynchronised: the error sticks.
    d.push(fromHex('0100'));
    assert.throws(() => d.next(), check);
  });
}

test('frame decoder handles many frames and large buffers', () => {
  const d = new FrameDecoder();
  const payload = new Uint8Array(LIMITS.MAX_FRAME).map((_, i) => i & 0xff);
  const framed = encodeFrame(payload);
  for (let round = 0; round < 20; round++) {
    d.push(framed.subarray(0, 100));
    assert.equal(d.next(), null);
    d.push(framed.subarray(100));
    d.push(encodeFrame(fromHex('0105')));
    assert.equal(/** @type {Uint8Array} */ (d.next()).length, LIMITS.MAX_FRAME);
    assert.equal(toHex(/** @type {Uint8Array} */ (d.next())), '0105');
    assert.equal(d.next(), null);
  }
});

test('chat: Chat (client tag 10), ChatMessage/ChatDeleted/ChatMuted (tags 13-15), DeleteChat/MuteChat (actions 7, 8) and the CHAT cap (SPEC 6.6)', () => {
  assert.equal(CAPS.CHAT, 64);
  const chat = { type: 'chat', requestId: 5, text: 'hello 👋' };
  assert.equal(toHex(encodeClient(/** @type {any} */ (chat))), '0a050a68656c6c6f20f09f918b');
  assert.deepStrictEqual(decodeClient(fromHex('0a050a68656c6c6f20f09f918b')), chat);
  const del = { type: 'command', requestId: 14, action: { kind: 'deleteChat', id: 300 } };
  assert.equal(toHex(encodeClient(/** @type {any} */ (del))), '020e07fb2c01');
  const mute = { type: 'command', requestId: 15, action: { kind: 'muteChat', memberId: 7, muted: true } };
  assert.deepStrictEqual(decodeClient(encodeClient(/** @type {any} */ (mute))), mute);
  const msg = { type: 'chatMessage', id: 1, atMs: 1_795_500_000_123, memberId: 7, name: 'Ana', role: 'viewer', text: 'a\nb', requestId: 5, history: false };
  assert.deepStrictEqual(decodeServer(encodeServer(/** @type {any} */ (msg))), msg);
  assert.deepStrictEqual(decodeServer(fromHex('0efb2c0101')), { type: 'chatDeleted', id: 300, by: 1 });
  assert.deepStrictEqual(decodeServer(fromHex('0f0102')), { type: 'chatMuted', muted: true, by: 2 });
  assert.throws(() => decodeServer(fromHex('0f0202')), (e) => e.kind === 'Malformed');
  const long = encodeClient(/** @type {any} */ ({ type: 'chat', requestId: 0, text: 'x'.repeat(1001) }));
  assert.throws(() => decodeClient(long), (e) => e.kind === 'Invalid');
});
