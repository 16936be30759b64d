//! What a room hands to its members: one [`Outgoing`] per output, shared by
//! every recipient, through each member's [`Link`].
//!
//! The hub never encodes for a dialect: a link's own encoder (the session's)
//! turns an `Outgoing` into bytes. The binary encoding is made at most once
//! per output and shared (`Outgoing::binary`), so a room of any size pays for
//! one encoding per message; a dialect's encoding may likewise be cached once
//! per output in [`Outgoing::dialect_cache`].

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use lockstep_protocol::{ServerMsg, encode_server};
use serde_json::{Map, Value};

/// Fields of a legacy JSON command passed through to the broadcast of the
/// change it caused (the original app's behaviour).
pub(crate) type Extra = Map<String, Value>;

/// One message for one or many members.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// The message.
    pub(crate) msg: ServerMsg,
    /// For a `TimelineChanged` caused by a legacy JSON command: the fields
    /// that command passed through.
    pub(crate) extra: Option<Arc<Extra>>,
    binary: OnceLock<Bytes>,
    ws_frame: OnceLock<Bytes>,
    dialect: OnceLock<Option<Bytes>>,
}

impl Outgoing {
    /// An outgoing message with no origin.
    pub(crate) fn new(msg: ServerMsg) -> Arc<Outgoing> {
        Self::with_extra(msg, None)
    }

    /// An outgoing message carrying a legacy command's pass-through fields.
    pub(crate) fn with_extra(msg: ServerMsg, extra: Option<Arc<Extra>>) -> Arc<Outgoing> {
        Arc::new(Outgoing { msg, extra, binary: OnceLock::new(), ws_frame: OnceLock::new(), dialect: OnceLock::new() })
    }

    /// The binary encoding, made once and shared by every recipient.
    pub(crate) fn binary(&self) -> &Bytes {
        self.binary.get_or_init(|| Bytes::from(encode_server(&self.msg)))
    }

    /// The binary encoding as a whole WebSocket frame (a server's frames are
    /// unmasked, so the bytes are the same for every viewer), made once.
    pub(crate) fn ws_frame(&self) -> &Bytes {
        self.ws_frame.get_or_init(|| crate::util::ws_frame::frame(crate::util::ws_frame::BINARY, self.binary()))
    }

    /// A cache for one other dialect's encoding of this message (every
    /// member of a room that speaks it gets the same bytes); `None` inside
    /// when the dialect has no form for it.
    pub(crate) fn dialect_cache(&self) -> &OnceLock<Option<Bytes>> {
        &self.dialect
    }

    /// Whether this is a tick (latest wins on every link).
    pub(crate) fn is_tick(&self) -> bool {
        matches!(self.msg, ServerMsg::Tick(_))
    }
}

/// A member's connection as its room sees it. Implemented by the session's
/// outbox; never blocks and never awaits.
pub(crate) trait Link: Send + Sync + std::fmt::Debug {
    /// Queues a reliable message. `false` if the connection is closing (a
    /// connection too far behind is closed as a slow consumer here).
    fn send(&self, out: &Arc<Outgoing>) -> bool;

    /// Replaces the waiting tick; returns whether an unsent one was dropped.
    fn tick(&self, out: &Arc<Outgoing>) -> bool;

    /// Several outputs of one flush, in order (ticks latest wins), with one
    /// wake-up or one write. `false` if the connection is closing.
    fn deliver(&self, outs: &[&Arc<Outgoing>]) -> bool {
        let mut open = true;
        for out in outs {
            if out.is_tick() {
                self.tick(out);
            } else {
                open &= self.send(out);
            }
        }
        open
    }
}
