//! The one outbound path: a writer task per connection drains its
//! [`Outbox`] into a [`Transport`], for every transport alike. It stamps
//! pongs at write time, sends ticks, pongs and change copies as datagrams
//! where the transport has them and the client asked for them, writes each
//! batch of reliable frames at once (one `write` where the transport can),
//! writes the closing `Error`, and closes. [`finish`] then runs the close
//! grace after the session.
//!
//! A transport only knows how to move bytes: see [`Transport`].

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use lockstep_protocol::{ErrorCode, Pong, ServerMsg, caps, encode_server};
use tokio::task::JoinHandle;

use super::encode::Wire;
use super::outbox::Outbox;
use crate::clock::ServerClock;

/// How long a closing connection gets to flush its last frames and close,
/// and then for the peer to answer the close.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What a transport does for the writer: move bytes. Nothing about rooms,
/// dialects, pongs or errors is written per transport.
pub(crate) trait Transport: Send + 'static {
    /// The largest datagram payload it can send now; 0 if it has none.
    fn datagram_limit(&self) -> usize {
        0
    }

    /// Sends one datagram (best effort); `false` if it could not.
    fn send_datagram(&mut self, _bytes: &Bytes) -> bool {
        false
    }

    /// Writes reliable frames in order, as one write where it can.
    fn send(&mut self, frames: Vec<Wire>) -> impl Future<Output = std::io::Result<()>> + Send;

    /// The keep-alive interval of transports that need the writer's help
    /// (WebSocket pings); `None` for those that keep themselves alive.
    fn keepalive_interval(&self) -> Option<Duration> {
        None
    }

    /// Sends one keep-alive.
    fn keepalive(&mut self) -> impl Future<Output = std::io::Result<()>> + Send {
        async { Ok(()) }
    }

    /// Closes after what was sent, with `code` (the same number as the
    /// closing `Error`'s) and `reason` (at most 100 bytes).
    fn close(&mut self, code: ErrorCode, reason: &str) -> impl Future<Output = ()> + Send;
}

/// At most 100 bytes of `message`, cut on a character boundary (close
/// reasons are short on every transport).
pub(crate) fn close_reason(message: &str) -> &str {
    let mut end = message.len().min(100);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// Drains `outbox` into `transport` until the connection closes.
pub(crate) async fn write_loop<T: Transport>(mut transport: T, outbox: std::sync::Arc<Outbox>, clock: ServerClock) {
    let mut keepalive = transport.keepalive_interval().map(|every| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let encoder = outbox.encoder().clone();
    loop {
        let batch = tokio::select! {
            b = outbox.next_batch() => b,
            _ = async { keepalive.as_mut().expect("guarded").tick().await }, if keepalive.is_some() => {
                if transport.keepalive().await.is_err() {
                    return;
                }
                continue;
            }
        };
        let limit =
            if encoder.is_binary() && outbox.caps() & caps::DATAGRAMS != 0 { transport.datagram_limit() } else { 0 };
        let me = outbox.member();
        let mut frames = Vec::with_capacity(batch.frames.len() + batch.pongs.len() + 2);
        // Datagrams first: they never wait behind the stream.
        for (client_time, server_recv_us) in batch.pongs {
            let pong = Pong { client_time, server_recv_us, server_send_us: clock.now_us() };
            let bytes = Bytes::from(encode_server(&ServerMsg::Pong(pong)));
            if !(bytes.len() <= limit && transport.send_datagram(&bytes)) {
                frames.push(Wire::Binary(bytes));
            }
        }
        for out in &batch.frames {
            // A copy of each change as a datagram, so it arrives fast even
            // while the stream is blocked; the stream copy follows.
            if matches!(out.msg, ServerMsg::TimelineChanged(_)) && out.binary().len() <= limit {
                transport.send_datagram(out.binary());
            }
        }
        let tick = batch.tick.filter(|t| !(t.binary().len() <= limit && transport.send_datagram(t.binary())));
        frames.extend(batch.frames.iter().filter_map(|out| encoder.encode(out, me)));
        frames.extend(tick.and_then(|t| encoder.encode(&t, me)));
        if let Some(close) = &batch.close {
            frames.push(encoder.error(close.code, &close.message, 0));
        }
        // An empty send still drains what the fast path left in the transport.
        let sent = (frames.is_empty() && !batch.drain) || transport.send(frames).await.is_ok();
        outbox.written();
        if let Some(close) = batch.close {
            if sent {
                transport.close(close.code, close_reason(&close.message)).await;
            }
            return;
        }
        if !sent {
            return;
        }
    }
}

/// After the session: if the server closed it, lets the writer deliver the
/// closing error and close (bounded), then reads the peer's input until it
/// ends (bounded), so that unread input does not turn the close into a reset
/// that loses the closing frame; otherwise stops the writer at once.
pub(crate) async fn finish<S: Stream + Unpin>(mut inbound: S, mut writer: JoinHandle<()>, outbox: &Outbox) {
    if outbox.close_reason().is_some() {
        if tokio::time::timeout(CLOSE_GRACE, &mut writer).await.is_err() {
            writer.abort();
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, async { while inbound.next().await.is_some() {} }).await;
    } else {
        writer.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use lockstep_protocol::{ViewerCount, decode_server};

    use super::*;
    use crate::hub::Outgoing;

    /// A transport that records what it was asked to do.
    #[derive(Debug, Default, Clone)]
    struct Recorder {
        log: Arc<Mutex<Vec<String>>>,
        datagrams: usize,
    }

    impl Recorder {
        fn note(&self, s: String) {
            self.log.lock().unwrap().push(s);
        }
    }

    fn name(bytes: &[u8]) -> &'static str {
        decode_server(bytes).map(|m| m.name()).unwrap_or("?")
    }

    impl Transport for Recorder {
        fn datagram_limit(&self) -> usize {
            self.datagrams
        }
        fn send_datagram(&mut self, bytes: &Bytes) -> bool {
            self.note(format!("dgram {}", name(bytes)));
            true
        }
        async fn send(&mut self, frames: Vec<Wire>) -> std::io::Result<()> {
            let names: Vec<&str> = frames
                .iter()
                .map(|f| match f {
                    Wire::Binary(b) => name(b),
                    Wire::Text(_) => "text",
                })
                .collect();
            self.note(format!("send {}", names.join(",")));
            Ok(())
        }
        async fn close(&mut self, code: ErrorCode, reason: &str) {
            self.note(format!("close {} {reason}", code.as_u16()));
        }
    }

    async fn run(datagrams: usize, caps: u32) -> Vec<String> {
        let outbox = Arc::new(Outbox::new(8));
        outbox.set_caps(caps);
        outbox.push(Outgoing::new(ServerMsg::ViewerCount(ViewerCount { count: 3 })));
        outbox.push_pong(7, 1);
        outbox.close(ErrorCode::ShuttingDown, "bye");
        let rec = Recorder { datagrams, ..Recorder::default() };
        write_loop(rec.clone(), outbox, ServerClock::new()).await;
        rec.log.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn one_batch_one_write_then_the_closing_error_and_the_close() {
        assert_eq!(run(0, caps::DATAGRAMS).await, vec!["send pong,viewer_count,error", "close 4014 bye"]);
    }

    #[tokio::test]
    async fn pongs_go_as_datagrams_only_to_clients_that_asked() {
        assert_eq!(run(1200, caps::DATAGRAMS).await, vec!["dgram pong", "send viewer_count,error", "close 4014 bye"]);
        assert_eq!(run(1200, 0).await, vec!["send pong,viewer_count,error", "close 4014 bye"]);
    }

    #[test]
    fn close_reasons_are_cut_on_char_boundaries() {
        let s = "é".repeat(80);
        let r = close_reason(&s);
        assert!(r.len() <= 100);
        assert_eq!(close_reason("short"), "short");
    }
}
