//! The Redis store against a real `redis-server` (started here on a free
//! port, without persistence; `.ci/test` installs it when missing).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lockstep_protocol::{ChangeReason, Timeline};
use redis::AsyncCommands;

use super::{Conn, RedisStore, keys};
use crate::store::contract::{rec, saved};
use crate::store::{ROOM_KEY_TTL, SessionRecord, Store};

/// A `redis-server` child, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, port }
    }

    async fn store(&self) -> RedisStore {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).unwrap();
        let mut conn = client.get_connection_manager().await.unwrap();
        // What a node's cluster does at start (sessions start only while they are set).
        for shard in keys::session_shards() {
            redis::cmd("SET").arg(keys::ready(&shard)).arg("test").query_async::<()>(&mut conn).await.unwrap();
        }
        RedisStore::new(Conn::Single(conn))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ids(sessions: &[SessionRecord]) -> Vec<&str> {
    let mut ids: Vec<&str> = sessions.iter().map(|s| s.session_id.as_str()).collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn sessions_start_resume_and_are_deleted_by_every_script() {
    let server = Server::start();
    let s = server.store().await;
    let now = 1_000_000;
    let [a, b, c] = crate::store::contract::device_limit_counts_distinct_devices_and_resumes(&s).await;
    // Ids name the user's session shard (the store adds it to the one it was given).
    let shard = keys::user_shard("u");
    assert_eq!(a, format!("{shard}.a"));
    let touched = s.touch_session(&a, now + 10, Some(42), true).await.unwrap().unwrap();
    assert_eq!((touched.last_seen, touched.position_ms, touched.buffering), (now + 10, Some(42), true));
    assert_eq!(s.touch_session("nope", now, None, false).await.unwrap(), None);
    assert_eq!(s.touch_session(&format!("{shard}.nope"), now, None, false).await.unwrap(), None);
    assert_eq!(s.session("a").await.unwrap(), None, "an id without its shard names no session");

    // One session, then a device's, then the stale ones: each returns what it deleted.
    assert_eq!(s.end_session(&b).await.unwrap().map(|r| r.room_id), Some("ev2".into()));
    assert_eq!(s.end_session(&b).await.unwrap(), None);
    let e = s.start_session(rec("e", "u", "d2", "ev3", now), 2, 0).await.unwrap().session_id;
    let mut both = [c.as_str(), e.as_str()];
    both.sort_unstable();
    assert_eq!(ids(&s.remove_device("u", "d2").await.unwrap()), both);
    assert_eq!(ids(&s.all_sessions().await.unwrap()), [a.as_str()]);
    assert_eq!(ids(&s.expire_sessions(now + 9).await.unwrap()), Vec::<&str>::new());
    assert_eq!(ids(&s.expire_sessions(now + 10).await.unwrap()), [a.as_str()]);

    // Nothing is left behind in the indexes.
    let mut conn = s.conn.clone();
    assert_eq!(conn.zcard::<_, usize>(keys::user_sessions("u")).await.unwrap(), 0);
    assert_eq!(conn.zcard::<_, usize>(keys::all_sessions(&shard)).await.unwrap(), 0);
    assert!(conn.keys::<_, Vec<String>>("lockstep:s:*").await.unwrap().is_empty());
}

#[tokio::test]
async fn saved_timelines_expire_after_the_room_key_ttl() {
    let server = Server::start();
    let s = server.store().await;
    let t = Timeline { epoch: 4, position_ms: 9_000, anchor_us: 123, rate_milli: 1250, paused: false };
    let t = saved(t, ChangeReason::Rate);
    s.save_timelines(vec![("ev".into(), t.clone())]).await.unwrap();
    assert_eq!(s.timeline("ev").await.unwrap().as_ref(), Some(&t));
    let ttl: i64 = s.conn.clone().pttl(keys::timeline("ev")).await.unwrap();
    let max = ROOM_KEY_TTL.as_millis() as i64;
    assert!(max - 5_000 < ttl && ttl <= max, "{ttl}");
    // Redis expires them itself.
    assert_eq!(s.expire_timelines(u64::MAX).await.unwrap(), 0);
    assert_eq!(s.timeline("ev").await.unwrap(), Some(t));
}

#[tokio::test]
async fn invitations_are_used_up_revoked_and_expire() {
    let server = Server::start();
    crate::store::contract::invitations_are_used_up_revoked_and_expire(&server.store().await).await;
}

#[tokio::test]
async fn timelines_keep_why_they_changed() {
    let server = Server::start();
    crate::store::contract::timelines_keep_why_they_changed(&server.store().await).await;
}

#[tokio::test]
async fn room_clocks_are_saved_and_read_back() {
    let server = Server::start();
    crate::store::contract::room_clocks_are_saved_and_read_back(&server.store().await).await;
}

#[tokio::test]
async fn chat_is_kept_in_order_and_paged() {
    let server = Server::start();
    crate::store::contract::chat_is_kept_in_order_and_paged(&server.store().await).await;
}

/// Redis loses a room's chat (restarted empty, or a replica that was behind
/// took over): no id is given again, not even by a room that knows nothing of
/// the chat (a node that starts serving the room before the others wrote it
/// back: a room's first post is numbered from Redis's clock), and a node
/// writing back what its room holds restores the counter, the mutes and the
/// messages, merged with those posted since.
#[tokio::test]
async fn chat_that_redis_lost_is_written_back_and_ids_are_not_given_again() {
    use crate::room::{ChatLoad, ChatOp, ChatRecord};
    let server = Server::start();
    let s = server.store().await;
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", server.port)).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let rec = |id: u64, text: &str| ChatRecord {
        id,
        at_ms: 1_795_500_000_000 + id,
        member_id: 7,
        user: "u".into(),
        name: "Ana".into(),
        role: lockstep_protocol::Role::Viewer,
        text: text.into(),
        request_id: 0,
    };
    let id = |op: ChatOp| match op {
        ChatOp::Post(r) => r.id,
        _ => panic!("a post"),
    };
    let now_us = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
    // A room's first post is numbered from the clock (µs); the next ones by one.
    let before = now_us();
    let first = id(s.chat_op("ev", ChatOp::Post(rec(1, "m1"))).await.unwrap());
    assert!(first > before - 60_000_000 && first < now_us() + 60_000_000, "from the clock: {first} ({before})");
    for i in 2..=3 {
        assert_eq!(id(s.chat_op("ev", ChatOp::Post(rec(i, &format!("m{i}")))).await.unwrap()), first + i - 1);
    }
    let (m1, m2, m3) = (first, first + 1, first + 2);
    s.chat_op("ev", ChatOp::Delete { id: m2, by: 1 }).await.unwrap();
    s.chat_op("ev", ChatOp::Mute { user: "troll".into(), muted: true, by: 1 }).await.unwrap();
    // What a room holds.
    let ours = s.chat_load("ev", 100).await.unwrap();
    assert_eq!(ours.history.iter().map(|r| r.id).collect::<Vec<_>>(), vec![m1, m3]);
    assert_eq!((ours.last_id, ours.muted.clone()), (m3, vec!["troll".to_owned()]));
    // Nothing lost: nothing written.
    assert_eq!(s.chat_restore("ev", &ours).await.unwrap(), 0);
    assert_eq!(s.chat_load("ev", 100).await.unwrap(), ours);

    redis::cmd("FLUSHALL").query_async::<()>(&mut c).await.unwrap();
    // A room that knows nothing of the chat (proposing id 1) and then one that
    // knows the last id: neither is given an id given before.
    let n1 = id(s.chat_op("ev", ChatOp::Post(rec(1, "new node"))).await.unwrap());
    assert!(n1 > m3, "{n1} after {m3}");
    assert_eq!(id(s.chat_op("ev", ChatOp::Post(rec(m3 + 1, "after"))).await.unwrap()), n1 + 1);
    // Written back: the mute and the two messages before the new ones (the counter was above).
    assert_eq!(s.chat_restore("ev", &ours).await.unwrap(), 2);
    let load = s.chat_load("ev", 100).await.unwrap();
    let got: Vec<_> = load.history.iter().map(|r| (r.id, r.text.as_str())).collect();
    assert_eq!(got, vec![(m1, "m1"), (m3, "m3"), (n1, "new node"), (n1 + 1, "after")]);
    assert_eq!((load.last_id, load.muted.clone()), (n1 + 1, vec!["troll".to_owned()]));
    assert_eq!(load.history[0], ChatRecord { id: m1, request_id: 0, ..rec(1, "m1") });
    // Another node writing back the same adds nothing; the next post gets the next id.
    assert_eq!(s.chat_restore("ev", &ours).await.unwrap(), 0);
    assert_eq!(id(s.chat_op("ev", ChatOp::Post(rec(1, "fresh"))).await.unwrap()), n1 + 2);
    for key in keys::chat("ev") {
        let ttl: i64 = c.pttl(&key).await.unwrap();
        assert!(ttl > 0 && ttl <= ROOM_KEY_TTL.as_millis() as i64, "{key} expires with the room ({ttl})");
    }

    // An older node's script wrote the counter in exponent notation (rounded
    // down): the next id still follows the stream's newest.
    let seq = keys::chat("ev")[1].clone();
    let newest = n1 + 2;
    // (Lua 5.1 writes a number with 14 significant digits: the last two lost.)
    let _: () = c.set(&seq, format!("{}e+2", newest / 100)).await.unwrap();
    assert_eq!(id(s.chat_op("ev", ChatOp::Post(rec(1, "mixed"))).await.unwrap()), newest + 1);

    // Lost before any post came back: the counter is restored from the room, not from the clock.
    redis::cmd("FLUSHALL").query_async::<()>(&mut c).await.unwrap();
    assert_eq!(s.chat_restore("ev", &ours).await.unwrap(), 2);
    assert_eq!(id(s.chat_op("ev", ChatOp::Post(rec(m3 + 1, "later"))).await.unwrap()), m3 + 1);

    // A room with mutes and no message yet.
    redis::cmd("FLUSHALL").query_async::<()>(&mut c).await.unwrap();
    let only_mutes = ChatLoad { history: Vec::new(), last_id: 0, muted: vec!["x".into()] };
    assert_eq!(s.chat_restore("ev", &only_mutes).await.unwrap(), 0);
    let load = s.chat_load("ev", 100).await.unwrap();
    assert_eq!((load.history.len(), load.last_id, load.muted), (0, 0, vec!["x".to_owned()]));
}
