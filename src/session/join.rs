//! Joining: `Hello` checks, the single place credentials are checked
//! ([`authorize`]), the device slot, party-room access and the room.
//!
//! A join runs as its own future, polled beside the session's timers (see
//! `Session::serve`), so a stalled store or room never stops the hello
//! timeout, the idle timeout or shutdown; every await on it is bounded.

use std::sync::Arc;
use std::time::Duration;

use lockstep_protocol::{ErrorCode, Hello, PROTOCOL_VERSION, caps};
use tracing::warn;

use super::{Context, Outbox, party_host};
use crate::accounts::{Registration, Revocable};
use crate::auth::{AuthError, Claims, Plan};
use crate::hub::RoomHandle;
use crate::room::{JoinInfo, MemberId};
use crate::store::StartError;

/// Longest a join may take (store, party host, room); the hello timeout
/// usually ends it first.
pub(super) const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A refusal: the code and the message the client gets.
pub(super) type Refusal = (ErrorCode, String);

/// A member of a room.
#[derive(Debug)]
pub(super) struct Joined {
    pub(super) room: RoomHandle,
    pub(super) member: MemberId,
    pub(super) user: String,
    pub(super) device_id: String,
    /// Keeps this connection in the device's registry (for revocation)
    /// as long as it lives.
    pub(super) _registration: Registration,
}

/// What the connection asked for.
#[derive(Debug)]
pub(super) struct JoinRequest {
    pub(super) room_id: String,
    pub(super) device_id: String,
    pub(super) caps: u32,
    /// A token from `Hello`, else the one from the URL.
    pub(super) token: Option<String>,
}

/// Checks a `Hello` before anything is looked up.
pub(super) fn check_hello(hello: &Hello, url_event: &str) -> Result<(), Refusal> {
    if hello.version != PROTOCOL_VERSION {
        let m = format!("protocol version {} is not supported; this server speaks {PROTOCOL_VERSION}", hello.version);
        return Err((ErrorCode::VersionMismatch, m));
    }
    if hello.event_id != url_event {
        return Err((ErrorCode::EventMismatch, "Hello names another event than the URL".into()));
    }
    if hello.device_id.is_empty() {
        return Err((ErrorCode::InvalidArgument, "device id must not be empty".into()));
    }
    Ok(())
}

/// Authorizes, takes a device slot, and joins the room. Owns what it uses,
/// so it can run beside the session's timers.
pub(super) async fn join(app: Context, req: JoinRequest, outbox: Arc<Outbox>) -> Result<Joined, Refusal> {
    let fut = join_inner(app, req, outbox);
    match tokio::time::timeout(JOIN_TIMEOUT, fut).await {
        Ok(joined) => joined,
        Err(_) => Err((ErrorCode::Internal, "joining took too long; try again".into())),
    }
}

async fn join_inner(app: Context, req: JoinRequest, outbox: Arc<Outbox>) -> Result<Joined, Refusal> {
    let JoinRequest { room_id, device_id, caps, token } = req;
    let claims = authorize(&app, token.as_deref(), &device_id).await?;
    let party_host = party_host(&app.accounts, &room_id).await;
    if room_id.contains(crate::accounts::PARTY_SEP) && party_host.is_none() {
        return Err((ErrorCode::NotInvited, "no such watch party".into()));
    }
    if !app.accounts.may_join(&claims.sub, &room_id, party_host.as_deref()).await {
        return Err((ErrorCode::NotInvited, "this watch party needs an invitation".into()));
    }
    match app.accounts.start(&claims, &device_id, &room_id).await {
        Ok(_) => {}
        Err(StartError::DeviceLimit(devices)) => {
            let list: Vec<_> = devices.iter().map(|d| d.device_id.as_str()).collect();
            return Err((ErrorCode::DeviceLimit, format!("device limit reached; active: {}", list.join(", "))));
        }
        Err(StartError::Store(e)) => {
            warn!(error = %e, "session store failure");
            return Err((ErrorCode::Internal, "storage failure".into()));
        }
    }
    let conn: std::sync::Weak<dyn Revocable> = Arc::downgrade(&outbox) as std::sync::Weak<dyn Revocable>;
    let registration = app.accounts.register(&claims.sub, &device_id, conn);
    let info = JoinInfo {
        name: format!("viewer-{}", short_hash(&claims.sub)),
        host_claim: claims.hosts(&room_id) || party_host.as_deref() == Some(claims.sub.as_str()),
        device_id: device_id.clone(),
        wants_presence: caps & caps::PRESENCE != 0,
        wants_acks: caps & caps::ACKS != 0,
        wants_live: caps & caps::LIVE != 0,
        wants_reactions: caps & caps::REACTIONS != 0,
        wants_chat: caps & caps::CHAT != 0,
        wants_media: caps & caps::MEDIA != 0,
        user: claims.sub.clone(),
        datagrams: caps & caps::DATAGRAMS != 0,
    };
    outbox.set_caps(caps);
    match app.hub.join(&room_id, info, outbox.clone()).await {
        Some((room, member)) => {
            outbox.set_joined(member, caps);
            Ok(Joined { room, member, user: claims.sub, device_id, _registration: registration })
        }
        None if *app.shutdown.borrow() => Err((ErrorCode::ShuttingDown, "the server is shutting down".into())),
        None => Err((ErrorCode::Internal, "the room is unavailable".into())),
    }
}

/// The single place where credentials are checked before any room data
/// flows: a token from `Hello` or the URL; in dev mode, none makes the
/// device an anonymous free user.
async fn authorize(app: &Context, token: Option<&str>, device_id: &str) -> Result<Claims, Refusal> {
    match token.filter(|t| !t.is_empty()) {
        Some(t) => app.auth.check(t).await.map_err(|e| (e.code(), e.to_string())),
        None if app.auth.dev => Ok(app.auth.claims_for(&format!("anon:{device_id}"), Plan::Free, 3600)),
        None => Err((AuthError::Missing.code(), AuthError::Missing.to_string())),
    }
}

/// A short, stable, non-reversible tag for display names.
fn short_hash(s: &str) -> String {
    let h = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("{:06x}", h & 0xff_ffff)
}
