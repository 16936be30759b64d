//! `lockstep-load`: the load generator of issue 6.
//!
//! ```sh
//! cargo run --release --features load --bin lockstep-load -- --scenario s1
//! cargo run --release --features load --bin lockstep-load -- --help
//! ```
//!
//! Every server under test runs as its own process: the release `lockstep`
//! binary (built first if needed), and the peers `peer-ws` and
//! `peer-socketio` from `../shared/peers` (copied under the temp dir and
//! `npm ci`-ed there). Simulated viewers and one host per room run here, on
//! loopback. See `BENCHMARKS.md` for what each figure means.
//!
//! Issue 17's scale-out scenarios (`--scenario premiere`, `--scenario rooms`,
//! `scale.rs`) run several lockstep nodes on a local Redis Cluster started
//! here (`target::RedisCluster`), with WebSocket members placed on the nodes
//! by plan.

mod attack;
mod conn;
mod live;
mod live_stats;
mod proxy;
mod rec;
mod scale;
mod soak;
mod target;
mod wsclient;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::conn::{Ctx, Mode, Role};
use crate::proxy::{Impair, ProxyStats};
use crate::rec::{Precision, Rec, ms};
use crate::target::{ServerOpts, Target};

const HELP: &str = "\
lockstep-load: N viewers over R rooms, one host per room, against Lockstep and the peers.

USAGE: cargo run --release --features load --bin lockstep-load -- [OPTIONS]

  --scenario S       s1 (1 room x 1,000 viewers, a change every 250 ms; the default),
                     s2 (1 room x 10,000, every 1 s), s3 (1,000 rooms x 10, every 250 ms),
                     storm (10,000 viewers join one room at once; counts on everywhere),
                     sync (sync precision: 1 room x 1,000 viewers, play/pause every 1 s),
                     live (1 live room x 10,000 viewers with simulated live edges: program-time
                     spread at common instants, the auto latency, delivery; see the live options),
                     soak (issue 16: 1 room x 2,000 viewers, a change every 1 s, 10 % of the viewers
                     reconnecting every minute, a short-lived room every 5 s, 30 min measured, the
                     server's memory, descriptors, threads and maps sampled every minute),
                     premiere (issue 17: 1 event x 2,000 viewers round-robin over 4 lockstep nodes on
                     a local Redis Cluster, the host on node 0, a change every 1 s, plus 100 background
                     rooms; cross-node delivery, the spread of scheduled changes, Redis commands and
                     bytes per change, each node's and primary's CPU; see the scale-out options),
                     rooms (issue 17: 10,000 rooms of one member over 4 nodes on a Redis Cluster, room i
                     wholly on node i mod 4 but for 10 shared by every node, a change every 5 s per
                     room: each node's Redis subscriptions and room messages against its own rooms')
  --targets LIST     comma-separated: wt, ws, json, peer-ws, peer-socketio, or all
                     (default: all for s1/s2/s3/storm, wt,ws for sync)
  --viewers N        viewers per room          --rooms R          rooms
  --interval-ms I    time between a host's changes
  --warmup-s W       warm-up before measuring (default 2)
  --measure-s M      measured window (default 6; the baseline used 20)
  --runs K           repeat every target K times, interleaved (default 1); medians are printed
  --concurrency C    connection attempts in flight (default 256; storm 1000)
  --storm-timeout-s T  give up on settling after T s (default 20)
  --impair           viewers connect through the userspace proxy: 50 +- 20 ms each way, 2 % loss
  --delay-ms D --jitter-ms J --loss P   impairment settings (defaults 50, 20, 0.02)
  --peer-counts on|off  peers' viewer-count broadcasts (default off, storm on)
  --nodes N          1 (default) or 2: two lockstep nodes sharing a redis-server started here on a
                     free port (scale-out); hosts join the first node, viewers the second, so every
                     delivery crosses Redis. Server CPU and memory are the viewers' node's; the
                     host's node and Redis count as other processes. Lockstep targets only.
                     premiere and rooms: 1 to 8 nodes (default 4) on a Redis Cluster
  --pin-server CPUS  run the server under taskset -c CPUS
  --lockstep-arg A   extra `lockstep serve` argument (repeatable), e.g. --lockstep-arg=--tick-interval-ms=1000
  --floor-tcp-us F --floor-udp-us F   syscall floors for the ratios (defaults 3.0 and 1.8,
                     ../shared/peers/README.md; measure with physlimit/run.sh)
  --peers DIR        the peers' folder (default ../shared/peers beside the workspace)
  --wt-endpoints E   client UDP endpoints the WebTransport viewers share (default 16)
  --wt-changes M     once (default): WebTransport clients set DATAGRAM_CHANGES, so each change comes
                     once, as a datagram, and a viewer that sees a tick of an epoch it never got sends
                     a Nack (as client-js does) and gets the change repaired on the stream; copies:
                     DATAGRAMS only, each change as a datagram copy and on the stream (before issue 14)
  --server-bin PATH  run this lockstep binary instead of building target/release/lockstep
                     (its log: $TMPDIR/lockstep-load-<target>-<pid>-<n>.log; LOCKSTEP_LOAD_RUST_LOG sets
                     its filter, e.g. info,wtransport=debug)
  --quiet-wait-s Q   before each run, wait up to Q s for the machine to be quiet (default 20)
  --attack LIST      issue 16: run each attack (comma-separated, or all: malformed, datagrams, flood,
                     churn-one-ip, churn-many-ips, host-flood, slow-reader) during the warm-up and the
                     measured window, after a clean run (none), each against the same room of viewers;
                     every attack run keeps the server's own message budget and connect limit
                     (see benches/load/attack.rs); lockstep targets, one node
  --churn-per-min F  each minute, fraction F of the viewers leave and come back (soak: 0.10)
  --sample-s S       sample the server (RSS, fds, threads, its map gauges, Redis keys) every S s (soak: 60)
  --bg-room-every-s B  a room with one member opens every B s and ends (soak: 5)
  --check            exit 1 unless the run is clean: no victim closed, every attack case answered as
                     documented, and after the run every connection, registry entry and room is gone
  --json PATH        also write every run and the medians as JSON (with the command, commit, date)

Live scenario (targets ws, wt; default ws; warm-up 15 s and 60 s measured by default; no host):
  --live-latency L   comma-separated server settings to run, each a variant: auto or N (ms)
                     (default auto); passed as --room-clock live --live-latency-ms L
  --live-fetch-ms A-B      each viewer's fetch delay, uniform (default 300-3000)
  --live-tail F:A-B        a slow tail: fraction F of the viewers at A-B ms (default 0.02:6000-10000)
  --live-segment-ms A-B    each viewer's segment duration, uniform (default 1000-2000)
  --live-stalls report|never  a viewer whose edge is behind the room reports buffering (default report)
  --live-edge-report oldest|now  the edge a LiveReport carries: as old as it was at its oldest at the
                     250 ms control steps since the last report (client-js; default), or the edge now
  --live-margin-ms M the server's margin over a viewer's distance from its edge, for the harness's
                     own view of the needs (default 750, as src/room/live.rs)
  --seed S           the viewers' random draws (default 12)

Scale-out on a Redis Cluster (premiere, rooms; target ws only; 5 s warm-up, 30 s measured by default):
  a local Redis Cluster (redis-server, redis-cli --cluster create) and --nodes lockstep nodes on it; after
  every member joined, an idle window (no changes) measures the heartbeats alone, then the hosts start.
  Hosts cycle seek, play, seek, pause (play and pause scheduled at the room's lead), each to a position
  that names the change. Each node's /metrics and CPU and each primary's INFO stats are read at both
  ends of the idle and the measured windows.
  premiere: --viewers = the event's viewers (default 2000), --interval-ms its host's (default 1000)
  rooms:    --rooms (default 10000), --viewers = members per room, the host included (default 1: the
            host alone, watching its own changes), --interval-ms each host's (default 5000)
  --redis-primaries P  primaries of the cluster (default 3; at least 3)
  --redis-replicas R   replicas per primary (default 0)
  --idle-s I         the idle window before the hosts start (default 10; 0: none)
  --report-ms R      every member sends a Report and a SyncReport every R ms, as client-js does with a
                     media element (default 0: none, as in the other scenarios); a node refreshes a
                     viewing session in Redis at most every 10 s while reports come
  --bg-rooms B       premiere: background rooms (default 100), room j wholly on node j mod N
  --bg-viewers V     premiere: viewers per background room besides its host (default 5)
  --bg-interval-ms I premiere: a background host's change every I ms (default 2000)
  --shared-rooms S   rooms: the first S rooms have a member on every node (default 10)
";

#[derive(Debug, Clone)]
struct Opts {
    scenario: String,
    mode: Mode,
    targets: Vec<Target>,
    rooms: usize,
    per_room: usize,
    interval: Duration,
    warmup: Duration,
    measure: Duration,
    runs: usize,
    concurrency: usize,
    storm_timeout: Duration,
    impair: Option<Impair>,
    peer_counts: bool,
    pin: Option<String>,
    lockstep_args: Vec<String>,
    floor_tcp_us: f64,
    floor_udp_us: f64,
    peers: PathBuf,
    wt_endpoints: usize,
    /// WebTransport clients take each change once, as a datagram (`--wt-changes once`).
    wt_once: bool,
    server_bin: Option<PathBuf>,
    quiet_wait: Duration,
    nodes: usize,
    live: live::LiveOpts,
    /// `--attack`: "none" first, then each attack; empty without the option.
    attacks: Vec<String>,
    churn_per_min: f64,
    sample: Option<Duration>,
    bg_room_every: Option<Duration>,
    check: bool,
    json: Option<PathBuf>,
    /// Issue 17's scale-out scenarios (`premiere`, `rooms`).
    scale: scale::ScaleOpts,
}

fn parse_args() -> anyhow::Result<Opts> {
    let mut args: Vec<String> = Vec::new();
    for a in std::env::args().skip(1) {
        // --key=value → --key value
        match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") && k != "--lockstep-arg" => {
                args.push(k.into());
                args.push(v.into());
            }
            Some((k, v)) if k == "--lockstep-arg" => {
                args.push(k.into());
                args.push(v.into());
            }
            _ => args.push(a),
        }
    }
    let mut kv: Vec<(String, String)> = Vec::new();
    let mut flags: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--help" || a == "-h" {
            print!("{HELP}");
            std::process::exit(0);
        }
        if a == "--impair" || a == "--check" {
            flags.push(a.clone());
            i += 1;
            continue;
        }
        anyhow::ensure!(a.starts_with("--") && i + 1 < args.len(), "unexpected argument {a:?} (see --help)");
        kv.push((a[2..].to_owned(), args[i + 1].clone()));
        i += 2;
    }
    let get = |k: &str| kv.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let num = |k: &str, d: f64| -> anyhow::Result<f64> {
        get(k).map(|v| v.parse::<f64>().map_err(|_| anyhow::anyhow!("--{k}: not a number: {v}"))).unwrap_or(Ok(d))
    };
    let scenario = get("scenario").unwrap_or_else(|| "s1".into());
    let (mode, rooms, per_room, interval_ms) = match scenario.as_str() {
        "s1" => (Mode::Latency, 1, 1000, 250),
        "s2" => (Mode::Latency, 1, 10_000, 1000),
        "s3" => (Mode::Latency, 1000, 10, 250),
        "storm" => (Mode::Storm, 1, 10_000, 1000),
        "sync" => (Mode::Precision, 1, 1000, 1000),
        "live" => (Mode::Live, 1, 10_000, 1000),
        "soak" => (Mode::Latency, 1, 2000, 1000),
        "premiere" => (Mode::Latency, 1, 2000, 1000),
        "rooms" => (Mode::Latency, 10_000, 1, 5000),
        other => anyhow::bail!("unknown scenario {other:?} (see --help)"),
    };
    let scale_out = scale::is_scale(&scenario);
    let targets = match get("targets").as_deref() {
        None if scale_out => vec![Target::Ws],
        None | Some("all") if mode == Mode::Precision => vec![Target::Wt, Target::Ws],
        None if mode == Mode::Live => vec![Target::Ws],
        Some("all") if mode == Mode::Live => vec![Target::Ws, Target::Wt],
        None | Some("all") => Target::ALL.to_vec(),
        Some(list) => list
            .split(',')
            .map(|t| Target::parse(t.trim()).ok_or_else(|| anyhow::anyhow!("unknown target {t:?}")))
            .collect::<anyhow::Result<_>>()?,
    };
    if mode == Mode::Precision {
        anyhow::ensure!(targets.iter().all(|t| matches!(t, Target::Wt | Target::Ws)), "sync runs on wt and ws only");
    }
    anyhow::ensure!(!scale_out || targets == [Target::Ws], "{scenario} runs on the ws target only");
    let mut live = live::LiveOpts::default();
    if mode == Mode::Live {
        anyhow::ensure!(targets.iter().all(|t| matches!(t, Target::Wt | Target::Ws)), "live runs on wt and ws only");
        if let Some(l) = get("live-latency") {
            live.latencies = l.split(',').map(|x| x.trim().to_owned()).collect();
            for l in &live.latencies {
                anyhow::ensure!(l == "auto" || l.parse::<u32>().is_ok(), "--live-latency: auto or ms, not {l:?}");
            }
        }
        if let Some(r) = get("live-fetch-ms") {
            live.fetch_ms = live::parse_range(&r)?;
        }
        if let Some(t) = get("live-tail") {
            (live.tail, live.tail_ms) = live::parse_tail(&t)?;
        }
        if let Some(r) = get("live-segment-ms") {
            live.segment_ms = live::parse_range(&r)?;
        }
        live.stalls = match get("live-stalls").as_deref() {
            None | Some("report") => true,
            Some("never") => false,
            Some(o) => anyhow::bail!("--live-stalls report|never, not {o:?}"),
        };
        live.seed = num("seed", live.seed as f64)? as u64;
        live.margin_ms = num("live-margin-ms", live.margin_ms as f64)? as u64;
        live.edge_oldest = match get("live-edge-report").as_deref() {
            None | Some("oldest") => true,
            Some("now") => false,
            Some(o) => anyhow::bail!("--live-edge-report oldest|now, not {o:?}"),
        };
    }
    let soak = scenario == "soak";
    let (warmup_s, measure_s) = match mode {
        Mode::Live => (15.0, 60.0),
        _ if soak => (10.0, 1800.0),
        _ if scale_out => (5.0, 30.0),
        _ => (2.0, 6.0),
    };
    let impair = flags.iter().any(|f| f == "--impair").then(|| -> anyhow::Result<Impair> {
        Ok(Impair {
            delay: Duration::from_secs_f64(num("delay-ms", 50.0)? / 1000.0),
            jitter: Duration::from_secs_f64(num("jitter-ms", 20.0)? / 1000.0),
            loss: num("loss", 0.02)?,
            rto: Duration::from_millis(200),
        })
    });
    let nodes = num("nodes", if scale_out { 4.0 } else { 1.0 })? as usize;
    if scale_out {
        anyhow::ensure!((1..=8).contains(&nodes), "--nodes 1 to 8 for {scenario}");
    } else {
        anyhow::ensure!(nodes == 1 || nodes == 2, "--nodes 1 or 2");
    }
    anyhow::ensure!(nodes == 1 || targets.iter().all(|t| t.is_lockstep()), "--nodes 2 runs lockstep targets only");
    anyhow::ensure!(nodes == 1 || mode != Mode::Live, "live runs on one node");
    let attacks = match get("attack") {
        Some(l) => attack::parse(&l)?,
        None => Vec::new(),
    };
    anyhow::ensure!(
        attacks.is_empty()
            || (mode == Mode::Latency
                && !scale_out
                && nodes == 1
                && targets.iter().all(|t| matches!(t, Target::Wt | Target::Ws))),
        "--attack runs s1/s2/s3 on the wt and ws targets, one node"
    );
    let scale = scale::ScaleOpts {
        primaries: num("redis-primaries", 3.0)? as usize,
        replicas: num("redis-replicas", 0.0)? as usize,
        bg_rooms: num("bg-rooms", 100.0)? as usize,
        bg_viewers: num("bg-viewers", 5.0)? as usize,
        bg_interval: Duration::from_millis(num("bg-interval-ms", 2000.0)?.max(1.0) as u64),
        shared_rooms: num("shared-rooms", 10.0)? as usize,
        idle: Duration::from_secs_f64(num("idle-s", 10.0)?.max(0.0)),
        report: match num("report-ms", 0.0)? {
            r if r > 0.0 => Some(Duration::from_secs_f64(r / 1000.0)),
            _ => None,
        },
    };
    anyhow::ensure!(!scale_out || scale.primaries >= 3, "--redis-primaries: at least 3");
    let peers = get("peers").map(PathBuf::from).unwrap_or_else(|| target::workspace().join("../shared/peers"));
    Ok(Opts {
        mode,
        targets,
        rooms: num("rooms", rooms as f64)? as usize,
        per_room: num("viewers", per_room as f64)? as usize,
        interval: Duration::from_millis(num("interval-ms", interval_ms as f64)? as u64),
        warmup: Duration::from_secs_f64(num("warmup-s", warmup_s)?),
        measure: Duration::from_secs_f64(num("measure-s", measure_s)?),
        runs: num("runs", 1.0)?.max(1.0) as usize,
        concurrency: num("concurrency", if mode == Mode::Storm { 1000.0 } else { 256.0 })?.max(1.0) as usize,
        storm_timeout: Duration::from_secs_f64(num("storm-timeout-s", 20.0)?),
        impair: impair.transpose()?,
        peer_counts: match get("peer-counts").as_deref() {
            Some("on") => true,
            Some("off") => false,
            None => mode == Mode::Storm,
            Some(o) => anyhow::bail!("--peer-counts on|off, not {o:?}"),
        },
        pin: get("pin-server"),
        lockstep_args: kv.iter().filter(|(k, _)| k == "lockstep-arg").map(|(_, v)| v.clone()).collect(),
        floor_tcp_us: num("floor-tcp-us", 3.0)?,
        floor_udp_us: num("floor-udp-us", 1.8)?,
        peers,
        wt_endpoints: num("wt-endpoints", 16.0)?.max(1.0) as usize,
        wt_once: match get("wt-changes").as_deref() {
            None | Some("once") => true,
            Some("copies") => false,
            Some(o) => anyhow::bail!("--wt-changes once|copies, not {o:?}"),
        },
        server_bin: get("server-bin").map(PathBuf::from),
        quiet_wait: Duration::from_secs_f64(num("quiet-wait-s", 20.0)?),
        nodes,
        scenario,
        live,
        attacks,
        churn_per_min: num("churn-per-min", if soak { 0.10 } else { 0.0 })?,
        sample: match num("sample-s", if soak { 60.0 } else { 0.0 })? {
            s if s > 0.0 => Some(Duration::from_secs_f64(s)),
            _ => None,
        },
        bg_room_every: match num("bg-room-every-s", if soak { 5.0 } else { 0.0 })? {
            s if s > 0.0 => Some(Duration::from_secs_f64(s)),
            _ => None,
        },
        check: flags.iter().any(|f| f == "--check"),
        json: get("json").map(PathBuf::from),
        scale,
    })
}

/// What one run of one target measured.
#[derive(Debug, Default, Clone, serde::Serialize)]
struct Res {
    target: &'static str,
    conns: usize,
    failed: u64,
    /// Connects made a second time after failing once (not failures).
    connect_retries: u64,
    join_s: f64,
    join_p50: f64,
    join_p99: f64,
    rss0_mib: f64,
    rss_mib: f64,
    kib_per_conn: f64,
    cpu_pct: f64,
    cpu_us_per_delivery: f64,
    gen_cpu_pct: f64,
    deliveries_per_s: f64,
    expected: u64,
    delivered: u64,
    lost: u64,
    late: u64,
    dups: u64,
    first_by_dgram: u64,
    /// Deliveries whose first copy came on the stream (WebTransport; with `--wt-changes once`, the
    /// repairs after a Nack and the changes too large for a datagram).
    first_by_stream: u64,
    /// Nacks the viewers sent (`--wt-changes once`).
    nacks: u64,
    /// WebTransport viewers' QUIC counters (see `Rec::quic`), whole connections.
    quic: [u64; 4],
    msgs_per_delivery: f64,
    user: [f64; 5],
    kernel: [f64; 5],
    last_user: [f64; 2],
    last_kernel: [f64; 2],
    tick: [f64; 2],
    errors: u64,
    closed: u64,
    // storm
    settled_s: Option<f64>,
    storm_joined_s: Option<f64>,
    right_at_end: u64,
    count_msgs_mean: f64,
    count_msgs_max: u64,
    // sync
    spread_sched: [f64; 3],
    spread_fired: [f64; 3],
    skew: [f64; 4],
    sync_late: u64,
    ref_offset_us: f64,
    changes_seen: usize,
    proxy_loss: f64,
    /// UDP datagrams the kernel dropped for full receive buffers (IPv4 + IPv6, whole machine) during the run.
    udp_drops: u64,
    /// CPU % (of one core) used by other processes during the measured window.
    other_cpu_pct: f64,
    // live
    live: Option<live_stats::LiveRes>,
    live_run: Option<live_stats::LiveRun>,
    run_no: usize,
    // attack runs (issue 16)
    attack: Option<String>,
    attack_outcome: Option<attack::Outcome>,
    /// Server RSS at the start and the end of the measured window (MiB).
    rss_window: [f64; 2],
    /// Server threads and open file descriptors at the end of the measured window.
    threads_fds: [u64; 2],
    // soak (issue 16)
    samples: Vec<soak::Sample>,
    /// Sampled after every client left (rooms' grace and maintenance passed).
    after: Option<soak::Sample>,
    reconnects: u64,
}

/// (busy, total) jiffies of the whole machine, from /proc/stat.
fn machine_jiffies() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> =
        s.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Waits (at most `max`) until the machine is quiet: under 15 % of one core busy over one second.
fn wait_quiet(max: Duration) {
    let t0 = std::time::Instant::now();
    loop {
        let (b0, t0j) = machine_jiffies();
        std::thread::sleep(Duration::from_secs(1));
        let (b1, t1j) = machine_jiffies();
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
        let busy = cores * 100.0 * (b1 - b0) as f64 / (t1j - t0j).max(1) as f64;
        if busy <= 15.0 {
            return;
        }
        if t0.elapsed() >= max {
            eprintln!("  (the machine is still busy: {busy:.0} % of a core; measuring anyway)");
            return;
        }
        eprintln!("  (the machine is busy: {busy:.0} % of a core; waiting)");
    }
}

/// UDP receive-buffer drops so far (IPv4 and IPv6, the whole machine).
fn udp_drops() -> u64 {
    let v4 = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let lines: Vec<&str> = v4.lines().filter(|l| l.starts_with("Udp:")).collect();
    let mut n = 0;
    if lines.len() >= 2 {
        let h: Vec<&str> = lines[0].split_whitespace().collect();
        let v: Vec<&str> = lines[1].split_whitespace().collect();
        n += h
            .iter()
            .position(|x| *x == "RcvbufErrors")
            .and_then(|i| v.get(i))
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0);
    }
    let v6 = std::fs::read_to_string("/proc/net/snmp6").unwrap_or_default();
    n + v6
        .lines()
        .find_map(|l| l.strip_prefix("Udp6RcvbufErrors"))
        .and_then(|x| x.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

fn quant(h: &Histogram<u64>) -> [f64; 5] {
    [ms(h, 0.5), ms(h, 0.9), ms(h, 0.99), ms(h, 0.999), if h.is_empty() { f64::NAN } else { h.max() as f64 / 1000.0 }]
}

fn wt_endpoints(
    n: usize,
    cert: &str,
) -> anyhow::Result<Vec<wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>>> {
    let digest = wtransport::tls::Sha256Digest::new(target::digest(cert)?);
    (0..n)
        .map(|_| {
            // Large buffers: a fan-out burst to the viewers of one endpoint
            // overflows the default 208 KiB and the kernel drops datagrams.
            let sock = std::net::UdpSocket::bind("[::]:0")?;
            use nix::sys::socket::{setsockopt, sockopt};
            setsockopt(&sock, sockopt::RcvBufForce, &(16 << 20))?;
            setsockopt(&sock, sockopt::SndBufForce, &(4 << 20))?;
            let cfg = wtransport::ClientConfig::builder()
                .with_bind_socket(sock)
                .with_server_certificate_hashes([digest.clone()])
                .keep_alive_interval(Some(Duration::from_secs(4)))
                .build();
            Ok(wtransport::Endpoint::client(cfg)?)
        })
        .collect()
}

/// The server clock's offset from CLOCK_REALTIME, measured over a direct
/// (never impaired) WebSocket: the min-RTT sample of 30 pings (µs).
async fn reference_offset(http: std::net::SocketAddr) -> anyhow::Result<f64> {
    use lockstep_protocol::{ClientMsg, Hello, PROTOCOL_VERSION, Ping, ServerMsg, decode_server, encode_client};
    let mut ws = wsclient::Ws::connect(http, "/api/live-stream/reference-clock", Some("lockstep.v1")).await?;
    let hello = ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        event_id: "reference-clock".into(),
        device_id: "reference".into(),
        token: None,
        caps: 0,
    });
    ws.send_binary(&encode_client(&hello)).await?;
    let mut est = rec::ClockEst::default();
    for _ in 0..30 {
        let t0 = wsclient::realtime_ns() / 1000;
        ws.send_binary(&encode_client(&ClientMsg::Ping(Ping { client_time: t0 }))).await?;
        let deadline = Instant::now() + Duration::from_secs(2);
        'wait: loop {
            while let Some(f) = ws.next_frame().await? {
                if let Ok(ServerMsg::Pong(p)) = decode_server(ws.payload(&f))
                    && p.client_time == t0
                {
                    est.pong(p.client_time, p.server_recv_us, p.server_send_us, ws.user_ns / 1000);
                    break 'wait;
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "no pong from the reference connection");
            tokio::time::timeout_at(deadline, ws.read()).await.ok();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(est.offset().unwrap_or(0) as f64)
}

async fn run_one(
    t: Target,
    o: &Opts,
    bin: Option<&std::path::Path>,
    run_no: usize,
    nodes: usize,
    latency: Option<&str>,
    attack: Option<&str>,
) -> anyhow::Result<Res> {
    let mut lockstep_args = o.lockstep_args.clone();
    if attack.is_some() {
        lockstep_args.splice(0..0, attack::SERVER_ARGS.iter().map(|a| a.to_string()));
    }
    if let Some(l) = latency {
        lockstep_args.splice(0..0, ["--room-clock", "live", "--live-latency-ms", l].map(String::from));
    }
    if o.mode == Mode::Storm {
        // The join storm measures the default coalescing; nothing to add.
    }
    if o.bg_room_every.is_some() || o.check {
        // Rooms that end, end soon: the soak and the checks watch the maps they leave.
        lockstep_args.push("--room-grace-ms=5000".into());
    }
    lockstep_args.push("--log-json".into());
    let redis = if nodes == 2 { Some(target::Redis::start()?) } else { None };
    if let Some(r) = &redis {
        lockstep_args.extend(["--redis-url".into(), r.url()]);
    }
    let sopts = ServerOpts { peer_counts: o.peer_counts, lockstep_args, pin: o.pin.clone(), instance: 0 };
    let host_server = match &redis {
        Some(_) => Some(target::start(t, &ServerOpts { instance: 1, ..sopts.clone() }, &o.peers, bin)?),
        None => None,
    };
    let server = target::start(t, &sopts, &o.peers, bin)?;
    let host_node = match &host_server {
        Some(h) => {
            let eps = match (t, &h.cert_sha256) {
                (Target::Wt, Some(c)) => wt_endpoints(o.wt_endpoints.min(2), c)?,
                _ => Vec::new(),
            };
            Some((h.http, h.quic, eps))
        }
        None => None,
    };
    let pid = server.pid;
    let me = std::process::id();
    let drops0 = udp_drops();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0 = target::status_kib(pid, "VmRSS");
    let pstats = Arc::new(ProxyStats::default());
    let (ws_addr, wt_addr) = match o.impair {
        Some(imp) => {
            let ws = proxy::tcp(server.http, imp, pstats.clone()).await?;
            let wt = match server.quic {
                Some(q) => Some(proxy::udp(q, imp, pstats.clone()).await?),
                None => None,
            };
            (ws, wt)
        }
        None => (server.http, server.quic),
    };
    let ref_offset =
        if matches!(o.mode, Mode::Precision | Mode::Live) { reference_offset(server.http).await? } else { 0.0 };
    let eps = match (t, &server.cert_sha256) {
        (Target::Wt, Some(c)) => wt_endpoints(o.wt_endpoints, c)?,
        (Target::Wt, None) => anyhow::bail!("no certificate hash in the server's log"),
        _ => Vec::new(),
    };
    let interval_ns = o.interval.as_nanos() as u64;
    let k0 = (o.warmup.as_nanos() as u64).div_ceil(interval_ns) as u32;
    let k1 = k0 + (o.measure.as_nanos() as u64 / interval_ns).max(1) as u32;
    let viewers = o.rooms * o.per_room;
    let hosts = if matches!(o.mode, Mode::Storm | Mode::Live) { 0 } else { o.rooms };
    // Live: one sample a second from the start to the end of the measured window.
    let live_j0 = o.warmup.as_secs_f64().ceil() as usize;
    let live_j1 = live_j0 + (o.measure.as_secs_f64().floor() as usize).max(1);
    let (start_tx, start_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let tag = format!("{}-{}-{}", o.scenario, run_no, wsclient::realtime_ns() % 1_000_000_000);
    let ctx = Arc::new(Ctx {
        target: t,
        mode: o.mode,
        ws_addr,
        wt_addr,
        wt_endpoints: eps,
        wt_once: o.wt_once,
        host_node,
        tag,
        rooms: o.rooms,
        interval: o.interval,
        rec: Rec::new(o.rooms, k0, k1, interval_ns),
        prec: (o.mode == Mode::Precision).then(|| Precision::new(viewers, k1 as usize + 1)),
        live: (o.mode == Mode::Live).then(|| live::LiveRec::new(&o.live, viewers, live_j1 + 2, ref_offset as i64)),
        count_target: (o.per_room + if hosts > 0 { 1 } else { 0 }) as u32,
        ping_every: matches!(o.mode, Mode::Precision | Mode::Live).then_some(Duration::from_secs(2)),
        start: start_rx,
        stop: stop_rx,
        joined: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        connect_retries: AtomicU64::new(0),
        errors_shown: AtomicU64::new(0),
        connect_sem: Arc::new(Semaphore::new(o.concurrency)),
        churn: (o.churn_per_min > 0.0).then(|| (Duration::from_secs_f64(60.0 / o.churn_per_min), viewers)),
        reconnects: AtomicU64::new(0),
    });
    let mut set = JoinSet::new();
    let progress = |what: &str, extra: String| {
        eprintln!(
            "  [{} {}] {what}: joined {} failed {} | server CPU {:.1} s RSS {:.0} MiB {extra}",
            o.scenario,
            t.name(),
            ctx.joined.load(Relaxed),
            ctx.failed.load(Relaxed),
            target::cpu_s(pid),
            target::status_kib(pid, "VmRSS") as f64 / 1024.0,
        )
    };
    // Hosts first, so each is its room's first member (and so its host).
    for room in 0..hosts {
        set.spawn(conn::client(ctx.clone(), Role::Host { room }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while (ctx.joined.load(Relaxed) + ctx.failed.load(Relaxed)) < hosts as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    anyhow::ensure!(ctx.joined.load(Relaxed) == hosts as u64, "hosts failed to join");
    let total = (hosts + viewers) as u64;
    let tj = Instant::now();
    let storm_cpu0 = target::cpu_s(pid);
    for g in 0..viewers {
        set.spawn(conn::client(ctx.clone(), Role::Viewer { g, room: g / o.per_room }));
    }
    let name: &'static str = match latency {
        _ if nodes == 2 => Box::leak(format!("{} (2 nodes, Redis)", t.name()).into_boxed_str()),
        _ if attack.is_some() => Box::leak(format!("{}, {}", t.name(), attack.unwrap_or("none")).into_boxed_str()),
        Some("auto") => Box::leak(format!("{}, auto", t.name()).into_boxed_str()),
        Some(l) => Box::leak(format!("{}, fixed {l} ms", t.name()).into_boxed_str()),
        None => t.name(),
    };
    let mut res = Res { target: name, conns: total as usize, run_no, ..Res::default() };
    // QUIC handshakes cost both sides milliseconds of CPU each: 10,000 take minutes here.
    let join_limit = if t == Target::Wt { Duration::from_secs(180) } else { Duration::from_secs(60) };
    let join_deadline = tj + if o.mode == Mode::Storm { o.storm_timeout } else { join_limit.max(o.storm_timeout) };
    let mut last_print = Instant::now();
    loop {
        let j = ctx.joined.load(Relaxed);
        let f = ctx.failed.load(Relaxed);
        if res.storm_joined_s.is_none() && j + f >= total {
            res.storm_joined_s = Some(tj.elapsed().as_secs_f64());
        }
        let right = ctx.rec.count_right.load(Relaxed);
        let done = match o.mode {
            Mode::Storm => j >= total && right >= viewers as u64,
            _ => j + f >= total,
        };
        if done {
            if o.mode == Mode::Storm {
                res.settled_s = Some(tj.elapsed().as_secs_f64());
            }
            break;
        }
        if Instant::now() >= join_deadline {
            eprintln!("  gave up waiting after {:?}", join_deadline - tj);
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(2) {
            last_print = Instant::now();
            progress(
                "joining",
                format!("| right count {right}/{viewers} | count msgs {}", ctx.rec.count_msgs.load(Relaxed)),
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    res.join_s = tj.elapsed().as_secs_f64();
    res.failed = ctx.failed.load(Relaxed);
    res.connect_retries = ctx.connect_retries.load(Relaxed);
    {
        let h = ctx.rec.merged();
        res.join_p50 = ms(&h.join, 0.5);
        res.join_p99 = ms(&h.join, 0.99);
    }
    if o.mode == Mode::Storm {
        let cpu = target::cpu_s(pid) - storm_cpu0;
        res.cpu_pct = 100.0 * cpu / res.join_s.max(1e-3);
        res.right_at_end = ctx.rec.count_right.load(Relaxed);
        res.count_msgs_mean = ctx.rec.count_msgs.load(Relaxed) as f64 / viewers.max(1) as f64;
        res.count_msgs_max = ctx.rec.count_msgs_max.load(Relaxed);
        res.rss0_mib = rss0 as f64 / 1024.0;
        res.rss_mib = target::status_kib(pid, "VmRSS") as f64 / 1024.0;
        res.errors = ctx.rec.errors.load(Relaxed);
        res.closed = ctx.rec.closed.load(Relaxed);
        progress("storm over", String::new());
        let _ = stop_tx.send(true);
        set.abort_all();
        return Ok(res);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = target::status_kib(pid, "VmRSS");
    res.rss0_mib = rss0 as f64 / 1024.0;
    res.rss_mib = rss1 as f64 / 1024.0;
    res.kib_per_conn = (rss1 as f64 - rss0 as f64) / ctx.joined.load(Relaxed).max(1) as f64;
    progress("joined", format!("in {:.2} s; {:.1} KiB per connection", res.join_s, res.kib_per_conn));

    let start = Instant::now() + Duration::from_millis(100);
    if let Some(rec) = &ctx.live {
        rec.t0_server_us.store(rec.server_now_us() + 100_000, Relaxed);
        // Once a second: the needs the viewers reported; every 5 s the server's own state.
        let (c, http, event, mut stop) = (ctx.clone(), server.http, ctx.event(0), ctx.stop.clone());
        set.spawn(async move {
            let Some(rec) = c.live.as_ref() else { return };
            let (mut n, mut next) = (0u64, Instant::now());
            loop {
                next += Duration::from_secs(1);
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep_until(next) => {}
                }
                if rec.first_report_ns.load(Relaxed) == u64::MAX {
                    continue;
                }
                let state = if n.is_multiple_of(5) { live::server_state(http, &event).await } else { None };
                n += 1;
                let p = live::series_point(rec, state.as_ref());
                rec.series.lock().unwrap_or_else(|e| e.into_inner()).push(p);
            }
        });
    }
    let _ = start_tx.send(Some(start));
    let (astop_tx, astop_rx) = watch::channel(false);
    let attacker = attack.filter(|a| *a != "none").map(|a| {
        let env = attack::Env {
            http: server.http,
            quic: server.quic,
            cert_sha256: server.cert_sha256.clone(),
            event: ctx.event(0),
            tag: ctx.tag.clone(),
        };
        tokio::spawn(attack::run(a.to_owned(), env, astop_rx))
    });
    let redis_addr: Option<std::net::SocketAddr> =
        redis.as_ref().and_then(|r| r.url().trim_start_matches("redis://").trim_end_matches('/').parse().ok());
    if let Some(every) = o.bg_room_every {
        set.spawn(soak::short_rooms(server.http, format!("{}-bg", ctx.tag), every, ctx.stop.clone()));
    }
    tokio::time::sleep_until(start + o.warmup).await;
    ctx.rec.measuring.store(true, Relaxed);
    res.rss_window[0] = target::status_kib(pid, "VmRSS") as f64 / 1024.0;
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    if let Some(every) = o.sample {
        let (samples, http, mut stop, t0) = (samples.clone(), server.http, ctx.stop.clone(), Instant::now());
        set.spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tick.tick() => {}
                }
                let s = soak::sample(t0.elapsed().as_secs_f64(), pid, http, redis_addr).await;
                eprintln!(
                    "  sample at {:.0} s: RSS {:.1} MiB, {} fds, {} threads, {:?}",
                    s.t_s, s.rss_mib, s.fds, s.threads, s.gauges
                );
                samples.lock().unwrap_or_else(|e| e.into_inner()).push(s);
            }
        });
    }
    let measure_t0 = Instant::now();
    let (cpu0, gen0, w0, mach0) = (target::cpu_s(pid), target::cpu_s(me), Instant::now(), machine_jiffies());
    let end = start + o.warmup + o.measure;
    while Instant::now() < end {
        let every = if o.mode == Mode::Live { Duration::from_secs(5) } else { Duration::from_secs(2) };
        tokio::time::sleep_until((Instant::now() + every).min(end)).await;
        match &ctx.live {
            Some(rec) => {
                let last = rec.series.lock().unwrap_or_else(|e| e.into_inner()).last().copied();
                let states = rec.states.lock().unwrap_or_else(|e| e.into_inner()).last().map(|s| s.1);
                progress(
                    "measuring",
                    format!(
                        "| need p95 {} ms | room latency {} ms, at live {} | reports {}",
                        last.map_or("–".into(), |p| f(p.need_p95_ms, 0)),
                        states.map_or("–".into(), |s| s.latency_ms.to_string()),
                        states.is_some_and(|s| s.at_live),
                        rec.reports.load(Relaxed)
                    ),
                )
            }
            None => progress("measuring", format!("| delivered {} lost-so-far n/a", ctx.rec.delivered.load(Relaxed))),
        }
    }
    let (cpu1, gen1, w, mach1) = (target::cpu_s(pid), target::cpu_s(me), w0.elapsed().as_secs_f64(), machine_jiffies());
    ctx.rec.measuring.store(false, Relaxed);
    res.rss_window[1] = target::status_kib(pid, "VmRSS") as f64 / 1024.0;
    res.threads_fds = [
        target::status_kib(pid, "Threads"),
        std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0),
    ];
    let _ = astop_tx.send(true);
    if let Some(a) = attacker {
        res.attack = attack.map(str::to_owned);
        match tokio::time::timeout(Duration::from_secs(10), a).await {
            Ok(Ok(out)) => res.attack_outcome = Some(out),
            _ => eprintln!("  the attacker did not stop in 10 s"),
        }
    } else {
        res.attack = attack.map(str::to_owned);
    }
    // Let the last changes arrive (late ones count as late, not lost).
    let drain = if o.impair.is_some() { Duration::from_secs(2) } else { o.interval.max(Duration::from_secs(1)) };
    tokio::time::sleep(drain).await;
    let _ = stop_tx.send(true);
    tokio::time::sleep(Duration::from_millis(50)).await;
    set.abort_all();
    res.reconnects = ctx.reconnects.load(Relaxed);
    res.samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    if o.sample.is_some() || o.check {
        // Every client has gone: rooms end after their grace, and the maintenance
        // tasks (every 5 s) update the maps' gauges.
        drop(set);
        let grace = if o.bg_room_every.is_some() || o.check { 5.0 } else { 60.0 };
        tokio::time::sleep(Duration::from_secs_f64(grace + 7.0)).await;
        res.after = Some(soak::sample(measure_t0.elapsed().as_secs_f64(), pid, server.http, redis_addr).await);
    }

    let rec = &ctx.rec;
    let h = rec.merged();
    let sent = rec.sent_measured();
    res.expected = sent * o.per_room as u64;
    res.delivered = rec.delivered.load(Relaxed);
    res.lost = res.expected.saturating_sub(res.delivered);
    res.late = rec.late.load(Relaxed);
    res.dups = rec.dups.load(Relaxed);
    res.first_by_dgram = rec.first_by_datagram.load(Relaxed);
    res.first_by_stream = res.delivered - res.first_by_dgram;
    res.nacks = rec.nacks.load(Relaxed);
    res.quic = std::array::from_fn(|i| rec.quic[i].load(Relaxed));
    res.deliveries_per_s = res.delivered as f64 / o.measure.as_secs_f64();
    res.msgs_per_delivery = rec.msgs_in_window.load(Relaxed) as f64 / res.delivered.max(1) as f64;
    res.cpu_pct = 100.0 * (cpu1 - cpu0) / w;
    res.gen_cpu_pct = 100.0 * (gen1 - gen0) / w;
    // Everything else the machine did meanwhile (other engineers' builds and tests): the noise.
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let machine = cores * 100.0 * (mach1.0 - mach0.0) as f64 / (mach1.1 - mach0.1).max(1) as f64;
    res.other_cpu_pct = (machine - res.cpu_pct - res.gen_cpu_pct).max(0.0);
    res.cpu_us_per_delivery = (cpu1 - cpu0) * 1e6 / res.delivered.max(1) as f64;
    res.user = quant(&h.user);
    res.kernel = quant(&h.kernel);
    let (cu, ck) = rec.completion();
    res.last_user = [ms(&cu, 0.5), ms(&cu, 0.99)];
    res.last_kernel = [ms(&ck, 0.5), ms(&ck, 0.99)];
    res.tick = [ms(&h.tick, 0.5), ms(&h.tick, 0.99)];
    res.errors = rec.errors.load(Relaxed);
    res.closed = rec.closed.load(Relaxed);
    res.udp_drops = udp_drops() - drops0;
    if let Some(rec) = &ctx.live {
        let (lr, run) = live_stats::analyze(rec, live_j0, live_j1);
        res.live = Some(lr);
        res.live_run = Some(run);
    }
    let pk = pstats.packets.load(Relaxed);
    res.proxy_loss = if pk > 0 { pstats.lost.load(Relaxed) as f64 / pk as f64 } else { 0.0 };
    if let Some(pr) = &ctx.prec {
        res.ref_offset_us = ref_offset;
        let mut sp_s = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let mut sp_f = sp_s.clone();
        let mut skew = sp_s.clone();
        for k in k0 as usize..(k1 as usize).min(pr.changes) {
            let eff = pr.effective_us[k].load(Relaxed);
            if eff == 0 {
                continue;
            }
            res.changes_seen += 1;
            let truth = ((eff as f64 - ref_offset) * 1000.0) as i64;
            let (mut lo, mut hi, mut flo, mut fhi) = (u64::MAX, 0u64, u64::MAX, 0u64);
            for g in 0..pr.viewers {
                let s = pr.scheduled[k * pr.viewers + g].load(Relaxed);
                if s == 0 {
                    continue;
                }
                lo = lo.min(s);
                hi = hi.max(s);
                let _ = skew.record(((s as i64 - truth).unsigned_abs() / 1000).max(1));
                let f = pr.fired[k * pr.viewers + g].load(Relaxed);
                if f != 0 {
                    flo = flo.min(f);
                    fhi = fhi.max(f);
                }
            }
            if hi >= lo {
                let _ = sp_s.record(((hi - lo) / 1000).max(1));
            }
            if fhi >= flo {
                let _ = sp_f.record(((fhi - flo) / 1000).max(1));
            }
        }
        let q3 = |h: &Histogram<u64>| {
            [ms(h, 0.5), ms(h, 0.99), if h.is_empty() { f64::NAN } else { h.max() as f64 / 1000.0 }]
        };
        res.spread_sched = q3(&sp_s);
        res.spread_fired = q3(&sp_f);
        res.skew = [ms(&skew, 0.5), ms(&skew, 0.95), ms(&skew, 0.99), ms(&skew, 1.0)];
        res.sync_late = pr.late.load(Relaxed);
    }
    drop(server);
    Ok(res)
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

pub(crate) fn f(x: f64, d: usize) -> String {
    if x.is_finite() { format!("{x:.d$}") } else { "–".into() }
}

/// The median of every numeric field over runs of one target.
fn med(rs: &[&Res]) -> Res {
    let m = |g: &dyn Fn(&Res) -> f64| median(rs.iter().map(|r| g(r)).collect());
    let arr5 = |g: &dyn Fn(&Res) -> [f64; 5]| -> [f64; 5] { std::array::from_fn(|i| m(&|r| g(r)[i])) };
    let arr2 = |g: &dyn Fn(&Res) -> [f64; 2]| -> [f64; 2] { std::array::from_fn(|i| m(&|r| g(r)[i])) };
    let arr3 = |g: &dyn Fn(&Res) -> [f64; 3]| -> [f64; 3] { std::array::from_fn(|i| m(&|r| g(r)[i])) };
    let arr4 = |g: &dyn Fn(&Res) -> [f64; 4]| -> [f64; 4] { std::array::from_fn(|i| m(&|r| g(r)[i])) };
    let r0 = rs[0];
    Res {
        target: r0.target,
        conns: r0.conns,
        failed: m(&|r| r.failed as f64) as u64,
        connect_retries: rs.iter().map(|r| r.connect_retries).sum(),
        join_s: m(&|r| r.join_s),
        join_p50: m(&|r| r.join_p50),
        join_p99: m(&|r| r.join_p99),
        rss0_mib: m(&|r| r.rss0_mib),
        rss_mib: m(&|r| r.rss_mib),
        kib_per_conn: m(&|r| r.kib_per_conn),
        cpu_pct: m(&|r| r.cpu_pct),
        cpu_us_per_delivery: m(&|r| r.cpu_us_per_delivery),
        gen_cpu_pct: m(&|r| r.gen_cpu_pct),
        deliveries_per_s: m(&|r| r.deliveries_per_s),
        expected: m(&|r| r.expected as f64) as u64,
        delivered: m(&|r| r.delivered as f64) as u64,
        lost: m(&|r| r.lost as f64) as u64,
        late: m(&|r| r.late as f64) as u64,
        dups: m(&|r| r.dups as f64) as u64,
        first_by_dgram: m(&|r| r.first_by_dgram as f64) as u64,
        first_by_stream: m(&|r| r.first_by_stream as f64) as u64,
        nacks: m(&|r| r.nacks as f64) as u64,
        quic: std::array::from_fn(|i| m(&|r| r.quic[i] as f64) as u64),
        msgs_per_delivery: m(&|r| r.msgs_per_delivery),
        user: arr5(&|r| r.user),
        kernel: arr5(&|r| r.kernel),
        last_user: arr2(&|r| r.last_user),
        last_kernel: arr2(&|r| r.last_kernel),
        tick: arr2(&|r| r.tick),
        errors: m(&|r| r.errors as f64) as u64,
        closed: m(&|r| r.closed as f64) as u64,
        settled_s: if rs.iter().all(|r| r.settled_s.is_some()) {
            Some(m(&|r| r.settled_s.unwrap_or(f64::NAN)))
        } else {
            None
        },
        storm_joined_s: rs
            .iter()
            .all(|r| r.storm_joined_s.is_some())
            .then(|| m(&|r| r.storm_joined_s.unwrap_or(f64::NAN))),
        right_at_end: m(&|r| r.right_at_end as f64) as u64,
        count_msgs_mean: m(&|r| r.count_msgs_mean),
        count_msgs_max: m(&|r| r.count_msgs_max as f64) as u64,
        spread_sched: arr3(&|r| r.spread_sched),
        spread_fired: arr3(&|r| r.spread_fired),
        skew: arr4(&|r| r.skew),
        sync_late: m(&|r| r.sync_late as f64) as u64,
        ref_offset_us: m(&|r| r.ref_offset_us),
        changes_seen: r0.changes_seen,
        proxy_loss: m(&|r| r.proxy_loss),
        udp_drops: m(&|r| r.udp_drops as f64) as u64,
        other_cpu_pct: m(&|r| r.other_cpu_pct),
        live: rs.iter().map(|r| r.live.as_ref()).collect::<Option<Vec<_>>>().map(|ls| live_stats::LiveRes::median(&ls)),
        run_no: r0.run_no,
        live_run: if rs.len() == 1 { r0.live_run.clone() } else { None },
        attack: r0.attack.clone(),
        attack_outcome: r0.attack_outcome.clone(),
        rss_window: arr2(&|r| r.rss_window),
        threads_fds: std::array::from_fn(|i| m(&|r| r.threads_fds[i] as f64) as u64),
        samples: r0.samples.clone(),
        after: r0.after.clone(),
        reconnects: r0.reconnects,
    }
}

fn floor_us(o: &Opts, target: &str) -> f64 {
    if target == "lockstep-wt" { o.floor_udp_us } else { o.floor_tcp_us }
}

fn print_tables(o: &Opts, rows: &[Res], title: &str, label: &str) {
    println!("\n### {title} — {label}\n");
    match o.mode {
        Mode::Latency => {
            println!(
                "Latency is host command → viewer receipt per delivery (ms). \"user\" = user-space receive time in the load generator; \"kernel\" = the viewer socket's SO_TIMESTAMPNS (WebSocket only; – for WebTransport).\n"
            );
            println!(
                "| target | conns | p50 user | p90 | p99 | p99.9 | max | p50 kernel | p99 kernel | last viewer p50 / p99 (user) | last viewer p99 (kernel) | tick p50 / p99 | deliveries/s | lost | late | server CPU % | CPU µs / delivery | × floor | KiB / conn | join s | load-gen CPU % | other CPU % |"
            );
            println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
            for r in rows {
                println!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.target,
                    r.conns,
                    f(r.user[0], 2),
                    f(r.user[1], 2),
                    f(r.user[2], 2),
                    f(r.user[3], 2),
                    f(r.user[4], 1),
                    f(r.kernel[0], 2),
                    f(r.kernel[2], 2),
                    f(r.last_user[0], 2),
                    f(r.last_user[1], 2),
                    f(r.last_kernel[1], 2),
                    f(r.tick[0], 2),
                    f(r.tick[1], 2),
                    f(r.deliveries_per_s, 0),
                    r.lost,
                    r.late,
                    f(r.cpu_pct, 1),
                    f(r.cpu_us_per_delivery, 2),
                    f(r.cpu_us_per_delivery / floor_us(o, r.target), 2),
                    f(r.kib_per_conn, 1),
                    f(r.join_s, 2),
                    f(r.gen_cpu_pct, 0),
                    f(r.other_cpu_pct, 0),
                );
            }
            if let Some(base) = rows
                .iter()
                .find(|r| r.target == "lockstep-ws")
                .or(rows.first())
                .filter(|_| !title.contains("every run"))
            {
                println!("\nRatios (other ÷ {}; above 1 means {} is better):\n", base.target, base.target);
                println!("| target | p50 | p99 | p99 kernel | last viewer p99 | CPU / delivery | memory / conn |");
                println!("|---|---|---|---|---|---|---|");
                for r in rows {
                    println!(
                        "| {} | {} | {} | {} | {} | {} | {} |",
                        r.target,
                        f(r.user[0] / base.user[0], 2),
                        f(r.user[2] / base.user[2], 2),
                        f(r.kernel[2] / base.kernel[2], 2),
                        f(r.last_user[1] / base.last_user[1], 2),
                        f(r.cpu_us_per_delivery / base.cpu_us_per_delivery, 2),
                        f(r.kib_per_conn / base.kib_per_conn, 2),
                    );
                }
            }
            println!(
                "\nmessages per delivered change (all kinds, viewers, measured window): {}",
                rows.iter()
                    .map(|r| format!("{} {}", r.target, f(r.msgs_per_delivery, 2)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let wt: Vec<_> = rows
                .iter()
                .filter(|r| r.target == "lockstep-wt")
                .map(|r| {
                    format!(
                        "changes {}: {} of {} deliveries by datagram ({}% of deliveries, {}% of the {} expected), {} {}, {} Nacks sent, {} lost; {} UDP receive-buffer drops on the machine; QUIC over the viewers' whole connections: {} ACK frames sent per packet received from the server, {} ACK frames received per packet sent ({} packets from the server, {} to it)",
                        if o.wt_once { "once as datagrams" } else { "as datagram copies + stream" },
                        r.first_by_dgram,
                        r.delivered,
                        f(100.0 * r.first_by_dgram as f64 / r.delivered.max(1) as f64, 2),
                        f(100.0 * r.first_by_dgram as f64 / r.expected.max(1) as f64, 2),
                        r.expected,
                        r.first_by_stream,
                        if o.wt_once { "repaired on the stream" } else { "first on the stream" },
                        r.nacks,
                        r.lost,
                        r.udp_drops,
                        f(r.quic[1] as f64 / r.quic[0].max(1) as f64, 3),
                        f(r.quic[3] as f64 / r.quic[2].max(1) as f64, 3),
                        r.quic[0],
                        r.quic[2]
                    )
                })
                .collect();
            if !wt.is_empty() {
                println!("WebTransport: {}", wt.join("; "));
            }
            if rows.iter().any(|r| r.attack.is_some()) {
                print_attacks(rows);
            }
            for r in rows.iter().filter(|r| !r.samples.is_empty()) {
                soak::print(r.target, &r.samples, r.after.as_ref(), r.reconnects);
            }
            let after: Vec<_> = rows
                .iter()
                .filter(|r| r.samples.is_empty())
                .filter_map(|r| r.after.as_ref().map(|a| format!("{}: {}", r.target, soak::brief(a))))
                .collect();
            if !after.is_empty() {
                println!("\nafter every client left (rooms' grace and the maintenance passed): {}", after.join("; "));
            }
        }
        Mode::Storm => {
            println!(
                "| target | viewers | all joined (s) | settled (s) | right count at end | count msgs / viewer (mean) | max | server CPU % during storm | RSS MiB | failed | closed |"
            );
            println!("|---|---|---|---|---|---|---|---|---|---|---|");
            for r in rows {
                println!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.target,
                    r.conns,
                    r.storm_joined_s
                        .map(|s| f(s, 2))
                        .unwrap_or_else(|| format!("no (> {:.0})", o.storm_timeout.as_secs_f64())),
                    r.settled_s
                        .map(|s| f(s, 2))
                        .unwrap_or_else(|| format!("never (> {:.0})", o.storm_timeout.as_secs_f64())),
                    r.right_at_end,
                    f(r.count_msgs_mean, 2),
                    r.count_msgs_max,
                    f(r.cpu_pct, 0),
                    f(r.rss_mib, 0),
                    r.failed,
                    r.closed,
                );
            }
        }
        Mode::Live => {}
        Mode::Precision => {
            println!(
                "Spread = first → last viewer applying a scheduled change (ms): \"scheduled\" = the instants the viewers' clock estimates give; \"fired\" = when the load generator's timers actually fired (all viewers share 2 cores). Skew = |scheduled − true instant| per viewer and change (true = effective time − the server-clock offset measured directly, {} µs).\n",
                rows.first().map(|r| f(r.ref_offset_us, 0)).unwrap_or_default()
            );
            println!(
                "| target | viewers | changes | spread scheduled p50 / p99 / max | spread fired p50 / p99 / max | skew p50 | p95 | p99 | max | arrived after effect | proxy loss |"
            );
            println!("|---|---|---|---|---|---|---|---|---|---|---|");
            for r in rows {
                println!(
                    "| {} | {} | {} | {} / {} / {} | {} / {} / {} | {} | {} | {} | {} | {} | {} |",
                    r.target,
                    r.conns - 1,
                    r.changes_seen,
                    f(r.spread_sched[0], 3),
                    f(r.spread_sched[1], 3),
                    f(r.spread_sched[2], 3),
                    f(r.spread_fired[0], 2),
                    f(r.spread_fired[1], 2),
                    f(r.spread_fired[2], 2),
                    f(r.skew[0], 3),
                    f(r.skew[1], 3),
                    f(r.skew[2], 3),
                    f(r.skew[3], 3),
                    r.sync_late,
                    f(r.proxy_loss * 100.0, 1) + " %",
                );
            }
        }
    }
    if o.mode == Mode::Live {
        let lives: Vec<(&str, &live_stats::LiveRes)> =
            rows.iter().filter_map(|r| r.live.as_ref().map(|l| (r.target, l))).collect();
        let names: Vec<String> = rows.iter().map(|r| format!("{} (run {})", r.target, r.run_no + 1)).collect();
        let runs: Vec<(&str, &live_stats::LiveRun)> =
            rows.iter().zip(&names).filter_map(|(r, n)| r.live_run.as_ref().map(|l| (n.as_str(), l))).collect();
        live_stats::print(&lives, &runs);
        println!(
            "\n| target | conns | join s | KiB / conn | server CPU % | load-gen CPU % | other CPU % | errors | closed |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for r in rows {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.target,
                r.conns,
                f(r.join_s, 2),
                f(r.kib_per_conn, 1),
                f(r.cpu_pct, 1),
                f(r.gen_cpu_pct, 0),
                f(r.other_cpu_pct, 0),
                r.errors,
                r.closed
            );
        }
    }
    let bad: Vec<_> = rows
        .iter()
        .filter(|r| r.errors > 0 || r.failed > 0)
        .map(|r| format!("{}: {} errors, {} failed connects, {} closed", r.target, r.errors, r.failed, r.closed))
        .collect();
    if !bad.is_empty() {
        println!("\nproblems: {}", bad.join("; "));
    }
    let retried: Vec<_> =
        rows.iter().filter(|r| r.connect_retries > 0).map(|r| format!("{}: {}", r.target, r.connect_retries)).collect();
    if !retried.is_empty() {
        println!("\nconnects that failed once and were made again (all runs): {}", retried.join("; "));
    }
}

/// Issue 16: what each attack cost the victims (the room's viewers), beside
/// the clean run of the same target, and what the attacker was answered.
fn print_attacks(rows: &[Res]) {
    println!(
        "\nAttacks: the victims are the room's viewers; \"× clean\" divides by the clean run (attack none) of the same transport.\n"
    );
    println!(
        "| transport | attack | victims' p50 | p99 | p99 × clean | p99.9 | lost | victims closed, errors | server CPU % | RSS MiB (window start → end) | threads, fds | attacker's inputs | answered as documented |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let transport = r.target.split(',').next().unwrap_or(r.target);
        let clean = rows.iter().find(|c| c.attack.as_deref() == Some("none") && c.target.starts_with(transport));
        let out = r.attack_outcome.as_ref();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {}, {} | {} | {} → {} | {}, {} | {} | {} |",
            transport,
            r.attack.as_deref().unwrap_or("–"),
            f(r.user[0], 2),
            f(r.user[2], 2),
            clean.map_or("–".into(), |c| f(r.user[2] / c.user[2], 2)),
            f(r.user[3], 2),
            r.lost,
            r.closed,
            r.errors,
            f(r.cpu_pct, 1),
            f(r.rss_window[0], 1),
            f(r.rss_window[1], 1),
            r.threads_fds[0],
            r.threads_fds[1],
            out.map_or("–".into(), |o| o.tried().to_string()),
            out.map_or("–".into(), |o| o.as_documented().to_string()),
        );
    }
    for r in rows {
        let Some(o) = &r.attack_outcome else { continue };
        println!("\n{} — {}:", r.target, o.kind);
        for (name, c) in &o.cases {
            let other: Vec<_> = c.other.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
            println!(
                "- {name}: {} of {} answered `{}`{}{}",
                c.as_documented,
                c.tried,
                c.expect,
                if other.is_empty() { String::new() } else { format!("; otherwise {}", other.join(", ")) },
                if c.retried == 0 {
                    String::new()
                } else {
                    format!(" ({} tried again: the connection failed before the bad input was sent)", c.retried)
                }
            );
        }
        for n in &o.notes {
            println!("- {n}");
        }
    }
}

fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    let wall = std::time::Instant::now();
    let bin = match &o.server_bin {
        Some(b) => Some(b.clone()),
        None if o.targets.iter().any(|t| t.is_lockstep()) => Some(target::lockstep_binary()?),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.spawn(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async move {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        eprintln!("interrupted: stopping the servers");
        target::kill_running();
        std::process::exit(130);
    });
    if scale::is_scale(&o.scenario) {
        let label =
            format!("{} CPUs ({})", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), cpu_model());
        let r = scale::main(&o, bin.as_deref(), &rt, &label);
        rt.shutdown_timeout(Duration::from_secs(1));
        println!("\nwall time {:.1} s", wall.elapsed().as_secs_f64());
        return r;
    }
    let title = match o.mode {
        Mode::Latency => format!(
            "{}: {} room(s) × {} viewers, a change every {} ms; {:.0} s warm-up, {:.0} s measured",
            o.scenario.to_uppercase(),
            o.rooms,
            o.per_room,
            o.interval.as_millis(),
            o.warmup.as_secs_f64(),
            o.measure.as_secs_f64()
        ),
        Mode::Storm => format!(
            "join storm: {} viewers join one room, {} connection attempts in flight",
            o.rooms * o.per_room,
            o.concurrency
        ),
        Mode::Precision => format!(
            "sync precision: {} room(s) × {} viewers, play/pause every {} ms (lead 100 ms), {:.0} s measured{}",
            o.rooms,
            o.per_room,
            o.interval.as_millis(),
            o.measure.as_secs_f64(),
            o.impair
                .map(|i| format!(
                    ", impaired: {} ± {} ms each way, {:.0} % loss",
                    i.delay.as_millis(),
                    i.jitter.as_millis(),
                    i.loss * 100.0
                ))
                .unwrap_or_default()
        ),
        Mode::Live => format!(
            "live: 1 live room × {} viewers (fetch {}–{} ms, {:.0} % at {}–{} ms, segments {}–{} ms, stalls {}, edge reported {}), {:.0} s warm-up, {:.0} s measured",
            o.per_room,
            o.live.fetch_ms.0,
            o.live.fetch_ms.1,
            o.live.tail * 100.0,
            o.live.tail_ms.0,
            o.live.tail_ms.1,
            o.live.segment_ms.0,
            o.live.segment_ms.1,
            if o.live.stalls { "reported" } else { "not reported" },
            if o.live.edge_oldest { "at its oldest" } else { "now" },
            o.warmup.as_secs_f64(),
            o.measure.as_secs_f64()
        ),
    };
    eprintln!("{title}");
    let host = cpu_model();
    let label = format!(
        "{} CPUs ({host}), {} run(s) per target",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        o.runs
    );
    let mut all: Vec<(usize, Res)> = Vec::new();
    // With --nodes 2 each target runs on one node and on two, side by side; a
    // live run, with each --live-latency.
    let latencies: Vec<Option<String>> =
        if o.mode == Mode::Live { o.live.latencies.iter().cloned().map(Some).collect() } else { vec![None] };
    let attacks: Vec<Option<String>> =
        if o.attacks.is_empty() { vec![None] } else { o.attacks.iter().cloned().map(Some).collect() };
    let mut variants: Vec<(Target, usize, Option<String>, Option<String>)> = Vec::new();
    // A soak runs once, on as many nodes as asked; other runs compare one node with two.
    let node_counts: Vec<usize> = if o.scenario == "soak" { vec![o.nodes] } else { (1..=o.nodes).collect() };
    for &t in &o.targets {
        for &n in &node_counts {
            for l in &latencies {
                variants.extend(attacks.iter().map(|a| (t, n, l.clone(), a.clone())));
            }
        }
    }
    for run in 0..o.runs {
        for (ti, (t, nodes, latency, attack)) in variants.iter().cloned().enumerate() {
            wait_quiet(o.quiet_wait);
            eprintln!(
                "run {}/{}: {}{}{}",
                run + 1,
                o.runs,
                t.name(),
                if nodes == 2 { " on 2 nodes" } else { "" },
                latency.as_deref().map(|l| format!(", --live-latency-ms {l}")).unwrap_or_default()
                    + &attack.as_deref().map(|a| format!(", attack {a}")).unwrap_or_default()
            );
            match rt.block_on(run_one(t, &o, bin.as_deref(), run, nodes, latency.as_deref(), attack.as_deref())) {
                Ok(r) => all.push((ti, r)),
                Err(e) => eprintln!("  {} failed: {e:#}", t.name()),
            }
            // The runs so far, in case the command is interrupted.
            if let Some(path) = &o.json
                && let Err(e) = write_json(path, &o, &title, &label, &all, &medians(&all, variants.len()))
            {
                eprintln!("  could not write {}: {e:#}", path.display());
            }
            // Let sockets in TIME_WAIT and the previous server's exit settle.
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    if o.runs > 1 {
        let per: Vec<Res> = all.iter().map(|(_, r)| r.clone()).collect();
        print_tables(&o, &per, &format!("{title} (every run)"), &label);
    }
    let meds = medians(&all, variants.len());
    print_tables(&o, &meds, &title, &format!("{label}{}", if o.runs > 1 { ", medians" } else { "" }));
    println!("\nwall time {:.1} s", wall.elapsed().as_secs_f64());
    if o.check {
        let problems =
            check(&all.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(), all.len(), variants.len() * o.runs);
        if !problems.is_empty() {
            println!("\ncheck FAILED:");
            for p in &problems {
                println!("- {p}");
            }
            if let Some(path) = &o.json {
                write_json(path, &o, &title, &label, &all, &meds)?;
            }
            std::process::exit(1);
        }
        println!("\ncheck passed: every run clean");
    }
    if let Some(path) = &o.json {
        write_json(path, &o, &title, &label, &all, &meds)?;
        println!("written to {}", path.display());
    }
    Ok(())
}

/// The CPU's model name (/proc/cpuinfo).
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default()
}

/// `--check`: what was not clean in `runs` (`done` of `planned` runs finished).
fn check(runs: &[Res], done: usize, planned: usize) -> Vec<String> {
    let mut out = Vec::new();
    if done < planned {
        out.push(format!("{} of {planned} runs failed to run", planned - done));
    }
    for r in runs {
        if r.closed > 0 || r.failed > 0 || r.errors > 0 {
            out.push(format!(
                "{}: victims closed {}, failed to join {}, client errors {}",
                r.target, r.closed, r.failed, r.errors
            ));
        }
        if let Some(a) = &r.attack_outcome {
            for (name, c) in &a.cases {
                if c.tried > c.as_documented {
                    let other: Vec<_> = c.other.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
                    out.push(format!("{}: {name}: expected {}, got {}", r.target, c.expect, other.join(", ")));
                }
            }
        }
        if let Some(after) = &r.after {
            out.extend(soak::leftovers(after).into_iter().map(|l| format!("{}: {l}", r.target)));
        }
    }
    out
}

/// The medians of each of `n` variants over its runs.
fn medians(all: &[(usize, Res)], n: usize) -> Vec<Res> {
    (0..n)
        .filter_map(|ti| {
            let rs: Vec<&Res> = all.iter().filter(|(i, _)| *i == ti).map(|(_, r)| r).collect();
            (!rs.is_empty()).then(|| med(&rs))
        })
        .collect()
}

/// Every run and the medians as JSON, with what is needed to record them
/// (`BENCHMARKS.md`: command, commit, machine, date).
fn write_json(
    path: &std::path::Path,
    o: &Opts,
    title: &str,
    label: &str,
    all: &[(usize, Res)],
    meds: &[Res],
) -> anyhow::Result<()> {
    let mut v = json_meta(o, title, label);
    v.insert("runs".into(), serde_json::to_value(all.iter().map(|(_, r)| r).collect::<Vec<_>>())?);
    v.insert("medians".into(), serde_json::to_value(meds)?);
    std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
    Ok(())
}

/// What every JSON record starts with: scenario, title, machine, command, commit, date.
fn json_meta(o: &Opts, title: &str, label: &str) -> serde_json::Map<String, serde_json::Value> {
    let sh = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .current_dir(target::workspace())
            .output()
            .ok()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let v = serde_json::json!({
        "scenario": o.scenario,
        "title": title,
        "machine": label,
        "command": std::env::args().collect::<Vec<_>>(),
        "commit": sh("git", &["rev-parse", "--short", "HEAD"]),
        "dirty": !sh("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty(),
        "server_bin": o.server_bin,
        "date": sh("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "uptime": sh("uptime", &[]),
    });
    match v {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}
