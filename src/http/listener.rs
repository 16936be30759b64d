//! The HTTP listener's accept loop (instead of `axum::serve`): for each TCP
//! connection, TCP_NODELAY, then the PROXY protocol header (`--proxy-protocol`,
//! from `--trusted-proxies` peers only), then the TLS handshake
//! (`--http-tls`, ALPN h2 and http/1.1, the certificate of [`CertManager`]
//! read at each handshake), then HTTP/1.1 (with upgrades: WebSocket) or h2.
//! Each phase before HTTP is bounded in time and runs in the connection's own
//! task, never in the accept loop. The client address (the PROXY header's
//! source, or the peer) reaches handlers as `ConnectInfo<SocketAddr>`.
//!
//! [`CertManager`]: crate::cert::CertManager

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tower_service::Service;
use tracing::{debug, error, trace, warn};

use crate::cert::{CertError, CertPair};
use crate::edge::TrustedProxies;
use crate::edge::proxy_protocol::read_header;
use crate::util::wait_true;

/// How long a connection has to send its PROXY header.
pub(crate) const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a TLS handshake may take.
pub(crate) const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the listener takes connections.
pub(crate) struct Listen {
    /// Every connection starts with a PROXY header (`--proxy-protocol`).
    pub(crate) proxy_protocol: bool,
    /// Peers allowed to send PROXY headers.
    pub(crate) trusted: Arc<TrustedProxies>,
    /// HTTPS (`--http-tls`).
    pub(crate) tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listen")
            .field("proxy_protocol", &self.proxy_protocol)
            .field("trusted", &self.trusted)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// The HTTPS certificate: what every new TLS handshake is served. Replaced
/// by [`HttpsCert::set`] when the [`crate::cert::CertManager`] reloads or rotates.
#[derive(Debug)]
pub(crate) struct HttpsCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl HttpsCert {
    /// Serves `pair`.
    pub(crate) fn new(pair: &CertPair) -> Result<Arc<HttpsCert>, CertError> {
        Ok(Arc::new(HttpsCert { current: RwLock::new(Self::prepare(pair)?) }))
    }

    /// `pair` as rustls serves it; fails if the key is unusable.
    pub(crate) fn prepare(pair: &CertPair) -> Result<Arc<CertifiedKey>, CertError> {
        let key = rustls::crypto::ring::sign::any_supported_type(&pair.key)?;
        Ok(Arc::new(CertifiedKey::new(pair.chain.clone(), key)))
    }

    /// Serves `key` to new connections (open ones keep theirs).
    pub(crate) fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
    }

    /// A TLS acceptor serving this certificate (TLS 1.2 and 1.3, ring, ALPN
    /// h2 and http/1.1).
    pub(crate) fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, CertError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(cfg)))
    }
}

impl ResolvesServerCert for HttpsCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then accepts no more,
/// lets open connections finish gracefully once `stop` turns true (the
/// caller's `shutdown` should turn it), and returns when all are closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    listen: Listen,
    stop: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()>,
) {
    let listen = Arc::new(listen);
    let (close_tx, close_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small frames must leave at once: without TCP_NODELAY, Nagle plus
        // delayed ACKs hold a change behind the previous frame's ACK (~40 ms).
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "TCP_NODELAY not set");
        }
        let (app, listen, stop, close_rx) = (app.clone(), listen.clone(), stop.clone(), close_rx.clone());
        tokio::spawn(async move {
            connection(tcp, peer, app, &listen, stop).await;
            drop(close_rx);
        });
    }
    drop(listener);
    drop(close_rx);
    close_tx.closed().await;
}

/// As `axum::serve`: connection errors are the peer's business; others
/// (out of file descriptors) are logged and the loop pauses for a second.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    error!("accept error: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A connection after its PROXY header and TLS handshake.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

async fn connection(tcp: TcpStream, peer: SocketAddr, app: Router, listen: &Listen, mut stop: watch::Receiver<bool>) {
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    let prepared = tokio::select! {
        p = prelude(tcp, peer, listen) => p,
        () = wait_true(&mut stop) => return,
    };
    match prepared {
        Some((Io::Plain(tcp), client)) => serve_plain(tcp, client, app, stop).await,
        Some((Io::Tls(tls), client)) => serve_http(tls, client, true, app, stop).await,
        None => {}
    }
}

/// The PROXY header and the TLS handshake, each bounded in time; `None`
/// closes the connection (with a log line saying why).
async fn prelude(mut tcp: TcpStream, peer: SocketAddr, listen: &Listen) -> Option<(Io, SocketAddr)> {
    let client = if listen.proxy_protocol {
        if !listen.trusted.contains(peer.ip()) {
            warn!(%peer, "connection closed: --proxy-protocol is on and the peer is not in --trusted-proxies");
            return None;
        }
        match tokio::time::timeout(PROXY_HEADER_TIMEOUT, read_header(&mut tcp)).await {
            Ok(Ok(header)) => header.source().map_or(peer, |s| SocketAddr::new(s.ip().to_canonical(), s.port())),
            Ok(Err(e)) => {
                warn!(%peer, error = %e, "connection closed: no valid PROXY header");
                return None;
            }
            Err(_) => {
                warn!(%peer, timeout_ms = PROXY_HEADER_TIMEOUT.as_millis() as u64, "connection closed: no PROXY header in time");
                return None;
            }
        }
    } else {
        peer
    };
    let io = match &listen.tls {
        None => Io::Plain(tcp),
        Some(acceptor) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => Io::Tls(Box::new(tls)),
            Ok(Err(e)) => {
                debug!(peer = %client, error = %e, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                debug!(peer = %client, "TLS handshake timed out");
                return None;
            }
        },
    };
    Some((io, client))
}

/// How long a plain connection may take to send its first byte.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);

/// A plain connection: HTTP/1.1 served by hyper's own HTTP/1.1 connection
/// when the first byte cannot start h2's preface (`PRI * HTTP/2.0`), so that
/// an upgraded WebSocket can be taken back as its `TcpStream` (the fan-out
/// writes straight into it); h2 with prior knowledge otherwise.
async fn serve_plain(tcp: TcpStream, client: SocketAddr, app: Router, mut stop: watch::Receiver<bool>) {
    let mut first = [0u8; 1];
    let peeked = tokio::select! {
        r = tokio::time::timeout(FIRST_BYTE_TIMEOUT, tcp.peek(&mut first)) => r,
        () = wait_true(&mut stop) => return,
    };
    match peeked {
        Ok(Ok(1)) if first[0] != b'P' => {
            let mut http1 = hyper::server::conn::http1::Builder::new();
            http1.timer(TokioTimer::new());
            let conn = http1.serve_connection(TokioIo::new(tcp), service(app, client, false)).with_upgrades();
            drive(conn, |c| c.graceful_shutdown(), client, stop).await;
        }
        Ok(Ok(1)) => serve_http(tcp, client, false, app, stop).await,
        _ => {}
    }
}

/// The service hyper calls for each request of one connection.
fn service(
    app: Router,
    client: SocketAddr,
    tls: bool,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send + 'static,
> + Clone
+ Send
+ 'static {
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(client));
        // The session API builds its URLs' schemes from this header.
        if tls && !req.headers().contains_key("x-forwarded-proto") {
            req.headers_mut().insert("x-forwarded-proto", HeaderValue::from_static("https"));
        }
        app.clone().call(req)
    })
}

/// Drives `conn` until the peer leaves, or gracefully once `stop` turns true.
/// (`graceful` asks it to finish).
async fn drive<C, E>(
    conn: C,
    graceful: impl Fn(std::pin::Pin<&mut C>),
    client: SocketAddr,
    mut stop: watch::Receiver<bool>,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut conn = pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    trace!(%client, error = %e, "connection ended with an error");
                }
                return;
            }
            () = wait_true(&mut stop), if !stopping => {
                stopping = true;
                graceful(conn.as_mut());
            }
        }
    }
}

/// Serves HTTP/1.1 (with upgrades) or h2 on `io` until the peer leaves, or
/// gracefully once `stop` turns true.
async fn serve_http<I>(io: I, client: SocketAddr, tls: bool, app: Router, stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    // A timer bounds the reading of HTTP/1.1 request heads (hyper's default: 30 s).
    builder.http1().timer(TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service(app, client, tls));
    drive(conn, |c| c.graceful_shutdown(), client, stop).await;
}
