//! The WebTransport transport: one stream plus datagrams, mixed rooms with
//! WebSocket clients, bad input, refusals, shutdown, loss, and the
//! certificate lifecycle. Clients are real `wtransport` clients that trust the
//! server by the hash published at `GET /api/certificate`, as browsers do.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep::cert::CertManager;
use lockstep::clock::ServerClock;
use lockstep::config::Config;
use lockstep_protocol::limits::MAX_DATAGRAM;
use lockstep_protocol::timeline::unwrap_anchor;
use lockstep_protocol::{
    Action, ClientMsg, ErrorCode, FrameDecoder, Hello, Nack, PROTOCOL_VERSION, Ping, ServerMsg, Suspend, SyncReport,
    Tick, TimelineChanged, caps, decode_server, encode_client, write_frame,
};
use tokio::sync::mpsc;
use wtransport::error::{ConnectingError, ConnectionError};
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Connection, Endpoint, SendStream};

use crate::common::{self, Got, WAIT, get_json, hello_caps};

// ------------------------------------------------------------------ harness

/// A running server, with what WebTransport tests need besides the HTTP address.
pub struct WtServer {
    http: SocketAddr,
    quic: SocketAddr,
    certs: CertManager,
    clock: ServerClock,
    pub inner: common::TestServer,
}

impl WtServer {
    async fn start() -> WtServer {
        Self::with(|_| {}).await
    }

    /// HTTP on `127.0.0.1:0`, QUIC on `[::]:0` (dual stack), ticks every
    /// 50 ms; `tweak` edits the config.
    pub async fn with(tweak: impl FnOnce(&mut Config)) -> WtServer {
        let mut cfg = Config { tick_interval_ms: 50, ..common::test_config() };
        tweak(&mut cfg);
        let inner = common::TestServer::spawn(cfg).await;
        WtServer {
            http: inner.http,
            quic: inner.quic,
            certs: inner.certs.clone().expect("in-process server"),
            clock: inner.clock.expect("in-process server"),
            inner,
        }
    }

    fn url(&self, event: &str) -> String {
        format!("https://localhost:{}/api/live-stream/{event}", self.quic.port())
    }

    fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn ws_url(&self, event: &str) -> String {
        format!("ws://{}/api/live-stream/{event}", self.http)
    }

    /// The hashes published at `GET /api/certificate`, current first.
    async fn hashes(&self) -> Vec<Sha256Digest> {
        let (status, body) = get_json(&self.http_url("/api/certificate")).await;
        assert_eq!(status, 200, "{body}");
        body["hashes"]
            .as_array()
            .expect("hashes")
            .iter()
            .map(|h| {
                assert_eq!(h["algorithm"], "sha-256");
                digest(h["value"].as_str().expect("hex"))
            })
            .collect()
    }

    /// Connects, opens the stream and joins `event`.
    pub async fn join(&self, event: &str, device: &str) -> (Wt, lockstep_protocol::Welcome) {
        self.join_with(hello(event, device)).await
    }

    /// Connects, opens the stream and joins with `hello`.
    pub async fn join_with(&self, hello: ClientMsg) -> (Wt, lockstep_protocol::Welcome) {
        let ClientMsg::Hello(h) = &hello else { panic!("not a hello") };
        let mut wt = Wt::open(connect(&self.url(&h.event_id), &self.hashes().await).await.expect("connect")).await;
        wt.send(&hello).await;
        let w = wt.welcome().await;
        (wt, w)
    }

    /// The value of a metric line (`name{labels}`), 0 if absent.
    async fn metric(&self, series: &str) -> f64 {
        let (_, body) = get_json(&self.http_url("/metrics")).await;
        let text = body.as_str().unwrap_or_default().to_owned();
        text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
    }

    async fn stop(self) {
        self.inner.stop().await;
    }
}

fn digest(hex: &str) -> Sha256Digest {
    assert_eq!(hex.len(), 64, "{hex}");
    let bytes: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
    Sha256Digest::new(bytes.try_into().unwrap())
}

fn hex(d: &Sha256Digest) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Connects a client that trusts exactly `hashes` (like `serverCertificateHashes`).
async fn connect(url: &str, hashes: &[Sha256Digest]) -> Result<Connection, ConnectingError> {
    let cfg = ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes(hashes.iter().cloned())
        .keep_alive_interval(Some(Duration::from_secs(2)))
        .build();
    let endpoint = Endpoint::client(cfg).expect("client endpoint");
    tokio::time::timeout(WAIT, endpoint.connect(url)).await.expect("connect in time")
}

fn hello(event: &str, device: &str) -> ClientMsg {
    ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        event_id: event.into(),
        device_id: device.into(),
        token: None,
        caps: caps::DATAGRAMS,
    })
}

/// A WebTransport client: the connection, its one stream, and what arrived.
pub struct Wt {
    conn: Connection,
    send: SendStream,
    /// Decoded stream frames; closed when the stream ends.
    frames: mpsc::UnboundedReceiver<ServerMsg>,
    /// Datagram payloads with the instant `receive_datagram` returned them.
    dgrams: mpsc::UnboundedReceiver<(Bytes, Instant)>,
}

impl Wt {
    async fn open(conn: Connection) -> Wt {
        let opening = tokio::time::timeout(WAIT, conn.open_bi()).await.expect("open in time").expect("open");
        let (send, mut recv) = opening.await.expect("stream");
        let (ftx, frames) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut dec = FrameDecoder::new();
            let mut buf = vec![0u8; 4096];
            while let Ok(Some(n)) = recv.read(&mut buf).await {
                dec.push(&buf[..n]);
                while let Some(f) = dec.next_frame().expect("server frames are well formed") {
                    let _ = ftx.send(decode_server(&f).expect("server sends valid messages"));
                }
            }
        });
        let (dtx, dgrams) = mpsc::unbounded_channel();
        let c = conn.clone();
        tokio::spawn(async move {
            while let Ok(d) = c.receive_datagram().await {
                let _ = dtx.send((d.payload(), Instant::now()));
            }
        });
        Wt { conn, send, frames, dgrams }
    }

    async fn send(&mut self, msg: &ClientMsg) {
        self.send_raw_frame(&encode_client(msg)).await;
    }

    async fn send_raw_frame(&mut self, payload: &[u8]) {
        let mut out = Vec::new();
        write_frame(payload, &mut out);
        self.send.write_all(&out).await.expect("stream write");
    }

    fn send_datagram(&self, msg: &ClientMsg) {
        self.conn.send_datagram(encode_client(msg)).expect("datagram fits");
    }

    /// The next stream frame; `None` once the stream has ended.
    async fn frame(&mut self) -> Option<ServerMsg> {
        tokio::time::timeout(WAIT, self.frames.recv()).await.expect("a frame in time")
    }

    /// The first stream frame `pick` accepts, skipping others.
    pub async fn until<T>(&mut self, mut pick: impl FnMut(&ServerMsg) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let m = tokio::time::timeout_at(deadline, self.frame()).await.expect("expected frame in time");
            match m {
                Some(m) => {
                    if let Some(t) = pick(&m) {
                        return t;
                    }
                }
                None => panic!("stream ended while waiting"),
            }
        }
    }

    async fn welcome(&mut self) -> lockstep_protocol::Welcome {
        self.until(|m| match m {
            ServerMsg::Welcome(w) => Some(w.clone()),
            _ => None,
        })
        .await
    }

    /// The next datagram, raw.
    async fn datagram(&mut self) -> (Bytes, Instant) {
        tokio::time::timeout(WAIT, self.dgrams.recv()).await.expect("a datagram in time").expect("connection open")
    }

    /// The first datagram `pick` accepts (decoded), skipping others.
    async fn until_datagram<T>(&mut self, mut pick: impl FnMut(&ServerMsg, usize) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (bytes, _) =
                tokio::time::timeout_at(deadline, self.datagram()).await.expect("expected datagram in time");
            let m = decode_server(&bytes).expect("server datagrams decode");
            if let Some(t) = pick(&m, bytes.len()) {
                return t;
            }
        }
    }

    async fn error_code(&mut self) -> u16 {
        self.until(|m| match m {
            ServerMsg::Error(e) => Some(e.code),
            _ => None,
        })
        .await
    }

    /// Waits for the server to close the connection; its application code.
    async fn closed(&self) -> Option<u64> {
        match tokio::time::timeout(WAIT, self.conn.closed()).await.expect("closed in time") {
            ConnectionError::ApplicationClosed(c) => Some(c.code().into_inner()),
            other => {
                eprintln!("closed without an application code: {other}");
                None
            }
        }
    }

    /// Sends pings as datagrams until a pong comes back as a datagram.
    async fn ping_pong(&mut self, client_time: u64) -> lockstep_protocol::Pong {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            self.send_datagram(&ClientMsg::Ping(Ping { client_time }));
            let got = tokio::time::timeout(Duration::from_millis(300), async {
                loop {
                    let (bytes, _) = self.datagram().await;
                    if let Ok(ServerMsg::Pong(p)) = decode_server(&bytes)
                        && p.client_time == client_time
                    {
                        return p;
                    }
                }
            })
            .await;
            if let Ok(p) = got {
                return p;
            }
            assert!(tokio::time::Instant::now() < deadline, "no pong");
        }
    }
}

/// Changes as datagrams only, the way the JS client asks for them.
const ONCE: u32 = caps::DATAGRAMS | caps::ACKS | caps::DATAGRAM_CHANGES;

impl Wt {
    /// Sends a command every member may send but the room refuses (a rate
    /// out of range: `Error 4009` with `request_id`), and returns what came
    /// on the stream before that error. The stream is ordered and the error
    /// is queued after everything the server queued before it read the
    /// command, so this shows exactly what the stream carried until then.
    async fn stream_until_marker(&mut self, request_id: u32) -> Vec<ServerMsg> {
        self.send(&common::command(request_id, Action::SetRate { rate_milli: 5000 })).await;
        let mut before = Vec::new();
        self.until(|m| match m {
            ServerMsg::Error(e) if e.request_id == request_id => Some(()),
            other => {
                before.push(other.clone());
                None
            }
        })
        .await;
        before
    }
}

fn no_change(msgs: &[ServerMsg]) -> bool {
    !msgs.iter().any(|m| matches!(m, ServerMsg::TimelineChanged(_)))
}

fn changed(g: &Got) -> Option<TimelineChanged> {
    match g {
        Got::Msg(ServerMsg::TimelineChanged(c)) => Some(c.clone()),
        _ => None,
    }
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn join_over_webtransport_gets_welcome_on_the_stream_and_ticks_as_datagrams() {
    let server = WtServer::start().await;
    let (mut wt, w) = server.join("ev-wt-join", "d1").await;
    assert_eq!(w.limits.max_datagram as usize, MAX_DATAGRAM);
    let mut last_epoch = 0;
    for _ in 0..5 {
        let (tick, len) = wt
            .until_datagram(|m, len| match m {
                ServerMsg::Tick(t) => Some((*t, len)),
                _ => None,
            })
            .await;
        assert!(len <= 24, "a tick datagram is {len} bytes");
        assert_eq!(tick.viewers, 1);
        assert!(tick.epoch >= last_epoch);
        last_epoch = tick.epoch;
        let t = tick.timeline(server.clock.now_us());
        assert!(t.anchor_us <= server.clock.now_us(), "a tick is anchored in the past on arrival");
    }
    assert_eq!(server.metric("lockstep_connections{transport=\"webtransport\"}").await.min(1.0), 1.0);
    // Dual stack: the same port answers on IPv4 and IPv6 literals.
    let hashes = server.hashes().await;
    for host in ["127.0.0.1", "[::1]"] {
        let url = format!("https://{host}:{}/api/live-stream/ev-wt-join", server.quic.port());
        let mut other = Wt::open(connect(&url, &hashes).await.expect(host)).await;
        other.send(&hello("ev-wt-join", host)).await;
        assert!(other.welcome().await.viewers >= 2);
    }
}

#[tokio::test]
async fn timeline_changes_arrive_on_the_stream_and_as_a_datagram_copy() {
    let server = WtServer::start().await;
    let (mut host, _) = server.join("ev-wt-fast", "host").await;
    let (mut viewer, _) = server.join("ev-wt-fast", "viewer").await;
    host.send(&common::command(7, Action::Seek { position_ms: 42_000 })).await;
    for wt in [&mut host, &mut viewer] {
        let on_stream = wt
            .until(|m| match m {
                ServerMsg::TimelineChanged(c) => Some(c.clone()),
                _ => None,
            })
            .await;
        let as_datagram = wt
            .until_datagram(|m, _| match m {
                ServerMsg::TimelineChanged(c) => Some(c.clone()),
                _ => None,
            })
            .await;
        assert_eq!(on_stream, as_datagram);
        assert_eq!(on_stream.timeline.position_ms, 42_000);
        // The next ticks carry the new epoch.
        let tick = wt
            .until_datagram(|m, _| match m {
                ServerMsg::Tick(t) if t.epoch == on_stream.timeline.epoch => Some(*t),
                _ => None,
            })
            .await;
        assert!(tick.position_ms >= 42_000);
    }
}

/// Issue 14: with `DATAGRAM_CHANGES` a change comes once, as a datagram; a
/// client that lost it asks with a `Nack` and gets it on the stream, once.
#[tokio::test]
async fn with_datagram_changes_a_change_comes_once_and_a_nack_repairs_a_lost_one() {
    let server = WtServer::start().await;
    let ev = "ev-wt-once";
    let (mut host, _) = server.join(ev, "host").await;
    let (mut viewer, w) = server.join_with(hello_caps(ev, "viewer", ONCE)).await;
    host.send(&common::command(1, Action::Seek { position_ms: 42_000 })).await;
    let c = viewer
        .until_datagram(|m, _| match m {
            ServerMsg::TimelineChanged(c) => Some(c.clone()),
            _ => None,
        })
        .await;
    assert_eq!(c.timeline.position_ms, 42_000);
    assert!(c.timeline.epoch > w.timeline.epoch);
    assert!(no_change(&viewer.stream_until_marker(90).await), "no stream copy");

    // The client lost that datagram (it ignores it): the next tick shows a
    // newer epoch than it holds, so it asks.
    viewer.until_datagram(|m, _| matches!(m, ServerMsg::Tick(t) if t.epoch == c.timeline.epoch).then_some(())).await;
    viewer.send(&ClientMsg::Nack(Nack { epoch: w.timeline.epoch })).await;
    let repaired = viewer
        .until(|m| match m {
            ServerMsg::TimelineChanged(c) => Some(c.clone()),
            _ => None,
        })
        .await;
    assert_eq!(repaired, c, "the same change, on the stream");
    // Asking again for the same epoch resends nothing; nor does a Nack from a
    // client that holds the newest change.
    viewer.send(&ClientMsg::Nack(Nack { epoch: w.timeline.epoch })).await;
    viewer.send(&ClientMsg::Nack(Nack { epoch: c.timeline.epoch })).await;
    assert!(no_change(&viewer.stream_until_marker(91).await), "repaired once");

    // A client without the bit still gets the datagram copy and the stream copy.
    let on_stream = host
        .until(|m| match m {
            ServerMsg::TimelineChanged(c) => Some(c.clone()),
            _ => None,
        })
        .await;
    assert_eq!(on_stream, c);
    host.until_datagram(|m, _| matches!(m, ServerMsg::TimelineChanged(x) if *x == c).then_some(())).await;
    // ... and its Nacks are ignored.
    host.send(&ClientMsg::Nack(Nack { epoch: w.timeline.epoch })).await;
    assert!(no_change(&host.stream_until_marker(92).await));

    // A Nack before Hello is refused like any message that needs a room; as
    // a datagram it is dropped (reliable only).
    let mut early = Wt::open(connect(&server.url(ev), &server.hashes().await).await.unwrap()).await;
    early.send(&ClientMsg::Nack(Nack { epoch: 0 })).await;
    assert_eq!(early.error_code().await, ErrorCode::NotJoined.as_u16());
    let wrong = "lockstep_drops_total{reason=\"datagram_wrong_type\"}";
    let before = server.metric(wrong).await;
    viewer.send_datagram(&ClientMsg::Nack(Nack { epoch: 0 }));
    let deadline = Instant::now() + WAIT;
    while server.metric(wrong).await < before + 1.0 {
        assert!(Instant::now() < deadline, "a Nack datagram was not dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(no_change(&viewer.stream_until_marker(93).await), "and not answered");
}

/// With `DATAGRAM_CHANGES`, a pending change that follows the `Welcome`
/// comes on the stream with it, so it cannot overtake the `Welcome`.
#[tokio::test]
async fn with_datagram_changes_the_pending_change_at_join_comes_with_the_welcome() {
    let server = WtServer::with(|c| c.lead_ms = 2_000).await;
    let ev = "ev-wt-once-join";
    let (mut host, _) = server.join(ev, "host").await;
    host.send(&common::command(1, Action::Play { position_ms: Some(5_000) })).await;
    let play = host
        .until(|m| match m {
            ServerMsg::TimelineChanged(c) => Some(c.clone()),
            _ => None,
        })
        .await;
    assert!(play.effective_at_us > server.clock.now_us(), "still pending");
    let (mut viewer, _) = server.join_with(hello_caps(ev, "viewer", ONCE)).await;
    let pending = viewer
        .until(|m| match m {
            ServerMsg::TimelineChanged(c) => Some(c.clone()),
            _ => None,
        })
        .await;
    assert_eq!(pending, play);
}

#[tokio::test]
async fn ping_pong_over_datagrams_is_stamped_with_the_server_clock() {
    let server = WtServer::start().await;
    let (mut wt, w) = server.join("ev-wt-ping", "d").await;
    let before = server.clock.now_us();
    let p = wt.ping_pong(123_456_789).await;
    let after = server.clock.now_us();
    assert_eq!(p.client_time, 123_456_789);
    assert!(w.server_time_us <= p.server_recv_us);
    assert!(before <= p.server_recv_us && p.server_recv_us <= p.server_send_us && p.server_send_us <= after);
    // A ping on the stream is answered too (by datagram).
    wt.send(&ClientMsg::Ping(Ping { client_time: 5 })).await;
    let p = wt
        .until_datagram(|m, _| match m {
            ServerMsg::Pong(p) if p.client_time == 5 => Some(*p),
            _ => None,
        })
        .await;
    assert!(p.server_recv_us <= p.server_send_us);
}

#[tokio::test]
async fn the_room_takes_each_webtransport_members_round_trip_from_quic() {
    let server = WtServer::start().await;
    let (_wt, _) = server.join("ev-wt-rtt", "d").await;
    // Read half a second after the session opens, then every 5 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let reach = loop {
        let (_, state) = get_json(&server.http_url("/api/live-stream/ev-wt-rtt/state")).await;
        if state["reach"]["measured"] == 1 {
            break state["reach"].clone();
        }
        assert!(std::time::Instant::now() < deadline, "no round trip measured: {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rtt = reach["rttP95Ms"].as_f64().unwrap();
    assert!(rtt > 0.0 && rtt < 50.0, "loopback: {reach}");
    assert_eq!(reach["leadMs"], 100.0, "{reach}");
}

#[tokio::test]
async fn without_the_datagrams_capability_ticks_and_pongs_come_on_the_stream() {
    let server = WtServer::start().await;
    let mut wt = Wt::open(connect(&server.url("ev-wt-nodg"), &server.hashes().await).await.unwrap()).await;
    let no_caps = ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        event_id: "ev-wt-nodg".into(),
        device_id: "d".into(),
        token: None,
        caps: 0,
    });
    wt.send(&no_caps).await;
    wt.welcome().await;
    wt.until(|m| matches!(m, ServerMsg::Tick(_)).then_some(())).await;
    wt.send(&ClientMsg::Ping(Ping { client_time: 8 })).await;
    let p = wt
        .until(|m| match m {
            ServerMsg::Pong(p) => Some(*p),
            _ => None,
        })
        .await;
    assert_eq!(p.client_time, 8);
    wt.send(&common::command(1, Action::Seek { position_ms: 1_000 })).await;
    wt.until(|m| matches!(m, ServerMsg::TimelineChanged(_)).then_some(())).await;
    wt.until(|m| matches!(m, ServerMsg::Tick(_)).then_some(())).await;
    assert!(wt.dgrams.try_recv().is_err(), "no datagrams without the capability");
}

#[tokio::test]
async fn a_mixed_room_shares_changes_between_webtransport_and_websocket() {
    let server = WtServer::start().await;
    // A WebTransport host's seek reaches a WebSocket viewer.
    let (mut wt_host, w) = server.join("ev-mixed-a", "wt-host").await;
    assert_eq!(w.role, lockstep_protocol::Role::Host);
    let mut ws_viewer = common::ws_binary(&server.ws_url("ev-mixed-a")).await;
    common::send(&mut ws_viewer, &common::hello("ev-mixed-a", "ws-viewer")).await;
    common::welcome(&mut ws_viewer).await;
    wt_host.send(&common::command(1, Action::Seek { position_ms: 90_000 })).await;
    let c = common::until(&mut ws_viewer, changed).await;
    assert_eq!(c.timeline.position_ms, 90_000);

    // A WebSocket host's pause reaches a WebTransport viewer at the same scheduled time.
    let mut ws_host = common::ws_binary(&server.ws_url("ev-mixed-b")).await;
    common::send(&mut ws_host, &common::hello("ev-mixed-b", "ws-host")).await;
    assert_eq!(common::welcome(&mut ws_host).await.role, lockstep_protocol::Role::Host);
    let (mut wt_viewer, _) = server.join("ev-mixed-b", "wt-viewer").await;
    common::send(&mut ws_host, &common::command(2, Action::Play { position_ms: Some(1_000) })).await;
    let played = common::until(&mut ws_host, changed).await;
    let seen = wt_viewer
        .until(|m| match m {
            ServerMsg::TimelineChanged(c) if c.timeline.epoch == played.timeline.epoch => Some(c.clone()),
            _ => None,
        })
        .await;
    assert_eq!(seen, played);
    common::send(&mut ws_host, &common::command(3, Action::Pause { position_ms: None })).await;
    let paused = common::until(&mut ws_host, |g| changed(g).filter(|c| c.timeline.paused)).await;
    let seen = wt_viewer
        .until_datagram(|m, _| match m {
            ServerMsg::TimelineChanged(c) if c.timeline.paused => Some(c.clone()),
            _ => None,
        })
        .await;
    assert_eq!(seen.effective_at_us, paused.effective_at_us, "same scheduled time");
    assert_eq!(seen.timeline, paused.timeline, "same position");
}

#[tokio::test]
async fn bad_datagrams_are_counted_and_dropped_without_closing() {
    let server = WtServer::start().await;
    let (mut wt, _) = server.join("ev-wt-bad", "bad").await;
    let (mut other, _) = server.join("ev-wt-bad", "other").await;
    let oversized = "lockstep_drops_total{reason=\"oversized_datagram\"}";
    let garbage = "lockstep_drops_total{reason=\"bad_datagram\"}";
    let wrong = "lockstep_drops_total{reason=\"datagram_wrong_type\"}";
    let (o0, g0, w0) = (server.metric(oversized).await, server.metric(garbage).await, server.metric(wrong).await);

    // Loopback lets QUIC grow its packets beyond 1200 bytes after path MTU discovery.
    let deadline = Instant::now() + WAIT;
    while wt.conn.max_datagram_size().unwrap_or(0) <= MAX_DATAGRAM {
        assert!(Instant::now() < deadline, "path MTU never grew: {:?}", wt.conn.max_datagram_size());
        wt.send_datagram(&ClientMsg::Ping(Ping { client_time: 1 }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let big = vec![1u8; MAX_DATAGRAM + 1];
    wt.conn.send_datagram(&big).expect("the path takes it");
    wt.conn.send_datagram([0xffu8, 0xff, 0xff]).unwrap();
    wt.conn.send_datagram(encode_client(&hello("ev-wt-bad", "again"))).unwrap();
    let deadline = Instant::now() + WAIT;
    while server.metric(oversized).await < o0 + 1.0
        || server.metric(garbage).await < g0 + 1.0
        || server.metric(wrong).await < w0 + 1.0
    {
        assert!(Instant::now() < deadline, "drops not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The session is healthy, and so is everyone else.
    let p = wt.ping_pong(77).await;
    assert_eq!(p.client_time, 77);
    assert_eq!(other.ping_pong(78).await.client_time, 78);
    assert!(wt.conn.quic_connection().close_reason().is_none());
}

#[tokio::test]
async fn garbage_frames_get_errors_and_a_bad_prefix_closes_with_4002() {
    let server = WtServer::start().await;
    let (mut wt, _) = server.join("ev-wt-frames", "bad").await;
    let (mut other, _) = server.join("ev-wt-frames", "other").await;
    // A frame that is not a message: an error, the session stays.
    wt.send_raw_frame(&[0xff, 0xff, 0xff]).await;
    assert_eq!(wt.error_code().await, ErrorCode::Malformed.as_u16());
    assert_eq!(wt.ping_pong(1).await.client_time, 1);
    // A prefix announcing more than 8 KiB cannot be resynchronised: error, then close.
    wt.send.write_all(&[252, 0, 0, 1, 0]).await.unwrap();
    assert_eq!(wt.error_code().await, ErrorCode::FrameTooLarge.as_u16());
    assert_eq!(wt.closed().await, Some(u64::from(ErrorCode::FrameTooLarge.as_u16())));
    assert_eq!(other.ping_pong(2).await.client_time, 2, "others are unaffected");
}

#[tokio::test]
async fn version_mismatch_closes_with_4006() {
    let server = WtServer::start().await;
    let mut wt = Wt::open(connect(&server.url("ev-wt-ver"), &server.hashes().await).await.unwrap()).await;
    wt.send(&ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION + 1,
        event_id: "ev-wt-ver".into(),
        device_id: "d".into(),
        token: None,
        caps: caps::DATAGRAMS,
    }))
    .await;
    assert_eq!(wt.error_code().await, ErrorCode::VersionMismatch.as_u16());
    assert_eq!(wt.closed().await, Some(4006));
}

#[tokio::test]
async fn a_session_that_never_opens_its_stream_times_out_with_4018() {
    let server = WtServer::with(|c| c.hello_timeout_ms = 300).await;
    let conn = connect(&server.url("ev-wt-silent"), &server.hashes().await).await.unwrap();
    match tokio::time::timeout(WAIT, conn.closed()).await.expect("closed in time") {
        ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.code().into_inner(), u64::from(ErrorCode::HelloTimeout.as_u16()));
        }
        other => panic!("closed without the code: {other}"),
    }
}

#[tokio::test]
async fn bad_paths_are_refused_before_accepting_and_a_full_server_refuses_too() {
    let server = WtServer::with(|c| c.max_connections = 1).await;
    let hashes = server.hashes().await;
    let port = server.quic.port();
    for path in ["/", "/nope", "/api/live-stream/", "/api/live-stream/a/b", "/api/live-stream/%20x"] {
        let url = format!("https://localhost:{port}{path}");
        assert!(matches!(connect(&url, &hashes).await, Err(ConnectingError::SessionRejected)), "{path}");
    }
    let full = "lockstep_errors_total{code=\"server_full\"}";
    let before = server.metric(full).await;
    let (mut first, _) = server.join("ev-wt-full", "first").await;
    assert!(matches!(connect(&server.url("ev-wt-full"), &hashes).await, Err(ConnectingError::SessionRejected)));
    assert!(server.metric(full).await > before, "counted as server_full (429)");
    // The WebSocket shares the same cap.
    let (status, _) = get_ws_status(&server.ws_url("ev-wt-full")).await;
    assert_eq!(status, 503);
    assert_eq!(first.ping_pong(9).await.client_time, 9);
    drop(first);
}

/// The HTTP status of a WebSocket upgrade attempt that is refused.
async fn get_ws_status(url: &str) -> (u16, ()) {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (resp.status().as_u16(), ()),
        Err(e) => panic!("{e}"),
        Ok(_) => (101, ()),
    }
}

#[tokio::test]
async fn shutdown_closes_webtransport_sessions_with_4014() {
    let server = WtServer::start().await;
    let (mut wt, _) = server.join("ev-wt-stop", "d").await;
    let (mut ws, _) = {
        let mut ws = common::ws_binary(&server.ws_url("ev-wt-stop")).await;
        common::send(&mut ws, &common::hello("ev-wt-stop", "ws")).await;
        let w = common::welcome(&mut ws).await;
        (ws, w)
    };
    let started = Instant::now();
    server.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5), "stopped in {:?}", started.elapsed());
    assert_eq!(wt.error_code().await, ErrorCode::ShuttingDown.as_u16());
    assert_eq!(wt.closed().await, Some(4014));
    assert_eq!(common::closed(&mut ws).await, Some(ErrorCode::ShuttingDown.as_u16()));
}

#[tokio::test]
async fn published_hashes_match_the_presented_certificate() {
    let server = WtServer::start().await;
    let (status, body) = get_json(&server.http_url("/api/certificate")).await;
    assert_eq!(status, 200);
    let value = body["hashes"][0]["value"].as_str().unwrap().to_owned();
    assert_eq!(body["hashes"].as_array().unwrap().len(), 1);
    let not_after = body["notAfter"].as_u64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(not_after > now + 12 * 86_400 && not_after <= now + 13 * 86_400, "{not_after} vs {now}");
    // The node's WebTransport base: the host the page used, the QUIC port it bound.
    let port = server.quic.port();
    assert_eq!(body["webtransport"], format!("https://127.0.0.1:{port}"));
    let (status, plain) = get_json(&server.http_url("/certificate.sha256")).await;
    assert_eq!(status, 200);
    // A JSON-looking body would have been parsed; a hex string may parse as a number.
    let plain = match plain {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    assert_eq!(plain.trim(), value);
    let (wt, _) = server.join("ev-wt-cert", "d").await;
    let presented = wt.conn.peer_identity().expect("server certificate");
    assert_eq!(hex(&presented.as_slice()[0].hash()), value);
}

#[tokio::test]
async fn rotation_keeps_open_sessions_and_new_sessions_get_the_new_certificate() {
    let server = WtServer::start().await;
    let old = server.hashes().await;
    assert_eq!(old.len(), 1);
    let (mut wt, _) = server.join("ev-wt-rotate", "stays").await;

    // The next certificate is published before it is served.
    let next = server.certs.prepare_next().unwrap();
    let both = server.hashes().await;
    assert_eq!(both.iter().map(hex).collect::<Vec<_>>(), [hex(&old[0]), next.clone()]);
    server.certs.rotate_now().unwrap();
    let now = server.hashes().await;
    assert_eq!(now.iter().map(hex).collect::<Vec<_>>(), std::slice::from_ref(&next));

    // The open session lives on: pongs, ticks, and changes still flow.
    assert_eq!(wt.ping_pong(3).await.client_time, 3);
    wt.send(&common::command(1, Action::Seek { position_ms: 5_000 })).await;
    let c = wt
        .until(|m| match m {
            ServerMsg::TimelineChanged(c) => Some(c.clone()),
            _ => None,
        })
        .await;
    assert_eq!(c.timeline.position_ms, 5_000);

    // A new session gets the new certificate; trusting only the old one fails.
    let (fresh, _) = server.join("ev-wt-rotate", "new").await;
    assert_eq!(hex(&fresh.conn.peer_identity().unwrap().as_slice()[0].hash()), next);
    assert!(connect(&server.url("ev-wt-rotate"), &old).await.is_err(), "the old certificate is no longer served");
    // A client that fetched both hashes before the switch still connects.
    assert!(connect(&server.url("ev-wt-rotate"), &both).await.is_ok());
    assert_eq!(wt.ping_pong(4).await.client_time, 4);
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = crate::common::temp_path(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs `lockstep cert --out DIR`; returns the printed hash.
fn cert_command(dir: &std::path::Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["cert", "--out"])
        .arg(dir)
        .output()
        .expect("run lockstep cert");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn cert_command_writes_a_pair_that_serve_loads_and_reloads_on_change() {
    let dir = temp_dir("certs");
    let hash = cert_command(&dir);
    assert_eq!(hash.len(), 64);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let server = WtServer::with(|c| {
        c.cert = Some(cert.clone());
        c.key = Some(key.clone());
        c.cert_poll_ms = 50;
    })
    .await;
    let (_, plain) = get_json(&server.http_url("/certificate.sha256")).await;
    let plain = plain.as_str().map(str::to_owned).unwrap_or_else(|| plain.to_string());
    assert_eq!(plain.trim(), hash);
    let (mut wt, _) = server.join("ev-wt-files", "d").await;
    assert_eq!(hex(&wt.conn.peer_identity().unwrap().as_slice()[0].hash()), hash);

    // Replace the files (as a renewal would): the new pair is served without a restart.
    let newer = temp_dir("certs-next");
    let next_hash = cert_command(&newer);
    std::fs::copy(newer.join("key.pem"), &key).unwrap();
    std::fs::copy(newer.join("cert.pem"), &cert).unwrap();
    let deadline = Instant::now() + WAIT;
    while server.hashes().await.iter().map(hex).collect::<Vec<_>>() != [next_hash.clone()] {
        assert!(Instant::now() < deadline, "the new files were never picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (fresh, _) = server.join("ev-wt-files", "new").await;
    assert_eq!(hex(&fresh.conn.peer_identity().unwrap().as_slice()[0].hash()), next_hash);
    assert_eq!(wt.ping_pong(1).await.client_time, 1, "the open session survived the reload");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&newer);
}

// ------------------------------------------------------------------ loss

/// A UDP proxy between one client and a server.
struct Proxy {
    /// Where the client connects.
    addr: SocketAddr,
    /// Packets dropped, both ways.
    dropped: std::sync::atomic::AtomicU64,
    /// Server → client packets still to drop before the random loss applies again.
    drop_down: std::sync::atomic::AtomicU32,
    /// UDP payload sizes of the server's packets that were forwarded.
    down: std::sync::Mutex<Vec<usize>>,
}

/// Starts a proxy to `server` that drops one packet in `n` each way
/// (deterministically; none if `n` is 0).
async fn proxy(server: SocketAddr, n: u32) -> Arc<Proxy> {
    use std::sync::atomic::Ordering;
    let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let target: SocketAddr = (std::net::Ipv4Addr::LOCALHOST, server.port()).into();
    let p = Arc::new(Proxy {
        addr: front.local_addr().unwrap(),
        dropped: Default::default(),
        drop_down: Default::default(),
        down: Default::default(),
    });
    let client: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
    let lose = {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let p = p.clone();
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let drop = n > 0 && state.is_multiple_of(u64::from(n));
            if drop {
                p.dropped.fetch_add(1, Ordering::Relaxed);
            }
            drop
        }
    };
    let lose = Arc::new(std::sync::Mutex::new(lose));
    {
        let (front, back, client, lose) = (front.clone(), back.clone(), client.clone(), lose.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((len, from)) = front.recv_from(&mut buf).await {
                *client.lock().unwrap() = Some(from);
                if !(lose.lock().unwrap())() {
                    let _ = back.send_to(&buf[..len], target).await;
                }
            }
        });
    }
    let p2 = p.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((len, _)) = back.recv_from(&mut buf).await {
            let to = *client.lock().unwrap();
            let forced = p2.drop_down.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok();
            if forced {
                p2.dropped.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(to) = to
                && !forced
                && !(lose.lock().unwrap())()
            {
                p2.down.lock().unwrap().push(len);
                let _ = front.send_to(&buf[..len], to).await;
            }
        }
    });
    p
}

#[tokio::test]
async fn a_viewer_behind_ten_percent_loss_converges_and_no_session_breaks() {
    let server = WtServer::start().await;
    let lossy = proxy(server.quic, 10).await;
    let mut host = common::ws_binary(&server.ws_url("ev-wt-loss")).await;
    common::send(&mut host, &common::hello("ev-wt-loss", "host")).await;
    common::welcome(&mut host).await;
    let url = format!("https://127.0.0.1:{}/api/live-stream/ev-wt-loss", lossy.addr.port());
    let mut viewer = Wt::open(connect(&url, &server.hashes().await).await.expect("connect through the proxy")).await;
    viewer.send(&hello("ev-wt-loss", "lossy")).await;
    viewer.welcome().await;

    let actions = [
        Action::Seek { position_ms: 10_000 },
        Action::Play { position_ms: None },
        Action::Seek { position_ms: 20_000 },
        Action::SetRate { rate_milli: 1500 },
        Action::Pause { position_ms: None },
        Action::Seek { position_ms: 30_000 },
    ];
    for (i, a) in actions.into_iter().enumerate() {
        common::send(&mut host, &common::command(i as u32 + 1, a)).await;
        common::until(&mut host, changed).await;
        // Longer than the lead, so a scheduled change is in effect before the next command.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (_, state) = get_json(&server.http_url("/api/live-stream/ev-wt-loss/state")).await;
    let epoch = state["timeline"]["epoch"].as_u64().expect("epoch") as u32;

    // The viewer's newest knowledge (ticks and changes, over either channel) reaches the room's timeline.
    let deadline = Instant::now() + WAIT;
    let mut newest: Option<Tick> = None;
    while newest.is_none_or(|t| t.epoch < epoch) {
        assert!(Instant::now() < deadline, "never converged; newest {newest:?}, room epoch {epoch}");
        let Ok(Some((bytes, _))) = tokio::time::timeout(Duration::from_millis(500), viewer.dgrams.recv()).await else {
            continue;
        };
        if let Ok(ServerMsg::Tick(t)) = decode_server(&bytes)
            && newest.is_none_or(|n| t.epoch >= n.epoch)
        {
            newest = Some(t);
        }
    }
    let t = newest.unwrap();
    assert_eq!((t.epoch, t.position_ms, t.paused), (epoch, 30_000, true));
    // Every change also arrived, in order, on the (retransmitted) stream.
    let mut epochs = Vec::new();
    while epochs.last() != Some(&epoch) {
        let c = viewer
            .until(|m| match m {
                ServerMsg::TimelineChanged(c) => Some(c.timeline.epoch),
                _ => None,
            })
            .await;
        epochs.push(c);
    }
    assert!(epochs.windows(2).all(|w| w[0] < w[1]), "{epochs:?}");
    assert!(lossy.dropped.load(std::sync::atomic::Ordering::Relaxed) > 0, "the proxy dropped nothing");
    assert_eq!(viewer.ping_pong(11).await.client_time, 11);
    assert!(viewer.conn.quic_connection().close_reason().is_none(), "the lossy session is still open");
    common::send(&mut host, &ClientMsg::Ping(Ping { client_time: 1 })).await;
    common::until(&mut host, |g| matches!(g, Got::Msg(ServerMsg::Pong(_))).then_some(())).await;
}

/// The same loss, with changes as datagrams only: the viewer follows the room
/// as the JS client does (a `Nack` once per epoch that a tick reveals) and
/// ends up holding the room's last change itself, not only a tick of its
/// epoch. The packets that follow the last seek are dropped, so that change's
/// one datagram is lost and only the stream's repair can bring it.
#[tokio::test]
async fn with_datagram_changes_a_viewer_behind_loss_gets_the_last_change_by_datagram_or_repair() {
    let server = WtServer::start().await;
    let lossy = proxy(server.quic, 4).await;
    let mut host = common::ws_binary(&server.ws_url("ev-wt-loss-once")).await;
    common::send(&mut host, &common::hello("ev-wt-loss-once", "host")).await;
    common::welcome(&mut host).await;
    let url = format!("https://127.0.0.1:{}/api/live-stream/ev-wt-loss-once", lossy.addr.port());
    let mut viewer = Wt::open(connect(&url, &server.hashes().await).await.expect("connect through the proxy")).await;
    viewer.send(&hello_caps("ev-wt-loss-once", "lossy", ONCE)).await;
    let mut held = viewer.welcome().await.timeline.epoch;

    let mut last = None;
    let seeks = [10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 70_000, 80_000];
    for (i, position_ms) in seeks.into_iter().enumerate() {
        if i == seeks.len() - 1 {
            // Sent within a millisecond of the seek; ticks are 50 ms apart.
            lossy.drop_down.store(5, std::sync::atomic::Ordering::Relaxed);
        }
        common::send(&mut host, &common::command(i as u32 + 1, Action::Seek { position_ms })).await;
        last = Some(common::until(&mut host, changed).await);
    }
    let last = last.unwrap();

    let (mut by_datagram, mut repaired, mut nacks, mut nacked) = (0, 0, 0, held);
    let deadline = tokio::time::Instant::now() + WAIT;
    while held != last.timeline.epoch {
        let (msg, dgram) = tokio::select! {
            d = viewer.dgrams.recv() => (decode_server(&d.expect("open").0).expect("decodes"), true),
            f = viewer.frames.recv() => (f.expect("stream open"), false),
            _ = tokio::time::sleep_until(deadline) => panic!("never got change {}; holds {held}", last.timeline.epoch),
        };
        match msg {
            ServerMsg::TimelineChanged(c) if c.timeline.epoch > held => {
                held = c.timeline.epoch;
                if dgram {
                    by_datagram += 1;
                } else {
                    repaired += 1;
                }
                if held == last.timeline.epoch {
                    assert_eq!(c, last);
                    assert!(!dgram, "the last change's datagram was dropped, yet it came as one");
                }
            }
            ServerMsg::Tick(t) if t.epoch > held && t.epoch > nacked => {
                nacked = t.epoch;
                nacks += 1;
                viewer.send(&ClientMsg::Nack(Nack { epoch: held })).await;
            }
            _ => {}
        }
    }
    eprintln!(
        "last change held: {by_datagram} changes by datagram, {repaired} repaired, {nacks} Nacks, {} packets dropped",
        lossy.dropped.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(nacks >= 1 && repaired >= 1);
    assert!(viewer.conn.quic_connection().close_reason().is_none(), "the lossy session is still open");
}

// ------------------------------------------------------------------ measurement

/// Latency percentiles in microseconds.
fn percentiles(mut v: Vec<u64>) -> (u64, u64, u64, usize) {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), *v.last().unwrap(), v.len())
}

/// Tick delivery latency over WebTransport datagrams and over WebSocket, and
/// the size of a tick datagram on the wire.
///
/// The room is paused, so a tick's anchor is exactly the server-clock time at
/// which the room emitted it (no rounding to a whole millisecond). The client
/// runs in the same process, so it reads the same `ServerClock` when the
/// datagram or frame is handed to it: latency = receive − emission, covering
/// fan-out, the connection's writer, the transport, loopback and the client's
/// receive path. Ticks every 10 ms, 1,500 ticks per transport, one at a time.
///
/// `cargo test --release --test it tick_latency -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run by hand"]
async fn tick_latency_report() {
    const TICKS: usize = 1500;
    let server = WtServer::with(|c| c.tick_interval_ms = 10).await;
    let clock = server.clock;

    let (mut wt, _) = server.join("ev-lat-wt", "wt").await;
    // Skip the first ticks (path MTU discovery, warm-up).
    for _ in 0..20 {
        wt.datagram().await;
    }
    let stats0 = wt.conn.quic_connection().stats();
    let mut wt_lat = Vec::with_capacity(TICKS);
    let mut sizes = Vec::new();
    while wt_lat.len() < TICKS {
        let (bytes, at) = wt.datagram().await;
        // Server-clock time at which receive_datagram returned it.
        let recv = clock.now_us() - at.elapsed().as_micros() as u64;
        if let Ok(ServerMsg::Tick(t)) = decode_server(&bytes) {
            let anchor = unwrap_anchor(t.anchor_lo_us, recv);
            wt_lat.push(recv.saturating_sub(anchor));
            sizes.push(bytes.len());
        }
    }
    let stats1 = wt.conn.quic_connection().stats();
    drop(wt);

    // Packet sizes on the wire: a pass-through proxy sees each UDP payload.
    let tap = proxy(server.quic, 0).await;
    let url = format!("https://127.0.0.1:{}/api/live-stream/ev-lat-size", tap.addr.port());
    let mut sized = Wt::open(connect(&url, &server.hashes().await).await.unwrap()).await;
    sized.send(&hello("ev-lat-size", "sized")).await;
    sized.welcome().await;
    for _ in 0..20 {
        sized.datagram().await;
    }
    tap.down.lock().unwrap().clear();
    for _ in 0..200 {
        sized.datagram().await;
    }
    let mut wire: Vec<usize> = tap.down.lock().unwrap().clone();
    drop(sized);

    let mut ws = common::ws_binary(&server.ws_url("ev-lat-ws")).await;
    common::send(&mut ws, &common::hello("ev-lat-ws", "ws")).await;
    common::welcome(&mut ws).await;
    let mut ws_lat = Vec::with_capacity(TICKS);
    let mut skipped = 0;
    while ws_lat.len() < TICKS {
        let got = common::next(&mut ws).await;
        let recv = clock.now_us();
        if let Got::Msg(ServerMsg::Tick(t)) = got {
            if skipped < 20 {
                skipped += 1;
                continue;
            }
            ws_lat.push(recv.saturating_sub(unwrap_anchor(t.anchor_lo_us, recv)));
        }
    }

    let (p50, p99, max, n) = percentiles(wt_lat);
    println!("WebTransport datagram ticks: n={n} p50={p50} µs p99={p99} µs max={max} µs");
    let (p50, p99, max, n) = percentiles(ws_lat);
    println!("WebSocket ticks:             n={n} p50={p50} µs p99={p99} µs max={max} µs");
    let rx = stats1.udp_rx.datagrams - stats0.udp_rx.datagrams;
    let rx_bytes = stats1.udp_rx.bytes - stats0.udp_rx.bytes;
    let frames = stats1.frame_rx.datagram - stats0.frame_rx.datagram;
    println!(
        "tick payload: {}..{} bytes; client UDP rx during the run: {rx} packets, {rx_bytes} bytes ({:.1} bytes/packet), {frames} DATAGRAM frames, {} ACK frames",
        sizes.iter().min().unwrap(),
        sizes.iter().max().unwrap(),
        rx_bytes as f64 / rx as f64,
        stats1.frame_rx.acks - stats0.frame_rx.acks,
    );
    wire.sort_unstable();
    let mut counts: Vec<(usize, usize)> = Vec::new();
    for len in wire {
        match counts.last_mut() {
            Some((l, c)) if *l == len => *c += 1,
            _ => counts.push((len, 1)),
        }
    }
    println!("server→client UDP payload sizes through a tap (bytes × packets) over 200 ticks: {counts:?}");
    server.stop().await;
}

fn hello_token(event: &str, device: &str, token: Option<&str>) -> ClientMsg {
    ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        event_id: event.into(),
        device_id: device.into(),
        token: token.map(Into::into),
        caps: caps::DATAGRAMS,
    })
}

#[tokio::test]
async fn webtransport_token_matrix() {
    use crate::accounts::{token, token_with};
    use lockstep::auth::{Plan, unix_now};
    let server = WtServer::with(|c| c.dev = false).await;
    let hashes = server.hashes().await;
    let expired = token_with(|c| c.exp = unix_now() - 600);
    let forged = {
        let other =
            lockstep::auth::Authenticator::new(lockstep::auth::KeySource::Secret(vec![3; 32]), None, None, false)
                .unwrap();
        other.mint(&other.claims_for("alice", Plan::Premium, 60)).unwrap()
    };
    // In Hello: an Error, then a close with the documented code.
    for (name, tok, code) in [
        ("missing", None, ErrorCode::Unauthorized),
        ("forged", Some(forged.as_str()), ErrorCode::Unauthorized),
        ("expired", Some(expired.as_str()), ErrorCode::TokenExpired),
        ("garbage", Some("a.b.c"), ErrorCode::Unauthorized),
    ] {
        let mut wt = Wt::open(connect(&server.url("ev-wt-tok"), &hashes).await.expect("connect")).await;
        wt.send(&hello_token("ev-wt-tok", "d1", tok)).await;
        assert_eq!(wt.error_code().await, code.as_u16(), "{name}");
        assert_eq!(wt.closed().await, Some(u64::from(code.as_u16())), "{name}");
    }
    // In the URL: refused before the session is accepted.
    for bad in [&forged, &expired] {
        let url = format!("{}?access_token={bad}", server.url("ev-wt-tok"));
        assert!(matches!(connect(&url, &hashes).await, Err(ConnectingError::SessionRejected)));
    }
    // A good token works in the URL and in Hello, and roles are enforced.
    let host = token("hank", Plan::Free);
    let url = format!("{}?access_token={host}", server.url("ev-wt-tok"));
    let mut h = Wt::open(connect(&url, &hashes).await.expect("connect")).await;
    h.send(&hello_token("ev-wt-tok", "h1", None)).await;
    assert_eq!(h.welcome().await.role, lockstep_protocol::Role::Host);
    let viewer = token("vic", Plan::Free);
    let mut v = Wt::open(connect(&server.url("ev-wt-tok"), &hashes).await.expect("connect")).await;
    v.send(&hello_token("ev-wt-tok", "v1", Some(&viewer))).await;
    assert_eq!(v.welcome().await.role, lockstep_protocol::Role::Viewer);
    v.send(&ClientMsg::Command(lockstep_protocol::Command {
        request_id: 3,
        action: Action::Seek { position_ms: 5_000 },
    }))
    .await;
    assert_eq!(v.error_code().await, ErrorCode::Forbidden.as_u16(), "a viewer may not seek a host-only room");
    v.send(&ClientMsg::Command(lockstep_protocol::Command {
        request_id: 4,
        action: Action::SetPolicy { policy: lockstep_protocol::ControlPolicy::Everyone },
    }))
    .await;
    assert_eq!(v.error_code().await, ErrorCode::Forbidden.as_u16(), "nor change the policy");
    h.send(&ClientMsg::Command(lockstep_protocol::Command {
        request_id: 5,
        action: Action::Seek { position_ms: 7_000 },
    }))
    .await;
    let c = v
        .until(|m| match m {
            ServerMsg::TimelineChanged(c) => Some(c.clone()),
            _ => None,
        })
        .await;
    assert_eq!(c.timeline.position_ms, 7_000);
}

/// Issue 15: a `SyncReport` may come as a datagram and counts in the room's
/// sync quality; a `Suspend` as a datagram is dropped (reliable only) and
/// changes nothing.
#[tokio::test]
async fn sync_reports_come_as_datagrams_and_suspensions_only_on_the_stream() {
    let server = WtServer::start().await;
    let ev = "ev-wt-sync";
    let (viewer, w) = server.join(ev, "viewer").await;
    let wrong = "lockstep_drops_total{reason=\"datagram_wrong_type\"}";
    let before = server.metric(wrong).await;
    viewer.send_datagram(&ClientMsg::Suspend(Suspend { reason: "interstitial".into() }));
    viewer.send_datagram(&ClientMsg::SyncReport(SyncReport { epoch: w.timeline.epoch, drift_us: -7_000 }));
    let url = server.http_url(&format!("/api/live-stream/{ev}/state"));
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, state) = get_json(&url).await;
        if state["sync"]["reporting"] == 1 && server.metric(wrong).await >= before + 1.0 {
            assert_eq!(state["sync"]["maxMs"], 7.0, "{state}");
            assert_eq!(state["suspended"], serde_json::json!([]), "the datagram Suspend changed nothing: {state}");
            break;
        }
        assert!(Instant::now() < deadline, "the SyncReport datagram never counted: {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issue 15 §2 over WebTransport: chat travels on the stream (the sender's
/// copy answers it, a WebSocket member of the room gets it too); a `Chat` as
/// a datagram is dropped (reliable only) and posts nothing.
#[tokio::test]
async fn chat_goes_on_the_stream_and_never_as_a_datagram() {
    use lockstep_protocol::caps::{CHAT, DATAGRAMS};
    use lockstep_protocol::{Chat, ChatMessage};
    let server = WtServer::start().await;
    let ev = "ev-wt-chat";
    let (mut wt, _) = server.join_with(hello_caps(ev, "wt", CHAT | DATAGRAMS)).await;
    let mut ws = common::ws_binary(&server.ws_url(ev)).await;
    common::send(&mut ws, &hello_caps(ev, "ws", CHAT)).await;
    common::welcome(&mut ws).await;
    let wrong = "lockstep_drops_total{reason=\"datagram_wrong_type\"}";
    let before = server.metric(wrong).await;
    wt.send_datagram(&ClientMsg::Chat(Chat { request_id: 1, text: "as a datagram".into() }));
    let deadline = Instant::now() + WAIT;
    while server.metric(wrong).await < before + 1.0 {
        assert!(Instant::now() < deadline, "the Chat datagram was not dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wt.send(&ClientMsg::Chat(Chat { request_id: 2, text: "on the stream".into() })).await;
    let pick = |m: &ServerMsg| match m {
        ServerMsg::ChatMessage(c) => Some(c.clone()),
        _ => None,
    };
    let own: ChatMessage = wt.until(pick).await;
    assert_eq!((own.id, own.request_id, own.text.as_str()), (1, 2, "on the stream"), "the datagram posted nothing");
    let other = common::until(&mut ws, |g| match g {
        Got::Msg(m) => pick(m),
        _ => None,
    })
    .await;
    assert_eq!(other.id, 1);
}
