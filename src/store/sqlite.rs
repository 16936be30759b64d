//! The embedded store: SQLite in WAL mode (`synchronous=NORMAL`, durable
//! against a killed process), one connection behind a mutex, calls run on
//! tokio's blocking pool. Check-then-write methods run in `BEGIN IMMEDIATE`
//! transactions.

use std::path::Path;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use lockstep_protocol::Timeline;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::{
    DeviceInfo, InvitationRecord, InviteError, SessionRecord, StartError, Store, StoreError, StoreResult, UnixMs,
};

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    session_id  TEXT PRIMARY KEY,
    user        TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    room_id     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    position_ms INTEGER,
    buffering   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions(user, device_id);
CREATE TABLE IF NOT EXISTS invitations (
    id         TEXT PRIMARY KEY,
    event_id   TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    host_user  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    max_uses   INTEGER,
    uses       INTEGER NOT NULL DEFAULT 0,
    revoked    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS invitations_by_room ON invitations(room_id);
CREATE TABLE IF NOT EXISTS timelines (
    room_id     TEXT PRIMARY KEY,
    epoch       INTEGER NOT NULL,
    position_ms INTEGER NOT NULL,
    anchor_us   INTEGER NOT NULL,
    rate_milli  INTEGER NOT NULL,
    paused      INTEGER NOT NULL
);
";

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

fn session_from(r: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        session_id: r.get(0)?,
        user: r.get(1)?,
        device_id: r.get(2)?,
        room_id: r.get(3)?,
        created_at: r.get::<_, i64>(4)? as u64,
        last_seen: r.get::<_, i64>(5)? as u64,
        position_ms: r.get::<_, Option<i64>>(6)?.map(|p| p as u64),
        buffering: r.get(7)?,
    })
}

fn invitation_from(r: &Row<'_>) -> rusqlite::Result<InvitationRecord> {
    Ok(InvitationRecord {
        id: r.get(0)?,
        event_id: r.get(1)?,
        room_id: r.get(2)?,
        host_user: r.get(3)?,
        created_at: r.get::<_, i64>(4)? as u64,
        expires_at: r.get::<_, i64>(5)? as u64,
        max_uses: r.get::<_, Option<i64>>(6)?.map(|m| m as u32),
        uses: r.get::<_, i64>(7)? as u32,
        revoked: r.get(8)?,
    })
}

const SESSION_COLS: &str = "session_id, user, device_id, room_id, created_at, last_seen, position_ms, buffering";
const INVITATION_COLS: &str = "id, event_id, room_id, host_user, created_at, expires_at, max_uses, uses, revoked";

impl SqliteStore {
    /// Opens (creating if needed) `dir/lockstep.db`.
    pub(crate) fn open(dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        let conn = Connection::open(dir.join("lockstep.db")).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(SqliteStore { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `f` on the connection on the blocking pool.
    fn run<T, E, F>(&self, f: F) -> BoxFuture<'static, Result<T, E>>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut c)
        })
        .map(|r| r.unwrap_or_else(|e| Err(E::from(err(e)))))
        .boxed()
    }
}

impl From<StoreError> for StartError {
    fn from(e: StoreError) -> Self {
        StartError::Store(e.0)
    }
}

impl From<StoreError> for InviteError {
    fn from(e: StoreError) -> Self {
        InviteError::Store(e.0)
    }
}

fn devices_of(c: &Connection, user: &str, live_after: UnixMs, except: Option<&str>) -> StoreResult<Vec<DeviceInfo>> {
    let mut stmt = c
        .prepare_cached(
            "SELECT device_id, room_id, last_seen FROM sessions WHERE user = ?1 AND last_seen > ?2 ORDER BY device_id",
        )
        .map_err(err)?;
    let rows = stmt
        .query_map(params![user, live_after as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)? as u64))
        })
        .map_err(err)?;
    let mut out: Vec<DeviceInfo> = Vec::new();
    for row in rows {
        let (device_id, room, seen) = row.map_err(err)?;
        if Some(device_id.as_str()) == except {
            continue;
        }
        match out.last_mut() {
            Some(d) if d.device_id == device_id => {
                if !d.event_ids.contains(&room) {
                    d.event_ids.push(room);
                }
                d.last_seen = d.last_seen.max(seen);
            }
            _ => out.push(DeviceInfo { device_id, event_ids: vec![room], last_seen: seen }),
        }
    }
    Ok(out)
}

impl Store for SqliteStore {
    fn start_session(
        &self,
        rec: SessionRecord,
        max_devices: u32,
        live_after: UnixMs,
    ) -> BoxFuture<'_, Result<SessionRecord, StartError>> {
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
            let existing = tx
                .query_row(
                    &format!(
                        "SELECT {SESSION_COLS} FROM sessions
                         WHERE user = ?1 AND device_id = ?2 AND room_id = ?3 AND last_seen > ?4"
                    ),
                    params![rec.user, rec.device_id, rec.room_id, live_after as i64],
                    session_from,
                )
                .optional()
                .map_err(err)?;
            if let Some(mut s) = existing {
                s.last_seen = rec.last_seen;
                tx.execute(
                    "UPDATE sessions SET last_seen = ?2 WHERE session_id = ?1",
                    params![s.session_id, s.last_seen as i64],
                )
                .map_err(err)?;
                tx.commit().map_err(err)?;
                return Ok(s);
            }
            let others = devices_of(&tx, &rec.user, live_after, Some(&rec.device_id))?;
            if others.len() as u32 >= max_devices {
                return Err(StartError::DeviceLimit(others));
            }
            tx.execute(
                &format!("INSERT INTO sessions ({SESSION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
                params![
                    rec.session_id,
                    rec.user,
                    rec.device_id,
                    rec.room_id,
                    rec.created_at as i64,
                    rec.last_seen as i64,
                    rec.position_ms.map(|p| p as i64),
                    rec.buffering
                ],
            )
            .map_err(err)?;
            tx.commit().map_err(err)?;
            Ok(rec)
        })
    }

    fn session(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<SessionRecord>>> {
        let id = id.to_owned();
        self.run(move |c| {
            c.query_row(&format!("SELECT {SESSION_COLS} FROM sessions WHERE session_id = ?1"), [id], session_from)
                .optional()
                .map_err(err)
        })
    }

    fn touch_session(
        &self,
        id: &str,
        now: UnixMs,
        position_ms: Option<u64>,
        buffering: bool,
    ) -> BoxFuture<'_, StoreResult<Option<SessionRecord>>> {
        let id = id.to_owned();
        self.run(move |c| {
            c.execute(
                "UPDATE sessions SET last_seen = ?2, position_ms = COALESCE(?3, position_ms), buffering = ?4
                 WHERE session_id = ?1",
                params![id, now as i64, position_ms.map(|p| p as i64), buffering],
            )
            .map_err(err)?;
            c.query_row(&format!("SELECT {SESSION_COLS} FROM sessions WHERE session_id = ?1"), [id], session_from)
                .optional()
                .map_err(err)
        })
    }

    fn touch_device(&self, user: &str, device_id: &str, room_id: &str, now: UnixMs) -> BoxFuture<'_, StoreResult<()>> {
        let (user, device_id, room_id) = (user.to_owned(), device_id.to_owned(), room_id.to_owned());
        self.run(move |c| {
            c.execute(
                "UPDATE sessions SET last_seen = ?4 WHERE user = ?1 AND device_id = ?2 AND room_id = ?3",
                params![user, device_id, room_id, now as i64],
            )
            .map_err(err)?;
            Ok(())
        })
    }

    fn end_session(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<SessionRecord>>> {
        let id = id.to_owned();
        self.run(move |c| {
            let s = c
                .query_row(&format!("SELECT {SESSION_COLS} FROM sessions WHERE session_id = ?1"), [&id], session_from)
                .optional()
                .map_err(err)?;
            c.execute("DELETE FROM sessions WHERE session_id = ?1", [&id]).map_err(err)?;
            Ok(s)
        })
    }

    fn expire_sessions(&self, before: UnixMs) -> BoxFuture<'_, StoreResult<Vec<SessionRecord>>> {
        self.run(move |c| {
            let tx = c.transaction().map_err(err)?;
            let gone = {
                let mut stmt =
                    tx.prepare(&format!("SELECT {SESSION_COLS} FROM sessions WHERE last_seen <= ?1")).map_err(err)?;
                stmt.query_map([before as i64], session_from)
                    .map_err(err)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(err)?
            };
            tx.execute("DELETE FROM sessions WHERE last_seen <= ?1", [before as i64]).map_err(err)?;
            tx.commit().map_err(err)?;
            Ok(gone)
        })
    }

    fn all_sessions(&self) -> BoxFuture<'_, StoreResult<Vec<SessionRecord>>> {
        self.run(move |c| {
            let mut stmt = c.prepare(&format!("SELECT {SESSION_COLS} FROM sessions")).map_err(err)?;
            stmt.query_map([], session_from).map_err(err)?.collect::<Result<Vec<_>, _>>().map_err(err)
        })
    }

    fn devices(&self, user: &str, live_after: UnixMs) -> BoxFuture<'_, StoreResult<Vec<DeviceInfo>>> {
        let user = user.to_owned();
        self.run(move |c| devices_of(c, &user, live_after, None))
    }

    fn remove_device(&self, user: &str, device_id: &str) -> BoxFuture<'_, StoreResult<Vec<SessionRecord>>> {
        let (user, device_id) = (user.to_owned(), device_id.to_owned());
        self.run(move |c| {
            let tx = c.transaction().map_err(err)?;
            let gone = {
                let mut stmt = tx
                    .prepare(&format!("SELECT {SESSION_COLS} FROM sessions WHERE user = ?1 AND device_id = ?2"))
                    .map_err(err)?;
                stmt.query_map(params![user, device_id], session_from)
                    .map_err(err)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(err)?
            };
            tx.execute("DELETE FROM sessions WHERE user = ?1 AND device_id = ?2", params![user, device_id])
                .map_err(err)?;
            tx.commit().map_err(err)?;
            Ok(gone)
        })
    }

    fn create_invitation(&self, inv: InvitationRecord) -> BoxFuture<'_, StoreResult<()>> {
        self.run(move |c| {
            c.execute(
                &format!("INSERT INTO invitations ({INVITATION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![
                    inv.id,
                    inv.event_id,
                    inv.room_id,
                    inv.host_user,
                    inv.created_at as i64,
                    inv.expires_at as i64,
                    inv.max_uses.map(i64::from),
                    i64::from(inv.uses),
                    inv.revoked
                ],
            )
            .map_err(err)?;
            Ok(())
        })
    }

    fn invitation(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<InvitationRecord>>> {
        let id = id.to_owned();
        self.run(move |c| {
            c.query_row(&format!("SELECT {INVITATION_COLS} FROM invitations WHERE id = ?1"), [id], invitation_from)
                .optional()
                .map_err(err)
        })
    }

    fn use_invitation(&self, id: &str, now: UnixMs) -> BoxFuture<'_, Result<InvitationRecord, InviteError>> {
        let id = id.to_owned();
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
            let inv = tx
                .query_row(&format!("SELECT {INVITATION_COLS} FROM invitations WHERE id = ?1"), [&id], invitation_from)
                .optional()
                .map_err(err)?
                .ok_or(InviteError::NotFound)?;
            if !inv.usable(now) {
                return Err(InviteError::Gone);
            }
            tx.execute("UPDATE invitations SET uses = uses + 1 WHERE id = ?1", [&id]).map_err(err)?;
            tx.commit().map_err(err)?;
            Ok(InvitationRecord { uses: inv.uses + 1, ..inv })
        })
    }

    fn party_host(&self, room_id: &str) -> BoxFuture<'_, StoreResult<Option<String>>> {
        let room_id = room_id.to_owned();
        self.run(move |c| {
            c.query_row("SELECT host_user FROM invitations WHERE room_id = ?1 LIMIT 1", [room_id], |r| r.get(0))
                .optional()
                .map_err(err)
        })
    }

    fn revoke_invitation(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<InvitationRecord>>> {
        let id = id.to_owned();
        self.run(move |c| {
            let inv = c
                .query_row(&format!("SELECT {INVITATION_COLS} FROM invitations WHERE id = ?1"), [&id], invitation_from)
                .optional()
                .map_err(err)?;
            c.execute("UPDATE invitations SET revoked = 1 WHERE id = ?1", [&id]).map_err(err)?;
            Ok(inv)
        })
    }

    fn save_timelines(&self, batch: Vec<(String, Timeline)>) -> BoxFuture<'_, StoreResult<()>> {
        self.run(move |c| {
            let tx = c.transaction().map_err(err)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO timelines (room_id, epoch, position_ms, anchor_us, rate_milli, paused)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT(room_id) DO UPDATE SET epoch = ?2, position_ms = ?3, anchor_us = ?4,
                             rate_milli = ?5, paused = ?6",
                    )
                    .map_err(err)?;
                for (room, t) in &batch {
                    stmt.execute(params![
                        room,
                        i64::from(t.epoch),
                        t.position_ms as i64,
                        t.anchor_us as i64,
                        i64::from(t.rate_milli),
                        t.paused
                    ])
                    .map_err(err)?;
                }
            }
            tx.commit().map_err(err)
        })
    }

    fn timeline(&self, room_id: &str) -> BoxFuture<'_, StoreResult<Option<Timeline>>> {
        let room_id = room_id.to_owned();
        self.run(move |c| {
            c.query_row(
                "SELECT epoch, position_ms, anchor_us, rate_milli, paused FROM timelines WHERE room_id = ?1",
                [room_id],
                |r| {
                    Ok(Timeline {
                        epoch: r.get::<_, i64>(0)? as u32,
                        position_ms: r.get::<_, i64>(1)? as u64,
                        anchor_us: r.get::<_, i64>(2)? as u64,
                        rate_milli: r.get::<_, i64>(3)? as u16,
                        paused: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(err)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("lockstep-store-{}-{}", std::process::id(), super::super::random_id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn rec(id: &str, user: &str, device: &str, room: &str, now: u64) -> SessionRecord {
        SessionRecord {
            session_id: id.into(),
            user: user.into(),
            device_id: device.into(),
            room_id: room.into(),
            created_at: now,
            last_seen: now,
            position_ms: None,
            buffering: false,
        }
    }

    #[tokio::test]
    async fn device_limit_counts_distinct_live_devices_and_resumes_the_same_one() {
        let s = SqliteStore::open(&tmp()).unwrap();
        let now = 1_000_000;
        s.start_session(rec("a", "u", "d1", "ev", now), 2, 0).await.unwrap();
        // Same device, another room: still one device.
        s.start_session(rec("b", "u", "d1", "ev2", now), 2, 0).await.unwrap();
        s.start_session(rec("c", "u", "d2", "ev", now), 2, 0).await.unwrap();
        let e = s.start_session(rec("d", "u", "d3", "ev", now), 2, 0).await.unwrap_err();
        let StartError::DeviceLimit(devs) = e else { panic!("{e:?}") };
        assert_eq!(devs.iter().map(|d| d.device_id.as_str()).collect::<Vec<_>>(), vec!["d1", "d2"]);
        // Resuming the same device and room returns the same session.
        let again = s.start_session(rec("zzz", "u", "d2", "ev", now + 5), 2, 0).await.unwrap();
        assert_eq!(again.session_id, "c");
        // Stale sessions do not count.
        s.start_session(rec("e", "u", "d3", "ev", now + 10), 2, now).await.unwrap();
    }

    #[tokio::test]
    async fn concurrent_starts_at_the_limit_admit_exactly_one() {
        let s = SqliteStore::open(&tmp()).unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    s.start_session(rec(&format!("s{i}"), "u", &format!("d{i}"), "ev", 5), 1, 0).await
                })
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
    async fn invitations_are_used_up_revoked_and_expire() {
        let s = SqliteStore::open(&tmp()).unwrap();
        let inv = InvitationRecord {
            id: "i1".into(),
            event_id: "ev".into(),
            room_id: "ev~p1".into(),
            host_user: "alice".into(),
            created_at: 0,
            expires_at: 1_000,
            max_uses: Some(2),
            uses: 0,
            revoked: false,
        };
        s.create_invitation(inv.clone()).await.unwrap();
        assert_eq!(s.use_invitation("i1", 10).await.unwrap().uses, 1);
        assert_eq!(s.use_invitation("i1", 10).await.unwrap().uses, 2);
        assert_eq!(s.use_invitation("i1", 10).await, Err(InviteError::Gone));
        assert_eq!(s.use_invitation("nope", 10).await, Err(InviteError::NotFound));
        s.create_invitation(InvitationRecord { id: "i2".into(), max_uses: None, ..inv.clone() }).await.unwrap();
        assert_eq!(s.use_invitation("i2", 1_000).await, Err(InviteError::Gone), "expired");
        s.revoke_invitation("i2").await.unwrap();
        assert_eq!(s.use_invitation("i2", 10).await, Err(InviteError::Gone), "revoked");
    }

    #[tokio::test]
    async fn state_survives_reopening() {
        let dir = tmp();
        {
            let s = SqliteStore::open(&dir).unwrap();
            s.start_session(rec("a", "u", "d1", "ev", 7), 1, 0).await.unwrap();
            let t = Timeline { epoch: 4, position_ms: 9_000, anchor_us: 123, rate_milli: 1250, paused: false };
            s.save_timelines(vec![("ev".into(), t)]).await.unwrap();
        }
        let s = SqliteStore::open(&dir).unwrap();
        assert_eq!(s.session("a").await.unwrap().unwrap().device_id, "d1");
        assert_eq!(s.timeline("ev").await.unwrap().unwrap().epoch, 4);
        assert_eq!(s.expire_sessions(7).await.unwrap().len(), 1);
        assert!(s.all_sessions().await.unwrap().is_empty());
    }
}
