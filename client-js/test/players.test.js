// The player adapters (lockstep-client/videojs, /shaka, /dashjs) with fake
// players: each finds the player's media element and binds its controls;
// bad input gets clear errors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { attachVideoJs, videoJsElement } from '../src/videojs.js';
import { attachShaka, shakaConfig } from '../src/shaka.js';
import { attachDashJs } from '../src/dashjs.js';
import { FakeSession, QueuedVideo } from './support/fake-player.js';

/** A video.js player as far as the adapter uses it. */
function fakeVideoJs(video = /** @type {any} */ (new QueuedVideo())) {
  /** @type {Map<string, () => void>} */
  const once = new Map();
  return {
    video,
    once,
    disposed: false,
    tech: () => ({ el: () => video }),
    el: () => ({ querySelector: () => video }),
    one: (/** @type {string} */ e, /** @type {() => void} */ fn) => once.set(e, fn),
    off: (/** @type {string} */ e) => once.delete(e),
    isDisposed() {
      return this.disposed;
    },
    dispose() {
      this.disposed = true;
      once.get('dispose')?.();
    },
  };
}

test('video.js: the tech element is bound; its play button is a command; dispose detaches', () => {
  const session = new FakeSession();
  const player = fakeVideoJs();
  const controls = attachVideoJs(/** @type {any} */ (session), player);
  assert.equal(controls.element, player.video);
  assert.equal(session.attached, player.video);
  player.video.play(); // the control bar's button
  player.video.flush();
  assert.deepEqual(session.commands.map((c) => c.kind), ['play']);
  player.dispose();
  assert.equal(controls.attached, false);
  assert.equal(session.detaches, 1);
  assert.throws(() => controls.detach(), /already detached/);
});

test('video.js: detach() stops listening for dispose', () => {
  const session = new FakeSession();
  const player = fakeVideoJs();
  const controls = attachVideoJs(/** @type {any} */ (session), player);
  controls.detach();
  assert.equal(player.once.has('dispose'), false);
  player.dispose();
  assert.equal(session.detaches, 1);
});

test('video.js: without a tech element, the <video> inside the player; else a clear error', () => {
  const video = new QueuedVideo();
  assert.equal(videoJsElement({ tech: () => null, el: () => /** @type {any} */ ({ querySelector: () => video }) }), video);
  assert.equal(videoJsElement({ tech: () => { throw new Error('not ready'); }, el: () => /** @type {any} */ ({ querySelector: () => video }) }), video);
  assert.throws(() => videoJsElement({ tech: () => ({ el: () => /** @type {any} */ ({ tagName: 'DIV' }) }), el: () => /** @type {any} */ ({ querySelector: () => null }) }), {
    name: 'TypeError',
    message: /no media element/,
  });
  assert.throws(() => attachVideoJs(/** @type {any} */ (new FakeSession()), /** @type {any} */ ({})), /needs a video.js player/);
  const disposed = fakeVideoJs();
  disposed.disposed = true;
  assert.throws(() => attachVideoJs(/** @type {any} */ (new FakeSession()), disposed), /disposed/);
  assert.throws(() => attachVideoJs(/** @type {any} */ (null), fakeVideoJs()), /needs a session/);
});

test('shaka: getMediaElement() is bound; a player not attached yet gets a clear error; its config keeps stalls to the session', () => {
  const session = new FakeSession();
  const video = new QueuedVideo();
  const controls = attachShaka(/** @type {any} */ (session), { getMediaElement: () => /** @type {any} */ (video) });
  assert.equal(controls.element, video);
  session.timeline = { paused: false, rate: 1 };
  session.drive({ type: 'play' });
  video.flush();
  video.currentTime = 42; // shaka's seek bar
  video.flush();
  assert.deepEqual(session.commands.map((c) => [c.kind, c.arg]), [['seek', 42]]);
  assert.throws(() => attachShaka(/** @type {any} */ (new FakeSession()), { getMediaElement: () => null }), { name: 'TypeError', message: /await player.attach\(video\)/ });
  assert.throws(() => attachShaka(/** @type {any} */ (new FakeSession()), /** @type {any} */ ({})), /needs a shaka.Player/);
  assert.equal(shakaConfig.streaming.stallEnabled, false);
  assert.ok(Object.isFrozen(shakaConfig));
});

test('dash.js: getVideoElement() is bound; dash.js throwing before it has one gets a clear error', () => {
  const session = new FakeSession();
  const video = new QueuedVideo();
  const controls = attachDashJs(/** @type {any} */ (session), { getVideoElement: () => /** @type {any} */ (video) });
  assert.equal(controls.element, video);
  session.timeline = { paused: false, rate: 1 };
  session.drive({ type: 'play' });
  video.flush();
  video.pause(); // player.pause()
  video.flush();
  assert.deepEqual(session.commands.map((c) => c.kind), ['pause']);
  controls.detach();
  assert.throws(() => controls.detach(), /already detached/);
  const notInitialized = {
    getVideoElement() {
      throw new Error('You must first call attachView() to set the video element before calling this method');
    },
  };
  assert.throws(() => attachDashJs(/** @type {any} */ (new FakeSession()), notInitialized), { name: 'TypeError', message: /initialize\(video, url, false\)/ });
  assert.throws(() => attachDashJs(/** @type {any} */ (new FakeSession()), /** @type {any} */ ('player')), /needs a dash.js player/);
});
