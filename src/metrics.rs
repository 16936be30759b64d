//! Prometheus metrics (served at `GET /metrics`).
//!
//! Names are part of the operator contract:
//! - `lockstep_connections{transport}`: open connections (gauge);
//! - `lockstep_rooms`: live rooms (gauge);
//! - `lockstep_messages_in_total{type}`, `lockstep_messages_out_total{type}`;
//! - `lockstep_drops_total{reason}`: messages dropped (stale ticks, floods, bad datagrams);
//! - `lockstep_fanout_seconds`: time to hand one message to every member's queue;
//! - `lockstep_errors_total{code}`: errors reported to clients;
//! - `lockstep_redis_up`: 1 while Redis answers, 0 while it does not (scale-out only).

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
                .install_recorder()
                .unwrap_or_else(|e| panic!("cannot install the metrics recorder: {e}"));
            describe();
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
    describe_counter!("lockstep_errors_total", "Errors reported to clients by code");
    describe_gauge!("lockstep_redis_up", "Whether Redis answers (scale-out only)");
}

/// Counts an error reported to a client.
pub(crate) fn error(code: lockstep_protocol::ErrorCode) {
    metrics::counter!("lockstep_errors_total", "code" => code.as_str()).increment(1);
}

/// Counts a dropped message.
pub(crate) fn drop(reason: &'static str) {
    metrics::counter!("lockstep_drops_total", "reason" => reason).increment(1);
}
