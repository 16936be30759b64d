//! Server lifecycle: bind, serve, shut down gracefully.
//!
//! HTTP and WebSocket share a TCP listener; WebTransport has its own UDP
//! endpoint. Both are bound by [`Server::bind`] (a failure to bind either is
//! an error, never a silent fallback) and share the rooms, the connection cap
//! and the shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockstep_protocol::ErrorCode;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{info, warn};

use crate::accounts::{AccountConfig, Accounts};
use crate::authority::{Authority, LocalAuthority};
use crate::cert::CertManager;
use crate::clock::ServerClock;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::http::listener::{HttpsCert, Listen};
use crate::http::live_source::LiveSource;
use crate::http::ready::Readiness;
use crate::http::{AppState, admin_router, router};
use crate::hub::{Hub, HubConfig};
use crate::limits::IpLimits;
use crate::room::{ClockRequest, LiveLatency};
use crate::session::SessionConfig;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;
use crate::transport::wt::WtEndpoint;

/// How long shutdown waits for sessions to finish once told to close, and
/// for rooms to stop.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// In `--dev`, this event's room is live (auto latency), for the `/live` page.
pub const LIVE_DEMO_EVENT: &str = "live-demo";
/// The DVR window of the `live-demo` room: the dev live source's window.
const LIVE_DEMO_DVR_WINDOW_MS: u32 = crate::http::live_source::DVR_WINDOW_MS as u32;
/// How long shutdown waits for QUIC connections to acknowledge the close.
const QUIC_IDLE: Duration = Duration::from_secs(2);

/// A bound, not yet running server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    /// The admin listener (`--admin-addr`).
    admin: Option<TcpListener>,
    /// How long shutdown keeps serving while not ready (`--drain-ms`).
    drain: Duration,
    quic: Arc<WtEndpoint>,
    state: AppState,
    shutdown_tx: watch::Sender<bool>,
    /// The one-node authority, whose saved timelines are flushed at shutdown.
    local: Option<Arc<LocalAuthority>>,
    /// How the HTTP listener takes connections (PROXY protocol, TLS).
    listen: Listen,
}

fn context(what: &str, addr: SocketAddr) -> impl FnOnce(std::io::Error) -> std::io::Error {
    let what = format!("{what} {addr}");
    move |e| std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// [`Cluster::connect`] with `--redis-ca` read, and errors that say what to check.
async fn connect_redis(
    url: &str,
    ca: Option<&std::path::Path>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<Cluster> {
    let pem = match ca {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("--redis-ca {}: {e}", path.display())))?,
        ),
        None => None,
    };
    Cluster::connect(url, pem.as_deref(), shutdown).await.map_err(|e| {
        let text = e.to_string();
        let hint = if text.contains("certificate") || text.contains("Certificate") {
            match ca {
                Some(path) => format!(
                    " (the Redis server's TLS certificate was refused: is {} the CA that issued it, and is the URL's host \
                     one of its names?)",
                    path.display()
                ),
                None => " (the Redis server's TLS certificate was refused: for a private CA give it with --redis-ca)"
                    .to_owned(),
            }
        } else {
            String::new()
        };
        std::io::Error::other(format!("connecting to Redis: {text}{hint}"))
    })
}

impl Server {
    /// Binds the listeners of `cfg`: HTTP/WebSocket on TCP and WebTransport
    /// on UDP, with the configured or a generated certificate.
    pub async fn bind(cfg: Config) -> std::io::Result<Server> {
        let listener = TcpListener::bind(cfg.http_addr).await.map_err(context("binding HTTP", cfg.http_addr))?;
        let admin = match cfg.admin_addr {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(context("binding the admin address", addr))?),
            None => None,
        };
        let poll = Duration::from_millis(cfg.cert_poll_ms);
        let certs = match (&cfg.cert, &cfg.key) {
            (Some(cert), Some(key)) => CertManager::from_files(cert.clone(), key.clone(), poll),
            _ => CertManager::self_signed(poll),
        }
        .map_err(|e| std::io::Error::other(format!("WebTransport certificate: {e}")))?;
        let quic = Arc::new(
            WtEndpoint::bind(cfg.quic_addr, &certs.current_pair()).map_err(context("binding QUIC", cfg.quic_addr))?,
        );
        // HTTPS (`--http-tls`) serves the same certificate, installed with
        // the QUIC one: a pair either endpoint refuses is installed in neither.
        let https = match cfg.http_tls {
            true => Some(
                HttpsCert::new(&certs.current_pair())
                    .map_err(|e| std::io::Error::other(format!("HTTPS certificate: {e}")))?,
            ),
            false => None,
        };
        let endpoint = Arc::downgrade(&quic);
        let https_installer = https.clone();
        certs.set_installer(move |pair| {
            let key = https_installer.as_ref().map(|_| HttpsCert::prepare(pair)).transpose()?;
            if let Some(quic) = endpoint.upgrade() {
                quic.reload(pair)?;
            }
            if let (Some(https), Some(key)) = (&https_installer, key) {
                https.set(key);
            }
            Ok(())
        });
        let trusted_proxies = Arc::new(cfg.trusted_proxies.clone());
        let listen = Listen {
            proxy_protocol: cfg.proxy_protocol,
            trusted: trusted_proxies.clone(),
            tls: https
                .map(|h| h.acceptor())
                .transpose()
                .map_err(|e| std::io::Error::other(format!("HTTPS configuration: {e}")))?,
        };
        let auth = Arc::new(cfg.authenticator().map_err(|e| std::io::Error::other(e.to_string()))?);
        if cfg.dev {
            warn!(
                "DEV MODE: anonymous viewers are allowed and POST /api/dev/token mints tokens; never run this in production"
            );
        }
        let (shutdown_tx, shutdown) = watch::channel(false);
        // With --jwt-jwks-url: the first fetch of the key set, then its refresh task.
        auth.start(shutdown.clone()).await;
        let cluster = match &cfg.redis_url {
            Some(url) => Some(connect_redis(url, cfg.redis_ca.as_deref(), shutdown.clone()).await?),
            None => None,
        };
        let ready = Arc::new(Readiness::new(cluster.clone()));
        let store: Arc<dyn Store> = match &cluster {
            Some(c) => Arc::new(c.store()),
            None => Arc::new(
                SqliteStore::open(&cfg.data_dir)
                    .map_err(|e| std::io::Error::other(format!("opening {}: {e}", cfg.data_dir.display())))?,
            ),
        };
        let accounts = Accounts::new(
            store.clone(),
            AccountConfig {
                max_devices_free: cfg.max_devices_free,
                max_devices_premium: cfg.max_devices_premium,
                session_idle: Duration::from_millis(cfg.session_idle_ms.max(1)),
                ..AccountConfig::default()
            },
        );
        let restored = accounts.restore().await.map_err(|e| std::io::Error::other(e.to_string()))?;
        info!(sessions = restored, data_dir = %cfg.data_dir.display(), "state restored");
        let clock = ServerClock::new();
        // One node: changes commit at once and are saved to the store.
        // Several: Redis orders them (see `cluster`).
        let local = match &cluster {
            Some(_) => None,
            None => Some(Arc::new(LocalAuthority::durable(store))),
        };
        let authority: Arc<dyn Authority> = match (&cluster, &local) {
            (Some(c), _) => Arc::new(c.clone()),
            (None, Some(l)) => l.clone(),
            (None, None) => Arc::new(LocalAuthority::ephemeral()),
        };
        let hub = Hub::new(
            HubConfig { room: cfg.room_config(), room_grace: Duration::from_millis(cfg.room_grace_ms) },
            clock,
            shutdown.clone(),
            authority,
        );
        if cfg.dev {
            // The `/live` demo page's room follows the dev live source.
            let (hub, range) = (hub.clone(), hub.live_latency_range());
            tokio::spawn(async move {
                let req = ClockRequest {
                    clock: lockstep_protocol::ClockKind::Live,
                    latency: Some(LiveLatency::Auto { min_ms: range.0, max_ms: range.1 }),
                    dvr_window_ms: Some(LIVE_DEMO_DVR_WINDOW_MS),
                };
                if hub.set_clock(LIVE_DEMO_EVENT, req).await.is_none() {
                    warn!("the {LIVE_DEMO_EVENT} room could not be made live");
                }
            });
        }
        if let Some(c) = cluster {
            // A device removed on any node loses its connections on every node.
            let local = accounts.clone();
            c.on_revoke(move |user, device| {
                local.close_device(user, device);
            });
            // Redis that lost its data gets back the sessions (and so the device
            // slots) this node knows, so no device limit is exceeded meanwhile.
            let local = accounts.clone();
            c.on_data_lost(move || {
                let local = local.clone();
                async move {
                    local.reassert().await;
                }
            });
            let publisher = c.clone();
            accounts.announce_revocations(move |user, device| {
                let (publisher, user, device) = (publisher.clone(), user.to_owned(), device.to_owned());
                tokio::spawn(async move {
                    if let Err(e) = publisher.revoke(&user, &device).await {
                        warn!(error = %e, "device revocation not announced to other nodes");
                    }
                });
            });
        }
        let maintenance = (cfg.session_idle_ms / 4).clamp(50, 5_000);
        tokio::spawn(accounts.clone().run_maintenance(Duration::from_millis(maintenance)));
        let live_source = if cfg.live_source_enabled() {
            LiveSource::start(cfg.live_source_ffmpeg.clone(), cfg.live_source_cache.clone(), hub.clock())
        } else {
            LiveSource::off()
        };
        let ip_limits = Arc::new(IpLimits::new(
            cfg.rest_per_ip_per_sec,
            cfg.rest_burst,
            cfg.connects_per_ip_per_sec,
            cfg.connect_burst,
        ));
        tokio::spawn(ip_limits.clone().run_cleanup(Duration::from_secs(60)));
        let state = AppState {
            hub,
            session_cfg: Arc::new(SessionConfig {
                hello_timeout: Duration::from_millis(cfg.hello_timeout_ms),
                idle_timeout: Duration::from_millis(cfg.idle_timeout_ms),
                msgs_per_sec: cfg.msgs_per_sec,
                msg_burst: cfg.msg_burst,
                control_queue: cfg.control_queue,
            }),
            conn_limit: Arc::new(Semaphore::new(cfg.max_connections)),
            shutdown,
            metrics: crate::metrics::install(),
            started: Instant::now(),
            max_connections: cfg.max_connections,
            quic_port: quic.local_addr().port(),
            public: cfg.public_urls().map_err(|e| std::io::Error::other(e.to_string()))?,
            certs,
            auth,
            accounts,
            ip_limits,
            live_source,
            ready,
            cors_origins: Arc::new(cfg.cors_origins.clone()),
            trusted_proxies,
        };
        state.ready.restored();
        Ok(Server {
            listener,
            admin,
            drain: Duration::from_millis(cfg.drain_ms),
            quic,
            state,
            shutdown_tx,
            local,
            listen,
        })
    }

    /// The HTTP/WebSocket address actually bound.
    pub fn http_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// The admin address actually bound (`--admin-addr`).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|l| l.local_addr().expect("bound listener has an address"))
    }

    /// The WebTransport (UDP) address actually bound.
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic.local_addr()
    }

    /// The WebTransport certificate (to read its hashes or rotate it).
    pub fn certs(&self) -> CertManager {
        self.state.certs.clone()
    }

    /// The server clock (timelines, ticks and pongs are stamped with it).
    pub fn clock(&self) -> ServerClock {
        self.state.hub.clock()
    }

    /// Serves until `shutdown` resolves; then drains: answers `/api/ready`
    /// with 503 and keeps serving for the drain time (while any connection
    /// is open), closes every session with `ShuttingDown` and waits (bounded)
    /// for them to finish; last, closes the QUIC endpoint with the same code
    /// and waits (bounded) for it to go idle. The admin port serves until the
    /// end.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let Server { listener, admin, drain, quic, state, shutdown_tx, local, listen } = self;
        let accept = tokio::spawn(quic.clone().serve(state.gate()));
        let certs = tokio::spawn(state.certs.clone().watch(state.shutdown.clone()));
        let (finished_tx, finished) = watch::channel(false);
        let admin = admin.map(|listener| {
            let app = admin_router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
            let mut finished = finished.clone();
            tokio::spawn(async move {
                let stop = async move { crate::util::wait_true(&mut finished).await };
                if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
                    warn!(error = %e, "the admin listener failed");
                }
            })
        });
        let app = router(state.clone(), admin.is_none());
        let tx = shutdown_tx.clone();
        let (ready, conn_limit, all) = (state.ready.clone(), state.conn_limit.clone(), state.max_connections as u32);
        // TCP_NODELAY, PROXY headers, TLS, then HTTP: see `http::listener`.
        crate::http::listener::serve(listener, app, listen, state.shutdown.clone(), async move {
            shutdown.await;
            ready.drain();
            let open = all as usize - conn_limit.available_permits();
            if open > 0 && !drain.is_zero() {
                info!(connections = open, drain_ms = drain.as_millis() as u64, "draining: not ready, still serving");
                let _ = tokio::time::timeout(drain, conn_limit.acquire_many(all)).await;
            }
            info!("shutting down");
            tx.send_replace(true);
        })
        .await;
        shutdown_tx.send_replace(true);
        let _ = tokio::time::timeout(CLOSE_WAIT, state.conn_limit.acquire_many(all)).await;
        // The accept loop ends on the shutdown signal; it must be gone before
        // the endpoint closes.
        let _ = accept.await;
        let _ = certs.await;
        // Rooms stop on the signal; then every committed change is saved.
        state.hub.stopped(CLOSE_WAIT).await;
        if let Some(local) = local {
            local.flush().await;
        }
        quic.close(ErrorCode::ShuttingDown, "the server is shutting down", QUIC_IDLE).await;
        finished_tx.send_replace(true);
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        info!("stopped");
        Ok(())
    }
}
