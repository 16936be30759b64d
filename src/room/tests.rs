//! Room core tests with simulated time and latency: no sockets, no clock.
//! Single-room tests commit through a local authority (every request
//! committed at once, as a single node does); scale-out tests run on the
//! multi-node simulation in `sim.rs`.

use super::*;
use lockstep_protocol::{
    AckOutcome, Action, ChangeReason, PolicyChanged, Reactions, Report, RoleChanged, SyncReport, Tick, Timeline,
};

mod chat;
mod live;
mod media;
mod sim;

const MS: u64 = 1_000;
const S: u64 = 1_000_000;
const T0: u64 = 1_000 * S;

fn join(room: &mut Room, now: u64, device: &str) -> MemberId {
    room.join(
        now,
        JoinInfo { device_id: device.into(), name: device.into(), wants_presence: true, ..Default::default() },
    )
}

/// The local authority of a single node: commits every request at once.
fn commit(room: &mut Room, now: u64) {
    while room.poll_commit().is_some() {
        room.on_commit(now, CommitResult::Committed);
    }
}

/// Everything released so far (every change must have been committed).
fn drain(room: &mut Room) -> Vec<Output> {
    assert!(room.is_committed(), "a change was not committed: use the helpers that commit");
    std::iter::from_fn(|| room.poll_output()).collect()
}

fn changes(out: &[Output]) -> Vec<TimelineChanged> {
    out.iter()
        .filter_map(|o| match &o.msg {
            ServerMsg::TimelineChanged(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

fn cmd(room: &mut Room, now: u64, by: MemberId, action: Action) -> Result<(), CommandError> {
    let r = room.command(now, by, 7, action);
    commit(room, now);
    r
}

fn rep(room: &mut Room, now: u64, id: MemberId, r: Report) {
    room.report(now, id, r);
    commit(room, now);
}

fn tick(room: &mut Room, now: u64) {
    room.handle_timeout(now);
    commit(room, now);
}

fn leave(room: &mut Room, now: u64, id: MemberId) {
    room.leave(now, id);
    commit(room, now);
}

fn report(buffering: bool) -> Report {
    Report { epoch: 0, position_us: 0, rate_milli: 1000, buffering }
}

/// Runs the room's timers up to `until`, returning what it emitted.
fn run_until(room: &mut Room, from: u64, until: u64) -> Vec<(u64, Output)> {
    let mut out = Vec::new();
    let mut now = from;
    loop {
        let t = room.poll_timeout().max(now);
        if t > until {
            break;
        }
        now = t;
        tick(room, now);
        out.extend(drain(room).into_iter().map(|o| (now, o)));
    }
    out
}

/// A simulated viewer: receives room output after a one-way latency and
/// follows the timeline exactly as a client would.
struct SimViewer {
    latency: u64,
    current: Option<Timeline>,
    pending: Vec<TimelineChanged>,
}

impl SimViewer {
    fn deliver(&mut self, msg: &ServerMsg) {
        match msg {
            ServerMsg::Welcome(w) => self.current = Some(w.timeline),
            ServerMsg::TimelineChanged(c) => self.pending.push(c.clone()),
            _ => {}
        }
    }
    /// The position this viewer shows at server time `t`.
    fn position_at(&mut self, t: u64) -> u64 {
        sim::position_at(&mut self.current, &mut self.pending, t)
    }
}

#[test]
fn first_joiner_hosts_and_welcome_carries_the_timeline() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let a = join(&mut room, T0, "a");
    let b = join(&mut room, T0 + MS, "b");
    assert_eq!(room.role(a), Some(Role::Host));
    assert_eq!(room.role(b), Some(Role::Viewer));
    let out = drain(&mut room);
    let welcome_b = out
        .iter()
        .find_map(|o| match (&o.to, &o.msg) {
            (Audience::One(id), ServerMsg::Welcome(w)) if *id == b => Some(w.clone()),
            _ => None,
        })
        .expect("b welcomed");
    assert_eq!(welcome_b.role, Role::Viewer);
    assert_eq!(welcome_b.viewers, 2);
    assert_eq!(welcome_b.timeline, Timeline::start(T0));
    assert_eq!(welcome_b.server_time_us, T0 + MS);
}

#[test]
fn viewers_cannot_command_a_host_only_room_but_can_in_everyone() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let _host = join(&mut room, T0, "h");
    let v = join(&mut room, T0, "v");
    drain(&mut room);
    assert_eq!(cmd(&mut room, T0, v, Action::Seek { position_ms: 5_000 }), Err(CommandError::Forbidden));
    let out = drain(&mut room);
    assert_eq!(out.len(), 1, "only the error: {out:?}");
    assert!(matches!(&out[0], Output { to: Audience::One(id), msg: ServerMsg::Error(e) }
        if *id == v && e.code == ErrorCode::Forbidden.as_u16() && e.request_id == 7));
    assert_eq!(room.timeline(), Timeline::start(T0));

    let mut open = Room::new(RoomConfig { policy: ControlPolicy::Everyone, ..Default::default() }, T0);
    join(&mut open, T0, "h");
    let v = join(&mut open, T0, "v");
    assert_eq!(cmd(&mut open, T0, v, Action::Seek { position_ms: 5_000 }), Ok(()));
    assert_eq!(open.timeline().position_ms, 5_000);
}

#[test]
fn play_is_scheduled_at_the_lead_and_ticks_when_it_takes_effect() {
    let cfg = RoomConfig::default();
    let lead = cfg.lead_us;
    let mut room = Room::new(cfg, T0);
    let h = join(&mut room, T0, "h");
    run_until(&mut room, T0, T0 + S);
    drain(&mut room);
    cmd(&mut room, T0 + S, h, Action::Play { position_ms: None }).unwrap();
    let out = drain(&mut room);
    let c = &changes(&out)[0];
    assert_eq!(c.effective_at_us, T0 + S + lead);
    assert_eq!((c.reason, c.by, c.timeline.paused, c.timeline.epoch), (ChangeReason::Play, h, false, 1));
    assert!(room.timeline().paused, "not yet in effect");
    assert_eq!(room.poll_timeout(), T0 + S + lead);
    tick(&mut room, T0 + S + lead);
    assert!(!room.timeline().paused);
    let ticks: Vec<_> = drain(&mut room)
        .into_iter()
        .filter_map(|o| match o.msg {
            ServerMsg::Tick(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(ticks.len(), 1);
    assert_eq!((ticks[0].epoch, ticks[0].paused, ticks[0].anchor_lo_us), (1, false, (T0 + S + lead) as u32));
}

#[test]
fn scheduled_pause_lands_on_the_same_position_for_every_viewer() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let h = join(&mut room, T0, "host");
    let viewers: Vec<SimViewer> =
        (0..12).map(|i| SimViewer { latency: 3 * MS + i * 7 * MS, current: None, pending: Vec::new() }).collect();
    let mut inflight: Vec<(u64, usize, ServerMsg)> = Vec::new();
    for (i, v) in viewers.iter().enumerate() {
        join(&mut room, T0, &format!("v{i}"));
        inflight.push((T0 + v.latency, i, room.welcome(0, Role::Viewer, T0)));
    }
    drain(&mut room);
    let send = |room: &mut Room, now: u64, inflight: &mut Vec<(u64, usize, ServerMsg)>| {
        for o in drain(room) {
            for (i, v) in viewers.iter().enumerate() {
                inflight.push((now + v.latency, i, o.msg.clone()));
            }
        }
    };
    cmd(&mut room, T0 + S, h, Action::Play { position_ms: Some(60_000) }).unwrap();
    send(&mut room, T0 + S, &mut inflight);
    for (now, o) in run_until(&mut room, T0 + S, T0 + 7 * S + 333 * MS) {
        inflight.extend(viewers.iter().enumerate().map(|(i, v)| (now + v.latency, i, o.msg.clone())));
    }
    let pause_at = T0 + 7 * S + 333 * MS;
    cmd(&mut room, pause_at, h, Action::Pause { position_ms: None }).unwrap();
    send(&mut room, pause_at, &mut inflight);
    run_until(&mut room, pause_at, pause_at + 2 * S);

    let mut viewers: Vec<SimViewer> =
        (0..12).map(|i| SimViewer { latency: 3 * MS + i * 7 * MS, current: None, pending: Vec::new() }).collect();
    inflight.sort_by_key(|(at, ..)| *at);
    for (_, i, msg) in &inflight {
        viewers[*i].deliver(msg);
    }
    // Every message arrived before its effect (latency < lead), so every viewer
    // plays from 60 s at the same instant and stops on the same microsecond.
    let stopped: Vec<u64> = viewers.iter_mut().map(|v| v.position_at(pause_at + 2 * S)).collect();
    assert!(stopped.windows(2).all(|w| w[0] == w[1]), "{stopped:?}");
    let expected = 60_000 * MS + (pause_at + 100 * MS - (T0 + S + 100 * MS));
    assert!(stopped[0].abs_diff(expected) <= MS, "{} vs {expected}", stopped[0]);
    assert_eq!(stopped[0] % MS, 0, "pauses land on whole milliseconds");
    let mid: Vec<u64> = viewers.iter_mut().map(|v| v.position_at(T0 + 4 * S)).collect();
    assert!(mid.windows(2).all(|w| w[0] == w[1]), "{mid:?}");
}

#[test]
fn seek_is_immediate_and_keeps_play_state() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let h = join(&mut room, T0, "h");
    cmd(&mut room, T0, h, Action::Play { position_ms: None }).unwrap();
    tick(&mut room, T0 + 100 * MS);
    drain(&mut room);
    cmd(&mut room, T0 + S, h, Action::Seek { position_ms: 90_000 }).unwrap();
    let t = room.timeline();
    assert_eq!((t.position_ms, t.anchor_us, t.paused), (90_000, T0 + S, false));
    let out = drain(&mut room);
    assert_eq!(changes(&out)[0].effective_at_us, T0 + S);
    assert!(!out.iter().any(|o| matches!(o.msg, ServerMsg::Tick(_))), "an immediate change is its own tick");
    // The next periodic tick comes a whole interval later, with the new epoch.
    let ticks = run_until(&mut room, T0 + S, T0 + S + 300 * MS);
    let first = ticks.iter().find(|(_, o)| matches!(o.msg, ServerMsg::Tick(_)));
    assert!(
        matches!(first, Some((at, Output { msg: ServerMsg::Tick(Tick { epoch: 2, .. }), .. })) if *at == T0 + S + 250 * MS)
    );
}

#[test]
fn large_rooms_tick_less_often_and_say_so_in_welcome() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let first = join(&mut room, T0, "v0");
    drain(&mut room);
    let interval = |out: &[(u64, Output)]| {
        let at: Vec<u64> = out.iter().filter(|(_, o)| matches!(o.msg, ServerMsg::Tick(_))).map(|(t, _)| *t).collect();
        at.windows(2).map(|w| w[1] - w[0]).max()
    };
    assert_eq!(interval(&run_until(&mut room, T0, T0 + 2 * S)), Some(250 * MS));
    room.set_remote_viewers(T0 + 2 * S, 9_999);
    assert_eq!(interval(&run_until(&mut room, T0 + 2 * S, T0 + 6 * S)), Some(S), "10,000 viewers: 1 s");
    let late = join(&mut room, T0 + 6 * S, "late");
    let welcome = drain(&mut room).into_iter().find_map(|o| match o.msg {
        ServerMsg::Welcome(w) if w.member_id == late => Some(w),
        _ => None,
    });
    assert_eq!(welcome.map(|w| w.limits.tick_interval_ms), Some(1000));
    assert_ne!(first, late);
}

#[test]
fn rate_change_is_continuous_and_honoured() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let h = join(&mut room, T0, "h");
    cmd(&mut room, T0, h, Action::Play { position_ms: Some(10_000) }).unwrap();
    tick(&mut room, T0 + 100 * MS);
    let at = T0 + 3 * S + 123_457;
    let old = room.timeline();
    cmd(&mut room, at, h, Action::SetRate { rate_milli: 1250 }).unwrap();
    tick(&mut room, at + MS);
    let t = room.timeline();
    assert_eq!(t.rate_milli, 1250);
    assert!(t.anchor_us >= at && t.anchor_us < at + MS, "takes effect within a millisecond");
    let before = old.position_us_at(t.anchor_us);
    assert!(t.position_us_at(t.anchor_us).abs_diff(before) <= 2, "jump at the rate change");
    let later = t.position_us_at(t.anchor_us + 4 * S);
    assert!(later.abs_diff(before + 5 * S) <= 2, "1.25x for 4 s adds 5 s");
}

#[test]
fn out_of_range_arguments_are_refused() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let h = join(&mut room, T0, "h");
    for a in [
        Action::SetRate { rate_milli: 0 },
        Action::SetRate { rate_milli: 4001 },
        Action::Seek { position_ms: u64::MAX },
        Action::Play { position_ms: Some(1 << 40) },
    ] {
        assert!(matches!(cmd(&mut room, T0, h, a), Err(CommandError::InvalidArgument(_))), "{a:?}");
    }
    assert_eq!(room.timeline(), Timeline::start(T0));
}

#[test]
fn late_joiner_gets_the_current_timeline_and_the_pending_change() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let h = join(&mut room, T0, "h");
    cmd(&mut room, T0, h, Action::Seek { position_ms: 42_000 }).unwrap();
    cmd(&mut room, T0 + 10 * MS, h, Action::Play { position_ms: None }).unwrap();
    drain(&mut room);
    let late = join(&mut room, T0 + 50 * MS, "late");
    let out = drain(&mut room);
    let mine: Vec<_> = out.iter().filter(|o| o.to == Audience::One(late)).collect();
    assert!(matches!(&mine[0].msg, ServerMsg::Welcome(w) if w.timeline.position_ms == 42_000 && w.timeline.paused));
    assert!(matches!(&mine[1].msg, ServerMsg::TimelineChanged(c)
        if !c.timeline.paused && c.effective_at_us == T0 + 110 * MS));
}

#[test]
fn play_then_pause_before_effect_cancels_and_vice_versa() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let h = join(&mut room, T0, "h");
    cmd(&mut room, T0, h, Action::Play { position_ms: None }).unwrap();
    cmd(&mut room, T0 + 20 * MS, h, Action::Pause { position_ms: None }).unwrap();
    run_until(&mut room, T0 + 20 * MS, T0 + S);
    assert!(room.timeline().paused);
    assert_eq!(room.timeline().position_ms, 0);

    cmd(&mut room, T0 + S, h, Action::Play { position_ms: None }).unwrap();
    tick(&mut room, T0 + S + 100 * MS);
    cmd(&mut room, T0 + 2 * S, h, Action::Pause { position_ms: None }).unwrap();
    cmd(&mut room, T0 + 2 * S + 10 * MS, h, Action::Play { position_ms: None }).unwrap();
    run_until(&mut room, T0 + 2 * S + 10 * MS, T0 + 3 * S);
    assert!(!room.timeline().paused, "the play cancelled the pending pause");
    assert_eq!(room.timeline().position_us_at(T0 + 3 * S), 1_900 * MS);
}

#[test]
fn reports_never_move_the_timeline() {
    let mut room = Room::new(RoomConfig { buffering: BufferingPolicy::Ignore, ..Default::default() }, T0);
    let h = join(&mut room, T0, "h");
    let before = room.timeline();
    rep(&mut room, T0 + S, h, Report { epoch: 0, position_us: 999 * S, rate_milli: 4000, buffering: true });
    rep(&mut room, T0 + 2 * S, h, Report { epoch: 0, position_us: 5, rate_milli: 1000, buffering: false });
    assert_eq!(room.timeline(), before);
    assert!(changes(&drain(&mut room)).is_empty());
}

fn playing_room(cfg: RoomConfig) -> (Room, MemberId, MemberId, u64) {
    let mut room = Room::new(cfg, T0);
    let h = join(&mut room, T0, "h");
    let v = join(&mut room, T0, "v");
    cmd(&mut room, T0, h, Action::Play { position_ms: None }).unwrap();
    tick(&mut room, T0 + 100 * MS);
    rep(&mut room, T0 + 500 * MS, v, report(false));
    drain(&mut room);
    (room, h, v, T0 + S)
}

#[test]
fn buffering_wait_pauses_everyone_and_resumes_on_recovery() {
    let (mut room, _h, v, now) = playing_room(RoomConfig::default());
    rep(&mut room, now, v, report(true));
    let c = changes(&drain(&mut room));
    assert_eq!((c[0].reason, c[0].by, c[0].timeline.paused), (ChangeReason::BufferingWait, v, true));
    tick(&mut room, now + 100 * MS);
    assert!(room.timeline().paused);
    assert!(room.state(now).buffering_wait);
    rep(&mut room, now + S, v, report(false));
    let c = changes(&drain(&mut room));
    assert_eq!((c[0].reason, c[0].by, c[0].timeline.paused), (ChangeReason::Resume, 0, false));
    tick(&mut room, now + S + 100 * MS);
    assert!(!room.timeline().paused);
    assert!(!room.state(now).buffering_wait);
    // A flapping member does not make the room stutter: no new wait soon after.
    rep(&mut room, now + 2 * S, v, report(true));
    rep(&mut room, now + 3 * S, v, report(false));
    assert!(changes(&drain(&mut room)).is_empty(), "no second wait within the cooldown");
}

#[test]
fn buffering_wait_times_out_and_the_room_never_stays_stuck() {
    let cfg = RoomConfig::default();
    let (max, cooldown) = (cfg.buffering_wait_max_us, cfg.buffering_cooldown_us);
    let (mut room, _h, v, now) = playing_room(cfg);
    rep(&mut room, now, v, report(true));
    drain(&mut room);
    let out = run_until(&mut room, now, now + max + S);
    let resumed: Vec<_> = out
        .iter()
        .filter_map(|(at, o)| match &o.msg {
            ServerMsg::TimelineChanged(c) if c.reason == ChangeReason::Resume => Some(*at),
            _ => None,
        })
        .collect();
    assert_eq!(resumed, vec![now + max], "resumed exactly at the deadline");
    assert!(!room.timeline().paused);
    // The stalled member catches up alone: a new stall within the cooldown is ignored.
    let t = now + max + 2 * S;
    rep(&mut room, t, v, report(false));
    rep(&mut room, t + S, v, report(true));
    assert!(changes(&drain(&mut room)).is_empty());
    // After the cooldown it may wait again.
    rep(&mut room, now + max + cooldown, v, report(false));
    rep(&mut room, now + max + cooldown + MS, v, report(true));
    assert_eq!(changes(&drain(&mut room))[0].reason, ChangeReason::BufferingWait);
}

#[test]
fn initial_loading_ignore_policy_and_host_pause_do_not_wait() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let h = join(&mut room, T0, "h");
    cmd(&mut room, T0, h, Action::Play { position_ms: None }).unwrap();
    tick(&mut room, T0 + 100 * MS);
    drain(&mut room);
    let v = join(&mut room, T0 + S, "v");
    rep(&mut room, T0 + S, v, report(true));
    assert!(changes(&drain(&mut room)).is_empty(), "a joiner loading is not a stall");

    let (mut room, ..) = playing_room(RoomConfig { buffering: BufferingPolicy::Ignore, ..Default::default() });
    rep(&mut room, T0 + S, 2, report(true));
    assert!(changes(&drain(&mut room)).is_empty());

    let (mut room, h, v, now) = playing_room(RoomConfig::default());
    rep(&mut room, now, v, report(true));
    drain(&mut room);
    cmd(&mut room, now + 500 * MS, h, Action::Pause { position_ms: None }).unwrap();
    let out = run_until(&mut room, now + 500 * MS, now + 10 * S);
    let c = changes(&drain(&mut room).into_iter().chain(out.into_iter().map(|(_, o)| o)).collect::<Vec<_>>());
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!((c[0].reason, c[0].by, c[0].timeline.paused), (ChangeReason::Pause, h, true));
    assert!(room.timeline().paused, "the host's pause ends the wait without resuming");
}

#[test]
fn a_buffering_member_leaving_ends_the_wait() {
    let (mut room, _h, v, now) = playing_room(RoomConfig::default());
    rep(&mut room, now, v, report(true));
    leave(&mut room, now + 200 * MS, v);
    tick(&mut room, now + 300 * MS);
    tick(&mut room, now + 400 * MS);
    assert!(!room.timeline().paused);
}

#[test]
fn join_storm_counts_are_coalesced_to_o_n() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let n = 1_000u64;
    let mut counts = Vec::new();
    let mut delivered = 0u64;
    for i in 0..n {
        let now = T0 + i * MS; // 1,000 joins in one second
        let due = now.max(room.poll_timeout().min(now));
        tick(&mut room, due);
        join(&mut room, now, &format!("d{i}"));
        for o in drain(&mut room) {
            if let ServerMsg::ViewerCount(c) = o.msg {
                counts.push((now, c.count));
                delivered += u64::from(room.viewers());
            }
        }
    }
    for (_, o) in run_until(&mut room, T0 + n * MS, T0 + n * MS + S) {
        if let ServerMsg::ViewerCount(c) = o.msg {
            counts.push((0, c.count));
            delivered += u64::from(room.viewers());
        }
    }
    assert_eq!(counts.last().map(|c| c.1), Some(1_000), "settles on the right count");
    assert!(counts.len() <= 6, "{} count messages", counts.len());
    assert!(delivered <= 6 * n, "O(N) deliveries: {delivered}");
    for w in counts.windows(2).filter(|w| w[0].0 != 0 && w[1].0 != 0) {
        assert!(w[1].0 - w[0].0 >= 250 * MS, "at most one count per 250 ms");
    }
}

#[test]
fn host_keeps_the_role_across_a_reconnect_then_hands_it_over() {
    let cfg = RoomConfig::default();
    let grace = cfg.host_grace_us;
    let mut room = Room::new(cfg, T0);
    let h = join(&mut room, T0, "host-dev");
    let v = join(&mut room, T0, "viewer-dev");
    leave(&mut room, T0 + S, h);
    let h2 = join(&mut room, T0 + 2 * S, "host-dev");
    assert_eq!(room.role(h2), Some(Role::Host));
    leave(&mut room, T0 + 3 * S, h2);
    tick(&mut room, T0 + 3 * S + grace - 1);
    assert_eq!(room.role(v), Some(Role::Viewer));
    drain(&mut room);
    tick(&mut room, T0 + 3 * S + grace);
    assert_eq!(room.role(v), Some(Role::Host));
    assert!(drain(&mut room).iter().any(|o| matches!(o.msg,
        ServerMsg::RoleChanged(RoleChanged { member_id, role: Role::Host }) if member_id == v)));
}

#[test]
fn a_claimed_host_supersedes_the_first_joiner_fallback() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let first = join(&mut room, T0, "early");
    assert_eq!(room.role(first), Some(Role::Host));
    drain(&mut room);
    let b = room.join(T0, JoinInfo { device_id: "b".into(), name: "b".into(), host_claim: true, ..Default::default() });
    assert_eq!((room.role(b), room.role(first)), (Some(Role::Host), Some(Role::Viewer)));
    assert!(drain(&mut room).iter().any(|o| matches!(o.msg,
        ServerMsg::RoleChanged(RoleChanged { member_id, role: Role::Viewer }) if member_id == first)));
    // Once a claimed host is there, late joiners are viewers.
    let late = join(&mut room, T0, "late");
    assert_eq!(room.role(late), Some(Role::Viewer));
}

#[test]
fn co_hosts_command_and_only_the_host_assigns_roles() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let h = join(&mut room, T0, "h");
    let v = join(&mut room, T0, "v");
    assert_eq!(room.set_role(v, h, Role::Viewer), Err(CommandError::Forbidden));
    room.set_role(h, v, Role::CoHost).unwrap();
    assert_eq!(cmd(&mut room, T0, v, Action::Seek { position_ms: 1 }), Ok(()));
    room.set_policy(h, ControlPolicy::Everyone).unwrap();
    assert_eq!(room.state(T0).policy, ControlPolicy::Everyone);
    // The same over the protocol: only the host may, and everyone hears of it.
    drain(&mut room);
    let w = join(&mut room, T0, "w");
    assert_eq!(
        cmd(&mut room, T0, w, Action::SetPolicy { policy: ControlPolicy::HostOnly }),
        Err(CommandError::Forbidden)
    );
    assert_eq!(
        cmd(&mut room, T0, w, Action::SetRole { member_id: w, role: Role::CoHost }),
        Err(CommandError::Forbidden)
    );
    cmd(&mut room, T0, h, Action::SetPolicy { policy: ControlPolicy::HostOnly }).unwrap();
    cmd(&mut room, T0, h, Action::SetRole { member_id: v, role: Role::Viewer }).unwrap();
    let out = drain(&mut room);
    assert!(out.iter().any(|o| o.to == Audience::All
        && matches!(o.msg, ServerMsg::PolicyChanged(PolicyChanged { policy: ControlPolicy::HostOnly, by }) if by == h)));
    assert!(out.iter().any(
        |o| matches!(o.msg, ServerMsg::RoleChanged(RoleChanged { member_id, role: Role::Viewer }) if member_id == v)
    ));
    assert_eq!(cmd(&mut room, T0, v, Action::Seek { position_ms: 1 }), Err(CommandError::Forbidden));
}

#[test]
fn ticks_are_periodic_and_presence_is_opt_in() {
    let cfg = RoomConfig { show_members: true, ..Default::default() };
    let interval = cfg.tick_interval_us;
    let mut room = Room::new(cfg, T0);
    let a = join(&mut room, T0, "a");
    let b = room.join(T0, JoinInfo { device_id: "b".into(), name: "b".into(), ..Default::default() });
    let out = drain(&mut room);
    let joined = out.iter().find(|o| matches!(o.msg, ServerMsg::MemberJoined(_))).unwrap();
    assert!(room.is_recipient(joined.to, a) && !room.is_recipient(joined.to, b));
    let ticks = run_until(&mut room, T0, T0 + 10 * interval)
        .into_iter()
        .filter(|(_, o)| matches!(o.msg, ServerMsg::Tick(_)))
        .count();
    assert_eq!(ticks, 10);
}

// ------------------------------------------------------------ scale-out (single room)

#[test]
fn remote_viewers_are_counted_and_coalesced() {
    let mut room = Room::new(RoomConfig::default(), T0);
    join(&mut room, T0, "a");
    drain(&mut room);
    room.set_remote_viewers(T0 + S, 5);
    let counts: Vec<u32> = drain(&mut room)
        .into_iter()
        .filter_map(|o| match o.msg {
            ServerMsg::ViewerCount(c) => Some(c.count),
            _ => None,
        })
        .collect();
    assert_eq!(counts, vec![6]);
    assert_eq!((room.viewers(), room.local_viewers()), (6, 1));
}

#[test]
fn a_snapshot_replaces_what_a_node_knows_of_the_others() {
    let mut a = Room::new(RoomConfig::default(), T0);
    a.enable_sharing(ID_BLOCK);
    let joined = |id, role| Shared::Joined {
        id,
        role,
        claimed: false,
        name: "x".into(),
        device: format!("d{id}"),
        user: format!("u{id}"),
        stall: None,
        holds: false,
    };
    a.set_remote_members(T0, vec![("B".into(), joined(7, Role::Host)), ("B".into(), joined(8, Role::Viewer))]);
    assert_eq!(a.state(T0).members.host, vec![7]);
    let me = join(&mut a, T0, "me");
    assert_eq!(a.role(me), Some(Role::Viewer));
    // Redis came back: 8 is gone, 7 became a co-host, 9 joined meanwhile.
    a.set_remote_members(T0 + S, vec![("B".into(), joined(7, Role::CoHost)), ("C".into(), joined(9, Role::Viewer))]);
    let s = a.state(T0 + S);
    assert_eq!((s.members.co_host, s.members.viewer), (vec![7], vec![9, me]));
    // A stall is stored with its member: the snapshot's word on it holds, either way.
    let stalled = |id, why: &str| match joined(id, Role::Viewer) {
        Shared::Joined { id, role, claimed, name, device, user, .. } => {
            Shared::Joined { id, role, claimed, name, device, user, stall: Some(why.into()), holds: false }
        }
        _ => unreachable!(),
    };
    let suspended =
        |a: &Room, t| a.state(t).suspended.iter().map(|s| (s.member_id, s.reason.clone())).collect::<Vec<_>>();
    a.set_remote_members(
        T0 + 2 * S,
        vec![("B".into(), joined(7, Role::CoHost)), ("C".into(), stalled(9, "buffering"))],
    );
    assert_eq!(suspended(&a, T0 + 2 * S), vec![(9, "buffering".to_owned())]);
    a.set_remote_members(
        T0 + 3 * S,
        vec![("B".into(), joined(7, Role::CoHost)), ("C".into(), joined(9, Role::Viewer))],
    );
    assert!(suspended(&a, T0 + 3 * S).is_empty());
    // A member first known from a stored record with a stall is listed with it.
    a.set_remote_members(T0 + 4 * S, vec![("B".into(), stalled(10, "interstitial"))]);
    assert_eq!(suspended(&a, T0 + 4 * S), vec![(10, "interstitial".to_owned())]);
}

#[test]
fn member_ids_stay_in_the_nodes_block_and_skip_ids_in_use() {
    let mut a = Room::new(RoomConfig::default(), T0);
    a.enable_sharing(ID_BLOCK);
    a.next_member = 2 * ID_BLOCK - 1;
    let last = join(&mut a, T0, "last");
    let wrapped = join(&mut a, T0, "wrapped");
    assert_eq!((last, wrapped), (2 * ID_BLOCK - 1, ID_BLOCK));
    a.next_member = ID_BLOCK;
    assert_eq!(join(&mut a, T0, "next"), ID_BLOCK + 1, "an id in use is skipped");
}

#[test]
fn large_rooms_schedule_play_and_pause_further_ahead() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let h = join(&mut room, T0, "h");
    cmd(&mut room, T0, h, Action::Play { position_ms: None }).unwrap();
    assert_eq!(changes(&drain(&mut room))[0].effective_at_us, T0 + 100 * MS, "the configured lead");
    room.set_remote_viewers(T0 + S, 9_999);
    cmd(&mut room, T0 + S, h, Action::Pause { position_ms: None }).unwrap();
    let pause = changes(&drain(&mut room)).pop().unwrap();
    assert_eq!(pause.effective_at_us, T0 + S + 208 * MS, "100 ms + 12 µs × 9,000 viewers");
}

#[test]
fn datagram_members_lengthen_the_lead_for_what_their_fan_out_costs() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let h = join(&mut room, T0, "h");
    let dgram =
        |i: usize| JoinInfo { device_id: format!("d{i}"), name: "d".into(), datagrams: true, ..Default::default() };
    let ids: Vec<_> = (0..2_000).map(|i| room.join(T0, dgram(i))).collect();
    drain(&mut room);
    cmd(&mut room, T0 + S, h, Action::Play { position_ms: None }).unwrap();
    let play = changes(&drain(&mut room)).pop().unwrap();
    // 2,001 members: 12 µs × 1,001 viewers + 20 µs × 1,000 datagram members.
    assert_eq!(play.effective_at_us, T0 + S + 100 * MS + 12_012 + 20_000);
    for id in &ids[..1_500] {
        room.leave(T0 + S, *id);
    }
    drain(&mut room);
    cmd(&mut room, T0 + 2 * S, h, Action::Pause { position_ms: None }).unwrap();
    let pause = changes(&drain(&mut room)).pop().unwrap();
    // (A pause lands on a whole millisecond of media: within 1 ms of the lead.)
    let lead = pause.effective_at_us - (T0 + 2 * S);
    assert!((100 * MS..101 * MS).contains(&lead), "leaving members no longer count: {lead} µs");
}

/// The lead of a play issued by `h` at `now` (then paused again, so the next play is a change too).
fn play_lead(room: &mut Room, now: u64, h: MemberId) -> u64 {
    drain(room);
    cmd(room, now, h, Action::Play { position_ms: None }).unwrap();
    let play = changes(&drain(room)).pop().unwrap();
    room.handle_timeout(play.effective_at_us);
    cmd(room, play.effective_at_us, h, Action::Pause { position_ms: None }).unwrap();
    let pause = changes(&drain(room)).pop().unwrap();
    room.handle_timeout(pause.effective_at_us);
    play.effective_at_us - now
}

#[test]
fn the_lead_grows_to_the_members_round_trips_and_no_further() {
    let mut room = Room::new(RoomConfig { changes_per_sec: 0, ..RoomConfig::default() }, T0);
    let h = join(&mut room, T0, "h");
    let v1 = join(&mut room, T0, "v1");
    let v2 = join(&mut room, T0, "v2");
    assert_eq!(room.reach_view(), ReachView { lead_ms: 100.0, rtt_p95_ms: None, measured: 0, remote: 0 });
    for id in [h, v1, v2] {
        room.member_rtt(T0, id, 2 * MS);
    }
    assert_eq!(play_lead(&mut room, T0 + 10 * S, h), 100 * MS, "nearby members: the configured lead");
    // One far member of three is the 95th percentile: everyone waits for it.
    room.member_rtt(T0 + 20 * S, v2, 300 * MS);
    assert_eq!(room.reach_view(), ReachView { lead_ms: 300.0, rtt_p95_ms: Some(300.0), measured: 3, remote: 0 });
    assert_eq!(play_lead(&mut room, T0 + 30 * S, h), 300 * MS);
    // A stalled path is not waited for beyond --lead-max-ms.
    room.member_rtt(T0 + 40 * S, v2, 4_000 * MS);
    assert_eq!(play_lead(&mut room, T0 + 50 * S, h), 1_000 * MS);
    // Its latest measurement wins; and a member that left no longer counts.
    room.member_rtt(T0 + 60 * S, v2, 150 * MS);
    assert_eq!(play_lead(&mut room, T0 + 70 * S, h), 150 * MS);
    room.leave(T0 + 80 * S, v2);
    assert_eq!(room.reach_view().measured, 2);
    assert_eq!(play_lead(&mut room, T0 + 90 * S, h), 100 * MS);
    room.member_rtt(T0 + 100 * S, 999_999, 900 * MS);
    assert_eq!(room.reach_view().measured, 2, "not a member: ignored");
}

#[test]
fn a_few_far_members_of_a_large_room_do_not_hold_it_back() {
    let mut room = Room::new(RoomConfig { changes_per_sec: 0, ..RoomConfig::default() }, T0);
    let h = join(&mut room, T0, "h");
    let ids: Vec<_> = (0..99).map(|i| join(&mut room, T0, &format!("v{i}"))).collect();
    room.member_rtt(T0, h, 20 * MS);
    for (i, id) in ids.iter().enumerate() {
        room.member_rtt(T0, *id, if i < 5 { 800 * MS } else { 20 * MS });
    }
    // 5 of 100 far: the 95th percentile is still a near one.
    assert_eq!(room.reach_view().rtt_p95_ms, Some(20.0));
    assert_eq!(play_lead(&mut room, T0 + S, h), 100 * MS);
    // 6 of 100: no longer a few.
    room.member_rtt(T0 + 2 * S, ids[5], 800 * MS);
    assert_eq!(play_lead(&mut room, T0 + 3 * S, h), 800 * MS);
}

#[test]
fn a_large_room_recomputes_its_round_trips_at_most_once_a_second() {
    let mut room = Room::new(RoomConfig { changes_per_sec: 0, ..RoomConfig::default() }, T0);
    let h = join(&mut room, T0, "h");
    let ids: Vec<_> = (0..299).map(|i| join(&mut room, T0, &format!("v{i}"))).collect();
    for id in ids.iter().chain([&h]) {
        room.member_rtt(T0, *id, 10 * MS);
    }
    assert_eq!(room.reach_view().measured, 1, "300 members: computed at the first sample only");
    for id in &ids[..30] {
        room.member_rtt(T0 + 500 * MS, *id, 400 * MS);
    }
    assert_eq!(room.reach_view().rtt_p95_ms, Some(10.0), "not within the second");
    room.member_rtt(T0 + S, ids[100], 10 * MS);
    assert_eq!(room.reach_view(), ReachView { lead_ms: 400.0, rtt_p95_ms: Some(400.0), measured: 300, remote: 0 });
}

#[test]
fn a_lead_max_at_or_below_the_lead_keeps_it_fixed() {
    let cfg = RoomConfig { changes_per_sec: 0, lead_us: 150 * MS, lead_max_us: 0, ..RoomConfig::default() };
    let mut room = Room::new(cfg, T0);
    let h = join(&mut room, T0, "h");
    room.member_rtt(T0, h, 600 * MS);
    assert_eq!(play_lead(&mut room, T0 + S, h), 150 * MS);
}

#[test]
fn scaled_out_the_round_trips_of_every_nodes_members_count() {
    let mut room = Room::new(RoomConfig { changes_per_sec: 0, ..RoomConfig::default() }, T0);
    let h = join(&mut room, T0, "h");
    let v = join(&mut room, T0, "v");
    room.member_rtt(T0, h, 2 * MS);
    room.member_rtt(T0, v, 3 * MS);
    // What this node shares: whole ms, nearby members counted as the lead.
    assert_eq!(room.reach_counts(), vec![(100, 2)]);
    // One far member on another node (of three in all) lengthens a play scheduled here.
    room.set_remote_reach(T0 + S, vec![(420, 1)]);
    assert_eq!(room.reach_view(), ReachView { lead_ms: 420.0, rtt_p95_ms: Some(420.0), measured: 3, remote: 1 });
    assert_eq!(play_lead(&mut room, T0 + 2 * S, h), 420 * MS);
    // Its node's entry gone (it left, or its node stopped beating): the lead is back.
    room.set_remote_reach(T0 + 3 * S, vec![]);
    assert_eq!(room.reach_view().remote, 0);
    assert_eq!(play_lead(&mut room, T0 + 4 * S, h), 100 * MS);
    // Many near members elsewhere: this node's 2 far ones are fewer than 5 %.
    room.member_rtt(T0 + 5 * S, v, 700 * MS);
    room.member_rtt(T0 + 5 * S, h, 700 * MS);
    room.set_remote_reach(T0 + 5 * S, vec![(100, 97), (250, 1)]);
    assert_eq!(room.reach_view().rtt_p95_ms, Some(100.0));
    assert_eq!(play_lead(&mut room, T0 + 6 * S, h), 100 * MS);
    room.set_remote_reach(T0 + 7 * S, vec![(100, 28)]);
    assert_eq!(play_lead(&mut room, T0 + 8 * S, h), 700 * MS, "2 of 30 far");
    // The share is capped at --lead-max-ms (the lead comes out the same).
    room.member_rtt(T0 + 9 * S, v, 4_000 * MS);
    assert_eq!(room.reach_counts(), vec![(700, 1), (1_000, 1)]);
    room.member_rtt(T0 + 9 * S, v, 1_500);
    assert_eq!(room.reach_counts(), vec![(100, 1), (700, 1)], "1.5 ms counts as the lead");
}

// ------------------------------------------------------------ answers, budget, commits

fn join_acks(room: &mut Room, now: u64, device: &str) -> MemberId {
    room.join(now, JoinInfo { device_id: device.into(), name: device.into(), wants_acks: true, ..Default::default() })
}

fn acks(out: &[Output], to: MemberId) -> Vec<(u32, AckOutcome, u32)> {
    out.iter()
        .filter_map(|o| match &o.msg {
            ServerMsg::Ack(a) if o.to == Audience::One(to) => Some((a.request_id, a.outcome, a.epoch)),
            _ => None,
        })
        .collect()
}

fn errors(out: &[Output], to: MemberId) -> Vec<(u32, u16, String)> {
    out.iter()
        .filter_map(|o| match &o.msg {
            ServerMsg::Error(e) if o.to == Audience::One(to) => Some((e.request_id, e.code, e.message.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn every_command_with_a_request_id_is_answered_once() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let h = join_acks(&mut room, T0, "h");
    let v = join(&mut room, T0, "v");
    drain(&mut room);
    let send = |room: &mut Room, rid, by, a| {
        let _ = room.command(T0 + S, by, rid, a);
        commit(room, T0 + S);
    };
    send(&mut room, 1, h, Action::Play { position_ms: None });
    send(&mut room, 2, h, Action::Play { position_ms: None });
    send(&mut room, 3, h, Action::SetRole { member_id: v, role: Role::CoHost });
    send(&mut room, 4, h, Action::SetPolicy { policy: ControlPolicy::Everyone });
    send(&mut room, 0, h, Action::Seek { position_ms: 5 });
    send(&mut room, 5, h, Action::Seek { position_ms: u64::MAX });
    send(&mut room, 6, v, Action::Seek { position_ms: 9 });
    let out = drain(&mut room);
    let (u, play_at) = (AckOutcome::Unchanged, out.iter().position(|o| matches!(o.msg, ServerMsg::TimelineChanged(_))));
    assert_eq!(
        acks(&out, h),
        vec![(1, AckOutcome::Applied, 1), (2, u, 1), (3, AckOutcome::Applied, 1), (4, AckOutcome::Applied, 1)]
    );
    let ack1 = out.iter().position(|o| matches!(o.msg, ServerMsg::Ack(a) if a.request_id == 1));
    assert_eq!(ack1, play_at.map(|p| p + 1), "the ack follows its change");
    assert_eq!(errors(&out, h).iter().map(|e| e.0).collect::<Vec<_>>(), vec![5]);
    assert!(acks(&out, v).is_empty() && errors(&out, v).is_empty(), "no ACKS capability, no failure");
}

#[test]
fn a_record_that_fell_behind_never_takes_the_timeline_back() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let host = join_acks(&mut room, T0, "host");
    cmd(&mut room, T0 + MS, host, Action::Seek { position_ms: 5_000 }).unwrap();
    let old = room.confirmed_change();
    cmd(&mut room, T0 + 2 * MS, host, Action::Seek { position_ms: 9_000 }).unwrap();
    cmd(&mut room, T0 + 3 * MS, host, Action::Play { position_ms: None }).unwrap();
    drain(&mut room);
    // What the room offers to be written forward: its newest confirmed change, the scheduled play.
    let offered = room.confirmed_change();
    assert_eq!(offered.timeline.epoch, room.epoch());
    assert!(!offered.timeline.paused && offered.effective_at_us > T0 + 3 * MS, "{offered:?}");
    // Redis lost the last changes: the record loaded again is the older one; nothing moves.
    let (timeline, epoch) = (room.timeline(), room.epoch());
    room.confirm(T0 + 4 * MS, old);
    assert_eq!((room.timeline(), room.epoch()), (timeline, epoch));
    assert!(changes(&drain(&mut room)).is_empty());
    assert_eq!(room.confirmed_change(), offered);
    // A newer record (another node's change) is adopted as before.
    let newer = TimelineChanged {
        timeline: Timeline { epoch: epoch + 1, position_ms: 1_000, anchor_us: T0 + 5 * MS, ..timeline },
        effective_at_us: T0 + 5 * MS,
        by: 0,
        reason: ChangeReason::Seek,
    };
    room.confirm(T0 + 5 * MS, newer.clone());
    assert_eq!(room.epoch(), epoch + 1);
    assert_eq!(changes(&drain(&mut room)).last().map(|c| c.timeline), Some(newer.timeline));
}

#[test]
fn a_change_the_authority_refuses_never_reaches_anyone() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let host = join_acks(&mut room, T0, "host");
    drain(&mut room);
    let before = room.timeline();
    // Unreachable: rolled back silently, the command answered with the error.
    room.command(T0 + MS, host, 7, Action::Seek { position_ms: 9_000 }).unwrap();
    assert!(room.poll_output().is_none(), "staged until committed");
    let req = room.poll_commit().expect("a request");
    assert_eq!((req.expected, req.change.timeline.epoch, req.change.timeline.position_ms), (0, 1, 9_000));
    assert!(room.poll_commit().is_none(), "one request in flight");
    room.on_commit(T0 + 2 * MS, CommitResult::Failed);
    let out = drain(&mut room);
    assert_eq!((room.timeline(), room.epoch()), (before, 0));
    assert!(changes(&out).is_empty() && acks(&out, host).is_empty());
    assert_eq!(errors(&out, host), vec![(7, ErrorCode::Internal.as_u16(), authority::UNREACHABLE.into())]);

    // Lost a race: the winner applies, a member who joined meanwhile is
    // welcomed on the restored timeline, and the command is retried once.
    room.command(T0 + 3 * S, host, 8, Action::Seek { position_ms: 9_000 }).unwrap();
    let late = join(&mut room, T0 + 3 * S + MS, "late");
    let req = room.poll_commit().unwrap();
    let winner = TimelineChanged {
        timeline: Timeline { position_ms: 3_000, anchor_us: T0 + 3 * S, epoch: 1, ..before },
        effective_at_us: T0 + 3 * S,
        by: 0,
        reason: ChangeReason::Seek,
    };
    room.on_commit(T0 + 3 * S + 2 * MS, CommitResult::Conflict(winner.clone()));
    let retry = room.poll_commit().expect("retried");
    assert_eq!((retry.expected, retry.change.timeline.epoch), (1, 2));
    assert_ne!(retry, req);
    room.on_commit(T0 + 3 * S + 3 * MS, CommitResult::Committed);
    let out = drain(&mut room);
    let welcome = out.iter().find_map(|o| match &o.msg {
        ServerMsg::Welcome(w) if w.member_id == late => Some(w.timeline),
        _ => None,
    });
    assert_eq!(welcome, Some(before), "patched to the restored timeline");
    let c = changes(&out);
    assert_eq!(c.iter().map(|c| c.timeline.epoch).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(c[0], winner);
    assert_eq!(acks(&out, host), vec![(8, AckOutcome::Applied, 2)]);
    assert_eq!(room.timeline().position_ms, 9_000);

    // Lost twice: answered with the error, the winner stays.
    room.command(T0 + 5 * S, host, 9, Action::Seek { position_ms: 1 }).unwrap();
    for epoch in [3, 4] {
        room.poll_commit().unwrap();
        let w = TimelineChanged { timeline: Timeline { epoch, ..winner.timeline }, ..winner };
        room.on_commit(T0 + 5 * S, CommitResult::Conflict(w));
    }
    let out = drain(&mut room);
    assert_eq!(errors(&out, host), vec![(9, ErrorCode::Internal.as_u16(), authority::CONFLICT.into())]);
    assert_eq!((room.epoch(), room.confirmed_epoch(), room.timeline().position_ms), (4, 4, 3_000));
    room.refuse(host, 7, ErrorCode::Internal, "down");
    assert!(matches!(&drain(&mut room)[..], [Output { to: Audience::One(h), msg: ServerMsg::Error(_) }] if *h == host));
}

#[test]
fn a_change_made_elsewhere_waits_for_the_reply_in_flight() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let host = join_acks(&mut room, T0, "host");
    drain(&mut room);
    let ext = |epoch, position_ms| TimelineChanged {
        timeline: Timeline { position_ms, epoch, ..Timeline::start(T0) },
        effective_at_us: T0,
        by: 0,
        reason: ChangeReason::Seek,
    };
    // Our own publication before our reply: nothing changes.
    room.command(T0 + S, host, 1, Action::Seek { position_ms: 10 }).unwrap();
    let mine = room.poll_commit().unwrap().change;
    room.apply_external(T0 + S, mine.clone());
    room.on_commit(T0 + S, CommitResult::Committed);
    room.apply_external(T0 + S, mine);
    assert_eq!(changes(&drain(&mut room)).len(), 1);
    // Another node's change committed after ours, arriving before our reply,
    // while a second change of ours waits: ours lost, retried on top of it.
    room.command(T0 + 2 * S, host, 2, Action::Seek { position_ms: 20 }).unwrap();
    room.command(T0 + 2 * S, host, 3, Action::Seek { position_ms: 30 }).unwrap();
    room.poll_commit().unwrap();
    room.apply_external(T0 + 2 * S, ext(3, 99));
    room.on_commit(T0 + 2 * S, CommitResult::Committed);
    let req = room.poll_commit().unwrap();
    assert_eq!((req.expected, req.change.timeline.epoch, req.change.timeline.position_ms), (3, 4, 30));
    room.on_commit(T0 + 2 * S, CommitResult::Committed);
    let out = drain(&mut room);
    let epochs: Vec<u32> = changes(&out).iter().map(|c| c.timeline.epoch).collect();
    assert_eq!(epochs, vec![2, 3, 4], "only committed changes, in order");
    assert_eq!(acks(&out, host), vec![(2, AckOutcome::Applied, 2), (3, AckOutcome::Applied, 4)]);
    // An older or equal epoch is ignored.
    room.apply_external(T0 + 3 * S, ext(4, 1));
    room.apply_external(T0 + 3 * S, ext(2, 1));
    assert!(drain(&mut room).is_empty());
}

/// 200 members each seeking 5 times a second in a 2,000-viewer room cost at
/// most the budget's fan-outs, every command is answered once, and everyone
/// ends on the last accepted seek.
#[test]
fn a_flood_of_seeks_costs_at_most_the_budget() {
    let cfg = RoomConfig { policy: ControlPolicy::Everyone, ..Default::default() };
    let rate = u64::from(cfg.changes_per_sec);
    let mut room = Room::new(cfg, T0);
    let seekers: Vec<MemberId> = (0..200).map(|i| join_acks(&mut room, T0, &format!("s{i}"))).collect();
    for i in 0..1_800 {
        join(&mut room, T0, &format!("v{i}"));
    }
    drain(&mut room);
    let mut answers: BTreeMap<(MemberId, u32), Vec<AckOutcome>> = BTreeMap::new();
    let mut fanouts = Vec::new();
    let collect = |room: &mut Room, now: u64, answers: &mut BTreeMap<_, Vec<_>>, fanouts: &mut Vec<u64>| {
        for o in drain(room) {
            match (o.to, o.msg) {
                (Audience::One(to), ServerMsg::Ack(a)) => {
                    answers.entry((to, a.request_id)).or_default().push(a.outcome)
                }
                (_, ServerMsg::TimelineChanged(_)) => fanouts.push(now),
                (_, ServerMsg::Error(e)) => panic!("{e:?}"),
                _ => {}
            }
        }
    };
    let mut now = T0 + S;
    let mut rid = 0u32;
    let mut last = 0;
    for _ in 0..3 * 5 {
        // Every seeker once per 200 ms, spread over the interval.
        for (k, &s) in seekers.iter().enumerate() {
            now += MS;
            rid += 1;
            last = u64::from(rid);
            room.command(now, s, rid, Action::Seek { position_ms: last }).unwrap();
            commit(&mut room, now);
            collect(&mut room, now, &mut answers, &mut fanouts);
            if k % 20 == 0 {
                tick(&mut room, now);
            }
        }
    }
    for (at, o) in run_until(&mut room, now, now + 2 * S) {
        match (o.to, o.msg) {
            (Audience::One(to), ServerMsg::Ack(a)) => answers.entry((to, a.request_id)).or_default().push(a.outcome),
            (_, ServerMsg::TimelineChanged(_)) => fanouts.push(at),
            _ => {}
        }
    }
    assert_eq!(answers.len(), rid as usize, "every command answered");
    assert!(answers.values().all(|a| a.len() == 1), "exactly once");
    let coalesced = answers.values().filter(|a| a[0] == AckOutcome::Coalesced).count();
    assert!(coalesced > 2_900, "{coalesced} coalesced");
    let span = (fanouts.last().unwrap() - T0 - S).div_ceil(S);
    assert!(fanouts.len() as u64 <= rate * (span + 1), "{} fan-outs in {span} s", fanouts.len());
    for w in fanouts.windows(rate as usize + 1) {
        assert!(w[rate as usize] - w[0] >= 900 * MS || w[0] < T0 + 2 * S, "at most the budget per second");
    }
    assert_eq!(room.held_commands(), 0);
    assert_eq!(room.timeline().position_ms, last, "the last seek wins");
}

#[test]
fn held_commands_are_checked_again_and_dropped_with_their_member() {
    let cfg = RoomConfig { changes_per_sec: 1, ..Default::default() };
    let mut room = Room::new(cfg, T0);
    let h = join_acks(&mut room, T0, "h");
    let c = join_acks(&mut room, T0, "c");
    room.set_role(h, c, Role::CoHost).unwrap();
    drain(&mut room);
    cmd(&mut room, T0, h, Action::Seek { position_ms: 1 }).unwrap();
    // Held (the budget is spent): c's seek, then h's replaces it.
    room.command(T0 + MS, c, 2, Action::Seek { position_ms: 2 }).unwrap();
    room.command(T0 + MS, c, 3, Action::SetRate { rate_milli: 1500 }).unwrap();
    room.command(T0 + 2 * MS, h, 4, Action::Seek { position_ms: 4 }).unwrap();
    assert_eq!(room.held_commands(), 2);
    assert_eq!(room.budget.next_run_at(), Some(T0 + S), "the next token");
    // c is a viewer again before its rate change runs: refused when it runs.
    room.command(T0 + 3 * MS, h, 5, Action::SetRole { member_id: c, role: Role::Viewer }).unwrap();
    commit(&mut room, T0 + 3 * MS);
    let out = drain(&mut room);
    assert!(acks(&out, c).is_empty());
    tick(&mut room, T0 + S);
    let out = drain(&mut room);
    assert_eq!(errors(&out, c).iter().map(|e| e.0).collect::<Vec<_>>(), vec![3]);
    assert_eq!(acks(&out, c), vec![(2, AckOutcome::Coalesced, 2)]);
    assert_eq!(acks(&out, h), vec![(4, AckOutcome::Applied, 2)]);
    // A member's held command leaves with it; what it replaced is answered.
    room.command(T0 + S + MS, h, 6, Action::Pause { position_ms: None }).unwrap();
    room.set_role(h, c, Role::CoHost).unwrap();
    room.command(T0 + S + MS, c, 7, Action::Seek { position_ms: 7 }).unwrap();
    room.command(T0 + S + MS, h, 8, Action::Seek { position_ms: 8 }).unwrap();
    room.command(T0 + S + MS, c, 9, Action::Seek { position_ms: 9 }).unwrap();
    leave(&mut room, T0 + S + 2 * MS, c);
    let out = drain(&mut room);
    assert_eq!(acks(&out, h), vec![(6, AckOutcome::Unchanged, 2), (8, AckOutcome::Coalesced, 2)]);
    assert_eq!(room.held_commands(), 0);
}

// ------------------------------------------------------------ scale-out (simulated nodes)

fn open() -> RoomConfig {
    RoomConfig { policy: ControlPolicy::Everyone, ..Default::default() }
}

#[test]
fn sim_a_scheduled_pause_lands_on_the_same_position_on_every_node() {
    let mut sim = sim::Sim::new(2, RoomConfig::default(), 1);
    let host = sim.join(0, "host", false);
    let viewer = sim.join(1, "viewer", false);
    sim.drive();
    sim.command(host, Action::Play { position_ms: Some(1_000) });
    sim.drive();
    sim.run_for(S);
    sim.command(host, Action::Pause { position_ms: None });
    sim.drive();
    sim.check_settled();
    assert!(sim.record.timeline.paused && sim.record.reason == ChangeReason::Pause);
    assert_eq!(sim.clients[viewer].epochs, vec![0, 1, 2]);
    assert_eq!(sim.nodes[0].room.timeline(), sim.nodes[1].room.timeline());
}

#[test]
fn sim_concurrent_commands_race_and_the_loser_is_retried_once() {
    for seed in 0..20 {
        let mut sim = sim::Sim::new(2, open(), seed);
        let a = sim.join(0, "a", false);
        let b = sim.join(1, "b", false);
        sim.drive();
        sim.command(a, Action::Seek { position_ms: 10_000 });
        sim.command(b, Action::Seek { position_ms: 20_000 });
        sim.drive();
        sim.check_settled();
        assert_eq!(sim.record.timeline.epoch, 2, "both applied, one after the other");
        assert_eq!(sim.errors_with(authority::CONFLICT), 0);
    }
}

#[test]
fn sim_three_nodes_a_command_that_loses_twice_is_answered_with_the_error() {
    let mut sim = sim::Sim::new(3, open(), 7);
    sim.authority_lat = (5 * MS, 5 * MS);
    sim.client_lat = (10 * MS, 10 * MS);
    let c: Vec<usize> = (0..3).map(|n| sim.join(n, &format!("m{n}"), false)).collect();
    sim.drive();
    for (i, &c) in c.iter().enumerate() {
        sim.command(c, Action::Seek { position_ms: 1_000 * (i as u64 + 1) });
    }
    sim.drive();
    sim.check_settled();
    assert_eq!(sim.errors_with(authority::CONFLICT), 1, "the third lost its retry too");
    assert_eq!(sim.record.timeline.epoch, 2);
}

/// Three nodes of a host-only room: the host on the first plays; a viewer on
/// each of the others has followed smoothly for a second (its stalls may make
/// the room wait).
fn playing_on_three_nodes(cfg: &RoomConfig, seed: u64) -> (sim::Sim, usize, usize) {
    let mut sim = sim::Sim::new(3, cfg.clone(), seed);
    let h = sim.join(0, "h", false);
    let v1 = sim.join(1, "v1", false);
    let v2 = sim.join(2, "v2", false);
    sim.drive();
    sim.command(h, Action::Play { position_ms: None });
    sim.drive();
    for v in [v1, v2] {
        sim.report(v, false);
    }
    sim.run_for(S);
    (sim, v1, v2)
}

/// Scale-out, §6.4: a member stalling on one node pauses the room for every
/// node; every node lists it; a member of a third node stalling meanwhile
/// holds that wait too (the room resumes only when both recovered); and a
/// wait whose node dies ends anyway (the other nodes resume the room one
/// second after its deadline).
#[test]
fn sim_a_wait_spans_the_nodes_and_outlives_none() {
    let cfg = RoomConfig::default();
    let max = cfg.buffering_wait_max_us;
    for seed in 0..10 {
        let (mut sim, v1, v2) = playing_on_three_nodes(&cfg, seed);
        sim.report(v1, true);
        sim.drive();
        assert!(sim.record.timeline.paused && sim.record.reason == ChangeReason::BufferingWait, "seed {seed}");
        let (id1, id2) = (sim.clients[v1].id, sim.clients[v2].id);
        for n in 0..3 {
            let st = sim.nodes[n].room.state(sim.now);
            assert!(st.buffering_wait, "seed {seed}: node {n} knows the room waits");
            let who: Vec<_> = st.suspended.iter().map(|s| (s.member_id, s.name.as_str(), s.reason.as_str())).collect();
            assert_eq!(who, vec![(id1, "v1", "buffering")], "seed {seed}: node {n} lists who");
        }
        // A member of another node stalls during the wait: it holds it too.
        sim.report(v2, true);
        sim.drive();
        let st = sim.nodes[0].room.state(sim.now);
        assert_eq!(st.suspended.iter().map(|s| s.member_id).collect::<Vec<_>>(), vec![id1, id2], "seed {seed}");
        sim.report(v1, false);
        sim.drive();
        assert!(sim.record.timeline.paused, "seed {seed}: still waiting for v2");
        sim.report(v2, false);
        sim.drive();
        sim.check_settled();
        assert!(!sim.record.timeline.paused, "seed {seed}: resumed once both followed again");
        assert_eq!(sim.record.reason, ChangeReason::Resume);
        for n in 0..3 {
            let st = sim.nodes[n].room.state(sim.now);
            assert!(!st.buffering_wait && st.suspended.is_empty(), "seed {seed}: node {n} after the wait");
        }

        // The node whose member started a wait dies: the others resume the room anyway.
        sim.run_for(cfg.buffering_cooldown_us + S);
        sim.report(v2, false);
        sim.run_for(S);
        sim.report(v1, true);
        sim.drive();
        assert!(sim.record.timeline.paused, "seed {seed}: a second wait");
        let paused_at = sim.now;
        sim.kill(1);
        sim.run_for(max + 3 * S);
        sim.drive();
        sim.check_settled();
        assert!(!sim.record.timeline.paused, "seed {seed}: no wait outlives its node");
        assert!(
            sim.record.effective_at_us <= paused_at + max + 2 * S,
            "seed {seed}: resumed about a second after the deadline"
        );
    }
}

/// Two nodes of a host-only room: the host on the first plays; a viewer on
/// the second follows for a second, then stalls: the room waits.
fn waiting_on_two_nodes(cfg: &RoomConfig, seed: u64) -> (sim::Sim, usize, usize) {
    let mut sim = sim::Sim::new(2, cfg.clone(), seed);
    let h = sim.join(0, "h", false);
    let v = sim.join(1, "v", false);
    sim.drive();
    sim.command(h, Action::Play { position_ms: None });
    sim.drive();
    sim.report(v, false);
    sim.run_for(S);
    sim.report(v, true);
    sim.drive();
    (sim, h, v)
}

/// Scale-out: the node whose member's stall paused the room dies while
/// nobody else serves it; a node that starts serving the room later knows
/// the room waits (the record says why it is paused) and resumes it about a
/// second after the deadline: a wait nobody is left to end still ends. A node
/// that loads the room during a live node's wait lists that node's stalled
/// member (stored with it).
#[test]
fn sim_a_node_loading_a_waiting_room_knows_the_wait_and_who_holds_it() {
    let cfg = RoomConfig::default();
    let max = cfg.buffering_wait_max_us;
    for seed in 0..5 {
        let (mut sim, _, v) = waiting_on_two_nodes(&cfg, seed);
        assert!(sim.record.timeline.paused && sim.record.reason == ChangeReason::BufferingWait, "seed {seed}");
        // A third node loads the room during the wait: it lists v, and waits.
        let c = sim.add_node(cfg.clone());
        sim.join(c, "c", false);
        sim.drive();
        let st = sim.nodes[c].room.state(sim.now);
        let who: Vec<_> = st.suspended.iter().map(|s| (s.member_id, s.reason.as_str())).collect();
        assert_eq!((who, st.buffering_wait), (vec![(sim.clients[v].id, "buffering")], true), "seed {seed}");
        // Every node that served the room dies; a new one loads it.
        sim.kill(0);
        sim.kill(1);
        sim.kill(c);
        sim.run_for(S);
        let paused_at = sim.now;
        let d = sim.add_node(cfg.clone());
        sim.join(d, "d", false);
        sim.drive();
        assert!(sim.nodes[d].room.state(sim.now).buffering_wait, "seed {seed}: it knows the room waits");
        sim.run_for(max + 3 * S);
        sim.drive();
        sim.check_settled();
        assert!(!sim.record.timeline.paused, "seed {seed}: the wait ended without its node");
        assert_eq!(sim.record.reason, ChangeReason::Resume, "seed {seed}");
        assert!(sim.record.effective_at_us <= paused_at + max + 2 * S, "seed {seed}");
    }
}

/// Scale-out: a room small enough to wait shares its members' stalls; a
/// larger one does not (nobody waits there), but for the end of one shared
/// before.
#[test]
fn only_rooms_small_enough_to_wait_share_their_stalls() {
    let stalls = |room: &mut Room| -> Vec<Shared> {
        room.take_shared().into_iter().filter(|e| matches!(e, Shared::Stall { .. })).collect()
    };
    let (mut room, _h, v, now) = playing_room(RoomConfig { wait_max_members: 2, ..RoomConfig::default() });
    room.enable_sharing(ID_BLOCK);
    rep(&mut room, now, v, report(true));
    drain(&mut room);
    assert_eq!(stalls(&mut room), vec![Shared::Stall { id: v, reason: Some("buffering".into()), holds: true }]);
    // A third member: too large to wait. The end of the shared stall is still shared; a new one is not.
    join(&mut room, now, "w");
    rep(&mut room, now + S, v, report(false));
    drain(&mut room);
    assert_eq!(stalls(&mut room), vec![Shared::Stall { id: v, reason: None, holds: false }]);
    rep(&mut room, now + 20 * S, v, report(true));
    drain(&mut room);
    assert_eq!(stalls(&mut room), vec![]);
}

/// Scale-out: members of two nodes stall at once and both nodes start a
/// wait; one wins the race, and its wait holds for the other's member too.
#[test]
fn sim_two_nodes_starting_a_wait_at_once_wait_for_both() {
    let cfg = RoomConfig::default();
    for seed in 0..10 {
        let (mut sim, v1, v2) = playing_on_three_nodes(&cfg, seed);
        sim.report(v1, true);
        sim.report(v2, true);
        sim.drive();
        assert!(sim.record.timeline.paused && sim.record.reason == ChangeReason::BufferingWait, "seed {seed}");
        let epoch = sim.record.timeline.epoch;
        sim.report(if seed % 2 == 0 { v1 } else { v2 }, false);
        sim.drive();
        assert_eq!(sim.record.timeline.epoch, epoch, "seed {seed}: still waiting for the other");
        sim.report(if seed % 2 == 0 { v2 } else { v1 }, false);
        sim.drive();
        sim.check_settled();
        assert_eq!(sim.record.reason, ChangeReason::Resume, "seed {seed}");
    }
}

/// Scale-out: a member that held another node's wait until its deadline
/// catches up alone for the cool-down, as after a wait of its own node's: its
/// next stall soon after does not pause the room again.
#[test]
fn sim_a_member_that_held_another_nodes_wait_catches_up_alone() {
    let cfg = RoomConfig::default();
    for seed in 0..10 {
        let (mut sim, v1, v2) = playing_on_three_nodes(&cfg, seed);
        sim.report(v1, true);
        sim.drive();
        sim.report(v2, true);
        sim.drive();
        sim.report(v1, false);
        sim.drive();
        assert!(sim.record.timeline.paused, "seed {seed}: v2 holds the wait");
        sim.run_for(cfg.buffering_wait_max_us);
        sim.drive();
        assert_eq!(sim.record.reason, ChangeReason::Resume, "seed {seed}: the deadline ended it");
        let epoch = sim.record.timeline.epoch;
        sim.report(v2, false);
        sim.run_for(S);
        sim.report(v2, true);
        sim.drive();
        assert_eq!(sim.record.timeline.epoch, epoch, "seed {seed}: no new wait within the cool-down");
    }
}

/// Scale-out: the host (on another node than the wait's) takes over a wait
/// with a pause: no node resumes the room later.
#[test]
fn sim_a_pause_during_another_nodes_wait_is_not_undone() {
    let cfg = RoomConfig::default();
    for seed in 0..10 {
        let (mut sim, h, _) = waiting_on_two_nodes(&cfg, seed);
        assert_eq!(sim.record.reason, ChangeReason::BufferingWait, "seed {seed}");
        sim.command(h, Action::Pause { position_ms: None });
        sim.drive();
        sim.run_for(cfg.buffering_wait_max_us + 3 * S);
        sim.drive();
        sim.check_settled();
        assert!(sim.record.timeline.paused, "seed {seed}: the host's pause holds");
        assert_eq!(sim.record.reason, ChangeReason::Pause, "seed {seed}");
        for n in 0..2 {
            assert!(!sim.nodes[n].room.state(sim.now).buffering_wait, "seed {seed}: node {n}");
        }
    }
}

/// Two nodes of an `everyone` room, a host on the first and a viewer on the
/// second, both joined.
fn host_and_viewer_on_two_nodes(seed: u64) -> (sim::Sim, usize, usize) {
    let mut sim = sim::Sim::new(2, open(), seed);
    let h = sim.join(0, "h", false);
    let v = sim.join(1, "v", false);
    sim.drive();
    (sim, h, v)
}

#[test]
fn sim_a_seek_races_a_scheduled_play() {
    for seed in 0..10 {
        let (mut sim, h, v) = host_and_viewer_on_two_nodes(seed);
        sim.command(h, Action::Play { position_ms: None });
        sim.run_for(20 * MS);
        sim.command(v, Action::Seek { position_ms: 30_000 });
        sim.drive();
        sim.check_settled();
        assert!(!sim.record.timeline.paused, "the seek keeps the play");
    }
}

#[test]
fn sim_a_buffering_wait_on_one_node_while_another_seeks() {
    for seed in 0..10 {
        let (mut sim, h, v) = host_and_viewer_on_two_nodes(seed);
        sim.command(h, Action::Play { position_ms: None });
        sim.drive();
        sim.report(v, false);
        sim.run_for(S);
        sim.report(v, true);
        sim.command(h, Action::Seek { position_ms: 50_000 });
        sim.drive();
        sim.report(v, false);
        sim.drive();
        sim.run_for(4 * S);
        sim.drive();
        sim.check_settled();
        assert!(!sim.record.timeline.paused, "seed {seed}: playing again");
    }
}

#[test]
fn sim_members_roles_and_policy_are_shared_across_nodes() {
    let cfg = RoomConfig { show_members: true, ..Default::default() };
    let mut sim = sim::Sim::new(2, cfg, 3);
    let host = sim.join(0, "host", false);
    sim.drive();
    let guest = sim.join(1, "guest", false);
    sim.drive();
    assert_ne!(sim.clients[host].id, sim.clients[guest].id, "ids are unique across nodes");
    assert_eq!((sim.role(host), sim.role(guest)), (Some(Role::Host), Some(Role::Viewer)));
    let r = sim.command(guest, Action::Seek { position_ms: 1 });
    sim.drive();
    assert!(sim.clients[guest].errors.iter().any(|e| e.request_id == r && e.code == ErrorCode::Forbidden.as_u16()));
    // The host on one node makes the other node's member a co-host, who may then command.
    let gid = sim.clients[guest].id;
    sim.command(host, Action::SetRole { member_id: gid, role: Role::CoHost });
    sim.drive();
    assert_eq!(sim.role(guest), Some(Role::CoHost));
    sim.command(guest, Action::Seek { position_ms: 5_000 });
    sim.drive();
    // A policy set on one node holds on the other.
    let viewer = sim.join(1, "viewer", false);
    sim.drive();
    sim.command(host, Action::SetPolicy { policy: ControlPolicy::Everyone });
    sim.drive();
    sim.command(viewer, Action::Seek { position_ms: 7_000 });
    sim.drive();
    sim.check_settled();
    assert_eq!(sim.record.timeline.position_ms, 7_000);
    // Leaving is seen on the other node.
    sim.leave(viewer);
    sim.drive();
    sim.check_settled();
}

#[test]
fn sim_a_claimed_host_supersedes_the_fallback_and_two_fallbacks_converge() {
    let mut sim = sim::Sim::new(2, RoomConfig::default(), 4);
    let early = sim.join(0, "early", false);
    sim.drive();
    assert_eq!(sim.role(early), Some(Role::Host));
    let op = sim.join(1, "op", true);
    sim.drive();
    assert_eq!((sim.role(op), sim.role(early)), (Some(Role::Host), Some(Role::Viewer)));
    sim.check_settled();

    // Both join before either node hears of the other.
    let mut sim = sim::Sim::new(2, RoomConfig::default(), 5);
    let a = sim.join(0, "a", false);
    let b = sim.join(1, "b", false);
    assert_eq!((sim.role(a), sim.role(b)), (Some(Role::Host), Some(Role::Host)));
    sim.drive();
    sim.check_settled();
    let (ia, ib) = (sim.clients[a].id, sim.clients[b].id);
    let host = if ia < ib { a } else { b };
    assert_eq!(sim.role(host), Some(Role::Host), "the smaller id stays");
}

#[test]
fn sim_a_gone_node_takes_its_members_and_the_host_is_elected_after_the_grace() {
    let cfg = RoomConfig { show_members: true, host_grace_us: 5 * S, ..Default::default() };
    let mut sim = sim::Sim::new(3, cfg, 6);
    let host = sim.join(0, "host", false);
    sim.drive();
    let v1 = sim.join(1, "v1", false);
    let v2 = sim.join(2, "v2", false);
    sim.drive();
    assert_eq!(sim.role(host), Some(Role::Host));
    sim.kill(0);
    sim.run_for(sim.gone_after + S);
    assert!(sim.role(v1) == Some(Role::Viewer) && sim.role(v2) == Some(Role::Viewer), "the grace holds the role");
    sim.run_for(5 * S);
    sim.drive();
    sim.check_settled();
    let first = if sim.clients[v1].id < sim.clients[v2].id { v1 } else { v2 };
    assert_eq!(sim.role(first), Some(Role::Host), "the longest present, once");
}

#[test]
fn sim_a_flood_from_many_members_on_several_nodes_is_coalesced() {
    let mut sim = sim::Sim::new(3, open(), 11);
    let members: Vec<usize> = (0..60).map(|i| sim.join(i % 3, &format!("m{i}"), false)).collect();
    let watcher = sim.join(0, "watcher", false);
    sim.drive();
    let start = sim.now;
    let mut last = 0;
    // Every member seeks 5 times a second for 2 s.
    for round in 0..10u64 {
        for (k, &m) in members.iter().enumerate() {
            last = round * 1_000 + k as u64;
            sim.command(m, Action::Seek { position_ms: last });
            sim.run_for(200 * MS / members.len() as u64);
        }
    }
    sim.drive();
    sim.check_settled();
    let coalesced: usize = sim
        .clients
        .iter()
        .flat_map(|c| &c.acks)
        .filter(|a| a.outcome == lockstep_protocol::AckOutcome::Coalesced)
        .count();
    assert!(coalesced > 300, "{coalesced} coalesced");
    let changes = sim.clients[watcher].epochs.len() as u64 - 1;
    let secs = (sim.now - start).div_ceil(S);
    assert!(changes <= 10 * (secs + 1) + 10, "{changes} changes in {secs} s");
    assert_eq!(sim.record.timeline.position_ms, last, "the last seek wins");
}

#[test]
fn sim_random_commands_keep_every_invariant() {
    for seed in 0..30 {
        let mut sim = sim::Sim::new(3, open(), 100 + seed);
        let clients: Vec<usize> = (0..9).map(|i| sim.join(i % 3, &format!("c{i}"), false)).collect();
        sim.drive();
        for _ in 0..40 {
            let c = clients[sim.rng.range(0, 8) as usize];
            let action = match sim.rng.range(0, 4) {
                0 => Action::Play { position_ms: None },
                1 => Action::Pause { position_ms: None },
                2 => Action::Seek { position_ms: sim.rng.range(0, 100_000) },
                3 => Action::SetRate { rate_milli: 500 + 250 * sim.rng.range(0, 6) as u16 },
                _ => Action::Play { position_ms: Some(sim.rng.range(0, 100_000)) },
            };
            sim.command(c, action);
            if sim.rng.range(0, 9) == 0 {
                sim.fail_next = 1;
            }
            let d = sim.rng.range(0, 60) * MS;
            sim.run_for(d);
        }
        sim.drive();
        sim.check_settled();
    }
}

/// Sync quality counts each member's latest fresh drift measured against the
/// timeline in effect; a seek makes the old drifts moot until re-measured.
#[test]
fn sync_quality_summarises_fresh_drifts_of_the_timeline_in_effect() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let ids: Vec<MemberId> = (0..20).map(|i| join(&mut room, T0, &format!("d{i}"))).collect();
    commit(&mut room, T0);
    assert_eq!(room.sync_quality(T0), SyncQuality { out_of_sync_ms: 40.0, ..SyncQuality::default() });
    let epoch = room.current.epoch;
    // Drifts of 1..=20 ms, half of them behind; the last member at 90 ms.
    for (i, &id) in ids.iter().enumerate() {
        let ms = if i == 19 { 90 } else { i as i32 + 1 };
        let drift_us = if i % 2 == 0 { ms * 1_000 } else { -ms * 1_000 };
        room.sync_report(T0 + MS, id, SyncReport { epoch, drift_us });
    }
    // A newer report replaces a member's older one.
    room.sync_report(T0 + 2 * MS, ids[0], SyncReport { epoch, drift_us: -500 });
    let q = room.sync_quality(T0 + 2 * MS);
    assert_eq!(q.reporting, 20);
    assert_eq!(q.p50_ms, Some(10.0), "nearest rank of 0.5, 2..19, 90 ms");
    assert_eq!(q.p95_ms, Some(19.0));
    assert_eq!(q.max_ms, Some(90.0));
    assert_eq!(q.out_of_sync, 1);
    assert_eq!(room.state(T0 + 2 * MS).sync, q, "in the state API");

    // A member that leaves no longer counts; stale drifts (three report
    // intervals) do not either.
    leave(&mut room, T0 + 3 * MS, ids[19]);
    assert_eq!(room.sync_quality(T0 + 3 * MS).out_of_sync, 0);
    let late = T0 + 2 * MS + 3 * S + 1;
    room.sync_report(late, ids[1], SyncReport { epoch, drift_us: 41_000 });
    let q = room.sync_quality(late);
    assert_eq!((q.reporting, q.out_of_sync, q.max_ms), (1, 1, Some(41.0)));

    // After a seek, drifts measured against the old timeline are moot; a
    // report of an unknown member is ignored.
    cmd(&mut room, late, ids[0], Action::Seek { position_ms: 60_000 }).unwrap();
    assert_eq!(room.sync_quality(late).reporting, 0);
    room.sync_report(late + MS, ids[2], SyncReport { epoch: room.current.epoch, drift_us: 2_000 });
    room.sync_report(late + MS, 999_999, SyncReport { epoch: room.current.epoch, drift_us: 1 });
    let q = room.sync_quality(late + MS);
    assert_eq!((q.reporting, q.p50_ms), (1, Some(2.0)));
}

/// Scale-out: a node shares its members' fresh drifts (to 0.1 ms, rounded
/// up) and counts the other nodes' into the room's sync quality.
#[test]
fn sync_quality_counts_the_other_nodes_drifts() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let (a, b) = (join(&mut room, T0, "a"), join(&mut room, T0, "b"));
    commit(&mut room, T0);
    let epoch = room.current.epoch;
    room.sync_report(T0 + MS, a, SyncReport { epoch, drift_us: -1_000 });
    room.sync_report(T0 + MS, b, SyncReport { epoch, drift_us: 50_040 });
    assert_eq!(room.sync_counts(T0 + MS), vec![(10, 1), (501, 1)]);
    // Two members at 3 ms and one at 200 ms on other nodes.
    room.set_remote_sync(vec![(30, 2), (2_000, 1)]);
    let q = room.sync_quality(T0 + MS);
    assert_eq!((q.reporting, q.p50_ms, q.p95_ms, q.max_ms, q.out_of_sync), (5, Some(3.0), Some(200.0), Some(200.0), 2));
    // They are not shared back, and replace the last.
    assert_eq!(room.sync_counts(T0 + MS).len(), 2);
    room.set_remote_sync(Vec::new());
    assert_eq!(room.sync_quality(T0 + MS).reporting, 2);
}

fn susp(room: &mut Room, now: u64, id: MemberId, reason: Option<&str>) {
    room.suspend(now, id, reason.map(str::to_owned));
    commit(room, now);
}

fn reasons(list: &str) -> WaitReasons {
    list.parse().unwrap()
}

/// SPEC §6.4: only the reasons of `wait_reasons` make the room wait; the
/// state lists every suspended member and why; `Resume` ends the wait.
#[test]
fn suspensions_wait_only_for_the_configured_reasons() {
    // By default only buffering waits: an ad does not pause the room.
    let (mut room, _h, v, now) = playing_room(RoomConfig::default());
    susp(&mut room, now, v, Some("interstitial"));
    assert!(changes(&drain(&mut room)).is_empty());
    let st = room.state(now + 2 * S);
    let want = Suspended { member_id: v, name: "v".into(), reason: "interstitial".into(), for_ms: 2_000 };
    assert_eq!(st.suspended, vec![want]);
    assert!(!st.buffering_wait);
    susp(&mut room, now + 3 * S, v, None);
    assert!(room.state(now + 3 * S).suspended.is_empty());

    // With interstitial among the reasons it waits, and the resume ends it.
    let cfg = RoomConfig { wait_reasons: reasons("buffering,interstitial"), ..Default::default() };
    let (mut room, _h, v, now) = playing_room(cfg);
    susp(&mut room, now, v, Some("interstitial"));
    let c = changes(&drain(&mut room));
    assert_eq!((c[0].reason, c[0].by, c[0].timeline.paused), (ChangeReason::BufferingWait, v, true));
    assert!(room.state(now).buffering_wait);
    // Buffering while suspended: the suspension's reason is the one shown.
    rep(&mut room, now + 100 * MS, v, report(true));
    assert_eq!(room.state(now + 100 * MS).suspended[0].reason, "interstitial");
    susp(&mut room, now + S, v, None);
    // Still buffering: it still blocks the wait (buffering waits too).
    assert!(changes(&drain(&mut room)).is_empty());
    assert_eq!(room.state(now + S).suspended[0].reason, "buffering");
    rep(&mut room, now + 2 * S, v, report(false));
    let c = changes(&drain(&mut room));
    assert_eq!((c[0].reason, c[0].timeline.paused), (ChangeReason::Resume, false));

    // custom:* takes every custom reason; notFollowing never waits.
    let cfg = RoomConfig { wait_reasons: reasons("custom:*"), ..Default::default() };
    let (mut room, h, v, now) = playing_room(cfg);
    susp(&mut room, now, h, Some("notFollowing"));
    assert!(changes(&drain(&mut room)).is_empty());
    susp(&mut room, now + MS, v, Some("custom:trivia"));
    assert_eq!(changes(&drain(&mut room))[0].reason, ChangeReason::BufferingWait);
    assert!("notFollowing".parse::<WaitReasons>().is_err());
    assert!("buffering,bogus".parse::<WaitReasons>().is_err());
    assert_eq!(reasons("").to_string(), "");
    assert_eq!(reasons(" buffering , custom:* ").to_string(), "buffering,custom:*");
}

/// Above `wait_max_members` viewers nobody waits (a premiere never pauses
/// for one viewer); a suspension that outlives the wait catches up alone; a
/// stall that goes on does not pause the room again after the cool-down.
#[test]
fn large_rooms_never_wait_and_long_stalls_pause_the_room_once() {
    let (mut room, h, _v, now) = playing_room(RoomConfig { wait_max_members: 2, ..Default::default() });
    let w = join(&mut room, now, "w");
    rep(&mut room, now + 100 * MS, w, report(false));
    rep(&mut room, now + 200 * MS, w, report(true));
    assert!(changes(&drain(&mut room)).is_empty(), "3 viewers > 2");
    let _ = h;

    let cfg = RoomConfig { wait_reasons: reasons("userActionRequired"), ..Default::default() };
    let (max, cooldown) = (cfg.buffering_wait_max_us, cfg.buffering_cooldown_us);
    let (mut room, _h, v, now) = playing_room(cfg);
    susp(&mut room, now, v, Some("userActionRequired"));
    drain(&mut room);
    let out = run_until(&mut room, now, now + max + cooldown + 10 * S);
    let reasons: Vec<_> = out
        .iter()
        .filter_map(|(at, o)| match &o.msg {
            ServerMsg::TimelineChanged(c) => Some((*at, c.reason)),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, vec![(now + max, ChangeReason::Resume)], "resumed at the deadline, never paused again");
    // A report while still suspended, after the cool-down: no new wait either.
    rep(&mut room, now + max + cooldown + 11 * S, v, report(false));
    assert!(changes(&drain(&mut room)).is_empty());
    assert!(!room.timeline().paused);
}

fn reactions_of(out: &[Output]) -> Vec<(Audience, Reactions)> {
    out.iter()
        .filter_map(|o| match &o.msg {
            ServerMsg::Reactions(r) => Some((o.to, r.clone())),
            _ => None,
        })
        .collect()
}

/// SPEC §6.5: reactions are counted per window and sent once per window to
/// the members that take them, most frequent first, at most 16 kinds; a
/// member beyond its allowance is dropped; a quiet room sends nothing.
#[test]
fn reactions_are_counted_per_window_and_per_member_allowance() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let info = |d: &str, wants_reactions| JoinInfo {
        device_id: d.into(),
        name: d.into(),
        wants_reactions,
        ..Default::default()
    };
    let a = room.join(T0, info("a", true));
    let b = room.join(T0, info("b", false));
    commit(&mut room, T0);
    drain(&mut room);
    assert_eq!(room.reactions_due(), None, "nothing to send");
    for _ in 0..3 {
        assert_eq!(room.react(T0 + MS, a, "👏"), Reacted::Counted);
    }
    assert_eq!(room.react(T0 + 2 * MS, b, "😂"), Reacted::Counted);
    assert_eq!(room.react(T0 + 2 * MS, 999, "😂"), Reacted::NotMember);
    assert_eq!(
        room.reactions_due(),
        Some(T0 + MS + REACTION_WINDOW_US),
        "the window closes 250 ms after its first reaction"
    );
    assert!(room.poll_timeout() <= T0 + MS + REACTION_WINDOW_US);
    tick(&mut room, T0 + MS + REACTION_WINDOW_US - 1);
    assert!(reactions_of(&drain(&mut room)).is_empty(), "not before the window closes");
    tick(&mut room, T0 + MS + REACTION_WINDOW_US);
    let out = drain(&mut room);
    let got = reactions_of(&out);
    assert_eq!(got.len(), 1, "one message per window");
    assert_eq!(got[0].0, Audience::Reactions);
    let counts: Vec<_> = got[0].1.counts.iter().map(|c| (c.emoji.as_str(), c.count)).collect();
    assert_eq!(counts, vec![("👏", 3), ("😂", 1)]);
    assert!(room.is_recipient(Audience::Reactions, a) && !room.is_recipient(Audience::Reactions, b));
    // Quiet again: nothing more.
    tick(&mut room, T0 + 2 * S);
    assert!(reactions_of(&drain(&mut room)).is_empty());

    // A member's allowance: a burst of 10 (3 already spent), then 5 a second.
    let t = T0 + 3 * S;
    let counted = (0..20).filter(|_| room.react(t, a, "🔥") == Reacted::Counted).count();
    assert_eq!(counted, 10, "a full burst after 3 s");
    assert_eq!(room.react(t + 100 * MS, a, "🔥"), Reacted::RateLimited);
    assert_eq!(room.react(t + 200 * MS, a, "🔥"), Reacted::Counted, "5 a second: one every 200 ms");

    // At most 16 kinds, the most frequent first (ties by emoji).
    let mut room = Room::new(RoomConfig::default(), T0);
    let ids: Vec<_> = (0..20).map(|i| room.join(T0, info(&format!("m{i}"), true))).collect();
    commit(&mut room, T0);
    drain(&mut room);
    let kinds: Vec<String> = (0..20u32).map(|i| char::from_u32(0x1F600 + i).unwrap().to_string()).collect();
    for (i, &id) in ids.iter().enumerate() {
        room.react(T0 + MS, id, &kinds[0]);
        room.react(T0 + MS, id, &kinds[i]);
    }
    tick(&mut room, T0 + MS + REACTION_WINDOW_US);
    let got = reactions_of(&drain(&mut room));
    let counts = &got[0].1.counts;
    assert_eq!(counts.len(), 16);
    assert_eq!((counts[0].emoji.as_str(), counts[0].count), (kinds[0].as_str(), 21));
    assert_eq!(counts[1..].iter().map(|c| c.emoji.as_str()).collect::<Vec<_>>(), kinds[1..16], "ties by emoji");
}

/// Scale-out: a node shares its own members' reaction counts of each window;
/// another node counts them into its next window and never shares them back.
#[test]
fn reactions_cross_nodes_without_echo() {
    let info = |d: &str| JoinInfo { device_id: d.into(), name: d.into(), wants_reactions: true, ..Default::default() };
    let mut a = Room::new(RoomConfig::default(), T0);
    let mut b = Room::new(RoomConfig::default(), T0);
    a.enable_sharing(ID_BLOCK);
    b.enable_sharing(2 * ID_BLOCK);
    let on_a = a.join(T0, info("a"));
    let _on_b = b.join(T0, info("b"));
    commit(&mut a, T0);
    commit(&mut b, T0);
    drain(&mut a);
    drain(&mut b);
    a.take_shared();
    b.take_shared();
    a.react(T0 + MS, on_a, "👏");
    a.react(T0 + MS, on_a, "👏");
    tick(&mut a, T0 + MS + REACTION_WINDOW_US);
    drain(&mut a);
    let shared: Vec<_> = a.take_shared().into_iter().filter(|e| matches!(e, Shared::Reactions { .. })).collect();
    assert_eq!(shared, vec![Shared::Reactions { counts: vec![("👏".into(), 2)] }]);
    // Node b counts them in (bad entries ignored) and sends its members one window.
    let t = T0 + 300 * MS;
    b.apply_shared(t, "a", shared[0].clone());
    b.apply_shared(t, "a", Shared::Reactions { counts: vec![("ok".into(), 5), ("🔥".into(), 0)] });
    tick(&mut b, t + REACTION_WINDOW_US);
    let got = reactions_of(&drain(&mut b));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.counts, vec![lockstep_protocol::ReactionCount { emoji: "👏".into(), count: 2 }]);
    assert!(
        !b.take_shared().iter().any(|e| matches!(e, Shared::Reactions { .. })),
        "another node's reactions are not shared again"
    );
}

/// Found by fuzzing (issue 16): one host at most. Two hosts by credentials:
/// the first keeps the role, the second co-hosts (and is elected when the
/// first goes); the host's device joining again takes the role and its old
/// connection co-hosts; across nodes, of two hosts by credentials the
/// smaller id keeps it.
#[test]
fn a_room_never_has_two_hosts() {
    let claim = |d: &str| JoinInfo { device_id: d.into(), name: d.into(), host_claim: true, ..Default::default() };
    let mut room = Room::new(RoomConfig::default(), T0);
    let a = room.join(T0, claim("tv"));
    let b = room.join(T0, claim("phone"));
    assert_eq!((room.role(a), room.role(b)), (Some(Role::Host), Some(Role::CoHost)));
    room.leave(T0 + S, a);
    tick(&mut room, T0 + S + RoomConfig::default().host_grace_us);
    assert_eq!(room.role(b), Some(Role::Host), "the co-host by credentials is elected");

    let mut room = Room::new(RoomConfig::default(), T0);
    let old = join(&mut room, T0, "tv");
    let new = join(&mut room, T0 + S, "tv");
    assert_eq!(
        (room.role(old), room.role(new)),
        (Some(Role::CoHost), Some(Role::Host)),
        "the device's new connection hosts"
    );
    assert_eq!(room.state(T0 + S).members.host, vec![new]);

    let mut room = Room::new(RoomConfig::default(), T0);
    room.enable_sharing(2 * ID_BLOCK);
    let mine = room.join(T0, claim("tv"));
    room.apply_shared(
        T0,
        "n1",
        Shared::Joined {
            id: ID_BLOCK,
            role: Role::Host,
            claimed: true,
            name: "h".into(),
            device: "other".into(),
            user: "u".into(),
            stall: None,
            holds: false,
        },
    );
    assert_eq!(room.role(mine), Some(Role::CoHost), "the smaller id keeps the role");
}
