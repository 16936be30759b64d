//! Sessions and devices in Redis (see the module docs for the keys).

use std::collections::HashMap;

use redis::{AsyncCommands, Script, Value};

use super::{ALL_SESSIONS, P, RedisStore, SESSION, err, fields, num, text};
use crate::store::{DeviceInfo, SessionRecord, StartError, StoreResult, UnixMs, group_devices};

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
    group_devices(sessions.iter().map(|s| (s.device_id.clone(), s.room_id.clone(), s.last_seen)), except)
}

fn user_key(user: &str) -> String {
    format!("{P}u:{user}")
}

impl RedisStore {
    pub(super) async fn start_or_resume(
        &self,
        rec: SessionRecord,
        max_devices: u32,
        live_after: UnixMs,
    ) -> Result<SessionRecord, StartError> {
        let (ok, v): (u8, Value) = self
            .eval(
                self.start
                    .key(user_key(&rec.user))
                    .key(ALL_SESSIONS)
                    .key(format!("{SESSION}{}", rec.session_id))
                    .key(super::READY)
                    .arg(&rec.user)
                    .arg(&rec.device_id)
                    .arg(&rec.room_id)
                    .arg(live_after)
                    .arg(max_devices)
                    .arg(rec.last_seen)
                    .arg(rec.created_at)
                    .arg(&rec.session_id)
                    .arg(SESSION),
            )
            .await?;
        if ok == 2 {
            return Err(StartError::Store(
                "Redis lost its data; the nodes are writing back their sessions (a few seconds)".into(),
            ));
        }
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

    pub(super) async fn get_session(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
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
            let vals: Vec<Value> = self.query(&pipe).await?;
            out.extend(chunk.iter().zip(vals.iter()).filter_map(|(id, v)| session_from(id.clone(), &fields(v))));
        }
        Ok(out)
    }

    pub(super) async fn every_session(&self) -> StoreResult<Vec<SessionRecord>> {
        let ids: Vec<String> = self.conn.clone().zrange(ALL_SESSIONS, 0, -1).await.map_err(err)?;
        self.sessions(&ids).await
    }

    pub(super) async fn user_devices(&self, user: &str, live_after: UnixMs) -> StoreResult<Vec<DeviceInfo>> {
        let ids: Vec<String> =
            self.conn.clone().zrangebyscore(user_key(user), format!("({live_after}"), "+inf").await.map_err(err)?;
        Ok(devices_from(&self.sessions(&ids).await?, None))
    }

    pub(super) async fn touch_one(
        &self,
        id: &str,
        now: UnixMs,
        position_ms: Option<u64>,
        buffering: bool,
    ) -> StoreResult<Option<SessionRecord>> {
        let _: i64 = self
            .eval(
                self.touch
                    .key(format!("{SESSION}{id}"))
                    .key(ALL_SESSIONS)
                    .arg(now)
                    .arg(position_ms.map(|p| p.to_string()).unwrap_or_default())
                    .arg(if buffering { "1" } else { "0" })
                    .arg(P)
                    .arg(id),
            )
            .await?;
        self.get_session(id).await
    }

    /// Runs one of the deleting scripts (`lua/delete_sessions.lua`) with
    /// `args` after the common ones; returns the sessions it deleted.
    pub(super) async fn delete_with(&self, script: &Script, args: &[String]) -> StoreResult<Vec<SessionRecord>> {
        let mut call = script.key(ALL_SESSIONS);
        call.arg(SESSION).arg(P);
        for a in args {
            call.arg(a);
        }
        Ok(deleted(self.eval(&call).await?))
    }
}
