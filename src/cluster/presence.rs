//! Members, roles and policy across nodes: this node's membership and
//! control changes are written to Redis and published on the room's
//! presence channel, in the order its room made them; a room starting (or
//! reloading) on a node reads the others' members and the policy.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use lockstep_protocol::ControlPolicy;
use redis::RedisResult;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::warn;

use super::{Cluster, Inner, NODE_TTL, ROOM_KEY_TTL};
use crate::authority::Announce;
use crate::room::{ClockSetting, Shared};
use crate::store::redis::keys;

/// What a node publishes on a room's presence channel.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct PresenceMsg {
    pub(super) node: String,
    pub(super) events: Vec<Shared>,
}

/// Most announcements coalesced into one round of writes.
const MAX_ANNOUNCE_BATCH: usize = 1024;

/// Writes announcements in order until the cluster is gone (it holds the
/// only sender, so this task ends with the last `Cluster`).
pub(super) async fn write_announcements(inner: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<(Arc<str>, Announce)>) {
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
        let Some(inner) = inner.upgrade() else { break };
        let cluster = Cluster { inner };
        for (room, a) in batch {
            if let Err(e) = cluster.write_announcement(&room, a).await {
                // The room re-announces its members when Redis is back.
                warn!(event_id = %room, error = %e, "membership change not shared");
            }
        }
    }
}

/// What a room loads of the others: see [`Cluster::snapshot`].
pub(super) struct Snapshot {
    pub(super) policy: Option<ControlPolicy>,
    pub(super) clock: Option<ClockSetting>,
    pub(super) media: Option<crate::room::MediaState>,
    pub(super) members: Vec<(String, Shared)>,
}

impl Cluster {
    async fn write_announcement(&self, room: &str, a: Announce) -> RedisResult<()> {
        let node = &self.inner.node;
        let members = keys::members(room, node);
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
        pipe.sadd(keys::room_nodes(room), node).ignore();
        pipe.pexpire(keys::room_nodes(room), ROOM_KEY_TTL.as_millis() as i64).ignore();
        if let Some(policy) = a.policy {
            let policy = serde_json::to_string(&policy).expect("policies serialize");
            pipe.set(keys::policy(room), policy).ignore();
            pipe.pexpire(keys::policy(room), ROOM_KEY_TTL.as_millis() as i64).ignore();
        }
        if let Some(clock) = a.clock {
            let clock = serde_json::to_string(&clock).expect("settings serialize");
            pipe.set(keys::clock(room), clock).ignore();
            pipe.pexpire(keys::clock(room), ROOM_KEY_TTL.as_millis() as i64).ignore();
        }
        if let Some(media) = &a.media {
            let media = serde_json::to_string(media).expect("media states serialize");
            pipe.set(keys::media(room), media).ignore();
            pipe.pexpire(keys::media(room), ROOM_KEY_TTL.as_millis() as i64).ignore();
        }
        if !a.events.is_empty() {
            let msg = PresenceMsg { node: node.clone(), events: a.events };
            let json = serde_json::to_string(&msg).expect("events serialize");
            pipe.cmd(self.inner.conn.publish()).arg(keys::presence_channel(room)).arg(json).ignore();
        }
        pipe.query_async::<()>(&mut self.inner.conn.clone()).await
    }

    /// The other nodes' members of `room`, and its policy and clock setting
    /// if they were set.
    pub(super) async fn snapshot(&self, room: &str) -> RedisResult<Snapshot> {
        let mut conn = self.inner.conn.clone();
        let (policy, clock, media, nodes): (Option<String>, Option<String>, Option<String>, Vec<String>) =
            redis::pipe()
                .get(keys::policy(room))
                .get(keys::clock(room))
                .get(keys::media(room))
                .smembers(keys::room_nodes(room))
                .query_async(&mut conn)
                .await?;
        let nodes: Vec<String> = nodes.into_iter().filter(|n| *n != self.inner.node).collect();
        let mut pipe = redis::pipe();
        for n in &nodes {
            pipe.hgetall(keys::members(room, n));
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
                redis::cmd("SREM").arg(keys::room_nodes(room)).arg(&gone).query_async(&mut conn).await;
        }
        let policy = policy.and_then(|p| serde_json::from_str(&p).ok());
        let clock = clock.and_then(|c| serde_json::from_str(&c).ok());
        let media = media.and_then(|m| serde_json::from_str(&m).ok());
        Ok(Snapshot { policy, clock, media, members })
    }
}

#[cfg(test)]
mod tests {
    use lockstep_protocol::Role;

    use super::*;
    use crate::room::MemberId;

    fn joined(id: MemberId) -> Shared {
        Shared::Joined {
            id,
            role: Role::Viewer,
            claimed: false,
            name: String::new(),
            device: format!("d{id}"),
            user: String::new(),
            stall: None,
            holds: false,
        }
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
