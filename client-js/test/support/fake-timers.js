// Deterministic timers for the pure connection policies.

export class FakeTimers {
  constructor() {
    this.now = 0;
    this.seq = 0;
    /** @type {Map<number, {at: number, fn: () => void}>} */
    this.pending = new Map();
    this.setTimeout = (/** @type {() => void} */ fn, /** @type {number} */ ms) => {
      const id = ++this.seq;
      this.pending.set(id, { at: this.now + Math.max(0, ms), fn });
      return id;
    };
    this.clearTimeout = (/** @type {number} */ id) => {
      this.pending.delete(id);
    };
  }

  /** Runs every timer due within `ms`, in order, letting promises settle between them. */
  async advance(ms) {
    const end = this.now + ms;
    await flush();
    for (;;) {
      let next = null;
      for (const [id, t] of this.pending) if (t.at <= end && (next === null || t.at < next[1].at || (t.at === next[1].at && id < next[0]))) next = [id, t];
      if (!next) break;
      this.pending.delete(next[0]);
      this.now = next[1].at;
      next[1].fn();
      await flush();
    }
    this.now = end;
    await flush();
  }
}

/** Lets pending promise callbacks run. */
export async function flush() {
  for (let i = 0; i < 10; i++) await Promise.resolve();
  await new Promise((r) => setImmediate(r));
}

/**
 * A promise settled by the fake clock: resolves with `value` (or rejects with
 * `error`) `ms` after it is created, unless the signal aborts first.
 */
export function after(timers, ms, { value, error, signal, onAbort } = {}) {
  return new Promise((resolve, reject) => {
    const id = timers.setTimeout(() => (error ? reject(error) : resolve(value)), ms);
    signal?.addEventListener('abort', () => {
      onAbort?.();
      timers.clearTimeout(id);
      reject(Object.assign(new Error('aborted'), { name: 'AbortError' }));
    });
  });
}
