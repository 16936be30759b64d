// Fakes for the controls and the player adapters: a media element whose
// events are queued (as a browser queues them) until `flush()`, and a
// session that records what the controls ask of it and writes to the
// element as the real one does (its 'drive' event first).

export class QueuedVideo extends EventTarget {
  constructor() {
    super();
    this.currentTimeValue = 0;
    this.paused = true;
    this.ended = false;
    this.seeking = false;
    this.readyState = 4;
    this.playbackRateValue = 1;
    /** As a browser that blocks autoplay: play() rejects, the element stays paused, no event. */
    this.autoplayBlocked = false;
    /** @type {string[]} */
    this.queue = [];
  }

  get currentTime() {
    return this.currentTimeValue;
  }

  set currentTime(t) {
    this.currentTimeValue = t;
    if (this.readyState >= 1) {
      this.seeking = true;
      this.queue.push('seeking');
    }
  }

  get playbackRate() {
    return this.playbackRateValue;
  }

  set playbackRate(r) {
    if (r === this.playbackRateValue) return;
    this.playbackRateValue = r;
    this.queue.push('ratechange');
  }

  play() {
    if (this.autoplayBlocked) return Promise.reject(Object.assign(new Error('play() not allowed'), { name: 'NotAllowedError' }));
    if (this.paused) {
      this.paused = false;
      this.queue.push('play');
    }
    return Promise.resolve();
  }

  pause() {
    if (!this.paused) {
      this.paused = true;
      this.queue.push('pause');
    }
  }

  /** Dispatches the queued events, in order. */
  flush() {
    while (this.queue.length) {
      const type = /** @type {string} */ (this.queue.shift());
      if (type === 'seeking') this.seeking = false; // seeked at once
      this.dispatchEvent(new Event(type));
    }
  }
}

export class FakeSession {
  constructor() {
    /** @type {Map<string, Set<(a: any) => void>>} */
    this.listeners = new Map();
    /** @type {{paused: boolean, rate: number} | null} */
    this.timeline = { paused: true, rate: 1 };
    /** @type {any} */
    this.attached = null;
    this.attachOptions = undefined;
    this.detaches = 0;
    /** @type {{kind: string, arg?: number, resolve: (v: any) => void, reject: (e: any) => void}[]} */
    this.commands = [];
    /** @type {Promise<unknown>[]} */
    this.holds = [];
    this.events = [];
  }

  /** @param {string} event @param {(a: any) => void} fn */
  on(event, fn) {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  /** @param {string} event @param {any} arg */
  emit(event, arg) {
    for (const fn of this.listeners.get(event) ?? []) fn(arg);
  }

  listenerCount(event = 'drive') {
    return this.listeners.get(event)?.size ?? 0;
  }

  /** @param {any} el @param {any} [options] */
  attach(el, options) {
    this.attached = el;
    this.attachOptions = options;
    // The real session listens to the element too: record when, relative to the controls.
    for (const t of ['play', 'seeking']) el.addEventListener(t, () => this.events.push(`session:${t}`));
  }

  detach() {
    this.attached = null;
    this.detaches++;
  }

  /** @param {Promise<unknown>} p */
  hold(p) {
    this.holds.push(p);
    return p;
  }

  /** @param {string} kind @param {number} [arg] */
  #command(kind, arg) {
    return new Promise((resolve, reject) => this.commands.push({ kind, arg, resolve, reject }));
  }

  play(/** @type {number | undefined} */ from) {
    return this.#command('play', from);
  }

  pause(/** @type {number | undefined} */ at) {
    return this.#command('pause', at);
  }

  seek(/** @type {number} */ to) {
    if (!Number.isFinite(to)) throw new RangeError(`position must be finite, got ${to}`);
    return this.#command('seek', to);
  }

  setRate(/** @type {number} */ rate) {
    return this.#command('setRate', rate);
  }

  /**
   * A write of the session's own, as the element controller makes it.
   * @param {{type: 'play'} | {type: 'pause'} | {type: 'seek', position: number} | {type: 'setRate', rate: number}} a
   */
  drive(a) {
    const el = this.attached;
    this.emit('drive', a);
    if (a.type === 'play') el.play().catch(() => {}); // the session reports a refused play as its 'error'
    else if (a.type === 'pause') el.pause();
    else if (a.type === 'seek') el.currentTime = a.position;
    else el.playbackRate = a.rate;
  }
}
