// Drives one media element: listens to its events, runs the drift controller
// (src/drift.js) against the room's target every `controlIntervalMs` and on
// every element event, hands it every frame the element presents (with
// `requestVideoFrameCallback`, where the browser has it: the frame's media
// time and when it is on screen, mapped from the page's clock to the
// session's, and `currentTime` read in the callback), applies its actions (rate, seek, play, pause), and
// reports the element's state to the server (every `reportIntervalMs`, and
// when a stall starts or ends). The session supplies the room's target and
// the way to send.
//
// In a live room (SPEC 2.4) positions are program time relative to the room's
// origin, and the element has its own time: with a live adapter the target is
// `adapter.toMediaTime(origin + position)`, kept within the element's seekable
// range (the DVR window), the drift control is the same, reports carry the
// element's position in room terms (`adapter.toProgramTime(currentTime) −
// origin`), and each report comes with a `LiveReport` (the adapter's live
// edge, the media buffered ahead). Without an adapter an element in a live
// room is not driven: its own time is not the room's.

import { DriftController, HAVE_FUTURE_DATA } from './drift.js';
import { LockstepError } from './errors.js';
import { bufferedAheadMs, clampToSeekable, finiteOrNull, liveTargetIn } from './live.js';
import { Timers } from './timers.js';

/** @typedef {import('./codec.js').ClientMsg} ClientMsg */
/** @typedef {import('./drift.js').DriftOptions} DriftOptions */
/** @typedef {import('./drift.js').DriftTarget} DriftTarget */
/** @typedef {import('./types.js').LiveAdapter} LiveAdapter */

/**
 * What the controller needs from the session.
 * @typedef {Object} ElementHost
 * @property {() => number} nowUs the client clock, µs
 * @property {() => DriftTarget | null} target
 *   the room now (position in seconds; a scheduled change as `next`), or null when unknown (not joined, no clock estimate)
 * @property {() => boolean} joined
 * @property {() => number} epoch the epoch of the timeline in effect (reports name it)
 * @property {() => number | null | undefined} origin the live room's origin (Unix ms); null in a media room;
 *   undefined while not known (joined, its live state not yet confirmed)
 * @property {() => number} reportIntervalMs
 * @property {(msg: ClientMsg, datagram: boolean) => void} send
 * @property {(e: Error) => void} error
 * @property {(a: DriveAction) => void} [drive] told synchronously right before each write to the element (its own
 *   changes, as opposed to the user's or the player's)
 */

/** @typedef {import('./types.js').DriveAction} DriveAction */

export class ElementController {
  #host;
  #drift;
  #timers = new Timers();
  #controlMs;
  #bufferingDelayMs;
  /** @type {HTMLMediaElement | null} */
  #el = null;
  /** @type {(() => void)[]} */
  #cleanups = [];
  /** The element's own waiting/playing state. */
  #elBuffering = false;
  /** What the server was told. */
  #reportedBuffering = false;
  #lastAutoplayErrorAt = -Infinity;
  /** @type {LiveAdapter | null} */
  #adapter = null;
  /** @type {'media' | 'live' | 'none'} what the element followed at the last step: media time, program time (through the adapter), nothing */
  #following = 'none';
  /** Whether the page was told (once per attach) that a live room needs an adapter, or that its adapter threw. */
  #toldNoAdapter = false;
  #toldAdapterThrew = false;
  /**
   * The oldest the adapter's live edge was (client clock minus edge, ms) at
   * any control step since the last `LiveReport`: a playlist's edge is a
   * sawtooth, and a report once a second may always catch it just after a
   * reload (then the room would pick a latency the viewer cannot hold).
   * @type {number | null}
   */
  #edgeAgeMs = null;
  /**
   * Whether reports come with a `SyncReport` (cleared for a server that
   * predates them: it answers one with 4001, SPEC 11).
   */
  syncReports = true;
  /** How many holds are in force: while any is, steps leave the element alone (see `hold()`). */
  #holds = 0;
  /** The element's `muted` before a start-up probe muted it (null: no probe in progress). */
  #probeMuted = /** @type {boolean | null} */ (null);

  /**
   * @param {ElementHost} host
   * @param {{drift?: DriftOptions, controlIntervalMs?: number, bufferingReportDelayMs?: number}} [o]
   */
  constructor(host, o = {}) {
    this.#host = host;
    this.#drift = new DriftController(o.drift);
    this.#controlMs = o.controlIntervalMs ?? 250;
    this.#bufferingDelayMs = o.bufferingReportDelayMs ?? 250;
  }

  /**
   * @param {HTMLMediaElement} el
   * @param {LiveAdapter | null} [adapter] maps its time to program time (live rooms)
   */
  attach(el, adapter = null) {
    this.detach();
    this.#el = el;
    this.#adapter = adapter;
    this.#following = 'none';
    this.#toldNoAdapter = false;
    this.#toldAdapterThrew = false;
    this.#drift.reset();
    this.#elBuffering = false;
    const on = (/** @type {string} */ type, /** @type {() => void} */ fn) => {
      el.addEventListener(type, fn);
      this.#cleanups.push(() => el.removeEventListener(type, fn));
    };
    const step = () => this.step();
    on('waiting', () => this.#setElementBuffering(true));
    on('stalled', () => {
      if (el.readyState < HAVE_FUTURE_DATA && !el.paused) this.#setElementBuffering(true);
    });
    for (const t of ['playing', 'canplay', 'canplaythrough']) {
      on(t, () => {
        if (el.readyState >= HAVE_FUTURE_DATA) this.#setElementBuffering(false);
      });
    }
    on('pause', () => this.#setElementBuffering(false));
    for (const t of ['seeking', 'seeked', 'loadedmetadata', 'play']) on(t, step);
    on('emptied', () => {
      this.#endProbe(el);
      this.#drift.reset();
    });
    this.#watchFrames(el);
    this.#timers.set('control', 0, () => this.#controlLoop());
    this.#timers.set('report', 0, () => this.#reportLoop());
  }

  /**
   * Hands the drift controller every frame the element presents (where the
   * browser has requestVideoFrameCallback; without it the controller
   * interpolates `currentTime`).
   * @param {HTMLMediaElement} el
   */
  #watchFrames(el) {
    const v = /** @type {any} */ (el);
    if (typeof v.requestVideoFrameCallback !== 'function' || typeof performance === 'undefined') return;
    let active = true;
    /** @type {number} */
    let handle = 0;
    const onFrame = (/** @type {number} */ now, /** @type {any} */ meta) => {
      if (!active) return;
      handle = v.requestVideoFrameCallback(onFrame);
      const shown = Number.isFinite(meta?.expectedDisplayTime) ? meta.expectedDisplayTime : Number.isFinite(meta?.presentationTime) ? meta.presentationTime : now;
      // When it is on screen on the session's clock: as far from now as on the page's.
      const nowMs = this.#host.nowUs() / 1000;
      const atMs = nowMs - (performance.now() - shown);
      // currentTime read right after a frame (Firefox steps it then) is a close reading of the element's clock.
      // A start just timed on its first frames: a step now checks where it came up (an early one is held at once).
      if (this.#drift.frame(atMs, Number(meta?.mediaTime), !el.paused && !el.seeking, { nowMs, currentTime: el.currentTime })) this.step();
    };
    try {
      handle = v.requestVideoFrameCallback(onFrame);
    } catch {
      return;
    }
    this.#drift.expectFrames();
    this.#cleanups.push(() => {
      active = false;
      try {
        v.cancelVideoFrameCallback?.(handle);
      } catch {
        // gone with its element
      }
    });
  }

  /** Stops driving the element (it is left as it is). */
  detach() {
    if (this.#el) this.#endProbe(this.#el);
    for (const c of this.#cleanups.splice(0)) c();
    this.#timers.clear('control');
    this.#timers.clear('report');
    this.#timers.clear('buffering');
    this.#timers.clear('wake');
    this.#el = null;
    this.#adapter = null;
    if (this.#reportedBuffering) {
      this.#reportedBuffering = false;
      this.#sendReport(null);
    }
  }

  /** Detaches and never schedules again. */
  close() {
    this.detach();
    this.#timers.stop();
  }

  /** A new connection joined: start drift control afresh, tell the server of a stall still going on. */
  joined() {
    this.#drift.reset();
    this.syncReports = true; // a new connection may reach a newer server
    if (this.#reportedBuffering) this.#sendReport(this.#el);
    this.step();
  }

  /**
   * The element's part of the session's stats.
   * @param {number} roomRate the room's rate (reported when no element is attached)
   */
  stats(roomRate) {
    const el = this.#el;
    return {
      driftMs: el ? this.#drift.driftMs : NaN,
      rate: el ? el.playbackRate : roomRate,
      buffering: el ? this.#drift.buffering : false,
      corrections: { ...this.#drift.corrections },
      seekLatencyMs: this.#drift.seekLatencyMs,
      startLatencyMs: this.#drift.startLatencyMs,
    };
  }

  /** The attached element's live adapter (null: none, or no element). */
  get adapter() {
    return this.#adapter;
  }

  /**
   * Suspends drift control until the returned function is called (each
   * function releases its own hold once; the last release steps at once).
   * Reports go on meanwhile.
   * @returns {() => void}
   */
  hold() {
    this.#holds++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#holds--;
      if (this.#holds === 0) this.step();
    };
  }

  /** The element's learned start-up latency (how long after play() it moves), ms; 0 until measured. */
  get startLatencyMs() {
    return this.#drift.startLatencyMs;
  }

  /** Whether a hold is in force. */
  get held() {
    return this.#holds > 0;
  }

  /** One drift-control step: target from the room now, actions onto the element. */
  step() {
    const el = this.#el;
    if (!el || this.#holds > 0) return;
    const target = this.#target(el);
    if (this.#following === 'live') this.#sampleEdge();
    const res = this.#drift.update({
      nowMs: this.#host.nowUs() / 1000,
      target,
      media: {
        currentTime: el.currentTime,
        playbackRate: el.playbackRate,
        paused: el.paused,
        readyState: el.readyState,
        seeking: el.seeking,
        buffering: this.#elBuffering,
        duration: el.duration,
      },
    });
    this.#updateReportedBuffering(res.buffering);
    // A parked seek's start: a step at that time, not at the next control tick.
    if (res.wakeAtMs !== undefined) this.#timers.set('wake', Math.max(0, res.wakeAtMs - this.#host.nowUs() / 1000), () => this.step());
    else this.#timers.clear('wake');
    for (const a of res.actions) {
      try {
        if (a.type === 'setRate') {
          this.#drive({ type: 'setRate', rate: a.rate });
          el.playbackRate = a.rate;
        } else if (a.type === 'seek') {
          // Live: the seek's lead (the seek latency) must not take it past the window either.
          const position = this.#following === 'live' ? clampToSeekable(a.position, el) : a.position;
          this.#drive({ type: 'seek', position });
          el.currentTime = position;
        } else if (a.type === 'pause') {
          this.#drive({ type: 'pause' });
          el.pause();
        } else if (a.type === 'play') {
          // The start-up probe plays a few frames of a paused room: muted, and a refusal is not the page's news.
          const probe = Boolean(a.probe);
          if (probe && this.#probeMuted === null) {
            this.#probeMuted = el.muted;
            el.muted = true;
          }
          this.#drive({ type: 'play' });
          const p = el.play();
          if (p && typeof p.catch === 'function') p.catch((/** @type {unknown} */ err) => (probe ? undefined : this.#playRejected(err)));
        } else if (a.type === 'probeEnd') {
          this.#endProbe(el);
        }
      } catch (err) {
        this.#host.error(new LockstepError(0, `could not ${a.type} the element: ${message(err)}`, { kind: 'media', cause: err }));
      }
    }
    // A probe dropped by a reset (a new connection, a new kind of room) leaves no element muted.
    if (!this.#drift.probing) this.#endProbe(el);
  }

  /**
   * Tells the host of a write about to be made (a listener that throws does not stop it).
   * @param {DriveAction} a
   */
  #drive(a) {
    try {
      this.#host.drive?.(a);
    } catch {
      // the host reports its listeners' errors itself
    }
  }

  /**
   * Where the element should be, in its own time: the room's position in a
   * media room; in a live room, through the adapter (null when it cannot
   * say yet, or without one: the element is not driven then).
   * @param {HTMLMediaElement} el
   * @returns {DriftTarget | null}
   */
  #target(el) {
    const origin = this.#host.origin();
    const adapter = this.#adapter;
    /** @type {'media' | 'live' | 'none'} */
    const following = origin === null || (origin === undefined && !adapter) ? 'media' : adapter ? 'live' : 'none';
    if (following !== this.#following) {
      // The room's clock kind is new (or now known): a position of the one
      // before means nothing to the other, so drift control starts afresh.
      this.#following = following;
      this.#drift.reset();
    }
    if (following === 'media') return this.#host.target();
    if (!adapter) {
      if (!this.#toldNoAdapter) {
        this.#toldNoAdapter = true;
        this.#host.error(
          new LockstepError(0, "this room is live: its positions are program time, so the element is not driven; attach it with attach(video, { live: adapter }) (e.g. hlsJsAdapter(hls) from 'lockstep-client/hls')", {
            kind: 'live',
          }),
        );
      }
      return null;
    }
    const t = this.#host.target();
    if (!t || origin === null || origin === undefined) return null;
    const media = this.#ask(() => adapter.toMediaTime(origin + t.position * 1000));
    if (media === null) return null;
    /** @type {DriftTarget} */
    const target = { position: liveTargetIn(media, el), rate: t.rate, paused: t.paused, epoch: t.epoch };
    // A scheduled change's position is in room terms too: into the element's media time, or left out.
    const next = t.next;
    const nextMedia = next ? this.#ask(() => adapter.toMediaTime(origin + next.position * 1000)) : null;
    if (next && nextMedia !== null) target.next = { ...next, position: liveTargetIn(nextMedia, el) };
    return target;
  }

  /**
   * An adapter's answer: a finite number or null. One that throws is the
   * page's bug: reported once per attach, then taken as "not known".
   * @param {() => unknown} fn
   * @returns {number | null}
   */
  #ask(fn) {
    try {
      return finiteOrNull(fn());
    } catch (err) {
      if (!this.#toldAdapterThrew) {
        this.#toldAdapterThrew = true;
        this.#host.error(new LockstepError(0, `the live adapter threw: ${message(err)}`, { kind: 'live', cause: err }));
      }
      return null;
    }
  }

  /**
   * The element's position in room terms, µs: its time in a media room; in a
   * live room its program time (through the adapter) minus the origin. 0 when
   * unknown (no element, no adapter, no mapping yet).
   * @param {HTMLMediaElement | null} el
   */
  #roomPositionUs(el) {
    if (!el) return 0;
    const origin = this.#host.origin();
    const adapter = this.#adapter;
    let pos = el.currentTime;
    if (origin !== null && (origin !== undefined || adapter)) {
      if (!adapter || origin === undefined) return 0;
      const program = this.#ask(() => adapter.toProgramTime(el.currentTime));
      if (program === null) return 0;
      pos = (program - origin) / 1000;
    }
    return Number.isFinite(pos) && pos > 0 ? Math.round(pos * 1e6) : 0;
  }

  #controlLoop() {
    this.step();
    this.#timers.set('control', this.#controlMs, () => this.#controlLoop());
  }

  #reportLoop() {
    if (this.#el && this.#host.joined()) this.#sendReport(this.#el);
    this.#timers.set('report', this.#host.reportIntervalMs() || 1000, () => this.#reportLoop());
  }

  /**
   * A `Report`, and in a live room with an adapter that knows its live edge
   * a `LiveReport` with it (SPEC 6.1).
   * @param {HTMLMediaElement | null} el
   */
  #sendReport(el) {
    if (!this.#host.joined()) return;
    const rate = el ? el.playbackRate : 1;
    this.#host.send(
      {
        type: 'report',
        epoch: this.#host.epoch(),
        positionUs: this.#roomPositionUs(el),
        rateMilli: Number.isFinite(rate) ? Math.max(0, Math.min(0xffff, Math.round(rate * 1000))) : 0,
        buffering: this.#reportedBuffering,
      },
      true,
    );
    // The measured drift, for the room's sync quality (SPEC 6.1): only while
    // following the timeline with a measurement, never while stalled.
    const driftMs = el ? this.#drift.driftMs : NaN;
    if (this.syncReports && Number.isFinite(driftMs) && !this.#reportedBuffering && !this.#elBuffering) {
      const driftUs = Math.max(-(2 ** 31), Math.min(2 ** 31 - 1, Math.round(driftMs * 1000)));
      this.#host.send({ type: 'syncReport', epoch: this.#host.epoch(), driftUs }, true);
    }
    const adapter = this.#adapter;
    const origin = this.#host.origin();
    if (!el || !adapter || origin === null || origin === undefined) return;
    this.#sampleEdge();
    const age = this.#edgeAgeMs;
    this.#edgeAgeMs = null;
    if (age === null) return;
    // The edge as old as it was at its oldest since the last report.
    const edge = this.#host.nowUs() / 1000 - age;
    if (!(edge >= 0)) return;
    this.#host.send({ type: 'liveReport', liveEdgeMs: Math.round(edge), bufferMs: bufferedAheadMs(el) }, true);
  }

  /** Notes how old the adapter's live edge is now (see `#edgeAgeMs`). */
  #sampleEdge() {
    const adapter = this.#adapter;
    if (!adapter) return;
    const edge = this.#ask(() => adapter.liveEdge());
    if (edge === null || edge < 0) return;
    const age = this.#host.nowUs() / 1000 - edge;
    this.#edgeAgeMs = this.#edgeAgeMs === null ? age : Math.max(this.#edgeAgeMs, age);
  }

  /** @param {boolean} on the element's waiting/playing events */
  #setElementBuffering(on) {
    if (this.#elBuffering === on) return;
    this.#elBuffering = on;
    this.step();
  }

  /**
   * A stall is reported once it lasts `bufferingReportDelayMs` (a quick seek
   * is not worth a room-wide wait); its end is reported at once.
   * @param {boolean} buffering
   */
  #updateReportedBuffering(buffering) {
    if (buffering === this.#reportedBuffering) {
      this.#timers.clear('buffering');
      return;
    }
    if (!buffering) {
      this.#timers.clear('buffering');
      this.#reportedBuffering = false;
      if (this.#el) this.#sendReport(this.#el);
      return;
    }
    if (this.#timers.has('buffering')) return;
    this.#timers.set('buffering', this.#bufferingDelayMs, () => {
      this.#reportedBuffering = true;
      if (this.#el) this.#sendReport(this.#el);
    });
  }

  /**
   * A start-up probe is over: the element's `muted` as it was.
   * @param {HTMLMediaElement} el
   */
  #endProbe(el) {
    if (this.#probeMuted === null) return;
    el.muted = this.#probeMuted;
    this.#probeMuted = null;
  }

  /** @param {unknown} err */
  #playRejected(err) {
    const name = err instanceof Error ? err.name : '';
    if (name === 'AbortError') return; // a pause() or seek interrupted it: not a failure
    const now = this.#host.nowUs() / 1000;
    if (now - this.#lastAutoplayErrorAt < 10_000) return;
    this.#lastAutoplayErrorAt = now;
    const autoplay = name === 'NotAllowedError';
    this.#host.error(
      new LockstepError(0, autoplay ? 'the browser blocked autoplay: call play() on the element from a user gesture' : `play() failed: ${message(err)}`, {
        kind: autoplay ? 'autoplay' : 'media',
        cause: err,
      }),
    );
  }
}

/** @param {unknown} err */
function message(err) {
  return err instanceof Error ? err.message : String(err);
}
