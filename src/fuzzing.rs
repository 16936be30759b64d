//! Entry points of the fuzz targets (`tests/fuzz/`, cargo-fuzz on nightly)
//! and of their corpus replay on stable (`tests/it/fuzz_corpus.rs`): each
//! takes arbitrary bytes, must never panic, and checks its own invariants
//! with assertions. Not an API.

use lockstep_protocol::limits::{MAX_POSITION_MS, MAX_RATE_MILLI, MIN_RATE_MILLI};
use lockstep_protocol::{
    Action, ClientMsg, ControlPolicy, ErrorCode, MediaItem, MediaOp, Report, Role, ServerMsg, SyncReport, decode_client,
};

use crate::room::{Audience, BufferingPolicy, ChatOp, CommitResult, JoinInfo, MemberId, Room, RoomConfig};

/// The legacy JSON dialect's parser: any text is a `playbackSync` with a
/// position in range, or refused with one of the dialect's three codes.
pub fn json_dialect(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match crate::transport::json::parse(text) {
        Ok(crate::transport::json::JsonIn::PlaybackSync { position_ms, extra }) => {
            assert!(position_ms <= MAX_POSITION_MS);
            assert!(!extra.contains_key("type") && !extra.contains_key("position"), "{extra:?}");
        }
        Err(e) => assert!(
            matches!(e.code, ErrorCode::InvalidJson | ErrorCode::UnexpectedMessage | ErrorCode::InvalidArgument),
            "{e:?}"
        ),
    }
}

/// `Hello` handling: whatever decodes is checked without panicking, a
/// `Hello` that passes names the room and a device, and its token (or the
/// bytes themselves, as a token) is refused by the verifier unless signed.
pub fn hello(data: &[u8]) {
    if let Ok(ClientMsg::Hello(h)) = decode_client(data)
        && crate::session::check_hello_for_fuzzing(&h, "ev").is_ok()
    {
        assert!(h.event_id == "ev" && !h.device_id.is_empty());
        if let Some(t) = &h.token {
            assert!(verifier().verify(t).is_err(), "an unsigned token passed");
        }
    }
    if let Ok(t) = std::str::from_utf8(data) {
        assert!(verifier().verify(t).is_err(), "arbitrary bytes passed as a token");
    }
}

fn verifier() -> &'static crate::auth::Authenticator {
    static A: std::sync::OnceLock<crate::auth::Authenticator> = std::sync::OnceLock::new();
    A.get_or_init(|| {
        let key = crate::auth::KeySource::Secret("a fuzzing secret nobody signs with, 32+ bytes".into());
        crate::auth::Authenticator::new(key, None, None, false).expect("an HS256 verifier")
    })
}

/// REST JSON bodies: every body the API parses is parsed without panicking
/// (and the clock request's checks never panic either).
pub fn rest_bodies(data: &[u8]) {
    crate::http::api::parse_bodies_for_fuzzing(data);
}

/// Reads the fuzzer's bytes as small numbers.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([self.u8()?, self.u8()?, self.u8()?, self.u8()?]))
    }
}

const ITEMS: [&str; 4] = ["a", "b", "c", "d"];
const TEXTS: [&str; 5] = ["hi", "", "line\nline", "\u{202e}x", "x"];
const EMOJI: [&str; 4] = ["👏", "ok", "🔥", "🇫🇷"];
const REASONS: [&str; 5] = ["buffering", "seeking", "notFollowing", "custom:x", "interstitial"];

/// The room core driven by arbitrary joins, leaves, commands, reports,
/// suspensions, reactions, chat, media commands, time steps and authority
/// answers (committed, failed, lost to another change), with simulated
/// time. After every step: the changes members were told of have growing
/// epochs, at most one member hosts, the count is the members', the
/// timeline is in range, and every message a member gets encodes.
pub fn room_ops(data: &[u8]) {
    let mut b = Bytes(data);
    let Some(setup) = b.u8() else { return };
    let cfg = RoomConfig {
        policy: if setup & 1 == 0 { ControlPolicy::HostOnly } else { ControlPolicy::Everyone },
        buffering: if setup & 2 == 0 { BufferingPolicy::Wait } else { BufferingPolicy::Ignore },
        show_members: setup & 4 != 0,
        changes_per_sec: if setup & 8 == 0 { 10 } else { 0 },
        chat_room_per_sec: u32::from(setup >> 4),
        media_start_us: 200_000,
        ..RoomConfig::default()
    };
    let mut now: u64 = 1_700_000_000_000_000;
    let mut room = Room::new(cfg, now);
    let mut members: Vec<MemberId> = Vec::new();
    // The newest epoch each member was told of (its Welcome's, then changes').
    let mut told: std::collections::HashMap<MemberId, u32> = std::collections::HashMap::new();
    let mut steps = 0u32;
    while let Some(op) = b.u8() {
        let pick = |b: &mut Bytes, members: &[MemberId]| -> Option<MemberId> {
            let i = usize::from(b.u8()?);
            members.get(i % members.len().max(1)).copied()
        };
        match op % 12 {
            0 if members.len() < 64 => {
                let flags = b.u8().unwrap_or(0);
                let info = JoinInfo {
                    device_id: format!("d{}", flags % 8),
                    name: format!("n{flags}"),
                    user: format!("u{}", flags % 4),
                    wants_presence: flags & 1 != 0,
                    host_claim: flags & 2 != 0,
                    wants_acks: flags & 4 != 0,
                    wants_chat: flags & 8 != 0,
                    wants_media: flags & 16 != 0,
                    wants_reactions: flags & 32 != 0,
                    datagrams: flags & 64 != 0,
                    wants_live: flags & 128 != 0,
                };
                members.push(room.join(now, info));
            }
            1 => {
                if let Some(id) = pick(&mut b, &members) {
                    room.leave(now, id);
                    members.retain(|&m| m != id);
                    // Ids are not reused; a message queued for it before it left may still add it back, harmlessly.
                    told.remove(&id);
                }
            }
            2 => {
                let (Some(id), Some(kind), Some(v)) = (pick(&mut b, &members), b.u8(), b.u32()) else { break };
                let action = match kind % 9 {
                    0 => Action::Play { position_ms: (v & 1 == 0).then_some(u64::from(v >> 1)) },
                    1 => Action::Pause { position_ms: (v & 1 == 0).then_some(u64::from(v >> 1)) },
                    2 => Action::Seek { position_ms: u64::from(v) * 1000 },
                    3 => Action::SetRate { rate_milli: v as u16 },
                    4 => Action::SetRole {
                        member_id: members.get(v as usize % members.len().max(1)).copied().unwrap_or(v),
                        role: if v & 1 == 0 { Role::CoHost } else { Role::Viewer },
                    },
                    5 => Action::SetPolicy {
                        policy: if v & 1 == 0 { ControlPolicy::Everyone } else { ControlPolicy::HostOnly },
                    },
                    6 => Action::GoLive,
                    7 => Action::DeleteChat { id: u64::from(v % 8) },
                    _ => Action::MuteChat {
                        member_id: members.get(v as usize % members.len().max(1)).copied().unwrap_or(v),
                        muted: v & 1 == 0,
                    },
                };
                let _ = room.command(now, id, v, action);
            }
            3 => {
                let (Some(id), Some(v)) = (pick(&mut b, &members), b.u32()) else { break };
                let epoch = room.epoch().wrapping_sub(v & 1);
                let r = Report { epoch, position_us: u64::from(v) * 997, rate_milli: 1000, buffering: v & 2 != 0 };
                room.report(now, id, r);
            }
            4 => {
                let step = u64::from(b.u8().unwrap_or(1));
                now += step * step * 1_000;
                room.handle_timeout(now);
            }
            5 => {
                let (Some(id), Some(r)) = (pick(&mut b, &members), b.u8()) else { break };
                let reason = (r < 200).then(|| REASONS[usize::from(r) % REASONS.len()].to_owned());
                room.suspend(now, id, reason);
            }
            6 => {
                let (Some(id), Some(e)) = (pick(&mut b, &members), b.u8()) else { break };
                let emoji = EMOJI[usize::from(e) % EMOJI.len()];
                if lockstep_protocol::valid_emoji(emoji) {
                    let _ = room.react(now, id, emoji);
                }
            }
            7 => {
                let (Some(id), Some(t)) = (pick(&mut b, &members), b.u8()) else { break };
                let _ = room.chat(now, id, u32::from(t), TEXTS[usize::from(t) % TEXTS.len()].to_owned());
            }
            8 => {
                let (Some(id), Some(k), Some(v)) = (pick(&mut b, &members), b.u8(), b.u8()) else { break };
                let item = MediaItem {
                    media_id: ITEMS[usize::from(v) % ITEMS.len()].into(),
                    url: (v & 4 != 0).then(|| "/m.mp4".into()),
                    title: None,
                    duration_ms: (v & 8 != 0).then_some(u64::from(v) * 100 + 1),
                };
                let op = match k % 7 {
                    0 => MediaOp::Set { item },
                    1 => MediaOp::Add { item },
                    2 => MediaOp::Remove { media_id: item.media_id },
                    3 => MediaOp::Move { media_id: item.media_id, index: u32::from(v >> 4) },
                    4 => MediaOp::Next,
                    5 => MediaOp::Previous,
                    _ => MediaOp::AutoAdvance { on: v & 1 == 0 },
                };
                let _ = room.media_command(now, id, u32::from(k), op);
            }
            9 => {
                let (Some(id), Some(v)) = (pick(&mut b, &members), b.u32()) else { break };
                if v % 3 == 0 {
                    // A round trip as a transport measured it (any value: the room caps it).
                    room.member_rtt(now, id, u64::from(v) * 7);
                } else if v % 3 == 1 && v & 4 != 0 {
                    // Scale-out: the other nodes' round trips (any pairs: a node's share is not trusted to be sorted or bounded).
                    room.set_remote_reach(now, vec![(v >> 16, v & 0xff), (v & 0xffff, v >> 24), (u32::MAX, v >> 20)]);
                    // And their drifts (the same: any pairs).
                    room.set_remote_sync(vec![(v >> 8, v & 0xff), (u32::MAX, v >> 28), (0, u32::MAX)]);
                    let _ = room.sync_quality(now);
                } else {
                    room.sync_report(now, id, SyncReport { epoch: room.epoch(), drift_us: v as i32 });
                }
            }
            10 => {
                // The authority refuses (unreachable) or another change won.
                if let Some(req) = room.poll_commit() {
                    let answer = if b.u8().unwrap_or(0) & 1 == 0 {
                        CommitResult::Failed
                    } else {
                        let mut winner = req.change.clone();
                        winner.timeline.position_ms = winner.timeline.position_ms.wrapping_add(1) % MAX_POSITION_MS;
                        CommitResult::Conflict(winner)
                    };
                    room.on_commit(now, answer);
                }
            }
            _ => {
                // Chat stored as a single node does: in order, at once.
                while let Some(op) = room.poll_chat() {
                    if let ChatOp::Post(r) = &op {
                        assert!(r.id > 0, "a single node numbers its messages");
                    }
                    room.apply_chat(op);
                }
            }
        }
        // The local authority: everything else commits at once.
        while room.poll_commit().is_some() {
            room.on_commit(now, CommitResult::Committed);
        }
        steps += 1;
        check(&mut room, now, &members, &mut told, steps.is_multiple_of(32));
    }
    check(&mut room, now, &members, &mut told, true);
}

/// The invariants after a step. The REST snapshot (`Room::state`, costly: it
/// sorts the sync quality, lists suspensions, clones the queue) is taken
/// every 32 steps and at the end (`snapshot`); the roles and counts it would
/// show are checked after every step from the members themselves.
fn check(
    room: &mut Room,
    now: u64,
    members: &[MemberId],
    told: &mut std::collections::HashMap<MemberId, u32>,
    snapshot: bool,
) {
    while let Some(out) = room.poll_output() {
        let epoch = match &out.msg {
            ServerMsg::TimelineChanged(c) => Some((c.timeline.epoch, true)),
            ServerMsg::Welcome(w) => Some((w.timeline.epoch, false)),
            _ => None,
        };
        if let Some((epoch, change)) = epoch {
            let to: Vec<MemberId> = match out.to {
                Audience::One(id) => vec![id],
                _ => members.iter().copied().filter(|&id| room.is_recipient(out.to, id)).collect(),
            };
            for id in to {
                let was = told.insert(id, epoch);
                assert!(
                    !change || was.is_none_or(|e| epoch > e),
                    "member {id} told epoch {epoch} after {was:?}: {:?}",
                    out.msg
                );
            }
        }
        let bytes = lockstep_protocol::encode_server(&out.msg);
        assert!(bytes.len() <= lockstep_protocol::limits::MAX_FRAME, "{:?}", out.msg);
        assert_eq!(lockstep_protocol::decode_server(&bytes).as_ref(), Ok(&out.msg));
    }
    // `members` is in id order (ids grow), as the room's: one pass, no lookups.
    let mut hosts = 0;
    let mut roles = room.roles();
    for &id in members {
        let role = roles.next();
        assert_eq!(role.map(|r| r.0), Some(id), "member {id} has no role");
        hosts += usize::from(role.is_some_and(|r| r.1 == Role::Host));
    }
    assert_eq!(roles.next(), None, "a member the room has and the driver does not");
    assert!(hosts <= 1, "two hosts");
    assert_eq!(room.viewers() as usize, members.len());
    if snapshot {
        let state = room.state(now);
        assert!(state.members.host.len() <= 1, "two hosts: {:?}", state.members);
        let listed = state.members.host.len() + state.members.co_host.len() + state.members.viewer.len();
        assert_eq!(listed, members.len());
        assert_eq!(state.viewers as usize, members.len());
        let cfg = room.config();
        let lead_us = (state.reach.lead_ms * 1e3).round() as u64;
        assert!(
            (cfg.lead_us..=cfg.lead_us.max(cfg.lead_max_us)).contains(&lead_us),
            "a lead beyond its bounds: {:?}",
            state.reach
        );
        // Of those measured, the ones here are members here.
        assert!(state.reach.remote <= state.reach.measured, "{:?}", state.reach);
        assert!((state.reach.measured - state.reach.remote) as usize <= members.len(), "{:?}", state.reach);
    }
    let t = room.timeline();
    assert!(t.position_ms <= MAX_POSITION_MS);
    assert!((MIN_RATE_MILLI..=MAX_RATE_MILLI).contains(&t.rate_milli), "{t:?}");
}
