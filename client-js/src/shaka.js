// lockstep-client/shaka: a shaka-player in lockstep with a room, its UI (or
// the element's native controls) driving the room.
//
//   import shaka from 'shaka-player/dist/shaka-player.ui.js';
//   import { connect } from 'lockstep-client';
//   import { attachShaka, shakaConfig } from 'lockstep-client/shaka';
//
//   const player = new shaka.Player();
//   player.configure(shakaConfig);
//   await player.attach(video);
//   new shaka.ui.Overlay(player, container, video);   // optional: shaka's UI
//   await player.load('/manifest.mpd');
//   const s = await connect({ url: server, eventId });
//   const controls = attachShaka(s, player);
//
// This module never imports shaka-player: it takes the player (an optional
// peer dependency). Do not set the element's `autoplay`.

import { bindControls } from './controls.js';
import { checkSession } from './check.js';

/** @typedef {import('./controls.js').Controls} Controls */
/** @typedef {import('./controls.js').BindOptions} BindOptions */
/** @typedef {import('./controls.js').ControllableSession} ControllableSession */

/**
 * What the adapter uses of a shaka.Player.
 * @typedef {Object} ShakaPlayerLike
 * @property {() => HTMLMediaElement | null} getMediaElement the element given to `player.attach(video)`
 */

/**
 * shaka-player options (`player.configure(shakaConfig)`) with which shaka's
 * own playback fixes do not become the room's seeks: its stall detector
 * nudges `currentTime` when playback stalls (on a host page that would be a
 * seek of the whole room; the session's drift control handles stalls and
 * reports them to the room instead). Shaka still jumps over gaps in the
 * media. Merge your own options after it.
 */
export const shakaConfig = Object.freeze({
  streaming: Object.freeze({ stallEnabled: false }),
});

/**
 * Attaches a shaka.Player's media element to the session and makes the
 * user's play, pause, seek and rate changes room commands (see
 * `bindControls` in `lockstep-client/controls`). The player must be attached
 * to its element first (`await player.attach(video)`).
 * @param {ControllableSession} session
 * @param {ShakaPlayerLike} player
 * @param {BindOptions} [options]
 * @returns {Controls}
 */
export function attachShaka(session, player, options) {
  checkSession(session, 'attachShaka(session, player)');
  if (!player || typeof player !== 'object' || typeof player.getMediaElement !== 'function') {
    throw new TypeError('attachShaka(session, player) needs a shaka.Player (new shaka.Player())');
  }
  const el = player.getMediaElement();
  if (!el) throw new TypeError('this shaka.Player has no media element: await player.attach(video) before attachShaka()');
  return bindControls(session, el, options);
}
