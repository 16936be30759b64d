//! Issue 17: scale-out on a Redis Cluster (`--scenario premiere`,
//! `--scenario rooms`).
//!
//! A run starts a local Redis Cluster (`target::RedisCluster`: `--redis-primaries`,
//! `--redis-replicas`), `--nodes` lockstep nodes on it (`--redis-url` of the
//! first primary; each node finds cluster mode itself), and WebSocket
//! members placed on the nodes by plan:
//!
//! - **premiere**: one event of `--viewers` viewers, viewer `v` on node
//!   `v mod N`, its host on node 0; plus `--bg-rooms` background rooms of a
//!   host and `--bg-viewers` viewers each, room `j` wholly on node `j mod N`,
//!   each host changing every `--bg-interval-ms`.
//! - **rooms**: `--rooms` rooms of `--viewers` members each (the host
//!   counted; 1: the host alone, watching its own changes), room `i` wholly on
//!   node `i mod N`, except the first `--shared-rooms`, which have a member on
//!   every node.
//!
//! Every host changes every `--interval-ms` (background hosts their own),
//! cycling seek, play, seek, pause (play and pause scheduled at the room's
//! lead), each to position `(k + 1) s`, so a `TimelineChanged` names its
//! change `k`. After everyone joined, an idle window (`--idle-s`, no change
//! anywhere) measures the heartbeats alone; the hosts then start, and after
//! the warm-up the measured window begins. At both ends of each window the
//! run reads every node's `/metrics` and CPU time (`/proc/PID/stat`) and every
//! primary's `INFO stats` / `INFO commandstats` and CPU time.
//!
//! What a run reports: host command → member receipt per delivery, for
//! members on the host's node and on the others (both include the Redis
//! commit: a node releases a change only once Redis committed it); for the
//! premiere's scheduled changes, the spread of the receive times over every
//! viewer and the receipts after the change's `effectiveAtUs` (the nodes run
//! here, so their clocks are CLOCK_REALTIME: each is the system time at its
//! start advanced by a monotonic clock); per node its CPU, RSS, the
//! `TimelineChanged` its members received, `lockstep_redis_subscribed_rooms`
//! and the `lockstep_redis_room_messages_total` it counted against the changes
//! published in the rooms it serves; per primary and in total the Redis
//! commands and bytes, per change, and net of the idle rate.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use lockstep_protocol::{
    AckOutcome, Action, ClientMsg, Command, Hello, PROTOCOL_VERSION, Report, Role, ServerMsg, SyncReport,
    decode_server, encode_client,
};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::target::{self, RedisCluster, RedisStats, ServerOpts, Target};
use crate::wsclient::{Op, Ws, realtime_ns};
use crate::{Opts, f};

/// The scale-out scenarios' options (see `--help`).
#[derive(Debug, Clone)]
pub(crate) struct ScaleOpts {
    pub(crate) primaries: usize,
    pub(crate) replicas: usize,
    pub(crate) bg_rooms: usize,
    pub(crate) bg_viewers: usize,
    pub(crate) bg_interval: Duration,
    pub(crate) shared_rooms: usize,
    pub(crate) idle: Duration,
    /// Every member sends a `Report` and a `SyncReport` this often (client-js with a media element).
    pub(crate) report: Option<Duration>,
}

pub(crate) fn is_scale(scenario: &str) -> bool {
    matches!(scenario, "premiere" | "rooms")
}

/// Histogram shards (members record from both load-generator threads).
const SHARDS: usize = 8;

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// One room of the plan.
#[derive(Debug)]
struct RoomPlan {
    event: String,
    interval: Duration,
    /// The host's first change comes at start + phase.
    phase: Duration,
    /// Node of each member; member 0 is the host.
    members: Vec<u8>,
    /// The premiere's event: every viewer's receive times are kept.
    event_room: bool,
    /// Background room (premiere).
    bg: bool,
}

impl RoomPlan {
    fn serves(&self, node: usize) -> bool {
        self.members.iter().any(|&n| n as usize == node)
    }
}

/// Shared by every member of a run.
struct Run {
    nodes: Vec<SocketAddr>,
    rooms: Vec<RoomPlan>,
    /// Changes per room recorded (a host stops after `kmax`).
    kmax: usize,
    start: watch::Receiver<Option<Instant>>,
    stop: watch::Receiver<bool>,
    sem: Arc<Semaphore>,
    report: Option<Duration>,
    measuring: AtomicBool,
    joined: AtomicU64,
    failed: AtomicU64,
    errors: AtomicU64,
    errors_shown: AtomicU64,
    closed: AtomicU64,
    /// Acks other than `Applied` (coalesced or unchanged changes).
    acks_other: AtomicU64,
    /// Hosts that were not their room's host.
    not_host: AtomicU64,
    /// Realtime ns at which the host of room `r` sent change `k` (`r * kmax + k`).
    send_ns: Vec<AtomicU64>,
    /// Whether change `r * kmax + k` was sent in the measured window.
    measured: Vec<AtomicBool>,
    /// Members that received change `r * kmax + k` (the host's own copy included).
    got: Vec<AtomicU32>,
    /// Changes each room's host sent in the measured window.
    sent_in_window: Vec<AtomicU32>,
    /// The event's viewers (premiere).
    ev_viewers: usize,
    /// Per change `k` and event viewer `v` (`k * ev_viewers + v`): user-space and kernel receive times, ns.
    ev_user: Vec<AtomicU64>,
    ev_kernel: Vec<AtomicU64>,
    /// Per event change: its `effectiveAtUs`.
    ev_eff: Vec<AtomicU64>,
    /// Event receipts whose `effectiveAtUs` differed from the first viewer's.
    ev_eff_mismatch: AtomicU64,
    /// Other rooms: command → receipt (µs) [same node user, other user, same kernel, other kernel].
    lat: [Vec<Mutex<Histogram<u64>>>; 4],
    /// Per node: `TimelineChanged` and all messages its members received in the measured window.
    node_tc: Vec<AtomicU64>,
    node_msgs: Vec<AtomicU64>,
}

impl Run {
    fn note_error(&self, what: impl std::fmt::Display) {
        self.errors.fetch_add(1, Relaxed);
        if self.errors_shown.fetch_add(1, Relaxed) < 5 {
            eprintln!("  client error: {what}");
        }
    }

    fn record_lat(&self, class: usize, shard: usize, us: u64) {
        let _ = self.lat[class][shard % SHARDS].lock().unwrap_or_else(|e| e.into_inner()).record(us.max(1));
    }

    fn merged(&self, class: usize) -> Histogram<u64> {
        let mut h = hist();
        for s in &self.lat[class] {
            let _ = h.add(&*s.lock().unwrap_or_else(|e| e.into_inner()));
        }
        h
    }
}

/// The host's change `k`: seek, play, seek, pause, … each to `(k + 1) s`.
fn action(k: u32) -> Action {
    let position_ms = (u64::from(k) + 1) * 1000;
    match k % 4 {
        1 => Action::Play { position_ms: Some(position_ms) },
        3 => Action::Pause { position_ms: Some(position_ms) },
        _ => Action::Seek { position_ms },
    }
}

fn scheduled(k: usize) -> bool {
    k % 4 == 1 || k % 4 == 3
}

/// Counts a member that leaves before it joined as failed.
struct JoinGuard<'a> {
    run: &'a Run,
    joined: bool,
}

impl Drop for JoinGuard<'_> {
    fn drop(&mut self) {
        if !self.joined {
            self.run.failed.fetch_add(1, Relaxed);
        }
    }
}

/// One member (`m`, 0 the host) of room `room` until the run stops.
async fn member(run: Arc<Run>, room: usize, m: usize) {
    let plan = &run.rooms[room];
    let node = plan.members[m] as usize;
    let is_host = m == 0;
    let device = if is_host { format!("h{room}") } else { format!("v{room}-{m}") };
    let permit = run.sem.clone().acquire_owned().await.ok();
    let hello = encode_client(&ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        event_id: plan.event.clone(),
        device_id: device,
        token: None,
        caps: 0,
    }));
    let addr = run.nodes[node];
    let path = format!("/api/live-stream/{}", plan.event);
    let connect = async {
        let mut ws = Ws::connect(addr, &path, Some("lockstep.v1")).await?;
        ws.send_binary(&hello).await?;
        Ok::<_, std::io::Error>(ws)
    };
    let mut ws = match tokio::time::timeout(Duration::from_secs(120), connect).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            run.failed.fetch_add(1, Relaxed);
            run.note_error(format!("connect: {e}"));
            return;
        }
        Err(_) => {
            run.failed.fetch_add(1, Relaxed);
            run.note_error("connect: timed out");
            return;
        }
    };
    let mut permit = permit;
    // A member closed before its `Welcome` failed to join.
    let mut guard = JoinGuard { run: &run, joined: false };
    let joined = &mut guard.joined;
    let mut epoch = 0u32;
    // Reports from the join on, each member at its own phase.
    let mut report_at = run.report.map(|every| {
        let phase = (room.wrapping_mul(7919).wrapping_add(m.wrapping_mul(104_729))) % 1000;
        Instant::now() + every.mul_f64(phase as f64 / 1000.0)
    });
    let (mut start, mut stop) = (run.start.clone(), run.stop.clone());
    let mut host_at: Option<Instant> = None;
    let mut host_done = !is_host;
    let mut next_k: u32 = 0;
    let far = Instant::now() + Duration::from_secs(3600);
    loop {
        loop {
            let fr = match ws.next_frame().await {
                Ok(Some(fr)) => fr,
                Ok(None) => break,
                Err(e) => {
                    run.closed.fetch_add(1, Relaxed);
                    run.note_error(format!("read: {e}"));
                    return;
                }
            };
            match fr.op {
                Op::Close => {
                    run.closed.fetch_add(1, Relaxed);
                    if !*stop.borrow() {
                        run.note_error(format!("closed by the server: {:?}", ws.payload(&fr).get(2..)));
                    }
                    return;
                }
                Op::Binary => {
                    let (u, kn) = (ws.user_ns, ws.kernel_ns);
                    on_msg(&run, room, m, node, ws.payload(&fr), u, kn, joined, &mut epoch);
                }
                Op::Text => {}
            }
        }
        if *joined && permit.is_some() {
            permit = None;
        }
        if !host_done
            && host_at.is_none()
            && *joined
            && let Some(s) = *start.borrow()
        {
            host_at = Some(s + plan.phase);
        }
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = tokio::time::sleep_until(host_at.unwrap_or(far)), if host_at.is_some() => {
                let k = next_k;
                next_k += 1;
                if k as usize >= run.kmax {
                    host_at = None;
                    host_done = true;
                    continue;
                }
                host_at = host_at.map(|_| start.borrow().unwrap_or(far) + plan.phase + plan.interval * (k + 1));
                let i = room * run.kmax + k as usize;
                run.send_ns[i].store(realtime_ns(), Relaxed);
                if run.measuring.load(Relaxed) {
                    run.measured[i].store(true, Relaxed);
                    run.sent_in_window[room].fetch_add(1, Relaxed);
                }
                let msg = encode_client(&ClientMsg::Command(Command { request_id: k + 1, action: action(k) }));
                if let Err(e) = ws.send_binary(&msg).await {
                    run.note_error(format!("host send: {e}"));
                    run.closed.fetch_add(1, Relaxed);
                    return;
                }
            }
            _ = tokio::time::sleep_until(report_at.unwrap_or(far)), if report_at.is_some() && *joined => {
                report_at = report_at.zip(run.report).map(|(at, every)| at + every);
                let report = encode_client(&ClientMsg::Report(Report { epoch, position_us: 0, rate_milli: 1000, buffering: false }));
                let sync = encode_client(&ClientMsg::SyncReport(SyncReport { epoch, drift_us: 0 }));
                if let Err(e) = ws.send_many(2, &[&report, &sync]).await {
                    run.note_error(format!("report: {e}"));
                    run.closed.fetch_add(1, Relaxed);
                    return;
                }
            }
            _ = start.changed() => {}
            r = ws.read() => match r {
                Ok(true) => {}
                Ok(false) => {
                    run.closed.fetch_add(1, Relaxed);
                    if !*stop.borrow() {
                        run.note_error("connection ended");
                    }
                    return;
                }
                Err(e) => {
                    run.closed.fetch_add(1, Relaxed);
                    if !*stop.borrow() {
                        run.note_error(format!("read: {e}"));
                    }
                    return;
                }
            },
        }
    }
}

/// A server message to member `m` of `room` on `node`.
#[allow(clippy::too_many_arguments)]
fn on_msg(
    run: &Run,
    room: usize,
    m: usize,
    node: usize,
    bytes: &[u8],
    user_ns: u64,
    kernel_ns: Option<u64>,
    joined: &mut bool,
    epoch: &mut u32,
) {
    let Ok(msg) = decode_server(bytes) else {
        run.note_error("undecodable server message");
        return;
    };
    let measuring = run.measuring.load(Relaxed);
    if measuring {
        run.node_msgs[node].fetch_add(1, Relaxed);
    }
    match msg {
        ServerMsg::Welcome(w) => {
            *epoch = w.timeline.epoch;
            if !*joined {
                *joined = true;
                run.joined.fetch_add(1, Relaxed);
                if m == 0 && w.role != Role::Host {
                    run.not_host.fetch_add(1, Relaxed);
                    run.note_error(format!("room {room}: the first member is {:?}, not the host", w.role));
                }
            }
        }
        ServerMsg::TimelineChanged(c) => {
            *epoch = c.timeline.epoch;
            if measuring {
                run.node_tc[node].fetch_add(1, Relaxed);
            }
            let p = c.timeline.position_ms;
            if p < 1000 || !p.is_multiple_of(1000) {
                return;
            }
            let k = (p / 1000 - 1) as usize;
            if k >= run.kmax {
                return;
            }
            let i = room * run.kmax + k;
            let sent = run.send_ns[i].load(Relaxed);
            if sent == 0 {
                return;
            }
            let plan = &run.rooms[room];
            if plan.event_room {
                if m == 0 {
                    run.got[i].fetch_add(1, Relaxed);
                    return;
                }
                let v = k * run.ev_viewers + (m - 1);
                if run.ev_user[v].compare_exchange(0, user_ns, Relaxed, Relaxed).is_ok() {
                    run.got[i].fetch_add(1, Relaxed);
                    run.ev_kernel[v].store(kernel_ns.unwrap_or(0), Relaxed);
                    if let Err(prev) = run.ev_eff[k].compare_exchange(0, c.effective_at_us, Relaxed, Relaxed)
                        && prev != c.effective_at_us
                    {
                        run.ev_eff_mismatch.fetch_add(1, Relaxed);
                    }
                }
                return;
            }
            run.got[i].fetch_add(1, Relaxed);
            if !run.measured[i].load(Relaxed) {
                return;
            }
            let other = usize::from(node != plan.members[0] as usize);
            run.record_lat(other, room + m, user_ns.saturating_sub(sent) / 1000);
            if let Some(kn) = kernel_ns {
                run.record_lat(2 + other, room + m, kn.saturating_sub(sent) / 1000);
            }
        }
        ServerMsg::Ack(a) if a.outcome != AckOutcome::Applied => {
            run.acks_other.fetch_add(1, Relaxed);
        }
        ServerMsg::Error(e) => run.note_error(format!("server error {} {}", e.code, e.message)),
        _ => {}
    }
}

/// Everything read at one instant: nodes' metrics and CPU, primaries' counters.
struct Snap {
    t: Instant,
    node_cpu: Vec<f64>,
    metrics: Vec<BTreeMap<String, f64>>,
    /// Realtime ns at which each node's metrics were asked for.
    at_ns: Vec<u64>,
    redis: Vec<RedisStats>,
    gen_cpu: f64,
    mach: (u64, u64),
}

/// The `lockstep_*` series of a node's `/metrics`, summed over their labels.
async fn metrics(http: SocketAddr) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    if let Ok((200, body)) = crate::attack::http(http, "GET", "/metrics", "127.0.0.1", "", "").await {
        for line in body.lines().filter(|l| l.starts_with("lockstep_")) {
            let Some((name, value)) = line.rsplit_once(' ') else { continue };
            let name = name.split('{').next().unwrap_or(name);
            if let Ok(v) = value.parse::<f64>() {
                *out.entry(name.to_owned()).or_default() += v;
            }
        }
    }
    out
}

async fn snap(servers: &[target::Server], cluster: &RedisCluster) -> anyhow::Result<Snap> {
    let t = Instant::now();
    let node_cpu = servers.iter().map(|s| target::cpu_s(s.pid)).collect();
    let mach = crate::machine_jiffies();
    let gen_cpu = target::cpu_s(std::process::id());
    let redis = cluster.stats()?;
    let (mut m, mut at_ns) = (Vec::new(), Vec::new());
    for s in servers {
        at_ns.push(realtime_ns());
        m.push(metrics(s.http).await);
    }
    Ok(Snap { t, node_cpu, metrics: m, at_ns, redis, gen_cpu, mach })
}

/// One node's figures.
#[derive(Debug, Default, Clone, serde::Serialize)]
struct NodeRes {
    node: usize,
    /// Members placed on it (event viewers, for the premiere: `event_viewers`).
    members: usize,
    event_viewers: usize,
    /// Rooms with members on it.
    rooms_expected: usize,
    /// `lockstep_rooms` − rooms with members: rooms the node serves by itself (0, or 1 while the
    /// `live-demo` room a node in `--dev`, as here, starts at boot has not ended: it ends after the
    /// room grace, 60 s, and is unsubscribed at the next heartbeat).
    own_rooms: f64,
    subscribed_rooms: f64,
    rooms_gauge: f64,
    connections: f64,
    redis_up: f64,
    /// `lockstep_redis_room_messages_total`, delta over the measured window.
    room_msgs: f64,
    /// Changes published in the window in the rooms it serves, and in every room.
    room_msgs_own: u64,
    room_msgs_all: u64,
    /// `TimelineChanged` its members received in the window, and all messages.
    tc_received: u64,
    msgs_received: u64,
    /// `lockstep_messages_out_total` delta (every type, per recipient).
    msgs_out: f64,
    cpu_pct: f64,
    idle_cpu_pct: f64,
    cpu_us_per_tc: f64,
    cpu_us_per_msg_out: f64,
    rss_mib: f64,
}

/// One primary's figures.
#[derive(Debug, Default, Clone, serde::Serialize)]
struct RedisRes {
    port: u16,
    commands: u64,
    net_in: u64,
    net_out: u64,
    cpu_pct: f64,
    idle_commands_per_s: f64,
    idle_cpu_pct: f64,
}

/// Latency of one class of deliveries (ms): [p50, p95, p99, max].
#[derive(Debug, Default, Clone, serde::Serialize)]
struct LatRow {
    class: String,
    members: usize,
    deliveries: u64,
    lost: u64,
    user: [f64; 4],
    kernel: [f64; 4],
}

/// The premiere's scheduled changes.
#[derive(Debug, Default, Clone, serde::Serialize)]
struct SpreadRes {
    changes: usize,
    /// max − min receive time over every viewer, per change (ms): kernel receive times, user-space ones.
    spread_kernel: [f64; 3],
    spread_user: [f64; 3],
    /// Seeks (in effect at once), for comparison.
    seeks: usize,
    seek_spread_kernel: [f64; 3],
    /// Receipts after the change's `effectiveAtUs` (kernel time where known), and the changes with any.
    late: u64,
    late_changes: usize,
    /// `effectiveAtUs` − the last viewer's receipt (ms): median and smallest.
    headroom: [f64; 2],
    /// `effectiveAtUs` − the host's send (ms), median.
    lead_ms: f64,
    eff_mismatch: u64,
    /// Every measured event change: [k, host send (s after the window's start), spread (ms, kernel),
    /// first and last receipt after the send (ms, kernel), receipts after effectiveAtUs].
    per_change: Vec<[f64; 6]>,
}

/// Commands of one room heartbeat besides its PEXPIREs (`count.lua`: EVALSHA, TIME, and an HSET or
/// HDEL and an HGETALL for each of the counts, the round trips and the drifts; the last two since
/// 2026-12-05 and 2026-12-07, 4 commands before); marked by its one TIME. Its PEXPIREs (10 a beat
/// before 4684eca; since, 1 and 11 more every 30th beat) are every PEXPIRE but the one of each
/// commit (one per SPUBLISH).
const HEARTBEAT_CMDS: f64 = 8.0;
/// Commands of one session refresh (HGET of the user, EVALSHA of `touch.lua` with HGET, HSET, 2 ZADD,
/// then HGETALL); marked by its two ZADDs.
const REFRESH_CMDS: f64 = 7.0;

/// A window's Redis commands by origin, inferred from `INFO commandstats` and the scripts' shapes.
#[derive(Debug, Default, Clone, serde::Serialize)]
struct Origins {
    /// Room heartbeats per second (one per node and room it serves), and their commands.
    heartbeats_per_s: f64,
    heartbeat_cmds_per_s: f64,
    /// Session refreshes per second (every connected member's, every 30 to 40 s since 2026-12-07).
    refreshes_per_s: f64,
    /// Per-node commands per second: ready-marker reads (GET, one by one on a cluster; EXISTS
    /// before 2026-12-07), session sweeps (ZRANGEBYSCORE), the subscription connection's PING, the
    /// presence SET.
    node_per_s: f64,
    /// Every other command, per second and per change.
    rest_per_s: f64,
    rest_per_change: f64,
    /// The rest per change, net of the idle window's rest rate (the measured window only).
    rest_per_change_net: f64,
}

impl Origins {
    fn of(
        calls: &BTreeMap<String, [f64; 3]>,
        n: impl Fn(&[f64; 3]) -> f64,
        total: f64,
        secs: f64,
        changes: u64,
    ) -> Origins {
        if secs <= 0.0 {
            return Origins::default();
        }
        let c = |k: &str| calls.get(k).map_or(0.0, &n);
        let heartbeats = c("time");
        let refreshes = c("zadd") / 2.0;
        let node = c("exists") + c("get") + c("zrangebyscore") + c("ping") + c("set") + c("info");
        let hb_cmds = heartbeats * HEARTBEAT_CMDS + (c("pexpire") - c("spublish")).max(0.0);
        let rest = total - hb_cmds - refreshes * REFRESH_CMDS - node;
        Origins {
            heartbeat_cmds_per_s: hb_cmds / secs,
            heartbeats_per_s: heartbeats / secs,
            refreshes_per_s: refreshes / secs,
            node_per_s: node / secs,
            rest_per_s: rest / secs,
            rest_per_change: if changes > 0 { rest / changes as f64 } else { f64::NAN },
            rest_per_change_net: f64::NAN,
        }
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
struct Totals {
    window_s: f64,
    idle_s: f64,
    commands: u64,
    net_in: u64,
    net_out: u64,
    idle_commands_per_s: f64,
    idle_in_per_s: f64,
    idle_out_per_s: f64,
    /// Per change of the event (premiere) or of any room (rooms): window deltas ÷ changes.
    per_change: [f64; 3],
    /// Per change of any room, net of the idle rate: (delta − idle rate × window) ÷ all changes.
    net_per_change: [f64; 3],
    /// Idle commands per second per room (heartbeats and every other periodic command, ÷ rooms of the plan).
    idle_commands_per_room_s: f64,
    /// The same ÷ (node, room) pairs served (`lockstep_redis_subscribed_rooms` summed over the nodes).
    idle_commands_per_node_room_s: f64,
    /// Per command: calls in the window, per change of any room net of the idle rate, and idle calls per second.
    calls: BTreeMap<String, [f64; 3]>,
    /// The commands by origin, in the window and in the idle window (see [`Origins`]).
    origins: [Origins; 2],
    cpu_pct: f64,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
struct ScaleRes {
    scenario: String,
    run_no: usize,
    nodes: usize,
    primaries: usize,
    replicas: usize,
    rooms: usize,
    conns: usize,
    join_s: f64,
    failed: u64,
    errors: u64,
    closed: u64,
    acks_other: u64,
    not_host: u64,
    event_changes: u64,
    bg_changes: u64,
    all_changes: u64,
    latency: Vec<LatRow>,
    spread: Option<SpreadRes>,
    node: Vec<NodeRes>,
    redis: Vec<RedisRes>,
    totals: Totals,
    gen_cpu_pct: f64,
    other_cpu_pct: f64,
}

fn q4(h: &Histogram<u64>) -> [f64; 4] {
    if h.is_empty() {
        return [f64::NAN; 4];
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    [ms(0.5), ms(0.95), ms(0.99), h.max() as f64 / 1000.0]
}

/// [p50, p99, max] of `v`.
fn q3(v: &mut [f64]) -> [f64; 3] {
    if v.is_empty() {
        return [f64::NAN; 3];
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    [at(0.5), at(0.99), v[v.len() - 1]]
}

/// The rooms and where their members are.
fn plan(o: &Opts, tag: &str) -> Vec<RoomPlan> {
    let n = o.nodes;
    let s = &o.scale;
    let mut rooms = Vec::new();
    if o.scenario == "premiere" {
        let mut members = vec![0u8];
        members.extend((0..o.per_room).map(|v| (v % n) as u8));
        rooms.push(RoomPlan {
            event: format!("{tag}-event"),
            interval: o.interval,
            phase: Duration::ZERO,
            members,
            event_room: true,
            bg: false,
        });
        for j in 0..s.bg_rooms {
            rooms.push(RoomPlan {
                event: format!("{tag}-bg{j}"),
                interval: s.bg_interval,
                // Spread over the interval, clear of the event's changes.
                phase: s.bg_interval.mul_f64((j as f64 + 0.5) / s.bg_rooms as f64),
                members: vec![(j % n) as u8; 1 + s.bg_viewers],
                event_room: false,
                bg: true,
            });
        }
    } else {
        for r in 0..o.rooms {
            let members: Vec<u8> = if r < s.shared_rooms {
                (0..o.per_room.max(n)).map(|m| ((r + m) % n) as u8).collect()
            } else {
                vec![(r % n) as u8; o.per_room.max(1)]
            };
            rooms.push(RoomPlan {
                event: format!("{tag}-r{r}"),
                interval: o.interval,
                phase: o.interval.mul_f64(r as f64 / o.rooms.max(1) as f64),
                members,
                event_room: false,
                bg: false,
            });
        }
    }
    rooms
}

async fn run_one(o: &Opts, bin: Option<&Path>, run_no: usize) -> anyhow::Result<ScaleRes> {
    let premiere = o.scenario == "premiere";
    let s = &o.scale;
    eprintln!("  starting a Redis Cluster: {} primaries, {} replica(s) each", s.primaries, s.replicas);
    let cluster = RedisCluster::start(s.primaries, s.replicas)?;
    let mut args = o.lockstep_args.clone();
    args.push("--log-json".into());
    args.extend(["--redis-url".into(), cluster.url()]);
    let mut servers = Vec::new();
    for i in 0..o.nodes {
        let opts = ServerOpts { peer_counts: false, lockstep_args: args.clone(), pin: o.pin.clone(), instance: i };
        servers.push(target::start(Target::Ws, &opts, &o.peers, bin)?);
    }
    eprintln!(
        "  {} nodes on the Redis Cluster (primaries on ports {:?}): {}",
        o.nodes,
        cluster.primary_ports(),
        servers.iter().map(|s| format!("{} (pid {})", s.http, s.pid)).collect::<Vec<_>>().join(", ")
    );
    let tag = format!("{}-{}-{}", o.scenario, run_no, realtime_ns() % 1_000_000_000);
    let rooms = plan(o, &tag);
    let span = o.warmup + o.measure;
    let min_interval = rooms.iter().map(|r| r.interval).min().unwrap_or(o.interval);
    let kmax = ((span.as_nanos() / min_interval.as_nanos().max(1)) as usize + 3).max(4);
    let ev_viewers = if premiere { o.per_room } else { 0 };
    let ev_changes = if premiere { kmax } else { 0 };
    let (start_tx, start_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let z64 = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
    let nr = rooms.len();
    let run = Arc::new(Run {
        nodes: servers.iter().map(|s| s.http).collect(),
        kmax,
        start: start_rx,
        stop: stop_rx,
        sem: Arc::new(Semaphore::new(o.concurrency)),
        report: s.report,
        measuring: AtomicBool::new(false),
        joined: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        errors_shown: AtomicU64::new(0),
        closed: AtomicU64::new(0),
        acks_other: AtomicU64::new(0),
        not_host: AtomicU64::new(0),
        send_ns: z64(nr * kmax),
        measured: (0..nr * kmax).map(|_| AtomicBool::new(false)).collect(),
        got: (0..nr * kmax).map(|_| AtomicU32::new(0)).collect(),
        sent_in_window: (0..nr).map(|_| AtomicU32::new(0)).collect(),
        ev_viewers,
        ev_user: z64(ev_viewers * ev_changes),
        ev_kernel: z64(ev_viewers * ev_changes),
        ev_eff: z64(ev_changes),
        ev_eff_mismatch: AtomicU64::new(0),
        lat: std::array::from_fn(|_| (0..SHARDS).map(|_| Mutex::new(hist())).collect()),
        node_tc: z64(o.nodes),
        node_msgs: z64(o.nodes),
        rooms,
    });
    let hosts = run.rooms.len();
    let conns: usize = run.rooms.iter().map(|r| r.members.len()).sum();
    let mut set = JoinSet::new();
    let progress = |what: &str| {
        eprintln!(
            "  [{}] {what}: joined {}/{conns}, failed {}, errors {} | nodes' CPU {} s",
            o.scenario,
            run.joined.load(Relaxed),
            run.failed.load(Relaxed),
            run.errors.load(Relaxed),
            servers.iter().map(|s| format!("{:.1}", target::cpu_s(s.pid))).collect::<Vec<_>>().join(" / ")
        )
    };
    // Hosts first, so that each is its room's first member (and so its host).
    let tj = Instant::now();
    let join_limit = Duration::from_secs(60).max(Duration::from_millis(30) * conns as u32);
    for r in 0..hosts {
        set.spawn(member(run.clone(), r, 0));
    }
    let mut last = Instant::now();
    while run.joined.load(Relaxed) + run.failed.load(Relaxed) < hosts as u64 && tj.elapsed() < join_limit {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if last.elapsed() >= Duration::from_secs(5) {
            last = Instant::now();
            progress("hosts joining");
        }
    }
    anyhow::ensure!(
        run.joined.load(Relaxed) == hosts as u64,
        "{} of {hosts} hosts joined in {:.0} s",
        run.joined.load(Relaxed),
        tj.elapsed().as_secs_f64()
    );
    for (r, room) in run.rooms.iter().enumerate() {
        for m in 1..room.members.len() {
            set.spawn(member(run.clone(), r, m));
        }
    }
    while run.joined.load(Relaxed) + run.failed.load(Relaxed) < conns as u64 && tj.elapsed() < join_limit {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if last.elapsed() >= Duration::from_secs(5) {
            last = Instant::now();
            progress("joining");
        }
    }
    let join_s = tj.elapsed().as_secs_f64();
    progress(&format!("joined in {join_s:.1} s"));
    anyhow::ensure!(run.failed.load(Relaxed) == 0, "{} members failed to join", run.failed.load(Relaxed));
    anyhow::ensure!(run.joined.load(Relaxed) == conns as u64, "not every member joined in {join_limit:?}");
    // Joins' presence messages and counts settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let a = snap(&servers, &cluster).await?;
    if !s.idle.is_zero() {
        eprintln!("  idle window: {:.0} s, no changes", s.idle.as_secs_f64());
        tokio::time::sleep(s.idle).await;
    }
    let b = snap(&servers, &cluster).await?;
    let start = Instant::now() + Duration::from_millis(100);
    let _ = start_tx.send(Some(start));
    tokio::time::sleep_until(start + o.warmup).await;
    let c = snap(&servers, &cluster).await?;
    run.measuring.store(true, Relaxed);
    let end = start + o.warmup + o.measure;
    while Instant::now() < end {
        tokio::time::sleep_until((Instant::now() + Duration::from_secs(5)).min(end)).await;
        progress("measuring");
    }
    run.measuring.store(false, Relaxed);
    let d = snap(&servers, &cluster).await?;
    let rss: Vec<f64> = servers.iter().map(|s| target::status_kib(s.pid, "VmRSS") as f64 / 1024.0).collect();
    // The last changes of the window arrive.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = stop_tx.send(true);
    tokio::time::sleep(Duration::from_millis(50)).await;
    set.abort_all();
    drop(start_tx);

    let w = d.t.duration_since(c.t).as_secs_f64();
    let wi = b.t.duration_since(a.t).as_secs_f64();
    let mut res = ScaleRes {
        scenario: o.scenario.clone(),
        run_no,
        nodes: o.nodes,
        primaries: s.primaries,
        replicas: s.replicas,
        rooms: run.rooms.len(),
        conns,
        join_s,
        failed: run.failed.load(Relaxed),
        errors: run.errors.load(Relaxed),
        closed: run.closed.load(Relaxed),
        acks_other: run.acks_other.load(Relaxed),
        not_host: run.not_host.load(Relaxed),
        ..ScaleRes::default()
    };
    let sent: Vec<u64> = run.sent_in_window.iter().map(|x| u64::from(x.load(Relaxed))).collect();
    for (r, room) in run.rooms.iter().enumerate() {
        if room.event_room {
            res.event_changes += sent[r];
        } else if room.bg {
            res.bg_changes += sent[r];
        }
    }
    res.all_changes = sent.iter().sum();

    // Latency and spread.
    if premiere {
        let host_node = run.rooms[0].members[0] as usize;
        let v = ev_viewers;
        let mut h = [hist(), hist(), hist(), hist()];
        let (mut deliveries, mut lost) = ([0u64; 2], [0u64; 2]);
        let mut sp = SpreadRes::default();
        let (mut spk, mut spu, mut seek_spk, mut headroom, mut lead) = (vec![], vec![], vec![], vec![], vec![]);
        for k in 0..kmax {
            if !run.measured[k].load(Relaxed) {
                continue;
            }
            let sent = run.send_ns[k].load(Relaxed);
            let eff_us = run.ev_eff[k].load(Relaxed);
            let sched = scheduled(k);
            let (mut lo, mut hi, mut ulo, mut uhi) = (u64::MAX, 0u64, u64::MAX, 0u64);
            let mut late_here = 0;
            for g in 0..v {
                let other = usize::from(run.rooms[0].members[1 + g] as usize != host_node);
                let u = run.ev_user[k * v + g].load(Relaxed);
                if u == 0 {
                    lost[other] += 1;
                    continue;
                }
                deliveries[other] += 1;
                let kn = run.ev_kernel[k * v + g].load(Relaxed);
                let _ = h[other].record((u.saturating_sub(sent) / 1000).max(1));
                if kn > 0 {
                    let _ = h[2 + other].record((kn.saturating_sub(sent) / 1000).max(1));
                }
                let t = if kn > 0 { kn } else { u };
                lo = lo.min(t);
                hi = hi.max(t);
                ulo = ulo.min(u);
                uhi = uhi.max(u);
                if sched && eff_us > 0 && t / 1000 > eff_us {
                    late_here += 1;
                }
            }
            if hi < lo {
                continue;
            }
            sp.per_change.push([
                k as f64,
                (sent as f64 - c.at_ns[0] as f64) / 1e9,
                (hi - lo) as f64 / 1e6,
                (lo as f64 - sent as f64) / 1e6,
                (hi as f64 - sent as f64) / 1e6,
                late_here as f64,
            ]);
            if sched {
                sp.changes += 1;
                spk.push((hi - lo) as f64 / 1e6);
                spu.push((uhi - ulo) as f64 / 1e6);
                sp.late += late_here;
                sp.late_changes += usize::from(late_here > 0);
                if eff_us > 0 {
                    headroom.push((eff_us as f64 - hi as f64 / 1000.0) / 1000.0);
                    lead.push((eff_us as f64 - sent as f64 / 1000.0) / 1000.0);
                }
            } else {
                sp.seeks += 1;
                seek_spk.push((hi - lo) as f64 / 1e6);
            }
        }
        sp.spread_kernel = q3(&mut spk);
        sp.spread_user = q3(&mut spu);
        sp.seek_spread_kernel = q3(&mut seek_spk);
        headroom.sort_by(|a, b| a.total_cmp(b));
        sp.headroom = [q3(&mut headroom)[0], headroom.first().copied().unwrap_or(f64::NAN)];
        sp.lead_ms = q3(&mut lead)[0];
        sp.eff_mismatch = run.ev_eff_mismatch.load(Relaxed);
        res.spread = Some(sp);
        let on_host = run.rooms[0].members[1..].iter().filter(|&&n| n as usize == host_node).count();
        for (other, class) in [(0, "event, viewers on the host's node"), (1, "event, viewers on other nodes")] {
            res.latency.push(LatRow {
                class: class.into(),
                members: if other == 0 { on_host } else { v - on_host },
                deliveries: deliveries[other],
                lost: lost[other],
                user: q4(&h[other]),
                kernel: q4(&h[2 + other]),
            });
        }
    }
    {
        // Every other room (background rooms, or the rooms run): deliveries and loss from `got`.
        let (mut delivered, mut expected, mut members) = (0u64, 0u64, [0usize; 2]);
        for (r, room) in run.rooms.iter().enumerate().filter(|(_, r)| !r.event_room) {
            for m in &room.members {
                members[usize::from(*m != room.members[0])] += 1;
            }
            for k in 0..kmax {
                let i = r * kmax + k;
                if run.measured[i].load(Relaxed) {
                    expected += room.members.len() as u64;
                    delivered += u64::from(run.got[i].load(Relaxed));
                }
            }
        }
        if expected > 0 {
            let what = if premiere { "background rooms" } else { "rooms" };
            let (hs, ho) = (run.merged(0), run.merged(1));
            let (ks, ko) = (run.merged(2), run.merged(3));
            let lost = expected.saturating_sub(delivered);
            res.latency.push(LatRow {
                class: format!("{what}, members on the host's node (the host's own copy included)"),
                members: members[0],
                deliveries: hs.len(),
                lost,
                user: q4(&hs),
                kernel: q4(&ks),
            });
            if !ho.is_empty() || members[1] > 0 {
                res.latency.push(LatRow {
                    class: format!("{what}, members on other nodes"),
                    members: members[1],
                    deliveries: ho.len(),
                    lost: 0,
                    user: q4(&ho),
                    kernel: q4(&ko),
                });
            }
        }
    }

    // Nodes.
    let delta =
        |n: usize, k: &str| d.metrics[n].get(k).copied().unwrap_or(0.0) - c.metrics[n].get(k).copied().unwrap_or(0.0);
    for (n, &rss_mib) in rss.iter().enumerate() {
        let mut nr = NodeRes { node: n, ..NodeRes::default() };
        for (r, room) in run.rooms.iter().enumerate() {
            let here = room.members.iter().filter(|&&x| x as usize == n).count();
            nr.members += here;
            if room.event_room {
                nr.event_viewers += room.members[1..].iter().filter(|&&x| x as usize == n).count();
            }
            // The changes sent between this node's two scrapes (the commit lag shifts both ends alike).
            let between = (0..kmax)
                .map(|k| run.send_ns[r * kmax + k].load(Relaxed))
                .filter(|&t| t >= c.at_ns[n] && t < d.at_ns[n])
                .count() as u64;
            nr.room_msgs_all += between;
            if here > 0 {
                nr.rooms_expected += 1;
                nr.room_msgs_own += between;
            }
            debug_assert_eq!(here > 0, room.serves(n));
        }
        let g = |k: &str| d.metrics[n].get(k).copied().unwrap_or(f64::NAN);
        nr.subscribed_rooms = g("lockstep_redis_subscribed_rooms");
        nr.rooms_gauge = g("lockstep_rooms");
        nr.own_rooms = nr.rooms_gauge - nr.rooms_expected as f64;
        nr.connections = g("lockstep_connections");
        nr.redis_up = g("lockstep_redis_up");
        nr.room_msgs = delta(n, "lockstep_redis_room_messages_total");
        nr.msgs_out = delta(n, "lockstep_messages_out_total");
        nr.tc_received = run.node_tc[n].load(Relaxed);
        nr.msgs_received = run.node_msgs[n].load(Relaxed);
        let cpu = d.node_cpu[n] - c.node_cpu[n];
        nr.cpu_pct = 100.0 * cpu / w;
        nr.idle_cpu_pct = if wi > 0.0 { 100.0 * (b.node_cpu[n] - a.node_cpu[n]) / wi } else { f64::NAN };
        nr.cpu_us_per_tc = cpu * 1e6 / nr.tc_received.max(1) as f64;
        nr.cpu_us_per_msg_out = cpu * 1e6 / nr.msgs_out.max(1.0);
        nr.rss_mib = rss_mib;
        res.node.push(nr);
    }

    // Redis.
    let mut t = Totals { window_s: w, idle_s: wi, ..Totals::default() };
    let mut redis_cpu = 0.0;
    for (i, (rd, rc)) in d.redis.iter().zip(&c.redis).enumerate() {
        let (ra, rb) = (&a.redis[i], &b.redis[i]);
        let rr = RedisRes {
            port: rd.port,
            commands: rd.commands - rc.commands,
            net_in: rd.net_in - rc.net_in,
            net_out: rd.net_out - rc.net_out,
            cpu_pct: 100.0 * (rd.cpu_s - rc.cpu_s) / w,
            idle_commands_per_s: if wi > 0.0 { (rb.commands - ra.commands) as f64 / wi } else { f64::NAN },
            idle_cpu_pct: if wi > 0.0 { 100.0 * (rb.cpu_s - ra.cpu_s) / wi } else { f64::NAN },
        };
        t.commands += rr.commands;
        t.net_in += rr.net_in;
        t.net_out += rr.net_out;
        redis_cpu += rd.cpu_s - rc.cpu_s;
        if wi > 0.0 {
            t.idle_commands_per_s += (rb.commands - ra.commands) as f64 / wi;
            t.idle_in_per_s += (rb.net_in - ra.net_in) as f64 / wi;
            t.idle_out_per_s += (rb.net_out - ra.net_out) as f64 / wi;
        }
        let calls = |s: &RedisStats, k: &str| s.calls.get(k).copied().unwrap_or(0) as f64;
        for k in rd.calls.keys() {
            let e = t.calls.entry(k.clone()).or_insert([0.0; 3]);
            let idle_rate = if wi > 0.0 { (calls(rb, k) - calls(ra, k)) / wi } else { 0.0 };
            e[0] += calls(rd, k) - calls(rc, k);
            e[1] += calls(rd, k) - calls(rc, k) - idle_rate * w;
            e[2] += idle_rate;
        }
        res.redis.push(rr);
    }
    t.cpu_pct = 100.0 * redis_cpu / w;
    let per = if premiere { res.event_changes } else { res.all_changes }.max(1) as f64;
    t.per_change = [t.commands as f64 / per, t.net_in as f64 / per, t.net_out as f64 / per];
    let all = res.all_changes.max(1) as f64;
    let idle_known = wi > 0.0;
    t.net_per_change = if idle_known {
        [
            (t.commands as f64 - t.idle_commands_per_s * w) / all,
            (t.net_in as f64 - t.idle_in_per_s * w) / all,
            (t.net_out as f64 - t.idle_out_per_s * w) / all,
        ]
    } else {
        [f64::NAN; 3]
    };
    t.idle_commands_per_room_s = if idle_known { t.idle_commands_per_s / run.rooms.len() as f64 } else { f64::NAN };
    let pairs: f64 = res.node.iter().map(|n| n.subscribed_rooms).sum();
    t.idle_commands_per_node_room_s = if idle_known { t.idle_commands_per_s / pairs.max(1.0) } else { f64::NAN };
    for e in t.calls.values_mut() {
        e[1] /= all;
    }
    t.origins = [
        Origins::of(&t.calls, |v| v[0], t.commands as f64, w, res.all_changes),
        Origins::of(&t.calls, |v| v[2] * wi, t.idle_commands_per_s * wi, wi, 0),
    ];
    if wi > 0.0 && res.all_changes > 0 {
        t.origins[0].rest_per_change_net =
            (t.origins[0].rest_per_s - t.origins[1].rest_per_s) * w / res.all_changes as f64;
    }
    t.calls.retain(|_, e| e[1].abs() >= 0.005 || e[2] >= 0.5);
    res.totals = t;
    res.gen_cpu_pct = 100.0 * (d.gen_cpu - c.gen_cpu) / w;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let machine = cores * 100.0 * (d.mach.0 - c.mach.0) as f64 / (d.mach.1 - c.mach.1).max(1) as f64;
    let ours: f64 = res.node.iter().map(|n| n.cpu_pct).sum::<f64>() + res.totals.cpu_pct + res.gen_cpu_pct;
    res.other_cpu_pct = (machine - ours).max(0.0);
    drop(servers);
    drop(cluster);
    Ok(res)
}

pub(crate) fn title(o: &Opts) -> String {
    let s = &o.scale;
    if o.scenario == "premiere" {
        format!(
            "premiere: 1 event × {} viewers round-robin over {} nodes (host on node 0), a change every {} ms; {} background rooms × (1 host + {} viewers), a change every {} ms, room j on node j mod {}; Redis Cluster of {} primaries × {} replica(s); {:.0} s idle, {:.0} s warm-up, {:.0} s measured",
            o.per_room,
            o.nodes,
            o.interval.as_millis(),
            s.bg_rooms,
            s.bg_viewers,
            s.bg_interval.as_millis(),
            o.nodes,
            s.primaries,
            s.replicas,
            s.idle.as_secs_f64(),
            o.warmup.as_secs_f64(),
            o.measure.as_secs_f64()
        )
    } else {
        format!(
            "rooms: {} rooms × {} member(s) (the host included), room i on node i mod {} but the first {} on every node, a change every {} ms per room; Redis Cluster of {} primaries × {} replica(s); {:.0} s idle, {:.0} s warm-up, {:.0} s measured",
            o.rooms,
            o.per_room,
            o.nodes,
            s.shared_rooms,
            o.interval.as_millis(),
            s.primaries,
            s.replicas,
            s.idle.as_secs_f64(),
            o.warmup.as_secs_f64(),
            o.measure.as_secs_f64()
        )
    }
}

fn print(o: &Opts, r: &ScaleRes, title: &str, label: &str) {
    println!("\n### {title} — {label}, run {}\n", r.run_no + 1);
    println!(
        "{} connections joined in {:.1} s; measured window {:.1} s: {} changes ({} of the event, {} of background rooms); failed {}, errors {}, closed {}, acks not applied {}, hosts not host {}.\n",
        r.conns,
        r.join_s,
        r.totals.window_s,
        r.all_changes,
        r.event_changes,
        r.bg_changes,
        r.failed,
        r.errors,
        r.closed,
        r.acks_other,
        r.not_host
    );
    println!(
        "Delivery: host command sent → member received the `TimelineChanged` (ms; user = the load generator's read, kernel = the socket's SO_TIMESTAMPNS). Every delivery includes the Redis commit (a node releases a change once Redis committed it).\n"
    );
    println!(
        "| deliveries of | members | deliveries | lost | p50 | p95 | p99 | max | p50 kernel | p95 kernel | p99 kernel | max kernel |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for l in &r.latency {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            l.class,
            l.members,
            l.deliveries,
            l.lost,
            f(l.user[0], 2),
            f(l.user[1], 2),
            f(l.user[2], 2),
            f(l.user[3], 1),
            f(l.kernel[0], 2),
            f(l.kernel[1], 2),
            f(l.kernel[2], 2),
            f(l.kernel[3], 1),
        );
    }
    if let Some(s) = &r.spread {
        println!(
            "\nThe event's scheduled changes (play, pause): spread = last − first viewer's receipt over every viewer on every node (ms); late = receipts after the change's effectiveAtUs; headroom = effectiveAtUs − the last receipt (ms).\n"
        );
        println!(
            "| scheduled changes | spread p50 / p99 / max (kernel) | spread p50 / p99 / max (user) | received after effectiveAt | changes with any | headroom p50 / min | lead (effectiveAt − host send) p50 | seeks | seek spread p50 / p99 / max (kernel) | effectiveAt differing |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        println!(
            "| {} | {} / {} / {} | {} / {} / {} | {} | {} | {} / {} | {} | {} | {} / {} / {} | {} |",
            s.changes,
            f(s.spread_kernel[0], 2),
            f(s.spread_kernel[1], 2),
            f(s.spread_kernel[2], 2),
            f(s.spread_user[0], 2),
            f(s.spread_user[1], 2),
            f(s.spread_user[2], 2),
            s.late,
            s.late_changes,
            f(s.headroom[0], 1),
            f(s.headroom[1], 1),
            f(s.lead_ms, 1),
            s.seeks,
            f(s.seek_spread_kernel[0], 2),
            f(s.seek_spread_kernel[1], 2),
            f(s.seek_spread_kernel[2], 2),
            s.eff_mismatch
        );
    }
    println!(
        "\nNodes (measured window): room msgs = `lockstep_redis_room_messages_total` delta; own rooms' = changes published in the rooms with members on the node, all rooms' = in every room, between the node's two scrapes; lockstep_rooms beyond the rooms with members = live-demo (`--dev` starts it on every node; it ends after its grace). CPU µs per delivered = node CPU ÷ the `TimelineChanged` its members received; per msg out = ÷ `lockstep_messages_out_total` delta (every type).\n"
    );
    println!(
        "| node | members | event viewers | rooms with members | subscribed rooms | lockstep_rooms | room msgs received | own rooms' changes | all rooms' changes | TimelineChanged received | msgs out | CPU % | idle CPU % | CPU µs / delivered | CPU µs / msg out | RSS MiB | redis up |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for n in &r.node {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            n.node,
            n.members,
            n.event_viewers,
            n.rooms_expected,
            f(n.subscribed_rooms, 0),
            f(n.rooms_gauge, 0),
            f(n.room_msgs, 0),
            n.room_msgs_own,
            n.room_msgs_all,
            n.tc_received,
            f(n.msgs_out, 0),
            f(n.cpu_pct, 1),
            f(n.idle_cpu_pct, 1),
            f(n.cpu_us_per_tc, 1),
            f(n.cpu_us_per_msg_out, 1),
            f(n.rss_mib, 0),
            f(n.redis_up, 0),
        );
    }
    let t = &r.totals;
    let per_what = if o.scenario == "premiere" { "per event change" } else { "per change" };
    println!(
        "\nRedis primaries (measured window {:.1} s; idle window {:.1} s before the hosts started):\n",
        t.window_s, t.idle_s
    );
    println!("| primary | commands | bytes in | bytes out | CPU % | idle commands/s | idle CPU % |");
    println!("|---|---|---|---|---|---|---|");
    for p in &r.redis {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            p.port,
            p.commands,
            p.net_in,
            p.net_out,
            f(p.cpu_pct, 1),
            f(p.idle_commands_per_s, 0),
            f(p.idle_cpu_pct, 1)
        );
    }
    println!(
        "| total | {} | {} | {} | {} | {} | – |",
        t.commands,
        t.net_in,
        t.net_out,
        f(t.cpu_pct, 1),
        f(t.idle_commands_per_s, 0)
    );
    println!(
        "\n| Redis | commands | bytes in | bytes out |\n|---|---|---|---|\n| {per_what} (window totals ÷ {}; background rooms and heartbeats included) | {} | {} | {} |\n| per change of any room, net of the idle rate | {} | {} | {} |\n| idle, per second | {} | {} | {} |\n| idle, per room per second (÷ rooms of the plan) | {} | – | – |\n| idle, per (node, room) served per second | {} | – | – |",
        if o.scenario == "premiere" { r.event_changes } else { r.all_changes },
        f(t.per_change[0], 1),
        f(t.per_change[1], 0),
        f(t.per_change[2], 0),
        f(t.net_per_change[0], 2),
        f(t.net_per_change[1], 0),
        f(t.net_per_change[2], 0),
        f(t.idle_commands_per_s, 0),
        f(t.idle_in_per_s, 0),
        f(t.idle_out_per_s, 0),
        f(t.idle_commands_per_room_s, 2),
        f(t.idle_commands_per_node_room_s, 2),
    );
    let mut calls: Vec<(&String, &[f64; 3])> = t.calls.iter().collect();
    calls.sort_by(|a, b| b.1[0].total_cmp(&a.1[0]));
    println!(
        "\nRedis calls by command (INFO commandstats; commands run by scripts counted too): in the window, per change of any room net of idle, idle per second: {}",
        calls
            .iter()
            .map(|(k, v)| format!("{k} {} / {} / {}", f(v[0], 0), f(v[1], 2), f(v[2], 0)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let pairs: f64 = r.node.iter().map(|n| n.subscribed_rooms).sum();
    println!(
        "\nRedis commands by origin (inferred: a room heartbeat is {HEARTBEAT_CMDS} commands and its PEXPIREs, marked by count.lua's TIME, every PEXPIRE but one per SPUBLISH (a commit's) being a heartbeat's; a session refresh {REFRESH_CMDS}, marked by touch.lua's 2 ZADDs; per node: GET (the ready markers), EXISTS, ZRANGEBYSCORE, PING, SET):\n"
    );
    println!(
        "| window | room heartbeats/s | per (node, room) served | commands per heartbeat | session refreshes/s | per member | per-node commands/s | the rest /s | the rest per change | net of the idle rest |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, x) in [("measured", &t.origins[0]), ("idle", &t.origins[1])] {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            f(x.heartbeats_per_s, 0),
            f(x.heartbeats_per_s / pairs.max(1.0), 3),
            f(x.heartbeat_cmds_per_s / x.heartbeats_per_s.max(1e-9), 2),
            f(x.refreshes_per_s, 0),
            f(x.refreshes_per_s / r.conns.max(1) as f64, 3),
            f(x.node_per_s, 0),
            f(x.rest_per_s, 0),
            f(x.rest_per_change, 2),
            f(x.rest_per_change_net, 2)
        );
    }
    println!(
        "\nload generator CPU {} %, other processes {} % (of one core; 2 shared cores run everything)",
        f(r.gen_cpu_pct, 0),
        f(r.other_cpu_pct, 0)
    );
    if o.scenario == "rooms" {
        // Subscribed to every room with members there, and at most live-demo besides (still live, or
        // ended since the last heartbeat).
        let ok = r.node.iter().all(|n| {
            let extra = n.subscribed_rooms - n.rooms_expected as f64;
            (extra == 0.0 || extra == 1.0) && n.subscribed_rooms >= n.rooms_gauge
        });
        let ratio: Vec<String> = r.node.iter().map(|n| f(n.room_msgs / n.room_msgs_own.max(1) as f64, 3)).collect();
        println!(
            "\nsubscriptions follow the rooms: {}; room messages received ÷ own rooms' changes per node: {}",
            if ok {
                "yes, every node is subscribed to the rooms with members there (and to live-demo until the heartbeat after it ended)"
            } else {
                "NO (see the table)"
            },
            ratio.join(", ")
        );
    }
}

/// (busy, total) jiffies of the whole machine, niced processes' time counted as idle (/proc/stat).
fn unniced_jiffies() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> =
        s.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    (at(0) + at(2) + at(5) + at(6) + at(7), v.iter().take(8).sum())
}

/// Waits (at most `max`) until the machine is quiet: under 15 % of one core busy over one second,
/// not counting niced processes (a background fuzzer at nice 19 yields to the run).
fn wait_quiet(max: Duration) {
    let t0 = std::time::Instant::now();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let mut said = std::time::Instant::now() - Duration::from_secs(60);
    loop {
        let (b0, t0j) = unniced_jiffies();
        std::thread::sleep(Duration::from_secs(1));
        let (b1, t1j) = unniced_jiffies();
        let busy = cores * 100.0 * (b1 - b0) as f64 / (t1j - t0j).max(1) as f64;
        if busy <= 15.0 {
            return;
        }
        if t0.elapsed() >= max {
            eprintln!("  (the machine is still busy: {busy:.0} % of a core, niced processes aside; measuring anyway)");
            return;
        }
        if said.elapsed() >= Duration::from_secs(10) {
            said = std::time::Instant::now();
            eprintln!("  (the machine is busy: {busy:.0} % of a core, niced processes aside; waiting)");
        }
    }
}

/// Runs the scenario `o.runs` times and prints each run.
pub(crate) fn main(o: &Opts, bin: Option<&Path>, rt: &tokio::runtime::Runtime, label: &str) -> anyhow::Result<()> {
    let title = title(o);
    eprintln!("{title}");
    let mut all = Vec::new();
    for run_no in 0..o.runs {
        wait_quiet(o.quiet_wait);
        eprintln!("run {}/{}", run_no + 1, o.runs);
        match rt.block_on(run_one(o, bin, run_no)) {
            Ok(r) => all.push(r),
            Err(e) => eprintln!("  run {} failed: {e:#}", run_no + 1),
        }
        if let Some(path) = &o.json {
            let mut v = crate::json_meta(o, &title, label);
            v.insert("runs".into(), serde_json::to_value(&all)?);
            std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for r in &all {
        print(o, r, &title, label);
    }
    if let Some(path) = &o.json {
        println!("written to {}", path.display());
    }
    anyhow::ensure!(!all.is_empty(), "no run finished");
    Ok(())
}
