//! A real local Redis Cluster for the scale-out tests: `redis-server`s in
//! cluster mode on free ports of 127.0.0.1, without persistence, formed and
//! asked with `redis-cli` (`.ci/test` installs both); and a self-test of it.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::{WAIT, fresh_dir};

/// How long the cluster may take to form, to fail over or to take a
/// restarted node back.
const SETTLE: Duration = Duration::from_secs(20);
/// How often it is asked meanwhile.
const POLL: Duration = Duration::from_millis(50);
/// How long one `redis-cli` call of a test may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one of our own polling questions may take (a node that does
/// not answer in time is not ready).
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// The number of hash slots.
const SLOTS: u32 = 16384;
/// Redis Cluster's bus port is the client port plus this.
const BUS_OFFSET: u16 = 10_000;

/// The primaries that own slots, by port, each with its slot ranges
/// (inclusive, sorted), as one node sees them.
type View = BTreeMap<u16, Vec<(u16, u16)>>;

/// A Redis Cluster of local `redis-server`s. Every node is killed and every
/// directory removed when it is dropped.
pub(crate) struct RedisCluster {
    nodes: Vec<Node>,
    /// Holds one directory per node.
    dir: PathBuf,
}

struct Node {
    port: u16,
    /// Its `nodes.conf` (and a replica's transfer files).
    dir: PathBuf,
    /// `None` once killed.
    child: Mutex<Option<Child>>,
    /// The slots it owned when it was killed, for `wait_failover`.
    owned_when_killed: Vec<(u16, u16)>,
}

impl Node {
    fn running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        matches!(child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl RedisCluster {
    /// Starts `primaries` primaries with `replicas` replicas each, every node
    /// on its own free port with its own directory, forms the cluster with
    /// `redis-cli --cluster create`, and waits until every node says
    /// `cluster_state:ok`, knows every other node and sees the same owner for
    /// every slot, and every replica is in sync with its primary.
    ///
    /// `redis-cli` needs at least 3 primaries.
    pub(crate) fn start(primaries: usize, replicas: usize) -> RedisCluster {
        assert!(primaries >= 3, "redis-cli --cluster create needs at least 3 primaries, not {primaries}");
        let total = primaries * (1 + replicas);
        // Built first, so that a panic below still kills what was started.
        let mut cluster = RedisCluster { nodes: Vec::with_capacity(total), dir: fresh_dir("redis-cluster") };
        for i in 0..total {
            let dir = cluster.dir.join(format!("node-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            // A port free when checked may be taken before the server binds it: then try another.
            let mut failures = Vec::new();
            let (port, child) = loop {
                let port = free_cluster_port();
                match spawn_node(port, &dir) {
                    Ok(child) => break (port, child),
                    Err(e) if failures.len() < 4 => failures.push(e),
                    Err(e) => panic!("redis-server did not come up: {failures:?}, {e}"),
                }
            };
            cluster.nodes.push(Node { port, dir, child: Mutex::new(Some(child)), owned_when_killed: Vec::new() });
        }

        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        create.args(cluster.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        create.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        match run(create, Duration::from_secs(60)) {
            Ok(out) if out.contains("All 16384 slots covered") => {}
            Ok(out) | Err(out) => panic!("redis-cli --cluster create failed:\n{out}"),
        }
        wait_until("the Redis Cluster to form", || cluster.settled(Some(total)));
        cluster
    }

    /// Seed URLs of every node, killed ones included, e.g. "redis://127.0.0.1:PORT/".
    pub(crate) fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| url(n.port)).collect()
    }

    /// The URL of one running primary, handy as a single seed.
    pub(crate) fn url(&self) -> String {
        let running = self.running();
        let port = self.primary_ports().into_iter().find(|p| running.contains(p));
        url(port.expect("no primary of the Redis Cluster is running"))
    }

    /// Ports of the primaries that own slots, as most running nodes see them
    /// (a killed primary stays one until its replica takes over), ascending.
    pub(crate) fn primary_ports(&self) -> Vec<u16> {
        self.view().into_keys().collect()
    }

    /// The port of the primary that owns the slot of `key`.
    pub(crate) fn primary_of(&self, key: &str) -> u16 {
        let slot = self
            .running()
            .into_iter()
            .find_map(|p| ask(p, &["CLUSTER", "KEYSLOT", key]).ok())
            .expect("no node of the Redis Cluster answers");
        let slot: u16 = slot.parse().unwrap_or_else(|_| panic!("CLUSTER KEYSLOT {key} answered {slot:?}"));
        owner(&self.view(), slot).unwrap_or_else(|| panic!("no primary owns slot {slot} (of {key:?})"))
    }

    /// SIGKILLs the node on `port`; its directory stays, so it can be restarted.
    pub(crate) fn kill(&mut self, port: u16) {
        let owned = self.view().remove(&port).unwrap_or_default();
        let node = self.node_mut(port);
        assert!(node.running(), "the node on port {port} is not running");
        node.stop();
        node.owned_when_killed = owned;
    }

    /// Restarts a killed node on the same port with the same `nodes.conf`,
    /// and waits until it sees the same primaries and slots as the other
    /// nodes: a primary whose replica took over is then a replica itself.
    pub(crate) fn restart(&mut self, port: u16) {
        let node = self.node_mut(port);
        assert!(!node.running(), "the node on port {port} is still running");
        node.stop();
        let child = spawn_node(port, &node.dir).unwrap_or_else(|e| panic!("could not restart the node: {e}"));
        *node.child.get_mut().unwrap_or_else(PoisonError::into_inner) = Some(child);
        node.owned_when_killed.clear();
        wait_until(&format!("the restarted node on port {port} to rejoin"), || {
            let own = ask(port, &["CLUSTER", "NODES"]).and_then(|n| primaries_in(&n))?;
            match self.majority_view(Some(port)) {
                Ok(others) if others != own => Err(format!("it sees {own:?}, the others {others:?}")),
                // Equal, or no other node is running.
                _ => Ok(()),
            }
        });
    }

    /// Waits until a replica took over the slots the node on `port` owned
    /// (when it was killed, or now): `port` owns no slots, every running
    /// node says `cluster_state:ok` and sees the same owners, and every
    /// running replica is in sync. Returns the port of the new primary.
    pub(crate) fn wait_failover(&self, port: u16) -> u16 {
        let mut owned = self.node(port).owned_when_killed.clone();
        if owned.is_empty() {
            owned = self.view().remove(&port).unwrap_or_default();
        }
        assert!(!owned.is_empty(), "the node on port {port} owned no slots: nothing fails over");
        wait_until(&format!("a replica to take over the slots of the node on port {port}"), || {
            let view = self.settled(None)?;
            if view.contains_key(&port) {
                return Err(format!("{port} still owns slots: {view:?}"));
            }
            let owners: BTreeSet<u16> = owned.iter().filter_map(|&(first, _)| owner(&view, first)).collect();
            match owners.into_iter().collect::<Vec<_>>()[..] {
                [new] => Ok(new),
                ref several => Err(format!("{owned:?} are owned by {several:?}")),
            }
        })
    }

    /// Number of keys on every running primary, summed (`DBSIZE`).
    pub(crate) fn dbsize(&self) -> u64 {
        let running = self.running();
        self.primary_ports()
            .into_iter()
            .filter(|p| running.contains(p))
            .map(|p| {
                let n = self.cli(p, &["DBSIZE"]);
                n.parse::<u64>().unwrap_or_else(|_| panic!("DBSIZE on port {p} answered {n:?}"))
            })
            .sum()
    }

    /// Runs `redis-cli -h 127.0.0.1 -p PORT ARGS…` and returns its stdout,
    /// trimmed. Error replies come back as text ("ERR …", "MOVED …"); flags
    /// such as `-c` may lead `args`. Panics if `redis-cli` fails (e.g. cannot
    /// connect) or takes longer than 10 s.
    pub(crate) fn cli(&self, port: u16, args: &[&str]) -> String {
        redis_cli(port, args, CLI_TIMEOUT).unwrap_or_else(|e| panic!("redis-cli {}: {e}", args.join(" ")))
    }

    fn node(&self, port: u16) -> &Node {
        self.nodes.iter().find(|n| n.port == port).unwrap_or_else(|| panic!("no node of the cluster on port {port}"))
    }

    fn node_mut(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node of the cluster on port {port}"))
    }

    /// Ports of the nodes whose process is alive.
    fn running(&self) -> Vec<u16> {
        self.nodes.iter().filter(|n| n.running()).map(|n| n.port).collect()
    }

    /// The primaries and slots as most running nodes see them.
    fn view(&self) -> View {
        self.majority_view(None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The primaries and slots as most running nodes but `skip` see them.
    fn majority_view(&self, skip: Option<u16>) -> Result<View, String> {
        let mut seen: Vec<(View, usize)> = Vec::new();
        let mut errors = Vec::new();
        for port in self.running().into_iter().filter(|p| Some(*p) != skip) {
            match ask(port, &["CLUSTER", "NODES"]).and_then(|n| primaries_in(&n)) {
                Ok(view) => match seen.iter_mut().find(|(v, _)| *v == view) {
                    Some((_, count)) => *count += 1,
                    None => seen.push((view, 1)),
                },
                Err(e) => errors.push(e),
            }
        }
        // On a tie, the first seen.
        seen.into_iter()
            .rev()
            .max_by_key(|(_, count)| *count)
            .map(|(view, _)| view)
            .ok_or_else(|| format!("no node of the Redis Cluster answers: {errors:?}"))
    }

    /// The primaries and slots if every running node says `cluster_state:ok`
    /// with every slot served (and knows `known_nodes` nodes, if given), they
    /// all see the same owners of every slot, and every running replica is
    /// in sync with its primary; else what is not so yet.
    fn settled(&self, known_nodes: Option<usize>) -> Result<View, String> {
        let mut agreed: Option<(u16, View)> = None;
        for port in self.running() {
            let info = ask(port, &["CLUSTER", "INFO"])?;
            for (name, want) in [("cluster_state", "ok"), ("cluster_slots_ok", "16384")] {
                if field(&info, name) != Some(want) {
                    return Err(format!("node {port} says {name}:{}", field(&info, name).unwrap_or("?")));
                }
            }
            if let Some(n) = known_nodes
                && field(&info, "cluster_known_nodes") != Some(n.to_string().as_str())
            {
                return Err(format!("node {port} knows {:?} nodes of {n}", field(&info, "cluster_known_nodes")));
            }
            let view = primaries_in(&ask(port, &["CLUSTER", "NODES"])?)?;
            match &agreed {
                None => agreed = Some((port, view)),
                Some((first, seen)) if *seen != view => {
                    return Err(format!("node {first} sees {seen:?}, node {port} sees {view:?}"));
                }
                Some(_) => {}
            }
            let replication = ask(port, &["INFO", "replication"])?;
            if field(&replication, "role") == Some("slave") && field(&replication, "master_link_status") != Some("up") {
                return Err(format!("replica {port} is not in sync with its primary yet"));
            }
        }
        let (_, view) = agreed.ok_or("no node of the Redis Cluster is running")?;
        let covered: u32 = view.values().flatten().map(|&(a, b)| u32::from(b - a) + 1).sum();
        if covered != SLOTS {
            return Err(format!("{covered} of {SLOTS} slots are owned: {view:?}"));
        }
        Ok(view)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/")
}

/// A port `p` where both `p` and its cluster bus port `p + 10000` are free
/// on 127.0.0.1, never the same twice in this process. It is below the
/// kernel's ephemeral range (from 32768 on Linux), so the `127.0.0.1:0`
/// listeners and client connections of other tests do not take it meanwhile.
fn free_cluster_port() -> u16 {
    const FIRST: u16 = 12_000;
    const COUNT: u16 = 10_000;
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    // Several test processes at once start at different places.
    let start = (std::hash::RandomState::new().hash_one(std::process::id()) % u64::from(COUNT)) as u16;
    for i in 0..COUNT {
        let port = FIRST + (start + i) % COUNT;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if !handed_out.contains(&port) && free(port) && free(port + BUS_OFFSET) {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free ports p and p + {BUS_OFFSET} for p in {FIRST}..{}", FIRST + COUNT);
}

/// Starts one cluster node on `port` keeping its `nodes.conf` in `dir`, and
/// waits until it answers on the port (and it is this process that answers,
/// not another that had the port).
///
/// A replica may always take over (`cluster-replica-validity-factor 0`),
/// failures are noticed after 1 s, replicas stay with their primaries, and
/// a primary syncs a new replica at once (the default waits 5 s for more).
fn spawn_node(port: u16, dir: &Path) -> Result<Child, String> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000"])
        .args(["--cluster-replica-validity-factor", "0", "--cluster-allow-replica-migration", "no"])
        .args(["--cluster-announce-ip", "127.0.0.1", "--repl-diskless-sync-delay", "0"])
        .args(["--enable-debug-command", "local"])
        .arg("--dir")
        .arg(dir)
        .current_dir(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (.ci/test installs it)");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis-server on port {port} exited at once ({status})"));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let info = ask(port, &["INFO", "server"]);
            let pid = info.as_deref().ok().and_then(|i| field(i, "process_id"));
            if pid == Some(child.id().to_string().as_str()) {
                return Ok(child);
            }
            if pid.is_some() {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("another redis-server answers on port {port}"));
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("redis-server on port {port} did not come up within {WAIT:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Our own polling question to a node: a short timeout.
fn ask(port: u16, args: &[&str]) -> Result<String, String> {
    redis_cli(port, args, ASK_TIMEOUT)
}

/// `redis-cli -h 127.0.0.1 -p PORT ARGS…`'s stdout, trimmed.
fn redis_cli(port: u16, args: &[&str], timeout: Duration) -> Result<String, String> {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(args);
    run(cmd, timeout).map(|out| out.trim().to_owned()).map_err(|e| format!("node {port}: {}", e.trim()))
}

/// Runs `cmd` without stdin, killing it after `timeout`. Its stdout if it
/// succeeds, else its stdout and stderr.
fn run(mut cmd: Command, timeout: Duration) -> Result<String, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli must be installed (.ci/test installs it)");
    // Read while it runs, so that a long answer does not fill the pipe.
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    match status {
        Some(s) if s.success() => Ok(out),
        Some(s) => Err(format!("{s}: {out}{err}")),
        None => Err(format!("no answer within {timeout:?}: {out}{err}")),
    }
}

fn drain(mut from: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The value of `name:value` in an `INFO` or `CLUSTER INFO` answer.
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
}

/// The primaries owning slots in a `CLUSTER NODES` answer (lines of
/// `id ip:port@bus[,hostname] flags primary ping pong epoch link slot…`;
/// slots migrating or importing, in brackets, left out).
fn primaries_in(nodes: &str) -> Result<View, String> {
    let mut view = View::new();
    for line in nodes.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(' ').collect();
        let odd = || format!("unexpected CLUSTER NODES line {line:?}");
        if fields.len() < 8 {
            return Err(odd());
        }
        let flags: Vec<&str> = fields[2].split(',').collect();
        if !flags.contains(&"master") || flags.contains(&"noaddr") || flags.contains(&"handshake") {
            continue;
        }
        let port = fields[1].split(['@', ',']).next().and_then(|a| a.rsplit_once(':')).map(|(_, p)| p.parse());
        let Some(Ok(port)) = port else { return Err(odd()) };
        let mut ranges = Vec::new();
        for slots in fields[8..].iter().filter(|s| !s.starts_with('[')) {
            let (first, last) = slots.split_once('-').unwrap_or((slots, slots));
            ranges.push((first.parse().map_err(|_| odd())?, last.parse().map_err(|_| odd())?));
        }
        if !ranges.is_empty() {
            ranges.sort_unstable();
            view.insert(port, ranges);
        }
    }
    Ok(view)
}

/// The primary owning `slot`.
fn owner(view: &View, slot: u16) -> Option<u16> {
    view.iter().find(|(_, ranges)| ranges.iter().any(|&(a, b)| (a..=b).contains(&slot))).map(|(&port, _)| port)
}

/// Polls `check` every 50 ms until it holds, for at most 20 s.
fn wait_until<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + SETTLE;
    loop {
        match check() {
            Ok(t) => return t,
            Err(e) if Instant::now() >= deadline => panic!("waited {SETTLE:?} for {what}; last: {e}"),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

#[test]
fn a_local_cluster_covers_every_slot_and_routes_keys() {
    let began = Instant::now();
    let cluster = RedisCluster::start(3, 1);
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    assert_eq!(cluster.urls(), ports.iter().map(|&p| url(p)).collect::<Vec<_>>());
    for &port in &ports {
        let info = cluster.cli(port, &["CLUSTER", "INFO"]);
        for want in ["cluster_state:ok", "cluster_slots_assigned:16384", "cluster_known_nodes:6", "cluster_size:3"] {
            assert!(info.lines().any(|l| l.trim() == want), "node {port} lacks {want}: {info}");
        }
    }
    let primaries = cluster.primary_ports();
    assert_eq!(primaries.len(), 3, "{primaries:?}");
    assert!(primaries.iter().all(|p| ports.contains(p)));
    assert!(primaries.iter().any(|&p| url(p) == cluster.url()));

    // Both keys hash to the slot of `{x}`; written through a node that does
    // not own it, `redis-cli -c` follows the redirection.
    let owner = cluster.primary_of("{x}");
    assert!(primaries.contains(&owner));
    assert_eq!(cluster.primary_of("a{x}"), owner);
    let elsewhere = *primaries.iter().find(|&&p| p != owner).unwrap();
    for key in ["a{x}", "b{x}"] {
        assert!(cluster.cli(elsewhere, &["-c", "SET", key, "1"]).ends_with("OK"));
    }
    let slot = cluster.cli(owner, &["CLUSTER", "KEYSLOT", "{x}"]);
    assert_eq!(cluster.cli(owner, &["CLUSTER", "COUNTKEYSINSLOT", &slot]), "2");
    assert_eq!(cluster.cli(owner, &["GET", "b{x}"]), "1");
    assert_eq!(cluster.cli(elsewhere, &["GET", "a{x}"]), format!("MOVED {slot} 127.0.0.1:{owner}"));
    assert_eq!(cluster.dbsize(), 2);
    println!("a local cluster: {:?}", began.elapsed());
}

#[test]
fn a_killed_primary_fails_over_to_its_replica() {
    let began = Instant::now();
    let mut cluster = RedisCluster::start(3, 1);
    let old = cluster.primary_of("{room}");
    // ROLE of a primary: master, offset, then ip, port, offset of each replica.
    let role = cluster.cli(old, &["ROLE"]);
    let replica: u16 = role.lines().nth(3).and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("ROLE: {role}"));
    assert_eq!(cluster.cli(old, &["SET", "{room}:k", "v"]), "OK");
    assert_eq!(cluster.cli(old, &["WAIT", "1", "1000"]), "1", "the replica has the key");

    cluster.kill(old);
    let killed = Instant::now();
    let new = cluster.wait_failover(old);
    println!("failover: {:?}", killed.elapsed());
    assert_eq!(new, replica, "its replica took over");
    assert_eq!(cluster.primary_of("{room}"), new);
    let primaries = cluster.primary_ports();
    assert_eq!(primaries.len(), 3, "{primaries:?}");
    assert!(!primaries.contains(&old));
    assert_eq!(cluster.cli(new, &["GET", "{room}:k"]), "v");
    assert_eq!(cluster.dbsize(), 1);
    assert!(!cluster.urls().is_empty() && cluster.url() != url(old));

    // Back, it is the new primary's replica.
    cluster.restart(old);
    let role = cluster.cli(old, &["ROLE"]);
    let lines: Vec<&str> = role.lines().collect();
    assert_eq!(lines[..3], ["slave", "127.0.0.1", new.to_string().as_str()], "ROLE: {role}");
    wait_until("the restarted node to sync", || {
        let info = cluster.cli(old, &["INFO", "replication"]);
        (field(&info, "master_link_status") == Some("up")).then_some(()).ok_or(info)
    });
    assert_eq!(cluster.primary_ports(), primaries);
    println!("a failover and back: {:?}", began.elapsed());
}
