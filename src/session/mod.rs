//! One client session, written once for every transport.
//!
//! A transport turns its connection into a stream of [`Inbound`] items and a
//! [`Transport`] that the one writer ([`write_loop`]) drains the session's
//! [`Outbox`] into; everything else (the `Hello` handshake and the join, the
//! auth hook, rate limits, bad input, timeouts, commands, reports, pongs,
//! the closing error and the close grace) happens here, identically for
//! WebSocket, its JSON dialect and WebTransport.

mod encode;
mod join;
mod outbox;
mod writer;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use lockstep_protocol::{Action, ClientMsg, ErrorCode, caps, decode_client};
use tokio::sync::watch;
use tracing::{debug, warn};

pub(crate) use self::encode::{Binary, Encoder, Wire};

/// `Hello`'s checks before any credentials (for the fuzz target `hello`).
pub(crate) fn check_hello_for_fuzzing(hello: &lockstep_protocol::Hello, url_event: &str) -> Result<(), ()> {
    join::check_hello(hello, url_event).map_err(drop)
}
use self::join::{JoinRequest, Joined, Refusal};
pub(crate) use self::outbox::{Direct, DirectWrite, Outbox};
pub(crate) use self::writer::{Transport, close_reason, finish, write_loop};
use crate::accounts::Accounts;
use crate::auth::Authenticator;
use crate::hub::{Extra, Hub};

/// What a transport hands to the session.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A reliable binary message (WebSocket binary frame or stream frame).
    Frame(Bytes),
    /// A command of the legacy JSON dialect (parsed by the transport), with
    /// the fields to pass through to the change it causes.
    Legacy {
        /// What to do.
        action: Action,
        /// Fields passed through to the broadcast.
        extra: Arc<Extra>,
    },
    /// A message the transport could not take, with the error it earns (a
    /// text frame on the binary protocol, JSON that does not parse, …).
    Invalid(ErrorCode, String),
    /// A datagram.
    Datagram(Bytes),
    /// A reliable message larger than the protocol allows, by its size.
    TooLarge(usize),
    /// Transport keep-alive traffic.
    Activity,
    /// The connection's round trip as the transport measured it (QUIC's
    /// smoothed RTT, a timed WebSocket ping); `heard`: the peer just answered
    /// (it counts as activity), else a reading of the transport's own.
    Rtt {
        /// The round trip.
        rtt: Duration,
        /// Whether the peer's answer came with it.
        heard: bool,
    },
}

/// What every session needs from the server. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    /// The rooms.
    pub(crate) hub: Hub,
    /// Sessions, devices, invitations.
    pub(crate) accounts: Accounts,
    /// Verifies access tokens.
    pub(crate) auth: Arc<Authenticator>,
    /// Session settings.
    pub(crate) cfg: Arc<SessionConfig>,
    /// Turns true when the server shuts down.
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// The host of `room_id` if it is a watch party's room.
pub(crate) async fn party_host(accounts: &Accounts, room_id: &str) -> Option<String> {
    if !room_id.contains(crate::accounts::PARTY_SEP) {
        return None;
    }
    accounts.store().party_host(room_id).await.ok().flatten()
}

/// Settings shared by all sessions.
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    /// Time allowed before `Hello`.
    pub(crate) hello_timeout: Duration,
    /// Time allowed without any inbound traffic.
    pub(crate) idle_timeout: Duration,
    /// Sustained inbound messages per second.
    pub(crate) msgs_per_sec: u32,
    /// Inbound burst.
    pub(crate) msg_burst: u32,
    /// Reliable frames queued per connection.
    pub(crate) control_queue: usize,
}

/// Which encoding a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// The binary protocol: the client sends `Hello`.
    Binary,
    /// The legacy JSON dialect: the connection joins as it opens.
    Json,
}

/// Who is connecting, and how.
#[derive(Debug, Clone)]
pub(crate) struct SessionParams {
    /// The event id from the URL.
    pub(crate) event_id: String,
    /// `"websocket"` or `"webtransport"`.
    pub(crate) transport: &'static str,
    /// Binary protocol or the JSON dialect.
    pub(crate) dialect: Dialect,
    /// The peer's address.
    pub(crate) peer: SocketAddr,
    /// Device id from the URL (JSON dialect clients never send `Hello`).
    pub(crate) device_hint: Option<String>,
    /// Access token from the URL, if any.
    pub(crate) token: Option<String>,
}

/// Bad frames tolerated on one connection before it is closed.
const MAX_STRIKES: u32 = 10;
/// Consecutive one-second windows with dropped messages before a flood is closed.
const FLOOD_WINDOWS: u32 = 3;
/// Realtime activity refreshes the viewing session at most this often.
const TOUCH_INTERVAL: Duration = Duration::from_secs(10);
/// Longest a session refresh may take before it is given up.
const TOUCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A join under way, polled beside the session's timers.
type Joining = Pin<Box<dyn Future<Output = Result<Joined, Refusal>> + Send>>;

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
pub(crate) fn run<S>(app: Context, params: SessionParams, inbound: S, outbox: Arc<Outbox>) -> impl Future<Output = S>
where
    S: Stream<Item = Inbound> + Unpin,
{
    let cfg = app.cfg.clone();
    let burst = NonZeroU32::new(cfg.msg_burst.max(1)).expect("nonzero");
    let rate = NonZeroU32::new(cfg.msgs_per_sec.max(1)).expect("nonzero");
    let shutdown = app.shutdown.clone();
    let mut s = Session {
        app,
        limiter: RateLimiter::direct_with_clock(Quota::per_second(rate).allow_burst(burst), crate::limits::clock()),
        params,
        outbox,
        joined: None,
        joining: None,
        last_touch: Instant::now(),
        early_rtt: None,
        strikes: 0,
        window_start: Instant::now(),
        window_drops: 0,
        flood_windows: 0,
    };
    let mut inbound = inbound;
    async move {
        metrics::gauge!("lockstep_connections", "transport" => s.params.transport).increment(1.0);
        if s.params.dialect == Dialect::Json {
            let device_id = s.params.device_hint.clone().unwrap_or_else(|| format!("json:{}", s.params.peer));
            s.start_join(device_id, 0, None);
        }
        s.serve(&cfg, &mut inbound, shutdown).await;
        if let Some(j) = s.joined.take() {
            j.room.leave(j.member);
        }
        metrics::gauge!("lockstep_connections", "transport" => s.params.transport).decrement(1.0);
        inbound
    }
}

struct Session {
    app: Context,
    limiter: DefaultDirectRateLimiter,
    params: SessionParams,
    outbox: Arc<Outbox>,
    joined: Option<Joined>,
    /// Boxed: a join's state is large and lives only while it runs.
    joining: Option<Joining>,
    last_touch: Instant,
    /// The transport's latest round trip, measured before the join completed (handed to the room with it).
    early_rtt: Option<Duration>,
    strikes: u32,
    window_start: Instant,
    window_drops: u32,
    flood_windows: u32,
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
                // While a join runs, nothing more is read: the client waits
                // for its `Welcome` (and the socket's buffer pushes back).
                item = inbound.next(), if self.joining.is_none() => {
                    let Some(item) = item else { return };
                    if !matches!(item, Inbound::Rtt { heard: false, .. }) {
                        last_seen = tokio::time::Instant::now();
                    }
                    self.on_inbound(item);
                }
                done = async { self.joining.as_mut().expect("guarded").await }, if self.joining.is_some() => {
                    self.joining = None;
                    match done {
                        Ok(joined) => {
                            if let Some(rtt) = self.early_rtt.take() {
                                joined.room.rtt(joined.member, rtt);
                            }
                            self.joined = Some(joined);
                        }
                        Err((code, message)) => self.fail(code, message, 0),
                    }
                }
                _ = outbox.closed() => return,
                _ = tokio::time::sleep_until(deadline) => {
                    self.outbox.close(timeout_code, timeout_code.as_str());
                    crate::metrics::error(timeout_code);
                    return;
                }
                _ = crate::util::wait_true(&mut shutdown) => {
                    self.outbox.close(ErrorCode::ShuttingDown, "the server is shutting down");
                    return;
                }
            }
        }
    }

    fn on_inbound(&mut self, item: Inbound) {
        let recv_us = self.app.hub.clock().now_us();
        match item {
            Inbound::Activity => return,
            // The transport's own measurement: not the client's traffic.
            Inbound::Rtt { rtt, .. } => {
                match &self.joined {
                    Some(j) => j.room.rtt(j.member, rtt),
                    // A far client's first reading may come before its Welcome: kept for the join.
                    None => self.early_rtt = Some(rtt),
                }
                return;
            }
            _ => {}
        }
        if !self.admit() {
            return;
        }
        match item {
            Inbound::Activity | Inbound::Rtt { .. } => {}
            Inbound::TooLarge(len) => {
                self.fail(ErrorCode::FrameTooLarge, format!("a {len}-byte message exceeds the limit"), 0);
            }
            Inbound::Invalid(code, message) => self.fail(code, message, 0),
            Inbound::Frame(bytes) => match decode_client(&bytes) {
                Ok(msg) => self.dispatch(msg, recv_us),
                Err(e) => self.fail(e.code(), e.to_string(), 0),
            },
            Inbound::Datagram(bytes) => match decode_client(&bytes) {
                // Datagram errors are never answered (SPEC §9): a report
                // before Hello is just dropped.
                Ok(ClientMsg::Report(_) | ClientMsg::LiveReport(_) | ClientMsg::SyncReport(_))
                    if self.joined.is_none() =>
                {
                    crate::metrics::drop("datagram_before_hello")
                }
                Ok(
                    msg @ (ClientMsg::Ping(_)
                    | ClientMsg::Report(_)
                    | ClientMsg::LiveReport(_)
                    | ClientMsg::SyncReport(_)),
                ) => self.dispatch(msg, recv_us),
                Ok(other) => {
                    debug!(kind = other.name(), "reliable-only message in a datagram dropped");
                    crate::metrics::drop("datagram_wrong_type");
                }
                Err(_) => crate::metrics::drop("bad_datagram"),
            },
            Inbound::Legacy { action, extra } => {
                metrics::counter!("lockstep_messages_in_total", "type" => "playback_sync").increment(1);
                if let Some(j) = &self.joined
                    && !j.room.command(j.member, 0, action, Some(extra))
                {
                    self.room_busy(0);
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
            self.outbox.push_error(ErrorCode::RateLimited, "too many messages; some were dropped", 0);
        }
        false
    }

    fn dispatch(&mut self, msg: ClientMsg, recv_us: u64) {
        metrics::counter!("lockstep_messages_in_total", "type" => msg.name()).increment(1);
        match msg {
            ClientMsg::Hello(hello) => {
                if self.joined.is_some() || self.joining.is_some() {
                    return self.fail(ErrorCode::AlreadyJoined, "this connection has joined already", 0);
                }
                if let Err((code, message)) = join::check_hello(&hello, &self.params.event_id) {
                    return self.fail(code, message, 0);
                }
                self.start_join(hello.device_id, hello.caps, hello.token);
            }
            ClientMsg::Ping(p) => self.outbox.push_pong(p.client_time, recv_us),
            ClientMsg::Command(c) => match &self.joined {
                Some(j) => {
                    if !j.room.command(j.member, c.request_id, c.action, None) {
                        self.room_busy(c.request_id);
                    }
                }
                None => self.fail(ErrorCode::NotJoined, "send Hello first", c.request_id),
            },
            ClientMsg::Report(r) => match &self.joined {
                Some(j) => {
                    j.room.report(j.member, r);
                    self.touch();
                }
                None => self.fail(ErrorCode::NotJoined, "send Hello first", 0),
            },
            ClientMsg::Suspend(s) => match &self.joined {
                Some(_) if !lockstep_protocol::valid_suspend_reason(&s.reason) => self.fail(
                    ErrorCode::InvalidArgument,
                    "unknown suspension reason (buffering, seeking, interstitial, userActionRequired, notFollowing, \
                     custom:<name>)",
                    0,
                ),
                Some(j) => j.room.suspend(j.member, Some(s.reason)),
                None => self.fail(ErrorCode::NotJoined, "send Hello first", 0),
            },
            ClientMsg::React(r) => match &self.joined {
                Some(_) if !lockstep_protocol::valid_emoji(&r.emoji) => self.fail(
                    ErrorCode::InvalidArgument,
                    "a reaction is 1-32 bytes of emoji (no ASCII, control or white-space character)",
                    0,
                ),
                Some(j) => {
                    if !j.room.react(j.member, r.emoji) {
                        crate::metrics::drop("reaction_mailbox_full");
                    }
                }
                None => self.fail(ErrorCode::NotJoined, "send Hello first", 0),
            },
            ClientMsg::Media(m) => match &self.joined {
                Some(j) => {
                    if !j.room.media(j.member, m.request_id, m.op) {
                        self.room_busy(m.request_id);
                    }
                }
                None => self.fail(ErrorCode::NotJoined, "send Hello first", m.request_id),
            },
            ClientMsg::Chat(c) => match &self.joined {
                // The room checks the text (its length limit is the room's).
                Some(j) => {
                    if !j.room.chat(j.member, c.request_id, c.text) {
                        self.room_busy(c.request_id);
                    }
                }
                None => self.fail(ErrorCode::NotJoined, "send Hello first", c.request_id),
            },
            ClientMsg::Resume => match &self.joined {
                Some(j) => j.room.suspend(j.member, None),
                None => self.fail(ErrorCode::NotJoined, "send Hello first", 0),
            },
            ClientMsg::SyncReport(r) => match &self.joined {
                Some(j) => {
                    j.room.sync_report(j.member, r);
                    self.touch();
                }
                None => self.fail(ErrorCode::NotJoined, "send Hello first", 0),
            },
            ClientMsg::LiveReport(r) => match &self.joined {
                Some(j) => {
                    j.room.live_report(j.member, r);
                    self.touch();
                }
                None => self.fail(ErrorCode::NotJoined, "send Hello first", 0),
            },
            // A missed datagram-only change: the stream repairs it (at most
            // once per change; nothing for clients without the capability).
            ClientMsg::Nack(n) => match &self.joined {
                Some(_) => {
                    if self.outbox.caps() & caps::DATAGRAM_CHANGES != 0 && self.outbox.repair(n.epoch) {
                        metrics::counter!("lockstep_messages_out_total", "type" => "timeline_repair").increment(1);
                    }
                }
                None => self.fail(ErrorCode::NotJoined, "send Hello first", 0),
            },
        }
    }

    /// Starts joining: authorize, device slot, room (see [`join::join`]).
    fn start_join(&mut self, device_id: String, caps: u32, hello_token: Option<String>) {
        let req = JoinRequest {
            room_id: self.params.event_id.clone(),
            device_id,
            caps,
            token: hello_token.filter(|t| !t.is_empty()).or_else(|| self.params.token.clone()),
        };
        self.joining = Some(Box::pin(join::join(self.app.clone(), req, self.outbox.clone())));
    }

    /// The room's mailbox is full: the command is refused, nothing else.
    fn room_busy(&mut self, request_id: u32) {
        crate::metrics::drop("room_busy");
        self.outbox.push_error(ErrorCode::RateLimited, "the room is busy; try again", request_id);
    }

    /// Keeps the viewing session alive while realtime traffic flows: at most
    /// once per [`TOUCH_INTERVAL`], in a task of its own (bounded), so the
    /// session never waits on the store.
    fn touch(&mut self) {
        if self.last_touch.elapsed() < TOUCH_INTERVAL {
            return;
        }
        self.last_touch = Instant::now();
        if let Some(j) = &self.joined {
            let (accounts, user, device, room) =
                (self.app.accounts.clone(), j.user.clone(), j.device_id.clone(), self.params.event_id.clone());
            tokio::spawn(async move {
                if tokio::time::timeout(TOUCH_TIMEOUT, accounts.touch(&user, &device, &room)).await.is_err() {
                    warn!("viewing session refresh timed out");
                }
            });
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
        self.outbox.push_error(code, &message, request_id);
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use futures_util::Stream;

    use super::*;

    fn future_size3<F: Fn(A, B, C) -> Fut, A, B, C, Fut>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    fn future_size4<F: Fn(A, B, C, D) -> Fut, A, B, C, D, Fut>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    type Inbounds = Pin<Box<dyn Stream<Item = Inbound> + Send>>;

    /// Every connection holds the session's future as long as it lives; the
    /// join path (auth, accounts, store, hub) is boxed and the touch runs
    /// in a task of its own, so that their large states are not part of it.
    #[test]
    fn the_join_path_is_not_part_of_the_session_future() {
        let run = future_size4(&run::<Inbounds>);
        let join = future_size3(&join::join);
        eprintln!("session::run {run} B; boxed: join {join} B");
        assert!(run < join, "session::run is {run} B: the join path is inlined again");
        assert!(run <= 1200, "session::run is {run} B (1,064 B when this bound was set)");
    }
}
