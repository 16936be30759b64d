// What the room plays (SPEC 6.7): its current media item and its playlist,
// as a session sees them (`s.media`, `s.queue`, `s.setMedia()`).
//
// A switch reaches every member as a 'media' event; the session then loads
// the item into the attached element (the `resolveMedia(mediaId, item)` hook
// gives its source, else the item's `url`) while the room holds at 0, and the
// room starts it for everyone on the same frame.

import { LIMITS } from './constants.js';

/** @typedef {import('./codec.js').MediaItem} MediaItem */
/** @typedef {import('./codec.js').MediaOp} MediaOp */
/** @typedef {import('./types.js').CommandResult} CommandResult */

/**
 * A media item as pages give it: `mediaId` (1–128 bytes), and optionally
 * `url` (an http(s) URL or a path), `title`, `durationMs` (auto-advance needs it).
 * @typedef {{mediaId: string, url?: string | null, title?: string | null, durationMs?: number | null}} MediaInput
 */

/**
 * The room's media now (the 'media' event and `s.media`).
 * @typedef {Object} MediaEvent
 * @property {MediaItem | null} item the item (null: none)
 * @property {number | null} index its place in the playlist
 * @property {number} epoch the timeline change of the switch
 * @property {number} by the member who switched (0: the room, auto-advance)
 */

/**
 * The room's playlist (the 'queue' event).
 * @typedef {Object} QueueEvent
 * @property {MediaItem[]} items
 * @property {number | null} current the index of the item playing
 * @property {boolean} autoAdvance
 * @property {number} by
 */

const utf8 = new TextEncoder();
const bytes = (/** @type {string} */ s) => utf8.encode(s).length;

/**
 * The item as the protocol carries it; a TypeError for one the server would refuse.
 * @param {MediaInput} input
 * @returns {MediaItem}
 */
export function mediaItem(input) {
  if (typeof input !== 'object' || input === null) throw new TypeError('a media item is an object {mediaId, url?, title?, durationMs?}');
  const { mediaId, url = null, title = null, durationMs = null } = input;
  // eslint-disable-next-line no-control-regex
  const control = /[\u0000-\u001f\u007f-\u009f]/;
  if (typeof mediaId !== 'string' || mediaId.length === 0 || bytes(mediaId) > LIMITS.MAX_MEDIA_ID || control.test(mediaId)) {
    throw new TypeError(`mediaId must be 1-${LIMITS.MAX_MEDIA_ID} bytes of text`);
  }
  if (url !== null && (typeof url !== 'string' || bytes(url) > LIMITS.MAX_MEDIA_URL || !/^(https?:\/\/|\/)\S*$/.test(url))) {
    throw new TypeError(`url must be an http(s) URL or a path of at most ${LIMITS.MAX_MEDIA_URL} bytes`);
  }
  if (title !== null && (typeof title !== 'string' || bytes(title) > LIMITS.MAX_MEDIA_TITLE || control.test(title))) {
    throw new TypeError(`title must be at most ${LIMITS.MAX_MEDIA_TITLE} bytes of text`);
  }
  if (durationMs !== null && (!Number.isSafeInteger(durationMs) || durationMs <= 0 || durationMs > 0xffffffff)) {
    throw new TypeError('durationMs must be a whole number of ms, 1 to 2^32 - 1');
  }
  return { mediaId, url, title, durationMs };
}

/**
 * @typedef {Object} QueueHost what a session gives its playlist
 * @property {(op: MediaOp) => Promise<CommandResult | null>} command sends a media command
 */

/** The room's playlist (`s.queue`): read it, and edit it (members who may change the timeline). */
export class MediaQueue {
  #host;
  /** @type {MediaItem[]} */
  #items = [];
  /** @type {number | null} */
  #current = null;
  #autoAdvance = true;

  /** @param {QueueHost} host */
  constructor(host) {
    this.#host = host;
  }

  /** The playlist's items, in order. */
  get items() {
    return /** @type {readonly MediaItem[]} */ (this.#items.slice());
  }

  /** The index of the item playing, if it is in the playlist. */
  get current() {
    return this.#current;
  }

  /** Whether the room moves to the next item at the end of one. */
  get autoAdvance() {
    return this.#autoAdvance;
  }

  /** Appends an item. @param {MediaInput} item */
  add(item) {
    return this.#host.command({ kind: 'add', item: mediaItem(item) });
  }

  /** Takes an item out (not the one playing). @param {string} mediaId */
  remove(mediaId) {
    return this.#host.command({ kind: 'remove', mediaId: String(mediaId) });
  }

  /** Moves an item to `index`. @param {string} mediaId @param {number} index */
  move(mediaId, index) {
    if (!Number.isInteger(index) || index < 0) throw new RangeError(`index must be a whole number >= 0, got ${index}`);
    return this.#host.command({ kind: 'move', mediaId: String(mediaId), index });
  }

  /** Switches the room to the next item. */
  next() {
    return this.#host.command({ kind: 'next' });
  }

  /** Switches the room to the previous item. */
  previous() {
    return this.#host.command({ kind: 'previous' });
  }

  /** Turns auto-advance on or off. @param {boolean} on */
  setAutoAdvance(on) {
    return this.#host.command({ kind: 'autoAdvance', on: Boolean(on) });
  }

  /** @param {import('./codec.js').QueueChangedMsg} m @returns {QueueEvent} */
  onChanged(m) {
    this.#items = m.items;
    this.#current = m.current;
    this.#autoAdvance = m.autoAdvance;
    return { items: m.items.slice(), current: m.current, autoAdvance: m.autoAdvance, by: m.by };
  }
}
