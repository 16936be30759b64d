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
//!   `Hello`, `Command`, `Report` and `Ping` in; `Welcome`, `TimelineChanged`,
//!   `ViewerCount`, member events and `Error` out. Further streams are ignored.
//!   A bad frame prefix (over 8 KiB, or not a canonical varint) cannot be
//!   resynchronised and closes the session with `FrameTooLarge` (4002);
//! - **datagrams** carry `Tick`, `Pong` and a copy of `TimelineChanged` out
//!   once the client's `Hello` has the `DATAGRAMS` capability (before that,
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

use std::collections::VecDeque;
use std::fmt;
use std::net::{SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;
use futures_util::{FutureExt, Stream, StreamExt};
use lockstep_protocol::limits::MAX_DATAGRAM;
use lockstep_protocol::{
    ClientMsg, ErrorCode, FrameDecoder, Pong, ServerMsg, caps, decode_client, encode_server, write_frame,
};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info_span};
use wtransport::config::states::WantsIdentity;
use wtransport::config::{Ipv6DualStackConfig, ServerConfigBuilder};
use wtransport::endpoint::endpoint_side;
use wtransport::endpoint::{IncomingSession, SessionRequest};
use wtransport::{Connection, Endpoint, RecvStream, SendStream, ServerConfig, VarInt};

use crate::cert::{CertError, CertPair};
use crate::clock::ServerClock;
use crate::http::AppState;
use crate::hub::Dialect;
use crate::outbox::{FrameKind, Outbox};
use crate::session::{self, Inbound, SessionParams, error_frame};

/// QUIC idle timeout: a peer silent for this long is gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// QUIC keep-alive interval (well under the idle timeout and NAT timeouts).
pub const KEEP_ALIVE: Duration = Duration::from_secs(4);
/// Time allowed from the first packet to the session request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for the closing `Error` frame to be acknowledged.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);
/// Time then left for the client to read it (and close) before the server
/// closes: a QUIC close discards stream data the application has not read.
const CLOSE_GRACE: Duration = Duration::from_millis(300);
/// How often QUIC-level traffic counts as session activity.
const ACTIVITY_CHECK: Duration = KEEP_ALIVE;
/// Bytes read from the stream at once. The buffer lives as long as the
/// session; clients send small messages (a `Hello` of up to about 4.4 KB
/// takes a few reads, the frame decoder joins them).
const READ_CHUNK: usize = 512;
/// The URL path prefix of sessions.
const PATH_PREFIX: &str = "/api/live-stream/";

/// The bound WebTransport endpoint.
pub struct WtEndpoint {
    endpoint: Endpoint<endpoint_side::Server>,
    addr: SocketAddr,
}

impl fmt::Debug for WtEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WtEndpoint").field("addr", &self.addr).finish()
    }
}

/// The endpoint configuration for `addr` serving `certs`: TLS 1.3 with the
/// WebTransport ALPN, [`IDLE_TIMEOUT`], [`KEEP_ALIVE`]. An IPv6 address is
/// bound dual stack, so `[::]` also accepts IPv4.
pub(crate) fn server_config(addr: SocketAddr, certs: &CertPair) -> Result<ServerConfig, CertError> {
    let builder = match addr {
        SocketAddr::V6(v6) => ServerConfig::builder()
            .with_bind_address_v6(SocketAddrV6::new(*v6.ip(), v6.port(), 0, 0), Ipv6DualStackConfig::Allow),
        SocketAddr::V4(_) => ServerConfig::builder().with_bind_address(addr),
    };
    finish_config(builder, certs)
}

fn finish_config(builder: ServerConfigBuilder<WantsIdentity>, certs: &CertPair) -> Result<ServerConfig, CertError> {
    let mut tls = certs.tls_config()?;
    tls.alpn_protocols = vec![wtransport::tls::WEBTRANSPORT_ALPN.to_vec()];
    let mut transport = wtransport::quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("30 s is a valid idle timeout")));
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    // quinn's defaults are for bulk transfers; a session carries a few
    // hundred bytes a second (see the constants' comments for each number).
    transport
        .max_concurrent_bidi_streams(MAX_BIDI_STREAMS.into())
        .max_concurrent_uni_streams(MAX_UNI_STREAMS.into())
        .stream_receive_window(STREAM_RECEIVE_WINDOW.into())
        .receive_window(RECEIVE_WINDOW.into())
        .send_window(SEND_WINDOW)
        .datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_SEND_BUFFER);
    Ok(builder.with_custom_tls_and_transport(tls, transport).build())
}

/// Bidirectional streams a client may have open at once: the HTTP/3
/// `CONNECT` request of the session, the one protocol stream, and two more
/// (refused ones are closed as they come). quinn-proto sets aside a stream
/// table entry for every stream the peer may open, at connection start: its
/// default (100 bidirectional and 100 unidirectional) is about 7 KiB per
/// session.
const MAX_BIDI_STREAMS: u32 = 4;
/// Unidirectional streams a client may have open at once: HTTP/3 needs
/// three (control, QPACK encoder and decoder, RFC 9114 §6.2); the protocol
/// uses none; the rest is headroom.
const MAX_UNI_STREAMS: u32 = 8;
/// Bytes a client may send ahead on one stream: eight `MAX_FRAME` (8 KiB)
/// frames; a `Hello` is at most about 4.4 KB. quinn's default (1.25 MB) is
/// for bulk transfers; this bounds what a client can make the server buffer.
const STREAM_RECEIVE_WINDOW: u32 = 64 * 1024;
/// Bytes a client may send ahead over all its streams (the protocol stream
/// and the small HTTP/3 ones); quinn's default is unlimited.
const RECEIVE_WINDOW: u32 = 128 * 1024;
/// Bytes the server keeps unacknowledged over all of a session's streams
/// (default 10 MB). At 256 KiB a 100 ms round trip still carries 2.5 MB/s,
/// far above a session's traffic; a client that stops reading blocks its
/// writer, its outbox fills and it is closed as a slow consumer instead.
const SEND_WINDOW: u64 = 256 * 1024;
/// Inbound datagrams queued until the session reads them: `Ping` and
/// `Report`, at most `MAX_DATAGRAM` (1200) bytes each, rate limited; the
/// default is 1.25 MB. Also advertised as the largest datagram frame taken.
const DATAGRAM_RECEIVE_BUFFER: usize = 16 * 1024;
/// Outbound datagrams queued while the congestion window is full: ticks,
/// pongs and change copies of 30–100 bytes, so this is still about 200 of
/// them; when full quinn drops the oldest, which suits ticks (latest wins;
/// changes also go on the stream). Default 1 MiB.
const DATAGRAM_SEND_BUFFER: usize = 16 * 1024;

/// Receive buffer asked for the QUIC socket. A fan-out to thousands of
/// sessions comes back as thousands of ACKs within a millisecond or two; the
/// kernel default (about 208 KiB) overflows and drops them, and with them
/// the hosts' commands, which QUIC then recovers only after a probe timeout
/// (hundreds of milliseconds). Linux caps the request at
/// `net.core.rmem_max` (raise it for large rooms).
const UDP_RECV_BUFFER: usize = 8 << 20;
/// Send buffer asked for the QUIC socket (capped at `net.core.wmem_max`).
const UDP_SEND_BUFFER: usize = 4 << 20;

/// The QUIC socket at `addr` (dual stack for IPv6), with large buffers.
fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    if let Err(e) = socket.set_recv_buffer_size(UDP_RECV_BUFFER) {
        tracing::warn!(error = %e, "could not enlarge the QUIC receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(UDP_SEND_BUFFER) {
        tracing::warn!(error = %e, "could not enlarge the QUIC send buffer");
    }
    socket.bind(&addr.into())?;
    tracing::debug!(
        recv = socket.recv_buffer_size().unwrap_or(0),
        send = socket.send_buffer_size().unwrap_or(0),
        "QUIC socket buffers"
    );
    Ok(socket.into())
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
    pub fn local_addr(&self) -> SocketAddr {
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
    pub async fn serve(self: Arc<Self>, app: AppState) {
        let mut shutdown = app.shutdown.clone();
        let mut next_id = 0u64;
        loop {
            let incoming = tokio::select! {
                incoming = self.endpoint.accept() => incoming,
                _ = session::wait_true(&mut shutdown) => return,
            };
            next_id += 1;
            let span = info_span!("wt", id = next_id, peer = %canonical(incoming.remote_address()));
            tokio::spawn(handle(incoming, app.clone()).instrument(span));
        }
    }

    /// Closes every connection with `code` and waits, at most `timeout`, for
    /// them to be acknowledged.
    pub async fn close(&self, code: ErrorCode, reason: &str, timeout: Duration) {
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
pub enum Refusal {
    /// Not a session path, or an invalid event id: 404.
    NotFound,
    /// No room for another connection, or too many attempts from this IP: 429.
    TooMany,
    /// The URL's access token is missing where required, invalid or expired: 403.
    Forbidden,
}

/// The event id and access token of a session request path, or 404.
pub fn parse_path(path: &str) -> Result<(String, Option<String>), Refusal> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let raw = path.strip_prefix(PATH_PREFIX).ok_or(Refusal::NotFound)?;
    if raw.contains('/') {
        return Err(Refusal::NotFound);
    }
    let event_id = percent_encoding::percent_decode_str(raw).decode_utf8().map_err(|_| Refusal::NotFound)?;
    if !crate::ws::valid_event_id(&event_id) {
        return Err(Refusal::NotFound);
    }
    let token =
        form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "access_token").map(|(_, v)| v.into_owned());
    Ok((event_id.into_owned(), token))
}

/// Checks a session request; on success the permit holds a connection slot.
fn admit(req: &SessionRequest, app: &AppState) -> Result<(String, Option<String>, OwnedSemaphorePermit), Refusal> {
    let (event_id, token) = parse_path(req.path())?;
    if app.ip_limits.check_connect(req.remote_address().ip().to_canonical()).is_err() {
        return Err(Refusal::TooMany);
    }
    // A token in the URL is checked before the session is accepted; without
    // one, the token may still come in `Hello` (the session checks it there).
    if let Some(Err(e)) = token.as_deref().map(|t| app.auth.verify(t)) {
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
fn handle(incoming: IncomingSession, app: AppState) -> impl Future<Output = ()> {
    Box::pin(accept(incoming, app)).then(|accepted| match accepted {
        Some((app, params, conn, permit)) => Either::Left(serve_session(app, params, conn, permit)),
        None => Either::Right(std::future::ready(())),
    })
}

/// Completes the handshake, checks the session request and accepts it;
/// `None` if it failed or was refused (and answered).
async fn accept(
    incoming: IncomingSession,
    app: AppState,
) -> Option<(AppState, SessionParams, Connection, OwnedSemaphorePermit)> {
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
    app: AppState,
    params: SessionParams,
    conn: Connection,
    permit: OwnedSemaphorePermit,
) -> impl Future<Output = ()> {
    let outbox = Arc::new(Outbox::new(app.session_cfg.control_queue));
    let (stream_tx, stream_rx) = oneshot::channel();
    let use_datagrams = Arc::new(AtomicBool::new(false));
    let writer =
        tokio::spawn(write_loop(conn.clone(), stream_rx, outbox.clone(), app.hub.clock(), use_datagrams.clone()));
    let frames = frames(conn.clone(), stream_tx).inspect(move |item| {
        if let Some(Inbound::Frame(bytes)) = item {
            note_datagram_cap(bytes, &use_datagrams);
        }
    });
    let inbound = futures_util::stream::select(
        futures_util::stream::select(datagrams(conn.clone()), frames),
        activity(conn.clone()),
    );
    // The session ends at the first end of either channel.
    let inbound = inbound.take_while(|m| std::future::ready(m.is_some())).filter_map(std::future::ready);
    // The inbound stream is handed back; nothing more is read from it.
    session::run(app, params, Box::pin(inbound), outbox.clone()).then(move |_| finish(conn, writer, outbox, permit))
}

/// After the session: closes the connection, once the writer has sent the
/// closing error if the server closed it.
async fn finish(conn: Connection, mut writer: JoinHandle<()>, outbox: Arc<Outbox>, permit: OwnedSemaphorePermit) {
    match outbox.close_reason() {
        Some(close) => {
            // The writer sends the error and closes; make sure of the close.
            if tokio::time::timeout(CLOSE_FLUSH + CLOSE_GRACE * 2, &mut writer).await.is_err() {
                writer.abort();
            }
            conn.close(close_code(close.code), reason_bytes(&close.message));
        }
        None => {
            writer.abort();
            conn.close(VarInt::from_u32(0), b"");
        }
    }
    drop(permit);
}

/// Routing only (the session checks the `Hello` itself): ticks, pongs and
/// change copies go as datagrams once a `Hello` with the `DATAGRAMS`
/// capability has arrived, as the spec asks; until then, on the stream.
fn note_datagram_cap(frame: &[u8], use_datagrams: &AtomicBool) {
    // Tag 0 is `Hello`; other frames are not decoded twice.
    if frame.first() == Some(&0)
        && let Ok(ClientMsg::Hello(hello)) = decode_client(frame)
    {
        use_datagrams.store(hello.caps & caps::DATAGRAMS != 0, Ordering::Relaxed);
    }
}

fn close_code(code: ErrorCode) -> VarInt {
    VarInt::from_u32(u32::from(code.as_u16()))
}

/// At most 100 bytes of `message`, cut on a character boundary.
fn reason_bytes(message: &str) -> &[u8] {
    let mut end = message.len().min(100);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message.as_bytes()[..end]
}

/// Inbound datagrams; `None` once the connection is gone.
fn datagrams(conn: Connection) -> impl Stream<Item = Option<Inbound>> {
    futures_util::stream::unfold(Some(conn), |conn| async move {
        let c = conn?;
        loop {
            match c.receive_datagram().await {
                Ok(d) if d.payload().len() > MAX_DATAGRAM => crate::metrics::drop("oversized_datagram"),
                Ok(d) => return Some((Some(Inbound::Datagram(d.payload())), Some(c))),
                Err(e) => {
                    debug!(error = %e, "connection ended");
                    return Some((None, None));
                }
            }
        }
    })
}

/// The client's stream being read.
struct Reader {
    recv: RecvStream,
    decoder: FrameDecoder,
    queue: VecDeque<Inbound>,
    buf: Box<[u8]>,
    conn: Connection,
    /// Whether further streams are still being watched for (to be refused).
    watch_extra: bool,
}

enum FrameState {
    /// Waiting for the client's bidirectional stream.
    Accepting(Connection, oneshot::Sender<SendStream>),
    Reading(Box<Reader>),
    /// Ended: yield what is queued, then `None`.
    Ending(VecDeque<Inbound>),
    Done,
}

/// Frames from the client's stream; `None` when it ends (or cannot be read).
fn frames(conn: Connection, stream_tx: oneshot::Sender<SendStream>) -> impl Stream<Item = Option<Inbound>> {
    futures_util::stream::unfold(FrameState::Accepting(conn, stream_tx), |state| async move {
        let mut state = state;
        loop {
            state = match state {
                FrameState::Accepting(conn, tx) => match conn.accept_bi().await {
                    Ok((send, recv)) => {
                        let _ = tx.send(send);
                        FrameState::Reading(Box::new(Reader {
                            recv,
                            decoder: FrameDecoder::new(),
                            queue: VecDeque::new(),
                            buf: vec![0; READ_CHUNK].into_boxed_slice(),
                            conn,
                            watch_extra: true,
                        }))
                    }
                    Err(e) => {
                        debug!(error = %e, "no stream");
                        return Some((None, FrameState::Done));
                    }
                },
                FrameState::Reading(mut r) => {
                    if let Some(item) = r.queue.pop_front() {
                        return Some((Some(item), FrameState::Reading(r)));
                    }
                    r.read().await
                }
                FrameState::Ending(mut queue) => {
                    return match queue.pop_front() {
                        Some(item) => Some((Some(item), FrameState::Ending(queue))),
                        None => Some((None, FrameState::Done)),
                    };
                }
                FrameState::Done => return None,
            };
        }
    })
}

impl Reader {
    /// Reads once and queues the complete frames.
    async fn read(mut self: Box<Self>) -> FrameState {
        let Reader { recv, buf, conn, watch_extra, .. } = &mut *self;
        let read = tokio::select! {
            r = recv.read(buf) => r,
            extra = conn.accept_bi(), if *watch_extra => {
                match extra {
                    Ok(_) => {
                        // Dropping it stops it; one stream per session.
                        debug!("extra bidirectional stream refused");
                        crate::metrics::drop("extra_stream");
                    }
                    Err(_) => *watch_extra = false,
                }
                return FrameState::Reading(self);
            }
        };
        match read {
            Ok(Some(n)) => {
                self.decoder.push(&self.buf[..n]);
                loop {
                    match self.decoder.next_frame() {
                        Ok(Some(frame)) => self.queue.push_back(Inbound::Frame(Bytes::from(frame))),
                        Ok(None) => return FrameState::Reading(self),
                        Err(e) => {
                            // A bad prefix: the stream cannot be resynchronised.
                            let len = match e {
                                lockstep_protocol::DecodeError::TooLarge { len, .. } => len as usize,
                                _ => self.decoder.buffered(),
                            };
                            self.queue.push_back(Inbound::TooLarge(len));
                            return FrameState::Ending(std::mem::take(&mut self.queue));
                        }
                    }
                }
            }
            Ok(None) => FrameState::Ending(std::mem::take(&mut self.queue)),
            Err(e) => {
                debug!(error = %e, "stream read ended");
                FrameState::Ending(std::mem::take(&mut self.queue))
            }
        }
    }
}

/// [`Inbound::Activity`] while QUIC packets keep arriving (keep-alive
/// acknowledgements included), like WebSocket pongs do; never ends.
fn activity(conn: Connection) -> impl Stream<Item = Option<Inbound>> {
    futures_util::stream::unfold((conn, 0u64), |(conn, mut seen)| async move {
        loop {
            tokio::time::sleep(ACTIVITY_CHECK).await;
            let now = conn.quic_connection().stats().udp_rx.datagrams;
            if now != seen {
                seen = now;
                return Some((Some(Inbound::Activity), (conn, seen)));
            }
        }
    })
}

/// The largest datagram payload to send now: `min(max_datagram_size, 1200)`,
/// 0 if the peer takes none.
fn datagram_limit(conn: &Connection) -> usize {
    conn.max_datagram_size().map_or(0, |m| m.min(MAX_DATAGRAM))
}

/// Sends `bytes` as a datagram if it fits; otherwise (or if that fails) it
/// is appended to `stream` as a frame.
fn send_datagram_or_frame(conn: &Connection, limit: usize, bytes: &[u8], stream: &mut Vec<u8>) {
    if bytes.len() <= limit && conn.send_datagram(bytes).is_ok() {
        return;
    }
    write_frame(bytes, stream);
}

/// Drains the outbox: datagrams at once, reliable frames on the client's
/// stream once it is open; closes the connection with the close reason.
async fn write_loop(
    conn: Connection,
    stream_rx: oneshot::Receiver<SendStream>,
    outbox: Arc<Outbox>,
    clock: ServerClock,
    use_datagrams: Arc<AtomicBool>,
) {
    let mut send: Option<SendStream> = None;
    let mut stream_rx = Some(stream_rx);
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let batch = tokio::select! {
            b = outbox.next_batch() => Some(b),
            s = async { stream_rx.as_mut().expect("guarded").await }, if stream_rx.is_some() => {
                stream_rx = None;
                send = s.ok();
                None
            }
        };
        let mut close = None;
        if let Some(batch) = batch {
            let limit = if use_datagrams.load(Ordering::Relaxed) { datagram_limit(&conn) } else { 0 };
            for (client_time, server_recv_us) in batch.pongs {
                let pong = Pong { client_time, server_recv_us, server_send_us: clock.now_us() };
                send_datagram_or_frame(&conn, limit, &encode_server(&ServerMsg::Pong(pong)), &mut pending);
            }
            for f in &batch.frames {
                if f.kind == FrameKind::BinaryFast && f.bytes.len() <= limit {
                    let _ = conn.send_datagram(&f.bytes);
                }
            }
            if let Some(tick) = batch.tick {
                send_datagram_or_frame(&conn, limit, &tick, &mut pending);
            }
            for f in batch.frames {
                if f.kind != FrameKind::Text {
                    write_frame(&f.bytes, &mut pending);
                }
            }
            if let Some(c) = batch.close {
                write_frame(&error_frame(Dialect::Binary, c.code, &c.message, 0).bytes, &mut pending);
                close = Some(c);
            }
        }
        // The stream is handed over before any frame on it is read, so it is
        // here by the time anything answers one, even if `select!` took the
        // batch first.
        if send.is_none()
            && let Some(Ok(s)) = stream_rx.as_mut().map(oneshot::Receiver::try_recv)
        {
            stream_rx = None;
            send = Some(s);
        }
        if let Some(s) = send.as_mut().filter(|_| !pending.is_empty()) {
            if s.write_all(&pending).await.is_err() && close.is_none() {
                return;
            }
            pending.clear();
        }
        if let Some(c) = close {
            if let Some(s) = send.as_mut()
                && tokio::time::timeout(CLOSE_FLUSH, s.finish()).await.is_ok()
            {
                let _ = tokio::time::timeout(CLOSE_GRACE, conn.closed()).await;
            }
            conn.close(close_code(c.code), reason_bytes(&c.message));
            return;
        }
    }
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

    type Inbounds = std::pin::Pin<Box<dyn Stream<Item = Inbound> + Send>>;

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

    #[test]
    fn close_reasons_are_cut_on_char_boundaries() {
        let s = "é".repeat(80);
        let r = reason_bytes(&s);
        assert!(r.len() <= 100 && std::str::from_utf8(r).is_ok());
        assert_eq!(reason_bytes("short"), b"short");
    }
}
