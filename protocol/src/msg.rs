//! Every message of the protocol.
//!
//! The enum variant order is the wire tag: append new variants at the end and
//! never reorder (see `SPEC.md`).

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::timeline::{Timeline, unwrap_anchor};

/// A member's role in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Controls playback and roles.
    Host,
    /// Controls playback.
    CoHost,
    /// Watches; controls playback only in `everyone` rooms.
    Viewer,
}

/// Who may change a room's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlPolicy {
    /// Host and co-hosts only (the default).
    HostOnly,
    /// Every member.
    Everyone,
}

/// Why a timeline changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeReason {
    /// A seek command.
    Seek,
    /// A pause command.
    Pause,
    /// A play command.
    Play,
    /// A set-rate command.
    Rate,
    /// The room paused to wait for a buffering member.
    BufferingWait,
    /// The room resumed after a buffering wait.
    Resume,
}

/// What a room's positions measure (see [`LiveState`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClockKind {
    /// Media time: positions are milliseconds into the media (the default).
    Media,
    /// Program time: `origin_ms + position_ms` is the Unix time, in ms, at
    /// which the frame was captured (HLS `EXT-X-PROGRAM-DATE-TIME`).
    Live,
}

// ---------------------------------------------------------------- server → client

/// Server → client messages.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerMsg {
    /// Answer to `Hello`: the member is in the room.
    Welcome(Welcome),
    /// Periodic full snapshot of the timeline (datagram on WebTransport).
    Tick(Tick),
    /// The timeline changed, or will at `effective_at_us`.
    TimelineChanged(TimelineChanged),
    /// The room's viewer count (coalesced).
    ViewerCount(ViewerCount),
    /// Answer to `Ping`, for clock-offset estimation.
    Pong(Pong),
    /// Something went wrong; see [`crate::ErrorCode`].
    Error(ErrorMsg),
    /// A member joined (only in rooms that show members).
    MemberJoined(MemberJoined),
    /// A member left (only in rooms that show members).
    MemberLeft(MemberLeft),
    /// A member's role changed (always sent to the member itself).
    RoleChanged(RoleChanged),
    /// The room's control policy changed.
    PolicyChanged(PolicyChanged),
    /// Answer to a `Command` with a non-zero `request_id` that did not fail
    /// (a command that fails is answered by an `Error` with its `request_id`).
    Ack(Ack),
    /// The room's clock kind and live settings; only to clients with the
    /// `LIVE` capability, after `Welcome` in a live room and whenever a field
    /// changes.
    LiveState(LiveState),
    /// Reactions of the room's members in the last window (about 250 ms),
    /// counted per emoji; only to clients with the `REACTIONS` capability.
    Reactions(Reactions),
    /// A chat message, in the room's order; only to clients with the `CHAT`
    /// capability (SPEC §6.6).
    ChatMessage(ChatMessage),
    /// A host or co-host deleted a chat message (`CHAT` clients only).
    ChatDeleted(ChatDeleted),
    /// This member was muted (or unmuted) in the room's chat.
    ChatMuted(ChatMuted),
    /// The room's current media item changed (`MEDIA` clients only, SPEC §6.7).
    MediaChanged(MediaChanged),
    /// The room's playlist changed (`MEDIA` clients only, SPEC §6.7).
    QueueChanged(QueueChanged),
}

/// A media item (SPEC §6.7): what a room plays. The page resolves
/// `media_id` to a source (the client's `resolveMedia`), or plays `url`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaItem {
    /// The platform's id of the item (1 to [`crate::limits::MAX_MEDIA_ID`] bytes).
    pub media_id: String,
    /// Where to play it from (at most [`crate::limits::MAX_MEDIA_URL`] bytes).
    pub url: Option<String>,
    /// A title to show (at most [`crate::limits::MAX_MEDIA_TITLE`] bytes).
    pub title: Option<String>,
    /// Its duration, ms, if known (auto-advance needs it).
    pub duration_ms: Option<u64>,
}

/// The room switched to another item (server tag 16, `MEDIA` clients only;
/// after `Welcome` when the room has one). The switch is the timeline change
/// of `epoch` (paused at 0); the room then starts the item, scheduled like a
/// play, so every member starts it on the same frame.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaChanged {
    /// The item now (none: the room has no item).
    pub item: Option<MediaItem>,
    /// Its index in the playlist, if it is in it.
    pub index: Option<u32>,
    /// The timeline epoch of the switch.
    pub epoch: u32,
    /// The member who switched; 0 for the room itself (auto-advance).
    pub by: u32,
}

/// The room's playlist (server tag 17, `MEDIA` clients only; after `Welcome`
/// when it is not empty, and on every change).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueChanged {
    /// The items, in order (at most [`crate::limits::MAX_QUEUE`]).
    pub items: Vec<MediaItem>,
    /// The index of the item playing, if it is in the playlist.
    pub current: Option<u32>,
    /// Whether the room moves to the next item at the end of one.
    pub auto_advance: bool,
    /// The member who changed it; 0 for the room itself.
    pub by: u32,
}

/// A chat message (server tag 13, `CHAT` clients only, reliable): sent to
/// every `CHAT` member in the room's order, the sender included (its copy
/// carries the sender's `request_id`, so it is the answer to its `Chat`);
/// after `Welcome`, the room's latest messages come with `history` set.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    /// The message's id in its room: grows with the room's order, never reused.
    pub id: u64,
    /// When the room took it, Unix milliseconds (server clock).
    pub at_ms: u64,
    /// The sender's member id (it may have left since).
    pub member_id: u32,
    /// The sender's display name (at most 64 bytes).
    pub name: String,
    /// The sender's role when it sent it.
    pub role: Role,
    /// The text (see [`valid_chat_text`]): plain text, never markup.
    pub text: String,
    /// The sender's `Chat.request_id`; 0 in history.
    pub request_id: u32,
    /// Whether it is replayed history (sent before anything new after a join).
    pub history: bool,
}

/// A chat message was deleted (server tag 14, `CHAT` clients only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatDeleted {
    /// The message's id.
    pub id: u64,
    /// The member who deleted it.
    pub by: u32,
}

/// The member this goes to was muted or unmuted in the room's chat (server
/// tag 15): while muted, its `Chat` messages are refused with 4008.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMuted {
    /// Whether it is muted now.
    pub muted: bool,
    /// The member who decided it.
    pub by: u32,
}

/// The room's reactions of one window (server tag 12, `REACTIONS` clients
/// only, reliable): a 10,000-viewer room's reaction storm costs one message
/// per viewer per window, whatever the number of reactions.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reactions {
    /// How many of each emoji, most frequent first (at most
    /// [`crate::limits::MAX_REACTION_KINDS`] kinds).
    pub counts: Vec<ReactionCount>,
}

/// One emoji's count in a [`Reactions`] window.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReactionCount {
    /// The emoji (see [`valid_emoji`]).
    pub emoji: String,
    /// How many members sent it in the window.
    pub count: u32,
}

/// A room's clock kind and live settings (server tag 11, `LIVE` clients only).
///
/// In a live room a timeline position `p` is program time `origin_ms + p`
/// (Unix ms). The room is at the live point when `at_live`: then it plays at
/// 1× with `programTime = serverNow − latency_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveState {
    /// What positions measure.
    pub clock: ClockKind,
    /// Program time (Unix ms) of position 0; 0 in a media room.
    pub origin_ms: u64,
    /// The room's latency behind the live edge, ms (the target when `at_live`).
    pub latency_ms: u32,
    /// Whether the room picks its latency from its members' reports.
    pub auto_latency: bool,
    /// Whether the timeline follows the live point (false after a pause, seek
    /// or rate change, until `GoLive`).
    pub at_live: bool,
}

/// What became of a command (see [`Ack`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AckOutcome {
    /// The command took effect: a timeline command made the change of
    /// `epoch`; a role or policy command was applied.
    Applied,
    /// The command asked for what already holds (a `Play` while playing, a
    /// `Pause` while paused): nothing changed, `epoch` is the one in effect.
    Unchanged,
    /// The room's change budget was spent and a later command of the same
    /// kind replaced this one before it ran: `epoch` is the change that
    /// replaced it (or the one in effect, if that one changed nothing).
    Coalesced,
}

/// Answer to a `Command` that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ack {
    /// The command's `request_id` (never 0: commands without one get no `Ack`).
    pub request_id: u32,
    /// What became of it.
    pub outcome: AckOutcome,
    /// The timeline epoch its outcome belongs to.
    pub epoch: u32,
}

/// The room's control policy changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyChanged {
    /// The new policy.
    pub policy: ControlPolicy,
    /// The member who changed it.
    pub by: u32,
}

/// Answer to `Hello`.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Welcome {
    /// This connection's member id in the room (never 0).
    pub member_id: u32,
    /// This member's role.
    pub role: Role,
    /// The timeline in effect now.
    pub timeline: Timeline,
    /// The server's clock when it sent this, in microseconds.
    pub server_time_us: u64,
    /// Viewers in the room, this one included.
    pub viewers: u32,
    /// Who may change the timeline.
    pub policy: ControlPolicy,
    /// Limits the client must respect.
    pub limits: Limits,
}

/// Limits and intervals a server announces in [`Welcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Largest reliable frame the server accepts, in bytes.
    pub max_frame: u32,
    /// Largest datagram the server accepts, in bytes.
    pub max_datagram: u32,
    /// Sustained messages per second a connection may send.
    pub max_msgs_per_sec: u32,
    /// Interval between periodic ticks, in milliseconds.
    pub tick_interval_ms: u32,
    /// Interval at which the server wants `Report`s, in milliseconds.
    pub report_interval_ms: u32,
}

/// A full, idempotent snapshot of the room timeline plus the viewer count.
///
/// On the wire it is packed to at most 24 bytes (see `SPEC.md`): the anchor is
/// sent as its low 32 bits and `rate_milli` and `paused` share one varint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tick {
    /// Timeline epoch.
    pub epoch: u32,
    /// Media position at the anchor, in milliseconds.
    pub position_ms: u32,
    /// Low 32 bits of the anchor's server time in microseconds.
    pub anchor_lo_us: u32,
    /// Playback rate in thousandths.
    pub rate_milli: u16,
    /// Whether playback is paused.
    pub paused: bool,
    /// Viewers in the room.
    pub viewers: u32,
}

impl Tick {
    /// The tick for `timeline` sent at server time `now_us`: re-anchored at
    /// the first whole millisecond at or after `now_us`.
    pub fn new(timeline: &Timeline, now_us: u64, viewers: u32) -> Self {
        let t = timeline.reanchored(now_us);
        Tick {
            epoch: t.epoch,
            position_ms: t.position_ms.min(crate::limits::MAX_POSITION_MS) as u32,
            anchor_lo_us: t.anchor_us as u32,
            rate_milli: t.rate_milli,
            paused: t.paused,
            viewers,
        }
    }

    /// The timeline this tick describes, its anchor recovered with an estimate
    /// of the server's current time (see [`unwrap_anchor`]).
    pub fn timeline(&self, server_now_estimate_us: u64) -> Timeline {
        Timeline {
            epoch: self.epoch,
            position_ms: u64::from(self.position_ms),
            anchor_us: unwrap_anchor(self.anchor_lo_us, server_now_estimate_us),
            rate_milli: self.rate_milli,
            paused: self.paused,
        }
    }
}

impl Encode for Tick {
    fn encode<E: Encoder>(&self, e: &mut E) -> Result<(), EncodeError> {
        self.epoch.encode(e)?;
        self.position_ms.encode(e)?;
        self.anchor_lo_us.encode(e)?;
        let rate_paused = u16::from(self.paused) | (self.rate_milli.min(0x7fff) << 1);
        rate_paused.encode(e)?;
        self.viewers.encode(e)
    }
}

impl<C> Decode<C> for Tick {
    fn decode<D: Decoder<Context = C>>(d: &mut D) -> Result<Self, DecodeError> {
        let epoch = u32::decode(d)?;
        let position_ms = u32::decode(d)?;
        let anchor_lo_us = u32::decode(d)?;
        let rate_paused = u16::decode(d)?;
        let viewers = u32::decode(d)?;
        Ok(Tick {
            epoch,
            position_ms,
            anchor_lo_us,
            rate_milli: rate_paused >> 1,
            paused: rate_paused & 1 == 1,
            viewers,
        })
    }
}
bincode::impl_borrow_decode!(Tick);

/// The timeline changed, or will.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineChanged {
    /// The new timeline.
    pub timeline: Timeline,
    /// The server time at which it takes effect, in microseconds. Until then
    /// the previous timeline stays in effect.
    pub effective_at_us: u64,
    /// The member who caused it; 0 for the server itself.
    pub by: u32,
    /// Why.
    pub reason: ChangeReason,
}

/// The room's viewer count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewerCount {
    /// Viewers in the room.
    pub count: u32,
}

/// Answer to [`Ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pong {
    /// The ping's `client_time`, echoed unchanged.
    pub client_time: u64,
    /// Server time when the ping arrived, in microseconds.
    pub server_recv_us: u64,
    /// Server time when this pong left, in microseconds.
    pub server_send_us: u64,
}

/// An error report; see [`crate::ErrorCode`] for the codes.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorMsg {
    /// The numeric code.
    pub code: u16,
    /// A human-readable explanation (at most 256 bytes).
    pub message: String,
    /// The `request_id` of the command that failed, or 0.
    pub request_id: u32,
}

/// A member joined.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberJoined {
    /// The member's id.
    pub member_id: u32,
    /// The member's role.
    pub role: Role,
    /// A display name (at most 64 bytes).
    pub name: String,
}

/// A member left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberLeft {
    /// The member's id.
    pub member_id: u32,
}

/// A member's role changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleChanged {
    /// The member's id.
    pub member_id: u32,
    /// The new role.
    pub role: Role,
}

// ---------------------------------------------------------------- client → server

/// Client → server messages.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ClientMsg {
    /// Join a room; must be the first message.
    Hello(Hello),
    /// Clock-sync probe.
    Ping(Ping),
    /// Change the timeline (subject to the member's role).
    Command(Command),
    /// The client's own playback state; informs, never moves the timeline.
    Report(Report),
    /// A live client's live edge and buffer (auto latency); informs, never
    /// moves the timeline.
    LiveReport(LiveReport),
    /// A client with [`crate::caps::DATAGRAM_CHANGES`] missed a change: it
    /// asks for the newest change after `epoch` on the reliable channel.
    Nack(Nack),
    /// The client's measured drift from the room's timeline; informs the
    /// room's sync quality, never moves the timeline.
    SyncReport(SyncReport),
    /// The member stops following the room for a reason (SPEC §6.4).
    Suspend(Suspend),
    /// The member follows the room again (ends its suspension, SPEC §6.4).
    Resume,
    /// An emoji reaction (SPEC §6.5).
    React(React),
    /// A chat message (SPEC §6.6).
    Chat(Chat),
    /// What the room plays: switch, playlist (SPEC §6.7).
    Media(MediaCommand),
}

/// A media command (client tag 11, reliable only): answered like a `Command`
/// (`Ack` to `ACKS` clients, or an `Error` with the request id); allowed to
/// the members who may change the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaCommand {
    /// Echoed in the `Ack` or the `Error`; 0 for none.
    pub request_id: u32,
    /// What to do.
    pub op: MediaOp,
}

/// What a [`MediaCommand`] asks for.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum MediaOp {
    /// Switch to `item` now (its place in the playlist if it is in it, else
    /// inserted after the current one).
    Set {
        /// The item.
        item: MediaItem,
    },
    /// Append `item` to the playlist.
    Add {
        /// The item.
        item: MediaItem,
    },
    /// Take an item out of the playlist (not the one playing).
    #[serde(rename_all = "camelCase")]
    Remove {
        /// The item's id.
        media_id: String,
    },
    /// Move an item to `index` in the playlist.
    #[serde(rename_all = "camelCase")]
    Move {
        /// The item's id.
        media_id: String,
        /// Where it goes (clamped to the end).
        index: u32,
    },
    /// Switch to the next item of the playlist.
    Next,
    /// Switch to the previous item of the playlist.
    Previous,
    /// Turn auto-advance (the next item at the end of one) on or off.
    AutoAdvance {
        /// On or off.
        on: bool,
    },
}

impl MediaItem {
    /// Why the item is not valid, or `None`: an id of 1 to
    /// [`crate::limits::MAX_MEDIA_ID`] bytes without control characters; a
    /// URL, if any, of at most [`crate::limits::MAX_MEDIA_URL`] bytes,
    /// `https:`, `http:` or a path (`/…`); a title of at most
    /// [`crate::limits::MAX_MEDIA_TITLE`] bytes; a duration of at most
    /// [`crate::limits::MAX_POSITION_MS`].
    pub fn problem(&self) -> Option<&'static str> {
        use crate::limits::{MAX_MEDIA_ID, MAX_MEDIA_TITLE, MAX_MEDIA_URL, MAX_POSITION_MS};
        let text = |s: &str| !s.chars().any(char::is_control);
        if !(1..=MAX_MEDIA_ID).contains(&self.media_id.len()) || !text(&self.media_id) {
            return Some("mediaId is 1-128 bytes of text");
        }
        if let Some(url) = &self.url {
            let scheme = url.starts_with("https://") || url.starts_with("http://") || url.starts_with('/');
            if url.len() > MAX_MEDIA_URL || !scheme || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Some("url is an http(s) URL or a path, at most 1024 bytes, without white space");
            }
        }
        if self.title.as_ref().is_some_and(|t| t.len() > MAX_MEDIA_TITLE || !text(t)) {
            return Some("title is at most 128 bytes of text");
        }
        if self.duration_ms.is_some_and(|d| d == 0 || d > MAX_POSITION_MS) {
            return Some("durationMs is 1 ms to 2^32 - 1 ms");
        }
        None
    }
}

/// A chat message to the room (client tag 10, reliable only). Answered by
/// the room's `ChatMessage` carrying the same `request_id`, or by an `Error`
/// with it (too long, too fast, muted, chat off).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Chat {
    /// Echoed in the `ChatMessage` or the `Error`; 0 for none.
    pub request_id: u32,
    /// The text (see [`valid_chat_text`]).
    pub text: String,
}

/// Whether `text` may be a chat message: 1 to
/// [`crate::limits::MAX_CHAT_TEXT`] bytes, not only white space, and no
/// control character but the line feed, nor a bidirectional override or
/// isolate (which could make a message read as another's).
pub fn valid_chat_text(text: &str) -> bool {
    (1..=crate::limits::MAX_CHAT_TEXT).contains(&text.len())
        && !text.trim().is_empty()
        && text
            .chars()
            .all(|c| (c == '\n' || !c.is_control()) && !matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
}

/// An emoji reaction (client tag 9, reliable only): counted into the room's
/// next `Reactions` window. See [`valid_emoji`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct React {
    /// The emoji.
    pub emoji: String,
}

/// Whether `emoji` may be a reaction: 1 to [`crate::limits::MAX_EMOJI`] bytes,
/// not ASCII (letters, digits and punctuation are text, not reactions), and
/// no control or white-space character.
pub fn valid_emoji(emoji: &str) -> bool {
    (1..=crate::limits::MAX_EMOJI).contains(&emoji.len())
        && emoji.chars().all(|c| !c.is_ascii() && !c.is_control() && !c.is_whitespace())
}

/// Why a member stops following the room (client tag 7, reliable only): one
/// of `buffering`, `seeking`, `interstitial`, `userActionRequired`,
/// `notFollowing`, or `custom:<name>` (see [`crate::limits::MAX_REASON`]
/// and SPEC §6.4). The server decides by its waiting policy whether the room
/// waits; a member whose suspension outlives the wait catches up alone.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Suspend {
    /// The reason.
    pub reason: String,
}

/// The suspension reasons a server knows by name (`custom:<name>` aside).
pub const SUSPEND_REASONS: [&str; 5] = ["buffering", "seeking", "interstitial", "userActionRequired", "notFollowing"];

/// Whether `reason` is a valid suspension reason: a name of
/// [`SUSPEND_REASONS`], or `custom:` and 1 to 48 bytes of ASCII letters,
/// digits, `-`, `_` and `.`.
pub fn valid_suspend_reason(reason: &str) -> bool {
    if SUSPEND_REASONS.contains(&reason) {
        return true;
    }
    reason.strip_prefix("custom:").is_some_and(|name| {
        (1..=crate::limits::MAX_REASON - "custom:".len()).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    })
}

/// How far the client's element is from the room's timeline, as the client
/// measured it (client tag 6, reliable or datagram, like `Report`). The
/// server keeps each member's latest for the room's sync quality (SPEC §6.1);
/// it never moves the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncReport {
    /// The timeline epoch the drift was measured against.
    pub epoch: u32,
    /// Element position minus the room's position at the same instant, in
    /// microseconds (positive: ahead), clamped to the `i32` range.
    pub drift_us: i32,
}

/// A missed change (client tag 5, reliable channel only): the client holds
/// the changes up to `epoch` and learned (from a `Tick` or an `Ack`) that a
/// newer one exists. The server answers, at most once per change, with the
/// newest `TimelineChanged` it sent this client only as a datagram, if that
/// one is newer than `epoch`; otherwise it sends nothing (SPEC §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Nack {
    /// The newest timeline epoch the client holds (in effect or pending).
    pub epoch: u32,
}

/// A live client's view of the stream (client tag 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveReport {
    /// Program time (Unix ms) of the newest frame the client can play, from
    /// the playlist it holds.
    pub live_edge_ms: u64,
    /// Media buffered ahead of the element's position, ms.
    pub buffer_ms: u32,
}

/// Join a room.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    /// Must equal [`crate::PROTOCOL_VERSION`].
    pub version: u16,
    /// The event (room) to join; must match the URL's.
    pub event_id: String,
    /// A stable id of this device (at most 128 bytes).
    pub device_id: String,
    /// An access token, if not given in the URL.
    pub token: Option<String>,
    /// Capability bits, see [`crate::caps`].
    pub caps: u32,
}

/// Clock-sync probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ping {
    /// The client's clock, in any unit it likes; echoed in [`Pong`].
    pub client_time: u64,
}

/// A timeline command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Command {
    /// Echoed in an [`Ack`], or in an [`ErrorMsg`] if the command fails; 0
    /// for none (then no `Ack` is sent).
    pub request_id: u32,
    /// What to do.
    pub action: Action,
}

/// What a [`Command`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Action {
    /// Start playing, from `position_ms` if given, at the room's lead time.
    #[serde(rename_all = "camelCase")]
    Play {
        /// Where to start; the paused position if absent.
        position_ms: Option<u64>,
    },
    /// Pause at the room's lead time, on the timeline's own position there,
    /// or at `position_ms` if given.
    #[serde(rename_all = "camelCase")]
    Pause {
        /// Where to stop; the timeline's position if absent.
        position_ms: Option<u64>,
    },
    /// Jump to `position_ms` at once.
    #[serde(rename_all = "camelCase")]
    Seek {
        /// The target position.
        position_ms: u64,
    },
    /// Change the playback rate (thousandths, 250..=4000).
    #[serde(rename_all = "camelCase")]
    SetRate {
        /// The new rate.
        rate_milli: u16,
    },
    /// Make a member a co-host or a viewer (host only).
    #[serde(rename_all = "camelCase")]
    SetRole {
        /// The member.
        member_id: u32,
        /// `CoHost` or `Viewer`.
        role: Role,
    },
    /// Switch who may change the timeline (host only).
    #[serde(rename_all = "camelCase")]
    SetPolicy {
        /// The new policy.
        policy: ControlPolicy,
    },
    /// Return a live room to the live point, at the room's lead time (only
    /// from clients with the `LIVE` capability; refused in a media room).
    GoLive,
    /// Delete a chat message (host and co-hosts).
    #[serde(rename_all = "camelCase")]
    DeleteChat {
        /// The message's id.
        id: u64,
    },
    /// Mute or unmute a member's chat (host and co-hosts; a co-host mutes
    /// viewers only, nobody mutes a host). The mute holds for the member's
    /// user in this room, across reconnections.
    #[serde(rename_all = "camelCase")]
    MuteChat {
        /// The member.
        member_id: u32,
        /// Muted or not.
        muted: bool,
    },
}

/// The client's own playback state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The timeline epoch the client is following.
    pub epoch: u32,
    /// The element's current position, in microseconds.
    pub position_us: u64,
    /// The element's current playback rate, in thousandths.
    pub rate_milli: u16,
    /// Whether the element is stalled waiting for data.
    pub buffering: bool,
}

impl ServerMsg {
    /// A short stable name (also the metrics label).
    pub fn name(&self) -> &'static str {
        match self {
            ServerMsg::Welcome(_) => "welcome",
            ServerMsg::Tick(_) => "tick",
            ServerMsg::TimelineChanged(_) => "timeline_changed",
            ServerMsg::ViewerCount(_) => "viewer_count",
            ServerMsg::Pong(_) => "pong",
            ServerMsg::Error(_) => "error",
            ServerMsg::MemberJoined(_) => "member_joined",
            ServerMsg::MemberLeft(_) => "member_left",
            ServerMsg::RoleChanged(_) => "role_changed",
            ServerMsg::PolicyChanged(_) => "policy_changed",
            ServerMsg::Ack(_) => "ack",
            ServerMsg::LiveState(_) => "live_state",
            ServerMsg::Reactions(_) => "reactions",
            ServerMsg::ChatMessage(_) => "chat_message",
            ServerMsg::ChatDeleted(_) => "chat_deleted",
            ServerMsg::ChatMuted(_) => "chat_muted",
            ServerMsg::MediaChanged(_) => "media_changed",
            ServerMsg::QueueChanged(_) => "queue_changed",
        }
    }
}

impl ClientMsg {
    /// A short stable name (also the metrics label).
    pub fn name(&self) -> &'static str {
        match self {
            ClientMsg::Hello(_) => "hello",
            ClientMsg::Ping(_) => "ping",
            ClientMsg::Command(_) => "command",
            ClientMsg::Report(_) => "report",
            ClientMsg::LiveReport(_) => "live_report",
            ClientMsg::Nack(_) => "nack",
            ClientMsg::SyncReport(_) => "sync_report",
            ClientMsg::Suspend(_) => "suspend",
            ClientMsg::Resume => "resume",
            ClientMsg::React(_) => "react",
            ClientMsg::Chat(_) => "chat",
            ClientMsg::Media(_) => "media",
        }
    }
}
