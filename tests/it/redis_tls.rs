//! Redis over TLS (`rediss://`, redis-rs with rustls): a real TLS-only
//! `redis-server` (`--port 0 --tls-port N`, Debian's build has TLS) with a
//! certificate from a throwaway CA, trusted through `--redis-ca`.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lockstep::auth::Plan;
use lockstep::server::Server;
use lockstep_protocol::{Action, ServerMsg};
use serde_json::json;

use crate::accounts::{http, token};
use crate::common::*;
use crate::pki::{Ca, Leaf};

/// A TLS-only redis-server: no plain-text port at all.
struct TlsRedis {
    child: Child,
    port: u16,
}

impl TlsRedis {
    fn start(ca: &Ca, leaf: &Leaf) -> TlsRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--tls-auth-clients", "no"])
            .arg("--tls-cert-file")
            .arg(&leaf.cert)
            .arg("--tls-key-file")
            .arg(&leaf.key)
            .arg("--tls-ca-cert-file")
            .arg(&ca.cert)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/test installs it)");
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsRedis { child, port }
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn changed_to(g: &Got, position_ms: u64) -> Option<()> {
    match g {
        Got::Msg(ServerMsg::TimelineChanged(c)) if c.timeline.position_ms == position_ms => Some(()),
        _ => None,
    }
}

#[tokio::test]
async fn two_nodes_share_sessions_and_rooms_through_a_tls_only_redis() {
    let ca = Ca::new("redis");
    let redis = TlsRedis::start(&ca, &ca.issue("redis", 90));
    // The server really speaks only TLS: plain text gets no answer.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    plain.write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 64];
    let n = plain.read(&mut buf).unwrap_or(0);
    assert!(!String::from_utf8_lossy(&buf[..n]).contains("PONG"), "a plain-text PING was answered");

    let node = || {
        let (url, ca) = (redis.url(), ca.cert.clone());
        TestServer::with(move |c| {
            c.redis_url = Some(url);
            c.redis_ca = Some(ca);
            c.tick_interval_ms = 50;
        })
    };
    let a = node().await;
    let b = node().await;

    // A session started on A heartbeats on B.
    let alice = token("alice-tls", Plan::Premium);
    let body = json!({"eventId": "ev-tls", "deviceId": "tv"});
    let (s, _, sess) = http(&a, "POST", "/api/live-stream/session", Some(&alice), Some(body)).await;
    assert_eq!(s, 201, "{sess}");
    let hb = format!("/api/live-stream/session/{}/heartbeat", sess["sessionId"].as_str().unwrap());
    let (s, _, _) = http(&b, "POST", &hb, Some(&alice), Some(json!({"position": 3.0}))).await;
    assert_eq!(s, 200, "a session from node A heartbeats on node B");

    // A room over WebSocket on both nodes: a seek on A reaches the viewer on B.
    let (mut host, _) = join(&a, "ev-tls", "host").await;
    let (mut viewer, _) = join(&b, "ev-tls", "viewer").await;
    send(&mut host, &command(1, Action::Seek { position_ms: 42_000 })).await;
    until(&mut host, |g| changed_to(g, 42_000)).await;
    until(&mut viewer, |g| changed_to(g, 42_000)).await;
}

async fn bind_error(url: String, ca: Option<std::path::PathBuf>) -> String {
    let mut cfg = test_config();
    cfg.redis_url = Some(url);
    cfg.redis_ca = ca;
    let started = Instant::now();
    let err = Server::bind(cfg).await.expect_err("the node must not start").to_string();
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    err
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_a_clear_startup_error() {
    let ca = Ca::new("redis-right");
    let redis = TlsRedis::start(&ca, &ca.issue("redis", 90));
    let other = Ca::new("redis-wrong");
    let err = bind_error(redis.url(), Some(other.cert.clone())).await;
    assert!(err.starts_with("connecting to Redis:"), "{err}");
    assert!(err.contains("certificate"), "{err}");
    assert!(err.contains(other.cert.to_str().unwrap()), "names the CA file: {err}");
    // Without --redis-ca the system's roots do not know the private CA either, and the error says what to do.
    let err = bind_error(redis.url(), None).await;
    assert!(err.contains("--redis-ca"), "{err}");
    // A CA file that is not there.
    let err = bind_error(redis.url(), Some(other.dir.join("missing.pem"))).await;
    assert!(err.starts_with("--redis-ca ") && err.contains("missing.pem"), "{err}");
}
