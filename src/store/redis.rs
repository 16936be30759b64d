//! The shared store of several nodes: Redis (`--redis-url`).
//!
//! Layout (every key under `lockstep:`):
//! - `s:{id}`: a session, a hash (`user`, `device`, `room`, `created`, `seen`,
//!   `pos`, `buf`); no TTL, expiry is by `seen` like the embedded store;
//! - `u:{user}`: the user's sessions, a sorted set scored by `seen`;
//! - `sessions`: every session, a sorted set scored by `seen` (expiry scans);
//! - `inv:{id}`: an invitation, a hash; `party:{room}`: the party's host;
//! - `tl:{room}`: the room's timeline record (`epoch`, `data` = an encoded
//!   `TimelineChanged`), changed by compare-and-set (see `crate::cluster`).
//!
//! Check-then-write methods (device limits, invitation uses, expiry) are Lua
//! scripts, so they are atomic across nodes.

use std::collections::HashMap;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use lockstep_protocol::{ChangeReason, ServerMsg, Timeline, TimelineChanged, decode_server, encode_server};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script, Value};

use super::{
    DeviceInfo, InvitationRecord, InviteError, SessionRecord, StartError, Store, StoreError, StoreResult, UnixMs,
};

const P: &str = "lockstep:";
const SESSION: &str = "lockstep:s:";

/// The key of a room's timeline record.
pub fn timeline_key(room: &str) -> String {
    format!("{P}tl:{room}")
}

/// Encodes a timeline change for the record and the room channel.
pub fn encode_change(c: &TimelineChanged) -> Vec<u8> {
    encode_server(&ServerMsg::TimelineChanged(c.clone()))
}

/// Decodes a record or channel payload.
pub fn decode_change(bytes: &[u8]) -> Option<TimelineChanged> {
    match decode_server(bytes) {
        Ok(ServerMsg::TimelineChanged(c)) => Some(c),
        _ => None,
    }
}

/// Start (or resume) a session unless the user has `max` other live devices.
const START: &str = include_str!("lua/start.lua");

/// Record activity of a session (ARGV: now, position or '', buffering).
const TOUCH: &str = include_str!("lua/touch.lua");

/// Record activity of a user's device in a room.
const TOUCH_DEVICE: &str = include_str!("lua/touch_device.lua");

/// Delete sessions by id; returns `{id, fields...}` of each one deleted.
/// ARGV[1] is the session key prefix, ARGV[2] the key prefix, the rest ids.
const DELETE: &str = include_str!("lua/delete.lua");

/// Delete sessions not seen since ARGV[3] (same result as DELETE).
const EXPIRE: &str = include_str!("lua/expire.lua");

/// Delete a user's sessions on a device (same result as DELETE).
const REMOVE_DEVICE: &str = include_str!("lua/remove_device.lua");

/// Use an invitation once: 0 not found, 1 gone, else its fields after use.
const USE_INVITATION: &str = include_str!("lua/use_invitation.lua");

/// See the module docs. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    start: Script,
    touch: Script,
    touch_device: Script,
    delete: Script,
    expire: Script,
    remove_device: Script,
    use_invitation: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A hash as a flat array (from Lua) or a map (RESP3).
fn fields(v: &Value) -> HashMap<String, String> {
    match v {
        Value::Array(items) => items.chunks_exact(2).filter_map(|kv| Some((text(&kv[0])?, text(&kv[1])?))).collect(),
        Value::Map(pairs) => pairs.iter().filter_map(|(k, v)| Some((text(k)?, text(v)?))).collect(),
        _ => HashMap::new(),
    }
}

fn num(m: &HashMap<String, String>, k: &str) -> u64 {
    m.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn session_from(id: String, m: &HashMap<String, String>) -> Option<SessionRecord> {
    Some(SessionRecord {
        session_id: id,
        user: m.get("user")?.clone(),
        device_id: m.get("device")?.clone(),
        room_id: m.get("room")?.clone(),
        created_at: num(m, "created"),
        last_seen: num(m, "seen"),
        position_ms: m.get("pos").and_then(|p| p.parse().ok()),
        buffering: m.get("buf").is_some_and(|b| b == "1"),
    })
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

/// `{ {id, fields}, ... }` from the deleting scripts.
fn deleted(v: Value) -> Vec<SessionRecord> {
    let Value::Array(items) = v else { return Vec::new() };
    items
        .iter()
        .filter_map(|item| match item {
            Value::Array(pair) if pair.len() == 2 => session_from(text(&pair[0])?, &fields(&pair[1])),
            _ => None,
        })
        .collect()
}

fn devices_from(sessions: &[SessionRecord], except: Option<&str>) -> Vec<DeviceInfo> {
    let mut by: std::collections::BTreeMap<&str, DeviceInfo> = std::collections::BTreeMap::new();
    for s in sessions.iter().filter(|s| Some(s.device_id.as_str()) != except) {
        let d = by.entry(&s.device_id).or_insert_with(|| DeviceInfo {
            device_id: s.device_id.clone(),
            event_ids: Vec::new(),
            last_seen: 0,
        });
        if !d.event_ids.contains(&s.room_id) {
            d.event_ids.push(s.room_id.clone());
        }
        d.last_seen = d.last_seen.max(s.last_seen);
    }
    by.into_values().collect()
}

impl RedisStore {
    /// A store over a connection manager (shared with `crate::cluster`).
    pub fn new(conn: ConnectionManager) -> Self {
        RedisStore {
            conn,
            start: Script::new(START),
            touch: Script::new(TOUCH),
            touch_device: Script::new(TOUCH_DEVICE),
            delete: Script::new(DELETE),
            expire: Script::new(EXPIRE),
            remove_device: Script::new(REMOVE_DEVICE),
            use_invitation: Script::new(USE_INVITATION),
        }
    }

    async fn get_session(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        let v: Value = self.conn.clone().hgetall(format!("{SESSION}{id}")).await.map_err(err)?;
        Ok(session_from(id.to_owned(), &fields(&v)))
    }

    async fn sessions(&self, ids: &[String]) -> StoreResult<Vec<SessionRecord>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(256) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.hgetall(format!("{SESSION}{id}"));
            }
            let vals: Vec<Value> = pipe.query_async(&mut self.conn.clone()).await.map_err(err)?;
            out.extend(chunk.iter().zip(vals.iter()).filter_map(|(id, v)| session_from(id.clone(), &fields(v))));
        }
        Ok(out)
    }

    async fn user_sessions(&self, user: &str, live_after: UnixMs) -> StoreResult<Vec<SessionRecord>> {
        let ids: Vec<String> = self
            .conn
            .clone()
            .zrangebyscore(format!("{P}u:{user}"), format!("({live_after}"), "+inf")
            .await
            .map_err(err)?;
        self.sessions(&ids).await
    }

    async fn get_invitation(&self, id: &str) -> StoreResult<Option<InvitationRecord>> {
        let v: Value = self.conn.clone().hgetall(format!("{P}inv:{id}")).await.map_err(err)?;
        Ok(invitation_from(id.to_owned(), &fields(&v)))
    }
}

impl Store for RedisStore {
    fn start_session(
        &self,
        rec: SessionRecord,
        max_devices: u32,
        live_after: UnixMs,
    ) -> BoxFuture<'_, Result<SessionRecord, StartError>> {
        async move {
            let (ok, v): (u8, Value) = self
                .start
                .key(format!("{P}u:{}", rec.user))
                .key(format!("{P}sessions"))
                .key(format!("{SESSION}{}", rec.session_id))
                .arg(&rec.user)
                .arg(&rec.device_id)
                .arg(&rec.room_id)
                .arg(live_after)
                .arg(max_devices)
                .arg(rec.last_seen)
                .arg(rec.created_at)
                .arg(&rec.session_id)
                .arg(SESSION)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(|e| StartError::Store(e.to_string()))?;
            if ok == 1 {
                let id = text(&v).unwrap_or_default();
                return self
                    .get_session(&id)
                    .await?
                    .ok_or_else(|| StartError::Store("session vanished while starting".into()));
            }
            let ids: Vec<String> = match &v {
                Value::Array(items) => items.iter().filter_map(text).collect(),
                _ => Vec::new(),
            };
            let others = self.sessions(&ids).await?;
            Err(StartError::DeviceLimit(devices_from(&others, Some(&rec.device_id))))
        }
        .boxed()
    }

    fn session(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<SessionRecord>>> {
        let id = id.to_owned();
        async move { self.get_session(&id).await }.boxed()
    }

    fn touch_session(
        &self,
        id: &str,
        now: UnixMs,
        position_ms: Option<u64>,
        buffering: bool,
    ) -> BoxFuture<'_, StoreResult<Option<SessionRecord>>> {
        let id = id.to_owned();
        async move {
            let _: i64 = self
                .touch
                .key(format!("{SESSION}{id}"))
                .key(format!("{P}sessions"))
                .arg(now)
                .arg(position_ms.map(|p| p.to_string()).unwrap_or_default())
                .arg(if buffering { "1" } else { "0" })
                .arg(P)
                .arg(&id)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(err)?;
            self.get_session(&id).await
        }
        .boxed()
    }

    fn touch_device(&self, user: &str, device_id: &str, room_id: &str, now: UnixMs) -> BoxFuture<'_, StoreResult<()>> {
        let (user, device_id, room_id) = (user.to_owned(), device_id.to_owned(), room_id.to_owned());
        async move {
            let _: i64 = self
                .touch_device
                .key(format!("{P}u:{user}"))
                .key(format!("{P}sessions"))
                .arg(device_id)
                .arg(room_id)
                .arg(now)
                .arg(SESSION)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(err)?;
            Ok(())
        }
        .boxed()
    }

    fn end_session(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<SessionRecord>>> {
        let id = id.to_owned();
        async move {
            let v: Value = self
                .delete
                .key(format!("{P}sessions"))
                .arg(SESSION)
                .arg(P)
                .arg(&id)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(err)?;
            Ok(deleted(v).pop())
        }
        .boxed()
    }

    fn expire_sessions(&self, before: UnixMs) -> BoxFuture<'_, StoreResult<Vec<SessionRecord>>> {
        async move {
            let v: Value = self
                .expire
                .key(format!("{P}sessions"))
                .arg(SESSION)
                .arg(P)
                .arg(before)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(err)?;
            Ok(deleted(v))
        }
        .boxed()
    }

    fn all_sessions(&self) -> BoxFuture<'_, StoreResult<Vec<SessionRecord>>> {
        async move {
            let ids: Vec<String> = self.conn.clone().zrange(format!("{P}sessions"), 0, -1).await.map_err(err)?;
            self.sessions(&ids).await
        }
        .boxed()
    }

    fn devices(&self, user: &str, live_after: UnixMs) -> BoxFuture<'_, StoreResult<Vec<DeviceInfo>>> {
        let user = user.to_owned();
        async move { Ok(devices_from(&self.user_sessions(&user, live_after).await?, None)) }.boxed()
    }

    fn remove_device(&self, user: &str, device_id: &str) -> BoxFuture<'_, StoreResult<Vec<SessionRecord>>> {
        let (user, device_id) = (user.to_owned(), device_id.to_owned());
        async move {
            let v: Value = self
                .remove_device
                .key(format!("{P}u:{user}"))
                .key(format!("{P}sessions"))
                .arg(SESSION)
                .arg(device_id)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(err)?;
            Ok(deleted(v))
        }
        .boxed()
    }

    fn create_invitation(&self, inv: InvitationRecord) -> BoxFuture<'_, StoreResult<()>> {
        async move {
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
            redis::pipe()
                .hset_multiple(format!("{P}inv:{}", inv.id), &items)
                .ignore()
                .set_nx(format!("{P}party:{}", inv.room_id), &inv.host_user)
                .ignore()
                .query_async::<()>(&mut self.conn.clone())
                .await
                .map_err(err)
        }
        .boxed()
    }

    fn invitation(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<InvitationRecord>>> {
        let id = id.to_owned();
        async move { self.get_invitation(&id).await }.boxed()
    }

    fn use_invitation(&self, id: &str, now: UnixMs) -> BoxFuture<'_, Result<InvitationRecord, InviteError>> {
        let id = id.to_owned();
        async move {
            let v: Value = self
                .use_invitation
                .key(format!("{P}inv:{id}"))
                .arg(now)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(|e| InviteError::Store(e.to_string()))?;
            match v {
                Value::Int(0) => Err(InviteError::NotFound),
                Value::Int(_) => Err(InviteError::Gone),
                v => invitation_from(id, &fields(&v)).ok_or(InviteError::Store("malformed invitation".into())),
            }
        }
        .boxed()
    }

    fn party_host(&self, room_id: &str) -> BoxFuture<'_, StoreResult<Option<String>>> {
        let key = format!("{P}party:{room_id}");
        async move { self.conn.clone().get(key).await.map_err(err) }.boxed()
    }

    fn revoke_invitation(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<InvitationRecord>>> {
        let id = id.to_owned();
        async move {
            let inv = self.get_invitation(&id).await?;
            if inv.is_some() {
                let _: () = self.conn.clone().hset(format!("{P}inv:{id}"), "revoked", "1").await.map_err(err)?;
            }
            Ok(inv)
        }
        .boxed()
    }

    fn save_timelines(&self, batch: Vec<(String, Timeline)>) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            let mut pipe = redis::pipe();
            for (room, t) in &batch {
                let c =
                    TimelineChanged { timeline: *t, effective_at_us: t.anchor_us, by: 0, reason: ChangeReason::Seek };
                pipe.hset_multiple(
                    timeline_key(room),
                    &[("epoch", t.epoch.to_string().into_bytes()), ("data", encode_change(&c))],
                )
                .ignore();
            }
            pipe.query_async::<()>(&mut self.conn.clone()).await.map_err(err)
        }
        .boxed()
    }

    fn timeline(&self, room_id: &str) -> BoxFuture<'_, StoreResult<Option<Timeline>>> {
        let key = timeline_key(room_id);
        async move {
            let data: Option<Vec<u8>> = self.conn.clone().hget(key, "data").await.map_err(err)?;
            Ok(data.as_deref().and_then(decode_change).map(|c| c.timeline))
        }
        .boxed()
    }
}
