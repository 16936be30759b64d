// Clock sync: NTP-style estimation of the server clock (SPEC section 7).
//
// For each Ping { client_time: t0 } the server answers
// Pong { t0, t1 = server receive, t2 = server send }, received at t3:
//
//   rtt    = (t3 − t0) − (t2 − t1)
//   offset = ((t1 − t0) + (t2 − t3)) / 2      server_time ≈ client_time + offset
//
// Queueing only ever adds delay. We keep the samples of a recent window
// (30 s, at most 16) and take the least delay seen in each direction on its
// own: t1 − t0 = offset + out, t3 − t2 = back − offset, so
//
//   offset ≈ (min(t1 − t0) − min(t3 − t2)) / 2
//
// exact when the least delays out and back are equal, however the queueing
// of each exchange was split. The exchange with the smallest RTT (the
// classic choice, `estimator: 'fastest'`) is exact only if that one exchange
// was symmetric: through 50 ± 20 ms of jitter each way its steady error was
// 1.6 / 5.8 ms (p50 / p95 over 200 simulated viewers, a ping every 5 s as
// before) and 1–7 ms seen in the browser tests, and a viewer keeps it as an
// offset from the others. Per direction, with a ping every 2 s: 0.65 / 2.1
// ms (test/clock.test.js has the comparison). The cost: the two minima may come
// from exchanges up to the window apart, so a client clock that drifts
// against the server's by d adds up to d · 15 s (1.5 ms at 100 ppm, an
// unsynced PC's worst; NTP-synced machines drift by a few ppm).
// Compared with the anchors: Jellyfin keeps 8 samples but re-syncs only every
// 60 s; OpenWatchParty smooths every sample with an EMA (0.6/0.4), so one
// delayed pong (an outlier of RTT R) moves its offset by up to 0.4 · R / 2;
// Syncplay uses an RTT EWMA. Minimum-RTT selection is immune to such outliers.
//
// The class is pure: time comes from an injectable `now()` (client µs), and it
// schedules nothing itself; it says when the next ping is due.

/** @typedef {import('./codec.js').U64} U64 */

/**
 * @typedef {Object} ClockSample
 * @property {number} at      client time the pong arrived (µs)
 * @property {number} rtt     round-trip time without server hold time (µs)
 * @property {number} offset  server − client (µs), from this exchange alone
 * @property {number} out     t1 − t0: the delay out plus the offset (µs)
 * @property {number} back    t3 − t2: the delay back minus the offset (µs)
 */

/**
 * @typedef {Object} ClockOptions
 * @property {() => number} [now] client clock in µs (default: Unix-based performance clock)
 * @property {number} [windowMs] keep samples this recent (default 30000)
 * @property {number} [maxSamples] keep at most this many (default 16)
 * @property {'directions' | 'fastest'} [estimator] the offset from the least delay in each direction (default), or from
 *   the fastest exchanges (`bestOf`, `rttMarginUs`)
 * @property {number} [bestOf] 'fastest': average at most this many of the fastest samples (default 3)
 * @property {number} [rttMarginUs] 'fastest': and whose RTT is within this of the fastest (default 1000 µs, or 25 % of
 *   it if larger)
 * @property {number} [burstCount] pings in a burst (default 5)
 * @property {number} [burstIntervalMs] spacing of burst pings (default 100)
 * @property {number} [intervalMs] steady re-sync period (default 2000)
 * @property {number} [maxRttMs] samples slower than this are dropped (default 10000)
 */

/**
 * The client clock: Unix-epoch microseconds from the monotonic performance
 * clock (`performance.timeOrigin + performance.now()`). Using a Unix origin
 * makes the offset meaningful (≈ 0 on loopback and for NTP-synced machines)
 * while staying monotonic.
 */
export function defaultNowUs() {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

export class ClockSync {
  /** @param {ClockOptions} [opts] */
  constructor(opts = {}) {
    this.now = opts.now ?? defaultNowUs;
    this.windowUs = (opts.windowMs ?? 30_000) * 1000;
    this.maxSamples = opts.maxSamples ?? 16;
    this.estimator = opts.estimator ?? 'directions';
    this.bestOf = opts.bestOf ?? 3;
    this.rttMarginUs = opts.rttMarginUs ?? 1000;
    this.burstCount = opts.burstCount ?? 5;
    this.burstIntervalMs = opts.burstIntervalMs ?? 100;
    this.intervalMs = opts.intervalMs ?? 2000;
    this.maxRttUs = (opts.maxRttMs ?? 10_000) * 1000;
    /** @type {ClockSample[]} */
    this.samples = [];
    /** Offset from Welcome.server_time_us, before any pong (error up to one-way delay). */
    /** @type {number | null} */
    this.coarseOffset = null;
    /** Pings still to send in the current burst. */
    this.burstLeft = this.burstCount;
    /** @type {number | null} client µs of the last ping sent */
    this.lastPingAt = null;
    /** Cached estimate. */
    this.est = { offset: 0, rtt: NaN };
    this.dirty = true;
  }

  /** Forgets every sample and starts a new burst (after a reconnect or a network change). */
  reset() {
    this.samples = [];
    this.coarseOffset = null;
    this.burstLeft = this.burstCount;
    this.lastPingAt = null;
    this.dirty = true;
  }

  /** Starts a new burst but keeps the samples (e.g. the tab became visible again). */
  burst() {
    this.burstLeft = this.burstCount;
  }

  /**
   * Seeds a coarse offset from a Welcome: its server time against the local
   * receive time. Used only until the first pong.
   * @param {U64} serverTimeUs
   * @param {number} [receivedAtUs]
   */
  seed(serverTimeUs, receivedAtUs = this.now()) {
    this.coarseOffset = Number(serverTimeUs) - receivedAtUs;
    this.dirty = true;
  }

  /**
   * The client_time for a Ping to send now; counts it against the burst.
   * @returns {number}
   */
  ping() {
    const t0 = this.now();
    this.lastPingAt = t0;
    if (this.burstLeft > 0) this.burstLeft--;
    return t0;
  }

  /**
   * Milliseconds until the next ping is due (0 = now).
   * @returns {number}
   */
  nextPingInMs() {
    if (this.lastPingAt === null) return 0;
    const gap = this.burstLeft > 0 ? this.burstIntervalMs : this.intervalMs;
    const since = (this.now() - this.lastPingAt) / 1000;
    return Math.max(0, gap - since);
  }

  /**
   * Takes a Pong. Returns the sample, or null if it was implausible (an echo
   * of a time we never sent, a negative RTT, or too slow to be useful).
   * @param {{clientTime: U64, serverRecvUs: U64, serverSendUs: U64}} pong
   * @param {number} [receivedAtUs] t3, default now()
   * @returns {ClockSample | null}
   */
  onPong(pong, receivedAtUs = this.now()) {
    const t0 = Number(pong.clientTime);
    const t1 = Number(pong.serverRecvUs);
    const t2 = Number(pong.serverSendUs);
    const t3 = receivedAtUs;
    if (![t0, t1, t2, t3].every(Number.isFinite)) return null;
    const hold = t2 - t1;
    const rtt = t3 - t0 - hold;
    if (t0 > t3 || hold < 0 || rtt < 0 || rtt > this.maxRttUs) return null;
    const sample = { at: t3, rtt, offset: (t1 - t0 + (t2 - t3)) / 2, out: t1 - t0, back: t3 - t2 };
    this.samples.push(sample);
    this.prune(t3);
    this.dirty = true;
    return sample;
  }

  /** @param {number} nowUs */
  prune(nowUs) {
    const oldest = nowUs - this.windowUs;
    let drop = 0;
    while (drop < this.samples.length && this.samples[drop].at < oldest) drop++;
    // Always keep the newest sample, however old: a stale estimate beats none.
    if (drop >= this.samples.length) drop = this.samples.length - 1;
    if (drop > 0) this.samples.splice(0, drop);
    if (this.samples.length > this.maxSamples) this.samples.splice(0, this.samples.length - this.maxSamples);
  }

  /** @returns {{offset: number, rtt: number}} */
  estimate() {
    if (this.samples.length > 0) {
      const before = this.samples.length;
      this.prune(this.now());
      if (this.samples.length !== before) this.dirty = true;
    }
    if (!this.dirty) return this.est;
    this.dirty = false;
    if (this.samples.length === 0) {
      this.est = { offset: this.coarseOffset ?? 0, rtt: NaN };
      return this.est;
    }
    const byRtt = [...this.samples].sort((a, b) => a.rtt - b.rtt);
    const best = byRtt[0].rtt;
    if (this.estimator === 'directions') {
      let out = Infinity;
      let back = Infinity;
      for (const s of this.samples) {
        out = Math.min(out, s.out);
        back = Math.min(back, s.back);
      }
      this.est = { offset: (out - back) / 2, rtt: best };
      return this.est;
    }
    const margin = Math.max(this.rttMarginUs, best * 0.25);
    let n = 0;
    let sum = 0;
    for (const s of byRtt) {
      if (n >= this.bestOf || s.rtt > best + margin) break;
      sum += s.offset;
      n++;
    }
    this.est = { offset: sum / n, rtt: best };
    return this.est;
  }

  /** Whether the estimate comes from at least one pong. */
  get synced() {
    return this.samples.length > 0;
  }

  /** Whether any estimate (pong or Welcome) exists. */
  get hasEstimate() {
    return this.samples.length > 0 || this.coarseOffset !== null;
  }

  /** Estimated server − client offset, µs. */
  get offsetUs() {
    return this.estimate().offset;
  }

  /** Smallest RTT in the window, µs (NaN before the first pong). */
  get rttUs() {
    return this.estimate().rtt;
  }

  /**
   * Estimated server time (µs, an integer) at client time `clientUs` (default now).
   * @param {number} [clientUs]
   */
  serverNowUs(clientUs = this.now()) {
    return Math.round(clientUs + this.offsetUs);
  }

  /**
   * The client time (µs) at which the server clock reads `serverUs`.
   * @param {U64} serverUs
   */
  toClientUs(serverUs) {
    return Number(serverUs) - this.offsetUs;
  }
}
