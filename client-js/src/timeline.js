// Timeline arithmetic (SPEC section 4), integer-exact.
//
// Intermediate products can need more than 64 bits, so every function
// computes with BigInt (whose division truncates toward zero, as the spec
// requires) and returns a number when the result is at most 2^53 − 1, a
// bigint above (the codec's U64 convention). Inputs may be numbers or
// bigints. These are called a few times per control step, never per frame,
// so BigInt's cost does not matter.

/** @typedef {import('./codec.js').Timeline} Timeline */
/** @typedef {import('./codec.js').TickMsg} TickMsg */
/** @typedef {import('./codec.js').U64} U64 */

const U64_MAX = (1n << 64n) - 1n;
const SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const TWO_32 = 1n << 32n;
const TWO_31 = 1n << 31n;

/**
 * @param {bigint} v
 * @returns {U64}
 */
function out(v) {
  return v <= SAFE && v >= -SAFE ? Number(v) : v;
}

/** @param {bigint} v */
function clampU64(v) {
  return v < 0n ? 0n : v > U64_MAX ? U64_MAX : v;
}

/**
 * @param {U64} v
 */
function big(v) {
  return typeof v === 'bigint' ? v : BigInt(Math.trunc(v));
}

/**
 * Media position in µs at server time `tUs` (SPEC 4.1), clamped to 0..2^64−1.
 * @param {Timeline} t
 * @param {U64} tUs
 * @returns {U64}
 */
export function positionUsAt(t, tUs) {
  const base = big(t.positionMs) * 1000n;
  if (t.paused) return out(clampU64(base));
  const dt = big(tUs) - big(t.anchorUs);
  return out(clampU64(base + (dt * BigInt(t.rateMilli)) / 1000n));
}

/**
 * `n / d` rounded to the nearest integer, halves away from zero (`d > 0`).
 * @param {bigint} n
 * @param {bigint} d
 */
function divRound(n, d) {
  return n >= 0n ? (n + d / 2n) / d : (n - d / 2n) / d;
}

/**
 * The first anchor at or after `tUs` whose position is a whole millisecond
 * (SPEC 4.2).
 * @param {Timeline} t
 * @param {U64} tUs
 * @returns {{positionMs: U64, anchorUs: U64}}
 */
export function wholeMsPoint(t, tUs) {
  if (t.paused || t.rateMilli === 0) return { positionMs: t.positionMs, anchorUs: tUs };
  const rate = BigInt(t.rateMilli);
  const p0 = big(t.positionMs) * 1_000_000n;
  const dt = big(tUs) - big(t.anchorUs);
  let posNs = p0 + dt * rate;
  if (posNs < 0n) posNs = 0n;
  const posMs = (posNs + 999_999n) / 1_000_000n;
  const anchor = big(t.anchorUs) + divRound(posMs * 1_000_000n - p0, rate);
  return { positionMs: out(posMs > U64_MAX ? U64_MAX : posMs), anchorUs: out(clampU64(anchor)) };
}

/**
 * The same timeline re-anchored at the first whole millisecond at or after `tUs`.
 * @param {Timeline} t
 * @param {U64} tUs
 * @returns {Timeline}
 */
export function reanchored(t, tUs) {
  const { positionMs, anchorUs } = wholeMsPoint(t, tUs);
  return { epoch: t.epoch, positionMs, anchorUs, rateMilli: t.rateMilli, paused: t.paused };
}

/**
 * Recovers a full server time from its low 32 bits and an estimate of the
 * server's current time within ±35 minutes of it (SPEC 4.4).
 * @param {number} anchorLo
 * @param {U64} serverNowEstimateUs
 * @returns {U64}
 */
export function unwrapAnchor(anchorLo, serverNowEstimateUs) {
  const e = big(serverNowEstimateUs);
  let d = (BigInt(anchorLo) - (e % TWO_32) + TWO_32) % TWO_32;
  if (d >= TWO_31) d -= TWO_32;
  return out(clampU64(e + d));
}

/**
 * The tick a server sends for `timeline` at server time `nowUs` (SPEC 4.4).
 * @param {Timeline} timeline
 * @param {U64} nowUs
 * @param {number} viewers
 * @returns {TickMsg}
 */
export function tickNew(timeline, nowUs, viewers) {
  const r = reanchored(timeline, nowUs);
  const pos = big(r.positionMs);
  return {
    type: 'tick',
    epoch: r.epoch,
    positionMs: Number(pos > 0xffffffffn ? 0xffffffffn : pos),
    anchorLoUs: Number(big(r.anchorUs) % TWO_32),
    rateMilli: r.rateMilli,
    paused: r.paused,
    viewers,
  };
}

/**
 * The timeline a tick describes, its anchor recovered with an estimate of the
 * server's current time.
 * @param {Pick<TickMsg, 'epoch' | 'positionMs' | 'anchorLoUs' | 'rateMilli' | 'paused'>} tick
 * @param {U64} serverNowEstimateUs
 * @returns {Timeline}
 */
export function tickTimeline(tick, serverNowEstimateUs) {
  return {
    epoch: tick.epoch,
    positionMs: tick.positionMs,
    anchorUs: unwrapAnchor(tick.anchorLoUs, serverNowEstimateUs),
    rateMilli: tick.rateMilli,
    paused: tick.paused,
  };
}

/**
 * Media position in seconds (a float) at server time `tUs`: the exact
 * integer position converted once, for the drift controller.
 * @param {Timeline} t
 * @param {U64} tUs
 */
export function positionSecondsAt(t, tUs) {
  return Number(positionUsAt(t, tUs)) / 1e6;
}

/**
 * Serial-number comparison of two u32 epochs (RFC 1982 style), so that the
 * order survives the server's wrapping increment: > 0 if `a` is newer.
 * @param {number} a
 * @param {number} b
 */
export function epochCmp(a, b) {
  return ((a - b) | 0);
}
