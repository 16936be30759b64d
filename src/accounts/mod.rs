//! Viewing sessions, device limits, invitations, and the connections that
//! belong to each device.
//!
//! Sessions live in the store (durable) and in a moka cache with
//! `time_to_idle` (the live index); moka runs no background threads, so a
//! task calls `run_pending_tasks()` periodically and expired sessions are
//! ended in the store, freeing their device slot. Realtime activity (joins
//! and reports) counts as activity, so a connected viewer never idles out.

mod registry;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use moka::future::Cache;
use moka::notification::RemovalCause;
use tracing::{info, warn};

use crate::auth::{Claims, Plan};
use crate::store::{
    DeviceInfo, InvitationRecord, InviteError, SessionRecord, StartError, Store, StoreError, UnixMs, random_id,
    room_key_ttl_ms, unix_ms,
};
use registry::Connections;
pub(crate) use registry::{Registration, Revocable};

/// Device limits and session timing.
#[derive(Debug, Clone)]
pub(crate) struct AccountConfig {
    /// Devices a free account may use at once.
    pub(crate) max_devices_free: u32,
    /// Devices a premium account may use at once.
    pub(crate) max_devices_premium: u32,
    /// A session without activity for this long expires.
    pub(crate) session_idle: Duration,
    /// Shortest interval between two durable writes of one session's heartbeat
    /// (one that reports a position or a buffering change; realtime activity
    /// alone is written every quarter of `session_idle`).
    pub(crate) heartbeat_write_interval: Duration,
}

impl Default for AccountConfig {
    fn default() -> Self {
        AccountConfig {
            max_devices_free: 1,
            max_devices_premium: 4,
            session_idle: Duration::from_secs(120),
            heartbeat_write_interval: Duration::from_secs(5),
        }
    }
}

/// A callback about one user's device: `(user, device_id)`.
pub(crate) type DeviceHook = Box<dyn Fn(&str, &str) + Send + Sync>;

/// The separator between an event id and a watch party id in a room id.
pub(crate) const PARTY_SEP: char = '~';

/// The room id of watch party `party` of `event_id`.
pub(crate) fn party_room(event_id: &str, party: &str) -> String {
    format!("{event_id}{PARTY_SEP}{party}")
}

/// The stable party id of `host`'s watch party of `event_id`: every
/// invitation of one host to one event leads to the same room.
pub(crate) fn party_id(host: &str, event_id: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, format!("{host}\n{event_id}").as_bytes());
    d.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// See the module docs. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Accounts {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts").field("cfg", &self.inner.cfg).finish_non_exhaustive()
    }
}

struct Inner {
    store: Arc<dyn Store>,
    cfg: AccountConfig,
    /// session id → (record, last durable write).
    live: Cache<String, (SessionRecord, UnixMs)>,
    /// (user, device, room) → session id.
    by_device: Mutex<HashMap<(String, String, String), String>>,
    /// Each device's realtime connections on this node.
    conns: Connections,
    /// Tells other servers about a revoked device.
    announce_revoke: std::sync::OnceLock<DeviceHook>,
}

/// A started session, as the REST API returns it.
#[derive(Debug, Clone)]
pub(crate) struct Started {
    /// The session.
    pub(crate) session: SessionRecord,
    /// When it expires if idle, Unix ms.
    pub(crate) expires_at: UnixMs,
}

impl Accounts {
    /// Accounts over `store`. Call [`Accounts::restore`] once at start.
    pub(crate) fn new(store: Arc<dyn Store>, cfg: AccountConfig) -> Self {
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let weak = weak.clone();
            let live = Cache::builder()
                .time_to_idle(cfg.session_idle)
                .async_eviction_listener(move |id: Arc<String>, (rec, _): (SessionRecord, UnixMs), cause| {
                    let weak = weak.clone();
                    Box::pin(async move {
                        if cause != RemovalCause::Expired {
                            return;
                        }
                        if let Some(inner) = weak.upgrade() {
                            inner.forget(&rec);
                            // Another node may have kept it alive: the store decides.
                            let idle = inner.cfg.session_idle.as_millis() as u64;
                            match inner.store.session(&id).await {
                                Ok(Some(s)) if s.last_seen > unix_ms().saturating_sub(idle) => return,
                                Ok(None) => return,
                                _ => {}
                            }
                            info!(session = %id, user = %rec.user, device = %rec.device_id, "session expired");
                            if let Err(e) = inner.store.end_session(&id).await {
                                warn!(error = %e, "could not end an expired session");
                            }
                        }
                    })
                })
                .build();
            Inner {
                store,
                cfg,
                live,
                by_device: Mutex::default(),
                conns: Connections::default(),
                announce_revoke: std::sync::OnceLock::new(),
            }
        });
        Accounts { inner }
    }

    /// The durable store.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Reloads live sessions from the store after a restart and drops the
    /// ones that idled out while the server was down.
    pub(crate) async fn restore(&self) -> Result<usize, StoreError> {
        let cutoff = self.live_after();
        let gone = self.inner.store.expire_sessions(cutoff).await?;
        if !gone.is_empty() {
            info!(count = gone.len(), "sessions expired while the server was down");
        }
        let sessions = self.inner.store.all_sessions().await?;
        for s in &sessions {
            self.index(s.clone()).await;
        }
        Ok(sessions.len())
    }

    /// Writes every live session this node knows back to the store, as it is
    /// (no device limit applies: each was admitted), after the shared store
    /// lost its data. Returns how many were written.
    pub(crate) async fn reassert(&self) -> usize {
        let live_after = self.live_after();
        let sessions: Vec<SessionRecord> =
            self.inner.live.iter().map(|(_, (rec, _))| rec).filter(|rec| rec.last_seen > live_after).collect();
        let mut written = 0;
        for rec in sessions {
            match self.inner.store.start_session(rec, u32::MAX, live_after).await {
                Ok(_) => written += 1,
                Err(e) => warn!(error = %e, "a session was not re-asserted"),
            }
        }
        info!(sessions = written, "sessions re-asserted to the shared store");
        written
    }

    /// Runs moka's maintenance (expiry, listeners) every `every`, forever.
    pub(crate) async fn run_maintenance(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            self.maintain().await;
        }
    }

    /// Sessions of devices with an open connection here stay alive, silent or
    /// not: a connected device keeps watching, so it keeps its slot (without
    /// this, a client that never reports would free its slot and let another
    /// device in beyond the limit).
    async fn keep_connected_alive(&self) {
        let sessions: Vec<(String, String, String)> = self
            .lock_devices()
            .iter()
            .map(|((user, device, _), id)| (user.clone(), device.clone(), id.clone()))
            .collect();
        let now = unix_ms();
        for (user, device, id) in sessions {
            if !self.inner.conns.is_connected(&user, &device) {
                continue;
            }
            let Some((rec, written)) = self.inner.live.get(&id).await else { continue };
            let buffering = rec.buffering;
            self.seen(&id, rec, written, now, None, buffering).await;
        }
    }

    /// One round of maintenance: moka's, then the store's.
    async fn maintain(&self) {
        self.keep_connected_alive().await;
        self.inner.live.run_pending_tasks().await;
        // The maps keyed by users and devices, for operators (and the soak run).
        let (devices, conns) = self.inner.conns.counts();
        metrics::gauge!("lockstep_registry_devices").set(devices as f64);
        metrics::gauge!("lockstep_registry_connections").set(conns as f64);
        metrics::gauge!("lockstep_sessions_live").set(self.inner.live.entry_count() as f64);
        metrics::gauge!("lockstep_session_index").set(self.lock_devices().len() as f64);
        // Belt and braces: sessions another node or a crash left behind.
        if let Ok(gone) = self.inner.store.expire_sessions(self.live_after()).await {
            for s in gone {
                self.inner.forget(&s);
                self.inner.live.invalidate(&s.session_id).await;
            }
        }
        match self.inner.store.expire_timelines(unix_ms().saturating_sub(room_key_ttl_ms())).await {
            Ok(0) => {}
            Ok(n) => info!(count = n, "timelines of idle rooms expired"),
            Err(e) => warn!(error = %e, "idle timelines not expired"),
        }
    }

    /// Durable heartbeat writes are at most this far apart: never more than a
    /// quarter of the idle timeout, so the store's view never expires a
    /// session that is alive.
    fn write_interval(&self) -> u64 {
        let cfg = &self.inner.cfg;
        (cfg.heartbeat_write_interval.as_millis() as u64).min(self.alive_write_interval())
    }

    /// Activity that only proves a session alive (a connected viewer's
    /// realtime traffic: no position, no buffering change) is written every
    /// quarter of the idle timeout: the store's view never expires it, and a
    /// premiere's steady store load (mostly these refreshes) stays small.
    fn alive_write_interval(&self) -> u64 {
        self.inner.cfg.session_idle.as_millis() as u64 / 4
    }

    fn live_after(&self) -> UnixMs {
        unix_ms().saturating_sub(self.inner.cfg.session_idle.as_millis() as u64)
    }

    fn expires_at(&self, last_seen: UnixMs) -> UnixMs {
        last_seen + self.inner.cfg.session_idle.as_millis() as u64
    }

    /// The device limit for these claims.
    pub(crate) fn max_devices(&self, claims: &Claims) -> u32 {
        claims.max_devices.unwrap_or(match claims.plan {
            Plan::Free => self.inner.cfg.max_devices_free,
            Plan::Premium => self.inner.cfg.max_devices_premium,
        })
    }

    async fn index(&self, rec: SessionRecord) {
        self.lock_devices()
            .insert((rec.user.clone(), rec.device_id.clone(), rec.room_id.clone()), rec.session_id.clone());
        let seen = rec.last_seen;
        self.inner.live.insert(rec.session_id.clone(), (rec, seen)).await;
    }

    fn lock_devices(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String, String), String>> {
        self.inner.by_device.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts (or resumes) a session for `claims` on `device_id` in `room_id`.
    pub(crate) async fn start(&self, claims: &Claims, device_id: &str, room_id: &str) -> Result<Started, StartError> {
        let now = unix_ms();
        let rec = SessionRecord {
            session_id: random_id(),
            user: claims.sub.clone(),
            device_id: device_id.into(),
            room_id: room_id.into(),
            created_at: now,
            last_seen: now,
            position_ms: None,
            buffering: false,
        };
        let rec = self.inner.store.start_session(rec, self.max_devices(claims), self.live_after()).await?;
        self.index(rec.clone()).await;
        Ok(Started { expires_at: self.expires_at(rec.last_seen), session: rec })
    }

    /// A live session by id.
    pub(crate) async fn session(&self, id: &str) -> Option<SessionRecord> {
        self.live(id).await.map(|(r, _)| r)
    }

    /// A live session. The store decides whether it exists (another node may
    /// have started or ended it); the cache keeps the freshest activity and
    /// the time of the last durable write. If the store is unreachable, the
    /// cache answers alone.
    async fn live(&self, id: &str) -> Option<(SessionRecord, UnixMs)> {
        let cached = self.inner.live.get(id).await;
        match self.inner.store.session(id).await {
            Ok(Some(stored)) => {
                let fresh = cached.clone().map_or(stored.last_seen, |(c, _)| c.last_seen.max(stored.last_seen));
                if fresh <= self.live_after() {
                    return None;
                }
                match cached {
                    Some(hit) => Some(hit),
                    None => {
                        self.index(stored.clone()).await;
                        Some((stored.clone(), stored.last_seen))
                    }
                }
            }
            Ok(None) => {
                if let Some((c, _)) = cached {
                    self.inner.live.invalidate(id).await;
                    self.inner.forget(&c);
                }
                None
            }
            Err(e) => {
                warn!(error = %e, "session store unreachable; answering from the cache");
                cached
            }
        }
    }

    /// Records a heartbeat; durable at a bounded rate.
    pub(crate) async fn heartbeat(&self, id: &str, position_ms: Option<u64>, buffering: bool) -> Option<Started> {
        let (rec, written) = self.live(id).await?;
        let now = unix_ms();
        let rec = self.seen(id, rec, written, now, position_ms, buffering).await;
        Some(Started { expires_at: self.expires_at(now), session: rec })
    }

    /// Records activity of a live session at `now` in the cache, durably at most
    /// every write interval (`written`: the last durable write).
    async fn seen(
        &self,
        id: &str,
        mut rec: SessionRecord,
        mut written: UnixMs,
        now: UnixMs,
        position_ms: Option<u64>,
        buffering: bool,
    ) -> SessionRecord {
        rec.last_seen = now;
        let news = position_ms.is_some_and(|p| rec.position_ms != Some(p)) || rec.buffering != buffering;
        if position_ms.is_some() {
            rec.position_ms = position_ms;
        }
        rec.buffering = buffering;
        let every = if news { self.write_interval() } else { self.alive_write_interval() };
        if now.saturating_sub(written) >= every {
            match self.inner.store.touch_session(id, now, position_ms, buffering).await {
                Ok(_) => written = now,
                Err(e) => warn!(error = %e, "session activity not persisted"),
            }
        }
        self.inner.live.insert(id.to_owned(), (rec.clone(), written)).await;
        rec
    }

    /// Realtime activity of a user's device in a room keeps its session alive.
    pub(crate) async fn touch(&self, user: &str, device_id: &str, room_id: &str) {
        let id = self.lock_devices().get(&(user.into(), device_id.into(), room_id.into())).cloned();
        if let Some(id) = id {
            self.heartbeat(&id, None, false).await;
        }
    }

    /// Ends a session.
    pub(crate) async fn end(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let rec = self.inner.store.end_session(id).await?;
        self.inner.live.invalidate(id).await;
        if let Some(r) = &rec {
            self.inner.forget(r);
        }
        Ok(rec)
    }

    /// The user's active devices.
    pub(crate) async fn devices(&self, user: &str) -> Result<Vec<DeviceInfo>, StoreError> {
        self.inner.store.devices(user, self.live_after()).await
    }

    /// Ends a device's sessions and closes its connections with
    /// [`DeviceRevoked`](lockstep_protocol::ErrorCode::DeviceRevoked). Returns how many sessions ended.
    pub(crate) async fn remove_device(&self, user: &str, device_id: &str) -> Result<usize, StoreError> {
        let gone = self.inner.store.remove_device(user, device_id).await?;
        for s in &gone {
            self.inner.live.invalidate(&s.session_id).await;
            self.inner.forget(s);
        }
        let closed = self.close_device(user, device_id);
        if let Some(announce) = self.inner.announce_revoke.get() {
            announce(user, device_id);
        }
        Ok(gone.len().max(closed))
    }

    /// Closes this node's connections of `user`'s `device_id` with
    /// [`DeviceRevoked`](lockstep_protocol::ErrorCode::DeviceRevoked); returns how many.
    pub(crate) fn close_device(&self, user: &str, device_id: &str) -> usize {
        self.inner.conns.close(user, device_id)
    }

    /// Sets how a revocation is announced to other servers (scale-out), once.
    pub(crate) fn announce_revocations(&self, announce: impl Fn(&str, &str) + Send + Sync + 'static) {
        let _ = self.inner.announce_revoke.set(Box::new(announce));
    }

    /// Registers a realtime connection of a user's device, so that removing
    /// the device revokes it; it stays registered while the returned
    /// [`Registration`] is held.
    pub(crate) fn register(&self, user: &str, device_id: &str, conn: Weak<dyn Revocable>) -> Registration {
        self.inner.conns.register(user, device_id, conn)
    }

    /// Creates an invitation to `host`'s watch party of `event_id`.
    pub(crate) async fn invite(
        &self,
        host: &Claims,
        event_id: &str,
        max_uses: Option<u32>,
        ttl: Duration,
    ) -> Result<InvitationRecord, StoreError> {
        let now = unix_ms();
        let inv = InvitationRecord {
            room_id: party_room(event_id, &party_id(&host.sub, event_id)),
            id: random_id(),
            event_id: event_id.into(),
            host_user: host.sub.clone(),
            created_at: now,
            expires_at: now + ttl.as_millis() as u64,
            max_uses,
            uses: 0,
            revoked: false,
        };
        self.inner.store.create_invitation(inv.clone()).await?;
        Ok(inv)
    }

    /// Accepts an invitation: uses it once, then starts a session in the
    /// party's room.
    pub(crate) async fn accept(
        &self,
        claims: &Claims,
        id: &str,
        device_id: &str,
    ) -> Result<(InvitationRecord, Started), AcceptError> {
        let inv =
            self.inner.store.invitation(id).await.map_err(|e| AcceptError::Store(e.0))?.ok_or(AcceptError::NotFound)?;
        if !inv.usable(unix_ms()) {
            return Err(AcceptError::Gone);
        }
        // Take the device slot first, so a refused start does not burn a use.
        let started = self.start(claims, device_id, &inv.room_id).await.map_err(|e| match e {
            StartError::DeviceLimit(d) => AcceptError::DeviceLimit(d),
            StartError::Store(e) => AcceptError::Store(e),
        })?;
        match self.inner.store.use_invitation(id, unix_ms()).await {
            Ok(inv) => Ok((inv, started)),
            Err(e) => {
                let _ = self.end(&started.session.session_id).await;
                Err(match e {
                    InviteError::NotFound => AcceptError::NotFound,
                    InviteError::Gone => AcceptError::Gone,
                    InviteError::Store(s) => AcceptError::Store(s),
                })
            }
        }
    }

    /// Whether `user` may join `room_id`: event rooms are open to every
    /// signed-in user; a party room to its host and to users who accepted an
    /// invitation (they hold a session there).
    pub(crate) async fn may_join(&self, user: &str, room_id: &str, party_host: Option<&str>) -> bool {
        if !room_id.contains(PARTY_SEP) || party_host == Some(user) {
            return true;
        }
        if self.lock_devices().keys().any(|(u, _, r)| u == user && r == room_id) {
            return true;
        }
        // Accepted on another node: the store knows.
        self.devices(user).await.is_ok_and(|ds| ds.iter().any(|d| d.event_ids.iter().any(|e| e == room_id)))
    }
}

/// Why an invitation could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AcceptError {
    /// No such invitation.
    #[error("no such invitation")]
    NotFound,
    /// Revoked, expired or used up.
    #[error("the invitation is no longer valid")]
    Gone,
    /// The invitee is at the device limit.
    #[error("device limit reached")]
    DeviceLimit(Vec<DeviceInfo>),
    /// The store failed.
    #[error("storage failure: {0}")]
    Store(String),
}

impl Inner {
    fn forget(&self, rec: &SessionRecord) {
        let mut map = self.by_device.lock().unwrap_or_else(|e| e.into_inner());
        let key = (rec.user.clone(), rec.device_id.clone(), rec.room_id.clone());
        if map.get(&key) == Some(&rec.session_id) {
            map.remove(&key);
        }
    }
}
