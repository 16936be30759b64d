// The element controller in a live room, with simulated time: node:test's
// mock timers drive its control and report loops, a simulated clock is the
// server's and the client's, and a simulated element plays a live stream
// whose element time maps to program time through a fake adapter. The drift
// control is the real one (src/drift.js), steering through the adapter.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ElementController } from '../src/element.js';

const WEEK_MS = 604_800_000;
const START = 1_790_000_000_000; // the simulated Unix time at t = 0, ms
const ORIGIN = Math.floor(START / WEEK_MS - 1) * WEEK_MS;
const LATENCY = 3000;
const WINDOW_MS = 120_000; // the playlist's DVR window
const EDGE_LAG_MS = 2000; // its newest segment ends this far behind real time
/** Element time 10 s is program time BASE: element time is not program time. */
const BASE = START - 3_600_000;
const toProgram = (t) => BASE + (t - 10) * 1000;
const toMedia = (p) => 10 + (p - BASE) / 1000;

/**
 * A live stream in an element: it plays what the playlist's window holds
 * (program times from now − 120 s to now − 2 s), seeks take `seekLatencyMs`,
 * and playing past the newest segment stalls it.
 */
class LiveVideo extends EventTarget {
  /** @param {{now: number}} clock @param {{programMs: number, paused?: boolean, seekLatencyMs?: number, startLatencyMs?: number}} o */
  constructor(clock, o) {
    super();
    this.clock = clock;
    this.position = toMedia(o.programMs);
    this.paused = o.paused ?? false;
    this._rate = 1;
    this.readyState = 4;
    this.seeking = false;
    this.seekDoneAt = 0;
    this.seekLatencyMs = o.seekLatencyMs ?? 200;
    /** play() takes this long before the element moves, ms. */
    this.startLatencyMs = o.startLatencyMs ?? 0;
    this.movesAt = 0;
    this.duration = Infinity;
    this.log = /** @type {{at: number, type: string, [k: string]: any}[]} */ ([]);
    const range = (/** @type {() => number} */ s, /** @type {() => number} */ e) => ({ length: 1, start: () => s(), end: () => e() });
    this.seekable = range(
      () => this.windowStart(),
      () => this.windowEnd(),
    );
    this.buffered = range(
      () => Math.max(this.windowStart(), this.position - 30),
      () => Math.min(this.windowEnd(), this.position + 6),
    );
  }
  windowStart() {
    return toMedia(this.clock.now - WINDOW_MS);
  }
  windowEnd() {
    return toMedia(this.clock.now - EDGE_LAG_MS);
  }
  get currentTime() {
    return this.position;
  }
  set currentTime(t) {
    this.log.push({ at: this.clock.now, type: 'seek', to: t });
    this.position = t;
    this.seeking = true;
    this.readyState = 1;
    this.seekDoneAt = this.clock.now + this.seekLatencyMs;
    this.dispatchEvent(new Event('seeking'));
  }
  get playbackRate() {
    return this._rate;
  }
  set playbackRate(r) {
    this.log.push({ at: this.clock.now, type: 'rate', rate: r });
    this._rate = r;
  }
  play() {
    this.log.push({ at: this.clock.now, type: 'play' });
    if (this.paused) {
      this.paused = false;
      this.movesAt = this.clock.now + this.startLatencyMs;
      this.dispatchEvent(new Event('play'));
    }
    return Promise.resolve();
  }
  pause() {
    this.log.push({ at: this.clock.now, type: 'pause' });
    if (!this.paused) {
      this.paused = true;
      this.dispatchEvent(new Event('pause'));
    }
  }
  /** Advances by `dt` ms (the clock is already at the end of the step). */
  advance(dt) {
    if (this.seeking && this.clock.now >= this.seekDoneAt) {
      this.seeking = false;
      this.readyState = 4;
      this.dispatchEvent(new Event('seeked'));
      if (!this.paused) this.dispatchEvent(new Event('playing'));
    }
    if (this.paused || this.seeking) return;
    const stalled = this.position >= this.windowEnd();
    if (stalled !== (this.readyState < 3)) {
      this.readyState = stalled ? 2 : 4;
      this.dispatchEvent(new Event(stalled ? 'waiting' : 'playing'));
    }
    if (!stalled) this.position += (Math.max(0, Math.min(dt, this.clock.now - this.movesAt)) / 1000) * this._rate;
  }
  /** The program time the element shows. */
  get programMs() {
    return toProgram(this.position);
  }
}

/** A room timeline in room positions (ms relative to the origin), piecewise in simulated time. */
class LiveRoom {
  constructor() {
    this.epoch = 1;
    /** @type {(now: number) => {positionMs: number, paused: boolean}} */
    this.at = (now) => ({ positionMs: now - ORIGIN - LATENCY, paused: false }); // the live point
  }
  /** From `from` on, playing (or paused) from program time `programMs`. */
  jump(from, programMs, paused = false) {
    this.epoch++;
    this.at = (now) => ({ positionMs: programMs - ORIGIN + (paused ? 0 : now - from), paused });
  }
  /**
   * A change scheduled at `atMs`: from then on playing (or paused) from program time `programMs`; announced until
   * then as the target's `next`, in room terms (like the server's scheduled commands).
   */
  schedule(atMs, programMs, paused = false) {
    const before = this.at;
    const epoch = this.epoch + 1;
    const after = (now) => ({ positionMs: programMs - ORIGIN + (paused ? 0 : now - atMs), paused });
    this.at = (now) => (now >= atMs ? after(now) : before(now));
    this.pending = { atMs, position: (programMs - ORIGIN) / 1000, rate: 1, paused, epoch };
  }
  target(now) {
    const { positionMs, paused } = this.at(now);
    if (this.pending && now >= this.pending.atMs) {
      this.epoch = this.pending.epoch;
      this.pending = null;
    }
    const t = { position: positionMs / 1000, rate: 1, paused, epoch: this.epoch };
    return this.pending ? { ...t, next: this.pending } : t;
  }
  programMs(now) {
    return ORIGIN + this.at(now).positionMs;
  }
}

/**
 * A controller on a simulated element and room. `adapter.known` switches the
 * adapter between knowing and not knowing its mapping yet.
 */
function setup(t, { programMs, paused, origin = ORIGIN, seekLatencyMs, startLatencyMs } = {}) {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const clock = { now: START };
  const room = new LiveRoom();
  const video = new LiveVideo(clock, { programMs: programMs ?? START - 6000, paused, seekLatencyMs, startLatencyMs });
  const adapter = {
    known: true,
    toProgramTime: (/** @type {number} */ s) => (adapter.known ? toProgram(s) : null),
    toMediaTime: (/** @type {number} */ p) => (adapter.known ? toMedia(p) : null),
    liveEdge: () => (adapter.known ? clock.now - EDGE_LAG_MS : null),
  };
  const sent = /** @type {any[]} */ ([]);
  const errors = /** @type {Error[]} */ ([]);
  const host = {
    origin: () => origin,
    nowUs: () => clock.now * 1000,
    target: () => room.target(clock.now),
    joined: () => true,
    epoch: () => room.epoch,
    reportIntervalMs: () => 1000,
    send: (/** @type {any} */ msg) => sent.push({ at: clock.now, ...msg }),
    error: (/** @type {Error} */ e) => errors.push(e),
  };
  const controller = new ElementController(host);
  /** Runs `ms` of simulated time in 10 ms steps; returns the program-time drift (element − room) at each step, ms. */
  const run = (ms) => {
    const drifts = [];
    for (let i = 0; i < ms / 10; i++) {
      clock.now += 10;
      video.advance(10);
      t.mock.timers.tick(10);
      drifts.push({ at: clock.now, drift: video.programMs - room.programMs(clock.now) });
    }
    return drifts;
  };
  t.after(() => controller.close());
  return { clock, room, video, adapter, sent, errors, host, controller, run };
}

const seeks = (video) => video.log.filter((a) => a.type === 'seek');
const lastDrift = (drifts) => drifts.at(-1).drift;

test("joining at live: an element at hls.js's own live point (6 s behind) is brought to the room's (3 s) by one seek, then locked", (t) => {
  const { video, adapter, controller, run } = setup(t);
  controller.attach(/** @type {any} */ (video), adapter);
  const drifts = run(6000);
  assert.equal(seeks(video).length, 1);
  assert.ok(Math.abs(lastDrift(drifts)) <= 15, `drift ${lastDrift(drifts)} ms`);
  // Locked from 3 s on, at the room's rate.
  assert.ok(drifts.filter((d) => d.at >= START + 3000).every((d) => Math.abs(d.drift) <= 20));
  // At the room's rate but for the fine band's steps (±0.5 %).
  assert.ok(Math.abs(video.playbackRate - 1) <= 0.005 + 1e-9, `rate ${video.playbackRate}`);
});

test('a small drift through the adapter is corrected by rate alone, within ±5 %', (t) => {
  const { video, adapter, controller, run } = setup(t, { programMs: START - LATENCY + 200 });
  controller.attach(/** @type {any} */ (video), adapter);
  const drifts = run(10_000);
  assert.equal(seeks(video).length, 0);
  const rates = video.log.filter((a) => a.type === 'rate').map((a) => a.rate);
  // Slower only, but for the fine band's steps around the room's rate (±0.5 %).
  assert.ok(rates.length > 0 && rates.every((r) => r >= 0.95 - 1e-9 && r <= 1.005 + 1e-9), `rates ${rates}`);
  assert.ok(Math.abs(lastDrift(drifts)) <= 15, `drift ${lastDrift(drifts)} ms`);
  assert.ok(Math.abs(video.playbackRate - 1) <= 0.005 + 1e-9, `rate ${video.playbackRate}`);
});

test("the room seeks back into the DVR window: followed by one seek; before the window, the element plays its oldest second", (t) => {
  const { clock, room, video, adapter, controller, run } = setup(t, { programMs: START - LATENCY });
  controller.attach(/** @type {any} */ (video), adapter);
  run(2000);
  room.jump(clock.now, clock.now - 60_000);
  let drifts = run(3000);
  assert.equal(seeks(video).length, 1);
  assert.ok(Math.abs(lastDrift(drifts)) <= 15, `drift ${lastDrift(drifts)} ms`);
  // Before the window (the server does not know it): the element goes to its oldest second and plays
  // on there; never before the window, and not nudged against its start (which moves on at 1×).
  room.jump(clock.now, clock.now - 500_000);
  const at = clock.now;
  drifts = run(5000);
  assert.equal(seeks(video).length, 2);
  const fromStart = (seeks(video)[1].to - toMedia(at - WINDOW_MS)) * 1000;
  // (Plus the learned seek latency, which the drift control adds so that the element lands on its target.)
  assert.ok(fromStart >= 0 && fromStart <= 1500, `seek to ${fromStart} ms after the window's start`);
  const inWindow = (video.programMs - (clock.now - WINDOW_MS));
  assert.ok(inWindow >= 0 && inWindow <= 1500, `${inWindow} ms after the window's start`);
  assert.equal(video.playbackRate, 1);
});

test('a room position past the newest segment: the element waits at the window end instead of seeking beyond it', (t) => {
  const { clock, room, video, adapter, controller, run } = setup(t, { programMs: START - 10_000 });
  controller.attach(/** @type {any} */ (video), adapter);
  room.jump(clock.now, clock.now - 500); // 500 ms behind real time: 1.5 s past what the playlist holds
  run(3000);
  assert.ok(seeks(video).length >= 1);
  assert.ok(
    seeks(video).every((s) => s.to <= toMedia(s.at - EDGE_LAG_MS) + 1e-9),
    `seeks ${seeks(video).map((s) => toProgram(s.to) - s.at)} ms from now`,
  );
});

test('paused live room: the element pauses on the frame of the room, and plays on from there', (t) => {
  const { clock, room, video, adapter, controller, run } = setup(t, { programMs: START - LATENCY });
  controller.attach(/** @type {any} */ (video), adapter);
  run(1000);
  const pausedAt = clock.now - 20_000;
  room.jump(clock.now, pausedAt, true);
  run(1000);
  assert.equal(video.paused, true);
  assert.ok(Math.abs(video.programMs - pausedAt) <= 40, `paused ${video.programMs - pausedAt} ms off`);
  room.jump(clock.now, pausedAt);
  const drifts = run(2000);
  assert.equal(video.paused, false);
  assert.ok(Math.abs(lastDrift(drifts)) <= 15, `drift ${lastDrift(drifts)} ms`);
});

test("a paused live room's scheduled play: the element is pre-rolled in its own media time and starts on the play's frame", (t) => {
  const { clock, room, video, adapter, controller, run } = setup(t, { programMs: START - LATENCY, startLatencyMs: 40 });
  controller.attach(/** @type {any} */ (video), adapter);
  run(1000);
  room.jump(clock.now, clock.now - 20_000, true);
  run(1000);
  assert.equal(video.paused, true);
  const seeksBefore = seeks(video).length;
  // Twice: the first start teaches the controller the element's start-up latency (40 ms), the second is pre-rolled.
  for (let i = 0; i < 2; i++) {
    const at = clock.now + 600;
    const pausedAt = room.programMs(clock.now);
    room.schedule(at, pausedAt);
    let drifts = run(1000);
    assert.equal(video.paused, false);
    // Never sent to the change's position taken as media time (room terms: seconds since the origin).
    assert.ok(video.log.every((a) => a.type !== 'seek' || Math.abs(toProgram(a.to) - pausedAt) < 60_000), `seeks ${seeks(video).map((s) => s.to)}`);
    // The pre-rolled start is on the play's frame (the first is the element's start-up latency late).
    if (i === 1) assert.ok(drifts.filter((d) => d.at >= at).every((d) => Math.abs(d.drift) <= 10), `drifts ${drifts.map((d) => d.drift)}`);
    room.jump(clock.now, room.programMs(clock.now), true);
    drifts = run(1000);
    assert.equal(video.paused, true);
  }
  // Paused snaps only (at most one per pause): no seek to an unconverted position.
  assert.ok(seeks(video).length - seeksBefore <= 2, `${seeks(video).length - seeksBefore} seeks`);
});

test('reports: the position in room terms every interval, each with a LiveReport of the live edge and the buffer ahead', (t) => {
  const { clock, room, video, adapter, controller, run, sent } = setup(t, { programMs: START - LATENCY });
  controller.attach(/** @type {any} */ (video), adapter);
  run(3500);
  const reports = sent.filter((m) => m.type === 'report');
  const live = sent.filter((m) => m.type === 'liveReport');
  assert.equal(reports.length, 4, 'at 0, 1, 2 and 3 s');
  assert.equal(live.length, 4);
  for (const r of reports) {
    const roomMs = room.programMs(r.at) - ORIGIN;
    assert.ok(Math.abs(r.positionUs / 1000 - roomMs) <= 20, `report ${r.positionUs / 1000 - roomMs} ms off the room`);
    assert.equal(r.epoch, room.epoch);
  }
  for (const l of live) {
    assert.equal(l.liveEdgeMs, l.at - EDGE_LAG_MS);
    // 6 s buffered ahead, less what the window's end cuts off (it is 1 s ahead of the live point).
    assert.ok(Math.abs(l.bufferMs - 1000) <= 20, `buffer ${l.bufferMs} ms`);
  }
  assert.ok(clock.now > START);
});

test('an adapter that does not know yet: the element is not driven and sends no LiveReport, until it knows', (t) => {
  const { video, adapter, controller, run, sent } = setup(t);
  adapter.known = false;
  controller.attach(/** @type {any} */ (video), adapter);
  run(2500);
  assert.deepEqual(video.log, []);
  assert.equal(sent.filter((m) => m.type === 'liveReport').length, 0);
  assert.ok(sent.filter((m) => m.type === 'report').every((r) => r.positionUs === 0));
  adapter.known = true;
  const drifts = run(4000);
  assert.equal(seeks(video).length, 1);
  assert.ok(Math.abs(lastDrift(drifts)) <= 15);
  assert.ok(sent.filter((m) => m.type === 'liveReport').length >= 3);
});

test('an adapter that throws is reported once and taken as not knowing', (t) => {
  const { video, adapter, controller, run, errors } = setup(t);
  adapter.toMediaTime = () => {
    throw new Error('broken adapter');
  };
  controller.attach(/** @type {any} */ (video), adapter);
  run(2000);
  assert.deepEqual(video.log, []);
  assert.equal(errors.length, 1);
  assert.equal(/** @type {any} */ (errors[0]).kind, 'live');
  assert.match(errors[0].message, /broken adapter/);
});

test('a media room: an element attached with an adapter follows media time directly', (t) => {
  const { clock, room, video, adapter, controller, run, sent } = setup(t, { origin: null });
  room.at = (now) => ({ positionMs: 30_000 + (now - START), paused: false });
  controller.attach(/** @type {any} */ (video), adapter);
  run(3000);
  assert.ok(Math.abs(video.position - (30 + (clock.now - START) / 1000)) <= 0.015, `at ${video.position}`);
  assert.equal(sent.filter((m) => m.type === 'liveReport').length, 0);
  const r = sent.filter((m) => m.type === 'report').at(-1);
  assert.ok(Math.abs(r.positionUs / 1e6 - video.position) < 1.1, 'reports in element time');
});

test('a LiveReport carries the live edge at its oldest since the last report (a playlist sawtooth sampled between reloads)', (t) => {
  const { clock, video, adapter, controller, run, sent } = setup(t, { programMs: START - LATENCY });
  // A 1 s playlist reloaded once a second, in phase with the reports: at
  // every report the edge was just refreshed (it then is 1.2 s old; just
  // before the next reload, 2.2 s).
  adapter.liveEdge = () => Math.floor(clock.now / 1000) * 1000 - 1200;
  controller.attach(/** @type {any} */ (video), adapter);
  run(4500);
  const live = sent.filter((m) => m.type === 'liveReport').slice(1);
  assert.ok(live.length >= 3);
  for (const l of live) {
    // Its oldest, sampled at the control steps: within a step of 2.2 s (a
    // report of the edge at its own instant would say 1.2 s).
    const age = l.at - l.liveEdgeMs;
    assert.ok(age >= 1_900 && age < 2_200, `the report says the edge is ${age} ms old`);
  }
});
