//! A connection's outbound queue, shared by the room (producer, through
//! [`Link`]), the session (its own errors and pongs) and the connection's
//! writer (consumer, [`super::writer`]).
//!
//! Reliable messages are bounded: a connection that falls `cap` messages
//! behind is closed as a slow consumer, so it never delays anyone else. Ticks
//! are latest-wins: a tick that was not yet written is replaced, never
//! queued. Pongs are stamped with the server's send time by the writer, at
//! write time. Items are the room's shared [`Outgoing`] messages; the
//! connection's [`Encoder`] turns them into frames when they are written.
//!
//! The fast path: a transport that can write without its writer task (a
//! WebSocket on a plain TCP socket) installs a [`Direct`] handle. A room's
//! fan-out then writes a member's messages straight into the socket, under
//! the outbox lock and only while nothing is queued and no writer batch is
//! in flight, so order is kept. What the socket does not take at once stays
//! in the transport's own queue, and the writer is woken to drain it; until
//! it has, everything goes through the queue as before.
//!
//! For a client that takes changes as datagrams only
//! (`caps::DATAGRAM_CHANGES`), the outbox also keeps the newest change the
//! writer sent only as a datagram, so that a `Nack` can have it repaired on
//! the reliable queue, once ([`Outbox::repair`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use lockstep_protocol::{ErrorCode, ErrorMsg, ServerMsg};
use tokio::sync::{Notify, watch};

use super::encode::Encoder;
use crate::hub::{Link, Outgoing};
use crate::room::MemberId;

/// Why and how a connection is being closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Close {
    /// The code (also the close code).
    pub(crate) code: ErrorCode,
    /// An explanation.
    pub(crate) message: String,
}

/// Everything ready to write, taken at once.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Reliable messages, in order.
    pub(crate) frames: Vec<Arc<Outgoing>>,
    /// The newest tick, if one is waiting.
    pub(crate) tick: Option<Arc<Outgoing>>,
    /// Pongs to send: `(client_time, server_recv_us)`.
    pub(crate) pongs: Vec<(u64, u64)>,
    /// Set when the connection must close after writing the rest.
    pub(crate) close: Option<Close>,
    /// Set when the fast path left bytes in the transport: write them out
    /// (with the rest) before the batch counts as written.
    pub(crate) drain: bool,
}

impl Batch {
    /// Messages in the batch (reliable ones, the tick and pongs).
    pub(crate) fn len(&self) -> usize {
        self.frames.len() + usize::from(self.tick.is_some()) + self.pongs.len()
    }
}

#[derive(Debug, Default)]
struct Inner {
    frames: VecDeque<Arc<Outgoing>>,
    tick: Option<Arc<Outgoing>>,
    pongs: VecDeque<(u64, u64)>,
    close: Option<Close>,
    close_taken: bool,
    /// A batch was taken and is not yet written (or the fast path left bytes
    /// for the writer): the fast path must not overtake it.
    busy: bool,
    /// The fast path left bytes in the transport for the writer.
    drain: bool,
}

impl Inner {
    fn idle_queue(&self) -> bool {
        self.frames.is_empty() && self.tick.is_none() && self.pongs.is_empty()
    }

    /// Nothing queued and nothing in flight: a direct write keeps order.
    fn idle(&self) -> bool {
        !self.busy && self.idle_queue()
    }
}

/// What offering messages to the outbox did.
#[derive(Debug, Clone, Copy)]
struct Offered {
    /// The connection is open (not closing, not closed as a slow consumer).
    open: bool,
    /// A tick that was waiting was replaced.
    replaced: bool,
}

/// What a direct write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DirectWrite {
    /// The socket took every byte.
    Done,
    /// Accepted, but some bytes wait in the transport's queue for the writer.
    Pending,
    /// Not written (the socket failed): queue as usual.
    Refused,
}

/// A transport's handle for writing from the fan-out (see the module docs).
pub(crate) trait Direct: Send + Sync + std::fmt::Debug {
    /// Writes `outs` (in order, whole) now, or keeps what the socket does
    /// not take for the writer. Never blocks.
    fn try_write(&self, outs: &[&Arc<Outgoing>]) -> DirectWrite;
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Outbox {
    inner: Mutex<Inner>,
    notify: Notify,
    closed: watch::Sender<bool>,
    cap: usize,
    encoder: Arc<dyn Encoder>,
    /// The capability bits of the client's `Hello` (0 until then).
    caps: AtomicU32,
    /// The member id in the room (0 until joined).
    member: AtomicU32,
    /// The transport's fast path, if it has one.
    direct: OnceLock<Arc<dyn Direct>>,
    /// The newest `TimelineChanged` sent only as a datagram and not repaired
    /// since (kept apart from `inner`: the writer and `Nack`s use it, never
    /// the room's fan-out).
    unrepaired: Mutex<Option<Arc<Outgoing>>>,
}

const MAX_PONGS: usize = 8;

impl Outbox {
    /// An empty outbox holding at most `cap` reliable messages, written in
    /// the binary protocol.
    pub(crate) fn new(cap: usize) -> Self {
        Self::with_encoder(cap, Arc::new(super::encode::Binary))
    }

    /// An empty outbox whose messages `encoder` writes.
    pub(crate) fn with_encoder(cap: usize, encoder: Arc<dyn Encoder>) -> Self {
        Outbox {
            inner: Mutex::default(),
            notify: Notify::new(),
            closed: watch::Sender::new(false),
            cap,
            encoder,
            caps: AtomicU32::new(0),
            member: AtomicU32::new(0),
            direct: OnceLock::new(),
            unrepaired: Mutex::new(None),
        }
    }

    /// Installs the transport's fast path (binary protocol only: its frames
    /// are the room's shared ones).
    pub(crate) fn set_direct(&self, direct: Arc<dyn Direct>) {
        if self.encoder.is_binary() {
            let _ = self.direct.set(direct);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection's encoder.
    pub(crate) fn encoder(&self) -> &Arc<dyn Encoder> {
        &self.encoder
    }

    /// The capability bits the client announced.
    pub(crate) fn caps(&self) -> u32 {
        self.caps.load(Ordering::Relaxed)
    }

    /// The client's member id in its room (0 before it joined).
    pub(crate) fn member(&self) -> MemberId {
        self.member.load(Ordering::Relaxed)
    }

    /// Records what the session learned at join time.
    pub(crate) fn set_joined(&self, member: MemberId, caps: u32) {
        self.caps.store(caps, Ordering::Relaxed);
        self.member.store(member, Ordering::Relaxed);
    }

    /// Records the capability bits as soon as a `Hello` is accepted.
    pub(crate) fn set_caps(&self, caps: u32) {
        self.caps.store(caps, Ordering::Relaxed);
    }

    /// Queues a reliable message. Returns `false` if the connection is
    /// closing; a full queue closes it as a slow consumer.
    pub(crate) fn push(&self, out: Arc<Outgoing>) -> bool {
        let g = self.lock();
        if g.close.is_some() {
            return false;
        }
        self.queue_all(g, &[&out], false).open
    }

    /// Queues an error for this connection alone.
    pub(crate) fn push_error(&self, code: ErrorCode, message: &str, request_id: u32) {
        self.push(Outgoing::new(ServerMsg::Error(ErrorMsg::new(code, message, request_id))));
    }

    /// Replaces the waiting tick (or, on a fast-path connection with nothing
    /// waiting, writes it at once). Returns whether an unsent tick was dropped.
    pub(crate) fn set_tick(&self, out: &Arc<Outgoing>) -> bool {
        self.offer(&[out], true).replaced
    }

    /// Queues a pong (oldest dropped beyond a few).
    pub(crate) fn push_pong(&self, client_time: u64, server_recv_us: u64) {
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

    /// The writer sent `change` (a `TimelineChanged`) only as a datagram
    /// (`Some`), or sent a change on the stream (`None`, which supersedes any
    /// older datagram-only one): what a `Nack` may repair.
    pub(crate) fn set_unrepaired(&self, change: Option<&Arc<Outgoing>>) {
        *self.unrepaired.lock().unwrap_or_else(|e| e.into_inner()) = change.cloned();
    }

    /// Answers a client's `Nack { epoch }`: queues the newest change sent only
    /// as a datagram on the reliable queue if it is newer than `epoch`. Each
    /// change is repaired at most once (a second `Nack` finds nothing).
    /// Returns whether a change was queued.
    pub(crate) fn repair(&self, epoch: u32) -> bool {
        let Some(change) = self.unrepaired.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return false;
        };
        match &change.msg {
            ServerMsg::TimelineChanged(c) if newer(c.timeline.epoch, epoch) => self.push(change),
            _ => false,
        }
    }

    /// The epoch of the change a `Nack` would repair now.
    #[cfg(test)]
    pub(crate) fn unrepaired_epoch(&self) -> Option<u32> {
        match self.unrepaired.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|o| &o.msg) {
            Some(ServerMsg::TimelineChanged(c)) => Some(c.timeline.epoch),
            _ => None,
        }
    }

    /// Asks the writer to close the connection after what is queued; the
    /// first reason wins.
    pub(crate) fn close(&self, code: ErrorCode, message: impl Into<String>) {
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
    pub(crate) fn close_reason(&self) -> Option<Close> {
        self.lock().close.clone()
    }

    /// Resolves once a close has been requested.
    pub(crate) async fn closed(&self) {
        let mut rx = self.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Waits for something to write and takes all of it. After the batch that
    /// carries `close`, it never resolves again.
    pub(crate) async fn next_batch(&self) -> Batch {
        loop {
            {
                let mut g = self.lock();
                if !g.close_taken {
                    let close = g.close.clone();
                    if close.is_some() || g.drain || !g.idle_queue() {
                        g.close_taken = close.is_some();
                        g.busy = true;
                        return Batch {
                            frames: g.frames.drain(..).collect(),
                            tick: g.tick.take(),
                            pongs: g.pongs.drain(..).collect(),
                            close,
                            drain: std::mem::take(&mut g.drain),
                        };
                    }
                }
            }
            self.notify.notified().await;
        }
    }
}

impl Outbox {
    /// The writer wrote its batch: the fast path may write again (once the
    /// queue is empty).
    pub(crate) fn written(&self) {
        self.lock().busy = false;
    }

    /// Delivers a room's messages for this member, in order, ticks latest
    /// wins: straight into the socket where the fast path can, else queued
    /// with one wake-up. `false` if the connection is closing.
    pub(crate) fn deliver(&self, outs: &[&Arc<Outgoing>]) -> bool {
        self.offer(outs, false).open
    }

    /// [`Outbox::deliver`] (with `as_tick`, `outs` take the tick's place),
    /// also saying whether a waiting tick was replaced.
    fn offer(&self, outs: &[&Arc<Outgoing>], as_tick: bool) -> Offered {
        let mut g = self.lock();
        if g.close.is_some() {
            return Offered { open: false, replaced: false };
        }
        if let Some(direct) = self.direct.get()
            && g.idle()
        {
            match direct.try_write(outs) {
                DirectWrite::Done => return Offered { open: true, replaced: false },
                DirectWrite::Pending => {
                    g.busy = true;
                    g.drain = true;
                    drop(g);
                    self.notify.notify_one();
                    return Offered { open: true, replaced: false };
                }
                DirectWrite::Refused => {}
            }
        }
        self.queue_all(g, outs, as_tick)
    }

    /// Queues `outs` (ticks latest wins) and wakes the writer; a full queue
    /// closes the connection as a slow consumer (not `open`).
    fn queue_all(&self, mut g: std::sync::MutexGuard<'_, Inner>, outs: &[&Arc<Outgoing>], as_tick: bool) -> Offered {
        let mut replaced = false;
        for out in outs {
            if as_tick || out.is_tick() {
                replaced |= g.tick.replace(Arc::clone(out)).is_some();
            } else if !self.queue(&mut g, Arc::clone(out)) {
                drop(g);
                self.wake_closed();
                return Offered { open: false, replaced };
            }
        }
        drop(g);
        self.notify.notify_one();
        Offered { open: true, replaced }
    }

    /// Queues a reliable message; `false` (and the slow consumer's close
    /// set) when the queue is full.
    fn queue(&self, g: &mut Inner, out: Arc<Outgoing>) -> bool {
        if g.frames.len() >= self.cap {
            g.frames.clear();
            g.tick = None;
            g.close =
                Some(Close { code: ErrorCode::SlowConsumer, message: "the connection fell too far behind".into() });
            return false;
        }
        g.frames.push_back(out);
        true
    }
}

/// Whether epoch `a` is newer than `b`, in serial order (epochs wrap; clients
/// compare them the same way).
pub(crate) fn newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl crate::accounts::Revocable for Outbox {
    fn revoke(&self) {
        self.close(ErrorCode::DeviceRevoked, "this device was removed from the account");
    }
}

impl Link for Outbox {
    fn send(&self, out: &Arc<Outgoing>) -> bool {
        self.deliver(&[out])
    }

    fn tick(&self, out: &Arc<Outgoing>) -> bool {
        self.set_tick(out)
    }

    fn deliver(&self, outs: &[&Arc<Outgoing>]) -> bool {
        Outbox::deliver(self, outs)
    }
}

#[cfg(test)]
mod tests {
    use lockstep_protocol::ViewerCount;

    use super::*;

    fn msg(count: u32) -> Arc<Outgoing> {
        Outgoing::new(ServerMsg::ViewerCount(ViewerCount { count }))
    }

    fn counts(frames: &[Arc<Outgoing>]) -> Vec<u32> {
        frames
            .iter()
            .map(|o| match o.msg {
                ServerMsg::ViewerCount(c) => c.count,
                _ => u32::MAX,
            })
            .collect()
    }

    #[tokio::test]
    async fn ticks_are_latest_wins_and_frames_keep_order() {
        let o = Outbox::new(4);
        assert!(o.push(msg(1)));
        assert!(!o.set_tick(&msg(10)));
        assert!(o.set_tick(&msg(11)), "unsent tick replaced");
        assert!(o.push(msg(2)));
        o.push_pong(1, 2);
        let b = o.next_batch().await;
        assert_eq!(counts(&b.frames), vec![1, 2]);
        assert_eq!(counts(&[b.tick.clone().unwrap()]), vec![11]);
        assert_eq!(b.pongs, vec![(1, 2)]);
        assert!(b.close.is_none());
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn epochs_compare_in_serial_order() {
        assert!(newer(6, 5) && !newer(5, 5) && !newer(5, 6));
        assert!(newer(2, u32::MAX - 1), "2 follows 2^32 - 2 after a wrap");
        assert!(!newer(u32::MAX - 1, 2));
    }

    #[tokio::test]
    async fn a_full_queue_closes_as_slow_consumer() {
        let o = Outbox::new(2);
        assert!(o.push(msg(1)) && o.push(msg(2)));
        assert!(!o.push(msg(3)));
        o.closed().await;
        let b = o.next_batch().await;
        assert!(b.frames.is_empty(), "a slow consumer's backlog is dropped");
        assert_eq!(b.close.map(|c| c.code), Some(ErrorCode::SlowConsumer));
        assert!(!o.push(msg(4)));
        let again = tokio::time::timeout(std::time::Duration::from_millis(20), o.next_batch()).await;
        assert!(again.is_err(), "nothing after the close batch");
    }

    /// A fast path that records what it wrote and answers as told.
    #[derive(Debug, Default)]
    struct Fake {
        wrote: Mutex<Vec<u32>>,
        answer: Mutex<Option<DirectWrite>>,
    }

    impl Direct for Fake {
        fn try_write(&self, outs: &[&Arc<Outgoing>]) -> DirectWrite {
            let answer = self.answer.lock().unwrap().unwrap_or(DirectWrite::Done);
            if answer != DirectWrite::Refused {
                self.wrote.lock().unwrap().extend(counts(&outs.iter().map(|o| Arc::clone(o)).collect::<Vec<_>>()));
            }
            answer
        }
    }

    #[tokio::test]
    async fn the_fast_path_never_overtakes_a_batch_in_flight() {
        let o = Outbox::new(8);
        let fake = Arc::new(Fake::default());
        o.set_direct(fake.clone());
        assert!(o.deliver(&[&msg(1), &msg(2)]));
        assert_eq!(*fake.wrote.lock().unwrap(), vec![1, 2], "idle: written directly, in one call");
        o.push_pong(1, 1);
        assert!(o.deliver(&[&msg(3)]), "a pong is queued: this waits behind it");
        let b = o.next_batch().await;
        assert_eq!(counts(&b.frames), vec![3]);
        assert!(o.deliver(&[&msg(4)]), "the batch is in flight: queued");
        assert_eq!(*fake.wrote.lock().unwrap(), vec![1, 2]);
        o.written();
        let b = o.next_batch().await;
        assert_eq!(counts(&b.frames), vec![4]);
        o.written();
        assert!(o.deliver(&[&msg(5)]));
        assert_eq!(*fake.wrote.lock().unwrap(), vec![1, 2, 5], "idle again: direct");
    }

    #[tokio::test]
    async fn would_block_hands_off_to_the_writer_and_a_refusal_queues() {
        let o = Outbox::new(8);
        let fake = Arc::new(Fake::default());
        o.set_direct(fake.clone());
        *fake.answer.lock().unwrap() = Some(DirectWrite::Pending);
        assert!(o.deliver(&[&msg(1)]));
        assert!(o.deliver(&[&msg(2)]), "the transport holds bytes: queued behind them");
        let b = o.next_batch().await;
        assert!(b.drain, "the writer is asked to drain the transport");
        assert_eq!(counts(&b.frames), vec![2]);
        o.written();
        *fake.answer.lock().unwrap() = Some(DirectWrite::Refused);
        assert!(o.deliver(&[&msg(3)]));
        let b = o.next_batch().await;
        assert!(!b.drain);
        assert_eq!(counts(&b.frames), vec![3], "refused: the writer sends it");
    }

    #[test]
    fn only_the_binary_protocol_takes_a_fast_path() {
        #[derive(Debug)]
        struct Text;
        impl Encoder for Text {
            fn encode(&self, _: &Outgoing, _: MemberId) -> Option<super::super::encode::Wire> {
                None
            }
            fn error(&self, _: ErrorCode, _: &str, _: u32) -> super::super::encode::Wire {
                super::super::encode::Wire::Text(bytes::Bytes::new())
            }
            fn is_binary(&self) -> bool {
                false
            }
        }
        let o = Outbox::with_encoder(8, Arc::new(Text));
        let fake = Arc::new(Fake::default());
        o.set_direct(fake.clone());
        assert!(o.deliver(&[&msg(1)]));
        assert!(fake.wrote.lock().unwrap().is_empty());
    }
}
