// Drives one media element: listens to its events, runs the drift controller
// (src/drift.js) against the room's target every `controlIntervalMs` and on
// every element event, applies its actions (rate, seek, play, pause), and
// reports the element's state to the server (every `reportIntervalMs`, and
// when a stall starts or ends). The session supplies the room's target and
// the way to send.

import { DriftController, HAVE_FUTURE_DATA } from './drift.js';
import { LockstepError } from './errors.js';
import { Timers } from './timers.js';

/** @typedef {import('./codec.js').ClientMsg} ClientMsg */
/** @typedef {import('./drift.js').DriftOptions} DriftOptions */

/**
 * What the controller needs from the session.
 * @typedef {Object} ElementHost
 * @property {() => number} nowUs the client clock, µs
 * @property {() => {position: number, rate: number, paused: boolean, epoch: number} | null} target
 *   the room now (position in seconds), or null when unknown (not joined, no clock estimate)
 * @property {() => boolean} joined
 * @property {() => number} epoch the epoch of the timeline in effect (reports name it)
 * @property {() => number} reportIntervalMs
 * @property {(msg: ClientMsg, datagram: boolean) => void} send
 * @property {(e: Error) => void} error
 */

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

  /** @param {HTMLMediaElement} el */
  attach(el) {
    this.detach();
    this.#el = el;
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
    on('emptied', () => this.#drift.reset());
    this.#timers.set('control', 0, () => this.#controlLoop());
    this.#timers.set('report', 0, () => this.#reportLoop());
  }

  /** Stops driving the element (it is left as it is). */
  detach() {
    for (const c of this.#cleanups.splice(0)) c();
    this.#timers.clear('control');
    this.#timers.clear('report');
    this.#timers.clear('buffering');
    this.#el = null;
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
    };
  }

  /** One drift-control step: target from the room now, actions onto the element. */
  step() {
    const el = this.#el;
    if (!el) return;
    const res = this.#drift.update({
      nowMs: this.#host.nowUs() / 1000,
      target: this.#host.target(),
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
    for (const a of res.actions) {
      try {
        if (a.type === 'setRate') el.playbackRate = a.rate;
        else if (a.type === 'seek') el.currentTime = a.position;
        else if (a.type === 'pause') el.pause();
        else if (a.type === 'play') {
          const p = el.play();
          if (p && typeof p.catch === 'function') p.catch((/** @type {unknown} */ err) => this.#playRejected(err));
        }
      } catch (err) {
        this.#host.error(new LockstepError(0, `could not ${a.type} the element: ${message(err)}`, { kind: 'media', cause: err }));
      }
    }
  }

  #controlLoop() {
    this.step();
    this.#timers.set('control', this.#controlMs, () => this.#controlLoop());
  }

  #reportLoop() {
    if (this.#el && this.#host.joined()) this.#sendReport(this.#el);
    this.#timers.set('report', this.#host.reportIntervalMs() || 1000, () => this.#reportLoop());
  }

  /** @param {HTMLMediaElement | null} el */
  #sendReport(el) {
    if (!this.#host.joined()) return;
    const pos = el ? el.currentTime : 0;
    const rate = el ? el.playbackRate : 1;
    this.#host.send(
      {
        type: 'report',
        epoch: this.#host.epoch(),
        positionUs: Number.isFinite(pos) && pos > 0 ? Math.round(pos * 1e6) : 0,
        rateMilli: Number.isFinite(rate) ? Math.max(0, Math.min(0xffff, Math.round(rate * 1000))) : 0,
        buffering: this.#reportedBuffering,
      },
      true,
    );
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
