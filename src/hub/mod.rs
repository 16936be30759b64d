//! The hub of rooms: one actor task per live room drives the sans-IO
//! [`crate::room::Room`] with the real clock and fans its output out to the
//! members' [`Link`]s.
//!
//! Each output becomes one shared [`Outgoing`], encoded at most once per room
//! and dialect. A room is created on first join and dropped after a grace
//! period once empty. Its mailbox is bounded ([`inbox`]); its timeline
//! changes are ordered by an [`Authority`] that it never awaits.

mod actor;
mod fanout;
mod inbox;
mod link;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockstep_protocol::{Action, LiveReport, Report, SyncReport};
use tokio::sync::{oneshot, watch};
use tracing::info;

use self::actor::RoomActor;
pub(crate) use self::inbox::Peaks;
use self::inbox::{Command, Inbox, Join};
pub(crate) use self::link::{Extra, Link, Outgoing};
use crate::authority::Authority;
use crate::clock::ServerClock;
use crate::room::{ChatRecord, ClockRequest, JoinInfo, MemberId, RoomConfig, RoomState};

/// A cheap handle to a live room.
#[derive(Debug, Clone)]
pub(crate) struct RoomHandle {
    inbox: Arc<Inbox>,
    /// Distinguishes a room from a later one with the same event id.
    generation: u64,
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

impl RoomHandle {
    /// A member's command; `false` if the room cannot take it now (its
    /// command queue is full, or it is gone).
    pub(crate) fn command(&self, member: MemberId, request_id: u32, action: Action, extra: Option<Arc<Extra>>) -> bool {
        self.inbox.command(Command { member, request_id, action, extra })
    }

    /// A member's report (latest wins).
    pub(crate) fn report(&self, member: MemberId, report: Report) {
        self.inbox.report(member, report);
    }

    /// A member's live report (latest wins).
    pub(crate) fn live_report(&self, member: MemberId, report: LiveReport) {
        self.inbox.live_report(member, report);
    }

    /// A member's measured drift (latest wins).
    pub(crate) fn sync_report(&self, member: MemberId, report: SyncReport) {
        self.inbox.sync_report(member, report);
    }

    /// A member's round trip as its transport measured it (latest wins).
    pub(crate) fn rtt(&self, member: MemberId, rtt: std::time::Duration) {
        self.inbox.rtt(member, u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX));
    }

    /// A member suspends itself for `reason`, or follows again (`None`).
    pub(crate) fn suspend(&self, member: MemberId, reason: Option<String>) {
        self.inbox.suspend(member, reason);
    }

    /// A member's media command; `false` if the room's command queue is full.
    pub(crate) fn media(&self, member: MemberId, request_id: u32, op: lockstep_protocol::MediaOp) -> bool {
        self.inbox.media(member, request_id, op)
    }

    /// A member's chat message; `false` if the room's mailbox is full.
    pub(crate) fn chat(&self, member: MemberId, request_id: u32, text: String) -> bool {
        self.inbox.chat(member, request_id, text)
    }

    /// A member's reaction; `false` if the room's mailbox dropped it.
    pub(crate) fn react(&self, member: MemberId, emoji: String) -> bool {
        self.inbox.react(member, emoji)
    }

    /// A member leaves.
    pub(crate) fn leave(&self, member: MemberId) {
        self.inbox.leave(member);
    }

    /// The high-water marks of the room's mailbox.
    pub(crate) fn mailbox_peaks(&self) -> Peaks {
        self.inbox.peaks()
    }

    /// The room's newest chat messages before `before` that it holds in
    /// memory, oldest first; `None` if it is gone or too many are waiting.
    pub(crate) async fn chat_page(&self, before: Option<u64>, limit: usize) -> Option<Vec<ChatRecord>> {
        let (tx, rx) = oneshot::channel();
        if !self.inbox.chat_page(before, limit, tx) {
            return None;
        }
        rx.await.ok()
    }

    /// A snapshot of the room; `None` if it is gone or too many are waiting.
    pub(crate) async fn state(&self) -> Option<RoomState> {
        let (tx, rx) = oneshot::channel();
        if !self.inbox.query(tx) {
            return None;
        }
        rx.await.ok()
    }
}

/// Settings of the hub.
#[derive(Debug, Clone)]
pub(crate) struct HubConfig {
    /// Settings of each new room.
    pub(crate) room: RoomConfig,
    /// How long an empty room is kept.
    pub(crate) room_grace: Duration,
}

/// The rooms of this server. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Hub {
    inner: Arc<HubInner>,
}

#[derive(Debug)]
struct HubInner {
    rooms: Mutex<HashMap<Arc<str>, RoomHandle>>,
    cfg: HubConfig,
    clock: ServerClock,
    shutdown: watch::Receiver<bool>,
    authority: Arc<dyn Authority>,
    /// Room actors still running (to wait for at shutdown).
    running: tokio::sync::Semaphore,
}

/// More room actors than this cannot run at once (far beyond any load).
const MAX_ROOMS: u32 = 1 << 24;

impl Hub {
    /// A hub whose rooms' changes `authority` orders, and whose room actors
    /// stop when `shutdown` turns true.
    pub(crate) fn new(
        cfg: HubConfig,
        clock: ServerClock,
        shutdown: watch::Receiver<bool>,
        authority: Arc<dyn Authority>,
    ) -> Self {
        Hub {
            inner: Arc::new(HubInner {
                rooms: Mutex::default(),
                cfg,
                clock,
                shutdown,
                authority,
                running: tokio::sync::Semaphore::new(MAX_ROOMS as usize),
            }),
        }
    }

    /// The settings of room `room_id`: a watch party's room is hosted by its
    /// inviter only, never by the first guest to arrive.
    fn room_config(&self, room_id: &str) -> RoomConfig {
        let mut cfg = self.inner.cfg.room.clone();
        if room_id.contains(crate::accounts::PARTY_SEP) {
            cfg.first_joiner_hosts = false;
        }
        cfg
    }

    /// The auto latency's default bounds, ms.
    pub(crate) fn live_latency_range(&self) -> (u32, u32) {
        self.inner.cfg.room.live_latency_range_ms
    }

    /// The server clock.
    pub(crate) fn clock(&self) -> ServerClock {
        self.inner.clock
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, RoomHandle>> {
        self.inner.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of live rooms.
    pub(crate) fn room_count(&self) -> usize {
        self.rooms().len()
    }

    /// The room for `event_id`, if it is live.
    pub(crate) fn existing(&self, event_id: &str) -> Option<RoomHandle> {
        self.rooms().get(event_id).cloned()
    }

    /// Joins `event_id`'s room, creating it if needed.
    pub(crate) async fn join(
        &self,
        event_id: &str,
        info: JoinInfo,
        link: Arc<dyn Link>,
    ) -> Option<(RoomHandle, MemberId)> {
        let (reply, rx) = oneshot::channel();
        let handle = self.with_room(event_id, |h| h.inbox.join(Join { info, link, reply }))?;
        let id = rx.await.ok()?;
        Some((handle, id))
    }

    /// Changes `event_id`'s clock (creating the room if needed: it loads its
    /// state, applies the change, stores the setting and, if nobody joins,
    /// ends after the grace like any empty room).
    pub(crate) async fn set_clock(&self, event_id: &str, req: ClockRequest) -> Option<RoomState> {
        let (reply, rx) = oneshot::channel();
        self.with_room(event_id, |h| h.inbox.set_clock(req, reply))?;
        rx.await.ok().flatten()
    }

    /// Queues with `put` to `event_id`'s room, creating the room if needed.
    /// The item is queued under the map's lock, so a room that decides to
    /// close either sees it or is already out of the map.
    fn with_room(&self, event_id: &str, put: impl FnOnce(&RoomHandle) -> bool) -> Option<RoomHandle> {
        let mut rooms = self.rooms();
        let handle = match rooms.get(event_id) {
            Some(h) if !h.inbox.is_closed() => h.clone(),
            _ => {
                let h = self.spawn_room(event_id.into())?;
                rooms.insert(event_id.into(), h.clone());
                metrics::gauge!("lockstep_rooms").set(rooms.len() as f64);
                h
            }
        };
        put(&handle).then_some(handle)
    }

    fn spawn_room(&self, event_id: Arc<str>) -> Option<RoomHandle> {
        let permit = self.inner.running.try_acquire().ok()?;
        permit.forget();
        let inbox = Arc::new(Inbox::loading());
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        let actor = RoomActor::new(
            event_id.clone(),
            generation,
            self.room_config(&event_id),
            self.clone(),
            inbox.clone(),
            self.inner.authority.clone(),
        );
        info!(event_id = %event_id, "room created");
        let hub = self.clone();
        tokio::spawn(async move {
            actor.run(hub.inner.shutdown.clone()).await;
            hub.inner.running.add_permits(1);
        });
        Some(RoomHandle { inbox, generation })
    }

    /// Removes the room if it is still the one registered and nothing is
    /// queued for it; its mailbox is closed then.
    fn try_remove(&self, event_id: &str, generation: u64, inbox: &Inbox) -> bool {
        let mut rooms = self.rooms();
        if !inbox.close_if_empty() {
            return false;
        }
        if rooms.get(event_id).is_some_and(|h| h.generation == generation) {
            rooms.remove(event_id);
            metrics::gauge!("lockstep_rooms").set(rooms.len() as f64);
        }
        true
    }

    /// Waits (at most `timeout`) for every room actor to stop, after shutdown.
    pub(crate) async fn stopped(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.inner.running.acquire_many(MAX_ROOMS)).await;
    }
}
