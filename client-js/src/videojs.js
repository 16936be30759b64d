// lockstep-client/videojs: a video.js player in lockstep with a room, its
// control bar driving the room.
//
//   import videojs from 'video.js';
//   import { connect } from 'lockstep-client';
//   import { attachVideoJs } from 'lockstep-client/videojs';
//
//   const player = videojs('my-video', { controls: true });
//   player.src({ src: '/movie.mp4', type: 'video/mp4' });
//   const s = await connect({ url: server, eventId });
//   const controls = attachVideoJs(s, player);
//
// The player's play, pause and seek (its control bar, its big play button,
// `player.pause()`, `player.currentTime(t)`, the playback rate menu) become
// the room's commands; the session drives the player's media element. This
// module never imports video.js: it takes the player (video.js stays an
// optional peer dependency). Do not give the player `autoplay`: the session
// plays the element when the room plays.

import { bindControls } from './controls.js';
import { checkSession } from './check.js';

/** @typedef {import('./controls.js').Controls} Controls */
/** @typedef {import('./controls.js').BindOptions} BindOptions */
/** @typedef {import('./controls.js').ControllableSession} ControllableSession */

/**
 * What the adapter uses of a video.js player.
 * @typedef {Object} VideoJsPlayerLike
 * @property {(iWillNotUseThisInPlugins?: boolean) => ({el: () => Element | null} | null | undefined)} [tech] the playback tech
 *   (its `el()` is the media element with the Html5 tech)
 * @property {() => Element | null} [el] the player's root element (holding the media element)
 * @property {(event: string, fn: () => void) => void} [one] once-only listener (for 'dispose')
 * @property {(event: string, fn: () => void) => void} [off]
 * @property {() => boolean} [isDisposed]
 */

/**
 * The media element a video.js player plays into: its Html5 tech's element
 * (else the <video> or <audio> inside the player's root element).
 * @param {VideoJsPlayerLike} player
 * @returns {HTMLMediaElement}
 */
export function videoJsElement(player) {
  if (!player || typeof player !== 'object' || (typeof player.tech !== 'function' && typeof player.el !== 'function')) {
    throw new TypeError('videoJsElement(player) needs a video.js player (videojs(element))');
  }
  if (typeof player.isDisposed === 'function' && player.isDisposed()) throw new TypeError('this video.js player is disposed');
  /** @type {any} */
  let el = null;
  try {
    el = typeof player.tech === 'function' ? player.tech(true)?.el?.() : null;
  } catch {
    el = null;
  }
  if (!isMedia(el) && typeof player.el === 'function') el = player.el()?.querySelector?.('video, audio') ?? null;
  if (!isMedia(el)) {
    throw new TypeError('this video.js player has no media element (an Html5 tech playing into a <video> or <audio>): other techs cannot be kept in lockstep');
  }
  return el;
}

/**
 * Attaches a video.js player's media element to the session and makes the
 * player's controls room commands (see `bindControls` in
 * `lockstep-client/controls`). Disposing of the player detaches it.
 * @param {ControllableSession} session
 * @param {VideoJsPlayerLike} player
 * @param {BindOptions} [options]
 * @returns {Controls}
 */
export function attachVideoJs(session, player, options) {
  checkSession(session, 'attachVideoJs(session, player)');
  const el = videoJsElement(player);
  const controls = bindControls(session, el, options);
  const onDispose = () => {
    if (controls.attached) controls.detach();
  };
  if (typeof player.one === 'function') player.one('dispose', onDispose);
  const detach = controls.detach;
  return {
    element: el,
    get attached() {
      return controls.attached;
    },
    detach() {
      detach();
      if (typeof player.off === 'function') player.off('dispose', onDispose);
    },
  };
}

/** @param {any} el */
function isMedia(el) {
  return Boolean(el) && typeof el === 'object' && typeof el.play === 'function' && typeof el.pause === 'function' && 'currentTime' in el;
}
