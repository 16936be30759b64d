//! Room core tests with simulated time and latency: no sockets, no clock.

use super::*;
use lockstep_protocol::Report;

const MS: u64 = 1_000;
const S: u64 = 1_000_000;
const T0: u64 = 1_000 * S;

fn join(room: &mut Room, now: u64, device: &str) -> MemberId {
    room.join(now, JoinInfo { device_id: device.into(), name: device.into(), wants_presence: true, host_claim: false })
}

fn drain(room: &mut Room) -> Vec<Output> {
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
    room.command(now, by, 7, action)
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
        room.handle_timeout(now);
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
        self.pending.sort_by_key(|c| c.timeline.epoch);
        while let Some(c) = self.pending.first() {
            if c.effective_at_us > t {
                break;
            }
            self.current = Some(c.timeline);
            self.pending.remove(0);
        }
        self.current.expect("welcomed").position_us_at(t)
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
    room.handle_timeout(T0 + S + lead);
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
    room.handle_timeout(T0 + 100 * MS);
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
    room.handle_timeout(T0 + 100 * MS);
    let at = T0 + 3 * S + 123_457;
    let old = room.timeline();
    cmd(&mut room, at, h, Action::SetRate { rate_milli: 1250 }).unwrap();
    room.handle_timeout(at + MS);
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
    room.handle_timeout(T0 + S + 100 * MS);
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
    room.report(T0 + S, h, Report { epoch: 0, position_us: 999 * S, rate_milli: 4000, buffering: true });
    room.report(T0 + 2 * S, h, Report { epoch: 0, position_us: 5, rate_milli: 1000, buffering: false });
    assert_eq!(room.timeline(), before);
    assert!(changes(&drain(&mut room)).is_empty());
}

fn playing_room(cfg: RoomConfig) -> (Room, MemberId, MemberId, u64) {
    let mut room = Room::new(cfg, T0);
    let h = join(&mut room, T0, "h");
    let v = join(&mut room, T0, "v");
    cmd(&mut room, T0, h, Action::Play { position_ms: None }).unwrap();
    room.handle_timeout(T0 + 100 * MS);
    room.report(T0 + 500 * MS, v, report(false));
    drain(&mut room);
    (room, h, v, T0 + S)
}

#[test]
fn buffering_wait_pauses_everyone_and_resumes_on_recovery() {
    let (mut room, _h, v, now) = playing_room(RoomConfig::default());
    room.report(now, v, report(true));
    let c = changes(&drain(&mut room));
    assert_eq!((c[0].reason, c[0].by, c[0].timeline.paused), (ChangeReason::BufferingWait, v, true));
    room.handle_timeout(now + 100 * MS);
    assert!(room.timeline().paused);
    assert!(room.state(now).buffering_wait);
    room.report(now + S, v, report(false));
    let c = changes(&drain(&mut room));
    assert_eq!((c[0].reason, c[0].by, c[0].timeline.paused), (ChangeReason::Resume, 0, false));
    room.handle_timeout(now + S + 100 * MS);
    assert!(!room.timeline().paused);
    assert!(!room.state(now).buffering_wait);
    // A flapping member does not make the room stutter: no new wait soon after.
    room.report(now + 2 * S, v, report(true));
    room.report(now + 3 * S, v, report(false));
    assert!(changes(&drain(&mut room)).is_empty(), "no second wait within the cooldown");
}

#[test]
fn buffering_wait_times_out_and_the_room_never_stays_stuck() {
    let cfg = RoomConfig::default();
    let (max, cooldown) = (cfg.buffering_wait_max_us, cfg.buffering_cooldown_us);
    let (mut room, _h, v, now) = playing_room(cfg);
    room.report(now, v, report(true));
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
    room.report(t, v, report(false));
    room.report(t + S, v, report(true));
    assert!(changes(&drain(&mut room)).is_empty());
    // After the cooldown it may wait again.
    room.report(now + max + cooldown, v, report(false));
    room.report(now + max + cooldown + MS, v, report(true));
    assert_eq!(changes(&drain(&mut room))[0].reason, ChangeReason::BufferingWait);
}

#[test]
fn initial_loading_ignore_policy_and_host_pause_do_not_wait() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let h = join(&mut room, T0, "h");
    cmd(&mut room, T0, h, Action::Play { position_ms: None }).unwrap();
    room.handle_timeout(T0 + 100 * MS);
    drain(&mut room);
    let v = join(&mut room, T0 + S, "v");
    room.report(T0 + S, v, report(true));
    assert!(changes(&drain(&mut room)).is_empty(), "a joiner loading is not a stall");

    let (mut room, ..) = playing_room(RoomConfig { buffering: BufferingPolicy::Ignore, ..Default::default() });
    room.report(T0 + S, 2, report(true));
    assert!(changes(&drain(&mut room)).is_empty());

    let (mut room, h, v, now) = playing_room(RoomConfig::default());
    room.report(now, v, report(true));
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
    room.report(now, v, report(true));
    room.leave(now + 200 * MS, v);
    room.handle_timeout(now + 300 * MS);
    room.handle_timeout(now + 400 * MS);
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
        room.handle_timeout(now.max(room.poll_timeout().min(now)));
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
    room.leave(T0 + S, h);
    let h2 = join(&mut room, T0 + 2 * S, "host-dev");
    assert_eq!(room.role(h2), Some(Role::Host));
    room.leave(T0 + 3 * S, h2);
    room.handle_timeout(T0 + 3 * S + grace - 1);
    assert_eq!(room.role(v), Some(Role::Viewer));
    drain(&mut room);
    room.handle_timeout(T0 + 3 * S + grace);
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
    let b =
        room.join(T0, JoinInfo { device_id: "b".into(), name: "b".into(), wants_presence: false, host_claim: true });
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
    let b =
        room.join(T0, JoinInfo { device_id: "b".into(), name: "b".into(), wants_presence: false, host_claim: false });
    let out = drain(&mut room);
    let joined = out.iter().find(|o| matches!(o.msg, ServerMsg::MemberJoined(_))).unwrap();
    assert!(room.is_recipient(joined.to, a) && !room.is_recipient(joined.to, b));
    let ticks = run_until(&mut room, T0, T0 + 10 * interval)
        .into_iter()
        .filter(|(_, o)| matches!(o.msg, ServerMsg::Tick(_)))
        .count();
    assert_eq!(ticks, 10);
}

// ------------------------------------------------------------ scale-out

/// Two nodes' rooms for one event: a scheduled pause made on one and applied
/// as an external change on the other lands on the same position, with the
/// same ticks.
#[test]
fn an_external_change_lands_on_the_same_position_on_another_node() {
    let cfg = RoomConfig::default();
    let (mut a, mut b) = (Room::new(cfg.clone(), T0), Room::new(cfg, T0));
    let host = join(&mut a, T0, "host");
    let viewer = join(&mut b, T0, "viewer");
    drain(&mut a);
    drain(&mut b);
    let mark = a.output_mark();
    cmd(&mut a, T0 + MS, host, Action::Play { position_ms: Some(1_000) }).unwrap();
    let play = a.change_since(mark).expect("a change");
    b.apply_external(T0 + 2 * MS, play.clone());
    let mark = a.output_mark();
    cmd(&mut a, T0 + S, host, Action::Pause { position_ms: None }).unwrap();
    let pause = a.change_since(mark).expect("a change");
    assert!(pause.effective_at_us > T0 + S, "scheduled");
    b.apply_external(T0 + S + 3 * MS, pause.clone());
    let got = changes(&drain(&mut b));
    assert_eq!(got.len(), 2);
    assert_eq!((got[1].timeline, got[1].effective_at_us), (pause.timeline, pause.effective_at_us));
    assert_eq!(got[1].by, 0, "member ids are per node: the server made it");
    let end = T0 + 2 * S;
    let ticks = |out: Vec<(u64, Output)>| -> Vec<(u32, u32, bool)> {
        out.into_iter()
            .filter_map(|(_, o)| match o.msg {
                ServerMsg::Tick(t) => Some((t.epoch, t.position_ms, t.paused)),
                _ => None,
            })
            .collect()
    };
    let (ta, tb) = (ticks(run_until(&mut a, T0 + S, end)), ticks(run_until(&mut b, T0 + S, end)));
    assert_eq!(ta.last(), tb.last());
    assert_eq!(a.timeline(), b.timeline());
    assert_eq!(b.epoch(), pause.timeline.epoch);
    assert!(b.role(viewer).is_some());
}

#[test]
fn a_refused_change_is_discarded_and_the_authoritative_one_restored() {
    let mut room = Room::new(RoomConfig::default(), T0);
    let host = join(&mut room, T0, "host");
    drain(&mut room);
    let before = TimelineChanged { timeline: room.timeline(), effective_at_us: T0, by: 0, reason: ChangeReason::Seek };
    let mark = room.output_mark();
    cmd(&mut room, T0 + MS, host, Action::Seek { position_ms: 9_000 }).unwrap();
    assert!(room.change_since(mark).is_some());
    room.discard_since(mark);
    room.restore(T0 + 2 * MS, before.clone());
    assert!(drain(&mut room).is_empty(), "nothing of the refused change goes out");
    assert_eq!((room.timeline(), room.epoch()), (before.timeline, before.timeline.epoch));
    room.refuse(host, 7, ErrorCode::Internal, "down");
    assert!(matches!(&drain(&mut room)[..], [Output { to: Audience::One(h), msg: ServerMsg::Error(_) }] if *h == host));
}

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

/// Two nodes' rooms of one event, exchanging what they share after a delay
/// of one call (as pub/sub would).
struct TwoNodes {
    a: Room,
    b: Room,
}

impl TwoNodes {
    fn new(cfg: RoomConfig) -> Self {
        let mut a = Room::new(cfg.clone(), T0);
        let mut b = Room::new(cfg, T0);
        a.enable_sharing(ID_BLOCK);
        b.enable_sharing(2 * ID_BLOCK);
        TwoNodes { a, b }
    }

    /// Delivers each side's shared changes to the other.
    fn exchange(&mut self, now: u64) {
        for _ in 0..3 {
            let from_a = self.a.take_shared();
            let from_b = self.b.take_shared();
            for ev in from_a {
                self.b.apply_shared(now, "A", ev);
            }
            for ev in from_b {
                self.a.apply_shared(now, "B", ev);
            }
        }
    }
}

fn role_changes(out: &[Output]) -> Vec<(MemberId, Role)> {
    out.iter()
        .filter_map(|o| match &o.msg {
            ServerMsg::RoleChanged(r) => Some((r.member_id, r.role)),
            _ => None,
        })
        .collect()
}

#[test]
fn members_roles_and_policy_are_shared_across_nodes() {
    let cfg = RoomConfig { show_members: true, ..RoomConfig::default() };
    let mut n = TwoNodes::new(cfg);
    let host = join(&mut n.a, T0, "host");
    n.exchange(T0);
    let guest = join(&mut n.b, T0 + MS, "guest");
    n.exchange(T0 + MS);
    assert_ne!(host, guest, "ids are unique across nodes");
    assert_eq!(n.a.role(host), Some(Role::Host));
    assert_eq!(n.b.role(guest), Some(Role::Viewer), "a host on another node counts");
    for room in [&n.a, &n.b] {
        let s = room.state(T0 + MS);
        assert_eq!((s.members.host.clone(), s.members.viewer.clone()), (vec![host], vec![guest]));
    }
    let out_a = drain(&mut n.a);
    assert!(
        out_a.iter().any(|o| matches!(&o.msg, ServerMsg::MemberJoined(j) if j.member_id == guest && j.name == "guest")),
        "presence of a member on another node"
    );
    drain(&mut n.b);

    // The host on A makes B's member a co-host; B's member may then command.
    assert_eq!(cmd(&mut n.b, T0 + 2 * MS, guest, Action::Seek { position_ms: 1 }), Err(CommandError::Forbidden));
    drain(&mut n.b);
    cmd(&mut n.a, T0 + 2 * MS, host, Action::SetRole { member_id: guest, role: Role::CoHost }).unwrap();
    n.exchange(T0 + 2 * MS);
    assert_eq!(n.b.role(guest), Some(Role::CoHost));
    assert_eq!(role_changes(&drain(&mut n.a)), vec![(guest, Role::CoHost)]);
    assert_eq!(role_changes(&drain(&mut n.b)), vec![(guest, Role::CoHost)], "announced once on each node");
    cmd(&mut n.b, T0 + 3 * MS, guest, Action::Seek { position_ms: 5_000 }).unwrap();

    // Policy set on A holds on B.
    let viewer = join(&mut n.b, T0 + 4 * MS, "viewer");
    n.exchange(T0 + 4 * MS);
    cmd(&mut n.a, T0 + 5 * MS, host, Action::SetPolicy { policy: ControlPolicy::Everyone }).unwrap();
    n.exchange(T0 + 5 * MS);
    assert_eq!(n.b.state(T0 + 5 * MS).policy, ControlPolicy::Everyone);
    assert!(drain(&mut n.b).iter().any(|o| matches!(o.msg, ServerMsg::PolicyChanged(p) if p.by == host)));
    cmd(&mut n.b, T0 + 6 * MS, viewer, Action::Seek { position_ms: 7_000 }).unwrap();

    // Leaving is seen on the other node.
    n.b.leave(T0 + 7 * MS, viewer);
    n.exchange(T0 + 7 * MS);
    assert!(drain(&mut n.a).iter().any(|o| matches!(o.msg, ServerMsg::MemberLeft(l) if l.member_id == viewer)));
    assert!(!n.a.state(T0 + 7 * MS).members.viewer.contains(&viewer));
}

#[test]
fn a_claimed_host_on_one_node_supersedes_the_fallback_host_on_another() {
    let mut n = TwoNodes::new(RoomConfig::default());
    let early = join(&mut n.a, T0, "early");
    n.exchange(T0);
    assert_eq!(n.a.role(early), Some(Role::Host));
    let info = JoinInfo { device_id: "op".into(), name: "op".into(), wants_presence: false, host_claim: true };
    let op = n.b.join(T0 + MS, info);
    n.exchange(T0 + MS);
    assert_eq!(n.b.role(op), Some(Role::Host));
    assert_eq!(n.a.role(early), Some(Role::Viewer));
    assert_eq!(n.b.state(T0 + MS).members.host, vec![op], "one host across both nodes");
}

#[test]
fn two_fallback_hosts_elected_at_once_converge_to_one() {
    let mut n = TwoNodes::new(RoomConfig::default());
    // Both join before either node hears of the other.
    let on_a = join(&mut n.a, T0, "a");
    let on_b = join(&mut n.b, T0, "b");
    assert_eq!((n.a.role(on_a), n.b.role(on_b)), (Some(Role::Host), Some(Role::Host)));
    n.exchange(T0);
    let hosts_a = n.a.state(T0).members.host;
    let hosts_b = n.b.state(T0).members.host;
    assert_eq!(hosts_a, vec![on_a.min(on_b)]);
    assert_eq!(hosts_a, hosts_b, "both nodes agree");
}

#[test]
fn a_gone_node_takes_its_members_along_and_the_host_is_elected_once() {
    let mut n = TwoNodes::new(RoomConfig { show_members: true, ..RoomConfig::default() });
    let host = join(&mut n.a, T0, "host");
    n.exchange(T0);
    let v1 = join(&mut n.b, T0 + MS, "v1");
    let v2 = join(&mut n.b, T0 + 2 * MS, "v2");
    n.exchange(T0 + 2 * MS);
    drain(&mut n.b);
    n.b.node_gone(T0 + S, "A");
    let out = drain(&mut n.b);
    assert!(out.iter().any(|o| matches!(o.msg, ServerMsg::MemberLeft(l) if l.member_id == host)));
    assert!(n.b.state(T0 + S).members.host.is_empty(), "the host keeps its slot during the grace");
    // After the grace, B elects its longest-present member, once.
    let grace = RoomConfig::default().host_grace_us;
    let out = run_until(&mut n.b, T0 + S, T0 + S + grace + S);
    let elected: Vec<_> = out.iter().filter(|(_, o)| matches!(o.msg, ServerMsg::RoleChanged(_))).collect();
    assert_eq!(elected.len(), 1);
    assert_eq!(n.b.role(v1.min(v2)), Some(Role::Host));
    assert_eq!(n.b.take_shared(), vec![Shared::Role { id: v1.min(v2), role: Role::Host }]);
}

#[test]
fn a_snapshot_replaces_what_a_node_knows_of_the_others() {
    let mut a = Room::new(RoomConfig::default(), T0);
    a.enable_sharing(ID_BLOCK);
    let joined = |id, role| Shared::Joined { id, role, claimed: false, name: "x".into(), device: format!("d{id}") };
    a.set_remote_members(T0, vec![("B".into(), joined(7, Role::Host)), ("B".into(), joined(8, Role::Viewer))]);
    assert_eq!(a.state(T0).members.host, vec![7]);
    let me = join(&mut a, T0, "me");
    assert_eq!(a.role(me), Some(Role::Viewer));
    // Redis came back: 8 is gone, 7 became a co-host, 9 joined meanwhile.
    a.set_remote_members(T0 + S, vec![("B".into(), joined(7, Role::CoHost)), ("C".into(), joined(9, Role::Viewer))]);
    let s = a.state(T0 + S);
    assert_eq!((s.members.co_host, s.members.viewer), (vec![7], vec![9, me]));
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
