// A small deterministic simulator of a media element and a room, for the
// drift controller tests: the element advances at its playbackRate while it
// plays, seeks take a configurable time (during which it does not advance),
// and stalls freeze it with readyState HAVE_CURRENT_DATA.
//
// Frames (`frameMs`): the element shows a new frame at the first display
// refresh (`vsyncMs`, from `vsyncPhaseMs`) at which its position has reached
// the frame's time; with `steppedCurrentTime` its currentTime is the time of
// the frame on screen (Firefox: whole 40 ms steps at 25 fps); with `rvfc`
// the controller is handed each frame presented (requestVideoFrameCallback).
// With `cadence` the frames are paced as Chromium paces them: while the rate
// is within 0.25 % of 1 they follow a line locked to the display (rate 1
// exactly, from where they were when it locked, `cadenceLockJitterMs` off),
// not the element's clock, until they are half a frame off it (then they
// are on the clock again and lock anew); at other rates they follow the clock.
// With `cadence: 'chromium'` they are chosen as Chromium chooses them
// (support/chromium.js: the cadence estimated from the last 32 frames'
// durations, locked anew on the frame on screen, coverage while unlocked;
// with `cadenceLockJitterMs`, locked up to that much later, at random).
// `clockJitterMs` adds noise to every time the controller is told (its clock),
// `timerJitterMs` makes the control timer late by up to that much.

import { DriftController } from '../../src/drift.js';
import { ChromiumRenderer } from './chromium.js';

export class SimMedia {
  /**
   * @param {{position?: number, paused?: boolean, seekLatencyMs?: number | (() => number), seekErrorS?: number, jitterMs?: number, duration?: number, playLatencyMs?: number | (() => number), frameMs?: number, vsyncMs?: number, vsyncPhaseMs?: number, steppedCurrentTime?: boolean, cadence?: boolean | 'chromium', cadenceLockJitterMs?: number}} [o]
   */
  constructor(o = {}) {
    /** Frame duration, ms (0: no frames modelled). */
    this.frameMs = o.frameMs ?? 0;
    this.vsyncMs = o.vsyncMs ?? 1000 / 60;
    this.vsyncPhaseMs = o.vsyncPhaseMs ?? 0;
    this.steppedCurrentTime = o.steppedCurrentTime ?? false;
    this.cadence = o.cadence ?? false;
    this.cadenceLockJitterMs = o.cadenceLockJitterMs ?? 0;
    this.renderer = this.cadence === 'chromium' ? new ChromiumRenderer({ frameMs: this.frameMs, refreshMs: this.vsyncMs, lockJitterMs: o.cadenceLockJitterMs }) : null;
    /** The time the position is at (the end of the last step), ms. */
    this.at = 0;
    /** @type {{at: number, pos: number} | null} the display-locked line the frames follow (cadence) */
    this.paced = null;
    /** How many times the cadence locked. */
    this.locks = 0;
    /** @type {number | null} media time of the frame on screen, s */
    this.shown = null;
    /** @type {{at: number, m: number}[]} frames presented since last drained */
    this.presented = [];
    this.position = o.position ?? 0;
    this.playbackRate = 1;
    this.paused = o.paused ?? true;
    this.readyState = 4;
    this.seeking = false;
    this.buffering = false;
    this.duration = o.duration ?? 7200;
    this.seekLatency = typeof o.seekLatencyMs === 'function' ? o.seekLatencyMs : () => o.seekLatencyMs ?? 200;
    this.seekErrorS = o.seekErrorS ?? 0;
    this.jitterMs = o.jitterMs ?? 0;
    this.seekDoneAt = 0;
    /** play() takes this long before the element moves (start-up latency), ms: one value, or one per start. */
    this.playLatency = typeof o.playLatencyMs === 'function' ? o.playLatencyMs : () => o.playLatencyMs ?? 0;
    this.movesAt = 0;
    /** @type {[number, number][]} stall windows [from, to) in ms */
    this.stalls = [];
    this.seed = 7;
    this.log = /** @type {{t: number, type: string, [k: string]: any}[]} */ ([]);
  }

  /** currentTime as read by the page, with optional measurement jitter. */
  get currentTime() {
    const base = this.steppedCurrentTime && this.shown !== null && !this.paused && !this.seeking ? this.shown : this.position;
    if (!this.jitterMs) return base;
    this.seed = (this.seed * 1103515245 + 12345) >>> 0;
    return base + ((((this.seed >>> 8) % 2001) / 1000 - 1) * this.jitterMs) / 1000;
  }

  /** The frame whose time the position has reached, s. */
  frameAt(position) {
    const f = this.frameMs / 1000;
    return Math.floor(position / f + 1e-9) * f;
  }

  /** At a display refresh: shows the frame due, and notes it when it is new. @param {number} now */
  refresh(now) {
    if (!this.frameMs || this.seeking) return;
    // Chromium's renderer keeps its cadence across a pause (time stopped, not rendered); a seek (flush) or an underflow
    // resets it.
    if (this.renderer && (this.stalled(now) || !(this.playbackRate > 0))) this.renderer.reset();
    const m = this.renderer && !this.paused && !this.stalled(now) && this.playbackRate > 0
      ? this.renderer.render(now, this.at, this.position, this.playbackRate)
      : this.frameAt(this.cadence ? this.pacedPosition(now) : this.position);
    if (m !== this.shown) {
      this.shown = m;
      if (!this.paused) this.presented.push({ at: now, m });
    }
  }

  /**
   * Where the frames are paced (cadence): on the display-locked line while the rate allows one, else the clock.
   * @param {number} now
   */
  pacedPosition(now) {
    const pos = this.position;
    if (this.paused || Math.abs(this.playbackRate - 1) > 0.0025) {
      this.paced = null;
      return pos;
    }
    if (this.paced) {
      const line = this.paced.pos + (now - this.paced.at) / 1000;
      if (Math.abs(line - pos) <= this.frameMs / 2000) return line;
    }
    this.seed = (this.seed * 1103515245 + 12345) >>> 0;
    const jitter = ((((this.seed >>> 8) % 2001) / 1000 - 1) * this.cadenceLockJitterMs) / 1000;
    this.paced = { at: now, pos: pos + jitter };
    this.locks++;
    return this.paced.pos;
  }

  /** @param {number} now */
  stalled(now) {
    return this.stalls.some(([a, b]) => now >= a && now < b);
  }

  /** Advances the element from `now` by `dt` ms. */
  step(now, dt) {
    if (this.seeking && now >= this.seekDoneAt) {
      this.seeking = false;
    }
    const stalled = this.stalled(now);
    this.buffering = stalled && !this.paused;
    this.readyState = stalled ? 2 : this.seeking ? 1 : 4;
    const from = Math.max(now, this.movesAt);
    if (!this.paused && !this.seeking && !stalled && from < now + dt) this.position += ((now + dt - from) / 1000) * this.playbackRate;
    this.at = now + dt;
  }

  /** @param {import('../../src/drift.js').DriftAction[]} actions @param {number} now */
  apply(actions, now) {
    for (const a of actions) {
      this.log.push({ t: now, ...a });
      if (a.type === 'setRate') this.playbackRate = a.rate;
      else if (a.type === 'play') {
        if (this.paused) this.movesAt = now + this.playLatency();
        this.paused = false;
      }
      else if (a.type === 'pause') this.paused = true;
      else if (a.type === 'seek') {
        this.position = a.position + this.seekErrorS;
        this.shown = null;
        this.paced = null;
        this.renderer?.reset();
        this.seeking = true;
        this.readyState = 1;
        this.seekDoneAt = now + this.seekLatency();
      }
    }
  }

  state() {
    return {
      currentTime: this.currentTime,
      playbackRate: this.playbackRate,
      paused: this.paused,
      readyState: this.readyState,
      seeking: this.seeking,
      buffering: this.buffering,
      duration: this.duration,
    };
  }
}

/**
 * A room timeline as a function of time: piecewise segments.
 */
export class SimRoom {
  constructor({ position = 0, rate = 1, paused = false } = {}) {
    this.segments = [{ at: 0, position, rate, paused, epoch: 1 }];
  }

  /** Changes the timeline from time `at` on (ms). */
  change(at, { position, rate, paused }) {
    const cur = this.target(at);
    this.segments.push({
      at,
      position: position ?? cur.position,
      rate: rate ?? cur.rate,
      paused: paused ?? cur.paused,
      epoch: cur.epoch + 1,
    });
  }

  /** @param {number} now */
  target(now) {
    let s = this.segments[0];
    for (const x of this.segments) if (x.at <= now) s = x;
    const position = s.paused ? s.position : s.position + ((now - s.at) / 1000) * s.rate;
    const n = this.segments.find((x) => x.at > now);
    const next = n ? { atMs: n.at, position: n.position, rate: n.rate, paused: n.paused, epoch: n.epoch } : undefined;
    return { position, rate: s.rate, paused: s.paused, epoch: s.epoch, next };
  }
}

/**
 * Runs the controller against the simulator for `durationMs`, stepping the
 * physics every `dt` ms and the controller every `controlMs` ms (and right
 * after a seek completes, as the session does on 'seeked'/'playing'). With
 * `rvfc`, frames the element presents are handed to `controller.frame()`.
 * Trace: the true drift (position − room), the drift of the frames presented
 * (`frameDrift`: their time − the room's at their display, mean of the last
 * `frameWindowMs` (500); null without frames), the rate, the mode, the actions.
 */
export function simulate({ media, room, controller = new DriftController(), durationMs, dt = 10, controlMs = 250, start = 0, rvfc = false, clockJitterMs = 0, timerJitterMs = 0, seed = 11, frameWindowMs = 500 }) {
  const trace = [];
  if (rvfc) controller.expectFrames();
  let nextControl = start;
  let wasSeeking = media.seeking;
  let rnd = seed;
  const random = () => {
    rnd = (rnd * 1103515245 + 12345) >>> 0;
    return (rnd >>> 8) / 2 ** 24;
  };
  const noisy = (/** @type {number} */ t) => t + (clockJitterMs ? (random() * 2 - 1) * clockJitterMs : 0);
  /** @type {{at: number, d: number}[]} */
  const frameDrifts = [];
  let late = 0;
  /** @type {number | null} */
  let wakeAt = null;
  /** The index of the next display refresh (kept, not recomputed: a refresh on a whole ms is not skipped by rounding). */
  let vsync = Math.ceil((start - media.vsyncPhaseMs) / media.vsyncMs - 1e-9);
  for (let now = start; now <= start + durationMs; now += dt) {
    /** Whether a frame completed a start's timing: the element controller steps then (so does this). */
    let timed = false;
    // Advance the element to `now` (from now − dt), then compare it with the room at `now`.
    if (now > start) media.step(now - dt, dt);
    if (media.frameMs) {
      // The display refreshes up to now: the frame due is shown at each.
      for (let at = media.vsyncPhaseMs + vsync * media.vsyncMs; at <= now + 1e-9; at = media.vsyncPhaseMs + ++vsync * media.vsyncMs) {
        media.refresh(at);
        for (const f of media.presented.splice(0)) {
          frameDrifts.push({ at: f.at, d: (f.m - room.target(f.at).position) * 1000 });
          if (rvfc) {
            const cbAt = noisy(f.at + 1);
            if (controller.frame(noisy(f.at), f.m, !media.paused, { nowMs: cbAt, currentTime: media.currentTime })) timed = true;
          }
        }
      }
    }
    const seekEnded = wasSeeking && !media.seeking;
    wasSeeking = media.seeking;
    const target = room.target(now);
    // The session also steps one start-up latency before a scheduled change (pre-roll).
    const preroll = target.next && controller.startLatencyMs > 0 && now >= target.next.atMs - controller.startLatencyMs && now - dt < target.next.atMs - controller.startLatencyMs;
    const woken = wakeAt !== null && now >= wakeAt;
    if (now >= nextControl + late || seekEnded || preroll || woken || timed) {
      const r = controller.update({ nowMs: noisy(now), target, media: media.state() });
      // The session steps again when the controller asks (a parked seek's start).
      wakeAt = r.wakeAtMs ?? null;
      media.apply(r.actions, now);
      if (r.actions.some((a) => a.type === 'seek')) {
        wasSeeking = true;
        frameDrifts.length = 0;
      }
      if (now >= nextControl + late) {
        nextControl = now + controlMs;
        late = timerJitterMs ? random() * timerJitterMs : 0;
      }
      const recent = frameDrifts.filter((f) => f.at > now - frameWindowMs);
      const frameDrift = recent.length ? recent.reduce((a, f) => a + f.d, 0) / recent.length : null;
      trace.push({ t: now, drift: (media.position - target.position) * 1000, frameDrift, rate: media.playbackRate, mode: r.mode, actions: r.actions, buffering: r.buffering, measured: r.driftMs });
    }
    if (frameDrifts.length > 200) frameDrifts.splice(0, 100);
  }
  return { trace, controller, media };
}

/** Time (ms) from which |drift| stays within `bound` ms until the end, or Infinity. */
export function settledAt(trace, bound) {
  let at = Infinity;
  for (let i = trace.length - 1; i >= 0; i--) {
    if (Math.abs(trace[i].drift) > bound) break;
    at = trace[i].t;
  }
  return at;
}
