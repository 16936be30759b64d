//! Sessions and devices in SQLite.

use rusqlite::{Connection, OptionalExtension, Params, Row, TransactionBehavior, params};

use super::err;
use crate::store::{DeviceInfo, SessionRecord, StartError, StoreResult, UnixMs, group_devices};

const SESSION_COLS: &str = "session_id, user, device_id, room_id, created_at, last_seen, position_ms, buffering";

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

/// The user's devices with sessions seen after `live_after`, but `except`.
pub(super) fn devices(
    c: &Connection,
    user: &str,
    live_after: UnixMs,
    except: Option<&str>,
) -> StoreResult<Vec<DeviceInfo>> {
    let mut stmt = c
        .prepare_cached("SELECT device_id, room_id, last_seen FROM sessions WHERE user = ?1 AND last_seen > ?2")
        .map_err(err)?;
    let rows = stmt
        .query_map(params![user, live_after as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)? as u64))
        })
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    Ok(group_devices(rows, except))
}

/// See [`crate::store::Store::start_session`].
pub(super) fn start(
    c: &mut Connection,
    rec: SessionRecord,
    max_devices: u32,
    live_after: UnixMs,
) -> Result<SessionRecord, StartError> {
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
    let others = devices(&tx, &rec.user, live_after, Some(&rec.device_id))?;
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
}

/// A session by id.
pub(super) fn by_id(c: &Connection, id: &str) -> StoreResult<Option<SessionRecord>> {
    c.query_row(&format!("SELECT {SESSION_COLS} FROM sessions WHERE session_id = ?1"), [id], session_from)
        .optional()
        .map_err(err)
}

/// Every session.
pub(super) fn all(c: &mut Connection) -> StoreResult<Vec<SessionRecord>> {
    let mut stmt = c.prepare(&format!("SELECT {SESSION_COLS} FROM sessions")).map_err(err)?;
    stmt.query_map([], session_from).map_err(err)?.collect::<Result<Vec<_>, _>>().map_err(err)
}

/// Records activity (and the position, if given) of a session.
pub(super) fn touch(
    c: &Connection,
    id: &str,
    now: UnixMs,
    position_ms: Option<u64>,
    buffering: bool,
) -> StoreResult<Option<SessionRecord>> {
    c.execute(
        "UPDATE sessions SET last_seen = ?2, position_ms = COALESCE(?3, position_ms), buffering = ?4
         WHERE session_id = ?1",
        params![id, now as i64, position_ms.map(|p| p as i64), buffering],
    )
    .map_err(err)?;
    by_id(c, id)
}

/// Deletes the sessions matching `filter` (an SQL condition over `params`)
/// and returns them, in one transaction.
pub(super) fn take(c: &mut Connection, filter: &str, params: impl Params + Copy) -> StoreResult<Vec<SessionRecord>> {
    let tx = c.transaction().map_err(err)?;
    let gone = {
        let mut stmt = tx.prepare(&format!("SELECT {SESSION_COLS} FROM sessions WHERE {filter}")).map_err(err)?;
        stmt.query_map(params, session_from).map_err(err)?.collect::<Result<Vec<_>, _>>().map_err(err)?
    };
    tx.execute(&format!("DELETE FROM sessions WHERE {filter}"), params).map_err(err)?;
    tx.commit().map_err(err)?;
    Ok(gone)
}
