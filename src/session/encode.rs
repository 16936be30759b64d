//! Per-connection encoders: how a connection's dialect turns room output
//! ([`Outgoing`]) and the session's own errors into frames. The binary
//! protocol is here; the legacy JSON dialect implements [`Encoder`] in
//! `transport::json`. The writer ([`super::writer`]) is the same for both.

use bytes::Bytes;
use lockstep_protocol::{ErrorCode, ErrorMsg, ServerMsg, encode_server};

use crate::hub::Outgoing;
use crate::room::MemberId;

/// One frame on a connection's reliable channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Wire {
    /// A binary message (WebSocket binary frame, or one stream frame).
    Binary(Bytes),
    /// A text message (WebSocket text frame); the bytes are UTF-8.
    Text(Bytes),
}

/// A connection's dialect.
pub(crate) trait Encoder: Send + Sync + std::fmt::Debug {
    /// The frame that carries `out` to member `me`, or `None` if this
    /// dialect does not send it.
    fn encode(&self, out: &Outgoing, me: MemberId) -> Option<Wire>;

    /// The frame of an error (a refusal, or the closing error).
    fn error(&self, code: ErrorCode, message: &str, request_id: u32) -> Wire;

    /// Whether this is the binary protocol, whose ticks, pongs and change
    /// copies may travel as datagrams.
    fn is_binary(&self) -> bool;
}

/// The binary protocol: the room's shared encoding of every message.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Binary;

impl Encoder for Binary {
    fn encode(&self, out: &Outgoing, _me: MemberId) -> Option<Wire> {
        Some(Wire::Binary(out.binary().clone()))
    }

    fn error(&self, code: ErrorCode, message: &str, request_id: u32) -> Wire {
        Wire::Binary(Bytes::from(encode_server(&ServerMsg::Error(ErrorMsg::new(code, message, request_id)))))
    }

    fn is_binary(&self) -> bool {
        true
    }
}
