//! The auto latency across nodes: every second each node writes its live
//! rooms' members' needs into `lockstep:needs:{room}` (a hash, one field per
//! node, stamped; the key expires [`NEEDS_TTL`] after the last write) and
//! hands each room the other nodes' fresh entries, merged. Every node then
//! decides from the same needs (`crate::room` live docs).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use redis::RedisResult;
use serde::{Deserialize, Serialize};

use super::Cluster;
use crate::authority::{Remote, RemoteSink};
use crate::room::NeedCounts;

/// An entry older than this is a node that stopped serving the room.
const FRESH_MS: u64 = 3_000;
/// The key outlives its last write by this much.
const NEEDS_TTL: Duration = Duration::from_secs(10);

/// A live room at a beat: its id, this node's needs and its sink.
type LiveRoom = (Arc<str>, NeedCounts, Option<Arc<dyn RemoteSink>>);

/// One node's entry.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    /// When it was written (Unix ms).
    at: u64,
    needs: NeedCounts,
}

/// The other nodes' fresh entries, merged: members per need.
fn merge(node: &str, now_ms: u64, fields: BTreeMap<String, String>) -> NeedCounts {
    let mut merged = BTreeMap::<u32, u32>::new();
    for (other, json) in fields {
        if other == node {
            continue;
        }
        let Ok(e) = serde_json::from_str::<Entry>(&json) else { continue };
        if e.at + FRESH_MS < now_ms {
            continue;
        }
        for (need, count) in e.needs {
            *merged.entry(need).or_default() += count;
        }
    }
    merged.into_iter().collect()
}

impl Cluster {
    /// One beat of the exchange, for every live room this node serves.
    pub(super) async fn share_needs(&self) -> RedisResult<()> {
        let rooms: Vec<LiveRoom> =
            self.rooms().iter().filter_map(|(r, l)| l.needs.clone().map(|n| (r.clone(), n, l.sink()))).collect();
        if rooms.is_empty() {
            return Ok(());
        }
        let now_ms = crate::store::unix_ms();
        // One pipeline per room (each on the room's slot), sent together.
        let all = futures_util::future::try_join_all(rooms.iter().map(|(room, needs, _)| {
            let key = crate::store::redis::keys::needs(room);
            let entry = serde_json::to_string(&Entry { at: now_ms, needs: needs.clone() }).expect("entries serialize");
            let mut pipe = redis::pipe();
            pipe.hset(&key, &self.inner.node, entry).ignore();
            pipe.pexpire(&key, NEEDS_TTL.as_millis() as i64).ignore();
            pipe.hgetall(&key);
            let mut conn = self.inner.conn.clone();
            async move { pipe.query_async::<(BTreeMap<String, String>,)>(&mut conn).await.map(|(f,)| f) }
        }))
        .await?;
        for ((_, _, sink), fields) in rooms.iter().zip(all) {
            if let Some(sink) = sink {
                sink.deliver(Remote::Needs(merge(&self.inner.node, now_ms, fields)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_fresh_nodes_are_merged_and_this_node_and_stale_ones_left_out() {
        let entry = |at: u64, needs: NeedCounts| serde_json::to_string(&Entry { at, needs }).unwrap();
        let fields = BTreeMap::from([
            ("me".to_owned(), entry(10_000, vec![(900, 50)])),
            ("b".to_owned(), entry(9_500, vec![(1_200, 3), (2_000, 1)])),
            ("c".to_owned(), entry(8_000, vec![(1_200, 2)])),
            ("gone".to_owned(), entry(6_000, vec![(9_000, 100)])),
            ("broken".to_owned(), "{".to_owned()),
        ]);
        assert_eq!(merge("me", 10_000, fields), vec![(1_200, 5), (2_000, 1)]);
    }
}
