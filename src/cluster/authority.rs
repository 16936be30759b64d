//! The cluster as the rooms' [`Authority`]: timeline changes committed with
//! a compare-and-set in Redis (`lua/commit.lua`), answered as events; a
//! room's state loaded (or seeded) with its record, its member-id block,
//! the policy and the other nodes' members.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use lockstep_protocol::TimelineChanged;
use redis::{RedisError, RedisResult, Value};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{Cluster, Local, ROOM_KEY_TTL};
use crate::authority::{Announce, Authority, CHAT_LOADED, ChatAnswer, Loaded, Remote, RemoteSink};
use crate::room::{ChatLoad, ChatOp, CommitRequest, CommitResult, ID_BLOCK, MemberId, NeedCounts};
use crate::store::redis::{RedisStore, decode_change, encode_change, keys};

/// A chat operation to store, with its room and where a failure goes.
pub(super) type ChatJob = (Arc<str>, ChatOp, Arc<dyn RemoteSink>);

/// Stores the rooms' chat operations one after the other, in the order they
/// were handed over: a member's quick posts are numbered in the order sent
/// (one task per operation let a later one reach Redis first).
pub(super) async fn write_chat(store: RedisStore, mut rx: mpsc::UnboundedReceiver<ChatJob>) {
    while let Some((room, op, sink)) = rx.recv().await {
        if let Err(e) = store.chat_op(&room, op.clone()).await {
            warn!(event_id = %room, error = %e, "chat operation not shared");
            sink.deliver(Remote::ChatFailed(op));
        }
    }
}

fn malformed(what: &'static str) -> RedisError {
    RedisError::from((redis::ErrorKind::Parse, what))
}

impl Cluster {
    /// Commits `change` if the room's record is still at epoch `expected`:
    /// `Committed`, or `Conflict` with the record that won.
    async fn commit_change(&self, room: &str, expected: u32, change: &TimelineChanged) -> RedisResult<CommitResult> {
        let v: RedisResult<Value> = self
            .inner
            .commit
            .key(keys::timeline(room))
            .key(keys::timeline_channel(room))
            .arg(expected)
            .arg(change.timeline.epoch)
            .arg(encode_change(change))
            .arg(ROOM_KEY_TTL.as_millis() as u64)
            .arg(self.inner.conn.publish())
            .invoke_async(&mut self.inner.conn.clone())
            .await;
        match v {
            Ok(Value::Int(1)) => Ok(CommitResult::Committed),
            Ok(Value::BulkString(b)) => {
                decode_change(&b).map(CommitResult::Conflict).ok_or(malformed("malformed timeline record"))
            }
            Ok(_) => Err(malformed("unexpected commit reply")),
            Err(e) => {
                self.set_up(false);
                Err(e)
            }
        }
    }

    /// The room's record, created from `ours` if Redis has none, or (not the
    /// first load) written forward to `ours` if it is older.
    async fn load_or_seed(&self, room: &str, ours: &TimelineChanged, first: bool) -> RedisResult<TimelineChanged> {
        let b: Vec<u8> = self
            .inner
            .load
            .key(keys::timeline(room))
            .key(keys::timeline_channel(room))
            .arg(ours.timeline.epoch)
            .arg(encode_change(ours))
            .arg(ROOM_KEY_TTL.as_millis() as u64)
            .arg(if first { "0" } else { "1" })
            .arg(self.inner.conn.publish())
            .invoke_async(&mut self.inner.conn.clone())
            .await?;
        decode_change(&b).ok_or(malformed("malformed timeline record"))
    }

    /// The first id of a block of member ids for this node's `room`, unique
    /// among the blocks handed out for it (4,094 blocks of [`ID_BLOCK`]
    /// ids, reused round-robin).
    async fn id_base(&self, room: &str) -> MemberId {
        let key = keys::id_block(room);
        let n: RedisResult<(u64,)> = redis::pipe()
            .atomic()
            .incr(&key, 1)
            .pexpire(&key, ROOM_KEY_TTL.as_millis() as i64)
            .ignore()
            .query_async(&mut self.inner.conn.clone())
            .await;
        let n = n.map(|(n,)| n).unwrap_or_else(|e| {
            warn!(error = %e, "no member id block from Redis: taking a random one");
            let mut b = [0u8; 8];
            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
            u64::from_le_bytes(b)
        });
        ((n.wrapping_sub(1) % 4094) as u32 + 1) * ID_BLOCK
    }

    /// Everything a room loads: record, id block (first load), policy and the
    /// other nodes' members. A first load subscribes to the room's channels
    /// before it reads anything, so no change falls between the two. While
    /// this node writes back after Redis lost its data, a reload writes the
    /// room's chat (`chat`) back first.
    async fn load_room(&self, room: &Arc<str>, ours: TimelineChanged, chat: Option<ChatLoad>, first: bool) -> Loaded {
        if first && let Err(e) = self.subscribe_room(room).await {
            // The heartbeat subscribes again once Redis answers.
            warn!(event_id = %room, error = %e, "room channels not subscribed");
        }
        let record = match self.load_or_seed(room, &ours, first).await {
            Ok(record) => Some(record),
            Err(e) => {
                warn!(event_id = %room, error = %e, "shared timeline unavailable");
                None
            }
        };
        let seeded = record.as_ref() == Some(&ours);
        let id_base = if first { Some(self.id_base(room).await) } else { None };
        let (policy, clock, media, members, reachable) = match self.snapshot(room).await {
            Ok(s) => (s.policy, s.clock, s.media, s.members, true),
            Err(e) => {
                warn!(event_id = %room, error = %e, "other nodes' members unavailable");
                (None, None, None, Vec::new(), false)
            }
        };
        if let Some(ours) = chat.filter(|_| self.inner.recovering.load(Ordering::Relaxed)) {
            match self.inner.store.chat_restore(room, &ours).await {
                Ok(0) => {}
                Ok(n) => info!(event_id = %room, messages = n, "chat written back"),
                Err(e) => warn!(event_id = %room, error = %e, "chat not written back"),
            }
        }
        let chat = match self.inner.store.chat_load(room, CHAT_LOADED).await {
            Ok(chat) => Some(chat),
            Err(e) => {
                warn!(event_id = %room, error = %e, "shared chat unavailable");
                None
            }
        };
        Loaded { record, seeded, clock, id_base, policy, members, reachable, chat, media }
    }
}

impl Authority for Cluster {
    fn load(
        &self,
        room: &Arc<str>,
        sink: Arc<dyn RemoteSink>,
        ours: TimelineChanged,
        chat: Option<ChatLoad>,
        first: bool,
    ) {
        if first {
            let mut rooms = self.rooms();
            let count = rooms.get(room).map_or(0, |l| l.count);
            rooms.insert(
                room.clone(),
                Local { sink: Some(Arc::downgrade(&sink)), count, needs: None, reach: Vec::new(), sync: Vec::new() },
            );
        }
        let (cluster, room) = (self.clone(), room.clone());
        tokio::spawn(async move {
            let loaded = cluster.load_room(&room, ours, chat, first).await;
            sink.deliver(Remote::Loaded(loaded));
        });
    }

    fn detach(&self, room: &Arc<str>, sink: &Arc<dyn RemoteSink>) {
        if let Some(l) = self.rooms().get_mut(room)
            && l.sink().is_none_or(|s| Arc::ptr_eq(&s, sink))
        {
            // Its count goes to 0 at the next heartbeat.
            *l = Local { sink: None, count: 0, needs: None, reach: Vec::new(), sync: Vec::new() };
        }
    }

    fn commit(&self, room: &Arc<str>, req: CommitRequest, sink: &Arc<dyn RemoteSink>) -> Option<CommitResult> {
        if !self.is_up() {
            return Some(CommitResult::Failed);
        }
        let (cluster, room, sink) = (self.clone(), room.clone(), sink.clone());
        tokio::spawn(async move {
            let result = match cluster.commit_change(&room, req.expected, &req.change).await {
                Ok(result) => result,
                Err(e) => {
                    warn!(event_id = %room, error = %e, "timeline change not committed");
                    CommitResult::Failed
                }
            };
            sink.deliver(Remote::Committed(result));
        });
        None
    }

    fn chat(&self, room: &Arc<str>, op: ChatOp, sink: &Arc<dyn RemoteSink>) -> ChatAnswer {
        if !self.is_up() {
            return ChatAnswer::Failed(op);
        }
        // Applied when it comes back on the room's chat channel, in the order every node sees.
        match self.inner.chats.send((room.clone(), op, sink.clone())) {
            Ok(()) => ChatAnswer::Later,
            Err(mpsc::error::SendError((_, op, _))) => ChatAnswer::Failed(op),
        }
    }

    fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    fn announce(&self, room: &Arc<str>, a: Announce) {
        let _ = self.inner.announce.send((room.clone(), a));
    }

    fn set_local_count(&self, room: &Arc<str>, n: u32) {
        if let Some(l) = self.rooms().get_mut(room) {
            l.count = n;
        }
    }

    fn set_local_needs(&self, room: &Arc<str>, needs: NeedCounts) {
        if let Some(l) = self.rooms().get_mut(room) {
            l.needs = Some(needs);
        }
    }

    fn set_local_reach(&self, room: &Arc<str>, reach: NeedCounts) {
        if let Some(l) = self.rooms().get_mut(room) {
            l.reach = reach;
        }
    }

    fn set_local_sync(&self, room: &Arc<str>, drifts: NeedCounts) {
        if let Some(l) = self.rooms().get_mut(room) {
            l.sync = drifts;
        }
    }

    fn is_shared(&self) -> bool {
        true
    }
}
