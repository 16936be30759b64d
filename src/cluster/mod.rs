//! Scale-out: several nodes serve one room through Redis (`--redis-url`).
//! [`Cluster`] is the rooms' [`crate::authority::Authority`] then.
//!
//! - **Timeline authority** ([`authority`]): each room's timeline is one
//!   Redis record (`lockstep:tl:{room}`: epoch and the encoded
//!   `TimelineChanged`). A node commits a change its own `Room` made with a
//!   Lua compare-and-set on the epoch it last saw (`lua/commit.lua`); the same
//!   script publishes the change on `lockstep:room:{room}`, so the
//!   publication order is the commit order. Every node (psubscribed to
//!   `lockstep:room:*`, resubscribed automatically after a reconnect) hands
//!   newer epochs to its local room. The room actor never waits for Redis:
//!   answers come back as events.
//! - **Counts**: every second each node writes its local count of each room
//!   into `lockstep:count:{room}` and refreshes its presence key
//!   `lockstep:node:{id}` (TTL [`NODE_TTL`]); the other nodes' counts are
//!   summed from live nodes only, so a crashed node's viewers vanish within
//!   the TTL. The same heartbeat keeps a served room's keys alive: they
//!   expire [`ROOM_KEY_TTL`] after the last node stopped serving the room.
//! - **Members, roles, policy** ([`presence`]): each node keeps its members of
//!   a room in `lockstep:members:{room}:{node}` (expires with the node's
//!   heartbeat) and publishes joins, leaves, role and policy changes on
//!   `lockstep:presence:{room}` in the order its room made them; the policy
//!   is kept in `lockstep:policy:{room}`. A room starting on a node loads the
//!   other nodes' members and the policy, and takes a block of member ids
//!   (`lockstep:mblock:{room}`) so ids never collide across nodes. When a
//!   node's presence key expires, every node drops that node's members.
//! - **Redis down**: commands are refused, viewers keep the last timelines,
//!   `lockstep_redis_up` is 0; when a heartbeat succeeds again every room
//!   reloads (or re-seeds) its record.

mod authority;
mod needs;
mod presence;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, RedisResult, Script, Value};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use self::presence::PresenceMsg;
use crate::authority::{Announce, Remote, RemoteSink};
use crate::room::NeedCounts;
use crate::store::redis::{CHAT_CHANNEL, RedisStore, decode_change, decode_chat};

/// How often a node refreshes its presence and counts.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a node's presence outlives its last heartbeat.
pub const NODE_TTL: Duration = Duration::from_secs(3);
/// How long a room's keys (timeline record, member-id blocks, node list,
/// policy) outlive the last node that served it (the store's rule).
pub(crate) use crate::store::ROOM_KEY_TTL;

const CHANNEL: &str = "lockstep:room:";
/// Membership and control changes of a room (JSON [`PresenceMsg`]).
const PRESENCE: &str = "lockstep:presence:";
/// Device revocations: `user \n device`; every node closes that device's
/// local connections.
const REVOKE: &str = "lockstep:revoke";

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

/// A served room at a heartbeat: its id, local count and sink.
type Served = (Arc<str>, u32, Option<Arc<dyn RemoteSink>>);

/// A room this node serves.
struct Local {
    sink: Option<Weak<dyn RemoteSink>>,
    count: u32,
    /// A live room: its members' needs (auto latency), shared each beat.
    needs: Option<NeedCounts>,
}

impl Local {
    fn sink(&self) -> Option<Arc<dyn RemoteSink>> {
        self.sink.as_ref().and_then(Weak::upgrade)
    }
}

struct Inner {
    /// Commands, scripts and publications.
    conn: ConnectionManager,
    /// Subscriptions only (its messages arrive in `dispatch`); the heartbeat
    /// pings it, which is also what makes it reconnect (and resubscribe)
    /// after Redis comes back.
    sub: ConnectionManager,
    node: String,
    up: AtomicBool,
    rooms: Mutex<HashMap<Arc<str>, Local>>,
    /// Other nodes this node has heard from; checked at every heartbeat.
    seen: Mutex<HashSet<Arc<str>>>,
    /// Announcements, written in order by one task (which ends when this
    /// sender goes, with the last `Cluster`).
    announce: mpsc::UnboundedSender<(Arc<str>, Announce)>,
    on_revoke: std::sync::OnceLock<RevokeHook>,
    /// What the node does when Redis lost its data (see [`Cluster::check_ready`]).
    on_data_lost: std::sync::OnceLock<DataLostHook>,
    /// Whether this node has seen the ready marker set.
    marked: AtomicBool,
    /// Whether this node is writing back after Redis lost its data.
    recovering: AtomicBool,
    commit: Script,
    load: Script,
    count: Script,
    /// The shared store over `conn` (its scripts hashed once, not per call).
    store: RedisStore,
}

fn node_key(node: &str) -> String {
    format!("lockstep:node:{node}")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cluster {
    /// Connects (RESP3, connection manager with automatic resubscription),
    /// subscribes to room channels, and starts the heartbeat, which stops
    /// when `shutdown` turns true.
    ///
    /// A `rediss://` URL is Redis over TLS (rustls with ring): the server's
    /// certificate must chain to `ca` (PEM) when given, else to the system's
    /// roots.
    pub(crate) async fn connect(url: &str, ca: Option<&[u8]>, shutdown: watch::Receiver<bool>) -> RedisResult<Cluster> {
        // redis-rs builds its rustls config with the process's crypto
        // provider: make it ring, as for QUIC (a no-op when already set).
        let _ = wtransport::tls::rustls::crypto::ring::default_provider().install_default();
        let info = url.into_connection_info()?;
        let redis_settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(redis_settings);
        let client = match ca {
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates { client_tls: None, root_cert: Some(pem.to_vec()) },
            )?,
            None => redis::Client::open(info)?,
        };
        let (tx, rx) = mpsc::unbounded_channel::<PushInfo>();
        let cfg = || {
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_response_timeout(Some(Duration::from_secs(1)))
                .set_max_delay(Duration::from_millis(500))
        };
        // Subscriptions get their own connection: push messages interleaved
        // with the replies of a pipeline on one connection confuse redis-rs'
        // reply matching (seen under load: replies handed to the wrong caller).
        let mut sub =
            client.get_connection_manager_with_config(cfg().set_push_sender(tx).set_automatic_resubscription()).await?;
        sub.psubscribe(format!("{CHANNEL}*")).await?;
        sub.psubscribe(format!("{PRESENCE}*")).await?;
        sub.psubscribe(format!("{CHAT_CHANNEL}*")).await?;
        sub.subscribe(REVOKE).await?;
        let conn = client.get_connection_manager_with_config(cfg()).await?;
        let (announce, announcements) = mpsc::unbounded_channel();
        let store = RedisStore::new(conn.clone());
        let inner = Arc::new(Inner {
            conn,
            sub,
            node: crate::store::random_id(),
            up: AtomicBool::new(true),
            rooms: Mutex::default(),
            seen: Mutex::default(),
            announce,
            on_revoke: std::sync::OnceLock::new(),
            on_data_lost: std::sync::OnceLock::new(),
            marked: AtomicBool::new(false),
            recovering: AtomicBool::new(false),
            commit: Script::new(include_str!("lua/commit.lua")),
            load: Script::new(include_str!("lua/load_or_seed.lua")),
            count: Script::new(include_str!("lua/count.lua")),
            store,
        });
        metrics::gauge!("lockstep_redis_up").set(1.0);
        info!(node = %inner.node, "scale-out through Redis");
        tokio::spawn(dispatch(rx, Arc::downgrade(&inner)));
        let cluster = Cluster { inner };
        // Present at once, so other nodes never take this one's first members
        // for a dead node's.
        cluster.present().await?;
        cluster.check_ready().await?;
        tokio::spawn(presence::write_announcements(Arc::downgrade(&cluster.inner), announcements));
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

    /// Checks the ready marker ([`crate::store::redis::READY`]) at every
    /// heartbeat. Missing on a Redis this node never saw it on (a new
    /// deployment), it is set at once. Missing after it was seen, Redis lost
    /// its data: sessions may not start meanwhile (the start script refuses),
    /// the rooms resync (re-seeding their timelines), the hook writes back
    /// this node's sessions, and two heartbeats later (every node has noticed
    /// and written back by then) the marker is set again.
    async fn check_ready(&self) -> RedisResult<()> {
        use crate::store::redis::READY;
        let mut conn = self.inner.conn.clone();
        let exists: bool = redis::cmd("EXISTS").arg(READY).query_async(&mut conn).await?;
        if exists || !self.inner.marked.load(Ordering::Relaxed) {
            if !exists {
                redis::cmd("SET").arg(READY).arg(&*self.inner.node).arg("NX").query_async::<()>(&mut conn).await?;
            }
            self.inner.marked.store(true, Ordering::Relaxed);
            return Ok(());
        }
        if self.inner.recovering.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        warn!("Redis lost its data (restarted empty, or a replica that was behind took over): writing back");
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
            let mut conn = this.inner.conn.clone();
            let set: RedisResult<()> =
                redis::cmd("SET").arg(READY).arg(&*this.inner.node).arg("NX").query_async(&mut conn).await;
            if let Err(e) = set {
                warn!(error = %e, "the ready marker was not set; the next heartbeat writes back again");
            }
            this.inner.recovering.store(false, Ordering::Relaxed);
        });
        Ok(())
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
        loop {
            tokio::select! {
                _ = tokio::time::sleep(HEARTBEAT) => {}
                _ = crate::util::wait_true(&mut shutdown) => break,
            }
            let ok = self.beat().await;
            if let Err(e) = &ok {
                warn!(error = %e, "Redis heartbeat failed");
            }
            self.set_up(ok.is_ok());
        }
        // A clean stop leaves at once; a crash leaves when the TTL runs out.
        let mut conn = self.inner.conn.clone();
        let _: RedisResult<()> = redis::cmd("DEL").arg(node_key(&self.inner.node)).query_async(&mut conn).await;
    }

    async fn present(&self) -> RedisResult<()> {
        redis::cmd("SET")
            .arg(node_key(&self.inner.node))
            .arg(1)
            .arg("PX")
            .arg(NODE_TTL.as_millis() as u64)
            .query_async::<()>(&mut self.inner.conn.clone())
            .await
    }

    async fn beat(&self) -> RedisResult<()> {
        let conn = self.inner.conn.clone();
        self.present().await?;
        self.check_ready().await?;
        redis::cmd("PING").query_async::<()>(&mut self.inner.sub.clone()).await?;
        let rooms: Vec<Served> = {
            let mut rooms = self.rooms();
            let snapshot = rooms.iter().map(|(r, l)| (r.clone(), l.count, l.sink())).collect();
            rooms.retain(|_, l| l.sink.as_ref().is_some_and(|w| w.strong_count() > 0));
            snapshot
        };
        let prefix = node_key("");
        let counts = futures_util::future::join_all(rooms.iter().map(|(room, n, _)| {
            let mut conn = conn.clone();
            let prefix = prefix.clone();
            let chat = RedisStore::chat_keys(room);
            async move {
                self.inner
                    .count
                    .key(format!("lockstep:count:{room}"))
                    .key(presence::members_key(room, &self.inner.node))
                    .key(crate::store::redis::timeline_key(room))
                    .key(authority::id_block_key(room))
                    .key(presence::policy_key(room))
                    .key(crate::store::redis::clock_key(room))
                    .key(&chat[0])
                    .key(&chat[1])
                    .key(&chat[2])
                    .key(crate::store::redis::media_key(room))
                    .arg(&self.inner.node)
                    .arg(*n)
                    .arg(prefix)
                    .arg(NODE_TTL.as_millis() as u64)
                    .arg(ROOM_KEY_TTL.as_millis() as u64)
                    .invoke_async::<u32>(&mut conn)
                    .await
            }
        }))
        .await;
        for ((_, _, sink), others) in rooms.iter().zip(counts) {
            let others = others?;
            if let Some(sink) = sink {
                sink.deliver(Remote::Viewers(others));
            }
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
        let mut pipe = redis::pipe();
        for node in &seen {
            pipe.exists(node_key(node));
        }
        let alive: Vec<bool> = pipe.query_async(&mut self.inner.conn.clone()).await?;
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

/// Routes pub/sub messages to local rooms.
async fn dispatch(mut rx: mpsc::UnboundedReceiver<PushInfo>, inner: Weak<Inner>) {
    while let Some(push) = rx.recv().await {
        let Some(inner) = inner.upgrade() else { break };
        let cluster = Cluster { inner };
        match push.kind {
            PushKind::PMessage => {
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (push.data.get(1), push.data.get(2))
                else {
                    continue;
                };
                let Ok(channel) = std::str::from_utf8(channel) else { continue };
                if let Some(room) = channel.strip_prefix(PRESENCE) {
                    let Ok(msg) = serde_json::from_slice::<PresenceMsg>(payload) else { continue };
                    if msg.node == cluster.inner.node {
                        continue;
                    }
                    cluster.heard_from(&msg.node);
                    if let Some(sink) = cluster.sink_of(room) {
                        sink.deliver(Remote::Shared { node: msg.node.into(), events: msg.events });
                    }
                } else if let Some(room) = channel.strip_prefix(CHAT_CHANNEL) {
                    if let Some(op) = decode_chat(payload)
                        && let Some(sink) = cluster.sink_of(room)
                    {
                        sink.deliver(Remote::Chat(op));
                    }
                } else if let Some(room) = channel.strip_prefix(CHANNEL)
                    && let Some(change) = decode_change(payload)
                    && let Some(sink) = cluster.sink_of(room)
                {
                    sink.deliver(Remote::External(change));
                }
            }
            PushKind::Message => {
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (push.data.first(), push.data.get(1))
                else {
                    continue;
                };
                if channel.as_slice() != REVOKE.as_bytes() {
                    continue;
                }
                let Some((user, device)) = std::str::from_utf8(payload).ok().and_then(|p| p.split_once('\n')) else {
                    continue;
                };
                if let Some(handler) = cluster.inner.on_revoke.get() {
                    handler(user, device);
                }
            }
            PushKind::Disconnection => cluster.set_up(false),
            _ => {}
        }
    }
}
