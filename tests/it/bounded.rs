//! Bounded everything (issue 11): a seek flood is coalesced and every
//! command answered; a report flood leaves the room's mailbox bounded; a
//! join stuck on a stalled store still honours the hello timeout and
//! shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lockstep_protocol::{
    AckOutcome, Action, ClientMsg, ErrorCode, Hello, PROTOCOL_VERSION, Report, ServerMsg, caps, decode_server,
};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{self, TestServer, WAIT, Ws, command, get_json, send, ws_binary};

fn hello_acks(event: &str, device: &str) -> ClientMsg {
    ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        event_id: event.into(),
        device_id: device.into(),
        token: None,
        caps: caps::ACKS,
    })
}

/// What one viewer saw.
#[derive(Debug, Default)]
struct Seen {
    /// The newest timeline epoch (Welcome, TimelineChanged, Tick).
    epoch: u32,
    /// Timeline changes received.
    changes: u32,
    /// Answers to its own commands by request id: `Ok(outcome)` or `Err(code)`.
    answers: HashMap<u32, Result<AckOutcome, u16>>,
    /// A request answered twice.
    answered_twice: bool,
    /// Set if the server closed the connection.
    closed: Option<Option<u16>>,
}

impl Seen {
    fn note(&mut self, msg: ServerMsg) {
        let newer = |a: u32, b: u32| (a.wrapping_sub(b) as i32) > 0;
        match msg {
            ServerMsg::Welcome(w) => self.epoch = w.timeline.epoch,
            ServerMsg::TimelineChanged(c) => {
                self.changes += 1;
                if newer(c.timeline.epoch, self.epoch) {
                    self.epoch = c.timeline.epoch;
                }
            }
            ServerMsg::Tick(t) if newer(t.epoch, self.epoch) => self.epoch = t.epoch,
            ServerMsg::Ack(a) => self.answer(a.request_id, Ok(a.outcome)),
            ServerMsg::Error(e) if e.request_id != 0 => self.answer(e.request_id, Err(e.code)),
            _ => {}
        }
    }

    fn answer(&mut self, id: u32, a: Result<AckOutcome, u16>) {
        self.answered_twice |= self.answers.insert(id, a).is_some();
    }
}

/// Reads `ws` into `seen` until `done` says to stop: once `target` holds an
/// epoch, until this viewer holds it and its `expect` answers arrived.
async fn follow(mut ws: Ws, mut seen: Seen, expect: usize, mut target: watch::Receiver<Option<u32>>) -> Seen {
    loop {
        if let Some(t) = *target.borrow()
            && seen.epoch == t
            && seen.answers.len() >= expect
        {
            return seen;
        }
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Binary(b))) => seen.note(decode_server(&b).expect("valid server message")),
                Some(Ok(Message::Close(f))) => {
                    seen.closed = Some(f.map(|f| u16::from(f.code)));
                    return seen;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    seen.closed = Some(None);
                    return seen;
                }
            },
            _ = target.changed() => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seek_flood_from_200_of_2000_viewers_is_coalesced_and_every_command_answered() {
    const VIEWERS: usize = 2_000;
    const SENDERS: usize = 200;
    const PER_SEC: u64 = 5;
    const SECONDS: u64 = 10;
    const SENT: usize = (PER_SEC * SECONDS) as usize;
    let server = TestServer::with(|c| {
        c.control_policy = lockstep::config::ControlPolicyArg::Everyone;
        c.room_changes_per_sec = 10;
    })
    .await;
    let event = "ev-flood";
    let (target_tx, target) = watch::channel(None);
    let mut viewers = Vec::new();
    let mut senders = Vec::new();
    for i in 0..VIEWERS {
        let mut ws = ws_binary(&server.ws_url(event)).await;
        send(&mut ws, &hello_acks(event, &format!("d{i}"))).await;
        let mut seen = Seen::default();
        while seen.epoch == 0 && seen.closed.is_none() {
            match common::next(&mut ws).await {
                common::Got::Msg(m @ ServerMsg::Welcome(_)) => {
                    seen.note(m);
                    break;
                }
                common::Got::Msg(m) => seen.note(m),
                other => panic!("viewer {i} before its welcome: {other:?}"),
            }
        }
        if i < SENDERS {
            senders.push((ws, seen));
        } else {
            viewers.push(tokio::spawn(follow(ws, seen, 0, target.clone())));
        }
    }
    // Each sender: a seek every 200 ms for 10 s, reading as it goes, then
    // reading until all its commands are answered.
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for (n, (mut ws, mut seen)) in senders.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(
                started + Duration::from_millis(n as u64 * 1000 / SENDERS as u64 / PER_SEC),
                Duration::from_millis(1000 / PER_SEC),
            );
            for k in 1..=SENT as u32 {
                tick.tick().await;
                let position_ms = u64::from(k) * 1_000 + n as u64;
                send(&mut ws, &command(k, Action::Seek { position_ms })).await;
                while let Some(Some(Ok(m))) = futures_util::FutureExt::now_or_never(ws.next()) {
                    if let Message::Binary(b) = m {
                        seen.note(decode_server(&b).expect("valid server message"));
                    }
                }
            }
            while seen.answers.len() < SENT && seen.closed.is_none() {
                match common::next(&mut ws).await {
                    common::Got::Msg(m) => seen.note(m),
                    common::Got::Closed(code) => seen.closed = Some(code),
                    common::Got::Text(_) => {}
                }
            }
            (ws, seen)
        }));
    }
    // Once every command is answered, none is held or queued: the room's
    // timeline is the last accepted one, and nothing moves it any more.
    let mut answered = Vec::new();
    for t in tasks {
        let (ws, seen) = tokio::time::timeout(Duration::from_secs(60), t).await.expect("senders finish").unwrap();
        answered.push((ws, seen));
    }
    let (status, state) = get_json(&server.http_url(&format!("/api/live-stream/{event}/state"))).await;
    assert_eq!(status, 200);
    assert!(state["pending"].is_null(), "nothing is scheduled: {state}");
    let last = state["timeline"]["epoch"].as_u64().unwrap() as u32;
    target_tx.send_replace(Some(last));
    let mut finished = Vec::new();
    for (ws, seen) in answered {
        let f = follow(ws, seen, SENT, target.clone());
        finished.push(tokio::time::timeout(WAIT, f).await.expect("senders reach the last timeline"));
    }
    let answered = finished;
    let mut closed = 0;
    let mut behind = 0;
    let mut max_changes = 0;
    for v in viewers {
        let seen = tokio::time::timeout(Duration::from_secs(60), v).await.expect("viewers finish").unwrap();
        closed += usize::from(seen.closed.is_some());
        behind += usize::from(seen.epoch != last);
        max_changes = max_changes.max(seen.changes);
    }
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for seen in &answered {
        assert!(seen.closed.is_none(), "a sender was closed: {:?}", seen.closed);
        assert!(!seen.answered_twice, "a command was answered twice");
        assert_eq!(seen.answers.len(), SENT, "every command is answered once");
        assert_eq!(seen.epoch, last, "senders end on the last accepted timeline");
        for a in seen.answers.values() {
            *outcomes.entry(format!("{a:?}")).or_default() += 1;
        }
    }
    eprintln!("seek flood: outcomes {outcomes:?}; last epoch {last}; at most {max_changes} changes per viewer");
    assert_eq!(closed, 0, "no viewer is closed");
    assert_eq!(behind, 0, "every viewer ends on the last accepted timeline");
    let applied = outcomes.get(&format!("{:?}", Ok::<_, u16>(AckOutcome::Applied))).copied().unwrap_or(0);
    let coalesced = outcomes.get(&format!("{:?}", Ok::<_, u16>(AckOutcome::Coalesced))).copied().unwrap_or(0);
    assert!(coalesced > SENDERS * SENT / 2, "most seeks are coalesced: {outcomes:?}");
    // 10 a second, with a burst of 10, over the flood and the tail it leaves.
    let budget = 10 * (SECONDS as usize + 3) + 10;
    assert!(applied <= budget, "{applied} changes applied, budget {budget}");
    assert!(max_changes as usize <= budget + 2, "a viewer got {max_changes} changes");
    assert_eq!(state["mailbox"]["commands"].as_u64().map(|n| n <= 1024), Some(true), "{state}");
}

#[tokio::test]
async fn a_report_flood_leaves_the_room_mailbox_bounded() {
    const VIEWERS: usize = 200;
    let server = TestServer::with(|c| c.msgs_per_sec = 50).await;
    let event = "ev-reports";
    let mut clients = Vec::new();
    for i in 0..VIEWERS {
        let (ws, _) = common::join(&server, event, &format!("r{i}")).await;
        clients.push(ws);
    }
    // 200 viewers × 50 reports a second (each connection's own limit) for
    // 3 s: 10,000 reports a second into one room.
    let report = |k: u64| ClientMsg::Report(Report { epoch: 0, position_us: k, rate_milli: 1000, buffering: false });
    let mut tasks = Vec::new();
    for mut ws in clients {
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for k in 0..150u64 {
                tick.tick().await;
                send(&mut ws, &report(k)).await;
                while let Some(Some(Ok(_))) = futures_util::FutureExt::now_or_never(ws.next()) {}
            }
            ws
        }));
    }
    let mut open = Vec::new();
    for t in tasks {
        open.push(tokio::time::timeout(WAIT * 2, t).await.expect("reports sent").unwrap());
    }
    let (status, state) = get_json(&server.http_url(&format!("/api/live-stream/{event}/state"))).await;
    assert_eq!(status, 200);
    let reports = state["mailbox"]["reports"].as_u64().unwrap();
    eprintln!("report flood: the room's mailbox held at most {reports} reports; {state}");
    assert!(reports <= VIEWERS as u64, "one report slot per member: {reports}");
    assert_eq!(state["viewers"], VIEWERS as u64, "nobody was closed");
    drop(open);
}

/// Holds an exclusive write lock on the server's SQLite database, so that
/// every store write waits (the store's busy timeout is 5 s).
fn stall_store(data_dir: &std::path::Path) -> rusqlite::Connection {
    let db = std::fs::read_dir(data_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "db" || x == "sqlite" || x == "sqlite3"))
        .expect("the server's database file");
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    conn
}

#[tokio::test]
async fn a_join_on_a_stalled_store_still_times_out() {
    let dir = common::fresh_dir("stalled");
    let server = TestServer::with(|c| {
        c.data_dir = dir.clone();
        c.hello_timeout_ms = 500;
    })
    .await;
    let _lock = stall_store(&dir);
    let mut ws = ws_binary(&server.ws_url("ev-stall")).await;
    let t0 = std::time::Instant::now();
    send(&mut ws, &common::hello("ev-stall", "d1")).await;
    assert_eq!(common::closed(&mut ws).await, Some(ErrorCode::HelloTimeout.as_u16()));
    let took = t0.elapsed();
    // The store would hold the join for 5 s; the hello timeout is 0.5 s.
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
}

#[tokio::test]
async fn a_join_on_a_stalled_store_still_shuts_down() {
    let dir = common::fresh_dir("stalled-shutdown");
    let server = TestServer::with(|c| c.data_dir = dir.clone()).await;
    let lock = Arc::new(std::sync::Mutex::new(stall_store(&dir)));
    let mut ws = ws_binary(&server.ws_url("ev-stall")).await;
    send(&mut ws, &common::hello("ev-stall", "d1")).await;
    // The join is waiting on the store now (it cannot have finished: every
    // write waits for the lock); shut the server down under it.
    let t0 = std::time::Instant::now();
    let stop = tokio::spawn(server.stop());
    assert_eq!(common::closed(&mut ws).await, Some(ErrorCode::ShuttingDown.as_u16()));
    assert!(t0.elapsed() < Duration::from_secs(3), "closed after {:?}", t0.elapsed());
    drop(lock);
    tokio::time::timeout(WAIT, stop).await.expect("server stops").unwrap();
}
