//! Scale-out: several nodes sharing one real `redis-server` (started here on
//! a free port, without persistence; `.ci/test` installs it when missing).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lockstep::auth::Plan;
use lockstep_protocol::{Action, ChangeReason, ClientMsg, ServerMsg, TimelineChanged};

use crate::accounts::{SECRET, http, token};
use crate::common::*;
use crate::wt::WtServer;

pub(crate) struct Redis {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Redis {
    pub(crate) fn start() -> Redis {
        Self::start_with(&[])
    }

    /// With more `redis-server` flags.
    pub(crate) fn start_with(args: &[&str]) -> Redis {
        let mut r = Redis { child: None, port: free_port(), args: args.iter().map(|a| a.to_string()).collect() };
        r.restart();
        r
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts (again) on the same port.
    pub(crate) fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn node(redis: &Redis) -> TestServer {
    let url = redis.url();
    TestServer::with(|c| {
        c.redis_url = Some(url);
        c.tick_interval_ms = 50;
    })
    .await
}

pub(crate) fn changed(g: &Got) -> Option<TimelineChanged> {
    match g {
        Got::Msg(ServerMsg::TimelineChanged(c)) => Some(c.clone()),
        _ => None,
    }
}

pub(crate) async fn count_reaches(ws: &mut Ws, n: u32) {
    until(ws, |g| match g {
        Got::Msg(ServerMsg::ViewerCount(c)) if c.count == n => Some(()),
        Got::Msg(ServerMsg::Tick(t)) if t.viewers == n => Some(()),
        _ => None,
    })
    .await;
}

#[tokio::test]
async fn changes_reach_every_node_over_ws_and_wt_and_counts_aggregate() {
    let redis = Redis::start();
    let a = node(&redis).await;
    let url = redis.url();
    let b = WtServer::with(|c| c.redis_url = Some(url)).await;
    let c = node(&redis).await;
    let ev = "ev-scale";
    let (mut host, _) = join(&a, ev, "host").await;
    let (mut wt_b, _) = b.join(ev, "wt-b").await;
    let mut ws_b = ws_binary(&b.ws_url(ev)).await;
    send(&mut ws_b, &hello(ev, "ws-b")).await;
    welcome(&mut ws_b).await;
    let (mut ws_c, _) = join(&c, ev, "ws-c").await;

    // Counts aggregate across the three nodes.
    count_reaches(&mut host, 4).await;
    count_reaches(&mut ws_c, 4).await;

    // A seek on node A reaches viewers on B (WebTransport and WebSocket) and C.
    send(&mut host, &command(1, Action::Seek { position_ms: 90_000 })).await;
    let seek = until(&mut host, |g| changed(g).filter(|c| c.timeline.position_ms == 90_000)).await;
    let on_c = until(&mut ws_c, |g| changed(g).filter(|c| c.timeline.epoch == seek.timeline.epoch)).await;
    let on_b = until(&mut ws_b, |g| changed(g).filter(|c| c.timeline.epoch == seek.timeline.epoch)).await;
    let on_wt = wt_b
        .until(|m| match m {
            ServerMsg::TimelineChanged(c) if c.timeline.epoch == seek.timeline.epoch => Some(c.clone()),
            _ => None,
        })
        .await;
    // Every node names the host as who made it (member ids are the room's).
    assert_ne!(seek.by, 0);
    for other in [&on_c, &on_b, &on_wt] {
        assert_eq!(
            (other.timeline, other.effective_at_us, other.by, other.reason),
            (seek.timeline, seek.effective_at_us, seek.by, seek.reason)
        );
    }

    // A scheduled play then pause lands on the same position everywhere.
    send(&mut host, &command(2, Action::Play { position_ms: Some(1_000) })).await;
    until(&mut host, |g| changed(g).filter(|c| !c.timeline.paused)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(&mut host, &command(3, Action::Pause { position_ms: None })).await;
    let paused = until(&mut host, |g| changed(g).filter(|c| c.timeline.paused)).await;
    let on_c =
        until(&mut ws_c, |g| changed(g).filter(|c| c.timeline.paused && c.timeline.epoch == paused.timeline.epoch))
            .await;
    let on_wt = wt_b
        .until(|m| match m {
            ServerMsg::TimelineChanged(c) if c.timeline.epoch == paused.timeline.epoch => Some(c.clone()),
            _ => None,
        })
        .await;
    assert!(paused.timeline.position_ms > 1_000);
    for other in [&on_c, &on_wt] {
        assert_eq!(
            (other.timeline, other.effective_at_us, other.by, other.reason),
            (paused.timeline, paused.effective_at_us, paused.by, paused.reason)
        );
    }
    // Ticks after the pause agree too.
    let tick_c = until(&mut ws_c, |g| match g {
        Got::Msg(ServerMsg::Tick(t)) if t.epoch == paused.timeline.epoch => Some(t.position_ms),
        _ => None,
    })
    .await;
    assert_eq!(u64::from(tick_c), paused.timeline.position_ms);

    // A viewer leaving node C is seen on A.
    drop(ws_c);
    count_reaches(&mut host, 3).await;
}

/// Polls a node's room state until `ok` accepts it.
async fn state_until(
    server: &TestServer,
    ev: &str,
    mut ok: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, v) = get_json(&server.http_url(&format!("/api/live-stream/{ev}/state"))).await;
        if status == 200 && ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "room state never matched; last: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ids(v: &serde_json::Value, role: &str) -> Vec<u64> {
    let mut ids: Vec<u64> = v["members"][role].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn members_roles_and_policy_are_shared_across_nodes() {
    let redis = Redis::start();
    let url = redis.url();
    let a = TestServer::with(|c| {
        c.redis_url = Some(url.clone());
        c.show_members = true;
    })
    .await;
    let b = WtServer::with(|c| {
        c.redis_url = Some(url);
        c.show_members = true;
    })
    .await;
    let ev = "ev-members";
    let (mut host, hw) = join(&a, ev, "host").await;
    assert_eq!(hw.role, lockstep_protocol::Role::Host);
    let (mut on_b, bw) = join(&b.inner, ev, "ws-b").await;
    let (mut wt_b, tw) = b.join(ev, "wt-b").await;
    let mut viewers = vec![u64::from(bw.member_id), u64::from(tw.member_id)];
    viewers.sort_unstable();
    assert_eq!(viewers.iter().chain([&u64::from(hw.member_id)]).collect::<std::collections::HashSet<_>>().len(), 3);

    // Both nodes list every member, by role, and agree on one host.
    for node in [&a, &b.inner] {
        state_until(node, ev, |v| ids(v, "host") == [u64::from(hw.member_id)] && ids(v, "viewer") == viewers).await;
    }
    until(&mut host, |g| match g {
        Got::Msg(ServerMsg::MemberJoined(j)) if j.member_id == tw.member_id => Some(()),
        _ => None,
    })
    .await;

    // The host on A makes B's WebSocket viewer a co-host; it may then seek,
    // and the seek reaches A.
    send(&mut host, &command(1, Action::SetRole { member_id: bw.member_id, role: lockstep_protocol::Role::CoHost }))
        .await;
    until(&mut on_b, |g| match g {
        Got::Msg(ServerMsg::RoleChanged(r)) if r.member_id == bw.member_id => Some(()),
        _ => None,
    })
    .await;
    send(&mut on_b, &command(2, Action::Seek { position_ms: 33_000 })).await;
    until(&mut host, |g| changed(g).filter(|c| c.timeline.position_ms == 33_000)).await;
    state_until(&a, ev, |v| ids(v, "coHost") == [u64::from(bw.member_id)]).await;

    // A policy set on A holds on B.
    send(&mut host, &command(3, Action::SetPolicy { policy: lockstep_protocol::ControlPolicy::Everyone })).await;
    wt_b.until(|m| match m {
        ServerMsg::PolicyChanged(p) if p.by == hw.member_id => Some(()),
        _ => None,
    })
    .await;
    state_until(&b.inner, ev, |v| v["policy"] == "everyone").await;

    // Leaving B is seen on A.
    drop(on_b);
    until(&mut host, |g| match g {
        Got::Msg(ServerMsg::MemberLeft(l)) if l.member_id == bw.member_id => Some(()),
        _ => None,
    })
    .await;
    state_until(&a, ev, |v| ids(v, "coHost").is_empty() && ids(v, "viewer") == [u64::from(tw.member_id)]).await;
}

#[tokio::test]
async fn the_device_limit_holds_across_nodes_under_concurrent_starts() {
    let redis = Redis::start();
    let a = node(&redis).await;
    let b = node(&redis).await;
    device_limit_holds(&a, &b, 5).await;
}

/// `rounds` users each start a session on A and on B at once, at a limit of
/// one device: exactly one start is refused, with the device holding the slot.
pub(crate) async fn device_limit_holds(a: &TestServer, b: &TestServer, rounds: usize) {
    for round in 0..rounds {
        let user = format!("dana-{round}");
        let tok = token(&user, Plan::Free);
        let body_a = serde_json::json!({"eventId": "ev-limit", "deviceId": "phone"});
        let body_b = serde_json::json!({"eventId": "ev-limit", "deviceId": "laptop"});
        let (ra, rb) = tokio::join!(
            http(a, "POST", "/api/live-stream/session", Some(&tok), Some(body_a)),
            http(b, "POST", "/api/live-stream/session", Some(&tok), Some(body_b)),
        );
        let mut codes = [ra.0, rb.0];
        codes.sort();
        assert_eq!(codes[1], 409, "exactly one start is refused: {codes:?}");
        assert!((200..300).contains(&codes[0]), "{codes:?}");
        // The refusal names the device that holds the slot, whichever node has it.
        let refused = if ra.0 == 409 { ra.2 } else { rb.2 };
        assert_eq!(refused["error"], "device_limit");
    }
}

#[tokio::test]
async fn sessions_and_invitations_are_shared_across_nodes() {
    let redis = Redis::start();
    let a = node(&redis).await;
    let b = node(&redis).await;
    sessions_and_invitations_shared(&a, &b).await;
}

/// A session started on A heartbeats on B and ends everywhere; an invitation
/// created on A and accepted on B lets the guest in on A.
pub(crate) async fn sessions_and_invitations_shared(a: &TestServer, b: &TestServer) {
    let alice = token("alice-x", Plan::Premium);
    // A session started on A is known on B: heartbeats and its end.
    let (s, _, sess) = http(
        a,
        "POST",
        "/api/live-stream/session",
        Some(&alice),
        Some(serde_json::json!({"eventId": "ev-x", "deviceId": "tv"})),
    )
    .await;
    assert_eq!(s, 201);
    let id = sess["sessionId"].as_str().unwrap().to_owned();
    let hb = format!("/api/live-stream/session/{id}/heartbeat");
    let (s, _, _) = http(b, "POST", &hb, Some(&alice), Some(serde_json::json!({"position": 3.0}))).await;
    assert_eq!(s, 200, "a session from node A heartbeats on node B");
    // An invitation created on A, accepted on B, lets the guest into the party room on either node.
    let (s, _, inv) =
        http(a, "POST", "/api/live-stream/ev-x/invitations", Some(&alice), Some(serde_json::json!({}))).await;
    assert_eq!(s, 201);
    let (iid, room) = (inv["invitationId"].as_str().unwrap().to_owned(), inv["roomId"].as_str().unwrap().to_owned());
    let guest = token("gus-x", Plan::Free);
    let (s, _, _) = http(
        b,
        "POST",
        &format!("/api/invitations/{iid}/accept"),
        Some(&guest),
        Some(serde_json::json!({"deviceId": "g1"})),
    )
    .await;
    assert_eq!(s, 201);
    let (_ws, w) = crate::accounts::join_as(a, &room, "g1", &guest).await;
    assert_eq!(w.role, lockstep_protocol::Role::Viewer, "accepted on B, joined on A");
    assert_eq!(http(b, "DELETE", &format!("/api/live-stream/session/{id}"), Some(&alice), None).await.0, 204);
    assert_eq!(http(a, "POST", &hb, Some(&alice), Some(serde_json::json!({}))).await.0, 404, "ended everywhere");
}

#[tokio::test]
async fn removing_a_device_on_one_node_closes_its_connections_on_another() {
    let redis = Redis::start();
    let a = node(&redis).await;
    let b = node(&redis).await;
    let alice = token("alice-rv", Plan::Premium);
    let (mut tablet, _) = crate::accounts::join_as(&b, "ev-rv", "tablet", &alice).await;
    let (mut phone, _) = crate::accounts::join_as(&b, "ev-rv", "phone", &alice).await;
    assert_eq!(http(&a, "DELETE", "/api/account/devices/tablet", Some(&alice), None).await.0, 204);
    assert_eq!(closed(&mut tablet).await, Some(lockstep_protocol::ErrorCode::DeviceRevoked.as_u16()));
    send(&mut phone, &lockstep_protocol::ClientMsg::Ping(lockstep_protocol::Ping { client_time: 4 })).await;
    until(&mut phone, |g| matches!(g, Got::Msg(ServerMsg::Pong(_))).then_some(())).await;
}

/// The real binary on `port`, as a node of `redis`.
fn spawn_node(port: u16, redis: &Redis) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["serve", "--dev", "--http-addr", &format!("127.0.0.1:{port}"), "--quic-addr", "[::1]:0"])
        .arg("--data-dir")
        .arg(fresh_dir("node"))
        .args(["--redis-url", &redis.url(), "--tick-interval-ms", "50"])
        .env("LOCKSTEP_JWT_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn lockstep")
}

async fn wait_up(addr: SocketAddr) -> TestServer {
    let server = TestServer::external(addr);
    let deadline = Instant::now() + WAIT;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && get_json(&server.http_url("/api/health")).await.0 == 200
        {
            return server;
        }
        assert!(Instant::now() < deadline, "the node did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_killed_node_leaves_the_counts_within_the_ttl() {
    let redis = Redis::start();
    let a = node(&redis).await;
    let port = free_port();
    let mut child = spawn_node(port, &redis);
    let b = wait_up(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let ev = "ev-crash";
    let (mut on_a, _) = join(&a, ev, "a1").await;
    let (_b1, _) = join(&b, ev, "b1").await;
    let (_b2, _) = join(&b, ev, "b2").await;
    count_reaches(&mut on_a, 3).await;
    state_until(&a, ev, |v| ids(v, "host").len() + ids(v, "viewer").len() == 3).await;
    let killed = Instant::now();
    child.kill().unwrap();
    child.wait().unwrap();
    count_reaches(&mut on_a, 1).await;
    let took = killed.elapsed();
    let bound = lockstep::cluster::NODE_TTL + lockstep::cluster::HEARTBEAT * 2;
    assert!(took <= bound, "counts dropped after {took:?}, bound {bound:?}");
    // Its members leave the member list as well.
    state_until(&a, ev, |v| ids(v, "host").len() + ids(v, "coHost").len() + ids(v, "viewer").len() == 1).await;
    let took = killed.elapsed();
    assert!(took <= bound, "members dropped after {took:?}, bound {bound:?}");
}

/// How many connections are subscribed to each of `channels` (classic pub/sub).
pub(crate) async fn subscribers(url: &str, channels: &[String]) -> Vec<u64> {
    let mut c = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
    let v: Vec<(String, u64)> = redis::cmd("PUBSUB").arg("NUMSUB").arg(channels).query_async(&mut c).await.unwrap();
    v.into_iter().map(|(_, n)| n).collect()
}

/// The timeline, presence and chat channels of `room`.
pub(crate) fn room_channels(room: &str) -> Vec<String> {
    ["room", "presence", "chat"].iter().map(|k| format!("lockstep:{k}:{{{room}}}")).collect()
}

/// Waits until `f` gives `want` (bounded by [`WAIT`]).
pub(crate) async fn eventually<T: PartialEq + std::fmt::Debug, F: std::future::Future<Output = T>>(
    what: &str,
    want: T,
    mut f: impl FnMut() -> F,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = f().await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {got:?}, not {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_node_subscribes_only_to_the_rooms_it_serves() {
    let redis = Redis::start();
    let url = redis.url();
    let grace = |c: &mut lockstep::config::Config| {
        c.redis_url = Some(redis.url());
        c.room_grace_ms = 300;
    };
    let a = TestServer::with(grace).await;
    let b = TestServer::with(grace).await;
    // Room X only on node A; room Y on both.
    let (mut x_host, _) = join(&a, "ev-x", "x-host").await;
    let (mut y_a, _) = join(&a, "ev-y", "y-a").await;
    let (mut y_b, _) = join(&b, "ev-y", "y-b").await;
    count_reaches(&mut y_a, 2).await;
    let (x, y) = (room_channels("ev-x"), room_channels("ev-y"));
    assert_eq!(subscribers(&url, &x).await, [1, 1, 1], "only node A hears room X");
    assert_eq!(subscribers(&url, &y).await, [2, 2, 2], "both nodes hear room Y");
    // No pattern subscription: nobody receives every room's traffic.
    let mut c = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let patterns: u64 = redis::cmd("PUBSUB").arg("NUMPAT").query_async(&mut c).await.unwrap();
    assert_eq!(patterns, 0);

    // Room X's changes go to A's viewers; B serves Y as before.
    send(&mut x_host, &command(1, Action::Seek { position_ms: 5_000 })).await;
    until(&mut x_host, |g| changed(g).filter(|c| c.timeline.position_ms == 5_000)).await;
    send(&mut y_a, &command(1, Action::Seek { position_ms: 7_000 })).await;
    until(&mut y_b, |g| changed(g).filter(|c| c.timeline.position_ms == 7_000)).await;

    // Room X ends on A (its last member left, the grace ran out): A unsubscribes.
    drop(x_host);
    eventually("room X's subscribers after it ended", vec![0, 0, 0], || subscribers(&url, &x)).await;
    // Y's last member on B leaves: B stops hearing Y; A still does.
    drop(y_b);
    eventually("room Y's subscribers after B's viewer left", vec![1, 1, 1], || subscribers(&url, &y)).await;
    count_reaches(&mut y_a, 1).await;
    // Joined again, B subscribes again and follows the room's timeline.
    let (mut y_b, w) = join(&b, "ev-y", "y-b2").await;
    assert_eq!(w.timeline.position_ms, 7_000);
    assert_eq!(subscribers(&url, &y).await, [2, 2, 2]);
    send(&mut y_a, &command(2, Action::Seek { position_ms: 9_000 })).await;
    until(&mut y_b, |g| changed(g).filter(|c| c.timeline.position_ms == 9_000)).await;
}

/// One room's heartbeat script failing costs that room its counts until a
/// beat succeeds, nothing more: Redis is still up for the node, every room's
/// commands are taken and the node stays ready. Here the room's counts key is
/// made a string, so its script fails (WRONGTYPE) at every beat, as a script
/// timing out on a slow shard would. (A node serving 10,000 rooms under load
/// went down for all of them when some heartbeats timed out.)
#[tokio::test]
async fn one_rooms_failing_heartbeat_leaves_the_node_up_for_every_room() {
    let redis = Redis::start();
    let a = node(&redis).await;
    let (mut bad, _) = join(&a, "ev-beat-bad", "bad-host").await;
    let (mut good, _) = join(&a, "ev-beat-ok", "ok-host").await;
    let mut c = redis::Client::open(redis.url().as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let mut c2 = c.clone();
    // The node's entry in the good room's counts: its expiry moves at every beat.
    let mut entry = async || -> Option<String> {
        let all: std::collections::HashMap<String, String> =
            redis::cmd("HGETALL").arg("lockstep:count:{ev-beat-ok}").query_async(&mut c).await.unwrap();
        all.into_values().next()
    };
    let deadline = Instant::now() + WAIT;
    while entry().await.is_none() {
        assert!(Instant::now() < deadline, "the node never wrote the good room's count");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kind: String = redis::cmd("TYPE").arg("lockstep:count:{ev-beat-bad}").query_async(&mut c2).await.unwrap();
    assert_eq!(kind, "hash", "the bad room's counts key is named as the store names it");
    let () = redis::cmd("SET").arg("lockstep:count:{ev-beat-bad}").arg("broken").query_async(&mut c2).await.unwrap();
    // Two beats after the break (each beat's outcome is settled before the next one starts).
    for _ in 0..2 {
        let before = entry().await;
        let deadline = Instant::now() + WAIT;
        while entry().await == before {
            assert!(Instant::now() < deadline, "the node stopped beating");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let kind: String = redis::cmd("TYPE").arg("lockstep:count:{ev-beat-bad}").query_async(&mut c2).await.unwrap();
    assert_eq!(kind, "string", "still broken: its script failed at both beats");
    wait_ready(&a, 200, "ready").await;
    for (ws, ev, n) in [(&mut good, "good", 1), (&mut bad, "bad", 2)] {
        send(ws, &command(n, Action::Seek { position_ms: 3_000 * n as u64 })).await;
        let got = until(ws, |g| match g {
            Got::Msg(ServerMsg::Error(e)) if e.request_id == n => Some(Err(e.code)),
            Got::Msg(ServerMsg::TimelineChanged(t)) if t.timeline.position_ms == 3_000 * n as u64 => Some(Ok(())),
            _ => None,
        })
        .await;
        assert_eq!(got, Ok(()), "the {ev} room's command");
    }
}

/// Redis loses committed changes (a replica that was behind took over, a
/// restore from an old snapshot): the room's record is older than what the
/// nodes confirmed. When they load it again they write their newest forward;
/// no viewer is taken back, and a late joiner lands on the newest timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_lost_changes_is_written_forward_not_followed_back() {
    let redis = Redis::start_with(&["--enable-debug-command", "local"]);
    let url = redis.url();
    let a = node(&redis).await;
    let b = node(&redis).await;
    let ev = "ev-behind";
    let (mut host, _) = join(&a, ev, "host").await;
    let (mut on_b, _) = join(&b, ev, "viewer-b").await;
    count_reaches(&mut host, 2).await;
    let mut c = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let key = format!("lockstep:tl:{{{ev}}}");

    send(&mut host, &command(1, Action::Seek { position_ms: 5_000 })).await;
    let old = until(&mut on_b, |g| changed(g).filter(|c| c.timeline.position_ms == 5_000)).await;
    let record: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL").arg(&key).query_async(&mut c).await.unwrap();
    send(&mut host, &command(2, Action::Seek { position_ms: 9_000 })).await;
    let newest = until(&mut on_b, |g| changed(g).filter(|c| c.timeline.position_ms == 9_000)).await;
    until(&mut host, |g| changed(g).filter(|c| c.timeline.epoch == newest.timeline.epoch)).await;

    // The record goes back to the older change, then Redis stalls: both nodes lose it and load the room again.
    let mut restore = redis::cmd("HSET");
    restore.arg(&key);
    for (f, v) in &record {
        restore.arg(f).arg(v);
    }
    restore.query_async::<()>(&mut c).await.unwrap();
    assert_eq!(crate::kills::redis_cmd(&url, &["DEBUG", "SLEEP", "2.5"]).await, "+OK");
    for n in [&a, &b] {
        wait_ready(n, 200, "ready").await;
    }
    // Written forward: the record holds the newest change again.
    let deadline = Instant::now() + WAIT;
    loop {
        let epoch: Option<u32> = redis::cmd("HGET").arg(&key).arg("epoch").query_async(&mut c).await.unwrap();
        if epoch == Some(newest.timeline.epoch) {
            break;
        }
        assert!(Instant::now() < deadline, "the record stayed at epoch {epoch:?} (older: {})", old.timeline.epoch);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nobody was taken back, a late joiner lands on the newest, and changes go on from there.
    let (_late, w) = join(&a, ev, "late").await;
    assert_eq!(w.timeline, newest.timeline);
    send(&mut host, &command(3, Action::Seek { position_ms: 12_000 })).await;
    for ws in [&mut host, &mut on_b] {
        // Every change since the newest one, up to the next: none older.
        let mut back = Vec::new();
        let next = until(ws, |g| {
            let c = changed(g)?;
            if c.timeline.epoch < newest.timeline.epoch {
                back.push(c.timeline);
            }
            (c.timeline.position_ms == 12_000).then_some(c)
        })
        .await;
        assert!(next.timeline.epoch > newest.timeline.epoch);
        assert_eq!(back, Vec::new(), "a member was taken back");
    }
}

#[tokio::test]
async fn redis_stop_and_start_is_survived_and_sync_resumes() {
    let mut redis = Redis::start();
    let a = node(&redis).await;
    let b = node(&redis).await;
    let ev = "ev-outage";
    let (mut host, _) = join(&a, ev, "host").await;
    let (mut viewer, _) = join(&b, ev, "viewer").await;
    send(&mut host, &command(1, Action::Seek { position_ms: 5_000 })).await;
    until(&mut viewer, |g| changed(g).filter(|c| c.timeline.position_ms == 5_000)).await;

    redis.kill();
    // Commands are refused with a clear error while viewers keep their ticks.
    let deadline = Instant::now() + WAIT;
    let mut n = 10;
    loop {
        n += 1;
        send(&mut host, &command(n, Action::Seek { position_ms: 6_000 })).await;
        let got = until(&mut host, |g| match g {
            Got::Msg(ServerMsg::Error(e)) if e.request_id == n => Some(Some(e.code)),
            Got::Msg(ServerMsg::TimelineChanged(c)) if c.timeline.position_ms == 6_000 => Some(None),
            _ => None,
        })
        .await;
        if got == Some(lockstep_protocol::ErrorCode::Internal as u16) {
            break;
        }
        assert!(Instant::now() < deadline, "commands still accepted with Redis down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tick = until(&mut viewer, |g| match g {
        Got::Msg(ServerMsg::Tick(t)) => Some(*t),
        _ => None,
    })
    .await;
    assert!(tick.position_ms >= 5_000, "viewers keep the last timeline");
    // Both nodes say they should get no new viewers (a heartbeat notices).
    for node in [&a, &b] {
        wait_ready(node, 503, "redis_unreachable").await;
    }

    redis.restart();
    for node in [&a, &b] {
        wait_ready(node, 200, "ready").await;
    }
    // Sync resumes: a command on A reaches B again.
    let deadline = Instant::now() + WAIT * 2;
    loop {
        n += 1;
        send(&mut host, &command(n, Action::Seek { position_ms: 42_000 })).await;
        let ok = until(&mut host, |g| match g {
            Got::Msg(ServerMsg::Error(e)) if e.request_id == n => Some(false),
            Got::Msg(ServerMsg::TimelineChanged(c)) if c.timeline.position_ms == 42_000 => Some(true),
            _ => None,
        })
        .await;
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "commands still refused after Redis came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    until(&mut viewer, |g| changed(g).filter(|c| c.timeline.position_ms == 42_000)).await;
}

/// Polls `GET /api/ready` until it answers `status` with `{"status": what}`.
pub(crate) async fn wait_ready(node: &TestServer, status: u16, what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (got, body) = get_json(&node.http_url("/api/ready")).await;
        if got == status {
            assert_eq!(body["status"], what);
            return;
        }
        assert!(Instant::now() < deadline, "/api/ready never answered {status} ({got} {body})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

/// Seek latency from a host on `a` to 100 viewers, alternately on `a` and `b`:
/// (p50, p99) in ms for viewers on `a` and on `b`.
async fn seek_latency(a: &TestServer, b: &TestServer, ev: &str) -> ((f64, f64), (f64, f64)) {
    let (mut host, _) = join(a, ev, "host").await;
    let mut viewers = Vec::new();
    for i in 0..100 {
        let server = if i % 2 == 0 { a } else { b };
        let (ws, _) = join(server, ev, &format!("v{i}")).await;
        viewers.push((i % 2 == 1, ws));
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(bool, u32, Instant)>();
    for (remote, mut ws) in viewers {
        let tx = tx.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            while let Some(Ok(m)) = ws.next().await {
                if let tokio_tungstenite::tungstenite::Message::Binary(b) = m
                    && let Ok(ServerMsg::TimelineChanged(c)) = lockstep_protocol::decode_server(&b)
                {
                    let _ = tx.send((remote, c.timeline.position_ms as u32, Instant::now()));
                }
            }
        });
    }
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for n in 0..300u32 {
        let sent = Instant::now();
        send(&mut host, &command(n, Action::Seek { position_ms: 1_000 + u64::from(n) })).await;
        let mut got = 0;
        while got < 100 {
            let (is_remote, pos, at) = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
            if pos != 1_000 + n {
                continue;
            }
            got += 1;
            let us = at.duration_since(sent).as_micros() as u64;
            if is_remote { remote.push(us) } else { local.push(us) }
        }
        if n < 20 {
            // Warm-up.
            local.clear();
            remote.clear();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ((pct(&mut local, 0.5), pct(&mut local, 0.99)), (pct(&mut remote, 0.5), pct(&mut remote, 0.99)))
}

/// The added latency of the Redis hop (BENCHMARKS.md): a host seeks, 100
/// viewers receive it; first on one node without Redis, then spread over two
/// nodes sharing Redis. Run with
/// `cargo test --test it redis::redis_hop_latency_report -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn redis_hop_latency_report() {
    let single = TestServer::with(|c| c.tick_interval_ms = 50).await;
    let (base, _) = seek_latency(&single, &single, "ev-hop-base").await;
    single.stop().await;
    let redis = Redis::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let (on_a, on_b) = seek_latency(&a, &b, "ev-hop").await;
    println!("one node, no Redis  p50 {:.2} ms p99 {:.2} ms", base.0, base.1);
    println!("two nodes, on A     p50 {:.2} ms p99 {:.2} ms", on_a.0, on_a.1);
    println!("two nodes, on B     p50 {:.2} ms p99 {:.2} ms", on_b.0, on_b.1);
    println!("Redis hop adds (B vs one node) p50 {:.2} ms p99 {:.2} ms", on_b.0 - base.0, on_b.1 - base.1);
}

#[tokio::test]
async fn a_clock_set_on_one_node_holds_on_every_node_over_ws_and_wt() {
    use lockstep_protocol::{ClientMsg, ClockKind, Hello, PROTOCOL_VERSION, caps};
    let redis = Redis::start();
    let a = node(&redis).await;
    let url = redis.url();
    let b = WtServer::with(|c| c.redis_url = Some(url)).await;
    let ev = "ev-live-cluster";
    let live_hello = |device: &str| {
        ClientMsg::Hello(Hello {
            version: PROTOCOL_VERSION,
            event_id: ev.into(),
            device_id: device.into(),
            token: None,
            caps: caps::LIVE,
        })
    };
    let mut on_b = ws_binary(&b.inner.ws_url(ev)).await;
    send(&mut on_b, &live_hello("ws-b")).await;
    welcome(&mut on_b).await;
    let (mut wt_b, _) = b.join_with(live_hello("wt-b")).await;
    let (_on_a, _) = join(&a, ev, "a").await;

    // The host sets the clock on A; B's viewers go live with A's timeline.
    let host = crate::accounts::token_with(|c| c.host_of = vec![ev.into()]);
    let body = serde_json::json!({"clock": "live", "latencyMs": 4500});
    let (status, _, v) = http(&a, "PUT", &format!("/api/live-stream/{ev}/clock"), Some(&host), Some(body)).await;
    assert_eq!(status, 200, "{v}");
    let origin = v["live"]["originMs"].as_u64().unwrap();
    let c = until(&mut on_b, changed).await;
    let s = until(&mut on_b, |g| match g {
        Got::Msg(ServerMsg::LiveState(s)) if s.at_live => Some(*s),
        _ => None,
    })
    .await;
    assert_eq!((s.clock, s.origin_ms, s.latency_ms), (ClockKind::Live, origin, 4500));
    let at = c.effective_at_us;
    assert_eq!(origin + c.timeline.position_us_at(at) / 1000, at / 1000 - 4500, "B's viewer at A's live point");
    let wt_change = wt_b
        .until(|m| match m {
            ServerMsg::TimelineChanged(x) if x.timeline.epoch == c.timeline.epoch => Some(x.clone()),
            _ => None,
        })
        .await;
    assert_eq!(wt_change, c, "the same change over WebTransport");
    wt_b.until(|m| match m {
        ServerMsg::LiveState(s) if s.at_live && s.origin_ms == origin => Some(()),
        _ => None,
    })
    .await;
    let v = state_until(&b.inner, ev, |v| v["clock"] == "live").await;
    assert_eq!(v["live"]["originMs"], origin);

    // A node that starts serving the room later loads the setting.
    let c_node = node(&redis).await;
    let (_on_c, _) = join(&c_node, ev, "c").await;
    let v = state_until(&c_node, ev, |v| v["clock"] == "live").await;
    assert_eq!((v["live"]["originMs"].as_u64(), v["live"]["latencyMs"].as_u64()), (Some(origin), Some(4500)));
    assert_eq!(v["timeline"]["epoch"].as_u64(), Some(u64::from(c.timeline.epoch)), "no change of its own");
}

#[tokio::test]
async fn the_auto_latency_is_decided_from_every_nodes_viewers_and_does_not_flip() {
    use lockstep::config::{ClockArg, LatencyArg};
    use lockstep_protocol::{ClientMsg, Hello, LiveReport, PROTOCOL_VERSION, caps};
    let redis = Redis::start();
    let live_node = |url: String| {
        TestServer::with(move |c| {
            c.redis_url = Some(url);
            c.room_clock = ClockArg::Live;
            c.live_latency_ms = LatencyArg::Auto;
        })
    };
    let a = live_node(redis.url()).await;
    let b = live_node(redis.url()).await;
    let ev = "ev-auto-cluster";
    let clock = a.clock.unwrap();
    // One viewer on A with a near live edge (needs 1.5 s), three on B with a far one (6.5 s): the p95 is B's.
    let mut viewers = Vec::new();
    for (server, device, lag_ms) in [(&a, "a1", 1_000), (&b, "b1", 6_000), (&b, "b2", 6_000), (&b, "b3", 6_000)] {
        let mut ws = ws_binary(&server.ws_url(ev)).await;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            event_id: ev.into(),
            device_id: device.into(),
            token: None,
            caps: caps::LIVE,
        };
        send(&mut ws, &ClientMsg::Hello(hello)).await;
        welcome(&mut ws).await;
        viewers.push((ws, lag_ms));
    }
    let latency = |v: &serde_json::Value| v["live"]["latencyMs"].as_u64().unwrap_or(0);
    async fn report(clock: lockstep::clock::ServerClock, viewers: &mut [(Ws, u64)]) {
        let edge = clock.now_us() / 1000;
        for (ws, lag) in viewers.iter_mut() {
            send(ws, &ClientMsg::LiveReport(LiveReport { live_edge_ms: edge - *lag, buffer_ms: 4_000 })).await;
        }
    }
    // Report every 500 ms until both nodes are at B's need.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        report(clock, &mut viewers).await;
        let (_, va) = get_json(&a.http_url(&format!("/api/live-stream/{ev}/state"))).await;
        let (_, vb) = get_json(&b.http_url(&format!("/api/live-stream/{ev}/state"))).await;
        let everyone = |v: &serde_json::Value| v["live"]["needs"]["reporting"] == 4;
        if latency(&va) >= 6_400 && latency(&vb) == latency(&va) && va["live"]["atLive"] == true {
            // Both decide from all four viewers: A's one and B's three.
            if everyone(&va) && everyone(&vb) {
                assert!(va["live"]["needs"]["p95"].as_u64().unwrap() >= 6_400, "{va}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "the nodes did not settle on B's need: A {va} B {vb}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A, whose own viewer needs far less, never moves the room back: for the
    // next 4 s (four heartbeats and decisions) both nodes stay on it.
    let (_, settled) = get_json(&a.http_url(&format!("/api/live-stream/{ev}/state"))).await;
    let (epoch, held) = (settled["timeline"]["epoch"].clone(), latency(&settled));
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        report(clock, &mut viewers).await;
        for node in [&a, &b] {
            let (_, v) = get_json(&node.http_url(&format!("/api/live-stream/{ev}/state"))).await;
            assert_eq!((latency(&v), &v["timeline"]["epoch"]), (held, &epoch), "the room moved: {v}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Issue 15: reactions on one node reach the members of another node in one
/// of its windows (each node shares its own members' counts once).
#[tokio::test]
async fn reactions_reach_every_node() {
    let redis = Redis::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let ev = "ev-reactions-nodes";
    let hello_with = |device: &str| hello_caps(ev, device, lockstep_protocol::caps::REACTIONS);
    let mut on_a = ws_binary(&a.ws_url(ev)).await;
    send(&mut on_a, &hello_with("on-a")).await;
    welcome(&mut on_a).await;
    let mut on_b = ws_binary(&b.ws_url(ev)).await;
    send(&mut on_b, &hello_with("on-b")).await;
    welcome(&mut on_b).await;
    // Both nodes serve the room once each counts the other's member.
    count_reaches(&mut on_a, 2).await;
    count_reaches(&mut on_b, 2).await;
    for _ in 0..3 {
        send(&mut on_a, &lockstep_protocol::ClientMsg::React(lockstep_protocol::React { emoji: "👏".into() })).await;
    }
    let mut seen = 0;
    while seen < 3 {
        let r = until(&mut on_b, |g| match g {
            Got::Msg(ServerMsg::Reactions(r)) => Some(r.clone()),
            _ => None,
        })
        .await;
        seen += r.counts.iter().filter(|c| c.emoji == "👏").map(|c| c.count).sum::<u32>();
    }
    assert_eq!(seen, 3, "each reaction counted once on the other node");
}

fn chat_of(g: &Got) -> Option<lockstep_protocol::ChatMessage> {
    match g {
        Got::Msg(ServerMsg::ChatMessage(m)) => Some(m.clone()),
        _ => None,
    }
}

/// A chat message with `request_id`.
fn say(request_id: u32, text: &str) -> ClientMsg {
    ClientMsg::Chat(lockstep_protocol::Chat { request_id, text: text.into() })
}

/// Two nodes on `redis`, a host on the first and ana on the second, both
/// with chat, each counting both: (node A, node B, the host, ana, her id).
async fn chat_on_two_nodes(redis: &Redis, ev: &str) -> (TestServer, TestServer, Ws, Ws, u32) {
    use lockstep_protocol::caps::CHAT;
    let (a, b) = (node(redis).await, node(redis).await);
    let mut host = ws_binary(&a.ws_url(ev)).await;
    send(&mut host, &hello_caps(ev, "host-on-a", CHAT)).await;
    welcome(&mut host).await;
    let mut ana = ws_binary(&b.ws_url(ev)).await;
    send(&mut ana, &hello_caps(ev, "ana-on-b", CHAT)).await;
    let ana_id = welcome(&mut ana).await.member_id;
    count_reaches(&mut host, 2).await;
    (a, b, host, ana, ana_id)
}

/// A new node starts room `ev`: the first `n` messages a member joining there
/// gets (each replayed history).
async fn history_on_a_new_node(redis: &Redis, ev: &str, n: usize) -> Vec<lockstep_protocol::ChatMessage> {
    let c = node(redis).await;
    let mut late = ws_binary(&c.ws_url(ev)).await;
    send(&mut late, &hello_caps(ev, "late-on-c", lockstep_protocol::caps::CHAT)).await;
    welcome(&mut late).await;
    let mut history = Vec::new();
    while history.len() < n {
        let m = until(&mut late, chat_of).await;
        assert!(m.history);
        history.push(m);
    }
    history
}

/// SPEC §6.6 scaled out: chat from two nodes reaches both in one order (ids
/// from Redis), a mute decided on one node holds for a member of the other,
/// a deletion reaches both, and a node starting the room later replays the
/// history from the Redis stream.
#[tokio::test]
async fn chat_is_one_ordered_stream_across_nodes() {
    let redis = Redis::start();
    let ev = "ev-chat-nodes";
    let (_a, _b, mut host, mut ana, ana_id) = chat_on_two_nodes(&redis, ev).await;
    count_reaches(&mut ana, 2).await;
    // Interleaved from both nodes: both see one order.
    for i in 0..5 {
        send(&mut host, &say(10 + i, &format!("a{i}"))).await;
        send(&mut ana, &say(20 + i, &format!("b{i}"))).await;
    }
    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    while on_a.len() < 10 {
        on_a.push(until(&mut host, chat_of).await);
    }
    while on_b.len() < 10 {
        on_b.push(until(&mut ana, chat_of).await);
    }
    let order = |v: &[lockstep_protocol::ChatMessage]| v.iter().map(|m| (m.id, m.text.clone())).collect::<Vec<_>>();
    assert_eq!(order(&on_a), order(&on_b), "one order on every node");
    // Ids from Redis: the room's first from its clock (µs), then one by one.
    let first = on_a[0].id;
    assert!(first > 1_700_000_000_000_000, "{first}");
    assert_eq!(on_a.iter().map(|m| m.id).collect::<Vec<_>>(), (first..first + 10).collect::<Vec<u64>>());
    let mine: Vec<_> = on_b.iter().filter(|m| m.member_id == ana_id).map(|m| m.request_id).collect();
    assert_eq!(mine, (20..25).collect::<Vec<u32>>(), "each node's own messages answer their senders, in order");

    // The host on a mutes ana on b; a deletion reaches both.
    send(&mut host, &command(1, Action::MuteChat { member_id: ana_id, muted: true })).await;
    until(&mut ana, |g| matches!(g, Got::Msg(ServerMsg::ChatMuted(m)) if m.muted).then_some(())).await;
    send(&mut ana, &say(30, "muted?")).await;
    let code = until(&mut ana, |g| match g {
        Got::Msg(ServerMsg::Error(e)) if e.request_id == 30 => Some(e.code),
        _ => None,
    })
    .await;
    assert_eq!(code, lockstep_protocol::ErrorCode::Forbidden.as_u16());
    send(&mut host, &command(2, Action::DeleteChat { id: first })).await;
    for ws in [&mut host, &mut ana] {
        let d = until(ws, |g| match g {
            Got::Msg(ServerMsg::ChatDeleted(d)) => Some(*d),
            _ => None,
        })
        .await;
        assert_eq!(d.id, first);
    }

    // A third node starts the room: the history comes from Redis.
    let history: Vec<u64> = history_on_a_new_node(&redis, ev, 9).await.into_iter().map(|m| m.id).collect();
    assert_eq!(history, (first + 1..first + 10).collect::<Vec<u64>>(), "the deleted one left out");
}

/// SPEC §6.6 scaled out, when Redis loses its data (here `FLUSHALL`; a
/// restart without persistence or a replica that was behind taking over do
/// the same): the nodes write back what their rooms hold, so a muted member
/// stays muted, ids are not given again, and a node starting the room later
/// still replays the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_survives_redis_losing_its_data() {
    let redis = Redis::start();
    let ev = "ev-chat-lost";
    let (a, b, mut host, mut ana, ana_id) = chat_on_two_nodes(&redis, ev).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        send(&mut host, &say(10 + i, &format!("m{i}"))).await;
        ids.push(until(&mut ana, chat_of).await.id);
    }
    let last_id = ids[2];
    send(&mut host, &command(1, Action::MuteChat { member_id: ana_id, muted: true })).await;
    until(&mut ana, |g| matches!(g, Got::Msg(ServerMsg::ChatMuted(m)) if m.muted).then_some(())).await;

    let url = redis.url();
    assert_eq!(crate::kills::redis_cmd(&url, &["FLUSHALL"]).await, "+OK");
    // Both nodes notice (the ready markers are gone) and write back.
    let mut c = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let seq = format!("lockstep:chatseq:{{{ev}}}");
    let mute = format!("lockstep:chatmute:{{{ev}}}");
    let deadline = Instant::now() + WAIT;
    loop {
        let (last, muted): (Option<u64>, Vec<String>) =
            redis::pipe().get(&seq).smembers(&mute).query_async(&mut c).await.unwrap();
        if last == Some(last_id) && muted.len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "chat not written back (counter {last:?}, muted {muted:?})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in [&a, &b] {
        wait_ready(n, 200, "ready").await;
    }
    // Ana is still muted on her node; the next message follows the last one.
    send(&mut ana, &say(30, "muted?")).await;
    let code = until(&mut ana, |g| match g {
        Got::Msg(ServerMsg::Error(e)) if e.request_id == 30 => Some(e.code),
        _ => None,
    })
    .await;
    assert_eq!(code, lockstep_protocol::ErrorCode::Forbidden.as_u16(), "the mute survived");
    send(&mut host, &say(40, "after")).await;
    let m = until(&mut ana, |g| chat_of(g).filter(|m| m.text == "after")).await;
    assert_eq!(m.id, last_id + 1, "no id given twice");

    // A third node starts the room: the history came back.
    let history: Vec<(u64, String)> =
        history_on_a_new_node(&redis, ev, 4).await.into_iter().map(|m| (m.id, m.text)).collect();
    let want: Vec<(u64, String)> =
        vec![(ids[0], "m0".into()), (ids[1], "m1".into()), (ids[2], "m2".into()), (last_id + 1, "after".into())];
    assert_eq!(history, want);
}

/// Redis loses its data and a node that starts right then finds the ready
/// markers missing and sets them before a running node looks (here: one
/// `MULTI` empties Redis and sets them anew): the running node still sees the
/// loss (the markers hold other values than it read) and writes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loss_hidden_by_a_node_that_set_the_markers_anew_is_still_written_back() {
    use lockstep_protocol::caps::CHAT;
    let redis = Redis::start();
    let url = redis.url();
    let a = node(&redis).await;
    let ev = "ev-loss-hidden";
    let mut host = ws_binary(&a.ws_url(ev)).await;
    send(&mut host, &hello_caps(ev, "host", CHAT)).await;
    welcome(&mut host).await;
    send(&mut host, &say(1, "kept")).await;
    let kept = until(&mut host, chat_of).await.id;
    let mut c = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let markers: Vec<String> = redis::cmd("KEYS").arg("lockstep:ready:*").query_async(&mut c).await.unwrap();
    assert!(!markers.is_empty());
    let mut pipe = redis::pipe();
    pipe.atomic().cmd("FLUSHALL").ignore();
    for m in &markers {
        pipe.cmd("SET").arg(m).arg("another-node:fresh").ignore();
    }
    pipe.query_async::<()>(&mut c).await.unwrap();
    let seq = format!("lockstep:chatseq:{{{ev}}}");
    let deadline = Instant::now() + WAIT;
    loop {
        let last: Option<u64> = redis::cmd("GET").arg(&seq).query_async(&mut c).await.unwrap();
        if last == Some(kept) {
            break;
        }
        assert!(Instant::now() < deadline, "node A never wrote back (chat counter {last:?})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The markers stay as the other node set them.
    let v: Option<String> = redis::cmd("GET").arg(&markers[0]).query_async(&mut c).await.unwrap();
    assert_eq!(v.as_deref(), Some("another-node:fresh"));
}

/// SPEC §6.1 scaled out: the room's sync quality on either node counts the
/// members of both (their drifts shared at each heartbeat, to 0.1 ms).
#[tokio::test]
async fn sync_quality_counts_the_members_of_every_node() {
    let redis = Redis::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let ev = "ev-quality-nodes";
    let (mut on_a, w) = join(&a, ev, "viewer-a").await;
    let (mut on_b, _) = join(&b, ev, "viewer-b").await;
    count_reaches(&mut on_a, 2).await;
    let epoch = w.timeline.epoch;
    let report = |drift_us| ClientMsg::SyncReport(lockstep_protocol::SyncReport { epoch, drift_us });
    let deadline = Instant::now() + WAIT;
    for n in [&a, &b] {
        loop {
            // Sent again while waiting: a drift counts while fresh (three report intervals).
            send(&mut on_a, &report(-2_000)).await;
            send(&mut on_b, &report(45_000)).await;
            let st = get_json(&n.http_url(&format!("/api/live-stream/{ev}/state"))).await.1;
            let q = &st["sync"];
            if q["reporting"] == 2 {
                assert_eq!((q["p50Ms"].as_f64(), q["maxMs"].as_f64()), (Some(2.0), Some(45.0)), "{st}");
                assert_eq!(q["outOfSync"], 1, "{st}");
                break;
            }
            assert!(Instant::now() < deadline, "the other node's member never counted: {st}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// SPEC §6.4 scaled out: a viewer suspended on node B (an ad plays) pauses
/// the room for both nodes and node A lists it; a viewer of node A stalling
/// meanwhile holds B's wait too (the room stays paused when B's viewer
/// resumes, and resumes when A's does). (Suspensions, not buffering reports:
/// a member's reports are coalesced, its latest wins.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_holds_for_the_members_of_every_node() {
    let redis = Redis::start();
    let url = redis.url();
    let node = || {
        let url = url.clone();
        TestServer::with(move |c| {
            c.redis_url = Some(url);
            c.tick_interval_ms = 50;
            c.buffering_wait_max_ms = 60_000;
            c.wait_reasons = "buffering,interstitial".parse().unwrap();
        })
    };
    let (a, b) = (node().await, node().await);
    let ev = "ev-wait-nodes";
    let (mut host, _) = join(&a, ev, "host").await;
    let (mut on_a, w_a) = join(&a, ev, "viewer-a").await;
    let (mut on_b, w_b) = join(&b, ev, "viewer-b").await;
    count_reaches(&mut host, 3).await;
    send(&mut host, &command(1, Action::Play { position_ms: Some(0) })).await;
    for ws in [&mut on_a, &mut on_b] {
        until(ws, |g| changed(g).filter(|c| !c.timeline.paused).map(|_| ())).await;
        // Played smoothly once: its stalls may make the room wait.
        send(ws, &report(false)).await;
    }
    let state = |n: &TestServer| {
        let url = n.http_url(&format!("/api/live-stream/{ev}/state"));
        async move { get_json(&url).await.1 }
    };
    let stalled = |st: &serde_json::Value| -> Vec<u64> {
        st["suspended"]
            .as_array()
            .map(|v| v.iter().filter_map(|s| s["memberId"].as_u64()).collect())
            .unwrap_or_default()
    };
    // Until `node`'s state lists exactly `ids` as stalled; returns it.
    async fn listed(
        n: &TestServer,
        ev: &str,
        ids: &[u64],
        stalled: impl Fn(&serde_json::Value) -> Vec<u64>,
    ) -> serde_json::Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let st = get_json(&n.http_url(&format!("/api/live-stream/{ev}/state"))).await.1;
            if stalled(&st) == ids {
                return st;
            }
            assert!(Instant::now() < deadline, "stalled {:?}, not {ids:?}: {st}", stalled(&st));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (id_a, id_b) = (u64::from(w_a.member_id), u64::from(w_b.member_id));

    let ad = || ClientMsg::Suspend(lockstep_protocol::Suspend { reason: "interstitial".into() });
    send(&mut on_b, &ad()).await;
    let wait = until(&mut host, |g| changed(g).filter(|c| c.reason == ChangeReason::BufferingWait)).await;
    assert!(wait.timeline.paused);
    let st = listed(&a, ev, &[id_b], stalled).await;
    assert_eq!(
        (st["bufferingWait"].clone(), st["suspended"][0]["reason"].clone()),
        (true.into(), "interstitial".into()),
        "{st}"
    );

    // A's viewer stalls during B's wait; once B knows, B's viewer recovers: still paused.
    send(&mut on_a, &ad()).await;
    listed(&b, ev, &[id_a.min(id_b), id_a.max(id_b)], stalled).await;
    send(&mut on_b, &ClientMsg::Resume).await;
    let st = listed(&a, ev, &[id_a], stalled).await;
    assert_eq!(st["bufferingWait"], true, "{st}");
    let st_b = listed(&b, ev, &[id_a], stalled).await;
    assert_eq!(st_b["timeline"]["paused"], true, "B's wait holds for A's viewer: {st_b}");
    // A node that loads the room now (its first member joins there) lists the
    // stall too: it is stored with the member, not only published.
    let c = node().await;
    let (_on_c, _) = join(&c, ev, "viewer-c").await;
    let st_c = listed(&c, ev, &[id_a], stalled).await;
    assert_eq!(
        (st_c["suspended"][0]["reason"].clone(), st_c["bufferingWait"].clone()),
        ("interstitial".into(), true.into()),
        "{st_c}"
    );
    send(&mut on_a, &ClientMsg::Resume).await;
    let resumed = until(&mut host, |g| changed(g).filter(|c| c.reason == ChangeReason::Resume)).await;
    assert!(!resumed.timeline.paused);
    let st = state(&a).await;
    assert_eq!((st["bufferingWait"].clone(), stalled(&st)), (false.into(), vec![]), "{st}");
    listed(&c, ev, &[], stalled).await;
}

/// SPEC §6.7 scaled out: a switch and the playlist made on one node reach
/// the other node's members, and a node starting the room later loads them
/// from Redis.
#[tokio::test]
async fn media_switches_reach_every_node() {
    use lockstep_protocol::caps::MEDIA;
    use lockstep_protocol::{ClientMsg, MediaCommand, MediaItem, MediaOp};
    let redis = Redis::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let ev = "ev-media-nodes";
    let mut host = ws_binary(&a.ws_url(ev)).await;
    send(&mut host, &hello_caps(ev, "host-on-a", MEDIA)).await;
    welcome(&mut host).await;
    let mut on_b = ws_binary(&b.ws_url(ev)).await;
    send(&mut on_b, &hello_caps(ev, "viewer-on-b", MEDIA)).await;
    welcome(&mut on_b).await;
    count_reaches(&mut host, 2).await;
    count_reaches(&mut on_b, 2).await;
    let item = MediaItem { media_id: "trailer".into(), url: None, title: Some("Trailer".into()), duration_ms: None };
    send(&mut host, &ClientMsg::Media(MediaCommand { request_id: 1, op: MediaOp::Set { item } })).await;
    let m = until(&mut on_b, |g| match g {
        Got::Msg(ServerMsg::MediaChanged(m)) => Some(m.clone()),
        _ => None,
    })
    .await;
    assert_eq!(m.item.map(|i| i.media_id), Some("trailer".into()));
    let c = node(&redis).await;
    let mut on_c = ws_binary(&c.ws_url(ev)).await;
    send(&mut on_c, &hello_caps(ev, "viewer-on-c", MEDIA)).await;
    welcome(&mut on_c).await;
    let m = until(&mut on_c, |g| match g {
        Got::Msg(ServerMsg::MediaChanged(m)) => Some(m.clone()),
        _ => None,
    })
    .await;
    assert_eq!(m.item.map(|i| i.media_id), Some("trailer".into()), "loaded from Redis");
}

/// The lead across nodes (`src/cluster/reach.rs`): a far viewer on node B
/// lengthens a play its host schedules on node A, so the change reaches it
/// before it takes effect.
#[tokio::test]
async fn a_far_viewer_on_another_node_lengthens_the_lead_of_a_play_scheduled_here() {
    let redis = Redis::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let ev = "ev-far-node";
    let (mut host, _) = join(&a, ev, "host-on-a").await;
    // 150 ms each way: a 300 ms round trip, beyond the 100 ms lead.
    let far = delay_proxy(b.http, Duration::from_millis(150)).await;
    let mut viewer = ws_binary(&format!("ws://{far}/api/live-stream/{ev}")).await;
    send(&mut viewer, &hello(ev, "far-on-b")).await;
    welcome(&mut viewer).await;
    // B times the viewer's round trip (its first ping a second in) and shares
    // it at its next heartbeat; A takes it in at its own. Reading both
    // answers their pings.
    let deadline = Instant::now() + WAIT;
    let reach = loop {
        tokio::select! {
            _ = next(&mut host) => {}
            _ = next(&mut viewer) => {}
        }
        let (_, state) = get_json(&a.http_url(&format!("/api/live-stream/{ev}/state"))).await;
        if state["reach"]["remote"] == 1 && state["reach"]["measured"] == 2 {
            break state["reach"].clone();
        }
        assert!(Instant::now() < deadline, "A never heard B's round trips: {state}");
    };
    let rtt = reach["rttP95Ms"].as_f64().unwrap();
    assert!((300.0..500.0).contains(&rtt), "the far viewer's round trip, seen on A: {reach}");
    assert_eq!(reach["leadMs"].as_f64().unwrap(), rtt, "A's lead is B's viewer's round trip: {reach}");
    send(&mut host, &command(1, Action::Play { position_ms: None })).await;
    let c = until(&mut viewer, changed).await;
    let now = a.clock.unwrap().now_us();
    assert!(c.effective_at_us > now, "the play reached the far viewer {} µs late", now - c.effective_at_us);
    assert!(c.effective_at_us - now >= 100_000, "with time to spare: {} µs", c.effective_at_us - now);
    // The viewer gone, A's lead is back to the configured one within a heartbeat or two.
    drop(viewer);
    let state = state_until(&a, ev, |s| s["reach"]["remote"] == 0).await;
    assert_eq!(state["reach"]["leadMs"].as_f64(), Some(100.0), "{state}");
}
