//! Scale-out: several nodes serve one room through Redis (`--redis-url`:
//! one server, or a Redis Cluster, found by asking it; see
//! `crate::store::redis::conn`). [`Cluster`] is the rooms'
//! [`crate::authority::Authority`] then. Every key and channel of a room
//! carries the room's hash tag (`crate::store::redis::keys`), so each
//! script runs on the room's shard and declares every key it touches.
//!
//! - **Timeline authority** ([`authority`]): each room's timeline is one
//!   Redis record (`lockstep:tl:{room}`: epoch and the encoded
//!   `TimelineChanged`). A node commits a change its own `Room` made with a
//!   Lua compare-and-set on the epoch it last saw (`lua/commit.lua`); the same
//!   script publishes the change on `lockstep:room:{room}`, so the
//!   publication order is the commit order. Every node hands newer epochs to
//!   its local room. The room actor never waits for Redis: answers come back
//!   as events.
//! - **Per-room subscriptions**: a node subscribes to a room's channels
//!   (timeline, presence, chat) when the room starts on it, before it loads
//!   the room's record (so no change falls between the two), and
//!   unsubscribes when the room ends there. On a Redis Cluster they are
//!   sharded channels (`SSUBSCRIBE`/`SPUBLISH`): a room's messages stay on
//!   its shard and reach only the nodes serving it. The connection
//!   resubscribes by itself after a reconnection or failover.
//! - **Counts**: every second each node writes its local count of each room
//!   it serves into `lockstep:count:{room}`, stamped to expire
//!   [`NODE_TTL`] later by Redis's clock; the other nodes' fresh counts are
//!   summed, so a crashed node's viewers vanish within the TTL. The same
//!   heartbeat keeps a served room's keys alive: they expire
//!   [`ROOM_KEY_TTL`] after the last node stopped serving the room. A node's
//!   heartbeat costs O(rooms it serves), never O(all rooms).
//! - **Round trips** ([`reach`]): the same script writes the node's members'
//!   round trips of the room (`lockstep:reach:{room}`) and returns the other
//!   nodes' fresh ones, so every node schedules play and pause far enough
//!   ahead for the room's members on every node.
//! - **Members, roles, policy** ([`presence`]): each node keeps its members of
//!   a room in `lockstep:members:{room}:{node}` (expires with the node's
//!   heartbeat) and publishes joins, leaves, role and policy changes on
//!   `lockstep:presence:{room}` in the order its room made them; the policy
//!   is kept in `lockstep:policy:{room}`. A room starting on a node loads the
//!   other nodes' members and the policy, and takes a block of member ids
//!   (`lockstep:mblock:{room}`) so ids never collide across nodes. Each node
//!   refreshes its presence key `lockstep:node:{id}` (TTL [`NODE_TTL`]); when
//!   a node heard from lets it expire, every node drops that node's members.
//! - **Redis down**: commands are refused, viewers keep the last timelines,
//!   `lockstep_redis_up` is 0; when a heartbeat succeeds again every room
//!   reloads (or re-seeds) its record. A beat is a failure when its presence
//!   or checks fail or every room's script does; some rooms' scripts failing
//!   (a slow shard) leaves those rooms' counts to the next beat.

mod authority;
mod needs;
mod presence;
mod reach;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::{PushInfo, PushKind, RedisResult, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use self::presence::PresenceMsg;
use crate::authority::{Announce, Remote, RemoteSink};
use crate::room::NeedCounts;
use crate::store::redis::keys::{self, Channel, REVOKE};
use crate::store::redis::{Conn, Lua, RedisStore, decode_change, decode_chat};

/// How often a node refreshes its presence and counts.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// One heartbeat in this many refreshes the TTLs of the served rooms' keys.
const REFRESH_EVERY: u64 = 30;
/// Room heartbeat scripts a node keeps in flight at once: enough to keep
/// every shard busy, few enough that none waits out the response timeout
/// behind thousands of others (a node serving 2,500 rooms sent them all at
/// once, and under load the last ones timed out).
const BEAT_CONCURRENCY: usize = 64;
/// Failed heartbeats in a row after which a Redis Cluster's connections are
/// made afresh.
const REBUILD_AFTER: u32 = 2;
/// How long a node's presence outlives its last heartbeat.
pub const NODE_TTL: Duration = Duration::from_secs(3);
/// How long a room's keys (timeline record, member-id blocks, node list,
/// policy) outlive the last node that served it (the store's rule).
pub(crate) use crate::store::ROOM_KEY_TTL;

/// What a node does when a device is revoked on any node.
type RevokeHook = Box<dyn Fn(&str, &str) + Send + Sync>;

/// What a node does when Redis lost its data: write back what it serves.
type DataLostHook = Box<dyn Fn() -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>;

/// See the module docs. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.inner.node).finish_non_exhaustive()
    }
}

/// A served room at a heartbeat: its id, local count, its members' round
/// trips and drifts ([`reach::encode`]d) and sink.
type Served = (Arc<str>, u32, String, String, Option<Arc<dyn RemoteSink>>);

/// What a room's heartbeat script answers: the other nodes' count, their
/// members' round trips and their drifts (each node's entry).
type Beat = (u32, Vec<String>, Vec<String>);

/// A room this node serves.
struct Local {
    sink: Option<Weak<dyn RemoteSink>>,
    count: u32,
    /// A live room: its members' needs (auto latency), shared each beat.
    needs: Option<NeedCounts>,
    /// Its members' round trips (whole ms, members), shared each beat ([`reach`]).
    reach: NeedCounts,
    /// Its members' drifts (|drift| in 0.1 ms, members), shared each beat for
    /// the room's sync quality on every node.
    sync: NeedCounts,
}

impl Local {
    fn sink(&self) -> Option<Arc<dyn RemoteSink>> {
        self.sink.as_ref().and_then(Weak::upgrade)
    }
}

/// A change of this node's room subscriptions, done in order by one task;
/// `done` is told when Redis confirmed it (or failed).
struct SubChange {
    room: Arc<str>,
    on: bool,
    done: Option<oneshot::Sender<RedisResult<()>>>,
}

struct Inner {
    /// Commands, scripts and publications.
    conn: Conn,
    /// Subscriptions only (its messages arrive in `dispatch`); the heartbeat
    /// pings it, which is also what makes it reconnect (and resubscribe)
    /// after Redis comes back.
    sub: Conn,
    /// Subscription changes, applied in order (see [`subscriptions`]).
    subs: mpsc::UnboundedSender<SubChange>,
    node: String,
    up: AtomicBool,
    rooms: Mutex<HashMap<Arc<str>, Local>>,
    /// Other nodes this node has heard from; checked at every heartbeat.
    seen: Mutex<HashSet<Arc<str>>>,
    /// Announcements, written in order by one task (which ends when this
    /// sender goes, with the last `Cluster`).
    announce: mpsc::UnboundedSender<(Arc<str>, Announce)>,
    /// Chat operations, stored in the order the rooms handed them over, by
    /// one task (a room's own posts keep their order).
    chats: mpsc::UnboundedSender<authority::ChatJob>,
    on_revoke: std::sync::OnceLock<RevokeHook>,
    /// What the node does when Redis lost its data (see [`Cluster::check_ready`]).
    on_data_lost: std::sync::OnceLock<DataLostHook>,
    /// The ready markers' values as this node last read them, by shard index
    /// (empty until it first saw them set).
    markers: Mutex<HashMap<usize, Option<String>>>,
    /// Whether this node is writing back after Redis lost its data.
    recovering: AtomicBool,
    /// Heartbeats so far.
    beats: std::sync::atomic::AtomicU64,
    /// Which quarter of the ready markers the next beat checks (a cluster).
    ready_turn: std::sync::atomic::AtomicUsize,
    /// A Redis Cluster's slot ranges and their primaries, as last read.
    topology: Mutex<Option<Vec<(i64, i64, String)>>>,
    commit: Lua,
    load: Lua,
    count: Lua,
    /// The shared store over `conn` (its scripts hashed once, not per call).
    store: RedisStore,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cluster {
    /// Connects (RESP3; one server or a Redis Cluster, see
    /// `crate::store::redis::conn::connect`), subscribes to revocations, and
    /// starts the heartbeat, which stops when `shutdown` turns true. Room
    /// channels are subscribed room by room, as rooms start here.
    pub(crate) async fn connect(url: &str, ca: Option<&[u8]>, shutdown: watch::Receiver<bool>) -> RedisResult<Cluster> {
        let crate::store::redis::conn::Connected { conn, mut sub, pushes } =
            crate::store::redis::conn::connect(url, ca).await?;
        sub.subscribe_global(REVOKE).await?;
        let (announce, announcements) = mpsc::unbounded_channel();
        let (chats, chat_jobs) = mpsc::unbounded_channel();
        let (subs, sub_changes) = mpsc::unbounded_channel();
        let store = RedisStore::new(conn.clone());
        let cluster_mode = conn.is_cluster();
        let inner = Arc::new(Inner {
            conn,
            sub,
            subs,
            node: crate::store::random_id(),
            up: AtomicBool::new(true),
            rooms: Mutex::default(),
            seen: Mutex::default(),
            announce,
            chats,
            on_revoke: std::sync::OnceLock::new(),
            on_data_lost: std::sync::OnceLock::new(),
            markers: Mutex::default(),
            recovering: AtomicBool::new(false),
            topology: Mutex::default(),
            ready_turn: std::sync::atomic::AtomicUsize::new(0),
            beats: std::sync::atomic::AtomicU64::new(0),
            commit: Lua::new(include_str!("lua/commit.lua")),
            load: Lua::new(include_str!("lua/load_or_seed.lua")),
            count: Lua::new(include_str!("lua/count.lua")),
            store,
        });
        metrics::gauge!("lockstep_redis_up").set(1.0);
        metrics::gauge!("lockstep_redis_subscribed_rooms").set(0.0);
        info!(node = %inner.node, cluster = cluster_mode, "scale-out through Redis");
        tokio::spawn(dispatch(pushes, Arc::downgrade(&inner)));
        tokio::spawn(subscriptions(inner.sub.clone(), sub_changes));
        let cluster = Cluster { inner };
        // Present at once, so other nodes never take this one's first members
        // for a dead node's.
        cluster.present().await?;
        cluster.check_ready().await?;
        tokio::spawn(presence::write_announcements(Arc::downgrade(&cluster.inner), announcements));
        tokio::spawn(authority::write_chat(cluster.inner.store.clone(), chat_jobs));
        tokio::spawn(cluster.clone().heartbeat(shutdown));
        Ok(cluster)
    }

    /// Sets what this node does when a device is revoked on any node (once).
    pub(crate) fn on_revoke(&self, handler: impl Fn(&str, &str) + Send + Sync + 'static) {
        let _ = self.inner.on_revoke.set(Box::new(handler));
    }

    /// Sets what this node does when Redis is found to have lost its data (once):
    /// the rooms re-seed their timelines by themselves; the hook writes back
    /// the rest (the sessions, and so the device slots, this node serves).
    pub(crate) fn on_data_lost<F>(&self, handler: impl Fn() -> F + Send + Sync + 'static)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let _ = self.inner.on_data_lost.set(Box::new(move || Box::pin(handler())));
    }

    /// Checks the ready markers (`keys::ready`, one per session shard) at
    /// every heartbeat. Missing on a Redis this node never saw them on (a new
    /// deployment), they are set at once. Missing after they were seen, or
    /// set anew since (each setting is a fresh value: a node that started
    /// meanwhile and found them missing set them before this node looked),
    /// Redis (or one shard of a cluster) lost its data: sessions may not start
    /// meanwhile where the marker is gone (the start script refuses), the
    /// rooms resync (re-seeding their timelines, writing their chat back),
    /// the hook writes back this node's sessions, and two heartbeats later
    /// (every node has noticed and written back by then) the missing markers
    /// are set again.
    async fn check_ready(&self) -> RedisResult<()> {
        let first = lock(&self.inner.markers).is_empty();
        let read = self.read_markers(first).await?;
        let missing = read.iter().any(|(_, v)| v.is_none());
        let changed = {
            let known = lock(&self.inner.markers);
            read.iter().any(|(i, v)| v.is_some() && known.get(i).is_some_and(|k| k.is_some() && k != v))
        };
        if first || !missing && !changed {
            if first && missing {
                self.set_markers().await?;
                self.remember_markers().await?;
            } else {
                self.remember(read);
            }
            return Ok(());
        }
        if self.inner.recovering.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        warn!(missing, "Redis lost its data (restarted empty, or a replica that was behind took over): writing back");
        metrics::counter!("lockstep_redis_data_lost_total").increment(1);
        for sink in self.sinks() {
            sink.deliver(Remote::Resync);
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Some(hook) = this.inner.on_data_lost.get() {
                hook().await;
            }
            tokio::time::sleep(HEARTBEAT * 2).await;
            if let Err(e) = async {
                this.set_markers().await?;
                this.remember_markers().await
            }
            .await
            {
                warn!(error = %e, "the ready markers were not set; the next heartbeat writes back again");
            }
            this.inner.recovering.store(false, Ordering::Relaxed);
        });
        Ok(())
    }

    /// The ready markers' values (`None`: missing), by shard index. One
    /// server: all of them, in one command. A Redis Cluster: a quarter of
    /// them at each beat, in turn (each on its own slot: one command each,
    /// sent together; a multi-slot command is avoided, as redis-rs 1.8's
    /// fan-out left the connection timing out for good after a failover), or
    /// all of them (`all`).
    async fn read_markers(&self, all: bool) -> RedisResult<Vec<(usize, Option<String>)>> {
        let mut conn = self.inner.conn.clone();
        if !conn.is_cluster() {
            let markers: Vec<String> = keys::session_shards().map(|s| keys::ready(&s)).collect();
            let values: Vec<Option<String>> = redis::cmd("MGET").arg(&markers).query_async(&mut conn).await?;
            return Ok(values.into_iter().enumerate().collect());
        }
        let turn = self.inner.ready_turn.fetch_add(1, Ordering::Relaxed) % 4;
        let reads = keys::session_shards().enumerate().filter(|(i, _)| all || i % 4 == turn).map(|(i, s)| {
            let mut conn = conn.clone();
            async move {
                let v: Option<String> = redis::cmd("GET").arg(keys::ready(&s)).query_async(&mut conn).await?;
                Ok::<_, redis::RedisError>((i, v))
            }
        });
        futures_util::future::try_join_all(reads).await
    }

    /// Reads every marker and remembers its value (after this node set them).
    async fn remember_markers(&self) -> RedisResult<()> {
        let read = self.read_markers(true).await?;
        self.remember(read);
        Ok(())
    }

    /// Remembers markers' values as read.
    fn remember(&self, read: Vec<(usize, Option<String>)>) {
        lock(&self.inner.markers).extend(read);
    }

    /// Sets every missing ready marker, to a value of this setting's own.
    async fn set_markers(&self) -> RedisResult<()> {
        let value = format!("{}:{}", self.inner.node, crate::store::random_id());
        let sets = keys::session_shards().map(|s| {
            let (mut conn, value) = (self.inner.conn.clone(), value.clone());
            async move { redis::cmd("SET").arg(keys::ready(&s)).arg(value).arg("NX").query_async::<()>(&mut conn).await }
        });
        futures_util::future::try_join_all(sets).await.map(|_| ())
    }

    /// Tells every node (this one included) that `user`'s `device` was revoked.
    pub(crate) async fn revoke(&self, user: &str, device: &str) -> RedisResult<()> {
        let mut conn = self.inner.conn.clone();
        redis::cmd("PUBLISH").arg(REVOKE).arg(format!("{user}\n{device}")).query_async::<i64>(&mut conn).await?;
        Ok(())
    }

    /// The shared store over the same connection.
    pub(crate) fn store(&self) -> RedisStore {
        self.inner.store.clone()
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Local>> {
        lock(&self.inner.rooms)
    }

    /// The sink of `room` on this node, if it is served here.
    fn sink_of(&self, room: &str) -> Option<Arc<dyn RemoteSink>> {
        self.rooms().get(room).and_then(Local::sink)
    }

    /// Every served room's sink.
    fn sinks(&self) -> Vec<Arc<dyn RemoteSink>> {
        self.rooms().values().filter_map(Local::sink).collect()
    }

    /// Whether Redis answered the last heartbeat.
    pub(crate) fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    fn set_up(&self, up: bool) {
        if self.inner.up.swap(up, Ordering::Relaxed) == up {
            return;
        }
        metrics::gauge!("lockstep_redis_up").set(if up { 1.0 } else { 0.0 });
        if up {
            info!("Redis is reachable again: rooms resync");
            for sink in self.sinks() {
                sink.deliver(Remote::Resync);
            }
        } else {
            warn!("Redis is unreachable: serving the last known timelines, refusing commands");
        }
    }

    async fn heartbeat(self, mut shutdown: watch::Receiver<bool>) {
        let mut failed = 0u32;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(HEARTBEAT) => {}
                _ = crate::util::wait_true(&mut shutdown) => break,
            }
            let mut ok = self.beat().await;
            if ok.is_ok() && !self.is_up() {
                // Back: every served room subscribes again before the rooms
                // resync (a subscription Redis never confirmed is not one the
                // connection renews by itself).
                ok = self.resubscribe_all().await;
            }
            if let Err(e) = &ok {
                warn!(error = %e, "Redis heartbeat failed");
            }
            failed = if ok.is_ok() { 0 } else { failed + 1 };
            self.set_up(ok.is_ok());
            if failed >= REBUILD_AFTER && self.inner.conn.is_cluster() {
                // A cluster connection that keeps failing may be one redis-rs
                // left stuck (see `Conn::rebuild`): fresh ones learn the
                // topology anew; the next good beat subscribes again.
                warn!(failed, "rebuilding the Redis Cluster connections");
                metrics::counter!("lockstep_redis_reconnects_total").increment(1);
                for c in [&self.inner.conn, &self.inner.sub] {
                    if let Err(e) = c.rebuild().await {
                        warn!(error = %e, "no fresh Redis Cluster connection yet");
                    }
                }
                failed = 0;
            }
        }
        // A clean stop leaves at once; a crash leaves when the TTL runs out.
        let mut conn = self.inner.conn.clone();
        let _: RedisResult<()> = redis::cmd("DEL").arg(keys::node(&self.inner.node)).query_async(&mut conn).await;
    }

    /// Subscribes to `room`'s channels; returns once Redis confirmed (room
    /// changes published from then on reach this node).
    async fn subscribe_room(&self, room: &Arc<str>) -> RedisResult<()> {
        let (done, confirmed) = oneshot::channel();
        let change = SubChange { room: room.clone(), on: true, done: Some(done) };
        if self.inner.subs.send(change).is_err() {
            return Err(redis::RedisError::from((redis::ErrorKind::Client, "the subscription task ended")));
        }
        confirmed.await.unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Client, "no answer"))))
    }

    /// Unsubscribes from `room`'s channels (in order after any subscription
    /// asked before).
    fn unsubscribe_room(&self, room: Arc<str>) {
        let _ = self.inner.subs.send(SubChange { room, on: false, done: None });
    }

    /// On a Redis Cluster: reads which primary serves which slots and, when
    /// that changed since the last beat (a failover, a resharding),
    /// subscribes every served room again. The connection renews its own
    /// classic subscriptions after a reconnection, but a room's sharded
    /// subscription lives on the primary that owned its slot and does not
    /// follow a failover by itself (seen with redis-rs 1.8: after a replica
    /// took over, its room channels had no subscriber).
    async fn follow_topology(&self) -> RedisResult<()> {
        if !self.inner.conn.is_cluster() {
            return Ok(());
        }
        let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut self.inner.conn.clone()).await?;
        let mut view: Vec<(i64, i64, String)> = Vec::new();
        if let Value::Array(ranges) = slots {
            for r in ranges {
                let Value::Array(r) = r else { continue };
                let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) =
                    (r.first(), r.get(1), r.get(2))
                else {
                    continue;
                };
                let addr: Vec<String> = primary.iter().take(2).filter_map(crate::store::redis::value_text).collect();
                view.push((*start, *end, addr.join(":")));
                // Every node listed (replicas too) seeds a fresh connection.
                let nodes: Vec<String> = r[2..]
                    .iter()
                    .filter_map(|n| match n {
                        Value::Array(n) => {
                            let a: Vec<String> = n.iter().take(2).filter_map(crate::store::redis::value_text).collect();
                            (a.len() == 2).then(|| a.join(":"))
                        }
                        _ => None,
                    })
                    .collect();
                self.inner.conn.learn(&nodes);
                self.inner.sub.learn(&nodes);
            }
        }
        view.sort();
        let changed = {
            let mut known = lock(&self.inner.topology);
            let changed = known.as_ref().is_some_and(|k| *k != view);
            *known = Some(view);
            changed
        };
        if changed {
            info!("the Redis Cluster's primaries changed: subscribing every served room again");
            metrics::counter!("lockstep_redis_topology_changes_total").increment(1);
            self.resubscribe_all().await?;
        }
        Ok(())
    }

    /// Subscribes every served room again (and, on a cluster, whose
    /// subscription connection may be a fresh one, to revocations).
    async fn resubscribe_all(&self) -> RedisResult<()> {
        if self.inner.sub.is_cluster() {
            self.inner.sub.clone().subscribe_global(REVOKE).await?;
        }
        let rooms: Vec<Arc<str>> = self.rooms().keys().cloned().collect();
        for room in rooms {
            self.subscribe_room(&room).await?;
        }
        Ok(())
    }

    async fn present(&self) -> RedisResult<()> {
        redis::cmd("SET")
            .arg(keys::node(&self.inner.node))
            .arg(1)
            .arg("PX")
            .arg(NODE_TTL.as_millis() as u64)
            .query_async::<()>(&mut self.inner.conn.clone())
            .await
    }

    async fn beat(&self) -> RedisResult<()> {
        let conn = self.inner.conn.clone();
        self.present().await.inspect_err(|e| tracing::debug!(error = %e, "beat: present"))?;
        self.check_ready().await.inspect_err(|e| tracing::debug!(error = %e, "beat: ready"))?;
        // One server: the ping makes the subscription connection reconnect
        // (and resubscribe) after Redis comes back. A cluster's connection
        // reconnects by itself, and a ping there goes to every node known,
        // the dead ones too: `follow_topology` renews the subscriptions.
        if !self.inner.sub.is_cluster() {
            redis::cmd("PING")
                .query_async::<()>(&mut self.inner.sub.clone())
                .await
                .inspect_err(|e| tracing::debug!(error = %e, "beat: sub ping"))?;
        }
        self.follow_topology().await.inspect_err(|e| tracing::debug!(error = %e, "beat: topology"))?;
        let (rooms, ended): (Vec<Served>, Vec<Arc<str>>) = {
            let mut rooms = self.rooms();
            let snapshot = rooms
                .iter()
                .map(|(r, l)| (r.clone(), l.count, reach::encode(&l.reach), reach::encode(&l.sync), l.sink()))
                .collect();
            let mut ended = Vec::new();
            rooms.retain(|r, l| {
                let live = l.sink.as_ref().is_some_and(|w| w.strong_count() > 0);
                if !live {
                    ended.push(r.clone());
                }
                live
            });
            (snapshot, ended)
        };
        // Rooms that ended here: their messages no longer come to this node.
        for room in ended {
            self.unsubscribe_room(room);
        }
        // The room keys' TTLs (an hour) are refreshed one beat in REFRESH_EVERY.
        let refresh = self.inner.beats.fetch_add(1, Ordering::Relaxed).is_multiple_of(REFRESH_EVERY);
        // Owned items: a stream over borrowed ones trips the heartbeat task's `Send` check.
        let jobs: Vec<(Arc<str>, u32, String, String)> =
            rooms.iter().map(|(room, n, reach, sync, _)| (room.clone(), *n, reach.clone(), sync.clone())).collect();
        let counts: Vec<RedisResult<Beat>> =
            futures_util::stream::iter(jobs.into_iter().map(|(room, n, rtts, drifts)| {
                let mut conn = conn.clone();
                let [log, seq, mute] = keys::chat(&room);
                async move {
                    let room = &room;
                    self.inner
                        .count
                        .key(keys::counts(room))
                        .key(keys::members(room, &self.inner.node))
                        .key(keys::timeline(room))
                        .key(keys::id_block(room))
                        .key(keys::policy(room))
                        .key(keys::clock(room))
                        .key(log)
                        .key(seq)
                        .key(mute)
                        .key(keys::media(room))
                        .key(keys::reach(room))
                        .key(keys::sync_quality(room))
                        .arg(&self.inner.node)
                        .arg(n)
                        .arg(NODE_TTL.as_millis() as u64)
                        .arg(NODE_TTL.as_millis() as u64)
                        .arg(ROOM_KEY_TTL.as_millis() as u64)
                        .arg(if refresh { "1" } else { "0" })
                        .arg(rtts)
                        .arg(drifts)
                        .invoke_async::<Beat>(&mut conn)
                        .await
                }
            }))
            .buffered(BEAT_CONCURRENCY)
            .collect()
            .await;
        // Redis answered this beat's presence and checks: it is up. A room
        // whose script failed (a slow shard, a timeout under load) keeps its
        // last counts and is written again at the next beat; only a beat
        // whose every room failed says Redis is down (which would refuse
        // every room's commands and reload every room when it comes back).
        let mut failed = 0usize;
        let mut first = None;
        for ((_, _, _, _, sink), others) in rooms.iter().zip(counts) {
            match others {
                Ok((others, reaches, drifts)) => {
                    if let Some(sink) = sink {
                        sink.deliver(Remote::Viewers(others));
                        sink.deliver(Remote::Reach(reach::merge(&reaches)));
                        sink.deliver(Remote::Sync(reach::merge(&drifts)));
                    }
                }
                Err(e) => {
                    failed += 1;
                    first.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first {
            metrics::counter!("lockstep_redis_room_beats_failed_total").increment(failed as u64);
            if failed == rooms.len() {
                return Err(e);
            }
            warn!(failed, rooms = rooms.len(), error = %e, "some rooms' heartbeats failed; written again at the next beat");
        }
        self.share_needs().await?;
        self.forget_dead_nodes().await
    }

    /// Tells every local room about the nodes heard from whose presence has
    /// expired (crashed, or cut off from Redis for longer than the TTL).
    async fn forget_dead_nodes(&self) -> RedisResult<()> {
        let seen: Vec<Arc<str>> = lock(&self.inner.seen).iter().cloned().collect();
        if seen.is_empty() {
            return Ok(());
        }
        // One command per node (each key on its own slot of a cluster), sent together.
        let alive: Vec<bool> = futures_util::future::try_join_all(seen.iter().map(|node| {
            let mut conn = self.inner.conn.clone();
            async move { redis::cmd("EXISTS").arg(keys::node(node)).query_async::<bool>(&mut conn).await }
        }))
        .await?;
        for (node, alive) in seen.into_iter().zip(alive) {
            if alive {
                continue;
            }
            info!(node = %node, "a node's presence expired: its members leave");
            lock(&self.inner.seen).remove(&node);
            for sink in self.sinks() {
                sink.deliver(Remote::NodeGone(node.clone()));
            }
        }
        Ok(())
    }

    fn heard_from(&self, node: &str) {
        let mut seen = lock(&self.inner.seen);
        if !seen.contains(node) {
            seen.insert(node.into());
        }
    }
}

/// Applies subscription changes in order, on the subscription connection.
async fn subscriptions(mut sub: Conn, mut changes: mpsc::UnboundedReceiver<SubChange>) {
    let mut subscribed: HashSet<Arc<str>> = HashSet::new();
    while let Some(SubChange { room, on, done }) = changes.recv().await {
        let channels = [keys::timeline_channel(&room), keys::presence_channel(&room), keys::chat_channel(&room)];
        let result = sub.subscribe_rooms(&channels, on).await;
        if let Err(e) = &result {
            warn!(event_id = %room, error = %e, subscribe = on, "room subscription not changed");
        }
        if on {
            subscribed.insert(room);
        } else {
            subscribed.remove(&room);
        }
        metrics::gauge!("lockstep_redis_subscribed_rooms").set(subscribed.len() as f64);
        if let Some(done) = done {
            let _ = done.send(result);
        }
    }
}

/// Routes pub/sub messages to local rooms.
async fn dispatch(mut rx: mpsc::UnboundedReceiver<PushInfo>, inner: Weak<Inner>) {
    while let Some(push) = rx.recv().await {
        let Some(inner) = inner.upgrade() else { break };
        let cluster = Cluster { inner };
        match push.kind {
            // A room channel: sharded (a cluster) or classic (one server).
            PushKind::SMessage | PushKind::Message => {
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (push.data.first(), push.data.get(1))
                else {
                    continue;
                };
                if channel.as_slice() == REVOKE.as_bytes() {
                    let Some((user, device)) = std::str::from_utf8(payload).ok().and_then(|p| p.split_once('\n'))
                    else {
                        continue;
                    };
                    if let Some(handler) = cluster.inner.on_revoke.get() {
                        handler(user, device);
                    }
                    continue;
                }
                let Some(channel) = std::str::from_utf8(channel).ok().and_then(Channel::parse) else { continue };
                metrics::counter!("lockstep_redis_room_messages_total").increment(1);
                let Some(sink) = cluster.sink_of(channel.room()) else { continue };
                match channel {
                    Channel::Presence(_) => {
                        let Ok(msg) = serde_json::from_slice::<PresenceMsg>(payload) else { continue };
                        if msg.node == cluster.inner.node {
                            continue;
                        }
                        cluster.heard_from(&msg.node);
                        sink.deliver(Remote::Shared { node: msg.node.into(), events: msg.events });
                    }
                    Channel::Chat(_) => {
                        if let Some(op) = decode_chat(payload) {
                            sink.deliver(Remote::Chat(op));
                        }
                    }
                    Channel::Timeline(_) => {
                        if let Some(change) = decode_change(payload) {
                            sink.deliver(Remote::External(change));
                        }
                    }
                }
            }
            PushKind::Disconnection => cluster.set_up(false),
            _ => {}
        }
    }
}
