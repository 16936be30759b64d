//! Invitations, party hosts and timelines in SQLite.

use lockstep_protocol::{ChangeReason, Timeline, TimelineChanged};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::err;
use crate::room::ClockSetting;
use crate::store::{InvitationRecord, InviteError, StoreResult, UnixMs};

const INVITATION_COLS: &str = "id, event_id, room_id, host_user, created_at, expires_at, max_uses, uses, revoked";

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

pub(super) fn create_invitation(c: &Connection, inv: &InvitationRecord) -> StoreResult<()> {
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
}

pub(super) fn invitation(c: &Connection, id: &str) -> StoreResult<Option<InvitationRecord>> {
    c.query_row(&format!("SELECT {INVITATION_COLS} FROM invitations WHERE id = ?1"), [id], invitation_from)
        .optional()
        .map_err(err)
}

/// Uses an invitation once if it is usable at `now`, in one transaction.
pub(super) fn use_invitation(c: &mut Connection, id: &str, now: UnixMs) -> Result<InvitationRecord, InviteError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
    let inv = invitation(&tx, id)?.ok_or(InviteError::NotFound)?;
    if !inv.usable(now) {
        return Err(InviteError::Gone);
    }
    tx.execute("UPDATE invitations SET uses = uses + 1 WHERE id = ?1", [id]).map_err(err)?;
    tx.commit().map_err(err)?;
    Ok(InvitationRecord { uses: inv.uses + 1, ..inv })
}

pub(super) fn party_host(c: &Connection, room_id: &str) -> StoreResult<Option<String>> {
    c.query_row("SELECT host_user FROM invitations WHERE room_id = ?1 LIMIT 1", [room_id], |r| r.get(0))
        .optional()
        .map_err(err)
}

pub(super) fn revoke_invitation(c: &Connection, id: &str) -> StoreResult<Option<InvitationRecord>> {
    let inv = invitation(c, id)?;
    c.execute("UPDATE invitations SET revoked = 1 WHERE id = ?1", [id]).map_err(err)?;
    Ok(inv)
}

/// A change reason as stored: its name on the wire's JSON (`buffering-wait`).
fn reason_name(r: ChangeReason) -> String {
    match serde_json::to_value(r) {
        Ok(serde_json::Value::String(s)) => s,
        _ => unreachable!("a reason serializes as its name"),
    }
}

/// A stored reason; none (a row from before reasons were kept) or one this
/// version does not know (a later one wrote it) reads as a seek, which
/// resumes nothing by itself.
fn reason_from(name: Option<String>) -> ChangeReason {
    name.and_then(|n| serde_json::from_value(serde_json::Value::String(n)).ok()).unwrap_or(ChangeReason::Seek)
}

/// Saves timelines (latest wins) and why each changed, stamped `now`.
pub(super) fn save_timelines(c: &mut Connection, batch: &[(String, TimelineChanged)], now: UnixMs) -> StoreResult<()> {
    let tx = c.transaction().map_err(err)?;
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO timelines (room_id, epoch, position_ms, anchor_us, rate_milli, paused, updated_at, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(room_id) DO UPDATE SET epoch = ?2, position_ms = ?3, anchor_us = ?4,
                     rate_milli = ?5, paused = ?6, updated_at = ?7, reason = ?8",
            )
            .map_err(err)?;
        for (room, change) in batch {
            let t = &change.timeline;
            stmt.execute(params![
                room,
                i64::from(t.epoch),
                t.position_ms as i64,
                t.anchor_us as i64,
                i64::from(t.rate_milli),
                t.paused,
                now as i64,
                reason_name(change.reason)
            ])
            .map_err(err)?;
        }
    }
    tx.commit().map_err(err)
}

/// A room's saved timeline, as the change that made it: effective at its
/// anchor, by nobody (the server).
pub(super) fn timeline(c: &Connection, room_id: &str) -> StoreResult<Option<TimelineChanged>> {
    c.query_row(
        "SELECT epoch, position_ms, anchor_us, rate_milli, paused, reason FROM timelines WHERE room_id = ?1",
        [room_id],
        |r| {
            let timeline = Timeline {
                epoch: r.get::<_, i64>(0)? as u32,
                position_ms: r.get::<_, i64>(1)? as u64,
                anchor_us: r.get::<_, i64>(2)? as u64,
                rate_milli: r.get::<_, i64>(3)? as u16,
                paused: r.get(4)?,
            };
            Ok(TimelineChanged { timeline, effective_at_us: timeline.anchor_us, by: 0, reason: reason_from(r.get(5)?) })
        },
    )
    .optional()
    .map_err(err)
}

/// Saves a room's clock setting (as JSON), stamped `now`.
pub(super) fn save_room_clock(c: &Connection, room_id: &str, s: &ClockSetting, now: UnixMs) -> StoreResult<()> {
    let json = serde_json::to_string(s).expect("settings serialize");
    c.execute(
        "INSERT INTO room_clocks (room_id, setting, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(room_id) DO UPDATE SET setting = ?2, updated_at = ?3",
        params![room_id, json, now as i64],
    )
    .map_err(err)?;
    Ok(())
}

/// A room's clock setting; one that does not parse (written by a later
/// version) counts as none.
pub(super) fn room_clock(c: &Connection, room_id: &str) -> StoreResult<Option<ClockSetting>> {
    let json: Option<String> = c
        .query_row("SELECT setting FROM room_clocks WHERE room_id = ?1", [room_id], |r| r.get(0))
        .optional()
        .map_err(err)?;
    Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
}

/// Deletes the timelines saved at or before `before` of rooms that hold no
/// session, and their clock settings if not written since; returns how many
/// timelines.
pub(super) fn expire_timelines(c: &Connection, before: UnixMs) -> StoreResult<usize> {
    let n = c
        .execute(
            "DELETE FROM timelines WHERE updated_at <= ?1
             AND NOT EXISTS (SELECT 1 FROM sessions WHERE sessions.room_id = timelines.room_id)",
            [before as i64],
        )
        .map_err(err)?;
    c.execute(
        "DELETE FROM room_media WHERE updated_at <= ?1
         AND NOT EXISTS (SELECT 1 FROM timelines WHERE timelines.room_id = room_media.room_id)",
        [before as i64],
    )
    .map_err(err)?;
    c.execute(
        "DELETE FROM room_clocks WHERE updated_at <= ?1
         AND NOT EXISTS (SELECT 1 FROM timelines WHERE timelines.room_id = room_clocks.room_id)",
        [before as i64],
    )
    .map_err(err)?;
    Ok(n)
}
