//! Scale-out: several nodes serve one room through Redis (`--redis-url`).
//!
//! - **Timeline authority**: each room's timeline is one Redis record
//!   (`lockstep:tl:{room}`: epoch and the encoded `TimelineChanged`). A node
//!   commits a change its own `Room` made with a Lua compare-and-set on the
//!   epoch it last saw; the same script publishes the change on
//!   `lockstep:room:{room}`, so the publication order is the commit order.
//!   Every node (psubscribed to `lockstep:room:*`, resubscribed automatically
//!   after a reconnect) applies newer epochs to its local `Room`, which fans
//!   them out encoded once per node.
//! - **Counts**: every second each node writes its local count of each room
//!   into `lockstep:count:{room}` and refreshes its presence key
//!   `lockstep:node:{id}` (TTL [`NODE_TTL`]); the other nodes' counts are
//!   summed from live nodes only, so a crashed node's viewers vanish within
//!   the TTL.
//! - **Members, roles, policy**: each node keeps its members of a room in
//!   `lockstep:members:{room}:{node}` (expires with the node's heartbeat) and
//!   publishes joins, leaves, role and policy changes on
//!   `lockstep:presence:{room}` in the order its room made them; the policy is
//!   kept in `lockstep:policy:{room}`. A room starting on a node loads the
//!   other nodes' members and the policy, and takes a block of member ids
//!   (`lockstep:mblock:{room}`) so ids never collide across nodes. When a
//!   node's presence key expires, every node drops that node's members.
//! - **Redis down**: commands are refused, viewers keep the last timelines,
//!   `lockstep_redis_up` is 0; when a heartbeat succeeds again every room
//!   reloads (or re-seeds) its record.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use lockstep_protocol::{ControlPolicy, TimelineChanged};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, RedisResult, Script, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::hub::RoomEvent;
use crate::room::{ID_BLOCK, MemberId, Shared};
use crate::store::redis::{RedisStore, decode_change, encode_change, timeline_key};

/// How often a node refreshes its presence and counts.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a node's presence outlives its last heartbeat.
pub const NODE_TTL: Duration = Duration::from_secs(3);

const CHANNEL: &str = "lockstep:room:";
/// Membership and control changes of a room (JSON [`PresenceMsg`]).
const PRESENCE: &str = "lockstep:presence:";
/// How long a room's list of nodes outlives its last announcement.
const ROOM_NODES_TTL_MS: u64 = 24 * 3600 * 1000;
/// Device revocations: `user \n device`; every node closes that device's
/// local connections.
const REVOKE: &str = "lockstep:revoke";

/// CAS on the epoch (ARGV[1] expected, ARGV[2] new, ARGV[3] data); publishes
/// on success. A missing record (Redis lost its data) accepts any change.
const COMMIT: &str = r"
local cur = redis.call('HGET', KEYS[1], 'epoch')
if cur == false or cur == ARGV[1] then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'data', ARGV[3])
  redis.call('PUBLISH', KEYS[2], ARGV[3])
  return 1
end
return redis.call('HGET', KEYS[1], 'data')
";

/// The record, created from ARGV if missing.
const LOAD_OR_SEED: &str = r"
local cur = redis.call('HGET', KEYS[1], 'data')
if cur then return cur end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'data', ARGV[2])
return ARGV[2]
";

/// Writes this node's count and refreshes the TTL of its member list
/// (KEYS[2]); returns the sum of the other live nodes' counts.
const COUNT: &str = r"
if ARGV[2] == '0' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
local all = redis.call('HGETALL', KEYS[1])
local others = 0
for i = 1, #all, 2 do
  if all[i] ~= ARGV[1] then
    if redis.call('EXISTS', ARGV[3] .. all[i]) == 1 then
      others = others + tonumber(all[i + 1])
    else
      redis.call('HDEL', KEYS[1], all[i])
    end
  end
end
redis.call('PEXPIRE', KEYS[1], 600000)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return others
";

/// What a node publishes on a room's presence channel.
#[derive(Debug, Serialize, Deserialize)]
struct PresenceMsg {
    node: String,
    events: Vec<Shared>,
}

/// A room's membership and control changes, as this node writes them to Redis
/// and publishes them.
#[derive(Debug, Default)]
pub struct Announce {
    /// This node's members to (re)write: the `Shared::Joined` record of each.
    pub upserts: Vec<(MemberId, Shared)>,
    /// This node's members that left.
    pub removes: Vec<MemberId>,
    /// A new control policy.
    pub policy: Option<ControlPolicy>,
    /// What to publish to the other nodes, in order.
    pub events: Vec<Shared>,
}

impl Announce {
    /// Appends a later announcement of the same room. Member ids are never
    /// reused while a member may still be listed, so writing every upsert,
    /// then every removal, leaves the same list as writing them in turn.
    pub fn merge(&mut self, later: Announce) {
        self.upserts.extend(later.upserts);
        self.removes.extend(later.removes);
        self.policy = later.policy.or(self.policy);
        self.events.extend(later.events);
    }
}

/// Most announcements coalesced into one round of writes.
const MAX_ANNOUNCE_BATCH: usize = 1024;

fn members_key(room: &str, node: &str) -> String {
    format!("lockstep:members:{room}:{node}")
}

fn room_nodes_key(room: &str) -> String {
    format!("lockstep:rnodes:{room}")
}

fn policy_key(room: &str) -> String {
    format!("lockstep:policy:{room}")
}

/// The outcome of a commit.
#[derive(Debug)]
pub enum Commit {
    /// Committed and published.
    Done,
    /// Another node changed the timeline first: the authoritative change.
    Conflict(TimelineChanged),
}

/// Whether epoch `a` is newer than `b` (wrapping).
pub fn newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// See the module docs. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.inner.node).finish_non_exhaustive()
    }
}

struct Local {
    tx: Option<mpsc::WeakUnboundedSender<RoomEvent>>,
    count: u32,
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
    seen: Mutex<std::collections::HashSet<Arc<str>>>,
    /// Announcements, written in order by one task.
    announce: mpsc::UnboundedSender<(Arc<str>, Announce)>,
    on_revoke: std::sync::OnceLock<crate::accounts::DeviceHook>,
    commit: Script,
    load: Script,
    count: Script,
}

fn node_key(node: &str) -> String {
    format!("lockstep:node:{node}")
}

impl Cluster {
    /// Connects (RESP3, connection manager with automatic resubscription),
    /// subscribes to room channels, and starts the heartbeat, which stops
    /// when `shutdown` turns true.
    pub async fn connect(url: &str, shutdown: watch::Receiver<bool>) -> RedisResult<Cluster> {
        let info = url.into_connection_info()?;
        let redis_settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(redis_settings))?;
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
        sub.subscribe(REVOKE).await?;
        let conn = client.get_connection_manager_with_config(cfg()).await?;
        let (announce, announcements) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            conn,
            sub,
            node: crate::store::random_id(),
            up: AtomicBool::new(true),
            rooms: Mutex::default(),
            seen: Mutex::default(),
            announce,
            on_revoke: std::sync::OnceLock::new(),
            commit: Script::new(COMMIT),
            load: Script::new(LOAD_OR_SEED),
            count: Script::new(COUNT),
        });
        metrics::gauge!("lockstep_redis_up").set(1.0);
        info!(node = %inner.node, "scale-out through Redis");
        tokio::spawn(dispatch(rx, Arc::downgrade(&inner)));
        let cluster = Cluster { inner };
        // Present at once, so other nodes never take this one's first members
        // for a dead node's.
        cluster.present().await?;
        tokio::spawn(cluster.clone().write_announcements(announcements));
        tokio::spawn(cluster.clone().heartbeat(shutdown));
        Ok(cluster)
    }

    /// Sets what this node does when a device is revoked on any node (once).
    pub fn on_revoke(&self, handler: impl Fn(&str, &str) + Send + Sync + 'static) {
        let _ = self.inner.on_revoke.set(Box::new(handler));
    }

    /// Tells every node (this one included) that `user`'s `device` was revoked.
    pub async fn revoke(&self, user: &str, device: &str) -> RedisResult<()> {
        let mut conn = self.inner.conn.clone();
        redis::cmd("PUBLISH").arg(REVOKE).arg(format!("{user}\n{device}")).query_async::<i64>(&mut conn).await?;
        Ok(())
    }

    /// The shared store over the same connection.
    pub(crate) fn store(&self) -> RedisStore {
        RedisStore::new(self.inner.conn.clone())
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Whether Redis answered lately.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Local>> {
        self.inner.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A room actor starts on this node: changes and counts go to `tx`.
    pub fn register(&self, room: &Arc<str>, tx: &mpsc::UnboundedSender<RoomEvent>) {
        let mut rooms = self.rooms();
        let count = rooms.get(room).map_or(0, |l| l.count);
        rooms.insert(room.clone(), Local { tx: Some(tx.downgrade()), count });
    }

    /// A room actor ends: its count goes to 0 at the next heartbeat.
    pub fn unregister(&self, room: &Arc<str>, tx: &mpsc::UnboundedSender<RoomEvent>) {
        if let Some(l) = self.rooms().get_mut(room)
            && l.tx.as_ref().and_then(|w| w.upgrade()).is_none_or(|t| t.same_channel(tx))
        {
            *l = Local { tx: None, count: 0 };
        }
    }

    /// This node's viewers of `room`.
    pub fn set_local_count(&self, room: &Arc<str>, n: u32) {
        if let Some(l) = self.rooms().get_mut(room) {
            l.count = n;
        }
    }

    fn set_up(&self, up: bool) {
        if self.inner.up.swap(up, Ordering::Relaxed) == up {
            return;
        }
        metrics::gauge!("lockstep_redis_up").set(if up { 1.0 } else { 0.0 });
        if up {
            info!("Redis is reachable again: rooms resync");
            for l in self.rooms().values() {
                if let Some(tx) = l.tx.as_ref().and_then(|w| w.upgrade()) {
                    let _ = tx.send(RoomEvent::Resync);
                }
            }
        } else {
            warn!("Redis is unreachable: serving the last known timelines, refusing commands");
        }
    }

    /// Commits `change` if the room's record is still at epoch `expected`.
    pub async fn commit(&self, room: &str, expected: u32, change: &TimelineChanged) -> RedisResult<Commit> {
        let v: RedisResult<Value> = self
            .inner
            .commit
            .key(timeline_key(room))
            .key(format!("{CHANNEL}{room}"))
            .arg(expected)
            .arg(change.timeline.epoch)
            .arg(encode_change(change))
            .invoke_async(&mut self.inner.conn.clone())
            .await;
        match v {
            Ok(Value::Int(1)) => Ok(Commit::Done),
            Ok(Value::BulkString(b)) => match decode_change(&b) {
                Some(c) => Ok(Commit::Conflict(c)),
                None => Err(redis::RedisError::from((redis::ErrorKind::Parse, "malformed timeline record"))),
            },
            Ok(_) => Err(redis::RedisError::from((redis::ErrorKind::Parse, "unexpected commit reply"))),
            Err(e) => {
                self.set_up(false);
                Err(e)
            }
        }
    }

    /// The room's record, created from `ours` if Redis has none.
    pub async fn load_or_seed(&self, room: &str, ours: &TimelineChanged) -> RedisResult<TimelineChanged> {
        let b: Vec<u8> = self
            .inner
            .load
            .key(timeline_key(room))
            .arg(ours.timeline.epoch)
            .arg(encode_change(ours))
            .invoke_async(&mut self.inner.conn.clone())
            .await?;
        decode_change(&b).ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Parse, "malformed timeline record")))
    }

    async fn heartbeat(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(HEARTBEAT) => {}
                _ = crate::session::wait_true(&mut shutdown) => break,
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
        redis::cmd("PING").query_async::<()>(&mut self.inner.sub.clone()).await?;
        let rooms: Vec<(Arc<str>, u32, Option<mpsc::UnboundedSender<RoomEvent>>)> = {
            let mut rooms = self.rooms();
            let snapshot =
                rooms.iter().map(|(r, l)| (r.clone(), l.count, l.tx.as_ref().and_then(|w| w.upgrade()))).collect();
            rooms.retain(|_, l| l.tx.as_ref().is_some_and(|w| w.strong_count() > 0));
            snapshot
        };
        let prefix = node_key("");
        let counts = futures_util::future::join_all(rooms.iter().map(|(room, n, _)| {
            let mut conn = conn.clone();
            let prefix = prefix.clone();
            async move {
                self.inner
                    .count
                    .key(format!("lockstep:count:{room}"))
                    .key(members_key(room, &self.inner.node))
                    .arg(&self.inner.node)
                    .arg(*n)
                    .arg(prefix)
                    .arg(NODE_TTL.as_millis() as u64)
                    .invoke_async::<u32>(&mut conn)
                    .await
            }
        }))
        .await;
        for ((_, _, tx), others) in rooms.iter().zip(counts) {
            let others = others?;
            if let Some(tx) = tx {
                let _ = tx.send(RoomEvent::RemoteViewers(others));
            }
        }
        self.forget_dead_nodes().await
    }

    /// Tells every local room about the nodes heard from whose presence has
    /// expired (crashed, or cut off from Redis for longer than the TTL).
    async fn forget_dead_nodes(&self) -> RedisResult<()> {
        let seen: Vec<Arc<str>> = self.inner.seen.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
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
            self.inner.seen.lock().unwrap_or_else(|e| e.into_inner()).remove(&node);
            for l in self.rooms().values() {
                if let Some(tx) = l.tx.as_ref().and_then(|w| w.upgrade()) {
                    let _ = tx.send(RoomEvent::NodeGone(node.clone()));
                }
            }
        }
        Ok(())
    }

    /// The first id of a block of member ids for this node's `room`, unique
    /// among the blocks handed out for it (4,094 blocks of [`ID_BLOCK`]
    /// ids, reused round-robin).
    pub async fn id_base(&self, room: &str) -> MemberId {
        let n: RedisResult<u64> =
            redis::cmd("INCR").arg(format!("lockstep:mblock:{room}")).query_async(&mut self.inner.conn.clone()).await;
        let n = n.unwrap_or_else(|e| {
            warn!(error = %e, "no member id block from Redis: taking a random one");
            let mut b = [0u8; 8];
            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
            u64::from_le_bytes(b)
        });
        ((n.wrapping_sub(1) % 4094) as u32 + 1) * ID_BLOCK
    }

    /// Writes and publishes a room's membership and control changes (in
    /// order with the room's earlier ones).
    pub fn announce(&self, room: &Arc<str>, a: Announce) {
        let _ = self.inner.announce.send((room.clone(), a));
    }

    async fn write_announcements(self, mut rx: mpsc::UnboundedReceiver<(Arc<str>, Announce)>) {
        while let Some(first) = rx.recv().await {
            // Coalesce what queued up meanwhile (a join storm): one write and
            // one publication per room, in order.
            let mut batch: Vec<(Arc<str>, Announce)> = vec![first];
            while batch.len() < MAX_ANNOUNCE_BATCH
                && let Ok((room, a)) = rx.try_recv()
            {
                match batch.iter_mut().find(|(r, _)| *r == room) {
                    Some((_, queued)) => queued.merge(a),
                    None => batch.push((room, a)),
                }
            }
            for (room, a) in batch {
                if let Err(e) = self.write_announcement(&room, a).await {
                    // The room re-announces its members when Redis is back.
                    warn!(event_id = %room, error = %e, "membership change not shared");
                }
            }
        }
    }

    async fn write_announcement(&self, room: &str, a: Announce) -> RedisResult<()> {
        let node = &self.inner.node;
        let members = members_key(room, node);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (id, record) in &a.upserts {
            let json = serde_json::to_string(record).expect("records serialize");
            pipe.hset(&members, id, json).ignore();
        }
        if !a.removes.is_empty() {
            pipe.hdel(&members, &a.removes).ignore();
        }
        pipe.pexpire(&members, NODE_TTL.as_millis() as i64).ignore();
        pipe.sadd(room_nodes_key(room), node).ignore();
        pipe.pexpire(room_nodes_key(room), ROOM_NODES_TTL_MS as i64).ignore();
        if let Some(policy) = a.policy {
            pipe.set(policy_key(room), serde_json::to_string(&policy).expect("policies serialize")).ignore();
        }
        if !a.events.is_empty() {
            let msg = PresenceMsg { node: node.clone(), events: a.events };
            let json = serde_json::to_string(&msg).expect("events serialize");
            pipe.publish(format!("{PRESENCE}{room}"), json).ignore();
        }
        pipe.query_async::<()>(&mut self.inner.conn.clone()).await
    }

    /// The other nodes' members of `room` and its policy, if one was set.
    pub async fn snapshot(&self, room: &str) -> RedisResult<(Option<ControlPolicy>, Vec<(String, Shared)>)> {
        let mut conn = self.inner.conn.clone();
        let (policy, nodes): (Option<String>, Vec<String>) =
            redis::pipe().get(policy_key(room)).smembers(room_nodes_key(room)).query_async(&mut conn).await?;
        let nodes: Vec<String> = nodes.into_iter().filter(|n| *n != self.inner.node).collect();
        let mut pipe = redis::pipe();
        for n in &nodes {
            pipe.hgetall(members_key(room, n));
        }
        let lists: Vec<HashMap<String, String>> =
            if nodes.is_empty() { Vec::new() } else { pipe.query_async(&mut conn).await? };
        let mut members = Vec::new();
        let mut gone = Vec::new();
        for (node, list) in nodes.into_iter().zip(lists) {
            if list.is_empty() {
                gone.push(node);
                continue;
            }
            self.heard_from(&node);
            for record in list.values() {
                if let Ok(ev @ Shared::Joined { .. }) = serde_json::from_str::<Shared>(record) {
                    members.push((node.clone(), ev));
                }
            }
        }
        if !gone.is_empty() {
            let _: RedisResult<()> =
                redis::cmd("SREM").arg(room_nodes_key(room)).arg(&gone).query_async(&mut conn).await;
        }
        let policy = policy.and_then(|p| serde_json::from_str(&p).ok());
        Ok((policy, members))
    }

    fn heard_from(&self, node: &str) {
        let mut seen = self.inner.seen.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.contains(node) {
            seen.insert(node.into());
        }
    }
}

/// Routes pub/sub messages to local rooms.
async fn dispatch(mut rx: mpsc::UnboundedReceiver<PushInfo>, inner: Weak<Inner>) {
    while let Some(push) = rx.recv().await {
        let Some(inner) = inner.upgrade() else { break };
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
                    if msg.node == inner.node {
                        continue;
                    }
                    let cluster = Cluster { inner };
                    cluster.heard_from(&msg.node);
                    let tx = {
                        let rooms = cluster.rooms();
                        rooms.get(room).and_then(|l| l.tx.as_ref()).and_then(|w| w.upgrade())
                    };
                    if let Some(tx) = tx {
                        let _ = tx.send(RoomEvent::Shared { node: msg.node.into(), events: msg.events });
                    }
                    continue;
                }
                let Some(room) = channel.strip_prefix(CHANNEL) else {
                    continue;
                };
                let Some(change) = decode_change(payload) else { continue };
                let tx = {
                    let rooms = inner.rooms.lock().unwrap_or_else(|e| e.into_inner());
                    rooms.get(room).and_then(|l| l.tx.as_ref()).and_then(|w| w.upgrade())
                };
                if let Some(tx) = tx {
                    let _ = tx.send(RoomEvent::External(change));
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
                if let Some(handler) = inner.on_revoke.get() {
                    handler(user, device);
                }
            }
            PushKind::Disconnection => Cluster { inner }.set_up(false),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_protocol::Role;

    fn joined(id: MemberId) -> Shared {
        Shared::Joined { id, role: Role::Viewer, claimed: false, name: String::new(), device: format!("d{id}") }
    }

    #[test]
    fn merged_announcements_keep_their_order_and_the_latest_policy() {
        let mut a = Announce { upserts: vec![(1, joined(1))], events: vec![joined(1)], ..Announce::default() };
        a.merge(Announce {
            removes: vec![1],
            policy: Some(ControlPolicy::Everyone),
            events: vec![Shared::Left { id: 1 }],
            ..Announce::default()
        });
        a.merge(Announce { upserts: vec![(2, joined(2))], events: vec![joined(2)], ..Announce::default() });
        assert_eq!(a.upserts.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(a.removes, vec![1]);
        assert_eq!(a.policy, Some(ControlPolicy::Everyone));
        assert_eq!(a.events, vec![joined(1), Shared::Left { id: 1 }, joined(2)]);
    }
}
