// The session: the public face of a connection to a room. It coordinates the
// parts, each in its own module:
//   connection.js  transports, the race, /api/certificate, Hello, reconnects
//   commands.js    command promises, answered by request id (Ack / Error)
//   element.js     the media element: drift control and reports
//   clock.js, tracker.js  clock sync and which timeline is in effect
//   live.js        live rooms: the live state, adapters, program times
// and keeps the room's state (member, role, policy, viewers, live state) from
// the server's messages.

import { CODES, codeFatal, codeName, LIMITS } from './codec.js';
import { ClockSync, defaultNowUs } from './clock.js';
import { Chat } from './chat.js';
import { MediaQueue, mediaItem } from './media.js';
import { CommandTracker } from './commands.js';
import { Connection } from './connection.js';
import { ElementController } from './element.js';
import { Emitter } from './emitter.js';
import { defaultDeviceId, listenToEnvironment } from './environment.js';
import { LockstepError } from './errors.js';
import { adapterOf, finiteOrNull, liveStateOf, positionMsOf, sameLive } from './live.js';
import { toMs, validate } from './options.js';
import { RoomState } from './room.js';
import { epochCmp, positionUsAt } from './timeline.js';
import { Timers } from './timers.js';
import { TimelineTracker } from './tracker.js';

export { LockstepError };

/** @typedef {import('./types.js').ConnectOptions} ConnectOptions */
/** @typedef {import('./types.js').TimelineEvent} TimelineEvent */
/** @typedef {import('./types.js').CommandResult} CommandResult */
/** @typedef {import('./types.js').SessionStats} SessionStats */
/** @typedef {import('./types.js').SessionEvents} SessionEvents */
/** @typedef {import('./types.js').Status} Status */
/** @typedef {import('./types.js').TransportName} TransportName */
/** @typedef {import('./types.js').LiveState} LiveState */
/** @typedef {import('./types.js').AttachOptions} AttachOptions */

/**
 * After a Welcome, how long the session waits for the LiveState that follows
 * it in a live room before it takes the room as a media room, when no other
 * message on the reliable channel told it first, ms.
 */
const LIVE_CONFIRM_MS = 1000;

/**
 * Connects to a room. Resolves with the session once joined (Welcome
 * received); rejects on a fatal error (bad token, version, event) or if not
 * joined within `openTimeoutMs`, closing the session.
 * @param {ConnectOptions} opts
 * @returns {Promise<Session>}
 */
export async function connect(opts) {
  const s = new Session(opts);
  try {
    await s.ready;
  } catch (e) {
    s.close();
    throw e;
  }
  return s;
}

/** The suspension reasons of SPEC 6.4 (`custom:<name>` aside). */
const SUSPEND_REASONS = ['buffering', 'seeking', 'interstitial', 'userActionRequired', 'notFollowing'];

/**
 * Whether `reason` is a suspension reason the protocol knows (SPEC 6.4).
 * @param {unknown} reason
 */
function validSuspendReason(reason) {
  if (typeof reason !== 'string') return false;
  if (SUSPEND_REASONS.includes(reason)) return true;
  return /^custom:[A-Za-z0-9._-]{1,48}$/.test(reason);
}

/**
 * Whether `emoji` may be a reaction (SPEC 6.5).
 * @param {unknown} emoji
 */
function validEmoji(emoji) {
  if (typeof emoji !== 'string' || emoji.length === 0 || new TextEncoder().encode(emoji).length > LIMITS.MAX_EMOJI) return false;
  return !/[\x00-\x7f\s\p{Cc}]/u.test(emoji);
}

export class Session {
  /** @type {string} */
  #deviceId;
  #events = new Emitter();
  #nowUs;
  #clock;
  #tracker = new TimelineTracker();
  #timers = new Timers();
  #commands;
  /** @type {Chat} */
  #chat;
  /** @type {MediaQueue} */
  #queue;
  /** @type {import('./media.js').MediaEvent | null} */
  #media = null;
  /** The attached element (for loading media items), and the item loaded into it. */
  /** @type {HTMLMediaElement | null} */
  #el = null;
  /** @type {string | null} */
  #loadedMediaId = null;
  /** @type {((mediaId: string, item: import('./codec.js').MediaItem) => unknown) | null} */
  #resolveMedia = null;
  #element;
  #conn;
  /** @type {Status} */
  #status = 'connecting';
  #room = new RoomState((event, arg) => this.#emit(event, arg));
  /** The server's report interval (from its Welcome), ms. */
  #reportIntervalMs = 1000;
  /** @type {LiveState | null} the room's live state (null: a media room, or not known yet) */
  #live = null;
  /**
   * Whether this connection's live state is known: a LiveState came after
   * its Welcome, or the room turned out to be a media room (SPEC 2.4: a live
   * room sends one right after the Welcome, before anything else on the
   * reliable channel).
   */
  #liveKnown = false;
  #closed = false;
  /**
   * Changes as datagrams only (SPEC 5.2): the newest epoch this connection
   * sent a Nack for (null: none), so that each revealed epoch is asked for
   * at most once.
   * @type {number | null}
   */
  #nackedEpoch = null;
  /**
   * A TimelineChanged datagram that overtook this connection's Welcome on
   * the stream: applied after the Welcome if it is newer.
   * @type {import('./codec.js').TimelineChangedMsg | null}
   */
  #early = null;
  /**
   * Why this member does not follow the room (SPEC 6.4), null while it does.
   * @type {string | null}
   */
  #suspension = null;
  /** Releases the element's hold taken by the suspension. */
  #releaseSuspension = () => {};
  /** Code of the last Error the server sent (its close then is not reported twice). */
  #lastServerError = 0;
  /** @type {(s: Session) => void} */
  #resolveReady = () => {};
  /** @type {(e: Error) => void} */
  #rejectReady = () => {};
  #stopListening;

  /**
   * Resolves once joined the first time.
   * @readonly
   * @type {Promise<Session>}
   */
  ready;

  /** @param {ConnectOptions} opts */
  constructor(opts) {
    const o = validate(opts);
    const base = new URL(o.url.endsWith('/') ? o.url : `${o.url}/`);
    this.#deviceId = o.deviceId ?? defaultDeviceId();
    this.#nowUs = o.clock?.now ?? defaultNowUs;
    this.#clock = new ClockSync({ ...o.clock, now: this.#nowUs });
    this.#commands = new CommandTracker({ timeoutMs: o.commandTimeoutMs, current: () => this.timeline });
    this.#queue = new MediaQueue({ command: (op) => this.#mediaCommand(op) });
    this.#resolveMedia = typeof o.resolveMedia === 'function' ? o.resolveMedia : null;
    this.#chat = new Chat({
      enabled: Boolean(o.chat),
      joined: () => this.#conn.joined,
      send: (m) => this.#conn.send(m),
      memberId: () => (this.#conn.joined ? this.#room.memberId : null),
      command: (a) => this.#command(a),
      emit: (event, arg) => this.#emit(event, arg),
      timeoutMs: o.commandTimeoutMs,
    });
    this.#element = new ElementController(
      {
        nowUs: () => this.#nowUs(),
        target: () => this.#target(),
        joined: () => this.#conn.joined,
        epoch: () => this.#tracker.epoch,
        origin: () => (this.#live ? this.#live.originMs : this.#liveKnown ? null : undefined),
        reportIntervalMs: () => this.#reportIntervalMs,
        send: (msg, datagram) => void this.#conn.send(msg, datagram),
        error: (e) => this.#emitError(e),
        drive: (a) => this.#emit('drive', a),
      },
      { drift: o.drift, controlIntervalMs: o.controlIntervalMs, bufferingReportDelayMs: o.bufferingReportDelayMs },
    );
    this.#conn = new Connection(o, base, this.#deviceId, {
      message: (m, datagram) => this.#onMessage(m, datagram),
      error: (e) => this.#emitError(e),
      status: (st) => this.#setStatus(st),
      lost: () => this.#onLost(),
      fatal: (info) => this.#onFatalClose(info.code, info.reason),
      stop: (e) => {
        this.#emitError(e);
        this.#rejectReady(e);
        this.close();
      },
    });
    this.ready = new Promise((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    this.ready.catch(() => {});
    this.#stopListening = listenToEnvironment({
      // A new network: the path changed, so the clock samples are stale, and a
      // broken connection should be retried now rather than after the backoff.
      networkChanged: () => {
        this.#clock.reset();
        if (this.#conn.joined) this.#pingLoop();
        else this.#conn.retryNow();
      },
      // A tab back in the foreground had its timers throttled: re-sync and step.
      visible: () => {
        this.#clock.burst();
        if (this.#conn.joined) this.#pingLoop();
        this.#element.step();
      },
    });
    this.#timers.set('open-timeout', o.openTimeoutMs ?? 20_000, () => {
      if (!this.#conn.joined) this.#rejectReady(new LockstepError(0, 'could not join the room in time', { kind: 'timeout' }));
    });
    this.#setStatus('connecting', true);
    this.#conn.start();
  }

  // ---------------------------------------------------------------- state

  /** This device's id (the option, or the one kept in localStorage). */
  get deviceId() {
    return this.#deviceId;
  }

  /** @returns {Status} */
  get status() {
    return this.#status;
  }

  /**
   * The transport of the current connection.
   * @returns {TransportName | null}
   */
  get transport() {
    return this.#conn.transport;
  }

  /** This member's id in the room (0 before joining). */
  get memberId() {
    return this.#room.memberId;
  }

  /** @returns {import('./codec.js').Role | null} */
  get role() {
    return this.#room.role;
  }

  /** @returns {import('./codec.js').ControlPolicy | null} */
  get policy() {
    return this.#room.policy;
  }

  /** The room's viewer count. */
  get viewers() {
    return this.#room.viewers;
  }

  /**
   * The timeline in effect (null before joining).
   * @returns {TimelineEvent | null}
   */
  get timeline() {
    return this.#tracker.current ? toEvent(this.#tracker.current, false) : null;
  }

  /**
   * The room's position now, in seconds (null before joining): media time,
   * or in a live room program time relative to the origin (see `programTime()`).
   * @returns {number | null}
   */
  get position() {
    const at = this.#tracker.at(this.#clock.serverNowUs());
    return at ? Number(at.positionUs) / 1e6 : null;
  }

  /**
   * The room's live state: null in a media room (and before the server said
   * otherwise), else `{clock: 'live', originMs, latencyMs, autoLatency,
   * atLive}`. The 'live' event fires whenever it changes.
   * @returns {LiveState | null}
   */
  get live() {
    return this.#live;
  }

  /**
   * The room's program time now, Unix ms (the origin plus the timeline's
   * position at the estimated server time); null in a media room or before
   * joining. At the live point it is about the server's clock minus the latency.
   * @returns {number | null}
   */
  programTime() {
    const live = this.#live;
    if (!live) return null;
    const at = this.#tracker.at(this.#clock.serverNowUs());
    return at ? live.originMs + Number(at.positionUs) / 1000 : null;
  }

  /** @returns {SessionStats} */
  get stats() {
    const cur = this.#tracker.current;
    const el = this.#element.stats(cur ? cur.timeline.rateMilli / 1000 : 1);
    return {
      offsetMs: this.#clock.offsetUs / 1000,
      rttMs: this.#clock.rttUs / 1000,
      driftMs: el.driftMs,
      rate: el.rate,
      buffering: el.buffering,
      corrections: el.corrections,
      seekLatencyMs: el.seekLatencyMs,
      startLatencyMs: el.startLatencyMs,
      transport: this.#conn.transport,
      status: this.#status,
      reconnects: this.#conn.reconnects,
    };
  }

  // ---------------------------------------------------------------- events

  /**
   * Subscribes to an event: 'timeline', 'viewers', 'transport', 'status',
   * 'error', 'role', 'policy', 'member', 'live', 'drive'. Returns a function that unsubscribes.
   * @template {keyof SessionEvents} K
   * @param {K} event
   * @param {(arg: SessionEvents[K]) => void} fn
   * @returns {() => void}
   */
  on(event, fn) {
    return this.#events.on(event, fn);
  }

  /**
   * @template {keyof SessionEvents} K
   * @param {K} event
   * @param {(arg: SessionEvents[K]) => void} fn
   */
  off(event, fn) {
    this.#events.off(event, fn);
  }

  // ---------------------------------------------------------------- the element

  /**
   * Drives this media element: it follows the room from now on. In a live
   * room it needs a live adapter (`{ live: hlsJsAdapter(hls) }`, see
   * `lockstep-client/hls`), which maps its time to program time; without one
   * it is not driven there (an 'error' of kind 'live' says so). Throws a
   * TypeError for options that are not `{ live: adapter }`.
   * @param {HTMLMediaElement} el
   * @param {AttachOptions} [options]
   */
  attach(el, options) {
    const adapter = adapterOf(options);
    if (this.#closed) return;
    this.#element.attach(el, adapter);
    this.#el = /** @type {HTMLMediaElement} */ (el);
    this.#loadedMediaId = null;
    this.#loadMedia();
  }

  /** Stops driving the element (it is left as it is). */
  detach() {
    this.#el = null;
    this.#element.detach();
  }

  /**
   * Leaves the attached element alone (no drift control) until `promise`
   * settles, and, when it resolves with a `CommandResult` of a change that
   * takes effect later, until then. For a user's action on the element
   * itself (a player's pause button, its seek bar): hold the command it
   * becomes, `s.hold(s.pause(video.currentTime))`, and the element is not
   * pulled back to the old room state while the command is on its way; if
   * the server refuses it, drift control resumes at once and puts the
   * element back where the room is. Give it promises that settle (the
   * session's commands always do, at the latest after `commandTimeoutMs`).
   * Returns `promise`.
   * @template T
   * @param {Promise<T>} promise
   * @returns {Promise<T>}
   */
  hold(promise) {
    if (!promise || typeof (/** @type {any} */ (promise).then) !== 'function') throw new TypeError('hold(promise) needs a promise (e.g. a command: s.hold(s.pause(video.currentTime)))');
    const release = this.#element.hold();
    promise.then(
      (r) => {
        const at = /** @type {any} */ (r)?.effectiveAtUs;
        const inMs = typeof at === 'number' && !this.#closed ? (this.#clock.toClientUs(at) - this.#nowUs()) / 1000 : 0;
        if (inMs > 0) setTimeout(release, Math.min(inMs, 10_000));
        else release();
      },
      () => release(),
    );
    return promise;
  }

  // ---------------------------------------------------------------- commands

  /**
   * Asks the room to play (subject to this member's role). Resolves once the
   * server acknowledged it, with the resulting timeline (`outcome`
   * 'unchanged' and the timeline in effect if it was already playing), or
   * null if no answer came within `commandTimeoutMs`; rejects with a
   * LockstepError if the server refuses (also emitted as 'error') or the
   * connection is lost.
   * @param {number} [fromSeconds] start from this position instead of the paused one (in a live room with
   *   an attached adapter: element time, as `video.currentTime`; see `seek()`)
   * @returns {Promise<CommandResult | null>}
   */
  play(fromSeconds) {
    if (fromSeconds === undefined) return this.#command({ kind: 'play', positionMs: null });
    return this.#positioned('play', fromSeconds);
  }

  /**
   * Asks the room to pause.
   * @param {number} [atSeconds] pause at this position instead of the timeline's (in a live room with an
   *   attached adapter: element time; see `seek()`)
   * @returns {Promise<CommandResult | null>}
   */
  pause(atSeconds) {
    if (atSeconds === undefined) return this.#command({ kind: 'pause', positionMs: null });
    return this.#positioned('pause', atSeconds);
  }

  /**
   * Asks the room to jump to a position, in seconds: media time in a media
   * room. In a live room with an attached live adapter, element time (the
   * scale of `video.currentTime`, which a player's seek bar uses), mapped to
   * program time by the adapter and then to the room's position; without an
   * adapter, the room's position (seconds since `live.originMs`, as
   * `s.position`). Throws a RangeError for a position the room cannot
   * express; rejects (kind 'live') when the adapter cannot map it yet.
   * @param {number} seconds
   * @returns {Promise<CommandResult | null>}
   */
  seek(seconds) {
    return this.#positioned('seek', seconds);
  }

  /**
   * Live rooms: asks the room to jump to this program time (Unix ms). A time
   * past the live point is clamped to it by the server. Throws a RangeError
   * for a time before the room's origin; rejects with `invalid_argument`
   * (4009) in a media room.
   * @param {number} programMs
   * @returns {Promise<CommandResult | null>}
   */
  seekProgramTime(programMs) {
    const live = this.#live;
    if (!live) return this.#failCommand(new LockstepError(CODES.invalid_argument, 'not a live room: seekProgramTime() needs a live room (s.live)'));
    return this.#command({ kind: 'seek', positionMs: positionMsOf(programMs, live.originMs) });
  }

  /**
   * Live rooms: asks the room to return to the live point (scheduled like
   * `play()`, so every viewer lands on the same frame). Resolves on the
   * server's acknowledgement (`outcome` 'unchanged' when already at live);
   * the `LiveState` of the change comes before it, so `s.live.atLive` is
   * already true then. A media room refuses it (`invalid_argument`, 4009).
   * @returns {Promise<CommandResult | null>}
   */
  goLive() {
    return this.#command({ kind: 'goLive' });
  }

  /**
   * Stops following the room for `reason` (SPEC 6.4): `'buffering'`,
   * `'seeking'`, `'interstitial'` (an ad or another insert plays),
   * `'userActionRequired'` (autoplay blocked), `'notFollowing'` (see
   * `unfollow()`) or `'custom:<name>'` (1–48 of `A–Z a–z 0–9 - _ .`). The
   * attached element is left alone (no drift control) until `resume()`;
   * the server decides by its policy (`--wait-reasons`, `--wait-max-members`)
   * whether the room waits for this member, at most `--buffering-wait-max-ms`.
   * A new reason replaces the old one; the suspension is announced again after
   * a reconnection. A reason the protocol does not know throws a TypeError.
   * @param {string} reason
   */
  suspend(reason) {
    if (!validSuspendReason(reason)) {
      throw new TypeError(`suspend(reason): ${JSON.stringify(reason)} is not buffering, seeking, interstitial, userActionRequired, notFollowing or custom:<name>`);
    }
    if (this.#suspension === null) this.#releaseSuspension = this.#element.hold();
    this.#suspension = reason;
    if (this.#conn.joined) this.#conn.send({ type: 'suspend', reason });
  }

  /**
   * Follows the room again after `suspend()` or `unfollow()`: drift control
   * takes the element back to the room's position at once (catching up alone
   * if the room did not wait). Does nothing when not suspended.
   */
  resume() {
    if (this.#suspension === null) return;
    this.#suspension = null;
    const release = this.#releaseSuspension;
    this.#releaseSuspension = () => {};
    if (this.#conn.joined) this.#conn.send({ type: 'resume' });
    release();
  }

  /**
   * Reacts with an emoji (SPEC 6.5): counted into the room's next window of
   * reactions, which members that asked for them (the `reactions` option) get
   * as one 'reactions' event. 1–32 bytes with no ASCII, control or white-space
   * character, else a TypeError. Beyond 5 a second (bursts of 10) the server
   * drops them. Not sent (false) while not connected.
   * @param {string} emoji
   * @returns {boolean}
   */
  react(emoji) {
    if (!validEmoji(emoji)) throw new TypeError(`react(emoji): ${JSON.stringify(emoji)} is not an emoji (1-32 bytes, no ASCII, control or white space)`);
    if (!this.#conn.joined) return false;
    this.#conn.send({ type: 'react', emoji });
    return true;
  }

  /**
   * What the room plays now (SPEC 6.7; connect with `{ mediaItems: true }` or a
   * `resolveMedia` hook): `{item, index, epoch, by}`, or null before the room
   * names an item. Each switch is a 'media' event; the session loads the item
   * into the attached element (`resolveMedia(mediaId, item)`'s source, else
   * the item's `url`) and the room starts it for everyone on the same frame.
   */
  get media() {
    return this.#media;
  }

  /**
   * The room's playlist (SPEC 6.7): `s.queue.items`, `current`, `autoAdvance`,
   * and `add(item)`, `remove(mediaId)`, `move(mediaId, index)`, `next()`,
   * `previous()`, `setAutoAdvance(on)` (for members who may change the
   * timeline; each resolves like a command). Changes are 'queue' events.
   */
  get queue() {
    return this.#queue;
  }

  /**
   * Switches the room to another item now (SPEC 6.7): `{mediaId, url?, title?,
   * durationMs?}`. Every member loads it while the room holds at 0; a playing
   * room then starts it on the same frame everywhere. Resolves like a
   * command (the switch's timeline change); a bad item is a TypeError.
   * @param {import('./media.js').MediaInput} item
   */
  setMedia(item) {
    return this.#mediaCommand({ kind: 'set', item: mediaItem(item) });
  }

  /** @param {import('./codec.js').MediaOp} op */
  #mediaCommand(op) {
    if (!this.#conn.joined) return this.#failCommand(new LockstepError(0, 'not connected to the room', { kind: 'not_connected' }));
    const { requestId, promise } = this.#commands.add();
    this.#conn.send({ type: 'media', requestId, op });
    return promise;
  }

  /** Loads the room's item into the attached element, once per item. */
  #loadMedia() {
    const item = this.#media?.item ?? null;
    const el = this.#el;
    if (item === null || el === null || this.#loadedMediaId === item.mediaId) return;
    this.#loadedMediaId = item.mediaId;
    const apply = (/** @type {unknown} */ src) => {
      if (typeof src !== 'string' || this.#el !== el || this.#loadedMediaId !== item.mediaId) return;
      const now = typeof el.getAttribute === 'function' ? el.getAttribute('src') : el.src;
      if (now !== src) {
        el.src = src;
        el.load?.();
      }
    };
    if (this.#resolveMedia === null) return apply(item.url);
    try {
      const r = this.#resolveMedia(item.mediaId, item);
      if (r && typeof (/** @type {any} */ (r).then) === 'function') {
        /** @type {Promise<unknown>} */ (r).then(apply, (e) => this.#emitError(new LockstepError(0, `resolveMedia failed: ${e instanceof Error ? e.message : String(e)}`, { kind: 'media', cause: e })));
      } else apply(r);
    } catch (e) {
      this.#emitError(new LockstepError(0, `resolveMedia threw: ${e instanceof Error ? e.message : String(e)}`, { kind: 'media', cause: e }));
    }
  }

  /**
   * The room's chat (SPEC 6.6; connect with `{ chat: true }`):
   * `s.chat.send(text)` (resolves with the message as the room took it),
   * `s.chat.messages` (the newest held, oldest first), `s.chat.muted`, and for
   * hosts and co-hosts `s.chat.delete(id)`, `s.chat.mute(memberId)`,
   * `s.chat.unmute(memberId)`. Messages arrive as 'chat' events (the room's
   * history first after each join, `history: true`), deletions as
   * 'chatDeleted', this member's mute as 'chatMuted'. Render text with
   * `textContent`, never as HTML.
   */
  get chat() {
    return this.#chat;
  }

  /** Watches alone for a while (a suspension for `notFollowing`, which never makes the room wait). */
  unfollow() {
    this.suspend('notFollowing');
  }

  /** Comes back to the room's position after `unfollow()` (the same as `resume()`). */
  follow() {
    this.resume();
  }

  /** Why this member does not follow the room (the reason given to `suspend()`), or null. */
  get suspension() {
    return this.#suspension;
  }

  /** Whether this member follows the room (not suspended). */
  get following() {
    return this.#suspension === null;
  }

  /**
   * Asks the room to change its rate (0.25–4).
   * @param {number} rate
   * @returns {Promise<CommandResult | null>}
   */
  setRate(rate) {
    const rateMilli = Math.round(Number(rate) * 1000);
    if (!(rateMilli >= LIMITS.MIN_RATE_MILLI && rateMilli <= LIMITS.MAX_RATE_MILLI)) {
      return this.#failCommand(new LockstepError(CODES.invalid_argument, `rate must be between 0.25 and 4, got ${rate}`));
    }
    return this.#command({ kind: 'setRate', rateMilli });
  }

  /**
   * Host only: makes a member a co-host or a viewer. Resolves on the
   * server's acknowledgement (with the timeline in effect).
   * @param {number} memberId
   * @param {'co-host' | 'viewer'} role
   * @returns {Promise<CommandResult | null>}
   */
  setRole(memberId, role) {
    return this.#command({ kind: 'setRole', memberId, role });
  }

  /**
   * Host only: switches who may control playback. Resolves on the server's
   * acknowledgement (with the timeline in effect).
   * @param {import('./codec.js').ControlPolicy} policy
   * @returns {Promise<CommandResult | null>}
   */
  setPolicy(policy) {
    return this.#command({ kind: 'setPolicy', policy });
  }

  /** Leaves the room and stops everything. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#element.close(); // may send a last report, so before the connection closes
    this.#timers.stop();
    this.#commands.resolveAll();
    this.#chat.onDisconnect();
    this.#conn.close();
    this.#stopListening();
    this.#rejectReady(new LockstepError(0, 'the session was closed', { kind: 'closed' }));
    this.#setStatus('closed');
  }

  /**
   * @param {import('./codec.js').Action} action
   * @returns {Promise<CommandResult | null>}
   */
  #command(action) {
    if (!this.#conn.joined) return this.#failCommand(new LockstepError(0, 'not connected to the room', { kind: 'not_connected' }));
    const { requestId, promise } = this.#commands.add();
    this.#conn.send({ type: 'command', requestId, action });
    return promise;
  }

  /**
   * A play, pause or seek with a position in seconds (see `seek()` for what
   * they are in a live room).
   * @param {'play' | 'pause' | 'seek'} kind
   * @param {number} seconds
   * @returns {Promise<CommandResult | null>}
   */
  #positioned(kind, seconds) {
    const live = this.#live;
    const adapter = this.#element.adapter;
    if (!live || !adapter) return this.#command({ kind, positionMs: toMs(seconds) });
    if (typeof seconds !== 'number' || !Number.isFinite(seconds)) throw new RangeError(`position must be an element time in seconds, got ${seconds}`);
    let program = null;
    try {
      program = finiteOrNull(adapter.toProgramTime(seconds));
    } catch (e) {
      return this.#failCommand(new LockstepError(0, `the live adapter threw: ${e instanceof Error ? e.message : String(e)}`, { kind: 'live', cause: e }));
    }
    if (program === null) {
      return this.#failCommand(new LockstepError(0, `element time ${seconds} s cannot be mapped to program time yet (the live adapter does not know it)`, { kind: 'live' }));
    }
    return this.#command({ kind, positionMs: positionMsOf(program, live.originMs) });
  }

  /**
   * A command refused before it is sent: emitted as 'error' too, and the
   * rejection never becomes an unhandled one.
   * @param {LockstepError} e
   * @returns {Promise<never>}
   */
  #failCommand(e) {
    this.#emitError(e);
    const p = Promise.reject(e);
    p.catch(() => {});
    return p;
  }

  // ---------------------------------------------------------------- inbound

  /**
   * @param {import('./codec.js').ServerMsg} m
   * @param {boolean} [datagram] whether it came as a datagram (else on the reliable channel)
   */
  #onMessage(m, datagram = false) {
    const recvUs = this.#nowUs();
    // In a live room the LiveState is the first message after the Welcome on
    // the reliable channel: anything else there first means a media room.
    if (!datagram && !this.#liveKnown && m.type !== 'welcome' && m.type !== 'liveState') this.#confirmMedia();
    switch (m.type) {
      case 'welcome':
        return this.#onWelcome(m, recvUs);
      case 'pong':
        this.#clock.onPong(m, recvUs);
        return;
      case 'error': {
        const e = new LockstepError(m.code, m.message, { requestId: m.requestId });
        // An expired token with getToken: a fresh one and a new attempt follow the close.
        if (m.code === CODES.token_expired && m.requestId === 0 && this.#conn.tokenExpired()) return;
        this.#lastServerError = m.code;
        // A server older than SyncReport (SPEC 11): the only message this
        // client sends that it may not know. Stop sending them (each costs a strike).
        if (m.code === CODES.unknown_message && m.requestId === 0) this.#element.syncReports = false;
        if (m.requestId !== 0 && !this.#chat.onError(m.requestId, e)) this.#commands.onError(m.requestId, e);
        this.#emitError(e);
        if (codeFatal(m.code)) {
          // A fatal closing Error is the close: browsers do not surface a
          // WebTransport close code (SPEC 5.2), so never reconnect after it.
          this.#rejectReady(e);
          this.close();
        }
        return;
      }
      default:
    }
    if (!this.#conn.joined) {
      // Only Welcome, Pong and Error mean anything before joining; but a
      // change's one datagram may overtake the Welcome: keep the newest.
      if (datagram && m.type === 'timelineChanged' && (this.#early === null || epochCmp(m.timeline.epoch, this.#early.timeline.epoch) > 0)) {
        this.#early = m;
      }
      return;
    }
    if (m.type === 'reactions') {
      this.#emit('reactions', m.counts);
      return;
    }
    if (m.type === 'mediaChanged') {
      this.#media = { item: m.item, index: m.index, epoch: m.epoch, by: m.by };
      this.#emit('media', this.#media);
      this.#loadMedia();
      return;
    }
    if (m.type === 'queueChanged') {
      this.#emit('queue', this.#queue.onChanged(m));
      return;
    }
    if (m.type === 'chatMessage') return this.#chat.onMessage(m);
    if (m.type === 'chatDeleted') return this.#chat.onDeleted(m);
    if (m.type === 'chatMuted') return this.#chat.onMuted(m);
    if (m.type === 'liveState') {
      this.#liveKnown = true;
      this.#timers.clear('live-confirm');
      this.#setLive(liveStateOf(m));
      return;
    }
    switch (m.type) {
      case 'tick': {
        const held = this.#tracker.newest();
        const r = this.#tracker.onTick(m, this.#clock.serverNowUs(recvUs));
        // A tick of an epoch never seen: a change was missed (its one datagram lost, or late).
        if (held !== null && epochCmp(m.epoch, held) > 0) this.#missed(m.epoch, held);
        this.#room.setViewers(m.viewers);
        if (r === 'applied' && this.#tracker.current) {
          this.#announce(toEvent(this.#tracker.current, false));
          this.#element.step();
        }
        return;
      }
      case 'timelineChanged': {
        const r = this.#tracker.onChanged(m, this.#clock.serverNowUs(recvUs));
        const ev = toEvent({ timeline: m.timeline, effectiveAtUs: m.effectiveAtUs, reason: m.reason, by: m.by }, r === 'pending');
        if (r !== 'applied' && r !== 'pending') {
          // A copy, or a change a tick revealed first: not news, but what a command's Ack may name.
          this.#commands.noteTimeline(ev);
          return;
        }
        this.#announce(ev);
        if (r === 'pending') {
          // Step exactly when it takes effect, so play and pause start on time.
          const inMs = (this.#clock.toClientUs(m.effectiveAtUs) - this.#nowUs()) / 1000;
          this.#timers.set('effective', inMs, () => this.#element.step());
          // A play starts one learned start-up latency early (pre-roll, see drift.js); with less time left than
          // that, at once (the controller starts it now, or seeks ahead when it would start late).
          const lead = this.#element.startLatencyMs;
          if (!m.timeline.paused && lead > 0) {
            if (inMs > lead) this.#timers.set('preroll', inMs - lead, () => this.#element.step());
            else this.#element.step();
          }
        } else {
          this.#element.step();
        }
        return;
      }
      case 'ack': {
        // An Ack comes after the change it names; a change not held yet was missed (or is late).
        const held = this.#tracker.newest();
        if (held !== null && epochCmp(m.epoch, held) > 0) this.#missed(m.epoch, held);
        this.#commands.onAck(m);
        return;
      }
      default:
        this.#room.onMessage(m);
    }
  }

  /**
   * @param {import('./codec.js').WelcomeMsg} m
   * @param {number} recvUs
   */
  #onWelcome(m, recvUs) {
    if (this.#conn.joined) return;
    this.#conn.joinedWith(m.limits);
    const roleChanged = this.#room.welcome(m);
    this.#reportIntervalMs = m.limits.reportIntervalMs || 1000;
    // A new path: forget old clock samples, seed from the Welcome, burst.
    this.#clock.reset();
    this.#clock.seed(m.serverTimeUs, recvUs);
    // A new room state: epochs may start afresh (a room recreated since).
    this.#tracker.reset(m.timeline, m.serverTimeUs);
    this.#commands.resetTimelines();
    this.#chat.onWelcome();
    // Its live state comes next (in a live room); until then the one from
    // before a reconnection holds, so listeners see no flip back and forth.
    this.#liveKnown = false;
    this.#timers.set('live-confirm', LIVE_CONFIRM_MS, () => this.#confirmMedia());
    this.#pingLoop();
    this.#emit('transport', this.#conn.transport);
    this.#setStatus('open');
    if (roleChanged) this.#emit('role', m.role);
    this.#room.setViewers(m.viewers, true);
    if (this.#tracker.current) this.#announce(toEvent(this.#tracker.current, false));
    this.#resolveReady(this);
    this.#timers.clear('open-timeout');
    this.#element.joined();
    // A suspension outlives a reconnection: the new connection says so again.
    if (this.#suspension !== null) this.#conn.send({ type: 'suspend', reason: this.#suspension });
    this.#nackedEpoch = null;
    const early = this.#early;
    this.#early = null;
    if (early && epochCmp(early.timeline.epoch, m.timeline.epoch) > 0) this.#onMessage(early, true);
  }

  /**
   * A tick or an Ack named `epoch`, newer than every epoch held (`held`): a
   * change sent only as a datagram was lost or is late. With changes as
   * datagrams only, asks for it on the stream (SPEC 5.2), once per revealed
   * epoch: a later gap asks again, the same one never does.
   * @param {number} epoch
   * @param {number} held
   */
  #missed(epoch, held) {
    if (!this.#conn.datagramChanges) return;
    if (this.#nackedEpoch !== null && epochCmp(epoch, this.#nackedEpoch) <= 0) return;
    this.#nackedEpoch = epoch;
    this.#conn.send({ type: 'nack', epoch: held });
  }

  /** No LiveState followed the Welcome: the room's clock is media time. */
  #confirmMedia() {
    if (this.#liveKnown || !this.#conn.joined) return;
    this.#liveKnown = true;
    this.#timers.clear('live-confirm');
    this.#setLive(null);
  }

  /**
   * The room's live state (null: a media room); 'live' fires when it changed.
   * @param {LiveState | null} next
   */
  #setLive(next) {
    if (!sameLive(this.#live, next)) {
      this.#live = next;
      this.#emit('live', next);
    }
    this.#element.step();
  }

  /** The connection was lost: no answer can come to the commands sent on it. */
  #onLost() {
    this.#timers.clear('ping');
    this.#early = null;
    this.#commands.rejectAll((requestId) => new LockstepError(0, 'the connection was lost', { kind: 'transport', requestId }));
    this.#chat.onDisconnect();
  }

  /**
   * Closed with a code that reconnecting cannot fix: the session ends.
   * @param {number} code
   * @param {string} reason
   */
  #onFatalClose(code, reason) {
    const e = new LockstepError(code, reason || `closed: ${codeName(code)}`);
    if (this.#lastServerError !== code) this.#emitError(e);
    this.#rejectReady(e);
    this.close();
  }

  /**
   * A timeline for 'timeline' listeners (and for the Acks that will name it).
   * @param {TimelineEvent} ev
   */
  #announce(ev) {
    this.#commands.noteTimeline(ev);
    this.#emit('timeline', ev);
  }

  // ---------------------------------------------------------------- outbound

  #pingLoop() {
    if (!this.#conn.joined || this.#closed) return;
    if (this.#clock.nextPingInMs() <= 0) this.#conn.send({ type: 'ping', clientTime: this.#clock.ping() }, true);
    this.#timers.set('ping', Math.max(10, this.#clock.nextPingInMs()), () => this.#pingLoop());
  }

  /** The room now, as the element controller follows it (null without a clock estimate). */
  #target() {
    if (!this.#conn.joined || !this.#clock.hasEstimate) return null;
    const at = this.#tracker.at(this.#clock.serverNowUs());
    if (!at) return null;
    const t = at.state.timeline;
    /** @type {import('./drift.js').DriftTarget} */
    const target = { position: Number(at.positionUs) / 1e6, rate: t.rateMilli / 1000, paused: t.paused, epoch: t.epoch };
    // A scheduled change, in local time: drift control starts a scheduled play early by the element's start-up latency.
    const p = this.#tracker.pending;
    if (p) {
      const nt = p.timeline;
      target.next = {
        atMs: this.#clock.toClientUs(p.effectiveAtUs) / 1000,
        position: Number(positionUsAt(nt, p.effectiveAtUs)) / 1e6,
        rate: nt.rateMilli / 1000,
        paused: nt.paused,
        epoch: nt.epoch,
      };
    }
    return target;
  }

  // ---------------------------------------------------------------- emitting

  /**
   * @param {keyof SessionEvents} event
   * @param {unknown} arg
   */
  #emit(event, arg) {
    this.#events.emit(event, arg);
  }

  /** @param {Error} e */
  #emitError(e) {
    this.#emit('error', e);
  }

  /**
   * @param {Status} st
   * @param {boolean} [force] emit even if unchanged
   */
  #setStatus(st, force = false) {
    if (this.#status === st && !force) return;
    this.#status = st;
    this.#emit('status', st);
  }
}

/**
 * @param {import('./tracker.js').TimelineState} s
 * @param {boolean} pending
 * @returns {TimelineEvent}
 */
function toEvent(s, pending) {
  const t = s.timeline;
  return {
    epoch: t.epoch,
    positionMs: Number(t.positionMs),
    anchorUs: Number(t.anchorUs),
    rate: t.rateMilli / 1000,
    rateMilli: t.rateMilli,
    paused: t.paused,
    effectiveAtUs: Number(s.effectiveAtUs),
    pending,
    reason: s.reason,
    by: s.by,
    timeline: t,
  };
}
