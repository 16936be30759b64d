//! The WebSocket transport, the JSON dialect, REST and bad input.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use lockstep::room::BufferingPolicy;
use lockstep_protocol::{
    Action, ChangeReason, ClientMsg, ErrorCode, Hello, Ping, React, Role, ServerMsg, Suspend, SyncReport,
    TimelineChanged, encode_client,
};
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::common::*;

fn changed(g: &Got) -> Option<TimelineChanged> {
    match g {
        Got::Msg(ServerMsg::TimelineChanged(c)) => Some(c.clone()),
        _ => None,
    }
}

fn count(g: &Got) -> Option<u32> {
    match g {
        Got::Msg(ServerMsg::ViewerCount(c)) => Some(c.count),
        _ => None,
    }
}

#[tokio::test]
async fn join_assigns_host_then_viewers_and_counts_update_live() {
    let server = TestServer::start().await;
    let (mut host, w) = join(&server, "ev-join", "dev-host").await;
    assert_eq!((w.role, w.viewers, w.member_id), (Role::Host, 1, 1));
    assert!(w.timeline.paused);
    assert!(w.limits.max_frame >= 1024 && w.limits.tick_interval_ms == 250);
    let (mut viewer, w2) = join(&server, "ev-join", "dev-viewer").await;
    assert_eq!((w2.role, w2.viewers), (Role::Viewer, 2));
    assert_eq!(until(&mut host, |g| count(g).filter(|&c| c == 2)).await, 2);
    drop(viewer.close(None).await);
    assert_eq!(until(&mut host, |g| count(g).filter(|&c| c == 1)).await, 1);
}

#[tokio::test]
async fn host_seek_reaches_every_viewer_and_late_joiner_gets_the_timeline() {
    let server = TestServer::start().await;
    let (mut host, _) = join(&server, "ev-seek", "h").await;
    let mut viewers = Vec::new();
    for i in 0..5 {
        viewers.push(join(&server, "ev-seek", &format!("v{i}")).await.0);
    }
    send(&mut host, &command(11, Action::Seek { position_ms: 42_000 })).await;
    for v in &mut viewers {
        let c = until(v, changed).await;
        assert_eq!((c.reason, c.by, c.timeline.position_ms), (ChangeReason::Seek, 1, 42_000));
    }
    send(&mut host, &command(12, Action::Play { position_ms: None })).await;
    until(&mut viewers[0], |g| changed(g).filter(|c| c.reason == ChangeReason::Play)).await;
    tokio::time::sleep(Duration::from_millis(150)).await; // let the play take effect (lead 100 ms)
    let (_late, w) = join(&server, "ev-seek", "late").await;
    assert!(!w.timeline.paused, "late joiner sees playback running");
    let pos = w.timeline.position_us_at(w.server_time_us);
    assert!((42_000_000..43_000_000).contains(&pos), "late joiner lands on the room position: {pos}");
}

#[tokio::test]
async fn viewer_commands_are_refused_in_a_host_only_room() {
    let server = TestServer::start().await;
    let (_host, _) = join(&server, "ev-perm", "h").await;
    let (mut viewer, _) = join(&server, "ev-perm", "v").await;
    send(&mut viewer, &command(5, Action::Seek { position_ms: 1_000 })).await;
    let e = until(&mut viewer, |g| match g {
        Got::Msg(ServerMsg::Error(e)) => Some(e.clone()),
        _ => None,
    })
    .await;
    assert_eq!((e.code, e.request_id), (ErrorCode::Forbidden.as_u16(), 5));
    let (status, state) = get_json(&server.http_url("/api/live-stream/ev-perm/state")).await;
    assert_eq!(status, 200);
    assert_eq!(state["timeline"]["positionMs"], 0);
    assert_eq!(state["timeline"]["epoch"], 0);
    assert_eq!(state["viewers"], 2);
    assert_eq!(state["members"]["host"], serde_json::json!([1]));
    assert_eq!(state["members"]["viewer"], serde_json::json!([2]));
}

#[tokio::test]
async fn everyone_policy_lets_viewers_command() {
    let server = TestServer::with(|c| c.control_policy = lockstep::config::ControlPolicyArg::Everyone).await;
    let (mut host, _) = join(&server, "ev-open", "h").await;
    let (mut viewer, _) = join(&server, "ev-open", "v").await;
    send(&mut viewer, &command(1, Action::SetRate { rate_milli: 1250 })).await;
    let c = until(&mut host, changed).await;
    assert_eq!((c.reason, c.by, c.timeline.rate_milli), (ChangeReason::Rate, 2, 1250));
}

#[tokio::test]
async fn scheduled_pause_lands_on_the_same_position_for_all_viewers() {
    let server = TestServer::start().await;
    let (mut host, _) = join(&server, "ev-pause", "h").await;
    let mut viewers = Vec::new();
    for i in 0..8 {
        let (ws, w) = join(&server, "ev-pause", &format!("v{i}")).await;
        viewers.push((ws, w, Instant::now()));
    }
    send(&mut host, &command(1, Action::Play { position_ms: Some(10_000) })).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    send(&mut host, &command(2, Action::Pause { position_ms: None })).await;
    let mut seen = Vec::new();
    for (ws, w, welcomed_at) in &mut viewers {
        let c = until(ws, |g| changed(g).filter(|c| c.reason == ChangeReason::Pause)).await;
        // On loopback the Welcome's server time plus local elapsed time is the
        // server's clock to well under a millisecond: the change must arrive
        // before it takes effect.
        let server_now_est = w.server_time_us + welcomed_at.elapsed().as_micros() as u64;
        assert!(c.effective_at_us > server_now_est, "pause arrived {} µs late", server_now_est - c.effective_at_us);
        seen.push(c.timeline);
    }
    assert!(seen.windows(2).all(|p| p[0] == p[1]), "every viewer got the same pause: {seen:?}");
    let t = seen[0];
    assert!(t.paused && (10_300..10_700).contains(&t.position_ms), "{t:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, state) = get_json(&server.http_url("/api/live-stream/ev-pause/state")).await;
    assert_eq!(state["timeline"]["positionMs"], t.position_ms);
    assert_eq!(state["timeline"]["paused"], true);
}

#[tokio::test]
async fn counts_are_coalesced_on_a_join_storm_of_1000() {
    let server = TestServer::start().await;
    const N: usize = 1_000;
    let mut clients = Vec::with_capacity(N);
    for i in 0..N {
        let mut ws = ws_binary(&server.ws_url("ev-storm")).await;
        send(&mut ws, &hello("ev-storm", &format!("d{i}"))).await;
        clients.push(ws);
    }
    // Every client reads until it sees the final count; count messages per client.
    let mut total = 0usize;
    let mut handles = Vec::new();
    for mut ws in clients {
        handles.push(tokio::spawn(async move {
            let mut n = 0usize;
            loop {
                match next(&mut ws).await {
                    Got::Msg(ServerMsg::ViewerCount(c)) => {
                        n += 1;
                        if c.count as usize == N {
                            return (n, ws);
                        }
                    }
                    Got::Msg(ServerMsg::Welcome(w)) if w.viewers as usize == N => return (n, ws),
                    Got::Closed(c) => panic!("closed {c:?}"),
                    _ => {}
                }
            }
        }));
    }
    let mut keep = Vec::new();
    for h in handles {
        let (n, ws) = h.await.unwrap();
        total += n;
        keep.push(ws);
    }
    // The seed's O(N²) storm would be ~N²/2 = 500,000 messages; coalescing
    // makes it a small multiple of N.
    assert!(total <= 10 * N, "{total} count messages for {N} joins");
    eprintln!("join storm: {total} count messages for {N} joins ({:.2} per viewer)", total as f64 / N as f64);
}

#[tokio::test]
async fn buffering_wait_pauses_the_room_and_times_out() {
    let server = TestServer::with(|c| {
        c.buffering_policy = BufferingPolicy::Wait;
        c.buffering_wait_max_ms = 600;
    })
    .await;
    let (mut host, _) = join(&server, "ev-buf", "h").await;
    let (mut viewer, _) = join(&server, "ev-buf", "v").await;
    send(&mut host, &command(1, Action::Play { position_ms: None })).await;
    until(&mut viewer, |g| changed(g).filter(|c| c.reason == ChangeReason::Play)).await;
    send(&mut viewer, &report(false)).await;
    send(&mut viewer, &report(true)).await;
    let wait = until(&mut host, |g| changed(g).filter(|c| c.reason == ChangeReason::BufferingWait)).await;
    assert!(wait.timeline.paused);
    assert_eq!(wait.by, 2);
    let resume = until(&mut host, |g| changed(g).filter(|c| c.reason == ChangeReason::Resume)).await;
    assert!(!resume.timeline.paused);
    assert_eq!(resume.timeline.position_ms, wait.timeline.position_ms, "resumes where it paused");
    // The wait started ~lead after the stall report and ended at its deadline.
    let waited = resume.effective_at_us - wait.effective_at_us;
    assert!((550_000..900_000).contains(&waited), "waited {waited} µs");

    // A recovery before the deadline resumes at once (the stalled member is
    // in cooldown after a timeout, so another member stalls).
    let (mut third, _) = join(&server, "ev-buf", "t").await;
    send(&mut third, &report(false)).await;
    send(&mut third, &report(true)).await;
    until(&mut host, |g| changed(g).filter(|c| c.reason == ChangeReason::BufferingWait)).await;
    send(&mut third, &report(false)).await;
    let r = until(&mut host, |g| changed(g).filter(|c| c.reason == ChangeReason::Resume)).await;
    assert_eq!(r.by, 0);
}

#[tokio::test]
async fn json_dialect_interoperates_with_binary_clients() {
    let server = TestServer::start().await;
    // A legacy JSON client joins first, so it hosts.
    let mut legacy = ws_json(&format!("{}?deviceId=legacy-1", server.ws_url("ev-json"))).await;
    let hello_sync = until(&mut legacy, |g| match g {
        Got::Text(v) if v["type"] == "playbackSync" => Some(v.clone()),
        _ => None,
    })
    .await;
    assert_eq!((hello_sync["position"].as_f64(), hello_sync["eventId"].as_str()), (Some(0.0), Some("ev-json")));
    let (mut bin, w) = join(&server, "ev-json", "bin").await;
    assert_eq!(w.role, Role::Viewer);
    let mut legacy2 = ws_json(&server.ws_url("ev-json")).await;
    until(&mut legacy2, |g| matches!(g, Got::Text(v) if v["type"] == "playbackSync").then_some(())).await;

    let sync = r#"{"type":"playbackSync","position":75.5,"eventId":"ev-json","deviceId":"legacy-1","sentAt":123}"#;
    legacy.send(Message::Text(sync.into())).await.unwrap();
    let c = until(&mut bin, changed).await;
    assert_eq!((c.reason, c.timeline.position_ms, c.by), (ChangeReason::Seek, 75_500, 1));
    let echoed = until(&mut legacy2, |g| match g {
        Got::Text(v) if v["type"] == "playbackSync" && v["epoch"] == 1 => Some(v.clone()),
        _ => None,
    })
    .await;
    assert_eq!(echoed["position"], 75.5);
    assert_eq!(echoed["sentAt"], 123, "extra fields pass through");
    let n = until(&mut legacy2, |g| match g {
        Got::Text(v) if v["type"] == "viewerCount" => v["count"].as_u64(),
        _ => None,
    })
    .await;
    assert!(n >= 2);

    // A binary seek reaches JSON clients, and the sender is not echoed.
    drop(bin.close(None).await);
    let (mut bin2, _) = join(&server, "ev-json", "bin2").await;
    send(&mut bin2, &command(3, Action::Seek { position_ms: 1_000 })).await;
    assert_eq!(error_code(&mut bin2).await, ErrorCode::Forbidden.as_u16(), "bin2 is a viewer");
    legacy.send(Message::Text(r#"{"type":"playbackSync","position":2}"#.into())).await.unwrap();
    let got = until(&mut legacy2, |g| match g {
        Got::Text(v) if v["type"] == "playbackSync" && v["position"] == 2.0 => Some(v.clone()),
        _ => None,
    })
    .await;
    assert_eq!(got["paused"], true);
    // The JSON host does not hear its own change back.
    legacy.send(Message::Ping(Bytes::new())).await.unwrap();
    let own = tokio::time::timeout(Duration::from_millis(300), async {
        until(&mut legacy, |g| matches!(g, Got::Text(v) if v["type"] == "playbackSync").then_some(())).await
    })
    .await;
    assert!(own.is_err(), "no echo to the sender");
}

#[tokio::test]
async fn bad_input_gets_errors_and_closes_with_documented_codes() {
    let server = TestServer::with(|c| c.hello_timeout_ms = 300).await;
    let url = server.ws_url("ev-bad");

    // Malformed, unknown tag, command before Hello, text on a binary connection:
    // errors, and the connection stays usable.
    let mut ws = ws_binary(&url).await;
    ws.send(Message::Binary(Bytes::from_static(&[2, 0xff]))).await.unwrap();
    assert_eq!(error_code(&mut ws).await, ErrorCode::Malformed.as_u16());
    ws.send(Message::Binary(Bytes::from_static(&[77]))).await.unwrap();
    assert_eq!(error_code(&mut ws).await, ErrorCode::UnknownMessage.as_u16());
    send(&mut ws, &command(9, Action::Play { position_ms: None })).await;
    assert_eq!(error_code(&mut ws).await, ErrorCode::NotJoined.as_u16());
    ws.send(Message::Text("{}".into())).await.unwrap();
    assert_eq!(error_code(&mut ws).await, ErrorCode::UnexpectedMessage.as_u16());
    send(&mut ws, &hello("ev-bad", "d")).await;
    welcome(&mut ws).await;
    send(&mut ws, &hello("ev-bad", "d")).await;
    assert_eq!(error_code(&mut ws).await, ErrorCode::AlreadyJoined.as_u16());
    send(&mut ws, &command(10, Action::SetRate { rate_milli: 9_000 })).await;
    assert_eq!(error_code(&mut ws).await, ErrorCode::InvalidArgument.as_u16());

    // Oversized frame: error and close.
    let mut big = ws_binary(&url).await;
    big.send(Message::Binary(Bytes::from(vec![1u8; 9_000]))).await.unwrap();
    assert_eq!(error_code(&mut big).await, ErrorCode::FrameTooLarge.as_u16());
    assert_eq!(closed(&mut big).await, Some(ErrorCode::FrameTooLarge.as_u16()));

    // Wrong protocol version: error and close.
    let mut old = ws_binary(&url).await;
    let bad_version =
        ClientMsg::Hello(Hello { version: 99, event_id: "ev-bad".into(), device_id: "x".into(), token: None, caps: 0 });
    send(&mut old, &bad_version).await;
    assert_eq!(error_code(&mut old).await, ErrorCode::VersionMismatch.as_u16());
    assert_eq!(closed(&mut old).await, Some(ErrorCode::VersionMismatch.as_u16()));

    // Hello for another event than the URL's.
    let mut other = ws_binary(&url).await;
    send(&mut other, &hello("not-this-one", "x")).await;
    assert_eq!(closed(&mut other).await, Some(ErrorCode::EventMismatch.as_u16()));

    // No Hello in time.
    let mut silent = ws_binary(&url).await;
    assert_eq!(closed(&mut silent).await, Some(ErrorCode::HelloTimeout.as_u16()));

    // Too many bad frames.
    let mut junk = ws_binary(&url).await;
    for _ in 0..10 {
        junk.send(Message::Binary(Bytes::from_static(&[0, 1, 2]))).await.unwrap();
    }
    assert_eq!(closed(&mut junk).await, Some(ErrorCode::TooManyErrors.as_u16()));

    // JSON dialect: invalid JSON and wrong types.
    let mut legacy = ws_json(&url).await;
    legacy.send(Message::Text("{not json".into())).await.unwrap();
    let code = until(&mut legacy, |g| match g {
        Got::Text(v) if v["type"] == "error" => v["code"].as_u64(),
        _ => None,
    })
    .await;
    assert_eq!(code, u64::from(ErrorCode::InvalidJson.as_u16()));
    legacy.send(Message::Text(r#"{"type":"chat","text":"hi"}"#.into())).await.unwrap();
    let code = until(&mut legacy, |g| match g {
        Got::Text(v) if v["type"] == "error" => v["code"].as_u64(),
        _ => None,
    })
    .await;
    assert_eq!(code, u64::from(ErrorCode::UnexpectedMessage.as_u16()));
    legacy.send(Message::Binary(Bytes::from_static(&[1, 2]))).await.unwrap();
    let code = until(&mut legacy, |g| match g {
        Got::Text(v) if v["type"] == "error" => v["code"].as_u64(),
        _ => None,
    })
    .await;
    assert_eq!(code, u64::from(ErrorCode::UnexpectedMessage.as_u16()));

    // Bad input on one connection never disturbed another: the first one still works.
    send(&mut ws, &ClientMsg::Ping(Ping { client_time: 1 })).await;
    until(&mut ws, |g| matches!(g, Got::Msg(ServerMsg::Pong(_))).then_some(())).await;
}

#[tokio::test]
async fn a_flooder_is_limited_then_closed_and_others_are_unaffected() {
    let server = TestServer::with(|c| {
        c.msgs_per_sec = 20;
        c.msg_burst = 20;
        c.control_policy = lockstep::config::ControlPolicyArg::Everyone;
    })
    .await;
    let (mut host, _) = join(&server, "ev-flood", "h").await;
    let (mut calm, _) = join(&server, "ev-flood", "calm").await;
    let (mut flooder, _) = join(&server, "ev-flood", "flood").await;
    let ping = Bytes::from(encode_client(&ClientMsg::Ping(Ping { client_time: 0 })));
    let flood = tokio::spawn(async move {
        // Flood with pings until the server closes us.
        let started = Instant::now();
        let mut limited = false;
        let mut sending = true;
        loop {
            // Once the server has closed, a send fails: stop sending, but keep
            // reading, since the Error and the close frame are still queued.
            for _ in 0..50 {
                if sending && flooder.send(Message::Binary(ping.clone())).await.is_err() {
                    sending = false;
                }
            }
            let wait = if sending { Duration::from_millis(5) } else { WAIT };
            loop {
                match tokio::time::timeout(wait, futures_util::StreamExt::next(&mut flooder)).await {
                    Ok(Some(Ok(Message::Binary(b)))) => {
                        if let Ok(ServerMsg::Error(e)) = lockstep_protocol::decode_server(&b) {
                            limited |= e.code == ErrorCode::RateLimited.as_u16();
                        }
                    }
                    Ok(Some(Ok(Message::Close(f)))) => {
                        return (limited, f.map(|f| u16::from(f.code)), started.elapsed());
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(_)) | None) => return (limited, None, started.elapsed()),
                    Err(_) => break,
                }
            }
            assert!(started.elapsed() < Duration::from_secs(20), "flooder never closed");
        }
    });
    // Meanwhile the room keeps working for everyone else, promptly.
    for i in 0..5u64 {
        let sent = Instant::now();
        send(&mut host, &command(i as u32, Action::Seek { position_ms: 1_000 * (i + 1) })).await;
        let c = until(&mut calm, |g| changed(g).filter(|c| c.timeline.position_ms == 1_000 * (i + 1))).await;
        assert_eq!(c.reason, ChangeReason::Seek);
        assert!(sent.elapsed() < Duration::from_millis(500), "calm viewer delayed {:?}", sent.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (limited, code, after) = flood.await.unwrap();
    assert!(limited, "the flooder was told it is rate limited");
    assert_eq!(code, Some(ErrorCode::Flood.as_u16()), "closed after {after:?}");
}

#[tokio::test]
async fn ping_pong_stamps_server_times() {
    let server = TestServer::start().await;
    let (mut ws, w) = join(&server, "ev-ping", "d").await;
    send(&mut ws, &ClientMsg::Ping(Ping { client_time: 987_654 })).await;
    let p = until(&mut ws, |g| match g {
        Got::Msg(ServerMsg::Pong(p)) => Some(*p),
        _ => None,
    })
    .await;
    assert_eq!(p.client_time, 987_654);
    assert!(p.server_recv_us >= w.server_time_us && p.server_send_us >= p.server_recv_us);
    assert!(p.server_send_us - p.server_recv_us < 1_000_000);
}

/// Reads `a` and `b` (so their pings are answered) until the room's state
/// shows `measured` round trips; returns its `reach`.
async fn until_measured(server: &TestServer, event: &str, a: &mut Ws, b: &mut Ws, measured: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Whichever speaks first (a ping is answered as soon as it is read).
        tokio::select! {
            _ = next(a) => {}
            _ = next(b) => {}
        }
        let (_, state) = get_json(&server.http_url(&format!("/api/live-stream/{event}/state"))).await;
        if state["reach"]["measured"].as_u64() == Some(measured) {
            return state["reach"].clone();
        }
        assert!(Instant::now() < deadline, "no round trips measured: {state}");
    }
}

#[tokio::test]
async fn the_lead_grows_for_a_far_viewer_so_the_play_reaches_it_in_time() {
    let server = TestServer::start().await;
    let clock = server.clock.unwrap();
    // The viewer 150 ms away (each way): a round trip of 300 ms, beyond the 100 ms lead.
    let far = delay_proxy(server.http, Duration::from_millis(150)).await;
    let (mut host, _) = join(&server, "ev-far", "h").await;
    let mut viewer = ws_binary(&format!("ws://{far}/api/live-stream/ev-far")).await;
    send(&mut viewer, &hello("ev-far", "v")).await;
    welcome(&mut viewer).await;
    // The server times its first WebSocket pings a second after the connection opens.
    let reach = until_measured(&server, "ev-far", &mut host, &mut viewer, 2).await;
    let rtt = reach["rttP95Ms"].as_f64().unwrap();
    assert!((300.0..500.0).contains(&rtt), "the far viewer's round trip: {reach}");
    assert_eq!(reach["leadMs"].as_f64().unwrap(), rtt, "the lead is the round trip: {reach}");
    // The host plays: the change reaches the far viewer before it takes effect.
    send(&mut host, &command(1, Action::Play { position_ms: None })).await;
    let c = until(&mut viewer, changed).await;
    let now = clock.now_us();
    assert!(c.effective_at_us > now, "the play reached the far viewer {} µs late", now - c.effective_at_us);
    assert!(c.effective_at_us - now >= 100_000, "with time to spare: {} µs", c.effective_at_us - now);
}

#[tokio::test]
async fn a_round_trip_measured_before_the_join_counts_from_the_join_on() {
    let server = TestServer::start().await;
    let mut ws = ws_binary(&server.ws_url("ev-early")).await;
    // The server's first ping comes a second after the connection opens; reading answers it.
    let _ = tokio::time::timeout(Duration::from_millis(1_500), next(&mut ws)).await;
    send(&mut ws, &hello("ev-early", "d")).await;
    welcome(&mut ws).await;
    // Measured now, not at the next ping (15 s on).
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (_, state) = get_json(&server.http_url("/api/live-stream/ev-early/state")).await;
        if state["reach"]["measured"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the early round trip was lost: {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn nearby_members_keep_the_configured_lead() {
    let server = TestServer::with(|c| c.lead_max_ms = 2_000).await;
    let (mut host, _) = join(&server, "ev-near", "h").await;
    let (mut viewer, _) = join(&server, "ev-near", "v").await;
    let reach = until_measured(&server, "ev-near", &mut host, &mut viewer, 2).await;
    assert!(reach["rttP95Ms"].as_f64().unwrap() < 50.0, "loopback: {reach}");
    assert_eq!(reach["leadMs"].as_f64().unwrap(), 100.0);
    let (_, metrics) = get_json(&server.http_url("/metrics")).await;
    let text = metrics.as_str().unwrap_or_default();
    assert!(text.contains("lockstep_member_rtt_seconds_bucket{le=\"0.005\"}"), "{text}");
    send(&mut host, &command(1, Action::Play { position_ms: None })).await;
    let c = until(&mut viewer, changed).await;
    let lead = c.effective_at_us - server.clock.unwrap().now_us();
    assert!((50_000..=100_000).contains(&lead), "the configured 100 ms: {lead} µs left");
}

#[tokio::test]
async fn health_state_404_and_empty_rooms_are_dropped() {
    let server = TestServer::with(|c| c.room_grace_ms = 100).await;
    let (status, health) = get_json(&server.http_url("/api/health")).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (status, body) = get_json(&server.http_url("/api/live-stream/nobody/state")).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, _) = get_json(&server.http_url("/api/live-stream/%20bad/state")).await;
    assert_eq!(status, 400);
    let (mut ws, _) = join(&server, "ev-gone", "d").await;
    assert_eq!(get_json(&server.http_url("/api/live-stream/ev-gone/state")).await.0, 200);
    ws.close(None).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        if get_json(&server.http_url("/api/live-stream/ev-gone/state")).await.0 == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "empty room never dropped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, metrics) = get_json(&server.http_url("/metrics")).await;
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap_or_default();
    assert!(text.contains("lockstep_messages_out_total"), "{text}");
}

#[tokio::test]
async fn shutdown_closes_sessions_with_going_away_code() {
    let server = TestServer::start().await;
    let (mut ws, _) = join(&server, "ev-stop", "d").await;
    let mut legacy = ws_json(&server.ws_url("ev-stop")).await;
    server.stop().await;
    assert_eq!(closed(&mut ws).await, Some(ErrorCode::ShuttingDown.as_u16()));
    assert_eq!(closed(&mut legacy).await, Some(ErrorCode::ShuttingDown.as_u16()));
}

/// Sends one raw HTTP/1.1 request head and returns the status and the body.
async fn raw_http(server: &TestServer, head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.http).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    // Read the head, then as many body bytes as it announces (the
    // connection stays open).
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0usize);
            if body.len() >= len {
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                return (status, body.to_owned());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "the server closed before answering: {text}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The WebSocket handshake is the server's own: every malformed upgrade gets
/// its status and a JSON error naming what is wrong, and a viewer already in
/// the room notices nothing.
#[tokio::test]
async fn malformed_upgrades_get_clear_errors_and_harm_no_one() {
    let server = TestServer::start().await;
    let (mut viewer, _) = join(&server, "hs", "viewer").await;
    let path = "/api/live-stream/hs";
    let host = server.http;
    let ok = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let cases = [
        (format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"), 426, "upgrade_required"),
        (
            format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: x\r\n\r\n"
            ),
            400,
            "bad_websocket_version",
        ),
        (
            format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ),
            400,
            "bad_websocket_key",
        ),
        (format!("GET /api/live-stream/bad%20id HTTP/1.1\r\nHost: {host}\r\n{ok}\r\n"), 400, "invalid_event_id"),
    ];
    for (head, status, code) in cases {
        let (got, body) = raw_http(&server, &head).await;
        assert_eq!(got, status, "{head:?}: {body}");
        assert!(body.contains(code), "{head:?}: {body}");
    }
    // A well-formed upgrade is answered 101 with the accept key of RFC 6455's example.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.http).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{ok}\r\n").as_bytes()).await.unwrap();
    let mut head = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut head)).await.unwrap().unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
    drop(s);
    // The viewer in the room still gets answers.
    send(&mut viewer, &ClientMsg::Ping(Ping { client_time: 7 })).await;
    until(&mut viewer, |g| match g {
        Got::Msg(ServerMsg::Pong(p)) if p.client_time == 7 => Some(()),
        _ => None,
    })
    .await;
    server.stop().await;
}

/// Issue 15 (sync quality): members' `SyncReport`s make the room's `sync` in
/// the state API and the drift histogram in /metrics; before `Hello` one is
/// refused like a `Report`; a malformed one gets 4000 and harms no one.
#[tokio::test]
async fn sync_reports_make_the_rooms_sync_quality() {
    let server = TestServer::start().await;
    let ev = "ev-sync-quality";
    let (mut host, w) = join(&server, ev, "host").await;
    let (mut viewer, _) = join(&server, ev, "viewer").await;
    let state_url = server.http_url(&format!("/api/live-stream/{ev}/state"));
    let (_, state) = get_json(&state_url).await;
    assert_eq!(state["sync"]["reporting"], 0, "{state}");
    assert!(state["sync"]["p50Ms"].is_null(), "{state}");

    let epoch = w.timeline.epoch;
    send(&mut host, &ClientMsg::SyncReport(SyncReport { epoch, drift_us: 2_000 })).await;
    send(&mut viewer, &ClientMsg::SyncReport(SyncReport { epoch, drift_us: -55_000 })).await;
    let deadline = Instant::now() + WAIT;
    let state = loop {
        let (status, state) = get_json(&state_url).await;
        assert_eq!(status, 200);
        if state["sync"]["reporting"] == 2 {
            break state;
        }
        assert!(Instant::now() < deadline, "the reports never counted: {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let sync = &state["sync"];
    assert_eq!(sync["p50Ms"], 2.0, "{sync}");
    assert_eq!(sync["maxMs"], 55.0, "{sync}");
    assert_eq!(sync["outOfSync"], 1, "{sync}");
    assert_eq!(sync["outOfSyncMs"], 40.0, "{sync}");

    // Malformed (the drift missing): 4000 to the sender alone, which stays.
    viewer.send(Message::Binary(Bytes::from_static(&[6, 0]))).await.unwrap();
    assert_eq!(error_code(&mut viewer).await, ErrorCode::Malformed.as_u16());
    send(&mut viewer, &ClientMsg::Ping(Ping { client_time: 7 })).await;
    until(&mut viewer, |g| matches!(g, Got::Msg(ServerMsg::Pong(p)) if p.client_time == 7).then_some(())).await;

    // Before Hello: refused like a Report.
    let mut early = ws_binary(&server.ws_url(ev)).await;
    send(&mut early, &ClientMsg::SyncReport(SyncReport { epoch: 0, drift_us: 0 })).await;
    assert_eq!(error_code(&mut early).await, ErrorCode::NotJoined.as_u16());

    let (_, metrics) = get_json(&server.http_url("/metrics")).await;
    let text = metrics.as_str().unwrap_or_default();
    assert!(text.contains("lockstep_sync_drift_seconds"), "{text}");
}

/// Issue 15 (waiting done right): a suspension whose reason is in
/// `--wait-reasons` pauses the room for everyone and `Resume` resumes it; the
/// state lists who is suspended and why; an unknown reason gets 4009 and
/// changes nothing; before `Hello` it gets 4005.
#[tokio::test]
async fn suspensions_make_the_room_wait_by_the_servers_policy() {
    let server = TestServer::with(|c| {
        c.wait_reasons = "buffering,interstitial".parse().unwrap();
    })
    .await;
    let ev = "ev-suspend";
    let (mut host, _) = join(&server, ev, "host").await;
    let (mut viewer, _) = join(&server, ev, "viewer").await;
    send(&mut host, &command(1, Action::Play { position_ms: Some(0) })).await;
    until(&mut viewer, |g| changed(g).filter(|c| !c.timeline.paused).map(|_| ())).await;
    // It has played smoothly once: its stalls may make the room wait.
    send(&mut viewer, &report(false)).await;

    // An unknown reason: 4009 to the sender alone, nothing else happens.
    send(&mut viewer, &ClientMsg::Suspend(Suspend { reason: "napping".into() })).await;
    assert_eq!(error_code(&mut viewer).await, ErrorCode::InvalidArgument.as_u16());

    send(&mut viewer, &ClientMsg::Suspend(Suspend { reason: "interstitial".into() })).await;
    let wait = until(&mut host, |g| changed(g).filter(|c| c.reason == ChangeReason::BufferingWait)).await;
    assert!(wait.timeline.paused);
    let (_, state) = get_json(&server.http_url(&format!("/api/live-stream/{ev}/state"))).await;
    assert_eq!(state["bufferingWait"], true, "{state}");
    assert_eq!(state["suspended"][0]["reason"], "interstitial", "{state}");
    assert!(state["suspended"][0]["name"].is_string(), "{state}");
    assert_eq!(state["suspended"].as_array().unwrap().len(), 1, "{state}");

    send(&mut viewer, &ClientMsg::Resume).await;
    let resumed = until(&mut host, |g| changed(g).filter(|c| c.reason == ChangeReason::Resume)).await;
    assert!(!resumed.timeline.paused);
    let (_, state) = get_json(&server.http_url(&format!("/api/live-stream/{ev}/state"))).await;
    assert_eq!(state["suspended"], serde_json::json!([]), "{state}");

    let mut early = ws_binary(&server.ws_url(ev)).await;
    send(&mut early, &ClientMsg::Resume).await;
    assert_eq!(error_code(&mut early).await, ErrorCode::NotJoined.as_u16());
}

/// Issue 15 (reactions): a burst of reactions from two members reaches the
/// members with `REACTIONS` as one `Reactions` message per window; a member
/// without the bit gets none; a non-emoji gets 4009 and harms no one.
#[tokio::test]
async fn reactions_are_coalesced_per_window_to_members_that_take_them() {
    let server = TestServer::start().await;
    let ev = "ev-reactions";
    let mut fan = ws_binary(&server.ws_url(ev)).await;
    send(&mut fan, &hello_caps(ev, "fan", lockstep_protocol::caps::REACTIONS)).await;
    welcome(&mut fan).await;
    let (mut plain, _) = join(&server, ev, "plain").await;
    let mut other = ws_binary(&server.ws_url(ev)).await;
    send(&mut other, &hello_caps(ev, "other", lockstep_protocol::caps::REACTIONS)).await;
    welcome(&mut other).await;

    send(&mut plain, &ClientMsg::React(React { emoji: "ok".into() })).await;
    assert_eq!(error_code(&mut plain).await, ErrorCode::InvalidArgument.as_u16());
    for _ in 0..3 {
        send(&mut fan, &ClientMsg::React(React { emoji: "👏".into() })).await;
    }
    send(&mut plain, &ClientMsg::React(React { emoji: "😂".into() })).await;
    let mut total = 0;
    let mut messages = 0;
    while total < 4 {
        let r = until(&mut other, |g| match g {
            Got::Msg(ServerMsg::Reactions(r)) => Some(r.clone()),
            _ => None,
        })
        .await;
        messages += 1;
        total += r.counts.iter().map(|c| c.count).sum::<u32>();
        assert!(r.counts.windows(2).all(|w| w[0].count >= w[1].count), "{r:?}");
    }
    assert_eq!(total, 4);
    assert!(messages <= 2, "coalesced into windows: {messages} messages for 4 reactions");
    // The member without the bit got none: a ping's pong comes first.
    send(&mut plain, &ClientMsg::Ping(Ping { client_time: 9 })).await;
    let early = until(&mut plain, |g| match g {
        Got::Msg(ServerMsg::Reactions(_)) => Some(false),
        Got::Msg(ServerMsg::Pong(p)) if p.client_time == 9 => Some(true),
        _ => None,
    })
    .await;
    assert!(early, "a member without REACTIONS got Reactions");
}

fn chat_msg(g: &Got) -> Option<lockstep_protocol::ChatMessage> {
    match g {
        Got::Msg(ServerMsg::ChatMessage(m)) => Some(m.clone()),
        _ => None,
    }
}

fn chat(request_id: u32, text: &str) -> ClientMsg {
    ClientMsg::Chat(lockstep_protocol::Chat { request_id, text: text.into() })
}

/// Waits for the `Error` answering `request_id`.
async fn refused(ws: &mut Ws, request_id: u32) -> u16 {
    until(ws, |g| match g {
        Got::Msg(ServerMsg::Error(e)) if e.request_id == request_id => Some(e.code),
        _ => None,
    })
    .await
}

/// SPEC §6.6 over real sockets: messages in order to the members with `CHAT`
/// (the sender's copy answers it), bad text and mutes refused to the sender
/// only, deletion, history for a joiner and the mute across a reconnection,
/// and the REST history.
#[tokio::test]
async fn chat_is_ordered_moderated_replayed_and_paged() {
    use lockstep_protocol::caps::{ACKS, CHAT};
    let server = TestServer::with(|c| c.chat_max_bytes = 20).await;
    let ev = "ev-chat";
    let mut host = ws_binary(&server.ws_url(ev)).await;
    send(&mut host, &hello_caps(ev, "host", CHAT | ACKS)).await;
    welcome(&mut host).await;
    let mut ana = ws_binary(&server.ws_url(ev)).await;
    send(&mut ana, &hello_caps(ev, "ana", CHAT)).await;
    let ana_id = welcome(&mut ana).await.member_id;
    let (mut plain, _) = join(&server, ev, "plain").await;

    send(&mut ana, &chat(5, "hello 👋")).await;
    let first = until(&mut host, chat_msg).await;
    assert_eq!((first.id, first.member_id, first.request_id, first.text.as_str()), (1, ana_id, 5, "hello 👋"));
    assert!(!first.history && first.role == Role::Viewer);
    let own = until(&mut ana, chat_msg).await;
    assert_eq!((own.id, own.request_id), (1, 5), "the sender's copy answers its request");

    // Bad text: refused to the sender, with its request id; nobody else hears.
    for (rid, text) in [(6, ""), (7, "   "), (8, "this is longer than twenty bytes"), (9, "bell\u{7}")] {
        send(&mut ana, &chat(rid, text)).await;
        assert_eq!(refused(&mut ana, rid).await, ErrorCode::InvalidArgument.as_u16(), "{text:?}");
    }
    // A viewer does not moderate.
    send(&mut ana, &command(10, Action::DeleteChat { id: 1 })).await;
    assert_eq!(refused(&mut ana, 10).await, ErrorCode::Forbidden.as_u16());
    // The host mutes ana: she is told, and her messages are refused.
    send(&mut host, &command(11, Action::MuteChat { member_id: ana_id, muted: true })).await;
    until(&mut host, |g| matches!(g, Got::Msg(ServerMsg::Ack(a)) if a.request_id == 11).then_some(())).await;
    until(&mut ana, |g| matches!(g, Got::Msg(ServerMsg::ChatMuted(m)) if m.muted).then_some(())).await;
    send(&mut ana, &chat(12, "let me talk")).await;
    assert_eq!(refused(&mut ana, 12).await, ErrorCode::Forbidden.as_u16());
    // The host deletes her message, then writes two.
    send(&mut host, &command(13, Action::DeleteChat { id: 1 })).await;
    let deleted = until(&mut ana, |g| match g {
        Got::Msg(ServerMsg::ChatDeleted(d)) => Some(*d),
        _ => None,
    })
    .await;
    assert_eq!(deleted.id, 1);
    send(&mut host, &chat(14, "kick-off")).await;
    send(&mut host, &chat(15, "line one\nline two")).await;
    let got: Vec<u64> =
        [until(&mut host, chat_msg).await, until(&mut host, chat_msg).await].iter().map(|m| m.id).collect();
    assert_eq!(got, vec![2, 3], "ids in the room's order");

    // The member without CHAT got none of it: its pong comes first.
    send(&mut plain, &ClientMsg::Ping(Ping { client_time: 9 })).await;
    let clean = until(&mut plain, |g| match g {
        Got::Msg(ServerMsg::ChatMessage(_) | ServerMsg::ChatDeleted(_) | ServerMsg::Error(_)) => Some(false),
        Got::Msg(ServerMsg::Pong(p)) if p.client_time == 9 => Some(true),
        _ => None,
    })
    .await;
    assert!(clean, "a member without CHAT got chat (or someone else's error)");

    // Ana reconnects: the history (the deleted one left out), then her mute.
    drop(ana);
    let mut ana = ws_binary(&server.ws_url(ev)).await;
    send(&mut ana, &hello_caps(ev, "ana", CHAT)).await;
    welcome(&mut ana).await;
    let mut history = Vec::new();
    let muted = loop {
        match next(&mut ana).await {
            Got::Msg(ServerMsg::ChatMessage(m)) => history.push((m.id, m.text, m.history, m.request_id)),
            Got::Msg(ServerMsg::ChatMuted(m)) => break m.muted,
            _ => {}
        }
    };
    assert_eq!(
        history,
        vec![(2, "kick-off".to_owned(), true, 0), (3, "line one\nline two".to_owned(), true, 0)],
        "history, oldest first, before the mute"
    );
    assert!(muted);

    // The REST history, paged backwards.
    let tok = crate::accounts::token("reader", lockstep::auth::Plan::Free);
    let path = format!("/api/live-stream/{ev}/chat?limit=1");
    let (status, _, body) = crate::accounts::http(&server, "GET", &path, Some(&tok), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"][0]["id"], 3);
    assert_eq!(body["messages"][0]["text"], "line one\nline two");
    assert_eq!(body["more"], true);
    let path = format!("/api/live-stream/{ev}/chat?before=3");
    let (_, _, body) = crate::accounts::http(&server, "GET", &path, Some(&tok), None).await;
    assert_eq!(body["messages"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["messages"][0]["id"], 2);
    assert_eq!(body["more"], false);
    assert!(body["messages"][0].get("user").is_none(), "the sender's user never leaves the server");
    let (status, _, _) = crate::accounts::http(&server, "GET", &path, None, None).await;
    assert_eq!(status, 401);
    let path = format!("/api/live-stream/{ev}/chat?limit=0");
    let (status, _, _) = crate::accounts::http(&server, "GET", &path, Some(&tok), None).await;
    assert_eq!(status, 400);
}

/// SPEC §6.7 over real sockets: the host switches the room to another item
/// (paused at 0 at once, then started lead ahead by the room), the playlist
/// reaches every `MEDIA` member, a joiner lands on the item, a viewer's
/// switch is refused, `GET …/state` shows the media.
#[tokio::test]
async fn the_host_switches_media_and_everyone_follows() {
    use lockstep_protocol::caps::{ACKS, MEDIA};
    use lockstep_protocol::{MediaCommand, MediaItem, MediaOp};
    let server = TestServer::with(|c| c.media_start_ms = 300).await;
    let ev = "ev-media";
    let mut host = ws_binary(&server.ws_url(ev)).await;
    send(&mut host, &hello_caps(ev, "host", MEDIA | ACKS)).await;
    welcome(&mut host).await;
    let mut viewer = ws_binary(&server.ws_url(ev)).await;
    send(&mut viewer, &hello_caps(ev, "viewer", MEDIA)).await;
    welcome(&mut viewer).await;
    let ep = |n: u32| MediaItem {
        media_id: format!("ep{n}"),
        url: Some(format!("/media/ep{n}.m3u8")),
        title: Some(format!("Episode {n}")),
        duration_ms: Some(60_000),
    };
    let media = |rid: u32, op: MediaOp| ClientMsg::Media(MediaCommand { request_id: rid, op });
    send(&mut host, &command(1, Action::Play { position_ms: Some(30_000) })).await;
    send(&mut host, &media(2, MediaOp::Add { item: ep(1) })).await;
    send(&mut host, &media(3, MediaOp::Set { item: ep(2) })).await;
    let switched = until(&mut viewer, |g| match g {
        Got::Msg(ServerMsg::MediaChanged(m)) => Some(m.clone()),
        _ => None,
    })
    .await;
    assert_eq!(switched.item.as_ref().map(|i| i.media_id.as_str()), Some("ep2"));
    assert_eq!((switched.index, switched.by), (Some(1), 1));
    let start = until(&mut viewer, |g| match g {
        Got::Msg(ServerMsg::TimelineChanged(c))
            if c.reason == ChangeReason::Play && c.timeline.epoch > switched.epoch =>
        {
            Some(c.clone())
        }
        _ => None,
    })
    .await;
    assert_eq!((start.timeline.position_ms, start.timeline.paused), (0, false), "the room starts the item from 0");
    // A viewer may not switch in a host-only room.
    send(&mut viewer, &media(4, MediaOp::Next)).await;
    let code = until(&mut viewer, |g| match g {
        Got::Msg(ServerMsg::Error(e)) if e.request_id == 4 => Some(e.code),
        _ => None,
    })
    .await;
    assert_eq!(code, ErrorCode::Forbidden.as_u16());
    // A joiner: the playlist and the item after its Welcome.
    let mut late = ws_binary(&server.ws_url(ev)).await;
    send(&mut late, &hello_caps(ev, "late", MEDIA)).await;
    welcome(&mut late).await;
    let q = until(&mut late, |g| match g {
        Got::Msg(ServerMsg::QueueChanged(q)) => Some(q.clone()),
        _ => None,
    })
    .await;
    assert_eq!(q.items.iter().map(|i| i.media_id.as_str()).collect::<Vec<_>>(), ["ep1", "ep2"]);
    assert_eq!(q.current, Some(1));
    let (_, state) = get_json(&server.http_url(&format!("/api/live-stream/{ev}/state"))).await;
    assert_eq!(state["media"]["item"]["mediaId"], "ep2", "{state}");
    assert_eq!(state["media"]["items"].as_array().unwrap().len(), 2);
}
