// lockstep-client/react: a React hook for a Lockstep room.
//
//   import * as React from 'react';
//   import { useLockstep } from 'lockstep-client/react';
//
//   function Watch({ eventId }) {
//     const video = React.useRef(null);
//     const room = useLockstep({ react: React, url: 'https://sync.example', eventId, token, media: video });
//     return (
//       <>
//         <video ref={video} src="/movie.mp4" controls />
//         <p>{room.status} · {room.role} · {room.viewers} watching</p>
//         <button onClick={() => room.pause()}>Pause everyone</button>
//       </>
//     );
//   }
//
// The hook connects while the component is mounted (again when `url`,
// `eventId`, `token`, `deviceId` or `transport` change) and closes the
// session on unmount. With `media` (a ref or an element) it binds the
// element's controls (`bindControls`, `lockstep-client/controls`); with
// `attach` it calls that instead, e.g. `attach: (s) => attachVideoJs(s, player)`.
// It takes React as an option (`react: React`), so this module imports
// nothing: the package has no dependency on React, and the main entry none
// on this module.

import { bindControls } from './controls.js';
import { LockstepError } from './errors.js';
import { Session } from './session.js';

/** @typedef {import('./types.js').ConnectOptions} ConnectOptions */
/** @typedef {import('./types.js').TimelineEvent} TimelineEvent */
/** @typedef {import('./types.js').CommandResult} CommandResult */
/** @typedef {import('./types.js').LiveState} LiveState */
/** @typedef {import('./types.js').Status} Status */
/** @typedef {import('./types.js').TransportName} TransportName */
/** @typedef {import('./controls.js').Controls} Controls */
/** @typedef {import('./controls.js').BindOptions} BindOptions */

/**
 * The React hooks the hook uses (pass the React module: `react: React`).
 * @typedef {Object} ReactHooks
 * @property {<S>(initial: S | (() => S)) => [S, (next: S | ((prev: S) => S)) => void]} useState
 * @property {(effect: () => void | (() => void), deps?: readonly unknown[]) => void} useEffect
 * @property {<T>(initial: T) => {current: T}} useRef
 * @property {<F extends Function>(fn: F, deps: readonly unknown[]) => F} useCallback
 */

/**
 * @typedef {ConnectOptions & {
 *   react: ReactHooks,
 *   media?: HTMLMediaElement | {current: HTMLMediaElement | null} | null,
 *   attach?: (session: Session) => Controls | void,
 *   controls?: BindOptions,
 *   createSession?: (opts: ConnectOptions) => Session,
 * }} UseLockstepOptions
 * The connection's options (as `connect()`), plus: `react`, the React module;
 * `media`, the media element to keep in lockstep (a ref or the element),
 * its controls becoming room commands; `controls`, the options of that
 * binding; `attach`, what to do instead once the session exists (a player
 * adapter; may return its `Controls`, detached on unmount);
 * `createSession`, for tests.
 */

/**
 * What `useLockstep` returns: the room's state (re-rendered on each change)
 * and its commands (stable functions; before the session exists they reject
 * with a LockstepError of kind 'not_connected').
 * @typedef {Object} LockstepState
 * @property {Session | null} session
 * @property {Status} status
 * @property {TransportName | null} transport
 * @property {import('./codec.js').Role | null} role
 * @property {import('./codec.js').ControlPolicy | null} policy
 * @property {number} viewers
 * @property {TimelineEvent | null} timeline the room's timeline as last announced
 * @property {boolean} paused whether the room is paused (true before joining)
 * @property {LiveState | null} live
 * @property {Error | null} error the session's last 'error'
 * @property {(fromSeconds?: number) => Promise<CommandResult | null>} play
 * @property {(atSeconds?: number) => Promise<CommandResult | null>} pause
 * @property {(seconds: number) => Promise<CommandResult | null>} seek
 * @property {(rate: number) => Promise<CommandResult | null>} setRate
 * @property {() => Promise<CommandResult | null>} goLive
 */

/**
 * The state part of `LockstepState`, read from a session.
 * @param {Session | null} s
 * @param {Error | null} error
 * @param {Status} [without] the status without a session: 'connecting' before it exists, 'closed' after
 */
function snapshot(s, error, without = 'connecting') {
  const timeline = s ? s.timeline : null;
  return {
    session: s,
    status: s ? s.status : without,
    transport: s ? s.transport : null,
    role: s ? s.role : null,
    policy: s ? s.policy : null,
    viewers: s ? s.viewers : 0,
    timeline,
    paused: timeline ? timeline.paused : true,
    live: s ? s.live : null,
    error,
  };
}

const EVENTS = /** @type {const} */ (['timeline', 'viewers', 'transport', 'status', 'role', 'policy', 'live']);

/**
 * A React hook: connects to a room while mounted and returns its state and commands.
 * @param {UseLockstepOptions} options
 * @returns {LockstepState}
 */
export function useLockstep(options) {
  if (!options || typeof options !== 'object') throw new TypeError('useLockstep(options) needs options: { react: React, url, eventId, … }');
  const R = options.react;
  if (!R || typeof R.useState !== 'function' || typeof R.useEffect !== 'function' || typeof R.useRef !== 'function' || typeof R.useCallback !== 'function') {
    throw new TypeError("useLockstep needs React's hooks: useLockstep({ react: React, … }) with `import * as React from 'react'`");
  }
  const [state, setState] = R.useState(() => snapshot(null, null));
  const opts = R.useRef(options);
  opts.current = options;
  /** @type {{current: Session | null}} */
  const sessionRef = R.useRef(/** @type {Session | null} */ (null));
  const media = options.media && typeof options.media === 'object' && 'current' in options.media ? options.media.current : options.media ?? null;

  // The session: one per (url, eventId, token, deviceId, transport).
  R.useEffect(() => {
    const { react: _r, media: _m, attach: _a, controls: _c, createSession, ...connectOptions } = opts.current;
    const s = createSession ? createSession(connectOptions) : new Session(connectOptions);
    sessionRef.current = s;
    /** @type {Error | null} */
    let error = null;
    const update = () => setState(snapshot(s, error));
    const offs = EVENTS.map((e) => s.on(e, update));
    offs.push(
      s.on('error', (e) => {
        error = e;
        update();
      }),
    );
    update();
    return () => {
      for (const off of offs) off();
      if (sessionRef.current === s) sessionRef.current = null;
      s.close();
      setState(snapshot(null, null, 'closed'));
    };
  }, [options.url, options.eventId, options.token, options.deviceId, options.transport]);

  // The element (or the player): bound while both it and the session exist.
  const session = state.session;
  R.useEffect(() => {
    if (!session) return;
    const { attach, controls } = opts.current;
    /** @type {Controls | void} */
    let bound;
    if (attach) bound = attach(session);
    else if (media) bound = bindControls(session, media, controls);
    else return;
    return () => {
      if (bound && bound.attached) bound.detach();
    };
  }, [session, media, Boolean(options.attach)]);

  /**
   * @template {any[]} A
   * @param {(s: Session, ...args: A) => Promise<CommandResult | null>} fn
   */
  const command = (fn) =>
    R.useCallback(
      (/** @type {A} */ ...args) => {
        const s = sessionRef.current;
        if (!s) return Promise.reject(new LockstepError(0, 'not connected to the room (the component is not mounted)', { kind: 'not_connected' }));
        return fn(s, ...args);
      },
      [],
    );
  const play = command((s, /** @type {number | undefined} */ from) => s.play(from));
  const pause = command((s, /** @type {number | undefined} */ at) => s.pause(at));
  const seek = command((s, /** @type {number} */ to) => s.seek(to));
  const setRate = command((s, /** @type {number} */ rate) => s.setRate(rate));
  const goLive = command((s) => s.goLive());
  return { ...state, play, pause, seek, setRate, goLive };
}
