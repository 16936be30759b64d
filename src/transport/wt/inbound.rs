//! What a WebTransport session reads: datagrams, the client's one stream of
//! length-prefixed frames, and QUIC-level activity, as [`Inbound`] items.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use lockstep_protocol::FrameDecoder;
use lockstep_protocol::limits::MAX_DATAGRAM;
use tokio::sync::oneshot;
use tracing::debug;
use wtransport::{Connection, RecvStream, SendStream};

use super::KEEP_ALIVE;
use crate::session::Inbound;

/// How often QUIC-level traffic counts as session activity.
const ACTIVITY_CHECK: Duration = KEEP_ALIVE;
/// Bytes read from the stream at once. The buffer lives as long as the
/// session; clients send small messages (a `Hello` of up to about 4.4 KB
/// takes a few reads, the frame decoder joins them).
const READ_CHUNK: usize = 512;

/// Inbound datagrams; `None` once the connection is gone.
pub(super) fn datagrams(conn: Connection) -> impl Stream<Item = Option<Inbound>> {
    futures_util::stream::unfold(Some(conn), |conn| async move {
        let c = conn?;
        loop {
            match c.receive_datagram().await {
                Ok(d) if d.payload().len() > MAX_DATAGRAM => crate::metrics::drop("oversized_datagram"),
                Ok(d) => return Some((Some(Inbound::Datagram(d.payload())), Some(c))),
                Err(e) => {
                    debug!(error = %e, "connection ended");
                    return Some((None, None));
                }
            }
        }
    })
}

/// The client's stream being read.
struct Reader {
    recv: RecvStream,
    decoder: FrameDecoder,
    queue: VecDeque<Inbound>,
    buf: Box<[u8]>,
    conn: Connection,
    /// Whether further streams are still being watched for (to be refused).
    watch_extra: bool,
}

enum FrameState {
    /// Waiting for the client's bidirectional stream.
    Accepting(Connection, oneshot::Sender<SendStream>),
    Reading(Box<Reader>),
    /// Ended: yield what is queued, then `None`.
    Ending(VecDeque<Inbound>),
    Done,
}

/// Frames from the client's stream; `None` when it ends (or cannot be read).
pub(super) fn frames(conn: Connection, stream_tx: oneshot::Sender<SendStream>) -> impl Stream<Item = Option<Inbound>> {
    futures_util::stream::unfold(FrameState::Accepting(conn, stream_tx), |state| async move {
        let mut state = state;
        loop {
            state = match state {
                FrameState::Accepting(conn, tx) => match conn.accept_bi().await {
                    Ok((send, recv)) => {
                        let _ = tx.send(send);
                        FrameState::Reading(Box::new(Reader {
                            recv,
                            decoder: FrameDecoder::new(),
                            queue: VecDeque::new(),
                            buf: vec![0; READ_CHUNK].into_boxed_slice(),
                            conn,
                            watch_extra: true,
                        }))
                    }
                    Err(e) => {
                        debug!(error = %e, "no stream");
                        return Some((None, FrameState::Done));
                    }
                },
                FrameState::Reading(mut r) => {
                    if let Some(item) = r.queue.pop_front() {
                        return Some((Some(item), FrameState::Reading(r)));
                    }
                    r.read().await
                }
                FrameState::Ending(mut queue) => {
                    return match queue.pop_front() {
                        Some(item) => Some((Some(item), FrameState::Ending(queue))),
                        None => Some((None, FrameState::Done)),
                    };
                }
                FrameState::Done => return None,
            };
        }
    })
}

impl Reader {
    /// Reads once and queues the complete frames.
    async fn read(mut self: Box<Self>) -> FrameState {
        let Reader { recv, buf, conn, watch_extra, .. } = &mut *self;
        let read = tokio::select! {
            r = recv.read(buf) => r,
            extra = conn.accept_bi(), if *watch_extra => {
                match extra {
                    Ok(_) => {
                        // Dropping it stops it; one stream per session.
                        debug!("extra bidirectional stream refused");
                        crate::metrics::drop("extra_stream");
                    }
                    Err(_) => *watch_extra = false,
                }
                return FrameState::Reading(self);
            }
        };
        match read {
            Ok(Some(n)) => {
                self.decoder.push(&self.buf[..n]);
                loop {
                    match self.decoder.next_frame() {
                        Ok(Some(frame)) => self.queue.push_back(Inbound::Frame(Bytes::from(frame))),
                        Ok(None) => return FrameState::Reading(self),
                        Err(e) => {
                            // A bad prefix: the stream cannot be resynchronised.
                            let len = match e {
                                lockstep_protocol::DecodeError::TooLarge { len, .. } => len as usize,
                                _ => self.decoder.buffered(),
                            };
                            self.queue.push_back(Inbound::TooLarge(len));
                            return FrameState::Ending(std::mem::take(&mut self.queue));
                        }
                    }
                }
            }
            Ok(None) => FrameState::Ending(std::mem::take(&mut self.queue)),
            Err(e) => {
                debug!(error = %e, "stream read ended");
                FrameState::Ending(std::mem::take(&mut self.queue))
            }
        }
    }
}

/// [`Inbound::Activity`] while QUIC packets keep arriving (keep-alive
/// acknowledgements included), like WebSocket pongs do; never ends.
pub(super) fn activity(conn: Connection) -> impl Stream<Item = Option<Inbound>> {
    futures_util::stream::unfold((conn, 0u64), |(conn, mut seen)| async move {
        loop {
            tokio::time::sleep(ACTIVITY_CHECK).await;
            let now = conn.quic_connection().stats().udp_rx.datagrams;
            if now != seen {
                seen = now;
                return Some((Some(Inbound::Activity), (conn, seen)));
            }
        }
    })
}

/// When the connection's round trip is first read, then how often
/// ([`Inbound::Rtt`]: QUIC's smoothed RTT, for the room's lead).
const RTT_FIRST: Duration = Duration::from_millis(500);
/// See [`RTT_FIRST`].
const RTT_EVERY: Duration = Duration::from_secs(5);

/// The connection's round trip now and then ([`Inbound::Rtt`], not activity:
/// QUIC measures it from its own acknowledgements); never ends.
pub(super) fn rtt(conn: Connection) -> impl Stream<Item = Option<Inbound>> {
    futures_util::stream::unfold((conn, RTT_FIRST), |(conn, wait)| async move {
        tokio::time::sleep(wait).await;
        let rtt = conn.rtt();
        Some((Some(Inbound::Rtt { rtt, heard: false }), (conn, RTT_EVERY)))
    })
}
