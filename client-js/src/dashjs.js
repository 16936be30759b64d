// lockstep-client/dashjs: a dash.js player in lockstep with a room, its
// element's controls (or the page's calls to `player.pause()`,
// `player.seek(t)`) driving the room.
//
//   import dashjs from 'dashjs';
//   import { connect } from 'lockstep-client';
//   import { attachDashJs } from 'lockstep-client/dashjs';
//
//   const player = dashjs.MediaPlayer().create();
//   player.initialize(video, '/manifest.mpd', false);   // autoplay off: the room plays
//   const s = await connect({ url: server, eventId });
//   const controls = attachDashJs(s, player);
//
// This module never imports dash.js: it takes the player (an optional peer
// dependency). dash.js's live catch-up changes `playbackRate` on its own:
// leave it off (its default) in a room, the session's drift control owns the rate.

import { bindControls } from './controls.js';
import { checkSession } from './check.js';

/** @typedef {import('./controls.js').Controls} Controls */
/** @typedef {import('./controls.js').BindOptions} BindOptions */
/** @typedef {import('./controls.js').ControllableSession} ControllableSession */

/**
 * What the adapter uses of a dash.js MediaPlayer.
 * @typedef {Object} DashJsPlayerLike
 * @property {() => HTMLMediaElement | null | undefined} getVideoElement the element given to `initialize()` or
 *   `attachView()` (dash.js throws before there is one)
 */

/**
 * Attaches a dash.js player's media element to the session and makes the
 * user's play, pause, seek and rate changes room commands (see
 * `bindControls` in `lockstep-client/controls`). The player must have its
 * element first (`player.initialize(video, url, false)` or `attachView(video)`).
 * @param {ControllableSession} session
 * @param {DashJsPlayerLike} player
 * @param {BindOptions} [options]
 * @returns {Controls}
 */
export function attachDashJs(session, player, options) {
  checkSession(session, 'attachDashJs(session, player)');
  if (!player || typeof player !== 'object' || typeof player.getVideoElement !== 'function') {
    throw new TypeError('attachDashJs(session, player) needs a dash.js player (dashjs.MediaPlayer().create())');
  }
  /** @type {HTMLMediaElement | null | undefined} */
  let el = null;
  try {
    el = player.getVideoElement();
  } catch {
    el = null; // dash.js throws until it has an element
  }
  if (!el) throw new TypeError('this dash.js player has no media element: player.initialize(video, url, false) (or attachView(video)) before attachDashJs()');
  return bindControls(session, el, options);
}
