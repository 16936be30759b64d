//! The hub of rooms: one actor task per live room drives the sans-IO
//! [`Room`] with the real clock and fans its output out to members' outboxes.
//!
//! Each output is encoded at most once per room and dialect, and the bytes are
//! shared by every recipient. A room is created on first join and dropped
//! after a grace period once empty.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep_protocol::{Action, ChangeReason, ErrorCode, Report, ServerMsg, Timeline, TimelineChanged, encode_server};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info};

use crate::clock::ServerClock;
use crate::cluster::{Announce, Cluster, Commit, newer};
use crate::json::{self, Extra};
use crate::outbox::{Frame, FrameKind, Outbox};
use crate::room::{Audience, JoinInfo, MemberId, Room, RoomConfig, RoomState, Shared};
use crate::store::Store;

/// Which encoding a member speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The bincode protocol.
    Binary,
    /// The legacy JSON dialect.
    Json,
}

/// What sessions tell a room.
#[derive(Debug)]
pub enum RoomEvent {
    /// A member joins; the reply carries its id.
    Join {
        /// Who.
        info: JoinInfo,
        /// Where its messages go.
        outbox: Arc<Outbox>,
        /// How to encode them.
        dialect: Dialect,
        /// Answered with the new member's id.
        reply: oneshot::Sender<MemberId>,
    },
    /// A member leaves.
    Leave(MemberId),
    /// A member's command.
    Command {
        /// Who.
        member: MemberId,
        /// Echoed in errors.
        request_id: u32,
        /// What.
        action: Action,
        /// JSON fields to pass through to the resulting broadcast.
        extra: Option<Box<Extra>>,
    },
    /// A member's report.
    Report(MemberId, Report),
    /// A snapshot for the REST API.
    State(oneshot::Sender<RoomState>),
    /// Scale-out: a change committed by another node.
    External(TimelineChanged),
    /// Scale-out: viewers of this room on other nodes.
    RemoteViewers(u32),
    /// Scale-out: Redis is back; reload the room's record.
    Resync,
    /// Scale-out: membership and control changes from another node.
    Shared {
        /// The node.
        node: Arc<str>,
        /// What changed, in order.
        events: Vec<Shared>,
    },
    /// Scale-out: a node's presence expired; its members are gone.
    NodeGone(Arc<str>),
}

/// A cheap handle to a live room.
#[derive(Debug, Clone)]
pub struct RoomHandle {
    tx: mpsc::UnboundedSender<RoomEvent>,
    /// Distinguishes a room from a later one with the same event id.
    generation: u64,
}

static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl RoomHandle {
    /// Sends an event; `false` if the room is gone.
    pub fn send(&self, ev: RoomEvent) -> bool {
        self.tx.send(ev).is_ok()
    }

    /// A snapshot of the room.
    pub async fn state(&self) -> Option<RoomState> {
        let (tx, rx) = oneshot::channel();
        if !self.send(RoomEvent::State(tx)) {
            return None;
        }
        rx.await.ok()
    }
}

/// Settings of the hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Settings of each new room.
    pub room: RoomConfig,
    /// How long an empty room is kept.
    pub room_grace: Duration,
}

/// The rooms of this server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

#[derive(Debug)]
struct HubInner {
    rooms: Mutex<HashMap<Arc<str>, RoomHandle>>,
    cfg: HubConfig,
    clock: ServerClock,
    shutdown: watch::Receiver<bool>,
    durable: OnceLock<Durable>,
    cluster: OnceLock<Cluster>,
}

#[derive(Debug)]
struct Durable {
    store: Arc<dyn Store>,
    save: mpsc::UnboundedSender<(Arc<str>, Timeline)>,
}

/// Shortest interval between two batches of timeline writes.
const SAVE_INTERVAL: Duration = Duration::from_millis(50);

impl Hub {
    /// A hub whose room actors stop when `shutdown` turns true.
    pub fn new(cfg: HubConfig, clock: ServerClock, shutdown: watch::Receiver<bool>) -> Self {
        Hub {
            inner: Arc::new(HubInner {
                rooms: Mutex::default(),
                cfg,
                clock,
                shutdown,
                durable: OnceLock::new(),
                cluster: OnceLock::new(),
            }),
        }
    }

    /// Makes room timelines durable: rooms start from their saved timeline,
    /// and every change is saved (latest wins per room, batched every 50 ms).
    /// Call once, before the first join.
    pub(crate) fn attach_store(&self, store: Arc<dyn Store>) {
        let (save, mut rx) = mpsc::unbounded_channel::<(Arc<str>, Timeline)>();
        if self.inner.durable.set(Durable { store: store.clone(), save }).is_err() {
            return;
        }
        tokio::spawn(async move {
            while let Some((room, t)) = rx.recv().await {
                let mut batch: HashMap<Arc<str>, Timeline> = HashMap::from([(room, t)]);
                while let Ok((room, t)) = rx.try_recv() {
                    batch.insert(room, t);
                }
                let batch = batch.into_iter().map(|(r, t)| (r.to_string(), t)).collect();
                if let Err(e) = store.save_timelines(batch).await {
                    tracing::warn!(error = %e, "timelines not saved");
                }
                tokio::time::sleep(SAVE_INTERVAL).await;
            }
        });
    }

    /// Scale-out: rooms commit timeline changes to Redis and apply the other
    /// nodes' changes (see [`crate::cluster`]). Call once, before the first join.
    pub fn attach_cluster(&self, cluster: Cluster) {
        let _ = self.inner.cluster.set(cluster);
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

    /// The store, if one is attached.
    pub(crate) fn store(&self) -> Option<&Arc<dyn Store>> {
        self.inner.durable.get().map(|d| &d.store)
    }

    /// The server clock.
    pub fn clock(&self) -> ServerClock {
        self.inner.clock
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, RoomHandle>> {
        self.inner.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of live rooms.
    pub fn room_count(&self) -> usize {
        self.rooms().len()
    }

    /// The room for `event_id`, if it is live.
    pub fn existing(&self, event_id: &str) -> Option<RoomHandle> {
        self.rooms().get(event_id).cloned()
    }

    /// Joins `event_id`'s room, creating it if needed.
    pub async fn join(
        &self,
        event_id: &str,
        info: JoinInfo,
        outbox: Arc<Outbox>,
        dialect: Dialect,
    ) -> Option<(RoomHandle, MemberId)> {
        let (reply, rx) = oneshot::channel();
        let handle = {
            // The join is sent under the lock, so a room that decides to close
            // either sees it or is already out of the map.
            let mut rooms = self.rooms();
            let handle = match rooms.get(event_id) {
                Some(h) if !h.tx.is_closed() => h.clone(),
                _ => {
                    let h = self.spawn_room(event_id.into());
                    rooms.insert(event_id.into(), h.clone());
                    metrics::gauge!("lockstep_rooms").set(rooms.len() as f64);
                    h
                }
            };
            if !handle.send(RoomEvent::Join { info, outbox, dialect, reply }) {
                return None;
            }
            handle
        };
        let id = rx.await.ok()?;
        Some((handle, id))
    }

    fn spawn_room(&self, event_id: Arc<str>) -> RoomHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let actor = RoomActor {
            generation,
            room: Room::new(self.room_config(&event_id), self.inner.clock.now_us()),
            saved_epoch: None,
            links: HashMap::new(),
            event_id: event_id.clone(),
            hub: self.clone(),
            empty_since: Some(Instant::now()),
            cluster: self.inner.cluster.get().map(|c| {
                c.register(&event_id, &tx);
                (c.clone(), tx.clone())
            }),
            committed: None,
        };
        info!(event_id = %event_id, "room created");
        tokio::spawn(actor.run(rx, self.inner.shutdown.clone()));
        RoomHandle { tx, generation }
    }

    /// Removes the room if it is still the one registered and has nothing queued.
    fn try_remove(&self, event_id: &str, generation: u64, rx: &mpsc::UnboundedReceiver<RoomEvent>) -> bool {
        let mut rooms = self.rooms();
        if !rx.is_empty() {
            return false;
        }
        if rooms.get(event_id).is_some_and(|h| h.generation == generation) {
            rooms.remove(event_id);
            metrics::gauge!("lockstep_rooms").set(rooms.len() as f64);
        }
        true
    }
}

struct Link {
    outbox: Arc<Outbox>,
    dialect: Dialect,
}

struct RoomActor {
    generation: u64,
    room: Room,
    /// The epoch last handed to the store.
    saved_epoch: Option<u32>,
    links: HashMap<MemberId, Link>,
    event_id: Arc<str>,
    hub: Hub,
    empty_since: Option<Instant>,
    /// Scale-out: the cluster and this actor's own sender (to unregister).
    cluster: Option<(Cluster, mpsc::UnboundedSender<RoomEvent>)>,
    /// Scale-out: the last change the authority holds.
    committed: Option<TimelineChanged>,
}

/// Why a command was refused while Redis is unreachable.
const REDIS_DOWN: &str = "the shared state (Redis) is unreachable; try again shortly";

/// What became of a local timeline change in scale-out mode.
enum Settled {
    Unchanged,
    Done,
    Conflict,
    Failed,
}

impl RoomActor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<RoomEvent>, mut shutdown: watch::Receiver<bool>) {
        let clock = self.hub.clock();
        let grace = self.hub.inner.cfg.room_grace;
        if self.cluster.is_some() {
            self.resync(clock.now_us()).await;
        } else if let Some(store) = self.hub.store() {
            // Resume the saved timeline before serving anyone (joins wait in `rx`).
            match store.timeline(&self.event_id).await {
                Ok(Some(t)) => {
                    info!(event_id = %self.event_id, epoch = t.epoch, "room resumes its saved timeline");
                    self.room = Room::with_timeline(self.hub.room_config(&self.event_id), clock.now_us(), t);
                    self.saved_epoch = Some(t.epoch);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "saved timeline unavailable"),
            }
        }
        loop {
            let mut wake = clock.instant_at(self.room.poll_timeout());
            if let Some(since) = self.empty_since {
                wake = wake.min(since + grace);
            }
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    self.dispatch(ev, clock).await;
                    while let Ok(ev) = rx.try_recv() {
                        self.dispatch(ev, clock).await;
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = crate::session::wait_true(&mut shutdown) => break,
            }
            let now = clock.now_us();
            if now >= self.room.poll_timeout() {
                let mark = self.room.output_mark();
                self.room.handle_timeout(now);
                self.settle(mark, now).await;
                self.share_out();
            }
            self.flush(None);
            match self.empty_since {
                Some(since)
                    if since.elapsed() >= grace && self.hub.try_remove(&self.event_id, self.generation, &rx) =>
                {
                    info!(event_id = %self.event_id, "room dropped after being empty");
                    break;
                }
                _ => {}
            }
        }
        if let Some((cluster, tx)) = &self.cluster {
            cluster.unregister(&self.event_id, tx);
        }
    }

    fn handle(&mut self, ev: RoomEvent, now: u64) {
        match ev {
            RoomEvent::Join { info, outbox, dialect, reply } => {
                let id = self.room.join(now, info);
                self.links.insert(id, Link { outbox, dialect });
                self.empty_since = None;
                if reply.send(id).is_err() {
                    // The session went away before it learned its id.
                    self.leave(id, now);
                }
            }
            RoomEvent::Leave(id) => self.leave(id, now),
            RoomEvent::Command { member, request_id, action, extra } => {
                if let Err(e) = self.room.command(now, member, request_id, action) {
                    debug!(member, error = %e, "command refused");
                    crate::metrics::error(e.code());
                }
                if extra.is_some() {
                    // Flush now so the pass-through fields go with this change only.
                    self.flush(extra.as_deref().map(|e| (member, e)));
                }
            }
            RoomEvent::Report(member, report) => self.room.report(now, member, report),
            RoomEvent::State(reply) => {
                let _ = reply.send(self.room.state(now));
            }
            RoomEvent::External(_)
            | RoomEvent::RemoteViewers(_)
            | RoomEvent::Resync
            | RoomEvent::Shared { .. }
            | RoomEvent::NodeGone(_) => {}
        }
    }

    /// Handles an event; in scale-out mode, commits the timeline changes it
    /// makes before they are delivered.
    async fn dispatch(&mut self, ev: RoomEvent, clock: ServerClock) {
        let Some((cluster, _)) = &self.cluster else { return self.handle(ev, clock.now_us()) };
        let up = cluster.is_up();
        match ev {
            RoomEvent::External(c) => {
                if self.committed.as_ref().is_none_or(|k| newer(c.timeline.epoch, k.timeline.epoch)) {
                    self.room.apply_external(clock.now_us(), c.clone());
                    self.committed = Some(c);
                }
            }
            RoomEvent::RemoteViewers(n) => self.room.set_remote_viewers(clock.now_us(), n),
            RoomEvent::Resync => self.resync(clock.now_us()).await,
            RoomEvent::Shared { node, events } => {
                let now = clock.now_us();
                for ev in events {
                    self.room.apply_shared(now, &node, ev);
                }
            }
            RoomEvent::NodeGone(node) => self.room.node_gone(clock.now_us(), &node),
            RoomEvent::Command { member, request_id, action, extra } => {
                if !up {
                    self.room.refuse(member, request_id, ErrorCode::Internal, REDIS_DOWN);
                    crate::metrics::error(ErrorCode::Internal);
                }
                // A change that lost a race is retried once on the winner's timeline.
                for attempt in 0..2 {
                    if !up {
                        break;
                    }
                    let now = clock.now_us();
                    let mark = self.room.output_mark();
                    if let Err(e) = self.room.command(now, member, request_id, action) {
                        debug!(member, error = %e, "command refused");
                        crate::metrics::error(e.code());
                    }
                    let why = match self.settle(mark, now).await {
                        Settled::Conflict if attempt == 0 => continue,
                        Settled::Conflict => "the timeline changed on another node at the same time; try again",
                        Settled::Failed => REDIS_DOWN,
                        Settled::Unchanged | Settled::Done => break,
                    };
                    self.room.refuse(member, request_id, ErrorCode::Internal, why);
                    crate::metrics::error(ErrorCode::Internal);
                    break;
                }
                if extra.is_some() {
                    self.flush(extra.as_deref().map(|e| (member, e)));
                }
            }
            ev => {
                let now = clock.now_us();
                let mark = self.room.output_mark();
                self.handle(ev, now);
                self.settle(mark, now).await;
            }
        }
        if let Some((cluster, _)) = &self.cluster {
            cluster.set_local_count(&self.event_id, self.room.local_viewers());
        }
        self.share_out();
    }

    /// Scale-out: writes and publishes the membership and control changes the
    /// room made.
    fn share_out(&mut self) {
        let Some((cluster, _)) = &self.cluster else { return };
        let events = self.room.take_shared();
        if events.is_empty() {
            return;
        }
        let mut a = Announce::default();
        for ev in &events {
            match ev {
                Shared::Joined { id, .. } | Shared::Role { id, .. } => {
                    if let Some(record) = self.room.shared_member(*id) {
                        a.upserts.push((*id, record));
                    }
                }
                Shared::Left { id } => a.removes.push(*id),
                Shared::Policy { policy, .. } => a.policy = Some(*policy),
            }
        }
        a.events = events;
        cluster.announce(&self.event_id, a);
    }

    /// Scale-out: commits the change the room made since `mark`, or undoes it.
    async fn settle(&mut self, mark: usize, now: u64) -> Settled {
        let (Some((cluster, _)), Some(committed)) = (&self.cluster, self.committed.clone()) else {
            return Settled::Unchanged;
        };
        if self.room.epoch() == committed.timeline.epoch {
            return Settled::Unchanged;
        }
        let Some(change) = self.room.change_since(mark) else { return Settled::Unchanged };
        match cluster.commit(&self.event_id, committed.timeline.epoch, &change).await {
            Ok(Commit::Done) => {
                self.committed = Some(change);
                Settled::Done
            }
            Ok(Commit::Conflict(auth)) => {
                self.room.discard_since(mark);
                self.room.apply_external(now, auth.clone());
                self.committed = Some(auth);
                Settled::Conflict
            }
            Err(e) => {
                tracing::warn!(event_id = %self.event_id, error = %e, "timeline change not committed");
                self.room.discard_since(mark);
                self.room.restore(now, committed);
                Settled::Failed
            }
        }
    }

    /// Scale-out: adopts the room's record in Redis (or seeds it with ours).
    async fn resync(&mut self, now: u64) {
        let Some((cluster, _)) = &self.cluster else { return };
        let ours = self.committed.clone().unwrap_or_else(|| {
            let t = self.room.timeline();
            TimelineChanged { timeline: t, effective_at_us: t.anchor_us, by: 0, reason: ChangeReason::Seek }
        });
        let first = self.committed.is_none();
        match cluster.load_or_seed(&self.event_id, &ours).await {
            Ok(auth) if first => {
                self.room = Room::with_timeline(self.hub.room_config(&self.event_id), now, auth.timeline);
                self.committed = Some(auth);
            }
            Ok(auth) => {
                if auth != ours {
                    info!(event_id = %self.event_id, epoch = auth.timeline.epoch, "room adopts the shared timeline");
                    self.room.apply_external(now, auth.clone());
                }
                self.committed = Some(auth);
            }
            Err(e) => {
                tracing::warn!(event_id = %self.event_id, error = %e, "shared timeline unavailable");
                self.committed.get_or_insert(ours);
            }
        }
        let Some((cluster, _)) = &self.cluster else { return };
        if first {
            self.room.enable_sharing(cluster.id_base(&self.event_id).await);
        }
        // Learn the other nodes' members and the policy; tell them ours
        // (they may have dropped them while Redis was away).
        match cluster.snapshot(&self.event_id).await {
            Ok((policy, members)) => {
                let now = self.hub.clock().now_us();
                self.room.set_remote_members(now, members);
                if let Some(policy) = policy {
                    self.room.apply_shared(now, "", Shared::Policy { policy, by: 0 });
                }
            }
            Err(e) => tracing::warn!(event_id = %self.event_id, error = %e, "other nodes' members unavailable"),
        }
        let mine = self.room.shared_members();
        if !first || !mine.is_empty() {
            let upserts = mine.iter().filter_map(|m| match m {
                Shared::Joined { id, .. } => Some((*id, m.clone())),
                _ => None,
            });
            cluster
                .announce(&self.event_id, Announce { upserts: upserts.collect(), events: mine, ..Announce::default() });
        }
    }

    fn save(&mut self, t: Timeline) {
        if self.saved_epoch == Some(t.epoch) || self.cluster.is_some() {
            return;
        }
        if let Some(d) = self.hub.inner.durable.get() {
            let _ = d.save.send((self.event_id.clone(), t));
            self.saved_epoch = Some(t.epoch);
        }
    }

    fn leave(&mut self, id: MemberId, now: u64) {
        self.links.remove(&id);
        self.room.leave(now, id);
        if self.room.is_empty() {
            self.empty_since = Some(Instant::now());
        }
    }

    /// Delivers queued room output. `extra` is the JSON pass-through of the
    /// command just applied by `member`.
    fn flush(&mut self, extra: Option<(MemberId, &Extra)>) {
        while let Some(out) = self.room.poll_output() {
            if let ServerMsg::TimelineChanged(c) = &out.msg {
                self.save(c.timeline);
            }
            let started = Instant::now();
            let name = out.msg.name();
            let mut binary: Option<Bytes> = None;
            let mut text: Option<Option<Bytes>> = None;
            let is_tick = matches!(out.msg, ServerMsg::Tick(_));
            let kind = if matches!(out.msg, ServerMsg::TimelineChanged(_)) {
                FrameKind::BinaryFast
            } else {
                FrameKind::Binary
            };
            let origin = match &out.msg {
                ServerMsg::TimelineChanged(c) => Some(c.by),
                _ => None,
            };
            let mut delivered = 0u64;
            let mut slow = Vec::new();
            let mut deliver = |id: MemberId, link: &Link| {
                match link.dialect {
                    Dialect::Binary => {
                        let bytes = binary.get_or_insert_with(|| Bytes::from(encode_server(&out.msg))).clone();
                        if is_tick {
                            if link.outbox.set_tick(bytes) {
                                crate::metrics::drop("stale_tick");
                            }
                        } else if !link.outbox.push(Frame { bytes, kind }) {
                            slow.push(id);
                        }
                    }
                    Dialect::Json => {
                        // The original app never echoed a change to its sender.
                        if origin == Some(id) {
                            return;
                        }
                        let ex = extra.filter(|(by, _)| origin == Some(*by)).map(|(_, e)| e);
                        let Some(bytes) = text
                            .get_or_insert_with(|| json::encode(&self.event_id, &out.msg, ex).map(Bytes::from))
                            .clone()
                        else {
                            return;
                        };
                        if !link.outbox.push(Frame { bytes, kind: FrameKind::Text }) {
                            slow.push(id);
                        }
                    }
                }
                delivered += 1;
            };
            match out.to {
                Audience::One(id) => {
                    if let Some(link) = self.links.get(&id) {
                        deliver(id, link);
                    }
                }
                to => {
                    for (&id, link) in &self.links {
                        if to == Audience::All || self.room.is_recipient(to, id) {
                            deliver(id, link);
                        }
                    }
                }
            }
            metrics::counter!("lockstep_messages_out_total", "type" => name).increment(delivered);
            if delivered > 1 {
                metrics::histogram!("lockstep_fanout_seconds").record(started.elapsed().as_secs_f64());
            }
            for id in slow {
                debug!(member = id, "slow consumer dropped");
                crate::metrics::error(lockstep_protocol::ErrorCode::SlowConsumer);
            }
        }
    }
}
