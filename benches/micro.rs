//! Micro-benchmarks (criterion): encode/decode per message type, a room
//! applying a command, and fan-out preparation (what the hub does per viewer
//! before any I/O).
//!
//! `cargo bench --bench micro` (`-- <filter>` to pick some).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use lockstep::room::{CommitResult, JoinInfo, Room, RoomConfig};
use lockstep_protocol::{
    Action, ChangeReason, ClientMsg, Command, ControlPolicy, Hello, Limits, PROTOCOL_VERSION, Ping, Pong, Report, Role,
    ServerMsg, Tick, Timeline, TimelineChanged, ViewerCount, Welcome, decode_client, decode_server, encode_client,
    encode_server,
};

fn timeline() -> Timeline {
    Timeline { epoch: 42, position_ms: 1_234_567, anchor_us: 1_764_000_000_000_000, rate_milli: 1000, paused: false }
}

fn server_msgs() -> Vec<(&'static str, ServerMsg)> {
    let t = timeline();
    vec![
        ("tick", ServerMsg::Tick(Tick::new(&t, t.anchor_us + 250_000, 10_000))),
        (
            "timeline_changed",
            ServerMsg::TimelineChanged(TimelineChanged {
                timeline: t,
                effective_at_us: t.anchor_us,
                by: 7,
                reason: ChangeReason::Seek,
            }),
        ),
        ("viewer_count", ServerMsg::ViewerCount(ViewerCount { count: 10_000 })),
        (
            "pong",
            ServerMsg::Pong(Pong { client_time: 1, server_recv_us: t.anchor_us, server_send_us: t.anchor_us + 9 }),
        ),
        (
            "welcome",
            ServerMsg::Welcome(Welcome {
                member_id: 7,
                role: Role::Viewer,
                timeline: t,
                server_time_us: t.anchor_us,
                viewers: 10_000,
                policy: ControlPolicy::HostOnly,
                limits: Limits {
                    max_frame: 8192,
                    max_datagram: 1200,
                    max_msgs_per_sec: 50,
                    tick_interval_ms: 250,
                    report_interval_ms: 1000,
                },
            }),
        ),
    ]
}

fn client_msgs() -> Vec<(&'static str, ClientMsg)> {
    vec![
        (
            "hello",
            ClientMsg::Hello(Hello {
                version: PROTOCOL_VERSION,
                event_id: "event-123".into(),
                device_id: "device-abcdef".into(),
                token: None,
                caps: 1,
            }),
        ),
        ("ping", ClientMsg::Ping(Ping { client_time: 1_764_000_000_000_000 })),
        (
            "command_seek",
            ClientMsg::Command(Command { request_id: 9, action: Action::Seek { position_ms: 1_234_567 } }),
        ),
        (
            "report",
            ClientMsg::Report(Report { epoch: 42, position_us: 1_234_567_000, rate_milli: 1000, buffering: false }),
        ),
    ]
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    for (name, msg) in server_msgs() {
        g.bench_function(format!("encode_server/{name}"), |b| b.iter(|| encode_server(black_box(&msg))));
        let bytes = encode_server(&msg);
        g.bench_function(format!("decode_server/{name}"), |b| b.iter(|| decode_server(black_box(&bytes)).unwrap()));
    }
    for (name, msg) in client_msgs() {
        g.bench_function(format!("encode_client/{name}"), |b| b.iter(|| encode_client(black_box(&msg))));
        let bytes = encode_client(&msg);
        g.bench_function(format!("decode_client/{name}"), |b| b.iter(|| decode_client(black_box(&bytes)).unwrap()));
    }
    let changed = &server_msgs()[1].1;
    g.bench_function("encode_json/timeline_changed", |b| {
        b.iter(|| lockstep::bench::encode_json(black_box("event-123"), black_box(changed)))
    });
    g.finish();
}

/// A room with `n` members (the first hosts).
fn room(n: usize) -> (Room, u32) {
    // Unlimited changes: the bench measures the fan-out of every seek.
    let mut r = Room::new(RoomConfig { changes_per_sec: 0, ..RoomConfig::default() }, 1_000_000);
    let mut host = 0;
    for i in 0..n {
        let id =
            r.join(1_000_000, JoinInfo { device_id: format!("d{i}"), name: format!("v{i}"), ..JoinInfo::default() });
        if i == 0 {
            host = id;
        }
    }
    while r.poll_output().is_some() {}
    (r, host)
}

fn room_apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("room");
    for n in [10usize, 1_000, 10_000] {
        let (mut r, host) = room(n);
        let mut now = 2_000_000u64;
        let mut k = 0u64;
        g.bench_function(format!("seek_and_drain/{n}_members"), |b| {
            b.iter(|| {
                now += 1_000;
                k += 1;
                r.command(now, host, 1, Action::Seek { position_ms: (k % 1_000_000) * 1000 }).unwrap();
                // A single node's authority commits at once.
                while r.poll_commit().is_some() {
                    r.on_commit(now, CommitResult::Committed);
                }
                let mut outs = 0;
                while let Some(o) = r.poll_output() {
                    black_box(&o);
                    outs += 1;
                }
                outs
            })
        });
    }
    g.finish();
}

/// What the hub does for one change to `n` viewers before any I/O: encode the
/// `TimelineChanged` and the tick once, queue the shared bytes in every
/// viewer's outbox; then what each writer takes out.
fn fanout_prep(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_prep");
    let msgs = server_msgs();
    let (changed, tick) = (msgs[1].1.clone(), msgs[0].1.clone());
    for n in [1_000usize, 10_000] {
        let fanout = lockstep::bench::Fanout::new(n);
        g.bench_function(format!("encode_once_push_and_take/{n}_viewers"), |b| {
            b.iter_batched(
                || (),
                |()| {
                    fanout.deliver(&changed, &tick);
                    black_box(fanout.take());
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, codec, room_apply, fanout_prep);
criterion_main!(benches);
