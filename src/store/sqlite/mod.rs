//! The embedded store: SQLite in WAL mode (`synchronous=NORMAL`, durable
//! against a killed process), one connection behind a mutex, calls run on
//! tokio's blocking pool. Check-then-write methods run in `BEGIN IMMEDIATE`
//! transactions.
//!
//! [`sessions`] holds sessions and devices, [`rooms`] invitations and
//! timelines, as functions over a connection; the [`Store`] implementation
//! here runs them on the blocking pool.

mod chat;
mod rooms;
mod sessions;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use lockstep_protocol::TimelineChanged;
use rusqlite::{Connection, TransactionBehavior};

use crate::room::{ChatLoad, ChatOp, ChatRecord, ClockSetting, MediaState};

use super::{
    DeviceInfo, InvitationRecord, InviteError, SessionRecord, StartError, Store, StoreError, StoreResult, UnixMs,
    unix_ms,
};

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

/// The current schema. A file of an earlier version is brought up to date by
/// [`migrate`] after this runs (`CREATE ... IF NOT EXISTS` leaves existing
/// tables as they are).
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
CREATE INDEX IF NOT EXISTS sessions_by_room ON sessions(room_id);
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
    paused      INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL DEFAULT 0,
    reason      TEXT
);
CREATE TABLE IF NOT EXISTS room_media (
    room_id    TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS room_clocks (
    room_id    TEXT PRIMARY KEY,
    setting    TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
";

/// Brings a file of an earlier version up to date, in one transaction:
/// `timelines.updated_at` (added with the time of the migration, so existing
/// timelines get a full [`super::ROOM_KEY_TTL`]) and its index;
/// `timelines.reason` (why the timeline last changed; NULL in rows written
/// before it, read as a seek: what every saved timeline was read as then).
fn migrate(c: &mut Connection, now: UnixMs) -> rusqlite::Result<()> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let has_updated_at =
        tx.prepare("SELECT 1 FROM pragma_table_info('timelines') WHERE name = 'updated_at'")?.exists([])?;
    if !has_updated_at {
        tx.execute("ALTER TABLE timelines ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0", [])?;
        tx.execute("UPDATE timelines SET updated_at = ?1", [now as i64])?;
    }
    tx.execute("CREATE INDEX IF NOT EXISTS timelines_by_update ON timelines(updated_at)", [])?;
    let has_reason = tx.prepare("SELECT 1 FROM pragma_table_info('timelines') WHERE name = 'reason'")?.exists([])?;
    if !has_reason {
        tx.execute("ALTER TABLE timelines ADD COLUMN reason TEXT", [])?;
    }
    tx.commit()
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl SqliteStore {
    /// Opens (creating or migrating if needed) `dir/lockstep.db`.
    pub(crate) fn open(dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        let mut conn = Connection::open(dir.join("lockstep.db")).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        conn.execute_batch(chat::SCHEMA).map_err(err)?;
        migrate(&mut conn, unix_ms()).map_err(err)?;
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

impl Store for SqliteStore {
    fn start_session(
        &self,
        rec: SessionRecord,
        max_devices: u32,
        live_after: UnixMs,
    ) -> BoxFuture<'_, Result<SessionRecord, StartError>> {
        self.run(move |c| sessions::start(c, rec, max_devices, live_after))
    }

    fn session(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<SessionRecord>>> {
        let id = id.to_owned();
        self.run(move |c| sessions::by_id(c, &id))
    }

    fn touch_session(
        &self,
        id: &str,
        now: UnixMs,
        position_ms: Option<u64>,
        buffering: bool,
    ) -> BoxFuture<'_, StoreResult<Option<SessionRecord>>> {
        let id = id.to_owned();
        self.run(move |c| sessions::touch(c, &id, now, position_ms, buffering))
    }

    fn end_session(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<SessionRecord>>> {
        let id = id.to_owned();
        self.run(move |c| Ok(sessions::take(c, "session_id = ?1", [&id])?.pop()))
    }

    fn expire_sessions(&self, before: UnixMs) -> BoxFuture<'_, StoreResult<Vec<SessionRecord>>> {
        self.run(move |c| sessions::take(c, "last_seen <= ?1", [before as i64]))
    }

    fn all_sessions(&self) -> BoxFuture<'_, StoreResult<Vec<SessionRecord>>> {
        self.run(sessions::all)
    }

    fn devices(&self, user: &str, live_after: UnixMs) -> BoxFuture<'_, StoreResult<Vec<DeviceInfo>>> {
        let user = user.to_owned();
        self.run(move |c| sessions::devices(c, &user, live_after, None))
    }

    fn remove_device(&self, user: &str, device_id: &str) -> BoxFuture<'_, StoreResult<Vec<SessionRecord>>> {
        let (user, device_id) = (user.to_owned(), device_id.to_owned());
        self.run(move |c| sessions::take(c, "user = ?1 AND device_id = ?2", [&user, &device_id]))
    }

    fn create_invitation(&self, inv: InvitationRecord) -> BoxFuture<'_, StoreResult<()>> {
        self.run(move |c| rooms::create_invitation(c, &inv))
    }

    fn invitation(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<InvitationRecord>>> {
        let id = id.to_owned();
        self.run(move |c| rooms::invitation(c, &id))
    }

    fn use_invitation(&self, id: &str, now: UnixMs) -> BoxFuture<'_, Result<InvitationRecord, InviteError>> {
        let id = id.to_owned();
        self.run(move |c| rooms::use_invitation(c, &id, now))
    }

    fn party_host(&self, room_id: &str) -> BoxFuture<'_, StoreResult<Option<String>>> {
        let room_id = room_id.to_owned();
        self.run(move |c| rooms::party_host(c, &room_id))
    }

    fn revoke_invitation(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<InvitationRecord>>> {
        let id = id.to_owned();
        self.run(move |c| rooms::revoke_invitation(c, &id))
    }

    fn save_timelines(&self, batch: Vec<(String, TimelineChanged)>) -> BoxFuture<'_, StoreResult<()>> {
        let now = unix_ms();
        self.run(move |c| rooms::save_timelines(c, &batch, now))
    }

    fn timeline(&self, room_id: &str) -> BoxFuture<'_, StoreResult<Option<TimelineChanged>>> {
        let room_id = room_id.to_owned();
        self.run(move |c| rooms::timeline(c, &room_id))
    }

    fn expire_timelines(&self, before: UnixMs) -> BoxFuture<'_, StoreResult<usize>> {
        self.run(move |c| {
            let n = rooms::expire_timelines(c, before)?;
            chat::expire(c, before)?;
            Ok(n)
        })
    }

    fn save_room_clock(&self, room_id: &str, setting: ClockSetting) -> BoxFuture<'_, StoreResult<()>> {
        let (room_id, now) = (room_id.to_owned(), unix_ms());
        self.run(move |c| rooms::save_room_clock(c, &room_id, &setting, now))
    }

    fn room_clock(&self, room_id: &str) -> BoxFuture<'_, StoreResult<Option<ClockSetting>>> {
        let room_id = room_id.to_owned();
        self.run(move |c| rooms::room_clock(c, &room_id))
    }

    fn save_room_media(&self, room_id: &str, state: &MediaState) -> BoxFuture<'_, StoreResult<()>> {
        let (room_id, now) = (room_id.to_owned(), unix_ms());
        let json = serde_json::to_string(state).expect("media states serialize");
        self.run(move |c| {
            c.execute(
                "INSERT INTO room_media (room_id, state, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(room_id) DO UPDATE SET state = ?2, updated_at = ?3",
                rusqlite::params![room_id, json, now as i64],
            )
            .map_err(err)?;
            Ok(())
        })
    }

    fn room_media(&self, room_id: &str) -> BoxFuture<'_, StoreResult<Option<MediaState>>> {
        let room_id = room_id.to_owned();
        self.run(move |c| {
            let json: Option<String> = rusqlite::OptionalExtension::optional(c.query_row(
                "SELECT state FROM room_media WHERE room_id = ?1",
                [&room_id],
                |r| r.get(0),
            ))
            .map_err(err)?;
            Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
        })
    }

    fn save_chat(&self, room_id: &str, ops: Vec<ChatOp>) -> BoxFuture<'_, StoreResult<()>> {
        let room_id = room_id.to_owned();
        self.run(move |c| chat::save(c, &room_id, &ops))
    }

    fn chat_load(&self, room_id: &str, n: usize) -> BoxFuture<'_, StoreResult<ChatLoad>> {
        let room_id = room_id.to_owned();
        self.run(move |c| chat::load(c, &room_id, n))
    }

    fn chat_page(
        &self,
        room_id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<ChatRecord>>> {
        let room_id = room_id.to_owned();
        self.run(move |c| chat::page(c, &room_id, before, limit))
    }
}
