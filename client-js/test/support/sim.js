// A small deterministic simulator of a media element and a room, for the
// drift controller tests: the element advances at its playbackRate while it
// plays, seeks take a configurable time (during which it does not advance),
// and stalls freeze it with readyState HAVE_CURRENT_DATA.

import { DriftController } from '../../src/drift.js';

export class SimMedia {
  /**
   * @param {{position?: number, paused?: boolean, seekLatencyMs?: number | (() => number), seekErrorS?: number, jitterMs?: number, duration?: number, playLatencyMs?: number}} [o]
   */
  constructor(o = {}) {
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
    /** play() takes this long before the element moves (start-up latency), ms. */
    this.playLatencyMs = o.playLatencyMs ?? 0;
    this.movesAt = 0;
    /** @type {[number, number][]} stall windows [from, to) in ms */
    this.stalls = [];
    this.seed = 7;
    this.log = /** @type {{t: number, type: string, [k: string]: any}[]} */ ([]);
  }

  /** currentTime as read by the page, with optional measurement jitter. */
  get currentTime() {
    if (!this.jitterMs) return this.position;
    this.seed = (this.seed * 1103515245 + 12345) >>> 0;
    return this.position + ((((this.seed >>> 8) % 2001) / 1000 - 1) * this.jitterMs) / 1000;
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
  }

  /** @param {import('../../src/drift.js').DriftAction[]} actions @param {number} now */
  apply(actions, now) {
    for (const a of actions) {
      this.log.push({ t: now, ...a });
      if (a.type === 'setRate') this.playbackRate = a.rate;
      else if (a.type === 'play') {
        if (this.paused) this.movesAt = now + this.playLatencyMs;
        this.paused = false;
      }
      else if (a.type === 'pause') this.paused = true;
      else if (a.type === 'seek') {
        this.position = a.position + this.seekErrorS;
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
 * after a seek completes, as the session does on 'seeked'/'playing').
 */
export function simulate({ media, room, controller = new DriftController(), durationMs, dt = 10, controlMs = 250, start = 0 }) {
  const trace = [];
  let nextControl = start;
  let wasSeeking = media.seeking;
  for (let now = start; now <= start + durationMs; now += dt) {
    // Advance the element to `now` (from now − dt), then compare it with the room at `now`.
    if (now > start) media.step(now - dt, dt);
    const seekEnded = wasSeeking && !media.seeking;
    wasSeeking = media.seeking;
    const target = room.target(now);
    // The session also steps one start-up latency before a scheduled change (pre-roll).
    const preroll = target.next && controller.startLatencyMs > 0 && now >= target.next.atMs - controller.startLatencyMs && now - dt < target.next.atMs - controller.startLatencyMs;
    if (now >= nextControl || seekEnded || preroll) {
      const r = controller.update({ nowMs: now, target, media: media.state() });
      media.apply(r.actions, now);
      if (r.actions.some((a) => a.type === 'seek')) wasSeeking = true;
      if (now >= nextControl) nextControl = now + controlMs;
      trace.push({ t: now, drift: (media.position - target.position) * 1000, rate: media.playbackRate, mode: r.mode, actions: r.actions, buffering: r.buffering });
    }
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
