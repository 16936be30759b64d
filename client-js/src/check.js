// Checks of what the page hands the adapters (internal): clear errors for bad input.

/**
 * @param {unknown} session
 * @param {string} where
 */
export function checkSession(session, where) {
  const s = /** @type {any} */ (session);
  if (!s || typeof s !== 'object' || typeof s.attach !== 'function' || typeof s.on !== 'function' || typeof s.hold !== 'function') {
    throw new TypeError(`${where} needs a session (await connect({ url, eventId }) from 'lockstep-client'), got ${describe(session)}`);
  }
}

/**
 * @param {unknown} el
 * @param {string} where
 * @returns {asserts el is HTMLMediaElement}
 */
export function checkElement(el, where) {
  const e = /** @type {any} */ (el);
  if (!e || typeof e !== 'object' || typeof e.addEventListener !== 'function' || typeof e.play !== 'function' || typeof e.pause !== 'function' || !('currentTime' in e)) {
    throw new TypeError(`${where} needs a media element (<video> or <audio>), got ${describe(el)}`);
  }
}

/** @param {unknown} x */
export function describe(x) {
  if (x === null) return 'null';
  if (typeof x !== 'object') return typeof x;
  const name = /** @type {any} */ (x).constructor?.name;
  return name ? `a ${name}` : 'an object';
}

/** @param {unknown} e */
export function report(e) {
  const r = /** @type {any} */ (globalThis).reportError;
  if (typeof r === 'function') r(e);
  else
    setTimeout(() => {
      throw e;
    });
}
