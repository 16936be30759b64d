//! Issue 16's attacks (`--attack`): bad input over every door and floods,
//! run against the room of well-behaved viewers an S1-style run measures, so
//! the run tells what an attacker costs the others (their latency, their
//! connections, the server's CPU and memory) and whether every bad input got
//! its documented answer.
//!
//! Attack runs start the server with its default message budget and connect
//! limit (the load generator otherwise lifts them), a connect burst that lets
//! the victims join at once, and the loopback trusted as a proxy, so an
//! attacker over WebSocket can stand for many addresses (`X-Forwarded-For`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockstep_protocol::{
    Action, ClientMsg, Command, ErrorCode, Hello, PROTOCOL_VERSION, Ping, ServerMsg, decode_server, encode_client,
    write_frame,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::wsclient::{Op, Ws};

/// Every attack `--attack all` runs, after a clean run (`none`).
pub(crate) const KINDS: &[&str] =
    &["malformed", "datagrams", "flood", "churn-one-ip", "churn-many-ips", "host-flood", "slow-reader"];

/// The server settings of every attack run, the clean one too.
pub(crate) const SERVER_ARGS: &[&str] = &[
    "--msgs-per-sec=50",
    "--msg-burst=100",
    "--connects-per-ip-per-sec=20",
    "--connect-burst=2000",
    "--trusted-proxies=127.0.0.0/8,::1/128",
];

pub(crate) fn parse(list: &str) -> anyhow::Result<Vec<String>> {
    let mut out = vec!["none".to_owned()];
    for a in list.split(',').map(str::trim) {
        match a {
            "all" => out.extend(KINDS.iter().map(|k| k.to_string())),
            "none" => {}
            k if KINDS.contains(&k) => out.push(k.to_owned()),
            k => anyhow::bail!("unknown attack {k:?}: none, all, {}", KINDS.join(", ")),
        }
    }
    out.dedup();
    Ok(out)
}

/// Where the attacker aims.
#[derive(Clone)]
pub(crate) struct Env {
    pub(crate) http: SocketAddr,
    pub(crate) quic: Option<SocketAddr>,
    pub(crate) cert_sha256: Option<String>,
    /// The victims' room.
    pub(crate) event: String,
    pub(crate) tag: String,
}

/// What the attacker saw: per case, how often it was tried and how often the
/// server answered as documented (the other answers, counted by kind).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub(crate) struct Outcome {
    pub(crate) kind: String,
    pub(crate) cases: BTreeMap<String, Case>,
    pub(crate) notes: Vec<String>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub(crate) struct Case {
    pub(crate) expect: String,
    pub(crate) tried: u64,
    pub(crate) as_documented: u64,
    pub(crate) other: BTreeMap<String, u64>,
    /// Tries whose connection failed before the bad input was sent, tried again once: the verdict
    /// on the input is the second try's (a first failure is in `notes`).
    pub(crate) retried: u64,
}

impl Outcome {
    pub(crate) fn tried(&self) -> u64 {
        self.cases.values().map(|c| c.tried).sum()
    }
    pub(crate) fn as_documented(&self) -> u64 {
        self.cases.values().map(|c| c.as_documented).sum()
    }
}

/// Collects outcomes from many tasks.
#[derive(Default)]
struct Tally(Mutex<Outcome>);

impl Tally {
    fn record(&self, case: &str, expect: &str, got: Result<String, String>) {
        let mut o = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let c = o.cases.entry(case.to_owned()).or_default();
        c.expect = expect.to_owned();
        c.tried += 1;
        match got {
            Ok(g) if g == expect => c.as_documented += 1,
            Ok(g) | Err(g) => *c.other.entry(g).or_default() += 1,
        }
    }
    fn retried(&self, case: &str, why: &str) {
        let mut o = self.0.lock().unwrap_or_else(|e| e.into_inner());
        o.cases.entry(case.to_owned()).or_default().retried += 1;
        o.notes.push(format!("{case}: the connection failed before the bad input was sent ({why}); tried again"));
    }
    fn note(&self, n: String) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).notes.push(n);
    }
}

/// xorshift64*: the attacker's bytes only need to be arbitrary.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let x = self.next().to_le_bytes();
            c.copy_from_slice(&x[..c.len()]);
        }
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Runs attack `kind` until `stop`; returns what it saw.
pub(crate) async fn run(kind: String, env: Env, stop: watch::Receiver<bool>) -> Outcome {
    let tally = Arc::new(Tally::default());
    let res = match kind.as_str() {
        "malformed" => malformed(&env, &tally, stop).await,
        "datagrams" => datagrams(&env, &tally, stop).await,
        "flood" => flood(&env, &tally, stop).await,
        "churn-one-ip" => churn(&env, &tally, stop, false).await,
        "churn-many-ips" => churn(&env, &tally, stop, true).await,
        "host-flood" => host_flood(&env, &tally, stop).await,
        "slow-reader" => slow_reader(&env, &tally, stop).await,
        _ => Ok(()),
    };
    if let Err(e) = res {
        tally.note(format!("the attack stopped: {e:#}"));
    }
    let mut o = std::mem::take(&mut *tally.0.lock().unwrap_or_else(|e| e.into_inner()));
    o.kind = kind;
    o
}

fn hello(event: &str, device: &str, version: u16) -> Vec<u8> {
    encode_client(&ClientMsg::Hello(Hello {
        version,
        event_id: event.into(),
        device_id: device.into(),
        token: None,
        caps: 0,
    }))
}

fn command(action: Action) -> Vec<u8> {
    encode_client(&ClientMsg::Command(Command { request_id: 1, action }))
}

fn fake_ip(n: u64) -> String {
    format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

async fn ws(env: &Env, path: &str, protocol: Option<&str>, ip: &str) -> Result<Ws, String> {
    Ws::connect_with(env.http, path, protocol, &format!("X-Forwarded-For: {ip}\r\n")).await.map_err(|e| {
        let s = e.to_string();
        match s.split_once("HTTP/1.1 ") {
            Some((_, status)) => format!("HTTP {}", &status[..3.min(status.len())]),
            None => format!("connect: {s}"),
        }
    })
}

/// The server's answer: the first error code, or the close code, or the
/// first message kind (`welcome`, `pong`) that `want` asks for.
async fn answer(ws: &mut Ws, want_close: bool) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut first_error = None;
    loop {
        loop {
            let f = match ws.next_frame().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(format!("read: {e}")),
            };
            let p = ws.payload(&f);
            match f.op {
                Op::Close => {
                    let code = (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
                    return Ok(code.map_or("close".into(), |c| format!("close {c}")));
                }
                Op::Binary => match decode_server(p) {
                    Ok(ServerMsg::Error(e)) if !want_close => return Ok(format!("error {}", e.code)),
                    Ok(ServerMsg::Error(e)) => first_error = first_error.or(Some(e.code)),
                    Ok(ServerMsg::Welcome(_)) if !want_close => return Ok("welcome".into()),
                    Ok(ServerMsg::Pong(_)) if !want_close => return Ok("pong".into()),
                    _ => {}
                },
                Op::Text => {
                    let v: serde_json::Value = serde_json::from_slice(p).unwrap_or_default();
                    if v["type"] == "error" && !want_close {
                        return Ok(format!("error {}", v["code"]));
                    }
                }
            }
        }
        match tokio::time::timeout_at(deadline, ws.read()).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Ok(first_error.map_or("eof".into(), |c| format!("error {c} then eof"))),
            Ok(Err(e)) => return Err(format!("read: {e}")),
            Err(_) => return Err("no answer in 3 s".into()),
        }
    }
}

/// The WebSocket cases of the bad-input matrix: (name, what the server must answer).
const WS_CASES: &[(&str, &str)] = &[
    ("ws-binary truncated message", "error 4000"),
    ("ws-binary unknown tag", "error 4001"),
    ("ws-binary command before Hello", "error 4005"),
    ("ws-binary report before Hello (out of order)", "error 4005"),
    ("ws-binary oversized frame", "close 4002"),
    ("ws-binary wrong protocol version", "close 4006"),
    ("ws-binary Hello for another event", "close 4017"),
    ("ws-binary second Hello", "error 4011"),
    ("ws-binary replayed Hello (bearer: joins)", "welcome"),
    ("ws-binary viewer's command in a host-only room", "error 4008"),
    ("ws-binary ten bad frames", "close 4022"),
    ("ws-binary text frame", "error 4004"),
    ("ws-json invalid JSON", "error 4003"),
    ("ws-json unknown type", "error 4004"),
    ("ws-json binary frame", "error 4004"),
    ("upgrade bad event id", "HTTP 400"),
    ("rest no token", "HTTP 401"),
    ("rest forged token", "HTTP 401"),
    ("rest malformed body", "HTTP 400"),
    ("rest oversized body", "HTTP 413"),
    ("rest bad chat query", "HTTP 400"),
];

/// The WebTransport cases (at most 10 a second: they share the victims' address).
const WT_CASES: &[(&str, &str)] = &[
    ("wt-stream bad length prefix", "close 4002"),
    ("wt-stream wrong protocol version", "close 4006"),
    ("wt-datagrams 200 random, then a ping on the stream", WT_DATAGRAMS_ANSWER),
];

/// The random datagrams count against the message budget (burst 100): when enough of them reach the
/// server at once it warns `Error(RateLimited)` and drops the excess, the ping among them; the session
/// goes on, and a ping sent again is answered.
const WT_DATAGRAMS_ANSWER: &str = "pong (or 4007 when the datagrams spent the burst, then pong)";

async fn join(ws: &mut Ws, event: &str, device: &str) -> Result<(), String> {
    ws.send_binary(&hello(event, device, PROTOCOL_VERSION)).await.map_err(|e| e.to_string())?;
    match answer(ws, false).await? {
        w if w == "welcome" => Ok(()),
        other => Err(format!("join: {other}")),
    }
}

async fn ws_case(env: &Env, i: usize, n: u64, token: &str) -> Result<String, String> {
    let ip = fake_ip(n);
    let path = format!("/api/live-stream/{}", env.event);
    let bin = Some("lockstep.v1");
    let device = format!("bad-{n}");
    let io = |e: std::io::Error| format!("send: {e}");
    match i {
        0..=11 => {
            let mut ws = ws(env, &path, bin, &ip).await?;
            let close = matches!(i, 4 | 5 | 6 | 10);
            match i {
                0 => ws.send_binary(&[2, 0xff]).await.map_err(io)?,
                1 => ws.send_binary(&[77]).await.map_err(io)?,
                2 => ws.send_binary(&command(Action::Play { position_ms: None })).await.map_err(io)?,
                3 => {
                    let report =
                        lockstep_protocol::Report { epoch: 1, position_us: 0, rate_milli: 1000, buffering: false };
                    ws.send_binary(&encode_client(&ClientMsg::Report(report))).await.map_err(io)?
                }
                4 => ws.send_binary(&vec![1u8; 9_000]).await.map_err(io)?,
                5 => ws.send_binary(&hello(&env.event, &device, PROTOCOL_VERSION + 98)).await.map_err(io)?,
                6 => ws.send_binary(&hello("another-event", &device, PROTOCOL_VERSION)).await.map_err(io)?,
                7 => {
                    join(&mut ws, &env.event, &device).await?;
                    ws.send_binary(&hello(&env.event, &device, PROTOCOL_VERSION)).await.map_err(io)?;
                }
                8 => {
                    // The same device's Hello, byte for byte, on a second connection.
                    join(&mut ws, &env.event, &device).await?;
                    let mut again = self::ws(env, &path, bin, &ip).await?;
                    again.send_binary(&hello(&env.event, &device, PROTOCOL_VERSION)).await.map_err(io)?;
                    return answer(&mut again, false).await;
                }
                9 => {
                    join(&mut ws, &env.event, &device).await?;
                    ws.send_binary(&command(Action::Seek { position_ms: 1 })).await.map_err(io)?;
                }
                10 => {
                    for _ in 0..10 {
                        ws.send_binary(&[0, 1, 2]).await.map_err(io)?;
                    }
                }
                _ => ws.send_text("{}").await.map_err(io)?,
            }
            answer(&mut ws, close).await
        }
        12..=14 => {
            let mut ws = ws(env, &path, None, &ip).await?;
            match i {
                12 => ws.send_text("{not json").await.map_err(io)?,
                13 => ws.send_text(r#"{"type":"no-such-type"}"#).await.map_err(io)?,
                _ => ws.send_binary(&[1, 2]).await.map_err(io)?,
            }
            answer(&mut ws, false).await
        }
        15 => match self::ws(env, "/api/live-stream/bad%20id", bin, &ip).await {
            Ok(_) => Ok("upgraded".into()),
            Err(e) => Ok(e),
        },
        _ => {
            let (method, path, auth, body) = match i {
                16 => ("POST", "/api/live-stream/session".to_owned(), String::new(), session_body(env)),
                17 => (
                    "POST",
                    "/api/live-stream/session".to_owned(),
                    "Bearer eyJhbGciOiJIUzI1NiJ9.e30.forged".into(),
                    session_body(env),
                ),
                18 => ("POST", "/api/live-stream/session".into(), format!("Bearer {token}"), "{\"eventId\":".into()),
                // Over the 2 MiB body limit.
                19 => ("POST", "/api/live-stream/session".into(), format!("Bearer {token}"), "x".repeat(3 << 20)),
                _ => (
                    "GET",
                    format!("/api/live-stream/{}/chat?before=abc&limit=-1", env.event),
                    format!("Bearer {token}"),
                    String::new(),
                ),
            };
            http(env.http, method, &path, &ip, &auth, &body).await.map(|(s, _)| format!("HTTP {s}"))
        }
    }
}

fn session_body(env: &Env) -> String {
    format!(r#"{{"eventId":"{}","deviceId":"attacker"}}"#, env.event)
}

/// One HTTP/1.1 request (`Connection: close`): the status and the body.
pub(crate) async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    ip: &str,
    auth: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let auth = if auth.is_empty() { String::new() } else { format!("Authorization: {auth}\r\n") };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nX-Forwarded-For: {ip}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    // The server may answer (413) before reading a large body and close: not an error.
    let _ = s.write_all(body.as_bytes()).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    if out.is_empty() {
        return Err(match read {
            Err(_) => "no answer in 5 s".into(),
            Ok(Err(e)) => format!("read: {e}"),
            Ok(Ok(_)) => "eof".into(),
        });
    }
    let text = String::from_utf8_lossy(&out);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad response {text:.40}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

async fn dev_token(env: &Env) -> anyhow::Result<String> {
    let (status, body) = http(env.http, "POST", "/api/dev/token", "10.255.255.254", "", r#"{"sub":"attacker"}"#)
        .await
        .map_err(|e| anyhow::anyhow!("dev token: {e}"))?;
    anyhow::ensure!(status == 200, "dev token: HTTP {status}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    v["token"].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("dev token: no token in {body}"))
}

fn wt_endpoint(env: &Env) -> anyhow::Result<wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>> {
    let cert = env.cert_sha256.as_deref().ok_or_else(|| anyhow::anyhow!("no certificate hash"))?;
    let digest = wtransport::tls::Sha256Digest::new(crate::target::digest(cert)?);
    let cfg = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([digest])
        .keep_alive_interval(Some(Duration::from_secs(4)))
        .build();
    Ok(wtransport::Endpoint::client(cfg)?)
}

async fn wt_case(
    env: &Env,
    ep: &wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>,
    i: usize,
    n: u64,
) -> Result<String, String> {
    let addr = env.quic.ok_or("no WebTransport address")?;
    let url = format!("https://{addr}/api/live-stream/{}", env.event);
    let conn = ep.connect(url.as_str()).await.map_err(|e| format!("connect: {e}"))?;
    let (mut send, mut recv) =
        conn.open_bi().await.map_err(|e| format!("open: {e}"))?.await.map_err(|e| format!("open: {e}"))?;
    let closed = |conn: wtransport::Connection| async move {
        match tokio::time::timeout(Duration::from_secs(3), conn.closed()).await {
            Ok(wtransport::error::ConnectionError::ApplicationClosed(c)) => Ok(format!("close {}", c.code())),
            Ok(other) => Ok(format!("closed: {other}")),
            Err(_) => Err("not closed in 3 s".to_owned()),
        }
    };
    let mut out = Vec::new();
    match i {
        0 => {
            send.write_all(&[0xff, 0xff, 0xff, 0x7f, 1, 2, 3]).await.map_err(|e| format!("send: {e}"))?;
            closed(conn).await
        }
        1 => {
            write_frame(&hello(&env.event, &format!("wt-bad-{n}"), PROTOCOL_VERSION + 98), &mut out);
            send.write_all(&out).await.map_err(|e| format!("send: {e}"))?;
            closed(conn).await
        }
        _ => {
            write_frame(&hello(&env.event, &format!("wt-bad-{n}"), PROTOCOL_VERSION), &mut out);
            send.write_all(&out).await.map_err(|e| format!("send: {e}"))?;
            let mut rng = Rng(n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            for _ in 0..200 {
                let mut d = vec![0u8; 1 + rng.below(1100) as usize];
                rng.fill(&mut d);
                let _ = conn.send_datagram(d);
            }
            out.clear();
            write_frame(&encode_client(&ClientMsg::Ping(Ping { client_time: n })), &mut out);
            send.write_all(&out).await.map_err(|e| format!("send: {e}"))?;
            let mut limited = false;
            let mut dec = lockstep_protocol::FrameDecoder::new();
            let mut buf = vec![0u8; 4096];
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                let got = tokio::time::timeout_at(deadline, recv.read(&mut buf))
                    .await
                    .map_err(|_| "no pong in 3 s".to_owned())?
                    .map_err(|e| format!("read: {e}"))?;
                let Some(k) = got else { return Ok("stream closed".into()) };
                dec.push(&buf[..k]);
                while let Some(f) = dec.next_frame().map_err(|e| format!("framing: {e:?}"))? {
                    match decode_server(&f) {
                        Ok(ServerMsg::Pong(p)) if p.client_time == n => return Ok(WT_DATAGRAMS_ANSWER.into()),
                        Ok(ServerMsg::Error(e)) if e.code == ErrorCode::RateLimited as u16 && !limited => {
                            // The budget refills at 50 a second: the ping again, once.
                            limited = true;
                            tokio::time::sleep(Duration::from_millis(250)).await;
                            send.write_all(&out).await.map_err(|e| format!("send: {e}"))?;
                        }
                        Ok(ServerMsg::Error(e)) => return Ok(format!("error {}", e.code)),
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Every case of the matrix, round robin: a WebSocket or REST case every
/// 5 ms (each from its own address), a WebTransport case every 100 ms.
async fn malformed(env: &Env, tally: &Arc<Tally>, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let token = dev_token(env).await?;
    let ep = match env.quic {
        Some(_) => Some(Arc::new(wt_endpoint(env)?)),
        None => None,
    };
    let sem = Arc::new(Semaphore::new(64));
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {}
        }
        n += 1;
        let Ok(permit) = sem.clone().try_acquire_owned() else { continue };
        let (env, tally, token, ep) = (env.clone(), tally.clone(), token.clone(), ep.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(ep) = ep.filter(|_| n.is_multiple_of(20)) {
                let i = (n / 20) as usize % WT_CASES.len();
                let mut got = wt_case(&env, &ep, i, n).await;
                // Under a million random datagrams a QUIC handshake now and then fails before the
                // case has sent anything (1 in 12 once, closed by the peer with 0x105): not a verdict
                // on the bad input, so that one try is made again, and the failure is reported.
                let failed_early = match &got {
                    Err(e) if e.starts_with("connect:") || e.starts_with("open:") => Some(e.clone()),
                    _ => None,
                };
                if let Some(e) = failed_early {
                    tally.retried(WT_CASES[i].0, &e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    got = wt_case(&env, &ep, i, n).await;
                }
                tally.record(WT_CASES[i].0, WT_CASES[i].1, got);
            } else {
                let i = n as usize % WS_CASES.len();
                let got = ws_case(&env, i, n, &token).await;
                tally.record(WS_CASES[i].0, WS_CASES[i].1, got);
            }
        });
    }
    Ok(())
}

/// A million random UDP datagrams at the QUIC port, as fast as one socket
/// sends them: a quarter shaped as QUIC Initial packets (long header, 1,200
/// bytes, random connection ids), the rest random in content and size.
async fn datagrams(env: &Env, tally: &Arc<Tally>, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let addr = env.quic.ok_or_else(|| anyhow::anyhow!("datagrams need the WebTransport port"))?;
    let tally = tally.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let sock = std::net::UdpSocket::bind(if addr.is_ipv6() { "[::1]:0" } else { "127.0.0.1:0" })?;
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut buf = vec![0u8; 1400];
        let (t0, mut sent, mut failed) = (std::time::Instant::now(), 0u64, 0u64);
        while sent + failed < 1_000_000 && !*stop.borrow() {
            let len = if rng.below(4) == 0 {
                buf[0] = 0xc0 | (rng.next() as u8 & 0x0f);
                buf[1..5].copy_from_slice(&1u32.to_be_bytes());
                rng.fill(&mut buf[5..1200]);
                1200
            } else {
                let len = 1 + rng.below(1399) as usize;
                rng.fill(&mut buf[..len]);
                len
            };
            match sock.send_to(&buf[..len], addr) {
                Ok(_) => sent += 1,
                Err(_) => failed += 1,
            }
        }
        let s = t0.elapsed().as_secs_f64();
        tally.note(format!(
            "{sent} random datagrams sent in {s:.1} s ({:.0}/s){}",
            sent as f64 / s,
            if failed > 0 { format!(", {failed} sends failed") } else { String::new() }
        ));
        tally.record("udp random datagrams (1,000,000, or as many as the window allows)", "sent", Ok("sent".into()));
        Ok(())
    })
    .await??;
    Ok(())
}

/// One joined connection sending pings at 100× the message budget (5,000 a
/// second) until the server closes it; then the next one (a new address).
async fn flood(env: &Env, tally: &Arc<Tally>, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let path = format!("/api/live-stream/{}", env.event);
    let ping = encode_client(&ClientMsg::Ping(Ping { client_time: 0 }));
    let mut n = 0u64;
    while !*stop.borrow() {
        n += 1;
        let mut ws = match ws(env, &path, Some("lockstep.v1"), &fake_ip(0x10000 + n)).await {
            Ok(ws) => ws,
            Err(e) => {
                tally.record("flood at 100× the budget", "error 4007, close 4021", Err(e));
                continue;
            }
        };
        ws.send_binary(&hello(&env.event, &format!("flood-{n}"), PROTOCOL_VERSION)).await?;
        let (t0, mut limited, mut sent) = (Instant::now(), false, 0u64);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let got = loop {
            tokio::select! {
                _ = stop.changed() => break None,
                _ = tick.tick() => {}
            }
            let batch: Vec<&[u8]> = std::iter::repeat_n(ping.as_slice(), 50).collect();
            let send_ok = ws.send_many(2, &batch).await.is_ok();
            sent += 50 * send_ok as u64;
            // Read what came (pongs, the warnings, the close) without waiting.
            let _ = tokio::time::timeout(Duration::from_millis(1), ws.read()).await;
            let mut closed = None;
            while let Ok(Some(f)) = ws.next_frame().await {
                let p = ws.payload(&f);
                match f.op {
                    Op::Close if p.len() >= 2 => closed = Some(u16::from_be_bytes([p[0], p[1]])),
                    Op::Binary => limited |= matches!(decode_server(p), Ok(ServerMsg::Error(e)) if e.code == 4007),
                    _ => {}
                }
            }
            if let Some(c) = closed {
                break Some((c, t0.elapsed()));
            }
            if !send_ok || t0.elapsed() > Duration::from_secs(10) {
                break Some((0, t0.elapsed()));
            }
        };
        match got {
            Some((c, after)) => {
                let answer = format!("{}close {c}", if limited { "error 4007, " } else { "" });
                tally.record("flood at 100× the budget", "error 4007, close 4021", Ok(answer));
                if n <= 3 {
                    tally.note(format!("flooder {n}: {sent} pings sent, closed after {:.2} s", after.as_secs_f64()));
                }
            }
            None => break,
        }
    }
    Ok(())
}

/// 1,000 WebSocket connections a second opening (upgrade, `Hello`) and
/// closing: from one address (the per-IP limit answers 429 past its burst)
/// or each from its own.
async fn churn(env: &Env, tally: &Arc<Tally>, mut stop: watch::Receiver<bool>, many: bool) -> anyhow::Result<()> {
    let path = format!("/api/live-stream/{}", env.event);
    let sem = Arc::new(Semaphore::new(256));
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // From one address the per-IP limit admits its burst (2,000 here) and then
    // 20 a second (--connects-per-ip-per-sec), and answers the rest 429.
    let (case, expect) = if many {
        ("churn from many addresses", "welcome")
    } else {
        ("churn from one address", "HTTP 429, or admitted within the burst and 20/s")
    };
    let admitted = Arc::new(AtomicU64::new(0));
    let n = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {}
        }
        let k = n.fetch_add(1, Relaxed);
        let Ok(permit) = sem.clone().try_acquire_owned() else {
            tally.record(case, expect, Err("not attempted: 256 in flight".into()));
            continue;
        };
        let (env, tally, path, admitted) = (env.clone(), tally.clone(), path.clone(), admitted.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let ip = if many { fake_ip(0x20000 + k) } else { "10.0.0.1".into() };
            let got = match ws(&env, &path, Some("lockstep.v1"), &ip).await {
                Ok(mut ws) => match ws.send_binary(&hello(&env.event, &format!("churn-{k}"), PROTOCOL_VERSION)).await {
                    Ok(()) => {
                        let a = answer(&mut ws, false).await;
                        let _ = ws.send(8, &1000u16.to_be_bytes()).await;
                        a
                    }
                    Err(e) => Err(format!("send: {e}")),
                },
                Err(e) => Ok(e),
            };
            let got = match got {
                Ok(w) if !many && w == "welcome" => {
                    let n = admitted.fetch_add(1, Relaxed) + 1;
                    let allowed = 2_000.0 + 20.0 * started.elapsed().as_secs_f64() + 20.0;
                    Ok(if (n as f64) <= allowed {
                        expect.to_owned()
                    } else {
                        format!("admitted beyond the limit ({n})")
                    })
                }
                Ok(w) if !many && w == "HTTP 429" => Ok(expect.to_owned()),
                other => other,
            };
            tally.record(case, expect, got);
        });
    }
    tally.note(format!("{} connection attempts in {:.1} s", n.load(Relaxed), started.elapsed().as_secs_f64()));
    Ok(())
}

/// A host in another room (with 20 viewers) sending seeks as fast as its
/// message budget lets it (45 a second, never closed): the change budget
/// holds and coalesces them; its viewers' changes are counted.
async fn host_flood(env: &Env, tally: &Arc<Tally>, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let event = format!("{}-host-flood", env.tag);
    let path = format!("/api/live-stream/{event}");
    let mut host = ws(env, &path, Some("lockstep.v1"), "10.3.0.1").await.map_err(anyhow::Error::msg)?;
    host.send_binary(&hello(&event, "flood-host", PROTOCOL_VERSION)).await?;
    anyhow::ensure!(answer(&mut host, false).await.as_deref() == Ok("welcome"), "the flooding host did not join");
    let changes = Arc::new(AtomicU64::new(0));
    let mut viewers = Vec::new();
    for v in 0..20 {
        let mut ws = ws(env, &path, Some("lockstep.v1"), &format!("10.3.1.{v}")).await.map_err(anyhow::Error::msg)?;
        ws.send_binary(&hello(&event, &format!("fv{v}"), PROTOCOL_VERSION)).await?;
        let (changes, mut stop) = (changes.clone(), stop.clone());
        viewers.push(tokio::spawn(async move {
            loop {
                while let Ok(Some(f)) = ws.next_frame().await {
                    if f.op == Op::Binary && matches!(decode_server(ws.payload(&f)), Ok(ServerMsg::TimelineChanged(_)))
                    {
                        changes.fetch_add(1, Relaxed);
                    }
                }
                tokio::select! {
                    _ = stop.changed() => return,
                    r = ws.read() => if !matches!(r, Ok(true)) { return },
                }
            }
        }));
    }
    let (t0, mut sent, mut errors) = (Instant::now(), 0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / 45));
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {}
        }
        sent += 1;
        let msg = encode_client(&ClientMsg::Command(Command {
            request_id: sent as u32,
            action: Action::Seek { position_ms: sent * 1_000 },
        }));
        host.send_binary(&msg).await?;
        let _ = tokio::time::timeout(Duration::from_millis(1), host.read()).await;
        while let Ok(Some(f)) = host.next_frame().await {
            if f.op == Op::Close {
                anyhow::bail!("the host was closed");
            }
            errors += matches!(decode_server(host.payload(&f)), Ok(ServerMsg::Error(_))) as u64;
        }
    }
    let s = t0.elapsed().as_secs_f64();
    let seen = changes.load(Relaxed) as f64 / 20.0;
    tally.note(format!(
        "host sent {sent} seeks in {s:.1} s ({:.0}/s), {errors} refused; each of its 20 viewers saw {seen:.0} changes ({:.1}/s)",
        sent as f64 / s,
        seen / s
    ));
    tally.record("host commands at its budget", "held and coalesced", Ok("held and coalesced".into()));
    for v in viewers {
        v.abort();
    }
    Ok(())
}

/// 50 viewers in the victims' room that never read, their receive buffers
/// shrunk; at the end, each one's fate (still open, or closed with 4010).
async fn slow_reader(env: &Env, tally: &Arc<Tally>, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let path = format!("/api/live-stream/{}", env.event);
    let mut readers = Vec::new();
    for v in 0..50 {
        let mut ws = ws(env, &path, Some("lockstep.v1"), &format!("10.4.0.{v}")).await.map_err(anyhow::Error::msg)?;
        ws.shrink_receive_buffer(1024)?;
        ws.send_binary(&hello(&env.event, &format!("slow-{v}"), PROTOCOL_VERSION)).await?;
        readers.push(ws);
    }
    let _ = stop.changed().await;
    // Drain what the kernel holds, all at once: a close frame, if the server gave up on one.
    let fates = futures_util::future::join_all(readers.into_iter().map(|mut ws| async move {
        let mut close = None;
        let deadline = Instant::now() + Duration::from_millis(500);
        while let Ok(Ok(true)) = tokio::time::timeout_at(deadline, ws.read()).await {
            while let Ok(Some(f)) = ws.next_frame().await {
                let p = ws.payload(&f);
                if f.op == Op::Close && p.len() >= 2 {
                    close = Some(u16::from_be_bytes([p[0], p[1]]));
                }
            }
        }
        close
    }))
    .await;
    for close in fates {
        // Both are documented: the server's queue for it is bounded (--control-queue), and
        // once it is full the connection is closed with 4010.
        let expect = "bounded: open, or close 4010";
        let fate = match close {
            None | Some(4010) => expect.to_owned(),
            Some(c) => format!("close {c}"),
        };
        tally.record("a viewer that never reads", expect, Ok(fate));
    }
    Ok(())
}
