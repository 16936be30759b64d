//! The embedded store over real database files.

use super::SqliteStore;
use crate::store::Store;
use crate::store::contract::{rec, saved};
use lockstep_protocol::{ChangeReason, Timeline};
fn tmp() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("lockstep-store-{}-{}", std::process::id(), super::super::random_id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn device_limit_counts_distinct_live_devices_and_resumes_the_same_one() {
    let s = SqliteStore::open(&tmp()).unwrap();
    let now = 1_000_000;
    crate::store::contract::device_limit_counts_distinct_devices_and_resumes(&s).await;
    // Stale sessions do not count.
    s.start_session(rec("e", "u", "d3", "ev", now + 10), 2, now).await.unwrap();
}

#[tokio::test]
async fn concurrent_starts_at_the_limit_admit_exactly_one() {
    let s = SqliteStore::open(&tmp()).unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(
                async move { s.start_session(rec(&format!("s{i}"), "u", &format!("d{i}"), "ev", 5), 1, 0).await },
            )
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn state_survives_reopening() {
    let dir = tmp();
    {
        let s = SqliteStore::open(&dir).unwrap();
        s.start_session(rec("a", "u", "d1", "ev", 7), 1, 0).await.unwrap();
        let t = Timeline { epoch: 4, position_ms: 9_000, anchor_us: 123, rate_milli: 1250, paused: true };
        s.save_timelines(vec![("ev".into(), saved(t, ChangeReason::BufferingWait))]).await.unwrap();
    }
    let s = SqliteStore::open(&dir).unwrap();
    assert_eq!(s.session("a").await.unwrap().unwrap().device_id, "d1");
    let t = s.timeline("ev").await.unwrap().unwrap();
    assert_eq!((t.timeline.epoch, t.reason), (4, ChangeReason::BufferingWait));
    assert_eq!(s.expire_sessions(7).await.unwrap().len(), 1);
    assert!(s.all_sessions().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_file_from_before_timeline_expiry_is_migrated_and_keeps_its_timelines() {
    let dir = tmp();
    {
        // The schema as it was: no `updated_at`.
        let c = rusqlite::Connection::open(dir.join("lockstep.db")).unwrap();
        c.execute_batch(
            "CREATE TABLE timelines (room_id TEXT PRIMARY KEY, epoch INTEGER NOT NULL, position_ms INTEGER NOT NULL,
                 anchor_us INTEGER NOT NULL, rate_milli INTEGER NOT NULL, paused INTEGER NOT NULL);
             INSERT INTO timelines VALUES ('ev', 7, 1000, 5, 1000, 1);",
        )
        .unwrap();
    }
    let before = crate::store::unix_ms();
    let s = SqliteStore::open(&dir).unwrap();
    // Its row has no reason: read as a seek, as every saved timeline was before.
    let t = s.timeline("ev").await.unwrap().unwrap();
    assert_eq!((t.timeline.epoch, t.timeline.paused, t.reason), (7, true, ChangeReason::Seek));
    // Existing rows count as written at the migration: a full TTL from now.
    assert_eq!(s.expire_timelines(before - 1).await.unwrap(), 0);
    drop(s);
    // Opening again is a no-op.
    let s = SqliteStore::open(&dir).unwrap();
    assert_eq!(s.timeline("ev").await.unwrap().unwrap().timeline.epoch, 7);
    assert_eq!(s.expire_timelines(crate::store::unix_ms()).await.unwrap(), 1);
    assert_eq!(s.timeline("ev").await.unwrap(), None);
    // The migrated table keeps reasons.
    crate::store::contract::timelines_keep_why_they_changed(&s).await;
}

#[tokio::test]
async fn timelines_expire_unless_their_room_holds_a_session() {
    let s = SqliteStore::open(&tmp()).unwrap();
    let t =
        saved(Timeline { epoch: 1, position_ms: 0, anchor_us: 0, rate_milli: 1000, paused: true }, ChangeReason::Pause);
    s.save_timelines(vec![("idle".into(), t.clone()), ("watched".into(), t.clone())]).await.unwrap();
    s.start_session(rec("a", "u", "d1", "watched", 5), 1, 0).await.unwrap();
    let saved = crate::store::unix_ms();
    assert_eq!(s.expire_timelines(saved.saturating_sub(60_000)).await.unwrap(), 0, "saved just now");
    assert_eq!(s.expire_timelines(saved + 1).await.unwrap(), 1);
    assert_eq!(s.timeline("idle").await.unwrap(), None);
    assert_eq!(s.timeline("watched").await.unwrap(), Some(t));
    s.end_session("a").await.unwrap();
    assert_eq!(s.expire_timelines(saved + 1).await.unwrap(), 1);
}

#[tokio::test]
async fn invitations_are_used_up_revoked_and_expire() {
    crate::store::contract::invitations_are_used_up_revoked_and_expire(&SqliteStore::open(&tmp()).unwrap()).await;
}

#[tokio::test]
async fn timelines_keep_why_they_changed() {
    let dir = tmp();
    let s = SqliteStore::open(&dir).unwrap();
    crate::store::contract::timelines_keep_why_they_changed(&s).await;
    // A reason this version does not know (a later one wrote it) reads as a seek: it resumes nothing by itself.
    let db = rusqlite::Connection::open(dir.join("lockstep.db")).unwrap();
    db.execute("UPDATE timelines SET reason = 'something-newer' WHERE room_id = 'paused'", []).unwrap();
    assert_eq!(s.timeline("paused").await.unwrap().unwrap().reason, ChangeReason::Seek);
}

#[tokio::test]
async fn room_clocks_are_saved_and_read_back() {
    crate::store::contract::room_clocks_are_saved_and_read_back(&SqliteStore::open(&tmp()).unwrap()).await;
}

#[tokio::test]
async fn chat_is_kept_in_order_and_paged() {
    crate::store::contract::chat_is_kept_in_order_and_paged(&SqliteStore::open(&tmp()).unwrap()).await;
}
