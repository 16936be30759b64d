// Named one-shot timers: setting a name again replaces its timer, and once
// stopped nothing new is scheduled (so a closed session cannot wake up).

export class Timers {
  /** @type {Map<string, ReturnType<typeof setTimeout>>} */
  #timers = new Map();
  #stopped = false;

  /**
   * Runs `fn` in `ms` (at least 0), replacing the timer of that name.
   * @param {string} name
   * @param {number} ms
   * @param {() => void} fn
   */
  set(name, ms, fn) {
    this.clear(name);
    if (this.#stopped) return;
    this.#timers.set(
      name,
      setTimeout(() => {
        this.#timers.delete(name);
        fn();
      }, Math.max(0, ms)),
    );
  }

  /** @param {string} name */
  clear(name) {
    const t = this.#timers.get(name);
    if (t !== undefined) clearTimeout(t);
    this.#timers.delete(name);
  }

  /** @param {string} name */
  has(name) {
    return this.#timers.has(name);
  }

  /** Clears every timer; later `set`s do nothing. */
  stop() {
    this.#stopped = true;
    for (const name of [...this.#timers.keys()]) this.clear(name);
  }
}
