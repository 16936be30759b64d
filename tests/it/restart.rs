//! Durability: the real `lockstep` binary, killed with SIGKILL and started
//! again on the same data directory, loses no session, invitation or room
//! timeline, and reconnecting clients resume where the timeline says.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lockstep::auth::Plan;
use lockstep_protocol::{Action, ChangeReason, Chat, ClientMsg, ServerMsg};
use serde_json::json;

use crate::accounts::{SECRET, http, join_as, token};
use crate::common::*;
use crate::redis::changed;

pub(crate) struct Proc {
    child: Child,
}

impl Proc {
    /// Whether the process is still running.
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn spawn(port: u16, data: &std::path::Path) -> (Proc, TestServer) {
    spawn_with(port, data, &[]).await
}

/// The real binary on `port` and `data`, with more `serve` flags; returns once it answers.
pub(crate) async fn spawn_with(port: u16, data: &std::path::Path, args: &[&str]) -> (Proc, TestServer) {
    let child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["serve", "--http-addr", &format!("127.0.0.1:{port}"), "--quic-addr", "[::1]:0"])
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("LOCKSTEP_JWT_SECRET", SECRET)
        .env("RUST_LOG", std::env::var("LOCKSTEP_TEST_LOG").unwrap_or_else(|_| "warn".into()))
        // Its log (on stdout) with LOCKSTEP_TEST_LOG set, e.g. `LOCKSTEP_TEST_LOG=info,redis=debug`.
        .stdout(if std::env::var_os("LOCKSTEP_TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() })
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn lockstep");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = TestServer::external(addr);
    let deadline = Instant::now() + WAIT;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && get_json(&server.http_url("/api/health")).await.0 == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "the server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (Proc { child }, server)
}

/// One value about `room` (`?1` in `sql`), read straight from the database; none while it cannot be read.
fn saved<T: rusqlite::types::FromSql>(data: &std::path::Path, sql: &str, room: &str) -> Option<T> {
    let c = rusqlite::Connection::open_with_flags(data.join("lockstep.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .ok()?;
    c.query_row(sql, [room], |r| r.get(0)).ok()
}

/// The timeline epoch saved for `room`.
fn saved_epoch(data: &std::path::Path, room: &str) -> Option<i64> {
    saved(data, "SELECT epoch FROM timelines WHERE room_id = ?1", room)
}

#[tokio::test]
async fn sigkill_and_restart_lose_nothing() {
    let data = crate::common::temp_path(&format!("restart-{}", free_port()));
    let port = free_port();
    let (proc1, server) = spawn(port, &data).await;
    let alice = token("alice", Plan::Premium);

    let (s, _, sess) = http(
        &server,
        "POST",
        "/api/live-stream/session",
        Some(&alice),
        Some(json!({"eventId": "ev-r", "deviceId": "tv"})),
    )
    .await;
    assert_eq!(s, 201);
    let session_id = sess["sessionId"].as_str().unwrap().to_owned();
    let (s, _, inv) =
        http(&server, "POST", "/api/live-stream/ev-r/invitations", Some(&alice), Some(json!({"maxUses": 3}))).await;
    assert_eq!(s, 201);
    let invitation = inv["invitationId"].as_str().unwrap().to_owned();

    let (mut ws, _) = join_as(&server, "ev-r", "tv", &alice).await;
    send(&mut ws, &command(1, Action::Seek { position_ms: 42_000 })).await;
    send(&mut ws, &command(2, Action::SetRate { rate_milli: 1250 })).await;
    until(&mut ws, |g| {
        matches!(g, Got::Msg(ServerMsg::TimelineChanged(c)) if c.reason == ChangeReason::Rate).then_some(())
    })
    .await;
    // A chat message, and a muted member.
    let mut chat = chat_member(&server, "ev-r", "phone", &alice).await;
    send(&mut chat, &ClientMsg::Chat(Chat { request_id: 3, text: "before the crash".into() })).await;
    let first = until(&mut chat, chat_msg).await;
    assert_eq!(first.id, 1);
    let deadline = Instant::now() + WAIT;
    while saved_epoch(&data, "ev-r") != Some(2) || saved_chat(&data, "ev-r") != 1 {
        assert!(Instant::now() < deadline, "timeline or chat never persisted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    drop(proc1); // SIGKILL
    drop(ws);
    drop(chat);
    let (_proc2, server) = spawn(port, &data).await;

    // The session survives: heartbeats work and the same device resumes it.
    let (s, _, _) = http(
        &server,
        "POST",
        &format!("/api/live-stream/session/{session_id}/heartbeat"),
        Some(&alice),
        Some(json!({"position": 42.0})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _, again) = http(
        &server,
        "POST",
        "/api/live-stream/session",
        Some(&alice),
        Some(json!({"eventId": "ev-r", "deviceId": "tv"})),
    )
    .await;
    assert_eq!((s, again["sessionId"].as_str()), (201, Some(session_id.as_str())));
    assert_eq!(again["timeline"]["positionMs"], 42_000);
    // The invitation survives.
    let (s, _, view) = http(&server, "GET", &format!("/api/invitations/{invitation}"), None, None).await;
    assert_eq!((s, view["usesLeft"].as_u64()), (200, Some(3)));
    // A reconnecting client resumes where the timeline says.
    let (_ws, w) = join_as(&server, "ev-r", "tv", &alice).await;
    assert_eq!(
        (w.timeline.epoch, w.timeline.position_ms, w.timeline.rate_milli, w.timeline.paused),
        (2, 42_000, 1250, true)
    );
    // The chat survives: a joiner gets it as history, and ids go on.
    let mut chat = chat_member(&server, "ev-r", "phone", &alice).await;
    let replayed = until(&mut chat, chat_msg).await;
    assert_eq!((replayed.id, replayed.text.as_str(), replayed.history), (1, "before the crash", true));
    send(&mut chat, &ClientMsg::Chat(Chat { request_id: 4, text: "after".into() })).await;
    let next = until(&mut chat, |g| chat_msg(g).filter(|m| !m.history)).await;
    assert_eq!(next.id, 2, "ids continue after the stored ones");
    let _ = std::fs::remove_dir_all(&data);
}

fn chat_msg(g: &Got) -> Option<lockstep_protocol::ChatMessage> {
    match g {
        Got::Msg(ServerMsg::ChatMessage(m)) => Some(m.clone()),
        _ => None,
    }
}

/// Joins with a token and the `CHAT` capability.
async fn chat_member(server: &TestServer, ev: &str, device: &str, tok: &str) -> Ws {
    let mut ws = ws_binary(&server.ws_url(ev)).await;
    let hello = lockstep_protocol::Hello {
        version: lockstep_protocol::PROTOCOL_VERSION,
        event_id: ev.into(),
        device_id: device.into(),
        token: Some(tok.into()),
        caps: lockstep_protocol::caps::CHAT,
    };
    send(&mut ws, &ClientMsg::Hello(hello)).await;
    welcome(&mut ws).await;
    ws
}

/// How many chat messages are stored for `room`.
fn saved_chat(data: &std::path::Path, room: &str) -> i64 {
    saved(data, "SELECT COUNT(*) FROM chat WHERE room_id = ?1", room).unwrap_or(0)
}

/// The reason saved for `room`'s timeline.
fn saved_reason(data: &std::path::Path, room: &str) -> Option<String> {
    saved::<Option<String>>(data, "SELECT reason FROM timelines WHERE room_id = ?1", room).flatten()
}

/// A server killed while its room waits for a buffering viewer comes back
/// with the room still waiting, and resumes it once the wait's deadline
/// passes: it does not come back merely paused (waiting for a host who did
/// not pause), as it did when the timeline was saved without its reason.
#[tokio::test]
async fn a_restart_during_a_buffering_wait_comes_back_waiting_and_resumes() {
    let data = crate::common::temp_path(&format!("restart-wait-{}", free_port()));
    let port = free_port();
    let flags = ["--buffering-wait-max-ms", "3000", "--tick-interval-ms", "50"];
    let (proc1, server) = spawn_with(port, &data, &flags).await;
    let (alice, bob) = (token("alice", Plan::Premium), token("bob", Plan::Premium));
    let (mut host, _) = join_as(&server, "ev-w", "tv", &alice).await;
    let (mut viewer, _) = join_as(&server, "ev-w", "phone", &bob).await;
    send(&mut host, &command(1, Action::Play { position_ms: Some(5_000) })).await;
    until(&mut viewer, |g| changed(g).filter(|c| !c.timeline.paused).map(|_| ())).await;
    // Played smoothly once: its stall makes the room wait.
    send(&mut viewer, &report(false)).await;
    send(&mut viewer, &report(true)).await;
    let wait = until(&mut host, |g| changed(g).filter(|c| c.reason == ChangeReason::BufferingWait)).await;
    assert!(wait.timeline.paused);
    let deadline = Instant::now() + WAIT;
    while saved_reason(&data, "ev-w").as_deref() != Some("buffering-wait") {
        assert!(Instant::now() < deadline, "the wait was never saved: {:?}", saved_reason(&data, "ev-w"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    drop(proc1); // SIGKILL, mid-wait
    drop((host, viewer));
    let (_proc2, server) = spawn_with(port, &data, &flags).await;
    let restarted = Instant::now();
    let (mut host, w) = join_as(&server, "ev-w", "tv", &alice).await;
    assert_eq!((w.timeline.epoch, w.timeline.paused), (wait.timeline.epoch, true), "back on the wait's timeline");
    let (_, _, st) = http(&server, "GET", "/api/live-stream/ev-w/state", None, None).await;
    assert_eq!(st["bufferingWait"], true, "the room knows it waits: {st}");
    // Nobody stalls any more (the viewer is gone): the wait ends by itself at its deadline (and a second's grace).
    let resumed = until(&mut host, |g| changed(g).filter(|c| c.reason == ChangeReason::Resume)).await;
    assert!(!resumed.timeline.paused);
    assert_eq!(resumed.timeline.position_ms, wait.timeline.position_ms, "resumed where it waited");
    assert!(restarted.elapsed() < Duration::from_millis(3_000 + 1_000 + 2_000), "{:?}", restarted.elapsed());
    let (_, _, st) = http(&server, "GET", "/api/live-stream/ev-w/state", None, None).await;
    // Playing, or about to (the resume is scheduled a lead ahead).
    let playing = st["timeline"]["paused"] == false || st["pending"]["timeline"]["paused"] == false;
    assert!(st["bufferingWait"] == false && playing, "{st}");
    let _ = std::fs::remove_dir_all(&data);
}
