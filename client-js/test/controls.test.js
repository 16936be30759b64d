// bindControls (lockstep-client/controls): the user's actions on the element
// become room commands, the session's own writes never do, whatever order
// the element's (queued) events come in.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bindControls } from '../src/controls.js';
import { FakeSession, QueuedVideo } from './support/fake-player.js';

function setup(options = {}) {
  const session = new FakeSession();
  const video = new QueuedVideo();
  /** @type {any[]} */
  const told = [];
  const controls = bindControls(/** @type {any} */ (session), /** @type {any} */ (video), { onCommand: (c) => told.push(c), ...options });
  return { session, video, controls, told };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

test('attaches the element to the session, and detach() undoes it; a second detach() throws', () => {
  const { session, video, controls } = setup();
  assert.equal(session.attached, video);
  assert.equal(controls.element, video);
  assert.equal(controls.attached, true);
  assert.equal(session.listenerCount('drive'), 1);
  controls.detach();
  assert.equal(controls.attached, false);
  assert.equal(session.detaches, 1);
  assert.equal(session.listenerCount('drive'), 0);
  // No longer commands.
  video.play();
  video.flush();
  assert.equal(session.commands.length, 0);
  assert.throws(() => controls.detach(), /already detached/);
});

test('the live adapter is passed to attach()', () => {
  const live = { toProgramTime: () => null, toMediaTime: () => null, liveEdge: () => null };
  const { session } = setup({ live });
  assert.deepEqual(session.attachOptions, { live });
});

test('a user pause becomes pause(at its position), held until answered', async () => {
  const { session, video, told } = setup();
  session.timeline = { paused: false, rate: 1 };
  session.drive({ type: 'play' });
  video.flush();
  video.currentTimeValue = 12.5;
  video.pause(); // the user
  video.flush();
  assert.deepEqual(session.commands.map((c) => [c.kind, c.arg]), [['pause', 12.5]]);
  assert.equal(session.holds.length, 1, 'held');
  session.commands[0].resolve({ outcome: 'applied' });
  await tick();
  assert.deepEqual(told.map((c) => `${c.kind}:${c.outcome}`), ['pause:sent', 'pause:done']);
  assert.equal(told[1].position, 12.5);
});

test("the controls' listeners run before the session's own on the same event (the hold comes first)", () => {
  const { session, video } = setup();
  video.addEventListener('play', () => session.events.push(`held:${session.holds.length}`), { once: true });
  video.play();
  video.flush();
  assert.deepEqual(session.events, ['session:play', 'held:1']);
});

test("the session's own play, pause, seek and rate changes are never commands, even with their events late", () => {
  const { session, video, told } = setup();
  session.timeline = { paused: false, rate: 1 };
  session.drive({ type: 'seek', position: 30 });
  session.drive({ type: 'play' });
  session.drive({ type: 'setRate', rate: 1.04 });
  session.drive({ type: 'seek', position: 30.2 });
  video.flush();
  session.drive({ type: 'pause' });
  session.drive({ type: 'play' });
  session.drive({ type: 'setRate', rate: 1 });
  session.drive({ type: 'setRate', rate: 1 }); // unchanged: no event
  video.flush();
  assert.deepEqual(session.commands, []);
  assert.deepEqual(told, []);
});

test("a user's action between a write of the session's and its event is still the user's", () => {
  const { session, video } = setup();
  session.timeline = { paused: true, rate: 1 };
  // The session pauses (its 'pause' event queued), the user plays before it is dispatched.
  session.drive({ type: 'play' });
  video.flush();
  session.drive({ type: 'pause' });
  video.play();
  video.flush();
  assert.deepEqual(session.commands.map((c) => c.kind), ['play']);
  // The session seeks, the user seeks before the first 'seeking' is dispatched: one command, the user's position.
  session.commands.length = 0;
  session.drive({ type: 'seek', position: 10 });
  video.currentTime = 50;
  video.flush();
  assert.deepEqual(session.commands.map((c) => [c.kind, c.arg]), [['seek', 50]]);
});

test("a user's play (or pause) the session undoes before its event is dispatched is still a command", () => {
  const { session, video } = setup();
  session.timeline = { paused: true, rate: 1 };
  // The user plays; before the 'play' event is dispatched, drift control pauses the element (the room is paused).
  video.play();
  session.drive({ type: 'pause' });
  video.flush();
  assert.deepEqual(session.commands.map((c) => c.kind), ['play']);
  // And the other way: the room plays, the user pauses, the session plays the element again before the 'pause' event.
  session.commands.length = 0;
  session.timeline = { paused: false, rate: 1 };
  session.drive({ type: 'play' });
  video.flush();
  video.currentTimeValue = 7;
  video.pause();
  session.drive({ type: 'play' });
  video.flush();
  assert.deepEqual(session.commands.map((c) => [c.kind, c.arg]), [['pause', 7]]);
  // The session's own writes in between are still never commands.
  session.commands.length = 0;
  session.drive({ type: 'pause' });
  session.drive({ type: 'play' });
  video.flush();
  assert.deepEqual(session.commands, []);
  // A play the browser refuses (autoplay blocked) leaves the element paused without an event: the session's next
  // play is no sign of a user's pause.
  session.drive({ type: 'pause' });
  video.flush();
  video.autoplayBlocked = true;
  session.drive({ type: 'play' });
  session.drive({ type: 'play' });
  video.flush();
  assert.deepEqual(session.commands, []);
});

test('a seek before the metadata fires no event: not counted as one to come', () => {
  const { session, video } = setup();
  video.readyState = 0;
  session.drive({ type: 'seek', position: 8 });
  video.readyState = 4;
  video.currentTime = 40; // the user, later
  video.flush();
  assert.deepEqual(session.commands.map((c) => [c.kind, c.arg]), [['seek', 40]]);
});

test('a new source (emptied) forgets the writes whose events will not come', () => {
  const { session, video } = setup();
  session.drive({ type: 'seek', position: 8 });
  video.queue.length = 0; // the load dropped them
  video.dispatchEvent(new Event('emptied'));
  video.currentTime = 3;
  video.flush();
  assert.deepEqual(session.commands.map((c) => [c.kind, c.arg]), [['seek', 3]]);
});

test('a refused command is told with its error, and its hold is released (the promise settles)', async () => {
  const { session, video, told } = setup();
  session.timeline = { paused: false, rate: 1 };
  session.drive({ type: 'play' });
  video.flush();
  video.pause();
  video.flush();
  const forbidden = Object.assign(new Error('not allowed'), { code: 4008 });
  session.commands[0].reject(forbidden);
  await assert.rejects(session.holds[0]);
  await tick();
  assert.deepEqual(told.map((c) => c.outcome), ['sent', 'refused']);
  assert.equal(told[1].error, forbidden);
});

test('a position the session cannot send (RangeError) is told as refused, not thrown into the page', () => {
  const { session, video, told } = setup();
  video.currentTime = NaN;
  video.flush();
  assert.equal(session.commands.length, 0);
  assert.equal(told[0].outcome, 'refused');
  assert.ok(told[0].error instanceof RangeError);
});

test('an action the room already agrees with is skipped; the end of the media is no pause', () => {
  const { session, video, told } = setup();
  session.timeline = { paused: false, rate: 1 };
  video.play(); // e.g. after a blocked autoplay: the room plays already
  video.flush();
  assert.deepEqual(session.commands, []);
  assert.equal(told[0].outcome, 'skipped');
  video.ended = true;
  video.pause();
  video.flush();
  assert.deepEqual(session.commands, []);
});

test('before joining (no timeline), nothing is a command', () => {
  const { session, video } = setup();
  session.timeline = null;
  video.play();
  video.currentTime = 5;
  video.playbackRate = 2;
  video.flush();
  assert.deepEqual(session.commands, []);
});

test('a user rate becomes setRate; rate 0, the room rate and a player restoring the session rate do not', () => {
  const { session, video } = setup();
  video.playbackRate = 1.5;
  video.flush();
  assert.deepEqual(session.commands.map((c) => [c.kind, c.arg]), [['setRate', 1.5]]);
  session.commands.length = 0;
  session.timeline = { paused: false, rate: 1.5 };
  session.drive({ type: 'setRate', rate: 1.53 });
  video.flush();
  video.playbackRate = 0; // shaka while buffering
  video.playbackRate = 1.53; // and back
  video.playbackRate = 1.5; // the room's rate
  video.flush();
  assert.deepEqual(session.commands, []);
  // Drift control's fine steps: the player restores a rate the session set before its last one.
  session.drive({ type: 'setRate', rate: 1.5015 });
  session.drive({ type: 'setRate', rate: 1.503 });
  video.playbackRate = 1.503;
  video.flush();
  video.playbackRate = 0;
  video.playbackRate = 1.5015;
  video.flush();
  assert.deepEqual(session.commands, []);
  // A rate the session never set is the user's.
  video.playbackRate = 1.25;
  video.flush();
  assert.deepEqual(session.commands.map((c) => [c.kind, c.arg]), [['setRate', 1.25]]);
});

test('rate: false leaves rate changes alone', () => {
  const { session, video } = setup({ rate: false });
  video.playbackRate = 2;
  video.flush();
  assert.deepEqual(session.commands, []);
});

test('bad input: clear TypeErrors', () => {
  const session = new FakeSession();
  const video = new QueuedVideo();
  assert.throws(() => bindControls(/** @type {any} */ ({}), /** @type {any} */ (video)), { name: 'TypeError', message: /needs a session/ });
  assert.throws(() => bindControls(/** @type {any} */ (session), /** @type {any} */ (null)), { name: 'TypeError', message: /needs a media element.*got null/ });
  assert.throws(() => bindControls(/** @type {any} */ (session), /** @type {any} */ ({ tagName: 'DIV', addEventListener() {} })), /needs a media element/);
  assert.throws(() => bindControls(/** @type {any} */ (session), /** @type {any} */ (video), /** @type {any} */ ({ onCommand: 1 })), /onCommand must be a function/);
  assert.equal(session.attached, null, 'nothing attached');
});

test('a session drives one element: binding another ends the first binding', () => {
  const session = new FakeSession();
  const a = new QueuedVideo();
  const b = new QueuedVideo();
  const first = bindControls(/** @type {any} */ (session), /** @type {any} */ (a));
  const second = bindControls(/** @type {any} */ (session), /** @type {any} */ (b));
  assert.equal(first.attached, false);
  assert.equal(second.attached, true);
  assert.equal(session.attached, b);
  assert.equal(session.listenerCount('drive'), 1);
  a.play();
  a.flush();
  assert.deepEqual(session.commands, [], 'the first element is no longer listened to');
  assert.throws(() => first.detach(), /already detached.*another element/);
  second.detach();
  assert.equal(session.detaches, 1);
  // A binding that fails to attach leaves nothing behind.
  const failing = Object.assign(new FakeSession(), { attach() { throw new TypeError('bad options'); } });
  assert.throws(() => bindControls(/** @type {any} */ (failing), /** @type {any} */ (a)), /bad options/);
  assert.equal(failing.listenerCount('drive'), 0);
});
