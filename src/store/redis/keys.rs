//! Every Redis key and channel Lockstep uses, in one place, laid out for
//! Redis Cluster as well as a single server.
//!
//! Redis Cluster puts a key in one of 16,384 slots by its hash tag (the part
//! between the first `{` and the next `}`), and a script or a pipeline may
//! only touch keys of one slot. So:
//!
//! - **A room's keys and channels** carry the room id as their tag:
//!   `lockstep:tl:{room}`, `lockstep:count:{room}`,
//!   `lockstep:members:{room}:{node}`, `lockstep:room:{room}` (its timeline
//!   channel), and so on below. Every script of a room runs on the shard that
//!   owns the room, and its sharded channels (`SPUBLISH`) stay there too.
//! - **A user's sessions** carry the tag of one of 256 session shards,
//!   `{u00}` … `{uff}`, chosen by a hash of the user: the user's sessions
//!   (`lockstep:s:{uXX}:{session}`), their index by last activity
//!   (`lockstep:u:{uXX}:{user}`), the shard's index of every session
//!   (`lockstep:sessions:{uXX}`) and its ready marker
//!   (`lockstep:ready:{uXX}`). A session id starts with its shard
//!   (`3f.…`), so a session is found from its id alone.
//! - **Global keys** are read and written alone: node presence
//!   (`lockstep:node:{node}`), invitations (`lockstep:inv:{id}`), and the
//!   revocation channel (`lockstep:revoke`, classic pub/sub: every node
//!   hears it).
//!
//! The braces above are literal: the key of room `ev1`'s timeline is
//! `lockstep:tl:{ev1}`.

/// The prefix of every key.
pub(crate) const P: &str = "lockstep:";

/// The key of kind `kind` of room `room` (`lockstep:{kind}:{room}` with the
/// braces literal: the room's hash tag).
pub(crate) fn room(kind: &str, room: &str) -> String {
    format!("{P}{kind}:{{{room}}}")
}

/// A room's timeline record (hash: `epoch`, `data`), changed by
/// compare-and-set (see `crate::cluster`).
pub(crate) fn timeline(r: &str) -> String {
    room("tl", r)
}

/// A room's clock setting (JSON).
pub(crate) fn clock(r: &str) -> String {
    room("clock", r)
}

/// A room's media item and playlist (JSON).
pub(crate) fn media(r: &str) -> String {
    room("media", r)
}

/// A room's viewer counts per node (hash: node → `count expires-at-ms`).
pub(crate) fn counts(r: &str) -> String {
    room("count", r)
}

/// One node's members of a room (hash: member id → JSON).
pub(crate) fn members(r: &str, node: &str) -> String {
    format!("{}:{node}", room("members", r))
}

/// The nodes that wrote members of a room (set).
pub(crate) fn room_nodes(r: &str) -> String {
    room("rnodes", r)
}

/// A room's control policy (JSON).
pub(crate) fn policy(r: &str) -> String {
    room("policy", r)
}

/// The counter that hands out a room's blocks of member ids.
pub(crate) fn id_block(r: &str) -> String {
    room("mblock", r)
}

/// A live room's members' latency needs per node (hash).
pub(crate) fn needs(r: &str) -> String {
    room("needs", r)
}

/// A room's members' round trips per node (hash: node -> "rtts expires-at-ms").
pub(crate) fn reach(r: &str) -> String {
    room("reach", r)
}

/// A room's chat: its stream, id counter and muted users.
pub(crate) fn chat(r: &str) -> [String; 3] {
    [room("chatlog", r), room("chatseq", r), room("chatmute", r)]
}

/// A watch party's host.
pub(crate) fn party(r: &str) -> String {
    room("party", r)
}

/// The channel of a room's committed timeline changes.
pub(crate) fn timeline_channel(r: &str) -> String {
    room("room", r)
}

/// The channel of a room's membership and control changes.
pub(crate) fn presence_channel(r: &str) -> String {
    room("presence", r)
}

/// The channel of a room's chat operations.
/// A room's members' drifts per node (`crate::cluster`'s heartbeat), for the
/// room's sync quality on every node.
pub(crate) fn sync_quality(r: &str) -> String {
    room("syncq", r)
}

pub(crate) fn chat_channel(r: &str) -> String {
    room("chat", r)
}

/// What a room channel carries, and the room, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channel<'a> {
    Timeline(&'a str),
    Presence(&'a str),
    Chat(&'a str),
}

impl<'a> Channel<'a> {
    /// Parses a room channel's name (`None` for anything else).
    pub(crate) fn parse(name: &'a str) -> Option<Channel<'a>> {
        let rest = name.strip_prefix(P)?;
        let (kind, tagged) = rest.split_once(':')?;
        let room = tagged.strip_prefix('{')?.strip_suffix('}')?;
        match kind {
            "room" => Some(Channel::Timeline(room)),
            "presence" => Some(Channel::Presence(room)),
            "chat" => Some(Channel::Chat(room)),
            _ => None,
        }
    }

    /// The room it belongs to.
    pub(crate) fn room(self) -> &'a str {
        match self {
            Channel::Timeline(r) | Channel::Presence(r) | Channel::Chat(r) => r,
        }
    }
}

/// A node's presence (expires unless refreshed by its heartbeat).
pub(crate) fn node(node: &str) -> String {
    format!("{P}node:{node}")
}

/// An invitation (hash).
pub(crate) fn invitation(id: &str) -> String {
    format!("{P}inv:{id}")
}

/// Device revocations (classic pub/sub, heard by every node).
pub(crate) const REVOKE: &str = "lockstep:revoke";

/// Number of session shards.
pub(crate) const SESSION_SHARDS: usize = 256;

/// The session shard of a user: FNV-1a of its name, folded to a byte, as
/// two hex digits (the same on every node and every version).
pub(crate) fn user_shard(user: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in user.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{:02x}", (h ^ (h >> 8) ^ (h >> 16) ^ (h >> 24)) as u8)
}

/// Every session shard, `00` to `ff`.
pub(crate) fn session_shards() -> impl Iterator<Item = String> {
    (0..SESSION_SHARDS).map(|i| format!("{i:02x}"))
}

/// The shard a session id names (`3f.…`), if it names one.
pub(crate) fn session_shard(id: &str) -> Option<&str> {
    let (shard, rest) = id.split_once('.')?;
    (shard.len() == 2 && shard.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) && !rest.is_empty())
        .then_some(shard)
}

/// A session id of `user`'s shard: `id` itself when it already names that
/// shard, else `id` prefixed with it.
pub(crate) fn session_id_for(user: &str, id: &str) -> String {
    let shard = user_shard(user);
    if session_shard(id) == Some(shard.as_str()) { id.to_owned() } else { format!("{shard}.{id}") }
}

/// A session's hash (`None` for an id that names no shard: not a session).
pub(crate) fn session(id: &str) -> Option<String> {
    Some(format!("{P}s:{{u{}}}:{id}", session_shard(id)?))
}

/// The prefix of the session hashes of shard `shard` (a script appends ids).
pub(crate) fn session_prefix(shard: &str) -> String {
    format!("{P}s:{{u{shard}}}:")
}

/// A user's sessions, scored by last activity (sorted set).
pub(crate) fn user_sessions(user: &str) -> String {
    format!("{P}u:{{u{}}}:{user}", user_shard(user))
}

/// Every session of a shard, scored by last activity (expiry scans).
pub(crate) fn all_sessions(shard: &str) -> String {
    format!("{P}sessions:{{u{shard}}}")
}

/// A shard's ready marker: set while Redis holds the sessions the nodes
/// wrote (see `crate::cluster::Cluster::check_ready`).
pub(crate) fn ready(shard: &str) -> String {
    format!("{P}ready:{{u{shard}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis Cluster's hash tag of a key (the whole key without one).
    fn tag(key: &str) -> &str {
        if let Some(open) = key.find('{')
            && let Some(len) = key[open + 1..].find('}')
            && len > 0
        {
            return &key[open + 1..open + 1 + len];
        }
        key
    }

    #[test]
    fn a_rooms_keys_and_channels_share_its_tag() {
        for r in ["ev1", "a:b", "with space", "x}y", "{odd"] {
            let keys = [
                timeline(r),
                clock(r),
                media(r),
                counts(r),
                members(r, "node1"),
                room_nodes(r),
                policy(r),
                id_block(r),
                needs(r),
                party(r),
                timeline_channel(r),
                presence_channel(r),
                chat_channel(r),
            ];
            let first = tag(&keys[0]).to_owned();
            for k in keys.iter().chain(chat(r).iter()) {
                assert_eq!(tag(k), first, "{k}");
            }
        }
        assert_eq!(timeline("ev1"), "lockstep:tl:{ev1}");
    }

    #[test]
    fn channels_parse_back_to_their_room() {
        assert_eq!(Channel::parse(&timeline_channel("ev:1")), Some(Channel::Timeline("ev:1")));
        assert_eq!(Channel::parse(&presence_channel("p")), Some(Channel::Presence("p")));
        assert_eq!(Channel::parse(&chat_channel("c{x}")), Some(Channel::Chat("c{x}")));
        assert_eq!(Channel::parse(REVOKE), None);
        assert_eq!(Channel::parse("lockstep:room:ev1"), None);
        assert_eq!(Channel::parse(&timeline("ev1")), None);
        assert_eq!(Channel::parse(&timeline_channel("r")).map(Channel::room), Some("r"));
    }

    #[test]
    fn a_users_session_keys_share_its_shard() {
        for user in ["alice", "bob", "", "ü"] {
            let shard = user_shard(user);
            let id = session_id_for(user, "k2J9");
            assert_eq!(session_shard(&id), Some(shard.as_str()));
            assert_eq!(session_id_for(user, &id), id, "already of the shard: unchanged");
            let keys = [session(&id).unwrap(), user_sessions(user), all_sessions(&shard), ready(&shard)];
            for k in &keys {
                assert_eq!(tag(k), format!("u{shard}"), "{k}");
            }
            assert_eq!(format!("{}{id}", session_prefix(&shard)), keys[0]);
        }
        assert_eq!(session("legacy-id"), None);
        assert_eq!(session("zz.x"), None);
        assert_eq!(session("3f."), None);
        assert_eq!(session_shards().count(), 256);
        // Users spread over the shards.
        let used: std::collections::HashSet<String> = (0..2000).map(|i| user_shard(&format!("user{i}"))).collect();
        assert!(used.len() > 240, "{}", used.len());
    }
}
