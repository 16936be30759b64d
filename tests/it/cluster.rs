//! Scale-out on a real Redis Cluster (issue 17): three primaries with a
//! replica each, local `redis-server`s formed by `redis-cli --cluster create`
//! (`redis_cluster.rs`). Nodes are given one seed (`--redis-url`) and find
//! the cluster themselves. The failover under load is in `kills.rs`.

use std::time::{Duration, Instant};

use lockstep_protocol::Action;

use crate::common::*;
use crate::redis::{changed, count_reaches, room_channels};
use crate::redis_cluster::RedisCluster;

async fn node(cluster: &RedisCluster) -> TestServer {
    let url = cluster.url();
    TestServer::with(|c| {
        c.redis_url = Some(url);
        c.tick_interval_ms = 50;
        c.room_grace_ms = 300;
    })
    .await
}

/// Subscribers of each of `channels`, all of one room (one slot), on the
/// primary that owns it (sharded pub/sub: `PUBSUB SHARDNUMSUB`).
fn shard_subscribers(cluster: &RedisCluster, room: &str, channels: &[String]) -> Vec<u64> {
    let port = cluster.primary_of(&format!("{{{room}}}"));
    let mut args = vec!["PUBSUB", "SHARDNUMSUB"];
    args.extend(channels.iter().map(String::as_str));
    let out = cluster.cli(port, &args);
    let lines: Vec<&str> = out.lines().collect();
    lines.chunks(2).map(|kv| kv[1].trim().parse().unwrap_or_else(|_| panic!("SHARDNUMSUB said {out}"))).collect()
}

async fn eventually_shard(cluster: &RedisCluster, room: &str, want: &[u64], what: &str) {
    let channels = room_channels(room);
    let deadline = Instant::now() + WAIT;
    loop {
        let got = shard_subscribers(cluster, room, &channels);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {got:?}, not {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_a_redis_cluster_share_rooms_sessions_and_limits() {
    let cluster = RedisCluster::start(3, 1);
    let a = node(&cluster).await;
    let b = node(&cluster).await;

    // A room across both nodes: counts aggregate, a change on A reaches B's viewer.
    let ev = "ev-cluster";
    let (mut host, _) = join(&a, ev, "host").await;
    let (mut on_b, _) = join(&b, ev, "viewer-b").await;
    count_reaches(&mut host, 2).await;
    count_reaches(&mut on_b, 2).await;
    send(&mut host, &command(1, Action::Seek { position_ms: 42_000 })).await;
    let seek = until(&mut host, |g| changed(g).filter(|c| c.timeline.position_ms == 42_000)).await;
    let there = until(&mut on_b, |g| changed(g).filter(|c| c.timeline.epoch == seek.timeline.epoch)).await;
    assert_eq!((there.timeline, there.effective_at_us), (seek.timeline, seek.effective_at_us));

    // Every key of the room is on the room's slot (one shard): none on the others.
    let room_port = cluster.primary_of(&format!("{{{ev}}}"));
    for port in cluster.primary_ports() {
        let keys = cluster.cli(port, &["KEYS", &format!("lockstep:*{{{ev}}}*")]);
        let n = keys.lines().filter(|l| !l.trim().is_empty()).count();
        if port == room_port {
            assert!(n >= 3, "the room's keys on its shard: {keys}");
        } else {
            assert_eq!(n, 0, "room keys on another shard ({port}): {keys}");
        }
    }

    // The device limit holds across nodes under concurrent starts; sessions and invitations span them.
    crate::redis::device_limit_holds(&a, &b, 4).await;
    crate::redis::sessions_and_invitations_shared(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_a_node_hears_a_rooms_shard_only_while_serving_the_room() {
    let cluster = RedisCluster::start(3, 1);
    let a = node(&cluster).await;
    let b = node(&cluster).await;
    // Room X only on node A; room Y on both.
    let (mut x_host, _) = join(&a, "ev-x", "x-host").await;
    let (mut y_a, _) = join(&a, "ev-y", "y-a").await;
    let (mut y_b, _) = join(&b, "ev-y", "y-b").await;
    count_reaches(&mut y_a, 2).await;
    eventually_shard(&cluster, "ev-x", &[1, 1, 1], "room X's sharded subscribers (node A only)").await;
    eventually_shard(&cluster, "ev-y", &[2, 2, 2], "room Y's sharded subscribers (both nodes)").await;
    // Classic pub/sub carries no room: only the revocation channel, one subscriber per node.
    for port in cluster.primary_ports() {
        assert_eq!(cluster.cli(port, &["PUBSUB", "NUMPAT"]), "0");
        let classic = cluster.cli(port, &["PUBSUB", "CHANNELS"]);
        assert!(classic.lines().all(|c| c.trim() == "lockstep:revoke" || c.trim().is_empty()), "{classic}");
    }

    // Changes of X reach A's viewer; Y's cross the nodes.
    send(&mut x_host, &command(1, Action::Seek { position_ms: 5_000 })).await;
    until(&mut x_host, |g| changed(g).filter(|c| c.timeline.position_ms == 5_000)).await;
    send(&mut y_a, &command(1, Action::Seek { position_ms: 7_000 })).await;
    until(&mut y_b, |g| changed(g).filter(|c| c.timeline.position_ms == 7_000)).await;

    // X ends on A: nobody hears it any more. Y's viewer on B leaves: only A hears Y.
    drop(x_host);
    eventually_shard(&cluster, "ev-x", &[0, 0, 0], "room X's subscribers after it ended").await;
    drop(y_b);
    eventually_shard(&cluster, "ev-y", &[1, 1, 1], "room Y's subscribers after B's viewer left").await;
    // Back on B: subscribed again, on the room's timeline.
    let (mut y_b, w) = join(&b, "ev-y", "y-b2").await;
    assert_eq!(w.timeline.position_ms, 7_000);
    eventually_shard(&cluster, "ev-y", &[2, 2, 2], "room Y's subscribers after B's viewer came back").await;
    send(&mut y_a, &command(2, Action::Seek { position_ms: 9_000 })).await;
    until(&mut y_b, |g| changed(g).filter(|c| c.timeline.position_ms == 9_000)).await;
}
