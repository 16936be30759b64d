//! The seam between a room actor and whoever orders its timeline changes:
//! the [`Authority`].
//!
//! The room core ([`crate::room`]) makes every timeline change tentatively
//! and hands it out with `poll_commit`; the actor passes it to the authority
//! and never awaits the answer: a [`LocalAuthority`] (one node) commits at
//! once and says so in its return value; the Redis authority
//! (`crate::cluster`) answers later, as a [`Remote::Committed`] event through
//! the room's [`RemoteSink`], like every other event from outside (another
//! node's change, its members, counts, a lost node).
//!
//! This module sits below the hub and above the room core, the store and
//! nothing else: the hub uses it, the cluster implements it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockstep_protocol::{ControlPolicy, TimelineChanged};
use tokio::sync::{mpsc, oneshot};

use crate::room::{
    ChatLoad, ChatOp, ClockSetting, CommitRequest, CommitResult, MediaState, MemberId, NeedCounts, Shared,
};
use crate::store::Store;

/// What reaches a room from outside, through its [`RemoteSink`].
#[derive(Debug)]
pub(crate) enum Remote {
    /// The room's state as the authority holds it (at start, and again after
    /// the authority was unreachable).
    Loaded(Loaded),
    /// The answer to the room's last [`Authority::commit`] that returned `None`.
    Committed(CommitResult),
    /// Scale-out: a change committed by another node.
    External(TimelineChanged),
    /// Scale-out: viewers of this room on other nodes.
    Viewers(u32),
    /// Scale-out: a live room's members' needs on other nodes (auto latency).
    Needs(NeedCounts),
    /// Scale-out: the round trips of the room's members on other nodes
    /// (whole ms, members), for the lead.
    Reach(NeedCounts),
    /// Scale-out: the drifts of the room's members on other nodes (|drift| in
    /// 0.1 ms, members), for its sync quality.
    Sync(NeedCounts),
    /// Scale-out: the authority is reachable again; reload.
    Resync,
    /// Scale-out: membership and control changes of another node, in order.
    Shared {
        /// The node.
        node: Arc<str>,
        /// What changed.
        events: Vec<Shared>,
    },
    /// Scale-out: a node's presence expired; its members are gone.
    NodeGone(Arc<str>),
    /// A chat operation stored and ordered (scale-out: by any node, this
    /// one included): the room applies it.
    Chat(ChatOp),
    /// A chat operation of this room's the authority could not take.
    ChatFailed(ChatOp),
}

/// What became of a chat operation handed to [`Authority::chat`].
#[derive(Debug)]
pub(crate) enum ChatAnswer {
    /// Stored (or queued for storing, in order): apply it now.
    Applied(ChatOp),
    /// Refused at once (the shared state is unreachable).
    Failed(ChatOp),
    /// The answer comes later, as [`Remote::Chat`] or [`Remote::ChatFailed`].
    Later,
}

/// Chat messages a room loads (its `--chat-history` is at most this).
pub(crate) const CHAT_LOADED: usize = 1000;

/// A room's state as the authority holds it.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// The timeline record; `None` if there is none (a new room).
    pub(crate) record: Option<TimelineChanged>,
    /// Whether `record` is the room's own seed (the authority had none).
    pub(crate) seeded: bool,
    /// The room's clock setting, if one was stored.
    pub(crate) clock: Option<ClockSetting>,
    /// Scale-out: this node's block of member ids (first load only).
    pub(crate) id_base: Option<MemberId>,
    /// Scale-out: the room's control policy, if one was set.
    pub(crate) policy: Option<ControlPolicy>,
    /// Scale-out: the other nodes' members (node, record).
    pub(crate) members: Vec<(String, Shared)>,
    /// Scale-out: whether the authority could be asked at all.
    pub(crate) reachable: bool,
    /// The room's chat (`None`: nothing stored, or unavailable).
    pub(crate) chat: Option<ChatLoad>,
    /// The room's media item and playlist, if stored.
    pub(crate) media: Option<MediaState>,
}

/// Where a room's remote events go. Never blocks: the room's inbox.
pub(crate) trait RemoteSink: Send + Sync + std::fmt::Debug {
    /// Hands `ev` to the room; `false` if the room is gone.
    fn deliver(&self, ev: Remote) -> bool;
}

/// A room's membership and control changes, as this node shares them with
/// the other nodes serving the room.
#[derive(Debug, Default)]
pub(crate) struct Announce {
    /// This node's members to (re)write: the `Shared::Joined` record of each.
    pub(crate) upserts: Vec<(MemberId, Shared)>,
    /// This node's members that left.
    pub(crate) removes: Vec<MemberId>,
    /// A new control policy.
    pub(crate) policy: Option<ControlPolicy>,
    /// A new clock setting.
    pub(crate) clock: Option<ClockSetting>,
    /// A new media state.
    pub(crate) media: Option<MediaState>,
    /// What to publish to the other nodes, in order.
    pub(crate) events: Vec<Shared>,
}

impl Announce {
    /// Appends a later announcement of the same room. Member ids are never
    /// reused while a member may still be listed, so writing every upsert,
    /// then every removal, leaves the same list as writing them in turn.
    pub(crate) fn merge(&mut self, later: Announce) {
        self.upserts.extend(later.upserts);
        self.removes.extend(later.removes);
        self.policy = later.policy.or(self.policy);
        self.clock = later.clock.or(self.clock);
        self.media = later.media.or(self.media.take());
        self.events.extend(later.events);
    }
}

/// Orders a room's timeline changes and connects it to the other nodes.
/// Every method returns at once; answers that take time come back through
/// the room's [`RemoteSink`].
pub(crate) trait Authority: Send + Sync + std::fmt::Debug {
    /// A room starts on this node (`first`) or must reload (after
    /// [`Remote::Resync`]): its state arrives as [`Remote::Loaded`], then its
    /// remote events follow. `ours` is the room's own latest change, seeded
    /// where the authority has no record; loaded again, the newest change the
    /// room confirmed, written forward where the record is older (the
    /// authority lost changes: the timeline never goes back). `chat`, on a
    /// reload, is the room's chat as it holds it, written back where the
    /// authority lost its data (scale-out).
    fn load(
        &self,
        room: &Arc<str>,
        sink: Arc<dyn RemoteSink>,
        ours: TimelineChanged,
        chat: Option<ChatLoad>,
        first: bool,
    );

    /// The room ended on this node.
    fn detach(&self, room: &Arc<str>, sink: &Arc<dyn RemoteSink>);

    /// Commits `req`. `Some` when decided at once; `None` when the answer
    /// comes later as [`Remote::Committed`].
    fn commit(&self, room: &Arc<str>, req: CommitRequest, sink: &Arc<dyn RemoteSink>) -> Option<CommitResult>;

    /// Stores a chat operation the room accepted (scaled out: gives a post
    /// its id and publishes it to every node serving the room, this one
    /// included).
    fn chat(&self, room: &Arc<str>, op: ChatOp, sink: &Arc<dyn RemoteSink>) -> ChatAnswer;

    /// Whether the authority answered lately (commands are refused while not).
    fn is_up(&self) -> bool {
        true
    }

    /// Scale-out: shares this node's membership and control changes (a
    /// clock setting in them is stored with the room).
    fn announce(&self, _room: &Arc<str>, _a: Announce) {}

    /// One node: stores the room's clock setting (the next [`Loaded`] of the
    /// room carries it). Shared authorities store it from [`Authority::announce`].
    fn save_clock(&self, _room: &Arc<str>, _setting: ClockSetting) {}

    /// One node: stores the room's media state (the next [`Loaded`] of the
    /// room carries it). Shared authorities store it from [`Authority::announce`].
    fn save_media(&self, _room: &Arc<str>, _state: MediaState) {}

    /// Scale-out: this node's viewers of the room.
    fn set_local_count(&self, _room: &Arc<str>, _n: u32) {}

    /// Scale-out: a live room's members' needs on this node (auto latency).
    fn set_local_needs(&self, _room: &Arc<str>, _needs: NeedCounts) {}

    /// Scale-out: the round trips of the room's members on this node (whole
    /// ms, members), for the other nodes' lead.
    fn set_local_reach(&self, _room: &Arc<str>, _reach: NeedCounts) {}

    /// Scale-out: the drifts of the room's members on this node (|drift| in
    /// 0.1 ms, members), for the other nodes' sync quality.
    fn set_local_sync(&self, _room: &Arc<str>, _drifts: NeedCounts) {}

    /// Whether this authority shares rooms with other nodes (members are then
    /// announced and ids come from a block).
    fn is_shared(&self) -> bool {
        false
    }
}

/// Shortest interval between two batches of timeline writes.
const SAVE_INTERVAL: Duration = Duration::from_millis(50);

/// One node's authority: every change commits at once. With a store,
/// rooms start from their saved timeline and every committed change is
/// saved soon after (latest wins per room, batched every 50 ms); a crash
/// loses at most that window.
#[derive(Debug)]
pub(crate) struct LocalAuthority {
    store: Option<Arc<dyn Store>>,
    /// Rooms' clock settings, in memory (and in the store when there is
    /// one): bounded, each forgotten after the rooms' key TTL unused.
    clocks: moka::future::Cache<Arc<str>, ClockSetting>,
    save: Option<mpsc::UnboundedSender<Save>>,
    saver: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Debug)]
enum Save {
    Timeline(Arc<str>, TimelineChanged),
    Clock(Arc<str>, ClockSetting),
    Chat(Arc<str>, ChatOp),
    Media(Arc<str>, MediaState),
    /// Write what is queued, then answer.
    Flush(oneshot::Sender<()>),
}

impl LocalAuthority {
    /// An authority without durable state.
    pub(crate) fn ephemeral() -> Self {
        LocalAuthority { store: None, clocks: clock_cache(), save: None, saver: Mutex::new(None) }
    }

    /// An authority that keeps timelines in `store`.
    pub(crate) fn durable(store: Arc<dyn Store>) -> Self {
        let (save, rx) = mpsc::unbounded_channel();
        let saver = tokio::spawn(saver(store.clone(), rx));
        LocalAuthority { store: Some(store), clocks: clock_cache(), save: Some(save), saver: Mutex::new(Some(saver)) }
    }

    /// Writes every change committed so far (at shutdown).
    pub(crate) async fn flush(&self) {
        let Some(save) = &self.save else { return };
        let (tx, rx) = oneshot::channel();
        if save.send(Save::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Most clock settings kept in memory.
const CLOCKS_KEPT: u64 = 100_000;

fn clock_cache() -> moka::future::Cache<Arc<str>, ClockSetting> {
    moka::future::Cache::builder().max_capacity(CLOCKS_KEPT).time_to_idle(crate::store::ROOM_KEY_TTL).build()
}

impl Drop for LocalAuthority {
    fn drop(&mut self) {
        if let Some(task) = self.saver.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

/// Writes saved timelines: what queues up meanwhile is one batch, latest
/// wins per room; at most one batch per [`SAVE_INTERVAL`].
async fn saver(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Save>) {
    while let Some(first) = rx.recv().await {
        let mut batch: HashMap<Arc<str>, TimelineChanged> = HashMap::new();
        let mut clocks: HashMap<Arc<str>, ClockSetting> = HashMap::new();
        let mut media: HashMap<Arc<str>, MediaState> = HashMap::new();
        // Each room's chat operations, in order.
        let mut chats: Vec<(Arc<str>, Vec<ChatOp>)> = Vec::new();
        let mut flushed = Vec::new();
        let mut next = Some(first);
        while let Some(item) = next.take().or_else(|| rx.try_recv().ok()) {
            match item {
                Save::Timeline(room, t) => {
                    batch.insert(room, t);
                }
                Save::Clock(room, s) => {
                    clocks.insert(room, s);
                }
                Save::Media(room, s) => {
                    media.insert(room, s);
                }
                Save::Chat(room, op) => match chats.iter_mut().find(|(r, _)| *r == room) {
                    Some((_, ops)) => ops.push(op),
                    None => chats.push((room, vec![op])),
                },
                Save::Flush(done) => flushed.push(done),
            }
        }
        if !batch.is_empty() {
            let batch = batch.into_iter().map(|(r, t)| (r.to_string(), t)).collect();
            if let Err(e) = store.save_timelines(batch).await {
                tracing::warn!(error = %e, "timelines not saved");
            }
        }
        for (room, setting) in clocks {
            if let Err(e) = store.save_room_clock(&room, setting).await {
                tracing::warn!(event_id = %room, error = %e, "clock setting not saved");
            }
        }
        for (room, state) in media {
            if let Err(e) = store.save_room_media(&room, &state).await {
                tracing::warn!(event_id = %room, error = %e, "media state not saved");
            }
        }
        for (room, ops) in chats {
            let n = ops.len();
            if let Err(e) = store.save_chat(&room, ops).await {
                tracing::warn!(event_id = %room, error = %e, lost = n, "chat not saved");
            }
        }
        for done in flushed {
            let _ = done.send(());
        }
        tokio::time::sleep(SAVE_INTERVAL).await;
    }
}

impl Authority for LocalAuthority {
    fn load(
        &self,
        room: &Arc<str>,
        sink: Arc<dyn RemoteSink>,
        _ours: TimelineChanged,
        _chat: Option<ChatLoad>,
        first: bool,
    ) {
        let (room, clocks) = (room.clone(), self.clocks.clone());
        let Some(store) = self.store.clone().filter(|_| first) else {
            tokio::spawn(async move {
                let clock = clocks.get(&room).await;
                sink.deliver(Remote::Loaded(Loaded { clock, reachable: true, ..Loaded::default() }));
            });
            return;
        };
        tokio::spawn(async move {
            let clock = match clocks.get(&room).await {
                Some(c) => Some(c),
                None => store.room_clock(&room).await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "saved clock setting unavailable");
                    None
                }),
            };
            let record = match store.timeline(&room).await {
                Ok(Some(c)) => {
                    tracing::info!(event_id = %room, epoch = c.timeline.epoch, reason = ?c.reason, "room resumes its saved timeline");
                    Some(c)
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "saved timeline unavailable");
                    None
                }
            };
            let media = store.room_media(&room).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "saved media state unavailable");
                None
            });
            let chat = store.chat_load(&room, CHAT_LOADED).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "saved chat unavailable");
                ChatLoad::default()
            });
            sink.deliver(Remote::Loaded(Loaded {
                record,
                clock,
                reachable: true,
                chat: Some(chat),
                media,
                ..Loaded::default()
            }));
        });
    }

    fn detach(&self, _room: &Arc<str>, _sink: &Arc<dyn RemoteSink>) {}

    fn save_clock(&self, room: &Arc<str>, setting: ClockSetting) {
        let (clocks, key) = (self.clocks.clone(), room.clone());
        tokio::spawn(async move { clocks.insert(key, setting).await });
        if let Some(save) = &self.save {
            let _ = save.send(Save::Clock(room.clone(), setting));
        }
    }

    fn save_media(&self, room: &Arc<str>, state: MediaState) {
        if let Some(save) = &self.save {
            let _ = save.send(Save::Media(room.clone(), state));
        }
    }

    fn chat(&self, room: &Arc<str>, op: ChatOp, _sink: &Arc<dyn RemoteSink>) -> ChatAnswer {
        if let Some(save) = &self.save {
            let _ = save.send(Save::Chat(room.clone(), op.clone()));
        }
        ChatAnswer::Applied(op)
    }

    fn commit(&self, room: &Arc<str>, req: CommitRequest, _sink: &Arc<dyn RemoteSink>) -> Option<CommitResult> {
        if let Some(save) = &self.save {
            let _ = save.send(Save::Timeline(room.clone(), req.change.clone()));
        }
        Some(CommitResult::Committed)
    }
}
