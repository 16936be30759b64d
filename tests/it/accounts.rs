//! Accounts and control: tokens on every transport, the session API, device
//! limits, invitations, roles, rate limits, the OpenAPI document.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use lockstep::auth::{Authenticator, Claims, KeySource, Plan, unix_now};
use lockstep_protocol::{
    Action, ChangeReason, ClientMsg, ControlPolicy, ErrorCode, Hello, PROTOCOL_VERSION, Role, ServerMsg,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

/// The secret every test server here verifies with.
pub const SECRET: &str = "lockstep-test-secret-0123456789abcdef";

pub fn authn(aud: Option<&str>) -> Authenticator {
    Authenticator::new(KeySource::Secret(SECRET.as_bytes().to_vec()), aud.map(Into::into), None, false).unwrap()
}

/// A token for `sub` on `plan`.
pub fn token(sub: &str, plan: Plan) -> String {
    let a = authn(None);
    a.mint(&a.claims_for(sub, plan, 3600)).unwrap()
}

pub fn token_with(f: impl FnOnce(&mut Claims)) -> String {
    let a = authn(None);
    let mut c = a.claims_for("someone", Plan::Free, 3600);
    f(&mut c);
    a.mint(&c).unwrap()
}

/// A server that requires tokens (no dev mode).
pub async fn secure_server(tweak: impl FnOnce(&mut lockstep::config::Config)) -> TestServer {
    TestServer::with(|c| {
        c.dev = false;
        c.jwt_secret = Some(SECRET.into());
        tweak(c);
    })
    .await
}

/// One HTTP/1.1 request over a fresh connection: status, headers, JSON body.
pub async fn http(
    server: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Vec<(String, String)>, Value) {
    let mut s = TcpStream::connect(server.http).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", server.http);
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status: u16 = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())))
        .collect();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let raw = if chunked { dechunk(rest) } else { rest.to_owned() };
    (status, headers, serde_json::from_str(&raw).unwrap_or(Value::String(raw)))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[(n + 2).min(rest.len())..];
    }
    out
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

async fn start(server: &TestServer, tok: &str, event: &str, device: &str) -> (u16, Value) {
    let (s, _, b) = http(
        server,
        "POST",
        "/api/live-stream/session",
        Some(tok),
        Some(json!({"eventId": event, "deviceId": device})),
    )
    .await;
    (s, b)
}

pub fn hello_with(event: &str, device: &str, token: Option<&str>) -> ClientMsg {
    ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        event_id: event.into(),
        device_id: device.into(),
        token: token.map(Into::into),
        caps: 0,
    })
}

/// Joins over binary WebSocket with a token in Hello.
pub async fn join_as(server: &TestServer, event: &str, device: &str, tok: &str) -> (Ws, lockstep_protocol::Welcome) {
    let mut ws = ws_binary(&server.ws_url(event)).await;
    send(&mut ws, &hello_with(event, device, Some(tok))).await;
    let w = welcome(&mut ws).await;
    (ws, w)
}

#[tokio::test]
async fn websocket_token_matrix() {
    let server = secure_server(|c| c.jwt_audience = Some("lockstep".into())).await;
    let good = {
        let a = authn(Some("lockstep"));
        a.mint(&a.claims_for("alice", Plan::Free, 60)).unwrap()
    };
    let cases: Vec<(&str, Option<String>, u16)> = vec![
        ("missing", None, ErrorCode::Unauthorized.as_u16()),
        (
            "forged",
            Some({
                let other =
                    Authenticator::new(KeySource::Secret(vec![9; 32]), Some("lockstep".into()), None, false).unwrap();
                other.mint(&other.claims_for("alice", Plan::Premium, 60)).unwrap()
            }),
            ErrorCode::Unauthorized.as_u16(),
        ),
        (
            "expired",
            Some({
                let a = authn(Some("lockstep"));
                let mut c = a.claims_for("alice", Plan::Free, 60);
                c.exp = unix_now() - 600;
                a.mint(&c).unwrap()
            }),
            ErrorCode::TokenExpired.as_u16(),
        ),
        ("wrong audience", Some(token("alice", Plan::Free)), ErrorCode::Unauthorized.as_u16()),
        ("garbage", Some("x.y.z".into()), ErrorCode::Unauthorized.as_u16()),
    ];
    for (name, tok, code) in cases {
        // In Hello.
        let mut ws = ws_binary(&server.ws_url("ev-tok")).await;
        send(&mut ws, &hello_with("ev-tok", "d1", tok.as_deref())).await;
        assert_eq!(error_code(&mut ws).await, code, "{name} (Hello)");
        assert_eq!(closed(&mut ws).await, Some(code), "{name} (Hello)");
        // In the URL, binary and JSON dialects.
        if let Some(t) = &tok {
            let url = format!("{}?access_token={t}", server.ws_url("ev-tok"));
            let mut ws = ws_binary(&url).await;
            send(&mut ws, &hello_with("ev-tok", "d1", None)).await;
            assert_eq!(closed(&mut ws).await, Some(code), "{name} (URL)");
            let mut legacy = ws_json(&url).await;
            assert_eq!(closed(&mut legacy).await, Some(code), "{name} (JSON URL)");
        } else {
            let mut legacy = ws_json(&server.ws_url("ev-tok")).await;
            assert_eq!(closed(&mut legacy).await, Some(code), "{name} (JSON)");
        }
    }
    // A good token works in Hello, in the URL, and for the JSON dialect.
    let (_ws, w) = join_as(&server, "ev-tok", "d1", &good).await;
    assert_eq!(w.role, Role::Host);
    let mut url_ws = ws_binary(&format!("{}?access_token={good}", server.ws_url("ev-tok"))).await;
    send(&mut url_ws, &hello_with("ev-tok", "d1", None)).await;
    welcome(&mut url_ws).await;
    let mut legacy = ws_json(&format!("{}?access_token={good}&deviceId=d1", server.ws_url("ev-tok"))).await;
    until(&mut legacy, |g| matches!(g, Got::Text(v) if v["type"] == "playbackSync").then_some(())).await;
}

#[tokio::test]
async fn rest_token_matrix_and_dev_token() {
    let server = secure_server(|_| {}).await;
    let (s, h, b) = http(&server, "GET", "/api/account/devices", None, None).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("missing_token")));
    assert_eq!(header(&h, "www-authenticate"), Some("Bearer"));
    let expired = token_with(|c| c.exp = unix_now() - 600);
    let (s, _, b) = http(&server, "GET", "/api/account/devices", Some(&expired), None).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("token_expired")));
    let (s, _, b) = http(&server, "GET", "/api/account/devices", Some("forged.token.here"), None).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_token")));
    let (s, _, b) = http(&server, "GET", "/api/account/devices", Some(&token("u", Plan::Free)), None).await;
    assert_eq!(s, 200);
    assert_eq!(b["maxDevices"], 1);
    // No dev tokens without --dev.
    assert_eq!(http(&server, "POST", "/api/dev/token", None, Some(json!({}))).await.0, 404);

    let dev = TestServer::start().await;
    let (s, _, b) = http(&dev, "POST", "/api/dev/token", None, Some(json!({"sub": "demo", "plan": "premium"}))).await;
    assert_eq!(s, 200);
    let t = b["token"].as_str().unwrap().to_owned();
    let (s, _, b) = http(&dev, "GET", "/api/account/devices", Some(&t), None).await;
    assert_eq!((s, b["maxDevices"].as_u64()), (200, Some(4)));
}

#[tokio::test]
async fn session_api_lifecycle() {
    let server = secure_server(|_| {}).await;
    let alice = token("alice", Plan::Free);
    let (s, b) = start(&server, &alice, "ev-s", "phone").await;
    assert_eq!(s, 201, "{b}");
    let id = b["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(b["eventId"], "ev-s");
    assert!(b["expiresAt"].as_u64().unwrap() > unix_now() * 1000);
    assert_eq!(b["transports"]["websocket"]["url"], format!("ws://{}/api/live-stream/ev-s", server.http));
    // Heartbeats keep it alive and record the fallback position.
    let (s, _, hb) = http(
        &server,
        "POST",
        &format!("/api/live-stream/session/{id}/heartbeat"),
        Some(&alice),
        Some(json!({"position": 12.5, "buffering": false})),
    )
    .await;
    assert_eq!((s, hb["sessionId"].as_str()), (200, Some(id.as_str())));
    // Someone else's session is not theirs to touch.
    let bob = token("bob", Plan::Free);
    let (s, _, _) =
        http(&server, "POST", &format!("/api/live-stream/session/{id}/heartbeat"), Some(&bob), Some(json!({}))).await;
    assert_eq!(s, 403);
    assert_eq!(http(&server, "DELETE", &format!("/api/live-stream/session/{id}"), Some(&bob), None).await.0, 403);
    // Bad input.
    let (s, _, _) =
        http(&server, "POST", "/api/live-stream/session", Some(&alice), Some(json!({"eventId": "", "deviceId": "x"})))
            .await;
    assert_eq!(s, 400);
    let (s, _, _) = http(&server, "POST", "/api/live-stream/session", Some(&alice), Some(json!({"nope": 1}))).await;
    assert!((400..500).contains(&s), "{s}");
    // End it; it is gone.
    assert_eq!(http(&server, "DELETE", &format!("/api/live-stream/session/{id}"), Some(&alice), None).await.0, 204);
    assert_eq!(http(&server, "DELETE", &format!("/api/live-stream/session/{id}"), Some(&alice), None).await.0, 404);
    let (s, _, _) =
        http(&server, "POST", &format!("/api/live-stream/session/{id}/heartbeat"), Some(&alice), Some(json!({}))).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn sessions_expire_when_idle_and_free_the_device() {
    let server = secure_server(|c| c.session_idle_ms = 400).await;
    let alice = token("alice", Plan::Free);
    let (s, b) = start(&server, &alice, "ev-idle", "tv").await;
    assert_eq!(s, 201);
    let id = b["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(start(&server, &alice, "ev-idle", "phone").await.0, 409);
    let deadline = Instant::now() + WAIT;
    loop {
        let (s, _) = start(&server, &alice, "ev-idle", "phone").await;
        if s == 201 {
            break;
        }
        assert!(Instant::now() < deadline, "the idle session never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, _, _) =
        http(&server, "POST", &format!("/api/live-stream/session/{id}/heartbeat"), Some(&alice), Some(json!({}))).await;
    assert_eq!(s, 404, "the expired session is gone");
}

/// Found by the soak (issue 16): a device connected but silent (no report, no
/// ping) let its session idle out while it kept watching, and its slot went
/// to another device. An open connection keeps its session alive.
#[tokio::test]
async fn a_silent_connection_keeps_its_device_slot() {
    let server = secure_server(|c| c.session_idle_ms = 400).await;
    let alice = token("alice", Plan::Free);
    let (_tv, _) = join_as(&server, "ev-silent", "tv", &alice).await;
    // Well past the idle timeout, with nothing sent on the connection.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(start(&server, &alice, "ev-silent", "phone").await.0, 409, "the connected device keeps its slot");
    let mut phone = ws_binary(&server.ws_url("ev-silent")).await;
    send(&mut phone, &hello_with("ev-silent", "phone", Some(&alice))).await;
    assert_eq!(closed(&mut phone).await, Some(4023));
}

#[tokio::test]
async fn device_limit_at_the_boundary_and_under_concurrency() {
    let server = secure_server(|_| {}).await;
    let free = token("frank", Plan::Free);
    let (s, first) = start(&server, &free, "ev-d", "tv").await;
    assert_eq!(s, 201);
    // The same device resumes its session and slot.
    let (s, again) = start(&server, &free, "ev-d", "tv").await;
    assert_eq!((s, &again["sessionId"]), (201, &first["sessionId"]));
    let (s, b) = start(&server, &free, "ev-d", "phone").await;
    assert_eq!((s, b["error"].as_str()), (409, Some("device_limit")));
    assert_eq!(b["devices"][0]["deviceId"], "tv");
    assert_eq!(b["devices"][0]["eventIds"], json!(["ev-d"]));
    // A max_devices claim overrides the plan.
    let two = token_with(|c| {
        c.sub = "frank".into();
        c.max_devices = Some(2);
    });
    assert_eq!(start(&server, &two, "ev-d", "phone").await.0, 201);

    // Ten devices of a premium user (limit 4) start at once: exactly four win.
    let premium = token("pat", Plan::Premium);
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (http_addr, t) = (server.http, premium.clone());
        tasks.push(tokio::spawn(async move {
            let s = TestServerRef(http_addr);
            s.start(&t, "ev-d", &format!("dev{i}")).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            201 => ok += 1,
            409 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 4);
    let (_, _, devs) = http(&server, "GET", "/api/account/devices", Some(&premium), None).await;
    assert_eq!(devs["devices"].as_array().unwrap().len(), 4);
}

/// Just enough of a server handle to make requests from spawned tasks.
struct TestServerRef(std::net::SocketAddr);

impl TestServerRef {
    async fn start(&self, tok: &str, event: &str, device: &str) -> u16 {
        let mut s = TcpStream::connect(self.0).await.unwrap();
        let body = json!({"eventId": event, "deviceId": device}).to_string();
        let req = format!(
            "POST /api/live-stream/session HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.0,
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf).split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

#[tokio::test]
async fn removing_a_device_closes_its_connections() {
    let server = secure_server(|_| {}).await;
    let alice = token("alice", Plan::Premium);
    assert_eq!(start(&server, &alice, "ev-rm", "tablet").await.0, 201);
    let (mut tablet, _) = join_as(&server, "ev-rm", "tablet", &alice).await;
    let (mut phone, _) = join_as(&server, "ev-rm", "phone", &alice).await;
    let (s, _, devs) = http(&server, "GET", "/api/account/devices", Some(&alice), None).await;
    assert_eq!(s, 200);
    let ids: Vec<_> =
        devs["devices"].as_array().unwrap().iter().map(|d| d["deviceId"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, vec!["phone", "tablet"], "realtime joins hold device slots too");
    assert_eq!(http(&server, "DELETE", "/api/account/devices/tablet", Some(&alice), None).await.0, 204);
    assert_eq!(closed(&mut tablet).await, Some(ErrorCode::DeviceRevoked.as_u16()));
    // The other device is untouched.
    send(&mut phone, &ClientMsg::Ping(lockstep_protocol::Ping { client_time: 1 })).await;
    until(&mut phone, |g| matches!(g, Got::Msg(ServerMsg::Pong(_))).then_some(())).await;
    assert_eq!(http(&server, "DELETE", "/api/account/devices/tablet", Some(&alice), None).await.0, 404);
    // Another user cannot remove it.
    assert_eq!(
        http(&server, "DELETE", "/api/account/devices/phone", Some(&token("mallory", Plan::Free)), None).await.0,
        404
    );
}

#[tokio::test]
async fn realtime_joins_respect_the_device_limit() {
    let server = secure_server(|_| {}).await;
    let free = token("fiona", Plan::Free);
    let (_tv, _) = join_as(&server, "ev-rl", "tv", &free).await;
    let mut ws = ws_binary(&server.ws_url("ev-rl")).await;
    send(&mut ws, &hello_with("ev-rl", "phone", Some(&free))).await;
    assert_eq!(error_code(&mut ws).await, ErrorCode::DeviceLimit.as_u16());
    assert_eq!(closed(&mut ws).await, Some(ErrorCode::DeviceLimit.as_u16()));
}

#[tokio::test]
async fn invitation_lifecycle_lands_the_invitee_on_the_hosts_position() {
    let server = secure_server(|_| {}).await;
    let host = token("hannah", Plan::Premium);
    let guest = token("gus", Plan::Free);
    // Free users cannot invite.
    let (s, _, b) = http(&server, "POST", "/api/live-stream/ev-inv/invitations", Some(&guest), Some(json!({}))).await;
    assert_eq!((s, b["error"].as_str()), (403, Some("premium_required")));
    let (s, _, inv) = http(
        &server,
        "POST",
        "/api/live-stream/ev-inv/invitations",
        Some(&host),
        Some(json!({"maxUses": 1, "ttl": 600})),
    )
    .await;
    assert_eq!(s, 201, "{inv}");
    let id = inv["invitationId"].as_str().unwrap().to_owned();
    let room = inv["roomId"].as_str().unwrap().to_owned();
    assert!(inv["url"].as_str().unwrap().contains(&id));
    // The inviter hosts the party room and plays from 5:00.
    let (mut h, w) = join_as(&server, &room, "host-tv", &host).await;
    assert_eq!(w.role, Role::Host);
    send(&mut h, &command(1, Action::Play { position_ms: Some(300_000) })).await;
    until(&mut h, |g| {
        matches!(g, Got::Msg(ServerMsg::TimelineChanged(c)) if c.reason == ChangeReason::Play).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    // An uninvited user cannot get in.
    let mut intruder = ws_binary(&server.ws_url(&room)).await;
    send(&mut intruder, &hello_with(&room, "x", Some(&token("ivan", Plan::Premium)))).await;
    assert_eq!(closed(&mut intruder).await, Some(ErrorCode::NotInvited.as_u16()));
    // Anyone can look at the invitation.
    let (s, _, view) = http(&server, "GET", &format!("/api/invitations/{id}"), None, None).await;
    assert_eq!((s, view["eventId"].as_str(), view["host"].as_str()), (200, Some("ev-inv"), Some("hannah")));
    // Accepting gives a session in the host's room at the host's position.
    let (s, _, sess) = http(
        &server,
        "POST",
        &format!("/api/invitations/{id}/accept"),
        Some(&guest),
        Some(json!({"deviceId": "g-phone"})),
    )
    .await;
    assert_eq!(s, 201, "{sess}");
    assert_eq!(sess["eventId"], room);
    let pos = sess["position"].as_f64().unwrap();
    assert!((300.2..302.0).contains(&pos), "invitee lands on the host's position: {pos}");
    let (_g, gw) = join_as(&server, &room, "g-phone", &guest).await;
    assert_eq!(gw.role, Role::Viewer);
    let live = gw.timeline.position_us_at(gw.server_time_us) as f64 / 1e6;
    assert!((300.2..302.0).contains(&live), "{live}");
    // Used up.
    let (s, _, b) = http(
        &server,
        "POST",
        &format!("/api/invitations/{id}/accept"),
        Some(&token("gwen", Plan::Free)),
        Some(json!({"deviceId": "d"})),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (410, Some("invitation_gone")));
    assert_eq!(http(&server, "GET", &format!("/api/invitations/{id}"), None, None).await.0, 410);
    // Revocation: only the host, then it is gone.
    let (_, _, inv2) = http(&server, "POST", "/api/live-stream/ev-inv/invitations", Some(&host), Some(json!({}))).await;
    let id2 = inv2["invitationId"].as_str().unwrap().to_owned();
    assert_eq!(inv2["roomId"], room, "one party room per host and event");
    assert_eq!(http(&server, "DELETE", &format!("/api/invitations/{id2}"), Some(&guest), None).await.0, 403);
    assert_eq!(http(&server, "DELETE", &format!("/api/invitations/{id2}"), Some(&host), None).await.0, 204);
    let (s, _, _) = http(
        &server,
        "POST",
        &format!("/api/invitations/{id2}/accept"),
        Some(&guest),
        Some(json!({"deviceId": "g-phone"})),
    )
    .await;
    assert_eq!(s, 410);
    // Expiry.
    let (_, _, inv3) =
        http(&server, "POST", "/api/live-stream/ev-inv/invitations", Some(&host), Some(json!({"ttl": 1}))).await;
    let id3 = inv3["invitationId"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(http(&server, "GET", &format!("/api/invitations/{id3}"), None, None).await.0, 410);
    assert_eq!(http(&server, "GET", "/api/invitations/nope", None, None).await.0, 404);
}

#[tokio::test]
async fn host_of_claims_roles_and_policy_over_websocket() {
    let server = secure_server(|c| c.max_devices_free = 3).await;
    let viewer_tok = token("vera", Plan::Free);
    let broadcaster = token_with(|c| {
        c.sub = "bea".into();
        c.host_of = vec!["ev-role".into()];
    });
    // A viewer joins first and hosts by the fallback, until the broadcaster,
    // whose claim makes her the host, arrives.
    let (mut v, vw) = join_as(&server, "ev-role", "v1", &viewer_tok).await;
    assert_eq!(vw.role, Role::Host, "the first joiner hosts while nobody with a claim is there");
    let (mut h, hw) = join_as(&server, "ev-role", "b1", &broadcaster).await;
    assert_eq!(hw.role, Role::Host);
    until(&mut v, |g| {
        matches!(g, Got::Msg(ServerMsg::RoleChanged(r)) if r.member_id == vw.member_id && r.role == Role::Viewer)
            .then_some(())
    })
    .await;
    send(&mut v, &command(1, Action::Seek { position_ms: 9_000 })).await;
    assert_eq!(error_code(&mut v).await, ErrorCode::Forbidden.as_u16());
    send(&mut v, &command(2, Action::SetPolicy { policy: ControlPolicy::Everyone })).await;
    assert_eq!(error_code(&mut v).await, ErrorCode::Forbidden.as_u16());
    // The host promotes the viewer; now it may seek.
    send(&mut h, &command(3, Action::SetRole { member_id: vw.member_id, role: Role::CoHost })).await;
    until(&mut v, |g| matches!(g, Got::Msg(ServerMsg::RoleChanged(r)) if r.role == Role::CoHost).then_some(())).await;
    send(&mut v, &command(4, Action::Seek { position_ms: 9_000 })).await;
    let c = until(&mut h, |g| match g {
        Got::Msg(ServerMsg::TimelineChanged(c)) => Some(c.clone()),
        _ => None,
    })
    .await;
    assert_eq!((c.by, c.timeline.position_ms), (vw.member_id, 9_000));
    // Demoted, then the room opens to everyone.
    send(&mut h, &command(5, Action::SetRole { member_id: vw.member_id, role: Role::Viewer })).await;
    until(&mut v, |g| matches!(g, Got::Msg(ServerMsg::RoleChanged(r)) if r.role == Role::Viewer).then_some(())).await;
    send(&mut h, &command(6, Action::SetPolicy { policy: ControlPolicy::Everyone })).await;
    until(&mut v, |g| {
        matches!(g, Got::Msg(ServerMsg::PolicyChanged(p)) if p.policy == ControlPolicy::Everyone).then_some(())
    })
    .await;
    send(&mut v, &command(7, Action::Seek { position_ms: 1_000 })).await;
    until(&mut h, |g| {
        matches!(g, Got::Msg(ServerMsg::TimelineChanged(c)) if c.timeline.position_ms == 1_000).then_some(())
    })
    .await;
}

#[tokio::test]
async fn per_ip_rate_limits_answer_429_with_retry_after() {
    let server = secure_server(|c| {
        c.rest_per_ip_per_sec = 2;
        c.rest_burst = 3;
        c.connects_per_ip_per_sec = 1;
        c.connect_burst = 2;
    })
    .await;
    let t = token("r", Plan::Free);
    let mut statuses = Vec::new();
    let mut retry = None;
    for _ in 0..6 {
        let (s, h, _) = http(&server, "GET", "/api/account/devices", Some(&t), None).await;
        if s == 429 {
            retry = header(&h, "retry-after").map(str::to_owned);
        }
        statuses.push(s);
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    // WebSocket connection attempts.
    let mut refused = false;
    for _ in 0..5 {
        if let Err(tokio_tungstenite::tungstenite::Error::Http(r)) =
            tokio_tungstenite::connect_async(server.ws_url("ev-rate")).await
        {
            assert_eq!(r.status().as_u16(), 429);
            assert!(r.headers().get("retry-after").is_some());
            refused = true;
        }
    }
    assert!(refused, "connection attempts are limited per IP");
}

#[tokio::test]
async fn openapi_document_covers_every_route() {
    let server = TestServer::start().await;
    let (s, _, doc) = http(&server, "GET", "/api/openapi.json", None, None).await;
    assert_eq!(s, 200);
    let paths = doc["paths"].as_object().expect("paths");
    let expected = [
        ("get", "/api/health"),
        ("get", "/api/live-stream/{event_id}"),
        ("get", "/api/live-stream/{event_id}/state"),
        ("get", "/metrics"),
        ("get", "/api/certificate"),
        ("get", "/certificate.sha256"),
        ("get", "/api/openapi.json"),
        ("post", "/api/live-stream/session"),
        ("post", "/api/live-stream/session/{session_id}/heartbeat"),
        ("delete", "/api/live-stream/session/{session_id}"),
        ("get", "/api/account/devices"),
        ("delete", "/api/account/devices/{device_id}"),
        ("post", "/api/live-stream/{event_id}/invitations"),
        ("get", "/api/invitations/{id}"),
        ("delete", "/api/invitations/{id}"),
        ("post", "/api/invitations/{id}/accept"),
        ("post", "/api/dev/token"),
        ("get", "/"),
        ("get", "/watch/{event_id}"),
        ("get", "/demo/video.webm"),
        ("get", "/demo/{file}"),
        ("get", "/client/lockstep.js"),
        ("get", "/client/src/{path}"),
    ];
    for (method, path) in expected {
        let op = &paths.get(path).unwrap_or_else(|| panic!("{path} missing from the document"))[method];
        assert!(op.is_object(), "{method} {path} missing");
        assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path} has no responses");
    }
    // And every documented path is really routed: a request never meets the
    // router's own 404 (which has an empty body).
    for (path, ops) in paths {
        let concrete = path
            .replace("{event_id}", "ev-doc")
            .replace("{session_id}", "s")
            .replace("{device_id}", "d")
            .replace("{id}", "i");
        for method in ops.as_object().unwrap().keys() {
            if path == "/api/live-stream/{event_id}" {
                continue; // the WebSocket upgrade answers plain GETs with 400
            }
            let (s, _, body) = http(&server, &method.to_uppercase(), &concrete, None, Some(json!({}))).await;
            assert!(
                !(s == 404 && body == Value::String(String::new())),
                "{method} {path} is documented but not routed"
            );
        }
    }
}

#[tokio::test]
async fn json_dialect_clients_need_a_token_too() {
    let server = secure_server(|_| {}).await;
    let mut legacy = ws_json(&server.ws_url("ev-j")).await;
    legacy.send(Message::Text(r#"{"type":"playbackSync","position":1}"#.into())).await.ok();
    assert_eq!(closed(&mut legacy).await, Some(ErrorCode::Unauthorized.as_u16()));
}

#[tokio::test]
async fn the_token_subcommand_mints_tokens_the_server_accepts() {
    let server = secure_server(|_| {}).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args([
            "token",
            "--sub",
            "olga",
            "--plan",
            "premium",
            "--ttl",
            "1h",
            "--max-devices",
            "2",
            "--host-of",
            "ev-op",
        ])
        .env("LOCKSTEP_JWT_SECRET", SECRET)
        .output()
        .expect("run lockstep token");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let minted = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let claims = authn(None).verify(&minted).expect("a valid token");
    assert_eq!((claims.sub.as_str(), claims.plan, claims.max_devices), ("olga", Plan::Premium, Some(2)));
    assert!(claims.hosts("ev-op"));
    assert!((3500..=3600).contains(&(claims.exp - unix_now())), "ttl 1h");
    let (s, _, b) = http(&server, "GET", "/api/account/devices", Some(&minted), None).await;
    assert_eq!((s, b["maxDevices"].as_u64()), (200, Some(2)));
    // Without a secret it refuses to mint.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["token", "--sub", "olga"])
        .env_remove("LOCKSTEP_JWT_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
}
