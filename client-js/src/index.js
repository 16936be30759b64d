// lockstep-client: keep a <video> in lockstep with a Lockstep room.
//
//   import { connect } from 'lockstep-client';
//   const s = await connect({ url: 'http://127.0.0.1:8080', eventId: 'evt-1' });
//   s.attach(document.querySelector('video'));
//
// Plain ES modules, no dependencies: works in a browser without a bundler
// (import src/index.js or dist/lockstep.js directly). Live streams:
// `s.attach(video, { live: adapter })`, adapters in lockstep-client/hls.

export { connect, Session, LockstepError } from './session.js';
export {
  PROTOCOL_VERSION,
  LIMITS,
  CAPS,
  CODES,
  ERROR_CODES,
  LockstepDecodeError,
  decodeServer,
  decodeClient,
  encodeServer,
  encodeClient,
  tryDecodeServer,
  tryDecodeClient,
  encodeFrame,
  FrameDecoder,
  codeName,
  codeCloses,
  codeFatal,
} from './codec.js';
export { positionUsAt, wholeMsPoint, reanchored, unwrapAnchor, tickNew, tickTimeline } from './timeline.js';
export { TimelineTracker } from './tracker.js';
export { chatTextProblem } from './chat.js';
export { mediaItem } from './media.js';
export { ClockSync } from './clock.js';
export { DriftController, DRIFT_DEFAULTS, driftOptions } from './drift.js';
export { Backoff, race, TransportMemory } from './connect.js';

/** @typedef {import('./types.js').ConnectOptions} ConnectOptions */
/** @typedef {import('./types.js').TimelineEvent} TimelineEvent */
/** @typedef {import('./types.js').CommandResult} CommandResult */
/** @typedef {import('./types.js').SessionStats} SessionStats */
/** @typedef {import('./types.js').SessionEvents} SessionEvents */
/** @typedef {import('./types.js').Status} Status */
/** @typedef {import('./types.js').TransportName} TransportName */
/** @typedef {import('./codec.js').AckOutcome} AckOutcome */
/** @typedef {import('./types.js').LiveAdapter} LiveAdapter */
/** @typedef {import('./types.js').LiveState} LiveState */
/** @typedef {import('./types.js').AttachOptions} AttachOptions */
