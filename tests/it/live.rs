//! Live rooms over a real socket (SPEC §2.4): `LiveState` to `LIVE` clients,
//! positions in program time at the live point, a pause then `GoLive`, live
//! reports, and `GoLive` refused in a media room.

use lockstep::config::{ClockArg, LatencyArg};
use lockstep_protocol::{
    AckOutcome, Action, ClientMsg, ClockKind, ErrorCode, Hello, LiveReport, LiveState, PROTOCOL_VERSION, ServerMsg,
    TimelineChanged, Welcome, caps,
};

use crate::common::*;

const WEEK_MS: u64 = 7 * 86_400_000;

async fn join_live(server: &TestServer, event: &str, device: &str) -> (Ws, Welcome, LiveState) {
    let (mut ws, w) = join_caps(server, event, device).await;
    let s = until(&mut ws, live_state).await;
    (ws, w, s)
}

/// Joins with the `LIVE` capability, in a room of either kind.
async fn join_caps(server: &TestServer, event: &str, device: &str) -> (Ws, Welcome) {
    let mut ws = ws_binary(&server.ws_url(event)).await;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        event_id: event.into(),
        device_id: device.into(),
        token: None,
        caps: caps::LIVE | caps::ACKS,
    };
    send(&mut ws, &ClientMsg::Hello(hello)).await;
    let w = welcome(&mut ws).await;
    (ws, w)
}

fn live_state(g: &Got) -> Option<LiveState> {
    match g {
        Got::Msg(ServerMsg::LiveState(s)) => Some(*s),
        _ => None,
    }
}

fn changed(g: &Got) -> Option<TimelineChanged> {
    match g {
        Got::Msg(ServerMsg::TimelineChanged(c)) => Some(c.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn a_live_room_holds_viewers_on_the_live_point_and_go_live_returns_there() {
    let server = TestServer::with(|c| {
        c.room_clock = ClockArg::Live;
        c.live_latency_ms = LatencyArg::Fixed(4_000);
    })
    .await;
    let clock = server.clock.unwrap();
    let (mut host, w, s) = join_live(&server, "ev-live", "host").await;
    assert_eq!((s.clock, s.latency_ms, s.auto_latency, s.at_live), (ClockKind::Live, 4_000, false, true));
    assert_eq!(s.origin_ms % WEEK_MS, 0);
    let now = clock.now_us();
    let program_ms = s.origin_ms + w.timeline.position_us_at(now) / 1000;
    assert!(program_ms.abs_diff(now / 1000 - 4_000) <= 1, "program time ≈ now − latency");
    let (mut viewer, w2, s2) = join_live(&server, "ev-live", "viewer").await;
    assert_eq!(s2, s);
    assert_eq!(w2.timeline, w.timeline, "nothing changed: the live point extrapolates");

    send(&mut host, &command(1, Action::Pause { position_ms: None })).await;
    for ws in [&mut host, &mut viewer] {
        assert!(until(ws, changed).await.timeline.paused);
        assert!(!until(ws, live_state).await.at_live);
    }

    send(&mut host, &command(2, Action::GoLive)).await;
    let c = until(&mut host, changed).await;
    assert_eq!(until(&mut viewer, changed).await, c, "both on the same timeline");
    assert!(!c.timeline.paused);
    let at = c.effective_at_us;
    assert_eq!(s.origin_ms + c.timeline.position_us_at(at) / 1000, at / 1000 - 4_000, "lands on the live point");
    for ws in [&mut host, &mut viewer] {
        let s = until(ws, live_state).await;
        assert!(s.at_live && s.latency_ms == 4_000);
    }
    let ack = until(&mut host, |g| match g {
        Got::Msg(ServerMsg::Ack(a)) if a.request_id == 2 => Some(*a),
        _ => None,
    })
    .await;
    assert_eq!(ack.outcome, AckOutcome::Applied);

    // Live reports reach the room; an absurd one is counted, and the REST state shows the live fields.
    send(&mut viewer, &ClientMsg::LiveReport(LiveReport { live_edge_ms: 0, buffer_ms: 0 })).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, state) = get_json(&server.http_url("/api/live-stream/ev-live/state")).await;
        assert_eq!(status, 200);
        assert_eq!(state["clock"], "live");
        assert_eq!(state["live"]["latencyMs"], 4_000);
        assert_eq!(state["live"]["originMs"], s.origin_ms);
        if state["live"]["ignoredReports"] == 1 {
            assert_eq!(state["live"]["atLive"], true);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the report was not counted: {state}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn go_live_in_a_media_room_is_refused_and_no_live_state_is_sent() {
    let server = TestServer::start().await;
    let mut ws = ws_binary(&server.ws_url("ev-media")).await;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        event_id: "ev-media".into(),
        device_id: "d".into(),
        token: None,
        caps: caps::LIVE,
    };
    send(&mut ws, &ClientMsg::Hello(hello)).await;
    welcome(&mut ws).await;
    send(&mut ws, &ClientMsg::LiveReport(LiveReport { live_edge_ms: 1, buffer_ms: 0 })).await;
    send(&mut ws, &command(3, Action::GoLive)).await;
    let e = until(&mut ws, |g| match g {
        Got::Msg(ServerMsg::LiveState(s)) => panic!("a LiveState in a media room: {s:?}"),
        Got::Msg(ServerMsg::Error(e)) => Some(e.clone()),
        _ => None,
    })
    .await;
    assert_eq!((e.code, e.request_id), (ErrorCode::InvalidArgument.as_u16(), 3));
    assert_eq!(e.message, "not a live room");
    let (_, state) = get_json(&server.http_url("/api/live-stream/ev-media/state")).await;
    assert_eq!(state["clock"], "media");
    assert!(state["live"].is_null());
}

fn host_token(event: &str) -> String {
    crate::accounts::token_with(|c| c.host_of = vec![event.into()])
}

async fn put_clock(server: &TestServer, event: &str, token: Option<&str>, body: serde_json::Value) -> (u16, Value) {
    let (status, _, v) =
        crate::accounts::http(server, "PUT", &format!("/api/live-stream/{event}/clock"), token, Some(body)).await;
    (status, v)
}

use serde_json::{Value, json};

#[tokio::test]
async fn a_host_switches_a_room_to_live_and_back_and_nobody_else_can() {
    let server = TestServer::start().await;
    let clock = server.clock.unwrap();
    let ev = "ev-switch";
    let (mut viewer, w) = join_caps(&server, ev, "viewer").await;
    assert!(w.timeline.paused, "a media room, paused at 0");

    // Refused: no token, another event's host, bad bodies; the room is untouched.
    let live = json!({"clock": "live", "latencyMs": 5000});
    assert_eq!(put_clock(&server, ev, None, live.clone()).await.0, 401);
    let (status, v) = put_clock(&server, ev, Some(&host_token("other")), live.clone()).await;
    assert_eq!((status, v["error"].as_str()), (403, Some("forbidden")));
    for bad in [json!({"clock": "wall"}), json!({"clock": "live", "latencyMs": 10}), json!({"latencyMs": 5000})] {
        let (status, v) = put_clock(&server, ev, Some(&host_token(ev)), bad.clone()).await;
        assert_eq!((status, v["error"].as_str()), (400, Some("invalid_argument")), "{bad}: {v}");
    }
    let (_, state) = get_json(&server.http_url(&format!("/api/live-stream/{ev}/state"))).await;
    assert_eq!((state["clock"].as_str(), state["timeline"]["epoch"].as_u64()), (Some("media"), Some(0)));

    // The host makes it live: the viewer hears the clock and goes to the live point.
    let (status, v) = put_clock(&server, ev, Some(&host_token(ev)), live).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["clock"].as_str(), v["live"]["latencyMs"].as_u64()), (Some("live"), Some(5000)));
    let c = until(&mut viewer, changed).await;
    assert_eq!(c.by, 0);
    let s = until(&mut viewer, |g| live_state(g).filter(|s| s.at_live)).await;
    assert_eq!((s.clock, s.latency_ms, s.auto_latency), (ClockKind::Live, 5000, false));
    let at = c.effective_at_us.max(clock.now_us());
    assert_eq!(s.origin_ms + c.timeline.position_us_at(at) / 1000, at / 1000 - 5_000, "program time = now − latency");
    send(&mut viewer, &command(1, Action::GoLive)).await;
    let ack = until(&mut viewer, |g| match g {
        Got::Msg(ServerMsg::Ack(a)) if a.request_id == 1 => Some(*a),
        _ => None,
    })
    .await;
    assert_eq!(ack.outcome, AckOutcome::Unchanged, "already at live");

    // Auto latency, then back to media: paused at 0, and told so.
    let (status, v) =
        put_clock(&server, ev, Some(&host_token(ev)), json!({"clock": "live", "latencyMs": "auto"})).await;
    assert_eq!((status, v["live"]["autoLatency"].as_bool()), (200, Some(true)), "{v}");
    let (status, v) = put_clock(&server, ev, Some(&host_token(ev)), json!({"clock": "media"})).await;
    assert_eq!((status, v["clock"].as_str()), (200, Some("media")), "{v}");
    let s = until(&mut viewer, |g| live_state(g).filter(|s| s.clock == ClockKind::Media)).await;
    assert!(!s.at_live);
    let c = until(&mut viewer, |g| changed(g).filter(|c| c.timeline.paused)).await;
    assert_eq!(c.timeline.position_ms, 0);
}

#[tokio::test]
async fn a_clock_set_before_anyone_joins_holds_after_the_room_ends_and_across_a_restart() {
    let data = fresh_dir("clock-restart");
    let ev = "ev-premiere";
    let cfg = |c: &mut lockstep::config::Config| {
        c.data_dir = data.clone();
        c.room_grace_ms = 100;
    };
    let server = TestServer::with(cfg).await;
    let body = json!({"clock": "live", "latencyMs": 4000, "dvrWindowMs": 60000});
    let (status, v) = put_clock(&server, ev, Some(&host_token(ev)), body).await;
    assert_eq!(status, 200, "{v}");
    let origin = v["live"]["originMs"].as_u64().unwrap();
    // The empty room ends; the next viewer still finds it live.
    let deadline = tokio::time::Instant::now() + WAIT;
    while get_json(&server.http_url(&format!("/api/live-stream/{ev}/state"))).await.0 != 404 {
        assert!(tokio::time::Instant::now() < deadline, "the empty room never ended");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (mut viewer, _) = join_caps(&server, ev, "early").await;
    let s = until(&mut viewer, live_state).await;
    assert_eq!((s.clock, s.origin_ms, s.latency_ms, s.at_live), (ClockKind::Live, origin, 4000, true));
    // A seek an hour back clamps to the DVR window's start.
    send(&mut viewer, &command(1, Action::Seek { position_ms: 0 })).await;
    let c = until(&mut viewer, changed).await;
    let at = c.effective_at_us;
    assert_eq!(at / 1000 - (origin + c.timeline.position_us_at(at) / 1000), 64_000, "live point − window");
    drop(viewer);
    server.stop().await;

    let server = TestServer::with(cfg).await;
    let (_viewer, _) = join_caps(&server, ev, "late").await;
    let (_, state) = get_json(&server.http_url(&format!("/api/live-stream/{ev}/state"))).await;
    assert_eq!(state["clock"], "live", "{state}");
    assert_eq!(state["live"]["originMs"], origin, "the stored origin");
    assert_eq!(state["live"]["latencyMs"], 4000);
}
