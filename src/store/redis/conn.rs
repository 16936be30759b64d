//! A connection to Redis: one server, or a Redis Cluster. Both carry the
//! same commands, scripts and pipelines (every script and pipeline touches
//! one slot, see `keys.rs`); a cluster routes each by its slot and follows
//! failovers and resharding by itself.
//!
//! Which one is found, not configured: [`connect`] asks the server given by
//! `--redis-url` (`INFO cluster`) and, on a cluster, uses it as the seed
//! (more seeds: several URLs separated by commas).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, PushInfo, RedisFuture, RedisResult, Value};
use tokio::sync::mpsc;

/// A connection for commands (cheap to clone, shared by tasks).
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server (or a primary behind a proxy): a connection manager that
    /// reconnects by itself.
    Single(ConnectionManager),
    /// A Redis Cluster: a connection per node, slot-routed.
    Cluster(ClusterConnection),
}

impl Conn {
    /// Whether this is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// How room channels are published (in scripts too): sharded on a
    /// cluster, so a room's messages stay on its shard; classic on one
    /// server (where it is the same, and Redis 6 knows no `SPUBLISH`).
    pub(crate) fn publish(&self) -> &'static str {
        if self.is_cluster() { "SPUBLISH" } else { "PUBLISH" }
    }

    /// Subscribes to (or, `on` false, unsubscribes from) room channels:
    /// sharded channels on a cluster (`SSUBSCRIBE`: each on its room's
    /// shard), classic ones on one server. Resubscribed by the connection
    /// itself after a reconnection or failover.
    pub(crate) async fn subscribe_rooms(&mut self, channels: &[String], on: bool) -> RedisResult<()> {
        match (self, on) {
            (Conn::Single(c), true) => c.subscribe(channels).await,
            (Conn::Single(c), false) => c.unsubscribe(channels).await,
            // One command per channel: a cluster routes each to its shard.
            (Conn::Cluster(c), true) => {
                for ch in channels {
                    c.ssubscribe(ch).await?;
                }
                Ok(())
            }
            (Conn::Cluster(c), false) => {
                for ch in channels {
                    c.sunsubscribe(ch).await?;
                }
                Ok(())
            }
        }
    }

    /// Subscribes to a global channel (classic pub/sub: every node of a
    /// cluster hears it).
    pub(crate) async fn subscribe_global(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Conn::Single(c) => c.subscribe(channel).await,
            Conn::Cluster(c) => c.subscribe(channel).await,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The two connections a node keeps: commands, and subscriptions (their
/// messages arrive on the receiver). Subscriptions get their own connection:
/// push messages interleaved with the replies of a pipeline on one
/// connection confuse redis-rs' reply matching (seen under load: replies
/// handed to the wrong caller).
pub(crate) struct Connected {
    pub(crate) conn: Conn,
    pub(crate) sub: Conn,
    pub(crate) pushes: mpsc::UnboundedReceiver<PushInfo>,
}

/// How long a connection attempt or a reply may take before it fails (the
/// node then refuses commands and serves the last timelines).
const TIMEOUT: Duration = Duration::from_secs(1);

/// Connects to `urls` (one URL, or several seeds of a cluster separated by
/// commas), RESP3. A `rediss://` URL is Redis over TLS (rustls with ring):
/// the server's certificate must chain to `ca` (PEM) when given, else to
/// the system's roots.
pub(crate) async fn connect(urls: &str, ca: Option<&[u8]>) -> RedisResult<Connected> {
    // redis-rs builds its rustls config with the process's crypto provider:
    // make it ring, as for QUIC (a no-op when already set).
    let _ = wtransport::tls::rustls::crypto::ring::default_provider().install_default();
    let seeds: Vec<&str> = urls.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
    let first = seeds.first().copied().unwrap_or(urls);
    let single = single_client(first, ca)?;
    if seeds.len() == 1 && !is_cluster(&single).await? {
        let (tx, pushes) = mpsc::unbounded_channel::<PushInfo>();
        let cfg = || {
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(TIMEOUT))
                .set_response_timeout(Some(TIMEOUT))
                .set_max_delay(Duration::from_millis(500))
        };
        let sub =
            single.get_connection_manager_with_config(cfg().set_push_sender(tx).set_automatic_resubscription()).await?;
        let conn = single.get_connection_manager_with_config(cfg()).await?;
        return Ok(Connected { conn: Conn::Single(conn), sub: Conn::Single(sub), pushes });
    }
    let infos = seeds.iter().map(|u| u.into_connection_info()).collect::<RedisResult<Vec<_>>>()?;
    let builder = || {
        let mut b = ClusterClientBuilder::new(infos.clone())
            .use_protocol(ProtocolVersion::RESP3)
            .connection_timeout(TIMEOUT)
            .response_timeout(TIMEOUT)
            .retries(3)
            .min_retry_wait(20)
            .max_retry_wait(500);
        if let Some(pem) = ca {
            b = b.certs(redis::TlsCertificates { client_tls: None, root_cert: Some(pem.to_vec()) });
        }
        b
    };
    let (tx, pushes) = mpsc::unbounded_channel::<PushInfo>();
    let sub = builder().push_sender(tx).build()?.get_async_connection().await?;
    let conn = builder().build()?.get_async_connection().await?;
    Ok(Connected { conn: Conn::Cluster(conn), sub: Conn::Cluster(sub), pushes })
}

fn single_client(url: &str, ca: Option<&[u8]>) -> RedisResult<redis::Client> {
    let info = url.into_connection_info()?;
    let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
    let info = info.set_redis_settings(settings);
    match ca {
        Some(pem) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates { client_tls: None, root_cert: Some(pem.to_vec()) },
        ),
        None => redis::Client::open(info),
    }
}

/// Whether the server runs in cluster mode (`INFO cluster`).
async fn is_cluster(client: &redis::Client) -> RedisResult<bool> {
    let mut c = tokio::time::timeout(TIMEOUT * 3, client.get_multiplexed_async_connection())
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "Redis did not answer")))??;
    let info: String = redis::cmd("INFO").arg("cluster").query_async(&mut c).await?;
    Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1"))
}
