// Connection policies, pure and clock-injectable: reconnect backoff, the
// transport race, and the per-server memory of which transport won.

/**
 * Jittered exponential backoff ("full jitter"): the n-th delay is uniform in
 * [0, min(max, base · 2^n)]. Full jitter spreads a room's reconnect storm
 * after a server restart (centrifuge-js does the same, 0.5–20 s; ours starts
 * at 250 ms because a watch party notices every second of a gap).
 */
export class Backoff {
  /** @param {{baseMs?: number, maxMs?: number, random?: () => number}} [o] */
  constructor(o = {}) {
    this.baseMs = o.baseMs ?? 250;
    this.maxMs = o.maxMs ?? 10_000;
    this.random = o.random ?? Math.random;
    this.attempt = 0;
  }

  /** The next delay, ms. */
  next() {
    const cap = Math.min(this.maxMs, this.baseMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.round(this.random() * cap);
  }

  /** After a successful connection. */
  reset() {
    this.attempt = 0;
  }
}

/**
 * @template T
 * @typedef {Object} Candidate
 * @property {string} name
 * @property {number} delayMs start this long after the race starts (a head start for the others)
 * @property {(signal: AbortSignal) => Promise<T>} open
 * @property {(value: T) => void} [dispose] closes a value that opened after another candidate won
 */

/**
 * @typedef {Object} Timers
 * @property {(fn: () => void, ms: number) => unknown} setTimeout
 * @property {(id: any) => void} clearTimeout
 */

/** @type {Timers} */
const realTimers = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (id) => globalThis.clearTimeout(id),
};

/**
 * Races candidates: each starts after its delay (or at once when every
 * started candidate has failed: no head start is wasted on a dead one); the
 * first to open wins, the others are aborted, and one that opens anyway is
 * disposed. Rejects with an AggregateError when all fail, or when `signal`
 * aborts, or after `timeoutMs`.
 * @template T
 * @param {Candidate<T>[]} candidates
 * @param {{timers?: Timers, signal?: AbortSignal, timeoutMs?: number}} [o]
 * @returns {Promise<{name: string, value: T}>}
 */
export function race(candidates, o = {}) {
  const timers = o.timers ?? realTimers;
  return new Promise((resolve, reject) => {
    if (candidates.length === 0) return reject(new AggregateError([], 'no transport to try'));
    /** @type {{c: Candidate<T>, ctl: AbortController, timer: unknown, state: 'waiting' | 'running' | 'failed' | 'won' | 'lost'}[]} */
    const runs = candidates.map((c) => ({ c, ctl: new AbortController(), timer: null, state: 'waiting' }));
    /** @type {unknown[]} */
    const errors = [];
    let settled = false;
    /** @type {unknown} */
    let deadline = null;

    const finish = () => {
      settled = true;
      if (deadline !== null) timers.clearTimeout(deadline);
      o.signal?.removeEventListener('abort', onAbort);
      for (const r of runs) {
        if (r.timer !== null) timers.clearTimeout(r.timer);
        if (r.state === 'running' || r.state === 'waiting') {
          r.state = 'lost';
          r.ctl.abort();
        }
      }
    };
    const onAbort = () => {
      if (settled) return;
      finish();
      reject(new AggregateError(errors, 'connection cancelled'));
    };
    o.signal?.addEventListener('abort', onAbort, { once: true });
    if (o.signal?.aborted) return onAbort();

    /** @param {typeof runs[number]} r */
    const start = (r) => {
      if (settled || r.state !== 'waiting') return;
      if (r.timer !== null) timers.clearTimeout(r.timer);
      r.timer = null;
      r.state = 'running';
      let p;
      try {
        p = Promise.resolve(r.c.open(r.ctl.signal));
      } catch (e) {
        p = Promise.reject(e);
      }
      p.then(
        (value) => {
          if (settled) {
            r.c.dispose?.(value);
            return;
          }
          r.state = 'won';
          finish();
          resolve({ name: r.c.name, value });
        },
        (err) => {
          if (settled) return;
          r.state = 'failed';
          errors.push(err);
          if (runs.every((x) => x.state === 'failed')) {
            finish();
            reject(new AggregateError(errors, 'every transport failed'));
            return;
          }
          // Nothing running any more: start the next waiting one now.
          if (!runs.some((x) => x.state === 'running')) {
            const next = runs.find((x) => x.state === 'waiting');
            if (next) start(next);
          }
        },
      );
    };

    for (const r of runs) {
      if (r.c.delayMs <= 0) start(r);
      else r.timer = timers.setTimeout(() => start(r), r.c.delayMs);
    }
    if (o.timeoutMs !== undefined) {
      deadline = timers.setTimeout(() => {
        if (settled) return;
        finish();
        reject(new AggregateError(errors, `no transport opened within ${o.timeoutMs} ms`));
      }, o.timeoutMs);
    }
  });
}

/**
 * Remembers which transport won, per server: in localStorage when the page
 * has it (so the next visit starts with the winner), else in memory.
 */
export class TransportMemory {
  /** @param {Storage | null} [storage] */
  constructor(storage) {
    /** @type {Storage | null} */
    this.storage = storage === undefined ? defaultStorage() : storage;
    /** @type {Map<string, string>} */
    this.mem = new Map();
  }

  /** @param {string} server */
  get(server) {
    const key = `lockstep.transport:${server}`;
    try {
      const v = this.storage?.getItem(key);
      if (v) return v;
    } catch {}
    return this.mem.get(key) ?? null;
  }

  /**
   * @param {string} server
   * @param {string} name
   */
  set(server, name) {
    const key = `lockstep.transport:${server}`;
    this.mem.set(key, name);
    try {
      this.storage?.setItem(key, name);
    } catch {}
  }
}

/** @returns {Storage | null} */
function defaultStorage() {
  try {
    const s = /** @type {any} */ (globalThis).localStorage;
    return s && typeof s.getItem === 'function' ? s : null;
  } catch {
    return null;
  }
}

/** One shared memory for every session of the page. */
export const sharedMemory = new TransportMemory();
