//! The WebSocket transport (axum): `GET /api/live-stream/{eventId}`.
//!
//! With the `lockstep.v1` subprotocol, binary frames carry the protocol and
//! the client must send `Hello`. Without it, text frames carry the legacy JSON
//! dialect and the client joins on connect. Either way the connection is
//! handed to [`crate::session::run`].
//!
//! The handshake is ours (HTTP/1.1, RFC 6455 §4.2), so that the upgraded
//! connection can be taken back as the plain TCP socket it is: then the room
//! writes its frames straight into it ([`raw`]). Behind `--http-tls`,
//! tungstenite's sink writes instead.

mod raw;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::future::Either;
use futures_util::stream::SplitSink;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use lockstep_protocol::limits::MAX_FRAME;
use lockstep_protocol::{Action, ErrorCode};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::Gate;
use super::json::{self, JsonEncoder, JsonIn};
use crate::clock::ServerClock;
use crate::edge::ClientAddr;
use crate::session::{self, Binary, Dialect, Encoder, Inbound, Outbox, SessionParams, Transport, Wire, write_loop};
use crate::util::{api_error, valid_event_id};

/// The WebSocket subprotocol of the binary protocol.
pub(crate) const SUBPROTOCOL: &str = "lockstep.v1";
/// Largest WebSocket message tungstenite reassembles; larger ones break the
/// connection. Messages between `MAX_FRAME` and this get `FrameTooLarge`.
const WS_MAX_MESSAGE: usize = 64 * 1024;
/// Bytes tungstenite reads at once. Its default (128 KiB) is zero-filled on
/// every read, so it costs 128 KiB of memory per connection; clients send
/// small messages, and a larger one grows the buffer as it needs.
const READ_BUFFER: usize = 512;
/// Frames tungstenite collects before writing (behind TLS, where it writes).
/// The writer flushes after each batch, so a batch (a change and its tick,
/// say) is one `write` syscall, not one per frame.
const WRITE_BUFFER: usize = 16 * 1024;
/// Interval of server WebSocket pings (they keep idle legacy clients alive,
/// and time the connection's round trip for the room's lead).
const PING_INTERVAL: Duration = Duration::from_secs(15);

/// Times the server's pings: each carries the server time it was sent at (8
/// bytes), and the pong that echoes the latest one gives the round trip
/// ([`Inbound::Rtt`]). Only the answer to the latest ping counts, once: an
/// unsolicited or replayed pong proves nothing and is only activity.
#[derive(Debug)]
pub(super) struct PingTimer {
    clock: ServerClock,
    /// When the latest unanswered ping was sent (0: none).
    sent_us: AtomicU64,
}

impl PingTimer {
    fn new(clock: ServerClock) -> Arc<Self> {
        Arc::new(PingTimer { clock, sent_us: AtomicU64::new(0) })
    }

    /// The payload of a ping sent now.
    pub(super) fn ping(&self) -> Bytes {
        let now = self.clock.now_us();
        self.sent_us.store(now, Ordering::Relaxed);
        Bytes::copy_from_slice(&now.to_be_bytes())
    }

    /// The round trip a pong tells, if it answers the latest ping.
    fn pong(&self, payload: &[u8]) -> Option<Duration> {
        let sent = u64::from_be_bytes(payload.try_into().ok()?);
        if sent == 0 {
            return None;
        }
        self.sent_us.compare_exchange(sent, 0, Ordering::Relaxed, Ordering::Relaxed).ok()?;
        Some(Duration::from_micros(self.clock.now_us().saturating_sub(sent)))
    }
}

/// Query parameters of the WebSocket URL.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WsQuery {
    /// Device id for JSON-dialect clients.
    device_id: Option<String>,
    /// Access token (the name is the public contract: `access_token`).
    #[serde(rename = "access_token")]
    access_token: Option<String>,
}

/// The realtime endpoint: a WebSocket upgrade (subprotocol `lockstep.v1` for
/// the binary protocol, none for the legacy JSON dialect).
#[utoipa::path(get, path = "/api/live-stream/{event_id}", tag = "realtime",
    params(("event_id" = String, Path, description = "The event (room) id"),
        ("access_token" = Option<String>, Query, description = "Access token (or send it in Hello)"),
        ("deviceId" = Option<String>, Query, description = "Device id of JSON-dialect clients")),
    responses((status = 101, description = "Switching protocols"),
        (status = 400, body = crate::util::ApiError, description = "invalid event id, Sec-WebSocket-Version not 13, or no Sec-WebSocket-Key"),
        (status = 405, body = crate::util::ApiError, description = "not a GET"),
        (status = 426, body = crate::util::ApiError, description = "not a WebSocket upgrade request"),
        (status = 505, body = crate::util::ApiError, description = "not HTTP/1.1"),
        (status = 403, body = crate::util::ApiError, description = "a browser page of an origin not in --cors-origins"),
        (status = 429, body = crate::util::ApiError, description = "too many connection attempts from this IP"),
        (status = 503, body = crate::util::ApiError, description = "server full")))]
pub(crate) async fn upgrade(
    State(app): State<Gate>,
    Path(event_id): Path<String>,
    Query(q): Query<WsQuery>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    ws: Upgrade,
) -> Response {
    if !valid_event_id(&event_id) {
        return api_error(StatusCode::BAD_REQUEST, "invalid_event_id", crate::util::INVALID_EVENT_ID);
    }
    if let Err(retry) = app.ip_limits.check_connect(peer.ip()) {
        return crate::limits::too_many(retry);
    }
    // After the limit: refused attempts count, and their log lines are bounded.
    if !app.origins.allows_upgrade(&headers) {
        tracing::info!(%peer, origin = ?headers.get(axum::http::header::ORIGIN), "WebSocket refused: origin not in --cors-origins");
        return api_error(StatusCode::FORBIDDEN, "origin_not_allowed", "this page's origin may not connect");
    }
    let Ok(permit) = app.conn_limit.clone().try_acquire_owned() else {
        crate::metrics::error(lockstep_protocol::ErrorCode::ServerFull);
        return api_error(StatusCode::SERVICE_UNAVAILABLE, "server_full", "too many connections");
    };
    let binary = ws.binary;
    let dialect = if binary { Dialect::Binary } else { Dialect::Json };
    let params = SessionParams {
        event_id,
        transport: "websocket",
        dialect,
        peer,
        device_hint: q.device_id.filter(|d| !d.is_empty() && d.len() <= lockstep_protocol::limits::MAX_DEVICE_ID),
        token: q.access_token,
    };
    // One box for what the connection needs, freed as the socket is served:
    // the task waiting for the upgrade holds 8 bytes, not the 256 of these.
    let ctx = Box::new((app, params, permit));
    let on_upgrade = ws.on_upgrade;
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => serve_upgraded(ctx, upgraded).await,
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut res = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, ws.accept);
    if binary {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    }
    res
}

/// A checked WebSocket upgrade request (HTTP/1.1, RFC 6455 §4.2.1).
#[derive(Debug)]
pub(crate) struct Upgrade {
    on_upgrade: OnUpgrade,
    accept: HeaderValue,
    /// The client offered [`SUBPROTOCOL`] (subprotocols compare exactly).
    binary: bool,
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let bad = |code: &str, message: &str| api_error(StatusCode::BAD_REQUEST, code, message);
        if parts.version != Version::HTTP_11 {
            return Err(api_error(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "http1_required",
                "WebSocket connections use HTTP/1.1",
            ));
        }
        if parts.method != Method::GET {
            return Err(api_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "a WebSocket upgrade is a GET",
            ));
        }
        if !header_has_token(&parts.headers, header::CONNECTION, "upgrade")
            || !header_has_token(&parts.headers, header::UPGRADE, "websocket")
        {
            return Err(api_error(StatusCode::UPGRADE_REQUIRED, "upgrade_required", "this is a WebSocket endpoint"));
        }
        if parts.headers.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
            return Err(bad("bad_websocket_version", "Sec-WebSocket-Version must be 13"));
        }
        let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY) else {
            return Err(bad("bad_websocket_key", "Sec-WebSocket-Key is missing"));
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let accept = HeaderValue::from_str(&accept).expect("base64 is a header value");
        let binary = parts
            .headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == SUBPROTOCOL);
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return Err(api_error(
                StatusCode::UPGRADE_REQUIRED,
                "upgrade_required",
                "this connection cannot be upgraded",
            ));
        };
        Ok(Upgrade { on_upgrade, accept, binary })
    }
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(WS_MAX_MESSAGE))
        .max_frame_size(Some(WS_MAX_MESSAGE))
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
}

/// An upgraded connection as a WebSocket: a plain TCP socket (with the
/// direct write path) or anything else (TLS), which tungstenite writes.
enum Opened {
    Raw(Arc<raw::RawSocket>, WebSocketStream<raw::SharedIo>),
    Plain(WebSocketStream<TokioIo<Upgraded>>),
}

async fn open(upgraded: Upgraded) -> Opened {
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let raw = raw::RawSocket::new(parts.io.into_inner());
            // hyper's read buffer (kilobytes) must not live as long as the
            // connection: copy what the client sent early, free the rest.
            let early = parts.read_buf.to_vec();
            drop(parts.read_buf);
            let io = raw::SharedIo(raw.clone());
            Opened::Raw(raw, WebSocketStream::from_partially_read(io, early, Role::Server, Some(ws_config())).await)
        }
        Err(upgraded) => Opened::Plain(
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(ws_config())).await,
        ),
    }
}

/// Serves an upgraded connection; `ctx` is the gate, the session's
/// parameters and the connection's slot (held until the end). Opening and
/// serving are chained with `then`, which stores one of them at a time.
fn serve_upgraded(
    ctx: Box<(Gate, SessionParams, OwnedSemaphorePermit)>,
    upgraded: Upgraded,
) -> impl Future<Output = ()> {
    open(upgraded).then(move |opened| match opened {
        Opened::Raw(raw, ws) => {
            let (sink, stream) = ws.split();
            Either::Left(serve_socket(ctx, stream, |outbox, pings| {
                outbox.set_direct(raw.clone());
                raw::RawTransport { raw, sink, pings }
            }))
        }
        Opened::Plain(ws) => {
            let (sink, stream) = ws.split();
            Either::Right(serve_socket(ctx, stream, |_, pings| WsTransport { sink, pings }))
        }
    })
}

/// Runs the session over a WebSocket's read half and the writer
/// `transport` makes (given the connection's outbox).
///
/// The setup runs before the returned future is first polled (this is not
/// an `async fn`): the future lives as long as the connection, and an
/// `async fn` would keep its arguments in it beside what they are moved into.
/// The session and the close that follows it are chained with `then`, which
/// stores one of them at a time.
fn serve_socket<R, T>(
    ctx: Box<(Gate, SessionParams, OwnedSemaphorePermit)>,
    stream: R,
    transport: impl FnOnce(&Outbox, Arc<PingTimer>) -> T,
) -> impl Future<Output = ()>
where
    R: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Send + 'static,
    T: Transport,
{
    let (app, params, permit) = *ctx;
    let dialect = params.dialect;
    let encoder: Arc<dyn Encoder> = match dialect {
        Dialect::Binary => Arc::new(Binary),
        Dialect::Json => Arc::new(JsonEncoder::new(&params.event_id)),
    };
    let outbox = Arc::new(Outbox::with_encoder(app.session.cfg.control_queue, encoder));
    let clock = app.session.hub.clock();
    let pings = PingTimer::new(clock);
    let writer = tokio::spawn(write_loop(transport(&outbox, pings.clone()), outbox.clone(), clock));
    let inbound = stream.map(move |m| match m {
        Ok(Message::Binary(b)) if b.len() > MAX_FRAME => Some(Inbound::TooLarge(b.len())),
        Ok(Message::Text(t)) if t.len() > MAX_FRAME => Some(Inbound::TooLarge(t.len())),
        Ok(Message::Binary(b)) => Some(match dialect {
            Dialect::Binary => Inbound::Frame(b),
            Dialect::Json => {
                Inbound::Invalid(ErrorCode::UnexpectedMessage, "binary frames need the lockstep.v1 subprotocol".into())
            }
        }),
        Ok(Message::Text(t)) => Some(match dialect {
            Dialect::Json => legacy(t.as_str()),
            Dialect::Binary => {
                Inbound::Invalid(ErrorCode::UnexpectedMessage, "text frames are only for the JSON dialect".into())
            }
        }),
        Ok(Message::Pong(p)) => Some(match pings.pong(&p) {
            Some(rtt) => Inbound::Rtt { rtt, heard: true },
            None => Inbound::Activity,
        }),
        Ok(Message::Ping(_) | Message::Frame(_)) => Some(Inbound::Activity),
        Ok(Message::Close(_)) => None,
        Err(e) => {
            tracing::debug!(error = %e, "websocket read ended");
            None
        }
    });
    // The session ends at the first close or error.
    let inbound = inbound.take_while(|m| std::future::ready(m.is_some())).filter_map(std::future::ready);
    let inbound = Box::pin(inbound);
    session::run(app.session, params, inbound, outbox.clone()).then(move |inbound| async move {
        session::finish(inbound, writer, &outbox).await;
        drop(permit);
    })
}

/// A text frame of the legacy JSON dialect, as the session takes it.
fn legacy(text: &str) -> Inbound {
    match json::parse(text) {
        Ok(JsonIn::PlaybackSync { position_ms, extra }) => {
            Inbound::Legacy { action: Action::Seek { position_ms }, extra: Arc::new(extra) }
        }
        Err(e) => Inbound::Invalid(e.code, e.message),
    }
}

/// The WebSocket side of the one writer where tungstenite writes (behind
/// TLS): frames gathered and flushed as one write per batch.
struct WsTransport<S> {
    sink: SplitSink<WebSocketStream<S>, Message>,
    pings: Arc<PingTimer>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for WsTransport<S> {
    async fn send(&mut self, frames: Vec<Wire>) -> std::io::Result<()> {
        for f in frames {
            let m = match f {
                Wire::Binary(b) => Message::Binary(b),
                Wire::Text(t) => match Utf8Bytes::try_from(t) {
                    Ok(t) => Message::Text(t),
                    Err(_) => continue,
                },
            };
            self.sink.feed(m).await.map_err(std::io::Error::other)?;
        }
        self.sink.flush().await.map_err(std::io::Error::other)
    }

    fn keepalive_interval(&self) -> Option<Duration> {
        Some(PING_INTERVAL)
    }

    async fn keepalive(&mut self) -> std::io::Result<()> {
        self.sink.send(Message::Ping(self.pings.ping())).await.map_err(std::io::Error::other)
    }

    async fn close(&mut self, code: ErrorCode, reason: &str) {
        close(&mut self.sink, code, reason).await;
    }
}

/// Sends the close frame through tungstenite (so it answers the client's
/// close reply correctly).
async fn close<S: AsyncRead + AsyncWrite + Unpin>(
    sink: &mut SplitSink<WebSocketStream<S>, Message>,
    code: ErrorCode,
    reason: &str,
) {
    let frame = CloseFrame { code: CloseCode::from(code.as_u16()), reason: reason.into() };
    let _ = sink.send(Message::Close(Some(frame))).await;
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use futures_util::Stream;

    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<F, A, B, Fut>(_: &F) -> usize
    where
        F: Fn(A, B) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    fn future_size4<F, A, B, C, D, Fut>(_: &F) -> usize
    where
        F: Fn(A, B, C, D) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    type Inbounds = Pin<Box<dyn Stream<Item = Inbound> + Send>>;

    /// The connection's future is the session's plus a few handles: the
    /// app and the parameters are not stored twice, the close phase not
    /// beside the session (see `serve_socket`), the upgrade's
    /// parts not kept beside the session.
    #[test]
    fn the_connection_future_is_the_session_future() {
        let serve = future_size(&serve_upgraded);
        let run = future_size4(&session::run::<Inbounds>);
        eprintln!("serve_upgraded {serve} B, session::run {run} B");
        assert!(serve <= run + 256, "serve_upgraded is {serve} B, session::run {run} B");
    }

    #[test]
    fn only_the_answer_to_the_latest_ping_times_the_round_trip_once() {
        let t = PingTimer::new(ServerClock::new());
        assert_eq!(t.pong(&[0; 8]), None, "no ping sent");
        let first = t.ping();
        std::thread::sleep(Duration::from_millis(2));
        let latest = t.ping();
        assert_eq!(t.pong(&first), None, "an older ping's answer");
        assert_eq!(t.pong(b"still"), None, "not a ping of ours");
        let rtt = t.pong(&latest).expect("the latest ping's answer");
        assert!(rtt < Duration::from_secs(1));
        assert_eq!(t.pong(&latest), None, "counted once");
    }
}
