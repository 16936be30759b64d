//! What plays next (SPEC §6.7) in the room core, with simulated time: a
//! switch (paused at 0 at once, then started on one frame for everyone), the
//! playlist's operations and refusals, auto-advance, joiners, scale-out.

use super::*;
use lockstep_protocol::{MediaChanged, MediaItem, MediaOp, QueueChanged};

fn item(id: &str, duration_ms: Option<u64>) -> MediaItem {
    MediaItem { media_id: id.into(), url: None, title: Some(format!("title {id}")), duration_ms }
}

fn viewer(room: &mut Room, now: u64, device: &str) -> MemberId {
    room.join(
        now,
        JoinInfo {
            device_id: device.into(),
            name: device.into(),
            wants_media: true,
            wants_acks: true,
            ..Default::default()
        },
    )
}

fn media(room: &mut Room, now: u64, by: MemberId, op: MediaOp) -> Result<(), CommandError> {
    let r = room.media_command(now, by, 9, op);
    commit(room, now);
    r
}

fn switches(out: &[Output]) -> Vec<(Audience, MediaChanged)> {
    out.iter()
        .filter_map(|o| match &o.msg {
            ServerMsg::MediaChanged(m) => Some((o.to, m.clone())),
            _ => None,
        })
        .collect()
}

fn queues(out: &[Output]) -> Vec<QueueChanged> {
    out.iter()
        .filter_map(|o| match &o.msg {
            ServerMsg::QueueChanged(q) => Some(q.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_switch_pauses_at_zero_then_starts_the_item_on_one_frame() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let h = viewer(&mut room, T0, "h");
    let v = viewer(&mut room, T0, "v");
    cmd(&mut room, T0, h, Action::Play { position_ms: Some(600_000) }).unwrap();
    tick(&mut room, T0 + S);
    drain(&mut room);
    assert!(!room.timeline().paused);

    let t1 = T0 + 2 * S;
    media(&mut room, t1, h, MediaOp::Set { item: item("ep2", Some(2_640_000)) }).unwrap();
    let out = drain(&mut room);
    let c = changes(&out);
    assert_eq!(c.len(), 1, "one change: paused at 0 at once");
    assert_eq!((c[0].timeline.position_ms, c[0].timeline.paused, c[0].effective_at_us), (0, true, t1));
    let sw = switches(&out);
    assert_eq!(sw.len(), 1);
    assert_eq!(sw[0].0, Audience::Media);
    assert_eq!((sw[0].1.epoch, sw[0].1.by, sw[0].1.index), (c[0].timeline.epoch, h, Some(0)));
    assert_eq!(sw[0].1.item.as_ref().unwrap().media_id, "ep2");
    assert_eq!(queues(&out).len(), 1, "inserted into the playlist");
    assert_eq!(acks(&out, h), vec![(9, AckOutcome::Applied, c[0].timeline.epoch)]);
    assert!(room.is_recipient(Audience::Media, v));

    // The room starts it by itself media_start_us later, lead ahead.
    let start = t1 + RoomConfig::default().media_start_us;
    assert!(room.poll_timeout() <= start);
    tick(&mut room, start - 1);
    assert!(changes(&drain(&mut room)).is_empty(), "not before");
    tick(&mut room, start);
    let c = changes(&drain(&mut room));
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].timeline.position_ms, c[0].timeline.paused, c[0].reason), (0, false, ChangeReason::Play));
    assert!(c[0].effective_at_us >= start + room.lead_us(), "scheduled like a play: everyone starts on one frame");

    // A joiner lands on the item: playlist, then the item, after its Welcome.
    let late = viewer(&mut room, start + 5 * S, "late");
    let out = drain(&mut room);
    let mine: Vec<&ServerMsg> = out.iter().filter(|o| o.to == Audience::One(late)).map(|o| &o.msg).collect();
    assert!(matches!(mine[0], ServerMsg::Welcome(w) if w.timeline.position_ms == 0 && !w.timeline.paused));
    assert!(matches!(mine[1], ServerMsg::QueueChanged(q) if q.items.len() == 1 && q.current == Some(0)));
    assert!(matches!(mine[2], ServerMsg::MediaChanged(m) if m.item.as_ref().unwrap().media_id == "ep2"));
    assert_eq!(room.state(start + 5 * S).media.item.unwrap().media_id, "ep2");
}

#[test]
fn a_paused_room_stays_paused_and_a_command_cancels_the_start() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let h = viewer(&mut room, T0, "h");
    media(&mut room, T0, h, MediaOp::Set { item: item("a", None) }).unwrap();
    drain(&mut room);
    tick(&mut room, T0 + 10 * S);
    assert!(changes(&drain(&mut room)).is_empty(), "a paused room does not start the item");

    cmd(&mut room, T0 + 11 * S, h, Action::Play { position_ms: None }).unwrap();
    media(&mut room, T0 + 12 * S, h, MediaOp::Set { item: item("b", None) }).unwrap();
    cmd(&mut room, T0 + 12 * S + MS, h, Action::Seek { position_ms: 5_000 }).unwrap();
    drain(&mut room);
    tick(&mut room, T0 + 20 * S);
    let c = changes(&drain(&mut room));
    assert!(c.iter().all(|c| c.reason != ChangeReason::Play), "the host's own command took over: {c:?}");
}

#[test]
fn the_playlist_is_edited_and_bad_ops_are_refused_to_the_sender() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let h = viewer(&mut room, T0, "h");
    let v = viewer(&mut room, T0, "v");
    for id in ["e1", "e2", "e3"] {
        media(&mut room, T0, h, MediaOp::Add { item: item(id, None) }).unwrap();
    }
    drain(&mut room);
    let ids = |room: &Room| room.media_state().items.iter().map(|i| i.media_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&room), ["e1", "e2", "e3"]);
    assert_eq!(room.media_state().item, None, "adding does not switch");
    let bad = |r: Result<(), CommandError>| matches!(r, Err(CommandError::InvalidArgument(_)));
    assert!(bad(media(&mut room, T0, h, MediaOp::Add { item: item("e2", None) })), "duplicate");
    assert!(bad(media(&mut room, T0, h, MediaOp::Add { item: item("", None) })), "empty id");
    let url = MediaItem { url: Some("javascript:alert(1)".into()), ..item("x", None) };
    assert!(bad(media(&mut room, T0, h, MediaOp::Add { item: url })), "not an http(s) URL or a path");
    assert!(bad(media(&mut room, T0, h, MediaOp::Previous)), "nothing before");
    assert!(bad(media(&mut room, T0, h, MediaOp::Remove { media_id: "nope".into() })));
    assert_eq!(media(&mut room, T0, v, MediaOp::Next), Err(CommandError::Forbidden), "a viewer in a host-only room");

    media(&mut room, T0, h, MediaOp::Next).unwrap();
    assert_eq!(room.media_state().current, Some(0), "next from nothing: the first");
    assert!(bad(media(&mut room, T0, h, MediaOp::Remove { media_id: "e1".into() })), "the item playing stays");
    media(&mut room, T0, h, MediaOp::Move { media_id: "e1".into(), index: 99 }).unwrap();
    assert_eq!(ids(&room), ["e2", "e3", "e1"]);
    assert_eq!(room.media_state().current, Some(2), "the current item is followed");
    media(&mut room, T0, h, MediaOp::Remove { media_id: "e2".into() }).unwrap();
    assert_eq!((ids(&room), room.media_state().current), (vec!["e3".to_owned(), "e1".to_owned()], Some(1)));
    assert!(bad(media(&mut room, T0, h, MediaOp::Next)), "nothing after");
    media(&mut room, T0, h, MediaOp::Previous).unwrap();
    assert_eq!(room.media_state().item.as_ref().unwrap().media_id, "e3");
    media(&mut room, T0, h, MediaOp::AutoAdvance { on: false }).unwrap();
    let out = drain(&mut room);
    assert!(!queues(&out).last().unwrap().auto_advance);
    let refused: Vec<u16> = errors(&out, h).iter().map(|e| e.1).collect();
    assert_eq!(refused, vec![4009; 7], "each refusal to its sender");
    assert_eq!(errors(&out, v).iter().map(|e| e.1).collect::<Vec<_>>(), vec![4008]);

    // A full playlist.
    let mut room = Room::new(RoomConfig::default(), T0);
    let h = viewer(&mut room, T0, "h");
    for i in 0..lockstep_protocol::limits::MAX_QUEUE {
        media(&mut room, T0, h, MediaOp::Add { item: item(&format!("i{i}"), None) }).unwrap();
    }
    assert!(bad(media(&mut room, T0, h, MediaOp::Add { item: item("one-more", None) })));
    // Set beyond a full playlist plays the item outside it.
    media(&mut room, T0, h, MediaOp::Set { item: item("extra", None) }).unwrap();
    assert_eq!((room.media_state().current, room.media_state().items.len()), (None, 50));
}

#[test]
fn at_the_end_of_an_item_the_room_advances() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let h = viewer(&mut room, T0, "h");
    media(&mut room, T0, h, MediaOp::Add { item: item("short", Some(10_000)) }).unwrap();
    media(&mut room, T0, h, MediaOp::Add { item: item("next", Some(20_000)) }).unwrap();
    media(&mut room, T0, h, MediaOp::Next).unwrap();
    cmd(&mut room, T0, h, Action::Play { position_ms: None }).unwrap();
    drain(&mut room);
    let started = room.timeline().anchor_us.max(T0 + room.lead_us());
    tick(&mut room, started);
    let end = room.poll_timeout();
    assert!(end <= started + 10 * S, "the end is a deadline: {}", end - started);
    tick(&mut room, started + 10 * S);
    let out = drain(&mut room);
    let sw = switches(&out);
    assert_eq!(sw.len(), 1, "advanced once");
    assert_eq!((sw[0].1.by, sw[0].1.index), (0, Some(1)));
    assert_eq!(sw[0].1.item.as_ref().unwrap().media_id, "next");
    // Started like any switch of a playing room.
    tick(&mut room, started + 10 * S + RoomConfig::default().media_start_us);
    let c = changes(&drain(&mut room));
    assert_eq!(c.last().map(|c| (c.reason, c.timeline.paused)), Some((ChangeReason::Play, false)));
    // Off: no advance.
    let mut room = Room::new(RoomConfig::default(), T0);
    let h = viewer(&mut room, T0, "h");
    media(&mut room, T0, h, MediaOp::Add { item: item("a", Some(1_000)) }).unwrap();
    media(&mut room, T0, h, MediaOp::Add { item: item("b", Some(1_000)) }).unwrap();
    media(&mut room, T0, h, MediaOp::AutoAdvance { on: false }).unwrap();
    media(&mut room, T0, h, MediaOp::Next).unwrap();
    cmd(&mut room, T0, h, Action::Play { position_ms: None }).unwrap();
    drain(&mut room);
    tick(&mut room, T0 + 5 * S);
    assert!(switches(&drain(&mut room)).is_empty());
}

#[test]
fn scale_out_shares_the_state_and_one_node_advances() {
    let mut a = Room::new(RoomConfig::default(), T0);
    a.enable_sharing(ID_BLOCK);
    let h = viewer(&mut a, T0, "h");
    let _ = a.take_shared();
    media(&mut a, T0, h, MediaOp::Set { item: item("ep1", None) }).unwrap();
    let shared: Vec<Shared> = a.take_shared().into_iter().filter(|s| matches!(s, Shared::Media { .. })).collect();
    assert_eq!(shared.len(), 1);
    let mut b = Room::new(RoomConfig::default(), T0);
    b.enable_sharing(2 * ID_BLOCK);
    let w = viewer(&mut b, T0, "w");
    drain(&mut b);
    for ev in shared {
        b.apply_shared(T0, "node-a", ev);
    }
    let out = drain(&mut b);
    assert_eq!(switches(&out).len(), 1, "members of the other node hear of the switch");
    assert_eq!(queues(&out).len(), 1);
    assert_eq!(b.media_state().item.as_ref().unwrap().media_id, "ep1");
    // Only the node of the smallest member id advances.
    b.apply_shared(
        T0,
        "node-a",
        Shared::Joined {
            id: h,
            role: Role::Host,
            claimed: false,
            name: "h".into(),
            device: "h".into(),
            user: "uh".into(),
            stall: None,
            holds: false,
        },
    );
    assert!(h < w);
    assert!(!b.media_leader_for_test() && a.media_leader_for_test());
}
