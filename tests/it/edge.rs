//! The HTTP edge against real sockets: CORS and the WebSocket Origin check
//! (`--cors-origins`), client addresses behind trusted proxies
//! (`--trusted-proxies`, `--proxy-protocol`), HTTPS and `wss://` on the HTTP
//! listener (`--http-tls`) with certificate reloads, and the access log.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use lockstep::config::Config;
use lockstep_protocol::{ServerMsg, decode_server, encode_client};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};

use crate::common::{TestServer, WAIT, fresh_dir, hello};

const ALLOWED: &str = "https://www.platform.example";
const OTHER: &str = "https://evil.example";

/// An HTTP/1.1 answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Writes `head` (request line and headers, and possibly a blank line and a body) with
/// `Connection: close` on `s` and reads the answer; `None` if the server
/// closed the connection without answering.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, head: &str) -> Option<Answer> {
    // `head` may carry a body after its own blank line.
    let req = match head.split_once("\r\n\r\n") {
        Some((h, body)) => format!("{h}\r\nConnection: close\r\n\r\n{body}"),
        None => format!("{head}\r\nConnection: close\r\n\r\n"),
    };
    if s.write_all(req.as_bytes()).await.is_err() {
        return None;
    }
    let mut buf = Vec::new();
    // A reset or a TLS stream cut without close_notify still ends the answer.
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await.expect("the server answers or closes in time")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    if buf.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().into(), v.trim().into())).collect();
    Some(Answer { status, headers, body: body.into() })
}

/// One request over a fresh plain connection to `server`; `extra` are header lines.
async fn request(server: &TestServer, method: &str, path: &str, extra: &[&str]) -> Answer {
    let mut s = TcpStream::connect(server.http).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}", server.http);
    for h in extra {
        head.push_str("\r\n");
        head.push_str(h);
    }
    exchange(&mut s, &head).await.expect("an answer")
}

fn cors_server_config(c: &mut Config) {
    c.cors_origins = format!("{ALLOWED},http://localhost:3000").parse().unwrap();
}

// ------------------------------------------------------------------ CORS

#[tokio::test]
async fn preflights_from_allowed_origins_are_answered_and_others_get_no_cors_headers() {
    let server = TestServer::with(cors_server_config).await;
    let preflight = |origin: &'static str| {
        let server = &server;
        async move {
            request(
                server,
                "OPTIONS",
                "/api/live-stream/session",
                &[
                    &format!("Origin: {origin}"),
                    "Access-Control-Request-Method: POST",
                    "Access-Control-Request-Headers: authorization, content-type",
                ],
            )
            .await
        }
    };
    let ok = preflight(ALLOWED).await;
    assert!((200..300).contains(&ok.status), "{ok:?}");
    assert_eq!(ok.header("access-control-allow-origin"), Some(ALLOWED));
    let methods = ok.header("access-control-allow-methods").unwrap().to_ascii_uppercase();
    for m in ["GET", "POST", "PUT", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = ok.header("access-control-allow-headers").unwrap().to_ascii_lowercase();
    assert!(headers.contains("authorization") && headers.contains("content-type"), "{headers}");
    assert!(ok.header("access-control-max-age").unwrap().parse::<u64>().unwrap() > 0);
    assert!(ok.header("vary").is_some_and(|v| v.to_ascii_lowercase().contains("origin")));

    let refused = preflight(OTHER).await;
    assert_eq!(refused.header("access-control-allow-origin"), None, "{refused:?}");

    // Actual requests: the allowed origin may read the answer (and Retry-After), others not.
    let get = request(&server, "GET", "/api/health", &[&format!("Origin: {ALLOWED}")]).await;
    assert_eq!(get.status, 200);
    assert_eq!(get.header("access-control-allow-origin"), Some(ALLOWED));
    assert!(get.header("access-control-expose-headers").unwrap().to_ascii_lowercase().contains("retry-after"));
    let get = request(&server, "GET", "/api/health", &[&format!("Origin: {OTHER}")]).await;
    assert_eq!(get.status, 200);
    assert_eq!(get.header("access-control-allow-origin"), None);
    // The certificate routes stay public.
    for path in ["/api/certificate", "/certificate.sha256"] {
        let get = request(&server, "GET", path, &[&format!("Origin: {OTHER}")]).await;
        assert_eq!(get.header("access-control-allow-origin"), Some("*"), "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn without_cors_origins_no_route_but_the_certificate_ones_sends_cors_headers() {
    let server = TestServer::start().await;
    let pre = request(
        &server,
        "OPTIONS",
        "/api/live-stream/session",
        &[&format!("Origin: {ALLOWED}"), "Access-Control-Request-Method: POST"],
    )
    .await;
    assert_eq!(pre.header("access-control-allow-origin"), None, "{pre:?}");
    let get = request(&server, "GET", "/api/health", &[&format!("Origin: {ALLOWED}")]).await;
    assert_eq!(get.header("access-control-allow-origin"), None);
    let get = request(&server, "GET", "/api/certificate", &[&format!("Origin: {ALLOWED}")]).await;
    assert_eq!(get.header("access-control-allow-origin"), Some("*"));
    server.stop().await;
}

/// A WebSocket upgrade to `server` with `Origin: origin` (none if `None`): the HTTP status.
async fn upgrade_status(server: &TestServer, origin: Option<&str>, extra: &[(&'static str, &str)]) -> u16 {
    let mut req = server.ws_url("ev-edge").into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", HeaderValue::from_str(o).unwrap());
    }
    for (k, v) in extra {
        req.headers_mut().insert(*k, HeaderValue::from_str(v).unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((mut ws, resp)) => {
            let _ = ws.close(None).await;
            resp.status().as_u16()
        }
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

#[tokio::test]
async fn websocket_upgrades_from_other_origins_are_refused_with_403() {
    let server = TestServer::with(cors_server_config).await;
    assert_eq!(upgrade_status(&server, Some(OTHER), &[]).await, 403);
    assert_eq!(upgrade_status(&server, Some("null"), &[]).await, 403);
    assert_eq!(upgrade_status(&server, Some(ALLOWED), &[]).await, 101);
    assert_eq!(upgrade_status(&server, Some("http://localhost:3000"), &[]).await, 101);
    // Not a browser: no Origin.
    assert_eq!(upgrade_status(&server, None, &[]).await, 101);
    // The server's own pages (the Origin names the Host).
    assert_eq!(upgrade_status(&server, Some(&format!("http://{}", server.http)), &[]).await, 101);
    server.stop().await;

    // Without --cors-origins any origin may connect, as before.
    let open = TestServer::start().await;
    assert_eq!(upgrade_status(&open, Some(OTHER), &[]).await, 101);
    open.stop().await;
}

// ------------------------------------------------------------------ trusted proxies

/// GET /api/health as if forwarded for `client` until it is refused (at most
/// `max` tries); returns the statuses.
async fn exhaust(server: &TestServer, client: &str, max: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..max {
        let a = request(server, "GET", "/api/health", &[&format!("X-Forwarded-For: 192.0.2.99, {client}")]).await;
        statuses.push(a.status);
        if a.status == 429 {
            break;
        }
    }
    statuses
}

fn tiny_limits(c: &mut Config) {
    c.rest_per_ip_per_sec = 1;
    c.rest_burst = 2;
    c.connects_per_ip_per_sec = 1;
    c.connect_burst = 1;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limits() {
    let server = TestServer::with(|c| {
        tiny_limits(c);
        c.trusted_proxies = "10.0.0.0/8,127.0.0.1/32,::1/128".parse().unwrap();
    })
    .await;
    let a = exhaust(&server, "198.51.100.1", 10).await;
    assert_eq!(a.last(), Some(&429), "{a:?}");
    assert_eq!(&a[..2], &[200, 200], "{a:?}");
    // Another client behind the same proxy: a bucket of its own.
    let b = request(&server, "GET", "/api/health", &["X-Forwarded-For: 198.51.100.2"]).await;
    assert_eq!(b.status, 200);
    // RFC 7239 too (without X-Forwarded-For).
    let c = request(&server, "GET", "/api/health", &["Forwarded: for=\"[2001:db8::7]:4711\";proto=https"]).await;
    assert_eq!(c.status, 200);
    // WebSocket connection attempts are counted per forwarded client as well.
    let xff = |ip: &'static str| [("X-Forwarded-For", ip)];
    assert_eq!(upgrade_status(&server, None, &xff("198.51.100.5")).await, 101);
    assert_eq!(upgrade_status(&server, None, &xff("198.51.100.5")).await, 429);
    assert_eq!(upgrade_status(&server, None, &xff("198.51.100.6")).await, 101);
    server.stop().await;
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let server = TestServer::with(|c| {
        tiny_limits(c);
        // The test client (127.0.0.1) is not among them.
        c.trusted_proxies = "10.0.0.0/8".parse().unwrap();
    })
    .await;
    let a = exhaust(&server, "198.51.100.1", 10).await;
    assert_eq!(a.last(), Some(&429), "{a:?}");
    // Spoofing another address does not help: the bucket is 127.0.0.1's.
    let b = request(&server, "GET", "/api/health", &["X-Forwarded-For: 198.51.100.2"]).await;
    assert_eq!(b.status, 429);
    let c = request(&server, "GET", "/api/health", &["Forwarded: for=198.51.100.3"]).await;
    assert_eq!(c.status, 429);
    server.stop().await;
}

// ------------------------------------------------------------------ PROXY protocol

/// A PROXY protocol v2 header (PROXY command, TCP over IPv4) from `src` to `dst`.
fn proxy_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else { panic!("IPv4 only") };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0x00, 12]);
    h.extend_from_slice(&src.ip().octets());
    h.extend_from_slice(&dst.ip().octets());
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

/// Sends `header` then a GET of /api/health on a fresh connection.
async fn after_header(server: &TestServer, header: &[u8]) -> Option<Answer> {
    let mut s = TcpStream::connect(server.http).await.unwrap();
    s.write_all(header).await.unwrap();
    exchange(&mut s, &format!("GET /api/health HTTP/1.1\r\nHost: {}", server.http)).await
}

/// Access log lines (target `lockstep::access`) of every server in this test binary.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once) a global subscriber that keeps only access log lines. A
/// global one, not a thread's default: tests run in parallel, and tracing's
/// per-callsite interest is shared by all threads.
fn access_log() -> &'static Captured {
    static LOG: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("lockstep::access=info"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in the tests");
        log
    })
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn proxy_protocol_headers_give_the_client_address_to_limits_and_the_access_log() {
    let logs = access_log();
    let server = TestServer::with(|c| {
        tiny_limits(c);
        c.proxy_protocol = true;
        c.trusted_proxies = "127.0.0.1/32".parse().unwrap();
    })
    .await;
    let lb: SocketAddr = "10.0.0.1:443".parse().unwrap();
    let first: SocketAddr = "203.0.113.7:51000".parse().unwrap();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let a = after_header(&server, &proxy_v2(first, lb)).await.expect("an answer");
        statuses.push(a.status);
        if a.status == 429 {
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // Another client of the load balancer has its own bucket.
    let second: SocketAddr = "203.0.113.8:51001".parse().unwrap();
    assert_eq!(after_header(&server, &proxy_v2(second, lb)).await.expect("an answer").status, 200);
    // Version 1 (text) headers too.
    let v1 = b"PROXY TCP4 203.0.113.9 10.0.0.1 51002 443\r\n";
    assert_eq!(after_header(&server, v1).await.expect("an answer").status, 200);

    let log = logs.text();
    let access: Vec<&str> = log.lines().filter(|l| l.contains("lockstep::access")).collect();
    // (Other tests' lines are there too; these addresses are this test's own.)
    assert!(
        access
            .iter()
            .any(|l| l.contains("client=203.0.113.7") && l.contains("path=/api/health") && l.contains("status=200")),
        "{log}"
    );
    assert!(access.iter().any(|l| l.contains("client=203.0.113.7") && l.contains("status=429")), "{log}");
    assert!(access.iter().any(|l| l.contains("client=203.0.113.9") && l.contains("method=GET")), "{log}");
    assert!(access.iter().all(|l| l.contains("latency_us=")), "{log}");
    server.stop().await;
}

#[tokio::test]
async fn without_a_valid_proxy_header_the_connection_is_closed() {
    let server = TestServer::with(|c| {
        c.proxy_protocol = true;
        c.trusted_proxies = "127.0.0.1/32".parse().unwrap();
    })
    .await;
    // Plain HTTP, no header.
    assert!(after_header(&server, b"").await.is_none(), "no header: closed without an answer");
    // A v2 header with a broken version nibble; a v2 header with an unknown family.
    let mut bad = proxy_v2("203.0.113.7:1".parse().unwrap(), "10.0.0.1:2".parse().unwrap());
    bad[12] = 0x31;
    assert!(after_header(&server, &bad).await.is_none());
    let mut bad = proxy_v2("203.0.113.7:1".parse().unwrap(), "10.0.0.1:2".parse().unwrap());
    bad[13] = 0x51;
    assert!(after_header(&server, &bad).await.is_none());
    assert!(after_header(&server, b"PROXY TCP4 nonsense\r\n").await.is_none());
    // The server is still fine.
    let good = proxy_v2("203.0.113.7:1".parse().unwrap(), "10.0.0.1:2".parse().unwrap());
    assert_eq!(after_header(&server, &good).await.expect("an answer").status, 200);
    server.stop().await;

    // A peer that is not a trusted proxy may not send headers at all.
    let server = TestServer::with(|c| {
        c.proxy_protocol = true;
        c.trusted_proxies = "10.0.0.0/8".parse().unwrap();
    })
    .await;
    assert!(after_header(&server, &good).await.is_none());
    server.stop().await;
}

// ------------------------------------------------------------------ HTTPS

/// A client that trusts only the certificate in PEM `cert` (as a browser
/// trusts a CA), for `alpn`.
fn trusting(cert_pem: &[u8], alpn: &[&[u8]]) -> TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cert_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(cfg))
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn tls_connect(server: &TestServer, connector: &TlsConnector) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(server.http).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(WAIT, connector.connect(name, tcp)).await.expect("handshake in time")
}

fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn presented(tls: &Tls) -> String {
    sha256_hex(tls.get_ref().1.peer_certificates().expect("a certificate")[0].as_ref())
}

#[tokio::test]
async fn https_and_wss_are_served_with_the_configured_certificate_and_reloads() {
    let dir = fresh_dir("https");
    let pair = lockstep::cert::write_dev_pair(&dir, &[]).unwrap();
    let server = TestServer::with(|c| {
        c.http_tls = true;
        c.cert = Some(pair.cert.clone());
        c.key = Some(pair.key.clone());
        c.cert_poll_ms = 50;
    })
    .await;
    let certs = server.certs.clone().unwrap();
    let first_pem = std::fs::read(&pair.cert).unwrap();
    let h1 = trusting(&first_pem, &[b"http/1.1"]);

    // HTTPS.
    let mut tls = tls_connect(&server, &h1).await.unwrap();
    assert_eq!(presented(&tls), pair.sha256);
    let a = exchange(&mut tls, "GET /api/health HTTP/1.1\r\nHost: localhost").await.expect("an answer");
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.body.contains("\"status\":\"ok\""), "{a:?}");
    // h2 is offered.
    let h2 = trusting(&first_pem, &[b"h2", b"http/1.1"]);
    let tls = tls_connect(&server, &h2).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(tls);
    // Plain HTTP on the TLS port gets nothing.
    let mut plain = TcpStream::connect(server.http).await.unwrap();
    let a = exchange(&mut plain, "GET /api/health HTTP/1.1\r\nHost: localhost").await;
    assert!(a.as_ref().is_none_or(|a| a.status != 200), "{a:?}");

    // wss://: a whole session (hello, welcome) over the binary protocol.
    let tls = tls_connect(&server, &h1).await.unwrap();
    let mut req =
        format!("wss://localhost:{}/api/live-stream/ev-wss", server.http.port()).into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("lockstep.v1"));
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tls).await.expect("wss upgrade");
    assert_eq!(resp.status().as_u16(), 101);
    ws.send(Message::Binary(Bytes::from(encode_client(&hello("ev-wss", "d-wss"))))).await.unwrap();
    let welcome = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("a message in time") {
            Some(Ok(Message::Binary(b))) => match decode_server(&b).unwrap() {
                ServerMsg::Welcome(w) => break w,
                _ => continue,
            },
            Some(Ok(_)) => continue,
            other => panic!("no welcome: {other:?}"),
        }
    };
    assert_eq!(welcome.viewers, 1, "{welcome:?}");

    // The session API hands out wss:// URLs to HTTPS clients.
    let mut tls = tls_connect(&server, &h1).await.unwrap();
    let body = r#"{"eventId":"ev-wss","deviceId":"d-api"}"#;
    let token = crate::accounts::token("https-user", lockstep::auth::Plan::Free);
    let head = format!(
        "POST /api/live-stream/session HTTP/1.1\r\nHost: localhost:{}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        server.http.port(),
        body.len()
    );
    let a = exchange(&mut tls, &head).await.expect("an answer");
    assert_eq!(a.status, 201, "{a:?}");
    let view: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    let url = view["transports"]["websocket"]["url"].as_str().unwrap();
    assert_eq!(url, format!("wss://localhost:{}/api/live-stream/ev-wss", server.http.port()));

    // Renewal: new files are picked up, and new connections get the new certificate.
    let next_dir = fresh_dir("https-next");
    let next = lockstep::cert::write_dev_pair(&next_dir, &[]).unwrap();
    std::fs::copy(&next.key, &pair.key).unwrap();
    std::fs::copy(&next.cert, &pair.cert).unwrap();
    let deadline = Instant::now() + WAIT;
    while certs.current_sha256() != next.sha256 {
        assert!(Instant::now() < deadline, "the new files were never picked up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let next_pem = std::fs::read(&next.cert).unwrap();
    let mut tls = tls_connect(&server, &trusting(&next_pem, &[b"http/1.1"])).await.unwrap();
    assert_eq!(presented(&tls), next.sha256);
    let a = exchange(&mut tls, "GET /api/health HTTP/1.1\r\nHost: localhost").await.expect("an answer");
    assert_eq!(a.status, 200);
    // (A fresh client: `h1` could resume its TLS session without a certificate.)
    let old = trusting(&first_pem, &[b"http/1.1"]);
    assert!(tls_connect(&server, &old).await.is_err(), "the old certificate is no longer served");
    // The open wss session survived the reload.
    ws.send(Message::Ping(Bytes::from_static(b"still"))).await.unwrap();
    let pong = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("a pong in time") {
            Some(Ok(Message::Pong(p))) => break p,
            Some(Ok(_)) => continue,
            other => panic!("the session ended: {other:?}"),
        }
    };
    assert_eq!(&pong[..], b"still");

    // A broken file at reload keeps the served certificate.
    std::fs::write(&pair.cert, b"-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n").unwrap();
    assert!(certs.rotate_now().is_err(), "the broken file is refused");
    let tls = tls_connect(&server, &trusting(&next_pem, &[b"http/1.1"])).await.unwrap();
    assert_eq!(presented(&tls), next.sha256);
    drop(ws);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&next_dir);
}

#[tokio::test]
async fn https_without_cert_files_serves_the_generated_certificate() {
    let server = TestServer::with(|c| c.http_tls = true).await;
    let certs = server.certs.clone().unwrap();
    // The generated certificate is trusted by its hash (as browsers do for WebTransport); here by pinning it.
    let tcp = TcpStream::connect(server.http).await.unwrap();
    let pinned = pinning(certs.current_sha256());
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = pinned.connect(name, tcp).await.expect("handshake with the generated certificate");
    let a = exchange(&mut tls, "GET /api/health HTTP/1.1\r\nHost: localhost").await.expect("an answer");
    assert_eq!(a.status, 200);
    // A rotation reaches new HTTPS connections too.
    certs.rotate_now().unwrap();
    let tcp = TcpStream::connect(server.http).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = pinning(certs.current_sha256()).connect(name, tcp).await.expect("handshake with the rotated certificate");
    assert_eq!(presented(&tls), certs.current_sha256());
    server.stop().await;
}

/// A client that accepts exactly the certificate whose SHA-256 is `sha256`.
fn pinning(sha256: String) -> TlsConnector {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct Pinned(String, Arc<CryptoProvider>);

    impl ServerCertVerifier for Pinned {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            if sha256_hex(end_entity.as_ref()) == self.0 {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(rustls::Error::General("not the pinned certificate".into()))
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.1.signature_verification_algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.1.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.1.signature_verification_algorithms.supported_schemes()
        }
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned(sha256, provider)))
        .with_no_client_auth();
    TlsConnector::from(Arc::new(cfg))
}
