//! One simulated client (viewer or host) per task, over any target.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use lockstep_protocol::timeline::unwrap_anchor;
use lockstep_protocol::{
    Action, ClientMsg, Command, FrameDecoder, Hello, Nack, PROTOCOL_VERSION, Ping, ServerMsg, caps, decode_server,
    encode_client, write_frame,
};
use serde_json::Value;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use wtransport::endpoint::endpoint_side;
use wtransport::{Endpoint, RecvStream, SendStream};

use crate::live::{LiveRec, Viewer as LiveViewer};
use crate::rec::{ClockEst, Precision, Rec};
use crate::target::Target;
use crate::wsclient::{Op, Ws, realtime_ns};

/// What the run is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Hosts seek every interval; latency of each change.
    Latency,
    /// Viewers join at once; time until all see the right count.
    Storm,
    /// Hosts alternate play and pause (scheduled `lead` ahead); viewers
    /// estimate the server clock and apply each change at their estimate.
    Precision,
    /// One live room: viewers with simulated live edges send `LiveReport`s
    /// and `Report`s, and sample the program time they would show (`live.rs`).
    Live,
}

/// Shared by every client of a run.
pub(crate) struct Ctx {
    pub(crate) target: Target,
    pub(crate) mode: Mode,
    /// Where WebSocket clients connect (the server, or the impairment proxy).
    pub(crate) ws_addr: SocketAddr,
    /// Where WebTransport clients connect.
    pub(crate) wt_addr: Option<SocketAddr>,
    pub(crate) wt_endpoints: Vec<Endpoint<endpoint_side::Client>>,
    /// WebTransport clients set `DATAGRAM_CHANGES`: each change once, as a datagram; Nacks repair.
    pub(crate) wt_once: bool,
    /// Two-node runs: where hosts connect (the other node), and the
    /// WebTransport endpoints that trust its certificate.
    pub(crate) host_node: Option<(SocketAddr, Option<SocketAddr>, Vec<Endpoint<endpoint_side::Client>>)>,
    pub(crate) tag: String,
    pub(crate) rooms: usize,
    pub(crate) interval: Duration,
    pub(crate) rec: Rec,
    pub(crate) prec: Option<Precision>,
    pub(crate) live: Option<LiveRec>,
    /// Viewer count every viewer should end up seeing.
    pub(crate) count_target: u32,
    /// Viewers ping at this interval (after five quick ones), for clock sync.
    pub(crate) ping_every: Option<Duration>,
    /// When hosts start sending (set once every client has joined).
    pub(crate) start: watch::Receiver<Option<Instant>>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) joined: AtomicU64,
    pub(crate) failed: AtomicU64,
    /// Connects that failed once and were made again (reported, not failures).
    pub(crate) connect_retries: AtomicU64,
    pub(crate) errors_shown: AtomicU64,
    pub(crate) connect_sem: Arc<Semaphore>,
    /// Churn: every viewer leaves and comes back once per period, the
    /// viewers' turns spread evenly over it (period, viewers).
    pub(crate) churn: Option<(Duration, usize)>,
    /// Reconnections made by churn.
    pub(crate) reconnects: AtomicU64,
}

impl Ctx {
    pub(crate) fn event(&self, room: usize) -> String {
        format!("{}-{room}", self.tag)
    }

    fn note_error(&self, what: impl std::fmt::Display) {
        self.rec.errors.fetch_add(1, Relaxed);
        if self.errors_shown.fetch_add(1, Relaxed) < 5 {
            eprintln!("  client error: {what}");
        }
    }
}

/// Who a client is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    Host { room: usize },
    Viewer { g: usize, room: usize },
}

enum Link {
    Ws(Box<Ws>),
    Wt { conn: wtransport::Connection, send: SendStream, recv: RecvStream, dec: FrameDecoder, buf: Vec<u8> },
}

/// Per-client state.
struct Client {
    role: Role,
    g: usize,
    room: usize,
    seen: Vec<u64>,
    count: Option<u32>,
    right: bool,
    count_msgs: u64,
    joined: bool,
    clock: ClockEst,
    /// Pending scheduled apply: (change index, deadline).
    apply: Option<(usize, Instant)>,
    welcome_epoch: u32,
    /// Reply to send after handling a frame (socket.io handshakes and pings).
    reply: Option<&'static str>,
    /// The newest timeline epoch held (Welcome, changes); with changes once
    /// as datagrams, a tick of a newer one reveals a lost change.
    held: Option<u32>,
    /// The newest epoch a Nack was sent for (at most one per revealed epoch).
    nacked: Option<u32>,
    /// A Nack to send on the stream after handling what arrived.
    nack: Option<u32>,
    /// Live runs: the viewer's timeline, samples and reports.
    lv: Option<LiveViewer>,
}

impl Client {
    fn first_time(&mut self, k: u32) -> bool {
        let (w, b) = ((k / 64) as usize, k % 64);
        if w >= self.seen.len() {
            self.seen.resize(w + 1, 0);
        }
        let fresh = self.seen[w] & (1 << b) == 0;
        self.seen[w] |= 1 << b;
        fresh
    }

    fn set_count(&mut self, ctx: &Ctx, c: u32) {
        self.count = Some(c);
        let right = c == ctx.count_target;
        if right != self.right {
            self.right = right;
            if right {
                ctx.rec.count_right.fetch_add(1, Relaxed);
            } else {
                ctx.rec.count_right.fetch_sub(1, Relaxed);
            }
        }
    }

    fn count_msg(&mut self, ctx: &Ctx) {
        self.count_msgs += 1;
        ctx.rec.count_msgs.fetch_add(1, Relaxed);
        ctx.rec.count_msgs_max.fetch_max(self.count_msgs, Relaxed);
    }

    fn mark_joined(&mut self, ctx: &Ctx, t0: Instant) {
        if !self.joined {
            self.joined = true;
            ctx.joined.fetch_add(1, Relaxed);
            let _ = ctx.rec.shard(self.g).join.record((t0.elapsed().as_micros() as u64).max(1));
        }
    }

    fn is_viewer(&self) -> bool {
        matches!(self.role, Role::Viewer { .. })
    }

    /// A change arrived: `k` its index.
    /// Whether this was the first copy.
    fn change(&mut self, ctx: &Ctx, k: u32, user_ns: u64, kernel_ns: Option<u64>, dgram: bool) -> bool {
        if !self.is_viewer() {
            return false;
        }
        if !self.first_time(k) {
            ctx.rec.dups.fetch_add(1, Relaxed);
            return false;
        }
        ctx.rec.delivery(self.g, self.room, k, user_ns, kernel_ns, dgram);
        true
    }

    /// A bincode server message.
    fn on_bin(&mut self, ctx: &Ctx, bytes: &[u8], user_ns: u64, kernel_ns: Option<u64>, dgram: bool, t0: Instant) {
        let Ok(msg) = decode_server(bytes) else {
            ctx.note_error("undecodable server message");
            return;
        };
        if ctx.rec.measuring.load(Relaxed) && self.is_viewer() {
            ctx.rec.msgs_in_window.fetch_add(1, Relaxed);
        }
        let user_us = user_ns / 1000;
        // The viewer's estimate of the server time when the message arrived
        // (the kernel's receive time where there is one, as for pongs).
        let recv_us = kernel_ns.map_or(user_us, |k| k / 1000);
        let est_now = self.clock.offset().map(|o| recv_us.saturating_add_signed(o));
        if let (Some(lv), Some(rec)) = (&mut self.lv, &ctx.live) {
            match &msg {
                ServerMsg::Welcome(w) => lv.on_welcome(rec, w),
                ServerMsg::LiveState(s) => {
                    lv.on_msg();
                    lv.on_state(rec, s, user_ns);
                }
                ServerMsg::TimelineChanged(c) => {
                    lv.on_msg();
                    lv.on_changed(rec, c, est_now, user_ns);
                }
                ServerMsg::Tick(t) => {
                    lv.on_msg();
                    lv.on_tick(rec, t, est_now);
                }
                _ => lv.on_msg(),
            }
        }
        match msg {
            ServerMsg::Welcome(w) => {
                self.welcome_epoch = w.timeline.epoch;
                self.held = Some(w.timeline.epoch);
                self.nacked = None;
                self.clock.coarse(w.server_time_us, user_us);
                self.set_count(ctx, w.viewers);
                self.mark_joined(ctx, t0);
            }
            ServerMsg::TimelineChanged(c) => {
                if self.held.is_none_or(|h| newer(c.timeline.epoch, h)) {
                    self.held = Some(c.timeline.epoch);
                }
                match ctx.mode {
                    Mode::Precision => {
                        let k = c.timeline.epoch.wrapping_sub(self.welcome_epoch).wrapping_sub(1);
                        if self.change(ctx, k, user_ns, kernel_ns, dgram) {
                            self.schedule(ctx, k as usize, c.effective_at_us);
                        }
                    }
                    Mode::Live => {}
                    _ => {
                        let p = c.timeline.position_ms;
                        if p >= 1000 && p % 1000 == 0 {
                            self.change(ctx, (p / 1000 - 1) as u32, user_ns, kernel_ns, dgram);
                        }
                    }
                }
            }
            ServerMsg::Tick(t) => {
                // A tick of an epoch never held: its change was lost (or is late). As client-js:
                // one Nack per revealed epoch, for the newest change after the one held.
                if ctx.wt_once
                    && ctx.target == Target::Wt
                    && let Some(h) = self.held
                    && newer(t.epoch, h)
                    && self.nacked.is_none_or(|n| newer(t.epoch, n))
                {
                    self.nacked = Some(t.epoch);
                    self.nack = Some(h);
                }
                if ctx.mode == Mode::Latency && ctx.rec.measuring.load(Relaxed) && self.is_viewer() && t.paused {
                    // Paused ticks are anchored at their emission time (server clock ≈ CLOCK_REALTIME here).
                    let anchor = unwrap_anchor(t.anchor_lo_us, user_us);
                    if user_us >= anchor {
                        let _ = ctx.rec.shard(self.g).tick.record((user_us - anchor).max(1));
                    }
                }
                if self.count != Some(t.viewers) {
                    self.set_count(ctx, t.viewers);
                }
            }
            ServerMsg::ViewerCount(c) => {
                self.count_msg(ctx);
                self.set_count(ctx, c.count);
            }
            ServerMsg::Pong(p) => {
                if let Some(pr) = &ctx.prec {
                    pr.pongs.fetch_add(1, Relaxed);
                }
                // The kernel's receive time where there is one (WebSocket): a real
                // client has its own cores, so the load generator's own queueing
                // (10,000 viewers on two shared cores) must not bias its estimate.
                let t3 = kernel_ns.map_or(user_us, |k| k / 1000);
                self.clock.pong(p.client_time, p.server_recv_us, p.server_send_us, t3);
            }
            ServerMsg::Error(e) => ctx.note_error(format!("server error {} {}", e.code, e.message)),
            _ => {}
        }
    }

    /// Schedules applying change `k` at the viewer's estimate of `effective_at_us`.
    fn schedule(&mut self, ctx: &Ctx, k: usize, effective_at_us: u64) {
        let (Some(pr), Some(off), Role::Viewer { g, .. }) = (&ctx.prec, self.clock.offset(), self.role) else {
            return;
        };
        if k >= pr.changes {
            return;
        }
        pr.effective_us[k].store(effective_at_us, Relaxed);
        let at_ns = (effective_at_us as i64 - off) * 1000;
        let at_ns = at_ns.max(0) as u64;
        pr.scheduled[k * pr.viewers + g].store(at_ns, Relaxed);
        let now = realtime_ns();
        if at_ns <= now {
            pr.late.fetch_add(1, Relaxed);
        }
        self.apply = Some((k, Instant::now() + Duration::from_nanos(at_ns.saturating_sub(now))));
    }

    /// A JSON text frame (Lockstep's legacy dialect or peer-ws).
    fn on_json(&mut self, ctx: &Ctx, v: &Value, user_ns: u64, kernel_ns: Option<u64>, t0: Instant) {
        if ctx.rec.measuring.load(Relaxed) && self.is_viewer() {
            ctx.rec.msgs_in_window.fetch_add(1, Relaxed);
        }
        match v.get("type").and_then(Value::as_str) {
            Some("playbackSync") => {
                self.mark_joined(ctx, t0);
                if let Some(p) = v.get("position").and_then(Value::as_f64) {
                    let k = p.round() as i64 - 1;
                    if k >= 0 && (p - p.round()).abs() < 1e-6 {
                        self.change(ctx, k as u32, user_ns, kernel_ns, false);
                    }
                }
            }
            Some("viewerCount") => {
                self.count_msg(ctx);
                if let Some(c) = v.get("count").and_then(Value::as_u64) {
                    self.set_count(ctx, c as u32);
                }
            }
            Some("error") => ctx.note_error(format!("server error {v}")),
            _ => {}
        }
    }

    /// A socket.io (engine.io v4) text frame.
    fn on_sio(&mut self, ctx: &Ctx, text: &[u8], user_ns: u64, kernel_ns: Option<u64>, t0: Instant) {
        match text {
            [b'0', ..] => self.reply = Some("40"),
            [b'2'] => self.reply = Some("3"),
            [b'4', b'0', ..] => self.mark_joined(ctx, t0),
            [b'4', b'2', rest @ ..] => {
                if let Ok(Value::Array(a)) = serde_json::from_slice::<Value>(rest)
                    && let Some(obj) = a.get(1)
                {
                    self.on_json(ctx, obj, user_ns, kernel_ns, t0);
                }
            }
            _ => {}
        }
    }
}

/// Whether epoch `a` is newer than `b` (serial order, as the server and client-js compare).
fn newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

fn hello(event: &str, device: &str, caps: u32) -> Vec<u8> {
    encode_client(&ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        event_id: event.into(),
        device_id: device.into(),
        token: None,
        caps,
    }))
}

async fn open(ctx: &Ctx, room: usize, device: &str, host: bool) -> anyhow::Result<Link> {
    let event = ctx.event(room);
    let live = if ctx.mode == Mode::Live { caps::LIVE } else { 0 };
    let (ws_addr, wt_addr, eps) = match &ctx.host_node {
        Some((ws, wt, eps)) if host => (*ws, *wt, eps),
        _ => (ctx.ws_addr, ctx.wt_addr, &ctx.wt_endpoints),
    };
    match ctx.target {
        Target::Wt => {
            let addr = wt_addr.ok_or_else(|| anyhow::anyhow!("no WebTransport address"))?;
            let ep = &eps[room.wrapping_mul(31).wrapping_add(device.len()) % eps.len()];
            let url = format!("https://{addr}/api/live-stream/{event}");
            let conn = ep.connect(url.as_str()).await?;
            let (mut send, recv) = conn.open_bi().await?.await?;
            let mut out = Vec::new();
            let once = if ctx.wt_once { caps::DATAGRAM_CHANGES } else { 0 };
            write_frame(&hello(&event, device, caps::DATAGRAMS | once | live), &mut out);
            send.write_all(&out).await?;
            Ok(Link::Wt { conn, send, recv, dec: FrameDecoder::new(), buf: vec![0; 4096] })
        }
        Target::Ws => {
            let mut ws = Ws::connect(ws_addr, &format!("/api/live-stream/{event}"), Some("lockstep.v1")).await?;
            ws.send_binary(&hello(&event, device, live)).await?;
            Ok(Link::Ws(Box::new(ws)))
        }
        Target::Json | Target::PeerWs => {
            let path = format!("/api/live-stream/{event}?deviceId={device}");
            Ok(Link::Ws(Box::new(Ws::connect(ws_addr, &path, None).await?)))
        }
        Target::PeerSio => {
            let path = format!("/socket.io/?EIO=4&transport=websocket&eventId={event}");
            Ok(Link::Ws(Box::new(Ws::connect(ctx.ws_addr, &path, None).await?)))
        }
    }
}

/// The host's change `k`, in the target's dialect.
fn change_msg(ctx: &Ctx, room: usize, k: u32, t_ns: u64) -> Vec<u8> {
    let position_ms = (u64::from(k) + 1) * 1000;
    match ctx.target {
        Target::Wt | Target::Ws => {
            let action = match ctx.mode {
                Mode::Precision if k.is_multiple_of(2) => Action::Play { position_ms: None },
                Mode::Precision => Action::Pause { position_ms: None },
                _ => Action::Seek { position_ms },
            };
            encode_client(&ClientMsg::Command(Command { request_id: k + 1, action }))
        }
        Target::Json | Target::PeerWs => format!(
            r#"{{"type":"playbackSync","position":{},"eventId":"{}","deviceId":"host-{room}","t":{t_ns}}}"#,
            k + 1,
            ctx.event(room)
        )
        .into_bytes(),
        Target::PeerSio => format!(
            r#"42["playbackSync",{{"type":"playbackSync","position":{},"eventId":"{}","deviceId":"host-{room}","t":{t_ns}}}]"#,
            k + 1,
            ctx.event(room)
        )
        .into_bytes(),
    }
}

/// Runs one client until the run stops.
pub(crate) async fn client(ctx: Arc<Ctx>, role: Role) {
    let mut k = 0;
    while client_once(ctx.clone(), role, k).await && !*ctx.stop.borrow() {
        ctx.reconnects.fetch_add(1, Relaxed);
        k += 1;
    }
}

/// One connection of a client; `true` when it left to come back (churn: its
/// `k`-th reconnection is due).
async fn client_once(ctx: Arc<Ctx>, role: Role, k: u32) -> bool {
    let (g, room) = match role {
        Role::Host { room } => (usize::MAX - room, room),
        Role::Viewer { g, room } => (g, room),
    };
    let device = match role {
        Role::Host { room } => format!("host-{room}"),
        Role::Viewer { g, .. } => format!("v{g}"),
    };
    let permit = ctx.connect_sem.clone().acquire_owned().await.ok();
    let t0 = Instant::now();
    let host = matches!(role, Role::Host { .. });
    let mut opened = tokio::time::timeout(Duration::from_secs(60), open(&ctx, room, &device, host)).await;
    // A connect that fails outright is made once more, as a client would
    // (wtransport's client now and then loses a connection in its handshake:
    // "connection locally closed", its driver racing the stream setup), and
    // counted; a second failure is a failure.
    if let Ok(Err(e)) = &opened {
        if ctx.connect_retries.fetch_add(1, Relaxed) < 5 {
            eprintln!("  connect failed, made again: {e:#}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        opened = tokio::time::timeout(Duration::from_secs(60), open(&ctx, room, &device, host)).await;
    }
    let mut link = match opened {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            ctx.failed.fetch_add(1, Relaxed);
            ctx.note_error(format!("connect: {e:#}"));
            return false;
        }
        Err(_) => {
            ctx.failed.fetch_add(1, Relaxed);
            ctx.note_error("connect: timed out");
            return false;
        }
    };
    let mut c = Client {
        role,
        g: if g == usize::MAX - room { 0 } else { g },
        room,
        seen: Vec::new(),
        count: None,
        right: false,
        count_msgs: 0,
        joined: false,
        clock: ClockEst::default(),
        apply: None,
        welcome_epoch: 0,
        reply: None,
        held: None,
        nacked: None,
        nack: None,
        lv: match role {
            Role::Viewer { g, .. } if ctx.live.is_some() => Some(LiveViewer::new(g)),
            _ => None,
        },
    };
    if ctx.target == Target::PeerWs {
        c.mark_joined(&ctx, t0);
    }
    let mut start = ctx.start.clone();
    let mut stop = ctx.stop.clone();
    let is_host = matches!(role, Role::Host { .. });
    // Host schedule: change k at start + phase + k * interval.
    let phase = ctx.interval.mul_f64(room as f64 / ctx.rooms.max(1) as f64);
    let mut next_k: u32 = 0;
    let mut host_at: Option<Instant> = None;
    let pings = if is_host { None } else { ctx.ping_every };
    let mut ping_n = 0u32;
    let mut next_ping = pings.map(|_| Instant::now() + Duration::from_millis(50));
    let mut permit = permit;
    let far = Instant::now() + Duration::from_secs(3600);
    // Live runs: reports once a second from the start, at the viewer's phase.
    let mut report_at: Option<Instant> = None;
    loop {
        // Samples first: their instants passed with the state held now.
        if let (Some(lv), Some(rec)) = (&mut c.lv, &ctx.live) {
            lv.sample(rec, c.clock.offset());
        }
        // Drain what is buffered.
        if let Link::Ws(ws) = &mut link {
            loop {
                let f = match ws.next_frame().await {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        ctx.note_error(format!("read: {e}"));
                        ctx.rec.closed.fetch_add(1, Relaxed);
                        return false;
                    }
                };
                let (u, k) = (ws.user_ns, ws.kernel_ns);
                match (f.op, ctx.target) {
                    (Op::Close, _) => {
                        ctx.rec.closed.fetch_add(1, Relaxed);
                        if !*stop.borrow() {
                            ctx.note_error(format!("closed by the server: {:?}", ws.payload(&f).get(2..)));
                        }
                        return false;
                    }
                    (Op::Binary, _) => c.on_bin(&ctx, ws.payload(&f), u, k, false, t0),
                    (Op::Text, Target::PeerSio) => c.on_sio(&ctx, ws.payload(&f), u, k, t0),
                    (Op::Text, _) => match serde_json::from_slice::<Value>(ws.payload(&f)) {
                        Ok(v) => c.on_json(&ctx, &v, u, k, t0),
                        Err(_) => ctx.note_error("invalid JSON from the server"),
                    },
                }
                if let Some(r) = c.reply.take()
                    && ws.send_text(r).await.is_err()
                {
                    return false;
                }
            }
        }
        if c.joined && permit.is_some() {
            permit = None;
        }
        if is_host
            && host_at.is_none()
            && c.joined
            && let Some(s) = *start.borrow()
        {
            host_at = Some(s + phase);
        }
        if let (Some(lv), Some(rec), None, Some(s)) = (&c.lv, &ctx.live, report_at, *start.borrow()) {
            report_at = Some(s + Duration::from_micros(rec.params[lv.g].phase_us));
        }
        let host_due = host_at.unwrap_or(far);
        let report_due = report_at.unwrap_or(far);
        let ping_due = next_ping.unwrap_or(far);
        let apply_due = c.apply.map(|a| a.1).unwrap_or(far);
        let churn_due = match (ctx.churn, role, *start.borrow()) {
            (Some((period, n)), Role::Viewer { g, .. }, Some(s)) => {
                s + period.mul_f64((g + 1) as f64 / n.max(1) as f64) + period * k
            }
            _ => far,
        };
        tokio::select! {
            biased;
            _ = stop.changed() => {
                if let Link::Wt { conn, .. } = &link {
                    let st = conn.quic_connection().stats();
                    let q = &ctx.rec.quic;
                    for (i, n) in [st.udp_rx.datagrams, st.frame_tx.acks, st.udp_tx.datagrams, st.frame_rx.acks].into_iter().enumerate() {
                        q[i].fetch_add(n, Relaxed);
                    }
                }
                return false;
            }
            _ = tokio::time::sleep_until(apply_due), if c.apply.is_some() => {
                let (k, _) = c.apply.take().expect("guarded");
                if let Some(pr) = &ctx.prec {
                    pr.fired[k * pr.viewers + c.g].store(realtime_ns(), Relaxed);
                }
            }
            _ = tokio::time::sleep_until(host_due), if host_at.is_some() => {
                if next_k >= ctx.rec.k1 {
                    host_at = None;
                    continue;
                }
                let k = next_k;
                next_k += 1;
                host_at = host_at.map(|_| start.borrow().unwrap_or(far) + phase + ctx.interval * (k + 1));
                let t_ns = realtime_ns();
                let msg = change_msg(&ctx, room, k, t_ns);
                let idx = room * ctx.rec.kmax + k as usize;
                ctx.rec.send_ns[idx].store(realtime_ns(), Relaxed);
                let r = match &mut link {
                    Link::Ws(ws) if matches!(ctx.target, Target::Ws) => ws.send_binary(&msg).await,
                    Link::Ws(ws) => ws.send(1, &msg).await,
                    Link::Wt { send, .. } => {
                        let mut out = Vec::with_capacity(msg.len() + 2);
                        write_frame(&msg, &mut out);
                        send.write_all(&out).await.map_err(std::io::Error::other)
                    }
                };
                if let Err(e) = r {
                    ctx.note_error(format!("host send: {e}"));
                    return false;
                }
            }
            _ = tokio::time::sleep_until(ping_due), if next_ping.is_some() => {
                ping_n += 1;
                let every = pings.unwrap_or(Duration::from_secs(1));
                next_ping = Some(Instant::now() + if ping_n < 5 { Duration::from_millis(100) } else { every });
                let ping = encode_client(&ClientMsg::Ping(Ping { client_time: realtime_ns() / 1000 }));
                if let Some(pr) = &ctx.prec {
                    pr.pings.fetch_add(1, Relaxed);
                }
                match &mut link {
                    Link::Ws(ws) => {
                        if ws.send_binary(&ping).await.is_err() {
                            return false;
                        }
                    }
                    Link::Wt { conn, .. } => {
                        let _ = conn.send_datagram(ping);
                    }
                }
            }
            _ = tokio::time::sleep_until(report_due), if report_at.is_some() => {
                let (Some(lv), Some(rec)) = (&mut c.lv, &ctx.live) else { continue };
                report_at = report_at.map(|r| r + Duration::from_secs(1));
                let est = c.clock.offset().map(|o| (realtime_ns() / 1000).saturating_add_signed(o));
                let (live, report) = lv.reports(rec, est);
                let live = encode_client(&ClientMsg::LiveReport(live));
                let report = encode_client(&ClientMsg::Report(report));
                match &mut link {
                    Link::Ws(ws) => {
                        if ws.send_many(2, &[&live, &report]).await.is_err() {
                            return false;
                        }
                    }
                    Link::Wt { conn, .. } => {
                        let _ = conn.send_datagram(live);
                        let _ = conn.send_datagram(report);
                    }
                }
            }
            _ = tokio::time::sleep_until(churn_due), if churn_due < far => {
                match &mut link {
                    Link::Ws(ws) => {
                        let _ = ws.send(8, &1000u16.to_be_bytes()).await;
                    }
                    Link::Wt { conn, .. } => conn.close(0u32.into(), b"churn"),
                }
                return true;
            }
            _ = start.changed() => {}
            r = read(&mut link) => match r {
                Ok(Some(Got::Datagram(d))) => {
                    if let (Some(lv), Some(rec)) = (&mut c.lv, &ctx.live) {
                        lv.sample(rec, c.clock.offset());
                    }
                    let u = realtime_ns();
                    c.on_bin(&ctx, &d, u, None, true, t0);
                    if !send_nack(&ctx, &mut link, c.nack.take()).await {
                        return false;
                    }
                }
                Ok(Some(Got::Frames(frames))) => {
                    if let (Some(lv), Some(rec)) = (&mut c.lv, &ctx.live) {
                        lv.sample(rec, c.clock.offset());
                    }
                    let u = realtime_ns();
                    for f in frames {
                        c.on_bin(&ctx, &f, u, None, false, t0);
                    }
                    if !send_nack(&ctx, &mut link, c.nack.take()).await {
                        return false;
                    }
                }
                Ok(Some(Got::Ws)) => {}
                Ok(None) => {
                    ctx.rec.closed.fetch_add(1, Relaxed);
                    if !*stop.borrow() {
                        ctx.note_error("connection ended");
                    }
                    return false;
                }
                Err(e) => {
                    ctx.rec.closed.fetch_add(1, Relaxed);
                    if !*stop.borrow() {
                        ctx.note_error(format!("read: {e}"));
                    }
                    return false;
                }
            },
        }
    }
}

/// Sends `Nack { epoch }` on the WebTransport stream, if there is one to send;
/// `false` if the stream broke.
async fn send_nack(ctx: &Ctx, link: &mut Link, epoch: Option<u32>) -> bool {
    let (Some(epoch), Link::Wt { send, .. }) = (epoch, link) else {
        return true;
    };
    ctx.rec.nacks.fetch_add(1, Relaxed);
    let mut out = Vec::with_capacity(8);
    write_frame(&encode_client(&ClientMsg::Nack(Nack { epoch })), &mut out);
    match send.write_all(&out).await {
        Ok(()) => true,
        Err(e) => {
            ctx.note_error(format!("nack: {e}"));
            false
        }
    }
}

enum Got {
    Datagram(bytes::Bytes),
    Frames(Vec<Vec<u8>>),
    /// WebSocket bytes were read into the buffer; frames are parsed next loop.
    Ws,
}

/// Waits for input (cancel safe).
async fn read(link: &mut Link) -> anyhow::Result<Option<Got>> {
    match link {
        Link::Ws(ws) => Ok(if ws.read().await? { Some(Got::Ws) } else { None }),
        Link::Wt { conn, recv, dec, buf, .. } => {
            tokio::select! {
                d = conn.receive_datagram() => Ok(Some(Got::Datagram(d?.payload()))),
                n = recv.read(buf) => match n? {
                    None => Ok(None),
                    Some(n) => {
                        dec.push(&buf[..n]);
                        let mut frames = Vec::new();
                        while let Some(f) = dec.next_frame()? {
                            frames.push(f);
                        }
                        Ok(Some(Got::Frames(frames)))
                    }
                },
            }
        }
    }
}
