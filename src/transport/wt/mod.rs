//! The WebTransport transport (wtransport over QUIC, UDP):
//! `https://HOST:PORT/api/live-stream/{eventId}[?access_token=…]`.
//!
//! The session request is checked before it is accepted: another path or an
//! invalid event id gets 404, a full server 429. An accepted session is
//! handed to [`crate::session::run`], like a WebSocket, always in the binary
//! dialect:
//!
//! - the client opens **one bidirectional stream** that carries
//!   length-prefixed frames ([`lockstep_protocol::write_frame`]) both ways:
//!   `Hello`, `Command`, `Report`, `Ping` and `Nack` in; `Welcome`,
//!   `TimelineChanged`, `ViewerCount`, member events and `Error` out. Further
//!   streams are ignored.
//!   A bad frame prefix (over 8 KiB, or not a canonical varint) cannot be
//!   resynchronised and closes the session with `FrameTooLarge` (4002);
//! - **datagrams** carry `Tick`, `Pong` and a copy of `TimelineChanged` out
//!   once the client's `Hello` has the `DATAGRAMS` capability (with
//!   `DATAGRAM_CHANGES` too, each change once, as a datagram only, the stream
//!   repairing a lost one on a `Nack`: see `session::writer`; before that,
//!   and without it, ticks and pongs go on the stream), never more than
//!   `min(max_datagram_size(), 1200)` bytes (anything larger goes on the
//!   stream instead); `Ping` and `Report` come in. An inbound
//!   datagram over 1200 bytes is counted (`lockstep_drops_total{reason=
//!   "oversized_datagram"}`) and dropped; an undecodable one is counted by the
//!   session; neither closes the session;
//! - a close sends the `Error` frame on the stream and finishes the stream;
//!   once the client has acknowledged it, the client has 300 ms to
//!   close the session itself, then the server closes the connection with
//!   the same application code as the WebSocket close code (a QUIC close
//!   discards stream data not yet read, so a client should close when it
//!   reads a closing `Error`).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use futures_util::{FutureExt, StreamExt};
use lockstep_protocol::ErrorCode;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tracing::{Instrument, debug, info_span};
use wtransport::endpoint::endpoint_side;
use wtransport::endpoint::{IncomingSession, SessionRequest};
use wtransport::{Connection, Endpoint, ServerConfig, VarInt};

mod config;
mod inbound;
mod outbound;

pub(crate) use self::config::server_config;
use self::config::{bind_udp, finish_config};
use self::inbound::{activity, datagrams, frames, rtt};
use self::outbound::WtTransport;

use super::Gate;
use crate::cert::{CertError, CertPair};
use crate::session::{self, Binary, Dialect, Outbox, SessionParams, write_loop};

/// QUIC idle timeout: a peer silent for this long is gone.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// QUIC keep-alive interval (well under the idle timeout and NAT timeouts).
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(4);
/// Time allowed from the first packet to the session request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The URL path prefix of sessions.
const PATH_PREFIX: &str = "/api/live-stream/";

/// The bound WebTransport endpoint.
pub(crate) struct WtEndpoint {
    endpoint: Endpoint<endpoint_side::Server>,
    addr: SocketAddr,
}

impl fmt::Debug for WtEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WtEndpoint").field("addr", &self.addr).finish()
    }
}

impl WtEndpoint {
    /// Binds the UDP socket at `addr` serving `certs`.
    pub(crate) fn bind(addr: SocketAddr, certs: &CertPair) -> std::io::Result<WtEndpoint> {
        let socket = bind_udp(addr)?;
        let cfg =
            finish_config(ServerConfig::builder().with_bind_socket(socket), certs).map_err(std::io::Error::other)?;
        let endpoint = Endpoint::server(cfg)?;
        let addr = endpoint.local_addr()?;
        Ok(WtEndpoint { endpoint, addr })
    }

    /// The address actually bound.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `certs` to new connections from now on; open ones keep theirs.
    pub(crate) fn reload(&self, certs: &CertPair) -> Result<(), CertError> {
        let cfg = server_config(self.addr, certs)?;
        self.endpoint.reload_config(cfg, false).map_err(CertError::Install)
    }

    /// Accepts sessions until the server shuts down. Must have returned
    /// before [`Self::close`] (wtransport panics in `accept` on a closed
    /// endpoint).
    pub(crate) async fn serve(self: Arc<Self>, app: Gate) {
        let mut shutdown = app.session.shutdown.clone();
        let mut next_id = 0u64;
        loop {
            let incoming = tokio::select! {
                incoming = self.endpoint.accept() => incoming,
                _ = crate::util::wait_true(&mut shutdown) => return,
            };
            next_id += 1;
            let span = info_span!("wt", id = next_id, peer = %canonical(incoming.remote_address()));
            tokio::spawn(handle(incoming, app.clone()).instrument(span));
        }
    }

    /// Closes every connection with `code` and waits, at most `timeout`, for
    /// them to be acknowledged.
    pub(crate) async fn close(&self, code: ErrorCode, reason: &str, timeout: Duration) {
        self.endpoint.close(VarInt::from_u32(u32::from(code.as_u16())), reason.as_bytes());
        let _ = tokio::time::timeout(timeout, self.endpoint.wait_idle()).await;
    }
}

/// IPv4 peers of a dual-stack socket appear as `::ffff:a.b.c.d`; show them as IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Why a session request is refused before it is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not a session path, or an invalid event id: 404.
    NotFound,
    /// No room for another connection, or too many attempts from this IP: 429.
    TooMany,
    /// The URL's access token is missing where required, invalid or expired: 403.
    Forbidden,
}

/// The event id and access token of a session request path, or 404.
pub(crate) fn parse_path(path: &str) -> Result<(String, Option<String>), Refusal> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let raw = path.strip_prefix(PATH_PREFIX).ok_or(Refusal::NotFound)?;
    if raw.contains('/') {
        return Err(Refusal::NotFound);
    }
    let event_id = percent_encoding::percent_decode_str(raw).decode_utf8().map_err(|_| Refusal::NotFound)?;
    if !crate::util::valid_event_id(&event_id) {
        return Err(Refusal::NotFound);
    }
    let token =
        form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "access_token").map(|(_, v)| v.into_owned());
    Ok((event_id.into_owned(), token))
}

/// Checks a session request; on success the permit holds a connection slot.
fn admit(req: &SessionRequest, app: &Gate) -> Result<(String, Option<String>, OwnedSemaphorePermit), Refusal> {
    let (event_id, token) = parse_path(req.path())?;
    if app.ip_limits.check_connect(req.remote_address().ip().to_canonical()).is_err() {
        return Err(Refusal::TooMany);
    }
    // A token in the URL is checked before the session is accepted; without
    // one, the token may still come in `Hello` (the session checks it there).
    if let Some(Err(e)) = token.as_deref().map(|t| app.session.auth.verify(t)) {
        crate::metrics::error(e.code());
        return Err(Refusal::Forbidden);
    }
    let Ok(permit) = app.conn_limit.clone().try_acquire_owned() else {
        crate::metrics::error(ErrorCode::ServerFull);
        return Err(Refusal::TooMany);
    };
    Ok((event_id, token, permit))
}

/// One session, from its first packet to its end: the handshake and the
/// session request, then the session. The task lives as long as the
/// session, and is as large as its largest state: the handshake's (about
/// 3 KiB) is boxed, so it is freed once the session starts.
fn handle(incoming: IncomingSession, app: Gate) -> impl Future<Output = ()> {
    Box::pin(accept(incoming, app)).then(|accepted| match accepted {
        Some((app, params, conn, permit)) => Either::Left(serve_session(app, params, conn, permit)),
        None => Either::Right(std::future::ready(())),
    })
}

/// Completes the handshake, checks the session request and accepts it;
/// `None` if it failed or was refused (and answered).
async fn accept(
    incoming: IncomingSession,
    app: Gate,
) -> Option<(Gate, SessionParams, Connection, OwnedSemaphorePermit)> {
    let req = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
        Ok(Ok(req)) => req,
        Ok(Err(e)) => {
            debug!(error = %e, "handshake failed");
            return None;
        }
        Err(_) => {
            debug!("handshake timed out");
            return None;
        }
    };
    let (event_id, token, permit) = match admit(&req, &app) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            debug!(path = req.path(), ?refusal, "session refused");
            match refusal {
                Refusal::NotFound => req.not_found().await,
                Refusal::TooMany => req.too_many_requests().await,
                Refusal::Forbidden => req.forbidden().await,
            }
            return None;
        }
    };
    let peer = canonical(req.remote_address());
    let conn = match req.accept().await {
        Ok(conn) => conn,
        Err(e) => {
            debug!(error = %e, "session accept failed");
            return None;
        }
    };
    let params =
        SessionParams { event_id, transport: "webtransport", dialect: Dialect::Binary, peer, device_hint: None, token };
    Some((app, params, conn, permit))
}

/// Serves an accepted session; `permit` holds its connection slot until
/// the end. Like `ws::serve_socket`, not an `async fn`: it sets up when
/// called and returns the session chained with the close, so the
/// long-lived future does not also keep its arguments.
fn serve_session(
    app: Gate,
    params: SessionParams,
    conn: Connection,
    permit: OwnedSemaphorePermit,
) -> impl Future<Output = ()> {
    let outbox = Arc::new(Outbox::with_encoder(app.session.cfg.control_queue, Arc::new(Binary)));
    let (stream_tx, stream_rx) = oneshot::channel();
    let transport = WtTransport { conn: conn.clone(), stream: None, stream_rx: Some(stream_rx), buf: Vec::new() };
    let writer = tokio::spawn(write_loop(transport, outbox.clone(), app.session.hub.clock()));
    let inbound = futures_util::stream::select(
        futures_util::stream::select(datagrams(conn.clone()), frames(conn.clone(), stream_tx)),
        futures_util::stream::select(activity(conn.clone()), rtt(conn.clone())),
    );
    // The session ends at the first end of either channel.
    let inbound = inbound.take_while(|m| std::future::ready(m.is_some())).filter_map(std::future::ready);
    session::run(app.session, params, Box::pin(inbound), outbox.clone()).then(move |inbound| async move {
        session::finish(inbound, writer, &outbox).await;
        // The writer closed the connection with the close reason; make sure.
        match outbox.close_reason() {
            Some(close) => conn.close(close_code(close.code), session::close_reason(&close.message).as_bytes()),
            None => conn.close(VarInt::from_u32(0), b""),
        }
        drop(permit);
    })
}

fn close_code(code: ErrorCode) -> VarInt {
    VarInt::from_u32(u32::from(code.as_u16()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked_before_accepting() {
        assert_eq!(parse_path("/api/live-stream/ev-1"), Ok(("ev-1".into(), None)));
        assert_eq!(
            parse_path("/api/live-stream/ev%2D1?x=1&access_token=a%20b+c"),
            Ok(("ev-1".into(), Some("a b c".into())))
        );
        for bad in [
            "/",
            "/api/live-stream/",
            "/api/live-stream",
            "/api/live-stream/ev/state",
            "/api/live-stream/%20bad",
            "/api/live-stream/%ff",
            "/other/ev",
        ] {
            assert_eq!(parse_path(bad), Err(Refusal::NotFound), "{bad}");
        }
        let long = format!("/api/live-stream/{}", "e".repeat(129));
        assert_eq!(parse_path(&long), Err(Refusal::NotFound));
    }

    fn future_size2<F: Fn(A, B) -> Fut, A, B, Fut>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    fn future_size4<F: Fn(A, B, C, D) -> Fut, A, B, C, D, Fut>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    type Inbounds = std::pin::Pin<Box<dyn futures_util::Stream<Item = crate::session::Inbound> + Send>>;

    /// A session's task is the session future plus a few handles: the
    /// handshake's state is boxed, the arguments are not stored twice.
    #[test]
    fn the_session_task_is_the_session_future() {
        let task = future_size2(&handle);
        let served = future_size4(&serve_session);
        let run = future_size4(&session::run::<Inbounds>);
        eprintln!("handle {task} B, serve_session {served} B, session::run {run} B");
        assert!(task <= served + 32 && served <= run + 128, "handle {task} B, serve_session {served} B, run {run} B");
    }
}
