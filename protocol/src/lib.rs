//! Lockstep wire protocol: message types, codec, limits and error codes.
//!
//! This crate does no I/O. It is the single source of truth for what travels
//! between a Lockstep server and its clients; `SPEC.md` beside it describes the
//! same bytes in prose and `vectors/` pins them with golden vectors that the
//! Rust and JavaScript implementations both check.
//!
//! # Layout
//! - [`msg`]: every message, server → client ([`ServerMsg`]) and client →
//!   server ([`ClientMsg`]).
//! - [`timeline`]: the playback timeline and its arithmetic (extrapolation,
//!   re-anchoring, the wrapped tick anchor).
//! - [`codec`]: total encode/decode (bincode 2.0.1 `standard()`), stream
//!   framing, limits.
//! - [`code`]: numeric error and close codes.

pub mod code;
pub mod codec;
pub mod msg;
pub mod timeline;

pub use code::ErrorCode;
pub use codec::{
    DecodeError, FrameDecoder, decode_client, decode_server, encode_client, encode_server, encode_server_into,
    write_frame,
};
pub use msg::*;
pub use timeline::Timeline;

/// Protocol version carried in [`Hello::version`]. A server refuses any other
/// version with [`ErrorCode::VersionMismatch`] and closes.
pub const PROTOCOL_VERSION: u16 = 1;

/// Hard limits of the protocol. Anything beyond them is refused by the decoder.
pub mod limits {
    /// Largest message on a reliable channel (WebSocket frame or one
    /// length-prefixed stream frame), in bytes, prefix excluded.
    pub const MAX_FRAME: usize = 8 * 1024;
    /// Largest datagram either side sends. Chrome silently drops larger ones.
    pub const MAX_DATAGRAM: usize = 1200;
    /// Longest event id, in bytes of UTF-8.
    pub const MAX_EVENT_ID: usize = 128;
    /// Longest device id, in bytes of UTF-8.
    pub const MAX_DEVICE_ID: usize = 128;
    /// Longest access token, in bytes of UTF-8.
    pub const MAX_TOKEN: usize = 4096;
    /// Longest member display name, in bytes of UTF-8.
    pub const MAX_NAME: usize = 64;
    /// Longest error message, in bytes of UTF-8.
    pub const MAX_ERROR_MESSAGE: usize = 256;
    /// Longest suspension reason (`Suspend.reason`), in bytes.
    pub const MAX_REASON: usize = 55;
    /// Longest reaction (`React.emoji`, `ReactionCount.emoji`), in bytes: a
    /// flag or a family of people with modifiers fits.
    pub const MAX_EMOJI: usize = 32;
    /// Longest chat message (`Chat.text`, `ChatMessage.text`), in bytes.
    pub const MAX_CHAT_TEXT: usize = 1000;
    /// Longest media id (`MediaItem.media_id`), in bytes.
    pub const MAX_MEDIA_ID: usize = 128;
    /// Longest media URL (`MediaItem.url`), in bytes.
    pub const MAX_MEDIA_URL: usize = 1024;
    /// Longest media title (`MediaItem.title`), in bytes.
    pub const MAX_MEDIA_TITLE: usize = 128;
    /// Most items in a room's playlist (and its encoded `QueueChanged` fits
    /// [`MAX_FRAME`]).
    pub const MAX_QUEUE: usize = 50;
    /// Most emoji kinds in one `Reactions` message (the most frequent).
    pub const MAX_REACTION_KINDS: usize = 16;
    /// Slowest room rate, in thousandths (0.25×).
    pub const MIN_RATE_MILLI: u16 = 250;
    /// Fastest room rate, in thousandths (4×).
    pub const MAX_RATE_MILLI: u16 = 4000;
    /// Largest media position, in milliseconds (about 49.7 days): it keeps a
    /// tick's position within a 32-bit varint.
    pub const MAX_POSITION_MS: u64 = u32::MAX as u64;
}

/// Capability bits in [`Hello::caps`].
pub mod caps {
    /// The client receives datagrams (WebTransport): ticks and pongs go there.
    pub const DATAGRAMS: u32 = 1 << 0;
    /// The client wants member joined/left events when the room shows them.
    pub const PRESENCE: u32 = 1 << 1;
    /// The client understands [`crate::Ack`]: successful commands with a
    /// `request_id` are answered (SPEC §6.3).
    pub const ACKS: u32 = 1 << 2;
    /// The client understands [`crate::LiveState`] and [`crate::Action::GoLive`]
    /// (SPEC §2.4).
    pub const LIVE: u32 = 1 << 3;
    /// With [`DATAGRAMS`]: the client takes each `TimelineChanged` as a
    /// datagram only (no stream copy) and asks for a lost one with
    /// [`crate::Nack`] (SPEC §5.2).
    pub const DATAGRAM_CHANGES: u32 = 1 << 4;
    /// The client understands [`crate::Reactions`] (SPEC §6.5).
    pub const REACTIONS: u32 = 1 << 5;
    /// The client takes chat: [`crate::ChatMessage`] (and the room's history
    /// after `Welcome`), [`crate::ChatDeleted`] (SPEC §6.6).
    pub const CHAT: u32 = 1 << 6;
    /// The client understands [`crate::MediaChanged`] and
    /// [`crate::QueueChanged`] (SPEC §6.7).
    pub const MEDIA: u32 = 1 << 7;
}
