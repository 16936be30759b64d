//! The servers under test, each a separate process: the real `lockstep`
//! binary (release build), `peer-ws` and `peer-socketio` (Node), and their
//! CPU and memory from `/proc/PID`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which server a run drives, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Lockstep over WebTransport: bincode on one stream plus datagrams.
    Wt,
    /// Lockstep over WebSocket, bincode (`lockstep.v1`).
    Ws,
    /// Lockstep over WebSocket, the legacy JSON dialect.
    Json,
    /// `../shared/peers/peer-ws` (JSON).
    PeerWs,
    /// `../shared/peers/peer-socketio` (socket.io framing).
    PeerSio,
}

impl Target {
    pub(crate) const ALL: [Target; 5] = [Target::Wt, Target::Ws, Target::Json, Target::PeerWs, Target::PeerSio];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Target::Wt => "lockstep-wt",
            Target::Ws => "lockstep-ws",
            Target::Json => "lockstep-json",
            Target::PeerWs => "peer-ws",
            Target::PeerSio => "peer-socketio",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Target> {
        Some(match s {
            "wt" | "lockstep-wt" => Target::Wt,
            "ws" | "lockstep-ws" => Target::Ws,
            "json" | "lockstep-json" => Target::Json,
            "peer-ws" | "peer" => Target::PeerWs,
            "peer-socketio" | "sio" | "socketio" => Target::PeerSio,
            _ => return None,
        })
    }

    pub(crate) fn is_lockstep(self) -> bool {
        matches!(self, Target::Wt | Target::Ws | Target::Json)
    }
}

/// Options of the server process.
#[derive(Debug, Clone)]
pub(crate) struct ServerOpts {
    /// peer-ws / peer-socketio `--viewer-count`.
    pub(crate) peer_counts: bool,
    /// Extra `lockstep serve` flags.
    pub(crate) lockstep_args: Vec<String>,
    /// `taskset -c` list for the server, if pinned.
    pub(crate) pin: Option<String>,
    /// Distinguishes two nodes of one run (log and data directory names).
    pub(crate) instance: usize,
}

/// A running server process; killed when dropped.
#[derive(Debug)]
pub(crate) struct Server {
    child: Child,
    pub(crate) pid: u32,
    pub(crate) http: SocketAddr,
    pub(crate) quic: Option<SocketAddr>,
    pub(crate) cert_sha256: Option<String>,
    data_dir: Option<PathBuf>,
}

/// Servers running now, so that an interrupted run does not leave them behind.
static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Kills the servers still running (on Ctrl-C or SIGTERM).
pub(crate) fn kill_running() {
    let pids = RUNNING.lock().map(|v| v.clone()).unwrap_or_default();
    for pid in pids {
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    }
}

/// Kills a child started here and forgets it.
fn stop(child: &mut Child) {
    if let Ok(mut v) = RUNNING.lock() {
        v.retain(|p| *p != child.id());
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Server {
    fn drop(&mut self) {
        stop(&mut self.child);
        if let Some(d) = &self.data_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(9001)
}

fn command(pin: &Option<String>, program: &Path) -> Command {
    match pin {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// The workspace root (where Cargo.toml is), for finding the binary and the peers.
pub(crate) fn workspace() -> PathBuf {
    if let Ok(d) = std::env::var("CARGO_MANIFEST_DIR") {
        return PathBuf::from(d);
    }
    // target/release/lockstep-load → the workspace is two levels up.
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// Builds the release `lockstep` binary (a no-op when it is fresh) and returns its path.
pub(crate) fn lockstep_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("lockstep");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ws = workspace();
    if ws.join("Cargo.toml").exists() {
        eprintln!("building the release lockstep binary (cargo build --release --bin lockstep)…");
        let st = Command::new(cargo)
            .args(["build", "--release", "--quiet", "--bin", "lockstep"])
            .current_dir(&ws)
            .status()?;
        anyhow::ensure!(st.success(), "cargo build --release --bin lockstep failed");
    }
    anyhow::ensure!(bin.exists(), "{} is missing: run cargo build --release", bin.display());
    Ok(bin)
}

/// A copy of a peer under /tmp with its dependencies installed (`../shared` is read-only).
fn peer_dir(peers: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dst = std::env::temp_dir().join("lockstep-load-peers").join(name);
    if !dst.join("node_modules").exists() {
        let src = peers.join(name);
        anyhow::ensure!(src.join("server.js").exists(), "{} not found (--peers DIR)", src.display());
        std::fs::create_dir_all(&dst)?;
        for f in ["server.js", "package.json", "package-lock.json"] {
            std::fs::copy(src.join(f), dst.join(f))?;
            let mut perm = std::fs::metadata(dst.join(f))?.permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            std::fs::set_permissions(dst.join(f), perm)?;
        }
        eprintln!("npm ci in {}…", dst.display());
        let st = Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--silent"]).current_dir(&dst).status()?;
        anyhow::ensure!(st.success(), "npm ci failed in {}", dst.display());
    }
    Ok(dst)
}

fn wait_line(log: &Path, needle: &str, child: &mut Child, timeout: Duration) -> anyhow::Result<String> {
    let t0 = Instant::now();
    loop {
        if let Ok(f) = std::fs::File::open(log) {
            for line in BufReader::new(f).lines().map_while(Result::ok) {
                if line.contains(needle) {
                    return Ok(line);
                }
            }
        }
        if let Some(st) = child.try_wait()? {
            anyhow::bail!("server exited ({st}) before listening; see {}", log.display());
        }
        anyhow::ensure!(t0.elapsed() < timeout, "server not listening after {timeout:?}; see {}", log.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `key=value` from a plain log line (peers print `pid=N`).
fn field(line: &str, key: &str) -> Option<String> {
    let i = line.find(&format!("{key}="))? + key.len() + 1;
    Some(line[i..].split_whitespace().next()?.trim_matches('"').to_owned())
}

/// Starts the server `t` needs.
pub(crate) fn start(t: Target, opts: &ServerOpts, peers: &Path, bin: Option<&Path>) -> anyhow::Result<Server> {
    let tag = format!("{}-{}-{}", t.name(), std::process::id(), opts.instance);
    let log = std::env::temp_dir().join(format!("lockstep-load-{tag}.log"));
    let out = std::fs::File::create(&log)?;
    if t.is_lockstep() {
        let bin = bin.ok_or_else(|| anyhow::anyhow!("no lockstep binary"))?;
        let data_dir = std::env::temp_dir().join(format!("lockstep-load-data-{tag}"));
        let _ = std::fs::remove_dir_all(&data_dir);
        let mut cmd = command(&opts.pin, bin);
        cmd.args(["serve", "--dev", "--data-dir"]).arg(&data_dir);
        cmd.args(["--http-addr", "127.0.0.1:0", "--quic-addr", "[::1]:0"]);
        // The generator is one address with thousands of clients: limits lifted,
        // unless the run sets them (attack runs keep the server's own).
        let given = |flag: &str| {
            opts.lockstep_args.iter().any(|a| a == flag || a.strip_prefix(flag).is_some_and(|r| r.starts_with('=')))
        };
        for (flag, value) in [
            ("--connects-per-ip-per-sec", "1000000"),
            ("--connect-burst", "1000000"),
            ("--msgs-per-sec", "100000"),
            ("--msg-burst", "100000"),
            ("--max-connections", "50000"),
        ] {
            if !given(flag) {
                cmd.args([flag, value]);
            }
        }
        cmd.args(&opts.lockstep_args);
        // LOCKSTEP_LOAD_RUST_LOG: another filter for the server's log (e.g. wtransport=debug).
        let filter = std::env::var("LOCKSTEP_LOAD_RUST_LOG");
        cmd.env("RUST_LOG", filter.as_deref().unwrap_or("info,lockstep::hub=warn,quinn=warn,wtransport=warn"));
        cmd.env_remove("LOCKSTEP_CONFIG");
        let mut child = cmd.stdout(out.try_clone()?).stderr(out).stdin(Stdio::null()).spawn()?;
        if let Ok(mut v) = RUNNING.lock() {
            v.push(child.id());
        }
        let line = match wait_line(&log, "lockstep listening", &mut child, Duration::from_secs(30)) {
            Ok(l) => l,
            Err(e) => {
                let _ = child.kill();
                return Err(e);
            }
        };
        // `--log-json`: {"fields":{"message":"lockstep listening","http":…,"quic":…,"certificate_sha256":…}}
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        let get = |k: &str| v["fields"][k].as_str().map(str::to_owned);
        let http = get("http").and_then(|s| s.parse().ok());
        let quic = get("quic").and_then(|s| s.parse().ok());
        let cert = get("certificate_sha256");
        let pid = child.id();
        let http = http.ok_or_else(|| anyhow::anyhow!("no http= in {line:?}"))?;
        Ok(Server { child, pid, http, quic, cert_sha256: cert, data_dir: Some(data_dir) })
    } else {
        let name = if t == Target::PeerWs { "peer-ws" } else { "peer-socketio" };
        let dir = peer_dir(peers, name)?;
        let port = free_port();
        let node = PathBuf::from("node");
        let mut cmd = command(&opts.pin, &node);
        cmd.arg("server.js").args(["--port", &port.to_string(), "--host", "127.0.0.1"]);
        cmd.args(["--viewer-count", if opts.peer_counts { "on" } else { "off" }]);
        let mut child = cmd.current_dir(&dir).stdout(out.try_clone()?).stderr(out).stdin(Stdio::null()).spawn()?;
        if let Ok(mut v) = RUNNING.lock() {
            v.push(child.id());
        }
        let line = wait_line(&log, "listening", &mut child, Duration::from_secs(30))?;
        // Under taskset the child is taskset, which execs node: same pid.
        let pid = field(&line, "pid").and_then(|p| p.parse().ok()).unwrap_or(child.id());
        Ok(Server {
            child,
            pid,
            http: SocketAddr::from(([127, 0, 0, 1], port)),
            quic: None,
            cert_sha256: None,
            data_dir: None,
        })
    }
}

/// Clock ticks per second of /proc/PID/stat (USER_HZ; 100 on Linux).
const HZ: f64 = 100.0;

/// CPU time (user + system) of a process, in seconds.
pub(crate) fn cpu_s(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let u: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    let st: f64 = f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    (u + st) / HZ
}

/// A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`), in KiB.
pub(crate) fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .and_then(|v| v.trim_start_matches(':').trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The server's WebTransport certificate hash as bytes.
pub(crate) fn digest(hex: &str) -> anyhow::Result<[u8; 32]> {
    anyhow::ensure!(hex.len() == 64, "bad certificate hash {hex:?}");
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    }
    Ok(out)
}

/// A `redis-server` on a free loopback port, without persistence, for
/// two-node runs (`--nodes 2`); killed when dropped.
#[derive(Debug)]
pub(crate) struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    pub(crate) fn start() -> anyhow::Result<Redis> {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("redis-server (apt-get install redis-server): {e}"))?;
        if let Ok(mut v) = RUNNING.lock() {
            v.push(child.id());
        }
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(t0.elapsed() < Duration::from_secs(10), "redis-server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Redis { child, port })
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Issue 17: a local Redis Cluster (`--scenario premiere`, `--scenario rooms`):
/// `redis-server`s in cluster mode on free loopback ports (each with its bus
/// port, port + 10000, free too, and below the ephemeral range), without
/// persistence, formed with `redis-cli --cluster create`; as
/// `tests/it/redis_cluster.rs` starts one, compactly. Every node is killed
/// and its directory removed when dropped.
#[derive(Debug)]
pub(crate) struct RedisCluster {
    nodes: Vec<Child>,
    /// Port and pid of each primary that owns slots, by port.
    primaries: Vec<(u16, u32)>,
    dir: PathBuf,
}

/// One primary's counters (`INFO stats`, `INFO commandstats`) and its CPU time.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub(crate) struct RedisStats {
    pub(crate) port: u16,
    pub(crate) commands: u64,
    pub(crate) net_in: u64,
    pub(crate) net_out: u64,
    pub(crate) cpu_s: f64,
    /// Calls per command (`cmdstat_NAME:calls=N`; commands run by scripts included).
    pub(crate) calls: std::collections::BTreeMap<String, u64>,
}

impl RedisCluster {
    /// `primaries` primaries (at least 3) with `replicas` replicas each; returns
    /// once every node says `cluster_state:ok` and knows every other, and every
    /// replica is in sync.
    pub(crate) fn start(primaries: usize, replicas: usize) -> anyhow::Result<RedisCluster> {
        anyhow::ensure!(primaries >= 3, "a Redis Cluster needs at least 3 primaries (--redis-primaries)");
        let total = primaries * (1 + replicas);
        let dir = std::env::temp_dir().join(format!("lockstep-load-redis-cluster-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cluster = RedisCluster { nodes: Vec::new(), primaries: Vec::new(), dir };
        let mut ports = Vec::new();
        for i in 0..total {
            let d = cluster.dir.join(format!("node-{i}"));
            std::fs::create_dir_all(&d)?;
            let mut tries = 0;
            let (port, child) = loop {
                let port = free_cluster_port()?;
                match spawn_cluster_node(port, &d) {
                    Ok(child) => break (port, child),
                    Err(e) if tries < 4 => {
                        tries += 1;
                        eprintln!("  (redis-server on {port}: {e:#}; another port)");
                    }
                    Err(e) => return Err(e),
                }
            };
            ports.push(port);
            cluster.nodes.push(child);
        }
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| anyhow::anyhow!("redis-cli (apt-get install redis-tools): {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(
            out.status.success() && text.contains("All 16384 slots covered"),
            "redis-cli --cluster create failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t0 = Instant::now();
        loop {
            match cluster_settled(&ports, total) {
                Ok(()) => break,
                Err(e) if t0.elapsed() > Duration::from_secs(30) => {
                    anyhow::bail!("the Redis Cluster did not form: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        // `CLUSTER NODES`: id addr@bus flags primary ping pong epoch link slot…
        let nodes = redis_query(ports[0], &["CLUSTER", "NODES"])?;
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].split(',').any(|x| x == "master") {
                continue;
            }
            let port: u16 = f[1]
                .split(['@', ','])
                .next()
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| p.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("unexpected CLUSTER NODES line {line:?}"))?;
            let i = ports
                .iter()
                .position(|p| *p == port)
                .ok_or_else(|| anyhow::anyhow!("a primary on {port} not started here"))?;
            cluster.primaries.push((port, cluster.nodes[i].id()));
        }
        cluster.primaries.sort_unstable();
        anyhow::ensure!(
            cluster.primaries.len() == primaries,
            "{} primaries own slots, not {primaries}",
            cluster.primaries.len()
        );
        Ok(cluster)
    }

    /// A seed URL: the first primary.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.primaries[0].0)
    }

    /// The primaries' ports, ascending.
    pub(crate) fn primary_ports(&self) -> Vec<u16> {
        self.primaries.iter().map(|p| p.0).collect()
    }

    /// Every primary's counters now, and its CPU time.
    pub(crate) fn stats(&self) -> anyhow::Result<Vec<RedisStats>> {
        self.primaries
            .iter()
            .map(|&(port, pid)| {
                let info = redis_query(port, &["INFO", "stats", "commandstats"])?;
                let field = |name: &str| info_field(&info, name).and_then(|v| v.parse().ok()).unwrap_or(0);
                let calls = info
                    .lines()
                    .filter_map(|l| {
                        let (name, rest) = l.trim().strip_prefix("cmdstat_")?.split_once(':')?;
                        let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?.parse().ok()?;
                        Some((name.to_owned(), calls))
                    })
                    .collect();
                Ok(RedisStats {
                    port,
                    commands: field("total_commands_processed"),
                    net_in: field("total_net_input_bytes"),
                    net_out: field("total_net_output_bytes"),
                    cpu_s: cpu_s(pid),
                    calls,
                })
            })
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.nodes {
            stop(c);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether every node says `cluster_state:ok`, knows `total` nodes, and
/// (a replica) is in sync with its primary.
fn cluster_settled(ports: &[u16], total: usize) -> anyhow::Result<()> {
    for &p in ports {
        let info = redis_query(p, &["CLUSTER", "INFO"])?;
        anyhow::ensure!(info_field(&info, "cluster_state") == Some("ok"), "node {p}: cluster_state not ok");
        anyhow::ensure!(
            info_field(&info, "cluster_known_nodes") == Some(total.to_string().as_str()),
            "node {p} does not know every node yet"
        );
        let repl = redis_query(p, &["INFO", "replication"])?;
        anyhow::ensure!(
            info_field(&repl, "role") != Some("slave") || info_field(&repl, "master_link_status") == Some("up"),
            "replica {p} not in sync yet"
        );
    }
    Ok(())
}

/// A port `p` with `p` and `p + 10000` free on 127.0.0.1, below the ephemeral
/// range (32768), never the same twice in this process.
fn free_cluster_port() -> anyhow::Result<u16> {
    const FIRST: u16 = 12_000;
    const COUNT: u16 = 10_000;
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let start = ((std::process::id() as u64).wrapping_mul(2_654_435_761) % u64::from(COUNT)) as u16;
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    for i in 0..COUNT {
        let port = FIRST + (start + i) % COUNT;
        if !handed.contains(&port) && free(port) && free(port + 10_000) {
            handed.push(port);
            return Ok(port);
        }
    }
    anyhow::bail!("no free ports p and p + 10000 for p in {FIRST}..{}", FIRST + COUNT)
}

/// One cluster node on `port`, its `nodes.conf` in `dir`; returns once it is
/// this process that answers on the port.
fn spawn_cluster_node(port: u16, dir: &Path) -> anyhow::Result<Child> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000"])
        .args(["--cluster-announce-ip", "127.0.0.1", "--repl-diskless-sync-delay", "0"])
        .arg("--dir")
        .arg(dir)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("redis-server (apt-get install redis-server): {e}"))?;
    if let Ok(mut v) = RUNNING.lock() {
        v.push(child.id());
    }
    let t0 = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            anyhow::bail!("redis-server on port {port} exited at once ({st})");
        }
        if let Ok(info) = redis_query(port, &["INFO", "server"]) {
            if info_field(&info, "process_id") == Some(child.id().to_string().as_str()) {
                return Ok(child);
            }
            stop(&mut child);
            anyhow::bail!("another redis-server answers on port {port}");
        }
        if t0.elapsed() > Duration::from_secs(10) {
            stop(&mut child);
            anyhow::bail!("redis-server on port {port} did not come up");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `name:value` of an `INFO` answer.
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
}

/// One command to the Redis on `127.0.0.1:port`, its answer as text (a
/// simple string, an integer or a bulk string; an error reply is an error).
pub(crate) fn redis_query(port: u16, args: &[&str]) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end();
    match line.as_bytes().first() {
        Some(b'+') | Some(b':') => Ok(line[1..].to_owned()),
        Some(b'-') => anyhow::bail!("redis {port}: {}", &line[1..]),
        Some(b'$') => {
            let n: i64 = line[1..].parse()?;
            anyhow::ensure!(n >= 0, "redis {port}: nil answer");
            let mut buf = vec![0; n as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n as usize);
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        _ => anyhow::bail!("redis {port}: unexpected answer {line:?}"),
    }
}
