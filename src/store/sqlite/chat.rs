//! Rooms' chat in SQLite: messages (`chat`, deleted ones flagged so their
//! ids are never given again) and mutes (`chat_mutes`). A room keeps its
//! newest [`CHAT_KEPT`] messages.

use rusqlite::{Connection, OptionalExtension, params};

use super::err;
use crate::room::{ChatLoad, ChatOp, ChatRecord};
use crate::store::{CHAT_KEPT, StoreResult, UnixMs};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS chat (
    room_id   TEXT NOT NULL,
    id        INTEGER NOT NULL,
    at_ms     INTEGER NOT NULL,
    member_id INTEGER NOT NULL,
    user      TEXT NOT NULL,
    name      TEXT NOT NULL,
    role      TEXT NOT NULL,
    text      TEXT NOT NULL,
    deleted   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chat_mutes (
    room_id TEXT NOT NULL,
    user    TEXT NOT NULL,
    PRIMARY KEY (room_id, user)
) WITHOUT ROWID;
";

fn role_text(r: lockstep_protocol::Role) -> &'static str {
    match r {
        lockstep_protocol::Role::Host => "host",
        lockstep_protocol::Role::CoHost => "co-host",
        lockstep_protocol::Role::Viewer => "viewer",
    }
}

fn role_of(s: &str) -> lockstep_protocol::Role {
    match s {
        "host" => lockstep_protocol::Role::Host,
        "co-host" => lockstep_protocol::Role::CoHost,
        _ => lockstep_protocol::Role::Viewer,
    }
}

/// Applies a room's chat operations in order, in one transaction.
pub(super) fn save(c: &mut Connection, room: &str, ops: &[ChatOp]) -> StoreResult<()> {
    let tx = c.transaction().map_err(err)?;
    let mut newest = None;
    for op in ops {
        match op {
            ChatOp::Post(r) => {
                tx.execute(
                    "INSERT OR REPLACE INTO chat (room_id, id, at_ms, member_id, user, name, role, text)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![room, r.id as i64, r.at_ms as i64, r.member_id, r.user, r.name, role_text(r.role), r.text],
                )
                .map_err(err)?;
                newest = Some(r.id);
            }
            ChatOp::Delete { id, .. } => {
                tx.execute(
                    "UPDATE chat SET deleted = 1, text = '' WHERE room_id = ?1 AND id = ?2",
                    params![room, *id as i64],
                )
                .map_err(err)?;
            }
            ChatOp::Mute { user, muted: true, .. } => {
                tx.execute("INSERT OR IGNORE INTO chat_mutes (room_id, user) VALUES (?1, ?2)", params![room, user])
                    .map_err(err)?;
            }
            ChatOp::Mute { user, muted: false, .. } => {
                tx.execute("DELETE FROM chat_mutes WHERE room_id = ?1 AND user = ?2", params![room, user])
                    .map_err(err)?;
            }
        }
    }
    if let Some(newest) = newest {
        // The newest row stays even when deleted: it holds the last id.
        tx.execute("DELETE FROM chat WHERE room_id = ?1 AND id <= ?2", params![room, newest as i64 - CHAT_KEPT as i64])
            .map_err(err)?;
    }
    tx.commit().map_err(err)
}

fn record(row: &rusqlite::Row<'_>) -> rusqlite::Result<ChatRecord> {
    Ok(ChatRecord {
        id: row.get::<_, i64>(0)? as u64,
        at_ms: row.get::<_, i64>(1)? as u64,
        member_id: row.get(2)?,
        user: row.get(3)?,
        name: row.get(4)?,
        role: role_of(&row.get::<_, String>(5)?),
        text: row.get(6)?,
        request_id: 0,
    })
}

/// Up to `limit` messages before `before` (all if `None`), oldest first.
pub(super) fn page(c: &Connection, room: &str, before: Option<u64>, limit: usize) -> StoreResult<Vec<ChatRecord>> {
    let before = before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
    let mut st = c
        .prepare_cached(
            "SELECT id, at_ms, member_id, user, name, role, text FROM chat
             WHERE room_id = ?1 AND id < ?2 AND deleted = 0 ORDER BY id DESC LIMIT ?3",
        )
        .map_err(err)?;
    let mut rows: Vec<ChatRecord> = st
        .query_map(params![room, before, limit as i64], record)
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)?;
    rows.reverse();
    Ok(rows)
}

/// What a room starts with: its newest `n` messages, last id, mutes.
pub(super) fn load(c: &Connection, room: &str, n: usize) -> StoreResult<ChatLoad> {
    let history = page(c, room, None, n)?;
    let last_id: Option<i64> = c
        .query_row("SELECT MAX(id) FROM chat WHERE room_id = ?1", [room], |r| r.get(0))
        .optional()
        .map_err(err)?
        .flatten();
    let mut st = c.prepare_cached("SELECT user FROM chat_mutes WHERE room_id = ?1").map_err(err)?;
    let muted = st.query_map([room], |r| r.get(0)).map_err(err)?.collect::<Result<_, _>>().map_err(err)?;
    Ok(ChatLoad { history, last_id: last_id.unwrap_or(0) as u64, muted })
}

/// Deletes the chat of rooms with no timeline and no session whose newest
/// message is older than `before`.
pub(super) fn expire(c: &Connection, before: UnixMs) -> StoreResult<()> {
    let gone = "SELECT room_id FROM chat GROUP BY room_id HAVING MAX(at_ms) <= ?1
                AND room_id NOT IN (SELECT room_id FROM timelines)
                AND room_id NOT IN (SELECT room_id FROM sessions)";
    c.execute(&format!("DELETE FROM chat_mutes WHERE room_id IN ({gone})"), [before as i64]).map_err(err)?;
    c.execute(&format!("DELETE FROM chat WHERE room_id IN ({gone})"), [before as i64]).map_err(err)?;
    Ok(())
}
