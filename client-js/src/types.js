// The public types of a session (JSDoc typedefs only; no code).

/** @typedef {import('./codec.js').Role} Role */
/** @typedef {import('./codec.js').ControlPolicy} ControlPolicy */
/** @typedef {import('./codec.js').Timeline} Timeline */
/** @typedef {import('./codec.js').ChangeReason} ChangeReason */
/** @typedef {import('./codec.js').AckOutcome} AckOutcome */

/** @typedef {'webtransport' | 'websocket'} TransportName */
/** @typedef {'connecting' | 'open' | 'reconnecting' | 'closed'} Status */

/**
 * A certificate hash as `GET /api/certificate` gives it (the value in hex).
 * @typedef {{algorithm: string, value: string | ArrayBuffer | ArrayBufferView}} CertificateHash
 */

/**
 * @typedef {Object} ConnectOptions
 * @property {string} url HTTP base of the server, e.g. `http://127.0.0.1:8080`
 * @property {string} eventId the event (room) to join: 1–128 printable ASCII bytes
 * @property {string} [token] access token, sent in Hello and as `access_token` in the URL of either transport
 * @property {() => Promise<string> | string} [getToken] returns a fresh access token: called before each connection
 *   attempt (the first one uses `token` when given) and when the server says the token expired (4013), which then
 *   reconnects at once instead of ending the session; if it throws or returns no token, the session ends with an
 *   'error' of kind 'token'
 * @property {string} [deviceId] stable id of this device (≤ 128 bytes); default: one generated and kept in localStorage
 * @property {'auto' | 'webtransport' | 'websocket'} [transport] default 'auto'
 * @property {string} [webtransportUrl] WebTransport base (`https://host:port`) or full endpoint URL (`…/api/live-stream/{eventId}`,
 *   as the session API's `transports.webtransport.url` gives it); default: from `GET /api/certificate`
 *   (`webtransport` field), else `https://{host}:{webtransportPort}`
 * @property {number} [webtransportPort] default 4433
 * @property {CertificateHash[]} [certificateHashes] skip `GET /api/certificate` and pass these as
 *   `serverCertificateHashes` (only for certificates browsers accept by hash: ECDSA P-256, valid at most
 *   14 days; `[]` for none). Default: the server's hashes when its `hashesApply` says they apply, else none
 *   (a CA's certificate, validated normally)
 * @property {number} [webtransportHeadStartMs] WebSocket starts this long after WebTransport (200)
 * @property {number} [webtransportMaxFailures] consecutive WebTransport failures before falling back to WebSocket (2)
 * @property {number} [webtransportRetryMs] after the fallback, try WebTransport again this much later (300000)
 * @property {number} [connectTimeoutMs] one connection attempt, open to Welcome (10000)
 * @property {number} [openTimeoutMs] connect() rejects if not joined within this (20000)
 * @property {boolean} [presence] ask for member joined/left events (false)
 * @property {boolean} [reactions] take the room's reactions ('reactions' events, SPEC 6.5); sending them needs no option (false)
 * @property {boolean} [mediaItems] take the room's media item and playlist ('media' and 'queue' events, `s.media`,
 *   `s.queue`, SPEC 6.7); on with `resolveMedia` (false)
 * @property {(mediaId: string, item: import('./codec.js').MediaItem) => string | undefined | Promise<string | undefined>} [resolveMedia]
 *   the source of a media item the room switches to: the session sets it as the attached element's `src` (return
 *   undefined to load it yourself, e.g. with hls.js); without it the item's `url` is used
 * @property {boolean} [chat] take the room's chat ('chat', 'chatDeleted', 'chatMuted' events and `s.chat.send()`,
 *   SPEC 6.6); the room's newest messages come after each join (false)
 * @property {{baseMs?: number, maxMs?: number, random?: () => number}} [backoff] reconnect backoff (250 ms → 10 s, full jitter)
 * @property {import('./drift.js').DriftOptions} [drift] drift controller bands and gains
 * @property {import('./clock.js').ClockOptions} [clock] clock sync options
 * @property {number} [controlIntervalMs] drift control period (250)
 * @property {number} [bufferingReportDelayMs] a stall is reported once it lasts this long (250): a quick seek is not a stall
 * @property {number} [commandTimeoutMs] a command's promise resolves null after this without an answer (5000): a last resort for servers that never answer
 * @property {typeof fetch} [fetch] fetch implementation (for /api/certificate)
 * @property {typeof WebSocket} [WebSocket] WebSocket implementation
 * @property {any} [WebTransport] WebTransport implementation (default globalThis.WebTransport)
 * @property {import('./connect.js').TransportMemory} [memory] where the winning transport is remembered
 */

/**
 * What 'timeline' listeners get: the room's timeline as announced (on join,
 * on every accepted change, possibly before it takes effect, and when a tick
 * reveals a missed change).
 * @typedef {Object} TimelineEvent
 * @property {number} epoch
 * @property {number} positionMs position at the anchor, ms
 * @property {number} anchorUs server time of the anchor, µs
 * @property {number} rate playback rate (1 = normal)
 * @property {number} rateMilli
 * @property {boolean} paused
 * @property {number} effectiveAtUs server time from which it applies
 * @property {boolean} pending whether it is scheduled for later
 * @property {ChangeReason | 'welcome' | 'tick'} reason
 * @property {number} by member id that caused it (0 = the server)
 * @property {Timeline} timeline the exact wire timeline
 */

/**
 * What a command's promise resolves with, once the server acknowledged it:
 * the timeline of the epoch its Ack names (for a change it made, the same
 * event 'timeline' listeners got; when nothing changed, and for role and
 * policy commands, the timeline in effect), plus what became of it.
 * @typedef {TimelineEvent & {outcome: AckOutcome, requestId: number}} CommandResult
 */

/**
 * Maps a media element's own time to program time and back, and reads the
 * live edge, for the streams of a live room (`attach(video, { live: adapter })`;
 * `hlsJsAdapter(hls)` and `nativeHlsAdapter(video)` in `lockstep-client/hls`
 * are two). Every function returns null while it does not know yet (e.g.
 * before the playlist loaded): the element is then not driven.
 * @typedef {Object} LiveAdapter
 * @property {(mediaSeconds: number) => number | null} toProgramTime the program time (Unix ms) of this element time (seconds, as `currentTime`)
 * @property {(programMs: number) => number | null} toMediaTime the element time (seconds) of this program time (Unix ms)
 * @property {() => number | null} liveEdge program time (Unix ms) of the newest frame the element can play, from the playlist it holds
 */

/**
 * The options of `attach()`.
 * @typedef {Object} AttachOptions
 * @property {LiveAdapter} [live] the element's live adapter: in a live room the element follows the room's program time through it
 */

/**
 * A live room's state (`s.live`, the 'live' event): positions are program
 * time relative to `originMs` (`programTime = originMs + position`).
 * @typedef {Object} LiveState
 * @property {'live'} clock the room's clock kind (a media room has no live state: `s.live` is null)
 * @property {number} originMs program time (Unix ms) of position 0
 * @property {number} latencyMs how far the live point is behind the server's clock, ms
 * @property {boolean} autoLatency whether the server picks the latency from the viewers' live reports
 * @property {boolean} atLive whether the room follows the live point (after the latest change, even one still pending)
 */

/**
 * @typedef {Object} SessionStats
 * @property {number} offsetMs estimated server − client clock offset, ms
 * @property {number} rttMs smallest recent round-trip time, ms (NaN before the first pong)
 * @property {number} driftMs element − room position, ms (NaN when not attached)
 * @property {number} rate the element's playbackRate (the room rate when not attached)
 * @property {boolean} buffering whether the element is stalled now (the server hears of it after `bufferingReportDelayMs`)
 * @property {{seeks: number, rateChanges: number, holds: number, relocks: number}} corrections
 * @property {number} seekLatencyMs learned seek latency
 * @property {number} startLatencyMs learned start-up latency of play() (0 until measured); scheduled plays start that much early (measured before the first play by a start-up probe, see DriftOptions.startProbe)
 * @property {TransportName | null} transport
 * @property {Status} status
 * @property {number} reconnects
 */

/**
 * The events of a session and what their listeners get.
 * @typedef {Object} SessionEvents
 * @property {TimelineEvent} timeline the room's timeline was announced or changed
 * @property {number} viewers the room's viewer count
 * @property {TransportName} transport the transport of a new connection
 * @property {Status} status 'connecting' | 'open' | 'reconnecting' | 'closed'
 * @property {Error} error a LockstepError or LockstepDecodeError; never thrown into the page
 * @property {Role} role this member's role (on join and when it changes)
 * @property {ControlPolicy} policy the room's control policy changed
 * @property {import('./codec.js').MemberJoinedMsg | import('./codec.js').MemberLeftMsg | import('./codec.js').RoleChangedMsg} member presence events
 * @property {LiveState | null} live the room's live state changed (null: the room's clock is media time)
 * @property {import('./codec.js').ReactionCount[]} reactions the room's reactions of one window (about 250 ms), most
 *   frequent first (with the `reactions` option)
 * @property {import('./media.js').MediaEvent} media the room switched to another item (after each join too, when
 *   it has one; with the `mediaItems` option or `resolveMedia`)
 * @property {import('./media.js').QueueEvent} queue the room's playlist changed (after each join too, when not empty)
 * @property {import('./chat.js').ChatEntry} chat a chat message, in the room's order (the room's history first after each
 *   join, `history: true`; with the `chat` option)
 * @property {{id: number, by: number}} chatDeleted a host or co-host deleted the chat message `id`
 * @property {{muted: boolean, by: number}} chatMuted this member was muted (or unmuted) in the room's chat
 * @property {DriveAction} drive the session is about to change the attached element (drift control, applying the
 *   room's state): emitted synchronously right before the write, so that a page or a player adapter can tell the
 *   session's own changes from the user's (see `lockstep-client/controls`)
 */

/**
 * A change the session makes to the attached element (the 'drive' event):
 * `el.playbackRate = rate`, `el.currentTime = position` (seconds, element
 * time), `el.pause()` or `el.play()`.
 * @typedef {{type: 'setRate', rate: number} | {type: 'seek', position: number} | {type: 'pause'} | {type: 'play'}} DriveAction
 */

export {};
