// Event listeners of a session. A listener that throws is the page's bug, not
// the session's: it is reported (reportError) and the others still run.

export class Emitter {
  /** @type {Map<string, Set<(arg: any) => void>>} */
  #listeners = new Map();

  /**
   * @param {string} event
   * @param {(arg: any) => void} fn
   * @returns {() => void} unsubscribes
   */
  on(event, fn) {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => this.off(event, fn);
  }

  /**
   * @param {string} event
   * @param {(arg: any) => void} fn
   */
  off(event, fn) {
    this.#listeners.get(event)?.delete(fn);
  }

  /**
   * @param {string} event
   * @param {unknown} arg
   */
  emit(event, arg) {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(arg);
      } catch (e) {
        const report = /** @type {any} */ (globalThis).reportError;
        if (typeof report === 'function') report(e);
        else
          setTimeout(() => {
            throw e;
          });
      }
    }
  }
}
