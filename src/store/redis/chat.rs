//! Rooms' chat in Redis: a stream per room (`lockstep:chatlog:{room}`, entry
//! ids `0-{message id}`, the newest [`CHAT_KEPT`] kept), its id counter
//! (`chatseq`) and muted users (`chatmute`), expiring with the room's other
//! keys. Every operation runs in one script that also publishes it on the
//! room's chat channel (`lockstep:chat:{room}`; see `lua/chat.lua`), so the
//! nodes serving a room deliver its chat in one order. A post never gets an
//! id below the room's next (a Redis that lost its counter does not hand out
//! ids again), and after Redis lost its data the nodes write back what their
//! rooms hold (`lua/chat_restore.lua`).

use redis::Value;

use super::{RedisStore, err, keys, text};
use crate::room::{ChatLoad, ChatOp, ChatRecord};
use crate::store::{CHAT_KEPT, StoreResult, room_key_ttl_ms};

/// A chat channel's payload: `<id>\n<operation>`, the id set in a post.
pub(crate) fn decode_chat(payload: &[u8]) -> Option<ChatOp> {
    let s = std::str::from_utf8(payload).ok()?;
    let (id, json) = s.split_once('\n')?;
    let mut op: ChatOp = serde_json::from_str(json).ok()?;
    if let ChatOp::Post(r) = &mut op {
        r.id = id.parse().ok().filter(|&id| id > 0)?;
    }
    Some(op)
}

/// Stream entries (`[[id, [field, value, …]], …]`) as records, in order.
fn records(v: &Value) -> Vec<ChatRecord> {
    let Value::Array(entries) = v else { return Vec::new() };
    entries
        .iter()
        .filter_map(|e| {
            let Value::Array(e) = e else { return None };
            let id: u64 = text(e.first()?)?.strip_prefix("0-")?.parse().ok()?;
            let Value::Array(fields) = e.get(1)? else { return None };
            let json =
                fields.chunks_exact(2).find(|kv| text(&kv[0]).as_deref() == Some("r")).and_then(|kv| text(&kv[1]))?;
            match serde_json::from_str(&json).ok()? {
                ChatOp::Post(mut r) => {
                    r.id = id;
                    r.request_id = 0;
                    Some(r)
                }
                _ => None,
            }
        })
        .collect()
}

impl RedisStore {
    /// Applies and publishes one operation; returns it with a post's id.
    pub(crate) async fn chat_op(&self, room: &str, op: ChatOp) -> StoreResult<ChatOp> {
        // A post's id is the lowest it may get; it is stored (and published) without one.
        let (op, floor) = match op {
            ChatOp::Post(r) => (ChatOp::Post(ChatRecord { id: 0, ..r }), r.id.max(1)),
            op => (op, 0),
        };
        let json = serde_json::to_string(&op).map_err(err)?;
        let mut inv = self.chat.prepare_invoke();
        let [log, seq, mute] = keys::chat(room);
        inv.key(log).key(seq).key(mute).key(keys::chat_channel(room));
        inv.arg(self.conn.publish());
        match &op {
            ChatOp::Post(_) => inv.arg("post").arg(&json).arg(room_key_ttl_ms()).arg(CHAT_KEPT).arg(floor),
            ChatOp::Delete { id, .. } => inv.arg("delete").arg(&json).arg(room_key_ttl_ms()).arg(CHAT_KEPT).arg(*id),
            ChatOp::Mute { user, muted, .. } => {
                inv.arg("mute").arg(&json).arg(room_key_ttl_ms()).arg(CHAT_KEPT).arg(user).arg(if *muted {
                    "1"
                } else {
                    "0"
                })
            }
        };
        let id: u64 = inv.invoke_async(&mut self.conn.clone()).await.map_err(err)?;
        let mut op = op;
        if let ChatOp::Post(r) = &mut op {
            r.id = id;
        }
        Ok(op)
    }

    pub(crate) async fn chat_page(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<ChatRecord>> {
        let end = before.map_or_else(|| "+".to_owned(), |b| format!("(0-{b}"));
        let v: Value = redis::cmd("XREVRANGE")
            .arg(&keys::chat(room)[0])
            .arg(end)
            .arg("-")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(err)?;
        let mut rows = records(&v);
        rows.reverse();
        Ok(rows)
    }

    /// Writes `ours` (what a room on this node holds) back into a room's chat
    /// that Redis lost: the id counter up to its last id, its muted users, its
    /// messages merged with any posted since. Returns how many messages were
    /// written back.
    pub(crate) async fn chat_restore(&self, room: &str, ours: &ChatLoad) -> StoreResult<u64> {
        let mut inv = self.chat_restore.prepare_invoke();
        let [log, seq, mute] = keys::chat(room);
        inv.key(log).key(seq).key(mute);
        inv.arg(room_key_ttl_ms()).arg(CHAT_KEPT).arg(ours.last_id).arg(ours.muted.len());
        for user in &ours.muted {
            inv.arg(user);
        }
        for r in ours.history.iter().rev().take(CHAT_KEPT).rev() {
            let json =
                serde_json::to_string(&ChatOp::Post(ChatRecord { id: 0, request_id: 0, ..r.clone() })).map_err(err)?;
            inv.arg(r.id).arg(json);
        }
        inv.invoke_async(&mut self.conn.clone()).await.map_err(err)
    }

    pub(crate) async fn chat_load(&self, room: &str, n: usize) -> StoreResult<ChatLoad> {
        let history = if n == 0 { Vec::new() } else { self.chat_page(room, None, n).await? };
        let [_, seq, mute] = keys::chat(room);
        let (last_id, muted): (Option<u64>, Vec<String>) =
            redis::pipe().get(seq).smembers(mute).query_async(&mut self.conn.clone()).await.map_err(err)?;
        Ok(ChatLoad { history, last_id: last_id.unwrap_or(0), muted })
    }
}
