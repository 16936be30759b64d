//! Golden vectors in `protocol/vectors/`.
//!
//! The cases are built here, in Rust. With `UPDATE_VECTORS=1` the test
//! (re)writes the files:
//!
//! ```text
//! UPDATE_VECTORS=1 cargo test -p lockstep-protocol --test vectors
//! ```
//!
//! Without it the test fails when a file differs from what the code produces
//! now, so an accidental change of the encoding breaks CI. Either way it then
//! checks every file on its own terms: each hex decodes to its value, each
//! value encodes to its hex, each invalid input fails as stated, each timeline
//! case recomputes to its outputs. The JavaScript client runs the same files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use lockstep_protocol::codec::{CLIENT_TAGS, SERVER_TAGS};
use lockstep_protocol::limits::{
    MAX_CHAT_TEXT, MAX_DEVICE_ID, MAX_EMOJI, MAX_ERROR_MESSAGE, MAX_EVENT_ID, MAX_FRAME, MAX_NAME, MAX_POSITION_MS,
    MAX_RATE_MILLI, MAX_REACTION_KINDS, MAX_REASON, MAX_TOKEN, MIN_RATE_MILLI,
};
use lockstep_protocol::limits::{MAX_MEDIA_ID, MAX_MEDIA_TITLE, MAX_MEDIA_URL, MAX_QUEUE};
use lockstep_protocol::timeline::unwrap_anchor;
use lockstep_protocol::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

// ---------------------------------------------------------------- file shapes

/// One case of `server/*.json` or `client/*.json`.
#[derive(Debug, Serialize, Deserialize)]
struct MsgCase<M> {
    name: String,
    hex: String,
    value: M,
}

/// One case of `invalid.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InvalidCase {
    name: String,
    /// `"client"` (decode_client) or `"server"` (decode_server).
    decoder: String,
    hex: String,
    /// The `DecodeError` variant.
    error: String,
    /// The `ErrorCode` a server reports for it.
    code: u16,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FramesFile {
    /// One payload and its frame.
    frames: Vec<FrameCase>,
    /// Several frames back to back, to be split again.
    streams: Vec<StreamCase>,
    /// Prefixes that need more bytes: no frame yet, no error.
    incomplete: Vec<IncompleteCase>,
    /// Prefixes that are errors.
    invalid: Vec<InvalidFrameCase>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FrameCase {
    name: String,
    payload: String,
    framed: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StreamCase {
    name: String,
    stream: String,
    payloads: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IncompleteCase {
    name: String,
    stream: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InvalidFrameCase {
    name: String,
    stream: String,
    error: String,
    code: u16,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TimelineFile {
    position_us_at: Vec<PositionCase>,
    whole_ms_point: Vec<WholeMsCase>,
    unwrap_anchor: Vec<UnwrapCase>,
    tick_new: Vec<TickNewCase>,
    tick_timeline: Vec<TickTimelineCase>,
}

/// `timeline.position_us_at(t_us) == position_us`
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PositionCase {
    name: String,
    timeline: Timeline,
    t_us: u64,
    position_us: u64,
}

/// `timeline.whole_ms_point(t_us) == (position_ms, anchor_us)` and
/// `timeline.reanchored(t_us) == reanchored`
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WholeMsCase {
    name: String,
    timeline: Timeline,
    t_us: u64,
    position_ms: u64,
    anchor_us: u64,
    reanchored: Timeline,
}

/// `unwrap_anchor(anchor_lo, server_now_estimate_us) == anchor_us`
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UnwrapCase {
    name: String,
    anchor_lo: u32,
    server_now_estimate_us: u64,
    anchor_us: u64,
}

/// `Tick::new(&timeline, now_us, viewers) == tick`, encoded as `hex`
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TickNewCase {
    name: String,
    timeline: Timeline,
    now_us: u64,
    viewers: u32,
    tick: Tick,
    hex: String,
}

/// `tick.timeline(server_now_estimate_us) == timeline`
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TickTimelineCase {
    name: String,
    tick: Tick,
    server_now_estimate_us: u64,
    timeline: Timeline,
}

// ---------------------------------------------------------------- helpers

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        write!(s, "{b:02x}").unwrap();
    }
    s
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(
        s.len().is_multiple_of(2) && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
        "not lowercase hex of whole bytes: {s:.40}"
    );
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn to_json<T: Serialize>(value: &T) -> String {
    let mut s = serde_json::to_string_pretty(value).unwrap();
    s.push('\n');
    s
}

fn error_kind(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::Empty => "Empty",
        DecodeError::TooLarge { .. } => "TooLarge",
        DecodeError::UnknownTag { .. } => "UnknownTag",
        DecodeError::Malformed(_) => "Malformed",
        DecodeError::TrailingBytes { .. } => "TrailingBytes",
        DecodeError::Invalid(_) => "Invalid",
    }
}

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

/// The JSON path of the first difference between two values.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => {
                        if let Some(d) = first_difference(u, v, &p) {
                            return Some(d);
                        }
                    }
                    (u, v) => return Some(format!("{p}: {u:?} vs {v:?}")),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                let name = u.get("name").and_then(Value::as_str).unwrap_or("");
                if let Some(d) = first_difference(u, v, &format!("{path}[{i}]{name:?}")) {
                    return Some(d);
                }
            }
            (x.len() != y.len()).then(|| format!("{path}: {} vs {} items", x.len(), y.len()))
        }
        _ => (a != b).then(|| {
            let (sa, sb) = (a.to_string(), b.to_string());
            format!("{path}: {:.120} vs {:.120}", sa, sb)
        }),
    }
}

// ---------------------------------------------------------------- message cases

const MB: u64 = 1_000_000;
/// A server clock reading: about 20 days of uptime, in microseconds.
const NOW: u64 = 1_730_123_456_789;
/// A server clock reading of a Unix-time clock (late 2026), in microseconds.
const UNIX_NOW: u64 = 1_795_500_000_123_456;

fn limits() -> Limits {
    Limits {
        max_frame: MAX_FRAME as u32,
        max_datagram: 1200,
        max_msgs_per_sec: 50,
        tick_interval_ms: 1000,
        report_interval_ms: 2000,
    }
}

fn tl(epoch: u32, position_ms: u64, anchor_us: u64, rate_milli: u16, paused: bool) -> Timeline {
    Timeline { epoch, position_ms, anchor_us, rate_milli, paused }
}

fn server_cases() -> Vec<(&'static str, ServerMsg)> {
    use ServerMsg as S;
    let worst_tick = Tick {
        epoch: u32::MAX,
        position_ms: u32::MAX,
        anchor_lo_us: u32::MAX,
        rate_milli: MAX_RATE_MILLI,
        paused: true,
        viewers: u32::MAX,
    };
    let changed = |reason, timeline, by| {
        S::TimelineChanged(TimelineChanged { timeline, effective_at_us: timeline.anchor_us, by, reason })
    };
    vec![
        // Welcome
        (
            "host joins a new room (paused at 0)",
            S::Welcome(Welcome {
                member_id: 1,
                role: Role::Host,
                timeline: Timeline::start(NOW - 2 * MB),
                server_time_us: NOW,
                viewers: 1,
                policy: ControlPolicy::HostOnly,
                limits: limits(),
            }),
        ),
        (
            "viewer joins a playing room",
            S::Welcome(Welcome {
                member_id: 17,
                role: Role::Viewer,
                timeline: tl(12, 754_250, NOW - 400_000, 1000, false),
                server_time_us: NOW,
                viewers: 42,
                policy: ControlPolicy::HostOnly,
                limits: limits(),
            }),
        ),
        (
            "co-host, everyone policy, 1.5x, Unix-time clock",
            S::Welcome(Welcome {
                member_id: 300,
                role: Role::CoHost,
                timeline: tl(70_000, 5_400_000, UNIX_NOW - 333, 1500, false),
                server_time_us: UNIX_NOW,
                viewers: 1000,
                policy: ControlPolicy::Everyone,
                limits: limits(),
            }),
        ),
        // Tick
        (
            "typical: playing near 12:34, 42 viewers",
            S::Tick(Tick::new(&tl(12, 754_250, NOW - 400_000, 1000, false), NOW, 42)),
        ),
        ("new room: paused at 0, 1 viewer", S::Tick(Tick::new(&Timeline::start(NOW - 2 * MB), NOW, 1))),
        (
            "early in the media: position below 65.536 s",
            S::Tick(Tick {
                epoch: 1,
                position_ms: 30_000,
                anchor_lo_us: 123,
                rate_milli: 1000,
                paused: false,
                viewers: 2,
            }),
        ),
        (
            "slowest rate, playing",
            S::Tick(Tick {
                epoch: 5,
                position_ms: 90_001,
                anchor_lo_us: 4_000_000_000,
                rate_milli: MIN_RATE_MILLI,
                paused: false,
                viewers: 3,
            }),
        ),
        (
            "fastest rate, paused",
            S::Tick(Tick {
                epoch: 6,
                position_ms: 90_001,
                anchor_lo_us: 4_000_000_000,
                rate_milli: MAX_RATE_MILLI,
                paused: true,
                viewers: 3,
            }),
        ),
        ("worst case: 24 bytes", S::Tick(worst_tick)),
        // TimelineChanged
        ("seek", changed(ChangeReason::Seek, tl(13, 1_200_000, NOW + 150_000, 1000, false), 1)),
        ("pause", changed(ChangeReason::Pause, tl(14, 1_203_117, NOW + 150_000, 1000, true), 17)),
        ("play", changed(ChangeReason::Play, tl(15, 1_203_117, NOW + 150_000, 1000, false), 17)),
        ("rate", changed(ChangeReason::Rate, tl(16, 1_210_000, NOW + 150_667, 1250, false), 1)),
        (
            "buffering wait, by the server",
            changed(ChangeReason::BufferingWait, tl(17, 1_215_000, NOW + 150_000, 1250, true), 0),
        ),
        ("resume, by the server", changed(ChangeReason::Resume, tl(18, 1_215_000, NOW + 150_000, 1250, false), 0)),
        (
            "effective later than the anchor, Unix-time clock",
            S::TimelineChanged(TimelineChanged {
                timeline: tl(19, 0, UNIX_NOW, 1000, false),
                effective_at_us: UNIX_NOW + 250_000,
                by: 300,
                reason: ChangeReason::Seek,
            }),
        ),
        // ViewerCount
        ("zero", S::ViewerCount(ViewerCount { count: 0 })),
        ("250, largest one-byte varint", S::ViewerCount(ViewerCount { count: 250 })),
        ("251, smallest three-byte varint", S::ViewerCount(ViewerCount { count: 251 })),
        ("65536, smallest five-byte varint", S::ViewerCount(ViewerCount { count: 65_536 })),
        ("u32 max", S::ViewerCount(ViewerCount { count: u32::MAX })),
        // Pong
        ("typical", S::Pong(Pong { client_time: 83_456_789, server_recv_us: NOW, server_send_us: NOW + 37 })),
        ("client time 0", S::Pong(Pong { client_time: 0, server_recv_us: UNIX_NOW, server_send_us: UNIX_NOW })),
        (
            "worst case: u64 max everywhere",
            S::Pong(Pong { client_time: u64::MAX, server_recv_us: u64::MAX, server_send_us: u64::MAX }),
        ),
        // Error
        (
            "invalid argument with request id",
            S::Error(ErrorMsg::new(ErrorCode::InvalidArgument, "rate 5000 outside 250..=4000", 42)),
        ),
        (
            "forbidden with large request id",
            S::Error(ErrorMsg::new(ErrorCode::Forbidden, "viewers cannot control playback", 70_000)),
        ),
        (
            "version mismatch, no request id",
            S::Error(ErrorMsg::new(
                ErrorCode::VersionMismatch,
                "protocol version 2 not supported; this server speaks 1",
                0,
            )),
        ),
        ("empty message", S::Error(ErrorMsg::new(ErrorCode::ShuttingDown, "", 0))),
        ("non-ASCII message", S::Error(ErrorMsg::new(ErrorCode::Malformed, "données invalides ✗", 0))),
        (
            "message of exactly 256 bytes",
            S::Error(ErrorMsg::new(ErrorCode::Internal, "x".repeat(MAX_ERROR_MESSAGE), 1)),
        ),
        // MemberJoined
        ("host Alice", S::MemberJoined(MemberJoined { member_id: 1, role: Role::Host, name: "Alice".into() })),
        (
            "viewer with a non-ASCII name",
            S::MemberJoined(MemberJoined { member_id: 4242, role: Role::Viewer, name: "Zoë 🎬".into() }),
        ),
        (
            "co-host with an empty name",
            S::MemberJoined(MemberJoined { member_id: 2, role: Role::CoHost, name: String::new() }),
        ),
        (
            "name of exactly 64 bytes",
            S::MemberJoined(MemberJoined { member_id: 3, role: Role::Viewer, name: "n".repeat(MAX_NAME) }),
        ),
        // MemberLeft
        ("member 7", S::MemberLeft(MemberLeft { member_id: 7 })),
        ("member 300", S::MemberLeft(MemberLeft { member_id: 300 })),
        // RoleChanged
        ("to host", S::RoleChanged(RoleChanged { member_id: 5, role: Role::Host })),
        ("to co-host", S::RoleChanged(RoleChanged { member_id: 5, role: Role::CoHost })),
        ("to viewer", S::RoleChanged(RoleChanged { member_id: 5, role: Role::Viewer })),
        // PolicyChanged
        ("to everyone", S::PolicyChanged(PolicyChanged { policy: ControlPolicy::Everyone, by: 1 })),
        ("to host-only", S::PolicyChanged(PolicyChanged { policy: ControlPolicy::HostOnly, by: 300 })),
        // Ack
        ("applied", S::Ack(Ack { request_id: 5, outcome: AckOutcome::Applied, epoch: 13 })),
        ("unchanged", S::Ack(Ack { request_id: 6, outcome: AckOutcome::Unchanged, epoch: 13 })),
        (
            "coalesced into a later change",
            S::Ack(Ack { request_id: 300, outcome: AckOutcome::Coalesced, epoch: 70_000 }),
        ),
        // LiveState
        (
            "live room at the live point, fixed 3 s latency",
            S::LiveState(LiveState {
                clock: ClockKind::Live,
                origin_ms: 1_794_441_600_000,
                latency_ms: 3_000,
                auto_latency: false,
                at_live: true,
            }),
        ),
        (
            "live room paused (behind live), auto latency",
            S::LiveState(LiveState {
                clock: ClockKind::Live,
                origin_ms: 1_794_441_600_000,
                latency_ms: 4_250,
                auto_latency: true,
                at_live: false,
            }),
        ),
        (
            "media room",
            S::LiveState(LiveState {
                clock: ClockKind::Media,
                origin_ms: 0,
                latency_ms: 0,
                auto_latency: false,
                at_live: false,
            }),
        ),
        (
            "worst case",
            S::LiveState(LiveState {
                clock: ClockKind::Live,
                origin_ms: u64::MAX,
                latency_ms: u32::MAX,
                auto_latency: true,
                at_live: true,
            }),
        ),
        // Reactions
        ("an empty window", S::Reactions(Reactions { counts: vec![] })),
        (
            "two kinds, most frequent first",
            S::Reactions(Reactions {
                counts: vec![
                    ReactionCount { emoji: "👏".into(), count: 412 },
                    ReactionCount { emoji: "😂".into(), count: 3 },
                ],
            }),
        ),
        (
            "a flag and a skin tone",
            S::Reactions(Reactions {
                counts: vec![
                    ReactionCount { emoji: "🇫🇷".into(), count: 1 },
                    ReactionCount { emoji: "👍🏽".into(), count: 70_000 },
                ],
            }),
        ),
        // ChatMessage, ChatDeleted, ChatMuted
        (
            "a viewer's message, its own copy (request id echoed)",
            S::ChatMessage(ChatMessage {
                id: 1,
                at_ms: 1_795_500_000_123,
                member_id: 7,
                name: "Ana".into(),
                role: Role::Viewer,
                text: "What a goal! ⚽".into(),
                request_id: 5,
                history: false,
            }),
        ),
        (
            "history after Welcome, two lines",
            S::ChatMessage(ChatMessage {
                id: 300,
                at_ms: 1_795_499_990_000,
                member_id: 1_048_577,
                name: "Host".into(),
                role: Role::Host,
                text: "Welcome!\nKick-off at 20:00".into(),
                request_id: 0,
                history: true,
            }),
        ),
        ("deleted by the host", S::ChatDeleted(ChatDeleted { id: 300, by: 1 })),
        ("muted by a co-host", S::ChatMuted(ChatMuted { muted: true, by: 2 })),
        ("unmuted", S::ChatMuted(ChatMuted { muted: false, by: 1 })),
        // MediaChanged, QueueChanged
        (
            "the host switched to episode 2",
            S::MediaChanged(MediaChanged { item: Some(episode(2)), index: Some(1), epoch: 14, by: 1 }),
        ),
        (
            "a trailer, not in the playlist, by url only",
            S::MediaChanged(MediaChanged {
                item: Some(MediaItem {
                    media_id: "trailer-7".into(),
                    url: Some("https://cdn.example.com/t7/master.m3u8".into()),
                    title: None,
                    duration_ms: None,
                }),
                index: None,
                epoch: 15,
                by: 2,
            }),
        ),
        ("no item", S::MediaChanged(MediaChanged { item: None, index: None, epoch: 1, by: 0 })),
        (
            "two episodes, the first playing, auto-advance",
            S::QueueChanged(QueueChanged {
                items: vec![episode(1), episode(2)],
                current: Some(0),
                auto_advance: true,
                by: 1,
            }),
        ),
        ("empty", S::QueueChanged(QueueChanged { items: vec![], current: None, auto_advance: false, by: 0 })),
    ]
}

/// A playlist item of the vectors.
fn episode(n: u32) -> MediaItem {
    MediaItem {
        media_id: format!("s01e0{n}"),
        url: None,
        title: Some(format!("Episode {n}")),
        duration_ms: Some(2_640_000),
    }
}

fn client_cases() -> Vec<(&'static str, ClientMsg)> {
    use ClientMsg as C;
    let hello = |event_id: &str, device_id: &str, token: Option<String>, caps| {
        C::Hello(Hello {
            version: PROTOCOL_VERSION,
            event_id: event_id.into(),
            device_id: device_id.into(),
            token,
            caps,
        })
    };
    let command = |request_id, action| C::Command(Command { request_id, action });
    vec![
        // Hello
        ("without token, datagrams", hello("evt-2026-launch", "d-7f3a9c", None, caps::DATAGRAMS)),
        (
            "WebTransport client taking changes as datagrams only",
            hello(
                "evt-2026-launch",
                "d-7f3a9c",
                None,
                caps::DATAGRAMS | caps::ACKS | caps::LIVE | caps::DATAGRAM_CHANGES,
            ),
        ),
        (
            "with token, datagrams and presence",
            hello(
                "evt-2026-launch",
                "d-7f3a9c",
                Some("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl".into()),
                caps::DATAGRAMS | caps::PRESENCE,
            ),
        ),
        ("WebSocket client: no caps, empty token", hello("e1", "browser-tab", Some(String::new()), 0)),
        (
            "ids of exactly 128 bytes, token of 300 bytes",
            hello(&"e".repeat(MAX_EVENT_ID), &"d".repeat(MAX_DEVICE_ID), Some("t".repeat(300)), caps::PRESENCE),
        ),
        (
            "other protocol version (decodes; the server answers 4006)",
            C::Hello(Hello { version: 2, event_id: "e1".into(), device_id: "d1".into(), token: None, caps: 0 }),
        ),
        // Ping
        ("client time 0", C::Ping(Ping { client_time: 0 })),
        ("typical: performance.now() in microseconds", C::Ping(Ping { client_time: 83_456_789 })),
        ("worst case: u64 max", C::Ping(Ping { client_time: u64::MAX })),
        // Command: every action
        ("play from the paused position", command(1, Action::Play { position_ms: None })),
        ("play from a position", command(2, Action::Play { position_ms: Some(60_000) })),
        ("pause on the timeline's position", command(3, Action::Pause { position_ms: None })),
        ("pause at a position", command(4, Action::Pause { position_ms: Some(754_250) })),
        ("seek", command(5, Action::Seek { position_ms: 1_200_000 })),
        ("seek to 0", command(0, Action::Seek { position_ms: 0 })),
        ("seek to the largest position", command(70_000, Action::Seek { position_ms: MAX_POSITION_MS })),
        ("set rate 1.5x", command(6, Action::SetRate { rate_milli: 1500 })),
        ("set rate to the minimum", command(7, Action::SetRate { rate_milli: MIN_RATE_MILLI })),
        ("set rate to the maximum", command(8, Action::SetRate { rate_milli: MAX_RATE_MILLI })),
        ("make member 4 a co-host", command(9, Action::SetRole { member_id: 4, role: Role::CoHost })),
        ("make member 300 a viewer", command(10, Action::SetRole { member_id: 300, role: Role::Viewer })),
        ("open control to everyone", command(11, Action::SetPolicy { policy: ControlPolicy::Everyone })),
        ("back to host-only", command(12, Action::SetPolicy { policy: ControlPolicy::HostOnly })),
        ("go live", command(13, Action::GoLive)),
        ("go live, no request id", command(0, Action::GoLive)),
        ("delete chat message 300", command(14, Action::DeleteChat { id: 300 })),
        ("mute member 7's chat", command(15, Action::MuteChat { member_id: 7, muted: true })),
        ("unmute member 7", command(16, Action::MuteChat { member_id: 7, muted: false })),
        // Report
        ("playing", C::Report(Report { epoch: 12, position_us: 754_612_345, rate_milli: 1000, buffering: false })),
        ("buffering", C::Report(Report { epoch: 12, position_us: 755_000_000, rate_milli: 1000, buffering: true })),
        (
            "worst case",
            C::Report(Report { epoch: u32::MAX, position_us: u64::MAX, rate_milli: u16::MAX, buffering: true }),
        ),
        // LiveReport
        ("typical", C::LiveReport(LiveReport { live_edge_ms: 1_795_500_000_123, buffer_ms: 6_000 })),
        ("empty buffer", C::LiveReport(LiveReport { live_edge_ms: 1_795_500_000_000, buffer_ms: 0 })),
        ("worst case", C::LiveReport(LiveReport { live_edge_ms: u64::MAX, buffer_ms: u32::MAX })),
        // Nack
        ("missed the change after epoch 12", C::Nack(Nack { epoch: 12 })),
        ("fresh room: holds epoch 0", C::Nack(Nack { epoch: 0 })),
        ("epoch past 250: three-byte varint", C::Nack(Nack { epoch: 300 })),
        ("epoch past 65535: five-byte varint", C::Nack(Nack { epoch: 70_000 })),
        ("worst case", C::Nack(Nack { epoch: u32::MAX })),
        // SyncReport
        ("in step: 0 µs", C::SyncReport(SyncReport { epoch: 12, drift_us: 0 })),
        ("3.2 ms ahead", C::SyncReport(SyncReport { epoch: 12, drift_us: 3_200 })),
        ("40 ms behind (zigzag: negative is odd)", C::SyncReport(SyncReport { epoch: 12, drift_us: -40_000 })),
        ("extremes", C::SyncReport(SyncReport { epoch: u32::MAX, drift_us: i32::MIN })),
        // Suspend, Resume
        ("buffering", C::Suspend(Suspend { reason: "buffering".into() })),
        ("an ad plays", C::Suspend(Suspend { reason: "interstitial".into() })),
        ("autoplay blocked", C::Suspend(Suspend { reason: "userActionRequired".into() })),
        ("unfollow", C::Suspend(Suspend { reason: "notFollowing".into() })),
        ("custom reason", C::Suspend(Suspend { reason: "custom:trivia-break".into() })),
        ("longest reason", C::Suspend(Suspend { reason: format!("custom:{}", "x".repeat(MAX_REASON - 7)) })),
        ("resume", C::Resume),
        // React
        ("applause", C::React(React { emoji: "👏".into() })),
        ("a family with modifiers", C::React(React { emoji: "👩🏽\u{200d}👩🏽\u{200d}👧🏽".into() })),
        // Chat
        ("hello, answered by request id 5", C::Chat(Chat { request_id: 5, text: "hello 👋".into() })),
        ("two lines, no request id", C::Chat(Chat { request_id: 0, text: "line one\nline two".into() })),
        // Media
        ("switch to episode 2", C::Media(MediaCommand { request_id: 20, op: MediaOp::Set { item: episode(2) } })),
        ("add episode 3", C::Media(MediaCommand { request_id: 21, op: MediaOp::Add { item: episode(3) } })),
        (
            "remove episode 3",
            C::Media(MediaCommand { request_id: 22, op: MediaOp::Remove { media_id: "s01e03".into() } }),
        ),
        (
            "move episode 2 first",
            C::Media(MediaCommand { request_id: 23, op: MediaOp::Move { media_id: "s01e02".into(), index: 0 } }),
        ),
        ("next", C::Media(MediaCommand { request_id: 24, op: MediaOp::Next })),
        ("previous", C::Media(MediaCommand { request_id: 25, op: MediaOp::Previous })),
        ("auto-advance off", C::Media(MediaCommand { request_id: 26, op: MediaOp::AutoAdvance { on: false } })),
    ]
}

/// Groups cases by message name (the file name) and renders each file.
fn message_files<M>(
    dir: &str,
    cases: Vec<(&'static str, M)>,
    name_of: impl Fn(&M) -> &'static str,
    encode: impl Fn(&M) -> Vec<u8>,
    decode: impl Fn(&[u8]) -> Result<M, DecodeError>,
) -> BTreeMap<String, String>
where
    M: Serialize + PartialEq + std::fmt::Debug,
{
    let mut by_file: BTreeMap<String, Vec<MsgCase<M>>> = BTreeMap::new();
    for (name, msg) in cases {
        let bytes = encode(&msg);
        assert_eq!(decode(&bytes).as_ref(), Ok(&msg), "case {name:?} does not round-trip");
        by_file.entry(format!("{dir}/{}.json", name_of(&msg))).or_default().push(MsgCase {
            name: name.into(),
            hex: hex(&bytes),
            value: msg,
        });
    }
    by_file.into_iter().map(|(path, cases)| (path, to_json(&cases))).collect()
}

// ---------------------------------------------------------------- invalid cases

fn invalid_cases() -> Vec<InvalidCase> {
    let ping = |t| encode_client(&ClientMsg::Ping(Ping { client_time: t }));
    let worst_tick = encode_server(&ServerMsg::Tick(Tick {
        epoch: u32::MAX,
        position_ms: u32::MAX,
        anchor_lo_us: u32::MAX,
        rate_milli: MAX_RATE_MILLI,
        paused: true,
        viewers: u32::MAX,
    }));
    let hello = |event_id: String, device_id: String, token: Option<String>| {
        encode_client(&ClientMsg::Hello(Hello { version: 1, event_id, device_id, token, caps: 0 }))
    };
    let report = encode_client(&ClientMsg::Report(Report { epoch: 1, position_us: 2, rate_milli: 3, buffering: true }));
    let role_changed = encode_server(&ServerMsg::RoleChanged(RoleChanged { member_id: 5, role: Role::Viewer }));
    let changed = encode_server(&ServerMsg::TimelineChanged(TimelineChanged {
        timeline: tl(1, 2, 3, 1000, false),
        effective_at_us: 3,
        by: 0,
        reason: ChangeReason::Resume,
    }));
    let live_state = |at_live| {
        encode_server(&ServerMsg::LiveState(LiveState {
            clock: ClockKind::Live,
            origin_ms: 1_000,
            latency_ms: 3_000,
            auto_latency: false,
            at_live,
        }))
    };
    let with_last = |mut b: Vec<u8>, last: u8| {
        *b.last_mut().unwrap() = last;
        b
    };
    let error_msg = |message: String| encode_server(&ServerMsg::Error(ErrorMsg { code: 4000, message, request_id: 0 }));
    let member =
        |name: String| encode_server(&ServerMsg::MemberJoined(MemberJoined { member_id: 1, role: Role::Viewer, name }));
    // Hello with event id "e", device id of one invalid UTF-8 byte.
    let bad_utf8 = vec![0, 1, 1, b'e', 1, 0xff, 0, 0];
    // Hello whose event id claims 2^40 bytes.
    let mut huge_claim = vec![0u8, 1, 253];
    huge_claim.extend_from_slice(&(1u64 << 40).to_le_bytes());
    // Hello whose event id claims 100 bytes and has 3.
    let short_claim = vec![0u8, 1, 100, b'a', b'b', b'c'];
    // Hello whose token option byte is 2.
    let bad_option = vec![0u8, 1, 1, b'e', 1, b'd', 2, 0];
    // Hello whose version (u16) comes as a u32 varint.
    let wide_version = vec![0u8, 252, 1, 0, 0, 0, 1, b'e', 1, b'd', 0, 0];
    let mut too_large = vec![1u8];
    too_large.resize(MAX_FRAME + 1, 0);

    let c = |name: &str, bytes: Vec<u8>| (name.to_string(), "client", bytes);
    let s = |name: &str, bytes: Vec<u8>| (name.to_string(), "server", bytes);
    let raw = vec![
        c("empty (client)", vec![]),
        s("empty (server)", vec![]),
        c("unknown client tag 12", vec![12]),
        s("unknown server tag 18", vec![18]),
        c("unknown tag 250", vec![250, 0, 0]),
        c("unknown tag 300 (three-byte varint)", vec![251, 0x2c, 0x01]),
        c("tag as a u64 varint", vec![253, 1, 0, 0, 0, 0, 0, 0, 0]),
        c("varint marker 255", vec![255]),
        c("trailing byte after a ping", [ping(5), vec![0]].concat()),
        s("trailing bytes after a tick", [worst_tick.clone(), vec![1, 2, 3]].concat()),
        c("truncated: ping tag only", vec![1]),
        c("truncated: varint cut short", vec![1, 253, 1, 2, 3]),
        s("truncated tick", worst_tick[..10].to_vec()),
        c("truncated: string shorter than its length", short_claim),
        c("string length claims 2^40 bytes", huge_claim),
        c("bad bool byte 2 (Report.buffering)", with_last(report, 2)),
        s(
            "bad bool byte 2 (Timeline.paused)",
            // Timeline { epoch 1, position 2, anchor 3, rate 1000, paused }
            vec![2, 1, 2, 3, 251, 0xe8, 0x03, 2, 3, 0, 5],
        ),
        c("bad Option byte 2 (Hello.token)", bad_option),
        s("unknown Role 3", with_last(role_changed, 3)),
        s("unknown ChangeReason 6", with_last(changed, 6)),
        c("unknown Action 9", vec![2, 1, 9]),
        s("unknown ClockKind 2 (LiveState.clock)", {
            let mut b = live_state(true);
            b[1] = 2;
            b
        }),
        s("bad bool byte 2 (LiveState.at_live)", with_last(live_state(true), 2)),
        s("truncated LiveState", live_state(false)[..4].to_vec()),
        c("truncated LiveReport (buffer missing)", vec![4, 250]),
        c("LiveReport.buffer_ms as a u64 varint", vec![4, 1, 253, 0, 0, 0, 0, 1, 0, 0, 0]),
        c("truncated Nack (epoch missing)", vec![5]),
        c("Nack.epoch as a u64 varint", vec![5, 253, 1, 0, 0, 0, 0, 0, 0, 0]),
        c("truncated SyncReport (drift missing)", vec![6, 12]),
        c("SyncReport.drift_us as a u64 varint", vec![6, 12, 253, 1, 0, 0, 0, 0, 0, 0, 0]),
        c("truncated Suspend (reason cut)", vec![7, 9, b'b', b'u']),
        c("Suspend.reason longer than 55 bytes", [vec![7, 56], vec![b'x'; 56]].concat()),
        c("Resume with a trailing byte", vec![8, 0]),
        c("React.emoji longer than 32 bytes", [vec![9, 33], "👏".repeat(8).into_bytes(), vec![b'x']].concat()),
        c("Chat.text longer than 1000 bytes", [vec![10, 0, 251, 0xe9, 0x03], vec![b'x'; 1001]].concat()),
        s("ChatMessage.text longer than 1000 bytes", {
            let mut b = vec![13, 1, 1, 1, 1, b'A', 2, 251, 0xe9, 0x03];
            b.extend(vec![b'x'; 1001]);
            b.extend([0, 0]);
            b
        }),
        s("bad bool byte 2 (ChatMuted.muted)", vec![15, 2, 1]),
        c("unknown MediaOp 7", vec![11, 1, 7]),
        c("MediaItem.media_id longer than 128 bytes", [vec![11, 1, 1, 129], vec![b'x'; 129], vec![0, 0, 0]].concat()),
        s("QueueChanged with 51 items", {
            let mut b = vec![17, 51];
            for _ in 0..51 {
                b.extend([1, b'x', 0, 0, 0]);
            }
            b.extend([0, 0, 0]);
            b
        }),
        s("Reactions with 17 kinds", {
            let mut b = vec![12, 17];
            for _ in 0..17 {
                b.extend([4, 0xf0, 0x9f, 0x91, 0x8f, 1]);
            }
            b
        }),
        c("invalid UTF-8 in device id", bad_utf8),
        c("u16 field as a u32 varint (Hello.version)", wide_version),
        c("non-canonical varint: 5 as 251 05 00", vec![1, 251, 5, 0]),
        c("non-canonical varint: 5 as a u64", vec![1, 253, 5, 0, 0, 0, 0, 0, 0, 0]),
        c("non-canonical tag: 1 as 251 01 00", vec![251, 1, 0, 5]),
        c("event id of 129 bytes", hello("e".repeat(MAX_EVENT_ID + 1), "d".into(), None)),
        c("device id of 129 bytes", hello("e".into(), "d".repeat(MAX_DEVICE_ID + 1), None)),
        c("token of 4097 bytes", hello("e".into(), "d".into(), Some("t".repeat(MAX_TOKEN + 1)))),
        s("error message of 257 bytes", error_msg("x".repeat(MAX_ERROR_MESSAGE + 1))),
        s("member name of 65 bytes", member("n".repeat(MAX_NAME + 1))),
        s("unknown AckOutcome 3", vec![10, 5, 3, 13]),
        c("8193 bytes, over MAX_FRAME", too_large),
    ];
    raw.into_iter()
        .map(|(name, decoder, bytes)| {
            let err = decode(decoder, &bytes).expect_err(&name);
            InvalidCase {
                name,
                decoder: decoder.into(),
                hex: hex(&bytes),
                error: error_kind(&err).into(),
                code: err.code().as_u16(),
            }
        })
        .collect()
}

fn decode(decoder: &str, bytes: &[u8]) -> Result<(), DecodeError> {
    match decoder {
        "client" => decode_client(bytes).map(drop),
        "server" => decode_server(bytes).map(drop),
        other => panic!("unknown decoder {other:?}"),
    }
}

// ---------------------------------------------------------------- frame cases

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(payload, &mut out);
    out
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// Splits `stream` in one go; `Err` for a framing error.
fn split(stream: &[u8]) -> (Result<Vec<Vec<u8>>, DecodeError>, usize) {
    let mut d = FrameDecoder::new();
    d.push(stream);
    let mut out = Vec::new();
    loop {
        match d.next_frame() {
            Ok(Some(f)) => out.push(f),
            Ok(None) => return (Ok(out), d.buffered()),
            Err(e) => return (Err(e), d.buffered()),
        }
    }
}

fn frames_file() -> FramesFile {
    let ping = encode_client(&ClientMsg::Ping(Ping { client_time: 83_456_789 }));
    let tick = encode_server(&ServerMsg::Tick(Tick::new(&tl(12, 754_250, NOW - 400_000, 1000, false), NOW, 42)));
    let payloads: Vec<(&str, Vec<u8>)> = vec![
        ("empty payload", vec![]),
        ("one byte", vec![7]),
        ("a ping", ping.clone()),
        ("a tick", tick.clone()),
        ("250 bytes: largest one-byte length", pattern(250)),
        ("251 bytes: smallest three-byte length", pattern(251)),
        ("300 bytes", pattern(300)),
        ("8192 bytes: MAX_FRAME", pattern(MAX_FRAME)),
    ];
    let frames = payloads
        .iter()
        .map(|(name, p)| FrameCase { name: (*name).into(), payload: hex(p), framed: hex(&framed(p)) })
        .collect();
    let stream_of = |name: &str, ps: Vec<Vec<u8>>| StreamCase {
        name: name.into(),
        stream: hex(&ps.iter().flat_map(|p| framed(p)).collect::<Vec<_>>()),
        payloads: ps.iter().map(|p| hex(p)).collect(),
    };
    let streams = vec![
        stream_of("ping, tick, ping", vec![ping.clone(), tick.clone(), ping.clone()]),
        stream_of("empty, 251 bytes, one byte", vec![vec![], pattern(251), vec![9]]),
    ];
    let incomplete = [
        ("nothing", vec![]),
        ("three-byte length cut short", vec![251, 0]),
        ("payload cut short", vec![5, 1, 2]),
        ("251-byte frame missing its last byte", {
            let mut f = framed(&pattern(251));
            f.pop();
            f
        }),
    ]
    .into_iter()
    .map(|(name, stream)| {
        let (res, buffered) = split(&stream);
        assert_eq!(res, Ok(vec![]), "{name}");
        assert_eq!(buffered, stream.len(), "{name}");
        IncompleteCase { name: name.into(), stream: hex(&stream) }
    })
    .collect();
    let invalid = [
        ("length 8193, over MAX_FRAME", vec![251, 0x01, 0x20]),
        ("length 65536", vec![252, 0, 0, 1, 0]),
        ("length 2^32", vec![253, 0, 0, 0, 0, 1, 0, 0, 0]),
        ("varint marker 254 (u128)", vec![254, 0, 0, 0, 0, 0, 0, 0, 0]),
        ("varint marker 255", vec![255]),
        ("length 5 as 251 05 00 (not shortest)", vec![251, 5, 0, 1, 2, 3, 4, 5]),
        ("length 300 as a u32 (not shortest)", vec![252, 0x2c, 0x01, 0, 0]),
    ]
    .into_iter()
    .map(|(name, stream)| {
        let err = split(&stream).0.expect_err(name);
        InvalidFrameCase {
            name: name.into(),
            stream: hex(&stream),
            error: error_kind(&err).into(),
            code: err.code().as_u16(),
        }
    })
    .collect();
    FramesFile { frames, streams, incomplete, invalid }
}

// ---------------------------------------------------------------- timeline cases

fn timeline_file() -> TimelineFile {
    let play = |position_ms, anchor_us, rate| tl(7, position_ms, anchor_us, rate, false);
    let pause = |position_ms, anchor_us| tl(8, position_ms, anchor_us, 1000, true);

    let position_us_at = [
        ("at the anchor", play(10_000, NOW, 1000), NOW),
        ("2.5 s after the anchor", play(10_000, NOW, 1000), NOW + 2_500_000),
        ("1.25x, 4 s after", play(0, NOW, 1250), NOW + 4_000_000),
        ("0.25x, 1 s after", play(60_000, NOW, 250), NOW + 1_000_000),
        ("4x, 1 s after", play(60_000, NOW, 4000), NOW + 1_000_000),
        ("0.999x, 1 µs after: truncates to 0", play(1, NOW, 999), NOW + 1),
        ("0.999x, 1001 µs after: truncates", play(1, NOW, 999), NOW + 1001),
        ("before the anchor: backwards", play(1, NOW, 1000), NOW - 500),
        ("before the anchor, 1.5x: truncates toward zero, not down", play(1, NOW, 1500), NOW - 3),
        ("before position 0: clamps at 0", play(1, NOW, 1000), NOW - 5_000),
        ("paused: constant", pause(10_000, NOW), NOW + 99_000_000),
        ("paused: also before the anchor", pause(10_000, NOW), NOW - 99),
        ("Unix-time clock, 12 hours in", play(43_200_000, UNIX_NOW, 1000), UNIX_NOW + 1_234_567),
        ("largest position, 4x, an hour later", play(MAX_POSITION_MS, UNIX_NOW, 4000), UNIX_NOW + 3_600_000_000),
    ]
    .into_iter()
    .map(|(name, timeline, t_us)| PositionCase {
        name: name.into(),
        timeline,
        t_us,
        position_us: timeline.position_us_at(t_us),
    })
    .collect();

    let whole_ms_point = [
        ("paused: at t exactly", pause(754_250, NOW - 5), NOW),
        ("1x, on a whole millisecond", play(1_000, NOW, 1000), NOW + 3_000),
        ("1x, mid-millisecond: next whole ms", play(1_000, NOW, 1000), NOW + 3_400),
        ("1x, 1 µs past a whole ms", play(1_000, NOW, 1000), NOW + 3_001),
        ("1.5x: anchor rounded to the µs", play(0, NOW, 1500), NOW + 1_000),
        ("1.5x: rounding half away from zero", play(0, NOW, 1500), NOW + 1),
        ("0.999x", play(500, NOW, 999), NOW + 123_456),
        ("1.001x", play(500, NOW, 1001), NOW + 123_456),
        ("0.25x", play(500, NOW, 250), NOW + 10_001),
        ("4x", play(500, NOW, 4000), NOW + 10_001),
        ("1.25x, before the anchor", play(100_000, NOW, 1250), NOW - 777_777),
        ("before position 0: anchors where 0 is", play(1, NOW, 1000), NOW - 5_000),
        ("Unix-time clock, 1.333x", play(5_400_000, UNIX_NOW, 1333), UNIX_NOW + 987_654_321),
    ]
    .into_iter()
    .map(|(name, timeline, t_us)| {
        let (position_ms, anchor_us) = timeline.whole_ms_point(t_us);
        WholeMsCase { name: name.into(), timeline, t_us, position_ms, anchor_us, reanchored: timeline.reanchored(t_us) }
    })
    .collect();

    let full = (5u64 << 32) + 100;
    let unwrap_anchor = [
        ("estimate equals the anchor", NOW as u32, NOW),
        ("estimate 5 ms after", (NOW - 5_000) as u32, NOW),
        ("estimate 5 ms before", (NOW + 5_000) as u32, NOW),
        ("anchor just past a 2^32 boundary", full as u32, full - 5_000),
        ("estimate just past a 2^32 boundary", (full - 200) as u32, full),
        ("anchor 2^31 - 1 µs ahead: still ahead", (NOW + (1 << 31) - 1) as u32, NOW),
        ("anchor 2^31 - 1 µs behind: still behind", (NOW - (1 << 31) + 1) as u32, NOW),
        ("anchor 2^31 µs away either way: taken as behind", (NOW + (1 << 31)) as u32, NOW),
        ("small clock: 10 at 0", 10, 0),
        ("small clock: saturates at 0", u32::MAX - 5, 0),
        ("Unix-time clock", (UNIX_NOW + 123) as u32, UNIX_NOW),
    ]
    .into_iter()
    .map(|(name, anchor_lo, est)| UnwrapCase {
        name: name.into(),
        anchor_lo,
        server_now_estimate_us: est,
        anchor_us: lockstep_protocol::timeline::unwrap_anchor(anchor_lo, est),
    })
    .collect();

    let tick_new = [
        ("playing 1x", play(754_250, NOW - 400_000, 1000), NOW, 42),
        ("playing 1.5x", play(754_250, NOW - 400_123, 1500), NOW, 42),
        ("paused", pause(754_250, NOW - 400_000), NOW, 1),
        ("Unix-time clock: anchor cut to its low 32 bits", play(5_400_000, UNIX_NOW - 333, 1000), UNIX_NOW, 1000),
        ("position beyond MAX_POSITION_MS is clamped", pause(MAX_POSITION_MS + 1, NOW), NOW, 3),
    ]
    .into_iter()
    .map(|(name, timeline, now_us, viewers)| {
        let tick = Tick::new(&timeline, now_us, viewers);
        TickNewCase {
            name: name.into(),
            timeline,
            now_us,
            viewers,
            tick,
            hex: hex(&encode_server(&ServerMsg::Tick(tick))),
        }
    })
    .collect();

    let tick_timeline = [
        ("estimate close to the anchor", Tick::new(&play(754_250, NOW - 400_000, 1000), NOW, 42), NOW + 20_000),
        ("Unix-time clock", Tick::new(&play(5_400_000, UNIX_NOW - 333, 1000), UNIX_NOW, 1000), UNIX_NOW - 3_000),
        (
            "anchor across a 2^32 boundary",
            Tick { epoch: 3, position_ms: 1, anchor_lo_us: 50, rate_milli: 1000, paused: false, viewers: 2 },
            (7u64 << 32) - 10_000,
        ),
    ]
    .into_iter()
    .map(|(name, tick, est)| TickTimelineCase {
        name: name.into(),
        tick,
        server_now_estimate_us: est,
        timeline: tick.timeline(est),
    })
    .collect();

    TimelineFile { position_us_at, whole_ms_point, unwrap_anchor, tick_new, tick_timeline }
}

// ---------------------------------------------------------------- all files

fn generate() -> BTreeMap<String, String> {
    let mut files = message_files("server", server_cases(), ServerMsg::name, encode_server, decode_server);
    files.extend(message_files("client", client_cases(), ClientMsg::name, encode_client, decode_client));
    files.insert("invalid.json".into(), to_json(&invalid_cases()));
    files.insert("frames.json".into(), to_json(&frames_file()));
    files.insert("timeline.json".into(), to_json(&timeline_file()));
    files
}

fn json_files_on_disk(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let rel = format!("{prefix}{name}");
        if entry.file_type().unwrap().is_dir() {
            json_files_on_disk(&entry.path(), &format!("{rel}/"), out);
        } else if name.ends_with(".json") {
            out.insert(rel);
        }
    }
}

fn parse<T: DeserializeOwned>(path: &str, text: &str) -> T {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---------------------------------------------------------------- checks of the files

fn check_message_file<M>(
    path: &str,
    text: &str,
    name_of: impl Fn(&M) -> &'static str,
    encode: impl Fn(&M) -> Vec<u8>,
    decode: impl Fn(&[u8]) -> Result<M, DecodeError>,
) where
    M: DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let stem = Path::new(path).file_stem().unwrap().to_str().unwrap();
    let cases: Vec<MsgCase<M>> = parse(path, text);
    assert!(!cases.is_empty(), "{path}: no cases");
    for c in cases {
        let bytes = unhex(&c.hex);
        assert_eq!(name_of(&c.value), stem, "{path} {:?}: wrong file", c.name);
        assert_eq!(decode(&bytes).as_ref(), Ok(&c.value), "{path} {:?}: hex does not decode to the value", c.name);
        assert_eq!(hex(&encode(&c.value)), c.hex, "{path} {:?}: value does not encode to the hex", c.name);
    }
}

fn check_invalid_file(path: &str, text: &str) {
    for c in parse::<Vec<InvalidCase>>(path, text) {
        let err = decode(&c.decoder, &unhex(&c.hex)).expect_err(&format!("{path} {:?}: decodes", c.name));
        assert_eq!(error_kind(&err), c.error, "{path} {:?}: {err}", c.name);
        assert_eq!(err.code().as_u16(), c.code, "{path} {:?}", c.name);
    }
}

fn check_frames_file(path: &str, text: &str) {
    let f: FramesFile = parse(path, text);
    for c in &f.frames {
        let payload = unhex(&c.payload);
        assert_eq!(hex(&framed(&payload)), c.framed, "{path} {:?}", c.name);
        let (res, buffered) = split(&unhex(&c.framed));
        assert_eq!(res, Ok(vec![payload]), "{path} {:?}", c.name);
        assert_eq!(buffered, 0, "{path} {:?}", c.name);
    }
    for c in &f.streams {
        let payloads: Vec<Vec<u8>> = c.payloads.iter().map(|p| unhex(p)).collect();
        let stream = unhex(&c.stream);
        let joined: Vec<u8> = payloads.iter().flat_map(|p| framed(p)).collect();
        assert_eq!(joined, stream, "{path} {:?}", c.name);
        // Fed one byte at a time too.
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        for b in &stream {
            d.push(std::slice::from_ref(b));
            while let Some(frame) = d.next_frame().unwrap() {
                got.push(frame);
            }
        }
        assert_eq!(got, payloads, "{path} {:?}", c.name);
        assert_eq!(split(&stream), (Ok(payloads), 0), "{path} {:?}", c.name);
    }
    for c in &f.incomplete {
        let stream = unhex(&c.stream);
        assert_eq!(split(&stream), (Ok(vec![]), stream.len()), "{path} {:?}", c.name);
    }
    for c in &f.invalid {
        let err = split(&unhex(&c.stream)).0.expect_err(&format!("{path} {:?}: splits", c.name));
        assert_eq!(error_kind(&err), c.error, "{path} {:?}: {err}", c.name);
        assert_eq!(err.code().as_u16(), c.code, "{path} {:?}", c.name);
    }
}

fn check_timeline_file(path: &str, text: &str) {
    // Every number in this file is a safe JavaScript integer, so the client
    // can read it with plain JSON.parse.
    fn safe(v: &Value) -> bool {
        match v {
            Value::Number(n) => n.as_u64().is_some_and(|n| n < 1 << 53),
            Value::Array(a) => a.iter().all(safe),
            Value::Object(o) => o.values().all(safe),
            _ => true,
        }
    }
    assert!(safe(&parse::<Value>(path, text)), "{path}: integer above 2^53");

    let f: TimelineFile = parse(path, text);
    for c in &f.position_us_at {
        assert_eq!(c.timeline.position_us_at(c.t_us), c.position_us, "{:?}", c.name);
    }
    for c in &f.whole_ms_point {
        let got = c.timeline.whole_ms_point(c.t_us);
        assert_eq!(got, (c.position_ms, c.anchor_us), "{:?}", c.name);
        assert_eq!(c.timeline.reanchored(c.t_us), c.reanchored, "{:?}", c.name);
    }
    for c in &f.unwrap_anchor {
        let got = unwrap_anchor(c.anchor_lo, c.server_now_estimate_us);
        assert_eq!(got, c.anchor_us, "{:?}", c.name);
    }
    for c in &f.tick_new {
        let tick = Tick::new(&c.timeline, c.now_us, c.viewers);
        assert_eq!(tick, c.tick, "{:?}", c.name);
        let bytes = encode_server(&ServerMsg::Tick(tick));
        assert_eq!(hex(&bytes), c.hex, "{:?}", c.name);
        assert_eq!(decode_server(&bytes), Ok(ServerMsg::Tick(tick)), "{:?}", c.name);
    }
    for c in &f.tick_timeline {
        let got = c.tick.timeline(c.server_now_estimate_us);
        assert_eq!(got, c.timeline, "{:?}", c.name);
    }
}

fn check_file(path: &str, text: &str) {
    match path {
        "invalid.json" => check_invalid_file(path, text),
        "frames.json" => check_frames_file(path, text),
        "timeline.json" => check_timeline_file(path, text),
        p if p.starts_with("server/") => check_message_file(path, text, ServerMsg::name, encode_server, decode_server),
        p if p.starts_with("client/") => check_message_file(path, text, ClientMsg::name, encode_client, decode_client),
        p => panic!("unexpected vector file {p}"),
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn golden_vectors() {
    let dir = vectors_dir();
    let generated = generate();
    let update = std::env::var_os("UPDATE_VECTORS").is_some_and(|v| v == "1");
    if update {
        for (path, text) in &generated {
            let full = dir.join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(&full, text).unwrap();
        }
    }

    let mut on_disk = BTreeSet::new();
    json_files_on_disk(&dir, "", &mut on_disk);
    let expected: BTreeSet<String> = generated.keys().cloned().collect();
    let stale: Vec<_> = on_disk.difference(&expected).collect();
    assert!(stale.is_empty(), "vector files no case makes: {stale:?}");
    let hint = "if the change is intended, run \
                `UPDATE_VECTORS=1 cargo test -p lockstep-protocol --test vectors` \
                and commit the files";
    for (path, text) in &generated {
        let full = dir.join(path);
        let Ok(disk) = std::fs::read_to_string(&full) else {
            panic!("{} is missing; {hint}", full.display());
        };
        let want: Value = serde_json::from_str(text).unwrap();
        let have: Value = parse(path, &disk);
        if let Some(diff) = first_difference(&have, &want, "") {
            panic!("{path} differs from what the code produces at {diff}; {hint}");
        }
        check_file(path, &disk);
    }
}

#[test]
fn every_message_type_has_vectors() {
    let server: BTreeSet<_> = server_cases().iter().map(|(_, m)| m.name()).collect();
    let client: BTreeSet<_> = client_cases().iter().map(|(_, m)| m.name()).collect();
    assert_eq!(server.len() as u32, SERVER_TAGS, "{server:?}");
    assert_eq!(client.len() as u32, CLIENT_TAGS, "{client:?}");
    let kinds: std::collections::HashSet<_> = client_cases()
        .iter()
        .filter_map(|(_, m)| match m {
            ClientMsg::Command(c) => Some(std::mem::discriminant(&c.action)),
            _ => None,
        })
        .collect();
    assert_eq!(kinds.len(), 9, "every Action kind");
    let reasons: BTreeSet<_> = server_cases()
        .iter()
        .filter_map(|(_, m)| match m {
            ServerMsg::TimelineChanged(c) => Some(c.reason as u8),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 6, "every ChangeReason");
}

// ---------------------------------------------------------------- sizes and SPEC.md

/// `(message, direction, tag, smallest, largest)` encoded sizes in bytes, for
/// messages that decode and respect the protocol's limits (version 1, rates
/// 250..=4000, error codes 4000..); strings may be empty. SPEC.md has the
/// same numbers.
fn size_table() -> Vec<(&'static str, &'static str, u32, usize, usize)> {
    let zero_tl = tl(0, 0, 0, MIN_RATE_MILLI, false);
    let max_tl = tl(u32::MAX, u64::MAX, u64::MAX, MAX_RATE_MILLI, true);
    let zero_limits =
        Limits { max_frame: 0, max_datagram: 0, max_msgs_per_sec: 0, tick_interval_ms: 0, report_interval_ms: 0 };
    let max_limits = Limits {
        max_frame: u32::MAX,
        max_datagram: u32::MAX,
        max_msgs_per_sec: u32::MAX,
        tick_interval_ms: u32::MAX,
        report_interval_ms: u32::MAX,
    };
    let s = |m: ServerMsg| encode_server(&m).len();
    let c = |m: ClientMsg| encode_client(&m).len();
    let tick =
        |v: u32, rate_milli| Tick { epoch: v, position_ms: v, anchor_lo_us: v, rate_milli, paused: true, viewers: v };
    let welcome = |member_id, timeline, server_time_us, viewers, limits| {
        ServerMsg::Welcome(Welcome {
            member_id,
            role: Role::CoHost,
            timeline,
            server_time_us,
            viewers,
            policy: ControlPolicy::Everyone,
            limits,
        })
    };
    let changed = |timeline, at, by| {
        ServerMsg::TimelineChanged(TimelineChanged {
            timeline,
            effective_at_us: at,
            by,
            reason: ChangeReason::BufferingWait,
        })
    };
    let pong = |v| ServerMsg::Pong(Pong { client_time: v, server_recv_us: v, server_send_us: v });
    let error = |message: String, request_id| ServerMsg::Error(ErrorMsg { code: 4000, message, request_id });
    let joined =
        |member_id, name: String| ServerMsg::MemberJoined(MemberJoined { member_id, role: Role::Viewer, name });
    let hello = |event_id: String, device_id: String, token, caps| {
        ClientMsg::Hello(Hello { version: PROTOCOL_VERSION, event_id, device_id, token, caps })
    };
    let command = |request_id, action| ClientMsg::Command(Command { request_id, action });
    let report = |v: u32, position_us, rate_milli| {
        ClientMsg::Report(Report { epoch: v, position_us, rate_milli, buffering: true })
    };
    let max_str = |n| "x".repeat(n);
    let live_state = |v: u64, latency_ms| {
        ServerMsg::LiveState(LiveState {
            clock: ClockKind::Live,
            origin_ms: v,
            latency_ms,
            auto_latency: true,
            at_live: true,
        })
    };
    let live_report = |live_edge_ms, buffer_ms| ClientMsg::LiveReport(LiveReport { live_edge_ms, buffer_ms });
    vec![
        (
            "Welcome",
            "S→C",
            0,
            s(welcome(0, zero_tl, 0, 0, zero_limits)),
            s(welcome(u32::MAX, max_tl, u64::MAX, u32::MAX, max_limits)),
        ),
        (
            "Tick",
            "S→C",
            1,
            s(ServerMsg::Tick(tick(0, MIN_RATE_MILLI))),
            s(ServerMsg::Tick(tick(u32::MAX, MAX_RATE_MILLI))),
        ),
        ("TimelineChanged", "S→C", 2, s(changed(zero_tl, 0, 0)), s(changed(max_tl, u64::MAX, u32::MAX))),
        (
            "ViewerCount",
            "S→C",
            3,
            s(ServerMsg::ViewerCount(ViewerCount { count: 0 })),
            s(ServerMsg::ViewerCount(ViewerCount { count: u32::MAX })),
        ),
        ("Pong", "S→C", 4, s(pong(0)), s(pong(u64::MAX))),
        ("Error", "S→C", 5, s(error(String::new(), 0)), s(error(max_str(MAX_ERROR_MESSAGE), u32::MAX))),
        ("MemberJoined", "S→C", 6, s(joined(0, String::new())), s(joined(u32::MAX, max_str(MAX_NAME)))),
        (
            "MemberLeft",
            "S→C",
            7,
            s(ServerMsg::MemberLeft(MemberLeft { member_id: 0 })),
            s(ServerMsg::MemberLeft(MemberLeft { member_id: u32::MAX })),
        ),
        (
            "RoleChanged",
            "S→C",
            8,
            s(ServerMsg::RoleChanged(RoleChanged { member_id: 0, role: Role::Host })),
            s(ServerMsg::RoleChanged(RoleChanged { member_id: u32::MAX, role: Role::Host })),
        ),
        (
            "PolicyChanged",
            "S→C",
            9,
            s(ServerMsg::PolicyChanged(PolicyChanged { policy: ControlPolicy::HostOnly, by: 0 })),
            s(ServerMsg::PolicyChanged(PolicyChanged { policy: ControlPolicy::HostOnly, by: u32::MAX })),
        ),
        (
            "Ack",
            "S→C",
            10,
            s(ServerMsg::Ack(Ack { request_id: 0, outcome: AckOutcome::Applied, epoch: 0 })),
            s(ServerMsg::Ack(Ack { request_id: u32::MAX, outcome: AckOutcome::Coalesced, epoch: u32::MAX })),
        ),
        ("LiveState", "S→C", 11, s(live_state(0, 0)), s(live_state(u64::MAX, u32::MAX))),
        (
            "Reactions",
            "S→C",
            12,
            s(ServerMsg::Reactions(Reactions { counts: vec![] })),
            s(ServerMsg::Reactions(Reactions {
                counts: (0..MAX_REACTION_KINDS)
                    .map(|_| ReactionCount { emoji: "x".repeat(MAX_EMOJI), count: u32::MAX })
                    .collect(),
            })),
        ),
        (
            "ChatMessage",
            "S→C",
            13,
            s(ServerMsg::ChatMessage(ChatMessage {
                id: 0,
                at_ms: 0,
                member_id: 0,
                name: String::new(),
                role: Role::Host,
                text: String::new(),
                request_id: 0,
                history: false,
            })),
            s(ServerMsg::ChatMessage(ChatMessage {
                id: u64::MAX,
                at_ms: u64::MAX,
                member_id: u32::MAX,
                name: max_str(MAX_NAME),
                role: Role::Viewer,
                text: max_str(MAX_CHAT_TEXT),
                request_id: u32::MAX,
                history: true,
            })),
        ),
        (
            "MediaChanged",
            "S→C",
            16,
            s(ServerMsg::MediaChanged(MediaChanged { item: None, index: None, epoch: 0, by: 0 })),
            s(ServerMsg::MediaChanged(MediaChanged {
                item: Some(max_item()),
                index: Some(u32::MAX),
                epoch: u32::MAX,
                by: u32::MAX,
            })),
        ),
        (
            "QueueChanged",
            "S→C",
            17,
            s(ServerMsg::QueueChanged(QueueChanged { items: vec![], current: None, auto_advance: false, by: 0 })),
            // A server keeps a playlist whose message fits a frame: 50 items of
            // about 150 bytes.
            s(ServerMsg::QueueChanged(QueueChanged {
                items: (0..MAX_QUEUE)
                    .map(|_| MediaItem {
                        media_id: "x".repeat(16),
                        url: Some("x".repeat(96)),
                        title: Some("x".repeat(32)),
                        duration_ms: Some(u64::MAX),
                    })
                    .collect(),
                current: Some(u32::MAX),
                auto_advance: true,
                by: u32::MAX,
            })),
        ),
        (
            "ChatDeleted",
            "S→C",
            14,
            s(ServerMsg::ChatDeleted(ChatDeleted { id: 0, by: 0 })),
            s(ServerMsg::ChatDeleted(ChatDeleted { id: u64::MAX, by: u32::MAX })),
        ),
        (
            "ChatMuted",
            "S→C",
            15,
            s(ServerMsg::ChatMuted(ChatMuted { muted: false, by: 0 })),
            s(ServerMsg::ChatMuted(ChatMuted { muted: true, by: u32::MAX })),
        ),
        (
            "Hello",
            "C→S",
            0,
            c(hello(String::new(), String::new(), None, 0)),
            c(hello(max_str(MAX_EVENT_ID), max_str(MAX_DEVICE_ID), Some(max_str(MAX_TOKEN)), u32::MAX)),
        ),
        (
            "Ping",
            "C→S",
            1,
            c(ClientMsg::Ping(Ping { client_time: 0 })),
            c(ClientMsg::Ping(Ping { client_time: u64::MAX })),
        ),
        (
            "Command",
            "C→S",
            2,
            c(command(0, Action::GoLive)),
            c(command(u32::MAX, Action::Play { position_ms: Some(u64::MAX) })),
        ),
        ("Report", "C→S", 3, c(report(0, 0, 0)), c(report(u32::MAX, u64::MAX, MAX_RATE_MILLI))),
        ("LiveReport", "C→S", 4, c(live_report(0, 0)), c(live_report(u64::MAX, u32::MAX))),
        ("Nack", "C→S", 5, c(ClientMsg::Nack(Nack { epoch: 0 })), c(ClientMsg::Nack(Nack { epoch: u32::MAX }))),
        (
            "SyncReport",
            "C→S",
            6,
            c(ClientMsg::SyncReport(SyncReport { epoch: 0, drift_us: 0 })),
            c(ClientMsg::SyncReport(SyncReport { epoch: u32::MAX, drift_us: i32::MIN })),
        ),
        (
            "Suspend",
            "C→S",
            7,
            c(ClientMsg::Suspend(Suspend { reason: String::new() })),
            c(ClientMsg::Suspend(Suspend { reason: "x".repeat(MAX_REASON) })),
        ),
        ("Resume", "C→S", 8, c(ClientMsg::Resume), c(ClientMsg::Resume)),
        (
            "React",
            "C→S",
            9,
            c(ClientMsg::React(React { emoji: String::new() })),
            c(ClientMsg::React(React { emoji: "x".repeat(MAX_EMOJI) })),
        ),
        (
            "Chat",
            "C→S",
            10,
            c(ClientMsg::Chat(Chat { request_id: 0, text: String::new() })),
            c(ClientMsg::Chat(Chat { request_id: u32::MAX, text: max_str(MAX_CHAT_TEXT) })),
        ),
        (
            "Media",
            "C→S",
            11,
            c(ClientMsg::Media(MediaCommand { request_id: 0, op: MediaOp::Next })),
            c(ClientMsg::Media(MediaCommand { request_id: u32::MAX, op: MediaOp::Set { item: max_item() } })),
        ),
    ]
}

/// The largest media item.
fn max_item() -> MediaItem {
    MediaItem {
        media_id: "x".repeat(MAX_MEDIA_ID),
        url: Some("x".repeat(MAX_MEDIA_URL)),
        title: Some("x".repeat(MAX_MEDIA_TITLE)),
        duration_ms: Some(u64::MAX),
    }
}

#[test]
fn encoded_sizes_match_the_spec() {
    let table = size_table();
    for (name, _, _, min, max) in &table {
        println!("{name:16} {min:5} {max:5}");
    }
    // Every datagram message fits a datagram with room to spare.
    for (name, _, _, _, max) in &table {
        if ["Tick", "Pong", "TimelineChanged", "Ping", "Report", "LiveReport", "SyncReport"].contains(name) {
            assert!(*max <= 64, "{name}: {max}");
        }
    }
    let spec =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("SPEC.md")).expect("protocol/SPEC.md");
    for (name, dir, tag, min, max) in table {
        let head = format!("| `{name}` | {dir} | {tag} | {min} |");
        let tail = format!("| {max} |");
        assert!(
            spec.lines().any(|l| l.starts_with(&head) && l.trim_end().ends_with(&tail)),
            "SPEC.md has no size row `{head} … {tail}`"
        );
    }
}

#[test]
fn error_codes_match_the_spec() {
    let spec =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("SPEC.md")).expect("protocol/SPEC.md");
    for &code in ErrorCode::ALL {
        let head = format!("| {} | `{}` |", code.as_u16(), code.as_str());
        let tail = if code.closes() { "| yes |" } else { "| no |" };
        assert!(
            spec.lines().any(|l| l.starts_with(&head) && l.trim_end().ends_with(tail)),
            "SPEC.md has no error row `{head} … {tail}`"
        );
    }
}
