//! Server lifecycle: bind, serve, shut down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::info;

use crate::clock::ServerClock;
use crate::config::Config;
use crate::http::{AppState, router};
use crate::hub::{Hub, HubConfig};
use crate::session::SessionConfig;

/// A bound, not yet running server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: AppState,
    shutdown_tx: watch::Sender<bool>,
}

impl Server {
    /// Binds the listeners of `cfg`.
    pub async fn bind(cfg: Config) -> std::io::Result<Server> {
        let listener = TcpListener::bind(cfg.http_addr).await?;
        let (shutdown_tx, shutdown) = watch::channel(false);
        let clock = ServerClock::new();
        let hub = Hub::new(
            HubConfig { room: cfg.room_config(), room_grace: Duration::from_millis(cfg.room_grace_ms) },
            clock,
            shutdown.clone(),
        );
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
        };
        Ok(Server { listener, state, shutdown_tx })
    }

    /// The HTTP/WebSocket address actually bound.
    pub fn http_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then closes every session with
    /// `ShuttingDown` and waits (bounded) for them to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let Server { listener, state, shutdown_tx } = self;
        let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let tx = shutdown_tx.clone();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                info!("shutting down");
                tx.send_replace(true);
            })
            .await?;
        shutdown_tx.send_replace(true);
        let all = state.max_connections as u32;
        let _ = tokio::time::timeout(Duration::from_secs(5), state.conn_limit.acquire_many(all)).await;
        info!("stopped");
        Ok(())
    }
}
