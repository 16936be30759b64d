//! Invitations, party hosts and timeline records in Redis (see the module
//! docs for the keys).

use std::collections::HashMap;

use lockstep_protocol::{ServerMsg, TimelineChanged, decode_server, encode_server};
use redis::{AsyncCommands, Value};

use super::{RedisStore, err, fields, keys, num};
use crate::room::ClockSetting;
use crate::store::{InvitationRecord, InviteError, StoreResult, UnixMs, room_key_ttl_ms};

/// Encodes a timeline change for the record and the room channel.
pub(crate) fn encode_change(c: &TimelineChanged) -> Vec<u8> {
    encode_server(&ServerMsg::TimelineChanged(c.clone()))
}

/// Decodes a record or channel payload.
pub(crate) fn decode_change(bytes: &[u8]) -> Option<TimelineChanged> {
    match decode_server(bytes) {
        Ok(ServerMsg::TimelineChanged(c)) => Some(c),
        _ => None,
    }
}

fn invitation_from(id: String, m: &HashMap<String, String>) -> Option<InvitationRecord> {
    Some(InvitationRecord {
        id,
        event_id: m.get("event")?.clone(),
        room_id: m.get("room")?.clone(),
        host_user: m.get("host")?.clone(),
        created_at: num(m, "created"),
        expires_at: num(m, "expires"),
        max_uses: m.get("max").and_then(|v| v.parse().ok()),
        uses: num(m, "uses") as u32,
        revoked: m.get("revoked").is_some_and(|v| v == "1"),
    })
}

impl RedisStore {
    pub(super) async fn put_invitation(&self, inv: &InvitationRecord) -> StoreResult<()> {
        let mut items: Vec<(&str, String)> = vec![
            ("event", inv.event_id.clone()),
            ("room", inv.room_id.clone()),
            ("host", inv.host_user.clone()),
            ("created", inv.created_at.to_string()),
            ("expires", inv.expires_at.to_string()),
            ("uses", inv.uses.to_string()),
            ("revoked", if inv.revoked { "1" } else { "0" }.into()),
        ];
        if let Some(m) = inv.max_uses {
            items.push(("max", m.to_string()));
        }
        // Two slots (the invitation's, the room's): two commands.
        let mut conn = self.conn.clone();
        let _: () = conn.hset_multiple(keys::invitation(&inv.id), &items).await.map_err(err)?;
        let _: bool = conn.set_nx(keys::party(&inv.room_id), &inv.host_user).await.map_err(err)?;
        Ok(())
    }

    pub(super) async fn get_invitation(&self, id: &str) -> StoreResult<Option<InvitationRecord>> {
        let v: Value = self.conn.clone().hgetall(keys::invitation(id)).await.map_err(err)?;
        Ok(invitation_from(id.to_owned(), &fields(&v)))
    }

    pub(super) async fn use_invitation_once(&self, id: &str, now: UnixMs) -> Result<InvitationRecord, InviteError> {
        let v: Value = self.eval(self.use_invitation.key(keys::invitation(id)).arg(now)).await?;
        match v {
            Value::Int(0) => Err(InviteError::NotFound),
            Value::Int(_) => Err(InviteError::Gone),
            v => invitation_from(id.to_owned(), &fields(&v)).ok_or(InviteError::Store("malformed invitation".into())),
        }
    }

    pub(super) async fn get_party_host(&self, room_id: &str) -> StoreResult<Option<String>> {
        self.conn.clone().get(keys::party(room_id)).await.map_err(err)
    }

    pub(super) async fn revoke_one(&self, id: &str) -> StoreResult<Option<InvitationRecord>> {
        let inv = self.get_invitation(id).await?;
        if inv.is_some() {
            let _: () = self.conn.clone().hset(keys::invitation(id), "revoked", "1").await.map_err(err)?;
        }
        Ok(inv)
    }

    /// Writes the records (latest wins) and sets their TTL: one pipeline per
    /// room (each room's keys are on its own slot), sent together.
    pub(super) async fn put_timelines(&self, batch: &[(String, TimelineChanged)]) -> StoreResult<()> {
        let writes = batch.iter().map(|(room, c)| {
            let key = keys::timeline(room);
            let mut pipe = redis::pipe();
            pipe.hset_multiple(
                &key,
                &[("epoch", c.timeline.epoch.to_string().into_bytes()), ("data", encode_change(c))],
            )
            .ignore();
            pipe.pexpire(&key, room_key_ttl_ms() as i64).ignore();
            async move { self.query::<()>(&pipe).await }
        });
        futures_util::future::try_join_all(writes).await.map(|_| ())
    }

    pub(super) async fn put_room_clock(&self, room_id: &str, s: &ClockSetting) -> StoreResult<()> {
        let json = serde_json::to_string(s).expect("settings serialize");
        let mut pipe = redis::pipe();
        let key = keys::clock(room_id);
        pipe.set(&key, json).ignore().pexpire(&key, room_key_ttl_ms() as i64).ignore();
        self.query(&pipe).await
    }

    pub(super) async fn get_room_clock(&self, room_id: &str) -> StoreResult<Option<ClockSetting>> {
        let json: Option<String> = self.conn.clone().get(keys::clock(room_id)).await.map_err(err)?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    pub(super) async fn get_timeline(&self, room_id: &str) -> StoreResult<Option<TimelineChanged>> {
        let data: Option<Vec<u8>> = self.conn.clone().hget(keys::timeline(room_id), "data").await.map_err(err)?;
        Ok(data.as_deref().and_then(decode_change))
    }
}
