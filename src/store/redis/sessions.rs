//! Sessions and devices in Redis (see `keys.rs` for the keys: a user's
//! sessions live on the user's session shard, so every script here touches
//! one slot and declares every key it touches).

use std::collections::{BTreeMap, HashMap};

use redis::{AsyncCommands, Value};

use super::{RedisStore, err, fields, keys, num, text};
use crate::store::{DeviceInfo, SessionRecord, StartError, StoreResult, UnixMs, group_devices};

/// Attempts of the start script when the user's sessions change between the
/// read and the script (another node starting one at the same moment).
const START_ATTEMPTS: usize = 16;

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

/// `{ {id, fields}, ... }` from the deleting script.
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
    group_devices(sessions.iter().map(|s| (s.device_id.clone(), s.room_id.clone(), s.last_seen)), except)
}

impl RedisStore {
    pub(super) async fn start_or_resume(
        &self,
        rec: SessionRecord,
        max_devices: u32,
        live_after: UnixMs,
    ) -> Result<SessionRecord, StartError> {
        let shard = keys::user_shard(&rec.user);
        let id = keys::session_id_for(&rec.user, &rec.session_id);
        let user_key = keys::user_sessions(&rec.user);
        let prefix = keys::session_prefix(&shard);
        for _ in 0..START_ATTEMPTS {
            let live: Vec<String> =
                self.conn.clone().zrangebyscore(&user_key, format!("({live_after}"), "+inf").await.map_err(err)?;
            let mut call = self.start.key(&user_key);
            call.key(keys::all_sessions(&shard)).key(format!("{prefix}{id}")).key(keys::ready(&shard));
            for other in &live {
                call.key(format!("{prefix}{other}"));
            }
            call.arg(&rec.user)
                .arg(&rec.device_id)
                .arg(&rec.room_id)
                .arg(live_after)
                .arg(max_devices)
                .arg(rec.last_seen)
                .arg(rec.created_at)
                .arg(&id)
                .arg(&prefix);
            let (ok, v): (u8, Value) = self.eval(&call).await?;
            match ok {
                3 => continue,
                2 => {
                    return Err(StartError::Store(
                        "Redis lost its data; the nodes are writing back their sessions (a few seconds)".into(),
                    ));
                }
                1 => {
                    let id = text(&v).unwrap_or_default();
                    return self
                        .get_session(&id)
                        .await?
                        .ok_or_else(|| StartError::Store("session vanished while starting".into()));
                }
                _ => {
                    let ids: Vec<String> = match &v {
                        Value::Array(items) => items.iter().filter_map(text).collect(),
                        _ => Vec::new(),
                    };
                    let others = self.sessions(&ids).await?;
                    return Err(StartError::DeviceLimit(devices_from(&others, Some(&rec.device_id))));
                }
            }
        }
        Err(StartError::Store("the user's sessions kept changing while starting one; try again".into()))
    }

    pub(super) async fn get_session(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        let Some(key) = keys::session(id) else { return Ok(None) };
        let v: Value = self.conn.clone().hgetall(key).await.map_err(err)?;
        Ok(session_from(id.to_owned(), &fields(&v)))
    }

    /// The sessions `ids` that exist (one pipeline per shard and chunk).
    async fn sessions(&self, ids: &[String]) -> StoreResult<Vec<SessionRecord>> {
        let mut by_shard: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
        for id in ids {
            if let Some(shard) = keys::session_shard(id) {
                by_shard.entry(shard).or_default().push(id);
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for ids in by_shard.values() {
            for chunk in ids.chunks(256) {
                let mut pipe = redis::pipe();
                for id in chunk {
                    pipe.hgetall(keys::session(id).expect("ids of a shard"));
                }
                let vals: Vec<Value> = self.query(&pipe).await?;
                out.extend(chunk.iter().zip(vals.iter()).filter_map(|(id, v)| session_from((*id).clone(), &fields(v))));
            }
        }
        Ok(out)
    }

    /// The ids in a shard's index, scored at most `before` (all with `None`).
    async fn shard_ids(&self, shard: &str, before: Option<UnixMs>) -> StoreResult<Vec<String>> {
        let max = before.map_or_else(|| "+inf".to_owned(), |b| b.to_string());
        self.conn.clone().zrangebyscore(keys::all_sessions(shard), "-inf", max).await.map_err(err)
    }

    pub(super) async fn every_session(&self) -> StoreResult<Vec<SessionRecord>> {
        let mut out = Vec::new();
        for shard in keys::session_shards() {
            let ids = self.shard_ids(&shard, None).await?;
            out.extend(self.sessions(&ids).await?);
        }
        Ok(out)
    }

    pub(super) async fn user_devices(&self, user: &str, live_after: UnixMs) -> StoreResult<Vec<DeviceInfo>> {
        let ids: Vec<String> = self
            .conn
            .clone()
            .zrangebyscore(keys::user_sessions(user), format!("({live_after}"), "+inf")
            .await
            .map_err(err)?;
        Ok(devices_from(&self.sessions(&ids).await?, None))
    }

    pub(super) async fn touch_one(
        &self,
        id: &str,
        now: UnixMs,
        position_ms: Option<u64>,
        buffering: bool,
    ) -> StoreResult<Option<SessionRecord>> {
        let (Some(key), Some(shard)) = (keys::session(id), keys::session_shard(id)) else { return Ok(None) };
        let user: Option<String> = self.conn.clone().hget(&key, "user").await.map_err(err)?;
        let Some(user) = user else { return Ok(None) };
        let _: i64 = self
            .eval(
                self.touch
                    .key(&key)
                    .key(keys::all_sessions(shard))
                    .key(keys::user_sessions(&user))
                    .arg(now)
                    .arg(position_ms.map(|p| p.to_string()).unwrap_or_default())
                    .arg(if buffering { "1" } else { "0" })
                    .arg(id)
                    .arg(&user),
            )
            .await?;
        self.get_session(id).await
    }

    /// Deletes sessions (ids of any shards): every one (`before` `None`) or
    /// those not seen since `before`, re-checked in the script. Returns
    /// what it deleted.
    pub(super) async fn delete_ids(&self, ids: &[String], before: Option<UnixMs>) -> StoreResult<Vec<SessionRecord>> {
        let mut by_shard: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
        for id in ids {
            if let Some(shard) = keys::session_shard(id) {
                by_shard.entry(shard).or_default().push(id);
            }
        }
        let mut out = Vec::new();
        for (shard, ids) in by_shard {
            let index = keys::all_sessions(shard);
            for chunk in ids.chunks(128) {
                let mut pipe = redis::pipe();
                for id in chunk {
                    pipe.hget(keys::session(id).expect("ids of a shard"), "user");
                }
                let users: Vec<Option<String>> = self.query(&pipe).await?;
                let mut call = self.delete.key(&index);
                call.arg(before.map(|b| b.to_string()).unwrap_or_default());
                for (id, user) in chunk.iter().zip(&users) {
                    call.key(keys::session(id).expect("ids of a shard"));
                    // A session already gone: its index entry goes (the index stands in for its user's).
                    call.key(user.as_deref().map_or_else(|| index.clone(), keys::user_sessions));
                    call.arg(*id);
                }
                out.extend(deleted(self.eval(&call).await?));
            }
        }
        Ok(out)
    }

    pub(super) async fn end_one(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        Ok(self.delete_ids(&[id.to_owned()], None).await?.pop())
    }

    pub(super) async fn expire_before(&self, before: UnixMs) -> StoreResult<Vec<SessionRecord>> {
        let mut out = Vec::new();
        for shard in keys::session_shards() {
            let ids = self.shard_ids(&shard, Some(before)).await?;
            if !ids.is_empty() {
                out.extend(self.delete_ids(&ids, Some(before)).await?);
            }
        }
        Ok(out)
    }

    pub(super) async fn remove_user_device(&self, user: &str, device: &str) -> StoreResult<Vec<SessionRecord>> {
        let ids: Vec<String> = self.conn.clone().zrange(keys::user_sessions(user), 0, -1).await.map_err(err)?;
        let ids: Vec<String> = self
            .sessions(&ids)
            .await?
            .into_iter()
            .filter(|s| s.device_id == device && s.user == user)
            .map(|s| s.session_id)
            .collect();
        self.delete_ids(&ids, None).await
    }
}
