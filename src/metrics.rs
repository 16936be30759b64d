//! Prometheus metrics (served at `GET /metrics`).
//!
//! Names are part of the operator contract:
//! - `lockstep_connections{transport}`: open connections (gauge);
//! - `lockstep_rooms`: live rooms (gauge);
//! - `lockstep_messages_in_total{type}`, `lockstep_messages_out_total{type}` (out, also
//!   `timeline_repair`: a datagram-only change repaired on the stream after a `Nack`);
//! - `lockstep_drops_total{reason}`: messages dropped (stale ticks, floods, bad datagrams);
//! - `lockstep_fanout_seconds`: time to hand one message to every member's queue;
//! - `lockstep_errors_total{code}`: errors reported to clients;
//! - `lockstep_redis_up`: 1 while Redis answers, 0 while it does not (scale-out only);
//! - `lockstep_build_info{version, protocol}`: always 1;
//! - `lockstep_ready`: 1 while `GET /api/ready` answers 200;
//! - `lockstep_sessions_live`, `lockstep_session_index`: viewing sessions this node holds, and
//!   its index of them by user, device and room; `lockstep_registry_devices`,
//!   `lockstep_registry_connections`: devices with open connections and those connections (for
//!   revocation); `lockstep_ip_limiter_entries`: addresses the per-IP limits held at their
//!   last cleanup, before it forgot the idle ones (the maintenance tasks update these every few
//!   seconds, the limiter every minute): what must not grow without bound;
//! - `lockstep_redis_data_lost_total`: times Redis was found to have lost its data (scale-out);
//! - `lockstep_redis_subscribed_rooms`: rooms whose channels this node hears (the rooms it
//!   serves); `lockstep_redis_room_messages_total`: room-channel messages it received (both
//!   scale-out: they follow the node's own rooms, not all rooms);
//!   `lockstep_redis_topology_changes_total`: times a Redis Cluster's primaries changed under
//!   this node; `lockstep_redis_reconnects_total`: times it rebuilt its cluster connections;
//!   `lockstep_redis_room_beats_failed_total`: served rooms whose heartbeat script failed (a
//!   slow shard; written again at the next beat, Redis still counted up);
//! - `process_*`: CPU seconds, resident and virtual memory, open and maximum
//!   file descriptors, threads and start time, read from `/proc/self` at
//!   each scrape (Linux).
//!
//! Gauges and the main counters are registered at 0 when the server starts,
//! so a scrape before the first viewer already shows every series.

use std::sync::OnceLock;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle.
pub(crate) fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("lockstep_fanout_seconds".into()),
                    &[1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1],
                )
                .expect("valid buckets")
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("lockstep_member_rtt_seconds".into()),
                    &[1e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0],
                )
                .expect("valid buckets")
                .install_recorder()
                .unwrap_or_else(|e| panic!("cannot install the metrics recorder: {e}"));
            describe();
            register();
            handle
        })
        .clone()
}

fn describe() {
    describe_gauge!("lockstep_connections", "Open connections by transport");
    describe_gauge!("lockstep_rooms", "Live rooms");
    describe_counter!("lockstep_messages_in_total", "Messages received by type");
    describe_counter!("lockstep_messages_out_total", "Messages queued to clients by type");
    describe_counter!("lockstep_drops_total", "Messages dropped by reason");
    describe_histogram!("lockstep_fanout_seconds", Unit::Seconds, "Time to queue one message to every member");
    describe_histogram!(
        "lockstep_sync_drift_seconds",
        Unit::Seconds,
        "Members' measured drift from their room's timeline (absolute, from SyncReports)"
    );
    describe_histogram!(
        "lockstep_member_rtt_seconds",
        Unit::Seconds,
        "Members' round trips as their transports measured them (QUIC RTT, timed WebSocket pings); the lead grows to their p95"
    );
    describe_counter!("lockstep_errors_total", "Errors reported to clients by code");
    describe_gauge!("lockstep_redis_up", "Whether Redis answers (scale-out only)");
    describe_gauge!("lockstep_build_info", "Always 1; the labels say which build and protocol this is");
    describe_gauge!("lockstep_ready", "1 while the node is ready for viewers (GET /api/ready answers 200)");
    describe_gauge!("lockstep_sessions_live", "Viewing sessions this node holds");
    describe_gauge!("lockstep_session_index", "This node's index of sessions by user, device and room");
    describe_gauge!("lockstep_registry_devices", "Devices with open connections on this node");
    describe_gauge!("lockstep_registry_connections", "Connections registered for device revocation");
    describe_gauge!("lockstep_ip_limiter_entries", "Client addresses the per-IP limits remember");
    describe_counter!("lockstep_redis_data_lost_total", "Times Redis was found to have lost its data");
    describe_gauge!("lockstep_redis_subscribed_rooms", "Rooms whose Redis channels this node hears (scale-out)");
    describe_counter!("lockstep_redis_room_messages_total", "Room-channel messages this node received from Redis");
    describe_counter!("lockstep_redis_topology_changes_total", "Times a Redis Cluster's primaries changed");
    describe_counter!("lockstep_redis_reconnects_total", "Times this node rebuilt its Redis Cluster connections");
    describe_counter!("lockstep_redis_room_beats_failed_total", "Served rooms whose Redis heartbeat script failed");
    describe_gauge!("process_cpu_seconds_total", Unit::Seconds, "User and system CPU time of the process");
    describe_gauge!("process_resident_memory_bytes", Unit::Bytes, "Resident memory");
    describe_gauge!("process_virtual_memory_bytes", Unit::Bytes, "Virtual memory");
    describe_gauge!("process_open_fds", "Open file descriptors");
    describe_gauge!("process_max_fds", "Most open file descriptors allowed");
    describe_gauge!("process_threads", "Threads of the process");
    describe_gauge!("process_start_time_seconds", Unit::Seconds, "Start time, Unix seconds");
}

/// The series a scrape shows from the start, at their initial values.
fn register() {
    for transport in ["websocket", "webtransport"] {
        metrics::gauge!("lockstep_connections", "transport" => transport).set(0.0);
    }
    metrics::gauge!("lockstep_rooms").set(0.0);
    for g in [
        "lockstep_sessions_live",
        "lockstep_session_index",
        "lockstep_registry_devices",
        "lockstep_registry_connections",
        "lockstep_ip_limiter_entries",
    ] {
        metrics::gauge!(g).set(0.0);
    }
    metrics::gauge!("lockstep_ready").set(0.0);
    metrics::gauge!(
        "lockstep_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "protocol" => lockstep_protocol::PROTOCOL_VERSION.to_string()
    )
    .set(1.0);
    process::record();
}

/// Renders the metrics for a scrape, process figures read now.
pub(crate) fn render(handle: &PrometheusHandle) -> String {
    process::record();
    handle.render()
}

/// Process figures from `/proc/self` (Linux; elsewhere none are recorded).
mod process {
    use std::sync::OnceLock;

    /// Clock ticks per second of `/proc/self/stat` times (USER_HZ, 100 on Linux).
    const TICKS: f64 = 100.0;
    /// Bytes per page of `/proc/self/stat`'s resident set.
    const PAGE: f64 = 4096.0;

    /// Boot time in Unix seconds (`btime` of `/proc/stat`), read once.
    fn boot_time() -> Option<f64> {
        static BOOT: OnceLock<Option<f64>> = OnceLock::new();
        *BOOT.get_or_init(|| {
            let stat = std::fs::read_to_string("/proc/stat").ok()?;
            stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()
        })
    }

    /// The fields of `/proc/self/stat` after the command name.
    fn stat_fields() -> Option<Vec<String>> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let after = &stat[stat.rfind(')')? + 2..];
        Some(after.split_whitespace().map(str::to_owned).collect())
    }

    fn max_fds() -> Option<f64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }

    /// Records every process figure that can be read.
    pub(super) fn record() {
        if let Some(f) = stat_fields() {
            // Fields from 3 (state) on; utime is field 14, so index 11 here.
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
            if let (Some(utime), Some(stime)) = (num(11), num(12)) {
                metrics::gauge!("process_cpu_seconds_total").set((utime + stime) / TICKS);
            }
            if let Some(threads) = num(17) {
                metrics::gauge!("process_threads").set(threads);
            }
            if let (Some(start), Some(boot)) = (num(19), boot_time()) {
                metrics::gauge!("process_start_time_seconds").set(boot + start / TICKS);
            }
            if let Some(vsize) = num(20) {
                metrics::gauge!("process_virtual_memory_bytes").set(vsize);
            }
            if let Some(rss) = num(21) {
                metrics::gauge!("process_resident_memory_bytes").set(rss * PAGE);
            }
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            metrics::gauge!("process_open_fds").set(fds.count() as f64);
        }
        if let Some(max) = max_fds() {
            metrics::gauge!("process_max_fds").set(max);
        }
    }
}

/// Counts an error reported to a client.
pub(crate) fn error(code: lockstep_protocol::ErrorCode) {
    metrics::counter!("lockstep_errors_total", "code" => code.as_str()).increment(1);
}

/// Counts a dropped message.
pub(crate) fn drop(reason: &'static str) {
    metrics::counter!("lockstep_drops_total", "reason" => reason).increment(1);
}
