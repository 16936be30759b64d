//! Total encoding and decoding.
//!
//! Every message is bincode 2.0.1 with `config::standard()` (little-endian,
//! variable-length integers). Decoding never panics: any byte string yields a
//! message or a [`DecodeError`]. Oversized input and trailing bytes are
//! refused. Reliable streams carry frames: a length (same varint) then the
//! message.

use bincode::config::{self, Configuration, LittleEndian, Varint};
use bincode::{Decode, Encode};

use crate::code::ErrorCode;
use crate::limits::{
    MAX_CHAT_TEXT, MAX_DEVICE_ID, MAX_EMOJI, MAX_ERROR_MESSAGE, MAX_EVENT_ID, MAX_FRAME, MAX_MEDIA_ID, MAX_MEDIA_TITLE,
    MAX_MEDIA_URL, MAX_NAME, MAX_QUEUE, MAX_REACTION_KINDS, MAX_REASON, MAX_TOKEN,
};
use crate::msg::{ClientMsg, ErrorMsg, MediaItem, MediaOp, ServerMsg};

type Cfg = Configuration<LittleEndian, Varint, config::Limit<MAX_FRAME>>;

fn cfg() -> Cfg {
    config::standard().with_limit::<MAX_FRAME>()
}

/// Number of [`ServerMsg`] variants (tags `0..SERVER_TAGS`).
pub const SERVER_TAGS: u32 = 18;
/// Number of [`ClientMsg`] variants (tags `0..CLIENT_TAGS`).
pub const CLIENT_TAGS: u32 = 12;

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty message")]
    Empty,
    /// More bytes than a message may have.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The size seen (or announced by a frame prefix).
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A tag no message has.
    #[error("unknown message tag {tag}")]
    UnknownTag {
        /// The tag found.
        tag: u32,
    },
    /// The bytes do not form the message their tag announces.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Bytes left over after a complete message.
    #[error("{extra} trailing bytes after the message")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// A field breaks a limit of the protocol.
    #[error("invalid field: {0}")]
    Invalid(&'static str),
}

impl DecodeError {
    /// The error code a server reports for it.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            DecodeError::UnknownTag { .. } => ErrorCode::UnknownMessage,
            _ => ErrorCode::Malformed,
        }
    }
}

fn decode_tagged<T: Decode<()> + Encode>(bytes: &[u8], tags: u32) -> Result<T, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() > MAX_FRAME {
        return Err(DecodeError::TooLarge { len: bytes.len() as u64, max: MAX_FRAME });
    }
    let (tag, _): (u32, usize) =
        bincode::decode_from_slice(bytes, cfg()).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if tag >= tags {
        return Err(DecodeError::UnknownTag { tag });
    }
    let (msg, used) = bincode::decode_from_slice(bytes, cfg()).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes { extra: bytes.len() - used });
    }
    // bincode also accepts varints in a longer form than needed (`251, 5, 0`
    // for 5). Only the shortest form is valid, so that every message has
    // exactly one encoding: re-encoding must give the same bytes.
    let again = bincode::encode_to_vec(&msg, config::standard()).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if again != bytes {
        return Err(DecodeError::Malformed("non-canonical encoding (varint not in its shortest form)".into()));
    }
    Ok(msg)
}

fn check_len(s: &str, max: usize, what: &'static str) -> Result<(), DecodeError> {
    if s.len() > max { Err(DecodeError::Invalid(what)) } else { Ok(()) }
}

fn check_item(item: &MediaItem) -> Result<(), DecodeError> {
    check_len(&item.media_id, MAX_MEDIA_ID, "media id longer than 128 bytes")?;
    if let Some(url) = &item.url {
        check_len(url, MAX_MEDIA_URL, "media url longer than 1024 bytes")?;
    }
    if let Some(title) = &item.title {
        check_len(title, MAX_MEDIA_TITLE, "media title longer than 128 bytes")?;
    }
    Ok(())
}

/// Decodes one client → server message.
pub fn decode_client(bytes: &[u8]) -> Result<ClientMsg, DecodeError> {
    let msg: ClientMsg = decode_tagged(bytes, CLIENT_TAGS)?;
    match &msg {
        ClientMsg::Hello(h) => {
            check_len(&h.event_id, MAX_EVENT_ID, "event id longer than 128 bytes")?;
            check_len(&h.device_id, MAX_DEVICE_ID, "device id longer than 128 bytes")?;
            if let Some(t) = &h.token {
                check_len(t, MAX_TOKEN, "token longer than 4096 bytes")?;
            }
        }
        ClientMsg::Suspend(r) => check_len(&r.reason, MAX_REASON, "suspension reason longer than 55 bytes")?,
        ClientMsg::React(r) => check_len(&r.emoji, MAX_EMOJI, "reaction longer than 32 bytes")?,
        ClientMsg::Chat(c) => check_len(&c.text, MAX_CHAT_TEXT, "chat message longer than 1000 bytes")?,
        ClientMsg::Media(m) => match &m.op {
            MediaOp::Set { item } | MediaOp::Add { item } => check_item(item)?,
            MediaOp::Remove { media_id } | MediaOp::Move { media_id, .. } => {
                check_len(media_id, MAX_MEDIA_ID, "media id longer than 128 bytes")?
            }
            _ => {}
        },
        _ => {}
    }
    Ok(msg)
}

/// Decodes one server → client message.
pub fn decode_server(bytes: &[u8]) -> Result<ServerMsg, DecodeError> {
    let msg: ServerMsg = decode_tagged(bytes, SERVER_TAGS)?;
    match &msg {
        ServerMsg::Error(e) => check_len(&e.message, MAX_ERROR_MESSAGE, "error message too long")?,
        ServerMsg::MemberJoined(m) => check_len(&m.name, MAX_NAME, "member name too long")?,
        ServerMsg::MediaChanged(m) => {
            if let Some(item) = &m.item {
                check_item(item)?;
            }
        }
        ServerMsg::QueueChanged(q) => {
            if q.items.len() > MAX_QUEUE {
                return Err(DecodeError::Invalid("more than 50 playlist items"));
            }
            for item in &q.items {
                check_item(item)?;
            }
        }
        ServerMsg::ChatMessage(m) => {
            check_len(&m.name, MAX_NAME, "member name too long")?;
            check_len(&m.text, MAX_CHAT_TEXT, "chat message longer than 1000 bytes")?;
        }
        ServerMsg::Reactions(r) => {
            if r.counts.len() > MAX_REACTION_KINDS {
                return Err(DecodeError::Invalid("more than 16 reaction kinds"));
            }
            for c in &r.counts {
                check_len(&c.emoji, MAX_EMOJI, "reaction longer than 32 bytes")?;
            }
        }
        _ => {}
    }
    Ok(msg)
}

fn encode_into<T: Encode>(msg: &T, out: &mut Vec<u8>) {
    bincode::encode_into_std_write(msg, out, config::standard()).expect("encoding into a Vec cannot fail");
}

/// Encodes a server → client message.
pub fn encode_server(msg: &ServerMsg) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    encode_into(msg, &mut out);
    out
}

/// Appends the encoding of a server → client message to `out`.
pub fn encode_server_into(msg: &ServerMsg, out: &mut Vec<u8>) {
    encode_into(msg, out);
}

/// Encodes a client → server message.
pub fn encode_client(msg: &ClientMsg) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    encode_into(msg, &mut out);
    out
}

impl ErrorMsg {
    /// An error message, its text cut to the protocol's limit on a character
    /// boundary.
    pub fn new(code: ErrorCode, message: impl Into<String>, request_id: u32) -> Self {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE {
            let mut cut = MAX_ERROR_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        ErrorMsg { code: code.as_u16(), message, request_id }
    }
}

/// Appends one stream frame (varint length, then `payload`) to `out`.
pub fn write_frame(payload: &[u8], out: &mut Vec<u8>) {
    encode_into(&(payload.len() as u64), out);
    out.extend_from_slice(payload);
}

/// Splits a reliable byte stream into frames.
///
/// Push bytes as they arrive, then take complete frames. A frame prefix above
/// [`MAX_FRAME`] is an error after which the stream cannot be resynchronised.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        let avail = &self.buf[self.start..];
        let Some((len, prefix)) = read_varint(avail)? else {
            return Ok(None);
        };
        if len > MAX_FRAME as u64 {
            return Err(DecodeError::TooLarge { len, max: MAX_FRAME });
        }
        let len = len as usize;
        if avail.len() < prefix + len {
            return Ok(None);
        }
        let frame = avail[prefix..prefix + len].to_vec();
        self.start += prefix + len;
        if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(frame))
    }
}

/// Reads a bincode `standard()` unsigned varint: `(value, bytes used)`, or
/// `None` if `b` is too short to hold it. Markers 254 (u128) and 255 and
/// values not in their shortest form are errors.
fn read_varint(b: &[u8]) -> Result<Option<(u64, usize)>, DecodeError> {
    let Some(&first) = b.first() else {
        return Ok(None);
    };
    let (width, min) = match first {
        0..=250 => return Ok(Some((u64::from(first), 1))),
        251 => (2, 251),
        252 => (4, 1 << 16),
        253 => (8, 1 << 32),
        _ => {
            return Err(DecodeError::Malformed(format!("invalid varint marker {first} in frame length")));
        }
    };
    let Some(bytes) = b.get(1..=width) else {
        return Ok(None);
    };
    let mut v = [0u8; 8];
    v[..width].copy_from_slice(bytes);
    let value = u64::from_le_bytes(v);
    if value < min {
        return Err(DecodeError::Malformed("frame length not in its shortest form".into()));
    }
    Ok(Some((value, 1 + width)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::*;

    #[test]
    fn rejects_empty_trailing_unknown_and_oversized() {
        assert_eq!(decode_client(&[]), Err(DecodeError::Empty));
        assert_eq!(decode_client(&[12]), Err(DecodeError::UnknownTag { tag: 12 }));
        let mut ping = encode_client(&ClientMsg::Ping(Ping { client_time: 5 }));
        ping.push(0);
        assert_eq!(decode_client(&ping), Err(DecodeError::TrailingBytes { extra: 1 }));
        let big = vec![0u8; MAX_FRAME + 1];
        assert!(matches!(decode_client(&big), Err(DecodeError::TooLarge { .. })));
        assert!(matches!(decode_client(&[2, 7]), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn rejects_long_strings_and_huge_length_claims() {
        let hello = ClientMsg::Hello(Hello {
            version: 1,
            event_id: "e".repeat(129),
            device_id: "d".into(),
            token: None,
            caps: 0,
        });
        let bytes = encode_client(&hello);
        assert!(matches!(decode_client(&bytes), Err(DecodeError::Invalid(_))));
        // Hello whose event id claims 2^40 bytes.
        let mut claim = vec![0u8, 1, 253];
        claim.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(decode_client(&claim), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn frames_split_and_join() {
        let a = encode_client(&ClientMsg::Ping(Ping { client_time: 1 }));
        let b = vec![7u8; 300];
        let mut wire = Vec::new();
        write_frame(&a, &mut wire);
        write_frame(&b, &mut wire);
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        for chunk in wire.chunks(3) {
            d.push(chunk);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, vec![a, b]);
        assert_eq!(d.buffered(), 0);
        let mut bad = FrameDecoder::new();
        bad.push(&[252, 0, 0, 1, 0]);
        assert!(matches!(bad.next_frame(), Err(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn rejects_non_canonical_varints() {
        // Ping { client_time: 5 } with 5 written as `251, 5, 0` and as u64.
        assert!(matches!(decode_client(&[1, 251, 5, 0]), Err(DecodeError::Malformed(_))));
        assert!(matches!(decode_client(&[1, 253, 5, 0, 0, 0, 0, 0, 0, 0]), Err(DecodeError::Malformed(_))));
        for bad in [&[251u8, 5, 0][..], &[254, 0, 0, 0, 0, 0, 0, 0, 0], &[255]] {
            let mut d = FrameDecoder::new();
            d.push(bad);
            assert!(matches!(d.next_frame(), Err(DecodeError::Malformed(_))), "{bad:?}");
        }
    }

    #[test]
    fn error_messages_are_cut_on_char_boundaries() {
        let e = ErrorMsg::new(ErrorCode::Internal, "é".repeat(200), 3);
        assert!(e.message.len() <= MAX_ERROR_MESSAGE);
        let bytes = encode_server(&ServerMsg::Error(e.clone()));
        assert_eq!(decode_server(&bytes), Ok(ServerMsg::Error(e)));
    }

    #[test]
    fn tick_worst_case_is_24_bytes() {
        let t = Tick {
            epoch: u32::MAX,
            position_ms: u32::MAX,
            anchor_lo_us: u32::MAX,
            rate_milli: crate::limits::MAX_RATE_MILLI,
            paused: true,
            viewers: u32::MAX,
        };
        let bytes = encode_server(&ServerMsg::Tick(t));
        assert_eq!(bytes.len(), 24);
        assert_eq!(decode_server(&bytes), Ok(ServerMsg::Tick(t)));
    }
}
