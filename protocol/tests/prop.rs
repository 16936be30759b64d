//! Property tests of the codec, the framer and the timeline arithmetic.
//!
//! Case counts are kept moderate so that the whole crate tests in seconds;
//! `PROPTEST_CASES=100000 cargo test -p lockstep-protocol --release --test prop`
//! runs them harder.

use lockstep_protocol::codec::{CLIENT_TAGS, SERVER_TAGS};
use lockstep_protocol::limits::{
    MAX_CHAT_TEXT, MAX_DEVICE_ID, MAX_EMOJI, MAX_ERROR_MESSAGE, MAX_EVENT_ID, MAX_FRAME, MAX_NAME, MAX_POSITION_MS,
    MAX_RATE_MILLI, MAX_REACTION_KINDS, MAX_REASON, MAX_TOKEN, MIN_RATE_MILLI,
};
use lockstep_protocol::limits::{MAX_MEDIA_ID, MAX_MEDIA_TITLE, MAX_MEDIA_URL};
use lockstep_protocol::timeline::unwrap_anchor;
use lockstep_protocol::*;
use proptest::collection::vec;
use proptest::prelude::*;

// ---------------------------------------------------------------- strategies

/// Integers spread over every varint width, not only the widest.
fn u64v() -> impl Strategy<Value = u64> {
    prop_oneof![0..=250u64, 251..=0xffffu64, 0x1_0000..=0xffff_ffffu64, any::<u64>(),]
}

fn u32v() -> impl Strategy<Value = u32> {
    prop_oneof![0..=250u32, 251..=0xffffu32, any::<u32>()]
}

fn u16v() -> impl Strategy<Value = u16> {
    prop_oneof![0..=250u16, any::<u16>()]
}

/// A string of at most `max` bytes of UTF-8, any characters.
fn text(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..=max).prop_map(move |chars| {
        let mut s = String::new();
        for c in chars {
            if s.len() + c.len_utf8() > max {
                break;
            }
            s.push(c);
        }
        s
    })
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Host), Just(Role::CoHost), Just(Role::Viewer)]
}

fn policy() -> impl Strategy<Value = ControlPolicy> {
    prop_oneof![Just(ControlPolicy::HostOnly), Just(ControlPolicy::Everyone)]
}

fn reason() -> impl Strategy<Value = ChangeReason> {
    prop_oneof![
        Just(ChangeReason::Seek),
        Just(ChangeReason::Pause),
        Just(ChangeReason::Play),
        Just(ChangeReason::Rate),
        Just(ChangeReason::BufferingWait),
        Just(ChangeReason::Resume),
    ]
}

fn timeline() -> impl Strategy<Value = Timeline> {
    (u32v(), u64v(), u64v(), u16v(), any::<bool>()).prop_map(|(epoch, position_ms, anchor_us, rate_milli, paused)| {
        Timeline { epoch, position_ms, anchor_us, rate_milli, paused }
    })
}

fn limits_msg() -> impl Strategy<Value = Limits> {
    (u32v(), u32v(), u32v(), u32v(), u32v()).prop_map(|(a, b, c, d, e)| Limits {
        max_frame: a,
        max_datagram: b,
        max_msgs_per_sec: c,
        tick_interval_ms: d,
        report_interval_ms: e,
    })
}

fn tick() -> impl Strategy<Value = Tick> {
    // The packed varint holds rates up to 0x7fff.
    (u32v(), u32v(), u32v(), 0..=0x7fffu16, any::<bool>(), u32v()).prop_map(
        |(epoch, position_ms, anchor_lo_us, rate_milli, paused, viewers)| Tick {
            epoch,
            position_ms,
            anchor_lo_us,
            rate_milli,
            paused,
            viewers,
        },
    )
}

fn server_msg() -> impl Strategy<Value = ServerMsg> {
    prop_oneof![
        (u32v(), role(), timeline(), u64v(), u32v(), policy(), limits_msg()).prop_map(
            |(member_id, role, timeline, server_time_us, viewers, policy, limits)| {
                ServerMsg::Welcome(Welcome { member_id, role, timeline, server_time_us, viewers, policy, limits })
            }
        ),
        tick().prop_map(ServerMsg::Tick),
        (timeline(), u64v(), u32v(), reason()).prop_map(|(timeline, effective_at_us, by, reason)| {
            ServerMsg::TimelineChanged(TimelineChanged { timeline, effective_at_us, by, reason })
        }),
        u32v().prop_map(|count| ServerMsg::ViewerCount(ViewerCount { count })),
        (u64v(), u64v(), u64v()).prop_map(|(client_time, server_recv_us, server_send_us)| {
            ServerMsg::Pong(Pong { client_time, server_recv_us, server_send_us })
        }),
        (u16v(), text(MAX_ERROR_MESSAGE), u32v())
            .prop_map(|(code, message, request_id)| { ServerMsg::Error(ErrorMsg { code, message, request_id }) }),
        (u32v(), role(), text(MAX_NAME))
            .prop_map(|(member_id, role, name)| { ServerMsg::MemberJoined(MemberJoined { member_id, role, name }) }),
        u32v().prop_map(|member_id| ServerMsg::MemberLeft(MemberLeft { member_id })),
        (u32v(), role()).prop_map(|(member_id, role)| ServerMsg::RoleChanged(RoleChanged { member_id, role })),
        (u32v(), ack_outcome(), u32v()).prop_map(|(request_id, outcome, epoch)| ServerMsg::Ack(Ack {
            request_id,
            outcome,
            epoch
        })),
        (any::<bool>(), u64v(), u32v(), any::<bool>(), any::<bool>()).prop_map(
            |(live, origin_ms, latency_ms, auto_latency, at_live)| {
                let clock = if live { ClockKind::Live } else { ClockKind::Media };
                ServerMsg::LiveState(LiveState { clock, origin_ms, latency_ms, auto_latency, at_live })
            }
        ),
        vec((text(MAX_EMOJI), u32v()), 0..=MAX_REACTION_KINDS).prop_map(|counts| {
            ServerMsg::Reactions(Reactions {
                counts: counts.into_iter().map(|(emoji, count)| ReactionCount { emoji, count }).collect(),
            })
        }),
        (u64v(), u64v(), u32v(), text(MAX_NAME), role(), text(MAX_CHAT_TEXT), u32v(), any::<bool>()).prop_map(
            |(id, at_ms, member_id, name, role, text, request_id, history)| {
                ServerMsg::ChatMessage(ChatMessage { id, at_ms, member_id, name, role, text, request_id, history })
            }
        ),
        (u64v(), u32v()).prop_map(|(id, by)| ServerMsg::ChatDeleted(ChatDeleted { id, by })),
        (any::<bool>(), u32v()).prop_map(|(muted, by)| ServerMsg::ChatMuted(ChatMuted { muted, by })),
        (proptest::option::of(item()), proptest::option::of(u32v()), u32v(), u32v())
            .prop_map(|(item, index, epoch, by)| ServerMsg::MediaChanged(MediaChanged { item, index, epoch, by })),
        (vec(item(), 0..=3), proptest::option::of(u32v()), any::<bool>(), u32v()).prop_map(
            |(items, current, auto_advance, by)| ServerMsg::QueueChanged(QueueChanged {
                items,
                current,
                auto_advance,
                by
            })
        ),
    ]
}

fn item() -> impl Strategy<Value = MediaItem> {
    (
        text(MAX_MEDIA_ID),
        proptest::option::of(text(MAX_MEDIA_URL)),
        proptest::option::of(text(MAX_MEDIA_TITLE)),
        proptest::option::of(u64v()),
    )
        .prop_map(|(media_id, url, title, duration_ms)| MediaItem { media_id, url, title, duration_ms })
}

fn media_op() -> impl Strategy<Value = MediaOp> {
    prop_oneof![
        item().prop_map(|item| MediaOp::Set { item }),
        item().prop_map(|item| MediaOp::Add { item }),
        text(MAX_MEDIA_ID).prop_map(|media_id| MediaOp::Remove { media_id }),
        (text(MAX_MEDIA_ID), u32v()).prop_map(|(media_id, index)| MediaOp::Move { media_id, index }),
        Just(MediaOp::Next),
        Just(MediaOp::Previous),
        any::<bool>().prop_map(|on| MediaOp::AutoAdvance { on }),
    ]
}

fn ack_outcome() -> impl Strategy<Value = AckOutcome> {
    prop_oneof![Just(AckOutcome::Applied), Just(AckOutcome::Unchanged), Just(AckOutcome::Coalesced)]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        proptest::option::of(u64v()).prop_map(|position_ms| Action::Play { position_ms }),
        proptest::option::of(u64v()).prop_map(|position_ms| Action::Pause { position_ms }),
        u64v().prop_map(|position_ms| Action::Seek { position_ms }),
        u16v().prop_map(|rate_milli| Action::SetRate { rate_milli }),
        Just(Action::GoLive),
        u64v().prop_map(|id| Action::DeleteChat { id }),
        (u32v(), any::<bool>()).prop_map(|(member_id, muted)| Action::MuteChat { member_id, muted }),
    ]
}

fn token() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        8 => text(400),
        1 => text(MAX_TOKEN),
    ])
}

fn client_msg() -> impl Strategy<Value = ClientMsg> {
    prop_oneof![
        (u16v(), text(MAX_EVENT_ID), text(MAX_DEVICE_ID), token(), u32v()).prop_map(
            |(version, event_id, device_id, token, caps)| {
                ClientMsg::Hello(Hello { version, event_id, device_id, token, caps })
            }
        ),
        u64v().prop_map(|client_time| ClientMsg::Ping(Ping { client_time })),
        (u32v(), action()).prop_map(|(request_id, action)| ClientMsg::Command(Command { request_id, action })),
        (u32v(), u64v(), u16v(), any::<bool>()).prop_map(|(epoch, position_us, rate_milli, buffering)| {
            ClientMsg::Report(Report { epoch, position_us, rate_milli, buffering })
        }),
        (u64v(), u32v())
            .prop_map(|(live_edge_ms, buffer_ms)| ClientMsg::LiveReport(LiveReport { live_edge_ms, buffer_ms })),
        u32v().prop_map(|epoch| ClientMsg::Nack(Nack { epoch })),
        (u32v(), any::<i32>()).prop_map(|(epoch, drift_us)| ClientMsg::SyncReport(SyncReport { epoch, drift_us })),
        text(MAX_REASON).prop_map(|reason| ClientMsg::Suspend(Suspend { reason })),
        Just(ClientMsg::Resume),
        text(MAX_EMOJI).prop_map(|emoji| ClientMsg::React(React { emoji })),
        (u32v(), text(MAX_CHAT_TEXT)).prop_map(|(request_id, text)| ClientMsg::Chat(Chat { request_id, text })),
        (u32v(), media_op()).prop_map(|(request_id, op)| ClientMsg::Media(MediaCommand { request_id, op })),
    ]
}

/// One edit of a byte string: overwrite, insert, remove or cut.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    vec(
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
            any::<usize>().prop_map(Edit::Remove),
            any::<usize>().prop_map(Edit::Truncate),
        ],
        1..4,
    )
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = bytes.len();
        match *e {
            Edit::Set(i, b) if n > 0 => bytes[i % n] = b,
            Edit::Insert(i, b) => bytes.insert(i % (n + 1), b),
            Edit::Remove(i) if n > 0 => {
                bytes.remove(i % n);
            }
            Edit::Truncate(i) => bytes.truncate(i % (n + 1)),
            _ => {}
        }
    }
    bytes
}

/// `v` written as a varint of the given width (0: one byte, 1: 251 + u16,
/// 2: 252 + u32, 3: 253 + u64), cut to fit: often not the shortest form.
fn varint_of_width(v: u64, width: u8) -> Vec<u8> {
    match width {
        0 => vec![(v % 251) as u8],
        1 => [&[251u8][..], &(v as u16).to_le_bytes()].concat(),
        2 => [&[252u8][..], &(v as u32).to_le_bytes()].concat(),
        _ => [&[253u8][..], &v.to_le_bytes()].concat(),
    }
}

/// Byte strings made of varints of every width (shortest or not), small
/// strings and raw bytes, after a tag: they get far past the tag and reach
/// every field, where random bytes rarely do.
fn varint_soup() -> impl Strategy<Value = Vec<u8>> {
    let tag = (0..12u64, prop_oneof![6 => Just(0u8), 1 => 1..4u8]).prop_map(|(v, w)| varint_of_width(v, w));
    let token = prop_oneof![
        4 => (0..300u64, 0..4u8).prop_map(|(v, w)| varint_of_width(v, w)),
        2 => (any::<u64>(), 0..4u8).prop_map(|(v, w)| varint_of_width(v, w)),
        1 => vec(any::<u8>(), 0..6).prop_map(|s| [vec![s.len() as u8], s].concat()),
        1 => vec(any::<u8>(), 0..4),
    ];
    (tag, vec(token, 0..12)).prop_map(|(tag, tokens)| [tag, tokens.concat()].concat())
}

/// Streams of frames whose length prefixes have every varint width and
/// marker, shortest form or not.
fn frame_soup() -> impl Strategy<Value = Vec<u8>> {
    let frame = (0..300u64, prop_oneof![4 => Just(0u8), 1 => 1..6u8]).prop_map(|(len, w)| {
        let prefix = match w {
            4 => vec![254],
            5 => vec![255],
            w => varint_of_width(len, w),
        };
        [prefix, vec![0xab; len as usize]].concat()
    });
    vec(frame, 0..6).prop_map(|frames| frames.concat())
}

/// Decodes with both decoders; every `Ok` must re-encode to `bytes`.
fn check_total(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(m) = decode_client(bytes) {
        prop_assert_eq!(encode_client(&m), bytes, "client {:?}", m);
    }
    if let Ok(m) = decode_server(bytes) {
        prop_assert_eq!(encode_server(&m), bytes, "server {:?}", m);
    }
    Ok(())
}

fn framed(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in payloads {
        write_frame(p, &mut out);
    }
    out
}

// ---------------------------------------------------------------- (a) total decoding

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decoders_are_total_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..10_000)) {
        check_total(&bytes)?;
    }

    #[test]
    fn decoders_are_total_on_short_bytes_with_a_known_tag(
        tag in 0..SERVER_TAGS.max(CLIENT_TAGS) as u8,
        rest in vec(any::<u8>(), 0..48),
    ) {
        let bytes = [&[tag][..], &rest].concat();
        check_total(&bytes)?;
    }

    #[test]
    fn decoders_are_total_on_varint_soup(bytes in varint_soup()) {
        check_total(&bytes)?;
    }

    #[test]
    fn decoders_are_total_on_edited_server_messages(m in server_msg(), e in edits()) {
        check_total(&apply(encode_server(&m), &e))?;
    }

    #[test]
    fn decoders_are_total_on_edited_client_messages(m in client_msg(), e in edits()) {
        check_total(&apply(encode_client(&m), &e))?;
    }
}

// ---------------------------------------------------------------- (b) round trips

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn server_messages_round_trip(m in server_msg(), prefix in vec(any::<u8>(), 0..4)) {
        let bytes = encode_server(&m);
        prop_assert!(bytes.len() <= MAX_FRAME);
        prop_assert_eq!(decode_server(&bytes), Ok(m.clone()));
        let mut out = prefix.clone();
        encode_server_into(&m, &mut out);
        prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
        prop_assert_eq!(&out[prefix.len()..], &bytes[..]);
        // The JSON form of the vectors round-trips too.
        let json = serde_json::to_string(&m).unwrap();
        prop_assert_eq!(serde_json::from_str::<ServerMsg>(&json).unwrap(), m);
    }

    #[test]
    fn client_messages_round_trip(m in client_msg()) {
        let bytes = encode_client(&m);
        prop_assert!(bytes.len() <= MAX_FRAME);
        prop_assert_eq!(decode_client(&bytes), Ok(m.clone()));
        let json = serde_json::to_string(&m).unwrap();
        prop_assert_eq!(serde_json::from_str::<ClientMsg>(&json).unwrap(), m);
    }

    #[test]
    fn ticks_are_at_most_24_bytes(t in tick()) {
        let rate_milli = t.rate_milli.min(MAX_RATE_MILLI);
        let bytes = encode_server(&ServerMsg::Tick(Tick { rate_milli, ..t }));
        prop_assert!(bytes.len() <= 24, "{} bytes", bytes.len());
    }
}

// ---------------------------------------------------------------- (c) framing

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn frame_decoder_returns_exactly_the_frames_for_any_chunking(
        payloads in vec(
            prop_oneof![
                6 => vec(any::<u8>(), 0..300),
                1 => vec(any::<u8>(), 0..=MAX_FRAME),
            ],
            0..8,
        ),
        chunks in vec(1usize..700, 1..16),
        drain_every in 1usize..4,
    ) {
        let stream = framed(&payloads);
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        let mut rest = &stream[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = chunks[i % chunks.len()].min(rest.len());
            d.push(&rest[..n]);
            rest = &rest[n..];
            i += 1;
            // Sometimes push several chunks before taking frames.
            if i % drain_every == 0 || rest.is_empty() {
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
        }
        prop_assert_eq!(d.next_frame(), Ok(None));
        prop_assert_eq!(d.buffered(), 0);
        prop_assert_eq!(got, payloads);
    }

    #[test]
    fn frame_decoder_is_total_and_frames_reframe_to_the_input(
        bytes in prop_oneof![vec(any::<u8>(), 0..10_000), frame_soup()],
        chunk in 1usize..2000,
    ) {
        let mut d = FrameDecoder::new();
        let mut frames = Vec::new();
        let mut failed = false;
        'feed: for c in bytes.chunks(chunk) {
            d.push(c);
            loop {
                match d.next_frame() {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => break,
                    Err(_) => {
                        failed = true;
                        break 'feed;
                    }
                }
            }
        }
        let consumed = framed(&frames);
        prop_assert!(consumed.len() <= bytes.len());
        prop_assert_eq!(&bytes[..consumed.len()], &consumed[..]);
        if !failed {
            prop_assert_eq!(d.buffered(), bytes.len() - consumed.len());
        }
    }
}

// ---------------------------------------------------------------- (d) timeline

/// A timeline a server could hold: position within the protocol's limit,
/// any rate the arithmetic accepts, a clock that runs for millennia.
fn real_timeline() -> impl Strategy<Value = Timeline> {
    (
        any::<u32>(),
        prop_oneof![0..=100_000u64, 0..=MAX_POSITION_MS],
        0..(1u64 << 60),
        prop_oneof![
            4 => MIN_RATE_MILLI..=MAX_RATE_MILLI,
            1 => 1..=u16::MAX,
        ],
        any::<bool>(),
    )
        .prop_map(|(epoch, position_ms, anchor_us, rate_milli, paused)| Timeline {
            epoch,
            position_ms,
            anchor_us,
            rate_milli,
            paused,
        })
}

/// A time around the timeline's anchor, up to days either way.
fn near(anchor: u64, delta: i64) -> u64 {
    anchor.saturating_add_signed(delta)
}

fn delta() -> impl Strategy<Value = i64> {
    prop_oneof![-2_000..=2_000i64, -10_000_000_000i64..=10_000_000_000, -400_000_000_000i64..=400_000_000_000,]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn reanchoring_moves_neither_position_nor_anchor_far(
        t in real_timeline(),
        d in delta(),
        later in vec(0..5_000_000u64, 1..6),
    ) {
        let now = near(t.anchor_us, d);
        let r = t.reanchored(now);
        prop_assert_eq!((r.epoch, r.rate_milli, r.paused), (t.epoch, t.rate_milli, t.paused));
        // The anchor is not before now - 1 µs (it is at or after now).
        prop_assert!(r.anchor_us + 1 >= now, "anchor {} before {}", r.anchor_us, now);
        // Its position is a whole ms at most 1 ms of media ahead of the
        // timeline's own position now.
        let old_now = i128::from(t.position_us_at(now));
        let new_pos = i128::from(r.position_ms) * 1000;
        prop_assert!((0..=1000).contains(&(new_pos - old_now)), "{new_pos} vs {old_now}");
        // Both timelines agree at every time (within 1 ms, and in fact within
        // a few µs: the anchor is rounded to the µs and positions truncated).
        let tight = 2 + i128::from(t.rate_milli / 2000);
        for s in std::iter::once(now).chain(later.iter().map(|l| now + l)) {
            let diff = (i128::from(r.position_us_at(s)) - i128::from(t.position_us_at(s))).abs();
            prop_assert!(diff <= 1000, "at {s}: {diff} µs");
            prop_assert!(diff <= tight, "at {s}: {diff} µs > {tight}");
        }
        // Re-anchoring is idempotent on its own anchor.
        prop_assert_eq!(r.reanchored(r.anchor_us), r);
    }

    #[test]
    fn ticks_describe_the_reanchored_timeline(
        t in real_timeline(),
        d in delta(),
        viewers in any::<u32>(),
        off in -((1i64 << 31) - 1)..(1i64 << 31),
    ) {
        // The packed varint holds rates up to 0x7fff (servers stay <= 4000).
        let t = Timeline { rate_milli: t.rate_milli.min(0x7fff), ..t };
        let now = near(t.anchor_us, d);
        let tick = Tick::new(&t, now, viewers);
        prop_assert_eq!(
            decode_server(&encode_server(&ServerMsg::Tick(tick))),
            Ok(ServerMsg::Tick(tick))
        );
        let r = t.reanchored(now);
        let want = Timeline { position_ms: r.position_ms.min(MAX_POSITION_MS), ..r };
        // Unwrapping works while the estimate is within ±2^31 µs of the anchor.
        let estimate = r.anchor_us.saturating_add_signed(off);
        prop_assert_eq!(tick.timeline(estimate), want);
    }

    #[test]
    fn unwrap_recovers_anchors_within_2_pow_31(
        estimate in (1u64 << 31)..(u64::MAX - (1 << 31)),
        off in -((1i64 << 31) - 1)..(1i64 << 31),
    ) {
        let anchor = estimate.saturating_add_signed(off);
        prop_assert_eq!(unwrap_anchor(anchor as u32, estimate), anchor);
    }
}
