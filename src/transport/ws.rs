//! The WebSocket transport (axum): `GET /api/live-stream/{eventId}`.
//!
//! With the `lockstep.v1` subprotocol, binary frames carry the protocol and
//! the client must send `Hello`. Without it, text frames carry the legacy JSON
//! dialect and the client joins on connect. Either way the connection is
//! handed to [`crate::session::run`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream::SplitSink;
use futures_util::{FutureExt, SinkExt, StreamExt};
use lockstep_protocol::limits::MAX_FRAME;
use lockstep_protocol::{Action, ErrorCode};
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;

use super::Gate;
use super::json::{self, JsonEncoder, JsonIn};
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
/// Frames tungstenite collects before writing. The writer flushes after each
/// batch, so a batch (a change and its tick, say) is one `write` syscall, not
/// one per frame; the syscall is most of the cost of a delivery on loopback.
const WRITE_BUFFER: usize = 16 * 1024;
/// Interval of server WebSocket pings (they keep idle legacy clients alive).
const PING_INTERVAL: Duration = Duration::from_secs(15);

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
    responses((status = 101, description = "Switching protocols"), (status = 400, body = crate::util::ApiError),
        (status = 403, body = crate::util::ApiError, description = "a browser page of an origin not in --cors-origins"),
        (status = 429, body = crate::util::ApiError, description = "too many connection attempts from this IP"),
        (status = 503, body = crate::util::ApiError, description = "server full")))]
pub(crate) async fn upgrade(
    State(app): State<Gate>,
    Path(event_id): Path<String>,
    Query(q): Query<WsQuery>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
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
    let ws = ws
        .protocols([SUBPROTOCOL])
        .max_message_size(WS_MAX_MESSAGE)
        .max_frame_size(WS_MAX_MESSAGE)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER);
    let dialect = if ws.selected_protocol().is_some() { Dialect::Binary } else { Dialect::Json };
    let params = SessionParams {
        event_id,
        transport: "websocket",
        dialect,
        peer,
        device_hint: q.device_id.filter(|d| !d.is_empty() && d.len() <= lockstep_protocol::limits::MAX_DEVICE_ID),
        token: q.access_token,
    };
    // One box for what the connection needs, freed as the socket is served:
    // axum's upgrade task keeps the callback's storage for the connection's
    // whole life, so it should capture 8 bytes, not the 256 of these three.
    let ctx = Box::new((app, params, permit));
    ws.on_upgrade(move |socket| serve_socket(ctx, socket)).into_response()
}

/// Serves an upgraded connection; `ctx` is the gate, the session's
/// parameters and the connection's slot (held until the end).
///
/// The setup runs before the returned future is first polled (this is not
/// an `async fn`): the future lives as long as the connection, and an
/// `async fn` would keep its arguments in it beside what they are moved into.
/// The session and the close that follows it are chained with `then`, which
/// stores one of them at a time.
fn serve_socket(ctx: Box<(Gate, SessionParams, OwnedSemaphorePermit)>, socket: WebSocket) -> impl Future<Output = ()> {
    let (app, params, permit) = *ctx;
    let (sink, stream) = socket.split();
    let dialect = params.dialect;
    let encoder: Arc<dyn Encoder> = match dialect {
        Dialect::Binary => Arc::new(Binary),
        Dialect::Json => Arc::new(JsonEncoder::new(&params.event_id)),
    };
    let outbox = Arc::new(Outbox::with_encoder(app.session.cfg.control_queue, encoder));
    let writer = tokio::spawn(write_loop(WsTransport { sink }, outbox.clone(), app.session.hub.clock()));
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
        Ok(Message::Ping(_) | Message::Pong(_)) => Some(Inbound::Activity),
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

/// The WebSocket side of the one writer: frames gathered and flushed as one
/// write per batch.
struct WsTransport {
    sink: SplitSink<WebSocket, Message>,
}

impl Transport for WsTransport {
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
        self.sink.send(Message::Ping(Default::default())).await.map_err(std::io::Error::other)
    }

    async fn close(&mut self, code: ErrorCode, reason: &str) {
        let frame = CloseFrame { code: code.as_u16(), reason: reason.into() };
        let _ = self.sink.send(Message::Close(Some(frame))).await;
    }
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
    /// beside the session (see `serve_socket`).
    #[test]
    fn the_connection_future_is_the_session_future() {
        let serve = future_size(&serve_socket);
        let run = future_size4(&session::run::<Inbounds>);
        eprintln!("serve_socket {serve} B, session::run {run} B");
        assert!(serve <= run + 128, "serve_socket is {serve} B, session::run {run} B");
    }
}
