//! One client session, written once for every transport.
//!
//! A transport adapter turns its connection into a stream of [`Inbound`]
//! items and a writer task draining an [`Outbox`]; everything else (the
//! `Hello` handshake, the auth hook, rate limits, bad input, timeouts, joining
//! and leaving the room) happens here, identically for WebSocket and
//! WebTransport.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use lockstep_protocol::{
    ClientMsg, ErrorCode, ErrorMsg, Hello, PROTOCOL_VERSION, ServerMsg, caps, decode_client, encode_server,
};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::auth::{AuthError, Claims, Plan};
use crate::http::AppState;
use crate::hub::{Dialect, RoomEvent, RoomHandle};
use crate::json::{self, JsonIn};
use crate::outbox::{Frame, FrameKind, Outbox};
use crate::room::{JoinInfo, MemberId};
use crate::store::StartError;

/// What a transport hands to the session.
#[derive(Debug)]
pub enum Inbound {
    /// A reliable binary message (WebSocket binary frame or stream frame).
    Frame(Bytes),
    /// A WebSocket text frame (JSON dialect).
    Text(String),
    /// A datagram.
    Datagram(Bytes),
    /// A reliable message larger than the protocol allows, by its size.
    TooLarge(usize),
    /// Transport keep-alive traffic.
    Activity,
}

/// Settings shared by all sessions.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Time allowed before `Hello`.
    pub hello_timeout: Duration,
    /// Time allowed without any inbound traffic.
    pub idle_timeout: Duration,
    /// Sustained inbound messages per second.
    pub msgs_per_sec: u32,
    /// Inbound burst.
    pub msg_burst: u32,
    /// Reliable frames queued per connection.
    pub control_queue: usize,
}

/// Who is connecting, and how.
#[derive(Debug, Clone)]
pub struct SessionParams {
    /// The event id from the URL.
    pub event_id: String,
    /// `"websocket"` or `"webtransport"`.
    pub transport: &'static str,
    /// Binary protocol or the JSON dialect.
    pub dialect: Dialect,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Device id from the URL (JSON dialect clients never send `Hello`).
    pub device_hint: Option<String>,
    /// Access token from the URL, if any.
    pub token: Option<String>,
}

/// Bad frames tolerated on one connection before it is closed.
const MAX_STRIKES: u32 = 10;
/// Consecutive one-second windows with dropped messages before a flood is closed.
const FLOOD_WINDOWS: u32 = 3;

/// Runs a session until the peer leaves, the session is closed, or the server
/// shuts down, and hands `inbound` back (a WebSocket reads it on to finish
/// the close handshake).
///
/// Returns once the session is over; the close reason (if the server closed)
/// is in the outbox for the writer.
///
/// The session is set up before the returned future is first polled (it is
/// not an `async fn`): an `async fn` keeps its arguments in its state next to
/// the `Session` they are moved into, and this future lives, and is paid
/// for, as long as the connection.
pub fn run<S>(app: AppState, params: SessionParams, inbound: S, outbox: Arc<Outbox>) -> impl Future<Output = S>
where
    S: Stream<Item = Inbound> + Unpin,
{
    let cfg = app.session_cfg.clone();
    let burst = NonZeroU32::new(cfg.msg_burst.max(1)).expect("nonzero");
    let rate = NonZeroU32::new(cfg.msgs_per_sec.max(1)).expect("nonzero");
    let shutdown = app.shutdown.clone();
    let mut s = Session {
        app,
        limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
        params,
        outbox,
        joined: None,
        identity: None,
        last_touch: Instant::now(),
        strikes: 0,
        window_start: Instant::now(),
        window_drops: 0,
        flood_windows: 0,
        registration: None,
    };
    let mut inbound = inbound;
    async move {
        metrics::gauge!("lockstep_connections", "transport" => s.params.transport).increment(1.0);
        if s.params.dialect == Dialect::Json {
            let device_id = s.params.device_hint.clone().unwrap_or_else(|| format!("json:{}", s.params.peer));
            // Boxed, like every await on the join path: a future is as large as
            // its largest state, and the join path's (auth, accounts, store,
            // hub) would otherwise stay allocated for the whole connection.
            Box::pin(s.join(device_id, 0, None)).await;
        }
        if s.outbox.close_reason().is_none() {
            s.serve(&cfg, &mut inbound, shutdown).await;
        }
        if let Some((room, id)) = s.joined.take() {
            room.send(RoomEvent::Leave(id));
        }
        metrics::gauge!("lockstep_connections", "transport" => s.params.transport).decrement(1.0);
        inbound
    }
}

/// Who a joined session belongs to.
#[derive(Debug, Clone)]
struct Identity {
    user: String,
    device_id: String,
}

/// Realtime activity refreshes the viewing session at most this often.
const TOUCH_INTERVAL: Duration = Duration::from_secs(10);

struct Session {
    app: AppState,
    limiter: DefaultDirectRateLimiter,
    params: SessionParams,
    outbox: Arc<Outbox>,
    joined: Option<(RoomHandle, MemberId)>,
    identity: Option<Identity>,
    last_touch: Instant,
    strikes: u32,
    window_start: Instant,
    window_drops: u32,
    flood_windows: u32,
    /// Keeps this connection revocable with its device while joined.
    registration: Option<crate::accounts::Registration>,
}

impl Session {
    async fn serve<S>(&mut self, cfg: &SessionConfig, mut inbound: S, mut shutdown: watch::Receiver<bool>)
    where
        S: Stream<Item = Inbound> + Unpin,
    {
        let started = tokio::time::Instant::now();
        let mut last_seen = started;
        let outbox = self.outbox.clone();
        loop {
            let (deadline, timeout_code) = if self.joined.is_none() && self.params.dialect == Dialect::Binary {
                (started + cfg.hello_timeout, ErrorCode::HelloTimeout)
            } else {
                (last_seen + cfg.idle_timeout, ErrorCode::IdleTimeout)
            };
            tokio::select! {
                item = inbound.next() => {
                    let Some(item) = item else { return };
                    last_seen = tokio::time::Instant::now();
                    self.on_inbound(item).await;
                }
                _ = outbox.closed() => return,
                _ = tokio::time::sleep_until(deadline) => {
                    self.outbox.close(timeout_code, timeout_code.as_str());
                    crate::metrics::error(timeout_code);
                    return;
                }
                _ = wait_true(&mut shutdown) => {
                    self.outbox.close(ErrorCode::ShuttingDown, "the server is shutting down");
                    return;
                }
            }
        }
    }

    async fn on_inbound(&mut self, item: Inbound) {
        let recv_us = self.app.hub.clock().now_us();
        if matches!(item, Inbound::Activity) {
            return;
        }
        if !self.admit() {
            return;
        }
        match item {
            Inbound::Activity => {}
            Inbound::TooLarge(len) => {
                self.fail(ErrorCode::FrameTooLarge, format!("a {len}-byte message exceeds the limit"), 0);
            }
            Inbound::Frame(bytes) => {
                if self.params.dialect == Dialect::Json {
                    self.fail(ErrorCode::UnexpectedMessage, "binary frames need the lockstep.v1 subprotocol", 0);
                    return;
                }
                match decode_client(&bytes) {
                    Ok(msg) => self.dispatch(msg, recv_us).await,
                    Err(e) => self.fail(e.code(), e.to_string(), 0),
                }
            }
            Inbound::Datagram(bytes) => match decode_client(&bytes) {
                // Datagram errors are never answered (SPEC §9): a report
                // before Hello is just dropped.
                Ok(ClientMsg::Report(_)) if self.joined.is_none() => crate::metrics::drop("datagram_before_hello"),
                Ok(msg @ (ClientMsg::Ping(_) | ClientMsg::Report(_))) => self.dispatch(msg, recv_us).await,
                Ok(other) => {
                    debug!(kind = other.name(), "reliable-only message in a datagram dropped");
                    crate::metrics::drop("datagram_wrong_type");
                }
                Err(_) => crate::metrics::drop("bad_datagram"),
            },
            Inbound::Text(text) => {
                if self.params.dialect == Dialect::Binary {
                    self.fail(ErrorCode::UnexpectedMessage, "text frames are only for the JSON dialect", 0);
                    return;
                }
                match json::parse(&text) {
                    Ok(JsonIn::PlaybackSync { position_ms, extra }) => {
                        metrics::counter!("lockstep_messages_in_total", "type" => "playback_sync").increment(1);
                        if let Some((room, member)) = &self.joined {
                            room.send(RoomEvent::Command {
                                member: *member,
                                request_id: 0,
                                action: lockstep_protocol::Action::Seek { position_ms },
                                extra: Some(Box::new(extra)),
                            });
                        }
                    }
                    Err(e) => self.fail(e.code, e.message, 0),
                }
            }
        }
    }

    /// Applies the per-connection rate limit; floods are warned, then closed.
    fn admit(&mut self) -> bool {
        if self.window_start.elapsed() >= Duration::from_secs(1) {
            self.flood_windows = if self.window_drops > 0 { self.flood_windows + 1 } else { 0 };
            self.window_drops = 0;
            self.window_start = Instant::now();
            if self.flood_windows >= FLOOD_WINDOWS {
                warn!(peer = %self.params.peer, "closing a flooding connection");
                self.fail(ErrorCode::Flood, "sustained message flood", 0);
                return false;
            }
        }
        if self.limiter.check().is_ok() {
            return true;
        }
        crate::metrics::drop("rate_limited");
        self.window_drops += 1;
        if self.window_drops == 1 {
            self.send_error(ErrorCode::RateLimited, "too many messages; some were dropped", 0);
        }
        false
    }

    async fn dispatch(&mut self, msg: ClientMsg, recv_us: u64) {
        metrics::counter!("lockstep_messages_in_total", "type" => msg.name()).increment(1);
        match msg {
            // Boxed: joining happens once per connection and its future is
            // large; inline it would be part of the read loop's future, whose
            // size every connection pays for as long as it lives.
            ClientMsg::Hello(hello) => Box::pin(self.hello(hello)).await,
            ClientMsg::Ping(p) => self.outbox.push_pong(p.client_time, recv_us),
            ClientMsg::Command(c) => match &self.joined {
                Some((room, member)) => {
                    room.send(RoomEvent::Command {
                        member: *member,
                        request_id: c.request_id,
                        action: c.action,
                        extra: None,
                    });
                }
                None => self.fail(ErrorCode::NotJoined, "send Hello first", c.request_id),
            },
            ClientMsg::Report(r) => match &self.joined {
                Some((room, member)) => {
                    room.send(RoomEvent::Report(*member, r));
                    if self.last_touch.elapsed() >= TOUCH_INTERVAL {
                        // Boxed for the same reason as `hello`, and only
                        // when due (once per `TOUCH_INTERVAL`), so reports
                        // allocate nothing.
                        Box::pin(self.touch()).await;
                    }
                }
                None => self.fail(ErrorCode::NotJoined, "send Hello first", 0),
            },
        }
    }

    async fn hello(&mut self, hello: Hello) {
        if self.joined.is_some() {
            return self.fail(ErrorCode::AlreadyJoined, "this connection has joined already", 0);
        }
        if hello.version != PROTOCOL_VERSION {
            let m =
                format!("protocol version {} is not supported; this server speaks {PROTOCOL_VERSION}", hello.version);
            return self.fail(ErrorCode::VersionMismatch, m, 0);
        }
        if hello.event_id != self.params.event_id {
            return self.fail(ErrorCode::EventMismatch, "Hello names another event than the URL", 0);
        }
        if hello.device_id.is_empty() {
            return self.fail(ErrorCode::InvalidArgument, "device id must not be empty", 0);
        }
        self.join(hello.device_id, hello.caps, hello.token).await;
    }

    /// Authorizes, takes a device slot, and joins the room.
    async fn join(&mut self, device_id: String, caps: u32, hello_token: Option<String>) {
        let room_id = self.params.event_id.clone();
        let claims = match self.authorize(hello_token.as_deref(), &device_id) {
            Ok(c) => c,
            Err((code, message)) => return self.fail(code, message, 0),
        };
        let party_host = self.app.party_host(&room_id).await;
        if room_id.contains(crate::accounts::PARTY_SEP) && party_host.is_none() {
            return self.fail(ErrorCode::NotInvited, "no such watch party", 0);
        }
        if !self.app.accounts.may_join(&claims.sub, &room_id, party_host.as_deref()).await {
            return self.fail(ErrorCode::NotInvited, "this watch party needs an invitation", 0);
        }
        match self.app.accounts.start(&claims, &device_id, &room_id).await {
            Ok(_) => {}
            Err(StartError::DeviceLimit(devices)) => {
                let list: Vec<_> = devices.iter().map(|d| d.device_id.as_str()).collect();
                return self.fail(
                    ErrorCode::DeviceLimit,
                    format!("device limit reached; active: {}", list.join(", ")),
                    0,
                );
            }
            Err(StartError::Store(e)) => {
                warn!(error = %e, "session store failure");
                return self.fail(ErrorCode::Internal, "storage failure", 0);
            }
        }
        let conn = Arc::downgrade(&self.outbox);
        self.registration = Some(self.app.accounts.register(&claims.sub, &device_id, conn));
        let info = JoinInfo {
            name: format!("viewer-{}", short_hash(&claims.sub)),
            host_claim: claims.hosts(&room_id) || party_host.as_deref() == Some(claims.sub.as_str()),
            device_id: device_id.clone(),
            wants_presence: caps & caps::PRESENCE != 0,
        };
        match self.app.hub.join(&room_id, info, self.outbox.clone(), self.params.dialect).await {
            Some(joined) => {
                self.joined = Some(joined);
                self.identity = Some(Identity { user: claims.sub, device_id });
            }
            None if *self.app.shutdown.borrow() => self.fail(ErrorCode::ShuttingDown, "the server is shutting down", 0),
            None => self.fail(ErrorCode::Internal, "the room is unavailable", 0),
        }
    }

    /// The single place where credentials are checked before any room data
    /// flows: a token from `Hello` or the URL; in dev mode, none makes the
    /// device an anonymous free user.
    fn authorize(&self, hello_token: Option<&str>, device_id: &str) -> Result<Claims, (ErrorCode, String)> {
        let token = hello_token.or(self.params.token.as_deref()).filter(|t| !t.is_empty());
        match token {
            Some(t) => self.app.auth.verify(t).map_err(|e| (e.code(), e.to_string())),
            None if self.app.auth.dev => Ok(self.app.auth.claims_for(&format!("anon:{device_id}"), Plan::Free, 3600)),
            None => Err((AuthError::Missing.code(), AuthError::Missing.to_string())),
        }
    }

    /// Keeps the viewing session alive while realtime traffic flows.
    async fn touch(&mut self) {
        if self.last_touch.elapsed() < TOUCH_INTERVAL {
            return;
        }
        self.last_touch = Instant::now();
        if let Some(id) = &self.identity {
            self.app.accounts.touch(&id.user, &id.device_id, &self.params.event_id).await;
        }
    }

    /// Reports an error; closing codes close the connection, and too many bad
    /// frames close it too.
    fn fail(&mut self, code: ErrorCode, message: impl Into<String>, request_id: u32) {
        crate::metrics::error(code);
        let message = message.into();
        debug!(peer = %self.params.peer, %code, %message, "client error");
        if code.closes() {
            self.outbox.close(code, message);
            return;
        }
        self.strikes += 1;
        if self.strikes >= MAX_STRIKES {
            self.outbox.close(ErrorCode::TooManyErrors, format!("too many bad messages; last: {message}"));
            return;
        }
        self.send_error(code, &message, request_id);
    }

    fn send_error(&self, code: ErrorCode, message: &str, request_id: u32) {
        self.outbox.push(error_frame(self.params.dialect, code, message, request_id));
    }
}

/// An error frame in the connection's dialect.
pub fn error_frame(dialect: Dialect, code: ErrorCode, message: &str, request_id: u32) -> Frame {
    match dialect {
        Dialect::Binary => Frame {
            bytes: Bytes::from(encode_server(&ServerMsg::Error(ErrorMsg::new(code, message, request_id)))),
            kind: FrameKind::Binary,
        },
        Dialect::Json => Frame { bytes: Bytes::from(json::error(code.as_u16(), message)), kind: FrameKind::Text },
    }
}

/// A short, stable, non-reversible tag for display names.
fn short_hash(s: &str) -> String {
    let h = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("{:06x}", h & 0xff_ffff)
}

/// Resolves once `rx` reads `true` (or its sender is gone).
pub async fn wait_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use futures_util::Stream;

    use super::*;

    fn future_size1<F: Fn(A) -> Fut, A, Fut>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    fn future_size4<F: Fn(A, B, C, D) -> Fut, A, B, C, D, Fut>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    type Inbounds = Pin<Box<dyn Stream<Item = Inbound> + Send>>;

    /// Every connection holds the session's future as long as it lives; the
    /// join path (auth, accounts, store, hub) and the periodic touch are
    /// boxed so that their large states are not part of it.
    #[test]
    fn the_join_path_is_not_part_of_the_session_future() {
        let run = future_size4(&run::<Inbounds>);
        let join = future_size4(&Session::join);
        let touch = future_size1(&Session::touch);
        eprintln!("session::run {run} B; boxed: join {join} B, touch {touch} B");
        assert!(run < join && run < touch, "session::run is {run} B: the join path is inlined again");
    }
}
