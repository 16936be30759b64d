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
        cmd.env("RUST_LOG", "info,lockstep::hub=warn,quinn=warn,wtransport=warn");
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
