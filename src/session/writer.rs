//! The one outbound path: a writer task per connection drains its
//! [`Outbox`] into a [`Transport`], for every transport alike. It stamps
//! pongs at write time, sends ticks, pongs and change copies as datagrams
//! where the transport has them and the client asked for them, writes each
//! batch of reliable frames at once (one `write` where the transport can),
//! writes the closing `Error`, and closes. [`finish`] then runs the close
//! grace after the session.
//!
//! Changes: to a client with `DATAGRAMS` a copy of each `TimelineChanged`
//! goes as a datagram before the stream copy; to one that also set
//! `DATAGRAM_CHANGES`, each change goes once, as a datagram only, and the
//! outbox remembers it for a `Nack` ([`Outbox::repair`]). Such a change goes on
//! the stream instead when it does not fit a datagram, when the datagram
//! could not be queued, when it is in the batch of the `Welcome` (a datagram
//! must not overtake it), and when it is not newer than the newest change
//! already sent as a datagram (a repair).
//!
//! A transport only knows how to move bytes: see [`Transport`].

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use lockstep_protocol::{ErrorCode, Pong, ServerMsg, caps, encode_server};
use tokio::task::JoinHandle;

use super::encode::Wire;
use super::outbox::{Outbox, newer};
use crate::clock::ServerClock;

/// How long a closing connection gets to flush its last frames and close,
/// and then for the peer to answer the close.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// When the first keep-alive goes out (then every `keepalive_interval`).
const FIRST_KEEPALIVE: Duration = Duration::from_secs(1);

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
        // The first one soon: a WebSocket ping times the round trip the room's lead needs (`room/reach.rs`).
        let first = every.min(FIRST_KEEPALIVE);
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + first, every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let encoder = outbox.encoder().clone();
    // The epoch of the newest change sent only as a datagram.
    let mut newest_datagram: Option<u32> = None;
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
        let caps = outbox.caps();
        let limit = if encoder.is_binary() && caps & caps::DATAGRAMS != 0 { transport.datagram_limit() } else { 0 };
        // Changes as datagrams only, but not in the batch of the `Welcome`.
        let once = limit > 0 && caps & caps::DATAGRAM_CHANGES != 0;
        let welcome = once && batch.frames.iter().any(|o| matches!(o.msg, ServerMsg::Welcome(_)));
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
            if let ServerMsg::TimelineChanged(c) = &out.msg {
                let fits = out.binary().len() <= limit;
                let epoch = c.timeline.epoch;
                if once {
                    // A change not newer than one sent as a datagram is a
                    // repair: the stream carries it, and it changes nothing.
                    if newest_datagram.is_none_or(|n| newer(epoch, n)) {
                        // Once, as a datagram; the stream only repairs it.
                        if !welcome && fits && transport.send_datagram(out.binary()) {
                            newest_datagram = Some(epoch);
                            outbox.set_unrepaired(Some(out));
                            continue;
                        }
                        // On the stream: it supersedes older datagram-only ones.
                        outbox.set_unrepaired(None);
                    }
                } else if fits {
                    // A copy, so it arrives fast even while the stream is
                    // blocked; the stream copy follows.
                    transport.send_datagram(out.binary());
                }
            }
            frames.extend(encoder.encode(out, me));
        }
        let tick = batch.tick.filter(|t| !(t.binary().len() <= limit && transport.send_datagram(t.binary())));
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

    use lockstep_protocol::{
        ChangeReason, ControlPolicy, Limits, Role, Timeline, TimelineChanged, ViewerCount, Welcome, decode_server,
    };
    use tokio::sync::mpsc;

    use super::*;
    use crate::hub::Outgoing;

    /// A transport that records what it was asked to do.
    #[derive(Debug, Default, Clone)]
    struct Recorder {
        log: Arc<Mutex<Vec<String>>>,
        /// Each note as it happens, for tests that watch a running writer.
        tx: Option<mpsc::UnboundedSender<String>>,
        datagrams: usize,
        /// Refuse every datagram (a full or closed datagram queue).
        refuse_datagrams: bool,
    }

    impl Recorder {
        fn note(&self, s: String) {
            if let Some(tx) = &self.tx {
                let _ = tx.send(s.clone());
            }
            self.log.lock().unwrap().push(s);
        }
    }

    /// The message's name, with the epoch of a change.
    fn name(bytes: &[u8]) -> String {
        match decode_server(bytes) {
            Ok(ServerMsg::TimelineChanged(c)) => format!("timeline_changed {}", c.timeline.epoch),
            Ok(m) => m.name().into(),
            Err(_) => "?".into(),
        }
    }

    impl Transport for Recorder {
        fn datagram_limit(&self) -> usize {
            self.datagrams
        }
        fn send_datagram(&mut self, bytes: &Bytes) -> bool {
            if self.refuse_datagrams {
                return false;
            }
            self.note(format!("dgram {}", name(bytes)));
            true
        }
        async fn send(&mut self, frames: Vec<Wire>) -> std::io::Result<()> {
            let names: Vec<String> = frames
                .iter()
                .map(|f| match f {
                    Wire::Binary(b) => name(b),
                    Wire::Text(_) => "text".into(),
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

    const ONCE: u32 = caps::DATAGRAMS | caps::DATAGRAM_CHANGES;

    /// A change of `epoch`: 11 bytes, or 35 when `big`.
    fn change(epoch: u32, big: bool) -> Arc<Outgoing> {
        let (v, eff) = if big { (u64::MAX, u64::MAX) } else { (0, 0) };
        let timeline = Timeline { epoch, position_ms: v, anchor_us: v, rate_milli: 1000, paused: false };
        let c = TimelineChanged { timeline, effective_at_us: eff, by: 0, reason: ChangeReason::Seek };
        Outgoing::new(ServerMsg::TimelineChanged(c))
    }

    fn count(n: u32) -> Arc<Outgoing> {
        Outgoing::new(ServerMsg::ViewerCount(ViewerCount { count: n }))
    }

    /// One batch of `msgs` through a writer (then closed); the log and the outbox.
    async fn batch(rec: Recorder, caps: u32, msgs: &[Arc<Outgoing>]) -> (Vec<String>, Arc<Outbox>) {
        let outbox = Arc::new(Outbox::new(8));
        outbox.set_caps(caps);
        for m in msgs {
            outbox.push(m.clone());
        }
        outbox.close(ErrorCode::ShuttingDown, "bye");
        write_loop(rec.clone(), outbox.clone(), ServerClock::new()).await;
        let log = rec.log.lock().unwrap().clone();
        (log, outbox)
    }

    fn rec(datagrams: usize) -> Recorder {
        Recorder { datagrams, ..Recorder::default() }
    }

    #[tokio::test]
    async fn with_datagram_changes_a_change_goes_once_as_a_datagram() {
        let (log, outbox) = batch(rec(1200), ONCE, &[change(5, false), count(2)]).await;
        assert_eq!(log, vec!["dgram timeline_changed 5", "send viewer_count,error", "close 4014 bye"]);
        assert_eq!(outbox.unrepaired_epoch(), Some(5), "remembered for a Nack");
    }

    #[tokio::test]
    async fn older_clients_keep_the_datagram_copy_and_the_stream_copy() {
        let (log, outbox) = batch(rec(1200), caps::DATAGRAMS, &[change(5, false), count(2)]).await;
        assert_eq!(
            log,
            vec!["dgram timeline_changed 5", "send timeline_changed 5,viewer_count,error", "close 4014 bye"]
        );
        assert_eq!(outbox.unrepaired_epoch(), None, "nothing to repair: the stream carried it");
        // Without DATAGRAMS the new bit means nothing.
        let (log, _) = batch(rec(1200), caps::DATAGRAM_CHANGES, &[change(5, false)]).await;
        assert_eq!(log, vec!["send timeline_changed 5,error", "close 4014 bye"]);
        // Nor over a transport without datagrams (WebSocket).
        let (log, _) = batch(rec(0), ONCE, &[change(5, false)]).await;
        assert_eq!(log, vec!["send timeline_changed 5,error", "close 4014 bye"]);
    }

    #[tokio::test]
    async fn a_change_too_large_for_a_datagram_or_refused_goes_on_the_stream() {
        // 20 bytes: the small change (11) fits, the large one (35) does not.
        let (log, outbox) = batch(rec(20), ONCE, &[change(5, false), change(6, true)]).await;
        assert_eq!(log, vec!["dgram timeline_changed 5", "send timeline_changed 6,error", "close 4014 bye"]);
        assert_eq!(outbox.unrepaired_epoch(), None, "the stream's newer change supersedes the datagram-only one");
        let refusing = Recorder { refuse_datagrams: true, ..rec(1200) };
        let (log, outbox) = batch(refusing, ONCE, &[change(5, false)]).await;
        assert_eq!(log, vec!["send timeline_changed 5,error", "close 4014 bye"]);
        assert_eq!(outbox.unrepaired_epoch(), None);
    }

    #[tokio::test]
    async fn changes_written_with_the_welcome_go_on_the_stream() {
        let welcome = Outgoing::new(ServerMsg::Welcome(Welcome {
            member_id: 1,
            role: Role::Viewer,
            timeline: Timeline::start(0),
            server_time_us: 0,
            viewers: 1,
            policy: ControlPolicy::HostOnly,
            limits: Limits {
                max_frame: 8192,
                max_datagram: 1200,
                max_msgs_per_sec: 50,
                tick_interval_ms: 250,
                report_interval_ms: 1000,
            },
        }));
        let (log, outbox) = batch(rec(1200), ONCE, &[welcome, change(5, false)]).await;
        assert_eq!(log, vec!["send welcome,timeline_changed 5,error", "close 4014 bye"]);
        assert_eq!(outbox.unrepaired_epoch(), None);
    }

    /// The "a lost datagram repaired": the change went only as a
    /// datagram, which the client never got; its `Nack` brings the change on
    /// the stream, once.
    #[tokio::test]
    async fn a_lost_datagram_is_repaired_on_the_stream_once() {
        let outbox = Arc::new(Outbox::new(8));
        outbox.set_caps(ONCE);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let rec = Recorder { tx: Some(tx), ..rec(1200) };
        let writer = tokio::spawn(write_loop(rec, outbox.clone(), ServerClock::new()));
        let mut next = async || rx.recv().await.expect("the writer runs");

        outbox.push(change(5, false));
        assert_eq!(next().await, "dgram timeline_changed 5");
        // Lost. A tick of epoch 5 tells the client, which holds epoch 4.
        assert!(outbox.repair(4), "repaired");
        assert_eq!(next().await, "send timeline_changed 5");
        // A second Nack for the same epoch (the client did not wait) resends nothing.
        assert!(!outbox.repair(4), "not twice");
        outbox.push(count(9));
        assert_eq!(next().await, "send viewer_count", "nothing was queued before it");

        // A Nack from a client that already holds the newest change is not answered.
        outbox.push(change(6, false));
        assert_eq!(next().await, "dgram timeline_changed 6");
        assert!(!outbox.repair(6));
        // Only the newest is repaired: it carries the whole timeline.
        outbox.push(change(7, false));
        outbox.push(change(8, false));
        assert_eq!(next().await, "dgram timeline_changed 7");
        assert_eq!(next().await, "dgram timeline_changed 8");
        assert!(outbox.repair(6));
        assert_eq!(next().await, "send timeline_changed 8");
        // A repair that crosses a newer change goes on the stream and leaves
        // the newer one to be repaired.
        outbox.push(change(9, false));
        assert_eq!(next().await, "dgram timeline_changed 9");
        outbox.push(change(8, false));
        assert_eq!(next().await, "send timeline_changed 8");
        assert_eq!(outbox.unrepaired_epoch(), Some(9));
        assert!(outbox.repair(8));
        assert_eq!(next().await, "send timeline_changed 9");

        outbox.close(ErrorCode::ShuttingDown, "bye");
        writer.await.unwrap();
    }

    #[test]
    fn close_reasons_are_cut_on_char_boundaries() {
        let s = "é".repeat(80);
        let r = close_reason(&s);
        assert!(r.len() <= 100);
        assert_eq!(close_reason("short"), "short");
    }
}
