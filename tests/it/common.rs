//! Test harness: start a real server, connect real clients.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use lockstep::config::Config;
use lockstep::server::Server;
use lockstep_protocol::{
    Action, ClientMsg, Command, Hello, PROTOCOL_VERSION, Report, ServerMsg, Welcome, caps, decode_server, encode_client,
};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A new empty directory under the system temp dir, named `lockstep-it-{pid}-…` (see [`temp_path`]).
pub fn fresh_dir(what: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = temp_path(&format!("{what}-{n}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `lockstep-it-{pid}-{what}` under the system temp dir (not created). The first call of a test run removes
/// what earlier runs left there: the directories of processes that are gone (the test harness has no hook at
/// its exit, so a run's own directories go with the next run's start, not with it).
pub fn temp_path(what: &str) -> std::path::PathBuf {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(sweep_stale_dirs);
    std::env::temp_dir().join(format!("lockstep-it-{}-{what}", std::process::id()))
}

/// Removes `lockstep-it-{pid}-…` directories whose process is gone (where `/proc` says so: Linux); a live
/// process's (another test run's) are left alone.
fn sweep_stale_dirs() {
    let proc = std::path::Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) =
            name.to_str().and_then(|n| n.strip_prefix("lockstep-it-")).and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok_and(|p| p != std::process::id()) && !proc.join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The base configuration of test servers: loopback, ephemeral ports, dev
/// mode with the tests' token secret, a fresh data directory, and per-IP
/// limits out of the way (the rate-limit tests set their own).
pub fn test_config() -> Config {
    Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        quic_addr: "[::]:0".parse().unwrap(),
        dev: true,
        jwt_secret: Some(crate::accounts::SECRET.into()),
        data_dir: fresh_dir("data"),
        rest_per_ip_per_sec: 100_000,
        rest_burst: 100_000,
        connects_per_ip_per_sec: 100_000,
        connect_burst: 100_000,
        // Stopping a test server closes its sessions at once (ops.rs tests the drain).
        drain_ms: 0,
        ..Config::default()
    }
}

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running server that stops when dropped.
pub struct TestServer {
    pub http: SocketAddr,
    /// The WebTransport (UDP) address.
    pub quic: SocketAddr,
    /// The admin address (`--admin-addr`), if any.
    pub admin: Option<SocketAddr>,
    /// The server's certificates and clock (absent for an external server).
    pub certs: Option<lockstep::cert::CertManager>,
    pub clock: Option<lockstep::clock::ServerClock>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::with(|_| {}).await
    }

    /// Starts a server from [`test_config`]; `tweak` edits the config.
    pub async fn with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut cfg = test_config();
        tweak(&mut cfg);
        Self::spawn(cfg).await
    }

    /// Binds `cfg` and runs the server in a task.
    pub async fn spawn(cfg: Config) -> TestServer {
        let server = Server::bind(cfg).await.expect("bind");
        let (http, quic, admin) = (server.http_addr(), server.quic_addr(), server.admin_addr());
        let (certs, clock) = (Some(server.certs()), Some(server.clock()));
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = rx.await;
                })
                .await
                .expect("server run");
        });
        TestServer { http, quic, admin, certs, clock, stop: Some(tx), task: Some(task) }
    }

    /// A handle to a server running elsewhere (another process).
    pub fn external(http: SocketAddr) -> TestServer {
        TestServer { http, quic: http, admin: None, certs: None, clock: None, stop: None, task: None }
    }

    pub fn ws_url(&self, event: &str) -> String {
        format!("ws://{}/api/live-stream/{event}", self.http)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Sends the shutdown signal without waiting (the server drains).
    pub fn signal_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        self.signal_stop();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task).await.expect("server stops in time").unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket speaking the binary protocol (subprotocol `lockstep.v1`).
pub async fn ws_binary(url: &str) -> Ws {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("lockstep.v1"));
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.expect("connect");
    assert_eq!(resp.headers().get("sec-websocket-protocol").unwrap(), "lockstep.v1");
    ws
}

/// Opens a WebSocket speaking the legacy JSON dialect.
pub async fn ws_json(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url).await.expect("connect").0
}

pub fn hello(event: &str, device: &str) -> ClientMsg {
    ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        event_id: event.into(),
        device_id: device.into(),
        token: None,
        caps: caps::PRESENCE,
    })
}

/// A `Hello` with the given capability bits.
pub fn hello_caps(event: &str, device: &str, caps: u32) -> ClientMsg {
    ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        event_id: event.into(),
        device_id: device.into(),
        token: None,
        caps,
    })
}

pub fn command(request_id: u32, action: Action) -> ClientMsg {
    ClientMsg::Command(Command { request_id, action })
}

pub fn report(buffering: bool) -> ClientMsg {
    ClientMsg::Report(Report { epoch: 0, position_us: 0, rate_milli: 1000, buffering })
}

pub async fn send(ws: &mut Ws, msg: &ClientMsg) {
    ws.send(Message::Binary(Bytes::from(encode_client(msg)))).await.expect("send");
}

/// What a client saw next.
#[derive(Debug)]
pub enum Got {
    Msg(ServerMsg),
    Text(serde_json::Value),
    Closed(Option<u16>),
}

/// The next server message, JSON text, or close (skipping pings).
pub async fn next(ws: &mut Ws) -> Got {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next()).await.expect("a message in time");
        match m {
            Some(Ok(Message::Binary(b))) => {
                return Got::Msg(decode_server(&b).expect("server sends valid messages"));
            }
            Some(Ok(Message::Text(t))) => {
                return Got::Text(serde_json::from_str(t.as_str()).expect("valid JSON"));
            }
            Some(Ok(Message::Close(f))) => {
                return Got::Closed(f.map(|f: CloseFrame| u16::from(f.code)));
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Got::Closed(None),
        }
    }
}

/// Waits for the first message matching `pick`, skipping others.
pub async fn until<T>(ws: &mut Ws, mut pick: impl FnMut(&Got) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = tokio::time::timeout_at(deadline, next(ws)).await.expect("expected message in time");
        if let Some(t) = pick(&got) {
            return t;
        }
        if let Got::Closed(code) = got {
            panic!("closed ({code:?}) while waiting");
        }
    }
}

pub async fn welcome(ws: &mut Ws) -> Welcome {
    until(ws, |g| match g {
        Got::Msg(ServerMsg::Welcome(w)) => Some(w.clone()),
        _ => None,
    })
    .await
}

/// Connects and joins over binary WebSocket.
pub async fn join(server: &TestServer, event: &str, device: &str) -> (Ws, Welcome) {
    let mut ws = ws_binary(&server.ws_url(event)).await;
    send(&mut ws, &hello(event, device)).await;
    let w = welcome(&mut ws).await;
    (ws, w)
}

/// Waits for an `Error` with `code`.
pub async fn error_code(ws: &mut Ws) -> u16 {
    until(ws, |g| match g {
        Got::Msg(ServerMsg::Error(e)) => Some(e.code),
        _ => None,
    })
    .await
}

/// Waits until the server closes the connection; returns the close code.
pub async fn closed(ws: &mut Ws) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, next(ws)).await.expect("closed in time") {
            Got::Closed(code) => return code,
            _ => continue,
        }
    }
}

/// A GET over a raw HTTP/1.1 socket (tests need no HTTP client crate):
/// the status and the body as JSON (or as a JSON string if it is not JSON).
pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let uri: axum::http::Uri = url.parse().unwrap();
    let authority = uri.authority().unwrap().as_str().to_owned();
    let mut s = TcpStream::connect(&authority).await.unwrap();
    let req =
        format!("GET {} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n", uri.path_and_query().unwrap());
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf);
    let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let body =
        if text.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_owned() };
    (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// A TCP proxy on loopback that delays every byte by `one_way` in each
/// direction (order kept; a far viewer's path without `tc netem`). Runs
/// until the test ends.
pub async fn delay_proxy(target: SocketAddr, one_way: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(upstream) = TcpStream::connect(target).await else { continue };
            let (cr, cw) = client.into_split();
            let (ur, uw) = upstream.into_split();
            tokio::spawn(delayed(cr, uw, one_way));
            tokio::spawn(delayed(ur, cw, one_way));
        }
    });
    addr
}

/// Copies `from` to `to`, each chunk `by` after it was read.
async fn delayed(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, by: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        if tx.send((tokio::time::Instant::now() + by, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
