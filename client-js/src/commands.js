// Command answers by request id (SPEC 6.3). Every command gets a fresh
// non-zero request id; the server answers it exactly once, with an `Error`
// carrying that id if it failed, else with an `Ack` (outcome + epoch). The
// order of `TimelineChanged` messages is never used to match: a no-op play or a
// role change changes no timeline, yet is answered.
//
// An Ack names the epoch its outcome belongs to. The change of that epoch was
// announced before the Ack (the server sends them in that order on the
// reliable channel), so the command resolves with that timeline event, plus
// its `outcome` and `requestId`. Should the Ack name an epoch newer than any
// seen (a coalesced command whose replacement is still on its way), the
// command waits for that timeline; an Ack of an epoch too old to remember
// resolves with the timeline in effect.
//
// A server that never answers (one without the ACKS capability) is covered by
// a timeout: the promise then resolves null, as before Acks existed.

import { epochCmp } from './timeline.js';

/** @typedef {import('./codec.js').AckMsg} AckMsg */
/** @typedef {import('./codec.js').AckOutcome} AckOutcome */
/** @typedef {import('./types.js').TimelineEvent} TimelineEvent */
/** @typedef {import('./types.js').CommandResult} CommandResult */

/**
 * @typedef {Object} Timers
 * @property {(fn: () => void, ms: number) => unknown} setTimeout
 * @property {(id: any) => void} clearTimeout
 */

/**
 * @typedef {Object} Pending
 * @property {(v: CommandResult | null) => void} resolve
 * @property {(e: Error) => void} reject
 * @property {unknown} timer
 * @property {number | null} waitEpoch the Ack came, naming this epoch, not seen yet
 * @property {AckOutcome} outcome the Ack's outcome (once it came)
 */

/** How many recent timeline events are kept to resolve Acks with. */
const REMEMBERED = 64;

/** @type {Timers} */
const realTimers = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (id) => globalThis.clearTimeout(id),
};

/** Which event of one epoch to keep: the change's own over a Welcome's over a tick's; of equals, the first. @param {TimelineEvent} ev */
const rank = (ev) => (ev.reason === 'tick' ? 0 : ev.reason === 'welcome' ? 1 : 2);

export class CommandTracker {
  #next = 1;
  /** @type {Map<number, Pending>} */
  #pending = new Map();
  /** @type {Map<number, TimelineEvent>} recent timelines by epoch, oldest first */
  #timelines = new Map();
  /** @type {number | null} */
  #newest = null;
  #timeoutMs;
  #timers;
  #current;

  /**
   * @param {{timeoutMs?: number, current?: () => TimelineEvent | null, timers?: Timers}} [o]
   *   `timeoutMs`: an unanswered command resolves null after this (5000);
   *   `current`: the timeline in effect (for an Ack of an epoch no longer remembered)
   */
  constructor(o = {}) {
    this.#timeoutMs = o.timeoutMs ?? 5000;
    this.#current = o.current ?? (() => null);
    this.#timers = o.timers ?? realTimers;
  }

  /** Commands waiting for their answer. */
  get size() {
    return this.#pending.size;
  }

  /**
   * Registers a command: its request id (to send) and the promise of its
   * answer. The promise never becomes an unhandled rejection.
   * @returns {{requestId: number, promise: Promise<CommandResult | null>}}
   */
  add() {
    const requestId = this.#nextId();
    /** @type {Promise<CommandResult | null>} */
    const promise = new Promise((resolve, reject) => {
      const timer = this.#timers.setTimeout(() => this.#timedOut(requestId), this.#timeoutMs);
      this.#pending.set(requestId, { resolve, reject, timer, waitEpoch: null, outcome: 'applied' });
    });
    promise.catch(() => {});
    return { requestId, promise };
  }

  /**
   * A timeline was announced (Welcome, TimelineChanged, a tick that revealed
   * a change): remembered by epoch, and commands waiting for it resolve.
   * @param {TimelineEvent} ev
   */
  noteTimeline(ev) {
    const old = this.#timelines.get(ev.epoch);
    if (!old || rank(ev) > rank(old)) {
      this.#timelines.delete(ev.epoch);
      this.#timelines.set(ev.epoch, ev);
      while (this.#timelines.size > REMEMBERED) this.#timelines.delete(/** @type {number} */ (this.#timelines.keys().next().value));
    }
    if (this.#newest === null || epochCmp(ev.epoch, this.#newest) > 0) this.#newest = ev.epoch;
    for (const [id, p] of [...this.#pending]) {
      if (p.waitEpoch === ev.epoch) this.#settle(id, this.#timelines.get(ev.epoch) ?? ev, p.outcome);
    }
  }

  /** A new connection: epochs start afresh (the room may have been recreated). */
  resetTimelines() {
    this.#timelines.clear();
    this.#newest = null;
  }

  /**
   * An Ack. Returns whether it answered a pending command (an Ack of a
   * command that timed out or was never sent is ignored).
   * @param {Pick<AckMsg, 'requestId' | 'outcome' | 'epoch'>} ack
   */
  onAck(ack) {
    const p = this.#pending.get(ack.requestId);
    if (!p) return false;
    const ev = this.#timelines.get(ack.epoch);
    if (ev) {
      this.#settle(ack.requestId, ev, ack.outcome);
    } else if (this.#newest === null || epochCmp(ack.epoch, this.#newest) > 0) {
      // Its timeline is still on its way: wait for it (the timeout still holds).
      p.waitEpoch = ack.epoch;
      p.outcome = ack.outcome;
    } else {
      this.#settle(ack.requestId, this.#current(), ack.outcome);
    }
    return true;
  }

  /**
   * An Error naming a request id: its command rejects with `error`.
   * @param {number} requestId
   * @param {Error} error
   * @returns {boolean} whether it answered a pending command
   */
  onError(requestId, error) {
    const p = this.#take(requestId);
    if (!p) return false;
    p.reject(error);
    return true;
  }

  /**
   * Rejects every pending command (the connection was lost: an answer can no longer come).
   * @param {(requestId: number) => Error} error
   */
  rejectAll(error) {
    for (const id of [...this.#pending.keys()]) this.#take(id)?.reject(error(id));
  }

  /** Resolves every pending command with null (the session was closed). */
  resolveAll() {
    for (const id of [...this.#pending.keys()]) this.#take(id)?.resolve(null);
  }

  /**
   * @param {number} id
   * @param {TimelineEvent | null} ev
   * @param {AckOutcome} outcome
   */
  #settle(id, ev, outcome) {
    this.#take(id)?.resolve(ev ? { ...ev, outcome, requestId: id } : null);
  }

  /** @param {number} id */
  #timedOut(id) {
    const p = this.#pending.get(id);
    if (!p) return;
    // Acknowledged, but its timeline never came: the command did succeed.
    if (p.waitEpoch !== null) this.#settle(id, this.#current(), p.outcome);
    else this.#take(id)?.resolve(null);
  }

  /** @param {number} id */
  #take(id) {
    const p = this.#pending.get(id);
    if (!p) return undefined;
    this.#pending.delete(id);
    this.#timers.clearTimeout(p.timer);
    return p;
  }

  /** The next request id: 1 ..= 2^32 − 1, wrapping, never one still pending. */
  #nextId() {
    for (;;) {
      const id = this.#next;
      this.#next = id >= 0xffffffff ? 1 : id + 1;
      if (!this.#pending.has(id)) return id;
    }
  }
}
