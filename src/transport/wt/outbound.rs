//! The WebTransport side of the one writer ([`crate::session::write_loop`]).

use std::time::Duration;

use bytes::Bytes;
use lockstep_protocol::limits::MAX_DATAGRAM;
use lockstep_protocol::{ErrorCode, write_frame};
use tokio::sync::oneshot;
use wtransport::{Connection, SendStream};

use super::close_code;
use crate::session::{Transport, Wire};

/// Time allowed for the closing `Error` frame to be acknowledged.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);
/// Time then left for the client to read it (and close) before the server
/// closes: a QUIC close discards stream data the application has not read.
const CLOSE_GRACE: Duration = Duration::from_millis(300);

/// The WebTransport side of the one writer: datagrams, and length-prefixed
/// frames on the client's stream (one write per batch).
pub(super) struct WtTransport {
    pub(super) conn: Connection,
    pub(super) stream: Option<SendStream>,
    /// The client's stream, until it has been opened.
    pub(super) stream_rx: Option<oneshot::Receiver<SendStream>>,
    pub(super) buf: Vec<u8>,
}

impl WtTransport {
    /// The client's stream; waits for it to be opened (the client opens it
    /// to send `Hello`, before anything is written on it).
    async fn stream(&mut self) -> Option<&mut SendStream> {
        if self.stream.is_none()
            && let Some(rx) = self.stream_rx.take()
        {
            self.stream = rx.await.ok();
        }
        self.stream.as_mut()
    }
}

impl Transport for WtTransport {
    fn datagram_limit(&self) -> usize {
        self.conn.max_datagram_size().map_or(0, |m| m.min(MAX_DATAGRAM))
    }

    fn send_datagram(&mut self, bytes: &Bytes) -> bool {
        self.conn.send_datagram(bytes).is_ok()
    }

    async fn send(&mut self, frames: Vec<Wire>) -> std::io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        for f in &frames {
            if let Wire::Binary(b) = f {
                write_frame(b, &mut buf);
            }
        }
        let result = match self.stream().await {
            Some(s) => s.write_all(&buf).await.map_err(std::io::Error::other),
            None => Err(std::io::Error::new(std::io::ErrorKind::NotConnected, "the client opened no stream")),
        };
        buf.clear();
        self.buf = buf;
        result
    }

    async fn close(&mut self, code: ErrorCode, reason: &str) {
        // A QUIC close discards stream data the peer has not read: finish the
        // stream, wait for it to be acknowledged, give the client a moment to
        // close itself, then close.
        if let Some(s) = self.stream.as_mut()
            && tokio::time::timeout(CLOSE_FLUSH, s.finish()).await.is_ok()
        {
            let _ = tokio::time::timeout(CLOSE_GRACE, self.conn.closed()).await;
        }
        self.conn.close(close_code(code), reason.as_bytes());
    }
}
