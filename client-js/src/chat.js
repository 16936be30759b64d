// The room's chat as a session sees it (SPEC 6.6): `s.chat`.
//
// Messages arrive in the room's order (ids grow). A message this member sends
// is answered by the room's own copy carrying its request id (its promise
// resolves with that message), or by an Error with the request id (the promise
// rejects). After each Welcome the server replays the room's newest messages
// (`history`); the ones already held (a reconnection) are not announced again.
// Text is text: render it with `textContent`, never as HTML.

import { LockstepError } from './errors.js';
import { LIMITS } from './constants.js';

/** @typedef {import('./codec.js').ChatMessageMsg} ChatMessageMsg */

/**
 * A chat message as the page gets it.
 * @typedef {Object} ChatEntry
 * @property {number} id its id in the room (grows with the room's order)
 * @property {number} atMs when the room took it, Unix ms (server clock)
 * @property {number} memberId the sender's member id (it may have left since)
 * @property {string} name the sender's display name
 * @property {import('./codec.js').Role} role the sender's role then
 * @property {string} text plain text: render it with textContent, never as HTML
 * @property {boolean} mine sent by this session
 * @property {boolean} history replayed after a join (sent before it)
 */

/** Chat request ids: the upper half of the id space (commands count from 1). */
const FIRST_ID = 0x80000000;
const utf8 = new TextEncoder();

/**
 * Why `text` cannot be a chat message, or null (SPEC 6.6; the server may
 * allow fewer bytes than the protocol's 1000, `--chat-max-bytes`).
 * @param {unknown} text
 * @returns {string | null}
 */
export function chatTextProblem(text) {
  if (typeof text !== 'string') return 'a chat message is a string';
  if (text.trim() === '') return 'a chat message is not empty or only white space';
  if (utf8.encode(text).length > LIMITS.MAX_CHAT_TEXT) return `a chat message is at most ${LIMITS.MAX_CHAT_TEXT} bytes of UTF-8`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/.test(text)) {
    return 'a chat message has no control character but line feed, and no bidirectional override';
  }
  return null;
}

/**
 * @typedef {Object} ChatHost what a session gives its chat
 * @property {boolean} enabled whether the session takes chat (the `chat` option)
 * @property {() => boolean} joined whether a connection has joined
 * @property {(msg: import('./codec.js').ChatMsg) => void} send
 * @property {() => number | null} memberId this member's id on the current connection
 * @property {(action: import('./codec.js').Action) => Promise<import('./types.js').CommandResult | null>} command
 * @property {(event: 'chat' | 'chatDeleted' | 'chatMuted', arg: any) => void} emit
 * @property {number} [timeoutMs] a message unanswered this long rejects (5000)
 * @property {number} [keep] messages held (200)
 */

export class Chat {
  /** @type {ChatHost} */
  #host;
  /** @type {ChatEntry[]} oldest first */
  #messages = [];
  #muted = false;
  #next = FIRST_ID;
  /** @type {Map<number, {resolve: (m: ChatEntry) => void, reject: (e: Error) => void, timer: any}>} */
  #pending = new Map();

  /** @param {ChatHost} host */
  constructor(host) {
    this.#host = host;
  }

  /** The room's messages this session holds (the newest, at most 200), oldest first. */
  get messages() {
    return /** @type {readonly ChatEntry[]} */ (this.#messages.slice());
  }

  /** Whether this member is muted in the room's chat (its messages are refused). */
  get muted() {
    return this.#muted;
  }

  /**
   * Sends a chat message. Resolves with the message as the room took it (its
   * id and time), rejects with a LockstepError: `invalid_argument` (empty,
   * too long for the server, a control character), `rate_limited` (more than
   * 1 a second, bursts of 5; or the room is busy), `forbidden` (muted, or
   * chat off), `not_connected`, `timeout`. A string that cannot be a message
   * at all throws a TypeError; without the `chat` option it rejects
   * (`chat_disabled`): the session would not hear the answer.
   * @param {string} text
   * @returns {Promise<ChatEntry>}
   */
  send(text) {
    const problem = chatTextProblem(text);
    if (problem !== null) throw new TypeError(`chat.send(text): ${problem}`);
    if (!this.#host.enabled) return rejected(new LockstepError(0, 'connect with { chat: true } to chat', { kind: 'chat_disabled' }));
    if (!this.#host.joined()) return rejected(new LockstepError(0, 'not connected to the room', { kind: 'not_connected' }));
    const requestId = this.#next;
    this.#next = this.#next >= 0xffffffff ? FIRST_ID : this.#next + 1;
    const promise = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(requestId);
        reject(new LockstepError(0, 'the chat message was not answered in time', { kind: 'timeout', requestId }));
      }, this.#host.timeoutMs ?? 5000);
      this.#pending.set(requestId, { resolve, reject, timer });
    });
    this.#host.send({ type: 'chat', requestId, text });
    return /** @type {Promise<ChatEntry>} */ (promise);
  }

  /**
   * Deletes a message (host and co-hosts; others get `forbidden`): every
   * member gets a 'chatDeleted' event.
   * @param {number} id
   */
  delete(id) {
    if (!Number.isSafeInteger(id) || id <= 0) throw new RangeError(`chat.delete(id): ${id} is not a message id`);
    return this.#host.command({ kind: 'deleteChat', id });
  }

  /**
   * Mutes (or unmutes) a member's chat, for its user in this room, across
   * reconnections (host and co-hosts; a co-host mutes viewers only).
   * @param {number} memberId
   * @param {boolean} [muted] true
   */
  mute(memberId, muted = true) {
    if (!Number.isInteger(memberId) || memberId <= 0) throw new RangeError(`chat.mute(memberId): ${memberId} is not a member id`);
    return this.#host.command({ kind: 'muteChat', memberId, muted: Boolean(muted) });
  }

  /** Unmutes a member's chat (the same as `mute(memberId, false)`). @param {number} memberId */
  unmute(memberId) {
    return this.mute(memberId, false);
  }

  /**
   * A chat message from the server.
   * @param {ChatMessageMsg} m
   */
  onMessage(m) {
    const id = Number(m.id);
    const pending = m.history ? undefined : this.#pending.get(m.requestId);
    const mine = pending !== undefined || m.memberId === this.#host.memberId();
    /** @type {ChatEntry} */
    const entry = { id, atMs: Number(m.atMs), memberId: m.memberId, name: m.name, role: m.role, text: m.text, mine, history: m.history };
    const last = this.#messages.at(-1);
    // Replayed after a reconnection: held already (or deleted since).
    if (m.history && last !== undefined && id <= last.id) return;
    if (pending !== undefined) {
      clearTimeout(pending.timer);
      this.#pending.delete(m.requestId);
    }
    this.#messages.push(entry);
    const keep = this.#host.keep ?? 200;
    if (this.#messages.length > keep) this.#messages.splice(0, this.#messages.length - keep);
    this.#host.emit('chat', entry);
    pending?.resolve(entry);
  }

  /** @param {{id: number | bigint, by: number}} m */
  onDeleted(m) {
    const id = Number(m.id);
    this.#messages = this.#messages.filter((e) => e.id !== id);
    this.#host.emit('chatDeleted', { id, by: m.by });
  }

  /** @param {{muted: boolean, by: number}} m */
  onMuted(m) {
    if (this.#muted === m.muted) return;
    this.#muted = m.muted;
    this.#host.emit('chatMuted', { muted: m.muted, by: m.by });
  }

  /** A new connection joined: its history follows; the mute comes again if it holds. */
  onWelcome() {
    this.#muted = false;
  }

  /**
   * An Error answering a request id: `true` if it was a chat message's.
   * @param {number} requestId
   * @param {LockstepError} e
   */
  onError(requestId, e) {
    const p = this.#pending.get(requestId);
    if (p === undefined) return false;
    clearTimeout(p.timer);
    this.#pending.delete(requestId);
    p.reject(e);
    return true;
  }

  /** The connection is gone: messages not answered yet are not known to have arrived. */
  onDisconnect() {
    for (const [id, p] of this.#pending) {
      clearTimeout(p.timer);
      p.reject(new LockstepError(0, 'the connection closed before the chat message was answered', { kind: 'not_connected', requestId: id }));
    }
    this.#pending.clear();
  }
}

/** @param {Error} e */
function rejected(e) {
  const p = Promise.reject(e);
  p.catch(() => {});
  return /** @type {Promise<never>} */ (p);
}
