// Which timeline is in effect: the ordering rules of SPEC section 6.2 and the
// scheduled changes of section 4.3, as a pure state machine. Every method takes
// the (estimated) server time; nothing here reads a clock.

import { epochCmp, positionUsAt, tickTimeline } from './timeline.js';

/** @typedef {import('./codec.js').Timeline} Timeline */
/** @typedef {import('./codec.js').TickMsg} TickMsg */
/** @typedef {import('./codec.js').TimelineChangedMsg} TimelineChangedMsg */
/** @typedef {import('./codec.js').ChangeReason} ChangeReason */
/** @typedef {import('./codec.js').U64} U64 */

/**
 * A timeline together with how it came to be.
 * @typedef {Object} TimelineState
 * @property {Timeline} timeline
 * @property {U64} effectiveAtUs server time from which it is in effect
 * @property {ChangeReason | 'welcome' | 'tick'} reason
 * @property {number} by member id that caused it (0 = the server or unknown)
 */

/**
 * What a message did to the tracker:
 * - 'applied': the timeline in effect changed now;
 * - 'pending': a change was scheduled for later;
 * - 'duplicate' / 'stale': nothing changed.
 * @typedef {'applied' | 'pending' | 'duplicate' | 'stale'} TrackResult
 */

export class TimelineTracker {
  constructor() {
    /** @type {TimelineState | null} the timeline in effect */
    this.current = null;
    /** @type {TimelineState | null} a change scheduled for later (at most one, as on the server) */
    this.pending = null;
    /** Newest accepted tick anchor of the current epoch (ticks of one epoch are ordered by anchor). */
    /** @type {U64 | null} */
    this.lastTickAnchorUs = null;
  }

  /**
   * A new connection's Welcome: the timeline in effect, from scratch. (A room
   * may have been recreated since the last connection, with a smaller epoch,
   * so nothing from before carries over.)
   * @param {Timeline} timeline
   * @param {U64} serverTimeUs
   */
  reset(timeline, serverTimeUs) {
    this.current = { timeline, effectiveAtUs: serverTimeUs, reason: 'welcome', by: 0 };
    this.pending = null;
    this.lastTickAnchorUs = null;
  }

  /** The epoch of the timeline in effect (0 before any). */
  get epoch() {
    return this.current ? this.current.timeline.epoch : 0;
  }

  /**
   * @param {number} epoch
   */
  known(epoch) {
    return (
      (this.current !== null && this.current.timeline.epoch === epoch) ||
      (this.pending !== null && this.pending.timeline.epoch === epoch)
    );
  }

  /** Newest epoch known (current or pending). */
  newest() {
    if (!this.current) return null;
    if (this.pending && epochCmp(this.pending.timeline.epoch, this.current.timeline.epoch) > 0) {
      return this.pending.timeline.epoch;
    }
    return this.current.timeline.epoch;
  }

  /**
   * A TimelineChanged (from the stream or its datagram copy).
   * @param {Pick<TimelineChangedMsg, 'timeline' | 'effectiveAtUs' | 'by' | 'reason'>} msg
   * @param {U64} serverNowUs
   * @returns {TrackResult}
   */
  onChanged(msg, serverNowUs) {
    const epoch = msg.timeline.epoch;
    if (this.known(epoch)) return 'duplicate';
    const newest = this.newest();
    if (newest !== null && epochCmp(epoch, newest) < 0) return 'stale';
    const state = { timeline: msg.timeline, effectiveAtUs: msg.effectiveAtUs, reason: msg.reason, by: msg.by };
    if (this.current === null || msg.effectiveAtUs <= serverNowUs) {
      this.current = state;
      this.pending = null;
      this.lastTickAnchorUs = null;
      return 'applied';
    }
    // The server keeps one pending change; a newer one replaces it (it was
    // computed from the pending one, so nothing is lost).
    this.pending = state;
    return 'pending';
  }

  /**
   * A Tick: a snapshot of the timeline in effect at its anchor.
   * @param {Pick<TickMsg, 'epoch' | 'positionMs' | 'anchorLoUs' | 'rateMilli' | 'paused'>} tick
   * @param {U64} serverNowUs
   * @returns {TrackResult}
   */
  onTick(tick, serverNowUs) {
    const timeline = tickTimeline(tick, serverNowUs);
    const cur = this.current;
    if (cur === null) {
      this.current = { timeline, effectiveAtUs: timeline.anchorUs, reason: 'tick', by: 0 };
      this.lastTickAnchorUs = timeline.anchorUs;
      return 'applied';
    }
    const cmp = epochCmp(tick.epoch, cur.timeline.epoch);
    if (cmp < 0) return 'stale';
    if (cmp === 0) {
      if (this.lastTickAnchorUs !== null && timeline.anchorUs < this.lastTickAnchorUs) return 'stale';
      // Same timeline, re-anchored: keep the exact one we have.
      this.lastTickAnchorUs = timeline.anchorUs;
      return 'duplicate';
    }
    // A newer epoch: the pending change took effect (our clock estimate is a
    // little behind), or a change was missed. Either way the tick describes
    // the timeline in effect now.
    const p = this.pending;
    const fromPending = p !== null && p.timeline.epoch === tick.epoch;
    this.current = fromPending
      ? /** @type {TimelineState} */ (p)
      : { timeline, effectiveAtUs: timeline.anchorUs, reason: 'tick', by: 0 };
    if (p !== null && epochCmp(p.timeline.epoch, tick.epoch) <= 0) this.pending = null;
    this.lastTickAnchorUs = timeline.anchorUs;
    return 'applied';
  }

  /**
   * Promotes the pending change if it is due at `serverNowUs`.
   * @param {U64} serverNowUs
   * @returns {boolean} whether the timeline in effect changed
   */
  advance(serverNowUs) {
    if (this.pending !== null && this.pending.effectiveAtUs <= serverNowUs) {
      this.current = this.pending;
      this.pending = null;
      this.lastTickAnchorUs = null;
      return true;
    }
    return false;
  }

  /**
   * The timeline in effect at `serverNowUs` (applying a due change) and the
   * media position there, in µs.
   * @param {U64} serverNowUs
   * @returns {{state: TimelineState, positionUs: U64} | null}
   */
  at(serverNowUs) {
    this.advance(serverNowUs);
    if (this.current === null) return null;
    return { state: this.current, positionUs: positionUsAt(this.current.timeline, serverNowUs) };
  }
}
