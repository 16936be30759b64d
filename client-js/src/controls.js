// lockstep-client/controls: the element's own controls (or a player's) become
// room commands.
//
//   import { connect } from 'lockstep-client';
//   import { bindControls } from 'lockstep-client/controls';
//
//   const s = await connect({ url: server, eventId });
//   const controls = bindControls(s, video);   // attaches the element too
//   …
//   controls.detach();
//
// `s.attach(video)` alone makes the element follow the room: a user who
// pauses it (with its native controls, or a player's UI built on it) is
// pulled back by drift control. Bound, the element's own play, pause, seek
// and rate changes become the room's commands (`s.play()`, `s.pause(at)`,
// `s.seek(to)`, `s.setRate(r)`), held (`s.hold()`) while they are on their
// way: the element is not pulled back meanwhile. A member who may not
// control the room has its command refused by the server (an 'error' of the
// session with code 4008 forbidden, and `onCommand` with the error): drift
// control then puts the element back where the room is.
//
// The session's own writes (drift control, applying the room's state) are
// not echoed: the session announces each one (its 'drive' event) right
// before it makes it, so each 'seeking' and 'ratechange' event the element
// fires is matched with a write of the session's (one event per write), and
// a 'play' or 'pause' event is the user's only when it puts the element in a
// state neither the session nor the user last put it in. No timing is
// guessed. The player adapters (`lockstep-client/videojs`, `/shaka`,
// `/dashjs`) are this, applied to the player's media element.

import { checkElement, checkSession, report } from './check.js';
import { LockstepError } from './errors.js';

/** @typedef {import('./types.js').DriveAction} DriveAction */
/** @typedef {import('./types.js').LiveAdapter} LiveAdapter */
/** @typedef {import('./types.js').CommandResult} CommandResult */

/** readyState: metadata known (below it, setting currentTime seeks nothing and fires no 'seeking'). */
const HAVE_METADATA = 1;

/**
 * A user's action that became (or did not become) a room command; what
 * `onCommand` is told.
 * @typedef {Object} ControlCommand
 * @property {'play' | 'pause' | 'seek' | 'setRate'} kind
 * @property {number} [position] pause and seek: element time, seconds
 * @property {number} [rate] setRate
 * @property {'sent' | 'done' | 'refused' | 'skipped'} outcome 'sent': on its way; 'done': acknowledged
 *   (`result`, null when no answer came in time); 'refused': the server or the session refused it (`error`, also
 *   emitted as the session's 'error'; the element is put back where the room is); 'skipped': not sent, because the
 *   room already is that way (`reason`)
 * @property {CommandResult | null} [result]
 * @property {Error} [error]
 * @property {string} [reason]
 */

/**
 * @typedef {Object} BindOptions
 * @property {LiveAdapter} [live] the element's live adapter, for a live room (passed to `attach()`)
 * @property {boolean} [rate] whether a change of the element's `playbackRate` by the user becomes `setRate` (true)
 * @property {(c: ControlCommand) => void} [onCommand] told of each user action: sent, then done or refused
 */

/**
 * What `bindControls` (and the player adapters) return.
 * @typedef {Object} Controls
 * @property {HTMLMediaElement} element the media element that follows the room
 * @property {boolean} attached false once `detach()` was called
 * @property {() => void} detach stops: the element's events are no longer commands and the session no longer drives
 *   it (`s.detach()`); throws when already detached (binding another element to the same session detaches these
 *   controls: a session drives one element)
 */

/**
 * What `bindControls` uses of a session (a `Session`).
 * @typedef {Object} ControllableSession
 * @property {(el: HTMLMediaElement, options?: {live?: LiveAdapter}) => void} attach
 * @property {() => void} detach
 * @property {(event: 'drive', fn: (a: DriveAction) => void) => () => void} on
 * @property {<T>(p: Promise<T>) => Promise<T>} hold
 * @property {(fromSeconds?: number) => Promise<CommandResult | null>} play
 * @property {(atSeconds?: number) => Promise<CommandResult | null>} pause
 * @property {(seconds: number) => Promise<CommandResult | null>} seek
 * @property {(rate: number) => Promise<CommandResult | null>} setRate
 * @property {{paused: boolean, rate: number} | null} timeline
 */

/**
 * The binding in force on each session (a session drives one element).
 * @type {WeakMap<object, () => void>}
 */
const bindings = new WeakMap();

/**
 * Attaches `el` to the session (`s.attach(el, { live })`) and makes the
 * user's play, pause, seek and rate changes on it room commands. Throws a
 * TypeError for something that is not a session or not a media element.
 * @param {ControllableSession} session
 * @param {HTMLMediaElement} el
 * @param {BindOptions} [options]
 * @returns {Controls}
 */
export function bindControls(session, el, options = {}) {
  checkSession(session, 'bindControls(session, element)');
  checkElement(el, 'bindControls(session, element)');
  if (options === null || typeof options !== 'object') throw new TypeError('bindControls(session, element, options): options must be an object');
  const onCommand = options.onCommand;
  if (onCommand !== undefined && typeof onCommand !== 'function') throw new TypeError('bindControls: onCommand must be a function');
  const followRate = options.rate ?? true;

  /** 'seeking' and 'ratechange' events still to come from the session's own writes. */
  let ownSeeks = 0;
  let ownRates = 0;
  /**
   * The rates the session set lately (a player that restores one after its own change, e.g. shaka's rate 0 while
   * buffering, is not the user; drift control steps the rate often, by 0.1 %, so the restored one may be older than
   * the last).
   * @type {number[]}
   */
  const ownRateList = [];
  /** The play state the session or the user last put the element in. */
  let expectPaused = el.paused;
  /**
   * Whether the element played since it was last expected to (a play the
   * browser refused, autoplay blocked, leaves it paused without an event:
   * no user's pause).
   */
  let sawPlaying = !el.paused;
  let attached = true;

  /** @param {ControlCommand} c */
  const tell = (c) => {
    if (!onCommand) return;
    try {
      onCommand(c);
    } catch (e) {
      report(e);
    }
  };

  /**
   * Sends a user's action as a command, held while on its way.
   * @param {Omit<ControlCommand, 'outcome'>} c
   * @param {() => Promise<CommandResult | null>} send
   */
  const command = (c, send) => {
    /** @type {Promise<CommandResult | null>} */
    let p;
    try {
      p = send();
    } catch (e) {
      // A position the room cannot express (RangeError): not sent.
      const error = e instanceof Error ? e : new Error(String(e));
      tell({ ...c, outcome: 'refused', error });
      return;
    }
    tell({ ...c, outcome: 'sent' });
    session.hold(p).then(
      (result) => tell({ ...c, outcome: 'done', result }),
      (error) => tell({ ...c, outcome: 'refused', error }),
    );
  };

  const offDrive = session.on('drive', (a) => {
    if (a.type === 'seek') {
      // Below HAVE_METADATA a seek only sets where playback will start: no event.
      if (el.readyState >= HAVE_METADATA) ownSeeks++;
    } else if (a.type === 'setRate') {
      if (el.playbackRate !== a.rate) ownRates++;
      ownRateList.push(a.rate);
      if (ownRateList.length > 32) ownRateList.shift();
    } else {
      // The element is no longer as the session or the user last put it, and
      // its event is still queued: the user's play (or pause), which this
      // write is about to undo. It is a command all the same (the queued
      // event will find it stale).
      if (a.type === 'pause' && !el.paused && expectPaused) userPlay();
      else if (a.type === 'play' && el.paused && !expectPaused && sawPlaying) userPause();
      expectPaused = a.type === 'pause';
      sawPlaying = !el.paused;
    }
  });

  /** Whether the room is known (joined): before, nothing is a command. */
  const joined = () => session.timeline !== null && session.timeline !== undefined;

  /** The user played the element (seen by its 'play' event, or by a session's write that is about to undo it). */
  function userPlay() {
    expectPaused = false;
    if (!joined()) return;
    if (session.timeline && !session.timeline.paused) return tell({ kind: 'play', outcome: 'skipped', reason: 'the room is playing' });
    command({ kind: 'play' }, () => session.play());
  }

  /** The user paused the element (as `userPlay`). */
  function userPause() {
    expectPaused = true;
    // The end of the media pauses the element: not a user's action.
    if (el.ended || !joined()) return;
    const position = el.currentTime;
    if (session.timeline?.paused) return tell({ kind: 'pause', position, outcome: 'skipped', reason: 'the room is paused' });
    command({ kind: 'pause', position }, () => session.pause(position));
  }

  /** @type {[string, () => void][]} */
  const listeners = [
    [
      'play',
      () => {
        if (!el.paused) sawPlaying = true;
        if (el.paused || !expectPaused) return; // stale (paused again since), or the state already expected
        userPlay();
      },
    ],
    [
      'pause',
      () => {
        if (!el.paused || expectPaused) return;
        userPause();
      },
    ],
    [
      'seeking',
      () => {
        if (ownSeeks > 0) {
          ownSeeks--;
          return;
        }
        if (!joined()) return;
        const position = el.currentTime;
        command({ kind: 'seek', position }, () => session.seek(position));
      },
    ],
    [
      'ratechange',
      () => {
        if (ownRates > 0) {
          ownRates--;
          return;
        }
        if (!followRate || !joined()) return;
        const rate = el.playbackRate;
        if (!(rate >= 0.25 && rate <= 4)) return; // 0 (a hold) or out of the room's range: not a rate the room can take
        if (ownRateList.includes(rate) || (session.timeline && Math.abs(session.timeline.rate - rate) < 0.0005)) return;
        command({ kind: 'setRate', rate }, () => session.setRate(rate));
      },
    ],
    [
      'emptied',
      () => {
        // A new source: the events of writes to the old one will not come.
        ownSeeks = 0;
        ownRates = 0;
        expectPaused = el.paused;
        sawPlaying = !el.paused;
      },
    ],
  ];

  /** Stops listening (to the element and to the session). */
  const release = () => {
    attached = false;
    offDrive();
    for (const [type, fn] of listeners) el.removeEventListener(type, fn);
    if (bindings.get(session) === release) bindings.delete(session);
  };
  // A session drives one element: an earlier binding on it ends here.
  bindings.get(session)?.();
  // Before the session's own listeners (attach adds them): a user's action is
  // held before the session's step on the same event could undo it.
  for (const [type, fn] of listeners) el.addEventListener(type, fn);
  try {
    session.attach(el, options.live ? { live: options.live } : undefined);
  } catch (e) {
    release();
    throw e;
  }
  bindings.set(session, release);

  return {
    element: el,
    get attached() {
      return attached;
    },
    detach() {
      if (!attached) throw new LockstepError(0, 'these controls are already detached (detach() was called, or another element was bound to the session since)', { kind: 'detached' });
      release();
      session.detach();
    },
  };
}
