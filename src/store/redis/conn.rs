//! A connection to Redis: one server, or a Redis Cluster. Both carry the
//! same commands, scripts and pipelines (every script and pipeline touches
//! one slot, see `keys.rs`); a cluster routes each by its slot and follows
//! failovers and resharding by itself.
//!
//! Which one is found, not configured: [`connect`] asks the server given by
//! `--redis-url` (`INFO cluster`) and, on a cluster, uses it as the seed
//! (more seeds: several URLs separated by commas).

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, ProtocolVersion, PushInfo, RedisFuture, RedisResult, Value,
};
use tokio::sync::mpsc;

/// A connection for commands (cheap to clone, shared by tasks).
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server (or a primary behind a proxy): a connection manager that
    /// reconnects by itself.
    Single(ConnectionManager),
    /// A Redis Cluster: a connection per node, slot-routed, which
    /// [`Conn::rebuild`] can replace.
    Cluster(Arc<ClusterHandle>),
}

/// A cluster connection and what it takes to make a fresh one.
pub(crate) struct ClusterHandle {
    current: RwLock<ClusterConnection>,
    /// Where a fresh connection starts: the seeds given, and every node
    /// seen since (`learn`), so a seed that died is no dead end.
    seeds: Mutex<Vec<ConnectionInfo>>,
    ca: Option<Vec<u8>>,
    /// The subscription connection's push messages.
    push: Option<mpsc::UnboundedSender<PushInfo>>,
}

impl ClusterHandle {
    fn get(&self) -> ClusterConnection {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

fn cluster_builder(seeds: Vec<ConnectionInfo>, ca: Option<&[u8]>) -> ClusterClientBuilder {
    let mut b = ClusterClientBuilder::new(seeds)
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
}

async fn cluster_connection(
    seeds: Vec<ConnectionInfo>,
    ca: Option<&[u8]>,
    push: Option<&mpsc::UnboundedSender<PushInfo>>,
) -> RedisResult<ClusterConnection> {
    let mut b = cluster_builder(seeds, ca);
    if let Some(tx) = push {
        b = b.push_sender(tx.clone());
    }
    b.build()?.get_async_connection().await
}

impl Conn {
    /// Whether this is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// Remembers cluster nodes (`host:port`) as seeds of a fresh connection.
    pub(crate) fn learn(&self, nodes: &[String]) {
        let Conn::Cluster(h) = self else { return };
        let tls = h.ca.is_some();
        let mut seeds = h.seeds.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for node in nodes {
            let url = format!("{}://{node}/", if tls { "rediss" } else { "redis" });
            if let Ok(info) = url.as_str().into_connection_info()
                && !seeds.iter().any(|s| s.addr() == info.addr())
            {
                seeds.push(info);
            }
        }
    }

    /// Replaces a cluster connection with a fresh one that learns the
    /// topology anew from the seeds (no-op on one server, whose connection
    /// manager reconnects by itself). redis-rs 1.8's cluster connection can
    /// be left timing out on every request after a primary died under load;
    /// a fresh one is not. Subscriptions must be made again (the caller's).
    pub(crate) async fn rebuild(&self) -> RedisResult<()> {
        let Conn::Cluster(h) = self else { return Ok(()) };
        let seeds = h.seeds.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let mut last = None;
        // Each seed on its own first: one that is down must not fail the rest.
        for seed in std::iter::once(seeds.clone()).chain(seeds.iter().map(|s| vec![s.clone()])) {
            match cluster_connection(seed, h.ca.as_deref(), h.push.as_ref()).await {
                Ok(fresh) => {
                    *h.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| redis::RedisError::from((redis::ErrorKind::Client, "no seed to connect to"))))
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
            (Conn::Cluster(h), true) => {
                let mut c = h.get();
                for ch in channels {
                    c.ssubscribe(ch).await?;
                }
                Ok(())
            }
            (Conn::Cluster(h), false) => {
                let mut c = h.get();
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
            Conn::Cluster(h) => h.get().subscribe(channel).await,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(h) => {
                let mut c = h.get();
                Box::pin(async move { c.req_packed_command(cmd).await })
            }
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
            Conn::Cluster(h) => {
                let mut c = h.get();
                Box::pin(async move { c.req_packed_commands(pipeline, offset, count).await })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(h) => h.get().get_db(),
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
    let (tx, pushes) = mpsc::unbounded_channel::<PushInfo>();
    let handle = |conn, push| {
        Conn::Cluster(Arc::new(ClusterHandle {
            current: RwLock::new(conn),
            seeds: Mutex::new(infos.clone()),
            ca: ca.map(<[u8]>::to_vec),
            push,
        }))
    };
    let sub = cluster_connection(infos.clone(), ca, Some(&tx)).await?;
    let conn = cluster_connection(infos.clone(), ca, None).await?;
    Ok(Connected { conn: handle(conn, None), sub: handle(sub, Some(tx)), pushes })
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

/// A Lua script, run with `EVALSHA` and, when the server does not know it
/// yet (`NOSCRIPT`: a new server, a restarted one, a replica promoted by a
/// failover), with `EVAL`, which runs and caches it there. Unlike
/// `redis::Script` it never sends `SCRIPT LOAD`, which a cluster connection
/// fans out to every primary: redis-rs 1.8's fan-out, sent while a primary
/// was down, left the connection timing out for good.
#[derive(Debug, Clone)]
pub(crate) struct Lua {
    code: &'static str,
    hash: String,
}

impl Lua {
    pub(crate) fn new(code: &'static str) -> Lua {
        Lua { code, hash: redis::Script::new(code).get_hash().to_owned() }
    }

    /// A call with its first key.
    pub(crate) fn key<T: redis::ToRedisArgs>(&self, key: T) -> LuaCall<'_> {
        let mut call = self.prepare_invoke();
        call.key(key);
        call
    }

    /// A call without keys or arguments yet.
    pub(crate) fn prepare_invoke(&self) -> LuaCall<'_> {
        LuaCall { lua: self, keys: Vec::new(), args: Vec::new() }
    }
}

/// One call of a [`Lua`] script: its keys (every key it touches) and arguments.
#[derive(Debug)]
pub(crate) struct LuaCall<'a> {
    lua: &'a Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl LuaCall<'_> {
    pub(crate) fn key<T: redis::ToRedisArgs>(&mut self, key: T) -> &mut Self {
        self.keys.extend(key.to_redis_args());
        self
    }

    pub(crate) fn arg<T: redis::ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.args.extend(arg.to_redis_args());
        self
    }

    fn cmd(&self, name: &str, script: &str) -> Cmd {
        let mut cmd = redis::cmd(name);
        cmd.arg(script).arg(self.keys.len()).arg(&self.keys).arg(&self.args);
        cmd
    }

    /// Runs the script (routed by its first key on a cluster).
    pub(crate) async fn invoke_async<T: redis::FromRedisValue>(&self, con: &mut impl ConnectionLike) -> RedisResult<T> {
        match self.cmd("EVALSHA", &self.lua.hash).query_async(con).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.cmd("EVAL", self.lua.code).query_async(con).await
            }
            r => r,
        }
    }
}
