//! What operators and orchestrators see: readiness, the drain at shutdown,
//! the admin port, metrics from the first scrape.

use lockstep_protocol::ServerMsg;

use crate::common::*;

fn admin_url(server: &TestServer, path: &str) -> String {
    format!("http://{}{path}", server.admin.expect("an admin address"))
}

/// The value of the first sample of `series` (a name with its labels as
/// printed, e.g. `lockstep_connections{transport="websocket"}`).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn the_admin_port_takes_metrics_state_and_openapi_off_the_public_port() {
    let server = TestServer::with(|c| c.admin_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    for path in ["/metrics", "/api/openapi.json", "/api/live-stream/room1/state"] {
        assert_eq!(get_json(&server.http_url(path)).await.0, 404, "{path} is still public");
    }
    let (status, doc) = get_json(&admin_url(&server, "/api/openapi.json")).await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/api/ready"].is_object(), "the document describes /api/ready");
    let (_ws, _) = join(&server, "room1", "dev-1").await;
    let (status, state) = get_json(&admin_url(&server, "/api/live-stream/room1/state")).await;
    assert_eq!((status, state["eventId"].as_str()), (200, Some("room1")));
    for url in [server.http_url("/api/ready"), admin_url(&server, "/api/ready")] {
        assert_eq!(get_json(&url).await, (200, serde_json::json!({"status": "ready"})), "{url}");
    }
    let (status, health) = get_json(&server.http_url("/api/health")).await;
    assert_eq!((status, health["status"].as_str(), health["ready"].as_bool()), (200, Some("ok"), Some(true)));
    // The public port's REST routes are where they were.
    assert_eq!(get_json(&server.http_url("/api/certificate")).await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn metrics_show_every_series_from_the_first_scrape() {
    let server = TestServer::start().await;
    let (status, body) = get_json(&server.http_url("/metrics")).await;
    assert_eq!(status, 200);
    let metrics = body.as_str().expect("text");
    let version = env!("CARGO_PKG_VERSION");
    let build = format!("lockstep_build_info{{version=\"{version}\",protocol=\"1\"}}");
    let build_alt = format!("lockstep_build_info{{protocol=\"1\",version=\"{version}\"}}");
    assert!(sample(metrics, &build).or(sample(metrics, &build_alt)) == Some(1.0), "no build info in:\n{metrics}");
    // (Its value is process-wide, and tests run several servers in one process.)
    assert!(sample(metrics, "lockstep_ready").is_some(), "{metrics}");
    for series in [
        "lockstep_connections{transport=\"websocket\"}",
        "lockstep_connections{transport=\"webtransport\"}",
        "lockstep_rooms",
    ] {
        assert!(sample(metrics, series).is_some(), "{series} missing from:\n{metrics}");
    }
    let rss = sample(metrics, "process_resident_memory_bytes").expect("resident memory");
    assert!(rss > 1e6, "a server uses more than a megabyte: {rss}");
    assert!(sample(metrics, "process_open_fds").expect("open fds") >= 3.0);
    assert!(sample(metrics, "process_max_fds").expect("max fds") >= 64.0);
    assert!(sample(metrics, "process_cpu_seconds_total").is_some());
    let start = sample(metrics, "process_start_time_seconds").expect("start time");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(start > now - 24.0 * 3600.0 && start <= now + 1.0, "start {start}, now {now}");
    server.stop().await;
}

#[tokio::test]
async fn a_draining_node_is_not_ready_but_serves_its_viewers_until_they_leave() {
    let mut server = TestServer::with(|c| {
        c.drain_ms = 600_000;
        c.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let (mut ws, _) = join(&server, "drain-room", "dev-1").await;
    assert_eq!(get_json(&server.http_url("/api/ready")).await.0, 200);
    server.signal_stop();
    // Not ready from the signal on, on both ports; still alive.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = get_json(&admin_url(&server, "/api/ready")).await;
        if status == 503 {
            assert_eq!(body, serde_json::json!({"status": "draining"}));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never went unready");
        tokio::task::yield_now().await;
    }
    assert_eq!(get_json(&server.http_url("/api/ready")).await.0, 503, "the public port serves during the drain");
    let (status, health) = get_json(&server.http_url("/api/health")).await;
    assert_eq!((status, health["status"].as_str(), health["ready"].as_bool()), (200, Some("draining"), Some(false)));
    // The viewer is still served: ticks keep coming, nobody closed it.
    for _ in 0..2 {
        until(&mut ws, |g| matches!(g, Got::Msg(ServerMsg::Tick(_))).then_some(())).await;
    }
    // When the last viewer leaves, the drain ends and the server stops.
    drop(ws);
    server.stop().await;
}

#[tokio::test]
async fn after_the_drain_time_sessions_are_closed_with_shutting_down() {
    let mut server = TestServer::with(|c| c.drain_ms = 300).await;
    let (mut ws, _) = join(&server, "drain-room-2", "dev-1").await;
    server.signal_stop();
    assert_eq!(closed(&mut ws).await, Some(lockstep_protocol::ErrorCode::ShuttingDown as u16));
    server.stop().await;
}
