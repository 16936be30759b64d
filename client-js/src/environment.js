// What the session reads from the page: the device id kept in localStorage,
// and the network and visibility changes it reacts to.

/** A device id kept in localStorage (a fresh one per page load without it). */
export function defaultDeviceId() {
  const key = 'lockstep.deviceId';
  const g = /** @type {any} */ (globalThis);
  try {
    const v = g.localStorage?.getItem(key);
    if (v) return v;
  } catch {}
  const id = `d-${g.crypto?.randomUUID ? g.crypto.randomUUID() : Math.random().toString(36).slice(2) + Date.now().toString(36)}`;
  try {
    g.localStorage?.setItem(key, id);
  } catch {}
  return id;
}

/**
 * Listens to the page's environment: `online` and `navigator.connection`
 * changes (`networkChanged`), and the tab returning to the foreground
 * (`visible`). Returns a function that stops listening.
 * @param {{networkChanged: () => void, visible: () => void}} on
 */
export function listenToEnvironment(on) {
  const g = /** @type {any} */ (globalThis);
  /** @type {(() => void)[]} */
  const cleanups = [];
  /**
   * @param {any} target
   * @param {string} type
   * @param {() => void} fn
   */
  const listen = (target, type, fn) => {
    if (!target || typeof target.addEventListener !== 'function') return;
    target.addEventListener(type, fn);
    cleanups.push(() => target.removeEventListener(type, fn));
  };
  listen(g.window ?? g, 'online', on.networkChanged);
  listen(g.navigator?.connection, 'change', on.networkChanged);
  listen(g.document, 'visibilitychange', () => {
    if (g.document?.visibilityState === 'visible') on.visible();
  });
  return () => {
    for (const c of cleanups.splice(0)) c();
  };
}
