// The room as this member sees it: its own member id and role, the room's
// control policy and viewer count, from the Welcome and the messages that
// change them; and the presence events (members joined, left, role changes).

/** @typedef {import('./codec.js').Role} Role */
/** @typedef {import('./codec.js').ControlPolicy} ControlPolicy */
/** @typedef {import('./codec.js').ServerMsg} ServerMsg */
/** @typedef {import('./codec.js').WelcomeMsg} WelcomeMsg */

export class RoomState {
  #emit;
  memberId = 0;
  /** @type {Role | null} */
  role = null;
  /** @type {ControlPolicy | null} */
  policy = null;
  viewers = 0;

  /** @param {(event: 'viewers' | 'role' | 'policy' | 'member', arg: unknown) => void} emit */
  constructor(emit) {
    this.#emit = emit;
  }

  /**
   * A Welcome: the state of a new connection, taken silently (the session
   * emits once it announced the connection).
   * @param {WelcomeMsg} m
   * @returns {boolean} whether the role changed
   */
  welcome(m) {
    const roleChanged = this.role !== m.role;
    this.memberId = m.memberId;
    this.role = m.role;
    this.policy = m.policy;
    this.viewers = m.viewers;
    return roleChanged;
  }

  /**
   * The viewer count (a tick's or a ViewerCount's): emitted when it changed, or always with `force`.
   * @param {number} n
   * @param {boolean} [force]
   */
  setViewers(n, force = false) {
    if (n === this.viewers && !force) return;
    this.viewers = n;
    this.#emit('viewers', n);
  }

  /**
   * The messages about the room's members and policy.
   * @param {ServerMsg} m
   * @returns {boolean} whether `m` was one of them
   */
  onMessage(m) {
    switch (m.type) {
      case 'viewerCount':
        this.setViewers(m.count);
        return true;
      case 'memberJoined':
      case 'memberLeft':
        this.#emit('member', m);
        return true;
      case 'roleChanged':
        if (m.memberId === this.memberId) {
          this.role = m.role;
          this.#emit('role', m.role);
        }
        this.#emit('member', m);
        return true;
      case 'policyChanged':
        this.policy = m.policy;
        this.#emit('policy', m.policy);
        return true;
      default:
        return false;
    }
  }
}
