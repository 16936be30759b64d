//! The connection registry and maintenance, over a real SQLite file.

use std::sync::atomic::{AtomicUsize, Ordering};

use lockstep_protocol::{ChangeReason, Timeline};

use super::*;
use crate::store::sqlite::SqliteStore;

#[derive(Default)]
struct Conn(AtomicUsize);

impl Revocable for Conn {
    fn revoke(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn accounts_in(dir: &std::path::Path) -> (Accounts, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir).unwrap());
    (Accounts::new(store.clone(), AccountConfig::default()), store)
}

/// A directory of its own for a test's store, removed with it.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmp() -> TempDir {
    TempDir(std::env::temp_dir().join(format!("lockstep-accounts-{}-{}", std::process::id(), random_id())))
}

fn accounts() -> (Accounts, Arc<dyn Store>, TempDir) {
    let dir = tmp();
    let (a, store) = accounts_in(&dir.0);
    (a, store, dir)
}

/// A free user's claims ("viewer").
fn free_viewer() -> Claims {
    Claims {
        sub: "viewer".into(),
        plan: Plan::Free,
        exp: u64::MAX,
        iat: None,
        max_devices: None,
        host_of: Vec::new(),
        aud: None,
        iss: None,
    }
}

fn registered(a: &Accounts) -> usize {
    a.inner.conns.counts().1
}

#[test]
fn the_registry_is_empty_once_registrations_drop() {
    let (a, _, _dir) = accounts();
    let (c1, c2, c3) = (Arc::new(Conn::default()), Arc::new(Conn::default()), Arc::new(Conn::default()));
    let r1 = a.register("u", "d1", Arc::downgrade(&c1) as Weak<dyn Revocable>);
    let r2 = a.register("u", "d1", Arc::downgrade(&c2) as Weak<dyn Revocable>);
    let r3 = a.register("u", "d2", Arc::downgrade(&c3) as Weak<dyn Revocable>);
    assert_eq!(registered(&a), 3);
    drop(r1);
    assert_eq!(registered(&a), 2);
    drop(r2);
    assert_eq!(a.inner.conns.counts(), (1, 1), "d1 has no connection left");
    drop(r3);
    assert_eq!(a.inner.conns.counts(), (0, 0));

    // Removing a device revokes its live connections, and their
    // registrations dropping afterwards is harmless.
    let r1 = a.register("u", "d1", Arc::downgrade(&c1) as Weak<dyn Revocable>);
    let r2 = a.register("u", "d1", Arc::downgrade(&c2) as Weak<dyn Revocable>);
    let r3 = a.register("u", "d2", Arc::downgrade(&c3) as Weak<dyn Revocable>);
    assert_eq!(a.close_device("u", "d1"), 2);
    assert_eq!((c1.0.load(Ordering::Relaxed), c2.0.load(Ordering::Relaxed)), (1, 1));
    assert_eq!(c3.0.load(Ordering::Relaxed), 0);
    assert_eq!(a.close_device("u", "d1"), 0);
    drop((r1, r2));
    assert_eq!(registered(&a), 1);
    // A connection that is gone is not counted as closed.
    drop(c3);
    assert_eq!(a.close_device("u", "d2"), 0);
    drop(r3);
    assert_eq!(a.inner.conns.counts(), (0, 0));
}

/// A position or a buffering change is written at the heartbeat write
/// interval; activity that only proves the session alive (a connected
/// viewer's realtime traffic) every quarter of the idle timeout.
#[tokio::test]
async fn activity_alone_is_written_less_often_than_news() {
    let dir = tmp();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.0).unwrap());
    let cfg = AccountConfig {
        session_idle: Duration::from_secs(40),
        heartbeat_write_interval: Duration::from_millis(1),
        ..AccountConfig::default()
    };
    let a = Accounts::new(store.clone(), cfg);
    let claims = free_viewer();
    let started = a.start(&claims, "d1", "ev").await.unwrap();
    let id = started.session.session_id.clone();
    let stored = || async { store.session(&id).await.unwrap().unwrap() };
    let at_start = stored().await.last_seen;
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Activity alone within a quarter of the idle timeout (10 s): not written.
    a.touch("viewer", "d1", "ev").await;
    assert_eq!(stored().await.last_seen, at_start);
    assert!(a.session(&id).await.unwrap().last_seen > at_start, "the live view has it");
    // A position is news: written at once.
    a.heartbeat(&id, Some(42_000), false).await.unwrap();
    let s = stored().await;
    assert!(s.last_seen > at_start && s.position_ms == Some(42_000), "{s:?}");
    // So is a buffering change; the same position again is not.
    tokio::time::sleep(Duration::from_millis(5)).await;
    a.heartbeat(&id, Some(42_000), false).await.unwrap();
    assert_eq!(stored().await.last_seen, s.last_seen);
    a.heartbeat(&id, Some(42_000), true).await.unwrap();
    assert!(stored().await.buffering);
}

#[tokio::test]
async fn maintenance_expires_the_timelines_of_idle_rooms_only() {
    let dir = tmp();
    let (a, store) = accounts_in(&dir.0);
    let t = Timeline { epoch: 3, position_ms: 1_000, anchor_us: 5, rate_milli: 1000, paused: true };
    let t = lockstep_protocol::TimelineChanged { timeline: t, effective_at_us: 5, by: 0, reason: ChangeReason::Pause };
    let rooms = ["idle", "watched", "recent"];
    store.save_timelines(rooms.iter().map(|r| (r.to_string(), t.clone())).collect()).await.unwrap();
    let claims = free_viewer();
    a.start(&claims, "d1", "watched").await.unwrap();
    // Two rooms last changed longer ago than the TTL.
    let old = unix_ms() - room_key_ttl_ms() - 1_000;
    let db = rusqlite::Connection::open(dir.0.join("lockstep.db")).unwrap();
    db.execute("UPDATE timelines SET updated_at = ?1 WHERE room_id != 'recent'", [old as i64]).unwrap();
    a.maintain().await;
    assert_eq!(store.timeline("idle").await.unwrap(), None, "idle past the TTL: gone");
    assert_eq!(store.timeline("watched").await.unwrap().as_ref(), Some(&t), "a session there keeps it");
    assert_eq!(store.timeline("recent").await.unwrap(), Some(t), "within the TTL");
}
