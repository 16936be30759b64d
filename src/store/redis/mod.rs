//! The shared store of several nodes: Redis (`--redis-url`).
//!
//! Layout ([`keys`] names every key, hash-tagged for Redis Cluster):
//! - a session, a hash (`user`, `device`, `room`, `created`, `seen`, `pos`,
//!   `buf`); no TTL, expiry is by `seen` like the embedded store; the user's
//!   sessions and the shard's every session, sorted sets scored by `seen`;
//! - an invitation, a hash; a party's host;
//! - a room's timeline record (`epoch`, `data` = an encoded
//!   `TimelineChanged`), changed by compare-and-set (see `crate::cluster`);
//!   it expires [`super::ROOM_KEY_TTL`] after its last write or refresh;
//!   its clock setting and media state (JSON), expiring likewise.
//!
//! Check-then-write methods (device limits, invitation uses, expiry) are Lua
//! scripts (`lua/*.lua`), so they are atomic across nodes; each touches the
//! keys of one slot, all declared.
//!
//! [`sessions`] holds sessions and devices, [`rooms`] invitations and
//! timelines; the [`Store`] implementation here only forwards to them.

mod chat;
pub(crate) mod conn;
pub(crate) mod keys;
mod rooms;
mod sessions;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use lockstep_protocol::TimelineChanged;
use redis::{FromRedisValue, Value};

pub(crate) use conn::{Conn, Lua, LuaCall};

use crate::room::{ChatLoad, ChatOp, ChatRecord, ClockSetting, MediaState};

pub(crate) use chat::decode_chat;
pub(crate) use rooms::{decode_change, encode_change};

use super::{
    DeviceInfo, InvitationRecord, InviteError, SessionRecord, StartError, Store, StoreError, StoreResult, UnixMs,
};

/// Start (or resume) a session unless the user has `max` other live devices.
const START: &str = include_str!("lua/start.lua");

/// Record activity of a session (ARGV: now, position or '', buffering, id, user).
const TOUCH: &str = include_str!("lua/touch.lua");

/// Delete sessions of one shard (all named, or those not seen since a time).
const DELETE: &str = include_str!("lua/delete_sessions.lua");

/// Apply and publish a room's chat operation (see `chat.rs`).
const CHAT: &str = include_str!("lua/chat.lua");

/// Write a room's chat back after Redis lost its data (see `chat.rs`).
const CHAT_RESTORE: &str = include_str!("lua/chat_restore.lua");

/// Use an invitation once: 0 not found, 1 gone, else its fields after use.
const USE_INVITATION: &str = include_str!("lua/use_invitation.lua");

/// See the module docs. Cheap to clone.
#[derive(Clone)]
pub(crate) struct RedisStore {
    conn: Conn,
    start: Lua,
    touch: Lua,
    delete: Lua,
    use_invitation: Lua,
    chat: Lua,
    chat_restore: Lua,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// A reply's text (a bulk or simple string, or a number), as other modules read replies.
pub(crate) fn value_text(v: &Value) -> Option<String> {
    text(v)
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

impl RedisStore {
    /// A store over a connection (shared with `crate::cluster`).
    pub(crate) fn new(conn: Conn) -> Self {
        RedisStore {
            conn,
            start: Lua::new(START),
            touch: Lua::new(TOUCH),
            delete: Lua::new(DELETE),
            use_invitation: Lua::new(USE_INVITATION),
            chat: Lua::new(CHAT),
            chat_restore: Lua::new(CHAT_RESTORE),
        }
    }

    /// Runs a script (loading it first if Redis does not know it yet).
    async fn eval<T: FromRedisValue>(&self, script: &LuaCall<'_>) -> StoreResult<T> {
        script.invoke_async(&mut self.conn.clone()).await.map_err(err)
    }

    /// Runs a command or pipeline.
    async fn query<T: FromRedisValue>(&self, cmd: &redis::Pipeline) -> StoreResult<T> {
        cmd.query_async(&mut self.conn.clone()).await.map_err(err)
    }
}

impl Store for RedisStore {
    fn start_session(
        &self,
        rec: SessionRecord,
        max_devices: u32,
        live_after: UnixMs,
    ) -> BoxFuture<'_, Result<SessionRecord, StartError>> {
        async move { self.start_or_resume(rec, max_devices, live_after).await }.boxed()
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
        async move { self.touch_one(&id, now, position_ms, buffering).await }.boxed()
    }

    fn end_session(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<SessionRecord>>> {
        let id = id.to_owned();
        async move { self.end_one(&id).await }.boxed()
    }

    fn expire_sessions(&self, before: UnixMs) -> BoxFuture<'_, StoreResult<Vec<SessionRecord>>> {
        async move { self.expire_before(before).await }.boxed()
    }

    fn all_sessions(&self) -> BoxFuture<'_, StoreResult<Vec<SessionRecord>>> {
        async move { self.every_session().await }.boxed()
    }

    fn devices(&self, user: &str, live_after: UnixMs) -> BoxFuture<'_, StoreResult<Vec<DeviceInfo>>> {
        let user = user.to_owned();
        async move { self.user_devices(&user, live_after).await }.boxed()
    }

    fn remove_device(&self, user: &str, device_id: &str) -> BoxFuture<'_, StoreResult<Vec<SessionRecord>>> {
        let (user, device_id) = (user.to_owned(), device_id.to_owned());
        async move { self.remove_user_device(&user, &device_id).await }.boxed()
    }

    fn create_invitation(&self, inv: InvitationRecord) -> BoxFuture<'_, StoreResult<()>> {
        async move { self.put_invitation(&inv).await }.boxed()
    }

    fn invitation(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<InvitationRecord>>> {
        let id = id.to_owned();
        async move { self.get_invitation(&id).await }.boxed()
    }

    fn use_invitation(&self, id: &str, now: UnixMs) -> BoxFuture<'_, Result<InvitationRecord, InviteError>> {
        let id = id.to_owned();
        async move { self.use_invitation_once(&id, now).await }.boxed()
    }

    fn party_host(&self, room_id: &str) -> BoxFuture<'_, StoreResult<Option<String>>> {
        let room_id = room_id.to_owned();
        async move { self.get_party_host(&room_id).await }.boxed()
    }

    fn revoke_invitation(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<InvitationRecord>>> {
        let id = id.to_owned();
        async move { self.revoke_one(&id).await }.boxed()
    }

    fn save_timelines(&self, batch: Vec<(String, TimelineChanged)>) -> BoxFuture<'_, StoreResult<()>> {
        async move { self.put_timelines(&batch).await }.boxed()
    }

    fn timeline(&self, room_id: &str) -> BoxFuture<'_, StoreResult<Option<TimelineChanged>>> {
        let room_id = room_id.to_owned();
        async move { self.get_timeline(&room_id).await }.boxed()
    }

    /// Nothing to do: timeline records expire by their TTL.
    fn expire_timelines(&self, _before: UnixMs) -> BoxFuture<'_, StoreResult<usize>> {
        async { Ok(0) }.boxed()
    }

    fn save_room_clock(&self, room_id: &str, setting: ClockSetting) -> BoxFuture<'_, StoreResult<()>> {
        let room_id = room_id.to_owned();
        async move { self.put_room_clock(&room_id, &setting).await }.boxed()
    }

    fn room_clock(&self, room_id: &str) -> BoxFuture<'_, StoreResult<Option<ClockSetting>>> {
        let room_id = room_id.to_owned();
        async move { self.get_room_clock(&room_id).await }.boxed()
    }

    fn save_room_media(&self, room_id: &str, state: &MediaState) -> BoxFuture<'_, StoreResult<()>> {
        let (key, json) = (keys::media(room_id), serde_json::to_string(state).expect("media states serialize"));
        async move {
            let mut pipe = redis::pipe();
            pipe.set(&key, json).ignore().pexpire(&key, super::room_key_ttl_ms() as i64).ignore();
            self.query(&pipe).await
        }
        .boxed()
    }

    fn room_media(&self, room_id: &str) -> BoxFuture<'_, StoreResult<Option<MediaState>>> {
        let key = keys::media(room_id);
        async move {
            let json: Option<String> = redis::AsyncCommands::get(&mut self.conn.clone(), key).await.map_err(err)?;
            Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
        }
        .boxed()
    }

    fn save_chat(&self, room_id: &str, ops: Vec<ChatOp>) -> BoxFuture<'_, StoreResult<()>> {
        let room_id = room_id.to_owned();
        async move {
            for op in ops {
                self.chat_op(&room_id, op).await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn chat_load(&self, room_id: &str, n: usize) -> BoxFuture<'_, StoreResult<ChatLoad>> {
        let room_id = room_id.to_owned();
        async move { RedisStore::chat_load(self, &room_id, n).await }.boxed()
    }

    fn chat_page(
        &self,
        room_id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<ChatRecord>>> {
        let room_id = room_id.to_owned();
        async move { RedisStore::chat_page(self, &room_id, before, limit).await }.boxed()
    }
}
