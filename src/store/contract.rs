//! Behaviour every store shares, run against each of them by its tests.

use lockstep_protocol::{ChangeReason, Timeline, TimelineChanged};

use super::{InvitationRecord, InviteError, SessionRecord, StartError, Store};

/// A fresh session record.
pub(super) fn rec(id: &str, user: &str, device: &str, room: &str, now: u64) -> SessionRecord {
    SessionRecord {
        session_id: id.into(),
        user: user.into(),
        device_id: device.into(),
        room_id: room.into(),
        created_at: now,
        last_seen: now,
        position_ms: None,
        buffering: false,
    }
}

pub(super) async fn invitations_are_used_up_revoked_and_expire(s: &dyn Store) {
    let inv = InvitationRecord {
        id: "i1".into(),
        event_id: "ev".into(),
        room_id: "ev~p1".into(),
        host_user: "alice".into(),
        created_at: 0,
        expires_at: 1_000,
        max_uses: Some(2),
        uses: 0,
        revoked: false,
    };
    s.create_invitation(inv.clone()).await.unwrap();
    assert_eq!(s.invitation("i1").await.unwrap(), Some(inv.clone()));
    assert_eq!(s.party_host("ev~p1").await.unwrap().as_deref(), Some("alice"));
    assert_eq!(s.use_invitation("i1", 10).await.unwrap().uses, 1);
    assert_eq!(s.use_invitation("i1", 10).await.unwrap().uses, 2);
    assert_eq!(s.use_invitation("i1", 10).await, Err(InviteError::Gone));
    assert_eq!(s.use_invitation("nope", 10).await, Err(InviteError::NotFound));
    s.create_invitation(InvitationRecord { id: "i2".into(), max_uses: None, ..inv.clone() }).await.unwrap();
    assert_eq!(s.use_invitation("i2", 1_000).await, Err(InviteError::Gone), "expired");
    assert!(s.revoke_invitation("i2").await.unwrap().is_some());
    assert_eq!(s.use_invitation("i2", 10).await, Err(InviteError::Gone), "revoked");
}

/// Four sessions of one user at a limit of 2 devices (`now` = 1,000,000):
/// another room on the same device is still one device, a third device is
/// refused with the two holding the slots, and resuming the same device and
/// room returns its session ("c"). Returns the ids of "a", "b" and "c" as the
/// store gave them (a store may add to an id, never change it otherwise).
pub(super) async fn device_limit_counts_distinct_devices_and_resumes(s: &dyn Store) -> [String; 3] {
    let now = 1_000_000;
    let a = s.start_session(rec("a", "u", "d1", "ev", now), 2, 0).await.unwrap().session_id;
    let b = s.start_session(rec("b", "u", "d1", "ev2", now), 2, 0).await.unwrap().session_id;
    let c = s.start_session(rec("c", "u", "d2", "ev", now), 2, 0).await.unwrap().session_id;
    for (id, given) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        assert!(id.ends_with(given), "{id} from {given}");
    }
    let e = s.start_session(rec("d", "u", "d3", "ev", now), 2, 0).await.unwrap_err();
    let StartError::DeviceLimit(devs) = e else { panic!("{e:?}") };
    assert_eq!(devs.iter().map(|d| d.device_id.as_str()).collect::<Vec<_>>(), ["d1", "d2"]);
    assert_eq!(s.start_session(rec("zzz", "u", "d2", "ev", now + 5), 2, 0).await.unwrap().session_id, c);
    [a, b, c]
}

pub(super) async fn room_clocks_are_saved_and_read_back(s: &dyn Store) {
    use crate::room::{ClockSetting, LiveLatency};
    assert_eq!(s.room_clock("ev").await.unwrap(), None);
    let live = ClockSetting {
        clock: lockstep_protocol::ClockKind::Live,
        latency: LiveLatency::Auto { min_ms: 1_500, max_ms: 9_000 },
        origin_ms: 1_794_441_600_000,
        dvr_window_ms: 120_000,
    };
    s.save_room_clock("ev", live).await.unwrap();
    assert_eq!(s.room_clock("ev").await.unwrap(), Some(live));
    let media = ClockSetting { clock: lockstep_protocol::ClockKind::Media, origin_ms: 0, ..live };
    s.save_room_clock("ev", media).await.unwrap();
    assert_eq!(s.room_clock("ev").await.unwrap(), Some(media), "latest wins");
    assert_eq!(s.room_clock("other").await.unwrap(), None);
}

/// A room's chat: posts in order, a deletion, mutes; loading the newest with
/// the last id (deleted ones counted); paging back; rooms apart.
pub(super) async fn chat_is_kept_in_order_and_paged(s: &dyn Store) {
    use crate::room::{ChatOp, ChatRecord};
    let post = |id: u64, text: &str| {
        ChatOp::Post(ChatRecord {
            id,
            at_ms: 1_795_500_000_000 + id,
            member_id: 7,
            user: "u".into(),
            name: "Ana".into(),
            role: lockstep_protocol::Role::CoHost,
            text: text.into(),
            request_id: 3,
        })
    };
    let empty = s.chat_load("ev", 100).await.unwrap();
    assert!(empty.history.is_empty() && empty.last_id == 0 && empty.muted.is_empty());
    let ops: Vec<ChatOp> = (1..=5).map(|i| post(i, &format!("m{i} ⚽\nline"))).collect();
    s.save_chat("ev", ops).await.unwrap();
    // Each kind numbers posts its own way (SQLite keeps the room's ids,
    // Redis gives its own: from its clock for a room's first); either way
    // they grow by one a post.
    let ids: Vec<u64> = s.chat_load("ev", 100).await.unwrap().history.iter().map(|r| r.id).collect();
    assert!(ids.len() == 5 && ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    let id = |i: usize| ids[i - 1];
    s.save_chat(
        "ev",
        vec![
            ChatOp::Delete { id: id(5), by: 1 },
            ChatOp::Mute { user: "troll".into(), muted: true, by: 1 },
            ChatOp::Mute { user: "x".into(), muted: true, by: 1 },
            ChatOp::Mute { user: "x".into(), muted: false, by: 1 },
        ],
    )
    .await
    .unwrap();
    s.save_chat("other", vec![post(1, "elsewhere")]).await.unwrap();
    let load = s.chat_load("ev", 3).await.unwrap();
    let texts: Vec<_> = load.history.iter().map(|r| (r.id, r.text.as_str())).collect();
    assert_eq!(
        texts,
        vec![(id(2), "m2 ⚽\nline"), (id(3), "m3 ⚽\nline"), (id(4), "m4 ⚽\nline")],
        "the newest 3 but the deleted"
    );
    assert_eq!(load.last_id, id(5), "a deleted message's id is never given again");
    assert_eq!(load.muted, vec!["troll".to_owned()]);
    let r = &load.history[0];
    assert_eq!(
        (r.member_id, r.user.as_str(), r.name.as_str(), r.role),
        (7, "u", "Ana", lockstep_protocol::Role::CoHost)
    );
    assert_eq!(r.at_ms, 1_795_500_000_002);
    let page = s.chat_page("ev", Some(id(3)), 10).await.unwrap();
    assert_eq!(page.iter().map(|r| r.id).collect::<Vec<_>>(), vec![id(1), id(2)], "before the third, oldest first");
    let page = s.chat_page("ev", None, 2).await.unwrap();
    assert_eq!(page.iter().map(|r| r.id).collect::<Vec<_>>(), vec![id(3), id(4)]);
    assert_eq!(s.chat_page("other", None, 10).await.unwrap().len(), 1);
    assert!(s.chat_page("none", None, 10).await.unwrap().is_empty());
}

/// A timeline as saved: the change that made it, effective at its anchor, by the server.
pub(super) fn saved(timeline: Timeline, reason: ChangeReason) -> TimelineChanged {
    TimelineChanged { timeline, effective_at_us: timeline.anchor_us, by: 0, reason }
}

/// A saved timeline reads back with why it changed (a room loaded again during
/// a buffering wait must know it waits), and the latest save wins.
pub(super) async fn timelines_keep_why_they_changed(s: &dyn Store) {
    let waiting = saved(
        Timeline { epoch: 5, position_ms: 61_000, anchor_us: 9_000_000, rate_milli: 1000, paused: true },
        ChangeReason::BufferingWait,
    );
    let paused = saved(Timeline { epoch: 2, position_ms: 4_000, ..waiting.timeline }, ChangeReason::Pause);
    s.save_timelines(vec![("waits".into(), waiting.clone()), ("paused".into(), paused.clone())]).await.unwrap();
    assert_eq!(s.timeline("waits").await.unwrap().as_ref(), Some(&waiting));
    assert_eq!(s.timeline("paused").await.unwrap(), Some(paused));
    let resumed = saved(Timeline { epoch: 6, paused: false, ..waiting.timeline }, ChangeReason::Resume);
    s.save_timelines(vec![("waits".into(), resumed.clone())]).await.unwrap();
    assert_eq!(s.timeline("waits").await.unwrap(), Some(resumed));
    assert_eq!(s.timeline("never").await.unwrap(), None);
}
