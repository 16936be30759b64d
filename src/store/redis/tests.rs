//! The Redis store against a real `redis-server` (started here on a free
//! port, without persistence; `.ci/test` installs it when missing).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lockstep_protocol::Timeline;
use redis::AsyncCommands;

use super::{Conn, RedisStore, keys};
use crate::store::contract::rec;
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
    s.save_timelines(vec![("ev".into(), t)]).await.unwrap();
    assert_eq!(s.timeline("ev").await.unwrap(), Some(t));
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
async fn room_clocks_are_saved_and_read_back() {
    let server = Server::start();
    crate::store::contract::room_clocks_are_saved_and_read_back(&server.store().await).await;
}

#[tokio::test]
async fn chat_is_kept_in_order_and_paged() {
    let server = Server::start();
    crate::store::contract::chat_is_kept_in_order_and_paged(&server.store().await).await;
}
