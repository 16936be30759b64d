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
    let s = until(&mut ws, live_state).await;
    (ws, w, s)
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
