//! Durable state behind one small trait: viewing sessions and their devices,
//! invitations, and room timelines.
//!
//! The embedded default is SQLite ([`sqlite::SqliteStore`]); with
//! `--redis-url` it is Redis ([`redis::RedisStore`]). Nothing above this
//! module knows which one runs. Every
//! method that checks and then writes (device limits, invitation uses) is
//! atomic in the store itself, so two servers sharing a store cannot both let
//! a user past a limit.

#[cfg(test)]
mod contract;
pub(crate) mod redis;
pub(crate) mod sqlite;

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use lockstep_protocol::TimelineChanged;
use serde::{Deserialize, Serialize};

use crate::room::{ChatLoad, ChatOp, ChatRecord, ClockSetting, MediaState};

/// Milliseconds since the Unix epoch.
pub(crate) type UnixMs = u64;

/// A viewing session: one device of one user watching one room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    /// Random id.
    pub(crate) session_id: String,
    /// The user (token `sub`).
    pub(crate) user: String,
    /// The device.
    pub(crate) device_id: String,
    /// The room: an event id, or a watch party's room id.
    pub(crate) room_id: String,
    /// When it started.
    pub(crate) created_at: UnixMs,
    /// Last heartbeat or realtime activity.
    pub(crate) last_seen: UnixMs,
    /// The viewer's last reported position (fallback while realtime is down).
    pub(crate) position_ms: Option<u64>,
    /// Whether the viewer last reported buffering.
    pub(crate) buffering: bool,
}

/// An invitation to a premium user's watch party.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InvitationRecord {
    /// Random id.
    pub(crate) id: String,
    /// The event being watched.
    pub(crate) event_id: String,
    /// The party's room id.
    pub(crate) room_id: String,
    /// The inviting user, host of the room.
    pub(crate) host_user: String,
    /// When it was created.
    pub(crate) created_at: UnixMs,
    /// When it stops working.
    pub(crate) expires_at: UnixMs,
    /// How many times it may be accepted (`None`: unlimited).
    pub(crate) max_uses: Option<u32>,
    /// How many times it was accepted.
    pub(crate) uses: u32,
    /// Whether the host revoked it.
    pub(crate) revoked: bool,
}

impl InvitationRecord {
    /// Whether it can still be accepted at `now`.
    pub(crate) fn usable(&self, now: UnixMs) -> bool {
        !self.revoked && now < self.expires_at && self.max_uses.is_none_or(|m| self.uses < m)
    }
}

/// A device with live sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeviceInfo {
    /// The device id.
    pub(crate) device_id: String,
    /// Rooms it is watching.
    pub(crate) event_ids: Vec<String>,
    /// Last activity, Unix milliseconds.
    pub(crate) last_seen: UnixMs,
}

/// Why a session could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StartError {
    /// The user is at the device limit with other devices.
    #[error("device limit reached")]
    DeviceLimit(Vec<DeviceInfo>),
    /// The store failed.
    #[error("storage failure: {0}")]
    Store(String),
}

/// Why an invitation could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InviteError {
    /// No such invitation.
    #[error("no such invitation")]
    NotFound,
    /// Revoked, expired or used up.
    #[error("the invitation is no longer valid")]
    Gone,
    /// The store failed.
    #[error("storage failure: {0}")]
    Store(String),
}

/// A storage failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage failure: {0}")]
pub(crate) struct StoreError(pub(crate) String);

/// Result of store calls.
pub(crate) type StoreResult<T> = Result<T, StoreError>;

/// The storage trait. See the module docs.
pub(crate) trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Starts (or resumes, for the same user, device and room) a session,
    /// unless the user already has `max_devices` other devices with sessions
    /// seen after `live_after`. Atomic.
    fn start_session(
        &self,
        rec: SessionRecord,
        max_devices: u32,
        live_after: UnixMs,
    ) -> BoxFuture<'_, Result<SessionRecord, StartError>>;

    /// A session by id.
    fn session(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<SessionRecord>>>;

    /// Records activity (and, if given, the position) of a session.
    fn touch_session(
        &self,
        id: &str,
        now: UnixMs,
        position_ms: Option<u64>,
        buffering: bool,
    ) -> BoxFuture<'_, StoreResult<Option<SessionRecord>>>;

    /// Ends a session; returns it if it existed.
    fn end_session(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<SessionRecord>>>;

    /// Ends every session not seen since `before`; returns them.
    fn expire_sessions(&self, before: UnixMs) -> BoxFuture<'_, StoreResult<Vec<SessionRecord>>>;

    /// All sessions (to rebuild indexes at start).
    fn all_sessions(&self) -> BoxFuture<'_, StoreResult<Vec<SessionRecord>>>;

    /// The user's devices with sessions seen after `live_after`.
    fn devices(&self, user: &str, live_after: UnixMs) -> BoxFuture<'_, StoreResult<Vec<DeviceInfo>>>;

    /// Ends all of a user's sessions on a device; returns them.
    fn remove_device(&self, user: &str, device_id: &str) -> BoxFuture<'_, StoreResult<Vec<SessionRecord>>>;

    /// Saves a new invitation.
    fn create_invitation(&self, inv: InvitationRecord) -> BoxFuture<'_, StoreResult<()>>;

    /// An invitation by id.
    fn invitation(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<InvitationRecord>>>;

    /// Uses an invitation once if it is usable at `now`. Atomic.
    fn use_invitation(&self, id: &str, now: UnixMs) -> BoxFuture<'_, Result<InvitationRecord, InviteError>>;

    /// The host of a watch party's room (the user who invited to it).
    fn party_host(&self, room_id: &str) -> BoxFuture<'_, StoreResult<Option<String>>>;

    /// Revokes an invitation; returns it as it was.
    fn revoke_invitation(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<InvitationRecord>>>;

    /// Saves room timelines (latest wins): each the change that made it, so
    /// a room loaded again knows why it is paused (a buffering wait resumes
    /// by itself; a pause waits for the host).
    fn save_timelines(&self, batch: Vec<(String, TimelineChanged)>) -> BoxFuture<'_, StoreResult<()>>;

    /// A room's saved timeline, as the change that made it (its `by` is 0
    /// where the store keeps no member: SQLite, whose member ids end with
    /// the process).
    fn timeline(&self, room_id: &str) -> BoxFuture<'_, StoreResult<Option<TimelineChanged>>>;

    /// Deletes the saved timelines last written before `before` of rooms
    /// nobody holds a session in (see [`ROOM_KEY_TTL`]); returns how many.
    /// Their clock settings go with them.
    fn expire_timelines(&self, before: UnixMs) -> BoxFuture<'_, StoreResult<usize>>;

    /// Saves a room's clock setting (`PUT …/clock`, or a live room's origin).
    fn save_room_clock(&self, room_id: &str, setting: ClockSetting) -> BoxFuture<'_, StoreResult<()>>;

    /// A room's saved clock setting.
    fn room_clock(&self, room_id: &str) -> BoxFuture<'_, StoreResult<Option<ClockSetting>>>;

    /// Saves a room's media item and playlist.
    fn save_room_media(&self, room_id: &str, state: &MediaState) -> BoxFuture<'_, StoreResult<()>>;

    /// A room's saved media item and playlist.
    fn room_media(&self, room_id: &str) -> BoxFuture<'_, StoreResult<Option<MediaState>>>;

    /// Applies a room's chat operations, in order (posts carry their ids).
    fn save_chat(&self, room_id: &str, ops: Vec<ChatOp>) -> BoxFuture<'_, StoreResult<()>>;

    /// What a room starts its chat with: its newest `n` messages, the last
    /// id given, its muted users.
    fn chat_load(&self, room_id: &str, n: usize) -> BoxFuture<'_, StoreResult<ChatLoad>>;

    /// Up to `limit` of a room's messages before id `before` (the newest if
    /// `None`), deleted ones left out, oldest first.
    fn chat_page(
        &self,
        room_id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<ChatRecord>>>;
}

/// Chat messages a store keeps per room (the newest).
pub(crate) const CHAT_KEPT: usize = 10_000;

/// How long a room's saved state outlives its last write or refresh: long
/// enough that a node restart, or a room that stays empty for a while, keeps
/// its timeline; short enough that joining made-up event ids cannot fill the
/// store.
///
/// The rule, for every store:
/// - **Redis**: every write of a room key (`lockstep:tl:{room}`, the timeline
///   record, and `lockstep:mblock:{room}`, the member id blocks) sets its TTL
///   to [`room_key_ttl_ms`] (`PEXPIRE`), in the same script or pipeline as the
///   write; a node refreshes the TTL of the keys of every room it has live
///   from its heartbeat (every 30th beat). So a room's keys live while any
///   node has the room and for this long after.
/// - **SQLite**: each timeline row carries `updated_at`; the accounts
///   maintenance ([`Store::expire_timelines`]) deletes rows older than this
///   whose room holds no session (a viewer's session is kept alive by its
///   activity, so a live room's timeline stays however long nobody changes it).
pub(crate) const ROOM_KEY_TTL: Duration = Duration::from_secs(3600);

/// [`ROOM_KEY_TTL`] in milliseconds, as `PEXPIRE` wants it.
pub(crate) fn room_key_ttl_ms() -> u64 {
    ROOM_KEY_TTL.as_millis() as u64
}

/// The devices of sessions given as `(device, room, last_seen)`, ordered by
/// device id, leaving out `except`.
fn group_devices(
    sessions: impl IntoIterator<Item = (String, String, UnixMs)>,
    except: Option<&str>,
) -> Vec<DeviceInfo> {
    let mut by: BTreeMap<String, DeviceInfo> = BTreeMap::new();
    for (device_id, room, seen) in sessions.into_iter().filter(|(d, _, _)| Some(d.as_str()) != except) {
        let d = by.entry(device_id.clone()).or_insert_with(|| DeviceInfo {
            device_id,
            event_ids: Vec::new(),
            last_seen: 0,
        });
        if !d.event_ids.contains(&room) {
            d.event_ids.push(room);
        }
        d.last_seen = d.last_seen.max(seen);
    }
    by.into_values().collect()
}

impl From<StoreError> for StartError {
    fn from(e: StoreError) -> Self {
        StartError::Store(e.0)
    }
}

impl From<StoreError> for InviteError {
    fn from(e: StoreError) -> Self {
        InviteError::Store(e.0)
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn unix_ms() -> UnixMs {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A random URL-safe id of 128 bits.
pub(crate) fn random_id() -> String {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).expect("system randomness");
    b.iter().map(|x| format!("{x:02x}")).collect()
}
