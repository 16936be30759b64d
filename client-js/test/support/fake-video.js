// A fake <video> for Node: an EventTarget with the HTMLMediaElement fields
// the session uses, advancing with real time at its playbackRate, with a
// small seek latency. Good enough to run the real session against the real
// server.

export class FakeVideo extends EventTarget {
  constructor({ seekLatencyMs = 30, startLatencyMs = 0 } = {}) {
    super();
    this.pos = 0;
    this.since = performance.now();
    this._rate = 1;
    this.paused = true;
    this.seeking = false;
    this.readyState = 4;
    this.duration = 3600;
    this.seekLatencyMs = seekLatencyMs;
    this.seekTimer = null;
    this.log = [];
    /** play() moves the element this long after it is called (start-up latency), ms. */
    this.startLatencyMs = startLatencyMs;
    this.movesAt = 0;
    this._muted = false;
    /** Every value `muted` was set to (not in `log`: not a write the session announces). */
    this.mutes = [];
  }

  get muted() {
    return this._muted;
  }

  set muted(m) {
    this._muted = m;
    this.mutes.push(m);
  }

  sync() {
    const now = performance.now();
    const from = Math.max(this.since, this.movesAt);
    if (!this.paused && !this.seeking && now > from) this.pos += ((now - from) / 1000) * this._rate;
    this.since = now;
  }

  get currentTime() {
    this.sync();
    return this.pos;
  }

  set currentTime(t) {
    this.sync();
    this.log.push({ type: 'seek', to: t });
    this.pos = t;
    this.seeking = true;
    this.readyState = 1;
    this.dispatchEvent(new Event('seeking'));
    clearTimeout(this.seekTimer);
    this.seekTimer = setTimeout(() => {
      this.sync();
      this.seeking = false;
      this.readyState = 4;
      this.dispatchEvent(new Event('seeked'));
      if (!this.paused) this.dispatchEvent(new Event('playing'));
    }, this.seekLatencyMs);
  }

  get playbackRate() {
    return this._rate;
  }

  set playbackRate(r) {
    this.sync();
    this._rate = r;
    this.log.push({ type: 'rate', rate: r });
  }

  play() {
    this.sync();
    this.log.push({ type: 'play' });
    if (this.paused) {
      this.paused = false;
      this.movesAt = performance.now() + this.startLatencyMs;
      this.dispatchEvent(new Event('play'));
      this.dispatchEvent(new Event('playing'));
    }
    return Promise.resolve();
  }

  pause() {
    this.sync();
    this.log.push({ type: 'pause' });
    if (!this.paused) {
      this.paused = true;
      this.dispatchEvent(new Event('pause'));
    }
  }

  dispose() {
    clearTimeout(this.seekTimer);
  }
}
