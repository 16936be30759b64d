//! Chat in the room core (SPEC §6.6), with simulated time: order and ids,
//! the sender's copy, history for joiners, limits, moderation, and the
//! shared-state path (ids from the authority, applied when it answers).

use super::*;
use lockstep_protocol::{ChatDeleted, ChatMessage, ChatMuted};

fn member(room: &mut Room, now: u64, device: &str, user: &str, chat: bool) -> MemberId {
    room.join(
        now,
        JoinInfo {
            device_id: device.into(),
            name: device.into(),
            user: user.into(),
            wants_chat: chat,
            ..Default::default()
        },
    )
}

/// The local authority: every chat operation applies at once, in order.
fn apply(room: &mut Room) -> Vec<ChatOp> {
    let ops: Vec<ChatOp> = std::iter::from_fn(|| room.poll_chat()).collect();
    for op in &ops {
        room.apply_chat(op.clone());
    }
    ops
}

fn chat_of(out: &[Output]) -> Vec<(Audience, ChatMessage)> {
    out.iter()
        .filter_map(|o| match &o.msg {
            ServerMsg::ChatMessage(m) => Some((o.to, m.clone())),
            _ => None,
        })
        .collect()
}

fn error_codes(out: &[Output], to: MemberId) -> Vec<(u32, u16)> {
    errors(out, to).into_iter().map(|(r, c, _)| (r, c)).collect()
}

#[test]
fn messages_go_in_order_to_chat_members_and_answer_the_sender() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let h = member(&mut room, T0, "h", "uh", true);
    let v = member(&mut room, T0, "v", "uv", true);
    let quiet = member(&mut room, T0, "q", "uq", false);
    drain(&mut room);
    room.chat(T0 + MS, v, 5, "hello 👋".into()).unwrap();
    room.chat(T0 + 2 * MS, h, 0, "welcome\nall".into()).unwrap();
    let ops = apply(&mut room);
    assert_eq!(ops.len(), 2);
    let out = drain(&mut room);
    let got = chat_of(&out);
    assert_eq!(got.len(), 2, "one message per post, to the chat audience");
    assert!(got.iter().all(|(to, _)| *to == Audience::Chat));
    assert!(room.is_recipient(Audience::Chat, h) && room.is_recipient(Audience::Chat, v));
    assert!(!room.is_recipient(Audience::Chat, quiet), "no CHAT capability, no chat");
    let (a, b) = (&got[0].1, &got[1].1);
    assert_eq!((a.id, a.member_id, a.request_id, a.text.as_str(), a.history), (1, v, 5, "hello 👋", false));
    assert_eq!((b.id, b.member_id, b.role), (2, h, Role::Host));
    assert_eq!(a.at_ms, (T0 + MS) / 1000, "server time, ms");
}

#[test]
fn joiners_get_the_latest_history_then_their_mute() {
    let cfg = RoomConfig { chat_history: 3, ..RoomConfig::default() };
    let mut room = Room::new(cfg, T0);
    let h = member(&mut room, T0, "h", "uh", true);
    let v = member(&mut room, T0, "v", "uv", true);
    for i in 0..5u64 {
        room.chat(T0 + i * S, h, 0, format!("m{i}")).unwrap();
    }
    cmd(&mut room, T0 + 5 * S, h, Action::MuteChat { member_id: v, muted: true }).unwrap();
    apply(&mut room);
    drain(&mut room);
    // The viewer reconnects (same user, another member id).
    room.leave(T0 + 6 * S, v);
    let again = member(&mut room, T0 + 6 * S, "v", "uv", true);
    let out = drain(&mut room);
    let mine: Vec<_> = out.iter().filter(|o| o.to == Audience::One(again)).map(|o| &o.msg).collect();
    assert!(matches!(mine[0], ServerMsg::Welcome(_)), "Welcome first");
    let history: Vec<(u64, &str, bool, u32)> = mine
        .iter()
        .filter_map(|m| match m {
            ServerMsg::ChatMessage(c) => Some((c.id, c.text.as_str(), c.history, c.request_id)),
            _ => None,
        })
        .collect();
    assert_eq!(history, vec![(3, "m2", true, 0), (4, "m3", true, 0), (5, "m4", true, 0)], "the newest 3, oldest first");
    assert!(
        matches!(mine.last(), Some(ServerMsg::ChatMuted(ChatMuted { muted: true, by: 0 }))),
        "the mute holds for the user across reconnections: {mine:?}"
    );
    // A member without CHAT gets no history.
    let quiet = member(&mut room, T0 + 7 * S, "q", "uq", false);
    assert!(chat_of(&drain(&mut room)).iter().all(|(to, _)| *to != Audience::One(quiet)));
}

#[test]
fn bad_text_floods_and_mutes_are_refused_to_the_sender_only() {
    let cfg = RoomConfig { chat_max_bytes: 10, chat_room_per_sec: 3, ..RoomConfig::default() };
    let mut room = Room::new(cfg, T0);
    let h = member(&mut room, T0, "h", "uh", true);
    let v = member(&mut room, T0, "v", "uv", true);
    let w = member(&mut room, T0, "w", "uw", true);
    drain(&mut room);
    let bad = ["", "   \n ", "12345678901", "a\u{7}b", "\u{202e}evil", "tab\there"];
    for (i, text) in bad.iter().enumerate() {
        assert_eq!(room.chat(T0, v, i as u32 + 1, (*text).into()), Err(ErrorCode::InvalidArgument), "{text:?}");
    }
    let out = drain(&mut room);
    assert_eq!(error_codes(&out, v).len(), bad.len(), "each refused to its sender, with its request id");
    assert!(error_codes(&out, v).iter().all(|&(_, c)| c == 4009));
    assert!(chat_of(&out).is_empty() && errors(&out, h).is_empty() && errors(&out, w).is_empty(), "nobody else hears");

    // A member: bursts of 5, then 1 a second.
    let t = T0 + 10 * S;
    let mut room = Room::new(RoomConfig { chat_room_per_sec: 100, ..RoomConfig::default() }, t);
    let v = member(&mut room, t, "v", "uv", true);
    let sent = (0..8).filter(|i| room.chat(t, v, *i, format!("x{i}")).is_ok()).count();
    assert_eq!(sent, 5, "a burst of 5");
    assert_eq!(room.chat(t + 500 * MS, v, 9, "y".into()), Err(ErrorCode::RateLimited));
    assert_eq!(room.chat(t + 1000 * MS, v, 10, "z".into()), Ok(()), "one a second");

    // The room: 3 a second, bursts of 6, whoever sends.
    let mut room = Room::new(RoomConfig { chat_room_per_sec: 3, ..RoomConfig::default() }, t);
    let ids: Vec<_> = (0..10).map(|i| member(&mut room, t, &format!("m{i}"), &format!("u{i}"), true)).collect();
    let sent = ids.iter().filter(|&&id| room.chat(t, id, 1, "hi".into()).is_ok()).count();
    assert_eq!(sent, 6, "the room's burst");

    // Chat off.
    let mut room = Room::new(RoomConfig { chat_room_per_sec: 0, ..RoomConfig::default() }, t);
    let v = member(&mut room, t, "v", "uv", true);
    assert_eq!(room.chat(t, v, 1, "hi".into()), Err(ErrorCode::Forbidden));

    // Muted: refused with 4008, others unaffected.
    let mut room = Room::new(RoomConfig::default(), t);
    let h = member(&mut room, t, "h", "uh", true);
    let v = member(&mut room, t, "v", "uv", true);
    let w = member(&mut room, t, "w", "uw", true);
    cmd(&mut room, t, h, Action::MuteChat { member_id: v, muted: true }).unwrap();
    apply(&mut room);
    let out = drain(&mut room);
    let muted: Vec<_> = out.iter().filter(|o| matches!(o.msg, ServerMsg::ChatMuted(_))).map(|o| o.to).collect();
    assert_eq!(muted, vec![Audience::One(v)], "only the muted member hears of it");
    assert_eq!(room.chat(t + S, v, 3, "hi".into()), Err(ErrorCode::Forbidden));
    assert_eq!(room.chat(t + S, w, 4, "hi".into()), Ok(()));
    cmd(&mut room, t + 2 * S, h, Action::MuteChat { member_id: v, muted: false }).unwrap();
    apply(&mut room);
    assert_eq!(room.chat(t + 3 * S, v, 5, "back".into()), Ok(()));
}

#[test]
fn only_the_host_and_co_hosts_moderate() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let h = member(&mut room, T0, "h", "uh", true);
    let c = member(&mut room, T0, "c", "uc", true);
    let v = member(&mut room, T0, "v", "uv", true);
    let c2 = member(&mut room, T0, "c2", "uc2", true);
    cmd(&mut room, T0, h, Action::SetRole { member_id: c, role: Role::CoHost }).unwrap();
    cmd(&mut room, T0, h, Action::SetRole { member_id: c2, role: Role::CoHost }).unwrap();
    room.chat(T0 + MS, v, 0, "spam".into()).unwrap();
    apply(&mut room);
    drain(&mut room);
    let denied = |r: Result<(), CommandError>| matches!(r, Err(CommandError::Denied(_)));
    assert!(denied(cmd(&mut room, T0, v, Action::DeleteChat { id: 1 })), "a viewer does not delete");
    assert!(denied(cmd(&mut room, T0, v, Action::MuteChat { member_id: c, muted: true })), "nor mute");
    assert!(denied(cmd(&mut room, T0, c, Action::MuteChat { member_id: h, muted: true })), "nobody mutes a host");
    assert!(denied(cmd(&mut room, T0, h, Action::MuteChat { member_id: h, muted: true })), "not even itself");
    assert!(
        denied(cmd(&mut room, T0, c, Action::MuteChat { member_id: c2, muted: true })),
        "a co-host mutes viewers only"
    );
    assert_eq!(
        cmd(&mut room, T0, c, Action::MuteChat { member_id: 999, muted: true }),
        Err(CommandError::InvalidArgument("no such member"))
    );
    assert_eq!(
        cmd(&mut room, T0, c, Action::DeleteChat { id: 2 }),
        Err(CommandError::InvalidArgument("no such chat message"))
    );
    assert!(room.poll_chat().is_none(), "nothing refused reaches the authority");
    let out = drain(&mut room);
    assert!(errors(&out, v).iter().all(|(_, code, _)| *code == 4008));
    cmd(&mut room, T0 + S, c, Action::DeleteChat { id: 1 }).unwrap();
    assert_eq!(apply(&mut room), vec![ChatOp::Delete { id: 1, by: c }]);
    let out = drain(&mut room);
    let deleted: Vec<_> = out
        .iter()
        .filter_map(|o| match o.msg {
            ServerMsg::ChatDeleted(d) => Some((o.to, d)),
            _ => None,
        })
        .collect();
    assert_eq!(deleted, vec![(Audience::Chat, ChatDeleted { id: 1, by: c })]);
    assert_eq!(acks(&out, c).len(), 0, "no ACKS capability");
    // A deleted message leaves the history.
    let late = member(&mut room, T0 + 2 * S, "late", "ul", true);
    assert!(chat_of(&drain(&mut room)).iter().all(|(to, _)| *to != Audience::One(late)));
}

/// Scale-out: the shared state numbers posts; the room delivers what comes
/// back (its own and other nodes'), in that order; a failure is told to the
/// sender only.
#[test]
fn shared_rooms_deliver_in_the_authoritys_order() {
    let mut room = Room::new(RoomConfig::default(), T0);
    room.enable_sharing(ID_BLOCK);
    let v = member(&mut room, T0, "v", "uv", true);
    drain(&mut room);
    room.chat(T0, v, 5, "mine".into()).unwrap();
    let ChatOp::Post(mine) = room.poll_chat().unwrap() else { panic!("a post") };
    assert_eq!(mine.id, 1, "the shared state gives the id, no lower than the room's next");
    assert!(chat_of(&drain(&mut room)).is_empty(), "nothing before the authority answers");
    // Another node's message was ordered first.
    let theirs = ChatRecord {
        id: 41,
        member_id: 2 * ID_BLOCK,
        user: "uo".into(),
        name: "o".into(),
        request_id: 3,
        ..mine.clone()
    };
    room.apply_chat(ChatOp::Post(theirs));
    room.apply_chat(ChatOp::Post(ChatRecord { id: 42, ..mine.clone() }));
    let got: Vec<_> = chat_of(&drain(&mut room)).into_iter().map(|(_, m)| (m.id, m.member_id, m.request_id)).collect();
    assert_eq!(got, vec![(41, 2 * ID_BLOCK, 3), (42, v, 5)]);
    // A moderator on this node mutes a member of another node by its user.
    room.apply_shared(
        T0,
        "n2",
        Shared::Joined {
            id: 2 * ID_BLOCK + 1,
            role: Role::Viewer,
            claimed: false,
            name: "r".into(),
            device: "dr".into(),
            user: "ur".into(),
            stall: None,
            holds: false,
        },
    );
    assert_eq!(room.role(v), Some(Role::Host), "the first joiner hosts");
    cmd(&mut room, T0, v, Action::MuteChat { member_id: 2 * ID_BLOCK + 1, muted: true }).unwrap();
    assert_eq!(room.poll_chat(), Some(ChatOp::Mute { user: "ur".into(), muted: true, by: v }));
    // The shared state was unreachable for a post: its sender is told.
    room.chat(T0 + 2 * S, v, 9, "lost".into()).unwrap();
    let op = room.poll_chat().unwrap();
    room.chat_failed(op);
    assert_eq!(error_codes(&drain(&mut room), v), vec![(9, 4019)]);
}

#[test]
fn a_room_starts_from_its_stored_chat() {
    let mut room = Room::new(RoomConfig { chat_history: 2, ..RoomConfig::default() }, T0);
    let rec = |id: u64| ChatRecord {
        id,
        at_ms: 1,
        member_id: 1,
        user: "u".into(),
        name: "n".into(),
        role: Role::Viewer,
        text: format!("t{id}"),
        request_id: 0,
    };
    room.load_chat(ChatLoad { history: vec![rec(7), rec(8), rec(9)], last_id: 12, muted: vec!["uv".into()] });
    // What it offers to write back, should the authority lose it.
    let held = ChatLoad { history: vec![rec(8), rec(9)], last_id: 12, muted: vec!["uv".into()] };
    assert_eq!(room.chat_state(), held);
    let v = member(&mut room, T0, "v", "uv", true);
    let w = member(&mut room, T0, "w", "uw", true);
    let out = drain(&mut room);
    let to_w: Vec<_> = chat_of(&out).into_iter().filter(|(to, _)| *to == Audience::One(w)).map(|(_, m)| m.id).collect();
    assert_eq!(to_w, vec![8, 9]);
    assert_eq!(room.chat(T0, v, 1, "x".into()), Err(ErrorCode::Forbidden), "stored mutes hold");
    room.chat(T0, w, 1, "x".into()).unwrap();
    let ChatOp::Post(r) = room.poll_chat().unwrap() else { panic!() };
    assert_eq!(r.id, 13, "ids continue after the last one given (deleted ones included)");
}
