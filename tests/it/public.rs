//! What a node announces: `--public-url` and `--public-webtransport-url`
//! (session API, invitations, `/api/certificate`) whatever the request's
//! `Host`, the `Host`-based links without them, and whether certificate
//! hashes apply (generated certificates) or not (a CA's 90-day certificate).

use lockstep::auth::Plan;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::accounts::{SECRET, token};
use crate::common::*;
use crate::pki::Ca;

/// An internal name a load balancer might forward as `Host`.
const INTERNAL_HOST: &str = "node-7.internal:8080";

/// One request with the given `Host`: status and JSON body.
async fn request(
    server: &TestServer,
    method: &str,
    path: &str,
    host: &str,
    tok: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut s = TcpStream::connect(server.http).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(t) = tok {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    (status, serde_json::from_str(rest).unwrap_or(Value::String(rest.to_owned())))
}

async fn server(tweak: impl FnOnce(&mut lockstep::config::Config)) -> TestServer {
    TestServer::with(|c| {
        c.dev = false;
        c.jwt_secret = Some(SECRET.into());
        tweak(c);
    })
    .await
}

/// A session on `event` and an invitation to it, both asked with `Host: INTERNAL_HOST`.
async fn links(server: &TestServer, event: &str) -> (Value, Value, String) {
    let host = token("host-user", Plan::Premium);
    let (status, cert) = request(server, "GET", "/api/certificate", INTERNAL_HOST, None, None).await;
    assert_eq!(status, 200, "{cert}");
    let body = json!({"eventId": event, "deviceId": "d1"});
    let (status, session) =
        request(server, "POST", "/api/live-stream/session", INTERNAL_HOST, Some(&host), Some(body)).await;
    assert_eq!(status, 201, "{session}");
    let path = format!("/api/live-stream/{event}/invitations");
    let (status, inv) = request(server, "POST", &path, INTERNAL_HOST, Some(&host), Some(json!({}))).await;
    assert_eq!(status, 201, "{inv}");
    (cert, session["transports"].clone(), inv["url"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn the_configured_public_urls_are_announced_whatever_the_host() {
    let s = server(|c| {
        c.public_url = Some("https://sync.platform.example".into());
        c.public_webtransport_url = Some("https://sync.platform.example:443".into());
    })
    .await;
    let (cert, transports, invite) = links(&s, "ev-public").await;
    assert_eq!(cert["webtransport"], "https://sync.platform.example:443");
    assert_eq!(transports["websocket"]["url"], "wss://sync.platform.example/api/live-stream/ev-public");
    assert_eq!(transports["webtransport"]["url"], "https://sync.platform.example:443/api/live-stream/ev-public");
    assert!(invite.starts_with("https://sync.platform.example/watch/ev-public?invite="), "{invite}");
}

#[tokio::test]
async fn a_public_url_alone_keeps_its_path_prefix_and_names_the_webtransport_host() {
    let s = server(|c| c.public_url = Some("http://www.platform.example/sync/".into())).await;
    let (cert, transports, invite) = links(&s, "ev-prefix").await;
    let wt = format!("https://www.platform.example:{}", s.quic.port());
    assert_eq!(cert["webtransport"], wt.as_str());
    assert_eq!(transports["websocket"]["url"], "ws://www.platform.example/sync/api/live-stream/ev-prefix");
    assert_eq!(transports["webtransport"]["url"], format!("{wt}/api/live-stream/ev-prefix").as_str());
    assert!(invite.starts_with("http://www.platform.example/sync/watch/ev-prefix?invite="), "{invite}");
}

#[tokio::test]
async fn without_public_urls_links_follow_the_host_header() {
    let s = server(|_| {}).await;
    let (cert, transports, invite) = links(&s, "ev-host").await;
    let wt = format!("https://node-7.internal:{}", s.quic.port());
    assert_eq!(cert["webtransport"], wt.as_str());
    assert_eq!(transports["websocket"]["url"], "ws://node-7.internal:8080/api/live-stream/ev-host");
    assert_eq!(transports["webtransport"]["url"], format!("{wt}/api/live-stream/ev-host").as_str());
    assert!(invite.starts_with("http://node-7.internal:8080/watch/ev-host?invite="), "{invite}");
    // Generated certificates: browsers accept them by hash.
    assert_eq!(cert["hashesApply"], true);
    assert_eq!(transports["webtransport"]["hashesApply"], true);
    assert_eq!(transports["webtransport"]["certificateHashes"], cert["hashes"]);
    assert_eq!(cert["hashes"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_ca_issued_90_day_certificate_is_published_without_hash_pinning() {
    let ca = Ca::new("api");
    let leaf = ca.issue("server", 90);
    let s = server(|c| {
        c.cert = Some(leaf.cert.clone());
        c.key = Some(leaf.key.clone());
    })
    .await;
    let (cert, transports, _) = links(&s, "ev-ca").await;
    assert_eq!(cert["hashesApply"], false, "{cert}");
    // Still listed, for information (and `/certificate.sha256`); clients must not pin them.
    let hashes = cert["hashes"].as_array().unwrap();
    assert_eq!(hashes.len(), 1);
    assert_eq!(hashes[0]["value"], s.certs.as_ref().unwrap().current_sha256().as_str());
    let left_s = cert["notAfter"].as_u64().unwrap() as i64
        - std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((89 * 86_400..=90 * 86_400).contains(&left_s), "{left_s}");
    // The session API hands out no hashes to pass.
    assert_eq!(transports["webtransport"]["hashesApply"], false);
    assert_eq!(transports["webtransport"]["certificateHashes"], json!([]));
}
