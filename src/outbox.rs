//! A connection's outbound queue, shared by the room (producer) and the
//! transport's writer task (consumer).
//!
//! Reliable frames are bounded: a connection that falls `cap` frames behind is
//! closed as a slow consumer, so it never delays anyone else. Ticks are
//! latest-wins: a tick that was not yet written is replaced, never queued.
//! Pongs are stamped with the server's send time by the writer, at write time.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use lockstep_protocol::ErrorCode;
use tokio::sync::{Notify, watch};

/// How a reliable frame is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A binary protocol message.
    Binary,
    /// A binary protocol message that datagram transports also send as a
    /// datagram, so it arrives fast even while the stream is blocked.
    BinaryFast,
    /// A JSON-dialect text message.
    Text,
}

/// One queued frame: shared bytes, encoded once per room.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The bytes.
    pub bytes: Bytes,
    /// How they are carried.
    pub kind: FrameKind,
}

/// Why and how a connection is being closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The code (also the close code).
    pub code: ErrorCode,
    /// An explanation.
    pub message: String,
}

/// Everything ready to write, taken at once.
#[derive(Debug, Default)]
pub struct Batch {
    /// Reliable frames, in order.
    pub frames: Vec<Frame>,
    /// The newest tick, if one is waiting.
    pub tick: Option<Bytes>,
    /// Pongs to send: `(client_time, server_recv_us)`.
    pub pongs: Vec<(u64, u64)>,
    /// Set when the connection must close after writing the rest.
    pub close: Option<Close>,
}

#[derive(Debug, Default)]
struct Inner {
    frames: VecDeque<Frame>,
    tick: Option<Bytes>,
    pongs: VecDeque<(u64, u64)>,
    close: Option<Close>,
    close_taken: bool,
}

/// See the module docs.
#[derive(Debug)]
pub struct Outbox {
    inner: Mutex<Inner>,
    notify: Notify,
    closed: watch::Sender<bool>,
    cap: usize,
}

const MAX_PONGS: usize = 8;

impl Outbox {
    /// An empty outbox holding at most `cap` reliable frames.
    pub fn new(cap: usize) -> Self {
        Outbox { inner: Mutex::default(), notify: Notify::new(), closed: watch::Sender::new(false), cap }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a reliable frame. Returns `false` if the connection is closing;
    /// a full queue closes it as a slow consumer.
    pub fn push(&self, frame: Frame) -> bool {
        let mut g = self.lock();
        if g.close.is_some() {
            return false;
        }
        if g.frames.len() >= self.cap {
            g.frames.clear();
            g.tick = None;
            g.close =
                Some(Close { code: ErrorCode::SlowConsumer, message: "the connection fell too far behind".into() });
            drop(g);
            self.wake_closed();
            return false;
        }
        g.frames.push_back(frame);
        drop(g);
        self.notify.notify_one();
        true
    }

    /// Replaces the waiting tick. Returns whether an unsent tick was dropped.
    pub fn set_tick(&self, bytes: Bytes) -> bool {
        let mut g = self.lock();
        if g.close.is_some() {
            return false;
        }
        let replaced = g.tick.replace(bytes).is_some();
        drop(g);
        self.notify.notify_one();
        replaced
    }

    /// Queues a pong (oldest dropped beyond a few).
    pub fn push_pong(&self, client_time: u64, server_recv_us: u64) {
        let mut g = self.lock();
        if g.close.is_some() {
            return;
        }
        if g.pongs.len() >= MAX_PONGS {
            g.pongs.pop_front();
        }
        g.pongs.push_back((client_time, server_recv_us));
        drop(g);
        self.notify.notify_one();
    }

    /// Asks the writer to close the connection after what is queued; the
    /// first reason wins.
    pub fn close(&self, code: ErrorCode, message: impl Into<String>) {
        let mut g = self.lock();
        if g.close.is_none() {
            g.close = Some(Close { code, message: message.into() });
        }
        drop(g);
        self.wake_closed();
    }

    fn wake_closed(&self) {
        self.closed.send_replace(true);
        self.notify.notify_one();
    }

    /// The close reason, once one is set.
    pub fn close_reason(&self) -> Option<Close> {
        self.lock().close.clone()
    }

    /// Resolves once a close has been requested.
    pub async fn closed(&self) {
        let mut rx = self.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Waits for something to write and takes all of it. After the batch that
    /// carries `close`, it never resolves again.
    pub async fn next_batch(&self) -> Batch {
        loop {
            {
                let mut g = self.lock();
                if !g.close_taken {
                    let close = g.close.clone();
                    if close.is_some() || !g.frames.is_empty() || g.tick.is_some() || !g.pongs.is_empty() {
                        g.close_taken = close.is_some();
                        return Batch {
                            frames: g.frames.drain(..).collect(),
                            tick: g.tick.take(),
                            pongs: g.pongs.drain(..).collect(),
                            close,
                        };
                    }
                }
            }
            self.notify.notified().await;
        }
    }
}

impl crate::accounts::Revocable for Outbox {
    fn revoke(&self) {
        self.close(ErrorCode::DeviceRevoked, "this device was removed from the account");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(b: &'static [u8]) -> Frame {
        Frame { bytes: Bytes::from_static(b), kind: FrameKind::Binary }
    }

    #[tokio::test]
    async fn ticks_are_latest_wins_and_frames_keep_order() {
        let o = Outbox::new(4);
        assert!(o.push(frame(b"a")));
        assert!(!o.set_tick(Bytes::from_static(b"t1")));
        assert!(o.set_tick(Bytes::from_static(b"t2")), "unsent tick replaced");
        assert!(o.push(frame(b"b")));
        o.push_pong(1, 2);
        let b = o.next_batch().await;
        assert_eq!(b.frames.iter().map(|f| &f.bytes[..]).collect::<Vec<_>>(), vec![b"a", b"b"]);
        assert_eq!(b.tick.as_deref(), Some(&b"t2"[..]));
        assert_eq!(b.pongs, vec![(1, 2)]);
        assert!(b.close.is_none());
    }

    #[tokio::test]
    async fn a_full_queue_closes_as_slow_consumer() {
        let o = Outbox::new(2);
        assert!(o.push(frame(b"1")) && o.push(frame(b"2")));
        assert!(!o.push(frame(b"3")));
        o.closed().await;
        let b = o.next_batch().await;
        assert!(b.frames.is_empty(), "a slow consumer's backlog is dropped");
        assert_eq!(b.close.map(|c| c.code), Some(ErrorCode::SlowConsumer));
        assert!(!o.push(frame(b"4")));
        let again = tokio::time::timeout(std::time::Duration::from_millis(20), o.next_batch()).await;
        assert!(again.is_err(), "nothing after the close batch");
    }
}
